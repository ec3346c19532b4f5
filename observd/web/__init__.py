"""The observers' window: a read-only web page over the catalog and the output folder.

A shell like the CLI: Starlette routes (`app`) render Jinja2 templates from read-only catalog
queries (`pages`, over `observd.service.reports`), draw the quality charts as SVG (`charts`),
serve files from under the output folder only (`output_files`), guard every request (`guard`)
and run in uvicorn, in the foreground or beside the daemon (`server`).
"""

"""The web page's routes: pages, JSON mirrors of `status --json` and `frames --json`, files.

Every request opens the catalog read-only, exactly as `observd status` does (`Catalog.open(...,
readonly=True)`): it never blocks the daemon, works when the daemon is down, and never creates
a catalog; without one the page says so (503). Handlers are plain functions, which Starlette
runs in its thread pool, so a slow query never stalls the server.

An open page keeps itself up to date without reloading (`static/live.js`): every few seconds it
asks for its own content again (`?partial=1`) with the ETag it has. The ETag is the catalog's
change stamp and a digest of the content: while nothing was committed to the catalog the
answer is a 304 without a query, and when something was, the content is sent only if it changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from observd import __version__
from observd.adapters.catalog import Catalog, change_stamp
from observd.core.config import Config
from observd.service.reports import frames_report, status_for
from observd.web import pages
from observd.web.guard import Guard
from observd.web.output_files import CONTENT_TYPES, OutputFiles

__all__ = ["POLL_SECONDS", "create_app"]

POLL_SECONDS = 5.0  # how often an open page asks whether it changed
NAVIGATION = (
    ("/", "Tonight"),
    ("/quality", "Quality"),
    ("/masters", "Masters"),
    ("/products", "Products"),
    ("/nights", "Nights"),
)


class NoCatalog(Exception):
    """The catalog does not exist (yet): nothing has run on this configuration."""


def create_app(config: Config, *, token: str | None = None, poll_seconds: float = POLL_SECONDS) -> Starlette:
    """The page for `config`'s catalog and output folder; `token`: required from every client."""
    endpoints = Endpoints(config, poll_seconds)
    routes = [
        Route("/", endpoints.tonight),
        Route("/quality", endpoints.quality),
        Route("/masters", endpoints.masters),
        Route("/products", endpoints.products),
        Route("/nights", endpoints.nights),
        Route("/frame/{file_id:int}", endpoints.frame),
        Route("/api/status", endpoints.api_status),
        Route("/api/frames", endpoints.api_frames),
        Route("/files/{path:path}", endpoints.output_file),
        Route("/masters/{master_id:int}/preview.png", endpoints.master_preview),
        Mount("/static", StaticFiles(packages=[("observd.web", "static")]), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(Guard, token=token)],
        exception_handlers={NoCatalog: endpoints.no_catalog},
    )


class Endpoints:
    """The route handlers, over one configuration's catalog and output folder."""

    def __init__(self, config: Config, poll_seconds: float):
        self.config = config
        self.poll_seconds = poll_seconds
        self.files = OutputFiles(config.paths.output)
        self.templates = _templates(ZoneInfo(config.site.timezone))

    # -- pages ------------------------------------------------------------------------------------

    def tonight(self, request: Request) -> Response:
        night = request.query_params.get("night") or None
        return self._page(
            request, "tonight.html", "Tonight", lambda c: pages.tonight(c, self.config, self.files, night)
        )

    def quality(self, request: Request) -> Response:
        night = request.query_params.get("night") or None
        return self._page(request, "quality.html", "Quality", lambda c: pages.quality(c, self.config, night))

    def masters(self, request: Request) -> Response:
        return self._page(request, "masters.html", "Masters", lambda c: pages.masters(c, self.files))

    def products(self, request: Request) -> Response:
        night = request.query_params.get("night") or None
        return self._page(request, "products.html", "Products", lambda c: pages.products(c, self.files, night))

    def nights(self, request: Request) -> Response:
        return self._page(request, "nights.html", "Nights", lambda c: pages.nights(c, self.files))

    def frame(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        return self._page(request, "frame.html", "Frame", lambda c: pages.frame(c, self.config, self.files, file_id))

    # -- JSON: the CLI's documents ------------------------------------------------------------------

    def api_status(self, request: Request) -> Response:
        """`observd status --json [--night N | --all]`."""
        query = request.query_params
        with self._reading() as catalog:
            document = status_for(
                catalog, self.config, night=query.get("night") or None, all_nights=query.get("all") in ("1", "true")
            )
        return JSONResponse(document)

    def api_frames(self, request: Request) -> Response:
        """`observd frames --json [--night N] [--state S]`."""
        query = request.query_params
        with self._reading() as catalog:
            document = frames_report(catalog, night=query.get("night") or None, state=query.get("state") or None)
        return JSONResponse(document)

    # -- files --------------------------------------------------------------------------------------

    def output_file(self, request: Request) -> Response:
        path = self.files.resolve(request.path_params["path"])
        if path is None:
            return PlainTextResponse("not found\n", 404)
        media_type = CONTENT_TYPES[path.suffix.lower()]
        download = path.name if media_type == "application/fits" else None
        return FileResponse(path, media_type=media_type, filename=download, headers={"Cache-Control": "no-cache"})

    def master_preview(self, request: Request) -> Response:
        with self._reading() as catalog:
            master = catalog.master(request.path_params["master_id"])
        preview = self.files.master_preview(master) if master else None
        if preview is None:
            return PlainTextResponse("no preview\n", 404)
        return FileResponse(preview, media_type="image/png", headers={"Cache-Control": "no-cache"})

    # -- the frame of every page ------------------------------------------------------------------

    def no_catalog(self, request: Request, exc: NoCatalog) -> Response:
        message = f"no catalog at {self.config.paths.database} yet: start `observd run` or `observd ingest`"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, 503)
        body = self.templates.get_template("no_catalog.html").render(message=message)
        return HTMLResponse(self._frame(request, "observd", Markup(body), etag="", night=None), 503)

    def _page(self, request: Request, template: str, title: str, build: Callable[[Catalog], dict | None]) -> Response:
        """The page, or with `?partial=1` only its content (304 when the client has it already)."""
        partial = request.query_params.get("partial") == "1"
        offered = request.headers.get("if-none-match", "")
        stamp = change_stamp(self.config.paths.database)
        if partial and offered.startswith(f'"{stamp}/'):
            return Response(status_code=304, headers={"ETag": offered})
        with self._reading() as catalog:
            context = build(catalog)
        if context is None:
            return PlainTextResponse("not found\n", 404)
        content = self.templates.get_template(template).render(context)
        digest = hashlib.sha1(content.encode()).hexdigest()[:16]
        etag = f'"{stamp}/{digest}"'
        headers = {"ETag": etag, "Cache-Control": "no-store"}
        if partial:
            unchanged = offered.endswith(f'/{digest}"')  # a commit that changed nothing shown here
            return Response(status_code=304, headers=headers) if unchanged else HTMLResponse(content, 200, headers)
        return HTMLResponse(self._frame(request, title, Markup(content), etag, context.get("night")), 200, headers)

    def _frame(self, request: Request, title: str, content: Markup, etag: str, night: str | None) -> str:
        return self.templates.get_template("base.html").render(
            title=title,
            content=content,
            etag=etag,
            poll_ms=int(self.poll_seconds * 1000),
            navigation=NAVIGATION,
            path=request.url.path,
            night=night,
        )

    @contextmanager
    def _reading(self) -> Iterator[Catalog]:
        try:
            catalog = Catalog.open(self.config.paths.database, readonly=True, timeout=5.0)
        except FileNotFoundError:
            raise NoCatalog from None
        try:
            yield catalog
        finally:
            catalog.close()


def _templates(tz: ZoneInfo) -> Environment:
    env = Environment(loader=PackageLoader("observd.web", "templates"), autoescape=select_autoescape())
    env.globals.update(version=__version__, state_kind=pages.state_kind)
    env.filters["local_time"] = lambda iso, fmt="%H:%M:%S": (
        datetime.fromisoformat(iso).astimezone(tz).strftime(fmt) if iso else "–"
    )
    env.filters["num"] = lambda value, fmt=".2f": "–" if value is None else format(value, fmt)
    return env

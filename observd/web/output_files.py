"""The output folder as the web page serves it: pictures and FITS files from under it, nothing
else, and a preview of each master, made once.

A request names a path relative to the output folder. It is refused (None, a 404) unless it has
no `..` segment, is not absolute, and, resolved (symbolic links followed), is a regular file
under the resolved output folder with a served suffix. The router has already decoded
percent-escapes, so `%2e%2e` arrives as `..`; a link leading out resolves outside; a folder is
never listed. The catalog and the status log live in the output folder by default: their
suffixes are not served.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from observd.adapters.fits_files import read_image
from observd.adapters.previews import write_thumbnail

__all__ = ["CONTENT_TYPES", "OutputFiles"]

log = logging.getLogger(__name__)

CONTENT_TYPES = {
    ".png": "image/png",
    ".fits": "application/fits",
    ".fit": "application/fits",
    ".fts": "application/fits",
}


class OutputFiles:
    """The files under `output` that the page may serve, and their URLs (`/files/<relative path>`)."""

    def __init__(self, output: Path):
        self.root = Path(os.path.realpath(output))
        self._previewing = threading.Lock()  # one master preview made at a time, each once

    def resolve(self, relative: str) -> Path | None:
        """The served file that `relative` names, or None when it must be refused."""
        if not relative or "\x00" in relative:
            return None
        parts = PurePosixPath(relative)
        if parts.is_absolute() or ".." in parts.parts:
            return None
        return self._served(self.root / relative)

    def url(self, path: str | Path | None) -> str | None:
        """The page's URL of an output file recorded in the catalog (None: not servable)."""
        served = self._served(Path(path)) if path else None
        return f"/files/{quote(served.relative_to(self.root).as_posix())}" if served else None

    def master_preview(self, master: dict) -> Path | None:
        """The PNG preview of a master, `<master>.png` beside it, made on the first request
        and kept: a page never decodes a master's FITS file twice. None when the master's
        file is not under the output folder or the preview cannot be made."""
        fits_path = self._served(Path(master["path"]))
        if fits_path is None:
            return None
        preview = fits_path.with_suffix(".png")
        with self._previewing:
            if not preview.is_file():
                try:
                    write_thumbnail(read_image(fits_path), preview)
                except Exception as exc:  # a damaged or unreadable master: no preview, the page goes on
                    log.warning("no preview of %s: %s: %s", fits_path.name, type(exc).__name__, exc)
                    return None
        return preview

    def _served(self, path: Path) -> Path | None:
        try:
            real = Path(os.path.realpath(path, strict=True))
        except (OSError, ValueError):
            return None
        if not real.is_relative_to(self.root) or not real.is_file():
            return None
        return real if real.suffix.lower() in CONTENT_TYPES else None

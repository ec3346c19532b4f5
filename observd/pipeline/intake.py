"""From a path on disk to one row in the catalog: stat, size check, hash, header, classify.

`ingest` and the daemon both call `catalogue`, so a file is treated the same whether it
arrives while observd watches or from an archive. The stat-only fast path (size and
mtime_ns unchanged since the catalog last saw the path) makes rescans of thousands of
known files cheap; only new or changed files are hashed and read.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from observd.adapters.catalog import Catalog
from observd.adapters.fits_files import FitsReadError, read_image_header, sha256_file
from observd.adapters.fully_written import check_fits_size
from observd.core.classify import ClassifyRules, classify
from observd.core.config import Config
from observd.core.grouping import group_key


@dataclass(frozen=True)
class Seen:
    """What happened to one path."""

    path: str
    file_id: int | None
    state: str
    reason: str | None = None
    new: bool = True  # False: already catalogued with this content, nothing to do
    frame_type: str | None = None


def classify_rules(config: Config) -> ClassifyRules:
    c = config.classify
    return ClassifyRules(keywords=c.keywords, values=c.values, filename_patterns=c.filename_patterns, bayer=c.bayer)


def catalogue(
    path: Path,
    catalog: Catalog,
    config: Config,
    *,
    rules: ClassifyRules | None = None,
    known: dict[str, tuple[int, int, str, int]] | None = None,
    final: bool = True,
    digest: Callable[[Path], str] | None = None,
) -> Seen:
    """Record `path` in the catalog and return what became of it.

    `known` is `catalog.known_stats()` taken once per batch (the fast path). With
    `final=False` (the daemon, while a file may still be growing) an incomplete file is
    recorded as 'pending' instead of 'rejected'; its row is completed in place later.
    `digest`: the content hash of a file, default sha256_file (a batch hands one that hashes
    ahead in threads).
    """
    key = str(Path(path).absolute())
    try:
        st = os.stat(key)
    except FileNotFoundError:
        return _record_gone(catalog, key)
    except OSError as exc:
        return _record_unreadable(catalog, key, _os_reason(exc))
    if Path(key).is_dir():
        return _record_unreadable(catalog, key, "is a directory, not a file")
    if known is not None and known_unchanged(key, st, known):
        return Seen(key, known[key][3], known[key][2], new=False)

    check = check_fits_size(Path(key))
    if not check.complete:
        state = "rejected" if final else "pending"
        file_id, _ = catalog.record_file(
            path=key, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=None, state=state, reason=check.reason
        )
        return Seen(key, file_id, state, check.reason)
    try:
        sha256 = (digest or sha256_file)(Path(key))
        image = read_image_header(Path(key))
    except FileNotFoundError:
        return _record_gone(catalog, key)
    except OSError as exc:
        return _record_unreadable(catalog, key, _os_reason(exc), st)
    except FitsReadError as exc:
        file_id, new = catalog.record_file(
            path=key, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha256, state="rejected", reason=str(exc)
        )
        return Seen(key, file_id, "rejected", str(exc), new)

    info = classify(
        image.cards,
        Path(key).name,
        rules or classify_rules(config),
        timezone=config.site.timezone,
        hdu_index=image.hdu_index,
    )
    state = "unknown" if info.frame_type == "unknown" else "classified"
    file_id, new = catalog.record_file(
        path=key,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        sha256=sha256,
        state=state,
        info=info,
        group_key=group_key(info, config.masters.ignore_keys),
    )
    if new:
        _retire_renamed(catalog, sha256, key)
        if info.bayer_note:
            catalog.event("warning", "colour", f"{Path(key).name}: {info.bayer_note}", key)
    row = catalog.file(file_id)
    return Seen(key, file_id, row["state"], row["reason"], new, info.frame_type)


def _retire_renamed(catalog: Catalog, sha256: str, key: str) -> None:
    """The same content under an old name that no longer exists: a program wrote the file under a
    temporary name and renamed it. The old name's row retires, processed or not: the frame is
    this one, and must count and be stacked once."""
    for old in catalog.same_content_elsewhere(sha256, key):
        if not os.path.exists(old):
            catalog.retire(old, f"renamed to {Path(key).name}", processed=True)


def known_unchanged(key: str, st: os.stat_result, known: dict[str, tuple[int, int, str, int]]) -> bool:
    """The catalog has this path with this size and mtime: its content is taken as known."""
    return key in known and known[key][:2] == (st.st_size, st.st_mtime_ns)


GONE_REASON = "gone before it was processed (renamed or deleted: written under a temporary name?)"


def _record_gone(catalog: Catalog, key: str) -> Seen:
    """A file that disappeared before it could be read: no failure, nothing to act on (the
    program that wrote it renamed or removed it); its row, if any, is retired."""
    return Seen(key, catalog.retire(key, GONE_REASON), "gone", GONE_REASON, new=False)


def _record_unreadable(catalog: Catalog, key: str, reason: str, st: os.stat_result | None = None) -> Seen:
    file_id, _ = catalog.record_file(
        path=key,
        size=st.st_size if st else 0,
        mtime_ns=st.st_mtime_ns if st else 0,
        sha256=None,
        state="rejected",
        reason=reason,
    )
    return Seen(key, file_id, "rejected", reason)


def _os_reason(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied: observd cannot read this file (check its owner and mode)"
    if exc.errno == errno.EISDIR:
        return "is a directory, not a file"
    return f"cannot read: {exc.strerror or exc}"

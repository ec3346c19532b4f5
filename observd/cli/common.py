"""What the `observd` commands share: the usage error (exit 2), the configuration, the catalog."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from observd.adapters.config_file import load_config
from observd.core.config import Config


class UsageError(Exception):
    """A problem with what the user asked for; exit code 2."""


def load(args) -> Config:
    """The configuration `-c` names, or the default one."""
    return load_config(Path(args.config) if getattr(args, "config", None) else None)


@contextmanager
def reading(config: Config):
    """A read-only catalog for the reporting commands (never blocks, never blocks the daemon)."""
    catalog = open_catalog(config, readonly=True)
    try:
        yield catalog
    finally:
        catalog.close()


def open_catalog(config: Config, *, readonly: bool = False):
    """The catalog; a missing one (read-only) is a usage error."""
    from observd.adapters.catalog import Catalog

    try:
        return Catalog.open(config.paths.database, readonly=readonly)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None

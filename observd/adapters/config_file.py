"""Reading the configuration file: TOML into the validated `Config` of `observd.core.config`."""

from __future__ import annotations

import tomllib
from pathlib import Path

from observd.core.config import Config, ConfigError, config_from_dict


def load_config(path: Path | None) -> Config:
    """Read `path` (None = embedded defaults). Relative paths are relative to the file's folder."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return config_from_dict(raw, source=str(path), base=path.parent.resolve())

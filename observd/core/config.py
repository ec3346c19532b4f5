"""Configuration: one TOML file read once into frozen dataclasses.

Every key has a default, so an empty or missing file works. Unknown keys and wrong types
are errors that name the file, the key, the value and what was expected, because an
observer editing a config at 3 a.m. needs to know exactly which line to fix.
Nothing below the CLI reads the file or the environment: sections are passed down
(`observd.adapters.config_file` reads the file).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from observd.core.bayer import BAYER_PATTERNS, DEBAYER_METHODS
from observd.core.frames import CALIBRATION_TYPES, DATA_TYPES
from observd.core.wcs_hints import radec


class ConfigError(Exception):
    """A configuration file that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class PathsConfig:
    watch: Path = Path("incoming")  # the camera's output folder (read-only for observd)
    output: Path = Path("observd-output")  # masters, calibrated/aligned lights, stacks, previews
    database: Path = Path("observd-output/observd.db")  # the SQLite catalog (WAL mode)
    status_log: Path = Path("observd-output/status.log")  # human-readable log, one line per event


@dataclass(frozen=True)
class SiteConfig:
    timezone: str = "UTC"  # IANA name; the night label flips at local noon
    # the observatory, for light curves (BJD_TDB, airmass) when the lights carry no SITELAT/SITELONG
    latitude: float | None = None  # degrees, north positive
    longitude: float | None = None  # degrees, EAST positive (west of Greenwich is negative)
    elevation: float = 0.0  # metres above sea level


@dataclass(frozen=True)
class ClassifyConfig:
    keywords: tuple[str, ...] = ()  # extra frame-type keywords, tried before the built-in ones
    values: dict[str, str] = field(default_factory=dict)  # extra value -> bias|dark|flat|light
    filename_patterns: dict[str, str] = field(default_factory=dict)  # glob on file name -> type
    bayer: dict[str, str] = field(default_factory=dict)  # INSTRUME -> Bayer pattern, for cameras that write none


@dataclass(frozen=True)
class MastersConfig:
    min_bias: int = 7  # eligible frames needed for a master bias
    min_dark: int = 5  # ... for a master dark
    min_flat: int = 5  # ... for a master flat
    ignore_keys: tuple[str, ...] = ()  # grouping criteria to disregard, e.g. ["instrument"] if its name varies
    temp_tolerance: float = 0.5  # deg C around SET-TEMP (or the group median)
    settle_seconds: float = 120.0  # no new frame of the group for this long before building
    max_age_days: float = 30.0  # masters older than this are not used for lights
    method: str = "median"  # median | mean, after rejection: bias and dark masters
    flat_method: str = (
        "mean"  # median | mean, flat masters: a flat's noise stays in every light (a median's is ~22% more)
    )
    rejection: str = "sigclip"  # sigclip | winsorized | minmax | none
    sigma: float = 3.0  # rejection threshold (low and high), in standard deviations
    memory_limit_mb: int = 1024  # cap for band-by-band combination
    saturation_fraction: float = 0.01  # frames with more pixels at full scale are excluded
    flat_min_level: float = 0.05  # flat median as a fraction of full scale
    flat_max_level: float = 0.80  # flats brighter than this fraction are excluded (non-linear)
    dark_includes_bias: bool = False  # darks are not bias-subtracted (exact-exposure matching)
    hot_pixel_sigma: float = 5.0  # dark pixels this far above the median are masked as hot
    weak_pixel_level: float = 0.5  # flat pixels below this response are masked as dead/weak
    change_sigma: float = 6.0  # a new version differing from the previous one
    flat_normalisation: str = "per_site"  # colour flats: per_site (each Bayer site by its own median: no tint) | frame
    change_fraction: float = 0.05  # by > change_sigma in > this fraction of pixels is flagged


@dataclass(frozen=True)
class CalibrateConfig:
    gain: float | None = None  # e-/ADU override (else header EGAIN/GAIN)
    read_noise: float | None = None  # e- override (else header RDNOISE)
    dark_scaling: str = "auto"  # auto (exact exposure preferred) | exact | scale
    dark_fallback: bool = False  # use the nearest out-of-tolerance dark (with a warning) instead of waiting
    require: tuple[str, ...] = CALIBRATION_TYPES  # masters a light waits for; [] = uncalibrated mode
    # per INSTRUME, instead of `require` (smart telescopes take no flats or darks)
    require_by_instrument: dict[str, tuple[str, ...]] = field(default_factory=dict)
    debayer: str = "malvar2004"  # malvar2004 | bilinear | opencv_ea | menon2007: one-shot-colour lights to RGB

    def required(self, instrument: str | None) -> tuple[str, ...]:
        """The masters a light of `instrument` waits for."""
        return self.require_by_instrument.get(instrument or "", self.require)


@dataclass(frozen=True)
class MeasureConfig:
    threshold: float = 5.0  # detection threshold in background sigma
    min_star_fraction: float = 0.5  # fewer stars than this x the best frame: judged bad (clouds)
    max_elongation: float = 1.6  # median a/b above this: judged bad (trailing, wind)


@dataclass(frozen=True)
class AlignConfig:
    reference: str = ""  # file name of a fixed reference light; "" = automatic
    reference_min_frames: int = 3  # the daemon's first reference: the best of its first N good lights
    max_control_points: int = 50  # brightest stars used to find asterism matches
    min_matches: int = 4  # fewer matched stars: the frame is marked unaligned


@dataclass(frozen=True)
class StackConfig:
    at: str = "10:00"  # local time at which the previous night is stacked
    rejection: str = "sigclip"  # sigclip | winsorized | minmax | none
    small_n: int = 6  # winsorized clipping up to this many frames (always up to 11 at 3 sigma)
    sigma: float = 3.0  # rejection threshold, in standard deviations
    weighting: str = "noise"  # noise (1/noise²) | noise_fwhm (1/(noise·FWHM)²) | equal
    min_frames: int = 2  # fewer good aligned frames: no stack for that target/filter
    memory_limit_mb: int = 1024  # cap for band-by-band stacking
    deep: bool = False  # after a night's stacks, refresh the deep stacks (all nights) of its targets


@dataclass(frozen=True)
class ColourConfig:
    composites: bool = True  # R+G+B (+L) or narrowband stacks of one target and night -> a colour composite
    palette: str = "SHO"  # narrowband channels red, green, blue: S = SII, H = Ha, O = OIII
    white_balance: str = "stars"  # stars (median star is white) | camera (camera_gains) | none
    camera_gains: tuple[float, ...] = ()  # R, G, B multipliers when white_balance = "camera"


@dataclass(frozen=True)
class WebConfig:
    enabled: bool = False  # serve the observers' page from `observd run` too
    host: str = "127.0.0.1"  # another interface needs a token
    port: int = 8750
    token: str | None = None  # access token (or the OBSERVD_WEB_TOKEN environment variable)


@dataclass(frozen=True)
class AstrometryConfig:
    enabled: bool = True  # plate solve every stack with astrometry.net's solve-field (skipped when absent)
    cpu_limit_s: float = 30.0  # CPU-time bound of one solve
    radius_deg: float = 2.0  # search radius around the header's RA/DEC
    tweak_order: int = 2  # SIP distortion order (2 or 3)
    index_dir: str = ""  # astrometry.net index files; "" = /etc/astrometry.cfg's (/usr/share/astrometry)
    lights: bool = False  # also every aligned light: the stack's WCS (same pixel grid), no solve per light


POINTING_TARGET = "OBJECT"
"""The [photometry.targets] name that means each night's pointing target (see observd.pipeline.light_curves)."""


@dataclass(frozen=True)
class PhotometryConfig:
    # light curves: name -> "RA Dec" (J2000; "02:04:10.26 +46:41:16.3" hours/degrees, or "31.04275 46.68786"
    # degrees); the name "OBJECT" (value "") is each night's pointing target, at its lights' header coordinates
    targets: dict[str, str] = field(default_factory=dict)
    aperture_fwhm: float = 2.0  # aperture radius, in units of each frame's FWHM
    annulus_fwhm: tuple[float, ...] = (4.0, 6.0)  # sky annulus inner and outer radii, in FWHM
    max_comparisons: int = 8  # comparison stars in the ensemble at most
    brightness_ratio: float = 4.0  # comparisons within this factor of the target's flux
    max_comparison_scatter: float = 3.0  # a comparison scattering more than this x its expected noise is dropped
    min_frames: int = 5  # fewer good frames: no light curve (the reason is recorded)
    bin_minutes: float = 5.0  # the plot's binned points


@dataclass(frozen=True)
class NotifyConfig:
    urls: tuple[str, ...] = ()  # Apprise URLs (mailto://, ntfy://, tgram://, slack://, matrix://...)
    morning_report: bool = True  # one message per night after its stacks
    alarms: bool = True  # a message when the daemon needs a person (disk full, pool broken...)
    disk_free_percent: float = 10.0  # alarm when the output folder's disk has less free space than this
    quiet_hours: float = 2.0  # alarm when a night that began has had no new frame for this long...
    night_end: str = "05:00"  # ...before this local time (later, the session has simply ended)


@dataclass(frozen=True)
class WatchConfig:
    polling: bool = False  # PollingObserver for network shares (no inotify)
    poll_interval: float = 2.0  # seconds between polls (polling mode and fully-written re-checks)
    settle_seconds: float = 2.0  # size+mtime stable this long when no close event arrives
    ignore: tuple[str, ...] = ("*.tmp", "*.part", "*.partial", ".*", "*~", "~*")  # never treated as data
    rescan_minutes: float = 10.0  # periodic full rescan that catches anything events missed
    stall_seconds: float = 60.0  # an incomplete file unchanged this long is rejected (truncated upload)


@dataclass(frozen=True)
class DaemonConfig:
    workers: int = 0  # 0 = one per core
    memory_limit_mb: int = 0  # the whole process tree's budget (fewer jobs at once for big frames); 0 = half the RAM
    queue_size: int = 64  # bounded work queue: a burst cannot exhaust memory
    max_retries: int = 3  # attempts per file before it stays failed
    retry_backoff: float = 30.0  # seconds, doubled per attempt


@dataclass(frozen=True)
class ClusterConfig:
    scheduler: str = ""  # where `observd ingest` runs its jobs: "tcp://host:8786", "local:N"; "" = this host's pool
    timeout: float = 10.0  # seconds to reach the scheduler, and to wait for its first worker


@dataclass(frozen=True)
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    site: SiteConfig = field(default_factory=SiteConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    masters: MastersConfig = field(default_factory=MastersConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    stack: StackConfig = field(default_factory=StackConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    colour: ColourConfig = field(default_factory=ColourConfig)
    web: WebConfig = field(default_factory=WebConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    astrometry: AstrometryConfig = field(default_factory=AstrometryConfig)
    photometry: PhotometryConfig = field(default_factory=PhotometryConfig)
    source: str = "<defaults>"  # where this configuration came from

    def with_paths(self, **paths: Path) -> Config:
        """A copy with some [paths] replaced (the demo and tests use this)."""
        return dataclasses.replace(self, paths=dataclasses.replace(self.paths, **paths))


_CHOICES = {
    ("masters", "method"): ("median", "mean"),
    ("masters", "flat_method"): ("median", "mean"),
    ("masters", "rejection"): ("sigclip", "winsorized", "minmax", "none"),
    ("stack", "rejection"): ("sigclip", "winsorized", "minmax", "none"),
    ("stack", "weighting"): ("noise", "noise_fwhm", "equal"),
    ("calibrate", "dark_scaling"): ("auto", "exact", "scale"),
    ("calibrate", "debayer"): DEBAYER_METHODS,
    ("masters", "flat_normalisation"): ("per_site", "frame"),
    ("colour", "white_balance"): ("stars", "camera", "none"),
}


def config_from_dict(raw: dict, *, source: str = "<dict>", base: Path | None = None) -> Config:
    """Validate a parsed TOML document and build the frozen Config."""
    sections = {}
    hints = typing.get_type_hints(Config)
    for name, value in raw.items():
        if name == "source" or name not in hints:
            raise ConfigError(
                f"{source}: unknown section [{name}]; expected one of "
                f"{', '.join(f.name for f in dataclasses.fields(Config) if f.name != 'source')}"
            )
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: [{name}] must be a table, got {value!r}")
        sections[name] = _build_section(hints[name], name, value, source)
    config = Config(**sections, source=source)
    if base is not None:
        config = _resolve_paths(config, base)
    _check_semantics(config)
    return config


def _build_section(cls: type, section: str, values: dict, source: str):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            known = ", ".join(f.name for f in dataclasses.fields(cls))
            raise ConfigError(f"{source}: unknown key [{section}] {key} = {value!r}; known keys: {known}")
        kwargs[key] = _coerce(hints[key], value, f"[{section}] {key}", source)
        choices = _CHOICES.get((section, key))
        if choices and kwargs[key] not in choices:
            raise ConfigError(f"{source}: [{section}] {key} = {value!r}: expected one of {', '.join(choices)}")
    return cls(**kwargs)


def _coerce(hint, value, where: str, source: str):
    """Check `value` against the dataclass field type; return it converted (lists -> tuples...)."""

    def fail(expected: str):
        raise ConfigError(f"{source}: {where} = {value!r}: expected {expected}")

    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if value is None or value == "":
            return None
        return _coerce(inner[0], value, where, source)
    if hint is bool:
        if not isinstance(value, bool):
            fail("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            fail("a string")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            fail("a path (string)")
        return Path(value).expanduser()
    if origin is tuple and args[0] is float:
        if not isinstance(value, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            fail("a list of numbers")
        return tuple(float(v) for v in value)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            fail("a list of strings")
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict):
            fail("a table")
        return {key: _coerce(args[1], item, f"{where}.{key}", source) for key, item in value.items()}
    raise TypeError(f"config field type {hint} not supported")  # a programming error, not user input


def _resolve_paths(config: Config, base: Path) -> Config:
    resolved = {
        f.name: (base / getattr(config.paths, f.name))
        if not getattr(config.paths, f.name).is_absolute()
        else getattr(config.paths, f.name)
        for f in dataclasses.fields(PathsConfig)
    }
    return config.with_paths(**resolved)


def _check_semantics(config: Config) -> None:
    src = config.source
    try:
        ZoneInfo(config.site.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{src}: [site] timezone = {config.site.timezone!r}: expected an IANA time zone "
            "name such as 'Europe/Berlin' or 'America/Chicago'"
        ) from None
    try:
        stack_time(config.stack)
    except ValueError:
        raise ConfigError(f"{src}: [stack] at = {config.stack.at!r}: expected a local time HH:MM") from None
    for table in ("values", "filename_patterns"):
        for key, kind in getattr(config.classify, table).items():
            if kind.lower() not in DATA_TYPES:
                raise ConfigError(
                    f"{src}: [classify.{table}] {key!r} = {kind!r}: expected one of {', '.join(DATA_TYPES)}"
                )
    from observd.core.grouping import GROUP_CRITERIA

    criteria = sorted({c for names in GROUP_CRITERIA.values() for c in names})
    for key in config.masters.ignore_keys:
        if key not in criteria:
            raise ConfigError(f"{src}: [masters] ignore_keys contains {key!r}: expected some of {', '.join(criteria)}")
    requires = {"[calibrate] require": config.calibrate.require}
    requires |= {
        f"[calibrate.require_by_instrument] {k!r}": v for k, v in config.calibrate.require_by_instrument.items()
    }
    for where, kinds in requires.items():
        for kind in kinds:
            if kind not in CALIBRATION_TYPES:
                raise ConfigError(f"{src}: {where} contains {kind!r}: expected bias, dark or flat")
    for instrument, pattern in config.classify.bayer.items():
        if pattern.strip().upper() not in BAYER_PATTERNS:
            raise ConfigError(
                f"{src}: [classify.bayer] {instrument!r} = {pattern!r}: expected one of {', '.join(BAYER_PATTERNS)}"
            )
    palette = config.colour.palette
    if len(palette) != 3 or set(palette.upper()) - set("SHO"):
        raise ConfigError(f"{src}: [colour] palette = {palette!r}: expected three letters of S, H, O (e.g. SHO, HOO)")
    if config.colour.white_balance == "camera" and len(config.colour.camera_gains) != 3:
        raise ConfigError(
            f"{src}: [colour] white_balance = 'camera' needs camera_gains = [red, green, blue], "
            f"got {list(config.colour.camera_gains)!r}"
        )
    try:
        dt.time.fromisoformat(config.notify.night_end)
    except ValueError:
        raise ConfigError(
            f"{src}: [notify] night_end = {config.notify.night_end!r}: expected a local time HH:MM"
        ) from None
    if not 0 < config.web.port < 65536:
        raise ConfigError(f"{src}: [web] port = {config.web.port!r}: expected 1..65535")
    for section, key in (
        ("masters", "temp_tolerance"),
        ("masters", "settle_seconds"),
        ("watch", "settle_seconds"),
        ("watch", "rescan_minutes"),
        ("watch", "stall_seconds"),
    ):
        if getattr(getattr(config, section), key) < 0:
            raise ConfigError(
                f"{src}: [{section}] {key} = {getattr(getattr(config, section), key)!r}: expected a number >= 0"
            )
    limit = config.daemon.memory_limit_mb
    if limit < 0:
        raise ConfigError(f"{src}: [daemon] memory_limit_mb = {limit!r}: expected 0 (half the RAM) or a number of MiB")
    for section in ("masters", "stack"):
        # the band-by-band combinations run inside the whole budget
        if limit and getattr(config, section).memory_limit_mb >= limit:
            raise ConfigError(
                f"{src}: [{section}] memory_limit_mb = {getattr(config, section).memory_limit_mb} must be below "
                f"[daemon] memory_limit_mb = {limit}"
            )
    if config.cluster.timeout <= 0:
        raise ConfigError(f"{src}: [cluster] timeout = {config.cluster.timeout!r}: expected a number of seconds > 0")
    if config.astrometry.tweak_order not in (2, 3):
        raise ConfigError(f"{src}: [astrometry] tweak_order = {config.astrometry.tweak_order!r}: expected 2 or 3")
    if config.astrometry.cpu_limit_s <= 0:
        raise ConfigError(f"{src}: [astrometry] cpu_limit_s = {config.astrometry.cpu_limit_s!r}: expected a number > 0")
    _check_photometry(config.photometry, config.site, src)
    for key in ("min_bias", "min_dark", "min_flat"):
        if getattr(config.masters, key) < 1:
            raise ConfigError(f"{src}: [masters] {key} = {getattr(config.masters, key)!r}: expected an integer >= 1")


def _check_photometry(p: PhotometryConfig, site: SiteConfig, src: str) -> None:
    for name, where in p.targets.items():
        if name != POINTING_TARGET and radec(where) is None:
            raise ConfigError(
                f'{src}: [photometry.targets] {name!r} = {where!r}: expected "RA Dec" (J2000), e.g. '
                '"02:04:10.26 +46:41:16.3" (hours, degrees) or "31.04275 46.68786" (degrees)'
            )
    inner_outer = p.annulus_fwhm
    if len(inner_outer) != 2 or not p.aperture_fwhm < inner_outer[0] < inner_outer[1]:
        raise ConfigError(
            f"{src}: [photometry] annulus_fwhm = {list(inner_outer)!r}: expected [inner, outer] with "
            f"aperture_fwhm ({p.aperture_fwhm:g}) < inner < outer"
        )
    for key, low in (("aperture_fwhm", 0.0), ("brightness_ratio", 1.0), ("max_comparison_scatter", 1.0)):
        if getattr(p, key) <= low:
            raise ConfigError(f"{src}: [photometry] {key} = {getattr(p, key)!r}: expected a number > {low:g}")
    for key in ("max_comparisons", "min_frames"):
        if getattr(p, key) < 1:
            raise ConfigError(f"{src}: [photometry] {key} = {getattr(p, key)!r}: expected an integer >= 1")
    if site.latitude is not None and not -90 <= site.latitude <= 90:
        raise ConfigError(f"{src}: [site] latitude = {site.latitude!r}: expected degrees, -90..90")
    if site.longitude is not None and not -180 <= site.longitude <= 360:
        raise ConfigError(f"{src}: [site] longitude = {site.longitude!r}: expected degrees east, -180..360")


RESTART_ONLY = ("[paths]", "[daemon] workers", "[web]")
"""What a running daemon cannot change on a reload: the folders it watches and writes, its pool,
the address its web page listens on."""


def merge_reload(running: Config, loaded: Config) -> tuple[Config, list[str]]:
    """The configuration a reload takes: `loaded`, but with the running [paths], [daemon] workers
    and [web]; and the names of those that changed in the file (they need a restart)."""
    differences = (
        loaded.paths != running.paths,
        loaded.daemon.workers != running.daemon.workers,
        loaded.web != running.web,
    )
    changed = [name for name, differs in zip(RESTART_ONLY, differences) if differs]
    daemon = dataclasses.replace(loaded.daemon, workers=running.daemon.workers)
    return dataclasses.replace(loaded, paths=running.paths, daemon=daemon, web=running.web), changed


def stack_time(stack: StackConfig) -> dt.time:
    """The local time of the nightly stack job."""
    return dt.time.fromisoformat(stack.at)


def to_toml(config: Config) -> str:
    """The effective configuration as TOML (what `observd config` prints)."""
    lines = [f"# effective configuration (from {config.source})"]
    for sec in dataclasses.fields(Config):
        if sec.name == "source":
            continue
        section = getattr(config, sec.name)
        lines.append(f"\n[{sec.name}]")
        tables = []
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if isinstance(value, dict):
                tables.append((f.name, value))
            elif value is None:
                lines.append(f"# {f.name} = (unset)")
            else:
                lines.append(f"{f.name} = {_toml_value(value)}")
        for name, table in tables:
            lines.append(f"[{sec.name}.{name}]")
            lines.extend(f"{_toml_value(k)} = {_toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'

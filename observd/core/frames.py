"""What observd knows about one raw frame once its header has been read.

`FrameInfo` is the normalised, dialect-free view of a FITS header that every later stage
(grouping, master selection, calibration, the catalog) works from; nothing after
classification looks at raw header keywords again except calibration sections
(BIASSEC/TRIMSEC), which are carried here too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

CALIBRATION_TYPES = ("bias", "dark", "flat")  # what masters are built from, in build order
DATA_TYPES = CALIBRATION_TYPES + ("light",)  # what a header or a rule can name
FRAME_TYPES = DATA_TYPES + ("unknown",)  # what the catalog records


@dataclass(frozen=True)
class FrameInfo:
    frame_type: str  # one of FRAME_TYPES
    type_source: str  # why: "IMAGETYP='Light Frame'", "file name prefix 'Bias_'"...
    reason: str | None = None  # why the type is 'unknown' (None otherwise)
    exptime: float | None = None  # seconds
    ccd_temp: float | None = None  # sensor temperature, deg C (Kelvin converted)
    set_temp: float | None = None  # cooler set point, deg C
    filter: str | None = None  # normalised filter name, None when absent
    xbin: int = 1
    ybin: int = 1
    naxis1: int | None = None  # columns (x)
    naxis2: int | None = None  # rows (y)
    gain_setting: float | None = None  # camera gain *setting* (CMOS "GAIN" 0..600): a group key
    offset: float | None = None  # camera offset/black level setting: a group key
    readout_mode: str | None = None  # READOUTM / READMODE: a group key
    egain: float | None = None  # electrons per ADU, when the header knows it
    rdnoise: float | None = None  # read noise in electrons, when the header knows it
    saturation: float | None = None  # ADU level of saturation (SATURATE/DATAMAX), else from BITPIX
    instrument: str | None = None
    telescope: str | None = None
    object: str | None = None
    date_obs: datetime | None = None  # start of exposure, timezone-aware UTC
    night: str | None = None  # 'YYYY-MM-DD': local date of the evening (noon boundary)
    biassec: str | None = None  # FITS section strings, 1-based inclusive, as in the header
    trimsec: str | None = None
    hdu_index: int = 0  # which HDU holds the image (multi-extension/compressed files)
    bayer: str | None = None  # one-shot-colour: colours at stored [0,0],[0,1],[1,0],[1,1]; None = mono
    bayer_note: str | None = None  # why a frame that names a colour pattern is processed as mono

    @property
    def shape(self) -> tuple[int, int] | None:
        """Image shape in numpy order (rows, columns)."""
        if self.naxis1 is None or self.naxis2 is None:
            return None
        return (self.naxis2, self.naxis1)

    def to_record(self) -> dict:
        """Flat dict for the catalog (datetime as ISO-8601 UTC string)."""
        rec = asdict(self)
        rec["date_obs"] = self.date_obs.isoformat() if self.date_obs else None
        return rec


@dataclass(frozen=True)
class MasterFile:
    """A master calibration a job uses: which file, and what the job needs to know of it."""

    id: int
    path: str
    kind: str
    version: int
    exptime: float | None = None
    includes_bias: bool = False  # a dark that still holds the bias level

    @classmethod
    def from_row(cls, row: dict | None) -> MasterFile | None:
        """From a catalog `masters` row (None stays None)."""
        if row is None:
            return None
        return cls(row["id"], row["path"], row["type"], row["version"], row["exptime"], bool(row["includes_bias"]))

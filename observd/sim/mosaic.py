"""The colour filter array of a simulated one-shot-colour sensor, as a map of colour sites.

The simulator models the mosaic physically and independently of observd's own Bayer code:
`sensor_colours` lays the sensor's filter pattern over its whole readout (prescan and
overscan columns included, sensor row 0 at the top), `stored_colours` turns that map into
the stored data section (rows flipped for ROWORDER 'BOTTOM-UP', then trimmed), and every
pattern name the simulator writes or records (the header's BAYERPAT for given XBAYROFF/
YBAYROFF, the truth's stored pattern) is *read off* such a map, never derived by formula.

Channels are numbered R = 0, G = 1, B = 2 (int8 maps).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

CHANNELS = "RGB"


def sensor_colours(pattern: str, rows: int, cols: int) -> np.ndarray:
    """(rows, cols) int8 map of the sensor's colour sites, sensor row 0 at the top.

    `pattern` names the sites of readout pixels (0, 0), (1, 0), (0, 1), (1, 1) as (x, y),
    in reading order, and repeats every 2 pixels both ways.
    """
    cell = np.array([CHANNELS.index(c) for c in pattern], dtype=np.int8).reshape(2, 2)
    return np.tile(cell, ((rows + 1) // 2, (cols + 1) // 2))[:rows, :cols]


def stored_colours(colours: np.ndarray, row_order: str | None, prescan: int, cols: int) -> np.ndarray:
    """The colour of every pixel of the *stored* data section, numpy orientation (int8).

    A file written 'BOTTOM-UP' holds the sensor's bottom row first; the data section is the
    `cols` columns after the `prescan` columns of the readout.
    """
    stored = colours[::-1] if row_order == "BOTTOM-UP" else colours
    return np.ascontiguousarray(stored[:, prescan : prescan + cols])


def pattern_at(colours: np.ndarray, y: int = 0, x: int = 0) -> str:
    """The 4 letters of the map's sites [y, x], [y, x+1], [y+1, x], [y+1, x+1]."""
    return "".join(CHANNELS[int(c)] for c in colours[y : y + 2, x : x + 2].ravel())


@lru_cache(maxsize=64)
def header_pattern(pattern: str, xoff: int, yoff: int) -> str:
    """The BAYERPAT to write with XBAYROFF = `xoff`, YBAYROFF = `yoff` for a sensor whose
    physical pattern (at readout pixel (0, 0), sensor top) is `pattern`.

    The convention the header must satisfy: the colour of readout pixel (x, y) (y counted
    from the sensor's top) is P[(y + yoff) % 2][(x + xoff) % 2]. So P's site (row a, col b)
    is the colour of any pixel with (y + yoff) % 2 == a and (x + xoff) % 2 == b: read it off
    the sensor's map at the first such pixel.
    """
    colours = sensor_colours(pattern, 4, 4)
    sites = []
    for a in (0, 1):
        for b in (0, 1):
            y, x = (a - yoff) % 2, (b - xoff) % 2
            sites.append(CHANNELS[int(colours[y, x])])
    return "".join(sites)

"""A raw frame's header as the core sees it: plain values, no file object.

The FITS adapter (`observd.adapters.fits_files.header_cards`) reads a header into this form
once, so that classification stays pure and never has to guard against a live astropy
header that parses its cards lazily and may raise on any of them.
"""

from __future__ import annotations

from collections.abc import Mapping

HeaderValue = str | int | float | complex | bool | None

# Upper-case keyword -> (value, comment), read-only. Each keyword holds what a FITS header
# lookup of it gives: its first card, HIERARCH keywords without the prefix. An undefined
# value is None; a keyword whose value cannot be parsed is absent.
HeaderCards = Mapping[str, tuple[HeaderValue, str]]

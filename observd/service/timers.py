"""When the daemon's loop does its periodic work: the timers, on an injectable monotonic clock.

The loop wakes at least every tick; each of its duties has its own cadence. A reduction pass
runs at once when something new arrived, and then every `ADVANCE_INTERVAL` while calibration
groups may still be settling (a group builds its master `[masters] settle_seconds` after its
last frame, with nobody to poke the daemon then).
"""

from __future__ import annotations

import time
from collections.abc import Callable

ADVANCE_INTERVAL = 5.0  # s between reduction passes while calibration groups may be settling
RETRY_INTERVAL = 10.0  # s between looks for failed frames whose back-off expired
STATUS_INTERVAL = 5.0  # s, at most one systemd STATUS= update this often


class LoopTimers:
    """Deadlines of the loop's periodic duties. Each `*_due()` says whether a duty is due now."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._rescan = self._retry = self._advance = self._status = 0.0
        self._settling_until = 0.0

    def rescan_due(self) -> bool:
        return self.clock() >= self._rescan

    def rescanned(self, every_seconds: float) -> None:
        self._rescan = self.clock() + every_seconds

    def retry_due(self, backoff: float) -> bool:
        """Due every RETRY_INTERVAL (or the back-off, when shorter); claims the slot when due."""
        now = self.clock()
        if now < self._retry:
            return False
        self._retry = now + min(RETRY_INTERVAL, backoff)
        return True

    def settle(self, seconds: float) -> None:
        """New frames: keep passing for their groups' settle time, and two passes more."""
        self._settling_until = self.clock() + seconds + 2 * ADVANCE_INTERVAL

    def advance_due(self) -> bool:
        """A pass is due while groups may be settling, one ADVANCE_INTERVAL after the last."""
        now = self.clock()
        return now < self._settling_until and now >= self._advance

    def advanced(self) -> None:
        self._advance = self.clock() + ADVANCE_INTERVAL

    def advance_now(self) -> None:
        """A pass at the next step, and passes for one interval (a reloaded configuration)."""
        self._advance = 0.0
        self._settling_until = self.clock() + ADVANCE_INTERVAL

    def status_due(self) -> bool:
        return self.clock() >= self._status

    def status_sent(self) -> None:
        self._status = self.clock() + STATUS_INTERVAL

    def status_now(self) -> None:
        self._status = 0.0

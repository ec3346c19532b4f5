"""Advancing the night's reduction: the one loop shared by `observd ingest` and the daemon.

`Reducer.advance()` repeats, until nothing more can move, a pass of each stage: masters
(`master_stage`: biases, then the darks and flats that need them) and lights (`light_stage`:
calibration, measurement and alignment of the lights whose masters now exist). The stages
decide with the pure planners of `observd.core`, run the jobs of `observd.jobs` (in the worker
pool when there is one) and record every outcome. A failure of one frame is recorded with its
traceback, retried with back-off, and never stops the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path

from observd.adapters.catalog import RETIRABLE, Catalog
from observd.core.config import Config
from observd.jobs.pool import warm_up, worker_count
from observd.pipeline.dispatch import StageContext
from observd.pipeline.events import Events
from observd.pipeline.intake import GONE_REASON
from observd.pipeline.light_stage import LightStage, Progress
from observd.pipeline.master_stage import MasterStage

log = logging.getLogger(__name__)


class Reducer:
    """Moves catalogued frames through masters, calibration and alignment.

    `events`: where outcomes are said (default: the catalog's event log and this module's log).
    `config` and `pool` may be replaced while it runs (a reload, new workers after a crash).
    """

    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        *,
        pool: Executor | None = None,
        clock: Callable[[], float] = time.time,
        events: Events | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ):
        self.catalog = catalog
        self.clock = clock
        self.events = events or Events(catalog, log)
        self.should_stop = should_stop
        self._context = StageContext(config, catalog, self.events, self.fail, pool, clock, should_stop)
        self._masters = MasterStage(self._context)
        self._lights = LightStage(self._context)
        self._warmed = False

    @property
    def config(self) -> Config:
        return self._context.config

    @config.setter
    def config(self, config: Config) -> None:
        self._context.config = config

    @property
    def pool(self) -> Executor | None:
        return self._context.pool

    @pool.setter
    def pool(self, pool: Executor | None) -> None:
        self._context.pool = pool

    def warm_up(self) -> None:
        """Start the pool's workers now, in the background (a no-op without a pool or once started)."""
        if self.pool is not None and not self._warmed:
            self._warmed = True
            warm_up(self.pool, worker_count(self.config))

    def advance(self, *, final: bool, progress: Progress | None = None) -> int:
        """Do everything that can be done now; returns the number of actions taken."""
        total = 0
        while True:
            done = self._masters.step(final=final)
            done += self._lights.step(final=final, progress=progress)
            total += done
            if done == 0 or self.should_stop():
                return total

    def finish_night(self, night: str) -> int:
        """Before `night` is stacked: everything that can be done is done (masters whatever their
        settle time, a reference for every target from the frames there are); lights calibrated
        with other masters than the night's final ones are calibrated again; then the night's
        verdicts and references are made final (`alignment_stage.finish_night`). So its stacks do
        not depend on the order its frames came in. Returns the number of actions taken."""
        done = self.advance(final=True)
        again = self._lights.calibrate_again(night)
        if again:
            done += self.advance(final=True)
        return done + self._lights.alignment.finish_night(night, realign=again)

    def rebuild_masters(self) -> int:
        """`observd masters --rebuild`: a new version of every group's master, then what follows from it."""
        return self._masters.step(final=True, force=True) + self.advance(final=True)

    def fail(self, file_id: int, path: str, error: BaseException | str, tb: str = "") -> None:
        """Record a processing failure; the frame is retried after a back-off that doubles. A raw
        file that is gone (renamed or deleted before it was processed) is no failure: retired."""
        row = self.catalog.file(file_id) or {}
        if row.get("state") in RETIRABLE and not Path(row["path"]).exists():
            self.catalog.retire(row["path"], GONE_REASON)
            self.events.tell("info", GONE_REASON, row["path"])
            return
        attempts = (row.get("attempts") or 0) + 1
        backoff = self.config.daemon.retry_backoff * 2 ** (attempts - 1)
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.catalog.update_file(
            file_id,
            state="failed",
            reason=f"processing failed: {reason}",
            traceback=tb,
            attempts=attempts,
            next_attempt=self.clock() + backoff,
        )
        self.events.emit("error", "failed", f"processing failed (attempt {attempts}): {reason}", path)

    def retry_failed(self) -> int:
        """Failed frames whose back-off has expired go back to 'classified' (up to max_retries attempts)."""
        n = 0
        for row in self.catalog.files(state="failed"):
            if (row["attempts"] or 0) < self.config.daemon.max_retries and (row["next_attempt"] or 0) <= self.clock():
                self.catalog.update_file(row["id"], state="classified", reason=None)
                n += 1
        return n

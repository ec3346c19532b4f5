"""Live equals batch under faults: a small soak of the daemon (benchmarks/soak.py has the big one)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from soak import soak  # noqa: E402


@pytest.mark.slow
def test_a_night_delivered_with_faults_while_the_daemon_is_killed_equals_one_batch_run(tmp_path):
    """~60 files with chunked writes, temporary names, duplicates, rewrites and junk, while the
    daemon is SIGKILLed three times with its process group, once alone, and stopped once with
    SIGTERM: nothing lost or duplicated, the same states, reasons, masters and stacks as a batch
    run of the final folder, every output whole, no temporary file, raw files as written, no
    process left behind."""
    result = soak(tmp_path, n_files=60, kills=4, seed=3, size=128, pace=0.05)
    assert result["kills"] == {"group": 3, "alone": 1, "term": 1}
    assert result["files"] >= 60
    assert {"chunked", "tilde temporary name", ".tmp temporary name", "duplicate", "rewrite", "junk"} <= set(
        result["faults"]
    )
    assert result["problems"] == {}, result["problems"]

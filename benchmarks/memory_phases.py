"""Where the memory of `observd ingest --stack` goes: per process and per phase of the night.

Runs `observd ingest FOLDER --stack -c CONFIG` on a config whose catalog does not exist yet (a
fresh output folder: a night already reduced would not be reduced again) and samples every
process of its tree every 50 ms: its PSS from /proc/<pid>/smaps_rollup, split into anonymous
memory, file pages (the masters' memory-mapped planes, libraries) and shared memory (a
combination's output planes), as `bench_night.py` sums it. Each process is named by its role:
the command's own process, the fork server, the workers it forks, the resource tracker. The
phases come from the catalog afterwards: masters (until the last master is recorded), lights
(until the last light is), stacking (the rest). Prints, per phase, the tree's peak and what each
role held at that moment, and each role's own peak.

    python benchmarks/memory_phases.py RAW_FOLDER -c CONFIG.toml
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import psutil

from observd.adapters.catalog import Catalog
from observd.adapters.config_file import load_config

FIELDS = ("Pss", "Pss_Anon", "Pss_File", "Pss_Shmem")


def rollup(pid: int) -> dict[str, int]:
    """A process's PSS and its anonymous, file and shared-memory parts, in MiB ({} once it has ended)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in FIELDS:
                out[key] = int(value.split()[0]) >> 10
    except OSError:
        pass
    return out


def role(process: psutil.Process, root: int) -> str:
    """What a process of the tree is: the command, the fork server, a worker, the resource tracker."""
    try:
        command = " ".join(process.cmdline())
        if process.pid == root:
            return "command"
        if "forkserver" in command:
            return "fork server" if process.ppid() == root else "worker"
        return "resource tracker" if "resource_tracker" in command else command[:40]
    except psutil.Error:
        return "?"


def sample(command: list[str]) -> tuple[float, list[tuple[float, dict[str, dict[str, int]]]]]:
    """Run `command`; its start time and, every 50 ms, each of its tree's processes' `rollup` by
    "role pid"."""
    samples, roles = [], {}
    started = time.time()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def poll():
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [root] + root.children(recursive=True)
            except psutil.Error:
                tree = []
            now = {}
            for p in tree:
                roles.setdefault(p.pid, role(p, proc.pid))
                now[f"{roles[p.pid]} {p.pid}"] = rollup(p.pid)
            samples.append((time.time() - started, now))
            time.sleep(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    _, err = proc.communicate()
    done.set()
    thread.join()
    if proc.returncode:
        raise SystemExit(f"observd failed ({proc.returncode}): {err[-1500:]}")
    return started, samples


def phase_ends(config, started: float) -> list[tuple[str, float]]:
    """(phase, seconds since the start at which it ended), from the catalog's records."""
    catalog = Catalog.open(config.paths.database, readonly=True)
    try:

        def since(text: str) -> float:
            return datetime.fromisoformat(text).timestamp() - started

        masters = [since(e["time"]) for e in catalog.events(limit=10_000) if e["event"] == "master"]
        lights = [since(r["updated"]) for r in catalog.files(types=("light",))]
    finally:
        catalog.close()
    # the catalog's times are whole seconds: a phase ends within the second after its last record
    return [("masters", max(masters, default=0.0) + 1), ("lights", max(lights, default=0.0) + 1), ("stacking", 1e12)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("-c", "--config", type=Path, required=True)
    args = parser.parse_args()
    config = load_config(args.config)
    if Path(config.paths.database).exists():
        raise SystemExit(f"{config.paths.database} exists: give a config with a fresh output folder")
    command = [sys.executable, "-m", "observd", "ingest", str(args.folder), "--stack", "-c", str(args.config)]
    started, samples = sample(command)
    ends = phase_ends(config, started)
    peaks: dict[str, tuple[int, float, dict]] = {}
    own: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: dict.fromkeys(FIELDS, 0)))
    for t, processes in samples:
        phase = next(name for name, end in ends if t <= end)
        total = sum(p.get("Pss", 0) for p in processes.values())
        if total > peaks.get(phase, (-1,))[0]:
            peaks[phase] = (total, t, processes)
        for name, p in processes.items():
            kind = name.rsplit(" ", 1)[0]
            if p.get("Pss", 0) > own[phase][kind]["Pss"]:
                own[phase][kind] = {f: p.get(f, 0) for f in FIELDS}
    print(f"{' '.join(command)}: {samples[-1][0]:.1f} s")
    for phase, (total, t, processes) in peaks.items():
        print(f"{phase}: tree peak {total} MiB (summed PSS) at {t:.1f} s")
        for name, p in sorted(processes.items()):
            print(f"    {name:24s} {_parts(p)}")
        print("  each role's own peak in this phase (one process):")
        for kind, p in sorted(own[phase].items()):
            print(f"    {kind:24s} {_parts(p)}")


def _parts(p: dict[str, int]) -> str:
    parts = f"anon {p.get('Pss_Anon', 0)}, file {p.get('Pss_File', 0)}, shmem {p.get('Pss_Shmem', 0)}"
    return f"{p.get('Pss', 0):6d} MiB ({parts})"


if __name__ == "__main__":
    main()

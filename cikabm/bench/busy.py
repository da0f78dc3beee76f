"""The busy-machine case of the benchmark suite: the kernel beside one CPU-bound process.

A user's machine is rarely idle. Numba's OpenMP threads spin-wait at the end
of each parallel region by default, so on a machine where another process
holds a core, every region waits for the thread that shares that core: a
2-thread run was measured 15-60 times slower than 1 thread. Importing
:mod:`cikabm` sets the passive wait policy (``OMP_WAIT_POLICY=passive``)
unless the user chose one; this case measures whether that keeps runs with
the default thread count (one per core) no slower than one thread.

Protocol: one busy loop (a Python ``while True``) pinned to the first CPU runs
for the whole case. Beside it, the configuration's stepping window is timed
in fresh, *unpinned* worker processes (as a user's run is: the operating
system places its threads), alternating one thread and the default count,
``repeats`` rounds. With ``active_wait`` the default count is also timed once
with ``OMP_WAIT_POLICY=active`` (what a run without the package's setting
gets), for comparison.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from cikabm.bench.config import BenchConfig

__all__ = ["BUSY_LIMIT", "busy_loop", "run_busy_case"]

#: The most the default thread count may take, as a multiple of one thread's time, beside a busy process.
BUSY_LIMIT = 1.5

_BUSY_CODE = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"


def busy_loop(cpu: int) -> subprocess.Popen[bytes]:
    """Start one CPU-bound Python process pinned to ``cpu``; the caller must terminate it."""
    return subprocess.Popen([sys.executable, "-c", _BUSY_CODE, str(cpu)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_busy_case(config: BenchConfig, *, repeats: int, quick: bool,
                  run_worker: Callable[[dict[str, Any], dict[str, str], Callable[[str], None]], dict[str, Any]],
                  worker_env: Callable[[int], dict[str, str]], active_wait: bool = False,
                  emit: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Time ``config`` with 1 thread and the default count beside one busy process.

    Parameters
    ----------
    config : BenchConfig
        A strong-scaling configuration (its lattice is the same for every count).
    repeats : int
        Rounds; each times both thread counts once, alternating.
    quick : bool
        Use the configuration's quick window.
    run_worker, worker_env : callable
        The suite's worker runner and environment (:mod:`cikabm.bench.suite`).
    active_wait : bool
        Also time the default count once with ``OMP_WAIT_POLICY=active``.
    emit : callable
        Receives a line per finished measurement.

    Returns
    -------
    dict
        ``bench.json``'s ``busy_machine`` entry: seconds per thread count,
        ``ratio_default_over_one`` (medians), whether it is within
        :data:`BUSY_LIMIT`, and whether the results were identical; or
        ``skipped`` with the reason on a machine with one CPU.
    """
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    default = os.cpu_count() or 1
    if len(cpus) < 2 or default < 2:
        return {"skipped": "needs at least 2 CPUs (one for the busy process)"}
    counts = [1, default]
    seconds: dict[int, list[float]] = {n: [] for n in counts}
    digests: set[str] = set()
    active: list[float] = []

    def timed(n: int, env: dict[str, str]) -> list[float]:
        spec = {"task": "config", "config": config.to_dict(), "threads": [n], "repeats": 1,
                "quick": quick, "pin_threads": None, "count_agents": False}
        run = run_worker(spec, env, emit)["runs"][0]
        digests.update(run["digests"])
        return list(run["seconds"]["all"])

    busy = busy_loop(cpus[0])
    try:
        for round_ in range(repeats):
            for n in counts:
                emit(f"busy machine, round {round_ + 1}/{repeats}: {n} thread(s), a busy process on CPU {cpus[0]}")
                seconds[n] += timed(n, worker_env(n))
        if active_wait:
            emit(f"busy machine, {default} threads with OMP_WAIT_POLICY=active")
            active = timed(default, {**worker_env(default), "OMP_WAIT_POLICY": "active"})
    finally:
        busy.terminate()
        busy.wait()
    one, many = statistics.median(seconds[1]), statistics.median(seconds[default])
    ratio = many / one
    entry: dict[str, Any] = {
        "configuration": config.name,
        "busy_process": f"one CPU-bound Python loop pinned to CPU {cpus[0]}",
        "workers": "unpinned, as a user's run",
        "wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "default_threads": default,
        "seconds": {str(n): seconds[n] for n in counts},
        "median_seconds": {str(n): statistics.median(seconds[n]) for n in counts},
        "ratio_default_over_one": ratio,
        "limit": BUSY_LIMIT,
        "within_limit": ratio <= BUSY_LIMIT,
        "identical": len(digests) == 1,
    }
    if active:
        entry["active_wait_seconds"] = active
        entry["active_wait_ratio_over_one"] = statistics.median(active) / one
    return entry

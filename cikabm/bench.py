"""The benchmark suite: kernel throughput, memory, strong and weak scaling, and Mesa.

``cikabm bench`` and ``python benchmarks/run_suite.py`` both run
:func:`run_suite`; this module is the whole suite as a library.

What is measured
----------------
Every configuration (:data:`CONFIGS`, plain data) is a square or cubic lattice
with default rules: a tumour ball filling :data:`TUMOUR_FILL` of the sites,
endogenous CTL influx and CIK infusions on the Lee 2015 schedule from day 0.5.
Each configuration and thread count ``n`` runs in a fresh worker process
(``python -m cikabm.bench``) whose Numba thread pool is exactly ``n`` threads
(``NUMBA_NUM_THREADS``) and which is pinned to ``n`` CPUs (all of them when
``n`` is more than there are cores; :func:`pin_cpus`). Both matter on a small
machine: with a pool larger than the threads used, or a process left to
migrate between CPUs, the same single-thread run was markedly slower in some
processes than in others. The worker times separately:

* *import*: ``import cikabm.simulation`` (NumPy, Numba, pandas);
* *compile or cache load*: the first run of the kernels, on a tiny lattice
  (a cold compile is timed once, in its own worker with an empty cache
  directory, when the suite is not ``quick``);
* *set-up*: building the configuration's :class:`~cikabm.Simulation`
  (allocation, seeding the tumour, the first record), repeated;
* *warm-up*: one untimed simulated day (``warmup_steps``), so that effectors
  are present;
* *stepping*: ``steps`` kernel steps in one :meth:`~cikabm.Simulation.advance`
  call, from a copy of the warmed-up state, ``repeats`` times for every thread
  count. Medians, minima and maxima are reported, every repeat is kept.

Strong-scaling configurations keep their size for every thread count; the
final state of every run (lattice, effectors, field, records, tallies) is
hashed (:func:`state_digest`) and all digests must be equal. Weak-scaling
configurations grow the last lattice axis with the thread count.

Definitions (also written into ``bench.json``) are in :data:`DEFINITIONS`.

The Mesa reference implementation (:mod:`cikabm.mesa.reference`, optional
extra ``teach``) runs the configurations marked ``mesa`` with the same
protocol; agent updates are counted the same way for both implementations, and
``mesa_ratio`` is the kernel's agent updates per second on one thread over
Mesa's.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "BENCH_FILES",
    "CONFIGS",
    "DEFINITIONS",
    "FULL_SET",
    "QUICK_SET",
    "BenchConfig",
    "BenchError",
    "bench_scenario",
    "cpu_model",
    "default_machine_name",
    "default_threads",
    "load_reports",
    "machine_info",
    "markdown_report",
    "memory_footprint",
    "mesa_available",
    "numba_threads",
    "parse_configs",
    "parse_threads",
    "round_sizes",
    "run_config",
    "run_mesa",
    "run_suite",
    "save_plots",
    "state_digest",
    "summary_text",
    "write_report",
]

#: Version of the layout of ``bench.json``.
SCHEMA_VERSION = 1

#: Fraction of the lattice the initial tumour ball fills.
TUMOUR_FILL = 0.35

#: Populations are recorded every 36 steps (6 h of 10-min steps); warm-up and
#: timed windows are whole multiples of it, so records bound every window.
RECORD_EVERY_STEPS = 36

#: Files ``cikabm bench`` writes into its output directory.
BENCH_FILES = ("bench.json", "strong_scaling.png", "weak_scaling.png", "site_updates.png")

#: Effector arrays that are per-sub-step scratch, left out of :func:`state_digest`.
SCRATCH_EFFECTOR_FIELDS = frozenset({"event", "klass", "order"})

#: What the figures of ``bench.json`` mean.
DEFINITIONS: dict[str, str] = {
    "site_updates_per_s_per_thread": "interior lattice sites x timed steps / median wall seconds / threads",
    "effector_updates_per_s": "effector sub-step updates (motility sub-steps per step x effectors present, "
                              "summed over the timed steps) / median wall seconds; effectors present are "
                              "integrated from the populations recorded every 6 simulated hours "
                              "(trapezoid rule)",
    "cell_hours_per_s": "(live tumour cells + effectors), integrated over the timed simulated hours as "
                        "above, / median wall seconds: simulated cell-hours per wall second",
    "bytes_per_site": "bytes of every lattice array (padded, border included) + the IFN-gamma field and its "
                      "scratch copy + any other state array not sized by the effector capacity, / interior "
                      "sites; the record table (sized by the run's duration) is left out",
    "bytes_per_effector": "bytes of one slot of every effector array (struct of arrays, allocated for "
                          "effectors.capacity)",
    "speedup": "median seconds at the smallest thread count x that count / median seconds at n threads "
               "(strong scaling: the same lattice)",
    "efficiency": "strong: t(1) / (n t(n)); weak (lattice grows with n): t(1, N) / t(n, n N); both "
                  "against the smallest thread count measured when it is not 1",
    "efficiency_min": "efficiency from the fastest repeat of each thread count instead of the median: "
                      "less sensitive to other work on the machine, which only ever adds time",
    "identical_across_threads": "the final lattice, effectors, field, records and tallies of every run "
                                "(all thread counts and repeats) hash to the same SHA-256 digest",
    "agent_updates_per_s": "Mesa comparison, the same for both implementations: (live tumour cells at the "
                           "start of each timed step + motility sub-steps x effectors at the start of each "
                           "timed step), summed, / wall seconds of the timed steps",
    "mesa_ratio": "kernel agent updates per second on one thread / Mesa reference agent updates per "
                  "second, same scenario, seed, warm-up and timed steps",
    "mesa_ratio_min": "the same from the fastest repeat of each (other work on the machine only adds time)",
    "seconds_by_pass": "the median timed seconds split over the passes of the step (supply, tumour propose, "
                       "tumour resolve, effectors, IFN-gamma field, record) in proportion to the CPU "
                       "time-stamp-counter ticks each took, summed over the repeats (x86-64 only); Mesa: the "
                       "same split in proportion to the wall seconds each pass method took over all repeats",
}


class BenchError(RuntimeError):
    """A benchmark worker failed; the message holds the end of its error output."""


# --------------------------------------------------------------------------- configurations

@dataclass(frozen=True)
class BenchConfig:
    """One benchmark configuration.

    Parameters
    ----------
    name : str
        Key in ``bench.json`` and value of ``--configs``.
    shape : tuple of int
        Interior lattice shape, ``(ny, nx)`` or ``(nz, ny, nx)``; for a weak
        configuration the shape per thread.
    description : str
        One line for tables.
    kind : {"strong", "weak"}
        Strong: the same lattice for every thread count. Weak: the last axis
        grows with the thread count.
    steps, warmup_steps : int
        Timed and untimed (warm-up) steps of the full suite.
    quick_steps, quick_warmup_steps : int
        The same with ``--quick``.
    mesa : bool
        Also run the Mesa reference implementation on this configuration.
    """

    name: str
    shape: tuple[int, ...]
    description: str
    kind: str = "strong"
    steps: int = 288
    warmup_steps: int = 144
    quick_steps: int = 72
    quick_warmup_steps: int = 72
    mesa: bool = False

    def __post_init__(self) -> None:
        if len(self.shape) not in (2, 3) or min(self.shape) < 3:
            raise ValueError(f"{self.name}: shape {self.shape} must be 2 or 3 edges of at least 3 sites")
        if self.kind not in ("strong", "weak"):
            raise ValueError(f"{self.name}: kind {self.kind!r} must be 'strong' or 'weak'")
        for label in ("steps", "warmup_steps", "quick_steps", "quick_warmup_steps"):
            value = getattr(self, label)
            if value < RECORD_EVERY_STEPS or value % RECORD_EVERY_STEPS:
                raise ValueError(f"{self.name}: {label} = {value} must be a positive multiple of "
                                 f"{RECORD_EVERY_STEPS}")

    @property
    def dims(self) -> int:
        """2 or 3."""
        return len(self.shape)

    def shape_for(self, threads: int) -> tuple[int, ...]:
        """Lattice shape run with ``threads`` threads (weak scaling: last axis x threads)."""
        if self.kind == "weak":
            return (*self.shape[:-1], self.shape[-1] * threads)
        return self.shape

    def window(self, quick: bool) -> tuple[int, int]:
        """``(warmup_steps, timed_steps)`` of the full or the quick suite."""
        return (self.quick_warmup_steps, self.quick_steps) if quick else (self.warmup_steps, self.steps)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the worker receives its configuration as JSON)."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "shape": tuple(data["shape"])})


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(n) for n in shape)


#: Every configuration the suite knows, by name.
CONFIGS: dict[str, BenchConfig] = {c.name: c for c in (
    BenchConfig("2d_256", (256, 256), "2D 256x256, small", mesa=True),
    BenchConfig("2d_1024", (1024, 1024), "2D 1024x1024"),
    BenchConfig("2d_4096", (4096, 4096), "2D 4096x4096, large", steps=72, quick_steps=36,
                quick_warmup_steps=36),
    BenchConfig("3d_64", (64, 64, 64), "3D 64x64x64, small"),
    BenchConfig("3d_128", (128, 128, 128), "3D 128x128x128", steps=144),
    BenchConfig("weak_2d_512", (512, 512), "2D weak scaling, 512x512 per thread", kind="weak"),
    BenchConfig("weak_2d_1024", (1024, 1024), "2D weak scaling, 1024x1024 per thread", kind="weak"),
    # Tiny configurations for the tests of the suite itself (not timed for real).
    BenchConfig("2d_64", (64, 64), "2D 64x64, tiny (tests)", mesa=True, steps=36, warmup_steps=36,
                quick_steps=36, quick_warmup_steps=36),
    BenchConfig("weak_2d_64", (64, 64), "2D weak scaling, 64x64 per thread, tiny (tests)", kind="weak",
                steps=36, warmup_steps=36, quick_steps=36, quick_warmup_steps=36),
)}

#: Configurations of the full suite.
FULL_SET = ("2d_256", "2d_1024", "2d_4096", "3d_128", "weak_2d_1024")
#: Configurations of ``--quick`` (about a minute on 2 cores).
QUICK_SET = ("2d_256", "2d_1024", "3d_64", "weak_2d_512")

#: Timed repeats per thread count: the full suite's, and ``--quick``'s.
DEFAULT_REPEATS = 9
QUICK_REPEATS = 2
#: Rounds (workers per thread count) the full suite spreads its repeats over.
ROUNDS = 3
#: Timed repeats of the Mesa reference implementation (at most; one per round).
MESA_REPEATS = 3

#: The speed ratio over the Mesa reference implementation the project aims at.
MESA_RATIO_TARGET = 300


def bench_scenario(shape: Sequence[int], *, seed: int = 11) -> dict[str, Any]:
    """The scenario of a configuration, as the dict :func:`cikabm.scenario_from_dict` takes.

    Default rules; a tumour ball of :data:`TUMOUR_FILL` x sites; endogenous CTLs
    at 2e-3 per site per day; CIK infusions on the Lee 2015 schedule from day
    0.5; room for one effector per four sites.
    """
    sites = math.prod(shape)
    return {
        "scenario": {"name": f"bench_{len(shape)}d_{_shape_text(shape)}", "seed": seed},
        "lattice": {"shape": list(shape)},
        "time": {"duration_days": 30.0, "dt_minutes": 10.0, "record_every_hours": 6.0},
        "tumour": {"initial_cells": int(TUMOUR_FILL * sites)},
        "homing": {"ctl_per_site_per_day": 2e-3, "cik_per_site_per_day": 7e-13},
        "dosing": {"schedule": "lee2015", "start_day": 0.5},
        "effectors": {"capacity": max(1000, sites // 4)},
    }


def default_threads(cores: int | None = None) -> list[int]:
    """Thread counts timed by default: 1, 2, 4, ... up to ``cores``, then ``cores``, then ``cores + 1``.

    The last one oversubscribes the machine: it is there so that the identity
    check covers more threads than cores (1, 2, 3 on a 2-core machine).
    """
    cores = max(1, cores or os.cpu_count() or 1)
    counts = {1, cores, cores + 1}
    n = 2
    while n < cores:
        counts.add(n)
        n *= 2
    return sorted(counts)


# --------------------------------------------------------------------------- machine

def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (or what :mod:`platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU, cores, operating system and versions, without importing Numba."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numba": _version("numba"),
        "numpy": _version("numpy"),
        "mesa": _version("mesa"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
    }


def default_machine_name() -> str:
    """A directory-safe name for this machine: the CPU model and the core count, e.g. ``amd-epyc-2c``."""
    slug = re.sub(r"[^a-z0-9]+", "-", cpu_model().lower()).strip("-") or "machine"
    return f"{slug[:40].strip('-')}-{os.cpu_count() or 1}c"


# --------------------------------------------------------------------------- measurements (worker side)

def _stats(values: Sequence[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "all": list(values)}


def _named_arrays(state: Any) -> list[tuple[str, Any]]:
    """``(name, array)`` pairs of a NamedTuple of arrays."""
    return list(zip(state._fields, state, strict=True))


def state_digest(sim: Any) -> str:
    """SHA-256 of a simulation's state: what must not depend on the thread count.

    Every lattice array, the live part of every effector array except the
    per-sub-step scratch (:data:`SCRATCH_EFFECTOR_FIELDS`), the IFN-gamma field,
    the record table and the tallies (counters, kills, arrivals).
    """
    import numpy as np

    h = hashlib.sha256()
    for name, arr in _named_arrays(sim.lattice):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    n = int(sim.counters[0])
    for name, arr in _named_arrays(sim.effectors):
        if name not in SCRATCH_EFFECTOR_FIELDS:
            h.update(name.encode())
            h.update(np.ascontiguousarray(arr[:n]).tobytes())
    for name in ("ifn", "records", "counters", "kills", "arrivals"):
        arr = getattr(sim, name, None)
        if arr is not None:
            h.update(name.encode())
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def memory_footprint(sim: Any) -> dict[str, Any]:
    """Bytes of a simulation's state arrays, per lattice site and per effector.

    Walks the simulation's attributes: the lattice arrays, the IFN-gamma field
    (``ifn*``), the effector arrays, the record table, and any other array
    (counted with the lattice unless it is sized by the effector capacity).

    Returns
    -------
    dict
        ``bytes_per_site``, ``bytes_per_effector`` and the byte counts behind them.
    """
    import numpy as np

    capacity = len(sim.effectors.pos)
    sites = math.prod(sim.scenario.lattice.shape)
    buckets = {"lattice": 0, "field": 0, "other": 0, "effectors": 0, "records": 0}
    per_effector = 0
    for name, value in vars(sim).items():
        if isinstance(value, np.ndarray):
            if name.startswith("ifn"):
                buckets["field"] += value.nbytes
            elif name == "records":
                buckets["records"] += value.nbytes
            elif value.ndim == 1 and len(value) == capacity and capacity > 0:
                buckets["effectors"] += value.nbytes
                per_effector += value.itemsize
            else:
                buckets["other"] += value.nbytes
        elif isinstance(value, tuple) and hasattr(value, "_fields"):
            arrays = [a for a in value if isinstance(a, np.ndarray)]
            if name == "effectors":
                buckets["effectors"] += sum(a.nbytes for a in arrays)
                per_effector += sum(a.itemsize for a in arrays if a.ndim == 1)
            else:
                buckets["lattice" if name == "lattice" else "other"] += sum(a.nbytes for a in arrays)
    per_site_bytes = buckets["lattice"] + buckets["field"] + buckets["other"]
    return {
        "bytes_per_site": per_site_bytes / sites,
        "bytes_per_effector": per_effector,
        "interior_sites": sites,
        "effector_capacity": capacity,
        "lattice_bytes": buckets["lattice"],
        "field_bytes": buckets["field"],
        "other_state_bytes": buckets["other"],
        "effector_bytes": buckets["effectors"],
        "record_bytes": buckets["records"],
    }


def _window_populations(sim: Any, warmup: int, steps: int) -> dict[str, float]:
    """Tumour cells and effectors summed over the steps of the timed window (trapezoid over records)."""
    import numpy as np

    from cikabm.simulation import record_columns

    cols = record_columns(sim.records)
    every = sim.disc.record_every
    lo, hi = warmup // every, (warmup + steps) // every
    tumour = np.asarray(cols["tumour_total"][lo:hi + 1], dtype=float)
    effectors = sum(np.asarray(v[lo:hi + 1], dtype=float) for k, v in cols.items()
                    if k.startswith("effectors_") and k not in ("effectors_engaged", "effectors_exhausted"))

    def integral(y: Any) -> float:
        return float(((y[:-1] + y[1:]) / 2.0).sum() * every)

    return {"tumour_cell_steps": integral(tumour), "effector_steps": integral(effectors),
            "tumour_cells_mean": integral(tumour) / steps, "effectors_mean": integral(effectors) / steps}


def _exact_agent_updates(sim: Any, steps: int) -> dict[str, int]:
    """Advance ``sim`` step by step, counting agent updates as the Mesa comparison defines them."""
    import numpy as np

    from cikabm.kernels.core import LIVE

    n_sub = int(sim.disc.params.n_sub)
    tumour = effectors = 0
    for _ in range(steps):
        tumour += int(np.count_nonzero(sim.lattice.cell == LIVE))
        effectors += n_sub * int(sim.counters[0])
        sim.advance(1)
    return {"tumour_cell_steps": tumour, "effector_updates": effectors, "agent_updates": tumour + effectors}


def _peak_rss_bytes() -> int | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    scale = 1 if sys.platform == "darwin" else 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def pin_cpus(threads: int) -> list[int] | None:
    """Pin this process to ``threads`` of the CPUs it may run on (all when there are fewer).

    Returns the CPUs pinned to, or None where the system cannot pin
    (:func:`os.sched_setaffinity` is Linux-only). Threads started afterwards
    (Numba's pool) inherit the set.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    chosen = allowed[:threads] if threads <= len(allowed) else allowed
    os.sched_setaffinity(0, chosen)
    return chosen


@contextlib.contextmanager
def numba_threads(threads: int) -> Iterator[None]:
    """Run a block with ``threads`` Numba threads, then restore the previous count."""
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def _time_kernel_start(emit: Callable[[str], None]) -> tuple[float, float]:
    """Import the simulation module and run the kernels once on a tiny lattice: (import s, compile s)."""
    t0 = time.perf_counter()
    from cikabm.scenario import scenario_from_dict
    from cikabm.simulation import Simulation

    t1 = time.perf_counter()
    tiny = Simulation(scenario_from_dict(bench_scenario((16, 16))))
    tiny.advance(2)
    t2 = time.perf_counter()
    emit(f"import {t1 - t0:.2f} s, kernels compiled or loaded from cache in {t2 - t1:.2f} s")
    return t1 - t0, t2 - t1


def run_config(config: BenchConfig, threads: Sequence[int], repeats: int, quick: bool,
               emit: Callable[[str], None] = lambda message: None, *, count_agents: bool = True) -> dict[str, Any]:
    """Time one configuration in this process (Numba's pool must allow ``max(threads)``).

    Parameters
    ----------
    config : BenchConfig
    threads : sequence of int
        Thread counts to time; weak configurations use those up to the core count.
    repeats : int
        Timed repeats per thread count (1 for thread counts above the core count).
    quick : bool
        Use the configuration's quick window.
    emit : callable
        Receives one line per finished measurement (progress).
    count_agents : bool
        Count the agent updates of the timed steps exactly (an untimed replay,
        for the Mesa comparison) when the configuration is compared with Mesa.

    Returns
    -------
    dict
        The worker's raw measurements (see :func:`run_suite` for the derived figures).
    """
    import_s, compile_s = _time_kernel_start(emit)
    import numba

    from cikabm.scenario import scenario_from_dict
    from cikabm.simulation import Simulation

    cores = os.cpu_count() or 1
    warmup, steps = config.window(quick)
    label = config.name
    counts = sorted(set(threads))
    if config.kind == "weak":
        counts = [n for n in counts if n <= cores] or [min(counts)]
    runs: list[dict[str, Any]] = []
    setup_times: list[float] = []
    warmup_times: list[float] = []
    memory: dict[str, Any] | None = None
    exact: dict[str, int] | None = None
    start_state: Any = None
    disc: Any = None
    for n_threads in counts:
        shape = config.shape_for(n_threads)
        if start_state is None or config.kind == "weak":
            first = start_state is None
            scenario = scenario_from_dict(bench_scenario(shape))
            times = []
            for _ in range(repeats if first else 1):
                start_state = None  # free the previous lattice first
                t0 = time.perf_counter()
                start_state = Simulation(scenario)
                times.append(time.perf_counter() - t0)
            if first:  # set-up and memory of the configuration's own (base) shape
                setup_times = times
                memory = memory_footprint(start_state)
            with numba_threads(min(max(counts), cores) if config.kind == "strong" else n_threads):
                t0 = time.perf_counter()
                start_state.advance(warmup)
                warmup_times.append(time.perf_counter() - t0)
            disc = start_state.disc
            emit(f"{label} {_shape_text(shape)}: set-up {statistics.median(times):.2f} s, warm-up "
                 f"{warmup} steps {warmup_times[-1]:.2f} s, {int(start_state.counters[0]):,} effectors")
            if config.mesa and count_agents and exact is None:
                with numba_threads(min(max(counts), cores)):
                    exact = _exact_agent_updates(copy.deepcopy(start_state), steps)
        seconds: list[float] = []
        digests: list[str] = []
        n_repeats = repeats if n_threads <= cores else 1
        pops: dict[str, float] = {}
        ticks = None
        for r in range(n_repeats):
            sim = copy.deepcopy(start_state)
            sim.pass_ticks[:] = 0
            with numba_threads(n_threads):
                t0 = time.perf_counter()
                sim.advance(steps)
                seconds.append(time.perf_counter() - t0)
            ticks = sim.pass_ticks.copy() if ticks is None else ticks + sim.pass_ticks
            digests.append(state_digest(sim))
            pops = pops or _window_populations(sim, warmup, steps)  # the same in every repeat
            del sim
            sites = math.prod(shape)
            emit(f"{label}: {n_threads} thread(s), repeat {r + 1}/{n_repeats}: {seconds[-1]:.3f} s "
                 f"({sites * steps / seconds[-1] / n_threads:.3g} site updates/s/thread)")
        runs.append({"threads": n_threads, "shape": list(shape), "lattice_sites": math.prod(shape),
                     "seconds": _stats(seconds), "digests": digests,
                     "seconds_by_pass": _seconds_by_pass(ticks, statistics.median(seconds)), **pops})
    return {
        "task": "config",
        "config": config.to_dict(),
        "quick": quick,
        "dt_minutes": disc.dt_days * 1440.0,
        "substeps": int(disc.params.n_sub),
        "warmup_steps": warmup,
        "steps_timed": steps,
        "import_seconds": import_s,
        "compile_or_cache_load_seconds": compile_s,
        "setup_seconds": _stats(setup_times),
        "warmup_seconds": _stats(warmup_times),
        "memory": memory,
        "runs": runs,
        "exact_agent_updates": exact,
        "threading_layer": numba.threading_layer(),
        "numba_num_threads": numba.config.NUMBA_NUM_THREADS,
        "peak_rss_bytes": _peak_rss_bytes(),
    }


def _split(seconds: float, weights: dict[str, float]) -> dict[str, float] | None:
    """``seconds`` split over the keys of ``weights`` in proportion; None when the weights are all 0."""
    total = sum(weights.values())
    if total <= 0:  # (the kernel's passes: no cycle counter on this CPU)
        return None
    return {name: seconds * w / total for name, w in weights.items()}


def _seconds_by_pass(ticks: Any, seconds: float) -> dict[str, float] | None:
    """``seconds`` split over the passes of the step in proportion to their cycle-counter ``ticks``."""
    from cikabm.kernels.core import PASS_NAMES

    return _split(seconds, {name: int(t) for name, t in zip(PASS_NAMES, ticks, strict=True)})


#: The Mesa reference's method for each pass of :data:`cikabm.kernels.core.PASS_NAMES`.
MESA_PASS_METHODS = {"supply": "supply", "tumour_propose": "tumour_propose", "tumour_resolve": "tumour_resolve",
                     "effectors": "effector_substeps", "ifn_field": "ifn_field_step", "record": "record"}


def _time_methods(model: Any, methods: dict[str, str], totals: dict[str, float]) -> None:
    """Wrap ``model``'s methods so that each call adds its wall seconds to ``totals[pass name]``."""
    for name, method in methods.items():
        bound = getattr(model, method)

        def timed(*args: Any, _bound: Callable[..., Any] = bound, _name: str = name) -> Any:
            t0 = time.perf_counter()
            try:
                return _bound(*args)
            finally:
                totals[_name] += time.perf_counter() - t0
        setattr(model, method, timed)


def run_mesa(config: BenchConfig, repeats: int, quick: bool,
             emit: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Time the Mesa reference implementation on ``config`` with the kernel's protocol.

    Each repeat builds a fresh :class:`~cikabm.mesa.reference.ReferenceModel`
    (set-up), steps through the warm-up untimed, then times each of the timed
    steps; the live tumour cells and effectors before each timed step are
    counted outside the timed calls. The passes of the step are timed too
    (:data:`MESA_PASS_METHODS`), to compare them one by one with the kernel's.
    """
    t0 = time.perf_counter()
    from cikabm.mesa.reference import LIVE, ReferenceModel
    from cikabm.scenario import scenario_from_dict

    import_s = time.perf_counter() - t0
    scenario = scenario_from_dict(bench_scenario(config.shape))
    warmup, steps = config.window(quick)
    setup, seconds, counted = [], [], []
    by_pass = {name: 0.0 for name in MESA_PASS_METHODS}
    for r in range(repeats):
        t0 = time.perf_counter()
        model = ReferenceModel(scenario=scenario, seed=scenario.scenario.seed)
        setup.append(time.perf_counter() - t0)
        for _ in range(warmup):
            model.step()
        pass_totals = {name: 0.0 for name in MESA_PASS_METHODS}
        _time_methods(model, MESA_PASS_METHODS, pass_totals)
        n_sub = int(model.rules.n_sub)
        tumour = effectors = 0
        elapsed = 0.0
        for _ in range(steps):
            tumour += sum(1 for cell in model.tumour_cells() if cell.state == LIVE)
            effectors += n_sub * len(model.effectors())
            t0 = time.perf_counter()
            model.step()
            elapsed += time.perf_counter() - t0
        seconds.append(elapsed)
        for name, s in pass_totals.items():
            by_pass[name] += s
        counted.append({"tumour_cell_steps": tumour, "effector_updates": effectors,
                        "agent_updates": tumour + effectors})
        emit(f"{config.name} Mesa reference: repeat {r + 1}/{repeats}: set-up {setup[-1]:.2f} s, "
             f"{steps} steps {elapsed:.2f} s ({(tumour + effectors) / elapsed:.3g} agent updates/s)")
    return {
        "task": "mesa",
        "config": config.to_dict(),
        "mesa_version": _version("mesa"),
        "import_seconds": import_s,
        "setup_seconds": _stats(setup),
        "warmup_steps": warmup,
        "steps_timed": steps,
        **_mesa_figures(config, steps, seconds, counted, by_pass),
    }


def _mesa_figures(config: BenchConfig, steps: int, seconds: Sequence[float], counted: Sequence[dict[str, int]],
                  pass_seconds: dict[str, float]) -> dict[str, Any]:
    """The Mesa reference's figures from its repeats: seconds, the passes' totals and the agents counted."""
    med = statistics.median(seconds)
    agent = statistics.median(c["agent_updates"] for c in counted)
    return {
        "seconds": _stats(seconds),
        "pass_seconds": dict(pass_seconds),  # summed over the repeats
        "seconds_by_pass": _split(med, pass_seconds),  # the median split in proportion, as for the kernel
        "counts": list(counted),
        "agent_updates_per_s": agent / med,
        "site_updates_per_s": math.prod(config.shape) * steps / med,
    }


def _merge_mesa(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The Mesa reference's measurements from its workers (one per round): their repeats pooled."""
    merged = dict(parts[0])
    if len(parts) == 1:
        return merged
    config = BenchConfig.from_dict(merged["config"])
    seconds = [t for part in parts for t in part["seconds"]["all"]]
    counted = [c for part in parts for c in part["counts"]]
    pass_seconds = {k: sum(part["pass_seconds"][k] for part in parts) for k in merged["pass_seconds"]}
    merged["setup_seconds"] = _pooled(parts, "setup_seconds")
    merged.update(_mesa_figures(config, merged["steps_timed"], seconds, counted, pass_seconds))
    return merged


def run_cold_compile(emit: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Time the kernels' first compilation (run with ``NUMBA_CACHE_DIR`` set to an empty directory)."""
    import_s, compile_s = _time_kernel_start(emit)
    return {"task": "compile", "import_seconds": import_s, "cold_compile_seconds": compile_s}


def _worker_main(argv: Sequence[str]) -> int:
    """``python -m cikabm.bench SPEC.json RESULT.json``: one task, progress as JSON lines on stdout."""
    spec = json.loads(Path(argv[0]).read_text())

    def emit(message: str) -> None:
        print(json.dumps({"progress": message}), flush=True)

    task = spec["task"]
    if spec.get("pin_threads"):
        spec["pinned_cpus"] = pin_cpus(spec["pin_threads"])
    if task == "config":
        result = run_config(BenchConfig.from_dict(spec["config"]), spec["threads"], spec["repeats"],
                            spec["quick"], emit, count_agents=spec.get("count_agents", True))
    elif task == "mesa":
        result = run_mesa(BenchConfig.from_dict(spec["config"]), spec["repeats"], spec["quick"], emit)
    elif task == "compile":
        result = run_cold_compile(emit)
    else:
        raise ValueError(f"unknown task {task!r}")
    result["pinned_cpus"] = spec.get("pinned_cpus")
    Path(argv[1]).write_text(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- orchestration (parent side)

def mesa_available() -> bool:
    """Whether the Mesa reference implementation can run (the ``teach`` extra is installed)."""
    return importlib.util.find_spec("mesa") is not None


def _run_worker(spec: dict[str, Any], env: dict[str, str], emit: Callable[[str], None]) -> dict[str, Any]:
    """Run one task in a fresh Python process; relay its progress; return its result."""
    with tempfile.TemporaryDirectory(prefix="cikabm_bench_") as tmp:
        spec_path, result_path, err_path = (Path(tmp) / n for n in ("spec.json", "result.json", "stderr.txt"))
        spec_path.write_text(json.dumps(spec))
        command = [sys.executable, "-m", "cikabm.bench", str(spec_path), str(result_path)]
        with open(err_path, "w") as err:
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        emit(json.loads(line)["progress"])
                rc = proc.wait()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        if rc != 0 or not result_path.exists():
            tail = err_path.read_text(errors="replace").strip().splitlines()[-15:]
            raise BenchError(f"benchmark worker for {spec.get('config', {}).get('name', spec['task'])} failed "
                             f"(exit status {rc}):\n  " + "\n  ".join(tail))
        return json.loads(result_path.read_text())


def _merge_rounds(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The measurements of one thread count from its workers (one per round): their repeats pooled."""
    merged = dict(rounds[0])
    if len(rounds) == 1:
        return merged
    runs = [r["runs"][0] for r in rounds]
    seconds = [s for run in runs for s in run["seconds"]["all"]]
    by_pass = None
    if all(run.get("seconds_by_pass") for run in runs):  # shares averaged over rounds, of the pooled median
        shares = [_split(1.0, run["seconds_by_pass"]) for run in runs]
        by_pass = _split(statistics.median(seconds), {k: sum(s[k] for s in shares) for k in shares[0]})
    merged["runs"] = [{**runs[0], "seconds": _stats(seconds), "seconds_by_pass": by_pass,
                       "digests": [d for run in runs for d in run["digests"]]}]
    merged["setup_seconds"] = _pooled(rounds, "setup_seconds")
    merged["warmup_seconds"] = _pooled(rounds, "warmup_seconds")
    merged["peak_rss_bytes"] = _peak_rss(rounds)
    return merged


def _pooled(parts: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    """The timings ``key`` of several workers as one sample."""
    return _stats([s for part in parts for s in part[key]["all"]])


def _peak_rss(parts: Sequence[dict[str, Any]]) -> int | None:
    """The largest peak memory of several workers (None where none was measured)."""
    rss = [part["peak_rss_bytes"] for part in parts if part["peak_rss_bytes"] is not None]
    return max(rss) if rss else None


def _merge_workers(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One configuration's measurements from its workers (one per thread count, ascending).

    Set-up, memory, the exact agent-update count and the import and cache
    times are those of the first worker; the runs, warm-ups and peak memory
    are gathered from all.
    """
    merged = dict(parts[0])
    merged["runs"] = []
    for part in parts:
        for run in part["runs"]:
            merged["runs"].append({**run, "pinned_cpus": part.get("pinned_cpus"),
                                   "numba_num_threads": part["numba_num_threads"]})
    merged["warmup_seconds"] = _pooled(parts, "warmup_seconds")
    merged["peak_rss_bytes"] = _peak_rss(parts)
    return merged


def _worker_env(threads: int, cache_dir: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["NUMBA_NUM_THREADS"] = str(max(1, threads))
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    return env


def _scaling(seconds: Sequence[float], threads: Sequence[int], kind: str) -> tuple[list[float], list[float]]:
    """Speed-up and parallel efficiency against the smallest thread count (``threads`` ascending)."""
    t0, n0 = seconds[0], threads[0]
    if kind == "weak":
        eff = [t0 / t for t in seconds]
        return [e * n / n0 for e, n in zip(eff, threads, strict=True)], eff
    speedup = [t0 * n0 / t for t in seconds]
    return speedup, [s / n for s, n in zip(speedup, threads, strict=True)]


def _config_entry(raw: dict[str, Any], cores: int) -> dict[str, Any]:
    """The ``configurations`` entry of ``bench.json`` from a worker's measurements."""
    config = BenchConfig.from_dict(raw["config"])
    steps = raw["steps_timed"]
    sim_hours = steps * raw["dt_minutes"] / 60.0
    runs = []
    for run in raw["runs"]:
        n, med, sites = run["threads"], run["seconds"]["median"], run["lattice_sites"]
        effector_updates = raw["substeps"] * run["effector_steps"]
        runs.append({
            "threads": n,
            "shape": run["shape"],
            "lattice_sites": sites,
            "oversubscribed": n > cores,
            "seconds": run["seconds"],
            "site_updates_per_s": sites * steps / med,
            "site_updates_per_s_per_thread": sites * steps / med / n,
            "effector_updates_per_s": effector_updates / med,
            "cell_hours_per_s": (run["tumour_cell_steps"] + run["effector_steps"]) / steps * sim_hours / med,
            "tumour_cells_mean": run["tumour_cells_mean"],
            "effectors_mean": run["effectors_mean"],
            "digest": run["digests"][0],
            "repeats_identical": len(set(run["digests"])) == 1,
            "seconds_by_pass": run.get("seconds_by_pass"),
            "numba_num_threads": run.get("numba_num_threads"),
            "pinned_cpus": run.get("pinned_cpus"),
        })
    counts = [r["threads"] for r in runs]
    speedup, efficiency = _scaling([r["seconds"]["median"] for r in runs], counts, config.kind)
    efficiency_min = _scaling([r["seconds"]["min"] for r in runs], counts, config.kind)[1]
    for r, s, e, e_min in zip(runs, speedup, efficiency, efficiency_min, strict=True):
        r["speedup"], r["efficiency"], r["efficiency_min"] = s, e, e_min
    if config.kind == "strong":
        digests = {r["digest"] for r in runs}
        identical: bool | None = len(digests) == 1 and all(r["repeats_identical"] for r in runs)
    else:
        identical = None  # sizes differ; repeats are still checked below
    mem = raw["memory"]
    return {
        "description": config.description,
        "kind": config.kind,
        "dims": config.dims,
        "shape": list(config.shape),
        "lattice_sites": math.prod(config.shape),
        "dt_minutes": raw["dt_minutes"],
        "substeps": raw["substeps"],
        "warmup_steps": raw["warmup_steps"],
        "steps_timed": steps,
        "simulated_hours_timed": sim_hours,
        "threads": counts,
        "site_updates_per_s_per_thread": [r["site_updates_per_s_per_thread"] for r in runs],
        "effector_updates_per_s": [r["effector_updates_per_s"] for r in runs],
        "cell_hours_per_s": [r["cell_hours_per_s"] for r in runs],
        "speedup": speedup,
        "efficiency": efficiency,
        "efficiency_min": efficiency_min,
        "oversubscribed": [r["oversubscribed"] for r in runs],
        "bytes_per_site": mem["bytes_per_site"],
        "bytes_per_effector": mem["bytes_per_effector"],
        "memory": mem,
        "peak_rss_bytes": raw["peak_rss_bytes"],
        "import_seconds": raw["import_seconds"],
        "compile_or_cache_load_seconds": raw["compile_or_cache_load_seconds"],
        "setup_seconds": raw["setup_seconds"],
        "warmup_seconds": raw["warmup_seconds"],
        "identical_across_threads": identical,
        "repeats_identical": all(r["repeats_identical"] for r in runs),
        "runs": runs,
    }


def _mesa_entry(kernel: dict[str, Any], raw_kernel: dict[str, Any], mesa: dict[str, Any]) -> dict[str, Any]:
    """The Mesa comparison of one configuration: the kernel's and Mesa's agent updates per second."""
    exact = raw_kernel["exact_agent_updates"]
    per_thread = [exact["agent_updates"] / r["seconds"]["median"] for r in kernel["runs"]]
    base = per_thread[0]
    in_cores = [p for p, r in zip(per_thread, kernel["runs"], strict=True) if not r["oversubscribed"]]
    return {
        "kernel_threads": kernel["threads"][0],
        "kernel_agent_updates": exact,
        "kernel_agent_updates_per_s": base,
        "kernel_agent_updates_per_s_by_threads": per_thread,
        "mesa_agent_updates_per_s": mesa["agent_updates_per_s"],
        "mesa_ratio": base / mesa["agent_updates_per_s"],
        "mesa_ratio_best": max(in_cores) / mesa["agent_updates_per_s"] if in_cores else None,
        "mesa_ratio_min": (exact["agent_updates"] / kernel["runs"][0]["seconds"]["min"])
        / (statistics.median(c["agent_updates"] for c in mesa["counts"]) / mesa["seconds"]["min"]),
        "mesa_site_updates_per_s": mesa["site_updates_per_s"],
        "mesa_version": mesa["mesa_version"],
        "mesa_setup_seconds": mesa["setup_seconds"],
        "mesa_seconds": mesa["seconds"],
        "mesa_agent_updates": mesa["counts"],
        "warmup_steps": mesa["warmup_steps"],
        "steps_timed": mesa["steps_timed"],
        "by_pass": _pass_comparison(kernel["runs"][0].get("seconds_by_pass"), mesa.get("seconds_by_pass")),
    }


def _pass_comparison(kernel: dict[str, float] | None, mesa: dict[str, float] | None) -> dict[str, Any] | None:
    """Seconds per pass of the step for the kernel (first thread count) and Mesa, their shares and ratios."""
    if not kernel or not mesa:
        return None
    k_total, m_total = sum(kernel.values()), sum(mesa.values())
    out = {}
    for name, k in kernel.items():
        m = mesa.get(name, 0.0)
        out[name] = {"kernel_seconds": k, "mesa_seconds": m, "kernel_share": k / k_total if k_total else None,
                     "mesa_share": m / m_total if m_total else None, "ratio": m / k if k > 0 else None}
    return out


def round_sizes(repeats: int, quick: bool) -> list[int]:
    """Timed repeats of each round (one worker per thread count each) that make up ``repeats``.

    ``quick`` takes them all in one worker; the full suite spreads them as
    evenly as it can over :data:`ROUNDS` rounds (fewer when there are fewer
    repeats), so that a slow spell of a shared machine falls on every thread
    count alike, and each worker still times several repeats.
    """
    if repeats < 1:
        raise ValueError(f"repeats {repeats}: must be at least 1")
    if quick:
        return [repeats]
    rounds = min(ROUNDS, repeats)
    return [repeats // rounds + (1 if r < repeats % rounds else 0) for r in range(rounds)]


def run_suite(configs: Sequence[BenchConfig | str] | None = None, *, quick: bool = False,
              threads: Sequence[int] | None = None, repeats: int | None = None,
              machine_name: str | None = None, cold_compile: bool | None = None,
              command: str | None = None,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark suite; return the report that ``bench.json`` holds.

    Parameters
    ----------
    configs : sequence of BenchConfig or str, optional
        Configurations or their names in :data:`CONFIGS` (default:
        :data:`QUICK_SET` when ``quick``, else :data:`FULL_SET`).
    quick : bool
        Shorter windows, fewer repeats (about a minute on 2 cores).
    threads : sequence of int, optional
        Thread counts (default: :func:`default_threads`).
    repeats : int, optional
        Timed repeats per thread count (default :data:`DEFAULT_REPEATS`, quick
        :data:`QUICK_REPEATS`). The full suite takes them in rounds
        (:func:`round_sizes`), each round one worker per thread count in
        turn; ``quick`` times them all in one worker per thread count. The
        Mesa reference runs at most :data:`MESA_REPEATS` of them.
    machine_name : str, optional
        Name recorded for the machine (default: :func:`default_machine_name`).
    cold_compile : bool, optional
        Also time a compile with an empty cache (default: unless ``quick``).
    command : str, optional
        The command line, recorded in the report.
    progress : callable, optional
        Receives one line of text per step of progress.

    Returns
    -------
    dict
        The report (see ``benchmarks/README.md`` for its layout).

    Raises
    ------
    BenchError
        If a worker process fails.
    """
    emit = progress or (lambda message: None)
    chosen = [CONFIGS[c] if isinstance(c, str) else c for c in (configs or (QUICK_SET if quick else FULL_SET))]
    threads = sorted(set(threads or default_threads()))
    if threads[0] < 1:
        raise ValueError(f"threads {threads}: every count must be at least 1")
    repeats = repeats or (QUICK_REPEATS if quick else DEFAULT_REPEATS)
    cold_compile = (not quick) if cold_compile is None else cold_compile
    cores = os.cpu_count() or 1
    start = datetime.now(UTC)
    t_start = time.perf_counter()
    have_mesa = mesa_available()
    report: dict[str, Any] = {
        "benchmark": "cikabm-bench",
        "schema_version": SCHEMA_VERSION,
        "cikabm_version": _cikabm_version(),
        "created_utc": start.isoformat(timespec="seconds"),
        "command": command,
        "quick": quick,
        "machine": {"name": machine_name or default_machine_name(), **machine_info()},
        "settings": {"configurations": [c.name for c in chosen], "threads": threads, "repeats": repeats,
                     "workers": "one per configuration and thread count n: NUMBA_NUM_THREADS = n, "
                                "pinned to n CPUs (all CPUs when n exceeds them)"},
        "definitions": DEFINITIONS,
        "compile": {},
        "configurations": {},
        "mesa": {"available": have_mesa},
    }
    load = _load_average()
    report["load_average"] = {"start": load}
    if load is not None and load[0] > 0.5 * cores:
        emit(f"note: load average {load[0]:.1f} on {cores} cores: other work is running, timings will be noisy")
    raws: dict[str, dict[str, Any]] = {}
    mesa_parts: dict[str, list[dict[str, Any]]] = {}
    mesa_failed: dict[str, str] = {}
    for i, config in enumerate(chosen, 1):
        emit(f"[{i}/{len(chosen)}] {config.name}: {config.description}")
        counts = [n for n in threads if config.kind == "strong" or n <= cores] or threads[:1]
        per_round = round_sizes(repeats, quick)
        rounds = len(per_round)
        # The Mesa reference's repeats run in the same rounds, right after the
        # kernel's workers: a slow spell of the machine then falls on both alike.
        mesa_rounds = round_sizes(min(repeats, MESA_REPEATS), quick) if config.mesa and have_mesa else []
        parts: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
        for round_, per_worker in enumerate(per_round):
            for n in counts:
                if n > cores and round_ > 0:
                    continue  # more threads than cores: timed once, for the identity check
                if rounds > 1:
                    emit(f"{config.name}: round {round_ + 1}/{rounds}, {n} thread(s)")
                first = round_ == 0 and n == counts[0]  # the worker whose agent count is used
                parts[n].append(_run_worker({"task": "config", "config": config.to_dict(), "threads": [n],
                                             "repeats": per_worker, "quick": quick, "pin_threads": n,
                                             "count_agents": first}, _worker_env(n), emit))
            if round_ < len(mesa_rounds) and config.name not in mesa_failed:
                emit(f"{config.name}: round {round_ + 1}/{rounds}, Mesa reference implementation" if rounds > 1
                     else f"Mesa reference implementation on {config.name}")
                try:
                    mesa_parts.setdefault(config.name, []).append(_run_worker(
                        {"task": "mesa", "config": config.to_dict(), "repeats": mesa_rounds[round_],
                         "quick": quick, "pin_threads": 1}, _worker_env(1), emit))
                except BenchError as err:  # keep the kernel's results; say why the comparison is missing
                    mesa_failed[config.name] = f"the Mesa comparison failed: {err}"
                    emit(mesa_failed[config.name])
        raw = _merge_workers([_merge_rounds(parts[n]) for n in counts])
        raws[config.name] = raw
        report["configurations"][config.name] = _config_entry(raw, cores)
    if raws:
        first = next(iter(raws.values()))
        report["machine"]["threading_layer"] = first["threading_layer"]
        loads = [r["compile_or_cache_load_seconds"] for r in raws.values()]
        report["compile"]["cache_load_seconds"] = _stats(loads)
        report["compile"]["import_seconds"] = _stats([r["import_seconds"] for r in raws.values()])

    mesa_configs = [c for c in chosen if c.mesa]
    if not mesa_configs:
        report["mesa"]["note"] = "no configuration of this run is compared with Mesa"
    elif not have_mesa:
        report["mesa"]["note"] = ("Mesa is not installed: the comparison with the Mesa reference "
                                  "implementation was skipped (pip install 'cikabm[teach]')")
        emit(report["mesa"]["note"])
    else:
        report["mesa"]["configurations"] = []
        for config in mesa_configs:
            if config.name in mesa_failed:
                report["mesa"]["note"] = mesa_failed[config.name]
                continue
            mesa = _merge_mesa(mesa_parts[config.name])
            entry = report["configurations"][config.name]
            comparison = _mesa_entry(entry, raws[config.name], mesa)
            entry["mesa_ratio"] = comparison["mesa_ratio"]
            entry["mesa"] = comparison
            report["mesa"]["configurations"].append(config.name)
            report["mesa"]["mesa_ratio"] = comparison["mesa_ratio"]
    if cold_compile:
        emit("cold compile (empty Numba cache)")
        with tempfile.TemporaryDirectory(prefix="cikabm_bench_cache_") as cache:
            compiled = _run_worker({"task": "compile"}, _worker_env(1, cache), emit)
        report["compile"]["cold_compile_seconds"] = compiled["cold_compile_seconds"]
    else:
        report["compile"]["cold_compile_seconds"] = None
        report["compile"]["note"] = "cold compile not timed (quick run)" if quick else "cold compile not timed"

    strong = {n: e["identical_across_threads"] for n, e in report["configurations"].items()
              if e["kind"] == "strong"}
    report["checks"] = {
        "identical_across_threads": all(strong.values()) if strong else None,
        "identical_by_configuration": strong,
        "repeats_identical": all(e["repeats_identical"] for e in report["configurations"].values()),
        "threads_checked": threads,
    }
    report["load_average"]["end"] = _load_average()
    report["wall_seconds"] = time.perf_counter() - t_start
    return report


def _load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages, where the system keeps them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _cikabm_version() -> str:
    from cikabm import __version__

    return __version__


# --------------------------------------------------------------------------- output

def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def _ratio_min_text(comparison: dict[str, Any]) -> str:
    """`` (fastest repeats: Nx)`` where the comparison has ``mesa_ratio_min`` (older reports may not)."""
    ratio = comparison.get("mesa_ratio_min")
    return f" (fastest repeats: {ratio:.0f}x)" if ratio is not None else ""


def summary_text(report: dict[str, Any]) -> str:
    """The console summary of a report: one table row per configuration and thread count."""
    m = report["machine"]
    lines = [f"benchmark suite{' (quick)' if report['quick'] else ''} on {m['name']} ({m['cpu']}, {m['cores']} cores, "
             f"Numba {m['numba']}, {m.get('threading_layer', '?')} layer): {report['wall_seconds']:.0f} s"]
    header = (f"{'configuration':<14} {'threads':>7} {'median s':>9} {'site upd/s/thr':>15} "
              f"{'effector upd/s':>15} {'cell-h/s':>9} {'speed-up':>8} {'efficiency':>10}")
    lines.append(header)
    for name, e in report["configurations"].items():
        for r in e["runs"]:
            mark = "*" if r["oversubscribed"] else " "
            lines.append(f"{name:<14} {r['threads']:>6}{mark} {r['seconds']['median']:>9.3f} "
                         f"{r['site_updates_per_s_per_thread']:>15.3g} {r['effector_updates_per_s']:>15.3g} "
                         f"{r['cell_hours_per_s']:>9.3g} {r['speedup']:>8.2f} {r['efficiency']:>10.2f}")
    if any(r["oversubscribed"] for e in report["configurations"].values() for r in e["runs"]):
        lines.append("(* more threads than cores)")
    for name, e in report["configurations"].items():
        ident = e["identical_across_threads"]
        check = ("-" if ident is None else "yes" if ident else "NO")
        lines.append(f"{name}: {e['bytes_per_site']:.2f} bytes/site, {e['bytes_per_effector']} bytes/effector, "
                     f"set-up {e['setup_seconds']['median']:.2f} s, identical across threads "
                     f"{'/'.join(str(t) for t in e['threads'])}: {check}")
    c = report["compile"]
    cold = c.get("cold_compile_seconds")
    if "cache_load_seconds" in c:
        lines.append(f"kernels: loaded from cache in {c['cache_load_seconds']['median']:.2f} s"
                     + (f", cold compile {cold:.1f} s" if cold is not None else ""))
    mesa = report["mesa"]
    for name in mesa.get("configurations", ()):
        if "mesa" in report["configurations"][name]:
            cmp_ = report["configurations"][name]["mesa"]
            lines.append(f"Mesa reference on {name}: {cmp_['mesa_agent_updates_per_s']:.3g} agent updates/s; "
                         f"kernel (1 thread) {cmp_['kernel_agent_updates_per_s']:.3g}: mesa_ratio "
                         f"{cmp_['mesa_ratio']:.0f}x{_ratio_min_text(cmp_)}")
    if "note" in mesa:
        lines.append(f"Mesa: {mesa['note']}")
    ok = report["checks"]["identical_across_threads"]
    if ok is False:
        bad = [n for n, v in report["checks"]["identical_by_configuration"].items() if not v]
        lines.append(f"CHECK FAILED: results differ across thread counts in {', '.join(bad)}")
    return "\n".join(lines) + "\n"


def markdown_report(report: dict[str, Any], *, image_dir: str | None = None) -> str:
    """Markdown tables of one report (what ``benchmarks/README.md`` shows per machine).

    Parameters
    ----------
    report : dict
        A ``bench.json`` report.
    image_dir : str, optional
        Relative path of the report's plots, to link them below the tables.
    """
    m = report["machine"]
    load = (report.get("load_average") or {}).get("start")
    out = [f"**{m['name']}**: {m['cpu']}, {m['cores']} cores, Python {m['python']}, Numba {m['numba']} "
           f"({m.get('threading_layer', '?')} layer), NumPy {m['numpy']}, Mesa {m.get('mesa') or 'not installed'}, "
           f"OMP_WAIT_POLICY {m.get('omp_wait_policy')}"
           + (f", load average {load[0]:.2f} at the start" if load else "")
           + f"; cikabm {report['cikabm_version']}, {report['created_utc']}, "
           f"`{report.get('command') or 'cikabm bench'}` ({report['wall_seconds']:.0f} s).", ""]
    out += ["| configuration | threads | median s (min-max) | site updates/s/thread | effector updates/s "
            "| cell-hours/s | speed-up | efficiency (from min) |", "|---|---|---|---|---|---|---|---|"]
    for name, e in report["configurations"].items():
        for r in e["runs"]:
            s = r["seconds"]
            shape = _shape_text(r["shape"])
            over = " (more than cores)" if r["oversubscribed"] else ""
            out.append(f"| {name} ({shape}) | {r['threads']}{over} | {s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f}) "
                       f"| {r['site_updates_per_s_per_thread']:.3g} | {r['effector_updates_per_s']:.3g} "
                       f"| {r['cell_hours_per_s']:.3g} | {r['speedup']:.2f} | {r['efficiency']:.2f} "
                       f"({_fmt(r.get('efficiency_min'), '.2f')}) |")
    out += ["", "| configuration | timed steps (after warm-up) | tumour cells | effectors | bytes/site "
            "| bytes/effector | set-up s | identical across threads |", "|---|---|---|---|---|---|---|---|"]
    for name, e in report["configurations"].items():
        r0 = e["runs"][0]
        ident = e["identical_across_threads"]
        check = ("n/a (sizes differ)" if ident is None else
                 ("yes, " if ident else "**NO**, ") + ", ".join(str(t) for t in e["threads"]))
        out.append(f"| {name} | {e['steps_timed']} ({e['warmup_steps']}) | {r0['tumour_cells_mean']:,.0f} "
                   f"| {r0['effectors_mean']:,.0f} | {e['bytes_per_site']:.2f} | {e['bytes_per_effector']} "
                   f"| {e['setup_seconds']['median']:.2f} | {check} |")
    out += _pass_tables(report)
    c = report["compile"]
    parts = []
    if "cache_load_seconds" in c:
        parts.append(f"kernels loaded from the cache in {c['cache_load_seconds']['median']:.2f} s "
                     f"(import {c['import_seconds']['median']:.2f} s)")
    if c.get("cold_compile_seconds") is not None:
        parts.append(f"cold compile {c['cold_compile_seconds']:.1f} s")
    mesa = report["mesa"]
    for name in mesa.get("configurations", ()):
        if "mesa" in report["configurations"][name]:
            cmp_ = report["configurations"][name]["mesa"]
            parts.append(f"Mesa reference on {name}: {cmp_['mesa_agent_updates_per_s']:.3g} agent updates/s, kernel "
                         f"on 1 thread {cmp_['kernel_agent_updates_per_s']:.3g}: **mesa_ratio "
                         f"{cmp_['mesa_ratio']:.0f}x**{_ratio_min_text(cmp_)}")
    if "note" in mesa:
        parts.append(f"Mesa: {mesa['note']}")
    if parts:
        out += ["", "; ".join(parts) + "."]
    if image_dir is not None:
        out += [""] + [f"![{stem.replace('_', ' ')}]({image_dir}/{stem}.png)"
                       for stem in ("strong_scaling", "weak_scaling", "site_updates")
                       if f"{stem}.png" in report.get("files", [])]
    return "\n".join(out) + "\n"


_PASS_LABELS = {"supply": "supply", "tumour_propose": "tumour propose", "tumour_resolve": "tumour resolve",
                "effectors": "effectors", "ifn_field": "IFN-gamma field", "record": "record"}


def _pass_tables(report: dict[str, Any]) -> list[str]:
    """Markdown: the share of each pass of the step, and the Mesa comparison pass by pass."""
    rows = []
    for name, e in report["configurations"].items():
        for r in e["runs"]:
            by_pass = r.get("seconds_by_pass")
            if by_pass and (r is e["runs"][0] or r["threads"] == min(report["machine"]["cores"], e["threads"][-1])):
                total = sum(by_pass.values())
                cells = " | ".join(f"{100 * by_pass.get(p, 0.0) / total:.0f} %" for p in _PASS_LABELS)
                rows.append(f"| {name} | {r['threads']} | {1e6 * total / e['steps_timed']:,.0f} | {cells} |")
    if not rows:
        return []
    out = ["", "Where the time goes (share of the timed seconds by pass of the step; time-stamp counter):", "",
           "| configuration | threads | µs per step | " + " | ".join(_PASS_LABELS.values()) + " |",
           "|---|---|---|" + "---|" * len(_PASS_LABELS), *rows]
    for name in report["mesa"].get("configurations", ()):
        cmp_ = report["configurations"][name].get("mesa", {}).get("by_pass")
        if not cmp_:
            continue
        steps = report["configurations"][name]["mesa"]["steps_timed"]
        out += ["", f"Mesa reference vs kernel (1 thread) on {name}, pass by pass:", "",
                "| pass | Mesa ms per step | kernel µs per step | kernel share | ratio |", "|---|---|---|---|---|"]
        for p, v in cmp_.items():
            ratio = "-" if v["ratio"] is None else f"{v['ratio']:.0f}x"
            share = 100 * (v["kernel_share"] or 0.0)
            out.append(f"| {_PASS_LABELS.get(p, p)} | {1e3 * v['mesa_seconds'] / steps:.2f} "
                       f"| {1e6 * v['kernel_seconds'] / steps:.1f} | {share:.0f} % | {ratio} |")
        mesa_step = sum(v["mesa_seconds"] for v in cmp_.values()) / steps
        kernel_step = sum(v["kernel_seconds"] for v in cmp_.values()) / steps
        out += ["", f"A Mesa step takes {1e3 * mesa_step:.2f} ms and a kernel step {1e6 * kernel_step:.0f} µs "
                    f"({mesa_step / kernel_step:.0f}x, pass times summed); at {MESA_RATIO_TARGET}x a kernel step "
                    f"would take {1e6 * mesa_step / MESA_RATIO_TARGET:.0f} µs."]
    return out


def save_plots(report: dict[str, Any], directory: str | os.PathLike[str]) -> list[Path]:
    """Write the report's figures as PNG into ``directory``; return the files written.

    * ``strong_scaling.png``: speed-up and parallel efficiency vs threads, one
      line per strong-scaling configuration (hollow markers: more threads
      than cores);
    * ``weak_scaling.png``: parallel efficiency and seconds per step vs threads
      of the weak-scaling configurations (only if there are any);
    * ``site_updates.png``: site updates per second per thread by configuration
      and thread count, with min-max bars.
    """
    from matplotlib.figure import Figure

    directory = Path(directory)
    configs = report["configurations"]
    machine = report["machine"]
    title = f"{machine['name']} ({machine['cores']} cores)"
    written = []
    strong = {n: e for n, e in configs.items() if e["kind"] == "strong"}
    weak = {n: e for n, e in configs.items() if e["kind"] == "weak"}

    def scatter_line(ax: Any, e: dict[str, Any], values: Sequence[float], label: str) -> None:
        line, = ax.plot(e["threads"], values, "-", label=label)
        for t, v, over in zip(e["threads"], values, e["oversubscribed"], strict=True):
            ax.plot([t], [v], "o", color=line.get_color(), mfc="white" if over else line.get_color())

    if strong:
        fig = Figure(figsize=(10, 4), layout="constrained")
        ax1, ax2 = fig.subplots(1, 2)
        top = max(max(e["threads"]) for e in strong.values())
        ax1.plot([1, top], [1, top], ":", color="grey", label="ideal")
        ax2.axhline(1.0, ls=":", color="grey")
        for name, e in strong.items():
            scatter_line(ax1, e, e["speedup"], name)
            scatter_line(ax2, e, e["efficiency"], name)
        for ax in (ax1, ax2):
            if top > machine["cores"]:
                ax.axvspan(machine["cores"] + 0.5, top + 0.5, color="0.93", zorder=0)
            ax.set_xlabel("threads")
            ax.set_xticks(sorted({t for e in strong.values() for t in e["threads"]}))
        ax1.set_ylabel("speed-up")
        ax1.set_title("strong scaling: speed-up")
        ax2.set_ylabel("parallel efficiency")
        ax2.set_ylim(0, max(1.15, *(v + 0.05 for e in strong.values() for v in e["efficiency"])))
        ax2.set_title("strong scaling: efficiency")
        ax1.legend(fontsize=8)
        fig.suptitle(f"{title}; grey: more threads than cores")
        path = directory / "strong_scaling.png"
        fig.savefig(path, dpi=110)
        written.append(path)

    if weak:
        fig = Figure(figsize=(10, 4), layout="constrained")
        ax1, ax2 = fig.subplots(1, 2)
        ax1.axhline(1.0, ls=":", color="grey")
        for name, e in weak.items():
            ax1.plot(e["threads"], e["efficiency"], "o-", label=name)
            per_step = [r["seconds"]["median"] / e["steps_timed"] * 1e3 for r in e["runs"]]
            ax2.plot(e["threads"], per_step, "o-", label=name)
        for ax in (ax1, ax2):
            ax.set_xlabel("threads (lattice grows with them)")
            ax.set_xticks(sorted({t for e in weak.values() for t in e["threads"]}))
        ax1.set_ylabel("parallel efficiency t(1, N) / t(n, nN)")
        ax1.set_ylim(0, max(1.15, *(v + 0.05 for e in weak.values() for v in e["efficiency"])))
        ax1.set_title("weak scaling: efficiency")
        ax2.set_ylabel("ms per step")
        ax2.set_ylim(bottom=0)
        ax2.set_title("weak scaling: time per step")
        ax1.legend(fontsize=8)
        fig.suptitle(title)
        path = directory / "weak_scaling.png"
        fig.savefig(path, dpi=110)
        written.append(path)

    if configs:
        fig = Figure(figsize=(max(6.0, 1.6 * len(configs) + 2), 4), layout="constrained")
        ax = fig.add_subplot()
        counts = sorted({t for e in configs.values() for t in e["threads"]})
        width = 0.8 / len(counts)
        for j, t in enumerate(counts):
            xs, ys, lo, hi = [], [], [], []
            for i, e in enumerate(configs.values()):
                for r in e["runs"]:
                    if r["threads"] == t:
                        sites_steps = r["lattice_sites"] * e["steps_timed"] / t
                        v = r["site_updates_per_s_per_thread"]
                        xs.append(i + (j - (len(counts) - 1) / 2) * width)
                        ys.append(v)
                        lo.append(max(0.0, v - sites_steps / r["seconds"]["max"]))
                        hi.append(max(0.0, sites_steps / r["seconds"]["min"] - v))
            hatch = "//" if t > machine["cores"] else None
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, hatch=hatch, label=f"{t} thread{'s' * (t > 1)}")
        ax.set_xticks(range(len(configs)), list(configs), fontsize=8)
        ax.set_ylabel("site updates / s / thread")
        ax.set_title(f"{title}: median, min-max bars; hatched: more threads than cores")
        ax.legend(fontsize=8)
        path = directory / "site_updates.png"
        fig.savefig(path, dpi=110)
        written.append(path)
    return written


def write_report(report: dict[str, Any], directory: str | os.PathLike[str]) -> list[Path]:
    """Write ``bench.json`` and the plots into an existing ``directory``; return the files."""
    from cikabm.io import atomic_write_json

    directory = Path(directory)
    plots = save_plots(report, directory)
    report["files"] = ["bench.json", *(p.name for p in plots)]
    return [atomic_write_json(directory / "bench.json", report), *plots]


def load_reports(root: str | os.PathLike[str]) -> list[tuple[Path, dict[str, Any]]]:
    """Every ``<machine>/bench.json`` under ``root``, by machine directory name."""
    found = []
    for path in sorted(Path(root).glob("*/bench.json")):
        found.append((path, json.loads(path.read_text())))
    return found


def parse_threads(text: str) -> list[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]``; raise ValueError naming the bad item."""
    items = [t.strip() for t in text.split(",")]
    if not any(items):
        raise ValueError("no thread count given")
    counts = []
    for item in items:
        if not item.isdigit() or not 1 <= int(item) <= 1024:
            raise ValueError(f"{item!r} is not a thread count between 1 and 1024")
        counts.append(int(item))
    return sorted(set(counts))


def parse_configs(text: str) -> list[str]:
    """``"2d_256,2d_1024"`` -> names in :data:`CONFIGS`; raise ValueError naming an unknown one."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError("no configuration given")
    for name in names:
        if name not in CONFIGS:
            raise ValueError(f"unknown configuration {name!r}; known: {', '.join(CONFIGS)}")
    return list(dict.fromkeys(names))


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))

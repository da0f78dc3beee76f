"""The worker side of ``cikabm bench``: the machine, and what one pinned worker process measures.

A worker is ``python -m cikabm.bench SPEC.json RESULT.json``, started by :mod:`cikabm.bench.suite`; the
merges of several workers' timings run in the parent.
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
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cikabm.bench.config import (
    BenchConfig,
    _shape_text,
    bench_scenario,
)

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

    Every lattice array, the live part of every effector array carried with
    the effector (``core.EFFECTOR_FIELDS``; not the scratch), the IFN-gamma field,
    the record table and the tallies (counters, kills, arrivals).
    """
    import numpy as np

    from cikabm.kernels.core import C_STORED, EFFECTOR_FIELDS

    carried = {name for name, _, _, is_carried in EFFECTOR_FIELDS if is_carried}

    h = hashlib.sha256()
    for name, arr in _named_arrays(sim.lattice):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    n = int(sim.counters[C_STORED])
    for name, arr in _named_arrays(sim.effectors):
        if name in carried:
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

    from cikabm.kernels.core import C_STORED, LIVE

    n_sub = int(sim.disc.params.n_sub)
    tumour = effectors = 0
    for _ in range(steps):
        tumour += int(np.count_nonzero(sim.lattice.cell == LIVE))
        effectors += n_sub * int(sim.counters[C_STORED])
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

    from cikabm.kernels.core import C_STORED
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
                 f"{warmup} steps {warmup_times[-1]:.2f} s, {int(start_state.counters[C_STORED]):,} effectors")
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


def _pooled(parts: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    """The timings ``key`` of several workers as one sample."""
    return _stats([s for part in parts for s in part[key]["all"]])

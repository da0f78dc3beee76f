"""The driver of the benchmark suite: kernel throughput, memory, strong and weak scaling, and Mesa.

``cikabm bench`` and ``python benchmarks/run_suite.py`` both run
:func:`run_suite`, which starts the worker processes (:mod:`cikabm.bench.worker`)
and merges what they measure into the report (the parts of the suite and its
public names: :mod:`cikabm.bench`).

What is measured
----------------
Every configuration (:data:`~cikabm.bench.config.CONFIGS`, plain data) is a square or cubic lattice
with default rules: a tumour ball filling :data:`~cikabm.bench.config.TUMOUR_FILL` of the sites,
endogenous CTL influx and CIK infusions on the Lee 2015 schedule from day 0.5.
Each configuration and thread count ``n`` runs in a fresh worker process
(``python -m cikabm.bench``) whose Numba thread pool is exactly ``n`` threads
(``NUMBA_NUM_THREADS``) and which is pinned to ``n`` CPUs (all of them when
``n`` is more than there are cores; :func:`~cikabm.bench.worker.pin_cpus`). Both matter on a small
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
hashed (:func:`~cikabm.bench.worker.state_digest`) and all digests must be equal. Weak-scaling
configurations grow the last lattice axis with the thread count.

Definitions (also written into ``bench.json``) are in :data:`~cikabm.bench.config.DEFINITIONS`.

The Mesa reference implementation (:mod:`cikabm.mesa.reference`, optional
extra ``teach``) runs the configurations marked ``mesa`` with the same
protocol; agent updates are counted the same way for both implementations, and
``mesa_ratio`` is the kernel's agent updates per second on one thread over
Mesa's.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cikabm.bench import config as cfg
from cikabm.bench.busy import run_busy_case
from cikabm.bench.config import BenchConfig, BenchError, default_threads
from cikabm.bench.worker import (
    _merge_mesa,
    _pooled,
    _split,
    _stats,
    default_machine_name,
    machine_info,
)
from cikabm.io import provenance

__all__ = [
    "mesa_available",
    "parse_configs",
    "parse_threads",
    "round_sizes",
    "run_suite",
]

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
    package_root = str(Path(__file__).resolve().parents[2])
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
    evenly as it can over :data:`~cikabm.bench.config.ROUNDS` rounds (fewer when there are fewer
    repeats), so that a slow spell of a shared machine falls on every thread
    count alike, and each worker still times several repeats.
    """
    if repeats < 1:
        raise ValueError(f"repeats {repeats}: must be at least 1")
    if quick:
        return [repeats]
    rounds = min(cfg.ROUNDS, repeats)
    return [repeats // rounds + (1 if r < repeats % rounds else 0) for r in range(rounds)]


def run_suite(configs: Sequence[BenchConfig | str] | None = None, *, quick: bool = False,
              threads: Sequence[int] | None = None, repeats: int | None = None,
              machine_name: str | None = None, cold_compile: bool | None = None,
              command: str | None = None, busy: bool = True,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark suite; return the report that ``bench.json`` holds.

    Parameters
    ----------
    configs : sequence of BenchConfig or str, optional
        Configurations or their names in :data:`~cikabm.bench.config.CONFIGS` (default:
        :data:`~cikabm.bench.config.QUICK_SET` when ``quick``, else :data:`~cikabm.bench.config.FULL_SET`).
    quick : bool
        Shorter windows, fewer repeats (about a minute on 2 cores).
    threads : sequence of int, optional
        Thread counts (default: :func:`default_threads`).
    repeats : int, optional
        Timed repeats per thread count (default :data:`~cikabm.bench.config.DEFAULT_REPEATS`, quick
        :data:`~cikabm.bench.config.QUICK_REPEATS`). The full suite takes them in rounds
        (:func:`round_sizes`), each round one worker per thread count in
        turn; ``quick`` times them all in one worker per thread count. The
        Mesa reference runs at most :data:`~cikabm.bench.config.MESA_REPEATS` of them.
    machine_name : str, optional
        Name recorded for the machine (default: :func:`default_machine_name`).
    cold_compile : bool, optional
        Also time a compile with an empty cache (default: unless ``quick``).
    command : str, optional
        The command line, recorded in the report.
    busy : bool, default True
        Also run the busy-machine case (:mod:`cikabm.bench.busy`) on
        :data:`~cikabm.bench.config.BUSY_CONFIG` or the first strong-scaling configuration.
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
    names = configs or (cfg.QUICK_SET if quick else cfg.FULL_SET)
    chosen = [cfg.CONFIGS[c] if isinstance(c, str) else c for c in names]
    threads = sorted(set(threads or default_threads()))
    if threads[0] < 1:
        raise ValueError(f"threads {threads}: every count must be at least 1")
    repeats = repeats or (cfg.QUICK_REPEATS if quick else cfg.DEFAULT_REPEATS)
    cold_compile = (not quick) if cold_compile is None else cold_compile
    cores = os.cpu_count() or 1
    start = datetime.now(UTC)
    t_start = time.perf_counter()
    have_mesa = mesa_available()
    report: dict[str, Any] = {
        "benchmark": "cikabm-bench",
        "schema_version": cfg.SCHEMA_VERSION,
        **provenance(),
        "created_utc": start.isoformat(timespec="seconds"),
        "command": command,
        "quick": quick,
        "machine": {"name": machine_name or default_machine_name(), **machine_info()},
        "settings": {"configurations": [c.name for c in chosen], "threads": threads, "repeats": repeats,
                     "workers": "one per configuration and thread count n: NUMBA_NUM_THREADS = n, "
                                "pinned to n CPUs (all CPUs when n exceeds them)"},
        "definitions": cfg.DEFINITIONS,
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
        mesa_rounds = round_sizes(min(repeats, cfg.MESA_REPEATS), quick) if config.mesa and have_mesa else []
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
    busy_config = next((c for c in chosen if c.name == cfg.BUSY_CONFIG), None) or next(
        (c for c in chosen if c.kind == "strong"), None)
    if busy and busy_config is not None:
        # Rounds of one repeat per thread count, alternating; the full suite adds the active-wait run.
        report["busy_machine"] = run_busy_case(
            busy_config, repeats=cfg.QUICK_REPEATS if quick else cfg.ROUNDS, quick=quick,
            run_worker=_run_worker, worker_env=_worker_env, active_wait=not quick, emit=emit)
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
    if "identical" in report.get("busy_machine", {}):
        strong["busy_machine"] = report["busy_machine"]["identical"]
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
    """``"2d_256,2d_1024"`` -> names in :data:`~cikabm.bench.config.CONFIGS`; raise ValueError naming an unknown one."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError("no configuration given")
    for name in names:
        if name not in cfg.CONFIGS:
            raise ValueError(f"unknown configuration {name!r}; known: {', '.join(cfg.CONFIGS)}")
    return list(dict.fromkeys(names))

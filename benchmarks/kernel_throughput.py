"""Kernel throughput: lattice-site updates per second per thread.

Runs the full step (supply, tumour propose/resolve, effector sub-steps, IFN
field, records) on a 2D lattice with default rules: a tumour ball filling
about a third of the lattice, endogenous CTL influx and CIK infusions, after a
warm-up day so that effectors are present. Set-up, compilation and stepping
are timed separately; stepping is repeated and the median reported. The final
states of all thread counts are compared for bit-identity in the same run.

Usage::

    python benchmarks/kernel_throughput.py [--size 1024] [--steps 288] [--repeats 3]
                                           [--threads 1,2] [--out benchmarks/results/kernel_throughput.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
from pathlib import Path

import numba
import numpy as np
from machine import machine_info

import cikabm
from cikabm import Simulation, scenario_from_dict


def bench_scenario(size: int) -> dict:
    return {
        "scenario": {"name": f"bench_2d_{size}", "seed": 11},
        "lattice": {"shape": [size, size]},
        "time": {"duration_days": 30.0, "record_every_hours": 6.0},
        "tumour": {"initial_cells": int(0.35 * size * size)},
        "homing": {"ctl_per_site_per_day": 2e-3, "cik_per_site_per_day": 7e-13},
        "dosing": {"schedule": "lee2015", "start_day": 0.5},
        "effectors": {"capacity": max(1000, size * size // 4)},
    }


def state_digest(sim: Simulation) -> str:
    h = hashlib.sha256()
    for arr in sim.lattice:
        h.update(np.ascontiguousarray(arr).tobytes())
    n = int(sim.counters[0])
    for arr in (sim.effectors.pos, sim.effectors.kind, sim.effectors.kills, sim.effectors.target):
        h.update(np.ascontiguousarray(arr[:n]).tobytes())
    h.update(sim.ifn.tobytes())
    h.update(sim.records.tobytes())
    return h.hexdigest()


def run(size: int, steps: int, warmup_steps: int, repeats: int, thread_counts: list[int]) -> dict:
    scenario = scenario_from_dict(bench_scenario(size))
    t0 = time.perf_counter()
    probe = Simulation(scenario, threads=1)
    t1 = time.perf_counter()
    probe.advance(1)  # compiles (or loads from cache) every kernel
    compile_s = time.perf_counter() - t1
    setup_s = t1 - t0
    results = []
    digests = {}
    n_sites = size * size
    for threads in thread_counts:
        times = []
        eff_updates = []
        for _ in range(repeats):
            sim = Simulation(scenario, threads=threads)
            numba.set_num_threads(threads)
            sim.advance(warmup_steps)
            eff_before = int(sim.counters[0])
            start = time.perf_counter()
            sim.advance(steps)
            times.append(time.perf_counter() - start)
            eff_updates.append((eff_before + int(sim.counters[0])) / 2 * steps * sim.disc.params.n_sub)
        digests[threads] = state_digest(sim)
        med = statistics.median(times)
        results.append({
            "threads": threads,
            "seconds_median": med,
            "seconds_all": times,
            "site_updates_per_s": n_sites * steps / med,
            "site_updates_per_s_per_thread": n_sites * steps / med / threads,
            "effector_updates_per_s": statistics.median(eff_updates) / med,
            "effectors_mean": statistics.median(eff_updates) / steps / sim.disc.params.n_sub,
            "tumour_cells": int((sim.lattice.cell == 1).sum()),
        })
    base = results[0]["seconds_median"]
    for r in results:
        r["efficiency"] = base / (r["seconds_median"] * r["threads"])
    return {
        "configuration": f"2d_{size}x{size}",
        "lattice_sites": n_sites,
        "steps_timed": steps,
        "warmup_steps": warmup_steps,
        "dt_minutes": scenario.time.dt_minutes,
        "setup_seconds": setup_s,
        "compile_or_cache_load_seconds": compile_s,
        "results": results,
        "identical_across_threads": len(set(digests.values())) == 1,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="lattice edge (default 1024)")
    parser.add_argument("--steps", type=int, default=288, help="timed steps (default 288 = 2 days)")
    parser.add_argument("--warmup-steps", type=int, default=144, help="untimed steps first (default 144)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default=None, help="comma list, default 1..cores")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/kernel_throughput.json"))
    args = parser.parse_args(argv)
    max_threads = numba.config.NUMBA_NUM_THREADS
    threads = ([int(t) for t in args.threads.split(",")] if args.threads
               else list(range(1, max_threads + 1)))
    bench = run(args.size, args.steps, args.warmup_steps, args.repeats, threads)
    report = {
        "benchmark": "kernel_throughput",
        "cikabm_version": cikabm.__version__,
        "machine": {
            **machine_info(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
        },
        **bench,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(f"{bench['configuration']}: compile/cache {bench['compile_or_cache_load_seconds']:.2f} s, "
          f"identical across threads: {bench['identical_across_threads']}")
    print(f"{'threads':>7} {'site upd/s/thread':>18} {'effector upd/s':>15} {'efficiency':>10}")
    for r in bench["results"]:
        print(f"{r['threads']:>7} {r['site_updates_per_s_per_thread']:>18.3g} "
              f"{r['effector_updates_per_s']:>15.3g} {r['efficiency']:>10.2f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

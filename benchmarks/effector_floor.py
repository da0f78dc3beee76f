"""The floor of an effector sub-step: the walk alone against the kernel's whole effector pass.

Every effector sub-step of the kernel (``core.effector_substeps``) moves each
effector by the persistent random walk with exclusion (a move draw whose low
bits also decide persistence, a turn draw, a step into a free site), tests its
contact neighbourhood for a live tumour cell, and, when it finds one and can
kill, scans the neighbourhood for recognition; it also handles deaths, kill
completion, granule regeneration, the colour-class buckets that keep results
independent of the thread count, and IFN-gamma secretion. This script times,
on the warmed-up state of a suite configuration (:func:`cikabm.bench.bench_scenario`),
one thread, with the effectors in the kernel's bucket order:

* ``walk``: the walk alone (its two draws and the exclusion test), nothing else;
* ``walk_contact``: the walk and the contact test;
* ``effector_pass``: the kernel's whole effector pass (all sub-steps of a step).

Each round times ``--steps`` steps of each from a fresh copy of the state, in
turn; the JSON (``--out``) gives the minimum and median nanoseconds per
effector sub-step and the floors as shares of the whole pass. A pass that is
``k`` times faster must cost at most ``1/k`` of today's per effector sub-step,
which the ``walk_contact`` share bounds from below (see "How far the effector
pass can go" in ``benchmarks/README.md``).

Usage::

    python benchmarks/effector_floor.py [--configs 2d_1024,2d_256] [--rounds 9] [--steps 16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from copy import deepcopy
from pathlib import Path

import numba
import numpy as np
from machine import write_report
from numba import njit

from cikabm.bench import CONFIGS, bench_scenario, machine_info
from cikabm.kernels import core
from cikabm.scenario import scenario_from_dict
from cikabm.simulation import Simulation

HERE = Path(__file__).resolve().parent


# Not cached on disk: this file runs as ``__main__`` and under another name (the tests).
@njit(cache=False, _nrt=False)
def walk(order, e_pos, e_heading, e_uid, e_kind, has_effector, cell, offsets, nnb, px, thr_move, thr_persist,
         seed, patient, first_step, steps, n_sub, contact):
    """The walk of every effector in ``order`` for ``steps`` steps of ``n_sub`` sub-steps, as the kernel's
    rules move a free effector; with ``contact``, also its live-neighbour test. On a lattice too large for
    a core's caches it prefetches the lattice lines ahead, as the kernel does. Returns the tests passed."""
    in_contact = 0
    use_prefetch = cell.shape[0] > core._PREFETCH_MIN_SITES
    n = order.shape[0]
    for step in range(first_step, first_step + steps):
        for sub in range(n_sub):
            clock = step * core.MAX_SUBSTEPS + sub
            key_move = core.stream_key(seed, patient, clock, core.P_EFF_MOVE)
            key_turn = core.stream_key(seed, patient, clock, core.P_EFF_TURN)
            for j in range(n):
                if use_prefetch and j + core._PREFETCH_AHEAD < n:
                    a = e_pos[np.uint64(order[j + core._PREFETCH_AHEAD])] - px - 1
                    for dy in range(3):
                        core.prefetch(cell, a + dy * px)
                        core.prefetch(has_effector, a + dy * px)
                i = np.uint64(order[j])
                pos = e_pos[i]
                if contact:
                    live = False
                    for k in range(nnb + 1):
                        live |= cell[np.uint64(pos + offsets[np.uint64(k)])] == core.LIVE
                    in_contact += live
                uid = e_uid[i]
                bits = core.draw(key_move, uid)
                moving = core.hit(bits, thr_move[e_kind[i]])
                old_heading = np.int64(e_heading[i])
                turn = 1 + core.pick(core.draw(key_turn, uid), nnb)
                keep = (old_heading != 0) & ((bits & core._LOW32) < thr_persist)
                heading = old_heading if keep else turn
                dest = pos + offsets[np.uint64(heading)]
                udest = np.uint64(dest)
                free = np.int64(moving & (cell[udest] != core.WALL) & (has_effector[udest] == 0))
                has_effector[np.uint64(pos)] = np.uint8(1 - free)
                has_effector[udest] = has_effector[udest] | np.uint8(free)
                e_pos[i] = pos + free * (dest - pos)
                e_heading[i] = np.uint8(heading * free + old_heading * (1 - np.int64(moving)))
    return in_contact


def bucket_order(sim: Simulation) -> np.ndarray:
    """The live effectors by colour class (row and column residues mod 3), then by site: the kernel's
    order within a zone (2D)."""
    n = int(sim.counters[core.C_STORED])
    pos = sim.effectors.pos[:n]
    live = np.flatnonzero(sim.effectors.alive[:n] != 0)
    y, x = np.divmod(pos[live], sim.disc.geometry.px)
    return live[np.lexsort((pos[live], (y % 3) * 3 + x % 3))].astype(np.int64)


def _copy(state):
    return type(state)(*[a.copy() for a in state])


def measure(config: str, rounds: int, steps: int) -> dict:
    """Time the two floors and the whole effector pass on ``config``'s warmed-up state."""
    shape = CONFIGS[config].shape
    if len(shape) != 2:
        raise SystemExit(f"{config}: the floors follow the 2D colour classes; choose a 2D configuration")
    sim = Simulation(scenario_from_dict(bench_scenario(shape)), threads=1)
    sim.advance(CONFIGS[config].warmup_steps)  # the suite's state at the start of its timed window
    geom, prm = sim.disc.geometry, sim.disc.params
    order = bucket_order(sim)
    n = order.shape[0]
    work = core.effector_work(geom, prm, 1)
    first = sim.step

    def run_walk(contact: bool) -> float:
        lat, eff = _copy(sim.lattice), _copy(sim.effectors)
        start = time.perf_counter()
        walk(order, eff.pos, eff.heading, eff.uid, eff.kind, lat.has_effector, lat.cell, geom.offsets,
             geom.n_neighbours, geom.px, prm.thr_move, prm.thr_persist, sim.seed, sim.patient, first, steps, prm.n_sub,
             contact)
        return time.perf_counter() - start

    def run_pass() -> float:
        lat, eff = _copy(sim.lattice), _copy(sim.effectors)
        counters, kills, ifn = sim.counters.copy(), sim.kills.copy(), sim.ifn.copy()
        work.state[:] = 0
        start = time.perf_counter()
        for step in range(first, first + steps):
            core.effector_substeps(lat, eff, counters, kills, geom, prm, ifn, sim.seed, sim.patient, step, work, 1)
        return time.perf_counter() - start

    steps_by_pass: list[dict[str, float]] = []

    def run_step() -> float:
        copy = deepcopy(sim)
        copy.pass_ticks[:] = 0
        start = time.perf_counter()
        copy.advance(steps)
        seconds = time.perf_counter() - start
        steps_by_pass.append(copy.time_by_pass() or {})
        return seconds

    timers = {"walk": lambda: run_walk(False), "walk_contact": lambda: run_walk(True), "effector_pass": run_pass,
              "step": run_step}
    for timer in timers.values():  # compile (or load) before timing
        timer()
    steps_by_pass.clear()
    seconds: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            seconds[name].append(timer())
    per = steps * prm.n_sub * n
    result = {"lattice": list(shape), "warmup_steps": CONFIGS[config].warmup_steps, "effectors": n,
              "sub_steps_per_step": prm.n_sub, "steps": steps, "rounds": rounds}
    for name in ("walk", "walk_contact", "effector_pass"):
        times = seconds[name]
        result[name] = {"ns_per_effector_substep_min": 1e9 * min(times) / per,
                        "ns_per_effector_substep_median": 1e9 * statistics.median(times) / per}
    whole = result["effector_pass"]["ns_per_effector_substep_min"]
    for name in ("walk", "walk_contact"):
        result[name]["share_of_effector_pass"] = result[name]["ns_per_effector_substep_min"] / whole
    # The whole step (sim.advance) of the fastest round, split over its passes by the cycle counter.
    best = int(np.argmin(seconds["step"]))
    step_us = 1e6 * seconds["step"][best] / steps
    by_pass = {name: step_us * share for name, share in steps_by_pass[best].items()}
    result["step"] = {"us_min": step_us, "us_median": 1e6 * statistics.median(seconds["step"]) / steps,
                      "us_by_pass": by_pass}
    if "effectors" in by_pass:
        # The same step with the effector pass at the walk-and-contact floor.
        floor_pass_us = 1e-3 * result["walk_contact"]["ns_per_effector_substep_min"] * n * prm.n_sub
        result["step"]["us_with_effectors_at_floor"] = step_us - by_pass["effectors"] + floor_pass_us
        result["step"]["share_with_effectors_at_floor"] = result["step"]["us_with_effectors_at_floor"] / step_us
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="2d_1024,2d_256", help="2D suite configurations (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=9, help="rounds, each timing all four (default 9)")
    parser.add_argument("--steps", type=int, default=16, help="steps per timing (default 16)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "effector_floor.json")
    args = parser.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or not configs:
        parser.error(f"--configs {args.configs!r}: unknown {unknown or 'none given'}; choose from {', '.join(CONFIGS)}")
    if args.rounds < 1 or args.steps < 1:
        parser.error(f"--rounds {args.rounds} and --steps {args.steps} must be at least 1")
    numba.set_num_threads(1)
    report = {"benchmark": "effector_floor", "configs": {}}
    for config in configs:
        result = measure(config, args.rounds, args.steps)
        report["configs"][config] = result
        for name in ("walk", "walk_contact", "effector_pass"):
            r = result[name]
            share = f" ({r['share_of_effector_pass']:.2f} of the pass)" if "share_of_effector_pass" in r else ""
            print(f"{config} {name:>13}: {r['ns_per_effector_substep_min']:5.1f} ns per effector sub-step "
                  f"(median {r['ns_per_effector_substep_median']:5.1f}){share}")
        step = result["step"]
        floor = step.get("us_with_effectors_at_floor")
        print(f"{config} whole step: {step['us_min']:.1f} µs (median {step['us_median']:.1f})"
              + (f"; with the effector pass at the walk-and-contact floor {floor:.1f} µs "
                 f"({step['share_with_effectors_at_floor']:.2f} of it)" if floor else ""))
    report["machine"] = machine_info()
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

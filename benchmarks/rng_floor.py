"""The floor of a draw per site and step, against the event-driven tumour propose pass.

Stream version 1's propose pass drew one counter-based number per site of
each row's hull (every live tumour cell and the sites between them),
``mix64(key ^ site * golden) >> 32``, and compared it with the event
threshold; that draw was its floor. The event-driven pass (stream version 2)
compares each hull site's ``wake`` step with the step and draws only for the
cells due. This script times, on the warmed-up state of the suite's
``2d_256`` configuration (:func:`cikabm.bench.bench_scenario`), one thread:

* ``hash_only``: a draw and comparison for every site of the row hulls (the
  sites the pass visits), in the kernel's vectorised loop shape, and nothing
  else: version 1's floor;
* ``propose_pass``: the kernel's whole propose pass on the same state
  (serial, with the row hulls of the state as the kernel carries them from
  step to step), steps in turn from a fresh copy of the state each repeat;
  no cell is made to die (those events become division attempts).

Both are repeated ``--steps`` times with a new key each time and reported as
microseconds per step and nanoseconds per visited site; the JSON goes to
``--out``. It explains how far the kernel is from a given speed-up over the
Mesa reference (see "Reading the Mesa ratio" in ``benchmarks/README.md``).

Usage::

    python benchmarks/rng_floor.py [--steps 288] [--repeats 5] [--out benchmarks/results/rng_floor.json]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np
from machine import write_report
from numba import njit

from cikabm.bench import bench_scenario, machine_info
from cikabm.kernels import core
from cikabm.scenario import scenario_from_dict
from cikabm.simulation import Simulation

HERE = Path(__file__).resolve().parent
_NOT_LIVE = np.int64(1) << np.int64(40)  # added to a 32-bit draw: never below a threshold


# Neither function is cached on disk: Numba's cache of a script's functions
# names the module they were compiled in, and this file runs both as
# ``__main__`` and loaded under another name (the tests), which then cannot
# load each other's entries.
@njit(cache=False)
def hash_only(cell, hull, nx, ny, z0, py, px, thr_event, steps):
    """The propose pass's draws and threshold tests over the row hulls, ``steps`` times; returns the events."""
    draws = np.empty(core._CHUNK, np.int64)
    thr_i = np.int64(thr_event)
    events = 0
    for step in range(steps):
        key = core.stream_key(np.uint64(1), np.uint64(0), np.uint64(step), np.uint64(core.P_TUMOUR_EVENT))
        for r in range(ny):
            lo = hull[r, 0]
            hi = hull[r, 1]
            if lo >= hi:  # no tumour cell in the row
                continue
            base = core._row_base(r, ny, z0, py, px)
            cell_row = cell[base:base + nx]
            ubase = np.uint64(base)
            for x0 in range(lo, hi, core._CHUNK):  # the kernel's chunks of sites
                ux0 = np.uint64(x0)
                n_event = 0
                for xu in range(ux0, np.uint64(min(x0 + core._CHUNK, hi))):
                    u = core.mix64(key ^ ((ubase + xu) * core._GOLDEN)) >> core._S32
                    v = np.int64(u) + np.int64(cell_row[xu] != core.LIVE) * _NOT_LIVE
                    draws[xu - ux0] = v
                    n_event += v < thr_i
                events += n_event
    return events


@njit(cache=False)
def propose_loop(lat, geom, hull_prev, hull, first_step, event_log_q, steps):
    """The kernel's propose pass (serial) for ``steps`` steps from ``first_step``.

    No cell dies (death share 0: those events become division attempts);
    proposals are overwritten by each pass.
    """
    for step in range(first_step, first_step + steps):
        keys = core.tumour_keys(1, 0, step)
        core._propose_pass(lat, geom, hull_prev, hull, step, keys[0], keys[1], keys[2], np.uint64(0),
                           event_log_q, 0.0, False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=288, help="passes per repeat (default 288)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats; the median is reported (default 5)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "rng_floor.json")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        parser.error(f"--steps {args.steps} and --repeats {args.repeats} must be at least 1")
    numba.set_num_threads(1)
    sim = Simulation(scenario_from_dict(bench_scenario((256, 256))))
    sim.advance(144)  # the suite's warm-up
    d = sim.disc
    geom, prm = d.geometry, d.params
    first = sim.step
    thr_event = core.threshold(-np.expm1(prm.event_log_q))  # version 1's threshold of the same probability
    hull = core.tumour_propose(copy.deepcopy(sim.lattice), geom, first, core.tumour_keys(1, 0, first),
                               np.uint64(0), prm.event_log_q, 0.0, False)
    hull_out = hull.copy()
    visited = int(np.clip(hull[:, 1] - hull[:, 0], 0, None).sum())
    live = int((sim.lattice.cell == core.LIVE).sum())
    hash_only(sim.lattice.cell, hull, geom.nx, geom.ny, geom.z0, geom.py, geom.px, thr_event, 1)
    propose_loop(copy.deepcopy(sim.lattice), geom, hull, hull_out, first, prm.event_log_q, 1)  # compile both

    def timed(fn, fresh=lambda: None) -> float:
        times = []
        for _ in range(args.repeats):
            state = fresh()
            t0 = time.perf_counter()
            fn(state)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    t_hash = timed(lambda _: hash_only(sim.lattice.cell, hull, geom.nx, geom.ny, geom.z0, geom.py, geom.px,
                                       thr_event, args.steps))
    t_pass = timed(lambda lat: propose_loop(lat, geom, hull, hull_out, first, prm.event_log_q, args.steps),
                   fresh=lambda: copy.deepcopy(sim.lattice))
    result = {
        "machine": machine_info(),
        "lattice": [256, 256],
        "live_tumour_cells": live,
        "sites_visited_per_step": visited,
        "steps": args.steps,
        "repeats": args.repeats,
    }
    for name, seconds in (("hash_only", t_hash), ("propose_pass", t_pass)):
        result[name] = {"seconds_median": seconds, "us_per_step": 1e6 * seconds / args.steps,
                        "ns_per_visited_site": 1e9 * seconds / args.steps / visited}
        print(f"{name:>13}: {1e6 * seconds / args.steps:7.1f} µs per step, "
              f"{1e9 * seconds / args.steps / visited:5.2f} ns per visited site ({visited:,} sites, {live:,} live)")
    write_report(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

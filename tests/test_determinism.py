"""Reproducibility: results depend on (scenario, seed, patient) and nothing else.

Every random decision is a counter-based draw keyed by (seed, patient, clock,
purpose, agent), so the thread count, the way a run is split into
``advance()`` calls, and the serial/parallel choice of each pass must not
change a single bit. ``conftest.py`` sets ``NUMBA_NUM_THREADS=3`` before Numba
is imported, so three threads are available even on a two-core machine.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from conftest import make_scenario, merge, run_scenario

import cikabm.simulation as simulation
from cikabm import Simulation
from cikabm.kernels import core

THREADS = [t for t in (1, 2, 3) if t <= numba.config.NUMBA_NUM_THREADS]

LIVELY = {
    "lattice": {"shape": [40, 40]},
    "tumour": {"initial_cells": 600, "division_rate_per_day": 1.0, "mhc_loss_per_division": 0.1},
    "homing": {"ctl_per_site_per_day": 0.03, "cik_per_site_per_day": 1e-11},
    "dosing": {"schedule": "lee2015"},
    "time": {"duration_days": 2.0, "record_every_hours": 2.0},
    # Every effector rule acts: clonal TCR recognition and activation-induced death too.
    "effectors": {"tnk": {"nkg2d_rate_per_hour": 2.0, "tcr_rate_per_hour": 2.0, "tcr_recognising_fraction": 0.5},
                  "tcell": {"tcr_rate_per_hour": 1.0, "tcr_recognising_fraction": 0.5}},
    "killing": {"activation_death_per_kill": 0.2},
}


def state(sim: Simulation) -> list[np.ndarray]:
    """Everything that carries over between steps."""
    n = int(sim.counters[0])
    eff = [a[:n] for a in sim.effectors[:11]]  # pos .. tcr_match (scratch arrays excluded)
    return [*sim.lattice[:5], sim.lattice.has_effector, *eff, sim.ifn, sim.counters, sim.kills,
            sim.arrivals, sim.records]


def assert_same_state(a: Simulation, b: Simulation) -> None:
    for x, y in zip(state(a), state(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_numba_has_three_threads_available():
    assert numba.config.NUMBA_NUM_THREADS >= 3, (
        "conftest.py should set NUMBA_NUM_THREADS=3 before numba is imported")


def test_same_seed_same_records():
    sc = make_scenario(LIVELY)
    a, fa = run_scenario(sc, seed=5)
    b, fb = run_scenario(sc, seed=5)
    assert_same_state(a, b)
    assert fa.equals(fb)
    assert fa["kills_total"].iloc[-1] > 0 and fa["tumour_mhc_lost"].max() > 0


def test_different_seeds_differ():
    sc = make_scenario(LIVELY)
    frames = [run_scenario(sc, seed=s)[1] for s in (5, 6, 7)]
    totals = [tuple(f["tumour_total"]) for f in frames]
    kills = [tuple(f["kills_total"]) for f in frames]
    assert len(set(totals)) == 3 and len(set(kills)) == 3
    # the scenario seed is the default seed
    sc7 = make_scenario(merge(LIVELY, {"scenario": {"seed": 7}}))
    assert run_scenario(sc7)[1].equals(frames[2])


def test_different_patients_differ():
    sc = make_scenario(LIVELY)
    a = run_scenario(sc, seed=5, patient=0)[1]
    b = run_scenario(sc, seed=5, patient=1)[1]
    assert not np.array_equal(a["tumour_total"], b["tumour_total"])
    assert not np.array_equal(a["kills_total"], b["kills_total"])


def test_same_patient_same_tumour_until_treatment_differs():
    """Common random numbers: a patient's tumour is identical in two arms up to the first infusion."""
    untreated = {"tumour": {"initial_cells": 300, "division_rate_per_day": 1.0},
                 "homing": {"cik_per_site_per_day": 1e-11}, "dosing": {"schedule": "none"},
                 "time": {"duration_days": 3.0}}
    treated = merge(untreated, {"dosing": {"schedule": "lee2015", "start_day": 1.5}})
    a = run_scenario(make_scenario(untreated), seed=4, patient=12)[1]
    b = run_scenario(make_scenario(treated), seed=4, patient=12)[1]
    before = a["time_days"] < 1.5
    assert a[before].drop(columns="blood_cik_cells").equals(b[before].drop(columns="blood_cik_cells"))
    assert b["arrivals_tnk"].iloc[-1] > 0
    assert not a["tumour_total"].equals(b["tumour_total"])


@pytest.mark.parametrize("chunks", [[1, 1, 5, 40, 1000], [7, 13, 29, 250], [144, 144]])
def test_advance_in_chunks_equals_one_run(chunks):
    sc = make_scenario(LIVELY)
    whole = Simulation(sc, seed=8, threads=1)
    whole.advance(whole.disc.n_steps)
    parts = Simulation(sc, seed=8, threads=1)
    for c in chunks:
        parts.advance(c)
    parts.advance(parts.disc.n_steps)  # the rest (advance stops at the end)
    assert parts.step == whole.step == whole.disc.n_steps
    assert_same_state(whole, parts)
    run = Simulation(sc, seed=8, threads=1)
    res = run.run(progress=False, n_snapshots=3)  # run() itself advances in day-long chunks
    np.testing.assert_array_equal(res.records, whole.records)


@pytest.mark.parametrize(("check_every", "stop_cells"), [(7, 10**6), (18, 700), (1, 602), (50, 1)])
def test_stop_checks_in_the_kernel_equal_the_checks_between_calls(check_every, stop_cells):
    """``advance(check_every=, stop_cells=)`` stops where a loop of calls that counts the live cells after
    each would, in the same state; a count of 0 stops it too."""
    sc = make_scenario(LIVELY)
    compiled = Simulation(sc, seed=8, threads=1)
    ran = compiled.advance(compiled.disc.n_steps, check_every=check_every, stop_cells=stop_cells)
    loop = Simulation(sc, seed=8, threads=1)
    while loop.step < loop.disc.n_steps:
        loop.advance(check_every)
        live = int(np.count_nonzero(loop.lattice.cell == core.LIVE))
        if live == 0 or live >= stop_cells:
            break
    assert ran == compiled.step == loop.step
    assert_same_state(compiled, loop)
    live = int(np.count_nonzero(compiled.lattice.cell == core.LIVE))
    if stop_cells > 604:  # 600 cells at the start, at most 604 (this tumour shrinks under the CTLs)
        assert compiled.step == compiled.disc.n_steps
    else:  # reached (by 602 cells after a few steps; 1 cell at once)
        assert compiled.step < compiled.disc.n_steps and live >= stop_cells


def test_effectors_are_in_order_of_arrival_between_calls(monkeypatch):
    """Within a call the kernel stores effectors by site, again whenever arrivals pile up.

    Between calls they must be back in order of arrival, every one on a site
    marked as holding it. With the effector pass forced into strips, and the
    arrivals of each call above the re-storing threshold, the re-storing runs
    within the calls too (that it changes no result is the thread-count test's).
    """
    monkeypatch.setattr(simulation, "PARALLEL_MIN_SITES", 1)
    sim = Simulation(make_scenario(LIVELY), seed=3, threads=2)
    for _ in range(6):
        uids_before = int(sim.counters[1])
        sim.advance(48)
        n = int(sim.counters[0])
        assert n > 20
        assert (sim.counters[1] - uids_before) * core._RESTORE_FRACTION > 2 * n
        assert np.all(np.diff(sim.effectors.uid[:n]) > 0)
        marked = np.flatnonzero(sim.lattice.has_effector)
        np.testing.assert_array_equal(np.sort(sim.effectors.pos[:n]), marked)


@pytest.mark.parametrize("threads", THREADS)
def test_thread_count_does_not_change_results_forced_parallel(monkeypatch, threads):
    """Every pass forced onto the prange path (2D and 3D, walking and well-mixed)."""
    monkeypatch.setattr(simulation, "PARALLEL_MIN_SITES", 1)
    cases = [
        LIVELY,
        merge(LIVELY, {"effectors": {"motility": "well_mixed"}}),
        merge(LIVELY, {"lattice": {"shape": [14, 16, 18]}, "tumour": {"initial_cells": 800}}),
    ]
    for data in cases:
        sc = make_scenario(data)
        reference = Simulation(sc, seed=3, threads=1)
        reference.run(progress=False, n_snapshots=0)
        sim = Simulation(sc, seed=3, threads=threads)
        res = sim.run(progress=False, n_snapshots=0)
        assert res.threads == threads
        assert_same_state(reference, sim)
        assert reference.records[-1, core.REC_KILLS:core.REC_KILLS + 16].sum() > 0


def colour_class_sizes(sim: Simulation) -> np.ndarray:
    """Effectors per (z mod 3, y mod 3, x mod 3) colour class, as the kernel buckets them."""
    geom = sim.disc.geometry
    pos = sim.effectors.pos[:sim.counters[0]]
    plane = geom.py * geom.px
    z, rem = np.divmod(pos, plane)
    y, x = np.divmod(rem, geom.px)
    return np.bincount((z % 3) * 9 + (y % 3) * 3 + (x % 3), minlength=core.N_CLASSES)


HEAVY = {  # 90 000 sites and ~10 000 effectors: every pass takes the parallel path by itself
    "lattice": {"shape": [300, 300]},
    "tumour": {"initial_cells": 20_000, "division_rate_per_day": 1.0, "mhc_loss_per_division": 0.05},
    "homing": {"ctl_per_site_per_day": 0.4, "cik_per_site_per_day": 2e-11},
    "dosing": {"schedule": "lee2015"},
    "time": {"duration_days": 0.3, "record_every_hours": 1.0},
    "effectors": {"capacity": 50_000},
}


def test_heavy_run_takes_the_parallel_paths_and_is_thread_independent():
    sc = make_scenario(HEAVY)
    # per colour class, as run_steps derives it for the most threads
    effector_min = max(simulation.PARALLEL_MIN_SITES // core.EFFECTOR_MIN_DIVISOR * max(THREADS), 1)
    sims = []
    for threads in THREADS:
        sim = Simulation(sc, seed=21, threads=threads)
        sim.run(progress=False, n_snapshots=0)
        sims.append(sim)
    ref = sims[0]
    assert 300 * 300 >= simulation.PARALLEL_MIN_SITES  # lattice and record passes in parallel
    sizes = colour_class_sizes(ref)
    used = sizes[sizes > 0]
    assert len(used) == 9  # 2D: z mod 3 is always 0
    assert used.min() >= effector_min, sizes  # every colour class in prange
    assert ref.records[-1, core.REC_KILLS:core.REC_KILLS + 16].sum() > 500
    for other in sims[1:]:
        assert_same_state(ref, other)


def test_scattered_seeding_any_seed_order():
    """Building simulations with scattered seeding works for any sequence of seeds.

    Regression: the Python int returned by ``core.stream_key`` was passed back
    to the compiled ``core.hash_sites``; once Numba held an int64
    specialisation, a later key >= 2**63 raised ``OverflowError``. Seed 2 gives
    a key below 2**63 and seed 3 one above, so this order used to fail.
    """
    assert core.stream_key(2, 0, 0, core.P_SEED + 100) < 2**63
    assert core.stream_key(3, 0, 0, core.P_SEED + 100) >= 2**63
    sc = make_scenario(tumour={"initial_cells": 40, "initial_pattern": "scattered"})
    counts = []
    for seed in (2, 3, 0, 1):
        sim = Simulation(sc, seed=seed)
        counts.append(int(np.count_nonzero(sim.lattice.cell == core.LIVE)))
    assert counts == [40] * 4


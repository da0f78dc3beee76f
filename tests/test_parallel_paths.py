"""The parallel and serial code paths of every pass give identical results.

Passes switch to ``prange`` above ``PARALLEL_MIN_SITES`` work items; forcing
both choices on one scenario must not change a single bit. This guards the
race-freedom arguments of the kernel (row independence of the tumour passes,
colour classes of effectors) and a Numba pitfall: writes through a NamedTuple
attribute inside a ``prange`` body are silently dropped.
"""

from __future__ import annotations

import numpy as np
import pytest

import cikabm.simulation as simulation
from cikabm import Simulation, scenario_from_dict
from cikabm.kernels import core

BUSY = {
    "lattice": {"shape": [90, 90]},
    "tumour": {"initial_cells": 2500, "mhc_loss_per_division": 0.2},
    "time": {"duration_days": 2.0, "record_every_hours": 2.0},
    "homing": {"ctl_per_site_per_day": 0.05, "cik_per_site_per_day": 1e-11},
    "dosing": {"schedule": "lee2015"},
}


def _run(monkeypatch, parallel_min: int, threads: int, scenario: dict = BUSY) -> Simulation:
    monkeypatch.setattr(simulation, "PARALLEL_MIN_SITES", parallel_min)
    sim = Simulation(scenario_from_dict(scenario), threads=threads)
    sim.run(progress=False, n_snapshots=0)
    return sim


def _state(sim: Simulation) -> list[np.ndarray]:
    n = int(sim.counters[0])
    eff = [a[:n] for a in (sim.effectors.pos, sim.effectors.kind, sim.effectors.kills,
                           sim.effectors.granules, sim.effectors.target, sim.effectors.uid)]
    return [*sim.lattice, *eff, sim.ifn, sim.records, sim.kills]


@pytest.mark.parametrize("threads", [1, 2])
def test_forced_parallel_equals_serial(monkeypatch, threads):
    serial = _run(monkeypatch, 2**62, 1)
    parallel = _run(monkeypatch, 1, threads)  # every pass and every effector class in prange
    for a, b in zip(_state(serial), _state(parallel), strict=True):
        np.testing.assert_array_equal(a, b)
    # the scenario really exercised killing, division and MHC loss
    assert serial.records[-1, core.REC_KILLS:core.REC_KILLS + 16].sum() > 50
    assert serial.records[:, core.REC_TUMOUR_MHC_LOST].max() > 0


def test_daughters_inherit_attributes_in_parallel_pass(monkeypatch):
    """Daughters written by the parallel resolve pass carry L, M, F (not zeros)."""
    growth_only = {**BUSY, "homing": {"ctl_per_site_per_day": 0.0}, "dosing": {"schedule": "none"},
                   "time": {"duration_days": 3.0}, "tumour": {"initial_cells": 500}}
    sim = _run(monkeypatch, 1, 2, growth_only)
    live = sim.lattice.cell == core.LIVE
    assert live.sum() > 600
    assert (sim.lattice.ligand[live] > 0).mean() > 0.99
    assert (sim.lattice.mhc[live] > 0).mean() > 0.99

"""Shared set-up of the kernel test suite.

Environment first: Numba reads ``NUMBA_NUM_THREADS`` once, when it is first
imported, so it is set here before anything imports :mod:`cikabm` (three
threads work on a two-core machine; the determinism tests compare 1, 2 and 3).
The OpenMP layer otherwise spin-waits between parallel regions, which makes
many small runs slow when another process holds a core.

Helpers are plain functions; test modules import them (``from conftest
import make_scenario``) or take them as fixtures (``build_scenario``,
``run_sim``, ``inject``):

* ``make_scenario(base=None, **sections)`` builds a validated scenario from
  nested dicts: :data:`QUIET` (a small lattice with no effector supply at
  all), then ``base``, then ``sections``, each merged over the one before.
* ``run_scenario(sc, seed=..., patient=..., threads=...)`` runs it and returns
  the ``(Simulation, Results.to_frame())`` pair.
* ``no_engagement_probability(sites, reach, effectors, q)``: the chance that
  none of ``effectors`` well-mixed effectors engages a lone cell in a sub-step.
* ``inject_effectors(sim, kind, count, granules)`` places ``count`` effectors of
  one kind on random free sites through :func:`cikabm.kernels.core.add_effector`,
  the only way to start with a fixed effector population.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("NUMBA_NUM_THREADS", "3")

from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from scipy import stats

from cikabm import Simulation, scenario_from_dict
from cikabm.kernels import core
from cikabm.params import Scenario
from cikabm.scenario import merge_tables

#: Base of the test scenarios: a small lattice, no CIK, no endogenous CTLs,
#: hourly records. Tests override what they need.
QUIET: dict[str, Any] = {
    "scenario": {"name": "test", "seed": 11},
    "lattice": {"shape": [30, 30]},
    "time": {"duration_days": 2.0, "dt_minutes": 10.0, "record_every_hours": 1.0},
    "tumour": {"initial_cells": 50},
    "homing": {"ctl_per_site_per_day": 0.0, "cik_per_site_per_day": 0.0},
    "dosing": {"schedule": "none"},
    "effectors": {"capacity": 20_000},
}

#: Per-kind settings that make an effector kind inert in motion (speed 0 sets
#: the number of motility sub-steps to 1 when every kind has it).
STILL = {"speed_um_per_min": 0.0}


merge = merge_tables


# Lines a test module leaves for the end of the run: pytest's terminal summary prints them, also when the
# module ran in a pytest-xdist worker process (whose own summary nobody sees: the lines travel to the
# controller in the worker's output).
_SUMMARY = pytest.StashKey[dict[str, list[str]]]()
_SUMMARY_FROM_WORKER = "cikabm_summary"


def leave_summary(config: pytest.Config, title: str, lines: list[str]) -> None:
    """Print ``lines`` under ``title`` in the terminal summary at the end of the run."""
    sections = config.stash.setdefault(_SUMMARY, {})
    sections[title] = list(lines)
    worker_output = getattr(config, "workeroutput", None)  # set in a pytest-xdist worker
    if worker_output is not None:
        worker_output[_SUMMARY_FROM_WORKER] = sections


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """pytest-xdist: a worker finished; keep the summary lines it left."""
    sections = getattr(node, "workeroutput", {}).get(_SUMMARY_FROM_WORKER)
    if sections:
        node.config.stash.setdefault(_SUMMARY, {}).update(sections)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    for title, lines in config.stash.get(_SUMMARY, {}).items():
        terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(line)


def benchmark_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` loaded as a module (the scripts are not a package); their folder goes on
    the import path, as when they run, for their shared ``machine`` module."""
    import importlib.util
    import sys

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    path = folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_scenario(base: Mapping[str, Any] | None = None, **sections: Any) -> Scenario:
    """A validated scenario: ``QUIET``, then ``base``, then ``sections`` merged over each other."""
    return scenario_from_dict(merge(merge(QUIET, base or {}), sections))


def run_scenario(sc: Scenario, *, seed: int | None = None, patient: int = 0,
                 threads: int | None = 1):
    """Run ``sc`` to its end; return ``(simulation, results.to_frame())``."""
    sim = Simulation(sc, seed=seed, patient=patient, threads=threads)
    res = sim.run(progress=False, n_snapshots=0)
    return sim, res.to_frame()


def inject_effectors(sim: Simulation, kind: int, count: int, granules: int | None = None,
                     salt: int = 977) -> None:
    """Place ``count`` effectors of ``kind`` on random free sites before (or between) steps."""
    placed = sim.add_effectors(kind, count, granules=granules, salt=salt)
    assert placed == count, "could not place an effector"


def live_count(sim: Simulation) -> int:
    """Live tumour cells on the lattice now."""
    return int(np.count_nonzero(sim.lattice.cell == core.LIVE))


def closed_neighbourhood_sizes(sim: Simulation, sites: np.ndarray) -> np.ndarray:
    """For each site, how many interior sites its contact neighbourhood (itself included) holds.

    Effectors stand only on interior sites, so this is the number of effector
    positions from which a cell on that site can be engaged.
    """
    geom = sim.disc.geometry
    nbh = sites[:, None] + geom.offsets[None, :]
    return (sim.lattice.cell[nbh] != core.WALL).sum(axis=1)


def no_engagement_probability(sites: int, reach: int, effectors: int, q: float) -> float:
    """Chance that a lone tumour cell is engaged by none of ``effectors`` well-mixed effectors
    in one sub-step.

    Effectors stand on distinct sites drawn at random from ``sites``; ``reach``
    of them (the cell's own site and its interior neighbours) can engage the
    cell, each with probability ``q = 1 - exp(-rate dt_sub)``. The number
    within reach is hypergeometric, so the answer is ``E[(1 - q)^K]``.
    """
    k = np.arange(reach + 1)
    pmf = stats.hypergeom(sites, reach, effectors).pmf(k)
    return float((pmf * (1.0 - q) ** k).sum())


@pytest.fixture
def build_scenario():
    """``make_scenario`` as a fixture."""
    return make_scenario


@pytest.fixture
def run_sim():
    """``run_scenario`` as a fixture."""
    return run_scenario


@pytest.fixture
def inject():
    """``inject_effectors`` as a fixture."""
    return inject_effectors

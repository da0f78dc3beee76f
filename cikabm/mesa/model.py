"""The Numba kernel as a Mesa model: :class:`CIKModel`.

``CIKModel`` is a ``mesa.Model`` whose parameters are keyword-only with
defaults, so Mesa's ``SolaraViz`` and ``batch_run`` can build it from a dict of
values. Each Mesa step advances the kernel by ``hours_per_step`` hours of
simulated time (many kernel steps), then a ``DataCollector`` records the
populations and the cumulative kills by mechanism, effector kind and target
MHC state, under the column names of :meth:`cikabm.Results.to_frame`.

The lattice is exposed the Mesa way, without copying the kernel's state:
``model.layers`` holds ``PropertyLayer`` objects whose ``data`` are live views
of the kernel's arrays (the padding stripped), and ``model.grid`` (built on
first use) is a Mesa grid with those layers attached. Effectors are agents as a
struct of arrays in the kernel; :meth:`CIKModel.effectors` returns them as a
table when asked.

Without arguments the model is the teaching scenario of
``scenarios/teaching_mhc_loss.toml`` (a tumour escapes CTLs by losing MHC-I;
CIK infusions from day 42 still kill it); the keyword arguments change the
knobs a teacher turns.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any

import mesa
import numpy as np
import pandas as pd
from mesa.discrete_space import OrthogonalMooreGrid, OrthogonalVonNeumannGrid, PropertyLayer

from cikabm.kernels import core
from cikabm.kernels.geometry import interior_view
from cikabm.params import KIND_KEYS, Scenario
from cikabm.scenario import merge_tables, scenario_from_dict
from cikabm.schedules import DEFAULT_DOSE_CELLS, SCHEDULE_NAMES, blood_level
from cikabm.simulation import Simulation, Snapshot, numba_threads, record_columns

__all__ = ["SCHEDULE_CHOICES", "TEACHING_SCENARIO", "CIKModel", "KernelLayer"]

#: The teaching scenario (same values as ``scenarios/teaching_mhc_loss.toml``;
#: a test keeps the two equal). Everything not set takes the scenario defaults.
TEACHING_SCENARIO: dict[str, Any] = {
    "scenario": {
        "name": "teaching_mhc_loss",
        "description": "2D tumour escapes CTLs by MHC-I loss; CIK infusions still kill the MHC-lost cells",
        "seed": 1,
    },
    "lattice": {"shape": [200, 200], "neighbourhood": "moore"},
    "time": {"duration_days": 90.0, "dt_minutes": 10.0, "record_every_hours": 12.0},
    "tumour": {"initial_cells": 200, "initial_pattern": "ball", "division_rate_per_day": 0.5,
               "death_rate_per_day": 0.1, "mhc_mean": 0.8, "mhc_loss_per_division": 0.01,
               "ligand_mean": 0.6},
    "homing": {"ctl_per_site_per_day": 5e-4, "cik_per_site_per_day": 2.5e-12},
    "dosing": {"schedule": "weekly6_biweekly", "start_day": 42.0, "dose_cells": DEFAULT_DOSE_CELLS},
}

#: Schedules the model's ``schedule`` argument accepts: the presets and ``none``.
SCHEDULE_CHOICES: tuple[str, ...] = SCHEDULE_NAMES


class KernelLayer(PropertyLayer):
    """A Mesa ``PropertyLayer`` whose data is a live view of a kernel array.

    The kernel keeps its lattice in flat, padded arrays; this layer shows the
    interior as an ``(ny, nx)`` (or ``(nz, ny, nx)``) array without copying,
    so it always holds the current state. Writing to it writes the kernel's
    state: do so only between steps.
    """

    def __init__(self, name: str, view: np.ndarray):
        self.name = name
        self.dimensions = view.shape
        # Mesa keeps the array in ``_mesa_data`` (3.3) or ``_data`` (3.4+).
        self._data = view
        self._mesa_data = view

    @property
    def data(self) -> np.ndarray:
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        self._data[...] = value


class CIKModel(mesa.Model):
    """Tumour against CTLs and CIK cells, simulated by the Numba kernel, as a Mesa model.

    Every parameter is keyword-only. Those left at None take the value of the
    base scenario (``base_scenario``, or the teaching scenario by default).

    Parameters
    ----------
    base_scenario : Scenario or dict, optional
        Base scenario: a validated :class:`~cikabm.params.Scenario`, or a dict
        of scenario tables merged over :data:`TEACHING_SCENARIO`. Default: the
        teaching scenario.
    mhc_loss_per_division : float, optional
        Chance a daughter cell loses MHC class I for good (``tumour.mhc_loss_per_division``).
    share_tnk, share_nk : float, optional
        CD3+CD56+ (T-NK) and CD3-CD56+ (NK) shares of the CIK product; the
        CD3+CD56- share is the rest (``product.*``).
    dose_billion_cells : float, optional
        CIK cells per infusion, in units of 1e9 (``dosing.dose_cells``).
    schedule : str, optional
        A preset schedule (see :data:`SCHEDULE_CHOICES`) or "none".
    start_day : float, optional
        Day of the first infusion (``dosing.start_day``).
    cik : bool, default True
        False: CTLs only (no CIK infusions, whatever the schedule).
    nkg2d_blocked : bool, default False
        An anti-NKG2D antibody: no effector recognises through NKG2D
        (``killing.nkg2d_blocked``); TCR killing of MHC-I-present cells remains.
    duration_days : float, optional
        Simulated time (``time.duration_days``).
    hours_per_step : float, default 12
        Simulated hours per Mesa step (a whole number of kernel steps).
    seed : int, optional
        Seed of the kernel's random streams (default: the scenario's).
    threads : int, optional
        Numba threads (results do not depend on it).
    rng : optional
        Passed to ``mesa.Model`` (its own generator; the kernel does not use it).

    Attributes
    ----------
    cik_scenario : Scenario
        The validated scenario being run (not ``scenario``: Mesa 3.5 models
        use that name for Mesa's own scenario object).
    simulation : Simulation
        The kernel driver.
    layers : dict of str to KernelLayer
        ``tumour_state`` (0 empty, 1 live, 2 dying), ``mhc_lost`` (0/1),
        ``mhc_level``, ``ligand``, ``fas`` (0-255 levels) and ``has_effector``
        (0/1), each a live view of the kernel's lattice.
    populations : dict
        The current counts (the last row the data collector recorded).
    datacollector : mesa.DataCollector
        One row per Mesa step (and one at time 0).

    Examples
    --------
    >>> model = CIKModel(mhc_loss_per_division=0.02, cik=False)   # doctest: +SKIP
    >>> for _ in range(10):                                       # doctest: +SKIP
    ...     model.step()
    >>> model.datacollector.get_model_vars_dataframe().tail()     # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        base_scenario: Scenario | dict[str, Any] | None = None,
        mhc_loss_per_division: float | None = None,
        share_tnk: float | None = None,
        share_nk: float | None = None,
        dose_billion_cells: float | None = None,
        schedule: str | None = None,
        start_day: float | None = None,
        cik: bool = True,
        nkg2d_blocked: bool = False,
        duration_days: float | None = None,
        hours_per_step: float = 12.0,
        seed: int | None = None,
        threads: int | None = None,
        rng: Any = None,
    ) -> None:
        super().__init__(rng=rng)
        self.cik_scenario = build_scenario(
            base_scenario, mhc_loss_per_division=mhc_loss_per_division, share_tnk=share_tnk, share_nk=share_nk,
            dose_billion_cells=dose_billion_cells, schedule=schedule, start_day=start_day, cik=cik,
            nkg2d_blocked=nkg2d_blocked, duration_days=duration_days, hours_per_step=hours_per_step)
        self.threads = threads
        self.simulation = Simulation(self.cik_scenario, seed=seed, threads=threads)
        disc = self.simulation.disc
        self.steps_per_tick = disc.record_every
        self.layers = self._make_layers()
        self.populations: dict[str, float] = {}
        reporters = {"time_days": "day", "blood_cik_cells": "blood_cik_cells",
                     "infusions_given": "infusions_given"}
        self._count_names = list(record_columns(np.zeros((1, core.N_REC))))
        reporters.update({name: _reporter(name) for name in self._count_names})
        self.datacollector = mesa.DataCollector(model_reporters=reporters)
        self._update_populations()
        self.datacollector.collect(self)

    # ---------------------------------------------------------------- time
    @property
    def day(self) -> float:
        """Simulated time now, in days."""
        return self.simulation.step * self.simulation.disc.dt_days

    @property
    def infusion_days(self) -> np.ndarray:
        """Days of every infusion within the run."""
        return self.simulation.disc.infusion_days

    @property
    def infusions_given(self) -> int:
        """Infusions given up to now."""
        return int(np.searchsorted(self.infusion_days, self.day, side="right"))

    @property
    def blood_cik_cells(self) -> float:
        """CIK cells in blood now (superposition of the infusions given)."""
        return float(blood_level(np.array([self.day]), self.infusion_days, self.cik_scenario.dosing.dose_cells,
                                 self.cik_scenario.persistence)[0])

    def step(self) -> None:
        """Advance the kernel by ``hours_per_step`` hours, then record the populations."""
        sim = self.simulation
        if sim.step >= sim.disc.n_steps:
            self.running = False
            return
        with numba_threads(self.threads):
            sim.advance(self.steps_per_tick)
        self._update_populations()
        self.datacollector.collect(self)
        self.running = sim.step < sim.disc.n_steps

    def _update_populations(self) -> None:
        sim = self.simulation
        row = sim.records[sim.step // sim.disc.record_every]
        counts = record_columns(row[None, :])
        self.populations = {name: float(values[0]) for name, values in counts.items()}
        self.populations["time_days"] = self.day

    # ---------------------------------------------------------------- space
    def _make_layers(self) -> dict[str, KernelLayer]:
        lat = self.simulation.lattice
        geom = self.simulation.disc.geometry
        arrays = {"tumour_state": lat.cell, "mhc_lost": lat.mhc_lost, "mhc_level": lat.mhc,
                  "ligand": lat.ligand, "fas": lat.fas, "has_effector": lat.has_effector}
        return {name: KernelLayer(name, interior_view(arr, geom)) for name, arr in arrays.items()}

    @cached_property
    def grid(self) -> OrthogonalMooreGrid | OrthogonalVonNeumannGrid:
        """A Mesa grid of the lattice, with :attr:`layers` attached (built on first use).

        ``model.grid.tumour_state.data`` and ``cell.tumour_state`` read the
        kernel's current state.
        """
        cls = OrthogonalMooreGrid if self.cik_scenario.lattice.neighbourhood == "moore" else OrthogonalVonNeumannGrid
        grid = cls(tuple(self.cik_scenario.lattice.shape), torus=False, random=self.random)
        for layer in self.layers.values():
            grid.add_property_layer(layer)
        return grid

    def effectors(self) -> pd.DataFrame:
        """The live effectors now: position, kind, granules, kills, engaged, TCR specificity, age (a copy)."""
        sim = self.simulation
        eff = sim.effectors
        n = int(sim.counters[core.C_STORED])
        geom = sim.disc.geometry
        pos = eff.pos[:n]
        plane = geom.py * geom.px
        z, rem = np.divmod(pos, plane)
        y, x = np.divmod(rem, geom.px)
        table = {"x": x - 1, "y": y - 1}
        if geom.dims == 3:
            table = {"x": x - 1, "y": y - 1, "z": z - 1}
        kinds = np.asarray(KIND_KEYS)
        table.update({"kind": kinds[eff.kind[:n]], "granules": eff.granules[:n].copy(),
                      "kills": eff.kills[:n].copy(), "engaged": eff.target[:n] >= 0,
                      "tcr_recognises_tumour": eff.tcr_match[:n] == 1,
                      "age_days": (sim.step - eff.born[:n]) * sim.disc.dt_days})
        return pd.DataFrame(table)

    def snapshot(self) -> Snapshot:
        """The lattice now as 2D images (3D: the middle plane); see :class:`cikabm.simulation.Snapshot`."""
        return self.simulation.snapshot()


def _reporter(name: str) -> Any:
    def report(model: CIKModel) -> float:
        return model.populations[name]

    report.__name__ = f"report_{name}"
    return report


def build_scenario(
    base: Scenario | dict[str, Any] | None = None,
    *,
    mhc_loss_per_division: float | None = None,
    share_tnk: float | None = None,
    share_nk: float | None = None,
    dose_billion_cells: float | None = None,
    schedule: str | None = None,
    start_day: float | None = None,
    cik: bool = True,
    nkg2d_blocked: bool = False,
    duration_days: float | None = None,
    hours_per_step: float = 12.0,
) -> Scenario:
    """The validated scenario of a :class:`CIKModel` (see its parameters).

    Raises
    ------
    cikabm.ScenarioError
        When a value is out of range or makes no sense; the message names the
        scenario field and the value.
    ValueError
        For the model's own arguments (``hours_per_step``, ``share_tnk + share_nk``).
    """
    if isinstance(base, Scenario):
        data = base.model_dump()
    elif base is None or isinstance(base, dict):
        data = merge_tables(TEACHING_SCENARIO, base or {})
    else:
        raise TypeError(f"scenario = {base!r}: expected a Scenario, a dict of scenario tables or None")
    over: dict[str, dict[str, Any]] = {"tumour": {}, "product": {}, "dosing": {}, "time": {}, "killing": {}}
    if nkg2d_blocked:
        over["killing"]["nkg2d_blocked"] = True
    if mhc_loss_per_division is not None:
        over["tumour"]["mhc_loss_per_division"] = mhc_loss_per_division
    product = data.get("product", {})
    if share_tnk is not None or share_nk is not None:
        tnk = share_tnk if share_tnk is not None else product.get("share_tnk", 0.36)
        nk = share_nk if share_nk is not None else product.get("share_nk", 0.04)
        rest = 1.0 - float(tnk) - float(nk)
        if not (isinstance(tnk, int | float) and isinstance(nk, int | float)) or rest < -1e-9:
            raise ValueError(f"share_tnk = {tnk!r} and share_nk = {nk!r}: each must be a number in [0, 1] "
                             "and their sum at most 1 (the CD3+CD56- share is the rest)")
        over["product"].update(share_tnk=tnk, share_nk=nk, share_tcell=max(rest, 0.0))
    if dose_billion_cells is not None:
        if isinstance(dose_billion_cells, bool) or not isinstance(dose_billion_cells, int | float):
            raise ValueError(f"dose_billion_cells = {dose_billion_cells!r}: must be a number (1e9 cells)")
        over["dosing"]["dose_cells"] = float(dose_billion_cells) * 1e9
    if schedule is not None:
        if schedule not in SCHEDULE_CHOICES:
            raise ValueError(f"schedule = {schedule!r}: must be one of {', '.join(SCHEDULE_CHOICES)}")
        over["dosing"].update(schedule=schedule, phases=[])
    if start_day is not None:
        over["dosing"]["start_day"] = start_day
    if not cik:
        over["dosing"].update(schedule="none", phases=[])
    if duration_days is not None:
        over["time"]["duration_days"] = duration_days
    dt_minutes = float(merge_tables(data, over)["time"].get("dt_minutes", 10.0))
    if not isinstance(hours_per_step, int | float) or hours_per_step <= 0:
        raise ValueError(f"hours_per_step = {hours_per_step!r}: must be a positive number of hours")
    steps = hours_per_step * 60.0 / dt_minutes
    if abs(steps - round(steps)) > 1e-9 or round(steps) < 1:
        raise ValueError(f"hours_per_step = {hours_per_step!r} is not a whole number of kernel steps "
                         f"(time.dt_minutes = {dt_minutes:g})")
    over["time"]["record_every_hours"] = float(hours_per_step)
    merged = merge_tables(data, {k: v for k, v in over.items() if v})
    if merged.get("dosing", {}).get("schedule") == "none":
        # No infusion: a start day after the run is then no error.
        merged["dosing"]["start_day"] = 0.0
    duration = merged["time"].get("duration_days", 60.0)
    # A bad duration is left to the scenario's own validation, which names it.
    if isinstance(duration, int | float) and 0 < duration < math.inf and hours_per_step > duration * 24.0:
        raise ValueError(f"hours_per_step = {hours_per_step!r} is longer than the run "
                         f"(time.duration_days = {duration:g})")
    return scenario_from_dict(merged, source="CIKModel")

"""Running one tumour region: :class:`Simulation` and its :class:`Results`."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cikabm.convert import Discretisation, kernel_parameters
from cikabm.io import provenance
from cikabm.kernels import core
from cikabm.kernels.geometry import Geometry, flat_index, interior_view, n_sites
from cikabm.params import KIND_KEYS, Scenario
from cikabm.schedules import blood_level

MECH_KEYS = ("perforin", "fas")
MHC_KEYS = ("mhc_present", "mhc_lost")

#: Snapshot codes of the tumour layer.
SNAP_EMPTY, SNAP_MHC_PRESENT, SNAP_MHC_LOST, SNAP_DYING = 0, 1, 2, 3

#: The peak MHC-I-lost fraction of a run counts only records where the tumour holds at least
#: ``max(MHC_PEAK_MIN_CELLS, MHC_PEAK_MIN_SHARE * peak tumour)`` cells: a fraction of a few cells
#: (4 of 8 just before extinction) says nothing about selection.
MHC_PEAK_MIN_CELLS = 100
MHC_PEAK_MIN_SHARE = 0.1

#: Passes with fewer work items than this run serially (a parallel region
#: costs more than it saves on small lattices); the effector pass runs in
#: parallel with at least 1/4096 of it per colour class in use (9 in 2D, 27 in
#: 3D) and thread (``core.EFFECTOR_MIN_DIVISOR``). Results are identical either way.
PARALLEL_MIN_SITES = 65536


@dataclass(frozen=True)
class Snapshot:
    """The lattice at one time, as 2D images (3D runs: the middle z plane).

    ``tumour`` holds :data:`SNAP_EMPTY`, :data:`SNAP_MHC_PRESENT`,
    :data:`SNAP_MHC_LOST` or :data:`SNAP_DYING`; ``effectors`` holds -1 where no
    effector stands, else the kind index (order of ``KIND_KEYS``).
    """

    day: float
    tumour: np.ndarray
    effectors: np.ndarray


def record_columns(records: np.ndarray) -> dict[str, np.ndarray]:
    """Name the counts of kernel record rows (``records`` of shape ``(n, N_REC)``).

    Tumour by MHC state, effectors by kind, engaged and exhausted effectors,
    cumulative kills (total, by mechanism, by kind, by target MHC state, and by
    all three), and arrivals by kind. The one place record columns get names:
    :meth:`Results.to_frame` and the Mesa model's data collector both use it.
    """
    r = np.atleast_2d(records)
    cols: dict[str, np.ndarray] = {}
    present = r[:, core.REC_TUMOUR_MHC_PRESENT]
    lost = r[:, core.REC_TUMOUR_MHC_LOST]
    cols["tumour_total"] = present + lost
    cols["tumour_mhc_present"] = present
    cols["tumour_mhc_lost"] = lost
    cols["tumour_dying"] = r[:, core.REC_TUMOUR_DYING]
    for k, key in enumerate(KIND_KEYS):
        cols[f"effectors_{key}"] = r[:, core.REC_EFFECTORS + k]
    cols["effectors_engaged"] = r[:, core.REC_ENGAGED]
    cols["effectors_exhausted"] = r[:, core.REC_EXHAUSTED]
    kills = r[:, core.REC_KILLS:core.REC_KILLS + 16].reshape(-1, 2, 4, 2)  # mech, kind, mhc
    cols["kills_total"] = kills.sum(axis=(1, 2, 3))
    for m, mk in enumerate(MECH_KEYS):
        cols[f"kills_{mk}"] = kills[:, m].sum(axis=(1, 2))
    for k, key in enumerate(KIND_KEYS):
        cols[f"kills_{key}"] = kills[:, :, k].sum(axis=(1, 2))
    for h, hk in enumerate(MHC_KEYS):
        cols[f"kills_{hk}"] = kills[:, :, :, h].sum(axis=(1, 2))
    for m, mk in enumerate(MECH_KEYS):
        for k, key in enumerate(KIND_KEYS):
            for h, hk in enumerate(MHC_KEYS):
                cols[f"kills_{mk}_{key}_{hk}"] = kills[:, m, k, h]
    for k, key in enumerate(KIND_KEYS):
        cols[f"arrivals_{key}"] = r[:, core.REC_ARRIVALS + k]
    cols["arrivals_dropped"] = r[:, core.REC_DROPPED]
    return cols


def mhc_lost_peak(days: np.ndarray, total: np.ndarray, lost: np.ndarray) -> dict[str, Any] | None:
    """The highest MHC-I-lost fraction over the records where the tumour is large enough for a fraction.

    Parameters
    ----------
    days, total, lost : ndarray
        Record times, tumour cells and MHC-I-lost tumour cells per record.

    Returns
    -------
    dict or None
        ``fraction``, ``day``, ``cells_lost``, ``cells_total`` at the peak
        (the first record of the highest fraction), and ``min_cells``, the
        floor a record's tumour had to reach: ``max(MHC_PEAK_MIN_CELLS,
        MHC_PEAK_MIN_SHARE * the tumour's peak)``. None when no record
        reaches it (a tumour that never held :data:`MHC_PEAK_MIN_CELLS`).
    """
    total = np.asarray(total)
    lost = np.asarray(lost)
    floor = max(MHC_PEAK_MIN_CELLS, MHC_PEAK_MIN_SHARE * float(total.max(initial=0)))
    counted = np.flatnonzero(total >= floor)
    if counted.size == 0:
        return None
    i = int(counted[np.argmax(lost[counted] / total[counted])])
    return {"fraction": float(lost[i] / total[i]), "day": float(days[i]), "cells_lost": int(lost[i]),
            "cells_total": int(total[i]), "min_cells": int(np.ceil(floor))}


@dataclass
class Results:
    """What a run produced. ``to_frame()`` gives the time series, ``write()`` the run's files."""

    scenario: Scenario
    seed: int
    patient: int
    record_days: np.ndarray
    records: np.ndarray
    blood: np.ndarray
    infusion_days: np.ndarray
    snapshots: list[Snapshot] = field(default_factory=list)
    wall_seconds: float = 0.0
    site_updates: int = 0
    threads: int = 1

    def to_frame(self) -> pd.DataFrame:
        """One row per recorded time: tumour by MHC state, effectors by kind,
        blood level, and cumulative kills by mechanism, kind and MHC state."""
        cols: dict[str, Any] = {"time_days": self.record_days}
        counts = record_columns(self.records)
        names = list(counts)
        first_kill = names.index("kills_total")
        cols.update({k: counts[k] for k in names[:first_kill]})  # tumour and effectors first
        cols["blood_cik_cells"] = self.blood
        cols["infusions_given"] = np.searchsorted(self.infusion_days, self.record_days, side="right")
        cols["ifn_mean"] = self.records[:, core.REC_IFN_MEAN]
        cols.update({k: counts[k] for k in names[first_kill:]})
        frame = pd.DataFrame(cols)
        ints = [c for c in frame.columns if c not in ("time_days", "blood_cik_cells", "ifn_mean")]
        frame[ints] = frame[ints].astype(np.int64)
        return frame

    def kills_table(self) -> pd.DataFrame:
        """Total kills indexed by effector kind, with columns by mechanism and MHC state."""
        last = self.records[-1, core.REC_KILLS:core.REC_KILLS + 16].reshape(2, 4, 2)
        rows = []
        for k, key in enumerate(KIND_KEYS):
            row = {"kind": key}
            for m, mk in enumerate(MECH_KEYS):
                for h, hk in enumerate(MHC_KEYS):
                    row[f"{mk}_{hk}"] = int(last[m, k, h])
            row["total"] = int(last[:, k, :].sum())
            row["mhc_lost"] = int(last[:, k, 1].sum())
            rows.append(row)
        return pd.DataFrame(rows).set_index("kind")

    def summary(self) -> dict[str, Any]:
        """Key numbers of the run, JSON-ready."""
        frame = self.to_frame()
        last = frame.iloc[-1]
        kt = self.kills_table()
        by_kind = {}
        for key in KIND_KEYS:
            total = int(kt.loc[key, "total"])
            lost = int(kt.loc[key, "mhc_lost"])
            by_kind[key] = {
                "kills": total,
                "kills_of_mhc_lost_cells": lost,
                "kills_of_mhc_present_cells": total - lost,
                "fraction_of_kills_on_mhc_lost": (lost / total) if total else None,
                "kills_perforin": int(kt.loc[key, "perforin_mhc_present"] + kt.loc[key, "perforin_mhc_lost"]),
                "kills_fas": int(kt.loc[key, "fas_mhc_present"] + kt.loc[key, "fas_mhc_lost"]),
                "arrivals": int(last[f"arrivals_{key}"]),
            }
        total_tumour = frame["tumour_total"].to_numpy()
        lost_tumour = frame["tumour_mhc_lost"].to_numpy()
        peak_lost = mhc_lost_peak(self.record_days, total_tumour, lost_tumour)
        sc = self.scenario
        return {
            "scenario": sc.scenario.name,
            "seed": self.seed,
            "patient": self.patient,
            **provenance(),
            "dims": sc.dims,
            "lattice_shape": list(sc.lattice.shape),
            "duration_days": float(self.record_days[-1]),
            "dosing_schedule": sc.dosing.schedule,
            "infusion_days": [float(d) for d in self.infusion_days],
            "tumour_initial": int(total_tumour[0]),
            "tumour_final": int(total_tumour[-1]),
            "tumour_peak": int(total_tumour.max()),
            "tumour_peak_day": float(self.record_days[int(total_tumour.argmax())]),
            "tumour_final_mhc_lost": int(last["tumour_mhc_lost"]),
            "mhc_lost_fraction_final": float(lost_tumour[-1] / total_tumour[-1]) if total_tumour[-1] > 0 else None,
            "mhc_lost_peak": peak_lost,
            "kills_total": int(last["kills_total"]),
            "kills_by_mechanism": {mk: int(last[f"kills_{mk}"]) for mk in MECH_KEYS},
            "kills_by_kind": by_kind,
            "arrivals_dropped": int(last["arrivals_dropped"]),
            "performance": {
                "wall_seconds": round(self.wall_seconds, 3),
                "threads": self.threads,
                "site_updates": int(self.site_updates),
                "site_updates_per_second": (self.site_updates / self.wall_seconds
                                            if self.wall_seconds > 0 else None),
            },
        }

    def write(self, directory: str | Path, *, scenario_source: bytes | None = None) -> list[Path]:
        """Write the run's files (:data:`cikabm.io.RUN_OUTPUTS`) into an existing ``directory``.

        ``timeseries.csv`` depends only on the scenario and seed (never on
        timing or threads), so it is byte-identical between runs of the same
        scenario. ``scenario.toml`` is written when ``scenario_source`` (the
        file's bytes) is given.

        Returns
        -------
        list of Path
            The files written.
        """
        from cikabm.io import atomic_write_json
        from cikabm.plotting import save_run_figures

        directory = Path(directory)
        path = directory / "timeseries.csv"
        self.to_frame().to_csv(path, index=False, lineterminator="\n")
        files = [path]
        summary = self.summary()
        summary["kills_table"] = self.kills_table().reset_index().to_dict(orient="records")
        summary["scenario_parameters"] = self.scenario.model_dump(mode="json")
        files.append(atomic_write_json(directory / "summary.json", summary))
        if scenario_source is not None:
            path = directory / "scenario.toml"
            path.write_bytes(scenario_source)
            files.append(path)
        files.extend(save_run_figures(self, directory))
        return files


@contextlib.contextmanager
def numba_threads(threads: int | None) -> Iterator[int]:
    """Run a block with ``threads`` Numba threads (None: leave as is)."""
    previous = numba.get_num_threads()
    if threads is None:
        yield previous
        return
    if not 1 <= threads <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"threads = {threads}: must be between 1 and {numba.config.NUMBA_NUM_THREADS}")
    numba.set_num_threads(threads)
    try:
        yield threads
    finally:
        numba.set_num_threads(previous)


def initial_tumour_sites(scenario: Scenario, geom: Geometry, seed: int, patient: int) -> np.ndarray:
    """Flat indices of the initial tumour cells (ball at the centre, or scattered).

    A ball takes the ``initial_cells`` sites nearest the centre (ties by flat
    index); scattered cells take the sites of the smallest hashes (ties by
    flat index). Both look at no more sites than they need to, so that a large
    lattice needs no per-site temporaries of coordinates.
    """
    count = scenario.tumour.initial_cells
    shape = np.asarray(scenario.lattice.shape, dtype=np.int64)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if scenario.tumour.initial_pattern == "ball":
        return _ball_sites(shape, geom, count)
    flat = interior_view(np.arange(geom.pz * geom.py * geom.px, dtype=np.int64), geom).ravel()
    bits = np.empty(flat.shape[0], dtype=np.uint64)
    core.hash_sites(np.uint64(core.stream_key(seed, patient, 0, core.P_SEED + 100)), flat, bits)
    order = np.argsort(bits, kind="stable")
    return np.sort(flat[order[:count]])


def _ball_sites(shape: np.ndarray, geom: Geometry, count: int) -> np.ndarray:
    """The ``count`` sites nearest the centre, ties by flat index, found in a growing box around it.

    The box is large enough once the farthest chosen site is nearer the centre
    than any site outside the box (or the box is the whole lattice).
    """
    centre = (shape - 1) / 2.0
    half = math.ceil(count ** (1.0 / len(shape))) + 1.0
    while True:
        lo = np.maximum(np.floor(centre - half), 0).astype(np.int64)
        hi = np.minimum(np.ceil(centre + half) + 1, shape).astype(np.int64)  # exclusive
        coords = (np.indices(tuple(hi - lo)).reshape(len(shape), -1) + lo[:, None]).T
        if len(coords) >= count:
            flat = flat_index(geom, coords)
            dist2 = ((coords - centre) ** 2).sum(axis=1)
            order = np.lexsort((flat, dist2))
            chosen = order[:count]
            whole = bool(np.all(lo == 0) and np.all(hi == shape))
            # Nearest a site outside the box can be: one step beyond an edge that is not the lattice's.
            gaps = [centre[a] - (lo[a] - 1) for a in range(len(shape)) if lo[a] > 0]
            gaps += [hi[a] - centre[a] for a in range(len(shape)) if hi[a] < shape[a]]
            if whole or dist2[chosen[-1]] < min(gaps) ** 2:
                return np.sort(flat[chosen])
        half *= 2.0


class Simulation:
    """One tumour region under one scenario.

    Parameters
    ----------
    scenario : Scenario
        A validated scenario (see :func:`cikabm.load_scenario`).
    seed : int, optional
        Overrides ``scenario.scenario.seed``.
    patient : int
        Patient id: a key of every random stream.
    threads : int, optional
        Numba threads (results do not depend on it).

    Examples
    --------
    >>> sc = load_scenario("scenarios/teaching_mhc_loss.toml")   # doctest: +SKIP
    >>> res = Simulation(sc, threads=2).run()                     # doctest: +SKIP
    >>> res.to_frame().tail()                                     # doctest: +SKIP
    """

    def __init__(self, scenario: Scenario, *, seed: int | None = None, patient: int = 0,
                 threads: int | None = None):
        self.scenario = scenario
        self.seed = int(scenario.scenario.seed if seed is None else seed)
        if self.seed < 0:
            raise ValueError(f"seed = {self.seed}: must be >= 0")
        self.patient = int(patient)
        self.threads = threads
        self.disc: Discretisation = kernel_parameters(scenario)
        self._allocate()

    def _allocate(self) -> None:
        geom = self.disc.geometry
        self.lattice, self.effectors = core.allocate_state(geom, self.scenario.effectors.capacity)
        self.ifn = np.zeros(geom.cz * geom.cy * geom.cx, np.float64)
        self.ifn_tmp = np.zeros_like(self.ifn)
        self.counters = np.zeros(core.N_COUNTERS, np.int64)  # (core.C_STORED, C_NEXT_UID, C_DROPPED)
        self.kills = np.zeros(core.N_KILL_TALLIES, np.int64)
        self.arrivals = np.zeros(core.N_KINDS, np.int64)
        self.records = np.zeros((self.disc.n_records, core.N_REC), np.float64)
        self.row_counts = np.zeros((geom.nz * geom.ny, 3), np.int64)
        self.pass_ticks = np.zeros(len(core.PASS_NAMES), np.uint64)  # see time_by_pass
        tum = self.scenario.tumour
        sites = initial_tumour_sites(self.scenario, geom, self.seed, self.patient)
        core.seed_tumour(self.lattice, sites, self.seed, self.patient, tum.ligand_mean, tum.ligand_sd,
                         tum.mhc_mean, tum.mhc_sd, tum.fas_mean, tum.fas_sd, tum.initial_mhc_lost_fraction,
                         self.disc.params.event_log_q)
        self.step = 0
        self._record_initial()

    def _record_initial(self) -> None:
        d = self.disc
        core.record(self.records[0], self.lattice, self.effectors, self.counters, self.kills,
                    self.arrivals, d.geometry, d.params, self.ifn, self.row_counts, False)

    def snapshot(self) -> Snapshot:
        """The current lattice as 2D images (see :class:`Snapshot`)."""
        geom = self.disc.geometry
        cell = interior_view(self.lattice.cell, geom)
        lost = interior_view(self.lattice.mhc_lost, geom)
        img = np.zeros(cell.shape, np.uint8)
        img[(cell == core.LIVE) & (lost == 0)] = SNAP_MHC_PRESENT
        img[(cell == core.LIVE) & (lost == 1)] = SNAP_MHC_LOST
        img[cell == core.DYING] = SNAP_DYING
        eff = np.full(geom.pz * geom.py * geom.px, -1, np.int8)
        n = int(self.counters[core.C_STORED])
        eff[self.effectors.pos[:n]] = self.effectors.kind[:n].astype(np.int8)
        eff_img = interior_view(eff, geom)
        if geom.dims == 3:
            mid = geom.nz // 2
            img, eff_img = img[mid], eff_img[mid]
        return Snapshot(day=self.step * self.disc.dt_days, tumour=img.copy(), effectors=eff_img.copy())

    def add_effectors(self, kind: int, count: int, *, granules: int | None = None, salt: int = 977) -> int:
        """Place ``count`` effectors of ``kind`` on random free sites, now (before or between steps).

        The way to start with a fixed effector population (an in-vitro assay, a
        test). Each arrives as an infused cell does: full granules unless
        ``granules`` says otherwise, its TCR clone drawn at arrival. Placement
        draws are keyed on (seed, patient, current step, ``salt``). Returns the
        number placed (fewer when the lattice or the capacity is full).
        """
        if not 0 <= kind < core.N_KINDS:
            raise ValueError(f"kind = {kind}: must be 0-{core.N_KINDS - 1}")
        prm = self.disc.params
        granules = prm.granules_initial if granules is None else int(granules)
        key = np.uint64(core.stream_key(self.seed, self.patient, self.step, salt))
        match_key = np.uint64(core.tcr_match_key(self.seed, self.patient))
        placed = 0
        for _ in range(int(count)):
            placed += bool(core.add_effector(self.lattice, self.effectors, self.counters, self.disc.geometry,
                                             kind, granules, self.step, key, 256, match_key,
                                             prm.thr_tcr_match[kind]))
        return placed

    def advance(self, n_steps: int, *, check_every: int = 0, stop_cells: int = 0) -> int:
        """Advance ``n_steps`` steps (records are written on record steps); return the steps run.

        With ``check_every`` > 0 the live tumour cells are counted every
        ``check_every`` steps and at the end, and the run stops at the first
        count that is 0 or at least ``stop_cells`` (when > 0), all in
        compiled code (:func:`cikabm.kernels.core.run_steps`).
        """
        d = self.disc
        begin, end = self.step, min(self.step + n_steps, d.n_steps)
        if self.step == 0:  # again: effectors may have been placed since construction
            self._record_initial()
        self.step = core.run_steps(self.lattice, self.effectors, self.ifn, self.ifn_tmp, self.counters,
                                   self.kills, self.arrivals, d.geometry, d.params, self.seed, self.patient,
                                   begin, end, d.mean_cik_arrivals, d.mean_ctl_arrivals, d.record_every,
                                   self.records, self.row_counts, numba.get_num_threads(), PARALLEL_MIN_SITES,
                                   self.pass_ticks, check_every, stop_cells)
        return self.step - begin

    def time_by_pass(self) -> dict[str, float] | None:
        """Share of the kernel's time spent in each pass of the step, over every step run so far.

        Keys are :data:`cikabm.kernels.core.PASS_NAMES` in step order; values
        sum to 1. Measured with the CPU's time-stamp counter around each pass
        (:func:`~cikabm.kernels.core.cycle_counter`); None where there is none
        (not x86-64) or before any step. Reset with ``sim.pass_ticks[:] = 0``.
        """
        total = int(self.pass_ticks.sum())
        if total == 0:
            return None
        return {name: int(t) / total for name, t in zip(core.PASS_NAMES, self.pass_ticks, strict=True)}

    def run(self, *, progress: bool | None = None, n_snapshots: int = 4) -> Results:
        """Run to the end of the scenario.

        Parameters
        ----------
        progress : bool, optional
            Show a progress bar (default None: when stderr is a terminal). The bar
            appears only once the run has taken 2 s.
        n_snapshots : int
            Lattice snapshots taken at evenly spaced times, first and last included.
        """
        d = self.disc
        with numba_threads(self.threads) as threads:
            start = time.perf_counter()
            snap_steps = sorted({round(x) for x in np.linspace(0, d.n_steps, max(n_snapshots, 0))})
            chunk = max(d.record_every, round(1.0 / d.dt_days))  # about one simulated day
            stops = sorted(set(range(chunk, d.n_steps, chunk)) | set(snap_steps) | {d.n_steps})
            stops = [s for s in stops if s > 0]
            snapshots = [self.snapshot()] if 0 in snap_steps else []
            bar = tqdm(total=round(d.n_steps * d.dt_days, 3), unit="day", delay=2.0, leave=False,
                       disable=None if progress is None else not progress, desc=self.scenario.scenario.name)
            with bar:
                for stop in stops:
                    before = self.step
                    self.advance(stop - self.step)
                    bar.update(round((self.step - before) * d.dt_days, 6))
                    if self.step in snap_steps:
                        snapshots.append(self.snapshot())
            wall = time.perf_counter() - start
        blood = blood_level(d.record_days, d.infusion_days, self.scenario.dosing.dose_cells,
                            self.scenario.persistence)
        return Results(scenario=self.scenario, seed=self.seed, patient=self.patient,
                       record_days=d.record_days, records=self.records.copy(), blood=blood,
                       infusion_days=d.infusion_days, snapshots=snapshots, wall_seconds=wall,
                       site_updates=n_sites(d.geometry) * d.n_steps, threads=threads)

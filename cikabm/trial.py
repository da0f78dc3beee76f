"""Virtual trials: every virtual patient in every arm, run in parallel, resumable.

Adjuvant setting (docs/model.md, Virtual trials): each patient has a Poisson number of
micrometastatic foci (more for larger primaries); each focus is its own small
lattice grown from a few cells under endogenous CTLs and the arm's CIK
infusions. A focus that reaches ``adjuvant.escape_cells`` live cells has
escaped; from then on it grows at the patient's net rate, from
``escape_physical_cells`` to ``detection_cells``. Recurrence is the first
detection. RFS ends at recurrence or death; OS at death (other cause, or
recurrence plus post-recurrence survival); both censored at the end of
follow-up.

Advanced setting: one representative tumour region; progression when the
live burden exceeds its running nadir by the volume of a
``progression_diameter_increase`` diameter increase (RECIST +20 %).

Work is split in chunks of patients; each finished chunk is written
atomically under ``OUT/.chunks`` so that a killed trial resumes without losing
or redoing finished patients, and the final files equal those of an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cikabm import __version__
from cikabm.io import atomic_write_json, to_jsonable
from cikabm.kernels.core import LIVE
from cikabm.patients import (
    FOCI_KEY_STRIDE,
    VirtualPatient,
    draw_patient,
    infusions_before,
    patient_region,
)
from cikabm.simulation import Simulation
from cikabm.trial_params import DAYS_PER_MONTH, ArmParams, TrialScenario

CHUNK_DIR = ".chunks"


def _live(sim: Simulation) -> int:
    return int(np.count_nonzero(sim.lattice.cell == LIVE))


def _run_until(sim: Simulation, check_days: float, stop: Callable[[int], bool], end_day: float) -> float | None:
    """Advance ``sim`` in checks of ``check_days`` until ``stop(live)``; the day it stopped, or None."""
    steps = max(1, round(check_days / sim.disc.dt_days))
    last = min(sim.disc.n_steps, math.floor(end_day / sim.disc.dt_days))
    while sim.step < last:
        sim.advance(min(steps, last - sim.step))
        if stop(_live(sim)):
            return sim.step * sim.disc.dt_days
    return None


def _adjuvant_course(ts: TrialScenario, patient: VirtualPatient, arm: ArmParams, seed: int) -> dict[str, Any]:
    adj = ts.adjuvant
    end_day = patient.censor_months * DAYS_PER_MONTH
    region = patient_region(ts, patient, arm, initial_cells=adj.focus_initial_cells, duration_days=end_day,
                            record_every_hours=adj.check_every_days * 24.0)
    growth_days = math.log(adj.detection_cells / adj.escape_physical_cells) / patient.net_growth_per_day
    first_detection = math.inf
    escaped = 0
    arrived = 0  # CIK cells that entered the simulated foci
    expected = math.nan  # CIK cells expected to enter one focus over the whole follow-up
    for focus in range(patient.n_foci):
        # A focus escaping after the earliest detection so far cannot change the recurrence time.
        horizon = min(end_day, first_detection - growth_days)
        if horizon <= 0:
            break
        sim = Simulation(region, seed=seed, patient=patient.patient_id * FOCI_KEY_STRIDE + focus, threads=1)
        expected = float(sim.disc.mean_cik_arrivals.sum())
        t_escape = _run_until(sim, adj.check_every_days,
                              lambda live: live >= adj.escape_cells or live == 0, horizon)
        arrived += int(sim.arrivals[:3].sum())
        if t_escape is not None and _live(sim) >= adj.escape_cells:
            escaped += 1
            first_detection = min(first_detection, t_escape + growth_days)
    recurrence_months = first_detection / DAYS_PER_MONTH
    return _outcomes(ts, patient, region, "rfs", recurrence_months, foci_escaped=escaped, cik_arrivals=arrived,
                     cik_expected_per_focus=expected)


def _advanced_course(ts: TrialScenario, patient: VirtualPatient, arm: ArmParams, seed: int) -> dict[str, Any]:
    adv = ts.advanced
    end_day = patient.censor_months * DAYS_PER_MONTH
    region = patient_region(ts, patient, arm, initial_cells=ts.tumour.initial_cells, duration_days=end_day,
                            record_every_hours=adv.check_every_days * 24.0)
    sim = Simulation(region, seed=seed, patient=patient.patient_id * FOCI_KEY_STRIDE, threads=1)
    factor = (1.0 + adv.progression_diameter_increase) ** len(ts.lattice.shape)
    nadir = [float(_live(sim))]

    def progressed(live: int) -> bool:
        nadir[0] = min(nadir[0], live)
        return live > 0 and live >= factor * max(nadir[0], 1.0)

    t_prog = _run_until(sim, adv.check_every_days, progressed, end_day)
    progression_months = math.inf if t_prog is None else t_prog / DAYS_PER_MONTH
    return _outcomes(ts, patient, region, "pfs", progression_months, nadir_cells=int(nadir[0]))


def _outcomes(ts: TrialScenario, patient: VirtualPatient, region: Any, endpoint: str, event_months: float,
              **extra: Any) -> dict[str, Any]:
    """RFS/PFS and OS from the disease event time, other-cause death and censoring."""
    censor = patient.censor_months
    death = min(patient.other_death_months, event_months + patient.post_event_months)
    first = min(event_months, death)
    row: dict[str, Any] = {
        f"{endpoint}_months": min(first, censor),
        f"{endpoint}_event": bool(first <= censor),
        "os_months": min(death, censor),
        "os_event": bool(death <= censor),
        f"{'recurrence' if endpoint == 'rfs' else 'progression'}_months":
            event_months if event_months <= censor else math.nan,
        "infusions_received": infusions_before(region, min(first, censor) * DAYS_PER_MONTH),
    }
    row.update(extra)
    return row


def simulate_patient(ts: TrialScenario, patient_id: int, seed: int | None = None) -> list[dict[str, Any]]:
    """One patient in every arm: a list of rows (one per arm) with outcomes and covariates."""
    seed = ts.scenario.seed if seed is None else seed
    patient = draw_patient(ts, patient_id, seed)
    course = _adjuvant_course if ts.trial.setting == "adjuvant" else _advanced_course
    rows = []
    for arm in ts.arms:
        row = {"patient_id": patient_id, "arm": arm.name}
        row.update(course(ts, patient, arm, seed))
        cov = patient.covariates()
        cov.pop("patient_id")
        for key in ("censor_months", "other_death_months", "post_event_months"):
            cov.pop(key)
        row.update(cov)
        row["primary_size_gt_5cm"] = patient.primary_size_cm > 5.0
        rows.append(row)
    return rows


def simulate_chunk(ts: TrialScenario, patient_ids: Iterable[int], seed: int) -> pd.DataFrame:
    """Rows of several patients (the unit of work sent to a worker)."""
    rows = [row for pid in patient_ids for row in simulate_patient(ts, pid, seed)]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- running a whole trial

@dataclass
class TrialRun:
    """Where a trial's results are, and the patient table once finished."""

    out: Path
    patients: pd.DataFrame
    summary: dict[str, Any]


def _fingerprint(ts: TrialScenario, seed: int, n_patients: int) -> str:
    text = json.dumps({"scenario": ts.model_dump(mode="json"), "seed": seed, "patients": n_patients,
                       "version": __version__}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _chunks(n_patients: int, size: int) -> list[list[int]]:
    return [list(range(start, min(start + size, n_patients))) for start in range(0, n_patients, size)]


def _write_chunk(chunk_dir: Path, index: int, frame: pd.DataFrame) -> None:
    path = chunk_dir / f"chunk_{index:05d}.parquet"
    tmp = path.with_suffix(".parquet.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def order_patients(frame: pd.DataFrame, arm_names: list[str]) -> pd.DataFrame:
    """Canonical row order: by patient, then arm in scenario order."""
    arm_rank = {name: i for i, name in enumerate(arm_names)}
    frame = frame.assign(_arm_rank=frame["arm"].map(arm_rank))
    frame = frame.sort_values(["patient_id", "_arm_rank"], kind="stable").drop(columns="_arm_rank")
    return frame.reset_index(drop=True)


def run_trial(ts: TrialScenario, out: Path, *, patients: int | None = None, seed: int | None = None,
              workers: int | None = None, scheduler: str | None = None, resume: bool = False,
              progress: bool | None = None) -> TrialRun:
    """Run a virtual trial and write ``out/patients.parquet``, ``summary.json`` and KM plots.

    Parameters
    ----------
    ts : TrialScenario
    out : Path
        Output directory; finished chunks are kept in ``out/.chunks`` until the end.
    patients : int, optional
        Overrides ``trial.patients``.
    seed : int, optional
        Overrides ``scenario.seed``.
    workers : int, optional
        Worker processes of the local Dask cluster (default: one per core). With
        1 and no scheduler, patients run in this process.
    scheduler : str, optional
        Address of an existing Dask scheduler (then ``workers`` is ignored).
    resume : bool
        Keep the finished chunks of an earlier, interrupted run of the same
        scenario, seed and patient count.
    progress : bool, optional
        Progress bar (default: when stderr is a terminal).
    """
    from tqdm.auto import tqdm

    from cikabm.survival import save_km_figures, trial_summary

    seed = ts.scenario.seed if seed is None else int(seed)
    n_patients = ts.trial.patients if patients is None else int(patients)
    out = Path(out)
    chunk_dir = out / CHUNK_DIR
    fingerprint = _fingerprint(ts, seed, n_patients)
    manifest_path = chunk_dir / "manifest.json"
    if chunk_dir.exists():
        old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        if not resume or old.get("fingerprint") != fingerprint:
            if resume:
                raise ValueError(f"--resume: {out} holds chunks of a different scenario, seed or patient "
                                 "count; rerun without --resume to start afresh")
            shutil.rmtree(chunk_dir)
    chunk_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(manifest_path, {"fingerprint": fingerprint, "patients": n_patients, "seed": seed})

    chunks = _chunks(n_patients, ts.trial.chunk_patients)
    todo = [i for i in range(len(chunks)) if not (chunk_dir / f"chunk_{i:05d}.parquet").exists()]
    done_patients = sum(len(chunks[i]) for i in range(len(chunks)) if i not in set(todo))
    bar = tqdm(total=n_patients, initial=done_patients, unit="patient", disable=None if progress is None
               else not progress, desc=ts.scenario.name)
    with bar:
        if todo and (scheduler is not None or (workers or 0) != 1):
            _run_dask(ts, seed, chunks, todo, chunk_dir, workers, scheduler, bar)
        else:
            for i in todo:
                _write_chunk(chunk_dir, i, simulate_chunk(ts, chunks[i], seed))
                bar.update(len(chunks[i]))

    frames = [pd.read_parquet(chunk_dir / f"chunk_{i:05d}.parquet") for i in range(len(chunks))]
    patients_df = order_patients(pd.concat(frames, ignore_index=True), [a.name for a in ts.arms])
    summary = {
        "scenario": ts.scenario.name,
        "seed": seed,
        "patients": n_patients,
        "setting": ts.trial.setting,
        "arms": [a.name for a in ts.arms],
        "reference_arm": ts.trial.reference_arm,
        "cikabm_version": __version__,
        "endpoints": trial_summary(patients_df, reference_arm=ts.trial.reference_arm),
        "scenario_parameters": ts.model_dump(mode="json"),
    }
    tmp = out / "patients.parquet.tmp"
    patients_df.to_parquet(tmp, index=False)
    tmp.replace(out / "patients.parquet")
    atomic_write_json(out / "summary.json", to_jsonable(summary))
    save_km_figures(patients_df, out)
    shutil.rmtree(chunk_dir)
    return TrialRun(out=out, patients=patients_df, summary=summary)


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A Dask client: on ``scheduler`` if given, else on a local cluster of ``workers`` processes."""
    from dask.distributed import Client, LocalCluster

    cluster = None
    if scheduler is None:
        n = workers or os.cpu_count() or 1
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _run_dask(ts: TrialScenario, seed: int, chunks: list[list[int]], todo: list[int], chunk_dir: Path,
              workers: int | None, scheduler: str | None, bar: Any) -> None:
    from dask.distributed import as_completed

    with dask_client(workers, scheduler) as client:
        futures = {client.submit(simulate_chunk, ts, chunks[i], seed, pure=False): i for i in todo}
        for future in as_completed(futures):
            i = futures[future]
            _write_chunk(chunk_dir, i, future.result())
            bar.update(len(chunks[i]))


class CohortRunner:
    """Runs whole cohorts (all arms of a trial scenario) on one Dask cluster, reused across calls.

    Used by calibration, which evaluates the same cohort many times.
    """

    def __init__(self, client: Any | None, seed: int | None = None):
        self.client = client
        self.seed = seed

    def __call__(self, ts: TrialScenario, n_patients: int) -> pd.DataFrame:
        seed = ts.scenario.seed if self.seed is None else self.seed
        chunks = _chunks(n_patients, ts.trial.chunk_patients)
        if self.client is None:
            frames = [simulate_chunk(ts, c, seed) for c in chunks]
        else:
            frames = self.client.gather([self.client.submit(simulate_chunk, ts, c, seed, pure=False)
                                         for c in chunks])
        return order_patients(pd.concat(frames, ignore_index=True), [a.name for a in ts.arms])

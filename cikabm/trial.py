"""Virtual trials: every virtual patient in every arm, run in parallel, resumable.

Adjuvant setting (docs/model.md, "Disease course after resection"): each patient
carries lesions of two sources (micrometastases of the primary, de novo tumours
of the diseased liver; :mod:`cikabm.lesions`), each followed on the lattice
while small and in the compartment model beyond, under the host's CTLs and the
arm's CIK supply; the clinical course (recurrence, curative retreatment,
cancer death; :mod:`cikabm.course`) is read off their daily counts. RFS ends
at the first recurrence or death, OS at death, cancer-specific survival at a
cancer death; all are censored at the end of follow-up.

Advanced setting: the whole-body burden in the compartment model, assessed
every ``advanced.check_every_days``; progression when it exceeds its nadir by
the volume of a ``progression_diameter_increase`` diameter increase (RECIST
+20 %). The lattice region is the sample where local killing is measured.

Work is split in chunks of patients; each finished chunk is written
atomically under ``OUT/.chunks`` so that a killed trial resumes without losing
or redoing finished patients, and the final files equal those of an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cikabm import __version__
from cikabm.course import clinical_course, outcome_row, progression_day
from cikabm.io import (
    CHUNK_DIR,
    CHUNK_MANIFEST,
    atomic_write_json,
    atomic_write_parquet,
    provenance,
    to_jsonable,
    writes_into_out,
)
from cikabm.kernels.compartment import EXTINCT
from cikabm.lesions import DE_NOVO, MICROMETASTASIS, Lesion, compartment_inputs, draw_lesions, lesion_course
from cikabm.patients import (
    FOCI_KEY_STRIDE,
    VirtualPatient,
    draw_patient,
    infusions_before,
    lesion_rng,
    patient_region,
)
from cikabm.simulation import Simulation
from cikabm.trial_params import DAYS_PER_MONTH, ArmParams, TrialScenario

#: What a trial writes into its output folder (names or fnmatch patterns): an existing folder holding
#: anything else is refused (``cikabm trial``), and a rerun replaces these whole.
TRIAL_OUTPUTS = ("patients.parquet", "summary.json", "km_*.png", CHUNK_DIR, "*.tmp", "*.tmp.png")


def _adjuvant_course(ts: TrialScenario, patient: VirtualPatient, arm: ArmParams, seed: int) -> dict[str, Any]:
    """Lesions of both sources, each across lattice and compartment, then the clinical course."""
    end_day = patient.censor_months * DAYS_PER_MONTH
    n_days = math.ceil(end_day)
    # Each lesion starts its lattice phase at its own size (below the hand-off size, which the lattice
    # holds); the region's initial size is a placeholder within that bound.
    region = patient_region(ts, patient, arm,
                            initial_cells=min(ts.adjuvant.focus_initial_cells, ts.adjuvant.handoff_cells),
                            duration_days=end_day, record_every_hours=ts.adjuvant.check_every_days * 24.0)
    lesions = draw_lesions(ts, lesion_rng(seed, patient.patient_id), primary_size_cm=patient.primary_size_cm,
                           mvi=patient.mvi, net_growth_per_day=patient.net_growth_per_day, horizon_days=end_day)
    inputs = compartment_inputs(ts, region, end_day, ts.outcomes.lethal_cells)
    courses = [lesion_course(ts, region, inputs, lesion, seed=seed, patient_id=patient.patient_id, n_days=n_days)
               for lesion in lesions]
    burdens = np.array([c.burden for c in courses]).reshape(len(courses), n_days + 1)
    other_death_day = patient.other_death_months * DAYS_PER_MONTH
    course = clinical_course(ts, burdens, [les.source for les in lesions], censor_day=end_day,
                             other_death_day=other_death_day, fitness_draws=patient.retreatment_fitness_draws)
    row = outcome_row(course, censor_day=end_day)
    kills = sum((c.kills for c in courses), np.zeros((4, 2)))
    first = min(row["rfs_months"], row["os_months"])
    row.update(
        infusions_received=infusions_before(region, first * DAYS_PER_MONTH),
        recurrence_source=course["recurrence_source"] if row["rfs_event"] and course["recurrence_day"]
        <= course["death_day"] else "",
        burden_at_detection=course["burden_at_detection"],
        lesions_at_detection=course["lesions_at_detection"],
        curative_retreatments=course["retreatments"],
        retreated_curatively_at_first=course["curative_at_first"],
        cause_of_death=course["cause_of_death"],
        lesions_micrometastasis=sum(les.source == MICROMETASTASIS for les in lesions),
        lesions_de_novo=sum(les.source == DE_NOVO for les in lesions),
        lesions_cleared=sum(c.status == EXTINCT for c in courses),  # died out: by chance or immune killing
        cik_kills=float(kills[:3].sum()),
        ctl_kills=float(kills[3].sum()),
        cik_expected_per_site=float(inputs.cik_per_step.sum()),
    )
    return row


def _advanced_course(ts: TrialScenario, patient: VirtualPatient, arm: ArmParams, seed: int) -> dict[str, Any]:
    """The whole-body burden in the compartment model, assessed RECIST-like; the lattice region is the
    sample where local killing is measured over ``advanced.sample_days``."""
    adv = ts.advanced
    end_day = patient.censor_months * DAYS_PER_MONTH
    n_days = math.ceil(end_day)
    region = patient_region(ts, patient, arm, initial_cells=ts.tumour.initial_cells, duration_days=end_day,
                            record_every_hours=24.0)
    sample_region = region.model_copy(update={"time": region.time.model_copy(
        update={"duration_days": min(adv.sample_days, end_day)})})
    sample = Simulation(sample_region, seed=seed, patient=patient.patient_id * FOCI_KEY_STRIDE,
                        threads=1).run(progress=False, n_snapshots=0).to_frame().iloc[-1]
    inputs = compartment_inputs(ts, region, end_day, ts.outcomes.lethal_cells)
    body = lesion_course(ts, region, inputs, Lesion(0, "body", 0.0, int(adv.body_burden_cells)), seed=seed,
                         patient_id=patient.patient_id, n_days=n_days)
    factor = (1.0 + adv.progression_diameter_increase) ** 3  # the body burden is a volume
    progression, nadir = progression_day(body.burden, adv.check_every_days, factor)
    lethal = np.flatnonzero(body.burden >= ts.outcomes.lethal_cells)
    cancer_death = float(lethal[0]) if lethal.size else math.inf
    death = min(cancer_death, patient.other_death_months * DAYS_PER_MONTH)
    first = min(progression, death)
    row: dict[str, Any] = {
        "pfs_months": min(first, end_day) / DAYS_PER_MONTH, "pfs_event": bool(first <= end_day),
        "os_months": min(death, end_day) / DAYS_PER_MONTH, "os_event": bool(death <= end_day),
        "css_months": min(death, end_day) / DAYS_PER_MONTH,
        "css_event": bool(cancer_death <= end_day and cancer_death <= death),
        "progression_months": progression / DAYS_PER_MONTH if progression <= end_day else math.nan,
        "infusions_received": infusions_before(region, min(first, end_day)),
        "cause_of_death": "" if death > end_day else ("cancer" if death == cancer_death else "other"),
        "nadir_cells": nadir, "body_cells_end": float(body.burden[min(n_days, int(min(death, end_day)))]),
        "cik_kills": float(body.kills[:3].sum()), "ctl_kills": float(body.kills[3].sum()),
        "sample_cells_start": ts.tumour.initial_cells, "sample_cells_end": int(sample["tumour_total"]),
        "sample_cik_kills": int(sample[["kills_tnk", "kills_tcell", "kills_nk"]].sum()),
        "sample_ctl_kills": int(sample["kills_ctl"]),
    }
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
        row.update(cov)
        row["primary_size_gt_5cm"] = patient.primary_size_cm > 5.0
        rows.append(row)
    return rows


def simulate_chunk(ts: TrialScenario, patient_ids: Iterable[int], seed: int,
                   on_patient: Callable[[], None] | None = None) -> pd.DataFrame:
    """Rows of several patients (the unit of work sent to a worker); ``on_patient()`` after each one."""
    rows: list[dict[str, Any]] = []
    for pid in patient_ids:
        rows.extend(simulate_patient(ts, pid, seed))
        if on_patient is not None:
            on_patient()
    return pd.DataFrame(rows)


#: The Dask event topic on which workers report each finished patient (for the progress bar).
PATIENT_DONE_TOPIC = "cikabm-patient-done"


def _report_patient_done(topic: str, chunk: int) -> None:
    """On a Dask worker: tell the client, on its ``topic``, that a patient of ``chunk`` is done."""
    from dask.distributed import get_worker

    get_worker().log_event(topic, chunk)


# --------------------------------------------------------------------------- compiling once

#: Seconds a kernel preparation may take before :func:`prepare_kernels` says it is compiling.
COMPILE_NOTICE_AFTER_S = 2.0


def prepare_kernels(ts: TrialScenario, seed: int, report: Callable[[str], None] | None = None) -> float:
    """Compile (or load from Numba's on-disk cache) every kernel a trial uses, in this process.

    A short lattice run of patient 0's region and one compartment lesion reach
    every kernel; run before the Dask workers start, it leaves them the cache
    to load instead of each compiling on its own. When it takes longer than
    :data:`COMPILE_NOTICE_AFTER_S` (a first run: nothing cached), ``report``
    (default: standard error) says so, and how long it took once done.

    Returns
    -------
    float
        Seconds it took.
    """
    import sys
    import threading
    import time

    say = report or (lambda text: print(text, file=sys.stderr, flush=True))
    told = threading.Event()

    def notice() -> None:
        told.set()
        say("compiling the Numba kernels (first run after installing or updating cikabm; about 1-2 minutes, "
            "then cached on disk)...")

    timer = threading.Timer(COMPILE_NOTICE_AFTER_S, notice)
    timer.daemon = True
    start = time.perf_counter()
    timer.start()
    try:
        patient = draw_patient(ts, 0, seed)
        region = patient_region(ts, patient, ts.arms[-1], initial_cells=max(ts.tumour.initial_cells, 8),
                                duration_days=1.0, record_every_hours=24.0)
        sim = Simulation(region.model_copy(update={"effectors": region.effectors.model_copy(
            update={"capacity": 1000})}), seed=seed, patient=0, threads=1)
        sim.add_effectors(0, 4)
        sim.advance(sim.disc.n_steps)
        inputs = compartment_inputs(ts, region, 2.0, ts.outcomes.lethal_cells)
        lesion_course(ts, region, inputs, Lesion(0, "warm-up", 0.0, 1000), seed=seed, patient_id=0, n_days=2)
    finally:
        timer.cancel()
    took = time.perf_counter() - start
    if told.is_set():
        say(f"kernels compiled in {took:.0f} s")
    return took


# --------------------------------------------------------------------------- running a whole trial

#: Phases of :attr:`TrialRun.seconds`, in the order they run.
TRIAL_PHASES = ("compile", "simulation", "summary", "files", "figures")

#: With the default ``workers``, a trial runs its patients in this process and starts a local Dask
#: cluster for the rest only once that rest is projected to take longer than this many seconds here:
#: starting the cluster and its workers' load of the kernels costs a few seconds (measured: 2 workers on
#: 2 cores made the 230-patient Lee 2015 trial slower than 1 process, ``benchmarks/trial_throughput.py``).
LOCAL_CLUSTER_AFTER_S = 30.0


@dataclass
class TrialRun:
    """Where a trial's results are, the patient table once finished, and where the time went.

    ``seconds`` holds the wall seconds of each of :data:`TRIAL_PHASES` (``simulation`` includes
    starting a Dask cluster, when one is started) and ``workers``: ``"this process"``, the number
    of local worker processes, or ``"scheduler"``.
    """

    out: Path
    patients: pd.DataFrame
    summary: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    workers: int | str = "this process"


def _fingerprint(ts: TrialScenario, seed: int, n_patients: int) -> str:
    text = json.dumps({"scenario": ts.model_dump(mode="json"), "seed": seed, "patients": n_patients,
                       "version": __version__, "code": code_fingerprint()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 of the code that makes a trial's rows: every source file of the package, NumPy and Numba.

    A version string alone missed a code change made without a version change; resumed chunks and Dask
    workers must run this same code.
    """
    import numba

    root = Path(__file__).resolve().parent
    digest = hashlib.sha256(f"numpy {np.__version__} numba {numba.__version__}".encode())
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _chunk_path(chunk_dir: Path, index: int) -> Path:
    return chunk_dir / f"chunk_{index:05d}.parquet"


def _trusted_chunks(chunk_dir: Path, checksums: dict[str, str], n_chunks: int) -> dict[int, str]:
    """``{index: checksum}`` of the chunk files whose content is what this trial wrote; any other is
    named and removed."""
    import sys

    trusted = {}
    for i in range(n_chunks):
        path = _chunk_path(chunk_dir, i)
        if not path.exists():
            continue
        checksum = _file_sha256(path)
        if checksums.get(path.name) == checksum:
            trusted[i] = checksum
            continue
        print(f"--resume: {path} is not the chunk this trial wrote (corrupted, truncated or copied from "
              "elsewhere): recomputing it", file=sys.stderr, flush=True)
        path.unlink()
    return trusted


def _chunks(n_patients: int, size: int) -> list[list[int]]:
    return [list(range(start, min(start + size, n_patients))) for start in range(0, n_patients, size)]


def _write_chunk(chunk_dir: Path, index: int, frame: pd.DataFrame, manifest: dict[str, Any]) -> None:
    """Write chunk ``index`` atomically and record its checksum in the manifest (what ``--resume`` trusts)."""
    path = _chunk_path(chunk_dir, index)
    atomic_write_parquet(frame, path)
    manifest["chunks"][path.name] = _file_sha256(path)
    atomic_write_json(chunk_dir / CHUNK_MANIFEST, manifest)


def order_patients(frame: pd.DataFrame, arm_names: list[str]) -> pd.DataFrame:
    """Canonical row order: by patient, then arm in scenario order."""
    arm_rank = {name: i for i, name in enumerate(arm_names)}
    frame = frame.assign(_arm_rank=frame["arm"].map(arm_rank))
    frame = frame.sort_values(["patient_id", "_arm_rank"], kind="stable").drop(columns="_arm_rank")
    return frame.reset_index(drop=True)


@writes_into_out
def run_trial(ts: TrialScenario, out: Path, *, patients: int | None = None, seed: int | None = None,
              workers: int | None = None, scheduler: str | None = None, resume: bool = False,
              progress: bool | None = None, client: Any | None = None, threads: int | None = None) -> TrialRun:
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
        Worker processes of the local Dask cluster; with 1 (and no scheduler), patients run in this
        process, one at a time. Default: in this process, ``threads`` patients at a time, switching
        to a local cluster of one worker per core for the rest of the trial once that rest is
        projected to take more than :data:`LOCAL_CLUSTER_AFTER_S` here.
    scheduler : str, optional
        Address of an existing Dask scheduler (then ``workers`` is ignored).
    resume : bool
        Keep the finished chunks of an earlier, interrupted run of the same
        scenario, seed and patient count.
    progress : bool, optional
        Progress bar (default: when stderr is a terminal).
    client : dask.distributed.Client, optional
        A client to run on (then ``workers`` and ``scheduler`` are ignored):
        replicate trials share one cluster.
    threads : int, optional
        Chunks of patients simulated at once when they run in this process with the default
        ``workers`` (default: one per CPU core). Results do not depend on it.
    """
    from tqdm.auto import tqdm

    seed = ts.scenario.seed if seed is None else int(seed)
    n_patients = ts.trial.patients if patients is None else int(patients)
    out = Path(out)
    if scheduler is not None and client is None:
        # Connect first, so that an unreachable scheduler (or workers running other code) is said at once,
        # before any compile or file; the trial then runs on this one client.
        with dask_client(scheduler=scheduler) as connected:
            return run_trial(ts, out, patients=patients, seed=seed, resume=resume, progress=progress,
                             client=connected)
    chunk_dir = out / CHUNK_DIR
    fingerprint = _fingerprint(ts, seed, n_patients)
    manifest_path = chunk_dir / CHUNK_MANIFEST
    old: dict[str, Any] = {}
    if chunk_dir.exists():
        old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        if not resume or old.get("fingerprint") != fingerprint:
            if resume:
                raise ValueError(f"--resume: {out} holds chunks of a different scenario, seed, patient count "
                                 "or cikabm code (a source file changed since); rerun without --resume to "
                                 "start afresh")
            shutil.rmtree(chunk_dir)
            old = {}
    chunk_dir.mkdir(parents=True, exist_ok=True)
    chunks = _chunks(n_patients, ts.trial.chunk_patients)
    trusted = _trusted_chunks(chunk_dir, old.get("chunks", {}), len(chunks))
    manifest = {"fingerprint": fingerprint, "patients": n_patients, "seed": seed,
                "chunks": {_chunk_path(chunk_dir, i).name: checksum for i, checksum in trusted.items()}}
    atomic_write_json(manifest_path, manifest)
    todo = [i for i in range(len(chunks)) if i not in trusted]
    done_patients = sum(len(chunks[i]) for i in trusted)
    seconds = dict.fromkeys(TRIAL_PHASES, 0.0)
    clock = time.perf_counter()
    if todo:
        prepare_kernels(ts, seed)  # once, here: workers then load the cache, and the ETA leaves it out
    clock = _lap(seconds, "compile", clock)
    ran_on: int | str = "this process"
    bar = tqdm(total=n_patients, initial=done_patients, unit="patient", disable=None if progress is None
               else not progress, desc=ts.scenario.name)
    with bar:
        if todo and client is not None:
            _submit_chunks(client, ts, seed, chunks, todo, chunk_dir, manifest, bar)
            ran_on = "scheduler"
        elif todo and workers is not None and workers > 1:
            _run_dask(ts, seed, chunks, todo, chunk_dir, manifest, workers, bar)
            ran_on = workers
        elif todo:
            if workers == 1:  # one patient at a time
                threads = 1
            elif threads is None:
                threads = os.cpu_count() or 1
            ran_on = _run_here(ts, seed, chunks, todo, chunk_dir, manifest, bar, switch=workers is None,
                               threads=threads)
    clock = _lap(seconds, "simulation", clock)

    # (imported only now: lifelines and SciPy take a second, which the compile notice need not wait for)
    from cikabm.survival import save_km_figures, trial_summary

    frames = [pd.read_parquet(_chunk_path(chunk_dir, i)) for i in range(len(chunks))]
    patients_df = order_patients(pd.concat(frames, ignore_index=True), [a.name for a in ts.arms])
    summary = {
        "scenario": ts.scenario.name,
        "seed": seed,
        "patients": n_patients,
        "setting": ts.trial.setting,
        "arms": [a.name for a in ts.arms],
        "reference_arm": ts.trial.reference_arm,
        **provenance(),
        "endpoints": trial_summary(patients_df, reference_arm=ts.trial.reference_arm,
                                   follow_up_months=ts.trial.follow_up_months),
        "scenario_parameters": ts.model_dump(mode="json"),
    }
    if ts.trial.setting == "advanced":
        summary["never_progressed"] = {  # no progression and no death within follow-up
            a.name: int((~patients_df.loc[patients_df["arm"] == a.name, "pfs_event"]).sum()) for a in ts.arms}
    if ts.trial.setting == "adjuvant":
        from cikabm.mechanism import mechanism_breakdown

        ref = ts.trial.reference_arm
        summary["mechanism"] = {f"{a.name}_vs_{ref}": mechanism_breakdown(patients_df, a.name, ref)
                                for a in ts.arms if a.name != ref}
    clock = _lap(seconds, "summary", clock)
    atomic_write_parquet(patients_df, out / "patients.parquet")
    atomic_write_json(out / "summary.json", to_jsonable(summary))
    clock = _lap(seconds, "files", clock)
    written = {Path(p).name for p in save_km_figures(patients_df, out)}
    for stale in out.glob("km_*.png"):  # an earlier run's figure of an endpoint this one lacks
        if stale.name not in written:
            stale.unlink()
    shutil.rmtree(chunk_dir)
    _lap(seconds, "figures", clock)
    return TrialRun(out=out, patients=patients_df, summary=summary, seconds=seconds, workers=ran_on)


def _lap(seconds: dict[str, float], phase: str, since: float) -> float:
    """Add the wall seconds since ``since`` to ``seconds[phase]``; returns now."""
    now = time.perf_counter()
    seconds[phase] += now - since
    return now


def _run_here(ts: TrialScenario, seed: int, chunks: list[list[int]], todo: list[int], chunk_dir: Path,
              manifest: dict[str, Any], bar: Any, *, switch: bool, threads: int) -> int | str:
    """Run the chunks ``todo`` in this process, ``threads`` chunks at a time; with ``switch``, hand the
    chunks not yet started to a local cluster of one worker per core once they are projected to take
    more than :data:`LOCAL_CLUSTER_AFTER_S` here. Returns where they ran (:attr:`TrialRun.workers`).

    The lattice and compartment kernels release the GIL, so threads simulate patients side by side
    with no process to start; results do not depend on the thread count (counter-based draws per
    patient), and only this thread writes chunks and the manifest.
    """
    import threading
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    start = time.perf_counter()
    cores = os.cpu_count() or 1
    done = 0  # patients simulated here
    waiting = list(todo)
    stop = threading.Event()  # set when this thread stops (an error, Ctrl+C): chunks end at their next patient

    def patient_done() -> None:
        bar.update(1)
        if stop.is_set():
            raise _Stopped

    threads = max(1, threads)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cikabm-trial") as pool:
        running: dict[Any, int] = {}
        try:
            while waiting or running:
                while waiting and len(running) < threads:
                    i = waiting.pop(0)
                    running[pool.submit(simulate_chunk, ts, chunks[i], seed, on_patient=patient_done)] = i
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = running.pop(future)
                    _write_chunk(chunk_dir, i, future.result(), manifest)
                    done += len(chunks[i])
                if switch and waiting and cores > 1:
                    per_patient = (time.perf_counter() - start) / done  # wall seconds, threads included
                    if per_patient * sum(len(chunks[j]) for j in waiting) > LOCAL_CLUSTER_AFTER_S:
                        for future in wait(running).done:
                            _write_chunk(chunk_dir, running[future], future.result(), manifest)
                        _run_dask(ts, seed, chunks, waiting, chunk_dir, manifest, cores, bar)
                        return cores
        except BaseException:
            stop.set()
            raise
    return "this process"


class _Stopped(Exception):
    """Ends a chunk running in a thread of :func:`_run_here` once the caller has stopped."""


#: Seconds to wait for a Dask scheduler given by address before saying it cannot be reached.
SCHEDULER_TIMEOUT_S = 10


def connect_scheduler(scheduler: str) -> Any:
    """A Dask client on the scheduler at ``scheduler``, or a ValueError that names it within seconds."""
    from dask.distributed import Client

    try:
        client = Client(scheduler, timeout=SCHEDULER_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as err:
        raise ValueError(f"--scheduler {scheduler}: cannot reach a Dask scheduler there within "
                         f"{SCHEDULER_TIMEOUT_S} s ({err}); start one (dask scheduler) or leave --scheduler out "
                         "for a local cluster") from None
    try:
        check_workers(client, scheduler)
    except BaseException:
        client.close()
        raise
    return client


def check_workers(client: Any, scheduler: str, expected: str | None = None) -> None:
    """Refuse a cluster with no worker, or with a worker that cannot run or runs other cikabm code.

    Each worker's :func:`code_fingerprint` must equal ``expected`` (default: this process's): rows made by
    other code would be mixed into the trial without a word.
    """
    expected = code_fingerprint() if expected is None else expected
    try:
        theirs = client.run(code_fingerprint)
    except Exception as err:  # the worker's own error, e.g. it cannot import cikabm
        raise ValueError(f"--scheduler {scheduler}: a Dask worker cannot run cikabm ({type(err).__name__}: {err}); "
                         "install this cikabm on every worker") from None
    if not theirs:
        raise ValueError(f"--scheduler {scheduler}: the Dask cluster has no worker; start at least one "
                         "(dask worker ADDRESS)")
    differ = sorted(address for address, fingerprint in theirs.items() if fingerprint != expected)
    if differ:
        raise ValueError(f"--scheduler {scheduler}: Dask worker(s) {', '.join(differ)} run other cikabm code than "
                         "this process (another version or changed source files); install the same cikabm on "
                         "every worker")


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A Dask client: on ``scheduler`` if given, else on a local cluster of ``workers`` processes."""
    from dask.distributed import Client, LocalCluster

    cluster = None
    if scheduler is None:
        n = workers or os.cpu_count() or 1
        # No dashboard, and the scheduler's bare HTTP server (health and metrics routes, started even
        # without a dashboard) on a free local port: with its default 8787, a second cluster on the
        # machine (two trials at once) printed "Port 8787 is already in use".
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                               scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                               silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        client = connect_scheduler(scheduler)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _run_dask(ts: TrialScenario, seed: int, chunks: list[list[int]], todo: list[int], chunk_dir: Path,
              manifest: dict[str, Any], workers: int | None, bar: Any) -> None:
    """Run the chunks ``todo`` on a local cluster of ``workers`` processes (started after the compile)."""
    with dask_client(workers) as client:
        _submit_chunks(client, ts, seed, chunks, todo, chunk_dir, manifest, bar)


def _submit_chunks(client: Any, ts: TrialScenario, seed: int, chunks: list[list[int]], todo: list[int],
                   chunk_dir: Path, manifest: dict[str, Any], bar: Any) -> None:
    import threading
    import uuid

    from dask.distributed import as_completed

    # The bar moves per patient: workers report each one as an event; when a chunk is written, the
    # patients whose events have not arrived (yet) are counted then, and late events are ignored.
    counted = dict.fromkeys(todo, 0)
    lock = threading.Lock()

    def advance(chunk: int, patients: int) -> None:
        with lock:
            step = min(patients, len(chunks[chunk]) - counted[chunk])
            counted[chunk] += step
        if step > 0:
            bar.update(step)

    topic = f"{PATIENT_DONE_TOPIC}-{uuid.uuid4().hex}"  # this run's own: a shared cluster may run others
    client.subscribe_topic(topic, lambda event: advance(int(event[1]), 1))
    try:
        futures = {client.submit(simulate_chunk, ts, chunks[i], seed, functools.partial(_report_patient_done, topic, i),
                                 pure=False): i for i in todo}
        for future in as_completed(futures):
            i = futures[future]
            _write_chunk(chunk_dir, i, future.result(), manifest)
            advance(i, len(chunks[i]))
    finally:
        client.unsubscribe_topic(topic)


class CohortRunner:
    """Runs whole cohorts (all arms of a trial scenario) on one Dask cluster, reused across calls.

    Used by calibration, which evaluates cohorts of several seeds many times.
    """

    def __init__(self, client: Any | None):
        self.client = client

    def __call__(self, ts: TrialScenario, n_patients: int, seed: int) -> pd.DataFrame:
        chunks = _chunks(n_patients, ts.trial.chunk_patients)
        if self.client is None:
            frames = [simulate_chunk(ts, c, seed) for c in chunks]
        else:
            frames = self.client.gather([self.client.submit(simulate_chunk, ts, c, seed, pure=False)
                                         for c in chunks])
        return order_patients(pd.concat(frames, ignore_index=True), [a.name for a in ts.arms])

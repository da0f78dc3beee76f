"""Virtual trials: common random numbers, workers, resume, intention to treat."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import cikabm.trial as trial_module
from cikabm.patients import draw_patient
from cikabm.scenario import ScenarioError, scenario_from_dict
from cikabm.trial import run_trial, simulate_patient
from cikabm.trial_params import TrialScenario

SMALL = {
    "scenario": {"name": "small_trial", "seed": 5},
    "trial": {"setting": "adjuvant", "patients": 12, "follow_up_months": 18.0, "chunk_patients": 4},
    "arms": [{"name": "control", "schedule": "none"},
             {"name": "cik", "schedule": "lee2015", "start_day": 7.0}],
    "lattice": {"shape": [24, 24]},
    "time": {"dt_minutes": 20.0},
    "tumour": {"death_rate_per_day": 0.01},
    "homing": {"ctl_per_site_per_day": 2e-4, "cik_per_site_per_day": 5e-12},
    "cohort": {"doubling_time_median_days": 30.0},
    "adjuvant": {"foci_mean_at_5cm": 2.5, "handoff_cells": 60, "lattice_max_days": 20.0},
}


def small(**over) -> TrialScenario:
    data = {**SMALL, **over}
    return scenario_from_dict(data, model=TrialScenario)


def test_same_patient_same_covariates_in_every_arm():
    rows = simulate_patient(small(), 3)
    assert [r["arm"] for r in rows] == ["control", "cik"]
    for key in ("doubling_time_days", "primary_size_cm", "mvi", "micrometastases_expected", "ligand_mean",
                "homing_scale", "lesions_micrometastasis", "lesions_de_novo"):
        assert rows[0][key] == rows[1][key]
    assert rows[0]["infusions_received"] == 0
    assert rows[1]["infusions_received"] > 0


def test_patients_are_keyed_not_sequential():
    ts = small()
    assert draw_patient(ts, 7) == draw_patient(ts, 7)
    assert draw_patient(ts, 7) != draw_patient(ts, 8)
    assert draw_patient(ts, 7, seed=6) != draw_patient(ts, 7)


def test_manufacturing_failure_means_no_infusion_but_stays_in_arm():
    ts = small(cohort={"doubling_time_median_days": 30.0, "manufacturing_failure": 1.0})
    rows = simulate_patient(ts, 0)
    assert [r["arm"] for r in rows] == ["control", "cik"]
    assert all(r["manufacturing_failed"] for r in rows)
    assert rows[1]["infusions_received"] == 0
    # no CIK at all: both arms are the same patient with the same tumour
    assert rows[0]["rfs_months"] == rows[1]["rfs_months"]


def test_endpoints_are_consistent():
    frame = pd.DataFrame([r for pid in range(12) for r in simulate_patient(small(), pid)])
    assert (frame["rfs_months"] <= frame["os_months"] + 1e-12).all()
    assert (frame["rfs_months"] <= 18.0).all() and (frame["os_months"] <= 18.0).all()
    assert (frame["rfs_months"] > 0).all()
    # an OS event implies an RFS event (death ends RFS too); a cancer death is a death after a recurrence
    assert (~frame["os_event"] | frame["rfs_event"]).all()
    assert (~frame["css_event"] | frame["os_event"]).all()
    assert (frame.loc[frame["css_event"], "cause_of_death"] == "cancer").all()
    assert (frame.loc[frame["css_event"], "recurrence_source"] != "").all()
    assert set(frame["recurrence_source"]) <= {"", "micrometastasis", "de_novo"}
    recurred = frame["recurrence_source"] != ""
    assert (frame.loc[recurred, "burden_at_detection"] >= 1e9).all()


def test_workers_do_not_change_results(tmp_path):
    ts = small()
    one = run_trial(ts, tmp_path / "w1", workers=1, progress=False).patients
    two = run_trial(ts, tmp_path / "w2", workers=2, progress=False).patients
    pd.testing.assert_frame_equal(one, two)
    assert pd.read_parquet(tmp_path / "w1" / "patients.parquet").equals(
        pd.read_parquet(tmp_path / "w2" / "patients.parquet"))
    assert len(one) == 12 * 2
    assert not (tmp_path / "w1" / ".chunks").exists()


def test_threads_do_not_change_results(tmp_path, monkeypatch):
    """In this process, chunks run in threads (the kernels release the GIL): the files equal those of
    one patient at a time, and the chunks ran in threads other than the caller's."""
    import threading

    ran_in: set[str] = set()
    real = trial_module.simulate_chunk

    def recording(*args, **kwargs):
        ran_in.add(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(trial_module, "simulate_chunk", recording)
    one = run_trial(small(), tmp_path / "t1", workers=1, progress=False)
    assert ran_in == {"cikabm-trial_0"}
    ran_in.clear()
    three = run_trial(small(), tmp_path / "t3", threads=3, progress=False)
    assert three.workers == "this process" and len(ran_in) == 3  # (3 chunks, started together)
    pd.testing.assert_frame_equal(one.patients, three.patients)
    assert pd.read_parquet(tmp_path / "t1" / "patients.parquet").equals(
        pd.read_parquet(tmp_path / "t3" / "patients.parquet"))
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("t1", "t3")]
    assert summaries[0]["endpoints"] == summaries[1]["endpoints"]


def test_the_default_runs_a_short_trial_in_this_process(tmp_path, monkeypatch):
    """Starting a local cluster costs seconds: a trial projected to be short never starts one."""
    def no_cluster(*args, **kwargs):
        raise AssertionError("a local Dask cluster was started for a short trial")

    monkeypatch.setattr(trial_module, "dask_client", no_cluster)
    run = run_trial(small(), tmp_path / "t", progress=False)
    assert run.workers == "this process"
    assert set(run.seconds) == set(trial_module.TRIAL_PHASES)
    assert all(s >= 0 for s in run.seconds.values()) and run.seconds["simulation"] > 0


def test_the_default_hands_a_long_rest_to_a_local_cluster(tmp_path, monkeypatch):
    """Once the rest is projected to take longer than LOCAL_CLUSTER_AFTER_S here, the default starts a
    local cluster for it after the first chunk; the results equal those of one process."""
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(trial_module, "LOCAL_CLUSTER_AFTER_S", 0.0)
    started: list[object] = []
    real_client = trial_module.dask_client

    def client(*args, **kwargs):
        started.append(args or kwargs)
        return real_client(*args, **kwargs)

    monkeypatch.setattr(trial_module, "dask_client", client)
    switched = run_trial(small(), tmp_path / "auto", progress=False)
    assert len(started) == 1 and switched.workers == 2
    one = run_trial(small(), tmp_path / "one", workers=1, progress=False)
    assert one.workers == "this process" and len(started) == 1
    pd.testing.assert_frame_equal(switched.patients, one.patients)


def test_the_help_and_readme_state_the_switch_time():
    from cikabm.cli import build_parser

    text = " ".join(build_parser()._subparsers._group_actions[0].choices["trial"].format_help().split())
    assert f"over {trial_module.LOCAL_CLUSTER_AFTER_S:g} s" in text
    from pathlib import Path

    readme = " ".join((Path(__file__).resolve().parent.parent / "README.md").read_text().split())
    assert f"more than {trial_module.LOCAL_CLUSTER_AFTER_S:g} s there (`LOCAL_CLUSTER_AFTER_S`" in readme


def test_killed_trial_resumes_to_the_same_result(tmp_path, monkeypatch):
    ts = small()
    straight = run_trial(ts, tmp_path / "straight", workers=1, progress=False)

    real = trial_module.simulate_chunk
    calls: list[list[int]] = []

    def dies_on_third_chunk(ts_, patient_ids, seed, on_patient=None):
        ids = list(patient_ids)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        calls.append(ids)
        return real(ts_, ids, seed, on_patient)

    monkeypatch.setattr(trial_module, "simulate_chunk", dies_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        run_trial(ts, tmp_path / "resumed", workers=1, progress=False)
    assert len(list((tmp_path / "resumed" / ".chunks").glob("chunk_*.parquet"))) == 2

    redone: list[list[int]] = []

    def counting(ts_, patient_ids, seed, on_patient=None):
        redone.append(list(patient_ids))
        return real(ts_, patient_ids, seed, on_patient)

    monkeypatch.setattr(trial_module, "simulate_chunk", counting)
    resumed = run_trial(ts, tmp_path / "resumed", workers=1, resume=True, progress=False)
    assert redone == [[8, 9, 10, 11]]  # only the unfinished chunk
    pd.testing.assert_frame_equal(straight.patients, resumed.patients)
    assert (tmp_path / "straight" / "summary.json").read_text() == (tmp_path / "resumed" / "summary.json").read_text()


def test_resume_refuses_chunks_of_another_scenario(tmp_path, monkeypatch):
    ts = small()
    monkeypatch.setattr(trial_module, "simulate_chunk",
                        lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run_trial(ts, tmp_path / "t", workers=1, progress=False)
    with pytest.raises(ValueError, match="different scenario"):
        run_trial(small(scenario={"name": "small_trial", "seed": 6}), tmp_path / "t", workers=1,
                  resume=True, progress=False)


@pytest.mark.parametrize("arms, message", [
    ([{"name": "cik", "schedule": "lee2015"}], "reference_arm"),
    ([{"name": "control"}, {"name": "control"}], "unique"),
    ([], "at least one arm"),
])
def test_bad_arms_are_named(arms, message):
    with pytest.raises(ScenarioError, match=message):
        small(arms=arms)


def test_cik_supply_is_counted_and_scales_with_homing():
    """Each row gives the CIK cells expected per lattice site over the follow-up (homing x blood level), 0
    in the control arm and after a failed manufacture, doubling with the homing rate."""
    rows = [r for pid in range(6) for r in simulate_patient(small(), pid)]
    for r in rows:
        if r["arm"] == "control" or r["manufacturing_failed"]:
            assert r["cik_expected_per_site"] == 0.0 and r["cik_kills"] == 0.0
    cik = [r for r in rows if r["arm"] == "cik" and not r["manufacturing_failed"]]
    assert cik and all(r["cik_expected_per_site"] > 0 for r in cik)
    doubled = small(homing={"ctl_per_site_per_day": 2e-4, "cik_per_site_per_day": 1e-11})
    again = {r["patient_id"]: r for pid in range(6) for r in simulate_patient(doubled, pid) if r["arm"] == "cik"}
    for r in cik:
        assert again[r["patient_id"]]["cik_expected_per_site"] == pytest.approx(2 * r["cik_expected_per_site"])


def test_kernels_are_prepared_once_before_the_workers_start(tmp_path, monkeypatch):
    """run_trial compiles (or loads) the kernels in its own process before it starts the Dask workers,
    so that they load the cache rather than each compiling."""
    calls: list[str] = []
    real_prepare, real_client = trial_module.prepare_kernels, trial_module.dask_client

    def prepare(*args, **kwargs):
        calls.append("prepare")
        return real_prepare(*args, **kwargs)

    def client(*args, **kwargs):
        calls.append("dask")
        return real_client(*args, **kwargs)

    monkeypatch.setattr(trial_module, "prepare_kernels", prepare)
    monkeypatch.setattr(trial_module, "dask_client", client)
    run_trial(small(), tmp_path / "t", workers=2, progress=False)
    assert calls == ["prepare", "dask"]


def test_a_slow_kernel_preparation_says_it_is_compiling(monkeypatch):
    messages: list[str] = []
    monkeypatch.setattr(trial_module, "COMPILE_NOTICE_AFTER_S", 0.0)
    took = trial_module.prepare_kernels(small(), 5, report=messages.append)
    assert took >= 0 and messages[0].startswith("compiling the Numba kernels")
    assert messages[-1].startswith("kernels compiled in")
    quiet: list[str] = []
    monkeypatch.setattr(trial_module, "COMPILE_NOTICE_AFTER_S", 60.0)
    trial_module.prepare_kernels(small(), 5, report=quiet.append)  # cached now: no message
    assert quiet == []


def test_a_second_local_cluster_prints_no_port_warning(capfd: pytest.CaptureFixture[str]) -> None:
    """With port 8787 taken (another trial's cluster, here a socket), the local cluster starts without
    "Port 8787 is already in use" (issue 14: two concurrent trials printed it)."""
    import socket
    import warnings

    blocker: socket.socket | None = socket.socket()
    try:
        blocker.bind(("127.0.0.1", 8787))
        blocker.listen()
    except OSError:  # already taken by something else: the case under test all the same
        blocker.close()
        blocker = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with trial_module.dask_client(workers=1) as client:
                assert client.submit(sum, [1, 2]).result() == 3
    finally:
        if blocker is not None:
            blocker.close()
    said = [str(w.message) for w in caught] + [capfd.readouterr().err]
    assert not any("already in use" in text for text in said), said


class _RecordingBar:
    """Stands for the tqdm bar (a context manager): records each update."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.updates: list[int] = []

    def __enter__(self) -> _RecordingBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        self.updates.append(n)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_progress_bar_moves_per_patient(tmp_path, monkeypatch, workers):
    """In this process and on Dask workers alike, each finished patient moves the bar, and the total is exact."""
    import tqdm.auto

    bars: list[_RecordingBar] = []
    monkeypatch.setattr(tqdm.auto, "tqdm", lambda *a, **k: bars.append(_RecordingBar()) or bars[-1])
    run_trial(small(), tmp_path / "out", workers=workers, progress=False)
    updates = bars[0].updates
    assert sum(updates) == 12
    assert max(updates) <= 4  # never more than a chunk at once
    assert updates.count(1) >= (12 if workers == 1 else 1)  # patient by patient (Dask: events, at least one)

"""Advanced setting: one tumour region followed to RECIST-like progression (PFS), and OS."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cikabm.kernels.core import LIVE
from cikabm.patients import FOCI_KEY_STRIDE, draw_patient, patient_region
from cikabm.scenario import scenario_from_dict
from cikabm.simulation import Simulation
from cikabm.trial import run_trial, simulate_patient
from cikabm.trial_params import DAYS_PER_MONTH, TrialScenario

TINY = {
    "scenario": {"name": "tiny_advanced", "seed": 7},
    "trial": {"setting": "advanced", "patients": 4, "follow_up_months": 3.0, "chunk_patients": 2},
    "arms": [{"name": "control", "schedule": "none"},
             {"name": "cik", "schedule": "choi2018", "start_day": 0.0}],
    "lattice": {"shape": [24, 24]},
    "time": {"dt_minutes": 30.0},
    "tumour": {"initial_cells": 40, "death_rate_per_day": 0.05, "ligand_mean": 0.3, "mhc_mean": 0.3},
    "homing": {"ctl_per_site_per_day": 0.0, "cik_per_site_per_day": 5e-14},
    "cohort": {"doubling_time_median_days": 12.0, "doubling_time_sd_log": 0.5, "manufacturing_failure": 0.0},
    "advanced": {"progression_diameter_increase": 0.2, "check_every_days": 1.0},
    "outcomes": {"post_recurrence_survival_median_months": 6.0, "other_cause_death_per_year": 0.0},
}


def tiny(**over) -> TrialScenario:
    return scenario_from_dict({**TINY, **over}, model=TrialScenario)


def burden_trace(ts: TrialScenario, patient_id: int, arm_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Live tumour cells at every check, simulated directly (same region and random streams)."""
    patient = draw_patient(ts, patient_id)
    end_day = patient.censor_months * DAYS_PER_MONTH
    region = patient_region(ts, patient, ts.arms[arm_index], initial_cells=ts.tumour.initial_cells,
                            duration_days=end_day, record_every_hours=ts.advanced.check_every_days * 24.0)
    sim = Simulation(region, seed=ts.scenario.seed, patient=patient_id * FOCI_KEY_STRIDE, threads=1)
    steps = max(1, round(ts.advanced.check_every_days / sim.disc.dt_days))
    last = min(sim.disc.n_steps, math.floor(end_day / sim.disc.dt_days))
    days, live = [0.0], [int(np.count_nonzero(sim.lattice.cell == LIVE))]
    while sim.step < last:
        sim.advance(min(steps, last - sim.step))
        days.append(sim.step * sim.disc.dt_days)
        live.append(int(np.count_nonzero(sim.lattice.cell == LIVE)))
    return np.array(days), np.array(live)


def first_progression_day(days: np.ndarray, live: np.ndarray, factor: float) -> float | None:
    nadir = float(live[0])
    for day, n in zip(days[1:], live[1:], strict=True):
        nadir = min(nadir, n)
        if n > 0 and n >= factor * max(nadir, 1.0):
            return float(day)
    return None


def test_advanced_rows_have_sane_pfs_and_os():
    ts = tiny()
    rows = [row for pid in range(3) for row in simulate_patient(ts, pid)]
    frame = pd.DataFrame(rows)
    for col in ("pfs_months", "pfs_event", "os_months", "os_event", "progression_months", "nadir_cells"):
        assert col in frame.columns
    assert "rfs_months" not in frame.columns
    assert all(isinstance(v, (bool, np.bool_)) for v in frame["pfs_event"])
    assert all(isinstance(v, (bool, np.bool_)) for v in frame["os_event"])
    assert (frame["pfs_months"] <= frame["os_months"] + 1e-12).all()
    assert (frame["pfs_months"] > 0).all()
    assert (frame["os_months"] <= ts.trial.follow_up_months + 1e-12).all()
    progressed = frame["progression_months"].notna()
    # No progression recorded: NaN, and then PFS is censored or ended by death.
    assert frame.loc[progressed, "pfs_event"].all()
    np.testing.assert_allclose(frame.loc[progressed, "pfs_months"], frame.loc[progressed, "progression_months"])
    # Fast-growing tumours in the control arm progress within follow-up.
    assert progressed[frame["arm"] == "control"].all()
    assert (frame["nadir_cells"] <= ts.tumour.initial_cells).all()


@pytest.mark.parametrize("arm_index", [0, 1])
def test_progression_is_recist_rule_on_the_burden_trace(arm_index):
    ts = tiny()
    factor = (1.0 + ts.advanced.progression_diameter_increase) ** len(ts.lattice.shape)
    assert factor == pytest.approx(1.44)
    for pid in range(2):
        row = simulate_patient(ts, pid)[arm_index]
        days, live = burden_trace(ts, pid, arm_index)
        expected = first_progression_day(days, live, factor)
        if expected is None:
            assert math.isnan(row["progression_months"])
            continue
        assert row["progression_months"] == pytest.approx(expected / DAYS_PER_MONTH)
        k = int(np.searchsorted(days, expected))
        nadir = live[: k + 1].min()
        assert row["nadir_cells"] == nadir
        assert live[k] >= factor * max(nadir, 1)
        # Before that check, the burden had stayed below the threshold over its running nadir.
        running = np.minimum.accumulate(live[:k])
        assert (live[1:k] < factor * np.maximum(running[1:k], 1)).all()


def test_no_progression_when_threshold_unreachable():
    # +300 % diameter is 64x the nadir in 2D (43 * 1.0 > 24 * 24 sites): the lattice cannot hold it.
    ts = tiny(advanced={"progression_diameter_increase": 3.0, "check_every_days": 2.0})
    for row in simulate_patient(ts, 0):
        assert math.isnan(row["progression_months"])
        assert not row["pfs_event"] or row["pfs_months"] == pytest.approx(row["os_months"])


def test_run_trial_advanced_one_worker(tmp_path):
    ts = tiny()
    run = run_trial(ts, tmp_path / "adv", workers=1, progress=False)
    frame = run.patients
    assert len(frame) == ts.trial.patients * len(ts.arms)
    assert list(frame["arm"][:2]) == ["control", "cik"]
    assert set(run.summary["endpoints"]) == {"pfs", "os"}
    assert run.summary["setting"] == "advanced"
    assert (frame["pfs_months"] <= frame["os_months"] + 1e-12).all()
    assert (tmp_path / "adv" / "patients.parquet").exists()
    assert (tmp_path / "adv" / "summary.json").exists()

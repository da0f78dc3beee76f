"""Advanced setting: the whole-body burden in the compartment model, assessed RECIST-like (PFS), cancer
death at the lethal burden (OS), and the lattice region as the sample of local killing."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cikabm.course import progression_day
from cikabm.lesions import Lesion, compartment_inputs, lesion_course
from cikabm.patients import draw_patient, patient_region
from cikabm.scenario import scenario_from_dict
from cikabm.trial import run_trial, simulate_patient
from cikabm.trial_params import DAYS_PER_MONTH, TrialScenario

TINY = {
    "scenario": {"name": "tiny_advanced", "seed": 7},
    "trial": {"setting": "advanced", "patients": 4, "follow_up_months": 12.0, "chunk_patients": 2},
    "arms": [{"name": "control", "schedule": "none"},
             {"name": "cik", "schedule": "choi2018", "start_day": 0.0}],
    "lattice": {"shape": [24, 24]},
    "time": {"dt_minutes": 30.0},
    "tumour": {"initial_cells": 40, "death_rate_per_day": 0.05, "ligand_mean": 0.3, "mhc_mean": 0.3},
    "homing": {"ctl_per_site_per_day": 0.0, "cik_per_site_per_day": 5e-14},
    "cohort": {"doubling_time_median_days": 30.0, "doubling_time_sd_log": 0.3, "manufacturing_failure": 0.0},
    "advanced": {"body_burden_cells": 1e10, "sample_days": 7.0, "progression_diameter_increase": 0.2,
                 "check_every_days": 28.0},
    "outcomes": {"other_cause_death_per_year": 0.0, "lethal_cells": 1e12},
}


def tiny(**over) -> TrialScenario:
    return scenario_from_dict({**TINY, **over}, model=TrialScenario)


def test_recist_progression_on_assessments():
    burden = np.r_[np.full(30, 100.0), np.full(30, 60.0), np.full(41, 100.0)]  # days 0..100
    day, nadir = progression_day(burden, 10.0, 1.728)
    assert math.isinf(day) and nadir == 60.0  # 100 < 1.728 * 60
    grown = burden.copy()
    grown[70:] = 104.0  # 104 >= 1.728 * 60 = 103.7 from day 70
    day, nadir = progression_day(grown, 10.0, 1.728)
    assert day == 70.0 and nadir == 60.0
    assert math.isinf(progression_day(np.zeros(50), 7.0, 1.728)[0])  # a cleared burden never progresses


def test_advanced_rows_follow_the_body_burden():
    ts = tiny()
    rows = [row for pid in range(3) for row in simulate_patient(ts, pid)]
    frame = pd.DataFrame(rows)
    assert "rfs_months" not in frame.columns
    assert (frame["pfs_months"] <= frame["os_months"] + 1e-12).all() and (frame["pfs_months"] > 0).all()
    progressed = frame["progression_months"].notna()
    np.testing.assert_allclose(frame.loc[progressed, "pfs_months"], frame.loc[progressed, "progression_months"])
    # progression is seen at an assessment
    days = frame.loc[progressed, "progression_months"] * DAYS_PER_MONTH
    np.testing.assert_allclose(days % 28.0, 0.0, atol=1e-6)
    assert progressed[frame["arm"] == "control"].all()
    assert (frame.loc[frame["os_event"], "cause_of_death"] == "cancer").all()
    assert (frame["sample_cells_start"] == 40).all()
    assert (frame.loc[frame["arm"] == "control", "sample_cik_kills"] == 0).all()


def test_cancer_death_when_the_body_burden_is_lethal():
    """With no immune effect the body burden grows at the patient's net rate: death at
    ln(lethal / initial) / growth days, progression at the first assessment past +72.8 % volume."""
    ts = tiny(homing={"ctl_per_site_per_day": 0.0, "cik_per_site_per_day": 0.0})
    pid = 1
    patient = draw_patient(ts, pid)
    row = simulate_patient(ts, pid)[0]
    growth = patient.net_growth_per_day
    death_day = math.log(1e12 / 1e10) / growth
    if death_day < patient.censor_months * DAYS_PER_MONTH:
        assert row["os_event"] and row["os_months"] * DAYS_PER_MONTH == pytest.approx(death_day, abs=1.0)
    progression = math.log(1.2**3) / growth
    assert row["progression_months"] * DAYS_PER_MONTH == pytest.approx(28.0 * math.ceil(progression / 28.0))


def test_body_burden_course_matches_the_kernel_run_directly():
    ts = tiny()
    patient = draw_patient(ts, 2)
    region = patient_region(ts, patient, ts.arms[1], initial_cells=40, duration_days=300.0,
                            record_every_hours=24.0)
    inputs = compartment_inputs(ts, region, 300.0, 1e12)
    body = lesion_course(ts, region, inputs, Lesion(0, "body", 0.0, 10**10), seed=7, patient_id=2, n_days=300)
    again = lesion_course(ts, region, inputs, Lesion(0, "body", 0.0, 10**10), seed=7, patient_id=2, n_days=300)
    np.testing.assert_array_equal(body.burden, again.burden)
    assert body.burden[0] == 1e10 and body.burden[-1] > body.burden[0]


def test_run_trial_advanced_one_worker(tmp_path):
    ts = tiny()
    run = run_trial(ts, tmp_path / "adv", workers=1, progress=False)
    frame = run.patients
    assert len(frame) == ts.trial.patients * len(ts.arms)
    assert set(run.summary["endpoints"]) == {"pfs", "os", "css"}
    assert set(run.summary["never_progressed"]) == {"control", "cik"}
    assert run.summary["setting"] == "advanced"
    assert (tmp_path / "adv" / "km_pfs.png").exists()

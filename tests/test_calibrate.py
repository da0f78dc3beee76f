"""Calibration: the optimisers find the parameters that hit the RFS targets, with their spread."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cikabm.calibrate import (
    CALIBRATION_SEED_BASE,
    MISS_TOLERANCE,
    CalibrationResult,
    calibrate_adjuvant,
    calibration_misses,
    calibration_report,
    calibration_seeds,
    rfs_statistics,
)
from cikabm.scenario import scenario_from_dict
from cikabm.trial_params import TrialScenario

#: Synthetic cumulative hazard H(t) = foci * ALPHA * (1 - exp(-t / 24)) + de_novo * BETA * t (t in months):
#: at foci 2 and de novo 0.1 per year, RFS is 0.5 at 30 months and 0.3 at 60 months.
ALPHA, BETA = 0.17875, 0.14597
GRID = np.linspace(0.0, 600.0, 60001)


def synthetic_cohort(ts: TrialScenario, n: int, seed: int) -> pd.DataFrame:
    """RFS from the hazard above; the treated arm's hazard is scaled by 0.63 ** (13 + log10(homing)),
    so HR 0.63 at homing 1e-12. The same uniforms for a seed every call (common random numbers)."""
    foci, de_novo = ts.adjuvant.foci_mean_at_5cm, ts.adjuvant.de_novo_per_year
    hr = 0.63 ** (1.0 + (math.log10(ts.homing.cik_per_site_per_day) + 12.0))
    cumulative = foci * ALPHA * (1.0 - np.exp(-GRID / 24.0)) + de_novo * BETA * GRID
    u = np.random.default_rng(seed).random(n)
    rows = []
    for arm in ts.arms:
        scale = hr if arm.name != ts.trial.reference_arm else 1.0
        t = np.interp(-np.log(u), scale * cumulative, GRID)
        rows.append(pd.DataFrame({"patient_id": np.arange(n), "arm": arm.name,
                                  "rfs_months": np.minimum(t, 60.0), "rfs_event": t < 60.0}))
    return pd.concat(rows, ignore_index=True)


def test_synthetic_cohort_hits_the_targets_at_the_known_values():
    ts = scenario_from_dict({"adjuvant": {"foci_mean_at_5cm": 2.0, "de_novo_per_year": 0.1},
                             "homing": {"cik_per_site_per_day": 1e-12}}, model=TrialScenario)
    st = rfs_statistics(synthetic_cohort(ts, 40_000, 1), "control", "cik", median_months=30.0)
    assert st["median_control"] == pytest.approx(30.0, abs=0.5)
    assert st["five_year_recurrence"] == pytest.approx(0.70, abs=0.01)
    assert st["hr"] == pytest.approx(0.63, abs=0.02)


def test_calibration_recovers_known_parameters_with_their_spread():
    ts = scenario_from_dict({"trial": {"patients": 3000}}, model=TrialScenario)
    result = calibrate_adjuvant(ts, synthetic_cohort, control_median_months=30.0, five_year_recurrence=0.70,
                                hazard_ratio=0.63, treatment_arm="cik", n_cohorts=3, max_evaluations=40,
                                report=lambda line: None)
    assert math.log10(result.foci_mean_at_5cm) == pytest.approx(math.log10(2.0), abs=0.06)
    assert math.log10(result.de_novo_per_year) == pytest.approx(-1.0, abs=0.12)
    assert math.log10(result.cik_per_site_per_day) == pytest.approx(-12.0, abs=0.1)
    assert result.control_median_months == pytest.approx(30.0, abs=1.0)
    assert result.hazard_ratio == pytest.approx(0.63, abs=0.02)
    assert result.seeds == calibration_seeds(3) == [CALIBRATION_SEED_BASE + i for i in range(3)]
    assert {h["stage"] for h in result.history} == {"control", "treatment"}
    assert result.targets == {"control_median_months": 30.0, "five_year_recurrence": 0.70, "hazard_ratio": 0.63}
    assert result.control_rfs_at_target_median == pytest.approx(0.5, abs=0.02)
    assert calibration_misses(result) == []
    # each cohort refitted alone: the spread is the fitted values' uncertainty, small for 3000 patients
    assert [c["seed"] for c in result.per_cohort] == result.seeds
    for name in ("foci_mean_at_5cm", "de_novo_per_year", "cik_per_site_per_day"):
        spread = result.spread[name]
        assert 0.0 <= spread["log10_sd"] < 0.15
        assert spread["min"] <= getattr(result, name) * 1.5 and spread["max"] >= getattr(result, name) / 1.5


def test_a_bracket_without_the_target_is_refused():
    ts = scenario_from_dict({"trial": {"patients": 500}}, model=TrialScenario)
    with pytest.raises(ValueError, match="does not contain"):
        calibrate_adjuvant(ts, synthetic_cohort, control_median_months=30.0, five_year_recurrence=0.70,
                           hazard_ratio=0.99, treatment_arm="cik", n_cohorts=1, max_evaluations=10,
                           log10_homing_range=(-12.0, -10.0), report=lambda line: None)


def _result(**changes) -> CalibrationResult:
    """A finished calibration as the Lee 2015 log records it (a hit), with ``changes``."""
    fields = dict(foci_mean_at_5cm=2.384, de_novo_per_year=0.04241, cik_per_site_per_day=7.453e-12,
                  control_median_months=30.1, five_year_recurrence=0.692, hazard_ratio=0.632,
                  seeds=calibration_seeds(4), patients_per_cohort=230, evaluations=134,
                  targets={"control_median_months": 30.0, "five_year_recurrence": 0.70, "hazard_ratio": 0.63},
                  control_rfs_at_target_median=0.503,
                  per_cohort=[{"seed": s} for s in calibration_seeds(4)],
                  spread={"foci_mean_at_5cm": {"log10_sd": 0.049, "min": 2.09, "max": 2.72},
                          "de_novo_per_year": {"log10_sd": 0.092, "min": 0.039, "max": 0.062},
                          "cik_per_site_per_day": {"log10_sd": 0.077, "min": 5.94e-12, "max": 9.11e-12}})
    fields.update(changes)
    return CalibrationResult(**fields)


def test_report_of_a_hit_is_readable_and_warns_of_nothing():
    text = calibration_report(_result(), wall_seconds=1290.0)
    assert "None" not in text and "warning" not in text
    assert "fitted on 4 cohorts x 230 patients in 21.5 min (134 cohort evaluations)" in text
    assert "30.1 months" in text and "target 30 months" in text
    assert "69.2 %" in text and "target 70.0 %" in text
    assert "0.632" in text and "target 0.63" in text
    assert "2.384 lesions (cohorts 2.09-2.72; log10 sd 0.049)" in text
    assert "0.04241 /year" in text and "7.453e-12 /(site·day)" in text
    assert text.rstrip().endswith("cik_per_site_per_day = 7.453e-12")


def test_report_of_a_miss_warns_and_never_prints_none():
    tol = MISS_TOLERANCE["hazard_ratio"]
    miss = _result(control_median_months=None, control_rfs_at_target_median=0.62, hazard_ratio=0.63 + 2 * tol,
                   spread={}, per_cohort=[])
    text = calibration_report(miss)
    assert "None" not in text
    assert "control median RFS         not reached" in text
    assert "spread over cohorts not computed" in text
    warning = [line for line in text.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1
    assert "control RFS at 30 months is 62.0 %, off 50 % by 12.0 points (tolerance 5)" in warning[0]
    assert "RFS hazard ratio is 0.730, off 0.63 by 0.100 (tolerance 0.05)" in warning[0]
    assert "5-year recurrence" not in warning[0]  # 69.2 % is within 5 points of 70 %
    assert calibration_misses(_result(hazard_ratio=None)) == ["RFS hazard ratio not estimable"]
    assert calibration_misses(_result(five_year_recurrence=0.60))[0].startswith("5-year recurrence is 60.0 %")

"""Calibration: the bisection finds the parameters that hit the RFS targets."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cikabm.calibrate import _bisect, calibrate_adjuvant
from cikabm.scenario import scenario_from_dict
from cikabm.trial_params import TrialScenario


def test_bisect_finds_the_root_of_an_increasing_function():
    assert _bisect(lambda x: x**3 - 2.0, 0.0, 2.0, 40) == pytest.approx(2.0 ** (1 / 3), abs=1e-9)


def synthetic_cohort(ts: TrialScenario, n: int) -> pd.DataFrame:
    """Exponential RFS whose control median falls with escape size and whose HR falls with homing.

    Control median = 30 months at escape 1e7 (halving per decade); HR = 0.63 at homing 1e-14.
    """
    escape = ts.adjuvant.escape_physical_cells
    homing = ts.homing.cik_per_site_per_day
    median = 30.0 * 2.0 ** (-(math.log10(escape) - 7.0))
    hr = 0.63 ** (1.0 + (math.log10(homing) + 14.0))
    rng = np.random.default_rng(0)  # the same cohort every call, as with common random numbers
    u = rng.random(n)
    rows = []
    for arm in ts.arms:
        rate = math.log(2.0) / median * (hr if arm.name != ts.trial.reference_arm else 1.0)
        t = -np.log(u) / rate
        rows.append(pd.DataFrame({"patient_id": np.arange(n), "arm": arm.name,
                                  "rfs_months": np.minimum(t, 600.0), "rfs_event": t < 600.0}))
    return pd.concat(rows, ignore_index=True)


def test_calibration_recovers_known_parameters():
    ts = scenario_from_dict({"trial": {"patients": 4000}}, model=TrialScenario)
    result = calibrate_adjuvant(ts, synthetic_cohort, control_median_months=30.0, hazard_ratio=0.63,
                                treatment_arm="cik", iterations=14, report=lambda line: None)
    assert math.log10(result.escape_physical_cells) == pytest.approx(7.0, abs=0.05)
    assert math.log10(result.cik_per_site_per_day) == pytest.approx(-14.0, abs=0.1)
    assert result.control_median_months == pytest.approx(30.0, rel=0.05)
    assert result.hazard_ratio == pytest.approx(0.63, abs=0.02)
    assert {h["stage"] for h in result.history} == {"control", "treatment"}

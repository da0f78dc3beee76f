"""Calibration of a virtual adjuvant trial to published RFS.

The procedure is deliberately simple and rerunnable (``cikabm calibrate``):

1. **Control arm.** Bisection on ``log10(adjuvant.escape_physical_cells)``
   until the control arm's Kaplan-Meier median RFS equals the target. A larger
   escaped focus is detected sooner, so the median falls monotonically.
2. **Treatment arm.** Bisection on ``log10(homing.cik_per_site_per_day)``
   until the Cox hazard ratio of RFS (treatment vs control) equals the target:
   more homing, more CIK in the foci, a smaller hazard ratio.

Every evaluation runs the whole cohort with the scenario's seed, so the same
virtual patients are used throughout (common random numbers make the
objective deterministic and the bisection well defined). Only RFS is a
target; OS is reported as a prediction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from cikabm.trial_params import TrialScenario


@dataclass
class CalibrationResult:
    """Fitted values, the trajectory of the search, and the final cohort's statistics."""

    escape_physical_cells: float
    cik_per_site_per_day: float
    control_median_months: float | None
    treatment_median_months: float | None
    hazard_ratio: float | None
    history: list[dict[str, Any]] = field(default_factory=list)


def _evaluate(ts: TrialScenario, n_patients: int, arms: list[str], run_cohort: Callable) -> dict[str, Any]:
    from lifelines import CoxPHFitter, KaplanMeierFitter

    sub = ts.model_copy(update={"arms": [a for a in ts.arms if a.name in arms]})
    frame: pd.DataFrame = run_cohort(sub, n_patients)
    result: dict[str, Any] = {}
    for arm, group in frame.groupby("arm", sort=False):
        kmf = KaplanMeierFitter().fit(group["rfs_months"], group["rfs_event"])
        median = kmf.median_survival_time_
        result[f"median_{arm}"] = None if math.isinf(median) else float(median)
    if len(arms) == 2:
        data = frame.assign(treated=(frame["arm"] == arms[1]).astype(int))[["rfs_months", "rfs_event", "treated"]]
        cox = CoxPHFitter().fit(data, "rfs_months", "rfs_event")
        result["hr"] = float(math.exp(cox.params_["treated"]))
    return result


def _bisect(f: Callable[[float], float], lo: float, hi: float, iterations: int) -> float:
    """Root of an increasing ``f`` on [lo, hi] by bisection (returns the midpoint)."""
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def calibrate_adjuvant(ts: TrialScenario, run_cohort: Callable[[TrialScenario, int], pd.DataFrame], *,
                       control_median_months: float, hazard_ratio: float, treatment_arm: str,
                       n_patients: int | None = None, iterations: int = 7,
                       log10_escape_range: tuple[float, float] = (5.0, 8.5),
                       log10_homing_range: tuple[float, float] = (-15.5, -11.0),
                       report: Callable[[str], None] = print) -> CalibrationResult:
    """Fit ``escape_physical_cells`` and ``cik_per_site_per_day`` to RFS targets.

    Parameters
    ----------
    ts : TrialScenario
        The trial; its reference arm is the control.
    run_cohort : callable
        ``run_cohort(ts, n_patients) -> DataFrame`` of patient rows (see
        :func:`cikabm.trial.simulate_chunk`); lets the caller parallelise.
    control_median_months, hazard_ratio : float
        Targets: control median RFS and RFS hazard ratio of the treatment arm.
    treatment_arm : str
        Name of the treated arm.
    """
    n = ts.trial.patients if n_patients is None else n_patients
    control = ts.trial.reference_arm
    history: list[dict[str, Any]] = []

    def with_values(escape: float, homing: float) -> TrialScenario:
        return ts.model_copy(update={
            "adjuvant": ts.adjuvant.model_copy(update={"escape_physical_cells": escape}),
            "homing": ts.homing.model_copy(update={"cik_per_site_per_day": homing}),
        })

    def control_gap(log_escape: float) -> float:
        res = _evaluate(with_values(10**log_escape, ts.homing.cik_per_site_per_day), n, [control], run_cohort)
        median = res[f"median_{control}"]
        history.append({"stage": "control", "escape_physical_cells": 10**log_escape, **res})
        report(f"  escape_physical_cells = {10**log_escape:.3g}: control median RFS "
               f"{'NR' if median is None else f'{median:.1f}'} months")
        # increasing in log_escape: target - median (median falls as escape grows); NR counts as long
        return control_median_months - (1e9 if median is None else median)

    report(f"stage 1: control median RFS -> {control_median_months} months")
    log_escape = _bisect(control_gap, *log10_escape_range, iterations)
    escape = 10**log_escape

    def hr_gap(log_homing: float) -> float:
        res = _evaluate(with_values(escape, 10**log_homing), n, [control, treatment_arm], run_cohort)
        history.append({"stage": "treatment", "escape_physical_cells": escape,
                        "cik_per_site_per_day": 10**log_homing, **res})
        report(f"  cik_per_site_per_day = {10**log_homing:.3g}: HR {res['hr']:.3f}")
        return hazard_ratio - res["hr"]  # HR falls as homing grows

    report(f"stage 2: RFS hazard ratio -> {hazard_ratio}")
    homing = 10 ** _bisect(hr_gap, *log10_homing_range, iterations)
    final = _evaluate(with_values(escape, homing), n, [control, treatment_arm], run_cohort)
    return CalibrationResult(
        escape_physical_cells=escape, cik_per_site_per_day=homing,
        control_median_months=final.get(f"median_{control}"),
        treatment_median_months=final.get(f"median_{treatment_arm}"),
        hazard_ratio=final.get("hr"), history=history)

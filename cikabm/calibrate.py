"""Calibration of a virtual adjuvant trial to published RFS, over replicate cohorts.

``cikabm calibrate`` fits the free clinical parameters in two stages, each
with a library optimiser, on the pooled patients of several virtual cohorts
(seeds :func:`calibration_seeds`, never the trial's own seed, so that the
trial run afterwards is out of sample):

1. **Control arm** (``scipy.optimize.minimize``, Nelder-Mead): ``log10`` of
   ``adjuvant.foci_mean_at_5cm`` (the burden of micrometastases, the early
   source) and of ``adjuvant.de_novo_per_year`` (the late source), to the
   control arm's Kaplan-Meier median RFS and its 5-year recurrence-or-death
   (one minus RFS at 5 years).
2. **Treatment arm** (``scipy.optimize.brentq``): ``log10`` of
   ``homing.cik_per_site_per_day`` until the Cox hazard ratio of RFS
   (treatment vs control) equals the target: more homing, more CIK cells in
   every lesion, a smaller hazard ratio. Only the treatment arm is rerun.

Common random numbers make each objective deterministic. The uncertainty of
the fitted values is their spread over the cohorts: the same two stages are
rerun on each cohort alone (from the pooled fit). Only RFS is a target; OS,
cancer-specific survival, subgroups and other trials are predictions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cikabm.trial_params import TrialScenario

#: Seeds of the calibration cohorts: ``CALIBRATION_SEED_BASE + i``.
CALIBRATION_SEED_BASE = 10_000
#: Landmark (months) of the 5-year recurrence target: the last follow-up time
#: before 60 months, so that a 60-month follow-up reaches it.
FIVE_YEARS_MONTHS = 59.9

#: Where the control stage starts (foci_mean_at_5cm, de_novo_per_year): fixed, not the scenario's
#: current values, so that rerunning a recorded calibration on its own fitted file gives the same fit.
CONTROL_START = (1.0, 0.05)
#: Bounds of the control stage's log10 parameters (foci_mean_at_5cm, de_novo_per_year).
LOG10_LOW = np.array([-1.5, -2.5])
LOG10_HIGH = np.array([1.5, 0.0])

RunCohort = Callable[[TrialScenario, int, int], pd.DataFrame]


def calibration_seeds(n_cohorts: int) -> list[int]:
    """Seeds of ``n_cohorts`` calibration cohorts."""
    return [CALIBRATION_SEED_BASE + i for i in range(n_cohorts)]


@dataclass
class CalibrationResult:
    """Fitted values with their spread over cohorts, the search history, and the fit's statistics."""

    foci_mean_at_5cm: float
    de_novo_per_year: float
    cik_per_site_per_day: float
    control_median_months: float | None
    five_year_recurrence: float
    hazard_ratio: float | None
    seeds: list[int]
    patients_per_cohort: int
    per_cohort: list[dict[str, Any]] = field(default_factory=list)
    spread: dict[str, dict[str, float]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    evaluations: int = 0
    #: The targets: ``control_median_months``, ``five_year_recurrence``, ``hazard_ratio``.
    targets: dict[str, float] = field(default_factory=dict)
    #: The pooled control arm's RFS at the target median (0.5 when hit; defined when the median is not reached).
    control_rfs_at_target_median: float | None = None


def with_values(ts: TrialScenario, *, foci: float | None = None, de_novo: float | None = None,
                homing: float | None = None) -> TrialScenario:
    """``ts`` with the calibrated parameters replaced (those given)."""
    adj = {k: v for k, v in (("foci_mean_at_5cm", foci), ("de_novo_per_year", de_novo)) if v is not None}
    update: dict[str, Any] = {"adjuvant": ts.adjuvant.model_copy(update=adj)}
    if homing is not None:
        update["homing"] = ts.homing.model_copy(update={"cik_per_site_per_day": homing})
    return ts.model_copy(update=update)


def rfs_statistics(frame: pd.DataFrame, control: str, treatment: str | None = None, *,
                   median_months: float | None = None) -> dict[str, Any]:
    """Control median RFS, control 5-year recurrence-or-death, and the RFS hazard ratio.

    With ``median_months``, also the control arm's RFS at that time (0.5 when
    it is the median: a smooth stand-in for the median, defined even when the
    median is not reached).
    """
    from lifelines import CoxPHFitter, KaplanMeierFitter

    ctl = frame[frame["arm"] == control]
    kmf = KaplanMeierFitter().fit(ctl["rfs_months"], ctl["rfs_event"])
    median = kmf.median_survival_time_
    out: dict[str, Any] = {"median_control": None if math.isinf(median) else float(median),
                           "five_year_recurrence": float(1.0 - kmf.predict(FIVE_YEARS_MONTHS))}
    if median_months is not None:
        out["rfs_at_target_median"] = float(kmf.predict(median_months))
    if treatment is not None:
        sub = frame[frame["arm"].isin([control, treatment])]
        data = pd.DataFrame({"T": sub["rfs_months"], "E": sub["rfs_event"],
                             "treated": (sub["arm"] == treatment).astype(int)})
        out["hr"] = float(math.exp(CoxPHFitter().fit(data, "T", "E").params_["treated"]))
        trt = frame[frame["arm"] == treatment]
        tm = KaplanMeierFitter().fit(trt["rfs_months"], trt["rfs_event"]).median_survival_time_
        out["median_treatment"] = None if math.isinf(tm) else float(tm)
    return out


class _Fitter:
    """Both stages on the pooled patients of ``seeds``."""

    def __init__(self, ts: TrialScenario, run_cohort: RunCohort, seeds: Sequence[int], n: int,
                 treatment: str, report: Callable[[str], None], history: list[dict[str, Any]]):
        self.ts, self.run, self.seeds, self.n = ts, run_cohort, list(seeds), n
        self.control, self.treatment = ts.trial.reference_arm, treatment
        self.report, self.history = report, history
        self.evaluations = 0

    def cohorts(self, ts: TrialScenario, arm: str) -> pd.DataFrame:
        sub = ts.model_copy(update={"arms": [a for a in ts.arms if a.name == arm]})
        self.evaluations += 1
        return pd.concat([self.run(sub, self.n, s).assign(cohort=s) for s in self.seeds], ignore_index=True)

    def control_stage(self, targets: tuple[float, float], x0: np.ndarray, max_evaluations: int
                      ) -> tuple[np.ndarray, pd.DataFrame]:
        from scipy.optimize import minimize

        median_target, rec_target = targets
        cache: dict[tuple[float, float], tuple[np.ndarray, pd.DataFrame]] = {}

        def residuals(x: np.ndarray) -> np.ndarray:
            key = (round(float(x[0]), 6), round(float(x[1]), 6))
            if key not in cache:
                ts = with_values(self.ts, foci=10 ** x[0], de_novo=10 ** x[1])
                frame = self.cohorts(ts, self.control)
                st = rfs_statistics(frame, self.control, median_months=median_target)
                res = np.array([(st["rfs_at_target_median"] - 0.5) / 0.03,
                                (st["five_year_recurrence"] - rec_target) / 0.03])
                cache[key] = (res, frame)
                self.history.append({"stage": "control", "foci_mean_at_5cm": 10 ** x[0],
                                     "de_novo_per_year": 10 ** x[1], **st})
                self.report(f"  foci_mean_at_5cm = {10 ** x[0]:.3g}, de_novo_per_year = {10 ** x[1]:.3g}: "
                            f"control median RFS {_fmt(st['median_control'])}, 5-year recurrence "
                            f"{st['five_year_recurrence']:.1%}")
            return cache[key][0]

        # Common random numbers make the residuals deterministic but stepwise (one patient more or
        # less), so a derivative-free simplex search, started 0.3 (log10) wide.
        simplex = np.array([x0, x0 + np.array([0.3, 0.0]), x0 + np.array([0.0, 0.3])])
        fit = minimize(lambda x: float(np.sum(residuals(np.clip(x, LOG10_LOW, LOG10_HIGH)) ** 2)), x0,
                       method="Nelder-Mead", options={"initial_simplex": simplex, "maxfev": max_evaluations,
                                                      "xatol": 0.02, "fatol": 0.5})
        x = np.clip(fit.x, LOG10_LOW, LOG10_HIGH)
        residuals(x)
        return x, cache[(round(float(x[0]), 6), round(float(x[1]), 6))][1]

    def treatment_stage(self, ts: TrialScenario, control_frame: pd.DataFrame, hr_target: float,
                        bracket: tuple[float, float]) -> tuple[float, dict[str, Any]]:
        from scipy.optimize import brentq

        stats: dict[float, dict[str, Any]] = {}

        def gap(log_homing: float) -> float:
            if log_homing in stats:
                return stats[log_homing]["hr"] - hr_target
            frame = self.cohorts(with_values(ts, homing=10 ** log_homing), self.treatment)
            st = rfs_statistics(pd.concat([control_frame, frame], ignore_index=True), self.control,
                                self.treatment)
            stats[log_homing] = st
            self.history.append({"stage": "treatment", "cik_per_site_per_day": 10 ** log_homing, **st})
            self.report(f"  cik_per_site_per_day = {10 ** log_homing:.3g}: HR {st['hr']:.3f}")
            return st["hr"] - hr_target  # falls as homing grows

        lo, hi = bracket
        g_lo, g_hi = gap(lo), gap(hi)
        if g_lo < 0 or g_hi > 0:
            raise ValueError(f"homing bracket 10^{lo:g}-10^{hi:g} per site per day gives HR "
                             f"{stats[lo]['hr']:.3f}-{stats[hi]['hr']:.3f}, which does not contain {hr_target}")
        root = brentq(gap, lo, hi, xtol=0.02)
        if root not in stats:
            gap(root)
        return root, stats[root]


def _fmt(x: float | None) -> str:
    from cikabm.survival import format_estimate

    return format_estimate(x, missing="not reached", unit=" months")


def calibrate_adjuvant(ts: TrialScenario, run_cohort: RunCohort, *, control_median_months: float,
                       five_year_recurrence: float, hazard_ratio: float, treatment_arm: str,
                       n_cohorts: int = 4, n_patients: int | None = None, max_evaluations: int = 14,
                       log10_homing_range: tuple[float, float] = (-13.0, -9.0), per_cohort: bool = True,
                       start: tuple[float, float] = CONTROL_START,
                       report: Callable[[str], None] = print) -> CalibrationResult:
    """Fit the lesion burden, the de novo rate and the CIK homing to RFS targets.

    Parameters
    ----------
    ts : TrialScenario
        The trial; its reference arm is the control.
    run_cohort : callable
        ``run_cohort(ts, n_patients, seed) -> DataFrame`` of patient rows
        (see :class:`cikabm.trial.CohortRunner`); lets the caller parallelise.
    control_median_months, five_year_recurrence, hazard_ratio : float
        Targets: the control arm's median RFS and 5-year recurrence-or-death,
        and the RFS hazard ratio of the treatment arm.
    treatment_arm : str
        Name of the treated arm.
    n_cohorts : int
        Replicate cohorts pooled in the fit (each ``n_patients``, default the trial's size).
    max_evaluations : int
        Most evaluations of the control stage's optimiser.
    per_cohort : bool
        Refit on each cohort alone, for the spread of the fitted values.
    start : (float, float)
        Starting ``foci_mean_at_5cm`` and ``de_novo_per_year`` of the control
        stage (default :data:`CONTROL_START`, whatever the scenario holds).
    """
    n = ts.trial.patients if n_patients is None else n_patients
    seeds = calibration_seeds(n_cohorts)
    history: list[dict[str, Any]] = []
    fitter = _Fitter(ts, run_cohort, seeds, n, treatment_arm, report, history)
    x0 = np.log10(np.asarray(start, dtype=float))
    report(f"stage 1 ({n_cohorts} cohorts x {n} patients): control median RFS -> {control_median_months} months, "
           f"5-year recurrence -> {five_year_recurrence:.0%}")
    x, control_frame = fitter.control_stage((control_median_months, five_year_recurrence), x0, max_evaluations)
    fitted = with_values(ts, foci=10 ** x[0], de_novo=10 ** x[1])
    report(f"stage 2: RFS hazard ratio -> {hazard_ratio}")
    log_homing, final = fitter.treatment_stage(fitted, control_frame, hazard_ratio, log10_homing_range)
    result = CalibrationResult(
        foci_mean_at_5cm=float(10 ** x[0]), de_novo_per_year=float(10 ** x[1]),
        cik_per_site_per_day=float(10 ** log_homing), control_median_months=final["median_control"],
        five_year_recurrence=final["five_year_recurrence"], hazard_ratio=final["hr"], seeds=seeds,
        patients_per_cohort=n, history=history,
        targets={"control_median_months": float(control_median_months),
                 "five_year_recurrence": float(five_year_recurrence), "hazard_ratio": float(hazard_ratio)},
        control_rfs_at_target_median=rfs_statistics(control_frame, ts.trial.reference_arm,
                                                    median_months=control_median_months)["rfs_at_target_median"])
    if per_cohort and n_cohorts > 1:
        for seed in seeds:
            report(f"cohort {seed} alone:")
            one = _Fitter(fitted, run_cohort, [seed], n, treatment_arm, report, history)
            xs, frame = one.control_stage((control_median_months, five_year_recurrence), x, max_evaluations)
            lh, st = one.treatment_stage(with_values(fitted, foci=10 ** xs[0], de_novo=10 ** xs[1]), frame,
                                         hazard_ratio, (log_homing - 1.0, log_homing + 1.0))
            fitter.evaluations += one.evaluations
            result.per_cohort.append({"seed": seed, "foci_mean_at_5cm": float(10 ** xs[0]),
                                      "de_novo_per_year": float(10 ** xs[1]),
                                      "cik_per_site_per_day": float(10 ** lh), **st})
        for name in ("foci_mean_at_5cm", "de_novo_per_year", "cik_per_site_per_day"):
            logs = np.log10([c[name] for c in result.per_cohort])
            result.spread[name] = {"log10_sd": float(logs.std(ddof=1)), "min": float(10 ** logs.min()),
                                   "max": float(10 ** logs.max())}
    result.evaluations = fitter.evaluations
    return result


#: How far the pooled fit may end from each target before ``cikabm calibrate`` warns that it missed:
#: the control arm's RFS at the target median from 0.5 and the 5-year recurrence from its target
#: (absolute, 5 percentage points: a few patients of one cohort, the objective's scale is 3), and the
#: hazard ratio from its target (absolute).
MISS_TOLERANCE = {"control_rfs_at_target_median": 0.05, "five_year_recurrence": 0.05, "hazard_ratio": 0.05}

#: Units of the fitted parameters, for the report.
FITTED_UNITS = {"foci_mean_at_5cm": "lesions", "de_novo_per_year": "/year", "cik_per_site_per_day": "/(site·day)"}


def _percent(x: float | None) -> str:
    from cikabm.survival import format_estimate

    return format_estimate(None if x is None else 100.0 * x, ".1f", missing="not computed", unit=" %")


def calibration_misses(result: CalibrationResult) -> list[str]:
    """The targets the pooled fit misses by more than :data:`MISS_TOLERANCE`, in words (empty: all hit).

    A statistic that could not be computed (no target recorded, or no
    hazard ratio) counts as a miss.
    """
    t = result.targets
    tol = MISS_TOLERANCE
    misses = []
    if "control_median_months" in t:
        rfs = result.control_rfs_at_target_median
        if rfs is None:
            misses.append(f"control RFS at {t['control_median_months']:g} months not computed")
        elif abs(rfs - 0.5) > tol["control_rfs_at_target_median"]:
            misses.append(f"control RFS at {t['control_median_months']:g} months is {_percent(rfs)}, off 50 % "
                          f"by {100 * abs(rfs - 0.5):.1f} points "
                          f"(tolerance {100 * tol['control_rfs_at_target_median']:g})")
    if "five_year_recurrence" in t:
        rec = result.five_year_recurrence
        if abs(rec - t["five_year_recurrence"]) > tol["five_year_recurrence"]:
            misses.append(f"5-year recurrence is {_percent(rec)}, off {_percent(t['five_year_recurrence'])} by "
                          f"{100 * abs(rec - t['five_year_recurrence']):.1f} points "
                          f"(tolerance {100 * tol['five_year_recurrence']:g})")
    if "hazard_ratio" in t:
        hr = result.hazard_ratio
        if hr is None or not math.isfinite(hr):
            misses.append("RFS hazard ratio not estimable")
        elif abs(hr - t["hazard_ratio"]) > tol["hazard_ratio"]:
            misses.append(f"RFS hazard ratio is {hr:.3f}, off {t['hazard_ratio']:g} by "
                          f"{abs(hr - t['hazard_ratio']):.3f} (tolerance {tol['hazard_ratio']:g})")
    if not t:
        misses.append("no targets recorded")
    return misses


def calibration_report(result: CalibrationResult, wall_seconds: float | None = None) -> str:
    """The end of ``cikabm calibrate``: the fit against its targets, the fitted values with their spread
    over cohorts, a warning line when a target is missed (:func:`calibration_misses`), and the TOML to paste.

    Parameters
    ----------
    result : CalibrationResult
    wall_seconds : float, optional
        How long the calibration took.

    Returns
    -------
    str
        Lines ending in a newline.
    """
    from cikabm.survival import format_estimate

    t = result.targets
    took = f" in {wall_seconds / 60:.1f} min" if wall_seconds is not None else ""
    lines = [f"fitted on {len(result.seeds)} cohorts x {result.patients_per_cohort} patients{took} "
             f"({result.evaluations} cohort evaluations); the pooled cohorts against the targets:"]

    def row(label: str, value: str, target: str) -> str:
        return f"  {label:<26} {value:<14} {target}"

    median_target = t.get("control_median_months")
    lines.append(row("control median RFS", _fmt(result.control_median_months),
                     f"target {median_target:g} months" if median_target is not None else "no target recorded"))
    if median_target is not None:
        rfs = result.control_rfs_at_target_median
        tolerance = 100 * MISS_TOLERANCE["control_rfs_at_target_median"]
        lines.append(row(f"control RFS at {median_target:g} months", _percent(rfs),
                         f"target 50 % (the median), tolerance {tolerance:g} points"))
    rec_target = t.get("five_year_recurrence")
    lines.append(row("5-year recurrence", _percent(result.five_year_recurrence),
                     f"target {_percent(rec_target)}, tolerance {100 * MISS_TOLERANCE['five_year_recurrence']:g} points"
                     if rec_target is not None else "no target recorded"))
    hr_target = t.get("hazard_ratio")
    lines.append(row("RFS hazard ratio", format_estimate(result.hazard_ratio, ".3f"),
                     f"target {hr_target:g}, tolerance {MISS_TOLERANCE['hazard_ratio']:g}"
                     if hr_target is not None else "no target recorded"))
    if result.spread:
        lines.append(f"fitted values, with their spread over the {len(result.per_cohort)} cohorts fitted alone:")
    else:
        lines.append("fitted values (spread over cohorts not computed: --no-per-cohort or a single cohort):")
    for name in ("foci_mean_at_5cm", "de_novo_per_year", "cik_per_site_per_day"):
        value = getattr(result, name)
        spread = result.spread.get(name)
        extra = (f" (cohorts {spread['min']:.3g}-{spread['max']:.3g}; log10 sd {spread['log10_sd']:.3f})"
                 if spread else "")
        lines.append(f"  {name:<22} {value:.4g} {FITTED_UNITS[name]}{extra}")
    lines += ["to paste into the scenario:", "[adjuvant]", f"foci_mean_at_5cm = {result.foci_mean_at_5cm:.4g}",
              f"de_novo_per_year = {result.de_novo_per_year:.4g}", "[homing]",
              f"cik_per_site_per_day = {result.cik_per_site_per_day:.4g}"]
    misses = calibration_misses(result)
    if misses:
        lines.append("warning: the fit misses its targets: " + "; ".join(misses)
                     + ". Try more --max-evaluations or --cohorts, and see the search history (--log FILE).")
    return "\n".join(lines) + "\n"

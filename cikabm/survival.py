"""Survival statistics of virtual trials: Kaplan-Meier, log-rank, Cox, RMST and KM figures.

The input is a patient table with one row per patient and arm: a column
``arm`` and, per endpoint ``E`` in ``{"rfs", "pfs", "os"}``, the columns
``{E}_months`` (time to event or censoring) and ``{E}_event`` (True when the
event was observed). Adjuvant trials carry ``rfs`` and ``os``, advanced ones
``pfs`` and ``os``, so every function takes the endpoint's name.

All estimation is done by :mod:`lifelines`:

* medians and their 95 % confidence intervals from
  :class:`~lifelines.KaplanMeierFitter` (``median_survival_time_`` and
  :func:`lifelines.utils.median_survival_times` of ``confidence_interval_``,
  the exponential Greenwood interval);
* hazard ratios from a :class:`~lifelines.CoxPHFitter` on a 0/1 indicator of
  the arm against the reference arm (Efron ties, Wald interval and p);
* two-sided log-rank p from :func:`lifelines.statistics.logrank_test`;
* restricted mean survival time from
  :func:`lifelines.utils.restricted_mean_survival_time` (exact for a KM curve).

Each arm is analysed as its own cohort, the way a randomised trial is. In a
virtual trial the same virtual patient sits in every arm (common random
numbers), so the arms are positively correlated and the log-rank and Cox
p-values and intervals here are conservative for the paired design.

Summaries are JSON-ready: plain Python numbers, and ``None`` wherever a
quantity is not estimable (a median not reached, an unbounded confidence
limit, a hazard ratio with no events in one arm). Figures use only the
matplotlib object API except where :func:`plot_km` has to make a new figure.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.exceptions import ConvergenceError, ConvergenceWarning
from lifelines.statistics import logrank_test
from lifelines.utils import median_survival_times, restricted_mean_survival_time

from cikabm.io import save_png

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "ENDPOINTS",
    "ENDPOINT_LABELS",
    "LANDMARK_MONTHS",
    "endpoint_columns",
    "endpoint_summary",
    "format_estimate",
    "format_hr",
    "format_median",
    "plot_km",
    "save_km_figures",
    "subgroup_summary",
    "trial_summary",
]

#: Endpoints known to the trial runner, in reporting order.
ENDPOINTS = ("rfs", "pfs", "os", "css")
#: Human-readable endpoint names (figure titles).
ENDPOINT_LABELS = {
    "rfs": "Recurrence-free survival",
    "pfs": "Progression-free survival",
    "os": "Overall survival",
    "css": "Cancer-specific survival",
}
_Y_LABELS = {"rfs": "Proportion recurrence-free", "pfs": "Proportion progression-free", "os": "Proportion alive",
            "css": "Proportion without cancer death"}
#: Landmark times (months) of ``survival_at`` in :func:`endpoint_summary`.
LANDMARK_MONTHS = (12, 24, 36, 60)
#: Line colours of the arms, in arm order (colour-blind safe).
ARM_COLOURS = ("#2b6cb0", "#e4572e", "#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#a6761d")


# --------------------------------------------------------------------------- helpers

def _num(value: Any) -> float | None:
    """A plain finite float, or None (for NaN, +-inf and None)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def format_median(median: float | None, low: float | None, high: float | None, unit: str = "months") -> str:
    """A Kaplan-Meier median with its 95 % CI in words: the one formatter of "not reached".

    >>> format_median(26.05, 21.5, 31.8)
    'median 26.1 months (95 % CI 21.5-31.8)'
    >>> format_median(43.0, 30.6, None)
    'median 43.0 months (95 % CI 30.6-not reached)'
    >>> format_median(None, 40.2, None)
    'median not reached (95 % CI from 40.2 months)'
    >>> format_median(None, None, None)
    'median not reached'
    """
    ci_low = format_estimate(low, missing="?")
    if _is_missing(median):
        return "median not reached" if ci_low == "?" else f"median not reached (95 % CI from {ci_low} {unit})"
    return f"median {median:.1f} {unit} (95 % CI {ci_low}-{format_estimate(high, missing='not reached')})"


def format_estimate(value: float | None, spec: str = ".1f", *, missing: str = "not estimable",
                    unit: str = "") -> str:
    """A statistic in words, or ``missing`` where it cannot be estimated (None, NaN or infinite).

    The one rule for what the terminal prints in place of a missing number:
    "not estimable" for a hazard ratio or p-value, "not reached" for a median
    (:func:`format_median` for a median with its CI).

    >>> format_estimate(0.7, ".2f")
    '0.70'
    >>> format_estimate(None, ".2f")
    'not estimable'
    >>> format_estimate(float("inf"), missing="not reached", unit=" months")
    'not reached'
    >>> format_estimate(30.08, unit=" months")
    '30.1 months'
    """
    if _is_missing(value):
        return missing
    return f"{format(value, spec)}{unit}"


def _is_missing(value: float | None) -> bool:
    """None, NaN or infinite: a statistic that could not be estimated."""
    return value is None or not math.isfinite(float(value))


def format_hr(hr: float | None, low: float | None, high: float | None, p: float | None) -> str:
    """A hazard ratio with its 95 % CI and log-rank p, or "HR not estimable" (no events in an arm).

    >>> format_hr(0.7, 0.55, 0.89, 0.0031)
    'HR 0.70 (95 % CI 0.55-0.89), log-rank p 0.0031'
    >>> format_hr(None, None, None, None)
    'HR not estimable'
    """
    if _is_missing(hr):
        return "HR not estimable"
    return (f"HR {hr:.2f} (95 % CI {format_estimate(low, '.2f', missing='?')}-"
            f"{format_estimate(high, '.2f', missing='?')}), log-rank p {format_estimate(p, '.3g')}")


def endpoint_columns(endpoint: str) -> tuple[str, str]:
    """The ``(time, event)`` column names of an endpoint.

    Parameters
    ----------
    endpoint : str
        Endpoint name, e.g. ``"rfs"``.

    Returns
    -------
    tuple of str
        ``(f"{endpoint}_months", f"{endpoint}_event")``.
    """
    return f"{endpoint}_months", f"{endpoint}_event"


def _present_endpoints(patients: pd.DataFrame) -> list[str]:
    return [e for e in ENDPOINTS if all(c in patients.columns for c in endpoint_columns(e))]


def _endpoint_data(patients: pd.DataFrame, endpoint: str) -> pd.DataFrame:
    """Validated ``arm``, ``T`` (months) and ``E`` (bool) of one endpoint."""
    t_col, e_col = endpoint_columns(endpoint)
    missing = [c for c in ("arm", t_col, e_col) if c not in patients.columns]
    if missing:
        raise KeyError(f"endpoint {endpoint!r}: patient table has no column(s) {missing}")
    times = pd.to_numeric(patients[t_col], errors="raise").astype(float)
    if times.isna().any() or (times < 0).any() or np.isinf(times).any():
        raise ValueError(f"{t_col} must be finite and non-negative (NaN, negative or infinite times found)")
    events = patients[e_col]
    if events.isna().any():
        raise ValueError(f"{e_col} has missing values")
    return pd.DataFrame({"arm": patients["arm"].astype(str), "T": times, "E": events.astype(bool)},
                        index=patients.index)


def _arm_order(data: pd.DataFrame, arms: Sequence[str] | None, reference_arm: str | None) -> tuple[list[str], str]:
    arm_list = list(pd.unique(data["arm"])) if arms is None else [str(a) for a in arms]
    if not arm_list:
        raise ValueError("no arms to analyse")
    if len(set(arm_list)) != len(arm_list):
        raise ValueError(f"arms repeated: {arm_list}")
    ref = arm_list[0] if reference_arm is None else str(reference_arm)
    if ref not in arm_list:
        raise ValueError(f"reference arm {ref!r} is not among the arms {arm_list}")
    return arm_list, ref


def _fit_km(data: pd.DataFrame, label: str) -> KaplanMeierFitter | None:
    """Kaplan-Meier fit of one arm's rows (None for an empty arm)."""
    if data.empty:
        return None
    return KaplanMeierFitter(label=label).fit(data["T"].to_numpy(), data["E"].to_numpy())


def _median(kmf: KaplanMeierFitter | None) -> tuple[float | None, float | None, float | None]:
    """Median and its 95 % CI; None where not reached / unbounded."""
    if kmf is None:
        return None, None, None
    ci = median_survival_times(kmf.confidence_interval_)
    return _num(kmf.median_survival_time_), _num(ci.iloc[0, 0]), _num(ci.iloc[0, 1])


def _first_sentence(message: str) -> str:
    text = " ".join(str(message).split())
    cut = text.find(". ")
    return text if cut < 0 else text[: cut + 1]


#: Results of :func:`_compare` by content (a trial's summary and its KM figures compare the same arms:
#: the Cox fits are made once). Small: the latest comparisons only.
_COMPARISONS: dict[bytes, dict[str, Any]] = {}
_COMPARISONS_KEPT = 64


def _compare(arm_data: pd.DataFrame, ref_data: pd.DataFrame, arm: str, ref: str) -> dict[str, Any]:
    """Cox hazard ratio (arm vs ref), its 95 % CI, Wald p and the log-rank p (cached by content)."""
    digest = hashlib.sha256()
    for part in (arm_data["T"], arm_data["E"], ref_data["T"], ref_data["E"]):
        values = np.ascontiguousarray(part.to_numpy(dtype=np.float64))
        digest.update(values.shape[0].to_bytes(8, "little") + values.tobytes())
    digest.update(f"{arm}\0{ref}".encode())
    key = digest.digest()
    if key not in _COMPARISONS:
        if len(_COMPARISONS) >= _COMPARISONS_KEPT:
            _COMPARISONS.pop(next(iter(_COMPARISONS)))
        _COMPARISONS[key] = _compare_uncached(arm_data, ref_data, arm, ref)
    return dict(_COMPARISONS[key])


def _compare_uncached(arm_data: pd.DataFrame, ref_data: pd.DataFrame, arm: str, ref: str) -> dict[str, Any]:
    out: dict[str, Any] = {"hr": None, "hr_ci_low": None, "hr_ci_high": None, "logrank_p": None, "cox_p": None}
    notes: list[str] = []
    n_arm, n_ref = len(arm_data), len(ref_data)
    ev_arm, ev_ref = int(arm_data["E"].sum()), int(ref_data["E"].sum())
    if n_arm == 0 or n_ref == 0:
        out["note"] = f"no patients in arm {arm if n_arm == 0 else ref!r}: no comparison"
        return out
    if ev_arm + ev_ref == 0:
        out["note"] = "no events in either arm: hazard ratio and log-rank test not defined"
        return out

    test = logrank_test(arm_data["T"], ref_data["T"], event_observed_A=arm_data["E"], event_observed_B=ref_data["E"])
    out["logrank_p"] = _num(test.p_value)

    if ev_arm == 0 or ev_ref == 0:
        empty = arm if ev_arm == 0 else ref
        notes.append(f"no events in arm {empty!r}: Cox hazard ratio not estimable (monotone likelihood)")
    else:
        frame = pd.DataFrame({
            "T": np.r_[ref_data["T"].to_numpy(), arm_data["T"].to_numpy()],
            "E": np.r_[ref_data["E"].to_numpy(), arm_data["E"].to_numpy()],
            "treat": np.r_[np.zeros(n_ref), np.ones(n_arm)],
        })
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                cph = CoxPHFitter().fit(frame, duration_col="T", event_col="E")
            except (ConvergenceError, np.linalg.LinAlgError, ValueError, ZeroDivisionError) as exc:
                cph = None
                notes.append(f"Cox fit failed ({type(exc).__name__}): {_first_sentence(str(exc))}")
        convergence = [w for w in caught if issubclass(w.category, ConvergenceWarning | RuntimeWarning)]
        if cph is not None:
            row = cph.summary.loc["treat"]
            hr, lo, hi = _num(row["exp(coef)"]), _num(row["exp(coef) lower 95%"]), _num(row["exp(coef) upper 95%"])
            degenerate = (hr is None or lo is None or hi is None or lo == 0.0 or abs(float(row["coef"])) > 15.0)
            if degenerate:
                notes.append("Cox hazard ratio degenerate (unbounded or zero confidence limit)")
            else:
                out.update(hr=hr, hr_ci_low=lo, hr_ci_high=hi, cox_p=_num(row["p"]))
        for w in convergence:
            notes.append(f"lifelines {w.category.__name__}: {_first_sentence(str(w.message))}")
    if notes:
        out["note"] = "; ".join(dict.fromkeys(notes))
    return out


def _format_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    if p < 1e-4:
        return "< 0.0001"
    if p < 0.001:
        return f"= {p:.1e}"
    return f"= {p:.3f}" if p < 0.1 else f"= {p:.2f}"


# --------------------------------------------------------------------------- summaries

def endpoint_summary(patients: pd.DataFrame, endpoint: str, *, arms: Sequence[str] | None = None,
                     reference_arm: str | None = None, tau_months: float | None = None,
                     landmarks_months: Iterable[float] = LANDMARK_MONTHS,
                     follow_up_months: float | None = None) -> dict[str, Any]:
    """Kaplan-Meier, log-rank, Cox and RMST summary of one endpoint, per arm.

    Parameters
    ----------
    patients : pandas.DataFrame
        One row per patient and arm with ``arm``, ``{endpoint}_months`` and
        ``{endpoint}_event``.
    endpoint : str
        ``"rfs"``, ``"pfs"`` or ``"os"`` (any name whose two columns exist).
    arms : sequence of str, optional
        Arms to report, in order. Default: the order in which they first
        appear in ``patients``. An arm listed but absent gets ``n = 0``.
    reference_arm : str, optional
        Arm every other arm is compared against. Default: the first arm.
    tau_months : float, optional
        Horizon of the restricted mean survival time. Default: the smallest
        of the arms' maximum follow-up times (so no arm's KM curve is
        extrapolated).
    landmarks_months : iterable of float, optional
        Times of ``survival_at`` (default 12, 24, 36 and 60 months); a time
        beyond an arm's longest follow-up is left out for that arm, unless
        it is within ``follow_up_months``.
    follow_up_months : float, optional
        The trial's end of follow-up: a landmark up to it but past an arm's
        last observed time (60 months in a 60-month trial whose last patient
        was censored at 59.7) is reported at that last time, which
        ``survival_at_time`` then gives.

    Returns
    -------
    dict
        JSON-ready::

            {"endpoint": E, "reference_arm": ref, "tau_months": tau,
             "arms": {arm: {"n", "events", "median_months", "ci_low", "ci_high",
                            "rmst_months", "survival_at": {"12": s, ...}}},
             "comparisons": {f"{arm}_vs_{ref}": {"hr", "hr_ci_low", "hr_ci_high",
                                                 "logrank_p", "cox_p",
                                                 "rmst_diff_months"[, "note"]}}}

        ``None`` marks what cannot be estimated: a median not reached, an
        unbounded CI end, a hazard ratio when an arm has no events (then
        ``note`` says why), a log-rank p with no events at all.

    Raises
    ------
    KeyError
        When the endpoint's columns or ``arm`` are missing.
    ValueError
        On NaN/negative times, missing event flags, or an unknown reference arm.
    """
    data = _endpoint_data(patients, endpoint)
    arm_list, ref = _arm_order(data, arms, reference_arm)
    groups = {arm: data[data["arm"] == arm] for arm in arm_list}
    fitters = {arm: _fit_km(groups[arm], arm) for arm in arm_list}

    if tau_months is None:
        horizons = [float(g["T"].max()) for g in groups.values() if not g.empty]
        tau = min(horizons) if horizons else None
    else:
        tau = float(tau_months)
        if not tau > 0:
            raise ValueError(f"tau_months must be positive, got {tau_months}")
    landmarks = sorted(float(t) for t in landmarks_months)

    arm_stats: dict[str, dict[str, Any]] = {}
    for arm in arm_list:
        kmf, group = fitters[arm], groups[arm]
        median, lo, hi = _median(kmf)
        stats: dict[str, Any] = {"n": len(group), "events": int(group["E"].sum()), "median_months": median,
                                 "ci_low": lo, "ci_high": hi, "rmst_months": None, "survival_at": {}}
        if kmf is not None:
            if tau is not None:
                stats["rmst_months"] = _num(restricted_mean_survival_time(kmf, t=tau))
            follow = float(group["T"].max())
            limit = follow if follow_up_months is None else max(follow, float(follow_up_months))
            at = [t for t in landmarks if t <= limit]
            if at:
                values = kmf.survival_function_at_times([min(t, follow) for t in at]).to_numpy()
                stats["survival_at"] = {f"{t:g}": _num(s) for t, s in zip(at, values, strict=True)}
                clipped = {f"{t:g}": follow for t in at if t > follow}
                if clipped:
                    stats["survival_at_time"] = clipped
        arm_stats[arm] = stats

    comparisons: dict[str, dict[str, Any]] = {}
    for arm in arm_list:
        if arm == ref:
            continue
        comp = _compare(groups[arm], groups[ref], arm, ref)
        rmst_a, rmst_r = arm_stats[arm]["rmst_months"], arm_stats[ref]["rmst_months"]
        comp["rmst_diff_months"] = None if rmst_a is None or rmst_r is None else rmst_a - rmst_r
        if "note" in comp:  # keep the note last
            comp["note"] = comp.pop("note")
        comparisons[f"{arm}_vs_{ref}"] = comp

    return {"endpoint": endpoint, "reference_arm": ref, "tau_months": _num(tau), "arms": arm_stats,
            "comparisons": comparisons}


def trial_summary(patients: pd.DataFrame, endpoints: Iterable[str] | None = None, **kw: Any) -> dict[str, Any]:
    """:func:`endpoint_summary` of every endpoint of a trial.

    Parameters
    ----------
    patients : pandas.DataFrame
        The trial's patient table.
    endpoints : iterable of str, optional
        Endpoints to summarise. Default: those of ``rfs``, ``pfs`` and ``os``
        whose ``_months`` and ``_event`` columns are both present.
    **kw
        Passed to :func:`endpoint_summary` (``arms``, ``reference_arm``,
        ``tau_months``, ``landmarks_months``).

    Returns
    -------
    dict
        ``{endpoint: endpoint_summary(...)}``, JSON-ready.
    """
    chosen = _present_endpoints(patients) if endpoints is None else list(endpoints)
    return {e: endpoint_summary(patients, e, **kw) for e in chosen}


#: A subgroup is compared only with at least this many patients in each arm and events in both together;
#: smaller ones are reported as too few, with no hazard ratio or p-value.
SUBGROUP_MIN_PATIENTS = 20
SUBGROUP_MIN_EVENTS = 10


def subgroup_summary(patients: pd.DataFrame, endpoint: str, by: str, *,
                     reference_arm: str | None = None) -> pd.DataFrame:
    """Treatment effect within each level of a categorical covariate.

    Parameters
    ----------
    patients : pandas.DataFrame
        The trial's patient table.
    endpoint : str
        Endpoint name, e.g. ``"rfs"``.
    by : str
        Categorical column, e.g. ``"primary_size_gt_5cm"`` or
        ``"infusions_group"``. Rows where it is missing are left out. Levels
        come in category order for a categorical column, sorted otherwise.
    reference_arm : str, optional
        Default: the first arm in the table.

    Returns
    -------
    pandas.DataFrame
        One row per level and non-reference arm (so one row per level in a
        two-arm trial), with columns ``by``, ``level``, ``arm``,
        ``reference_arm``, ``n``, ``n_ref``, ``events``, ``events_ref``,
        ``median_months``, ``median_ref_months`` (NaN: not reached), ``hr``,
        ``hr_ci_low``, ``hr_ci_high``, ``logrank_p``, ``cox_p`` and ``note``. A level
        with fewer than :data:`SUBGROUP_MIN_PATIENTS` patients in an arm or
        :data:`SUBGROUP_MIN_EVENTS` events in both is not compared (no HR, no p;
        ``note`` says so).
    """
    if by not in patients.columns:
        raise KeyError(f"patient table has no column {by!r}")
    data = _endpoint_data(patients, endpoint)
    arm_list, ref = _arm_order(data, None, reference_arm)
    column = patients[by]
    if isinstance(column.dtype, pd.CategoricalDtype):
        levels = [c for c in column.cat.categories if (column == c).any()]
    else:
        levels = list(pd.unique(column.dropna()))
        try:
            levels = sorted(levels)
        except TypeError:
            pass
    rows = []
    for level in levels:
        sub = data[(column == level).to_numpy()]
        ref_data = sub[sub["arm"] == ref]
        ref_median = _median(_fit_km(ref_data, ref))[0]
        for arm in arm_list:
            if arm == ref:
                continue
            arm_data = sub[sub["arm"] == arm]
            events = int(arm_data["E"].sum()) + int(ref_data["E"].sum())
            if min(len(arm_data), len(ref_data)) < SUBGROUP_MIN_PATIENTS or events < SUBGROUP_MIN_EVENTS:
                comp = {"hr": None, "hr_ci_low": None, "hr_ci_high": None, "logrank_p": None, "cox_p": None,
                        "note": f"too few patients to compare (n = {len(arm_data)} and {len(ref_data)}, "
                                f"{events} events; needs {SUBGROUP_MIN_PATIENTS} per arm and "
                                f"{SUBGROUP_MIN_EVENTS} events)"}
            else:
                comp = _compare(arm_data, ref_data, arm, ref)
            rows.append({
                "by": by, "level": level.item() if isinstance(level, np.generic) else level,
                "arm": arm, "reference_arm": ref,
                "n": len(arm_data), "n_ref": len(ref_data),
                "events": int(arm_data["E"].sum()), "events_ref": int(ref_data["E"].sum()),
                "median_months": _median(_fit_km(arm_data, arm))[0], "median_ref_months": ref_median,
                "hr": comp["hr"], "hr_ci_low": comp["hr_ci_low"], "hr_ci_high": comp["hr_ci_high"],
                "logrank_p": comp["logrank_p"], "cox_p": comp["cox_p"], "note": comp.get("note", ""),
            })
    columns = ["by", "level", "arm", "reference_arm", "n", "n_ref", "events", "events_ref", "median_months",
               "median_ref_months", "hr", "hr_ci_low", "hr_ci_high", "logrank_p", "cox_p", "note"]
    table = pd.DataFrame(rows, columns=columns)
    numeric = ["median_months", "median_ref_months", "hr", "hr_ci_low", "hr_ci_high", "logrank_p", "cox_p"]
    table[numeric] = table[numeric].astype(float)  # None -> NaN
    return table


# --------------------------------------------------------------------------- figures

def _month_step(horizon: float) -> float:
    for step in (1, 3, 6, 12, 24, 60):
        if horizon / step <= 10:
            return step
    return 120


#: Size (inches) of a Kaplan-Meier figure: the plot about 7 in wide and, on its right, the legend with
#: the arms and the hazard ratios.
KM_FIGSIZE = (12.5, 5.8)


def plot_km(patients: pd.DataFrame, endpoint: str, *, arms: Sequence[str] | None = None,
            reference_arm: str | None = None, ax: Axes | None = None, at_risk: bool = True,
            title: str | None = None, colors: Sequence[str] | Mapping[str, str] | None = None) -> Axes:
    """Kaplan-Meier curves of one endpoint, one per arm, with the trial statistics.

    Draws each arm's KM estimate with its 95 % confidence band and censoring
    ticks, dotted lines at each reached median, a box with the hazard ratio
    (95 % CI) and log-rank p of every arm against the reference arm, and
    (``at_risk``) the number at risk under the time axis
    (:func:`lifelines.plotting.add_at_risk_counts`).

    Parameters
    ----------
    patients : pandas.DataFrame
        The trial's patient table.
    endpoint : str
        ``"rfs"``, ``"pfs"`` or ``"os"``.
    arms : sequence of str, optional
        Arms to draw, in order (default: order of appearance).
    reference_arm : str, optional
        Arm of the hazard ratios (default: the first arm).
    ax : matplotlib.axes.Axes, optional
        Axes to draw into; a new figure (:data:`KM_FIGSIZE`, via pyplot) when
        None. With a given axes the at-risk table hangs below it and the
        legend to its right: leave room (``fig.tight_layout()`` makes it), or save with ``bbox_inches="tight"``.
    at_risk : bool, default True
        Add the at-risk table.
    title : str, optional
        Default: the endpoint's name (e.g. "Recurrence-free survival").
    colors : sequence or mapping of str, optional
        Line colours, by arm order or by arm name.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn into. Each arm's curve is the line labelled with the
        arm's legend label (``"<arm> (n=..)"``); helper lines have labels
        starting with ``_``.
    """
    from matplotlib.ticker import MultipleLocator, PercentFormatter

    data = _endpoint_data(patients, endpoint)
    arm_list, ref = _arm_order(data, arms, reference_arm)
    if ax is None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=KM_FIGSIZE)
        owns_figure = True
    else:
        fig, owns_figure = ax.figure, False

    if colors is None:
        palette = {arm: ARM_COLOURS[i % len(ARM_COLOURS)] for i, arm in enumerate(arm_list)}
    elif isinstance(colors, Mapping):
        palette = {arm: colors.get(arm, ARM_COLOURS[i % len(ARM_COLOURS)]) for i, arm in enumerate(arm_list)}
    else:
        palette = {arm: colors[i % len(colors)] for i, arm in enumerate(arm_list)}

    groups = {arm: data[data["arm"] == arm] for arm in arm_list}
    fitters: list[KaplanMeierFitter] = []
    medians: list[float] = []
    horizon = float(data.loc[data["arm"].isin(arm_list), "T"].max()) if not data.empty else 1.0
    for arm in arm_list:
        group = groups[arm]
        if group.empty:
            continue
        kmf = _fit_km(group, arm)
        median = _median(kmf)[0]
        med_text = "not reached" if median is None else f"{median:.1f} mo"
        label = f"{arm} (n={len(group)}, {int(group['E'].sum())} events; median {med_text})"
        colour = palette[arm]
        kmf.plot_survival_function(ax=ax, label=label, ci_show=True, ci_alpha=0.15, show_censors=True, color=colour,
                                   lw=1.8, censor_styles={"marker": "|", "ms": 5, "mew": 0.8})
        if median is not None:
            ax.plot([median, median], [0.0, 0.5], ls=":", lw=1.1, color=colour, label=f"_median {arm}")
            medians.append(median)
        fitters.append(kmf)
    if medians:
        ax.plot([0.0, max(medians)], [0.5, 0.5], ls=":", lw=1.0, color="#555555", label="_median")

    x_max = horizon * 1.02
    step = _month_step(horizon)
    ticks = [float(t) for t in np.arange(0.0, x_max + 1e-9, step)]
    ax.set_xlim(0, x_max)
    ax.set_ylim(0, 1.02)
    ax.set_xticks(ticks)
    ax.yaxis.set_major_locator(MultipleLocator(0.2))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.set_xlabel("Time (months)")
    ax.set_ylabel(_Y_LABELS.get(endpoint, "Proportion event-free"))
    ax.set_title(ENDPOINT_LABELS.get(endpoint, endpoint.upper()) if title is None else title, loc="left",
                 fontweight="bold")
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e5e5e5", lw=0.6)
    ax.set_axisbelow(True)

    # the HR / log-rank lines are the legend's title: one box, outside the axes on the right, so that it
    # cannot cover a curve, a band or a censoring tick whatever the number of arms (loc="best" inside
    # the axes covered curves with 4 arms)
    stats = []
    for arm in arm_list:
        if arm == ref or groups[arm].empty or groups[ref].empty:
            continue
        comp = _compare(groups[arm], groups[ref], arm, ref)
        prefix = f"{arm} vs {ref}: " if len(arm_list) > 2 else ""
        if comp["hr"] is None:
            hr_text = "HR not estimable"
        else:
            hr_text = f"HR {comp['hr']:.2f} (95% CI {comp['hr_ci_low']:.2f}–{comp['hr_ci_high']:.2f})"
        stats.append(f"{prefix}{hr_text}, log-rank p {_format_p(comp['logrank_p'])}")
    if fitters:
        legend = ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                           title="\n".join(stats) or None, title_fontsize="small", fontsize="small",
                           alignment="left", frameon=True, framealpha=0.92, edgecolor="#cccccc", fancybox=False)
        legend.get_frame().set_linewidth(0.6)

    if at_risk and fitters:
        from lifelines.plotting import add_at_risk_counts

        names = [arm for arm in arm_list if not groups[arm].empty]
        add_at_risk_counts(*fitters, labels=names, rows_to_show=["At risk"], xticks=ticks, ax=ax, fig=fig,
                           fontsize="small")
    if owns_figure:
        fig.tight_layout()
    return ax


def save_km_figures(patients: pd.DataFrame, out_dir: str | Path, *, endpoints: Iterable[str] | None = None,
                    dpi: int = 200, **plot_kw: Any) -> list[Path]:
    """Write ``km_{endpoint}.png`` for every endpoint of a trial.

    Draws on bare :class:`matplotlib.figure.Figure` objects (no pyplot state,
    any backend).

    Parameters
    ----------
    patients : pandas.DataFrame
        The trial's patient table.
    out_dir : str or Path
        Directory (created if needed).
    endpoints : iterable of str, optional
        Default: every endpoint whose columns are present.
    dpi : int, default 200
        Resolution of the PNGs.
    **plot_kw
        Passed to :func:`plot_km` (``arms``, ``reference_arm``, ``colors``, ...).

    Returns
    -------
    list of Path
        The files written, in endpoint order.
    """
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen = _present_endpoints(patients) if endpoints is None else list(endpoints)
    paths = []
    for endpoint in chosen:
        fig = Figure(figsize=KM_FIGSIZE)
        ax = fig.add_subplot()
        plot_km(patients, endpoint, ax=ax, **plot_kw)
        fig.tight_layout()  # (makes room for the legend and the at-risk table: no second draw to crop)
        path = out / f"km_{endpoint}.png"
        save_png(fig, path, dpi=dpi)
        paths.append(path)
    return paths

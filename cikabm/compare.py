"""Compare dosing schedules on one virtual cohort (common random numbers).

A comparison is a trial scenario whose arms are the schedules to compare:
:func:`comparison_scenario` builds those arms from schedule specs (preset
names, optionally with a dose multiplier and a number of cycles) and appends
them to, or puts them in place of, the scenario's arms. :func:`run_comparison`
runs every arm with :func:`cikabm.trial.run_trial` (Dask, resumable), so each
virtual patient (same seed, same patient id) has the same covariates and the
same tumour in every arm until the treatment differs. It then tabulates, per
arm, the median RFS (adjuvant) or PFS (advanced) with its 95 % CI, the hazard
ratio against the reference arm with its CI, the log-rank p and the infusions
received, and the treatment effect in subgroups.

Schedule specs ``NAME[*DOSE][xCYCLES]`` (``lee2015*0.5``: half dose;
``choi2018x2``: the Choi 2018 schedule twice) are those of
:func:`cikabm.schedules.parse_schedule_spec`.

The statistics are those of :mod:`cikabm.survival` (lifelines). Each arm is
analysed as its own cohort; with common random numbers the arms are positively
correlated, so the p-values and intervals are conservative for the paired
design.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from cikabm.io import save_png, writes_into_out
from cikabm.mechanism import add_mechanism_columns
from cikabm.params import Phase
from cikabm.schedules import (
    DEFAULT_DOSE_CELLS,
    SCHEDULE_NAMES,
    blood_level,
    dosing_days,
    parse_schedule_spec,
    repeated_phases,
    spec_name,
)
from cikabm.trial import TRIAL_OUTPUTS
from cikabm.trial_params import ArmParams, TrialScenario

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from cikabm.trial import TrialRun

__all__ = [
    "INFUSION_GROUP_EDGES",
    "Comparison",
    "add_infusion_groups",
    "comparison_endpoint",
    "comparison_scenario",
    "comparison_subgroups",
    "comparison_table",
    "plot_blood_levels",
    "plot_comparison",
    "plot_forest",
    "plot_medians",
    "run_comparison",
    "save_comparison_figure",
    "schedule_arm",
    "schedule_arms",
]

#: What ``cikabm compare`` writes into its output folder: a trial's files and the comparison's.
COMPARISON_OUTPUTS = (*TRIAL_OUTPUTS, "comparison.csv", "subgroups.csv", "comparison.png")
#: Upper ends of the "infusions received" groups: 0, 1-8, 9-16, then 17+.
INFUSION_GROUP_EDGES: tuple[int, ...] = (0, 8, 16)

#: Columns of :func:`comparison_table`, in order.
TABLE_COLUMNS = ("arm", "schedule", "dose_cells", "planned_infusions", "is_reference", "endpoint", "n",
                 "events", "median_months", "median_ci_low", "median_ci_high", "hr", "hr_ci_low",
                 "hr_ci_high", "logrank_p", "cox_p", "rmst_months", "rmst_diff_months", "infusions_mean",
                 "note")


# --------------------------------------------------------------------------- building the arms

def schedule_arm(schedule: str, *, dose_multiplier: float = 1.0, cycles: int = 1, name: str | None = None,
                 start_day: float = 0.0, dose_cells: float = DEFAULT_DOSE_CELLS) -> ArmParams:
    """One arm from a preset schedule.

    Parameters
    ----------
    schedule : str
        One of :data:`~cikabm.schedules.SCHEDULE_NAMES`.
    dose_multiplier : float, default 1.0
        Multiplies ``dose_cells``.
    cycles : int, default 1
        Times the whole schedule is given (more than 1 makes a ``custom``
        schedule of the repeated phases).
    name : str, optional
        Arm name. Default: ``"control"`` for ``none``, else the spec, e.g.
        ``"lee2015*0.5"``.
    start_day : float, default 0.0
        Day of the first infusion.
    dose_cells : float, default :data:`~cikabm.schedules.DEFAULT_DOSE_CELLS`
        Cells per infusion before the multiplier.

    Returns
    -------
    ArmParams
    """
    if schedule not in SCHEDULE_NAMES:
        raise ValueError(f"schedule {schedule!r} is not one of " + ", ".join(SCHEDULE_NAMES))
    arm_name = spec_name(schedule, dose_multiplier, cycles) if name is None else name
    if schedule == "none":
        return ArmParams(name=arm_name, schedule="none", start_day=float(start_day), dose_cells=float(dose_cells))
    fields: dict[str, Any] = {"name": arm_name, "start_day": float(start_day),
                              "dose_cells": float(dose_cells) * float(dose_multiplier)}
    if cycles == 1:
        fields["schedule"] = schedule
    else:
        phases = [Phase(count=int(c), interval_days=float(i)) for c, i in repeated_phases(schedule, cycles)]
        fields.update(schedule="custom", phases=phases)
    return ArmParams(**fields)


def _template(ts: TrialScenario | None) -> tuple[float, float]:
    """Start day and dose of the scenario's first treated arm (else the [dosing] defaults)."""
    if ts is not None:
        for arm in ts.arms:
            if arm.schedule != "none":
                return arm.start_day, arm.dose_cells
        return ts.dosing.start_day, ts.dosing.dose_cells
    return 0.0, DEFAULT_DOSE_CELLS


def schedule_arms(specs: Sequence[str], ts: TrialScenario | None = None, *,
                  dose_multipliers: Sequence[float] | None = None, cycles: Sequence[int] | None = None,
                  start_day: float | None = None, dose_cells: float | None = None) -> list[ArmParams]:
    """Arms from schedule specs.

    Parameters
    ----------
    specs : sequence of str
        Schedule specs (``NAME[*DOSE][xCYCLES]``, see :func:`~cikabm.schedules.parse_schedule_spec`).
    ts : TrialScenario, optional
        Gives the default start day and cells per infusion: those of its first
        treated arm.
    dose_multipliers, cycles : sequence, optional
        One per spec; multiply the spec's own dose multiplier and cycles.
    start_day, dose_cells : float, optional
        Override the defaults taken from ``ts``.

    Returns
    -------
    list of ArmParams
        One arm per spec, in order.

    Raises
    ------
    ValueError
        A bad spec (naming it), lists of the wrong length, or two specs that
        make the same arm name.
    """
    specs = [str(s) for s in specs]
    if not specs:
        raise ValueError("no schedules given")
    for label, values in (("dose_multipliers", dose_multipliers), ("cycles", cycles)):
        if values is not None and len(values) != len(specs):
            raise ValueError(f"{label}: {len(values)} values for {len(specs)} schedules")
    default_start, default_dose = _template(ts)
    start = default_start if start_day is None else float(start_day)
    dose = default_dose if dose_cells is None else float(dose_cells)
    arms = []
    for i, spec in enumerate(specs):
        name, mult, n_cycles = parse_schedule_spec(spec)
        if dose_multipliers is not None:
            mult *= float(dose_multipliers[i])
        if cycles is not None:
            n_cycles *= int(cycles[i])
        arms.append(schedule_arm(name, dose_multiplier=mult, cycles=n_cycles, start_day=start, dose_cells=dose))
    names = [a.name for a in arms]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"schedules give the same arm more than once: {repeated}")
    return arms


def comparison_scenario(ts: TrialScenario, schedules: Sequence[str] | Sequence[ArmParams] | None = None, *,
                        mode: Literal["replace", "append"] = "replace", reference_arm: str | None = None,
                        **arm_kw: Any) -> TrialScenario:
    """The trial scenario whose arms are the schedules to compare.

    Parameters
    ----------
    ts : TrialScenario
        Cohort, setting and region defaults (and its arms, kept with
        ``mode="append"`` or when ``schedules`` is None).
    schedules : sequence of str or ArmParams, optional
        Schedule specs (see :func:`schedule_arms`) or ready-made arms.
        None: compare the scenario's own arms.
    mode : {"replace", "append"}
        Put the new arms in place of the scenario's arms, or after them.
    reference_arm : str, optional
        Arm the others are compared with. Default: the scenario's reference
        arm when it is still there, else the ``none`` arm (``control``), else
        the first arm.
    **arm_kw
        Passed to :func:`schedule_arms` (``dose_multipliers``, ``cycles``,
        ``start_day``, ``dose_cells``).

    Returns
    -------
    TrialScenario
        Validated; its scenario name gets a ``_comparison`` suffix.

    Raises
    ------
    ValueError
        Bad specs, an unknown mode, arm names that clash, or an unknown
        reference arm.
    """
    if mode not in ("replace", "append"):
        raise ValueError(f"mode = {mode!r}: must be 'replace' or 'append'")
    if schedules is None:
        arms = list(ts.arms)
    else:
        items = list(schedules)
        if items and all(isinstance(a, ArmParams) for a in items):
            new = [a for a in items if isinstance(a, ArmParams)]
        elif any(isinstance(a, ArmParams) for a in items):
            raise ValueError("schedules: give either specs (str) or arms (ArmParams), not both")
        else:
            new = schedule_arms([str(s) for s in items], ts, **arm_kw)
        arms = [*ts.arms, *new] if mode == "append" else new
    names = [a.name for a in arms]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ValueError(f"arm names used twice: {clash} (the scenario already has arms {[a.name for a in ts.arms]})")
    if reference_arm is None:
        if ts.trial.reference_arm in names:
            reference_arm = ts.trial.reference_arm
        else:
            untreated = [a.name for a in arms if a.schedule == "none"]
            reference_arm = untreated[0] if untreated else names[0]
    if reference_arm not in names:
        raise ValueError(f"reference arm {reference_arm!r} is not one of the arms {names}")
    # Only the keys the file set: a trial refuses a file that sets the keys it replaces per patient.
    data = ts.model_dump(mode="python", exclude_unset=True)
    data["arms"] = [a.model_dump(mode="python") for a in arms]
    data.setdefault("trial", {})["reference_arm"] = reference_arm
    if schedules is not None and not ts.scenario.name.endswith("_comparison"):
        data.setdefault("scenario", {})["name"] = ts.scenario.name + "_comparison"
    return TrialScenario.model_validate(data, strict=False)


# --------------------------------------------------------------------------- tables

def comparison_endpoint(patients: pd.DataFrame, setting: str | None = None) -> str:
    """``"rfs"`` for an adjuvant trial, ``"pfs"`` for an advanced one.

    Parameters
    ----------
    patients : pandas.DataFrame
        The patient table (its columns decide when ``setting`` is None).
    setting : {"adjuvant", "advanced"}, optional
    """
    if setting is not None:
        return "rfs" if setting == "adjuvant" else "pfs"
    for endpoint in ("rfs", "pfs"):
        if f"{endpoint}_months" in patients.columns:
            return endpoint
    raise KeyError("patient table has neither rfs_months nor pfs_months")


def comparison_table(patients: pd.DataFrame, endpoint: str | None = None, *,
                     arms: Sequence[ArmParams] | Sequence[str] | None = None,
                     reference_arm: str | None = None) -> pd.DataFrame:
    """One row per arm: median with 95 % CI, HR vs the reference with CI, log-rank p, infusions.

    Parameters
    ----------
    patients : pandas.DataFrame
        Patient table of :func:`cikabm.trial.run_trial` (one row per patient
        and arm, with ``infusions_received``).
    endpoint : str, optional
        Default: ``rfs`` when present, else ``pfs``.
    arms : sequence of ArmParams or str, optional
        Arms in order (default: order of appearance). With ArmParams the
        schedule, dose and planned infusions are filled in.
    reference_arm : str, optional
        Default: the first arm.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TABLE_COLUMNS` (then, in the adjuvant setting, the
        mechanism columns of :func:`cikabm.mechanism.add_mechanism_columns`
        before ``note``); NaN where not estimable (a median not
        reached, an unbounded CI end, the HR of the reference arm itself).
        ``infusions_mean`` counts infusions received before the event or
        censoring (intention to treat: failed manufactures count 0).
    """
    from cikabm.survival import endpoint_summary

    endpoint = comparison_endpoint(patients) if endpoint is None else endpoint
    arm_params = {a.name: a for a in arms if isinstance(a, ArmParams)} if arms is not None else {}
    names = None if arms is None else [a.name if isinstance(a, ArmParams) else str(a) for a in arms]
    summary = endpoint_summary(patients, endpoint, arms=names, reference_arm=reference_arm)
    ref = summary["reference_arm"]
    rows = []
    for arm, stats in summary["arms"].items():
        comp = summary["comparisons"].get(f"{arm}_vs_{ref}", {})
        params = arm_params.get(arm)
        received = patients.loc[patients["arm"].astype(str) == arm, "infusions_received"]
        schedule = None
        if params is not None:
            schedule = params.schedule
            if params.schedule == "custom":
                schedule = "custom: " + ", ".join(f"{p.count}x{p.interval_days:g}d" for p in params.phases)
        rows.append({
            "arm": arm, "schedule": schedule,
            "dose_cells": None if params is None or params.schedule == "none" else params.dose_cells,
            "planned_infusions": None if params is None else len(dosing_days(params)),
            "is_reference": arm == ref, "endpoint": endpoint, "n": stats["n"], "events": stats["events"],
            "median_months": stats["median_months"], "median_ci_low": stats["ci_low"],
            "median_ci_high": stats["ci_high"], "hr": comp.get("hr"), "hr_ci_low": comp.get("hr_ci_low"),
            "hr_ci_high": comp.get("hr_ci_high"), "logrank_p": comp.get("logrank_p"), "cox_p": comp.get("cox_p"),
            "rmst_months": stats["rmst_months"], "rmst_diff_months": comp.get("rmst_diff_months"),
            "infusions_mean": float(received.mean()) if len(received) else None, "note": comp.get("note", ""),
        })
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    numeric = ["dose_cells", "median_months", "median_ci_low", "median_ci_high", "hr", "hr_ci_low", "hr_ci_high",
               "logrank_p", "cox_p", "rmst_months", "rmst_diff_months", "infusions_mean"]
    table[numeric] = table[numeric].astype(float)
    table["planned_infusions"] = table["planned_infusions"].astype("Int64")
    return add_mechanism_columns(table, patients, ref)  # cures, delays, sources, OS (adjuvant)


def add_infusion_groups(patients: pd.DataFrame, edges: Sequence[int] = INFUSION_GROUP_EDGES,
                        column: str = "infusions_group") -> pd.DataFrame:
    """Add an ordered categorical ``column`` grouping ``infusions_received``.

    Parameters
    ----------
    patients : pandas.DataFrame
        Patient table with ``infusions_received``.
    edges : sequence of int, default (0, 8, 16)
        Increasing upper ends of the groups, the first 0: groups ``0``,
        ``1-8``, ``9-16`` and ``17+`` by default.
    column : str, default "infusions_group"

    Returns
    -------
    pandas.DataFrame
        A copy with the new column.
    """
    edges = [int(e) for e in edges]
    if not edges or edges[0] != 0 or any(b <= a for a, b in itertools.pairwise(edges)):
        raise ValueError(f"edges = {edges}: must start at 0 and increase")
    labels = ["0"] + [f"{a + 1}-{b}" if b > a + 1 else str(b) for a, b in itertools.pairwise(edges)]
    labels.append(f"{edges[-1] + 1}+")
    bins = [-np.inf, *[e + 0.5 for e in edges], np.inf]
    out = patients.copy()
    out[column] = pd.cut(out["infusions_received"], bins=bins, labels=labels, ordered=True)
    return out


def comparison_subgroups(patients: pd.DataFrame, endpoint: str | None = None, *,
                         reference_arm: str | None = None, by: Sequence[str] = ("primary_size_gt_5cm",),
                         infusion_edges: Sequence[int] | None = INFUSION_GROUP_EDGES) -> pd.DataFrame:
    """Treatment effect of every arm within subgroups (:func:`cikabm.survival.subgroup_summary`).

    Parameters
    ----------
    patients : pandas.DataFrame
        Patient table of a comparison.
    endpoint : str, optional
        Default: ``rfs`` when present, else ``pfs``.
    reference_arm : str, optional
        Default: the first arm.
    by : sequence of str, default ("primary_size_gt_5cm",)
        Baseline covariates (categorical columns), analysed as they are.
    infusion_edges : sequence of int or None, default (0, 8, 16)
        Also group by infusions received (see :func:`add_infusion_groups`);
        None to skip. Infusions received is not a baseline covariate (the
        reference arm gets none, and a patient who recurs early receives
        fewer), so each arm's group is set by what its patients received in
        that arm and compared with the *same* patients in the reference arm
        (common random numbers). Early recurrence cuts the infusions short, so
        low groups hold the fast-growing tumours: read them as a description
        of who received what, not as a dose-response.

    Returns
    -------
    pandas.DataFrame
        The rows of :func:`~cikabm.survival.subgroup_summary` for every
        grouping, one after the other (column ``by`` names the grouping,
        ``level`` the group).
    """
    from cikabm.survival import subgroup_summary

    endpoint = comparison_endpoint(patients) if endpoint is None else endpoint
    arm_names = [str(a) for a in pd.unique(patients["arm"])]
    ref = arm_names[0] if reference_arm is None else str(reference_arm)
    if ref not in arm_names:
        raise ValueError(f"reference arm {ref!r} is not among the arms {arm_names}")
    ordered = pd.concat([patients[patients["arm"] == ref], patients[patients["arm"] != ref]], ignore_index=True)
    tables = [subgroup_summary(ordered, endpoint, column, reference_arm=ref) for column in by]
    if infusion_edges is not None:
        grouped = add_infusion_groups(patients, infusion_edges)
        ref_rows = grouped[grouped["arm"] == ref].drop(columns="infusions_group")
        for arm in arm_names:
            if arm == ref:
                continue
            arm_rows = grouped[grouped["arm"] == arm]
            group_of = arm_rows.set_index("patient_id")["infusions_group"]
            paired = ref_rows.assign(infusions_group=ref_rows["patient_id"].map(group_of))
            paired["infusions_group"] = pd.Categorical(paired["infusions_group"],
                                                       categories=grouped["infusions_group"].cat.categories,
                                                       ordered=True)
            tables.append(subgroup_summary(pd.concat([paired, arm_rows], ignore_index=True), endpoint,
                                           "infusions_group", reference_arm=ref))
    tables = [t for t in tables if not t.empty]
    if not tables:
        return subgroup_summary(ordered.iloc[:0], endpoint, by[0] if by else "arm", reference_arm=ref)
    table = pd.concat(tables, ignore_index=True)
    table["level"] = table["level"].astype(str)
    return table


# --------------------------------------------------------------------------- running

@dataclass
class Comparison:
    """A finished comparison: the trial run, the scenario it ran, its tables."""

    scenario: TrialScenario
    run: TrialRun
    endpoint: str
    table: pd.DataFrame
    subgroups: pd.DataFrame

    @property
    def patients(self) -> pd.DataFrame:
        return self.run.patients


@writes_into_out
def run_comparison(ts: TrialScenario, out: str | Path, schedules: Sequence[str] | None = None, *,
                   mode: Literal["replace", "append"] = "replace", reference_arm: str | None = None,
                   patients: int | None = None, seed: int | None = None, workers: int | None = None,
                   scheduler: str | None = None, resume: bool = False, progress: bool | None = None,
                   **arm_kw: Any) -> Comparison:
    """Run every schedule on the same virtual cohort and write the comparison.

    Writes the files of :func:`cikabm.trial.run_trial` (``patients.parquet``,
    ``summary.json``, ``km_<endpoint>.png`` with all arms) and
    ``comparison.csv`` (:func:`comparison_table`), ``subgroups.csv``
    (:func:`comparison_subgroups`) and ``comparison.png``
    (:func:`plot_comparison`).

    Parameters
    ----------
    ts : TrialScenario
        Cohort and setting.
    out : str or Path
        Output directory.
    schedules : sequence of str, optional
        Schedule specs; None compares the scenario's own arms.
    mode, reference_arm, **arm_kw
        See :func:`comparison_scenario`.
    patients, seed, workers, scheduler, resume, progress
        See :func:`cikabm.trial.run_trial`.

    Returns
    -------
    Comparison
    """
    from cikabm.trial import run_trial

    cts = comparison_scenario(ts, schedules, mode=mode, reference_arm=reference_arm, **arm_kw)
    out = Path(out)
    run = run_trial(cts, out, patients=patients, seed=seed, workers=workers, scheduler=scheduler, resume=resume,
                    progress=progress)
    endpoint = comparison_endpoint(run.patients, cts.trial.setting)
    ref = cts.trial.reference_arm
    table = comparison_table(run.patients, endpoint, arms=cts.arms, reference_arm=ref)
    subgroups = comparison_subgroups(run.patients, endpoint, reference_arm=ref)
    table.to_csv(out / "comparison.csv", index=False, lineterminator="\n")
    subgroups.to_csv(out / "subgroups.csv", index=False, lineterminator="\n")
    save_comparison_figure(table, out / "comparison.png")
    return Comparison(scenario=cts, run=run, endpoint=endpoint, table=table, subgroups=subgroups)


# --------------------------------------------------------------------------- figures

def _colours(arms: Sequence[str]) -> dict[str, str]:
    from cikabm.survival import ARM_COLOURS

    return {arm: ARM_COLOURS[i % len(ARM_COLOURS)] for i, arm in enumerate(arms)}


def _new_axes(ax: Axes | None, size: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size)[1]


def plot_medians(table: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Median RFS/PFS with its 95 % CI, one row per arm.

    A median not reached is drawn as an arrow from the lower CI end (or the
    longest follow-up) with "not reached"; an unbounded upper CI end as an
    arrow to the right edge.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`comparison_table`.
    ax : matplotlib.axes.Axes, optional
        Axes to draw into (new pyplot figure when None).

    Returns
    -------
    matplotlib.axes.Axes
    """
    from cikabm.survival import ENDPOINT_LABELS

    ax = _new_axes(ax, (6.0, 0.6 * len(table) + 1.5))
    colours = _colours(list(table["arm"]))
    finite = table[["median_months", "median_ci_low", "median_ci_high"]].to_numpy(dtype=float)
    x_right = np.nanmax(finite) * 1.15 if np.isfinite(finite).any() else 1.0
    y = np.arange(len(table))[::-1]
    for yi, (_, row) in zip(y, table.iterrows(), strict=True):
        colour = colours[row["arm"]]
        med, lo, hi = row["median_months"], row["median_ci_low"], row["median_ci_high"]
        if np.isfinite(med):
            right = hi if np.isfinite(hi) else x_right
            ax.plot([lo if np.isfinite(lo) else med, right], [yi, yi], color=colour, lw=2)
            ax.plot([med], [yi], "o", color=colour, ms=7)
            if not np.isfinite(hi):
                ax.annotate("", xy=(x_right, yi), xytext=(med, yi),
                            arrowprops={"arrowstyle": "->", "color": colour})
            ax.annotate(f"{med:.1f}", (med, yi), textcoords="offset points", xytext=(0, 6), ha="center",
                        fontsize="small")
        else:
            start = lo if np.isfinite(lo) else 0.0
            ax.annotate("", xy=(x_right, yi), xytext=(start, yi), arrowprops={"arrowstyle": "->", "color": colour})
            ax.text(x_right, yi + 0.15, "not reached", ha="right", va="bottom", fontsize="small", color=colour)
    ax.set_yticks(y, [f"{a}{' (ref)' if r else ''}" for a, r in zip(table["arm"], table["is_reference"],
                                                                     strict=True)])
    ax.set_xlim(0, x_right * 1.02)
    ax.set_ylim(-0.7, len(table) - 0.3)
    endpoint = str(table["endpoint"].iloc[0]) if len(table) else ""
    ax.set_xlabel(f"Median {endpoint.upper()} (months), 95 % CI")
    ax.set_title(f"{ENDPOINT_LABELS.get(endpoint, endpoint)}: median", loc="left", fontweight="bold")
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", color="#e5e5e5", lw=0.6)
    ax.set_axisbelow(True)
    return ax


def plot_forest(table: pd.DataFrame, *, ax: Axes | None = None, label: str = "arm") -> Axes:
    """Hazard ratios vs the reference arm with 95 % CI (log scale), one row per arm.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`comparison_table`, or a subgroup table of
        :func:`comparison_subgroups` (then use ``label`` to say which
        columns name the rows, e.g. ``"level"``).
    ax : matplotlib.axes.Axes, optional
        Axes to draw into (new pyplot figure when None).
    label : str, default "arm"
        Column (or ``"by=level"`` style combination for subgroup tables:
        any column name) that labels the rows.

    Returns
    -------
    matplotlib.axes.Axes
    """
    ax = _new_axes(ax, (6.0, 0.6 * len(table) + 1.5))
    arms = list(pd.unique(table["arm"])) if "arm" in table else []
    if "reference_arm" in table and len(table):  # a subgroup table: keep the comparison's colours
        arms = [str(table["reference_arm"].iloc[0]), *arms]
    colours = _colours(arms)
    y = np.arange(len(table))[::-1]
    for yi, (_, row) in zip(y, table.iterrows(), strict=True):
        colour = colours.get(row.get("arm"), "#333333")
        if bool(row.get("is_reference", False)):
            ax.text(1.0, yi, "reference", ha="center", va="center", fontsize="small", color="#555555")
            continue
        hr, lo, hi = (float(row[c]) for c in ("hr", "hr_ci_low", "hr_ci_high"))
        if not np.isfinite(hr):
            ax.text(1.0, yi, "HR not estimable", ha="center", va="center", fontsize="small", color=colour)
            continue
        ax.plot([lo, hi], [yi, yi], color=colour, lw=2)
        ax.plot([hr], [yi], "s", color=colour, ms=7)
        p = row.get("logrank_p")
        p_text = "" if p is None or not np.isfinite(p) else f", p={p:.2g}"
        ax.annotate(f"{hr:.2f} ({lo:.2f}–{hi:.2f}){p_text}", (hr, yi), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize="small")
    ax.axvline(1.0, color="#555555", lw=0.8, ls="--")
    ax.set_xscale("log")
    values = table[["hr_ci_low", "hr_ci_high"]].to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    lo_x = min(0.5, values.min() * 0.8) if values.size else 0.5
    hi_x = max(2.0, values.max() * 1.25) if values.size else 2.0
    ax.set_xlim(lo_x, hi_x)
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    ticks = [t for t in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0) if lo_x <= t <= hi_x]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(y, [str(v) for v in table[label]])
    ax.set_ylim(-0.7, len(table) - 0.3)
    ref = table.loc[table["is_reference"], "arm"] if "is_reference" in table else table.get("reference_arm")
    ref_name = str(ref.iloc[0]) if ref is not None and len(ref) else "reference"
    ax.set_xlabel(f"Hazard ratio vs {ref_name} (95 % CI; < 1 favours the arm)")
    ax.set_title("Hazard ratio", loc="left", fontweight="bold")
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def plot_comparison(table: pd.DataFrame, *, axes: Sequence[Axes] | None = None) -> tuple[Axes, Axes]:
    """Medians with CI (left) and the HR forest plot (right) of a comparison.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`comparison_table`.
    axes : pair of matplotlib.axes.Axes, optional
        Where to draw; a new 11 x (0.6 n + 2) in pyplot figure when None.

    Returns
    -------
    tuple of Axes
    """
    if axes is None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11.0, 0.6 * len(table) + 2.0), sharey=False)
        fig.subplots_adjust(wspace=0.45)
    ax_med, ax_hr = axes
    plot_medians(table, ax=ax_med)
    plot_forest(table, ax=ax_hr)
    return ax_med, ax_hr


def save_comparison_figure(table: pd.DataFrame, path: str | Path, *, dpi: int = 200) -> Path:
    """Write :func:`plot_comparison` to ``path`` (bare Figure, no pyplot state).

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`comparison_table`.
    path : str or Path
        PNG file.
    dpi : int, default 200

    Returns
    -------
    Path
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, 0.6 * len(table) + 2.0))
    axes = fig.subplots(1, 2)
    plot_comparison(table, axes=axes)
    fig.tight_layout()
    path = Path(path)
    save_png(fig, path, dpi=dpi, bbox_inches="tight")
    return path


def plot_blood_levels(ts: TrialScenario, arms: Sequence[ArmParams] | None = None, *, days: float | None = None,
                      ax: Axes | None = None, per_homing: bool = False) -> Axes:
    """Blood CIK level over time of each arm's schedule (:func:`cikabm.schedules.blood_level`).

    Parameters
    ----------
    ts : TrialScenario
        Gives the persistence parameters (``[persistence]``) and, when
        ``arms`` is None, the arms.
    arms : sequence of ArmParams, optional
        Default: the scenario's arms (``none`` arms are skipped).
    days : float, optional
        Time axis length (default: last infusion of any arm + 90 days).
    ax : matplotlib.axes.Axes, optional
        Axes to draw into (new pyplot figure when None).
    per_homing : bool, default False
        Plot the expected CIK arrivals per lattice site per day (blood level
        times ``homing.cik_per_site_per_day``) instead of blood cells.

    Returns
    -------
    matplotlib.axes.Axes
    """
    all_arms = list(ts.arms if arms is None else arms)
    colours = _colours([a.name for a in all_arms])  # same colours as the KM and comparison plots
    arms = [a for a in all_arms if a.schedule != "none"]
    ax = _new_axes(ax, (7.5, 4.0))
    doses = {a.name: dosing_days(a) for a in arms}
    last = max((float(d.max()) for d in doses.values() if d.size), default=0.0)
    t = np.linspace(0.0, last + 90.0 if days is None else float(days), 2000)
    scale = ts.homing.cik_per_site_per_day if per_homing else 1.0
    for arm in arms:
        level = blood_level(t, doses[arm.name], arm.dose_cells, ts.persistence) * scale
        auc = float(np.sum((level[1:] + level[:-1]) * np.diff(t)) / 2.0)
        unit = "" if per_homing else " cell·d"
        ax.plot(t / 7.0, level, color=colours.get(arm.name), lw=1.5,
                label=f"{arm.name} ({len(doses[arm.name])} doses, AUC {auc:.3g}{unit})")
    ax.set_xlabel("Weeks after day 0 (resection / enrolment)")
    ax.set_ylabel("CIK arrivals per site per day" if per_homing else "Blood CIK cells")
    ax.set_title("Blood CIK level by schedule", loc="left", fontweight="bold")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize="small", frameon=False)
    return ax

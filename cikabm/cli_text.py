"""What the ``cikabm`` commands print: the terminal summaries of validate, run, trial and compare.

Kept apart from :mod:`cikabm.cli` (argument parsing and command flow) so that
each summary has one home and can be tested on a constructed result. Imports
are deferred so that ``cikabm --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def validate_text(scenario: Any) -> str:
    """What ``cikabm validate`` prints for a valid scenario.

    Parameters
    ----------
    scenario : Scenario or TrialScenario
        A validated scenario.

    Returns
    -------
    str
        ``OK: <name>`` and, for a region file, its dimensions, lattice, steps
        and schedule with how many infusions fall within the run; for a trial
        file (whose ``[time]`` duration and ``[dosing]`` are region defaults a
        trial does not use as such) the lines of
        :func:`cikabm.trial_params.trial_overview`: setting, patients,
        follow-up, each arm's schedule. Then the memory and time it needs
        (:func:`cikabm.resources.estimate`), and which tables the file set, or
        that every value is a default (:func:`cikabm.scenario.keys_set_text`).

    Raises
    ------
    MemoryError
        When a region's per-step inputs do not fit in memory.
    """
    from cikabm.resources import estimate
    from cikabm.scenario import keys_set_text
    from cikabm.trial_params import TrialScenario, trial_overview

    name = scenario.scenario.name
    if isinstance(scenario, TrialScenario):
        lines = [f"OK: {name}", *(f"  {line}" for line in trial_overview(scenario))]
    else:
        lines = [f"OK: {name} ({_region_line(scenario)})"]
    lines.append(f"  {estimate(scenario).text()}")
    lines.append(f"  {keys_set_text(scenario)}")
    return "\n".join(lines) + "\n"


def _region_line(scenario: Any) -> str:
    from cikabm.convert import step_grid
    from cikabm.trial_params import schedule_text

    t = scenario.time
    n_steps, _ = step_grid(t.duration_days, t.dt_minutes, t.record_every_hours)
    shape = "x".join(str(n) for n in scenario.lattice.shape)
    run_days = n_steps * t.dt_minutes / 1440.0  # what the kernel runs, the horizon of its infusions
    schedule = schedule_text(scenario.dosing, run_days, f"the {scenario.time.duration_days:g} days")
    return (f"{scenario.dims}D {shape}, {n_steps} steps of {scenario.time.dt_minutes:g} min "
            f"({scenario.time.duration_days:g} days), {schedule}")


def mhc_peak_text(peak: dict[str, Any] | None) -> str:
    """The peak MHC-I-lost fraction of a run summary (``mhc_lost_peak``), in words.

    >>> mhc_peak_text({"fraction": 0.375, "day": 41.0, "cells_lost": 300, "cells_total": 800, "min_cells": 100})
    'peak 37.5 % on day 41 (300 of 800 cells)'
    >>> mhc_peak_text(None)
    'peak not computed (the tumour never held 100 cells)'
    """
    if peak is None:
        from cikabm.simulation import MHC_PEAK_MIN_CELLS

        return f"peak not computed (the tumour never held {MHC_PEAK_MIN_CELLS} cells)"
    return (f"peak {100 * peak['fraction']:.1f} % on day {peak['day']:g} "
            f"({peak['cells_lost']:,} of {peak['cells_total']:,} cells)")


def run_summary_text(results: Any, out: Path | None = None) -> str:
    """A short human-readable summary of a run (what ``cikabm run`` prints)."""
    from cikabm.params import KIND_KEYS, KIND_LABELS
    from cikabm.schedules import dosing_days, infusion_count_text

    s = results.summary()
    infusions = infusion_count_text(len(s["infusion_days"]), len(dosing_days(results.scenario.dosing)),
                                    f"the {s['duration_days']:g} days")
    lines = [f"{s['scenario']} (seed {s['seed']}): {s['duration_days']:g} days, {infusions}, "
             f"{s['performance']['wall_seconds']:.1f} s"]
    final = s["tumour_final"]
    lost_final = (f"{100 * s['mhc_lost_fraction_final']:.1f} %" if final else "n/a (no tumour cell left)")
    lines.append(f"tumour cells: {s['tumour_initial']:,} at start, peak {s['tumour_peak']:,} on day "
                 f"{s['tumour_peak_day']:g}, {final:,} at the end")
    lines.append(f"MHC-I-lost fraction: {lost_final} at the end, {mhc_peak_text(s['mhc_lost_peak'])}")
    width = max(len(v) for v in KIND_LABELS.values())
    lines.append(f"kills by effector kind{'':<{width - 20}}   kills   of which MHC-I-lost")
    for key in KIND_KEYS:
        k = s["kills_by_kind"][key]
        frac = k["fraction_of_kills_on_mhc_lost"]
        share = f"({100 * frac:.1f} %)" if frac is not None else ""
        lines.append(f"  {KIND_LABELS[key]:<{width}} {k['kills']:>7,}   "
                     f"{k['kills_of_mhc_lost_cells']:>7,} {share}")
    mech = s["kills_by_mechanism"]
    lines.append(f"  {'all':<{width}} {s['kills_total']:>7,}   (perforin/granzyme {mech['perforin']:,}, "
                 f"Fas/FasL {mech['fas']:,})")
    if s["arrivals_dropped"]:
        lines.append(f"warning: {s['arrivals_dropped']:,} effector arrivals dropped "
                     "(effectors.capacity reached)")
    if out is not None:
        lines.append(f"results written to {out}")
    return "\n".join(lines) + "\n"


def _nan_to_none(x: Any) -> Any:
    return None if x is None or x != x else x


def comparison_text(table: Any, summary: dict[str, Any], out: Path) -> str:
    """The comparison table of a finished ``cikabm compare``, for the terminal."""
    from cikabm.survival import format_estimate, format_hr, format_median

    endpoint = str(table["endpoint"].iloc[0]).upper()
    lines = [f"{summary['scenario']} (seed {summary['seed']}): {summary['patients']} patients x "
             f"{len(summary['arms'])} schedules, {summary['setting']} setting; {endpoint} vs "
             f"{summary['reference_arm']}:"]
    width = max(len(str(a)) for a in table["arm"])
    for row in table.itertuples(index=False):
        hr = ("reference" if row.is_reference else
              format_hr(*(_nan_to_none(x) for x in (row.hr, row.hr_ci_low, row.hr_ci_high, row.logrank_p))))
        median = format_median(*(_nan_to_none(x) for x in (row.median_months, row.median_ci_low,
                                                            row.median_ci_high)))
        infusions = format_estimate(_nan_to_none(row.infusions_mean), missing="n/a")
        lines.append(f"  {row.arm:<{width}} {median}, {infusions} infusions; {hr}")
    lines.append(f"results written to {out}")
    return "\n".join(lines) + "\n"


def trial_summary_text(summary: dict[str, Any], out: Path) -> str:
    """Medians and hazard ratios of a finished trial, for the terminal."""
    from cikabm.survival import format_hr, format_median

    lines = [f"{summary['scenario']} (seed {summary['seed']}): {summary['patients']} patients x "
             f"{len(summary['arms'])} arms, {summary['setting']} setting"]
    for endpoint, result in summary["endpoints"].items():
        lines.append(f"{endpoint.upper()}:")
        for arm, a in result["arms"].items():
            lines.append(f"  {arm:<12} {format_median(a['median_months'], a['ci_low'], a['ci_high'])}, "
                         f"{a['events']} events in {a['n']}")
        for name, c in result.get("comparisons", {}).items():
            lines.append(f"  {name}: {format_hr(c['hr'], c['hr_ci_low'], c['hr_ci_high'], c['logrank_p'])}")
    if "never_progressed" in summary:
        lines.append("never progressed within follow-up: " + ", ".join(
            f"{arm} {n} of {summary['patients']}" for arm, n in summary["never_progressed"].items()))
    for name, m in summary.get("mechanism", {}).items():
        delay = ("" if m["median_delay_months"] is None
                 else f", median delay {m['median_delay_months']:.1f} months")
        lines.append(f"{name}: of {m['recurred_ref']} recurrences in the reference arm, {m['cured']} do not recur "
                     f"(micrometastasis {m['cured_micrometastasis']}, de novo {m['cured_de_novo']}); "
                     f"{m['both_recur']} recur in both{delay}; "
                     f"cancer deaths {m['cancer_deaths_ref']} vs {m['cancer_deaths_arm']}")
    lines.append(f"results written to {out}")
    return "\n".join(lines) + "\n"

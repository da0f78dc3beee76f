"""Dosing schedules and the blood persistence of infused CIK cells.

A schedule is a list of phases, each ``count x interval``: the first infusion
is at the start time and every later one comes ``interval`` after the one
before it, the interval being that of the phase it belongs to. The blood level
of one infusion is a two-part exponential (fast and persistent compartments);
the level after a schedule is the superposition of single-dose curves
(docs/model.md, analytic check 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Named schedules as ``(count, interval_days)`` phases.
PRESET_SCHEDULES: dict[str, tuple[tuple[int, float], ...]] = {
    # Lee 2015 HCC adjuvant: 4 weekly, 4 biweekly, 4 four-weekly, 4 eight-weekly;
    # 16 infusions at weeks 0,1,2,3,5,7,9,11,15,19,23,27,35,43,51,59.
    "lee2015": ((4, 7.0), (4, 14.0), (4, 28.0), (4, 56.0)),
    # Choi 2018 neuroblastoma: weekly x6, then every 2 weeks x8.
    "choi2018": ((6, 7.0), (8, 14.0)),
    # Design card: weekly x6, then every 2 weeks up to 16 infusions.
    "weekly6_biweekly": ((6, 7.0), (10, 14.0)),
}


def infusion_days(phases: Sequence[tuple[int, float]], start_day: float = 0.0) -> np.ndarray:
    """Days of all infusions of a schedule.

    Parameters
    ----------
    phases : sequence of (count, interval_days)
        Phases in order. The very first infusion is at ``start_day``.
    start_day : float
        Day of the first infusion.

    Returns
    -------
    ndarray of float64
        Infusion days, increasing.

    Examples
    --------
    >>> (infusion_days(PRESET_SCHEDULES["lee2015"]) / 7).astype(int).tolist()
    [0, 1, 2, 3, 5, 7, 9, 11, 15, 19, 23, 27, 35, 43, 51, 59]
    """
    days: list[float] = []
    t = float(start_day)
    for count, interval in phases:
        if count < 1 or interval <= 0:
            raise ValueError(f"phase ({count} x {interval} d) needs count >= 1 and interval > 0")
        for _ in range(int(count)):
            if days:
                t += float(interval)
            days.append(t)
    return np.asarray(days, dtype=np.float64)


def dosing_phases(dosing: Any) -> tuple[tuple[int, float], ...]:
    """The ``(count, interval_days)`` phases of a ``[dosing]`` table or a trial arm.

    Parameters
    ----------
    dosing : DosingParams or ArmParams
        Anything with ``schedule`` and ``phases`` (typed loosely because
        :mod:`cikabm.params` imports this module).

    Returns
    -------
    tuple of (count, interval_days)
        Empty for ``none``.
    """
    if dosing.schedule == "none":
        return ()
    if dosing.schedule == "custom":
        return tuple((p.count, p.interval_days) for p in dosing.phases)
    return PRESET_SCHEDULES[dosing.schedule]


def infusion_count_text(given: int, planned: int, span: str) -> str:
    """How many scheduled infusions a run or a follow-up holds, in words: the one home of this text.

    Parameters
    ----------
    given : int
        Infusions within the span (those the simulation gives).
    planned : int
        Infusions of the whole schedule.
    span : str
        What they fall within, e.g. ``"the 90 days"`` or ``"the 60-month follow-up"``.

    Examples
    --------
    >>> infusion_count_text(6, 16, "the 90 days")
    '6 of 16 scheduled infusions fall within the 90 days'
    >>> infusion_count_text(16, 16, "the 60-month follow-up")
    'all 16 scheduled infusions fall within the 60-month follow-up'
    >>> infusion_count_text(0, 0, "the 90 days")
    'no infusion scheduled'
    """
    if planned == 0:
        return "no infusion scheduled"
    if given == planned:
        return (f"the 1 scheduled infusion falls within {span}" if planned == 1
                else f"all {planned} scheduled infusions fall within {span}")
    return (f"{given} of the 1 scheduled infusion falls within {span}" if planned == 1
            else f"{given} of {planned} scheduled infusions fall within {span}")


def single_dose_level(t_since_days: np.ndarray, dose: float, fast_fraction: float,
                      fast_half_life_days: float, slow_half_life_days: float) -> np.ndarray:
    """Blood CIK cells ``t_since_days`` after one infusion of ``dose`` cells (0 before it)."""
    t = np.asarray(t_since_days, dtype=np.float64)
    after = t >= 0
    tt = np.where(after, t, 0.0)
    level = dose * (fast_fraction * np.exp2(-tt / fast_half_life_days)
                    + (1.0 - fast_fraction) * np.exp2(-tt / slow_half_life_days))
    return np.where(after, level, 0.0)


def blood_level(t_days: np.ndarray, doses_days: np.ndarray, dose: float, fast_fraction: float,
                fast_half_life_days: float, slow_half_life_days: float) -> np.ndarray:
    """Blood CIK cells at times ``t_days``: the sum of the single-dose curves."""
    t = np.asarray(t_days, dtype=np.float64)
    total = np.zeros_like(t)
    for d in np.asarray(doses_days, dtype=np.float64):
        total += single_dose_level(t - d, dose, fast_fraction, fast_half_life_days, slow_half_life_days)
    return total


def mean_blood_over_steps(n_steps: int, dt_days: float, doses_days: np.ndarray, dose: float,
                          fast_fraction: float, fast_half_life_days: float,
                          slow_half_life_days: float) -> np.ndarray:
    """Exact mean blood level over each step ``[k dt, (k+1) dt)``.

    Integrating the exponentials over the step (rather than sampling them)
    keeps the expected number of homing arrivals independent of ``dt``.
    """
    edges = np.arange(n_steps + 1, dtype=np.float64) * dt_days
    integral = np.zeros(n_steps + 1)
    with np.errstate(over="ignore", invalid="ignore"):  # a non-finite result is reported below, by name
        for d in np.asarray(doses_days, dtype=np.float64):
            for frac, half in ((fast_fraction, fast_half_life_days),
                               (1.0 - fast_fraction, slow_half_life_days)):
                k = np.log(2.0) / half
                since = np.clip(edges - d, 0.0, None)
                # Cumulative integral of frac * dose * exp(-k s) from the dose to each edge.
                integral += frac * dose * (-np.expm1(-k * since)) / k
    level = np.diff(integral) / dt_days
    if not np.all(np.isfinite(level)):  # validation's floors prevent it; never hand the kernel a NaN
        raise ValueError("the blood level is not finite for persistence.fast_half_life_days = "
                         f"{fast_half_life_days!r}, slow_half_life_days = {slow_half_life_days!r}, "
                         f"dosing.dose_cells = {dose!r}")
    return level

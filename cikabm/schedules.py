"""Dosing: the one home of schedules, their spec grammar, infusion days and blood persistence.

A schedule is a list of phases, each ``count x interval``: the first infusion
is at the start time and every later one comes ``interval`` after the one
before it, the interval being that of the phase it belongs to. Named presets
(:data:`PRESET_SCHEDULES`) are such lists; a comparison names an arm by a spec
``NAME[*DOSE][xCYCLES]`` (:func:`parse_schedule_spec`). The blood level of one
infusion is a two-part exponential (fast and persistent compartments, the
three parameters of a :class:`Persistence`); the level after a schedule is the
superposition of single-dose curves (docs/model.md, analytic check 6).

Everything else (the scenario schema, the kernel's inputs, comparisons, the
teaching app) calls this module; the pure-Mesa reference keeps its own
derivation of the per-step supply on purpose (:mod:`cikabm.mesa.rules`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

#: Cells per infusion when a scenario does not say: the Lee 2015 HCC trial's 6.4e9.
DEFAULT_DOSE_CELLS = 6.4e9

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
#: Schedules a spec (and so a comparison arm) can name: the presets and ``none`` (no CIK).
SCHEDULE_NAMES: tuple[str, ...] = (*PRESET_SCHEDULES, "none")
#: What ``dosing.schedule`` accepts: ``none``, ``custom`` (its ``phases``) or a preset.
DOSING_SCHEDULES: tuple[str, ...] = ("none", "custom", *sorted(PRESET_SCHEDULES))
#: Infusions one schedule may have in all (the presets have 14-16): a bound on the work and the plots.
MAX_INFUSIONS = 1000
#: Repeats of a whole schedule a spec may ask for (``xCYCLES``).
MAX_CYCLES = 100

_SPEC = re.compile(r"^(?P<name>" + "|".join(re.escape(n) for n in SCHEDULE_NAMES) + r")"
                   r"(?:\*(?P<dose>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?))?"
                   r"(?:x(?P<cycles>[0-9]+))?$")


class Persistence(Protocol):
    """The blood persistence of infused cells (``[persistence]`` of a scenario is one)."""

    fast_fraction: float
    fast_half_life_days: float
    slow_half_life_days: float


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


def dosing_days(dosing: Any) -> np.ndarray:
    """Days of every planned infusion of a ``[dosing]`` table or a trial arm (empty for ``none``).

    Some may fall after the end of a run or of follow-up.
    """
    return infusion_days(dosing_phases(dosing), dosing.start_day)


def phase_count(phases: Sequence[tuple[int, float]]) -> int:
    """Infusions of a schedule in all."""
    return sum(int(count) for count, _ in phases)


def repeated_phases(name: str, cycles: int) -> tuple[tuple[int, float], ...]:
    """The phases of preset ``name`` given ``cycles`` times in a row (each repeat starts one
    first-phase interval after the last infusion of the one before)."""
    return tuple(PRESET_SCHEDULES[name]) * int(cycles)


def phases_text(phases: Sequence[tuple[int, float]]) -> str:
    """A schedule's phases in words: the one home of this text.

    >>> phases_text(PRESET_SCHEDULES["weekly6_biweekly"])
    '6 infusions 7 days apart, then 10 infusions 14 days apart'
    >>> phases_text(())
    'no infusions'
    """
    if not phases:
        return "no infusions"
    return ", then ".join(f"{int(c)} infusion{'s' if int(c) != 1 else ''} {float(i):g} days apart"
                          for c, i in phases)


def parse_schedule_spec(spec: str) -> tuple[str, float, int]:
    """Split a schedule spec ``NAME[*DOSE][xCYCLES]`` into its parts.

    ``NAME`` is one of :data:`SCHEDULE_NAMES`, ``*DOSE`` multiplies the cells
    per infusion (``lee2015*0.5``: half dose) and ``xCYCLES`` repeats the whole
    schedule (``choi2018x2``: :func:`repeated_phases`).

    Parameters
    ----------
    spec : str
        E.g. ``"lee2015"``, ``"lee2015*0.5"``, ``"choi2018x2"``, ``"none"``.

    Returns
    -------
    tuple of (str, float, int)
        Schedule name, dose multiplier and number of cycles.

    Raises
    ------
    ValueError
        Naming the spec, when the name is not one of :data:`SCHEDULE_NAMES`,
        the multiplier is not positive, the number of cycles is not between 1
        and :data:`MAX_CYCLES`, the infusions would exceed
        :data:`MAX_INFUSIONS`, or ``none`` is given a dose or cycles.

    Examples
    --------
    >>> parse_schedule_spec("lee2015*0.5x2")
    ('lee2015', 0.5, 2)
    """
    text = str(spec).strip()
    match = _SPEC.match(text)
    if match is None:
        raise ValueError(f"schedule {spec!r} is not NAME[*DOSE][xCYCLES] with NAME one of "
                         + ", ".join(SCHEDULE_NAMES))
    name = match["name"]
    dose = float(match["dose"]) if match["dose"] else 1.0
    cycles = int(match["cycles"]) if match["cycles"] else 1
    if not dose > 0:
        raise ValueError(f"schedule {spec!r}: the dose multiplier must be positive")
    if not 1 <= cycles <= MAX_CYCLES:
        raise ValueError(f"schedule {spec!r}: the number of cycles must be between 1 and {MAX_CYCLES}")
    if name == "none" and (match["dose"] or match["cycles"]):
        raise ValueError(f"schedule {spec!r}: 'none' (no CIK) takes no dose multiplier or cycles")
    if name != "none" and phase_count(repeated_phases(name, cycles)) > MAX_INFUSIONS:
        raise ValueError(f"schedule {spec!r}: {phase_count(repeated_phases(name, cycles))} infusions, "
                         f"more than {MAX_INFUSIONS}")
    return name, dose, cycles


def spec_name(schedule: str, dose_multiplier: float = 1.0, cycles: int = 1) -> str:
    """The spec of a schedule, dose multiplier and cycles (``"control"`` for ``none``): an arm's default name.

    >>> spec_name("lee2015", 0.5, 2)
    'lee2015*0.5x2'
    """
    if schedule == "none":
        return "control"
    name = schedule
    if dose_multiplier != 1.0:
        name += f"*{dose_multiplier:g}"
    if cycles != 1:
        name += f"x{cycles}"
    return name


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


def single_dose_level(t_since_days: np.ndarray, dose: float, persistence: Persistence) -> np.ndarray:
    """Blood CIK cells ``t_since_days`` after one infusion of ``dose`` cells (0 before it)."""
    p = persistence
    t = np.asarray(t_since_days, dtype=np.float64)
    after = t >= 0
    tt = np.where(after, t, 0.0)
    level = dose * (p.fast_fraction * np.exp2(-tt / p.fast_half_life_days)
                    + (1.0 - p.fast_fraction) * np.exp2(-tt / p.slow_half_life_days))
    return np.where(after, level, 0.0)


def blood_level(t_days: np.ndarray, doses_days: np.ndarray, dose: float, persistence: Persistence) -> np.ndarray:
    """Blood CIK cells at times ``t_days``: the sum of the single-dose curves."""
    t = np.asarray(t_days, dtype=np.float64)
    total = np.zeros_like(t)
    for d in np.asarray(doses_days, dtype=np.float64):
        total += single_dose_level(t - d, dose, persistence)
    return total


def mean_blood_over_steps(n_steps: int, dt_days: float, doses_days: np.ndarray, dose: float,
                          persistence: Persistence) -> np.ndarray:
    """Exact mean blood level over each step ``[k dt, (k+1) dt)``.

    Integrating the exponentials over the step (rather than sampling them)
    keeps the expected number of homing arrivals independent of ``dt``.
    """
    p = persistence
    edges = np.arange(n_steps + 1, dtype=np.float64) * dt_days
    integral = np.zeros(n_steps + 1)
    with np.errstate(over="ignore", invalid="ignore"):  # a non-finite result is reported below, by name
        for d in np.asarray(doses_days, dtype=np.float64):
            for frac, half in ((p.fast_fraction, p.fast_half_life_days),
                               (1.0 - p.fast_fraction, p.slow_half_life_days)):
                k = np.log(2.0) / half
                since = np.clip(edges - d, 0.0, None)
                # Cumulative integral of frac * dose * exp(-k s) from the dose to each edge.
                integral += frac * dose * (-np.expm1(-k * since)) / k
    level = np.diff(integral) / dt_days
    if not np.all(np.isfinite(level)):  # validation's floors prevent it; never hand the kernel a NaN
        raise ValueError("the blood level is not finite for persistence.fast_half_life_days = "
                         f"{p.fast_half_life_days!r}, slow_half_life_days = {p.slow_half_life_days!r}, "
                         f"dosing.dose_cells = {dose!r}")
    return level

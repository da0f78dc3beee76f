"""A patient's clinical course from the daily cell counts of its lesions.

The rules (docs/model.md, "Disease course"), applied day by day:

1. **Recurrence** is the first day a lesion still in the liver reaches
   ``adjuvant.detection_cells``. At that staging every lesion above
   ``adjuvant.imaging_limit_cells`` is seen.
2. **Curative retreatment** (re-resection or ablation) when the seen lesions
   meet the Milan-type criteria of ``[recurrence]`` (at most
   ``curative_max_lesions``; a single one up to ``curative_single_max_cm``,
   several up to ``curative_multiple_max_cm`` each), the patient is fit for
   it (a per-episode draw against ``curative_fitness``) and has had fewer
   than ``max_curative_retreatments``. The seen lesions are removed; the
   others go on, and the patient is disease-free again.
3. Otherwise the course is **non-curative**: the lesions go on growing (CIK
   still present keeps acting: it is in their counts) and the patient dies of
   cancer on the first day the total burden reaches ``outcomes.lethal_cells``.
4. Other-cause death competes throughout; everything is censored at the
   patient's end of follow-up.

Removing lesions leaves the others' counts unchanged: lesions are independent
given the arm's blood level, so every lesion's course is computed once over
the whole follow-up and the rules above only read them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from cikabm.trial_params import DAYS_PER_MONTH, TrialScenario

#: Causes of death, as written in ``patients.parquet`` ("" while alive).
CANCER, OTHER = "cancer", "other"


def diameter_cm(cells: float, cells_per_cm3: float) -> float:
    """Diameter of a spherical lesion of ``cells`` cells."""
    return (6.0 * cells / (math.pi * cells_per_cm3)) ** (1.0 / 3.0)


def meets_curative_criteria(sizes_cells: Sequence[float], ts: TrialScenario) -> bool:
    """Whether seen lesions of these sizes qualify for curative retreatment (Milan-type)."""
    rec = ts.recurrence
    n = len(sizes_cells)
    if n == 0 or n > rec.curative_max_lesions:
        return False
    largest = diameter_cm(max(sizes_cells), ts.outcomes.cells_per_cm3)
    return largest <= (rec.curative_single_max_cm if n == 1 else rec.curative_multiple_max_cm)


def clinical_course(ts: TrialScenario, burdens: np.ndarray, sources: Sequence[str], *, censor_day: float,
                    other_death_day: float, fitness_draws: Sequence[float]) -> dict[str, Any]:
    """Recurrences, retreatments and death of one patient in one arm.

    Parameters
    ----------
    ts : TrialScenario
    burdens : ndarray, shape (n_lesions, n_days + 1)
        Daily cell counts of each lesion (``burdens[j, d]`` at the end of day ``d``).
    sources : sequence of str
        Each lesion's source.
    censor_day, other_death_day : float
        End of the patient's follow-up and the day of other-cause death.
    fitness_draws : sequence of float
        Uniform draws, one per recurrence episode, compared with
        ``recurrence.curative_fitness`` (the same in every arm).

    Returns
    -------
    dict
        ``recurrence_day`` (first recurrence, inf if none), ``recurrence_source``,
        ``burden_at_detection``, ``lesions_at_detection``, ``retreatments``
        (curative), ``recurrences``, ``cancer_death_day`` (inf if none),
        ``death_day``, ``cause_of_death`` and ``curative_at_first``.
    """
    adj, rec = ts.adjuvant, ts.recurrence
    n_lesions = burdens.shape[0]
    n_days = burdens.shape[1] - 1 if n_lesions else math.ceil(censor_day)
    end = min(n_days, math.floor(min(censor_day, other_death_day)))
    active = np.ones(n_lesions, dtype=bool)
    out: dict[str, Any] = {"recurrence_day": math.inf, "recurrence_source": "", "burden_at_detection": math.nan,
                           "lesions_at_detection": 0, "retreatments": 0, "recurrences": 0,
                           "curative_at_first": False, "cancer_death_day": math.inf}
    day = 0
    while n_lesions and day <= end:
        window = burdens[active, day:end + 1] if active.any() else np.zeros((0, 0))
        if window.size == 0:
            break
        hit = (window >= adj.detection_cells).any(axis=0)
        if not hit.any():
            break
        day = day + int(np.argmax(hit))
        state = burdens[:, day] * active
        seen = np.flatnonzero(state >= adj.imaging_limit_cells)
        episode = out["recurrences"]
        if episode == 0:
            first = int(seen[np.argmax(state[seen])])
            out.update(recurrence_day=float(day), recurrence_source=sources[first],
                       burden_at_detection=float(state.sum()), lesions_at_detection=int(seen.size))
        out["recurrences"] = episode + 1
        fit = fitness_draws[min(episode, len(fitness_draws) - 1)] < rec.curative_fitness
        if (fit and out["retreatments"] < rec.max_curative_retreatments
                and meets_curative_criteria(state[seen].tolist(), ts)):
            active[seen] = False
            out["retreatments"] += 1
            if episode == 0:
                out["curative_at_first"] = True
            day += 1
            continue
        total = (burdens[active, day:end + 1]).sum(axis=0)
        lethal = total >= ts.outcomes.lethal_cells
        if lethal.any():
            out["cancer_death_day"] = float(day + int(np.argmax(lethal)))
        break
    death = min(out["cancer_death_day"], other_death_day)
    out["death_day"] = death
    out["cause_of_death"] = "" if death > censor_day else (CANCER if death == out["cancer_death_day"] else OTHER)
    return out


def outcome_row(course: dict[str, Any], *, censor_day: float) -> dict[str, Any]:
    """RFS, OS and cancer-specific survival columns (months) from a clinical course."""
    censor = censor_day / DAYS_PER_MONTH
    rec = course["recurrence_day"] / DAYS_PER_MONTH
    death = course["death_day"] / DAYS_PER_MONTH
    cancer = course["cancer_death_day"] / DAYS_PER_MONTH
    first = min(rec, death)
    return {
        "rfs_months": min(first, censor), "rfs_event": bool(first <= censor),
        "os_months": min(death, censor), "os_event": bool(death <= censor),
        "css_months": min(death, censor), "css_event": bool(cancer <= censor and cancer <= death),
        "recurrence_months": rec if rec <= censor else math.nan,
    }


def progression_day(burden: np.ndarray, every_days: float, factor: float) -> tuple[float, float]:
    """RECIST-like progression of a daily burden assessed every ``every_days`` from day 0.

    Progression is the first assessment at which the burden is positive and at
    least ``factor`` times the smallest burden assessed so far (day 0 included).

    Returns
    -------
    (float, float)
        The day of progression (inf if none) and the nadir up to it.
    """
    days = np.arange(0.0, burden.shape[0] - 1 + 1e-9, every_days)
    values = burden[np.round(days).astype(int)]
    nadir = np.minimum.accumulate(values)
    hit = (values > 0) & (values >= factor * np.maximum(nadir, 1.0))
    hit[0] = False
    if not hit.any():
        return math.inf, float(nadir[-1])
    k = int(np.argmax(hit))
    return float(days[k]), float(nadir[k])

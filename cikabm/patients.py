"""Virtual patients: covariates drawn per patient, and one patient's course in one arm.

Every draw for patient ``i`` comes from a generator keyed on
``(seed, i, purpose)``, and the lattice kernel is keyed on the same patient id,
so a patient has the same covariates and the same tumour in every arm until
treatment differs (common random numbers), whatever the worker that runs it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from cikabm.lesions import LESION_PURPOSE, micrometastasis_mean
from cikabm.params import DosingParams, HomingParams, Scenario, TumourParams, upper_bound
from cikabm.trial_params import (
    DAYS_PER_MONTH,
    DOUBLING_TIME_RANGE_DAYS,
    PRIMARY_SIZE_MAX_CM,
    ArmParams,
    TrialScenario,
)

#: Purposes of the per-patient generators (never reuse a number; 3 is the lesions', see
#: :data:`cikabm.lesions.LESION_PURPOSE`).
_COVARIATES = 1
_OUTCOMES = 2
_RETREATMENT = 4

#: Kernel patient keys: lesion ``f`` of patient ``i`` is ``i * FOCI_KEY_STRIDE + f``.
FOCI_KEY_STRIDE = 128
#: Recurrence episodes with a fitness-for-retreatment draw of their own (later ones reuse the last).
RETREATMENT_EPISODES = 8


@dataclass(frozen=True)
class VirtualPatient:
    """Covariates and outcome draws of one virtual patient (the same in every arm)."""

    patient_id: int
    doubling_time_days: float
    primary_size_cm: float
    mvi: bool
    micrometastases_expected: float
    ligand_mean: float
    mhc_loss_per_division: float
    homing_scale: float
    product_yield: float
    manufacturing_failed: bool
    censor_months: float
    other_death_months: float
    retreatment_fitness_draws: tuple[float, ...]

    #: Fields that are draws of the patient's future, not covariates.
    OUTCOME_DRAWS = ("censor_months", "other_death_months", "retreatment_fitness_draws")

    @property
    def net_growth_per_day(self) -> float:
        return math.log(2.0) / self.doubling_time_days

    def covariates(self) -> dict[str, Any]:
        """The patient's covariates (its outcome draws left out)."""
        cov = asdict(self)
        for key in self.OUTCOME_DRAWS:
            cov.pop(key)
        return cov


def _rng(seed: int, patient_id: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, patient_id, purpose]))


def draw_patient(ts: TrialScenario, patient_id: int, seed: int | None = None) -> VirtualPatient:
    """Draw the covariates of patient ``patient_id`` (deterministic in seed and id)."""
    seed = ts.scenario.seed if seed is None else seed
    c = ts.cohort
    g = _rng(seed, patient_id, _COVARIATES)
    # Log-normal draws clipped to what a patient can have (far in the tails at the shipped spreads: 4.8 and
    # 6.2 sd), so that a wide spread cannot give a doubling time of centuries or a primary of metres.
    doubling = min(max(c.doubling_time_median_days * math.exp(c.doubling_time_sd_log * g.standard_normal()),
                       DOUBLING_TIME_RANGE_DAYS[0]), DOUBLING_TIME_RANGE_DAYS[1])
    size = min(c.primary_size_median_cm * math.exp(c.primary_size_sd_log * g.standard_normal()), PRIMARY_SIZE_MAX_CM)
    ligand = float(np.clip(ts.tumour.ligand_mean + c.ligand_sd * g.standard_normal(), 0.0, 1.0))
    mhc_loss = float(min(ts.tumour.mhc_loss_per_division * math.exp(c.mhc_loss_sd_log * g.standard_normal()),
                         1.0))
    homing = math.exp(c.homing_sd_log * g.standard_normal())
    yield_ = math.exp(c.product_yield_sd_log * g.standard_normal())
    failed = bool(g.random() < c.manufacturing_failure)
    mvi = bool(g.random() < ts.adjuvant.mvi_probability)

    o = _rng(seed, patient_id, _OUTCOMES)
    follow = ts.trial.follow_up_months
    censor = follow - ts.trial.accrual_months * o.random()
    death_rate = ts.outcomes.other_cause_death_per_year / 12.0
    other_death = o.exponential(1.0 / death_rate) if death_rate > 0 else math.inf
    fitness = _rng(seed, patient_id, _RETREATMENT).random(RETREATMENT_EPISODES)
    return VirtualPatient(
        patient_id=patient_id, doubling_time_days=float(doubling), primary_size_cm=float(size), mvi=mvi,
        micrometastases_expected=float(micrometastasis_mean(ts, size, mvi)),
        ligand_mean=ligand, mhc_loss_per_division=mhc_loss, homing_scale=float(homing),
        product_yield=float(yield_), manufacturing_failed=failed, censor_months=float(censor),
        other_death_months=float(other_death),
        retreatment_fitness_draws=tuple(float(u) for u in fitness),
    )


def lesion_rng(seed: int, patient_id: int) -> np.random.Generator:
    """The generator of a patient's lesions (the same in every arm)."""
    return _rng(seed, patient_id, LESION_PURPOSE)


def patient_region(ts: TrialScenario, patient: VirtualPatient, arm: ArmParams, *,
                   initial_cells: int, duration_days: float, record_every_hours: float) -> Scenario:
    """The region scenario of one patient in one arm, validated like any scenario.

    The patient's net growth rate sets the division rate (death rate kept),
    its ligand density and MHC-loss probability replace the defaults, homing
    and product yield scale the CIK supply, and a failed manufacture means no
    infusion at all (the patient stays in the arm: intention to treat). A
    schedule that starts after the patient's follow-up ends gives no infusion,
    as ``none`` does. The region runs at least one step (a follow-up may be
    shorter) and records between every step and once a run.

    Raises
    ------
    ScenarioError
        If the patient's region is not a valid scenario (the patient, the arm
        and each field named).
    """
    from cikabm.scenario import ScenarioError, format_validation_error

    # Derived rates and doses are clipped to the region's bounds, as the draws are to theirs: far in the
    # tails only at the widest spreads a trial file may set.
    tumour = ts.tumour.model_dump() | {
        "division_rate_per_day": min(ts.tumour.death_rate_per_day + patient.net_growth_per_day,
                                     upper_bound(TumourParams, "division_rate_per_day")),
        "ligand_mean": patient.ligand_mean,
        "mhc_loss_per_division": patient.mhc_loss_per_division,
        "initial_cells": initial_cells,
    }
    homing = ts.homing.model_dump() | {
        "cik_per_site_per_day": min(ts.homing.cik_per_site_per_day * patient.homing_scale,
                                    upper_bound(HomingParams, "cik_per_site_per_day"))}
    dosing = {k: getattr(arm, k) for k in DosingParams.model_fields}
    dosing["dose_cells"] = min(arm.dose_cells * patient.product_yield, upper_bound(DosingParams, "dose_cells"))
    if patient.manufacturing_failed or dosing["start_day"] >= duration_days:
        dosing.update(schedule="none", phases=[])
    # A region runs at least one step, and records at most every step and at least once.
    step_hours = ts.time.dt_minutes / 60.0
    duration_days = max(duration_days, step_hours / 24.0)
    time = ts.time.model_dump() | {"duration_days": duration_days,
                                   "record_every_hours": min(max(record_every_hours, step_hours),
                                                             duration_days * 24.0)}
    fields = {name: getattr(ts, name).model_dump() for name in Scenario.model_fields}
    fields.update(tumour=tumour, homing=homing, dosing=dosing, time=time)
    try:
        return Scenario.model_validate(fields)
    except ValidationError as err:
        raise ScenarioError(f"patient {patient.patient_id} in arm {arm.name!r}",
                            format_validation_error(err)) from None


def infusions_before(region: Scenario, day: float) -> int:
    """Infusions a patient received before ``day`` (none after a failed manufacture)."""
    from cikabm.schedules import dosing_days

    return int(np.count_nonzero(dosing_days(region.dosing) < day))


DAYS = DAYS_PER_MONTH

"""Parameters of virtual trials: arms, the virtual-patient cohort, clinical settings.

A trial scenario is a region scenario (:class:`~cikabm.params.Scenario`, whose
sections give each patient's tumour region its defaults) plus the sections
below. Each virtual patient is simulated in every arm with the same random
streams (common random numbers), so the same patient has the same tumour in
two arms until treatment differs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cikabm.params import DosingParams, Scenario, Section, param


class TrialInfo(Section):
    setting: Literal["adjuvant", "advanced"] = param(
        "adjuvant", "-", "adjuvant: micrometastatic foci after resection, endpoint RFS; advanced: "
        "measurable disease, endpoint PFS (RECIST-like). OS in both.", "docs/model.md, Virtual trials")
    patients: int = param(230, "patients", "Virtual patients; each is simulated in every arm.", ge=1,
                          le=1_000_000)
    follow_up_months: float = param(60.0, "month", "Administrative censoring at the end of follow-up.",
                                    "Lee 2015: 5 years", gt=0, le=600)
    accrual_months: float = param(0.0, "month", "Enrolment spread: censoring falls uniformly between "
                                  "follow_up - accrual and follow_up.", ge=0)
    reference_arm: str = param("control", "-", "Arm the others are compared with.")
    chunk_patients: int = param(10, "patients", "Patients per work unit (and per resumable result chunk).",
                                ge=1, le=10_000)

    @model_validator(mode="after")
    def _accrual_within_follow_up(self) -> TrialInfo:
        if self.accrual_months >= self.follow_up_months:
            raise ValueError(f"accrual_months = {self.accrual_months:g} must be shorter than "
                             f"follow_up_months = {self.follow_up_months:g}")
        return self


class ArmParams(DosingParams):
    """One arm: a name and its dosing (the fields of [dosing])."""

    name: str = param("arm", "-", "Arm name, used in tables and plots.")


class CohortParams(Section):
    doubling_time_median_days: float = param(
        85.7, "day", "Median tumour volume doubling time (sets each patient's net growth rate).",
        "An 2015: median 85.7 d in Korea (range 11-851)", gt=0)
    doubling_time_sd_log: float = param(0.6, "log", "Between-patient spread (sd of the log).",
                                        "calibrate", ge=0, le=3)
    primary_size_median_cm: float = param(3.5, "cm", "Median diameter of the resected primary.", gt=0)
    primary_size_sd_log: float = param(0.45, "log", "Spread of the primary diameter (sd of the log).",
                                       ge=0, le=3)
    ligand_sd: float = param(0.1, "0-1", "Between-patient sd of the mean NKG2D-ligand density.", ge=0, le=1)
    mhc_loss_sd_log: float = param(0.5, "log", "Spread of the MHC-loss probability per division.", ge=0, le=3)
    homing_sd_log: float = param(0.5, "log", "Spread of the CIK homing rate.", "calibrate", ge=0, le=3)
    product_yield_sd_log: float = param(0.3, "log", "Spread of the cells per infusion (product yield).",
                                        ge=0, le=3)
    manufacturing_failure: float = param(0.02, "probability", "Chance the product cannot be made: the "
                                         "patient gets no CIK but stays in the arm (intention to treat).",
                                         "Choi 2018: 1 of 3", ge=0, le=1)


class AdjuvantParams(Section):
    foci_mean_at_5cm: float = param(1.2, "foci", "Mean number of micrometastatic foci for a 5 cm primary.",
                                    "calibrate", ge=0, le=100)
    foci_size_exponent: float = param(1.0, "-", "Foci mean scales as (diameter / 5 cm) ** exponent.",
                                      ge=0, le=10)
    max_foci: int = param(8, "foci", "Foci simulated per patient at most (the first to escape counts).",
                          ge=1, le=100)
    focus_initial_cells: int = param(8, "cells", "Live cells of a focus left after resection.",
                                     "calibrate", ge=1)
    escape_cells: int = param(150, "cells", "A lattice focus with this many live cells has escaped "
                              "immune control.", "calibrate", ge=2)
    escape_physical_cells: float = param(
        1e5, "cells", "Tumour cells a focus is taken to hold when it escapes: the lattice follows the "
        "immune-contact phase of an occult micrometastasis at reduced size; growth from here to "
        "detection follows the patient's doubling time.", "calibrate", gt=1)
    detection_cells: float = param(1e9, "cells", "Cells at clinical detection (about 1 cm).",
                                   "~1e9 cells, 1 cm (docs/model.md, Virtual trials)", gt=1)
    check_every_days: float = param(1.0, "day", "How often a focus is checked for escape or extinction.",
                                    gt=0, le=30)


class AdvancedParams(Section):
    progression_diameter_increase: float = param(
        0.2, "fraction", "Progression: burden above the nadir by the volume of this diameter increase.",
        "RECIST: +20 %", gt=0, le=5)
    check_every_days: float = param(1.0, "day", "How often the burden is compared with the nadir.",
                                    gt=0, le=30)


class OutcomeParams(Section):
    other_cause_death_per_year: float = param(0.02, "1/year", "Competing death from other causes.",
                                              "calibrate", ge=0, le=10)
    post_recurrence_survival_median_months: float = param(
        30.0, "month", "Median survival after recurrence or progression.",
        "calibrate; Choi 2018: OS - PFS 14.8 and 24.6 months", gt=0)


class TrialScenario(Scenario):
    """A region scenario plus the trial: arms, cohort, setting and outcomes."""

    trial: TrialInfo = Field(default_factory=TrialInfo, description="Trial design.")
    arms: list[ArmParams] = Field(
        default_factory=lambda: [ArmParams(name="control"), ArmParams(name="cik", schedule="lee2015")],
        description="Arms; each patient is simulated in every arm.")
    cohort: CohortParams = Field(default_factory=CohortParams, description="Virtual-patient distributions.")
    adjuvant: AdjuvantParams = Field(default_factory=AdjuvantParams, description="Adjuvant setting.")
    advanced: AdvancedParams = Field(default_factory=AdvancedParams, description="Advanced setting.")
    outcomes: OutcomeParams = Field(default_factory=OutcomeParams, description="Death and post-event survival.")

    @model_validator(mode="after")
    def _arms_make_sense(self) -> TrialScenario:
        if self.adjuvant.escape_physical_cells >= self.adjuvant.detection_cells:
            raise ValueError(f"adjuvant.escape_physical_cells = {self.adjuvant.escape_physical_cells:g} must be "
                             f"below adjuvant.detection_cells = {self.adjuvant.detection_cells:g}")
        names = [a.name for a in self.arms]
        if not names:
            raise ValueError("arms: at least one arm is needed")
        if len(set(names)) != len(names):
            raise ValueError(f"arms: names must be unique, got {names}")
        if self.trial.reference_arm not in names:
            raise ValueError(f"trial.reference_arm = {self.trial.reference_arm!r} is not one of the arms {names}")
        horizon = self.trial.follow_up_months * 30.4375
        for arm in self.arms:
            if arm.schedule != "none" and arm.start_day >= horizon:
                raise ValueError(f"arm {arm.name!r}: start_day = {arm.start_day:g} is after the end of "
                                 f"follow-up ({horizon:g} days)")
        return self

    @property
    def horizon_days(self) -> float:
        return self.trial.follow_up_months * DAYS_PER_MONTH


#: Days per month (365.25 / 12), used for every months <-> days conversion.
DAYS_PER_MONTH = 30.4375

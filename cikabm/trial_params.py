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

from cikabm.params import DosingParams, Name, Scenario, Section, Text, param
from cikabm.schedules import dosing_days, dosing_phases, infusion_count_text, phases_text


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
    reference_arm: Name = param("control", "-", "Arm the others are compared with.")
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

    name: Name = param("arm", "-", "Arm name, used in tables and plots.")


#: The range of a patient's tumour doubling time (days) and the largest resected primary (cm): bounds of
#: the cohort's medians and clips of each patient's draw (:func:`cikabm.patients.draw_patient`).
DOUBLING_TIME_RANGE_DAYS = (1.0, 3650.0)
PRIMARY_SIZE_MAX_CM = 30.0


class CohortParams(Section):
    doubling_time_median_days: float = param(
        85.7, "day", "Median tumour volume doubling time (sets each patient's net growth rate).",
        "An 2015: median 85.7 d in Korea (range 11-851)", ge=DOUBLING_TIME_RANGE_DAYS[0],
        le=DOUBLING_TIME_RANGE_DAYS[1])
    doubling_time_sd_log: float = param(0.6, "log", "Between-patient spread (sd of the log).",
                                        "calibrate", ge=0, le=3)
    primary_size_median_cm: float = param(3.5, "cm", "Median diameter of the resected primary.", gt=0,
                                          le=PRIMARY_SIZE_MAX_CM)
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
    foci_mean_at_5cm: float = param(
        1.0, "lesions", "Mean number of occult intrahepatic micrometastases a 5 cm primary without "
        "microvascular invasion leaves at resection (the early-recurrence source).", "calibrate", ge=0, le=100)
    foci_size_exponent: float = param(
        1.0, "-", "The micrometastasis mean scales as (diameter / 5 cm) ** exponent.",
        "model choice; size > 5 cm predicts early recurrence (Yan 2023 Hepatobiliary Surg Nutr 12:155)",
        ge=0, le=10)
    mvi_probability: float = param(
        0.253, "probability", "Chance the primary shows microvascular invasion (MVI).",
        "Rodriguez-Peralvarez 2013 Ann Surg Oncol 20:325: 25.3 % of 1,540 resections", ge=0, le=1)
    mvi_foci_ratio: float = param(
        1.82, "-", "Micrometastasis mean with MVI over that without.",
        "Rodriguez-Peralvarez 2013: disease-free survival RR 1.82 with MVI, taken as the ratio", ge=1, le=20)
    de_novo_per_year: float = param(
        0.05, "1/year", "Rate at which new (multicentric) tumours arise in the diseased liver, independent "
        "of the primary (the late-recurrence source).",
        "calibrate; HCC incidence 3.16/100 person-years in HBV cirrhosis (Thiele 2014 PLoS One 9:e107177), "
        "late recurrence 5-10 %/year (Lee 2021 Gut Liver 15:420)", ge=0, le=2)
    max_foci: int = param(16, "lesions", "Lesions of each source simulated per patient at most.",
                          "compute bound (model choice; the Poisson means stay below 5)", ge=1, le=100)
    focus_initial_cells: int = param(
        8, "cells", "Smallest lesion: the lower end of the occult sizes, and a new de novo tumour's size.",
        "model choice", ge=1, le=10_000)
    imaging_limit_cells: float = param(
        1e8, "cells", "Lesions above this size are seen on imaging: none is left at resection, and every "
        "one is counted at the staging of a recurrence.", "~5 mm at 1e9 cells/cm3 (model choice)", gt=1)
    handoff_cells: int = param(
        150, "cells", "A lattice lesion continues in the compartment model at this many live cells.",
        "model choice: the lattice region's scale (the hand-off test shows both agree)", ge=2, le=100_000)
    lattice_max_days: float = param(
        60.0, "day", "... or after this long on the lattice (a dormant focus continues in the compartment, "
        "whose stochastic regime keeps its small numbers).", "compute bound (model choice)", gt=0, le=3650)
    detection_cells: float = param(1e9, "cells", "Cells at clinical detection (about 1 cm).",
                                   "~1e9 cells, 1 cm (docs/model.md, Disease course)", gt=1)
    check_every_days: float = param(1.0, "day", "How often a lattice lesion is checked for hand-off or "
                                    "extinction (at most every time step).", "numerical choice", gt=0, le=30)
    compartment_dt_hours: float = param(6.0, "h", "Step of the compartment model (a divisor of 24 h).",
                                        "numerical choice", gt=0, le=24)
    stochastic_below_cells: float = param(
        1e4, "cells", "Below this size the compartment model draws every event (birth-death process); "
        "above it, it follows expected values.", "numerical choice", ge=0, le=1e9)
    infiltration_exponent: float = param(
        2.0 / 3.0, "-", "Effector entry into a lesion larger than the lattice region grows as "
        "(cells) ** exponent: entry through its surface, so the E:T ratio falls as it grows.",
        "model choice: infiltrates concentrate at the invasive margin (Galon 2006 Science 313:1960)",
        ge=0, le=1)

    @model_validator(mode="after")
    def _sizes_ordered(self) -> AdjuvantParams:
        if not self.focus_initial_cells < self.imaging_limit_cells <= self.detection_cells:
            raise ValueError(f"adjuvant: focus_initial_cells = {self.focus_initial_cells:g} < imaging_limit_cells = "
                             f"{self.imaging_limit_cells:g} <= detection_cells = {self.detection_cells:g} must hold")
        steps = 24.0 / self.compartment_dt_hours
        if abs(steps - round(steps)) > 1e-9:
            raise ValueError(f"adjuvant.compartment_dt_hours = {self.compartment_dt_hours:g} must divide 24 h")
        return self


class RecurrenceParams(Section):
    curative_max_lesions: int = param(3, "lesions", "Most lesions seen at a recurrence for curative retreatment.",
                                      "Milan criteria (Mazzaferro 1996 NEJM 334:693): up to 3 nodules", ge=0,
                                      le=100)
    curative_single_max_cm: float = param(5.0, "cm", "Largest single recurrent lesion treated curatively.",
                                          "Milan criteria: single nodule up to 5 cm", gt=0, le=50)
    curative_multiple_max_cm: float = param(3.0, "cm", "Largest of several lesions treated curatively.",
                                            "Milan criteria: up to 3 nodules of at most 3 cm", gt=0, le=50)
    curative_fitness: float = param(
        0.6, "probability", "Chance, at each recurrence within the criteria, that the patient is fit for "
        "re-resection or ablation (liver function, location).",
        "model choice; 33.9 % of early and 50.7 % of late recurrences retreated curatively "
        "(Wang 2020 Oncologist)", ge=0, le=1)
    max_curative_retreatments: int = param(3, "treatments", "Curative retreatments a patient can have.",
                                           "model choice", ge=0, le=20)


class AdvancedParams(Section):
    body_burden_cells: float = param(
        1e10, "cells", "Whole-body tumour burden at the start (measurable disease), followed in the "
        "compartment model; the lattice region is the sample where local killing is measured.",
        "model choice (about 10 cm3 at 1e9 cells/cm3)", gt=1)
    sample_days: float = param(28.0, "day", "How long the lattice sample region is followed.",
                               "model choice", gt=0, le=3650)
    progression_diameter_increase: float = param(
        0.2, "fraction", "Progression: burden above the nadir by the volume of this diameter increase.",
        "RECIST: +20 %", gt=0, le=5)
    check_every_days: float = param(1.0, "day", "How often the burden is measured and compared with the "
                                    "nadir (the response assessments); the burden is known daily.",
                                    "model choice", ge=1, le=365)


class OutcomeParams(Section):
    lethal_cells: float = param(1e12, "cells", "Tumour burden at cancer death (about 1 kg).",
                                "~1e12 cells, 1 kg (Friberg & Mattson 1997 J Surg Oncol 65:284)", gt=1)
    cells_per_cm3: float = param(1e9, "cells/cm3", "Tumour cell density (lesion diameter from its cells).",
                                 "~1e9 cells/cm3 (Del Monte 2009 Cell Cycle 8:505)", gt=0)
    other_cause_death_per_year: float = param(0.02, "1/year", "Competing death from other causes.",
                                              "model choice", ge=0, le=10)


class PublishedValue(Section):
    """A published result of the trial a scenario reproduces: a target or a prediction to check."""

    quantity: Literal["median_months", "hazard_ratio", "event_fraction"] = param(
        "hazard_ratio", "-", "median_months of an arm, hazard_ratio of the treated arm vs the reference arm, or "
        "event_fraction of an arm by `months`.")
    endpoint: Literal["rfs", "pfs", "os", "css"] = param("rfs", "-", "Endpoint (os: all-cause death; css: "
                                                         "cancer-related death).")
    arm: Name = param("", "-", "The arm (for hazard_ratio: the treated arm).")
    months: float = param(0.0, "month", "Landmark of an event_fraction.", ge=0)
    value: float = param(1.0, "-", "Published value.", ge=0)
    ci_low: float | None = param(None, "-", "Lower 95 % confidence limit, if published.")
    ci_high: float | None = param(None, "-", "Upper 95 % confidence limit, if published.")
    role: Literal["calibrated", "predicted"] = param("predicted", "-", "calibrated: a target of `cikabm "
                                                     "calibrate`; predicted: never fitted.")
    source: Text = param("", "-", "Where the value is published.")


class TrialScenario(Scenario):
    """A region scenario plus the trial: arms, cohort, setting and outcomes."""

    trial: TrialInfo = Field(default_factory=TrialInfo, description="Trial design.")
    arms: list[ArmParams] = Field(
        default_factory=lambda: [ArmParams(name="control"), ArmParams(name="cik", schedule="lee2015")],
        description="Arms; each patient is simulated in every arm.")
    cohort: CohortParams = Field(default_factory=CohortParams, description="Virtual-patient distributions.")
    adjuvant: AdjuvantParams = Field(default_factory=AdjuvantParams, description="Adjuvant setting: lesions.")
    recurrence: RecurrenceParams = Field(default_factory=RecurrenceParams,
                                         description="Adjuvant setting: retreatment and cancer death.")
    advanced: AdvancedParams = Field(default_factory=AdvancedParams, description="Advanced setting.")
    outcomes: OutcomeParams = Field(default_factory=OutcomeParams, description="Death and post-event survival.")
    published: list[PublishedValue] = Field(default_factory=list,
                                            description="Published results to compare with (validation).")

    @model_validator(mode="after")
    def _no_key_the_trial_replaces(self) -> TrialScenario:
        replaced = [f"{key} ({why})" for key, why in trial_replaced_keys(self.trial.setting) if _is_set(self, key)]
        if replaced:
            raise ValueError("a trial sets these per patient, so the file may not: " + "; ".join(replaced)
                             + " (docs/parameters.md)")
        return self

    @model_validator(mode="after")
    def _arms_make_sense(self) -> TrialScenario:
        if self.outcomes.lethal_cells <= self.adjuvant.detection_cells:
            raise ValueError(f"outcomes.lethal_cells = {self.outcomes.lethal_cells:g} must be above "
                             f"adjuvant.detection_cells = {self.adjuvant.detection_cells:g}")
        names = [a.name for a in self.arms]
        if not names:
            raise ValueError("arms: at least one arm is needed")
        if len(set(names)) != len(names):
            raise ValueError(f"arms: names must be unique, got {names}")
        if self.trial.reference_arm not in names:
            raise ValueError(f"trial.reference_arm = {self.trial.reference_arm!r} is not one of the arms {names}")
        for entry in self.published:
            if entry.arm and entry.arm not in names:
                raise ValueError(f"published: arm {entry.arm!r} is not one of the arms {names}")
        horizon = self.trial.follow_up_months * 30.4375
        for arm in self.arms:
            if arm.schedule != "none" and arm.start_day >= horizon:
                raise ValueError(f"arm {arm.name!r}: start_day = {arm.start_day:g} is after the end of "
                                 f"follow-up ({horizon:g} days)")
        return self

    def _cells_placed_at_start(self) -> tuple[str, int]:
        # An adjuvant lesion stays on the lattice below the hand-off size; an advanced sample starts at
        # tumour.initial_cells.
        if self.trial.setting == "adjuvant":
            return "adjuvant.handoff_cells", self.adjuvant.handoff_cells
        return super()._cells_placed_at_start()

    @property
    def horizon_days(self) -> float:
        return self.trial.follow_up_months * DAYS_PER_MONTH


def trial_replaced_keys(setting: str) -> tuple[tuple[str, str], ...]:
    """Region keys a trial sets for each patient, with what sets them: the one list of them.

    A trial file setting one is refused (it would be silently replaced).
    ``tumour.initial_cells`` is replaced in the adjuvant setting only (in the
    advanced setting it is the sample region's start).
    """
    keys = [
        ("[dosing]", "each arm gives its dosing: set it in [[arms]]"),
        ("time.duration_days", "each patient runs to the end of follow-up: set trial.follow_up_months"),
        ("time.record_every_hours", "set by adjuvant.check_every_days or, advanced, daily"),
        ("tumour.division_rate_per_day", "tumour.death_rate_per_day + ln 2 / the patient's doubling time: "
         "set cohort.doubling_time_median_days"),
    ]
    if setting == "adjuvant":
        keys.append(("tumour.initial_cells", "each lesion starts from adjuvant.focus_initial_cells or its "
                     "micrometastasis size"))
    return tuple(keys)


def _is_set(ts: Scenario, key: str) -> bool:
    """Whether the file set ``key`` (``[table]``: any of its keys), from pydantic's ``model_fields_set``."""
    section, _, field = key.strip("[]").partition(".")
    table = getattr(ts, section)
    return field in table.model_fields_set if field else bool(table.model_fields_set)


#: Days per month (365.25 / 12), used for every months <-> days conversion.
DAYS_PER_MONTH = 30.4375


def format_cells(cells: float) -> str:
    """A cell count the way the scenarios write it: ``6.4e9``, ``2e+05`` -> ``2e5``, small counts as is."""
    text = f"{cells:.3g}"
    mantissa, _, exponent = text.partition("e")
    return f"{mantissa}e{int(exponent)}" if exponent else text


def schedule_text(dosing: DosingParams, horizon_days: float, span: str) -> str:
    """A ``[dosing]`` table or an arm in words: schedule, first day, dose, and how many infusions
    fall within ``horizon_days`` (``span`` names it, e.g. ``"the 90 days"``).

    >>> schedule_text(ArmParams(name="cik", schedule="lee2015", start_day=14.0), 1826.25, "the 60-month follow-up")
    'schedule lee2015 from day 14, 6.4e9 cells each: all 16 scheduled infusions fall within the 60-month follow-up'
    """
    if dosing.schedule == "none":
        return "no CIK"
    name = dosing.schedule
    if name == "custom":
        name = f"custom ({phases_text(dosing_phases(dosing))})"
    days = dosing_days(dosing)
    given = int((days < horizon_days).sum())
    return (f"schedule {name} from day {dosing.start_day:g}, {format_cells(dosing.dose_cells)} cells each: "
            f"{infusion_count_text(given, len(days), span)}")


def trial_overview(ts: TrialScenario) -> list[str]:
    """The trial a scenario file describes, in words: the one summary of its design and arms.

    What ``cikabm validate`` prints for a trial file, instead of the region
    defaults (whose ``[time]`` and ``[dosing]`` a trial does not use as such).

    Parameters
    ----------
    ts : TrialScenario

    Returns
    -------
    list of str
        The design (setting and its endpoint, patients, follow-up), one line
        per arm (its schedule, infusions and dose, and how many infusions fall
        within follow-up), and the lattice each lesion or sample region runs on.
    """
    t = ts.trial
    endpoint = "RFS" if t.setting == "adjuvant" else "PFS"
    accrual = f", accrual over {t.accrual_months:g} months" if t.accrual_months else ""
    span = f"the {t.follow_up_months:g}-month follow-up"
    lines = [f"trial: {t.setting} setting (endpoint {endpoint}, with OS and cancer-specific survival), "
             f"{t.patients:,} patients, {t.follow_up_months:g} months of follow-up{accrual}, {len(ts.arms)} arm"
             + ("s" if len(ts.arms) != 1 else "") + ":"]
    for arm in ts.arms:
        role = " (reference)" if arm.name == t.reference_arm else ""
        lines.append(f"  {arm.name}{role}: {schedule_text(arm, ts.horizon_days, span)}")
    shape = "x".join(str(n) for n in ts.lattice.shape)
    grid = f"{ts.dims}D {shape} lattice in steps of {ts.time.dt_minutes:g} min"
    if t.setting == "adjuvant":
        lines.append(f"each lesion: {grid} until it reaches {ts.adjuvant.handoff_cells:,} cells or "
                     f"{ts.adjuvant.lattice_max_days:g} days, then the compartment model")
    else:
        lines.append(f"whole-body burden {format_cells(ts.advanced.body_burden_cells)} cells in the compartment "
                     f"model; local killing sampled on a {grid} for {ts.advanced.sample_days:g} days")
    return lines

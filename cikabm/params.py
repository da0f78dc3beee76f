"""Scenario parameters: typed, unit-bearing, validated, and self-documenting.

Every parameter is a pydantic field whose metadata carries its unit, allowed
range and source. :func:`parameter_reference` renders the reference table from
these definitions, so the docs cannot drift from the code. Rates are written in
physical units here and become per-step probabilities in one place,
:func:`cikabm.convert.kernel_parameters`.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from cikabm.schedules import DEFAULT_DOSE_CELLS, DOSING_SCHEDULES, MAX_INFUSIONS, PRESET_SCHEDULES, phase_count

KIND_KEYS = ("tnk", "tcell", "nk", "ctl")
KIND_LABELS = {
    "tnk": "CD3+CD56+ (T-NK)",
    "tcell": "CD3+CD56- (activated T)",
    "nk": "CD3-CD56+ (NK)",
    "ctl": "endogenous CTL",
}


def param(default: Any, unit: str, description: str, source: str = "", **constraints: Any) -> Any:
    """A scenario field with its unit, meaning and source attached."""
    return Field(
        default,
        description=description,
        json_schema_extra={"unit": unit, "source": source},
        **constraints,
    )


class Section(BaseModel):
    """Base of every scenario section: strict types, unknown keys rejected."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


def _printable(text: str, *, newlines: bool = False) -> str:
    """Refuse control characters (terminal escapes among them): names and texts are printed and plotted."""
    for i, char in enumerate(text):
        if (ord(char) < 32 and not (newlines and char in "\n\t")) or 127 <= ord(char) < 160:
            raise ValueError(f"contains the control character {char!r} at position {i}; use printable text")
    return text


#: A one-line name: printable, at most 100 characters.
Name = Annotated[str, StringConstraints(max_length=100), AfterValidator(_printable)]
#: A free text: printable, line breaks allowed, at most 10,000 characters.
Text = Annotated[str, StringConstraints(max_length=10_000), AfterValidator(partial(_printable, newlines=True))]


def upper_bound(section: type[BaseModel], field: str) -> float:
    """The largest value the schema allows for ``section.field`` (``inf`` when unbounded)."""
    for m in section.model_fields[field].metadata:
        for attr in ("le", "lt"):
            bound = getattr(m, attr, None)
            if bound is not None:
                return float(bound)
    return float("inf")


class ScenarioInfo(Section):
    name: Name = param("unnamed", "-", "Short name of the scenario.")
    description: Text = param("", "-", "What the scenario shows.")
    seed: int = param(1, "-", "Seed of all random streams (with patient id, step, agent, purpose).", ge=0,
                      lt=2**63)


class LatticeParams(Section):
    shape: list[int] = param([200, 200], "sites", "Interior lattice shape: [ny, nx] in 2D or [nz, ny, nx] in 3D.")
    neighbourhood: Literal["moore", "von_neumann"] = param(
        "moore", "-", "Contact neighbourhood: Moore (8 / 26 neighbours) or von Neumann (4 / 6).")
    site_size_um: float = param(15.0, "µm", "Edge of one site, about one cell diameter.",
                                "model choice: one cell diameter (docs/model.md, Entities)", gt=0)
    field_coarsening: int = param(8, "sites", "Edge of one IFN-gamma field cell, in sites.", ge=1, le=64)

    @field_validator("shape")
    @classmethod
    def _check_shape(cls, v: list[int]) -> list[int]:
        if len(v) not in (2, 3):
            raise ValueError(f"needs 2 (2D) or 3 (3D) entries, got {len(v)}")
        if any(n < 3 for n in v):
            raise ValueError("every edge must be at least 3 sites")
        total = 1
        for n in v:
            total *= n
        if total > 2**31:
            raise ValueError(f"{total} sites is more than the kernel's 2**31 limit")
        return v


class TimeParams(Section):
    duration_days: float = param(60.0, "day", "Simulated time.", gt=0, le=36500)
    dt_minutes: float = param(10.0, "min", "Time step of effector motion and engagement.",
                              "docs/model.md, Process overview", ge=0.01, le=120)
    record_every_hours: float = param(6.0, "h", "Interval between rows of the time series.", gt=0, le=876000)


class TumourParams(Section):
    initial_cells: int = param(300, "cells", "Tumour cells at time 0.", ge=0)
    initial_pattern: Literal["ball", "scattered"] = param(
        "ball", "-", "Initial placement: a compact ball at the centre, or scattered uniformly.")
    division_rate_per_day: float = param(
        0.6, "1/day", "Division rate of a cell with a free neighbour (contact inhibition otherwise).",
        "calibrate; HCC doubling 85.7 d is the net tumour rate (An 2015)", ge=0, le=24)
    death_rate_per_day: float = param(0.1, "1/day", "Intrinsic death rate.", "calibrate", ge=0, le=24)
    clearance_time_hours: float = param(12.0, "h", "Mean time a dead cell occupies its site.",
                                        "model choice (docs/model.md, Tumour cells)", gt=0)
    ligand_mean: float = param(0.6, "0-1", "Mean NKG2D-ligand density L (MICA/B, ULBP).",
                               "model choice (docs/model.md, Tumour cells)", ge=0, le=1)
    ligand_sd: float = param(0.1, "0-1", "Spread of L between cells at time 0.", ge=0, le=1)
    mhc_mean: float = param(0.8, "0-1", "Mean MHC class I level M.", "Paterson 1988: mostly kept in HCC",
                            ge=0, le=1)
    mhc_sd: float = param(0.1, "0-1", "Spread of M between cells at time 0.", ge=0, le=1)
    fas_mean: float = param(0.4, "0-1", "Mean Fas level F.", ge=0, le=1)
    fas_sd: float = param(0.1, "0-1", "Spread of F between cells at time 0.", ge=0, le=1)
    initial_mhc_lost_fraction: float = param(0.0, "fraction", "Cells MHC-lost at time 0.", ge=0, le=1)
    mhc_loss_per_division: float = param(
        0.005, "probability", "Chance a daughter loses MHC-I for good at division (immunoediting).",
        "calibrate; MHC-I loss in 20-60 % of solid tumours", ge=0, le=1)
    inheritance_sd: float = param(0.02, "0-1", "Noise on L, M, F passed to a daughter.", ge=0, le=1)


class EffectorKindParams(Section):
    nkg2d_rate_per_hour: float = param(0.0, "1/h", "Maximal NKG2D engagement rate on one neighbour.",
                                       "per kind, below", ge=0)
    missing_self_weight: float = param(0.0, "0-1", "w in (1 - w M): how much MHC-I inhibits NKG2D killing.",
                                       "missing self (docs/model.md, Recognition)", ge=0, le=1)
    tcr_rate_per_hour: float = param(0.0, "1/h", "MHC-restricted TCR engagement rate at M = 1, for a cell whose "
                                     "TCR recognises the tumour.",
                                     "per kind, below", ge=0)
    tcr_recognising_fraction: float = param(
        0.0, "fraction", "Share of this kind's cells whose TCR recognises the tumour (clonal: drawn once per "
        "cell at arrival); the others have no TCR term.", "per kind, below", ge=0, le=1)
    fasl: bool = param(True, "-", "Expresses FasL, so can kill by Fas/FasL without granules.",
                       "docs/model.md, Killing")
    death_rate_per_day: float = param(0.1, "1/day", "Death rate in tissue.", "calibrate", ge=0, le=100)
    speed_um_per_min: float = param(5.0, "µm/min", "Mean speed of the persistent random walk.",
                                    "Ichise 2022", ge=0, le=50)


#: Per-contact potency of the CIK subsets relative to each other (docs/model.md, "Effector subsets"):
#: CD3+CD56+ cells kill more per cell than CD3+CD56- cells, and less than CD3-CD56+ NK cells
#: (Schmidt-Wolf 1994 Br J Haematol 87:453; Lau 2009 Immunology 126:423). No source gives a
#: per-cell ratio; 3 either way is the model's assumption, and `cikabm assay` shows its consequence.
TNK_OVER_TCELL_POTENCY = 3.0
NK_OVER_TNK_POTENCY = 3.0

#: Engagement rate (per hour) of a CD3+CD56+ cell on a neighbour it fully recognises: the in vitro
#: potency, fitted to 33 % lysis of an HCC line at E:T 30:1 in 4 h (Kim 2007 Int Immunopharmacol
#: 7:1793) by `cikabm calibrate-potency` (command and result in calibration/potency_calibration.json).
CIK_POTENCY_PER_HOUR = 0.1367

#: Share of CIK T cells whose TCR recognises a given tumour: about 10 % of intratumoral CD8+ T cells
#: are tumour-reactive (Scheper 2019 Nat Med 25:89); blood-derived products may hold fewer.
CIK_TCR_RECOGNISING_FRACTION = 0.1

_KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    # NKG2D (MHC-independent) and clonal TCR killing; blocking NKG2D leaves the TCR part (Pievani 2011).
    "tnk": {"nkg2d_rate_per_hour": CIK_POTENCY_PER_HOUR, "missing_self_weight": 0.0,
            "tcr_rate_per_hour": CIK_POTENCY_PER_HOUR,
            "tcr_recognising_fraction": CIK_TCR_RECOGNISING_FRACTION, "death_rate_per_day": 0.1},
    # The same receptors, weaker per cell (fewer CD8+ cells, earlier effectors: Lau 2009).
    "tcell": {"nkg2d_rate_per_hour": CIK_POTENCY_PER_HOUR / TNK_OVER_TCELL_POTENCY, "missing_self_weight": 0.0,
              "tcr_rate_per_hour": CIK_POTENCY_PER_HOUR / TNK_OVER_TCELL_POTENCY,
              "tcr_recognising_fraction": CIK_TCR_RECOGNISING_FRACTION, "death_rate_per_day": 0.15},
    # NKG2D with missing self: MHC-I inhibits, MHC loss raises killing; no TCR.
    "nk": {"nkg2d_rate_per_hour": CIK_POTENCY_PER_HOUR * NK_OVER_TNK_POTENCY, "missing_self_weight": 0.8,
           "tcr_rate_per_hour": 0.0, "tcr_recognising_fraction": 0.0, "death_rate_per_day": 0.2},
    # Endogenous CTLs are the tumour-specific T cells: every one recognises it, MHC-restricted.
    "ctl": {"nkg2d_rate_per_hour": 0.0, "missing_self_weight": 0.0, "tcr_rate_per_hour": 2.0,
            "tcr_recognising_fraction": 1.0, "death_rate_per_day": 0.1},
}


_POTENCY_SOURCE = "in vitro fit: `cikabm calibrate-potency` (calibration/potency_calibration.json)"
_RATIO_SOURCE = (f"in vitro fit, / {TNK_OVER_TCELL_POTENCY:g} of CD3+CD56+ (assumed ratio; direction: Schmidt-Wolf "
                 "1994 Br J Haematol 87:453, Lau 2009 Immunology 126:423)")
#: Sources of the per-kind defaults, by dotted parameter name (the table shows one row per kind).
KIND_SOURCES: dict[str, str] = {
    "effectors.tnk.nkg2d_rate_per_hour": _POTENCY_SOURCE,
    "effectors.tnk.tcr_rate_per_hour": _POTENCY_SOURCE + "; TCR killing kept under NKG2D blocking (Pievani 2011 "
                                       "Blood 118:3301)",
    "effectors.tnk.tcr_recognising_fraction": "~10 % of intratumoral CD8+ T cells are tumour-reactive "
                                              "(Scheper 2019 Nat Med 25:89)",
    "effectors.tcell.nkg2d_rate_per_hour": _RATIO_SOURCE,
    "effectors.tcell.tcr_rate_per_hour": _RATIO_SOURCE,
    "effectors.tcell.tcr_recognising_fraction": "as CD3+CD56+ (Scheper 2019 Nat Med 25:89)",
    "effectors.nk.nkg2d_rate_per_hour": (f"in vitro fit, x {NK_OVER_TNK_POTENCY:g} of CD3+CD56+ (assumed ratio; NK "
                                         "above CD3+CD56+ per cell: Schmidt-Wolf 1994)"),
    "effectors.nk.missing_self_weight": "missing self: MHC-I inhibits NK killing (Lau 2009: blocking HLA-I raises it)",
    "effectors.nk.tcr_rate_per_hour": "none: NK cells have no TCR",
    "effectors.nk.tcr_recognising_fraction": "none: NK cells have no TCR",
    "effectors.ctl.nkg2d_rate_per_hour": "none: the CTL kind is the MHC-restricted control",
    "effectors.ctl.tcr_rate_per_hour": "calibrate; CTL 2-16 kills/day (Halle 2016 Immunity 44:233)",
    "effectors.ctl.tcr_recognising_fraction": "endogenous CTLs are the tumour-specific T cells",
}


def _kind_field(kind: str) -> Any:
    return Field(
        default_factory=lambda: EffectorKindParams(**_KIND_DEFAULTS[kind]),
        description=f"Parameters of {KIND_LABELS[kind]} effectors.",
    )


class EffectorParams(Section):
    tnk: EffectorKindParams = _kind_field("tnk")
    tcell: EffectorKindParams = _kind_field("tcell")
    nk: EffectorKindParams = _kind_field("nk")
    ctl: EffectorKindParams = _kind_field("ctl")
    persistence: float = param(0.7, "probability", "Chance a moving effector keeps its heading without redrawing it "
                         "(a redrawn heading is uniform over the neighbours, the old one included).", ge=0, le=1)
    motility: Literal["walk", "well_mixed"] = param(
        "walk", "-", "walk: persistent random walk; well_mixed: redistributed at random every sub-step "
        "(analytic check of mass-action killing).")
    capacity: int = param(200_000, "effectors", "Most effectors held at once (arrivals beyond are dropped "
                          "and counted).", ge=1, le=50_000_000)

    @model_validator(mode="before")
    @classmethod
    def _per_kind_defaults(cls, data: Any) -> Any:
        # A partial [effectors.nk] table overrides only the keys it names.
        if isinstance(data, dict):
            data = dict(data)
            for kind in KIND_KEYS:
                if isinstance(data.get(kind), dict):
                    data[kind] = {**_KIND_DEFAULTS[kind], **data[kind]}
        return data

    def kind(self, key: str) -> EffectorKindParams:
        return getattr(self, key)


class KillingParams(Section):
    perforin_time_minutes: float = param(30.0, "min", "Mean duration of a perforin/granzyme kill.",
                                         "tens of minutes (docs/model.md, Killing)", gt=0)
    fas_time_hours: float = param(4.0, "h", "Mean duration of a Fas/FasL kill.",
                                  "hours; ~6 h per kill (Halle 2016 Immunity 44:233)", gt=0)
    fas_threshold: float = param(0.3, "0-1", "Least effective Fas level for a Fas/FasL kill.", ge=0, le=1)
    granules_max: int = param(3, "granules", "Granules an effector holds (one used per perforin kill).",
                              ge=0, le=255)
    granule_regeneration_hours: float = param(12.0, "h", "Mean time to regenerate one granule.", gt=0)
    kill_capacity: int = param(5, "kills", "Lifetime kills before exhaustion.",
                               "Kather immunoABM: 5", ge=0, le=255)
    nkg2d_half_saturation: float = param(0.3, "0-1", "Ligand density at half-maximal NKG2D signal.",
                                         gt=0, le=1)
    nkg2d_hill: float = param(2.0, "-", "Hill coefficient of the NKG2D response.", gt=0, le=10)
    activation_death_per_kill: float = param(
        0.05, "probability", "Chance that an effector dies right after a kill (activation-induced cell death), "
        "beside its background death rate and exhaustion at kill_capacity.",
        "a large majority of NK cells survive serial killing of ~4 targets (Bhat & Watzl 2007 PLoS ONE 2:e326): "
        "0.05 leaves 81 % alive after 4 kills", ge=0, le=1)
    nkg2d_blocked: bool = param(False, "-", "Anti-NKG2D antibody present: no effector recognises through NKG2D "
                                "(a blocking experiment).", "Pievani 2011 Blood 118:3301")
    tcr_blocked: bool = param(False, "-", "TCR/CD3 blocked: no effector recognises through its TCR "
                              "(a blocking experiment).", "experimental switch, as anti-CD3 blocking in "
                              "Lau 2009 Immunology 126:423")


class IfnParams(Section):
    diffusion_um2_per_min: float = param(600.0, "µm²/min", "IFN-gamma diffusion coefficient in tissue.",
                                         "cytokines ~10 µm²/s", ge=0, le=1e5)
    half_life_hours: float = param(2.0, "h", "IFN-gamma half-life in tissue (at least one minute).",
                                   ge=1.0 / 60.0)
    secretion_per_hour: float = param(2.0, "units/h", "Secretion by one engaged effector into its field cell.",
                                      ge=0)
    half_effect: float = param(1.0, "units", "Field level at which MHC-I and Fas are raised half-way to 1.",
                               gt=0)


class ProductParams(Section):
    share_tnk: float = param(0.36, "fraction", "CD3+CD56+ share of the CIK product.", "Kim 2007; Kim 2012: 32-41 %",
                             ge=0, le=1)
    share_tcell: float = param(0.60, "fraction", "CD3+CD56- share of the CIK product.", "CD3+ 94-96 % in total",
                               ge=0, le=1)
    share_nk: float = param(0.04, "fraction", "CD3-CD56+ share of the CIK product.", "Kim 2007: 3-4 %",
                            ge=0, le=1)

    @model_validator(mode="after")
    def _shares_sum_to_one(self) -> ProductParams:
        total = self.share_tnk + self.share_tcell + self.share_nk
        if abs(total - 1.0) > 0.01:
            raise ValueError(f"share_tnk + share_tcell + share_nk = {total:g}, must be 1 (within 0.01)")
        return self


class Phase(Section):
    count: int = param(1, "infusions", "Infusions in this phase.", ge=1, le=1000)
    interval_days: float = param(7.0, "day", "Time from the previous infusion to each infusion of this phase.",
                                 gt=0)


class DosingParams(Section):
    schedule: str = param("none", "-", "A preset (" + ", ".join(sorted(PRESET_SCHEDULES)) +
                          "), 'custom' to use `phases`, or 'none' for no CIK.")
    phases: list[Phase] = Field(default_factory=list, description="Phases (count x interval) when schedule = 'custom'.")
    start_day: float = param(0.0, "day", "Time of the first infusion.", ge=0)
    dose_cells: float = param(DEFAULT_DOSE_CELLS, "cells", "CIK cells per infusion.", "Lee 2015: 6.4e9", ge=0,
                              le=1e13)

    @model_validator(mode="after")
    def _schedule_makes_sense(self) -> DosingParams:
        if self.schedule == "custom":
            if not self.phases:
                raise ValueError("schedule = 'custom' needs at least one entry in phases")
        elif self.schedule in PRESET_SCHEDULES or self.schedule == "none":
            if self.phases:
                raise ValueError(f"phases are given but schedule = {self.schedule!r}; "
                                 "set schedule = 'custom' to use them")
        else:
            raise ValueError(f"schedule = {self.schedule!r} is not one of " + ", ".join(DOSING_SCHEDULES))
        total = phase_count([(p.count, p.interval_days) for p in self.phases])
        if total > MAX_INFUSIONS:
            raise ValueError(f"phases hold {total} infusions in all, more than {MAX_INFUSIONS}")
        return self


#: The shortest half-life a blood persistence curve may have: one minute, in days.
MIN_HALF_LIFE_DAYS = 1.0 / 1440.0


class PersistenceParams(Section):
    fast_fraction: float = param(0.9, "fraction", "Share of an infusion in the fast-decaying blood compartment.",
                                 "calibrate", ge=0, le=1)
    # Floors at one minute (about one blood circulation): a shorter "persistence" means nothing, and a
    # half-life near zero made the blood curve NaN, on which the kernel's Poisson sampler never returned.
    fast_half_life_days: float = param(4.0, "day", "Half-life of the fast part (at least one minute).",
                                       "Stein 2019: ~4 d", ge=MIN_HALF_LIFE_DAYS)
    slow_half_life_days: float = param(20.0, "day", "Half-life of the persistent part (at least one minute).",
                                       "Shi 2012: baseline by ~2 months", ge=MIN_HALF_LIFE_DAYS)


class HomingParams(Section):
    cik_per_site_per_day: float = param(
        7e-14, "1/(site·day)", "Fraction of circulating CIK cells entering one lattice site per day.",
        "calibrate; most infused cells go to lung, liver, spleen", ge=0, le=1e-6)
    ctl_per_site_per_day: float = param(5e-4, "1/(site·day)", "Background arrivals of endogenous CTLs.",
                                        "calibrate", ge=0, le=1)


class Scenario(Section):
    """A complete, validated scenario."""

    scenario: ScenarioInfo = Field(default_factory=ScenarioInfo, description="Name, description, seed.")
    lattice: LatticeParams = Field(default_factory=LatticeParams, description="Space.")
    time: TimeParams = Field(default_factory=TimeParams, description="Time.")
    tumour: TumourParams = Field(default_factory=TumourParams, description="Tumour cells.")
    effectors: EffectorParams = Field(default_factory=EffectorParams, description="Effector cells.")
    killing: KillingParams = Field(default_factory=KillingParams, description="Killing.")
    ifn: IfnParams = Field(default_factory=IfnParams, description="IFN-gamma field.")
    product: ProductParams = Field(default_factory=ProductParams, description="CIK product mix.")
    dosing: DosingParams = Field(default_factory=DosingParams, description="Infusion schedule.")
    persistence: PersistenceParams = Field(default_factory=PersistenceParams, description="Blood persistence.")
    homing: HomingParams = Field(default_factory=HomingParams, description="Homing into the region.")

    @model_validator(mode="after")
    def _cross_checks(self) -> Scenario:
        n_sites = 1
        for n in self.lattice.shape:
            n_sites *= n
        key, cells = self._cells_placed_at_start()
        if cells > n_sites:
            raise ValueError(f"{key} = {cells} exceeds the {n_sites} lattice sites")
        steps = self.time.duration_days * 1440.0 / self.time.dt_minutes
        if steps > 1e8:
            raise ValueError(f"time.duration_days = {self.time.duration_days:g} at time.dt_minutes = "
                             f"{self.time.dt_minutes:g} is {steps:.3g} steps; at most 1e8 allowed")
        if self.time.record_every_hours > self.time.duration_days * 24.0:
            raise ValueError(f"time.record_every_hours = {self.time.record_every_hours:g} is longer than the run "
                             f"(time.duration_days = {self.time.duration_days:g})")
        if self.time.record_every_hours * 60.0 < self.time.dt_minutes * (1.0 - 1e-12):  # (rounding of h <-> min)
            raise ValueError(f"time.record_every_hours = {self.time.record_every_hours} is shorter than "
                             f"one step (time.dt_minutes = {self.time.dt_minutes})")
        fastest = max(self.effectors.kind(k).speed_um_per_min for k in KIND_KEYS)
        sites_per_step = fastest * self.time.dt_minutes / self.lattice.site_size_um
        if sites_per_step > 16:
            raise ValueError(f"effectors move {sites_per_step:g} sites per step (fastest speed {fastest:g} µm/min "
                             f"x time.dt_minutes = {self.time.dt_minutes:g} / lattice.site_size_um = "
                             f"{self.lattice.site_size_um:g}); at most 16 allowed: shorten time.dt_minutes")
        if self.dosing.schedule != "none" and self.dosing.start_day >= self.time.duration_days:
            raise ValueError(f"dosing.start_day = {self.dosing.start_day} is not before the end of the run "
                             f"(time.duration_days = {self.time.duration_days}): no infusion would be given")
        return self

    def _cells_placed_at_start(self) -> tuple[str, int]:
        """The most tumour cells a run places on the lattice at the start, and the key that sets it."""
        return "tumour.initial_cells", self.tumour.initial_cells

    @property
    def dims(self) -> int:
        return len(self.lattice.shape)

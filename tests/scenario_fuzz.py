"""Support of ``tests/test_fuzz_scenarios.py``: schema-driven strategies (the worker: ``fuzz_worker.py``).

* :func:`schema_leaves` reads every scalar field of a pydantic scenario model with its type, default and
  bounds (``ge``/``gt``/``le``/``lt`` of ``cikabm.params.param``), so the strategies follow the schema.
* :func:`region_dicts` and :func:`trial_dicts` draw *valid*, non-default scenarios as nested dicts;
  :func:`mutations` turns one into an invalid variant and says which dotted key the error must name.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from hypothesis import strategies as st
from pydantic import BaseModel

from cikabm.params import KIND_KEYS, Scenario
from cikabm.schedules import MAX_INFUSIONS, PRESET_SCHEDULES
from cikabm.trial_params import DAYS_PER_MONTH, PublishedValue, TrialScenario

# --------------------------------------------------------------------------- the schema


@dataclass(frozen=True)
class Leaf:
    """One scalar field of the schema: dotted path, type, default, bounds."""

    path: str
    kind: str  # "bool", "int", "float", "str", "literal", "list", "optional_float"
    default: Any
    lo: float | None = None
    lo_strict: bool = False
    hi: float | None = None
    hi_strict: bool = False
    choices: tuple[Any, ...] = ()
    max_length: int | None = None
    newlines: bool = False

    @property
    def bounded(self) -> bool:
        return self.kind in ("int", "float") and (self.lo is not None or self.hi is not None)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _leaf(path: str, field: Any, default: Any) -> Leaf:
    ann = field.annotation
    lo = hi = None
    lo_strict = hi_strict = False
    max_length = None
    for m in field.metadata:
        if getattr(m, "ge", None) is not None:
            lo = m.ge
        if getattr(m, "gt", None) is not None:
            lo, lo_strict = m.gt, True
        if getattr(m, "le", None) is not None:
            hi = m.le
        if getattr(m, "lt", None) is not None:
            hi, hi_strict = m.lt, True
        if getattr(m, "max_length", None) is not None:
            max_length = m.max_length
    if get_origin(ann) is Literal:
        return Leaf(path, "literal", default, choices=get_args(ann))
    if ann is bool:
        return Leaf(path, "bool", default)
    if ann is int:
        return Leaf(path, "int", default, lo, lo_strict, hi, hi_strict)
    if ann is float:
        return Leaf(path, "float", default, lo, lo_strict, hi, hi_strict)
    if ann is str:
        return Leaf(path, "str", default, max_length=max_length, newlines=(max_length or 0) > 100)
    if get_origin(ann) is list:
        return Leaf(path, "list", default)
    if set(get_args(ann)) == {float, type(None)}:
        return Leaf(path, "optional_float", default)
    raise TypeError(f"{path}: the fuzzer does not know the type {ann!r}; teach tests/scenario_fuzz.py")


def schema_leaves(instance: BaseModel, prefix: str = "") -> list[Leaf]:
    """Every scalar field under ``instance`` (a default model), nested tables flattened to dotted paths.

    Lists of tables (``dosing.phases``, ``arms``, ``published``) are left out: the strategies build them.
    """
    out: list[Leaf] = []
    for name, field in type(instance).model_fields.items():
        value = getattr(instance, name)
        path = prefix + name
        if isinstance(value, BaseModel):
            out.extend(schema_leaves(value, path + "."))
        elif any(_is_model(a) for a in get_args(field.annotation)):
            continue
        else:
            out.append(_leaf(path, field, value))
    return out


REGION_LEAVES = {leaf.path: leaf for leaf in schema_leaves(Scenario())}
TRIAL_LEAVES = {leaf.path: leaf for leaf in schema_leaves(TrialScenario())}
PUBLISHED_LEAVES = {leaf.path: leaf for leaf in schema_leaves(PublishedValue(), "published.")}
ARM_LEAVES = {"start_day": REGION_LEAVES["dosing.start_day"], "dose_cells": REGION_LEAVES["dosing.dose_cells"]}

#: Keys a valid trial file may not set: the trial replaces them per patient (``[dosing]`` as a whole).
TRIAL_REPLACED = ("time.duration_days", "time.record_every_hours", "tumour.division_rate_per_day")
TRIAL_REPLACED_ADJUVANT = ("tumour.initial_cells",)

#: Keys the strategies set themselves (sizes kept small, cross-checks kept true): not drawn generically.
SPECIAL_REGION = {"lattice.shape", "lattice.site_size_um", "time.duration_days", "time.dt_minutes",
                  "time.record_every_hours", "tumour.initial_cells", "effectors.capacity",
                  "product.share_tnk", "product.share_tcell", "product.share_nk", "dosing.schedule",
                  "dosing.start_day", "dosing.dose_cells"}
SPECIAL_TRIAL = SPECIAL_REGION | {
    "trial.setting", "trial.patients", "trial.follow_up_months", "trial.accrual_months", "trial.reference_arm",
    "trial.chunk_patients", "adjuvant.max_foci", "adjuvant.focus_initial_cells", "adjuvant.imaging_limit_cells",
    "adjuvant.detection_cells", "adjuvant.handoff_cells", "adjuvant.lattice_max_days",
    "adjuvant.compartment_dt_hours", "adjuvant.check_every_days", "advanced.sample_days",
    "advanced.check_every_days", "outcomes.lethal_cells",
    *TRIAL_REPLACED}

#: Fields without an upper bound in the schema get one here (their typical range; a rare draw goes far
#: beyond it, see :func:`float_values`).
TYPICAL_HI: dict[str, float] = {
    "tumour.clearance_time_hours": 200.0, "killing.perforin_time_minutes": 600.0, "killing.fas_time_hours": 48.0,
    "killing.granule_regeneration_hours": 200.0, "ifn.half_life_hours": 48.0, "ifn.secretion_per_hour": 50.0,
    "ifn.half_effect": 20.0, "persistence.fast_half_life_days": 60.0, "persistence.slow_half_life_days": 400.0,
    "advanced.body_burden_cells": 1e12, "outcomes.cells_per_cm3": 1e10, "published.months": 120.0,
    "published.value": 100.0,
}

#: Size-like fields kept small so that a kernel run stays well under a second (the capacity is always set:
#: the default, 200,000, costs up to 200,000 x 32 placement tries a step once the supply floods the lattice).
SIZE_HI: dict[str, int] = {"effectors.capacity": 3000, "adjuvant.max_foci": 3}


def scale() -> str:
    """``ci`` (default) or ``nightly`` (``CIKABM_FUZZ=nightly``)."""
    mode = os.environ.get("CIKABM_FUZZ", "ci").strip().lower() or "ci"
    if mode not in ("ci", "nightly"):
        raise ValueError(f"CIKABM_FUZZ = {mode!r}: use 'ci' or 'nightly'")
    return mode


#: Most kernel steps of one fuzzed region run (and of one trial lesion's lattice phase).
MAX_STEPS = {"ci": 300, "nightly": 1500}[scale()]
MAX_TRIAL_LATTICE_STEPS = {"ci": 150, "nightly": 600}[scale()]

# --------------------------------------------------------------------------- value strategies


def weighted(*pairs: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of several strategies, each chosen with its integer weight."""
    table = [s for w, s in pairs for _ in range(w)]
    return st.sampled_from(range(len(table))).flatmap(lambda i: table[i])


def log_uniform(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Floats spread evenly in log scale over ``[lo, hi]`` (``0 < lo <= hi``)."""
    a, b = math.log10(lo), math.log10(hi)
    return st.floats(a, b).map(lambda x: min(max(10.0**x, lo), hi))


def float_values(leaf: Leaf, lo: float | None = None, hi: float | None = None) -> st.SearchStrategy[float]:
    """Valid floats of ``leaf``: uniform, log-uniform, the edges, and (unbounded above) rarely far out.

    ``lo`` and ``hi`` narrow the schema's range (``hi`` also stands in for a missing upper bound, else
    :data:`TYPICAL_HI` or 100 x the default).
    """
    strict_lo = leaf.lo_strict and (lo is None or lo == leaf.lo)
    lo = float(leaf.lo if lo is None else lo) if (leaf.lo is not None or lo is not None) else 0.0
    bounded_hi = leaf.hi is not None
    if hi is None:
        hi = float(leaf.hi) if bounded_hi else TYPICAL_HI.get(leaf.path, max(100.0 * abs(leaf.default or 0.0), 10.0))
    hi = float(hi)
    strict_hi = leaf.hi_strict and hi == leaf.hi
    options: list[tuple[int, st.SearchStrategy[Any]]] = [
        (4, st.floats(lo, hi, exclude_min=strict_lo, exclude_max=strict_hi)),
    ]
    log_lo = max(lo, hi * 1e-9)
    if strict_lo and log_lo == lo:
        log_lo = math.nextafter(lo, math.inf)
    if 0 < log_lo < hi:
        options.append((4, log_uniform(log_lo, hi)))
    if not strict_lo:
        options.append((1, st.just(lo)))
    if not strict_hi:
        options.append((1, st.just(hi)))
    if not bounded_hi:
        options.append((1, st.sampled_from([hi * 1e3, hi * 1e6])))
    return weighted(*options)


def int_values(leaf: Leaf, lo: int | None = None, hi: int | None = None) -> st.SearchStrategy[int]:
    lo = (int(leaf.lo) + (1 if leaf.lo_strict else 0) if leaf.lo is not None else 0) if lo is None else lo
    if hi is None:
        hi = SIZE_HI.get(leaf.path)
    if hi is None:
        hi = int(leaf.hi) - (1 if leaf.hi_strict else 0) if leaf.hi is not None else max(4 * int(leaf.default), lo + 10)
    return weighted((4, st.integers(lo, hi)), (1, st.sampled_from([lo, hi])))


_TEXT_CHARS = st.characters(blacklist_categories=("Cc", "Cs"))


def text_values(leaf: Leaf) -> st.SearchStrategy[str]:
    size = min(leaf.max_length or 20, 40)
    chars = st.one_of(_TEXT_CHARS, st.sampled_from("\n\t")) if leaf.newlines else _TEXT_CHARS
    longest = leaf.max_length or 1  # the longest allowed: one character repeated
    return weighted((3, st.text(chars, max_size=size)), (1, chars.map(lambda c: c * longest)))


def leaf_values(leaf: Leaf) -> st.SearchStrategy[Any]:
    """Valid values of one leaf, from its type and bounds."""
    if leaf.kind == "bool":
        return st.booleans()
    if leaf.kind == "literal":
        return st.sampled_from(leaf.choices)
    if leaf.kind == "int":
        return int_values(leaf)
    if leaf.kind == "float":
        return float_values(leaf)
    if leaf.kind == "str":
        return text_values(leaf)
    if leaf.kind == "optional_float":
        return st.none() | float_values(Leaf(leaf.path, "float", 0.0, 0.0), hi=100.0)
    raise TypeError(leaf.path)


# --------------------------------------------------------------------------- nested dicts


def put(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts."""
    *tables, key = path.split(".")
    for t in tables:
        data = data.setdefault(t, {})
    data[key] = value


def get(data: dict[str, Any], path: str, default: Any = None) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return default
        data = data[part]
    return data


def _value(data: dict[str, Any], path: str, leaves: dict[str, Leaf]) -> Any:
    """The value a key will have: set in ``data``, else its default."""
    return get(data, path, leaves[path].default)


def _sites(shape: list[int]) -> int:
    return math.prod(shape)


@st.composite
def _shape(draw: Any, dims: int, min_sites: int = 1) -> list[int]:
    hi = 40 if dims == 2 else 14
    shape = draw(st.lists(weighted((4, st.integers(8 if dims == 2 else 6, hi)), (1, st.integers(3, hi))),
                          min_size=dims, max_size=dims))
    while _sites(shape) < min_sites:
        shape = [min(n + 2, hi) for n in shape]
    return shape


def _fastest(data: dict[str, Any]) -> float:
    return max(_value(data, f"effectors.{k}.speed_um_per_min", REGION_LEAVES) for k in KIND_KEYS)


def _dt_within_motility_limit(draw: Any, data: dict[str, Any], lo: float, hi: float) -> float:
    """A step (minutes) in ``[lo, hi]`` at which no effector moves more than 16 sites (the cross-check)."""
    dt = draw(weighted((3, log_uniform(lo, hi)), (1, st.sampled_from([lo, hi]))))
    site = _value(data, "lattice.site_size_um", REGION_LEAVES)
    fastest = _fastest(data)
    while dt > REGION_LEAVES["time.dt_minutes"].lo and fastest * dt / site > 16:
        dt = max(16 * site / fastest * (1 - 1e-9), REGION_LEAVES["time.dt_minutes"].lo)
    return dt


def _generic(draw: Any, data: dict[str, Any], leaves: dict[str, Leaf], special: set[str] | frozenset[str],
             min_keys: int, max_keys: int) -> None:
    """Set between ``min_keys`` and ``max_keys`` keys drawn from the schema's ordinary leaves."""
    paths = sorted(p for p in leaves if p not in special and leaves[p].kind != "list")
    chosen = draw(st.lists(st.sampled_from(paths), min_size=min_keys, max_size=max_keys, unique=True))
    for path in chosen:
        put(data, path, draw(leaf_values(leaves[path])))


def _product(draw: Any, data: dict[str, Any]) -> None:
    weights = draw(st.lists(weighted((3, st.floats(0.0, 1.0)), (1, st.just(0.0))), min_size=3, max_size=3))
    if sum(weights) <= 0:
        weights = [1.0, 0.0, 0.0]
    total = sum(weights)
    for key, w in zip(("share_tnk", "share_tcell", "share_nk"), weights, strict=True):
        put(data, f"product.{key}", w / total)


@st.composite
def _phases(draw: Any) -> list[dict[str, Any]]:
    """1-3 custom phases, within the schema's bounds and, in all, at most MAX_INFUSIONS infusions."""
    from cikabm.params import Phase

    leaves = {leaf.path: leaf for leaf in schema_leaves(Phase())}
    left = MAX_INFUSIONS
    phases = []
    for _ in range(draw(st.integers(1, 3))):
        if left < 1:
            break
        hi = min(int(leaves["count"].hi), left, draw(st.sampled_from([5, left])))
        count = draw(int_values(leaves["count"], hi=hi))
        left -= count
        phases.append({"count": count, "interval_days": draw(float_values(leaves["interval_days"], hi=60.0))})
    return phases


@st.composite
def dosing_tables(draw: Any, last_start: float) -> dict[str, Any]:
    """A ``[dosing]`` table (or an arm's dosing): a schedule starting before ``last_start`` days."""
    out: dict[str, Any] = {}
    schedule = draw(st.sampled_from(["none", "custom", *sorted(PRESET_SCHEDULES)]))
    if schedule != "none" or draw(st.booleans()):
        out["schedule"] = schedule
    if schedule == "custom":
        out["phases"] = draw(_phases())
    if draw(st.booleans()):
        if schedule == "none":
            out["start_day"] = draw(float_values(ARM_LEAVES["start_day"], hi=max(last_start, 1.0)))
        else:
            start = last_start * draw(st.floats(0.0, 1.0, exclude_max=True))
            out["start_day"] = start if start < last_start else 0.0  # (a subnormal times 0.99 rounds to itself)
    if draw(st.booleans()):
        out["dose_cells"] = draw(float_values(ARM_LEAVES["dose_cells"]))
    return out


def _run_length(dt: float, steps: int, per_record: int) -> tuple[float, float]:
    """``(duration_days, record_every_hours)`` of ``steps`` steps of ``dt`` minutes, a record every
    ``per_record`` steps, nudged so that the cross-checks (computed as they compute them) hold:
    one step <= record interval <= run."""
    duration = steps * dt / 1440.0
    record = min(per_record * dt / 60.0, duration * 24.0)
    for _ in range(1000):
        if record * 60.0 < dt:
            record *= 1.0 + 1e-12
        elif record > duration * 24.0:
            duration *= 1.0 + 1e-12
        else:
            return duration, record
    raise AssertionError(f"no record interval for dt = {dt!r}, {steps} steps")


@st.composite
def region_dicts(draw: Any, dims: int | None = None) -> dict[str, Any]:
    """A valid region scenario with several non-default keys, small enough to run in well under a second."""
    dims = draw(st.sampled_from([2, 3])) if dims is None else dims
    data: dict[str, Any] = {}
    # One in four is crowded: a lattice flooded with CIK cells from the first step, more of them than the
    # effector pass needs to run in strips with 2 threads (288 in 2D, 864 in 3D: core.run_steps).
    crowded = draw(st.integers(0, 3)) == 0
    shape = draw(_shape(dims, min_sites=(600 if dims == 2 else 1300) if crowded else 1))
    put(data, "lattice.shape", shape)
    n_sites = _sites(shape)
    _generic(draw, data, REGION_LEAVES, SPECIAL_REGION, 3, 14)
    if draw(st.booleans()):
        put(data, "lattice.site_size_um", draw(float_values(REGION_LEAVES["lattice.site_size_um"], lo=0.5, hi=500.0)))
    if draw(st.integers(0, 3)) == 0:
        _product(draw, data)
    if n_sites < REGION_LEAVES["tumour.initial_cells"].default or draw(st.booleans()):
        put(data, "tumour.initial_cells", draw(int_values(REGION_LEAVES["tumour.initial_cells"],
                                                          hi=min(n_sites, 400))))
    put(data, "effectors.capacity", draw(int_values(REGION_LEAVES["effectors.capacity"],
                                                    lo=min(n_sites, 3000) if crowded else None)))  # see SIZE_HI
    # Time: a step at which effectors move at most 16 sites, a run of at most MAX_STEPS steps, records
    # between one step and the whole run.
    leaf = REGION_LEAVES["time.dt_minutes"]
    dt = _dt_within_motility_limit(draw, data, leaf.lo, leaf.hi)
    if dt != leaf.default or draw(st.booleans()):
        put(data, "time.dt_minutes", dt)
    steps = draw(weighted((3, st.integers(1, MAX_STEPS)), (1, st.sampled_from([1, 2, MAX_STEPS]))))
    duration, record = _run_length(dt, steps, draw(st.integers(1, steps)))
    put(data, "time.duration_days", duration)
    put(data, "time.record_every_hours", record)
    if draw(st.integers(0, 4)) > 0:
        dosing = draw(dosing_tables(duration))
        if dosing:
            data["dosing"] = dosing
    if crowded:
        data["dosing"] = {"schedule": draw(st.sampled_from(sorted(PRESET_SCHEDULES))),
                          "dose_cells": draw(log_uniform(1e9, ARM_LEAVES["dose_cells"].hi))}
        homing = REGION_LEAVES["homing.cik_per_site_per_day"]
        put(data, "homing.cik_per_site_per_day", draw(log_uniform(1e-8, homing.hi)))
        for kind in ("tnk", "tcell", "nk"):  # (a kind that dies at once would not crowd)
            if get(data, f"effectors.{kind}.death_rate_per_day", 0.0) > 1.0:
                put(data, f"effectors.{kind}.death_rate_per_day", 1.0)
    else:
        _supply(draw, data)
    return data


def _supply(draw: Any, data: dict[str, Any]) -> None:
    """Often, a supply of effectors large enough that a short run sees arrivals, engagements and kills."""
    if draw(st.integers(0, 2)) == 0:
        return
    h = REGION_LEAVES
    if draw(st.booleans()):
        put(data, "homing.ctl_per_site_per_day", draw(float_values(h["homing.ctl_per_site_per_day"], lo=0.05)))
    if draw(st.booleans()) and get(data, "dosing.schedule", "none") != "none":
        put(data, "homing.cik_per_site_per_day", draw(float_values(h["homing.cik_per_site_per_day"], lo=1e-9)))


# --------------------------------------------------------------------------- trials

_ARM_NAMES = st.sampled_from(["control", "cik", "lee2015 half", "Arm B", "arm-3", "µ dose", "ctrl"])




@st.composite
def trial_dicts(draw: Any, setting: str | None = None) -> dict[str, Any]:
    """A valid trial scenario (adjuvant or advanced) with 2-4 patients, short follow-up and small lattices.

    It sets none of the keys a trial replaces per patient (``[dosing]``, ``time.duration_days``,
    ``time.record_every_hours``, ``tumour.division_rate_per_day``; adjuvant: ``tumour.initial_cells``).
    Timing and sizes span their whole schema ranges: a follow-up (or a patient's censoring time) shorter
    than one time step, ``adjuvant.check_every_days`` shorter than one step and ``focus_initial_cells``
    above the lattice's sites all run (defects this fuzzer found, now fixed).
    """
    setting = draw(st.sampled_from(["adjuvant", "advanced"])) if setting is None else setting
    dims = draw(st.sampled_from([2, 3]))
    data: dict[str, Any] = {}
    # The adjuvant lattice holds at least 300 sites: then neither the default tumour.initial_cells (checked
    # before the rule that forbids setting it) nor the default adjuvant.handoff_cells exceeds it.
    shape = draw(_shape(dims, min_sites=300 if setting == "adjuvant" else 1))
    put(data, "lattice.shape", shape)
    n_sites = _sites(shape)
    special = set(SPECIAL_TRIAL) | {p for p in TRIAL_LEAVES if p.startswith("dosing.")}
    if setting == "adjuvant":
        special |= set(TRIAL_REPLACED_ADJUVANT)
    _generic(draw, data, TRIAL_LEAVES, special, 4, 16)
    if draw(st.booleans()):
        put(data, "lattice.site_size_um", draw(float_values(REGION_LEAVES["lattice.site_size_um"], lo=2.0, hi=100.0)))
    if draw(st.integers(0, 3)) == 0:
        _product(draw, data)
    if setting == "advanced" and (n_sites < REGION_LEAVES["tumour.initial_cells"].default or draw(st.booleans())):
        put(data, "tumour.initial_cells", draw(int_values(REGION_LEAVES["tumour.initial_cells"],
                                                          hi=min(n_sites, 300))))
    put(data, "effectors.capacity", draw(int_values(REGION_LEAVES["effectors.capacity"])))  # small: see SIZE_HI
    dt = _dt_within_motility_limit(draw, data, 5.0, REGION_LEAVES["time.dt_minutes"].hi)
    put(data, "time.dt_minutes", dt)
    lattice_days_max = MAX_TRIAL_LATTICE_STEPS * dt / 1440.0

    t = TRIAL_LEAVES
    put(data, "trial.setting", setting)
    put(data, "trial.patients", draw(st.integers(2, 4)))
    follow = draw(float_values(t["trial.follow_up_months"], hi=6.0))
    put(data, "trial.follow_up_months", follow)
    accrual = follow * draw(st.floats(0.0, 1.0, exclude_max=True))
    if accrual < follow and draw(st.booleans()):  # (a subnormal follow-up times 0.99 rounds to itself)
        put(data, "trial.accrual_months", accrual)
    if draw(st.booleans()):
        put(data, "trial.chunk_patients", draw(st.integers(1, 4)))
    names = draw(st.lists(_ARM_NAMES, min_size=1, max_size=3, unique=True))
    horizon = follow * DAYS_PER_MONTH
    arms = []
    for name in names:
        arm = {"name": name, **draw(dosing_tables(horizon))}
        arms.append(arm)
    data["arms"] = arms
    if "control" not in names or draw(st.booleans()):
        put(data, "trial.reference_arm", draw(st.sampled_from(names)))

    if setting == "adjuvant":
        put(data, "adjuvant.max_foci", draw(int_values(t["adjuvant.max_foci"])))
        put(data, "adjuvant.lattice_max_days", draw(float_values(t["adjuvant.lattice_max_days"],
                                                                  hi=lattice_days_max)))
        if draw(st.booleans()):
            put(data, "adjuvant.handoff_cells", draw(int_values(t["adjuvant.handoff_cells"], hi=min(n_sites, 400))))
        if draw(st.booleans()):
            put(data, "adjuvant.compartment_dt_hours", 24.0 / draw(st.integers(1, 96)))
        if draw(st.booleans()):
            put(data, "adjuvant.check_every_days", draw(float_values(
                t["adjuvant.check_every_days"])))
        if draw(st.booleans()):  # the sizes: focus < imaging limit <= detection < lethal
            focus = draw(int_values(t["adjuvant.focus_initial_cells"]))
            imaging = focus * draw(log_uniform(1.001, 1e6))
            detection = imaging * draw(weighted((1, st.just(1.0)), (3, log_uniform(1.0, 1e3))))
            lethal = detection * draw(log_uniform(1.001, 1e4))
            put(data, "adjuvant.focus_initial_cells", focus)
            put(data, "adjuvant.imaging_limit_cells", imaging)
            put(data, "adjuvant.detection_cells", detection)
            put(data, "outcomes.lethal_cells", lethal)
    else:
        put(data, "advanced.sample_days", draw(float_values(t["advanced.sample_days"], hi=lattice_days_max)))
        if draw(st.booleans()):
            put(data, "advanced.check_every_days", draw(float_values(
                t["advanced.check_every_days"])))
        if draw(st.booleans()):
            put(data, "outcomes.lethal_cells", draw(log_uniform(t["adjuvant.detection_cells"].default * 1.001,
                                                                1e14)))
    if draw(st.integers(0, 2)) == 0:
        data["published"] = draw(st.lists(_published(names), min_size=1, max_size=2))
    return data


@st.composite
def _published(draw: Any, arm_names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, leaf in PUBLISHED_LEAVES.items():
        key = path.removeprefix("published.")
        if draw(st.booleans()):
            if key == "arm":
                out[key] = draw(st.sampled_from(["", *arm_names]))
            else:
                value = draw(leaf_values(leaf))
                if value is not None:
                    out[key] = value
    return out


# --------------------------------------------------------------------------- invalid variants


@dataclass(frozen=True)
class Mutation:
    """An invalid variant: what was done, and the text the error message must contain."""

    what: str
    expect: str


#: Keys whose values a mutation leaves alone (they hold no single scalar).
_NO_MUTATE = {"lattice.shape"}


@st.composite
def mutations(draw: Any, data: dict[str, Any], leaves: dict[str, Leaf]) -> tuple[dict[str, Any], Mutation]:
    """One invalid variant of ``data``: a value out of its range, of a wrong type, or an unknown key."""
    import copy

    data = copy.deepcopy(data)
    kinds = ["out_of_range", "wrong_type", "unknown_key", "bad_choice"]
    kind = draw(st.sampled_from([*kinds, "arm"] if data.get("arms") else kinds))
    if kind == "arm":  # an arm's dose out of range, or an unknown key in an arm
        i = draw(st.integers(0, len(data["arms"]) - 1))
        if draw(st.booleans()):
            value = draw(st.sampled_from([-1.0, 2e13, -1e-9]))
            data["arms"][i]["dose_cells"] = value
            return data, Mutation(f"arms[{i}].dose_cells = {value!r}", f"arms[{i}].dose_cells = ")
        data["arms"][i]["colour"] = "red"
        return data, Mutation(f"unknown key 'colour' in [arms[{i}]]", f"unknown key 'colour' in [arms[{i}]]")
    if kind == "out_of_range":
        paths = sorted(p for p, leaf in leaves.items() if leaf.bounded and p not in _NO_MUTATE)
        path = draw(st.sampled_from(paths))
        leaf = leaves[path]
        sides = [s for s, b in (("lo", leaf.lo), ("hi", leaf.hi)) if b is not None]
        side = draw(st.sampled_from(sides))
        if side == "lo":
            bound = leaf.lo
            gap = 0 if leaf.lo_strict else (1 if leaf.kind == "int" else draw(st.sampled_from(
                [abs(bound) * 1e-6 or 1e-9, 1.0, abs(bound) + 1.0])))
            value = bound - gap
        else:
            bound = leaf.hi
            gap = 0 if leaf.hi_strict else (1 if leaf.kind == "int" else draw(st.sampled_from(
                [abs(bound) * 1e-6 or 1e-9, 1.0, abs(bound) * 10.0])))
            value = bound + gap
        value = int(value) if leaf.kind == "int" else float(value)
        put(data, path, value)
        return data, Mutation(f"{path} = {value!r} (bound {side} {bound!r})", f"{path} = ")
    if kind == "wrong_type":
        paths = sorted(p for p, leaf in leaves.items() if leaf.kind != "optional_float")
        path = draw(st.sampled_from(paths))
        leaf = leaves[path]
        if leaf.kind == "str":
            wrong: Any = draw(st.sampled_from([7, 1.5, True, [1]]))
        elif leaf.kind == "bool":
            wrong = draw(st.sampled_from(["true", 1, 0.0]))
        elif leaf.kind == "list":
            wrong = draw(st.sampled_from(["20x20", 20, [20.5, 20], [[20]]]))
        elif leaf.kind == "literal":
            wrong = draw(st.sampled_from([1, True, [leaf.choices[0]]]))
        elif leaf.kind == "int":  # strict types: no text, bool, array or float for an integer
            wrong = draw(st.sampled_from([str(leaf.default), True, [leaf.default], float(leaf.default) + 0.5]))
        else:  # strict types: no text, bool or array for a float
            wrong = draw(st.sampled_from([str(leaf.default), True, [leaf.default], "nan"]))
        put(data, path, wrong)
        # A list's error may name an item (lattice.shape[0] = 20.5).
        return data, Mutation(f"{path} = {wrong!r} (wrong type)", path if leaf.kind == "list" else f"{path} = ")
    if kind == "bad_choice":
        paths = sorted(p for p, leaf in leaves.items() if leaf.kind == "literal")
        path = draw(st.sampled_from(paths))
        wrong = draw(st.sampled_from(["hexagonal", "", leaves[path].choices[0].upper() + "X"]))
        put(data, path, wrong)
        return data, Mutation(f"{path} = {wrong!r} (not a choice)", f"{path} = ")
    # An unknown key in one of the tables (nested ones included) or at the top level.
    tables = sorted({p.rsplit(".", 1)[0] for p in leaves if "." in p})
    where = draw(st.sampled_from(["", *tables]))
    key = draw(st.sampled_from(["colour", "seed_", "Shape", "duration_day", "x"]))
    if where and key in (p.rsplit(".", 1)[1] for p in leaves if p.rsplit(".", 1)[0] == where):
        key += "_typo"
    put(data, f"{where}.{key}" if where else key, 1)
    section = where or "the top level"
    return data, Mutation(f"unknown key {key!r} in [{section}]", f"unknown key {key!r} in [{section}]")

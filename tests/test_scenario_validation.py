"""Scenario validation: any input gives a Scenario or a ScenarioError naming the field, nothing else."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from cikabm.modeldoc import parameter_rows
from cikabm.params import Scenario
from cikabm.scenario import ScenarioError, load_scenario, scenario_from_dict

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = tuple(Scenario.model_fields)
#: Every dotted leaf path, e.g. "effectors.tnk.nkg2d_rate_per_hour" (list items as "[]").
LEAF_PATHS = {row["name"] for row in parameter_rows()}


def _float_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of every float field (outside lists of tables)."""
    paths = []
    for name, field in model.model_fields.items():
        if field.annotation is float:
            paths.append(prefix + name)
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            paths += _float_paths(field.annotation, f"{prefix}{name}.")
    return paths


FLOAT_PATHS = sorted(_float_paths(Scenario))


# --------------------------------------------------------------------------- strategies

_junk_scalars = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.booleans(),
    st.none(),
    st.dates(),
    st.sampled_from([-1, -1.0, 0, 0.0, -1e-300, 1e308, -1e308, 2**63, 2**64, 10**100, math.nan, math.inf,
                     -math.inf, "", "1.5", "moore", "lee2015", "custom", "none", "ball", [], {}]),
)
_junk = st.recursive(
    _junk_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=8,
)
_junk_keys = st.dictionaries(
    st.one_of(st.text(max_size=10), st.sampled_from(["colour", "seed ", "Shape", ""])), _junk, max_size=2)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _list_item_model(annotation: Any) -> type[BaseModel] | None:
    return next((a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)), None)


def _value(default: Any) -> st.SearchStrategy[Any]:
    """A leaf value: its default, a perturbation of it, or junk."""
    options: list[st.SearchStrategy[Any]] = [st.just(default), _junk]
    if isinstance(default, bool):
        options.append(st.sampled_from([0, 1, "true"]))
    elif isinstance(default, int | float):
        options.append(st.sampled_from([-default, -1, default * 10**6, float(default), str(default),
                                        [default], {"value": default}]))
    elif isinstance(default, list):
        options.append(st.lists(st.one_of(st.integers(-5, 300), _junk_scalars), max_size=4))
    return st.one_of(*options)


def _model(model: type[BaseModel], defaults: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A mapping with some of the real field names of ``model`` (values mostly plausible) plus junk keys."""
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for name, field in model.model_fields.items():
        sub = _nested_model(field.annotation)
        item = _list_item_model(field.annotation)
        if sub is not None and isinstance(defaults.get(name), dict):
            optional[name] = st.one_of(_model(sub, defaults[name]), _junk)
        elif item is not None:
            optional[name] = st.one_of(st.lists(_model(item, item().model_dump()), max_size=3), _junk)
        else:
            optional[name] = _value(defaults.get(name))
    fields = st.fixed_dictionaries({}, optional=optional)
    return st.builds(lambda f, j: {**j, **f}, fields, _junk_keys)


scenarios = st.one_of(_model(Scenario, Scenario().model_dump()), _junk)


# --------------------------------------------------------------------------- checks

_LOCATED = re.compile(r"^\[?(?P<section>[^\s.\[\]:=]+)[.\[\]:= ]")


def _names_a_field(problem: str) -> bool:
    if problem.startswith("unknown key ") and " in [" in problem:
        return True
    if problem.startswith("a scenario must be a table"):
        return True
    m = _LOCATED.match(problem)
    if m and m.group("section") in SECTIONS:
        return True
    # Cross-section checks name the dotted paths they compare.
    return any(path in problem for path in LEAF_PATHS if "." in path)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=scenarios)
def test_any_input_gives_a_scenario_or_a_scenario_error(data: Any):
    try:
        scenario = scenario_from_dict(data)
    except ScenarioError as err:
        assert err.problems, "a ScenarioError lists at least one problem"
        for problem in err.problems:
            assert isinstance(problem, str) and problem
            assert _names_a_field(problem), problem
        return
    assert isinstance(scenario, Scenario)
    # What summary.json stores re-validates to the same scenario.
    assert scenario_from_dict(scenario.model_dump(mode="json")) == scenario


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("path", FLOAT_PATHS)
def test_non_finite_floats_are_rejected(path: str, value: float):
    section, *rest = path.split(".")
    data: dict[str, Any] = {}
    node = data.setdefault(section, {})
    for part in rest[:-1]:
        node = node.setdefault(part, {})
    node[rest[-1]] = value
    with pytest.raises(ScenarioError) as exc:
        scenario_from_dict(data)
    assert any(p.startswith(f"{path} = {value!r}") and "finite" in p for p in exc.value.problems), \
        exc.value.problems


def test_float_paths_cover_the_rates():
    assert "tumour.division_rate_per_day" in FLOAT_PATHS
    assert "homing.cik_per_site_per_day" in FLOAT_PATHS
    assert "effectors.nk.nkg2d_rate_per_hour" in FLOAT_PATHS
    assert len(FLOAT_PATHS) > 40


def test_non_finite_from_toml_file(tmp_path: Path):
    path = tmp_path / "s.toml"
    path.write_text("[homing]\ncik_per_site_per_day = inf\n[tumour]\ndeath_rate_per_day = nan\n")
    with pytest.raises(ScenarioError) as exc:
        load_scenario(path)
    assert len(exc.value.problems) == 2
    assert all("finite" in p for p in exc.value.problems)


@pytest.mark.parametrize(("data", "expected"), [
    ({"tumour": {"division_rate_per_day": -1.0}}, "tumour.division_rate_per_day = -1.0"),
    ({"tumour": {"division_rate_per_day": "fast"}}, "tumour.division_rate_per_day = 'fast'"),
    ({"tumour": {"initial_cells": 2.5}}, "tumour.initial_cells = 2.5"),
    ({"tumour": {"initial_cells": True}}, "tumour.initial_cells = True"),
    ({"effectors": {"nk": {"missing_self_weight": 2.0}}}, "effectors.nk.missing_self_weight = 2.0"),
    ({"dosing": {"schedule": "custom", "phases": [{"count": 0}]}}, "dosing.phases[0].count = 0"),
    ({"lattice": {"shape": [40, "x"]}}, "lattice.shape[1] = 'x'"),
    ({"lattice": {"shape": [40]}}, "lattice.shape = [40]"),
    ({"tumour": 5}, "tumour = 5"),
    ({"tumor": {}}, "unknown key 'tumor' in [the top level]"),
    ({"effectors": {"tnk": {"speed": 5.0}}}, "unknown key 'speed' in [effectors.tnk]"),
    ({"dosing": {"schedule": "weekly"}}, "schedule = 'weekly'"),
    ({"product": {"share_nk": 0.5}}, "[product]"),
    ({"tumour": {"initial_cells": 10_000}, "lattice": {"shape": [10, 10]}}, "tumour.initial_cells = 10000"),
])
def test_messages_name_field_and_value(data: dict[str, Any], expected: str):
    with pytest.raises(ScenarioError) as exc:
        scenario_from_dict(data)
    assert any(expected in p for p in exc.value.problems), exc.value.problems


def test_not_a_mapping():
    with pytest.raises(ScenarioError, match="table of sections"):
        scenario_from_dict([1, 2, 3])  # type: ignore[arg-type]


def test_defaults_are_valid():
    assert scenario_from_dict({}) == Scenario()


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_scenarios_validate(path: Path):
    assert isinstance(load_scenario(path), Scenario)

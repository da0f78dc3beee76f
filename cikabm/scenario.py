"""Loading scenario files (TOML) into validated :class:`~cikabm.params.Scenario` objects."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from cikabm.params import Scenario


class ScenarioError(ValueError):
    """A scenario that cannot be used; ``problems`` holds one message per fault."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    return path


def _field_unit(loc: tuple[Any, ...], root: type[BaseModel] = Scenario) -> str:
    model: Any = root
    field = None
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return ""
        field = fields[part]
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is None:
            args = getattr(ann, "__args__", ())
            model = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
    extra = (field.json_schema_extra or {}) if field is not None else {}
    unit = extra.get("unit", "") if isinstance(extra, dict) else ""
    return "" if unit in ("", "-") else str(unit)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_validation_error(err: ValidationError, root: type[BaseModel] = Scenario) -> list[str]:
    """One readable line per pydantic error, naming the field and the value."""
    problems = []
    for e in err.errors():
        loc = tuple(e.get("loc", ()))
        kind = e.get("type", "")
        value = e.get("input")
        if kind == "extra_forbidden":
            section = _loc_to_path(loc[:-1]) or "the top level"
            problems.append(f"unknown key {loc[-1]!r} in [{section}] (value {_short(value)})")
            continue
        path = _loc_to_path(loc) or "scenario"
        msg = e.get("msg", "invalid")
        msg = msg.removeprefix("Value error, ")
        unit = _field_unit(loc, root)
        unit_note = f" (unit: {unit})" if unit else ""
        if kind == "missing":
            problems.append(f"{path}: required but missing{unit_note}")
        elif isinstance(value, Mapping) and not loc:
            problems.append(f"{msg}")
        elif isinstance(value, Mapping):
            problems.append(f"[{path}]: {msg}")
        else:
            problems.append(f"{path} = {_short(value)}: {msg}{unit_note}")
    return problems


def merge_tables(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Nested merge of scenario tables: ``override`` wins, sub-tables merge key by key."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge_tables(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def scenario_from_dict(data: Mapping[str, Any], source: str = "<dict>", *,
                       model: type[Scenario] = Scenario) -> Scenario:
    """Validate a nested mapping (as read from TOML) into a :class:`Scenario`.

    Raises
    ------
    ScenarioError
        With one message per problem, each naming the field and its value.
    """
    if not isinstance(data, Mapping):
        raise ScenarioError(source, [f"a scenario must be a table of sections, got {_short(data)}"])
    try:
        return model.model_validate(dict(data))
    except ValidationError as err:
        raise ScenarioError(source, format_validation_error(err, model)) from None
    except (TypeError, ValueError, OverflowError) as err:  # defensive: never a traceback
        raise ScenarioError(source, [f"invalid scenario: {err}"]) from None


def keys_set(model: BaseModel) -> dict[str, int]:
    """How many keys the file set in each top-level table (pydantic's ``model_fields_set``).

    Parameters
    ----------
    model : Scenario
        A scenario validated from a file or a mapping.

    Returns
    -------
    dict
        ``{table: keys set}`` in the scenario's field order, only tables the
        file has; a list of tables (``[[arms]]``) counts the keys of all its
        entries. Everything missing here is a default.
    """
    def count(value: Any) -> int:
        if isinstance(value, BaseModel):
            return sum(count(getattr(value, name)) for name in value.model_fields_set)
        if isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            return sum(count(v) for v in value)
        return 1

    return {name: count(getattr(model, name)) for name in type(model).model_fields if name in model.model_fields_set}


def keys_set_text(model: BaseModel) -> str:
    """What :func:`keys_set` found, in one short line (``cikabm validate`` prints it): keys per table,
    entries per list of tables (``[[arms]] x2``).

    >>> keys_set_text(Scenario())
    'note: the file sets no keys; every value is a default (see `cikabm params`)'
    """
    tables = keys_set(model)
    total = sum(tables.values())
    if not total:
        empty = f" (only empty tables: {', '.join(f'[{name}]' for name in tables)})" if tables else ""
        return f"note: the file sets no keys{empty}; every value is a default (see `cikabm params`)"
    listed = ", ".join(f"[[{name}]] x{len(value)}" if isinstance(value := getattr(model, name), list)
                       else f"[{name}] {n}" for name, n in tables.items())
    return f"sets {total} key{'s' if total != 1 else ''} ({listed}); every other value is a default"


#: The deepest nesting of tables and arrays a scenario has (``[[arms]]`` phases: 4); more is refused.
MAX_NESTING = 8


def _too_deep(data: Any) -> str | None:
    """The key path of the first value nested more than :data:`MAX_NESTING` levels deep, or None.

    Iterative, so a file of thousands of nested arrays cannot exhaust the stack.
    """
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_NESTING:
            return where or "(top level)"
        if isinstance(value, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k), depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value))
    return None


def load_scenario(path: str | Path, overrides: Mapping[str, Any] | None = None, *,
                  model: type[Scenario] | None = None) -> Scenario:
    """Read and validate a TOML scenario file.

    Parameters
    ----------
    path : str or Path
        The TOML file.
    overrides : mapping, optional
        Nested values merged over the file before validation, e.g.
        ``{"scenario": {"seed": 3}}``.
    model : type, optional
        The scenario class; default :class:`~cikabm.params.Scenario`, or
        :class:`~cikabm.trial_params.TrialScenario` when the file has a
        ``[trial]`` table.

    Returns
    -------
    Scenario

    Raises
    ------
    ScenarioError
        If the file is missing, not TOML, any field is invalid, or the
        scenario needs more memory than this machine has
        (:func:`cikabm.resources.check_fits`).
    """
    from cikabm.resources import check_fits

    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(source, ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ScenarioError(source, [f"cannot read the file: {err}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(source, [f"not valid TOML: {err}"]) from None
    except RecursionError:  # arrays nested hundreds deep: no scenario key is
        raise ScenarioError(source, [f"nested more than {MAX_NESTING} levels deep"]) from None
    too_deep = _too_deep(data)
    if too_deep is not None:
        raise ScenarioError(source, [f"{too_deep}: nested more than {MAX_NESTING} levels deep; no scenario key is"])
    if overrides:
        data = merge_tables(data, overrides)
    if model is None:
        if "trial" in data:
            from cikabm.trial_params import TrialScenario

            model = TrialScenario
        else:
            model = Scenario
    scenario = scenario_from_dict(data, source, model=model)
    check_fits(scenario, source)
    return scenario

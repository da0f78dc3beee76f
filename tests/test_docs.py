"""Docs that are generated from code stay in step with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cikabm.modeldoc import parameter_reference, parameter_rows
from cikabm.trial_params import TrialScenario

ROOT = Path(__file__).resolve().parents[1]


def test_parameter_reference_file_is_current():
    committed = (ROOT / "docs" / "parameters.md").read_text(encoding="utf-8")
    assert committed == parameter_reference(), (
        "docs/parameters.md is stale: regenerate it with `cikabm params > docs/parameters.md`")


def test_every_leaf_parameter_has_meaning_and_unit():
    rows = parameter_rows()
    assert len(rows) > 60
    for row in rows:
        assert row["meaning"], row["name"]
        assert row["unit"], row["name"]


def test_reference_lists_every_section():
    names = {r["name"].split(".")[0].removesuffix("[]") for r in parameter_rows()}
    assert names == set(TrialScenario.model_fields)


def test_model_doc_parameter_tables_are_current():
    from cikabm.modeldoc import render_model_doc

    committed = (ROOT / "docs" / "model.md").read_text(encoding="utf-8")
    assert committed == render_model_doc(committed), (
        "docs/model.md has stale parameter tables: regenerate them with `python -m cikabm.modeldoc`")


def test_every_model_doc_parameter_block_is_non_empty():
    from cikabm.modeldoc import CLOSE_MARKER, OPEN_MARKER, parse_prefixes

    lines = (ROOT / "docs" / "model.md").read_text(encoding="utf-8").splitlines()
    opened = [i for i, line in enumerate(lines) if OPEN_MARKER.match(line)]
    assert opened, "docs/model.md has no <!-- params: ... --> block"
    names = {r["name"] for r in parameter_rows()}
    for i in opened:
        assert parse_prefixes(OPEN_MARKER.match(lines[i]).group("prefixes"))
        end = lines.index(CLOSE_MARKER, i + 1)
        body = lines[i + 1:end]
        rows = [line for line in body[2:] if line.startswith("| `")]
        assert body[:2] and body[0].startswith("| name |"), f"block at line {i + 1} has no table header"
        assert rows, f"block at line {i + 1} ({lines[i]}) has no parameter rows"
        for line in rows:
            assert line.split("`")[1] in names, line


def test_model_doc_renderer_rejects_bad_markers():
    import pytest

    from cikabm.modeldoc import render_model_doc

    with pytest.raises(ValueError, match="matches no parameter"):
        render_model_doc("<!-- params: no_such_section. -->\n<!-- /params -->\n")
    with pytest.raises(ValueError, match="without a closing"):
        render_model_doc("<!-- params: tumour. -->\n")
    text = "intro\n<!-- params: ifn. -->\nstale\n<!-- /params -->\noutro\n"
    once = render_model_doc(text)
    assert "stale" not in once and once.startswith("intro\n") and once.endswith("<!-- /params -->\noutro\n")
    assert render_model_doc(once) == once


# --------------------------------------------------------------------------- README synopses

#: Commands whose README synopsis line (`` `cikabm CMD SCENARIO --out DIR [--option N] ...` ``) must list
#: every long option of ``cikabm CMD --help``.
SYNOPSIS_COMMANDS = ("run", "validate", "trial", "compare", "calibrate", "validation", "assay", "calibrate-potency",
                     "params", "bench", "teach")


def _readme_synopses() -> dict[str, str]:
    """``{command: synopsis}``: the first code span of each command with placeholders (an upper-case word
    such as SCENARIO, or an ``[--option]``) in README.md; examples with real paths are not synopses."""
    import re

    found: dict[str, str] = {}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for m in re.finditer(r"`cikabm (?P<cmd>[a-z][a-z-]*)(?P<rest>[^`\n]*)`", readme):
        if re.search(r"\b[A-Z]{2,}\b", m["rest"]) or "[" in m["rest"]:
            found.setdefault(m["cmd"], m.group(0))
    return found


def _long_options(command: str) -> list[str]:
    import argparse

    from cikabm.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [o for a in sub.choices[command]._actions for o in a.option_strings
            if o.startswith("--") and o != "--help"]


def test_synopsis_commands_are_the_cli_commands():
    import argparse

    from cikabm.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(SYNOPSIS_COMMANDS) == set(sub.choices)


@pytest.mark.parametrize("command", SYNOPSIS_COMMANDS)
def test_readme_synopsis_lists_every_option(command: str):
    import re

    synopsis = _readme_synopses().get(command)
    assert synopsis is not None, f"README.md has no synopsis line `cikabm {command} ...`"
    missing = [o for o in _long_options(command) if not re.search(re.escape(o) + r"(?![\w-])", synopsis)]
    assert not missing, f"README synopsis {synopsis} lacks {missing} (see `cikabm {command} --help`)"


def test_teaching_scenario_docs_claim_only_the_infusions_its_run_gives():
    """The teaching run (90 days, weekly6_biweekly from day 42) gives the 6 weekly doses and none of the
    2-weekly ones (the first would be on day 91): its header and README row must not promise them."""
    from cikabm.convert import kernel_parameters
    from cikabm.scenario import load_scenario

    path = ROOT / "scenarios" / "teaching_mhc_loss.toml"
    given = kernel_parameters(load_scenario(path)).infusion_days
    assert len(given) == 6 and set((given[1:] - given[:-1]).tolist()) == {7.0}
    header = "\n".join(line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("#"))
    row = next(line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
               if line.startswith("| `scenarios/teaching_mhc_loss.toml`"))
    for text in (header, row):
        assert "then every 2 weeks" not in text
        assert any(claim in text for claim in ("6 of its 16 infusions fall within the 90 days",
                                               "6 weekly doses fall within the 90 days"))

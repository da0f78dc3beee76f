"""Docs that are generated from code stay in step with it."""

from __future__ import annotations

from pathlib import Path

from cikabm.params import parameter_reference, parameter_rows
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

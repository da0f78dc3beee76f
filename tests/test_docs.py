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

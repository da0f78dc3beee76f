"""``cikabm assay`` and ``cikabm calibrate-potency``: outputs, exit statuses, nothing written on errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cikabm.cli import main
from cikabm.cli_assay import ASSAY_FILES

ROOT = Path(__file__).resolve().parents[1]
HCC = ROOT / "scenarios" / "hcc_adjuvant_lee2015.toml"


def test_assay_writes_table_figure_and_blocking_fall(tmp_path, capsys):
    out = tmp_path / "assay"
    rc = main(["assay", str(HCC), "--out", str(out), "--et", "3,30", "--replicates", "2", "--no-progress"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(ASSAY_FILES)
    table = pd.read_csv(out / "assay.csv")
    assert set(table["blocking"]) == {"none", "nkg2d"} and set(table["et_ratio"]) == {3.0, 30.0}
    assert {"specific_lysis", "ci_low", "ci_high", "kills_per_cell_tnk"} <= set(table.columns)
    assert len(pd.read_csv(out / "replicates.csv")) == 2 * 2 * 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["anchor"]["specific_lysis"] == 0.33
    assert summary["blocking_fall"]["table"] and "Pievani 2011" in summary["blocking_fall"]["source"]
    text = capsys.readouterr().out
    assert "E:T    30:1" in text and "fall in lysis" in text


def _exit_status(argv: list[str]) -> int:
    """``main``'s status, also when argparse rejects an option (it exits with 2 itself)."""
    try:
        return main(argv)
    except SystemExit as err:
        return int(err.code)


@pytest.mark.parametrize("args, message", [
    (["--et", "0,3"], "--et"),
    (["--et", "1000"], "at most"),
    (["--blocking", "cd3"], "--blocking"),
    (["--hours", "-1"], "--hours"),
    (["--replicates", "1"], "--replicates"),
    (["--targets-per-site", "0.9"], "--targets-per-site"),
])
def test_bad_assay_options_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "assay"
    assert _exit_status(["assay", str(HCC), "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_assay_refuses_a_foreign_output_folder(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["assay", str(HCC), "--out", str(out), "--replicates", "2"]) == 2
    assert "refusing to replace it" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"


def test_calibrate_potency_refuses_an_unwritable_log_before_fitting(tmp_path, capsys):
    rc = main(["calibrate-potency", str(HCC), "--log", str(tmp_path / "missing" / "fit.json")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "does not exist" in err
    assert "fitting" not in capsys.readouterr().out


def test_calibrate_potency_recovers_the_shipped_rate(tmp_path, capsys):
    """The shipped CIK rate is the fit: refitting on the recorded design changes it by less than its interval."""
    from cikabm.params import CIK_POTENCY_PER_HOUR

    log = tmp_path / "fit.json"
    assert main(["calibrate-potency", str(HCC), "--replicates", "20", "--log", str(log)]) == 0
    fit = json.loads(log.read_text())
    assert fit["ci_low"] <= CIK_POTENCY_PER_HOUR <= fit["ci_high"]
    assert abs(fit["lysis"] - 0.33) < 0.01
    assert "fitted: CD3+CD56+ per-contact rate" in capsys.readouterr().out

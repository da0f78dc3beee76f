"""The ``cikabm`` command: outputs, exit statuses, messages, and nothing written on errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pandas as pd
import pytest

from cikabm import __version__
from cikabm.cli import main
from cikabm.io import RUN_OUTPUTS
from cikabm.kernels import STREAM_VERSION
from cikabm.modeldoc import parameter_rows
from cikabm.params import KIND_KEYS

TINY = """\
[scenario]
name = "tiny"
seed = 3

[lattice]
shape = [40, 40]

[time]
duration_days = 3.0
record_every_hours = 6.0

[tumour]
initial_cells = 40
mhc_loss_per_division = 0.1

[homing]
cik_per_site_per_day = 2e-12
ctl_per_site_per_day = 1e-3

[dosing]
schedule = "lee2015"
start_day = 1.0
"""

BAD = """\
[scenario]
name = "bad"

[tumour]
division_rate_per_day = -0.5
colour = "blue"

[time]
duration_days = "ten"
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY, encoding="utf-8")
    return path


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(BAD, encoding="utf-8")
    return path


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _run(scenario: Path, out: Path, *extra: str) -> int:
    return main(["run", str(scenario), "--out", str(out), "--no-progress", *extra])


# --------------------------------------------------------------------------- run

def test_run_writes_all_files(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "results" / "tiny"
    assert _run(tiny, out, "--threads", "1") == 0
    assert sorted(os.listdir(out)) == sorted(RUN_OUTPUTS)
    assert sorted(os.listdir(tmp_path)) == ["results", "tiny.toml"]  # no temp dirs left
    assert os.listdir(tmp_path / "results") == ["tiny"]

    frame = pd.read_csv(out / "timeseries.csv")
    for col in ("time_days", "tumour_total", "tumour_mhc_present", "tumour_mhc_lost", "blood_cik_cells",
                "infusions_given", "kills_perforin", "kills_fas", *(f"kills_{k}" for k in KIND_KEYS)):
        assert col in frame.columns
    assert frame["time_days"].iloc[-1] == pytest.approx(3.0)
    assert frame["infusions_given"].iloc[-1] == 1

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["scenario"] == "tiny" and summary["seed"] == 3
    assert summary["stream_version"] == STREAM_VERSION
    assert summary["scenario_parameters"]["lattice"]["shape"] == [40, 40]
    assert [row["kind"] for row in summary["kills_table"]] == list(KIND_KEYS)
    assert summary["kills_total"] == int(frame["kills_total"].iloc[-1])
    assert (out / "scenario.toml").read_text(encoding="utf-8") == TINY
    for png in ("populations.png", "snapshots.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    printed = capsys.readouterr().out
    assert "tiny (seed 3)" in printed
    assert "CD3+CD56+ (T-NK)" in printed and "MHC-I-lost" in printed
    assert str(out) in printed
    # the same infusion count as `cikabm validate` (one home: schedules.infusion_count_text)
    assert "1 of 16 scheduled infusions fall within the 3 days" in printed
    # 40 cells never make a meaningful fraction: no peak, and the terminal says why
    assert frame["tumour_total"].max() < 100 and summary["mhc_lost_peak"] is None
    assert "peak not computed (the tumour never held 100 cells)" in printed


def test_mhc_lost_peak_ignores_a_tumour_about_to_vanish():
    """4 of 8 cells just before extinction is not a 50 % peak: only records with at least
    max(MHC_PEAK_MIN_CELLS, MHC_PEAK_MIN_SHARE x peak) cells count, and the peak comes with its day and counts."""
    from cikabm.cli_text import mhc_peak_text
    from cikabm.simulation import MHC_PEAK_MIN_CELLS, MHC_PEAK_MIN_SHARE, mhc_lost_peak

    days = np.array([0.0, 10.0, 20.0, 41.0, 43.0, 44.0])
    total = np.array([2000, 1500, 1000, 800, 150, 8])
    lost = np.array([0, 150, 200, 300, 100, 4])
    peak = mhc_lost_peak(days, total, lost)
    floor = max(MHC_PEAK_MIN_CELLS, MHC_PEAK_MIN_SHARE * 2000)
    assert floor == 200 and peak == {"fraction": 0.375, "day": 41.0, "cells_lost": 300, "cells_total": 800,
                                     "min_cells": 200}
    assert mhc_peak_text(peak) == "peak 37.5 % on day 41 (300 of 800 cells)"
    # a small tumour: the absolute floor decides, and the largest record below it gives no peak
    assert mhc_lost_peak(days[:3], np.array([40, 99, 8]), np.array([0, 50, 4])) is None
    assert mhc_lost_peak(days[:3], np.array([40, 100, 8]), np.array([0, 50, 4]))["fraction"] == 0.5


def test_validate_and_run_count_the_teaching_infusions_alike():
    """The teaching scenario's 90 days hold the 6 weekly doses only (the 2-weekly phase would start on
    day 91): validate says so with the function the run summary uses."""
    from cikabm.cli_text import validate_text
    from cikabm.convert import kernel_parameters
    from cikabm.scenario import load_scenario
    from cikabm.schedules import dosing_days, infusion_count_text

    scenario = load_scenario(Path(__file__).resolve().parents[1] / "scenarios" / "teaching_mhc_loss.toml")
    given = kernel_parameters(scenario).infusion_days
    assert list(np.diff(given)) == [7.0] * 5 and dosing_days(scenario.dosing)[6] == 91.0
    text = infusion_count_text(len(given), len(dosing_days(scenario.dosing)), "the 90 days")
    assert text == "6 of 16 scheduled infusions fall within the 90 days"
    assert text in validate_text(scenario)


def test_summary_reloads_as_the_same_scenario(tiny: Path, tmp_path: Path):
    from cikabm import load_scenario, scenario_from_dict

    out = tmp_path / "out"
    assert _run(tiny, out) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert scenario_from_dict(summary["scenario_parameters"]) == load_scenario(tiny)


def test_run_seed_override_and_no_snapshots(tiny: Path, tmp_path: Path):
    out = tmp_path / "out"
    assert _run(tiny, out, "--seed", "11", "--snapshots", "0") == 0
    assert json.loads((out / "summary.json").read_text())["seed"] == 11
    assert not (out / "snapshots.png").exists()


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 threads")
def test_timeseries_byte_identical_across_threads(tiny: Path, tmp_path: Path):
    assert _run(tiny, tmp_path / "t1", "--threads", "1") == 0
    assert _run(tiny, tmp_path / "t2", "--threads", "2") == 0
    one, two = (tmp_path / d / "timeseries.csv" for d in ("t1", "t2"))
    assert one.read_bytes() == two.read_bytes()


def test_run_replaces_previous_results(tiny: Path, tmp_path: Path):
    out = tmp_path / "out"
    assert _run(tiny, out, "--seed", "1") == 0
    assert _run(tiny, out, "--seed", "2", "--snapshots", "0") == 0
    assert json.loads((out / "summary.json").read_text())["seed"] == 2
    assert not (out / "snapshots.png").exists()  # the old file went with the old directory
    assert sorted(os.listdir(tmp_path)) == ["out", "tiny.toml"]


def test_run_keeps_a_file_created_while_it_runs(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]):
    """The folder check happens before the simulation; a file that appears meanwhile survives the swap."""
    from cikabm.simulation import Simulation

    out = tmp_path / "out"
    assert _run(tiny, out) == 0
    real_run = Simulation.run

    def run_and_meanwhile_save_a_note(self, *args, **kwargs):
        (out / "my_notes.txt").write_text("keep me")
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(Simulation, "run", run_and_meanwhile_save_a_note)
    capsys.readouterr()
    assert _run(tiny, out, "--snapshots", "0") == 0
    assert (out / "my_notes.txt").read_text() == "keep me"
    assert not (out / "snapshots.png").exists()  # the earlier run's own file is not left stale
    assert "my_notes.txt" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["out", "tiny.toml"]


def test_run_bad_scenario_writes_nothing(bad: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    before = _listing(tmp_path)
    assert _run(bad, tmp_path / "deep" / "out") == 2
    assert _listing(tmp_path) == before
    err = capsys.readouterr().err
    assert "tumour.division_rate_per_day" in err
    assert "Traceback" not in err


def test_run_missing_scenario_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert _run(tmp_path / "nope.toml", tmp_path / "out") == 2
    assert "file not found" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_run_out_is_a_file(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    target = tmp_path / "taken"
    target.write_text("precious")
    assert _run(tiny, target) == 2
    err = capsys.readouterr().err
    assert f"--out {target}" in err and "not a directory" in err
    assert target.read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == ["taken", "tiny.toml"]


def test_run_refuses_a_directory_of_other_files(tiny: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("do not delete")
    assert _run(tiny, target) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "thesis.tex" in err
    assert os.listdir(target) == ["thesis.tex"]


@pytest.mark.parametrize(("option", "value"), [("--threads", "0"), ("--threads", "99999"),
                                               ("--threads", "two"), ("--seed", "-3"), ("--snapshots", "-1")])
def test_run_bad_option_values(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               option: str, value: str):
    with pytest.raises(SystemExit) as exc:
        _run(tiny, tmp_path / "out", option, value)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert option in err and value in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_console_script_returns_main_status_and_spares_the_exit_collections(tiny: Path):
    """The console script is main() followed by gc.freeze(): the exit's collections skip what is left."""
    import gc

    from cikabm.cli import console_main

    try:
        assert console_main(["validate", str(tiny)]) == 0
        assert gc.get_freeze_count() > 0
        assert console_main(["validate", str(tiny) + ".missing"]) == 2
    finally:
        gc.unfreeze()


# --------------------------------------------------------------------------- validate

def test_validate_ok(tiny: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["validate", str(tiny)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("OK: tiny (2D 40x40, 432 steps of 10 min")
    assert "lee2015" in line


def test_validate_describes_a_trial_file_not_the_region_defaults(capsys: pytest.CaptureFixture[str]):
    """A trial file: its setting, patients, follow-up and each arm's schedule (trial_params.trial_overview),
    not the region's default 60 days and 'no CIK' (issue 14)."""
    from cikabm.scenario import load_scenario
    from cikabm.trial_params import trial_overview

    path = Path(__file__).resolve().parents[1] / "scenarios" / "hcc_adjuvant_lee2015.toml"
    assert main(["validate", str(path)]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[0] == "OK: hcc_adjuvant_lee2015"
    assert [line.strip() for line in lines[1:-2]] == [line.strip() for line in trial_overview(load_scenario(path))]
    assert lines[-2].strip().startswith("needs about")  # the estimate of cikabm.resources
    assert "adjuvant setting" in lines[1] and "230 patients" in lines[1] and "60 months of follow-up" in lines[1]
    assert lines[2].strip() == "control (reference): no CIK"
    assert lines[3].strip() == ("cik: schedule lee2015 from day 14, 6.4e9 cells each: all 16 scheduled infusions "
                                "fall within the 60-month follow-up")
    assert "60 days)" not in printed and "schedule none" not in printed
    assert lines[-1].strip().startswith("sets ") and "[[arms]] x2" in lines[-1]


def test_validate_says_when_every_value_is_a_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    empty = tmp_path / "empty.toml"
    empty.write_text("", encoding="utf-8")
    assert main(["validate", str(empty)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].strip() == (
        "note: the file sets no keys; every value is a default (see `cikabm params`)")
    only_tables = tmp_path / "tables.toml"
    only_tables.write_text("[tumour]\n[trial]\n", encoding="utf-8")
    assert main(["validate", str(only_tables)]) == 0
    assert "sets no keys (only empty tables: [tumour], [trial])" in capsys.readouterr().out


def test_validate_counts_the_keys_of_each_table(tiny: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["validate", str(tiny)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].strip() == (
        "sets 11 keys ([scenario] 2, [lattice] 1, [time] 2, [tumour] 2, [dosing] 2, [homing] 2); "
        "every other value is a default")


def test_validate_lists_every_problem(bad: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    before = _listing(tmp_path)
    assert main(["validate", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    problems = [line for line in captured.err.splitlines() if line.strip().startswith("- ")]
    assert len(problems) == 3, captured.err
    text = "\n".join(problems)
    assert "tumour.division_rate_per_day = -0.5" in text
    assert "time.duration_days = 'ten'" in text
    assert "'colour'" in text and "[tumour]" in text and "'blue'" in text
    assert str(bad) in captured.err
    assert _listing(tmp_path) == before


def test_validate_not_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "x.toml"
    path.write_text("[tumour\ninitial_cells = 3\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not valid TOML" in err and "Traceback" not in err


# --------------------------------------------------------------------------- params, help, version

@pytest.mark.parametrize("fmt", ["markdown", "csv"])
def test_params_lists_every_field(fmt: str, capsys: pytest.CaptureFixture[str]):
    assert main(["params", "--format", fmt]) == 0
    out = capsys.readouterr().out
    for row in parameter_rows():
        assert row["name"] in out


def test_params_markdown_is_the_reference(capsys: pytest.CaptureFixture[str]):
    from cikabm.modeldoc import parameter_reference

    assert main(["params"]) == 0
    assert capsys.readouterr().out == parameter_reference()


@pytest.mark.parametrize("command", [[], ["run"], ["validate"], ["params"]])
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: cikabm")


def test_version(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"cikabm {__version__}"


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "usage: cikabm" in capsys.readouterr().err


def test_console_script(bad: Path):
    """The installed entry point runs main() and returns its status."""
    proc = subprocess.run([sys.executable, "-c", "import sys; from cikabm.cli import main; sys.exit(main())",
                           "validate", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "tumour.division_rate_per_day" in proc.stderr


def test_teach_without_the_extra_says_how_to_install(monkeypatch, capsys):
    """``cikabm teach`` without Mesa/Solara: exit 2 and the install command, nothing started."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name in ("mesa", "solara") else real(name, *args))
    assert main(["teach"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'cikabm[teach]'" in err and "mesa and solara" in err


def test_teach_rejects_a_bad_port(capsys):
    with pytest.raises(SystemExit) as info:
        main(["teach", "--port", "70000"])
    assert info.value.code == 2
    assert "--port" in capsys.readouterr().err


def test_core_package_does_not_need_mesa():
    """Mesa and Solara are the optional teaching extra: the core never imports them."""
    code = ("import sys, cikabm, cikabm.cli, cikabm.mesa, cikabm.trial, cikabm.compare, cikabm.survival\n"
            "from cikabm import Simulation, load_scenario\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('mesa', 'solara'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

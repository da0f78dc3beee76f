"""The ``cikabm trial`` command: outputs, summary keys, and clear refusals."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cikabm.cli import main
from cikabm.io import parquet_provenance, provenance
from cikabm.kernels import STREAM_VERSION

TINY_TRIAL = """
[scenario]
name = "tiny_trial"
seed = 3

[trial]
setting = "adjuvant"
patients = 6
follow_up_months = 12.0
chunk_patients = 3

[[arms]]
name = "control"
schedule = "none"

[[arms]]
name = "cik"
schedule = "lee2015"
start_day = 7.0

[lattice]
shape = [20, 20]

[time]
dt_minutes = 20.0

[tumour]
death_rate_per_day = 0.01

[homing]
ctl_per_site_per_day = 0.0

[cohort]
doubling_time_median_days = 20.0

[adjuvant]
foci_mean_at_5cm = 3.0
handoff_cells = 40
lattice_max_days = 10.0
"""


def test_trial_writes_parquet_summary_and_km(tmp_path, capsys):
    scenario = tmp_path / "t.toml"
    scenario.write_text(TINY_TRIAL)
    out = tmp_path / "out"
    assert main(["trial", str(scenario), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    patients = pd.read_parquet(out / "patients.parquet")
    assert len(patients) == 12 and set(patients["arm"]) == {"control", "cik"}
    for col in ("rfs_months", "rfs_event", "os_months", "os_event", "infusions_received",
                "primary_size_cm", "manufacturing_failed"):
        assert col in patients.columns
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 3 and summary["cikabm_version"]
    # What made the rows: the package and the random-stream layout, in the summary and in the table itself.
    assert summary["stream_version"] == STREAM_VERSION
    assert parquet_provenance(out / "patients.parquet") == provenance()
    rfs = summary["endpoints"]["rfs"]
    for arm in ("control", "cik"):
        assert {"median_months", "ci_low", "ci_high"} <= set(rfs["arms"][arm])
    assert {"hr", "hr_ci_low", "hr_ci_high", "logrank_p"} <= set(rfs["comparisons"]["cik_vs_control"])
    assert (out / "km_rfs.png").stat().st_size > 0 and (out / "km_os.png").stat().st_size > 0
    assert "RFS" in capsys.readouterr().out


def test_trial_refuses_a_region_scenario(tmp_path, capsys):
    scenario = tmp_path / "r.toml"
    scenario.write_text("[lattice]\nshape = [20, 20]\n")
    assert main(["trial", str(scenario), "--out", str(tmp_path / "o"), "--workers", "1"]) == 2
    assert "no [trial] table" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_run_refuses_a_trial_scenario(tmp_path, capsys):
    scenario = tmp_path / "t.toml"
    scenario.write_text(TINY_TRIAL)
    assert main(["run", str(scenario), "--out", str(tmp_path / "o")]) == 2
    assert "cikabm trial" in capsys.readouterr().err


def test_bad_trial_scenario_names_the_field(tmp_path, capsys):
    scenario = tmp_path / "bad.toml"
    scenario.write_text(TINY_TRIAL.replace("patients = 6", "patients = -6"))
    assert main(["trial", str(scenario), "--out", str(tmp_path / "o"), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "trial.patients = -6" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", [["trial"], ["trial", "--replicates", "2"], ["compare"]])
def test_trial_commands_refuse_a_folder_with_a_user_file_and_keep_it(tmp_path, capsys, command):
    scenario = tmp_path / "t.toml"
    scenario.write_text(TINY_TRIAL)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main([command[0], str(scenario), *command[1:], "--out", str(out), "--workers", "1",
                 "--no-progress"]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_user_folder_named_chunks_is_not_taken_for_a_trials(tmp_path, capsys):
    scenario = tmp_path / "t.toml"
    scenario.write_text(TINY_TRIAL)
    out = tmp_path / "out"
    (out / ".chunks").mkdir(parents=True)
    (out / ".chunks" / "data.csv").write_text("1,2")
    assert main(["trial", str(scenario), "--out", str(out), "--workers", "1", "--no-progress"]) == 2
    assert (out / ".chunks" / "data.csv").read_text() == "1,2"


def test_rerun_replaces_its_own_results_whole(tmp_path, capsys):
    """A rerun into a folder of its own earlier results is allowed, and leaves no stale figure."""
    scenario = tmp_path / "t.toml"
    scenario.write_text(TINY_TRIAL)
    out = tmp_path / "out"
    assert main(["trial", str(scenario), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    (out / "km_pfs.png").write_bytes(b"an earlier run's figure")  # as an advanced trial would leave
    assert main(["trial", str(scenario), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    assert not (out / "km_pfs.png").exists()
    assert {"patients.parquet", "summary.json", "km_rfs.png"} <= {p.name for p in out.iterdir()}


def test_replicates_rerun_with_fewer_leaves_no_stale_replicate(tmp_path, capsys):
    scenario = tmp_path / "t.toml"
    scenario.write_text(TINY_TRIAL)
    out = tmp_path / "out"
    args = ["trial", str(scenario), "--out", str(out), "--workers", "1", "--no-progress", "--replicates"]
    assert main([*args, "3"]) == 0
    assert (out / "replicate_002").is_dir()
    (out / "replicate_001" / "my_notes.txt").write_text("mine")  # a user's file inside a replicate folder
    assert main([*args, "1"]) == 0
    assert not (out / "replicate_002").exists()
    assert (out / "replicate_001" / "my_notes.txt").read_text() == "mine"  # never deleted


def test_trial_keeps_a_file_created_while_it_runs(tmp_path, capsys, monkeypatch):
    import cikabm.trial as trial_module

    scenario = tmp_path / "t.toml"
    scenario.write_text(TINY_TRIAL)
    out = tmp_path / "out"
    real = trial_module.simulate_chunk

    def simulate_and_meanwhile_save_a_note(*args, **kwargs):
        (out / "my_notes.txt").write_text("keep me")
        return real(*args, **kwargs)

    monkeypatch.setattr(trial_module, "simulate_chunk", simulate_and_meanwhile_save_a_note)
    assert main(["trial", str(scenario), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    assert (out / "my_notes.txt").read_text() == "keep me"
    assert (out / "summary.json").is_file()

"""One writer per output folder: a second trial into a folder in use is refused at once, nothing mixed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_cli_trial import TINY_TRIAL

from cikabm.cli import main
from cikabm.io import LOCK_NAME, OutputBusyError, is_own_output, output_lock

HOLD = textwrap.dedent("""
    import sys, time
    from cikabm.io import output_lock
    with output_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
""")


@pytest.fixture
def held_folder(tmp_path: Path):
    """A folder whose lock another process holds (as a running trial does)."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    yield out, proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("command", [["trial"], ["trial", "--replicates", "2"], ["compare"]])
def test_a_second_command_into_a_folder_in_use_is_refused_at_once(held_folder, tmp_path, capsys, command):
    out, holder = held_folder
    scenario = tmp_path / "t.toml"
    scenario.write_text(TINY_TRIAL)
    start = time.monotonic()
    rc = main([command[0], str(scenario), *command[1:], "--out", str(out), "--workers", "1", "--no-progress"])
    assert rc == 2
    assert time.monotonic() - start < 30  # refused before any patient runs
    err = capsys.readouterr().err
    assert f"cikabm process {holder.pid} is writing into this folder" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written beside the lock


def test_two_trials_at_once_neither_holds_the_others_patients(tmp_path, capsys):
    """Trial A (dose 6.4e9) runs in another process; trial B (other seed) into the same folder is refused."""
    scenario = tmp_path / "t.toml"
    scenario.write_text(TINY_TRIAL)
    out = tmp_path / "out"
    a = subprocess.Popen([sys.executable, "-m", "cikabm.cli", "trial", str(scenario), "--out", str(out),
                          "--workers", "1", "--no-progress", "--patients", "12"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / LOCK_NAME).exists() or "cikabm process" not in (out / LOCK_NAME).read_text():
        assert time.monotonic() < deadline and a.poll() is None
        time.sleep(0.05)
    rc_b = main(["trial", str(scenario), "--out", str(out), "--workers", "1", "--no-progress", "--seed", "99"])
    _, err_a = a.communicate(timeout=300)
    assert a.returncode == 0, err_a
    assert rc_b == 2 and "is writing into this folder" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 3 and summary["patients"] == 12  # trial A's, whole


def test_the_lock_is_reentrant_in_one_process_and_freed_when_its_holder_dies(tmp_path: Path):
    out = tmp_path / "out"
    with output_lock(out), output_lock(out):  # a comparison holds it around its trial
        assert (out / LOCK_NAME).is_file()
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    with pytest.raises(OutputBusyError, match=f"cikabm process {proc.pid}"), output_lock(out):
        pass
    proc.kill()
    proc.wait()
    with output_lock(out):  # the system released the dead holder's lock
        pass


def test_the_lock_file_counts_as_every_commands_own(tmp_path: Path):
    assert is_own_output(tmp_path / LOCK_NAME, ())


def test_a_folder_made_for_the_lock_goes_again_when_nothing_was_written(tmp_path: Path):
    out = tmp_path / "new" / "out"
    with pytest.raises(RuntimeError), output_lock(out):
        raise RuntimeError("failed before writing")
    assert not (tmp_path / "new").exists()
    with output_lock(out):
        (out / "summary.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME, "summary.json"]


def test_an_unreachable_scheduler_is_named_within_seconds_and_nothing_is_written(tmp_path, capsys):
    import socket

    from cikabm.trial import SCHEDULER_TIMEOUT_S

    with socket.socket() as s:  # a loopback port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scenario = tmp_path / "t.toml"
    scenario.write_text(TINY_TRIAL)
    start = time.monotonic()
    rc = main(["trial", str(scenario), "--out", str(tmp_path / "out"), "--scheduler", f"tcp://127.0.0.1:{port}",
               "--no-progress"])
    assert rc == 2 and time.monotonic() - start < SCHEDULER_TIMEOUT_S + 20
    err = capsys.readouterr().err
    assert f"--scheduler tcp://127.0.0.1:{port}: cannot reach a Dask scheduler" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()

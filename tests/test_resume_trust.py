"""``--resume`` trusts only the chunks this trial wrote, made by this code; workers must run this code."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from test_trial import small

import cikabm.trial as trial_module
from cikabm.trial import check_workers, code_fingerprint, dask_client, run_trial


def _interrupted(tmp_path, monkeypatch, name: str = "resumed"):
    """A trial of ``small()`` killed after its first two chunks (of three)."""
    real = trial_module.simulate_chunk
    calls: list[int] = []

    def dies_on_third_chunk(ts_, patient_ids, seed, on_patient=None):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        calls.append(1)
        return real(ts_, patient_ids, seed, on_patient)

    monkeypatch.setattr(trial_module, "simulate_chunk", dies_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        run_trial(small(), tmp_path / name, workers=1, progress=False)
    monkeypatch.setattr(trial_module, "simulate_chunk", real)
    return tmp_path / name / ".chunks"


def _redone(monkeypatch) -> list[list[int]]:
    real = trial_module.simulate_chunk
    redone: list[list[int]] = []

    def counting(ts_, patient_ids, seed, on_patient=None):
        redone.append(list(patient_ids))
        return real(ts_, patient_ids, seed, on_patient)

    monkeypatch.setattr(trial_module, "simulate_chunk", counting)
    return redone


@pytest.mark.parametrize("damage", ["truncated", "swapped"])
def test_a_damaged_chunk_is_named_and_recomputed(tmp_path, monkeypatch, capsys, damage):
    straight = run_trial(small(), tmp_path / "straight", workers=1, progress=False)
    chunks = _interrupted(tmp_path, monkeypatch)
    first = chunks / "chunk_00000.parquet"
    if damage == "truncated":
        first.write_bytes(first.read_bytes()[:100])
    else:  # another chunk copied over it: its patients would be missing, the others' twice
        shutil.copyfile(chunks / "chunk_00001.parquet", first)
    redone = _redone(monkeypatch)
    capsys.readouterr()
    resumed = run_trial(small(), tmp_path / "resumed", workers=1, resume=True, progress=False)
    assert f"{first} is not the chunk this trial wrote" in capsys.readouterr().err
    assert redone == [[0, 1, 2, 3], [8, 9, 10, 11]]  # the damaged chunk and the unfinished one
    pd.testing.assert_frame_equal(straight.patients, resumed.patients)


def test_resuming_after_a_source_change_is_refused(tmp_path, monkeypatch):
    _interrupted(tmp_path, monkeypatch)
    monkeypatch.setattr(trial_module, "code_fingerprint", lambda: "a changed source file")
    with pytest.raises(ValueError, match="cikabm code"):
        run_trial(small(), tmp_path / "resumed", workers=1, resume=True, progress=False)


def test_the_code_fingerprint_covers_the_package_sources():
    assert len(code_fingerprint()) == 64 and code_fingerprint() == code_fingerprint()


def test_a_real_scheduler_runs_the_trial_and_a_worker_with_other_code_is_refused(tmp_path):
    with dask_client(workers=1) as client:
        address = client.scheduler.address
        check_workers(client, address)  # the same code: accepted
        with pytest.raises(ValueError, match="run other cikabm code than this process"):
            check_workers(client, address, expected="0" * 64)
        on_scheduler = run_trial(small(), tmp_path / "cluster", scheduler=address, progress=False)
    local = run_trial(small(), tmp_path / "local", workers=1, progress=False)
    pd.testing.assert_frame_equal(local.patients, on_scheduler.patients)

"""Inputs that once gave a traceback: each now gets a message naming the field, and exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from cikabm.cli import main
from cikabm.patients import draw_patient
from cikabm.scenario import MAX_NESTING, scenario_from_dict
from cikabm.trial_params import DOUBLING_TIME_RANGE_DAYS, PRIMARY_SIZE_MAX_CM, TrialScenario


def _validate(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> tuple[int, str]:
    path = tmp_path / "s.toml"
    path.write_text(text, encoding="utf-8")
    rc = main(["validate", str(path)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return rc, captured.err


def test_arrays_nested_500_deep_are_refused_without_a_recursion_error(tmp_path, capsys):
    rc, err = _validate(tmp_path, capsys, "[scenario]\nname = " + "[" * 500 + "]" * 500 + "\n")
    assert rc == 2 and f"nested more than {MAX_NESTING} levels deep" in err


def test_a_value_nested_too_deep_is_named(tmp_path, capsys):
    rc, err = _validate(tmp_path, capsys, "[scenario]\nname = " + "[" * 12 + "1" + "]" * 12 + "\n")
    assert rc == 2 and "scenario.name[0]" in err and "levels deep" in err


@pytest.mark.parametrize(("table", "key"), [("scenario", "name"), ("scenario", "description")])
def test_terminal_escapes_in_a_scenario_text_are_refused(tmp_path, capsys, table, key):
    rc, err = _validate(tmp_path, capsys, f'[{table}]\n{key} = "a\\u001b[31mred\\u001b[0m"\n')
    assert rc == 2 and f"{table}.{key}" in err and "control character" in err
    assert "\x1b" not in err  # the message shows the escape, it does not send it


def test_a_description_may_have_line_breaks(tmp_path, capsys):
    rc, _ = _validate(tmp_path, capsys, '[scenario]\ndescription = """two\nlines"""\n')
    assert rc == 0


@pytest.mark.parametrize(("key", "value"), [("doubling_time_median_days", "1e300"),
                                            ("primary_size_median_cm", "1e6")])
def test_a_cohort_median_beyond_a_patient_is_refused(tmp_path, capsys, key, value):
    rc, err = _validate(tmp_path, capsys, f'[trial]\npatients = 4\n[[arms]]\nname = "control"\n'
                                          f'schedule = "none"\n[cohort]\n{key} = {value}\n')
    assert rc == 2 and f"cohort.{key} = {float(value)!r}" in err and "less than or equal to" in err


def test_widest_spreads_keep_every_patient_within_range():
    """At the widest spread allowed, each patient's draw is clipped to what a patient can have."""
    ts = scenario_from_dict({"trial": {"patients": 400}, "arms": [{"name": "control", "schedule": "none"}],
                             "cohort": {"doubling_time_median_days": DOUBLING_TIME_RANGE_DAYS[1],
                                        "doubling_time_sd_log": 3.0,
                                        "primary_size_median_cm": PRIMARY_SIZE_MAX_CM,
                                        "primary_size_sd_log": 3.0}}, model=TrialScenario)
    patients = [draw_patient(ts, i) for i in range(400)]
    doubling = [p.doubling_time_days for p in patients]
    assert DOUBLING_TIME_RANGE_DAYS[0] <= min(doubling) and max(doubling) == DOUBLING_TIME_RANGE_DAYS[1]
    assert max(p.primary_size_cm for p in patients) == PRIMARY_SIZE_MAX_CM
    assert all(p.micrometastases_expected < 1e6 for p in patients)


@pytest.mark.parametrize(("option", "value"), [("--hr", "nan"), ("--hr", "0"), ("--hr", "1.5"),
                                               ("--control-median", "inf"), ("--control-median", "-30")])
def test_calibrate_refuses_a_target_that_is_not_a_number_in_range(tmp_path, capsys, option, value):
    """``--hr nan`` used to run the whole fit and report values at the edge of the search as fitted."""
    args = {"--hr": "0.63", "--control-median": "30", option: value}
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "scenarios/hcc_adjuvant_lee2015.toml", "--treatment-arm", "cik",
              *[f"{k}={v}" for k, v in args.items()], "--log", str(tmp_path / "log.json")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: invalid value {value!r}" in err and "Traceback" not in err
    assert not (tmp_path / "log.json").exists()


# --------------------------------------------------------------------------- keys a trial replaces

_TRIAL = '[trial]\npatients = 2\n'


@pytest.mark.parametrize(("text", "key"), [
    ("[dosing]\nschedule = \"lee2015\"\n", "[dosing]"),
    ("[time]\nduration_days = 30.0\n", "time.duration_days"),
    ("[time]\nrecord_every_hours = 24.0\n", "time.record_every_hours"),
    ("[tumour]\ndivision_rate_per_day = 0.4\n", "tumour.division_rate_per_day"),
    ("[tumour]\ninitial_cells = 50\n", "tumour.initial_cells"),
])
def test_a_trial_file_setting_a_key_the_trial_replaces_is_refused(tmp_path, capsys, text, key):
    rc, err = _validate(tmp_path, capsys, _TRIAL + text)
    assert rc == 2 and key in err and "per patient" in err


def test_keys_a_trial_uses_are_accepted(tmp_path, capsys):
    """time.dt_minutes, the tumour's death rate and, in the advanced setting, its initial cells."""
    text = (_TRIAL.replace("patients = 2", "patients = 2\nsetting = \"advanced\"")
            + "[time]\ndt_minutes = 20.0\n[tumour]\ndeath_rate_per_day = 0.02\ninitial_cells = 50\n")
    rc, err = _validate(tmp_path, capsys, text)
    assert rc == 0, err


def test_an_adjuvant_lattice_too_small_for_the_hand_off_is_refused(tmp_path, capsys):
    rc, err = _validate(tmp_path, capsys, _TRIAL + "[lattice]\nshape = [10, 10]\n")
    assert rc == 2 and "adjuvant.handoff_cells = 150 exceeds the 100 lattice sites" in err


def test_a_patient_region_is_a_validated_scenario():
    """Every patient's region passes the region checks (it was built unvalidated): the widest spreads
    at the largest homing rate and dose stay within the region's bounds, and a patient whose follow-up
    ends before the arm's first infusion gets none."""
    from cikabm.params import DosingParams, HomingParams, Scenario, upper_bound
    from cikabm.patients import patient_region

    ts = scenario_from_dict({"trial": {"patients": 50, "accrual_months": 59.0},
                             "cohort": {"homing_sd_log": 3.0, "product_yield_sd_log": 3.0},
                             "homing": {"cik_per_site_per_day": 1e-6},
                             "arms": [{"name": "control"},
                                      {"name": "cik", "schedule": "lee2015", "start_day": 900.0,
                                       "dose_cells": 1e13}]},
                            model=TrialScenario)
    late = 0
    for i in range(50):
        patient = draw_patient(ts, i)
        end = patient.censor_months * 30.4375
        region = patient_region(ts, patient, ts.arms[1], initial_cells=8, duration_days=end,
                                record_every_hours=24.0 * 90)
        again = Scenario.model_validate(region.model_dump())
        assert again == region
        assert region.homing.cik_per_site_per_day <= upper_bound(HomingParams, "cik_per_site_per_day")
        assert region.dosing.dose_cells <= upper_bound(DosingParams, "dose_cells")
        assert region.time.record_every_hours <= end * 24.0
        if end <= 900.0:
            late += 1
            assert region.dosing.schedule == "none"
    assert late > 0  # the case was reached


def test_an_invalid_patient_region_names_the_patient_and_the_field():
    from cikabm.patients import patient_region
    from cikabm.scenario import ScenarioError

    ts = scenario_from_dict({"trial": {"patients": 1}}, model=TrialScenario)
    with pytest.raises(ScenarioError, match=r"(?s)patient 0 in arm 'cik'.*tumour.initial_cells = 1000000000 "
                       r"exceeds the 40000 lattice sites"):
        patient_region(ts, draw_patient(ts, 0), ts.arms[1], initial_cells=10**9, duration_days=10.0,
                       record_every_hours=24.0)


# --------------------------------------------------------------------------- failures while writing

_TINY_TRIAL = """
[scenario]
name = "tiny"
[trial]
patients = 2
follow_up_months = 3.0
chunk_patients = 1
[lattice]
shape = [20, 20]
"""


@pytest.mark.parametrize(("error", "expected"), [
    (PermissionError(13, "Permission denied", "/results/.chunks/chunk_00000.parquet"),
     "could not read or write /results/.chunks/chunk_00000.parquet: Permission denied"),
    (OSError(28, "No space left on device"), "could not read or write No space left on device"),
    (MemoryError(), "out of memory"),
])
def test_a_failure_while_a_trial_writes_is_a_message_and_exit_1(tmp_path, capsys, monkeypatch, error, expected):
    """An unwritable --out, a full disk or memory running out in `trial` and `compare` (tracebacks before)."""
    import cikabm.trial

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(cikabm.trial, "_write_chunk", fail)
    path = tmp_path / "t.toml"
    path.write_text(_TINY_TRIAL, encoding="utf-8")
    for argv in (["trial", str(path), "--out", str(tmp_path / "a"), "--workers", "1"],
                 ["compare", str(path), "--schedules", "none,lee2015", "--out", str(tmp_path / "b"),
                  "--workers", "1"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, err


def test_calibrate_prints_what_it_fitted_when_its_log_cannot_be_written(tmp_path, capsys, monkeypatch):
    """The fit's values reach the terminal first; a log that fails after the fit (a full disk) is named,
    exit 1 (it was a traceback, and the fitted values were never printed)."""
    import cikabm.calibrate
    import cikabm.io
    from cikabm.calibrate import CalibrationResult

    fitted = CalibrationResult(foci_mean_at_5cm=1.25, de_novo_per_year=0.04, cik_per_site_per_day=7.5e-12,
                               control_median_months=30.0, five_year_recurrence=0.7, hazard_ratio=0.63,
                               seeds=[1], patients_per_cohort=10)
    monkeypatch.setattr(cikabm.calibrate, "calibrate_adjuvant", lambda *a, **k: fitted)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cikabm.io, "atomic_write_json", disk_full)
    root = Path(__file__).resolve().parents[1]
    rc = main(["calibrate", str(root / "scenarios" / "hcc_adjuvant_lee2015.toml"), "--control-median", "30",
               "--hr", "0.63", "--treatment-arm", "cik", "--workers", "1", "--log", str(tmp_path / "fit.json")])
    captured = capsys.readouterr()
    assert rc == 1
    assert "7.5e-12" in captured.out and "1.25" in captured.out
    assert "--log" in captured.err and "No space left on device" in captured.err and "Traceback" not in captured.err


def test_calibrate_refuses_a_log_in_a_missing_folder_before_fitting(tmp_path, capsys, monkeypatch):
    """It failed after the whole fit: now exit 2 at once, the fit never called."""
    import cikabm.calibrate

    def no_fit(*args, **kwargs):
        raise AssertionError("the fit ran")

    monkeypatch.setattr(cikabm.calibrate, "calibrate_adjuvant", no_fit)
    root = Path(__file__).resolve().parents[1]
    log = tmp_path / "missing" / "fit.json"
    rc = main(["calibrate", str(root / "scenarios" / "hcc_adjuvant_lee2015.toml"), "--control-median", "30",
               "--hr", "0.63", "--treatment-arm", "cik", "--workers", "1", "--log", str(log)])
    err = capsys.readouterr().err
    assert rc == 2 and f"--log {log}: folder" in err and "does not exist" in err
    assert not log.parent.exists()

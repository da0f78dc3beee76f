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

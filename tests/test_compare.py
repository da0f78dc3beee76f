"""Dosing-schedule comparisons: arms from schedule names, tables, CRN, subgroups, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cikabm.cli import main
from cikabm.compare import (
    TABLE_COLUMNS,
    add_infusion_groups,
    comparison_scenario,
    comparison_subgroups,
    comparison_table,
    plot_blood_levels,
    plot_comparison,
    run_comparison,
    schedule_arms,
)
from cikabm.mechanism import MECHANISM_COLUMNS, mechanism_breakdown
from cikabm.scenario import scenario_from_dict
from cikabm.schedules import SCHEDULE_NAMES, dosing_days, parse_schedule_spec
from cikabm.trial_params import TrialScenario

TINY = {
    "scenario": {"name": "tiny_comparison", "seed": 11},
    "trial": {"setting": "adjuvant", "patients": 4, "follow_up_months": 8.0, "chunk_patients": 2},
    "arms": [{"name": "control", "schedule": "none"},
             {"name": "cik", "schedule": "lee2015", "start_day": 7.0, "dose_cells": 5e9}],
    "lattice": {"shape": [20, 20]},
    "time": {"dt_minutes": 30.0},
    "tumour": {"death_rate_per_day": 0.01},
    "homing": {"ctl_per_site_per_day": 0.0, "cik_per_site_per_day": 2e-14},
    "cohort": {"doubling_time_median_days": 20.0},
    "adjuvant": {"foci_mean_at_5cm": 3.0, "handoff_cells": 40, "lattice_max_days": 10.0},
}

TINY_TOML = """\
[scenario]
name = "tiny_comparison"
seed = 11

[trial]
setting = "adjuvant"
patients = 3
follow_up_months = 6.0
chunk_patients = 2

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
dt_minutes = 30.0

[tumour]
death_rate_per_day = 0.01

[homing]
ctl_per_site_per_day = 0.0
cik_per_site_per_day = 2e-14

[cohort]
doubling_time_median_days = 20.0

[adjuvant]
foci_mean_at_5cm = 3.0
handoff_cells = 40
lattice_max_days = 10.0
"""


def tiny() -> TrialScenario:
    return scenario_from_dict(TINY, model=TrialScenario)


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp")
    return run_comparison(tiny(), out, ["none", "lee2015", "weekly6_biweekly"], patients=4, workers=1,
                          progress=False)


# --------------------------------------------------------------------------- arms

def test_parse_schedule_spec():
    assert parse_schedule_spec("lee2015") == ("lee2015", 1.0, 1)
    assert parse_schedule_spec("lee2015*0.5") == ("lee2015", 0.5, 1)
    assert parse_schedule_spec("choi2018x2") == ("choi2018", 1.0, 2)
    assert parse_schedule_spec(" weekly6_biweekly*2x3 ") == ("weekly6_biweekly", 2.0, 3)
    for bad in ("lee2016", "", "lee2015*0", "lee2015x0", "none*2", "lee2015*abc"):
        with pytest.raises(ValueError, match=repr(bad).replace("*", r"\*")):
            parse_schedule_spec(bad)


def test_arms_from_schedule_names_take_start_and_dose_from_scenario():
    arms = schedule_arms(list(SCHEDULE_NAMES), tiny())
    assert [a.name for a in arms] == ["lee2015", "choi2018", "weekly6_biweekly", "control"]
    assert [a.schedule for a in arms] == ["lee2015", "choi2018", "weekly6_biweekly", "none"]
    treated = [a for a in arms if a.schedule != "none"]
    assert all(a.start_day == 7.0 and a.dose_cells == 5e9 for a in treated)
    assert [len(dosing_days(a)) for a in arms] == [16, 14, 16, 0]
    assert (dosing_days(arms[0])[0], dosing_days(arms[0])[-1]) == (7.0, 7.0 + 59 * 7)


def test_dose_multipliers_and_cycles():
    half, twice = schedule_arms(["lee2015*0.5", "choi2018"], tiny(), cycles=[1, 2])
    assert half.name == "lee2015*0.5" and half.dose_cells == 2.5e9 and half.schedule == "lee2015"
    assert twice.schedule == "custom" and len(dosing_days(twice)) == 28
    days = dosing_days(twice)
    assert days[14] - days[13] == 7.0  # the second cycle starts one first-phase interval later
    (scaled,) = schedule_arms(["lee2015"], tiny(), dose_multipliers=[0.25])
    assert scaled.dose_cells == 1.25e9


def test_comparison_scenario_replace_and_append():
    ts = tiny()
    rep = comparison_scenario(ts, ["none", "weekly6_biweekly"])
    assert [a.name for a in rep.arms] == ["control", "weekly6_biweekly"]
    assert rep.trial.reference_arm == "control"
    assert rep.cohort == ts.cohort and rep.adjuvant == ts.adjuvant
    app = comparison_scenario(ts, ["weekly6_biweekly", "lee2015*0.5"], mode="append")
    assert [a.name for a in app.arms] == ["control", "cik", "weekly6_biweekly", "lee2015*0.5"]
    no_control = comparison_scenario(ts, ["lee2015", "weekly6_biweekly"])
    assert no_control.trial.reference_arm == "lee2015"
    with pytest.raises(ValueError, match="control"):
        comparison_scenario(ts, ["none"], mode="append")
    with pytest.raises(ValueError, match="'bogus'"):
        comparison_scenario(ts, ["none", "bogus"])
    assert comparison_scenario(ts).arms == ts.arms


# --------------------------------------------------------------------------- results

def test_table_has_one_row_per_arm(comparison):
    table = comparison.table
    mechanism = [*MECHANISM_COLUMNS, "os_hr"]
    assert list(table.columns) == [*TABLE_COLUMNS[:-1], *mechanism, "note"]
    assert table.loc[0, mechanism].isna().all()  # the reference arm has no mechanism of its own
    assert list(table["arm"]) == ["control", "lee2015", "weekly6_biweekly"]
    assert list(table["is_reference"]) == [True, False, False]
    assert (table["endpoint"] == "rfs").all() and (table["n"] == 4).all()
    assert list(table["planned_infusions"]) == [0, 16, 16]
    assert table.loc[0, "infusions_mean"] == 0.0
    assert (table.loc[1:, "infusions_mean"] > 0).all()
    assert np.isnan(table.loc[0, "hr"])
    expected = comparison.patients.groupby("arm")["infusions_received"].mean()
    assert table.set_index("arm")["infusions_mean"].to_dict() == pytest.approx(expected.to_dict())
    files = pd.read_csv(comparison.run.out / "comparison.csv")
    assert list(files["arm"]) == list(table["arm"])


def test_mechanism_columns_count_each_patient_once(comparison):
    """Cured + both recurring = recurring in the reference arm; new + both = recurring in the arm; the
    breakdown by source sums to the cures."""
    patients = comparison.patients
    for arm in ("lee2015", "weekly6_biweekly"):
        b = mechanism_breakdown(patients, arm, "control")
        assert b["cured"] + b["both_recur"] == b["recurred_ref"]
        assert b["new"] + b["both_recur"] == b["recurred_arm"]
        assert b["cured_micrometastasis"] + b["cured_de_novo"] == b["cured"]
        assert b["early_ref"] + b["late_ref"] == b["recurred_ref"]
        assert b["patients"] == 4
        row = comparison.table.set_index("arm").loc[arm]
        assert row["cured"] == b["cured"] and row["recurred_ref"] == b["recurred_ref"]


def test_mechanism_breakdown_on_a_known_table():
    rows = []
    for pid, (ref, trt, src) in enumerate([(10.0, None, "micrometastasis"), (30.0, 36.0, "de_novo"),
                                           (None, None, ""), (20.0, 21.0, "micrometastasis")]):
        for arm, rec in (("control", ref), ("cik", trt)):
            rows.append({"patient_id": pid, "arm": arm, "rfs_months": rec or 60.0, "rfs_event": rec is not None,
                         "recurrence_months": np.nan if rec is None else rec,
                         "recurrence_source": src if rec is not None else "", "os_event": False,
                         "cause_of_death": ""})
    b = mechanism_breakdown(pd.DataFrame(rows), "cik", "control")
    assert (b["recurred_ref"], b["recurred_arm"], b["cured"], b["both_recur"], b["new"]) == (3, 2, 1, 2, 0)
    assert b["median_delay_months"] == pytest.approx(3.5)  # delays 6 and 1
    assert b["cured_micrometastasis"] == 1 and b["cured_de_novo"] == 0
    assert b["by_source"]["de_novo"]["median_delay_months"] == pytest.approx(6.0)
    assert (b["early_ref"], b["late_ref"]) == (2, 1)


def test_common_random_numbers_across_arms(comparison):
    patients = comparison.patients
    covariates = ["doubling_time_days", "primary_size_cm", "mvi", "ligand_mean", "mhc_loss_per_division",
                  "homing_scale", "product_yield", "manufacturing_failed", "primary_size_gt_5cm"]
    per_patient = patients.groupby("patient_id")[covariates].nunique()
    assert (per_patient == 1).all().all()
    assert sorted(patients["patient_id"].unique()) == [0, 1, 2, 3]
    # the same patients as in a plain trial of the scenario's own arms
    own = comparison_table(patients, arms=["control", "lee2015"])
    assert len(own) == 2


def test_subgroup_levels(comparison):
    sub = comparison.subgroups
    assert set(sub["by"]) <= {"primary_size_gt_5cm", "infusions_group"}
    size = sub[sub["by"] == "primary_size_gt_5cm"]
    assert set(size["level"]) <= {"False", "True"}
    assert set(size["arm"]) == {"lee2015", "weekly6_biweekly"}
    assert (size.groupby("arm")["n"].sum() == 4).all()
    infusions = sub[sub["by"] == "infusions_group"]
    assert set(infusions["level"]) <= {"0", "1-8", "9-16", "17+"}
    # paired: each level compares an arm's patients with the same patients in control
    assert (infusions["n"] == infusions["n_ref"]).all()
    assert (infusions.groupby("arm")["n"].sum() == 4).all()
    on_disk = pd.read_csv(comparison.run.out / "subgroups.csv")
    assert len(on_disk) == len(sub)


def test_infusion_groups():
    frame = pd.DataFrame({"infusions_received": [0, 1, 8, 9, 16, 17, 30]})
    grouped = add_infusion_groups(frame)
    assert list(grouped["infusions_group"].astype(str)) == ["0", "1-8", "1-8", "9-16", "9-16", "17+", "17+"]
    assert list(grouped["infusions_group"].cat.categories) == ["0", "1-8", "9-16", "17+"]
    with pytest.raises(ValueError):
        add_infusion_groups(frame, edges=(1, 8))


def test_subgroups_with_a_synthetic_table():
    rng = np.random.default_rng(0)
    n = 40
    base = pd.DataFrame({"patient_id": np.arange(n), "primary_size_gt_5cm": rng.random(n) < 0.4})
    control = base.assign(arm="control", rfs_months=rng.exponential(20, n), rfs_event=True, infusions_received=0)
    cik = base.assign(arm="cik", rfs_months=rng.exponential(30, n), rfs_event=True,
                      infusions_received=rng.integers(0, 17, n))
    sub = comparison_subgroups(pd.concat([control, cik], ignore_index=True), reference_arm="control")
    levels = sub.groupby("by")["level"].apply(list).to_dict()
    assert levels["primary_size_gt_5cm"] == ["False", "True"]
    assert levels["infusions_group"] == [g for g in ["0", "1-8", "9-16"]
                                         if g in set(add_infusion_groups(cik)["infusions_group"].astype(str))]


def test_plots_take_axes(comparison):
    from matplotlib.figure import Figure

    fig = Figure()
    axes = fig.subplots(1, 3)
    med, hr = plot_comparison(comparison.table, axes=axes[:2])
    assert med is axes[0] and hr is axes[1]
    assert plot_blood_levels(comparison.scenario, ax=axes[2]) is axes[2]
    assert len(axes[2].get_lines()) == 2  # the two treated arms


# --------------------------------------------------------------------------- CLI

def test_cli_compare_writes_files(tmp_path, capsys):
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY_TOML)
    out = tmp_path / "out"
    rc = main(["compare", str(scenario), "--out", str(out), "--schedules", "none,lee2015,weekly6_biweekly*0.5",
               "--patients", "3", "--workers", "1", "--no-progress"])
    assert rc == 0
    for name in ("comparison.csv", "subgroups.csv", "comparison.png", "patients.parquet", "summary.json",
                 "km_rfs.png", "km_os.png"):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / "comparison.csv")
    assert list(table["arm"]) == ["control", "lee2015", "weekly6_biweekly*0.5"]
    assert "weekly6_biweekly*0.5" in capsys.readouterr().out


def test_cli_compare_rejects_bad_schedule(tmp_path, capsys):
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY_TOML)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["compare", str(scenario), "--out", str(out), "--schedules", "none,lee2051"])
    assert exc.value.code == 2
    assert "'lee2051'" in capsys.readouterr().err
    assert not out.exists()
    # a name clash with --append is a usage error too
    rc = main(["compare", str(scenario), "--out", str(out), "--schedules", "none", "--append"])
    assert rc == 2
    assert "control" in capsys.readouterr().err
    assert not out.exists()


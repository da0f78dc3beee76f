"""Replicate virtual trials: new cohorts, the distribution of their results, and the in-silico power."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_cli_trial import TINY_TRIAL

from cikabm.cli import main
from cikabm.replicates import one_sided_p, replicate_seeds, summarise

PUBLISHED = """
[[published]]
quantity = "hazard_ratio"
endpoint = "rfs"
arm = "cik"
value = 0.63
ci_low = 0.43
ci_high = 0.94
role = "calibrated"
source = "Lee 2015"
"""


def test_one_sided_p_favours_the_treated_arm():
    assert one_sided_p(0.04, 0.6) == pytest.approx(0.02)
    assert one_sided_p(0.04, 1.4) == pytest.approx(0.98)
    assert one_sided_p(None, 0.6) is None
    assert replicate_seeds(7, 3) == [7, 8, 9]


def test_summary_counts_power_over_replicates():
    table = pd.DataFrame([
        {"replicate": r, "endpoint": "rfs", "kind": "comparison", "name": "cik_vs_control", "hr": hr,
         "logrank_p": p, "one_sided_p": one_sided_p(p, hr)}
        for r, (hr, p) in enumerate([(0.5, 0.01), (0.7, 0.2), (0.6, 0.08), (1.2, 0.5)])])
    comp = summarise(table)["rfs"]["comparisons"]["cik_vs_control"]
    assert comp["power_one_sided"] == pytest.approx(0.5)  # p/2 = 0.005 and 0.04 are below 0.05
    assert comp["hr"]["mean"] == pytest.approx(0.75) and comp["hr"]["replicates"] == 4


def test_trial_replicates_write_distribution_power_and_plot(tmp_path, capsys):
    scenario = tmp_path / "t.toml"
    scenario.write_text(TINY_TRIAL + PUBLISHED)
    out = tmp_path / "reps"
    assert main(["trial", str(scenario), "--out", str(out), "--replicates", "3", "--workers", "1",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "3 replicate trials" in text and "power" in text
    summary = json.loads((out / "replicates.json").read_text())
    assert summary["seeds"] == [3, 4, 5]
    assert set(summary["endpoints"]) == {"rfs", "os", "css"}
    rfs = summary["endpoints"]["rfs"]
    assert 0.0 <= rfs["comparisons"]["cik_vs_control"]["power_one_sided"] <= 1.0
    table = pd.read_csv(out / "replicates.csv")
    assert sorted(table["replicate"].unique()) == [0, 1, 2]
    assert (out / "hr_replicates.png").stat().st_size > 10_000
    # replicate 0 is the plain trial of the scenario's seed
    plain = tmp_path / "plain"
    assert main(["trial", str(scenario), "--out", str(plain), "--workers", "1", "--no-progress"]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(plain / "patients.parquet"),
                                  pd.read_parquet(out / "replicate_000" / "patients.parquet"))


def test_validation_report_rows_and_readme_block(tmp_path, capsys):
    """`cikabm validation` writes a row per published value (model median and interval over replicates,
    role), the in vitro lysis row and the mechanism rows, and replaces the README block."""
    from cikabm.validation import README_BEGIN, README_END

    scenario = tmp_path / "t.toml"
    scenario.write_text(TINY_TRIAL + PUBLISHED)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{README_BEGIN}\nold\n{README_END}\n\nafter\n")
    out = tmp_path / "val"
    assert main(["validation", str(scenario), "--replicates", "2", "--out", str(out), "--workers", "1",
                 "--no-progress", "--readme", str(readme)]) == 0
    table = pd.read_csv(out / "validation.csv")
    hr = table[table["target"].str.contains("RFS HR")]
    assert len(hr) == 1 and hr["role"].iloc[0] == "calibrated" and hr["published"].iloc[0] == "0.63 (0.43-0.94)"
    assert (table["role"] == "mechanism (model only)").any()
    assert table["target"].str.contains("in vitro lysis").any()
    text = readme.read_text()
    assert "old" not in text and "after" in text and "| target | published | model |" in text
    assert "made by: cikabm validation" in text
    assert (out / "validation.md").read_text().startswith("Model: median and 2.5-97.5 % interval over 2")


def test_validation_refuses_a_readme_without_the_block(tmp_path, capsys):
    scenario = tmp_path / "t.toml"
    scenario.write_text(TINY_TRIAL)
    readme = tmp_path / "README.md"
    readme.write_text("# no block\n")
    assert main(["validation", str(scenario), "--out", str(tmp_path / "v"), "--readme", str(readme)]) == 2
    assert "no '<!-- validation table: begin -->' block" in capsys.readouterr().err
    assert not (tmp_path / "v").exists()


def test_validation_of_the_shipped_scenarios_on_a_reduced_cohort(tmp_path, capsys):
    """The README's validation command on 2 replicates of 16 patients: every published value of both
    scenarios has its row, with its role; the full-size table is made by hand (README)."""
    from cikabm.scenario import load_scenario

    root = Path(__file__).resolve().parents[1]
    paths = [root / "scenarios" / "hcc_adjuvant_lee2015.toml", root / "scenarios" / "neuroblastoma_choi2018.toml"]
    out = tmp_path / "val"
    assert main(["validation", *map(str, paths), "--replicates", "2", "--patients", "16", "--workers", "1",
                 "--out", str(out), "--no-progress"]) == 0
    table = pd.read_csv(out / "validation.csv", keep_default_na=False)
    published = [p for path in paths for p in load_scenario(path).published]
    rows = table[~table["role"].isin(["mechanism (model only)"]) & ~table["target"].str.contains("in vitro")]
    assert len(rows) == len(published)
    assert list(rows["role"]) == [p.role for p in published]
    assert (table["role"] == "mechanism (model only)").sum() >= 4
    assert set(table["role"]) == {"calibrated", "predicted", "mechanism (model only)"}


@pytest.mark.parametrize("command", [["validation", "{s}", "--out", "{o}"],
                                     ["calibrate", "{s}", "--control-median", "30", "--hr", "0.63",
                                      "--treatment-arm", "cik"]])
def test_trial_commands_refuse_a_region_scenario(tmp_path, capsys, command):
    root = Path(__file__).resolve().parents[1]
    region = str(root / "scenarios" / "teaching_mhc_loss.toml")
    args = [a.format(s=region, o=tmp_path / "v") for a in command]
    assert main(args) == 2
    assert "has no [trial] table" in capsys.readouterr().err
    assert not (tmp_path / "v").exists()


def test_calibrate_log_refuses_a_foreign_file_and_keeps_it(tmp_path, capsys):
    root = Path(__file__).resolve().parents[1]
    log = tmp_path / "results.json"
    log.write_text('{"my": "data"}')
    assert main(["calibrate", str(root / "scenarios" / "hcc_adjuvant_lee2015.toml"), "--control-median", "30",
                 "--hr", "0.63", "--treatment-arm", "cik", "--log", str(log)]) == 2
    assert "is not a cikabm calibration log" in capsys.readouterr().err
    assert log.read_text() == '{"my": "data"}'
    # a log of an earlier calibration may be replaced
    from cikabm.cli import check_log_path

    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"command": "cikabm calibrate x.toml --hr 0.63"}))
    check_log_path(earlier)


def test_validation_rows_say_not_reached_or_not_estimable_in_words():
    """A median missing in some replicates is 'not reached', a hazard ratio 'not estimable' (never 'NR')."""
    from types import SimpleNamespace

    from cikabm.scenario import scenario_from_dict
    from cikabm.trial_params import TrialScenario
    from cikabm.validation import published_rows

    ts = scenario_from_dict({"published": [
        {"quantity": "median_months", "endpoint": "rfs", "arm": "cik", "value": 44.0},
        {"quantity": "hazard_ratio", "endpoint": "rfs", "arm": "cik", "value": 0.63}]}, model=TrialScenario)
    summaries = [{"endpoints": {"rfs": {"arms": {"cik": {"median_months": median}},
                                        "comparisons": {"cik_vs_control": {"hr": hr}}}}}
                 for median, hr in ((43.0, 0.6), (None, None), (45.0, 0.7))]
    median_row, hr_row = published_rows(ts, SimpleNamespace(summaries=summaries))
    assert median_row["model"] == "44.0 (43.0-45.0); not reached in 1 of 3"
    assert hr_row["model"] == "0.65 (0.60-0.70); not estimable in 1 of 3"

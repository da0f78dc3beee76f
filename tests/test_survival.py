"""Survival statistics of virtual trials against synthetic exponential data with known answers."""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cikabm.survival import (
    KM_FIGSIZE,
    endpoint_summary,
    plot_km,
    save_km_figures,
    subgroup_summary,
    trial_summary,
)

LN2 = math.log(2.0)
H_CONTROL = LN2 / 30.0  # control median RFS 30 months
HR_TRUE = 0.63
H_CIK = HR_TRUE * H_CONTROL
CENSOR = 60.0  # administrative censoring


def exponential_arm(rng: np.random.Generator, arm: str, hazard: float, n: int, censor: float = CENSOR,
                    os_hazard: float | None = None) -> pd.DataFrame:
    """``n`` patients with exponential RFS (and OS) times, censored at ``censor`` months."""
    t = rng.exponential(1.0 / hazard, n)
    o = rng.exponential(1.0 / (os_hazard if os_hazard is not None else hazard / 2.0), n)
    return pd.DataFrame({
        "patient_id": np.arange(n),
        "arm": arm,
        "rfs_months": np.minimum(t, censor),
        "rfs_event": t <= censor,
        "os_months": np.minimum(o, censor),
        "os_event": o <= censor,
        "primary_size_gt_5cm": rng.random(n) < 0.4,
        "infusions_group": pd.Categorical(rng.choice(["0", "1-3", "4+"], n), categories=["0", "1-3", "4+", "none"]),
    })


@pytest.fixture(scope="module")
def trial() -> pd.DataFrame:
    rng = np.random.default_rng(20150601)
    return pd.concat([exponential_arm(rng, "control", H_CONTROL, 5000), exponential_arm(rng, "CIK", H_CIK, 5000)],
                     ignore_index=True)


@pytest.fixture(scope="module")
def summary(trial: pd.DataFrame) -> dict:
    return endpoint_summary(trial, "rfs")


def rmst_exponential(hazard: float, tau: float) -> float:
    """Analytic restricted mean of an exponential: the integral of exp(-h t) from 0 to tau."""
    return (1.0 - math.exp(-hazard * tau)) / hazard


# --------------------------------------------------------------------------- known answers

def test_medians_match_ln2_over_hazard(summary: dict) -> None:
    for arm, hazard in (("control", H_CONTROL), ("CIK", H_CIK)):
        stats = summary["arms"][arm]
        true_median = LN2 / hazard
        # KM median SE ~ 1 / (f(m) sqrt(n)) = median / (ln2 sqrt(n)) without censoring before the median
        se = true_median / (LN2 * math.sqrt(stats["n"]))
        assert stats["n"] == 5000
        assert abs(stats["median_months"] - true_median) < 4 * se
        assert stats["ci_low"] < stats["median_months"] < stats["ci_high"]
        assert stats["ci_high"] - stats["ci_low"] < 8 * se


def test_hazard_ratio_and_logrank(summary: dict) -> None:
    comp = summary["comparisons"]["CIK_vs_control"]
    events = [summary["arms"][a]["events"] for a in ("control", "CIK")]
    se_log_hr = math.sqrt(sum(1.0 / d for d in events))
    assert comp["hr_ci_low"] < HR_TRUE < comp["hr_ci_high"]
    assert abs(math.log(comp["hr"] / HR_TRUE)) < 4 * se_log_hr
    assert comp["hr_ci_low"] < comp["hr"] < comp["hr_ci_high"]
    assert comp["logrank_p"] < 1e-20
    assert comp["cox_p"] < 1e-20
    assert "note" not in comp


def test_rmst_matches_analytic(summary: dict) -> None:
    assert summary["tau_months"] == pytest.approx(CENSOR)
    for arm, hazard in (("control", H_CONTROL), ("CIK", H_CIK)):
        expected = rmst_exponential(hazard, CENSOR)
        assert summary["arms"][arm]["rmst_months"] == pytest.approx(expected, rel=0.03)
    diff = summary["comparisons"]["CIK_vs_control"]["rmst_diff_months"]
    assert diff == pytest.approx(rmst_exponential(H_CIK, CENSOR) - rmst_exponential(H_CONTROL, CENSOR), abs=1.5)


def test_rmst_with_explicit_tau(trial: pd.DataFrame) -> None:
    out = endpoint_summary(trial, "rfs", tau_months=24.0)
    assert out["tau_months"] == 24.0
    for arm, hazard in (("control", H_CONTROL), ("CIK", H_CIK)):
        assert out["arms"][arm]["rmst_months"] == pytest.approx(rmst_exponential(hazard, 24.0), rel=0.02)
    with pytest.raises(ValueError, match="tau_months"):
        endpoint_summary(trial, "rfs", tau_months=0.0)


def test_survival_at_matches_exponential(summary: dict) -> None:
    for arm, hazard in (("control", H_CONTROL), ("CIK", H_CIK)):
        at = summary["arms"][arm]["survival_at"]
        assert list(at) == ["12", "24", "36", "60"]
        for key, s in at.items():
            assert s == pytest.approx(math.exp(-hazard * float(key)), abs=0.025)


def test_survival_at_only_within_follow_up() -> None:
    rng = np.random.default_rng(7)
    short = pd.concat([exponential_arm(rng, "control", H_CONTROL, 300, censor=30.0),
                       exponential_arm(rng, "CIK", H_CIK, 300, censor=40.0)], ignore_index=True)
    out = endpoint_summary(short, "rfs")
    assert list(out["arms"]["control"]["survival_at"]) == ["12", "24"]
    assert list(out["arms"]["CIK"]["survival_at"]) == ["12", "24", "36"]
    assert out["tau_months"] == pytest.approx(30.0)  # smallest of the arms' maximum follow-up


def test_identical_arms_hr_contains_one() -> None:
    rng = np.random.default_rng(11)
    same = pd.concat([exponential_arm(rng, "control", H_CONTROL, 5000), exponential_arm(rng, "CIK", H_CONTROL, 5000)],
                     ignore_index=True)
    comp = endpoint_summary(same, "rfs")["comparisons"]["CIK_vs_control"]
    assert comp["hr_ci_low"] < 1.0 < comp["hr_ci_high"]
    assert abs(math.log(comp["hr"])) < 0.1
    assert comp["logrank_p"] > 0.01


# --------------------------------------------------------------------------- structure and edge cases

def test_summary_is_json_ready(trial: pd.DataFrame) -> None:
    out = trial_summary(trial)
    assert list(out) == ["rfs", "os"]  # pfs columns absent
    text = json.dumps(out, allow_nan=False)
    back = json.loads(text)
    assert back["rfs"]["arms"]["CIK"]["survival_at"]["12"] == out["rfs"]["arms"]["CIK"]["survival_at"]["12"]
    rfs = out["rfs"]
    assert rfs["endpoint"] == "rfs" and rfs["reference_arm"] == "control"
    assert list(rfs["arms"]) == ["control", "CIK"]
    assert set(rfs["arms"]["control"]) >= {"n", "events", "median_months", "ci_low", "ci_high", "rmst_months",
                                           "survival_at"}
    assert set(rfs["comparisons"]["CIK_vs_control"]) >= {"hr", "hr_ci_low", "hr_ci_high", "logrank_p", "cox_p"}
    assert isinstance(rfs["arms"]["control"]["n"], int) and isinstance(rfs["arms"]["control"]["events"], int)


def test_arm_order_and_reference(trial: pd.DataFrame) -> None:
    out = endpoint_summary(trial, "rfs", arms=["CIK", "control"])
    assert list(out["arms"]) == ["CIK", "control"]
    comp = out["comparisons"]["control_vs_CIK"]
    assert comp["hr"] == pytest.approx(1.0 / HR_TRUE, rel=0.1)
    out = endpoint_summary(trial, "rfs", reference_arm="CIK")
    assert list(out["comparisons"]) == ["control_vs_CIK"]
    with pytest.raises(ValueError, match="reference arm"):
        endpoint_summary(trial, "rfs", reference_arm="placebo")


def test_missing_endpoint_columns_raise(trial: pd.DataFrame) -> None:
    with pytest.raises(KeyError, match="pfs"):
        endpoint_summary(trial, "pfs")


def test_bad_times_raise(trial: pd.DataFrame) -> None:
    bad = trial.head(20).copy()
    bad.loc[bad.index[0], "rfs_months"] = np.nan
    with pytest.raises(ValueError, match="rfs_months"):
        endpoint_summary(bad, "rfs")


def test_arm_with_no_events() -> None:
    rng = np.random.default_rng(3)
    control = exponential_arm(rng, "control", H_CONTROL, 200)
    cured = exponential_arm(rng, "CIK", H_CIK, 200).assign(rfs_months=rng.uniform(1.0, CENSOR, 200), rfs_event=False)
    out = endpoint_summary(pd.concat([control, cured], ignore_index=True), "rfs")
    arm = out["arms"]["CIK"]
    assert arm["events"] == 0
    assert arm["median_months"] is None and arm["ci_low"] is None and arm["ci_high"] is None
    assert all(s == 1.0 for s in arm["survival_at"].values())
    comp = out["comparisons"]["CIK_vs_control"]
    assert comp["hr"] is None and comp["hr_ci_low"] is None and comp["hr_ci_high"] is None
    assert "no events" in comp["note"]
    assert comp["logrank_p"] < 1e-6  # the log-rank test is still defined
    json.dumps(out, allow_nan=False)


def test_no_events_at_all() -> None:
    frame = pd.DataFrame({"arm": ["a", "a", "b", "b"], "pfs_months": [1.0, 2.0, 3.0, 4.0], "pfs_event": [False] * 4})
    out = endpoint_summary(frame, "pfs")
    comp = out["comparisons"]["b_vs_a"]
    assert comp["logrank_p"] is None and comp["hr"] is None and "no events" in comp["note"]
    json.dumps(out, allow_nan=False)


def test_single_arm_has_no_comparisons(trial: pd.DataFrame) -> None:
    out = endpoint_summary(trial[trial["arm"] == "CIK"], "rfs")
    assert list(out["arms"]) == ["CIK"]
    assert out["comparisons"] == {}
    json.dumps(out, allow_nan=False)


def test_listed_arm_absent_from_table(trial: pd.DataFrame) -> None:
    out = endpoint_summary(trial, "rfs", arms=["control", "CIK", "placebo"])
    assert out["arms"]["placebo"]["n"] == 0 and out["arms"]["placebo"]["median_months"] is None
    assert out["comparisons"]["placebo_vs_control"]["hr"] is None
    json.dumps(out, allow_nan=False)


def test_tiny_arms() -> None:
    frame = pd.DataFrame({"arm": ["control", "control", "CIK"], "rfs_months": [2.0, 5.0, 3.0],
                          "rfs_event": [True, True, True]})
    out = endpoint_summary(frame, "rfs")
    assert out["arms"]["CIK"]["median_months"] == 3.0
    json.dumps(out, allow_nan=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["control", "CIK"]), st.floats(0.1, 80.0), st.booleans()),
                min_size=1, max_size=12))
def test_small_random_tables_never_raise(rows: list[tuple[str, float, bool]]) -> None:
    frame = pd.DataFrame(rows, columns=["arm", "os_months", "os_event"])
    out = endpoint_summary(frame, "os")
    json.dumps(out, allow_nan=False)
    for comp in out["comparisons"].values():
        if comp["hr"] is not None:
            assert 0.0 < comp["hr_ci_low"] <= comp["hr"] <= comp["hr_ci_high"]


# --------------------------------------------------------------------------- subgroups

def test_subgroup_summary_one_row_per_level(trial: pd.DataFrame) -> None:
    table = subgroup_summary(trial, "rfs", "primary_size_gt_5cm")
    assert list(table["level"]) == [False, True]
    assert (table["arm"] == "CIK").all() and (table["reference_arm"] == "control").all()
    assert table["n"].sum() == 5000 and table["n_ref"].sum() == 5000
    # the covariate is unrelated to survival: each subgroup recovers the overall HR (within 4 SE)
    se_log_hr = np.sqrt(1.0 / table["events"] + 1.0 / table["events_ref"])
    assert (np.abs(np.log(table["hr"] / HR_TRUE)) < 4 * se_log_hr).all()
    assert ((table["hr_ci_low"] < table["hr"]) & (table["hr"] < table["hr_ci_high"])).all()
    assert (table["logrank_p"] < 1e-6).all()
    assert table["median_ref_months"].to_numpy() == pytest.approx(LN2 / H_CONTROL, rel=0.1)


def test_subgroup_summary_categorical_levels(trial: pd.DataFrame) -> None:
    table = subgroup_summary(trial, "os", "infusions_group")
    assert list(table["level"]) == ["0", "1-3", "4+"]  # category order, unobserved "none" left out
    assert set(table.columns) >= {"n", "n_ref", "median_months", "median_ref_months", "hr", "hr_ci_low",
                                  "hr_ci_high", "logrank_p"}
    with pytest.raises(KeyError):
        subgroup_summary(trial, "os", "no_such_column")


# --------------------------------------------------------------------------- figures

@pytest.fixture(scope="module")
def small_trial() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return pd.concat([exponential_arm(rng, "control", H_CONTROL, 300), exponential_arm(rng, "CIK", H_CIK, 300)],
                     ignore_index=True)


def test_plot_km_one_line_per_arm(small_trial: pd.DataFrame) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes

    ax = plot_km(small_trial, "rfs")
    try:
        assert isinstance(ax, Axes)
        curves = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
        assert [c.get_label().split(" ")[0] for c in curves] == ["control", "CIK"]
        assert "HR" in ax.get_legend().get_title().get_text()
        assert len(ax.figure.axes) == 2  # the KM axes and lifelines' at-risk twin
    finally:
        plt.close(ax.figure)


def test_plot_km_into_given_axes(small_trial: pd.DataFrame) -> None:
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    assert plot_km(small_trial, "os", ax=ax, at_risk=False, title="OS", colors={"CIK": "black"}) is ax
    assert len(fig.axes) == 1 and ax.get_title(loc="left") == "OS"


def test_save_km_figures(small_trial: pd.DataFrame, tmp_path) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    paths = save_km_figures(small_trial, tmp_path / "figs")
    assert [p.name for p in paths] == ["km_rfs.png", "km_os.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.get_fignums() == before  # no pyplot figures left behind


def test_four_arm_km_legend_lies_outside_the_curves(tmp_path) -> None:
    """The legend (arms and hazard ratios) sits beside the axes, so it cannot cover a curve (issue 14)."""
    from matplotlib.figure import Figure

    rng = np.random.default_rng(8)
    arms = {"control": H_CONTROL, "lee2015": H_CIK, "weekly6_biweekly": H_CIK * 0.9, "lee2015*0.5": H_CIK * 1.2}
    patients = pd.concat([exponential_arm(rng, name, h, 200) for name, h in arms.items()], ignore_index=True)
    paths = save_km_figures(patients, tmp_path, endpoints=["rfs"])
    assert paths[0].stat().st_size > 0
    fig = Figure(figsize=KM_FIGSIZE)
    ax = plot_km(patients, "rfs", ax=fig.add_subplot())
    fig.tight_layout()
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    data_area = ax.get_window_extent()
    assert not legend.overlaps(data_area), (legend, data_area)
    assert legend.x0 >= data_area.x1
    assert len(ax.get_legend().get_texts()) == 4
    figure_box = fig.bbox
    assert figure_box.x0 <= legend.x0 and legend.x1 <= figure_box.x1 + 1  # tight_layout keeps it in the figure
    # ... and the at-risk table under the axes (save_km_figures saves the figure as laid out, uncropped)
    for axes in fig.axes:
        box = axes.get_tightbbox()
        assert figure_box.y0 - 1 <= box.y0 and box.x0 >= figure_box.x0 - 1, (box, figure_box)


def test_landmark_at_the_end_of_follow_up_uses_the_last_follow_up_time():
    """A 60-month trial whose last patient is censored at 59.7 months still reports survival at 60
    months: the Kaplan-Meier value at 59.7, which survival_at_time names; without follow_up_months the
    landmark is left out."""
    patients = pd.DataFrame({"arm": ["a"] * 4, "os_months": [10.0, 20.0, 30.0, 59.7],
                             "os_event": [True, False, True, False]})
    with_fu = endpoint_summary(patients, "os", follow_up_months=60.0)["arms"]["a"]
    assert with_fu["survival_at"]["60"] == pytest.approx(with_fu["survival_at"]["36"])
    assert with_fu["survival_at_time"] == {"60": 59.7}
    plain = endpoint_summary(patients, "os")["arms"]["a"]
    assert "60" not in plain["survival_at"] and "survival_at_time" not in plain


def test_a_subgroup_with_too_few_patients_gets_no_p_value():
    rng = np.random.default_rng(3)
    n = 60
    patients = pd.DataFrame({"arm": ["control"] * n + ["cik"] * n,
                             "rfs_months": rng.exponential(20.0, 2 * n), "rfs_event": True,
                             "big": np.r_[np.arange(n) < 8, np.arange(n) < 8]})
    table = subgroup_summary(patients, "rfs", "big", reference_arm="control").set_index("level")
    small, large = table.loc[True], table.loc[False]
    assert small["n"] == 8 and pd.isna(small["hr"]) and pd.isna(small["logrank_p"])
    assert "too few patients" in small["note"]
    assert large["n"] == 52 and large["hr"] > 0 and large["logrank_p"] is not None


def test_one_formatter_says_not_reached_in_words():
    from cikabm.survival import format_median

    assert format_median(26.05, 21.5, 31.8) == "median 26.1 months (95 % CI 21.5-31.8)"
    assert format_median(43.0, 30.6, None) == "median 43.0 months (95 % CI 30.6-not reached)"
    assert format_median(None, 40.2, None) == "median not reached (95 % CI from 40.2 months)"
    assert format_median(None, None, None) == format_median(float("nan"), None, None) == "median not reached"


def test_terminal_summaries_never_print_nr():
    """Hazard ratios, p-values and delays that cannot be estimated are said in words, by the same
    formatters in the trial and the comparison summaries (issue 14; 'NR' read as 'not reached')."""
    from pathlib import Path

    from cikabm.cli_text import comparison_text, trial_summary_text
    from cikabm.survival import format_estimate, format_hr

    assert format_hr(0.7, 0.55, 0.89, 0.0031) == "HR 0.70 (95 % CI 0.55-0.89), log-rank p 0.0031"
    assert format_hr(None, None, None, None) == format_hr(float("nan"), 0.1, 2.0, 0.5) == "HR not estimable"
    assert format_estimate(float("inf")) == "not estimable"
    assert format_estimate(None, missing="not reached", unit=" months") == "not reached"
    arm = {"median_months": None, "ci_low": None, "ci_high": None, "events": 0, "n": 3}
    summary = {"scenario": "s", "seed": 1, "patients": 3, "arms": ["control", "cik"], "setting": "adjuvant",
               "reference_arm": "control",
               "endpoints": {"rfs": {"arms": {"control": arm, "cik": arm},
                                     "comparisons": {"cik_vs_control": {"hr": None, "hr_ci_low": None,
                                                                        "hr_ci_high": None, "logrank_p": None}}}},
               "mechanism": {"cik_vs_control": {"recurred_ref": 0, "cured": 0, "cured_micrometastasis": 0,
                                                "cured_de_novo": 0, "both_recur": 0, "median_delay_months": None,
                                                "cancer_deaths_ref": 0, "cancer_deaths_arm": 0}}}
    text = trial_summary_text(summary, Path("out"))
    assert "cik_vs_control: HR not estimable" in text and "median not reached" in text
    assert "median delay" not in text
    table = pd.DataFrame({"arm": ["control", "cik"], "endpoint": "rfs", "is_reference": [True, False],
                          "hr": [np.nan, np.nan], "hr_ci_low": np.nan, "hr_ci_high": np.nan, "logrank_p": np.nan,
                          "median_months": np.nan, "median_ci_low": np.nan, "median_ci_high": np.nan,
                          "infusions_mean": [0.0, 16.0]})
    compared = comparison_text(table, summary, Path("out"))
    assert "cik     median not reached, 16.0 infusions; HR not estimable" in compared
    for printed in (text, compared):
        assert "NR" not in printed.replace("RFS", "")


def test_comparisons_are_cached_by_content_and_returned_as_copies():
    """A trial's summary and its KM figures compare the same arms: the second call reuses the first
    Cox fit, gives the same numbers, and a caller changing its dict changes no later result."""
    from cikabm.survival import _compare, _compare_uncached

    rng = np.random.default_rng(5)
    arm = pd.DataFrame({"T": rng.exponential(20, 80), "E": rng.random(80) < 0.7})
    ref = pd.DataFrame({"T": rng.exponential(12, 80), "E": rng.random(80) < 0.7})
    first = _compare(arm, ref, "cik", "control")
    assert first == _compare_uncached(arm, ref, "cik", "control")
    first["hr"] = -1.0
    again = _compare(arm, ref, "cik", "control")
    assert again["hr"] is not None and again["hr"] > 0
    other = ref.assign(T=ref["T"] * 2.0)  # other content: another fit
    assert _compare(arm, other, "cik", "control")["hr"] != again["hr"]

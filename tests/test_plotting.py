"""Figures: every plot function draws into a given axes or a new figure, and the run figures are written."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes

from cikabm import Simulation, scenario_from_dict
from cikabm.params import KIND_KEYS
from cikabm.plotting import (
    plot_effectors,
    plot_kill_matrix,
    plot_kills,
    plot_populations,
    plot_snapshots,
    save_run_figures,
)
from cikabm.simulation import Snapshot

SMALL = {
    "lattice": {"shape": [30, 30]},
    "time": {"duration_days": 2.0, "record_every_hours": 6.0},
    "tumour": {"initial_cells": 30, "mhc_loss_per_division": 0.2},
    "homing": {"ctl_per_site_per_day": 2e-3, "cik_per_site_per_day": 5e-12},
    "dosing": {"schedule": "lee2015", "start_day": 0.5},
}


@pytest.fixture(scope="module")
def results():
    return Simulation(scenario_from_dict(SMALL), threads=1).run(progress=False, n_snapshots=3)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_time_series_plots_new_and_given_axes(results):
    frame = results.to_frame()
    for fn in (plot_populations, plot_effectors):
        ax = fn(frame, results.infusion_days)
        assert isinstance(ax, Axes)
        _, given = plt.subplots()
        assert fn(results, ax=given) is given
    assert isinstance(plot_populations(frame, None, log=True), Axes)
    ax = plot_kills(results)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "CD3+CD56+ (T-NK)" in labels
    # One dose-mark label, whatever the number of infusions.
    ax = plot_populations(results)
    assert [t.get_text() for t in ax.get_legend().get_texts()].count("CIK infusion") == 1


def test_kill_matrix_labels_and_zero_table(results):
    ax = plot_kill_matrix(results.kills_table())
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert len(ticks) == len(KIND_KEYS) and "CTL" in ticks[-1]
    zeros = pd.DataFrame(0, index=list(KIND_KEYS), columns=["perforin_mhc_present", "perforin_mhc_lost",
                                                            "fas_mhc_present", "fas_mhc_lost"])
    assert isinstance(plot_kill_matrix(zeros), Axes)


def test_snapshots_wrap_and_validate_axes():
    snaps = [Snapshot(day=float(d), tumour=np.random.default_rng(d).integers(0, 4, (12, 15)).astype(np.uint8),
                      effectors=np.full((12, 15), -1, np.int8)) for d in range(7)]
    snaps[0].effectors[3, 4] = 2
    axes = plot_snapshots(snaps, site_size_um=15.0, max_cols=4)
    assert len(axes) == 8 and not axes[-1].get_visible()
    assert axes[0].get_title().startswith("day 0")
    _, two = plt.subplots(1, 2)
    with pytest.raises(ValueError, match="7 snapshots need 7 axes"):
        plot_snapshots(snaps, two)


def test_save_run_figures(results, tmp_path: Path):
    files = save_run_figures(results, tmp_path)
    assert [f.name for f in files] == ["populations.png", "snapshots.png"]
    for f in files:
        assert f.read_bytes()[:4] == b"\x89PNG"
    assert plt.get_fignums() == []  # drawn on bare Figures, nothing left open in pyplot

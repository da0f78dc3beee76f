"""The kernel as a Mesa model (:class:`cikabm.mesa.model.CIKModel`) and the app's controls."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest

mesa = pytest.importorskip("mesa")

from cikabm import ScenarioError, Simulation, load_scenario  # noqa: E402
from cikabm.kernels import core  # noqa: E402
from cikabm.kernels.geometry import interior_view  # noqa: E402
from cikabm.mesa.model import TEACHING_SCENARIO, CIKModel, build_scenario  # noqa: E402

#: A small, quick variant of the teaching scenario: CIK from day 1.
SMALL = {
    "lattice": {"shape": [40, 40]},
    "time": {"duration_days": 4.0},
    "tumour": {"initial_cells": 60, "mhc_loss_per_division": 0.05},
    "homing": {"ctl_per_site_per_day": 5e-3, "cik_per_site_per_day": 2e-11},
    "dosing": {"start_day": 1.0},
}


def small_model(**kwargs) -> CIKModel:
    return CIKModel(base_scenario=SMALL, **kwargs)


def test_default_is_the_teaching_scenario_file(tmp_path):
    """TEACHING_SCENARIO and scenarios/teaching_mhc_loss.toml say the same."""
    model = CIKModel()
    from_file = load_scenario("scenarios/teaching_mhc_loss.toml")
    assert model.cik_scenario == from_file
    assert TEACHING_SCENARIO["dosing"]["schedule"] == from_file.dosing.schedule


def test_parameters_are_keyword_only_with_defaults():
    params = inspect.signature(CIKModel.__init__).parameters
    for name, p in params.items():
        if name == "self":
            continue
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, name
        assert p.default is not inspect.Parameter.empty, name
    with pytest.raises(TypeError):
        CIKModel(SMALL)  # type: ignore[misc]


def test_collected_data_equal_the_kernel_run():
    """Stepping the Mesa model reproduces Simulation.run() bit for bit, record by record."""
    model = small_model(seed=5, hours_per_step=6.0)
    while model.running:
        model.step()
    collected = model.datacollector.get_model_vars_dataframe().reset_index(drop=True)
    reference = Simulation(model.cik_scenario, seed=5).run(progress=False, n_snapshots=0).to_frame()
    assert len(collected) == len(reference) == 4 * 4 + 1
    for column in collected.columns:
        np.testing.assert_allclose(collected[column].to_numpy(dtype=float),
                                   reference[column].to_numpy(dtype=float), rtol=1e-12, err_msg=column)
    assert collected["kills_total"].iloc[-1] > 0
    assert collected["infusions_given"].iloc[-1] >= 1


def test_step_past_the_end_stops():
    model = small_model(duration_days=1.0, start_day=0.5, hours_per_step=12.0)
    model.step()
    model.step()
    assert not model.running
    rows = len(model.datacollector.get_model_vars_dataframe())
    model.step()
    assert len(model.datacollector.get_model_vars_dataframe()) == rows == 3


def test_layers_are_live_views_of_the_kernel_state():
    model = small_model()
    lattice = model.simulation.lattice
    geom = model.simulation.disc.geometry
    layer = model.layers["tumour_state"]
    assert np.shares_memory(layer.data, lattice.cell)
    assert layer.data.shape == (40, 40)
    for _ in range(3):
        model.step()
    np.testing.assert_array_equal(layer.data, interior_view(lattice.cell, geom))
    live = int(np.count_nonzero(layer.data == core.LIVE))
    assert live == model.populations["tumour_total"]
    lost = int(np.count_nonzero((layer.data == core.LIVE) & (model.layers["mhc_lost"].data == 1)))
    assert lost == model.populations["tumour_mhc_lost"]
    assert int(model.layers["has_effector"].data.sum()) == len(model.effectors())


def test_grid_carries_the_layers():
    model = small_model()
    model.step()
    grid = model.grid
    assert np.shares_memory(grid.tumour_state.data, model.simulation.lattice.cell)
    y, x = np.argwhere(model.layers["tumour_state"].data == core.LIVE)[0]
    assert grid._cells[(int(y), int(x))].tumour_state == core.LIVE


def test_effector_table_matches_counts():
    model = small_model(seed=2)
    for _ in range(6):
        model.step()
    table = model.effectors()
    counts = table["kind"].value_counts()
    for kind in ("tnk", "tcell", "nk", "ctl"):
        assert counts.get(kind, 0) == model.populations[f"effectors_{kind}"]
    assert table["x"].between(0, 39).all() and table["y"].between(0, 39).all()
    has = model.layers["has_effector"].data
    assert (has[table["y"], table["x"]] == 1).all()


def test_ctl_only_toggle_gives_no_cik():
    model = small_model(cik=False)
    while model.running:
        model.step()
    frame = model.datacollector.get_model_vars_dataframe()
    assert model.cik_scenario.dosing.schedule == "none"
    assert frame[["arrivals_tnk", "arrivals_tcell", "arrivals_nk"]].to_numpy().sum() == 0
    assert frame["arrivals_ctl"].iloc[-1] > 0


def test_knobs_reach_the_scenario():
    sc = build_scenario(SMALL, mhc_loss_per_division=0.02, share_tnk=0.5, share_nk=0.2, dose_billion_cells=3.0,
                        schedule="lee2015", start_day=2.0)
    assert sc.tumour.mhc_loss_per_division == 0.02
    assert (sc.product.share_tnk, sc.product.share_nk) == (0.5, 0.2)
    assert sc.product.share_tcell == pytest.approx(0.3)
    assert sc.dosing.dose_cells == 3e9
    assert (sc.dosing.schedule, sc.dosing.start_day) == ("lee2015", 2.0)


@pytest.mark.parametrize(("kwargs", "names"), [
    ({"mhc_loss_per_division": -0.1}, ["tumour.mhc_loss_per_division", "-0.1"]),
    ({"share_tnk": 0.9, "share_nk": 0.3}, ["share_tnk = 0.9", "share_nk = 0.3"]),
    ({"schedule": "daily"}, ["schedule = 'daily'"]),
    ({"hours_per_step": 0.1}, ["hours_per_step = 0.1"]),
    ({"dose_billion_cells": "many"}, ["dose_billion_cells = 'many'"]),
    ({"duration_days": -1.0}, ["time.duration_days", "-1.0"]),
])
def test_bad_arguments_name_field_and_value(kwargs, names):
    with pytest.raises((ScenarioError, ValueError)) as info:
        small_model(**kwargs)
    for name in names:
        assert name in str(info.value)


def test_batch_run_accepts_the_model():
    results = mesa.batch_run(CIKModel, parameters={"base_scenario": [SMALL], "cik": [False, True], "seed": [3]},
                             max_steps=8, data_collection_period=-1, display_progress=False)
    frame = pd.DataFrame(results)
    assert len(frame) == 2
    assert set(frame["cik"]) == {False, True}
    cik_kills = frame.set_index("cik")[["kills_tnk", "kills_tcell", "kills_nk"]].sum(axis=1)
    assert cik_kills[False] == 0 and cik_kills[True] > 0


def test_app_controls_are_model_keywords():
    pytest.importorskip("solara")
    from cikabm.mesa import app

    keywords = set(inspect.signature(CIKModel.__init__).parameters)
    assert set(app.MODEL_PARAMS) <= keywords
    values = {k: (v.value if hasattr(v, "value") else v["value"]) for k, v in app.MODEL_PARAMS.items()}
    model = CIKModel(**values)
    assert model.cik_scenario == CIKModel(seed=1).cik_scenario


def test_nkg2d_block_is_a_model_parameter():
    """The app's NKG2D toggle: the scenario blocks NKG2D, and the effector table shows TCR specificity."""
    model = CIKModel(nkg2d_blocked=True, duration_days=2.0, start_day=0.0)
    assert model.cik_scenario.killing.nkg2d_blocked
    assert CIKModel(duration_days=2.0, start_day=0.0).cik_scenario.killing.nkg2d_blocked is False
    for _ in range(4):
        model.step()
    table = model.effectors()
    assert "tcr_recognises_tumour" in table.columns and len(table) > 0
    assert model.populations["kills_mhc_lost"] == 0  # CTLs need MHC-I, and NKG2D is blocked

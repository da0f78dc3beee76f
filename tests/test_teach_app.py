"""The teaching page's logic without a browser: controls, per-tab sessions, Reset, Play's guard."""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("mesa")
pytest.importorskip("solara")

from cikabm.mesa import app
from cikabm.mesa.model import CIKModel


def test_every_control_is_a_model_keyword_and_says_its_value_with_a_unit():
    keywords = set(inspect.signature(CIKModel.__init__).parameters)
    assert set(app.MODEL_PARAMS) <= keywords
    texts = {name: control.text(control.value) for name, control in app.MODEL_PARAMS.items()}
    assert texts["mhc_loss_per_division"] == ("MHC-I loss per division: 0.010 per division "
                                              "(1.0 % of daughter cells lose MHC-I for good)")
    assert texts["share_nk"] == "CIK mix: CD3-CD56+ (NK) share: 4 % of the CIK cells"
    assert texts["dose_billion_cells"] == "Dose: 6.4 × 10⁹ CIK cells per infusion"
    assert texts["schedule"] == ("Schedule: weekly6_biweekly (6 infusions 7 days apart, then "
                                 "10 infusions 14 days apart)")
    assert texts["start_day"] == "First infusion: day 42"
    assert texts["cik"] == "CIK infusions: on (endogenous CTLs + CIK cells)"
    assert app.MODEL_PARAMS["nkg2d_blocked"].text(True).startswith("Block NKG2D: on (anti-NKG2D antibody")
    assert app.describe_schedule("none") == "no infusions"
    assert [app.MODEL_PARAMS[n].decimals for n in ("mhc_loss_per_division", "share_tnk", "dose_billion_cells",
                                                   "seed")] == [3, 2, 1, 0]


def test_sessions_are_independent_and_reset_starts_the_same_run_again():
    first, second = app._Session(app.DEFAULTS), app._Session(app.DEFAULTS)
    assert first.model is not second.model
    day0 = first.view
    assert day0.day == 0.0 and day0.running and day0.populations.startswith("Day 0.0: tumour cells 200 ")
    one = first.step()
    assert (one.day, one.revision) == (0.5, 1)
    assert second.view.day == 0.0 and second.model.day == 0.0
    first.step()
    reset = first.reset(app.DEFAULTS)
    assert reset.day == 0.0 and reset.revision == 3
    assert (reset.populations, reset.figures) == (day0.populations, day0.figures)
    again = first.step()
    assert (again.populations, again.figures) == (one.populations, one.figures)


def test_play_never_steps_a_model_that_a_reset_replaced():
    session = app._Session(app.DEFAULTS)
    old = session.model
    session.reset({**app.DEFAULTS, "cik": False})
    assert session.step(old).day == 0.0  # the Play thread of the old model: no step
    assert session.step(session.model).day == 0.5


def test_a_bad_combination_is_refused_by_reset():
    session = app._Session(app.DEFAULTS)
    with pytest.raises(ValueError, match="share_tnk"):
        session.reset({**app.DEFAULTS, "share_tnk": 0.9, "share_nk": 0.2})
    assert session.view.revision == 0 and session.values == app.DEFAULTS

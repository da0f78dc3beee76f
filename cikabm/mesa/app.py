"""The teaching app: a SolaraViz page of :class:`~cikabm.mesa.model.CIKModel`.

``cikabm teach`` serves this module with Solara (``solara run cikabm.mesa.app``).
The page shows the lattice (tumour coloured by MHC class I state, effectors as
dots by kind), the tumour by MHC state over time, the kills by effector kind
and by mechanism, and a line of current counts; the side bar has sliders for
the MHC-loss rate, the CIK subset mix, the dose and the schedule, a toggle
for CTLs only vs CTLs + CIK, and one that blocks NKG2D; kills per effector cell
by kind show what each subset does. *Reset* builds a new model from the controls;
*Step* advances half a day; the play button runs on.

In a notebook, ``from cikabm.mesa.app import page; page`` shows the same page.
"""

from __future__ import annotations

import warnings
from typing import Any

# Mesa 3.3's own page trips Solara's hook linter when it is imported; the
# warning is about Mesa's code, not this app, and would only confuse a teacher
# reading the console.
warnings.filterwarnings("ignore", message=r".*use_state. found despite early return", category=UserWarning)

import solara  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from mesa.visualization import Slider, SolaraViz  # noqa: E402
from mesa.visualization.utils import update_counter  # noqa: E402

from cikabm.mesa.model import SCHEDULE_CHOICES, TEACHING_SCENARIO, CIKModel  # noqa: E402
from cikabm.params import KIND_KEYS, KIND_LABELS  # noqa: E402
from cikabm.plotting import (  # noqa: E402
    MECH_LABELS,
    plot_effectors,
    plot_kills,
    plot_kills_by_mechanism,
    plot_kills_per_cell,
    plot_populations,
    plot_snapshots,
)

__all__ = ["MODEL_PARAMS", "make_page", "page"]

_dosing = TEACHING_SCENARIO["dosing"]
_tumour = TEACHING_SCENARIO["tumour"]

#: The controls of the side bar: each a keyword argument of :class:`CIKModel`.
MODEL_PARAMS: dict[str, Any] = {
    "cik": {"type": "Checkbox", "value": True, "label": "CIK infusions (off: endogenous CTLs only)"},
    "nkg2d_blocked": {"type": "Checkbox", "value": False,
                      "label": "Block NKG2D (anti-NKG2D antibody: TCR killing of MHC-I-present cells remains)"},
    "mhc_loss_per_division": Slider("MHC-I loss per division", _tumour["mhc_loss_per_division"], 0.0, 0.05, 0.001),
    "share_tnk": Slider("CIK mix: CD3+CD56+ (T-NK) share", 0.36, 0.0, 0.8, 0.01),
    "share_nk": Slider("CIK mix: CD3-CD56+ (NK) share (CD3+CD56- is the rest)", 0.04, 0.0, 0.2, 0.01),
    "dose_billion_cells": Slider("Dose: CIK cells per infusion (x 1e9)", _dosing["dose_cells"] / 1e9, 0.0, 30.0, 0.2),
    "schedule": {"type": "Select", "value": _dosing["schedule"], "values": list(SCHEDULE_CHOICES),
                 "label": "Schedule"},
    "start_day": Slider("Schedule: first infusion (day)", _dosing["start_day"], 0.0, 80.0, 1.0),
    "seed": Slider("Random seed", 1, 1, 100, 1),
}


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


@solara.component
def Populations(model: CIKModel) -> None:
    """One line of current counts (the browser test reads it)."""
    update_counter.get()
    p = model.populations
    kinds = ", ".join(f"{KIND_LABELS[k]} {int(p[f'effectors_{k}'])}" for k in KIND_KEYS)
    kills = ", ".join(f"{MECH_LABELS[m]} {int(p[f'kills_{m}'])}" for m in ("perforin", "fas"))
    text = (f"Day {model.day:.1f}: tumour cells {int(p['tumour_total'])} "
            f"(MHC-I present {int(p['tumour_mhc_present'])}, MHC-I lost {int(p['tumour_mhc_lost'])}); "
            f"effectors: {kinds}; kills: {int(p['kills_total'])} ({kills}; "
            f"of MHC-I-lost cells {int(p['kills_mhc_lost'])}); infusions given {model.infusions_given}")
    solara.Text(text, classes=["cikabm-populations"])


@solara.component
def Lattice(model: CIKModel) -> None:
    """The lattice: tumour by MHC state, effectors by kind (legend on the right)."""
    update_counter.get()
    fig = Figure(figsize=(6.2, 4.3))
    ax = fig.add_axes((0.01, 0.02, 0.55, 0.86))
    plot_snapshots([model.snapshot()], axes=[ax], site_size_um=model.cik_scenario.lattice.site_size_um)
    solara.FigureMatplotlib(fig, format="png", dpi=90)


def _draw_time_series(model: CIKModel, plot: Any) -> None:
    """Draw ``plot(frame, ax=..., infusion_days=...)`` of the data collected so far."""
    update_counter.get()
    fig = _figure(6.0, 3.9)
    plot(model.datacollector.get_model_vars_dataframe(), ax=fig.subplots(), infusion_days=model.infusion_days)
    solara.FigureMatplotlib(fig, format="png", dpi=90)


@solara.component
def TumourByMhc(model: CIKModel) -> None:
    """Tumour cells by MHC class I state over time, infusions marked."""
    _draw_time_series(model, plot_populations)


@solara.component
def KillsByKind(model: CIKModel) -> None:
    """Cumulative kills by effector kind (dashed: of MHC-I-lost cells)."""
    _draw_time_series(model, plot_kills)


@solara.component
def KillsByMechanism(model: CIKModel) -> None:
    """Cumulative kills by mechanism, perforin/granzyme and Fas/FasL (dashed: of MHC-I-lost cells)."""
    _draw_time_series(model, plot_kills_by_mechanism)


@solara.component
def KillsPerCell(model: CIKModel) -> None:
    """Kills per effector cell by kind, of MHC-I-present and MHC-I-lost targets."""
    update_counter.get()
    fig = _figure(6.0, 3.9)
    plot_kills_per_cell(model.datacollector.get_model_vars_dataframe(), ax=fig.subplots())
    solara.FigureMatplotlib(fig, format="png", dpi=90)


@solara.component
def Effectors(model: CIKModel) -> None:
    """Effectors in the region by kind, CIK in blood on the right axis."""
    _draw_time_series(model, plot_effectors)


def make_page(model: CIKModel | None = None) -> Any:
    """The SolaraViz page for ``model`` (default: a new teaching model)."""
    model = CIKModel() if model is None else model
    return SolaraViz(
        model,
        components=[Lattice, Populations, TumourByMhc, KillsByKind, KillsPerCell, KillsByMechanism, Effectors],
        model_params=MODEL_PARAMS,
        name="cikabm: MHC-independent killing by CIK cells",
    )


page = make_page()

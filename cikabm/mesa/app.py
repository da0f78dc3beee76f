"""The teaching app: a Solara page of :class:`~cikabm.mesa.model.CIKModel`, one model per browser tab.

``cikabm teach`` serves this module with Solara (``solara run cikabm.mesa.app``).
The page shows the lattice (tumour coloured by MHC class I state, effectors as
dots by kind), the tumour by MHC state over time, the kills by effector kind
and by mechanism, kills per effector cell by kind, the effectors with the CIK
level in blood, and a line of current counts. The side bar holds the lesson's
controls, each showing its value and unit: CIK infusions on or off, NKG2D
blocked or not, the MHC-I loss per division, the CIK subset mix, the dose, the
schedule and its first day, and the random seed. *Step* advances half a day,
*Play* steps on until *Pause*, and *Reset* builds a new model from the controls
at day 0.

Every browser tab (every Solara virtual kernel) gets its own model: the model
lives in the state of :func:`Page`, so two students never drive the same one,
and reloading the page starts afresh.

Every figure is drawn once per step, by the step (see :class:`View`), so a
page renders cheaply and *Play* goes no faster than the drawing; day 0 of a
given set of controls is drawn once for all tabs.

In a notebook, ``from cikabm.mesa.app import page; page`` shows the same page.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import solara
from matplotlib.figure import Figure

from cikabm.io import save_png
from cikabm.mesa.model import SCHEDULE_CHOICES, TEACHING_SCENARIO, CIKModel
from cikabm.params import KIND_KEYS, KIND_LABELS
from cikabm.plotting import (
    MECH_LABELS,
    plot_effectors,
    plot_kills,
    plot_kills_by_mechanism,
    plot_kills_per_cell,
    plot_populations,
    plot_snapshots,
)
from cikabm.scenario import ScenarioError
from cikabm.schedules import PRESET_SCHEDULES, phases_text

__all__ = ["APP_TITLE", "MODEL_PARAMS", "PANELS", "Control", "Page", "View", "describe_schedule", "page",
           "populations_line"]

#: The page title (browser tab and tool bar).
APP_TITLE = "cikabm: MHC-independent killing by CIK cells"
#: Solara's router names the page after a module-level ``title``.
title = APP_TITLE
#: Simulated hours per *Step*.
HOURS_PER_STEP = 12.0
#: Shortest wall time between two steps while playing (the figures take about as long to draw).
PLAY_SECONDS_PER_STEP = 0.3
#: Shortest pause between two steps while playing, for the browser's messages to get through.
PLAY_MIN_PAUSE_S = 0.15
#: Resolution of the figures (pixels per inch).
FIGURE_DPI = 90

_dosing = TEACHING_SCENARIO["dosing"]
_tumour = TEACHING_SCENARIO["tumour"]


def describe_schedule(name: str) -> str:
    """The infusions of a preset schedule in words, e.g. "6 infusions 7 days apart, then 10 14 days apart"."""
    return phases_text(() if name == "none" else PRESET_SCHEDULES[name])


@dataclass(frozen=True)
class Control:
    """One control of the side bar, bound to a keyword argument of :class:`CIKModel`.

    Parameters
    ----------
    kind : {"switch", "slider", "select"}
        The widget.
    label : str
        The lesson's name of the control; the page shows ``label: describe(value)``.
    value : bool, float, int or str
        The starting value (that of the teaching scenario).
    describe : callable
        The value in words, with its unit.
    low, high, step : float
        Range and step of a slider (an integer slider when all three and the value are integers).
    choices : tuple of str
        The values of a select.
    cik_only : bool
        Greyed out while CIK infusions are off (the control then changes nothing).
    """

    kind: str
    label: str
    value: Any
    describe: Callable[[Any], str]
    low: float = 0.0
    high: float = 1.0
    step: float = 1.0
    choices: tuple[str, ...] = ()
    cik_only: bool = False

    def text(self, value: Any) -> str:
        """What the page shows for ``value``: the label, the value and its meaning or unit."""
        if self.kind == "select":
            return f"{self.label}: {value} ({self.describe(value)})"
        return f"{self.label}: {self.describe(value)}"

    @property
    def decimals(self) -> int:
        """Decimals of the step (slider values are rounded to them: the browser sends 0.07000000000000001)."""
        text = f"{self.step:.10f}".rstrip("0")
        return len(text.split(".")[1]) if "." in text else 0


def _percent_of_cik(value: float) -> str:
    return f"{100 * value:.0f} % of the CIK cells"


#: The lesson's controls, in side-bar order: each a keyword argument of :class:`CIKModel`.
MODEL_PARAMS: dict[str, Control] = {
    "cik": Control("switch", "CIK infusions", True,
                   lambda v: "on (endogenous CTLs + CIK cells)" if v else "off (endogenous CTLs only)"),
    "nkg2d_blocked": Control("switch", "Block NKG2D", False,
                             lambda v: ("on (anti-NKG2D antibody: only TCR killing of MHC-I-present cells "
                                        "remains)") if v else "off (NKG2D sees the stress ligands)"),
    "mhc_loss_per_division": Control(
        "slider", "MHC-I loss per division", _tumour["mhc_loss_per_division"],
        lambda v: f"{v:.3f} per division ({100 * v:.1f} % of daughter cells lose MHC-I for good)",
        0.0, 0.05, 0.001),
    "share_tnk": Control("slider", "CIK mix: CD3+CD56+ (T-NK) share", 0.36, _percent_of_cik, 0.0, 0.8, 0.01,
                         cik_only=True),
    "share_nk": Control("slider", "CIK mix: CD3-CD56+ (NK) share", 0.04, _percent_of_cik, 0.0, 0.2, 0.01,
                        cik_only=True),
    "dose_billion_cells": Control("slider", "Dose", _dosing["dose_cells"] / 1e9,
                                  lambda v: f"{v:.1f} × 10⁹ CIK cells per infusion", 0.0, 30.0, 0.2,
                                  cik_only=True),
    "schedule": Control("select", "Schedule", _dosing["schedule"], describe_schedule,
                        choices=SCHEDULE_CHOICES, cik_only=True),
    "start_day": Control("slider", "First infusion", _dosing["start_day"], lambda v: f"day {v:.0f}",
                         0.0, 80.0, 1.0, cik_only=True),
    "seed": Control("slider", "Random seed", 1, lambda v: f"{int(v)} (same seed and controls: same run)", 1, 100, 1),
}

#: The controls' starting values, as keyword arguments of :class:`CIKModel`.
DEFAULTS: dict[str, Any] = {name: control.value for name, control in MODEL_PARAMS.items()}

# One kernel call at a time across every browser tab: Numba's workqueue threading
# layer (used where neither TBB nor OpenMP is installed) aborts the process when
# two threads launch parallel kernels at once. A step takes milliseconds, so a
# classroom does not notice the queue.
_KERNEL_LOCK = threading.Lock()
# Matplotlib's text rendering (FreeType) is not thread-safe, and each tab draws
# in its own thread (the GIL allows little overlap anyway).
_DRAW_LOCK = threading.Lock()


def _new_model(values: dict[str, Any]) -> CIKModel:
    with _KERNEL_LOCK:
        return CIKModel(**values, hours_per_step=HOURS_PER_STEP)


# --------------------------------------------------------------------------- figures

def _given_infusions(model: CIKModel) -> Any:
    """Infusion days up to now: a later one would be drawn off the time axis (and squash the layout)."""
    days = model.infusion_days
    return days[days <= model.day + 1e-9]


def _draw_lattice(model: CIKModel) -> Figure:
    fig = Figure(figsize=(6.2, 4.3))
    ax = fig.add_axes((0.01, 0.02, 0.55, 0.86))
    plot_snapshots([model.snapshot()], axes=[ax], site_size_um=model.cik_scenario.lattice.site_size_um)
    return fig


def _draw_series(plot: Callable[..., Any], model: CIKModel) -> Figure:
    fig = Figure(figsize=(6.0, 3.9), layout="constrained")
    plot(model.datacollector.get_model_vars_dataframe(), ax=fig.subplots(), infusion_days=_given_infusions(model))
    return fig


def _draw_kills_per_cell(model: CIKModel) -> Figure:
    fig = Figure(figsize=(6.0, 3.9), layout="constrained")
    plot_kills_per_cell(model.datacollector.get_model_vars_dataframe(), ax=fig.subplots())
    return fig


#: The figures of the page: (description for the image's alt text, drawing function).
PANELS: tuple[tuple[str, Callable[[CIKModel], Figure]], ...] = (
    ("The lattice: tumour cells by MHC class I state, effectors as dots by kind", _draw_lattice),
    ("Tumour cells by MHC class I state over time, infusions marked", partial(_draw_series, plot_populations)),
    ("Cumulative kills by effector kind (dashed: of MHC-I-lost cells)", partial(_draw_series, plot_kills)),
    ("Kills per effector cell by kind, of MHC-I-present and MHC-I-lost targets", _draw_kills_per_cell),
    ("Cumulative kills by mechanism, perforin/granzyme and Fas/FasL",
     partial(_draw_series, plot_kills_by_mechanism)),
    ("Effectors in the region by kind, CIK cells in blood on the right axis", partial(_draw_series, plot_effectors)),
)


def _data_url(fig: Figure) -> str:
    """A figure as a PNG data URL (an ``<img>`` source: equal pictures, equal sources)."""
    buffer = io.BytesIO()
    save_png(fig, buffer, dpi=FIGURE_DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def populations_line(model: CIKModel) -> str:
    """The counts now in one line: day, tumour by MHC state, effectors by kind, kills, infusions."""
    p = model.populations
    kinds = ", ".join(f"{KIND_LABELS[k]} {int(p[f'effectors_{k}'])}" for k in KIND_KEYS)
    kills = ", ".join(f"{MECH_LABELS[m]} {int(p[f'kills_{m}'])}" for m in ("perforin", "fas"))
    return (f"Day {model.day:.1f}: tumour cells {int(p['tumour_total'])} "
            f"(MHC-I present {int(p['tumour_mhc_present'])}, MHC-I lost {int(p['tumour_mhc_lost'])}); "
            f"effectors: {kinds}; kills: {int(p['kills_total'])} ({kills}; "
            f"of MHC-I-lost cells {int(p['kills_mhc_lost'])}); infusions given {model.infusions_given}")


@dataclass(frozen=True)
class View:
    """What the page shows of a model at one moment: drawn once, after each step or reset.

    Drawing here rather than while rendering keeps rendering cheap, keeps the
    counts and every figure of one moment together, and paces *Play* by the
    drawing (a step is not taken before the last one is drawn).
    """

    revision: int
    day: float
    running: bool
    populations: str
    figures: tuple[str, ...]  # PNG data URLs, in the order of PANELS


def _draw(model: CIKModel) -> tuple[str, tuple[str, ...]]:
    """The counts line and the figures of ``model`` now."""
    with _DRAW_LOCK:
        figures = tuple(_data_url(draw(model)) for _, draw in PANELS)
    return populations_line(model), figures


@lru_cache(maxsize=16)
def _day0(values: tuple[tuple[str, Any], ...]) -> tuple[str, tuple[str, ...]]:
    """The counts line and figures at day 0 of the model of ``values`` (the same for every tab).

    A run is fixed by its controls and seed, so every tab that opens, or resets
    to, the same controls starts from the same picture: drawn once, not once
    per student (drawing takes about a second of a server shared by the class).
    """
    return _draw(_new_model(dict(values)))


class _Session:
    """The model of one browser tab, and the lock that keeps its steps and drawings apart."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.lock = threading.Lock()
        self.values = dict(values)
        self.model = _new_model(self.values)
        self.view = View(0, 0.0, True, *_day0(tuple(self.values.items())))

    def reset(self, values: dict[str, Any]) -> View:
        """A new model from ``values`` at day 0 (raises ValueError or ScenarioError for values that make no sense)."""
        model = _new_model(values)
        line, figures = _day0(tuple(values.items()))
        with self.lock:
            self.model, self.values = model, dict(values)
            self.view = View(self.view.revision + 1, 0.0, True, line, figures)
            return self.view

    def step(self, model: CIKModel | None = None) -> View:
        """Advance half a day (nothing once the run is over, or when ``model`` is no longer this tab's); the view."""
        with self.lock:
            if self.model.running and (model is None or model is self.model):
                with _KERNEL_LOCK:
                    self.model.step()
                self.view = View(self.view.revision + 1, self.model.day, bool(self.model.running),
                                 *_draw(self.model))
            return self.view


@solara.component
def Picture(source: str, description: str, day: float) -> None:
    """One figure (a PNG data URL), with its description and day as alternative text."""
    solara.HTML(tag="img", attributes={"src": source, "alt": f"{description}, day {day:.1f}",
                                       "style": "max-width: 100%; height: auto"}, classes=["cikabm-figure"])


# --------------------------------------------------------------------------- controls

@solara.component
def ControlView(name: str, values: solara.Reactive[dict[str, Any]]) -> None:
    """A control with its value and unit in words, always shown (not only while dragged)."""
    control = MODEL_PARAMS[name]
    value = values.value[name]
    disabled = control.cik_only and not values.value["cik"]

    def set_value(new: Any) -> None:
        if control.kind == "slider":
            new = round(float(new), control.decimals)
            new = int(new) if isinstance(control.value, int) else new
        values.set({**values.value, name: new})

    text = control.text(value)
    with solara.Column(gap="0px", classes=["cikabm-control"], style={"margin-bottom": "6px"}):
        if control.kind == "switch":
            # The switch's own label carries the value, so it reads "Block NKG2D: off (...)".
            solara.Switch(label=text, value=bool(value), on_value=set_value, classes=["cikabm-value"])
        elif control.kind == "select":
            solara.Select(label=control.label, values=list(control.choices), value=value, on_value=set_value,
                          disabled=disabled)
            solara.Text(text, classes=["cikabm-value"], style={"font-size": "0.9em"})
        else:
            solara.Text(text, classes=["cikabm-value"], style={"font-size": "0.9em"})
            # No label on the slider itself: a long label beside it leaves no room for the track.
            slider = solara.SliderInt if isinstance(control.value, int) else solara.SliderFloat
            slider("", value=value, min=control.low, max=control.high, step=control.step, on_value=set_value,
                   thumb_label=False, disabled=disabled)


@solara.component
def Controls(values: solara.Reactive[dict[str, Any]]) -> None:
    """The lesson's controls, in order, with the CD3+CD56- share (the rest of the mix) in words."""
    for name in MODEL_PARAMS:
        ControlView(name, values)
        if name == "share_nk":
            rest = max(0.0, 1.0 - values.value["share_tnk"] - values.value["share_nk"])
            solara.Text(f"CIK mix: CD3+CD56- (activated T) share: {_percent_of_cik(rest)} (the rest)",
                        classes=["cikabm-value"], style={"font-size": "0.9em", "margin-bottom": "10px"})


# --------------------------------------------------------------------------- the page

@solara.component
def Page() -> None:
    """The teaching page; its state (the model) belongs to one browser tab."""
    solara.Title(APP_TITLE)
    values = solara.use_reactive(DEFAULTS)
    session = solara.use_memo(lambda: _Session(DEFAULTS), [])
    # Each change of the session's view sets this to the view's revision. Rendering then reads
    # session.view, always the latest, so a late set from the Play thread never shows an old view.
    shown = solara.use_reactive(0)
    playing = solara.use_reactive(False)
    problem = solara.use_reactive("")

    def play(cancel: threading.Event) -> None:
        model = session.model  # Play runs this model; a Reset makes another and stops Play
        while playing.value and not cancel.is_set():
            started = time.monotonic()
            view = session.step(model)
            shown.set(view.revision)
            if not view.running:
                playing.set(False)
                return
            # Always some pause, so that the browser's own messages (Pause, a control) get through.
            cancel.wait(max(PLAY_MIN_PAUSE_S, PLAY_SECONDS_PER_STEP - (time.monotonic() - started)))

    # Cooperative cancel: the loop checks the event between steps, never inside the kernel.
    solara.use_thread(play, dependencies=[playing.value], intrusive_cancel=False)

    def step() -> None:
        shown.set(session.step().revision)

    def reset() -> None:
        playing.set(False)
        try:
            view = session.reset(values.value)
        except (ValueError, ScenarioError) as err:
            problem.set(f"Reset refused: {err}")
            return
        problem.set("")
        shown.set(view.revision)

    _ = shown.value  # reading it subscribes the page to it: each new view renders the page again
    view = session.view
    with solara.Sidebar():
        with solara.Card("Run", margin=0, style={"margin-bottom": "12px"}):
            with solara.Row():
                solara.Button("Step", on_click=step, disabled=playing.value or not view.running, color="primary")
                solara.Button("Pause" if playing.value else "Play", on_click=lambda: playing.set(not playing.value),
                              disabled=not (view.running or playing.value), color="primary")
                solara.Button("Reset", on_click=reset, color="primary", outlined=True)
            solara.Text("Step: half a day. Play: half a day at a time until Pause. "
                        "Reset: a new model from the controls, at day 0.", style={"font-size": "0.85em"})
        with solara.Card("Lesson controls", margin=0):
            Controls(values)
    with solara.Column(style={"padding": "4px 12px"}):
        solara.Text(view.populations, classes=["cikabm-populations"], style={"font-size": "1.05em"})
        if not view.running:
            solara.Info(f"End of the run (day {view.day:.0f}): Reset to start again.")
        if values.value != session.values:
            solara.Warning("The controls have changed since the last Reset: press Reset to run with them.")
        if problem.value:
            solara.Error(problem.value)
        with solara.GridFixed(columns=2):
            for (description, _draw), source in zip(PANELS, view.figures, strict=True):
                Picture(source, description, view.day)


def _warm_up() -> None:
    """Compile (or load from Numba's cache) the kernels now, so the first student does not wait for them.

    ``solara run`` imports this module before it answers, and ``cikabm teach``
    announces the address only then.
    """
    model = CIKModel(duration_days=1.0, start_day=0.0, hours_per_step=HOURS_PER_STEP)
    with _KERNEL_LOCK:
        model.step()
    _day0(tuple(DEFAULTS.items()))  # every tab opens on this picture


_warm_up()

#: The page as an element, for a notebook cell (``page``); ``solara run`` uses :func:`Page`.
page = Page()

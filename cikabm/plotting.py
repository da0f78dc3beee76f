"""Figures of a run: populations, effectors, kills, the kill matrix, lattice snapshots.

Every ``plot_*`` function draws into the matplotlib axes it is given, or into
a new figure when ``ax`` (``axes``) is None, and returns what it drew into, so
figures compose the way lifelines' do::

    fig, (a, b) = plt.subplots(1, 2)
    plot_populations(results, ax=a)
    plot_kill_matrix(results.kills_table(), ax=b)

Only functions that create a new figure use :mod:`matplotlib.pyplot` (and so
the current backend, e.g. inline in a notebook); :func:`save_run_figures`
draws on bare :class:`~matplotlib.figure.Figure` objects and needs no display
or backend choice at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from cikabm.io import save_png
from cikabm.params import KIND_KEYS, KIND_LABELS

__all__ = [
    "KIND_COLOURS",
    "MHC_COLOURS",
    "plot_assay",
    "plot_effectors",
    "plot_kill_matrix",
    "plot_kills",
    "plot_kills_by_mechanism",
    "plot_kills_per_cell",
    "plot_populations",
    "plot_snapshots",
    "save_run_figures",
]

#: Line and bar colours of the tumour's MHC class I states.
MHC_COLOURS = {"mhc_present": "#2b6cb0", "mhc_lost": "#e4572e"}
MHC_LABELS = {"mhc_present": "MHC-I present", "mhc_lost": "MHC-I lost"}
TOTAL_COLOUR = "#222222"
#: Colours of the effector kinds (lines, bars and snapshot dots).
KIND_COLOURS = {"tnk": "#1b9e77", "tcell": "#7570b3", "nk": "#e7298a", "ctl": "#303030"}
#: Snapshot fill of empty, MHC-present, MHC-lost and dying sites (RGB 0-1).
SNAPSHOT_FILL = np.array([
    [1.0, 1.0, 1.0],          # empty
    [0.56, 0.73, 0.90],       # MHC-I present: light blue
    [0.96, 0.61, 0.49],       # MHC-I lost: light orange-red
    [0.78, 0.78, 0.78],       # dying: grey
])
SNAPSHOT_LABELS = ("empty", "tumour, MHC-I present", "tumour, MHC-I lost", "tumour, dying")
DOSE_COLOUR = "#6b6b6b"
MECH_LABELS = {"perforin": "perforin/granzyme", "fas": "Fas/FasL"}
MECH_COLOURS = {"perforin": "#444444", "fas": "#b07aa1"}


# --------------------------------------------------------------------------- helpers

def _new_axes(figsize: tuple[float, float] = (7.0, 4.2)) -> Axes:
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _frame_and_doses(data: Any, infusion_days: Sequence[float] | np.ndarray | None
                     ) -> tuple[pd.DataFrame, np.ndarray]:
    """Accept a :class:`~cikabm.simulation.Results` or a frame of ``Results.to_frame()``."""
    if hasattr(data, "to_frame") and hasattr(data, "infusion_days"):
        frame = data.to_frame()
        if infusion_days is None:
            infusion_days = data.infusion_days
    elif isinstance(data, pd.DataFrame):
        frame = data
    else:
        raise TypeError(f"expected Results or a DataFrame from Results.to_frame(), got {type(data).__name__}")
    days = np.asarray([] if infusion_days is None else infusion_days, dtype=np.float64)
    return frame, days


def _kind_label(key: str, wrap: bool = False) -> str:
    label = KIND_LABELS.get(key, key)
    return label.replace(" (", "\n(") if wrap else label


def _style_time_axis(ax: Axes, frame: pd.DataFrame) -> None:
    t = frame["time_days"].to_numpy()
    if len(t) > 1:
        ax.set_xlim(float(t[0]), float(t[-1]))
    ax.set_xlabel("time (days)")
    ax.grid(True, color="#e6e6e6", lw=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _mark_doses(ax: Axes, days: np.ndarray, label: str = "CIK infusion") -> None:
    """Thin dotted lines at the infusion days, and one labelled row of triangles on top."""
    if len(days) == 0:
        return
    # One collection for all the lines: the cost of a figure does not grow with the number of doses.
    ax.vlines(days, 0.0, 1.0, transform=ax.get_xaxis_transform(), colors=DOSE_COLOUR, lw=0.7, ls=":",
              zorder=0.5)
    ax.plot(days, np.full(len(days), 1.0), ls="none", marker="v", ms=6, color=DOSE_COLOUR,
            transform=ax.get_xaxis_transform(), clip_on=False, zorder=5, label=label)


def _thousands(x: float, _pos: int | None = None) -> str:
    if abs(x) >= 1e6:
        return f"{x:.3g}"
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"


def _legend(ax: Axes, handles: list[Any] | None = None, **kwargs: Any) -> None:
    kw = {"frameon": True, "framealpha": 0.9, "edgecolor": "none", "fontsize": "small"}
    kw.update(kwargs)
    if handles is None:
        ax.legend(**kw)
    else:
        ax.legend(handles=handles, **kw)


# --------------------------------------------------------------------------- time series

def plot_populations(frame: pd.DataFrame | Any, infusion_days: Sequence[float] | np.ndarray | None = None,
                     ax: Axes | None = None, *, log: bool = False, show_total: bool = True) -> Axes:
    """Tumour cells by MHC class I state over time, with the infusion days marked.

    Parameters
    ----------
    frame : DataFrame or Results
        ``Results.to_frame()`` (or the :class:`~cikabm.simulation.Results` itself).
    infusion_days : array-like, optional
        Days of the CIK infusions, drawn as dotted lines with a triangle on
        top (default: those of ``frame`` when it is a Results, else none).
    ax : Axes, optional
        Where to draw; a new figure when None.
    log : bool, default False
        Logarithmic y axis (zero counts are left out of the lines).
    show_total : bool, default True
        Also draw the total.

    Returns
    -------
    Axes
    """
    frame, days = _frame_and_doses(frame, infusion_days)
    ax = _new_axes() if ax is None else ax
    t = frame["time_days"].to_numpy()

    def y(col: str) -> np.ndarray:
        v = frame[col].to_numpy(dtype=np.float64)
        return np.where(v > 0, v, np.nan) if log else v

    if show_total:
        ax.plot(t, y("tumour_total"), color=TOTAL_COLOUR, lw=2.0, label="all tumour cells")
    for key in ("mhc_present", "mhc_lost"):
        ax.plot(t, y(f"tumour_{key}"), color=MHC_COLOURS[key], lw=1.8, label=MHC_LABELS[key])
    _mark_doses(ax, days)
    if log:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set_ylabel("tumour cells")
    ax.set_title("Tumour cells by MHC class I state", pad=12)
    _style_time_axis(ax, frame)
    _legend(ax, loc="best")
    return ax


def plot_effectors(frame: pd.DataFrame | Any, infusion_days: Sequence[float] | np.ndarray | None = None,
                   ax: Axes | None = None, *, blood: bool = True) -> Axes:
    """Effectors in the region by kind, and the CIK level in blood on a twin axis.

    Parameters
    ----------
    frame : DataFrame or Results
        ``Results.to_frame()`` (or the Results).
    infusion_days : array-like, optional
        Days of the CIK infusions (default: those of a Results).
    ax : Axes, optional
        Where to draw; a new figure when None.
    blood : bool, default True
        Draw ``blood_cik_cells`` as a shaded area on a right-hand axis (left
        out when the blood level is zero throughout). The twin axis is drawn
        beneath ``ax``; it is in ``ax.figure.axes``.

    Returns
    -------
    Axes
        The left-hand (effector) axes.
    """
    frame, days = _frame_and_doses(frame, infusion_days)
    ax = _new_axes() if ax is None else ax
    t = frame["time_days"].to_numpy()
    handles: list[Any] = []
    for key in KIND_KEYS:
        (line,) = ax.plot(t, frame[f"effectors_{key}"], color=KIND_COLOURS[key], lw=1.6,
                          label=_kind_label(key))
        handles.append(line)
    _mark_doses(ax, days)
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set_ylabel("effectors in the region")
    ax.set_title("Effector cells by kind", pad=12)
    _style_time_axis(ax, frame)
    level = frame["blood_cik_cells"].to_numpy(dtype=np.float64) if "blood_cik_cells" in frame else None
    if blood and level is not None and np.nanmax(level, initial=0.0) > 0:
        twin = ax.twinx()
        exponent = 3 * math.floor(math.log10(float(np.nanmax(level))) / 3)
        scaled = level / 10.0**exponent
        twin.fill_between(t, scaled, color="#9a9a9a", alpha=0.22, lw=0)
        twin.plot(t, scaled, color="#8a8a8a", lw=0.8)
        twin.set_ylim(bottom=0)
        unit = rf" ($\times 10^{{{exponent}}}$)" if exponent else ""
        twin.set_ylabel(f"CIK cells in blood{unit}", color="#6b6b6b")
        twin.tick_params(axis="y", colors="#6b6b6b")
        for side in ("top", "left"):
            twin.spines[side].set_visible(False)
        twin.spines["right"].set_color("#9a9a9a")
        # Keep the effector lines on top of the shaded blood level.
        ax.set_zorder(twin.get_zorder() + 1)
        ax.patch.set_visible(False)
        handles.append(Patch(facecolor="#9a9a9a", alpha=0.35, label="CIK in blood (right axis)"))
        ax.spines["right"].set_visible(False)
    if len(days):
        handles.append(Line2D([], [], ls="none", marker="v", color=DOSE_COLOUR, label="CIK infusion"))
    _legend(ax, handles, loc="upper left")
    return ax


def _cumulative_kill_lines(frame: pd.DataFrame, days: np.ndarray, ax: Axes,
                           series: list[tuple[str, str, str, list[str] | None]], title: str) -> Axes:
    """Solid line per series (its total column), dashed its MHC-I-lost kills (sum of columns)."""
    t = frame["time_days"].to_numpy()
    handles: list[Any] = []
    for label, colour, total, lost_columns in series:
        (line,) = ax.plot(t, frame[total], color=colour, lw=1.8, label=label)
        handles.append(line)
        if lost_columns:
            ax.plot(t, sum(frame[c] for c in lost_columns), color=colour, lw=1.3, ls=(0, (4, 2)))
    _mark_doses(ax, days)
    if any(lost for *_, lost in series):
        handles += [Line2D([], [], color="#a0a0a0", lw=1.8, label="all kills (solid)"),
                    Line2D([], [], color="#a0a0a0", lw=1.3, ls=(0, (4, 2)),
                           label="kills of MHC-I-lost cells (dashed)")]
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set_ylabel("cumulative kills")
    ax.set_title(title, pad=12)
    _style_time_axis(ax, frame)
    _legend(ax, handles, loc="upper left")
    return ax


def plot_kills(results_or_frame: pd.DataFrame | Any, ax: Axes | None = None, *,
               infusion_days: Sequence[float] | np.ndarray | None = None, show_mhc_lost: bool = True) -> Axes:
    """Cumulative kills over time by effector kind.

    Parameters
    ----------
    results_or_frame : Results or DataFrame
        A run's Results, or its ``to_frame()`` (or a frame with the same
        columns, such as the Mesa model's data collector).
    ax : Axes, optional
        Where to draw; a new figure when None.
    infusion_days : array-like, optional
        Days of the CIK infusions (default: those of a Results).
    show_mhc_lost : bool, default True
        Also draw, dashed, the kills of MHC-I-lost cells per kind.

    Returns
    -------
    Axes
    """
    frame, days = _frame_and_doses(results_or_frame, infusion_days)
    series = [(_kind_label(key), KIND_COLOURS[key], f"kills_{key}",
               [f"kills_{m}_{key}_mhc_lost" for m in MECH_LABELS] if show_mhc_lost else None)
              for key in KIND_KEYS]
    return _cumulative_kill_lines(frame, days, _new_axes() if ax is None else ax, series,
                                  "Cumulative kills by effector kind")


def plot_kills_by_mechanism(results_or_frame: pd.DataFrame | Any, ax: Axes | None = None, *,
                            infusion_days: Sequence[float] | np.ndarray | None = None,
                            show_mhc_lost: bool = True) -> Axes:
    """Cumulative kills over time by mechanism (perforin/granzyme, Fas/FasL).

    Parameters
    ----------
    results_or_frame : Results or DataFrame
        A run's Results, or its ``to_frame()`` (or a frame with the same
        columns, such as the Mesa model's data collector).
    ax : Axes, optional
        Where to draw; a new figure when None.
    infusion_days : array-like, optional
        Days of the CIK infusions (default: those of a Results).
    show_mhc_lost : bool, default True
        Also draw, dashed, the kills of MHC-I-lost cells by each mechanism.

    Returns
    -------
    Axes
    """
    frame, days = _frame_and_doses(results_or_frame, infusion_days)
    series = [(label, MECH_COLOURS[mech], f"kills_{mech}",
               [f"kills_{mech}_{key}_mhc_lost" for key in KIND_KEYS] if show_mhc_lost else None)
              for mech, label in MECH_LABELS.items()]
    return _cumulative_kill_lines(frame, days, _new_axes() if ax is None else ax, series,
                                  "Cumulative kills by mechanism")


# --------------------------------------------------------------------------- kill matrix

def plot_kill_matrix(kills_table: pd.DataFrame | Any, ax: Axes | None = None, *,
                     annotate: bool = True) -> Axes:
    """Who killed whom: kills per effector kind, of MHC-present vs MHC-lost cells, by mechanism.

    For each effector kind two bars stand side by side, kills of MHC-I-present
    targets (blue) and of MHC-I-lost targets (orange-red); each bar is split
    into perforin/granzyme (solid) and Fas/FasL (hatched) kills. Each bar is
    labelled with its count and each kind with the share of its kills that hit
    MHC-I-lost cells, so that MHC-restricted killing (endogenous CTLs: no
    MHC-lost kills) stands apart from NKG2D killing (T-NK and NK cells).

    Parameters
    ----------
    kills_table : DataFrame or Results
        ``Results.kills_table()``: indexed by kind, with columns
        ``perforin_mhc_present``, ``perforin_mhc_lost``, ``fas_mhc_present``,
        ``fas_mhc_lost`` (or the Results itself).
    ax : Axes, optional
        Where to draw; a new figure when None.
    annotate : bool, default True
        Write the counts and shares on the chart.

    Returns
    -------
    Axes
    """
    table = kills_table.kills_table() if hasattr(kills_table, "kills_table") else kills_table
    ax = _new_axes((7.0, 4.6)) if ax is None else ax
    kinds = [k for k in KIND_KEYS if k in table.index] + [k for k in table.index if k not in KIND_KEYS]
    x = np.arange(len(kinds), dtype=np.float64)
    width = 0.38
    tops = []
    for j, mhc in enumerate(("mhc_present", "mhc_lost")):
        colour = MHC_COLOURS[mhc]
        pos = x + (j - 0.5) * width
        perf = np.array([float(table.loc[k, f"perforin_{mhc}"]) for k in kinds])
        fas = np.array([float(table.loc[k, f"fas_{mhc}"]) for k in kinds])
        ax.bar(pos, perf, width * 0.94, color=colour, edgecolor=colour, lw=0.8)
        ax.bar(pos, fas, width * 0.94, bottom=perf, facecolor=_lighten(colour, 0.6), edgecolor=colour,
               hatch="////", lw=0.8)
        tops.append((pos, perf + fas))
    ymax = max(float(np.max(top)) for _, top in tops) if kinds else 0.0
    ax.set_ylim(0, max(ymax * 1.15, 1.0))
    if annotate:
        for (pos, top), mhc in zip(tops, ("mhc_present", "mhc_lost"), strict=True):
            for p, v in zip(pos, top, strict=True):
                ax.annotate(f"{int(v):,}", (p, v), xytext=(0, 2), textcoords="offset points", ha="center",
                            va="bottom", fontsize="small", color=MHC_COLOURS[mhc],
                            fontweight="bold" if v == 0 else "normal")
        # Call out a kind that killed, but no MHC-I-lost cell at all.
        (_, top_present), (pos_lost, top_lost) = tops
        right = len(kinds) - 0.5
        for i in range(len(kinds)):
            if top_lost[i] == 0 and top_present[i] > 0:
                left = pos_lost[i] - 0.45 * width
                ax.annotate("no MHC-I-lost\ncell killed", (left, 0), xytext=(0, 16),
                            textcoords="offset points", ha="left", va="bottom", fontsize="small",
                            style="italic", color=MHC_COLOURS["mhc_lost"])
                right = max(right, left + 0.75)
        ax.set_xlim(-0.5, right)
    labels = []
    for k in kinds:
        label = _kind_label(k, wrap=True)
        if annotate:
            total = float(table.loc[k, ["perforin_mhc_present", "perforin_mhc_lost", "fas_mhc_present",
                                        "fas_mhc_lost"]].sum())
            lost = float(table.loc[k, "perforin_mhc_lost"] + table.loc[k, "fas_mhc_lost"])
            share = f"{100 * lost / total:.0f} % on MHC-I lost" if total else "no kills"
            label += f"\n{share}"
        labels.append(label)
    ax.set_xticks(x, labels)
    ax.tick_params(axis="x", length=0)
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set_ylabel("kills (whole run)")
    ax.set_title("Who killed whom: target MHC class I state and mechanism", pad=12)
    ax.grid(True, axis="y", color="#e6e6e6", lw=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    handles = [
        Patch(facecolor=MHC_COLOURS["mhc_present"], label="target " + MHC_LABELS["mhc_present"]),
        Patch(facecolor=MHC_COLOURS["mhc_lost"], label="target " + MHC_LABELS["mhc_lost"]),
        Patch(facecolor="#6b6b6b", edgecolor="#6b6b6b", label=MECH_LABELS["perforin"] + " (solid)"),
        Patch(facecolor=_lighten("#6b6b6b", 0.6), edgecolor="#6b6b6b", hatch="////",
              label=MECH_LABELS["fas"] + " (hatched)"),
    ]
    _legend(ax, handles, loc="upper right", ncols=2)
    return ax


def kills_per_cell(frame: pd.DataFrame | Any) -> pd.DataFrame:
    """Kills per effector that arrived, by kind, of MHC-I-present and MHC-I-lost targets (last record).

    ``frame`` is ``Results.to_frame()`` or a data collector's frame (or the
    Results). Kinds with no arrival are left out.
    """
    frame = frame.to_frame() if hasattr(frame, "to_frame") else frame
    last = frame.iloc[-1]
    rows = {}
    for k in KIND_KEYS:
        n = float(last.get(f"arrivals_{k}", 0.0))
        if n <= 0:
            continue
        rows[k] = {mhc: sum(float(last[f"kills_{m}_{k}_{mhc}"]) for m in ("perforin", "fas")) / n
                   for mhc in ("mhc_present", "mhc_lost")}
        rows[k]["arrived"] = n
    return pd.DataFrame.from_dict(rows, orient="index", columns=["mhc_present", "mhc_lost", "arrived"])


def plot_kills_per_cell(frame: pd.DataFrame | Any, ax: Axes | None = None) -> Axes:
    """Kills per effector cell by kind (stacked: MHC-I-present and MHC-I-lost targets).

    What each subset does per cell, whatever how many of it arrived: with
    NKG2D blocked, CD3+CD56+ cells still kill MHC-I-present targets (TCR) and
    no CIK subset kills an MHC-I-lost one.
    """
    table = kills_per_cell(frame)
    ax = _new_axes((6.0, 4.0)) if ax is None else ax
    x = np.arange(len(table), dtype=np.float64)
    present, lost = table["mhc_present"].to_numpy(), table["mhc_lost"].to_numpy()
    ax.bar(x, present, 0.6, color=MHC_COLOURS["mhc_present"], label="of " + MHC_LABELS["mhc_present"] + " cells")
    ax.bar(x, lost, 0.6, bottom=present, color=MHC_COLOURS["mhc_lost"],
           label="of " + MHC_LABELS["mhc_lost"] + " cells")
    for xi, p, q in zip(x, present, lost, strict=True):
        ax.annotate(f"{p + q:.2f}", (xi, p + q), xytext=(0, 2), textcoords="offset points", ha="center",
                    va="bottom", fontsize="small")
    ax.set_xticks(x, [_kind_label(k, wrap=True) for k in table.index])
    ax.tick_params(axis="x", length=0)
    ax.set_ylabel("kills per cell that arrived")
    ax.set_ylim(0, max(1.2 * float((present + lost).max()) if len(table) else 0.0, 0.1))
    ax.set_title("Kills per effector cell, by kind", pad=10)
    ax.grid(True, axis="y", color="#e6e6e6", lw=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    _legend(ax, loc="upper right")
    return ax


def _lighten(colour: str, amount: float) -> tuple[float, float, float]:
    """Mix ``colour`` with white (``amount`` 0: unchanged, 1: white)."""
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(colour)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)


# --------------------------------------------------------------------------- snapshots

def _nice_length(target: float) -> float:
    """A round length (1, 2, 2.5, 5 x 10^k) not above ``target``."""
    if target <= 0:
        return 0.0
    exp = math.floor(math.log10(target))
    for m in (5.0, 2.5, 2.0, 1.0):
        if m * 10**exp <= target:
            return m * 10**exp
    return 10.0**exp


def plot_snapshots(snapshots: Sequence[Any], axes: Any = None, *, site_size_um: float | None = None,
                   max_cols: int = 6, title: str | None = None, legend: bool = True) -> np.ndarray:
    """Lattice images: tumour coloured by MHC class I state, effectors as dots by kind.

    Parameters
    ----------
    snapshots : sequence of Snapshot
        :class:`~cikabm.simulation.Snapshot` objects (``Results.snapshots``).
    axes : array of Axes, optional
        One axes per snapshot (extra ones are hidden); a new figure, in rows
        of at most ``max_cols`` panels, when None.
    site_size_um : float, optional
        Edge of one site; draws a scale bar in the first panel.
    max_cols : int, default 6
        Panels per row of a new figure.
    title : str, optional
        Figure title.
    legend : bool, default True
        One legend for the whole figure (below the panels when the figure
        uses constrained layout, else right of the last panel).

    Returns
    -------
    ndarray of Axes
        The axes, flattened, one per snapshot first.
    """
    n = len(snapshots)
    if axes is None:
        import matplotlib.pyplot as plt

        ncols = max(1, min(n, max_cols))
        nrows = max(1, math.ceil(n / ncols))
        _, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols, 3.3 * nrows + 0.7), squeeze=False,
                               layout="constrained")
    axes = np.atleast_1d(np.asarray(axes, dtype=object)).ravel()
    if len(axes) < n:
        raise ValueError(f"{n} snapshots need {n} axes, got {len(axes)}")
    fig = axes[0].figure
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax, snap in zip(axes, snapshots, strict=False):
        _draw_snapshot(ax, snap)
    if n and site_size_um:
        _scale_bar(axes[0], snapshots[0].tumour.shape[1], site_size_um)
    if title:
        fig.suptitle(title)
    if legend and n:
        handles: list[Any] = [Patch(facecolor=SNAPSHOT_FILL[i], edgecolor="#999999", label=SNAPSHOT_LABELS[i])
                              for i in (1, 2, 3)]
        handles += [Line2D([], [], ls="none", marker="o", ms=6, color=KIND_COLOURS[k],
                           markeredgecolor="white", markeredgewidth=0.5, label=_kind_label(k))
                    for k in KIND_KEYS]
        engine = fig.get_layout_engine()
        if engine is not None and type(engine).__name__ == "ConstrainedLayoutEngine":
            ncols = int(min(len(handles), max(2, fig.get_figwidth() // 1.75)))
            fig.legend(handles=handles, loc="outside lower center", ncols=ncols, frameon=False,
                       fontsize="small")
        else:
            axes[n - 1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
                               fontsize="small")
    return axes


#: Most pixels a lattice image has along an edge: a larger lattice is shown one site in every few (a
#: figure shows fewer pixels than that anyway), so plotting memory does not grow with the lattice.
MAX_IMAGE_EDGE = 1024


def _draw_snapshot(ax: Axes, snap: Any) -> None:
    codes = np.asarray(snap.tumour)
    ny, nx = codes.shape
    stride = max(1, math.ceil(max(ny, nx) / MAX_IMAGE_EDGE))
    shown = codes[::stride, ::stride]
    rgb = np.round(SNAPSHOT_FILL * 255).astype(np.uint8)[np.clip(shown, 0, len(SNAPSHOT_FILL) - 1)]
    ax.imshow(rgb, origin="lower", interpolation="nearest",
              extent=(-0.5, shown.shape[1] * stride - 0.5, -0.5, shown.shape[0] * stride - 0.5))
    eff = np.asarray(snap.effectors)
    # Dot size: about 1.3 sites across, never below 2.5 points.
    fig = ax.figure
    width_pt = ax.get_position().width * fig.get_figwidth() * 72.0
    diameter = max(1.3 * width_pt / max(nx, ny), 2.5)
    for k, key in enumerate(KIND_KEYS):
        yy, xx = np.nonzero(eff == k)
        if len(xx):
            ax.scatter(xx, yy, s=diameter**2, color=KIND_COLOURS[key], edgecolors="white",
                       linewidths=0.25 if diameter > 4 else 0.0, zorder=3)
    live = int(np.count_nonzero((codes == 1) | (codes == 2)))
    lost = int(np.count_nonzero(codes == 2))
    n_eff = int(np.count_nonzero(eff >= 0))
    share = f", {100 * lost / live:.0f} % MHC-I lost" if live else ""
    ax.set_title(f"day {snap.day:.4g}\n{live:,} tumour cells{share}; {n_eff:,} effectors", fontsize="small")
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("#b0b0b0")


def _scale_bar(ax: Axes, nx: int, site_size_um: float) -> None:
    length_um = _nice_length(0.25 * nx * site_size_um)
    if length_um <= 0:
        return
    sites = length_um / site_size_um
    x0, y0 = 0.04 * nx, 0.05 * nx
    ax.plot([x0, x0 + sites], [y0, y0], color="black", lw=2.5, solid_capstyle="butt", zorder=4)
    text = f"{length_um / 1000:g} mm" if length_um >= 1000 else f"{length_um:g} µm"
    ax.text(x0 + sites / 2, y0 + 0.02 * nx, text, ha="center", va="bottom", fontsize="x-small", zorder=4)


# --------------------------------------------------------------------------- a run's figures

def plot_assay(result: Any, ax: Axes | None = None, *, show_anchor: bool = True) -> Axes:
    """Specific lysis against E:T, one line per condition, with 95 % intervals and the published point.

    Parameters
    ----------
    result : cikabm.assay.AssayResult
    ax : Axes, optional
        Draw here (default: a new figure).
    show_anchor : bool
        Mark the published lysis (``result.anchor``) the potency is fitted to.
    """
    ax = ax if ax is not None else _new_axes((6.4, 4.4))
    table = result.table()
    keys = ["effectors", "blocking", "targets", "coculture"]
    for cond in result.conditions:
        sel = np.ones(len(table), bool)
        for k in keys:
            sel &= (table[k] == getattr(cond, k)).to_numpy()
        t = table[sel].sort_values("et_ratio")
        y = 100 * t["specific_lysis"].to_numpy()
        err = 100 * np.vstack([t["specific_lysis"] - t["ci_low"], t["ci_high"] - t["specific_lysis"]])
        colour = KIND_COLOURS.get(cond.effectors, TOTAL_COLOUR)
        style = {"none": "-", "nkg2d": "--", "tcr": ":"}[cond.blocking]
        ax.errorbar(t["et_ratio"], y, yerr=np.nan_to_num(err), color=colour, ls=style, marker="o", ms=4,
                    capsize=3, lw=1.6, label=cond.label)
    if show_anchor and result.anchor:
        a = result.anchor
        ax.plot([a["et_ratio"]], [100 * a["specific_lysis"]], marker="*", ms=15, color="#d4a017",
                mec="black", ls="none", zorder=5, label=f"published: {a.get('label', a['source'])}")
    ax.set_xscale("log")
    ax.set_xticks(result.et_ratios)
    ax.set_xticklabels([f"{e:g}:1" for e in result.et_ratios])
    ax.set_xlabel("effector : target ratio")
    ax.set_ylabel(f"specific lysis in {result.design.hours:g} h (%)")
    ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
    ax.grid(alpha=0.3)
    ax.set_title(f"In-silico chromium-release assay ({result.design.replicates} replicates of "
                 f"{result.design.targets} targets)", fontsize="medium")
    _legend(ax, loc="upper left")
    return ax


def save_run_figures(results: Any, out_dir: str | Path, *, dpi: int = 110) -> list[Path]:
    """Write a run's figures into ``out_dir``.

    ``populations.png``: tumour by MHC state, effectors by kind with the blood
    level, cumulative kills by kind, and the kill matrix (kind x target MHC
    state x mechanism). ``snapshots.png``: the lattice snapshots (left out
    when the run took none).

    Parameters
    ----------
    results : Results
        A finished run.
    out_dir : str or Path
        An existing directory.
    dpi : int, default 110

    Returns
    -------
    list of Path
        The files written.
    """
    out_dir = Path(out_dir)
    sc = results.scenario
    frame = results.to_frame()
    days = np.asarray(results.infusion_days, dtype=np.float64)
    shape = "x".join(str(n) for n in sc.lattice.shape)
    schedule = sc.dosing.schedule if sc.dosing.schedule != "none" else "no CIK"
    heading = f"{sc.scenario.name}: {sc.dims}D {shape} lattice, seed {results.seed}, schedule {schedule}"
    written = []

    fig = Figure(figsize=(14.0, 9.6), layout="constrained")
    axs = fig.subplots(2, 2)
    plot_populations(frame, days, ax=axs[0, 0])
    plot_effectors(frame, days, ax=axs[0, 1])
    plot_kills(frame, ax=axs[1, 0], infusion_days=days)
    plot_kill_matrix(results.kills_table(), ax=axs[1, 1])
    fig.suptitle(heading, fontsize="large")
    path = out_dir / "populations.png"
    save_png(fig, path, dpi=dpi, facecolor="white")
    written.append(path)

    snaps = list(results.snapshots)
    if snaps:
        ncols = min(len(snaps), 6)
        nrows = math.ceil(len(snaps) / ncols)
        fig = Figure(figsize=(3.3 * ncols, 3.5 * nrows + 0.9), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False)
        plane = " (middle z plane)" if sc.dims == 3 else ""
        plot_snapshots(snaps, axes, site_size_um=sc.lattice.site_size_um,
                       title=f"{sc.scenario.name}: lattice{plane}, seed {results.seed}")
        path = out_dir / "snapshots.png"
        save_png(fig, path, dpi=dpi, facecolor="white")
        written.append(path)
    return written

"""Figures of replicate virtual trials (statistics apart: see :mod:`cikabm.replicates`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from cikabm.survival import ENDPOINT_LABELS
from cikabm.trial_params import TrialScenario

#: Colours: the model's replicates, and the published value with its CI.
MODEL_COLOUR, PUBLISHED_COLOUR = "#2b6cb0", "#e4572e"


def plot_replicate_hazard_ratios(table: pd.DataFrame, ts: TrialScenario, ax: Axes | None = None) -> Axes:
    """Hazard ratio of each replicate trial (point and 95 % CI) per endpoint and comparison, beside the
    published hazard ratio and its confidence interval (the scenario's ``[[published]]``)."""
    import matplotlib.pyplot as plt

    comps = table[(table["kind"] == "comparison") & table["hr"].notna()]
    keys = list(dict.fromkeys(zip(comps["endpoint"], comps["name"], strict=True)))
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 1.2 + 0.9 * max(len(keys), 1)), layout="constrained")
    published = {(p.endpoint, f"{p.arm}_vs_{ts.trial.reference_arm}"): p for p in ts.published
                 if p.quantity == "hazard_ratio"}
    for row, key in enumerate(keys):
        g = comps[(comps["endpoint"] == key[0]) & (comps["name"] == key[1])]
        n = len(g)
        y = row + np.linspace(-0.25, 0.25, n) if n > 1 else np.array([float(row)])
        # Plain arrays: matplotlib reads a one-element Series with float(), which pandas deprecates.
        lo = (g["hr"] - g["ci_low"].fillna(g["hr"])).clip(lower=0).to_numpy(float)
        hi = (g["ci_high"].fillna(g["hr"]) - g["hr"]).clip(lower=0).to_numpy(float)
        ax.errorbar(g["hr"].to_numpy(float), y, xerr=[lo, hi], fmt="o", ms=4, color=MODEL_COLOUR, lw=1, capsize=2,
                    label="model replicates (HR, 95 % CI)" if row == 0 else None)
        p = published.get(key)
        if p is not None:
            if p.ci_low is not None and p.ci_high is not None:
                ax.fill_betweenx([row - 0.4, row + 0.4], p.ci_low, p.ci_high, color=PUBLISHED_COLOUR, alpha=0.15,
                                 lw=0)
            ax.vlines(p.value, row - 0.4, row + 0.4, color=PUBLISHED_COLOUR, lw=2,
                      ls="-" if p.role == "calibrated" else "--", label=f"published, {p.role} (95 % CI)")
    ax.axvline(1.0, color="0.5", lw=0.8, ls=":")
    ax.set_yticks(range(len(keys)), [f"{ENDPOINT_LABELS.get(e, e)}\n{name.replace('_', ' ')}" for e, name in keys])
    ax.set_xscale("log")
    ax.set_xlabel("hazard ratio (log scale)")
    ax.set_title(f"{ts.scenario.name}: {table['replicate'].nunique()} replicate trials")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="best")
    ax.invert_yaxis()
    return ax

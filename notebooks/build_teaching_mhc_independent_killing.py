"""Write notebooks/teaching_mhc_independent_killing.ipynb.

Run: ``python notebooks/build_teaching_mhc_independent_killing.py``.

The notebook is generated here with nbformat rather than edited by hand;
change the cells below and rerun this script. It writes the cells without
outputs; ``python notebooks/execute.py`` rebuilds the notebook from
:func:`build`, executes it and stores the outputs (what the repository holds).
Cell ids are fixed so that a rebuild with unchanged cells gives an identical
file.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS: list[tuple[str, str]] = [
    ("md", """\
# Why CIK cells still kill a tumour that T cells can no longer see

*A lesson with the `cikabm` simulator, for students and teachers.*

**The question.** Killer T cells (CTLs) control many tumours for a while, and
then the tumour grows anyway. One common reason: the tumour stops showing
itself to T cells by losing **MHC class I**. Cytokine-induced killer (CIK)
cells and NK cells recognise tumour cells in another way, so they should still
kill such a tumour. In this notebook we test that idea in a simulated piece of
tissue, and we check *how* the CIK cells do it by blocking their receptor
NKG2D, as Pievani and colleagues did in the lab (Blood, 2011)."""),
    ("md", """\
## The biology in plain words

* **MHC class I shows antigen to T cells.** Almost every cell puts small
  pieces of its own proteins on its surface, held by MHC class I molecules.
  A CTL checks these pieces with its T-cell receptor (TCR); when it sees a
  tumour antigen, it kills the cell. No MHC-I, no antigen on show: the CTL
  walks past.
* **Tumours lose MHC-I (immunoediting).** Tumour cells divide all the time, and
  now and then a daughter cell loses MHC-I for good (a mutation or a deleted
  gene). Under attack by CTLs these cells have an advantage: CTLs remove their
  MHC-positive neighbours and leave them alone. After a few weeks the tumour is
  made of cells that CTLs cannot see. This selection by the immune system is
  called *immunoediting*.
* **NKG2D sees stress, not MHC.** Stressed and transformed cells put *stress
  ligands* on their surface: MICA, MICB and the ULBP proteins. The receptor
  **NKG2D** on NK cells and CIK cells binds them, whatever the cell's MHC
  state. So NKG2D killing is *MHC-independent*.
* **NK cells even prefer cells without MHC-I ("missing self").** NK cells carry
  inhibitory receptors that bind MHC-I; a normal MHC level calms them down.
  A cell that has lost MHC-I takes this brake off, so NK cells kill it *more*
  readily.
* **CIK cells are a mix.** They are grown from a patient's blood cells over
  about two weeks with cytokines. The product holds three subsets:

  | subset | share of the product | how it recognises tumour cells (in this model) |
  |---|---|---|
  | CD3+CD56+ "T-NK" cells | about 36 % | NKG2D (the main killers), plus a TCR that sees this \
tumour on MHC-I in about 1 cell in 10 |
  | CD3+CD56- activated T cells | about 60 % | the same receptors, 3 times weaker per cell |
  | CD3-CD56+ NK cells | about 4 % | NKG2D, braked by MHC-I (missing self) |

  T cells are *clonal*: each one carries one TCR, and only a few clones
  recognise a given tumour. Endogenous CTLs (the patient's own tumour-specific
  T cells, not infused) recognise tumour cells only through their TCR, so only
  on MHC-I. The per-contact killing rate of the CIK cells is not guessed: it is
  fitted so that the product kills 33 % of a liver-cancer cell line in a 4-hour
  test-tube assay at 30 effector cells per target, as measured (Kim 2007);
  `cikabm assay` runs that assay in the simulator.

Every effector cell that recognises a neighbour kills it with perforin and
granzymes (fast) or, when it has run out of granules and the target carries
enough Fas, through Fas/FasL (slow)."""),
    ("md", """\
## The scenario

`scenarios/teaching_mhc_loss.toml` is a 3 mm x 3 mm slice of tissue (a
200 x 200 lattice, one tumour cell per 15 µm site) followed for 90 days. It
starts with 200 tumour cells, all with MHC-I. Each daughter cell loses MHC-I
with probability 1 % per division (high on purpose, so that the escape is
visible within weeks). CTLs arrive all the time; CIK infusions start on day 42
on the `weekly6_biweekly` schedule: within the 90 days that is six weekly
infusions (its every-two-weeks phase would start on day 91, after the run).
The cell below prints these settings
from the scenario file; we run the scenario as written. Each of the three runs
further down prints how long it took on the machine that executed this
notebook (in a fresh environment the first run also compiles the simulation
kernel; the compiled code is cached on disk, so later runs skip that)."""),
    ("code", """\
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import cikabm
from cikabm.plotting import plot_kill_matrix, plot_populations, plot_snapshots

root = Path.cwd() if (Path.cwd() / "scenarios").exists() else Path.cwd().parent
SCENARIO = root / "scenarios" / "teaching_mhc_loss.toml"
base = cikabm.load_scenario(SCENARIO)
print(base.scenario.description)
print(f"lattice {base.lattice.shape} of {base.lattice.site_size_um:g} µm sites, {base.time.duration_days:g} days, "
      f"seed {base.scenario.seed}; {base.tumour.initial_cells} tumour cells at the start; "
      f"MHC-I loss per division {base.tumour.mhc_loss_per_division}; "
      f"CIK schedule {base.dosing.schedule!r} from day {base.dosing.start_day:g}, "
      f"{base.dosing.dose_cells:.2g} cells per infusion")
print("CIK product mix: "
      f"CD3+CD56+ {base.product.share_tnk:.0%}, CD3+CD56- {base.product.share_tcell:.0%}, "
      f"CD3-CD56+ {base.product.share_nk:.0%}")
tnk, tcell = base.effectors.tnk, base.effectors.tcell
print(f"per contact, a CD3+CD56- cell kills {tnk.nkg2d_rate_per_hour / tcell.nkg2d_rate_per_hour:.1f} times "
      f"more slowly than a CD3+CD56+ cell; the TCR of {tnk.tcr_recognising_fraction:.0%} of CIK T cells "
      "recognises the tumour")"""),
    ("md", """\
## Three arms, one tumour

We run the same tissue three times:

1. **CTL only**: no CIK infusions (dosing schedule `"none"`).
2. **CTL + CIK**: the scenario as written.
3. **CTL + CIK, NKG2D blocked**: as 2, but an antibody blocks NKG2D on every
   cell (`{"killing": {"nkg2d_blocked": True}}`). This is the experiment of
   Pievani et al. (2011), who blocked NKG2D on CIK cells: their NK-like,
   MHC-unrestricted killing disappeared, while their TCR-mediated killing
   stayed.

All three runs use the same random seed. The simulator draws its random
numbers so that the same seed gives the *same tumour*, cell for cell, until
the arms differ (day 42): any difference after that is caused by the treatment,
not by chance. Changes to the scenario are given as `overrides`, nested
dictionaries with the layout of the TOML file."""),
    ("code", """\
CIK_KINDS = ["tnk", "tcell", "nk"]  # CD3+CD56+, CD3+CD56-, CD3-CD56+
ARMS = {
    "CTL only": {"dosing": {"schedule": "none"}},
    "CTL + CIK": {},
    "CTL + CIK, NKG2D blocked": {"killing": {"nkg2d_blocked": True}},
}
ARM_COLOURS = {"CTL only": "#303030", "CTL + CIK": "#1b9e77", "CTL + CIK, NKG2D blocked": "#d95f02"}
SEED = base.scenario.seed
START = base.dosing.start_day  # the first CIK infusion

results, frames = {}, {}
for arm, overrides in ARMS.items():
    scenario = cikabm.load_scenario(SCENARIO, overrides=overrides)
    started = time.perf_counter()
    # A lattice snapshot every 6 days (16 evenly spaced times over 90 days, day 0 and day 90 included).
    results[arm] = cikabm.Simulation(scenario, seed=SEED).run(progress=False, n_snapshots=16)
    frames[arm] = results[arm].to_frame()
    print(f"{arm:26s} {frames[arm].tumour_total.iloc[-1]:6,} tumour cells on day "
          f"{frames[arm].time_days.iloc[-1]:g} (the run took {time.perf_counter() - started:4.1f} s when this "
          "notebook was executed)")"""),
    ("md", """\
## 1. The tumour escapes the CTLs

Each panel shows one arm: all tumour cells (black), those with MHC-I (blue)
and those that have lost it (orange-red). Triangles on top mark the CIK
infusions. The y axes are shared, so the heights compare directly."""),
    ("code", """\
fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), sharey=True, layout="constrained")
for ax, (arm, res) in zip(axes, results.items(), strict=True):
    plot_populations(res, ax=ax)
    ax.set_title(arm, color=ARM_COLOURS[arm], fontweight="bold", pad=12)
    if ax is not axes[1]:
        ax.get_legend().remove()  # one legend is enough: the middle one has the infusion marks
    if ax is not axes[0]:
        ax.set_ylabel("")
fig.suptitle("Tumour cells by MHC class I state", fontsize="large")
plt.show()"""),
    ("md", """\
**Reading the plots.** Until day 42 the three arms are identical: one tumour.
The CTLs kill MHC-positive cells, so the blue curve stays low, while the cells
that lost MHC-I (orange-red) grow unchecked and soon make up most of the
tumour. Without CIK (left) the tumour keeps growing, made almost only of
MHC-lost cells: it has *escaped*. With CIK (middle) the MHC-lost cells are
killed after the infusions start, and CTLs and CIK cells together clear the
tumour. With NKG2D blocked (right) the CIK cells no longer touch the MHC-lost
cells: the tumour grows as if no CIK had been given, and MHC-lost cells take
over even faster.

The share of MHC-lost cells tells the same story in one picture (right), next
to the total tumour of the three arms (left):"""),
    ("code", """\
fig, (ax_n, ax_f) = plt.subplots(1, 2, figsize=(13, 4.2), layout="constrained")
for arm, f in frames.items():
    total = f["tumour_total"].to_numpy(dtype=float)
    lost_fraction = np.divide(f["tumour_mhc_lost"], total, out=np.full(len(f), np.nan), where=total > 0)
    ax_n.plot(f["time_days"], total, color=ARM_COLOURS[arm], lw=2, label=arm)
    ax_f.plot(f["time_days"], 100 * lost_fraction, color=ARM_COLOURS[arm], lw=2, label=arm)
for ax in (ax_n, ax_f):
    for day in results["CTL + CIK"].infusion_days:
        ax.axvline(day, color="#6b6b6b", lw=0.7, ls=":", zorder=1.8)  # above the grid, below the curves
    ax.set_xlabel("time (days)")
    ax.set_xlim(0, frames["CTL only"]["time_days"].iloc[-1])
    ax.grid(True, color="#e6e6e6", lw=0.6)
    ax.spines[["top", "right"]].set_visible(False)
ax_n.set_ylabel("tumour cells")
ax_n.set_ylim(bottom=0)
ax_n.yaxis.set_major_formatter("{x:,.0f}")
ax_n.set_title("All tumour cells")
ax_n.legend(loc="upper left", fontsize="small")
ax_f.set_ylabel("MHC-I-lost cells (% of the tumour)")
ax_f.set_ylim(0, 102)
ax_f.set_title("Share of tumour cells that lost MHC class I\\n(dotted lines: CIK infusions; "
               "no line where no tumour is left)", fontsize="medium")
plt.show()"""),
    ("md", """\
## 2. Who killed whom

Every kill in the simulation is recorded with the kind of effector cell, the
MHC state of the victim and the mechanism. The *kill matrix* shows, for each
effector kind, kills of MHC-positive cells (blue) and MHC-lost cells
(orange-red), split into perforin/granzyme (solid) and Fas/FasL (hatched), with
the share of each kind's kills that hit MHC-lost cells under its name. Look
at the CTL bars in every arm, and at what happens to the CIK bars when NKG2D is
blocked."""),
    ("code", """\
fig, axes = plt.subplots(1, 3, figsize=(17, 5.6), layout="constrained")
for ax, (arm, res) in zip(axes, results.items(), strict=True):
    plot_kill_matrix(res.kills_table(), ax=ax)
    ax.set_title(arm, color=ARM_COLOURS[arm], fontweight="bold", pad=12)
    # Three panels side by side are narrow: break the share line of each label in two.
    labels = [t.get_text().replace(" on MHC-I lost", "\\non MHC-I lost") for t in ax.get_xticklabels()]
    ax.set_xticks(ax.get_xticks(), labels, fontsize="small")
    if ax is not axes[0]:
        ax.get_legend().remove()
        ax.set_ylabel("")
top = max(ax.get_ylim()[1] for ax in axes)
for ax in axes:
    ax.set_ylim(0, 1.25 * top)  # the same scale in every panel, with room for the legend
fig.suptitle("Who killed whom over 90 days: effector kind x target MHC class I state x mechanism",
             fontsize="large")
plt.show()"""),
    ("md", """\
**Reading the plots.** CTLs never kill an MHC-lost cell: they need MHC-I to
see their target. The three CIK subsets, in contrast, kill mostly MHC-lost
cells, simply because by day 42 most tumour cells *are* MHC-lost and NKG2D
does not care. The NK cells are few (4 % of the product); MHC-I brakes
them (missing self), so they prefer MHC-lost cells (in this model the
brake is partial: exercise 3 shows how much it matters). With NKG2D blocked,
NK cells kill nothing; the CD3+CD56+ and CD3+CD56- cells whose TCR recognises
the tumour still kill, but only MHC-positive cells, like extra CTLs: they even
speed up the takeover by MHC-lost cells. The MHC-independent killing of CIK
cells goes through NKG2D.

## Kills per cell

The bars above count kills, so a subset that arrives in large numbers looks
important. Per cell that arrived, the subsets differ more: a CD3+CD56+ cell
kills more than a CD3+CD56- cell, and with NKG2D blocked only the TCR part
(blue: MHC-positive targets) is left."""),
    ("code", """\
from cikabm.plotting import kills_per_cell, plot_kills_per_cell

fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True, layout="constrained")
for ax, arm in zip(axes, ["CTL + CIK", "CTL + CIK, NKG2D blocked"], strict=True):
    plot_kills_per_cell(frames[arm], ax=ax)
    ax.set_title(arm, color=ARM_COLOURS[arm], fontweight="bold", pad=12)
plt.show()
per_cell = {arm: kills_per_cell(frames[arm]) for arm in ("CTL + CIK", "CTL + CIK, NKG2D blocked")}
per_cell["CTL + CIK, NKG2D blocked"].round(3)"""),
    ("md", """\
## 3. The tissue

Snapshots of the lattice: tumour cells coloured by MHC state, effector cells
as dots coloured by kind. Each column is an arm, each row a day: the first
infusion (day 42, the same tissue in all arms), day 60 and the end."""),
    ("code", """\
SNAP_DAYS = (42, 60, 90)
fig, grid = plt.subplots(len(SNAP_DAYS), len(results), figsize=(10.5, 11.2), layout="constrained")
for j, (arm, res) in enumerate(results.items()):
    by_day = {round(s.day): s for s in res.snapshots}
    plot_snapshots([by_day[d] for d in SNAP_DAYS], grid[:, j], legend=j == 0,
                   site_size_um=res.scenario.lattice.site_size_um)
    grid[0, j].set_title(f"{arm}\\n{grid[0, j].get_title()}", fontsize="small")
fig.suptitle("The lattice (3 mm x 3 mm) in the three arms", fontsize="large")
plt.show()"""),
    ("md", """\
In the CTL-only arm the orange-red (MHC-lost) cells fill the tumour. With CIK
the infused cells arrive from the blood all over the tissue (coloured dots;
in this scenario they are not guided towards the tumour), and those that meet
the tumour kill its cells, MHC-lost or not. With NKG2D blocked the same CIK
cells are there, but the tumour does not shrink: it is all orange-red.

## 4. The key numbers

For each arm: the tumour on day 90, the share of MHC-lost cells on day 42 and
day 90 (`NaN`: no tumour left), kills by CTLs, and CIK kills from the first
infusion on, with how many of them hit MHC-lost cells."""),
    ("code", """\
def kills(frame, kinds, mhc_lost_only=False):
    \"\"\"Cumulative kills over time by the given effector kinds (optionally only of MHC-lost cells).\"\"\"
    if mhc_lost_only:
        cols = [f"kills_{mech}_{k}_mhc_lost" for mech in ("perforin", "fas") for k in kinds]
    else:
        cols = [f"kills_{k}" for k in kinds]
    return frame[cols].sum(axis=1).to_numpy()


def key_numbers(f):
    at_start = int(np.searchsorted(f["time_days"], START, side="right")) - 1  # last record up to day 42
    total = f["tumour_total"].to_numpy()
    share = np.divide(f["tumour_mhc_lost"].to_numpy(), total, out=np.full(len(f), np.nan), where=total > 0)
    cik = kills(f, CIK_KINDS)
    cik_lost = kills(f, CIK_KINDS, mhc_lost_only=True)
    cik_after = int(cik[-1] - cik[at_start])
    cik_lost_after = int(cik_lost[-1] - cik_lost[at_start])
    return {
        "tumour cells, day 42": int(total[at_start]),
        "tumour cells, day 90": int(total[-1]),
        "MHC-I-lost share, day 42": round(share[at_start], 3),
        "MHC-I-lost share, day 90": round(share[-1], 3),
        "CTL kills": int(kills(f, ["ctl"])[-1]),
        "CTL kills of MHC-I-lost cells": int(kills(f, ["ctl"], mhc_lost_only=True)[-1]),
        "CIK kills after day 42": cik_after,
        "CIK kills of MHC-I-lost cells after day 42": cik_lost_after,
        "share of CIK kills on MHC-I-lost cells": round(cik_lost_after / cik_after, 3) if cik_after else np.nan,
    }


# One column per arm; astype(object) keeps the counts as integers next to the shares.
numbers = pd.DataFrame.from_dict({arm: key_numbers(f) for arm, f in frames.items()}, orient="index")
numbers = numbers.astype(object).T
numbers"""),
    ("md", """\
## 5. Checking the teaching claims

The cell below turns the lesson into checks on the numbers just computed. The
notebook runs in the project's test suite, so if a change to the model ever
stopped it from showing these effects, the tests would fail here. The limits
leave a wide margin around the values of this seed."""),
    ("code", """\
ctl_only, cik, blocked = (numbers[arm] for arm in ARMS)

# Same tumour in every arm until the first infusion (same seed, common random numbers).
before = frames["CTL only"]["time_days"] <= START
for arm in ARMS:
    assert frames[arm].loc[before, "tumour_total"].equals(frames["CTL only"].loc[before, "tumour_total"]), arm

# CTLs are MHC-restricted: not a single kill of an MHC-lost cell, in any arm.
for arm in ARMS:
    assert numbers.loc["CTL kills of MHC-I-lost cells", arm] == 0, arm
    assert numbers.loc["CTL kills", arm] > 1000, arm  # ... although they kill plenty of MHC-positive cells

# Under CTLs alone the MHC-lost cells take over: none at the start, a fifth or more by
# day 42, most of the tumour by day 90, and the tumour keeps growing.
assert frames["CTL only"]["tumour_mhc_lost"].iloc[0] == 0
assert ctl_only["MHC-I-lost share, day 42"] > 0.2
assert ctl_only["MHC-I-lost share, day 90"] > 0.5
assert ctl_only["tumour cells, day 90"] > 2 * ctl_only["tumour cells, day 42"]  # the tumour has escaped

# With CIK: many CIK kills of MHC-lost cells after day 42, and the tumour ends far smaller.
assert cik["CIK kills of MHC-I-lost cells after day 42"] > 1000
assert cik["tumour cells, day 90"] < 0.5 * ctl_only["tumour cells, day 90"]

# NKG2D blocked: not one CIK kill of an MHC-lost cell (the TCR needs MHC-I, NK cells
# only have NKG2D), but the TCR killing of MHC-positive cells by CD3+CD56+ cells remains;
# the benefit is gone.
assert blocked["CIK kills of MHC-I-lost cells after day 42"] == 0
tnk_blocked = per_cell["CTL + CIK, NKG2D blocked"].loc["tnk"]
assert tnk_blocked["mhc_present"] > 0.1 and tnk_blocked["mhc_lost"] == 0
assert blocked["tumour cells, day 90"] > 0.5 * ctl_only["tumour cells, day 90"]

# Per cell, CD3+CD56+ cells kill more than CD3+CD56- cells.
open_ = per_cell["CTL + CIK"]
assert open_.loc["tnk", ["mhc_present", "mhc_lost"]].sum() > open_.loc["tcell", ["mhc_present", "mhc_lost"]].sum()

print("All teaching claims hold for seed", SEED)"""),
    ("md", """\
## Summary

* CTLs need MHC class I. They select the tumour cells that lost it, and the
  tumour escapes: it keeps growing, made of cells CTLs cannot see.
* CIK cells kill these cells anyway, because their receptor NKG2D recognises
  stress ligands (MICA/B, ULBP), not MHC. NK cells even kill MHC-lost cells
  more readily (missing self).
* Blocking NKG2D removes this MHC-independent killing: what is left of the CIK
  product (the TCR of the few T-cell clones that recognise the tumour) behaves
  like more CTLs and cannot touch the escaped tumour.

This is a model. The CIK cells' killing per contact is fitted to a measured
test-tube assay, but the tissue numbers (how many CTLs and CIK cells reach the
tumour, the 1 % MHC loss per division) are set by hand to make the effect
visible in a 90-day run. It shows a mechanism, not a clinical prediction.

## Exercises

Each exercise changes one thing; copy the loop of section "Three arms, one
tumour" with your own `overrides` (or pass them to `cikabm.load_scenario`), and
predict the result before you run it.

1. **How fast is immunoediting?** Set `{"tumour": {"mhc_loss_per_division": 0.001}}`
   (or `0`). Do CTLs alone control the tumour now? When does the escape start?
2. **Which CIK subset matters?** Change the product mix, e.g.
   `{"product": {"share_tnk": 0.1, "share_tcell": 0.86, "share_nk": 0.04}}` or an
   NK-rich product `{"product": {"share_tnk": 0.36, "share_tcell": 0.34, "share_nk": 0.30}}`
   (the three shares must add up to 1). Which subset's kills per cell change most?
3. **Missing self.** Set `{"effectors": {"nk": {"missing_self_weight": 0.0}}}`.
   Does the NK share of kills on MHC-lost cells change?
4. **Dose.** Halve or double `{"dosing": {"dose_cells": ...}}` (the scenario
   uses 6.4e9 cells per infusion). Is there a dose below which the tumour
   escapes the CIK cells too?
5. **Timing.** Start the infusions earlier, e.g. `{"dosing": {"start_day": 14.0}}`,
   before the MHC-lost cells have taken over, or try the schedules `"lee2015"`
   and `"choi2018"` (`{"dosing": {"schedule": "choi2018"}}`). Earlier, or more
   spread out?
6. **Chance.** Rerun the three arms with other seeds (`cikabm.Simulation(scenario, seed=2)`).
   Which conclusions hold for every seed?

A run of this scenario can also be made from the command line, with all its
figures: `cikabm run scenarios/teaching_mhc_loss.toml --out results/teaching`.

## The live version

To turn these knobs with sliders and watch the lattice change as the
simulation runs, start the browser app (a Mesa/SolaraViz app; it needs the
optional dependencies):

```
pip install "cikabm[teach]"
cikabm teach
```"""),
]


def build() -> nbformat.NotebookNode:
    """The notebook, cells in order, without outputs and with fixed cell ids."""
    nb = new_notebook()
    nb.cells = [
        new_markdown_cell(src, id=f"teach-{i:02d}") if kind == "md" else new_code_cell(src, id=f"teach-{i:02d}")
        for i, (kind, src) in enumerate(CELLS)
    ]
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


if __name__ == "__main__":
    path = Path(__file__).resolve().parent / "teaching_mhc_independent_killing.ipynb"
    nbformat.write(build(), path)
    print(f"wrote {path}")

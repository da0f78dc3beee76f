"""Write notebooks/dosing_schedules.ipynb (run: ``python notebooks/build_dosing_schedules.py``).

The notebook is generated here with nbformat rather than edited by hand;
change the cells below and rerun this script.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS: list[tuple[str, str]] = [
    ("md", """\
# Comparing CIK dosing schedules

Which schedule of CIK infusions delays recurrence most? This notebook runs one
virtual cohort of resected-HCC patients (the calibrated Lee 2015 cohort of
`scenarios/hcc_schedule_comparison.toml`) under several schedules and compares
them. Every virtual patient is simulated in every arm with the same random
streams (**common random numbers**): the same patient has the same
micrometastatic foci in every arm until the treatment differs, so differences
between arms come from the schedule, not from who happened to be in which arm.

The command-line equivalent, for the full 230-patient cohort, is

```
cikabm compare scenarios/hcc_schedule_comparison.toml --out results/schedules
```

Here we run a reduced cohort in this process so that the notebook takes about
a minute; expect wide confidence intervals."""),
    ("code", """\
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from cikabm.compare import (
    arm_infusion_days,
    plot_blood_levels,
    plot_comparison,
    plot_forest,
    run_comparison,
)
from cikabm.scenario import load_scenario
from cikabm.survival import plot_km
from cikabm.trial_params import TrialScenario

root = Path.cwd() if (Path.cwd() / "scenarios").exists() else Path.cwd().parent
ts = load_scenario(root / "scenarios" / "hcc_schedule_comparison.toml", model=TrialScenario)
print(ts.scenario.description)
treated = [a.schedule != "none" for a in ts.arms]
pd.DataFrame([{"arm": a.name, "schedule": a.schedule, "cells per infusion": a.dose_cells if t else None,
               "infusions": len(arm_infusion_days(a)),
               "last infusion (week after day 0)": arm_infusion_days(a).max() / 7 if t else None}
              for a, t in zip(ts.arms, treated, strict=True)])"""),
    ("md", """\
## What the schedules put in the blood

Each infusion adds a two-part exponential to the blood level (a fast part with
a half-life of days and a persistent part with a half-life of weeks), and CIK
cells home into a focus at a rate proportional to that level. Both treated
schedules give 16 infusions of the same size; the design-card schedule
(`weekly6_biweekly`) gives them all within 24 weeks, Lee 2015 spreads them over
59 weeks. So the design-card schedule puts more cells in the blood early and
none after week 27 (counted from day 0; the first infusion is on day 14);
Lee 2015 keeps a lower level going for more than a year.
The half-dose arm has the Lee 2015 shape at half the height. The area under
each curve (AUC) in the legend is the same for equal doses: the schedules
differ in *when*, not in *how much*."""),
    ("code", """\
fig, ax = plt.subplots(figsize=(8, 3.8))
plot_blood_levels(ts, ax=ax)
ax.axvline(ts.arms[1].start_day / 7, color="grey", lw=0.6, ls=":")
plt.show()"""),
    ("md", """\
## Run the comparison

`run_comparison` builds the arms from schedule names (here: no CIK, Lee 2015 and
the design-card schedule; a spec like `lee2015*0.5` halves the dose and
`choi2018x2` repeats a schedule), runs them with `cikabm.trial.run_trial`
(`workers=1`: in this process; leave it out to use every core through Dask)
and writes the trial files plus `comparison.csv`, `subgroups.csv` and
`comparison.png` to the output directory. New arms take the start day and the
dose of the scenario's first treated arm."""),
    ("code", """\
PATIENTS = 40  # the full cohort is ts.trial.patients = 230
out = Path(tempfile.mkdtemp(prefix="cikabm_schedules_"))
started = time.perf_counter()
cmp = run_comparison(ts, out, ["none", "lee2015", "weekly6_biweekly"], patients=PATIENTS, workers=1,
                     progress=False)
print(f"{PATIENTS} patients x {len(cmp.scenario.arms)} arms in {time.perf_counter() - started:.0f} s; "
      f"files: {sorted(p.name for p in out.iterdir())}")
columns = ["arm", "n", "events", "median_months", "median_ci_low", "median_ci_high", "hr", "hr_ci_low",
           "hr_ci_high", "logrank_p", "rmst_months", "infusions_mean"]
cmp.table[columns].round(2)"""),
    ("md", """\
**Reading the table.** One row per arm, all on the same patients. `median_months`
is the Kaplan-Meier median RFS with its 95 % CI (`NaN`: not reached, or the CI
is open-ended); `hr` is the Cox hazard ratio against the reference arm
(`control`) with its 95 % CI, below 1 when the arm delays recurrence;
`logrank_p` the two-sided log-rank p. Because the arms share their patients,
these p-values and intervals (computed as for independent arms) are
conservative. `rmst_months` (restricted mean RFS up to the shortest follow-up)
is more stable than the median in a small cohort. `infusions_mean` counts
infusions received *before recurrence or censoring*, so it is lower than the
16 planned wherever patients recur during treatment, more so for the
long Lee 2015 schedule."""),
    ("code", """\
fig, ax = plt.subplots(figsize=(8, 6))
plot_km(cmp.patients, cmp.endpoint, reference_arm="control", ax=ax)
fig.tight_layout()
plt.show()"""),
    ("code", """\
plot_comparison(cmp.table)
plt.show()"""),
    ("md", """\
## Subgroups

`cmp.subgroups` gives the effect of each arm against control within

* a baseline covariate, **primary tumour larger than 5 cm** (more residual foci), and
* **infusions received** (0, 1-8, 9-16, 17+). This is not a baseline covariate:
  each patient's group is what they received in the treated arm, compared with
  the same patients in the control arm. Patients who recur early receive few
  infusions, so the low groups collect the fast tumours: read these rows as a
  description of who got what, not as a dose-response.

With a few dozen patients most subgroup intervals are very wide; run the full
cohort with the CLI before drawing conclusions."""),
    ("code", """\
sub = cmp.subgroups
sub[["by", "level", "arm", "n", "events", "events_ref", "median_months", "median_ref_months", "hr",
     "hr_ci_low", "hr_ci_high", "logrank_p"]].round(2)"""),
    ("code", """\
size = sub[sub["by"] == "primary_size_gt_5cm"].assign(
    label=lambda d: d["arm"] + ", >5 cm: " + d["level"].astype(str))
fig, ax = plt.subplots(figsize=(7, 3))
plot_forest(size, ax=ax, label="label")
ax.set_title("Hazard ratio vs control by primary tumour size", loc="left", fontweight="bold")
plt.show()"""),
    ("md", """\
## Does one schedule win? Patient by patient

Common random numbers allow a paired look: the same patient's RFS under two
schedules. A patient without foci, or whose foci escape whatever the
schedule, has the same RFS in both arms; the others show which schedule
delayed *their* recurrence.

Timing could matter. A focus starts as a handful of cells; CIK
cells that reach it while it is that small can clear it, and a cleared focus
never comes back. A focus that escapes still needs months to grow from
`adjuvant.escape_physical_cells` to detection (about 1e9 cells), so escapes
happen long before the recurrences we see. Below: when the first detected
focus escaped in the control arm, and how many foci escaped per patient in
each arm (counted up to the first detection)."""),
    ("code", """\
import numpy as np

from cikabm.trial_params import DAYS_PER_MONTH

pts = cmp.patients
paired = pts.pivot(index="patient_id", columns="arm", values="rfs_months")
diff = paired["weekly6_biweekly"] - paired["lee2015"]
print(f"weekly6_biweekly vs lee2015, same patients: longer RFS for {(diff > 1e-9).sum()}, "
      f"shorter for {(diff < -1e-9).sum()}, equal for {(diff.abs() <= 1e-9).sum()} of {len(diff)}")

adj = ts.adjuvant
control = pts[(pts["arm"] == "control") & pts["recurrence_months"].notna()]
growth = control["doubling_time_days"] * np.log2(adj.detection_cells / adj.escape_physical_cells) / DAYS_PER_MONTH
escape = control["recurrence_months"] - growth
last = {a.name: (a.start_day + arm_infusion_days(a).max()) / DAYS_PER_MONTH
        for a in cmp.scenario.arms if a.schedule != "none"}
print(f"control recurrences: {len(control)}, median at {control['recurrence_months'].median():.1f} months; "
      f"escape to detection takes {growth.median():.1f} months (median), so the focus escaped at "
      f"{escape.median():.1f} months (median)")
for arm, month in last.items():
    print(f"  {arm}: last infusion at month {month:.1f}; {np.mean(escape <= month):.0%} of control escapes before")
pts.groupby("arm", sort=False)[["n_foci", "foci_escaped", "infusions_received"]].mean().round(2)"""),
    ("md", """\
**Summary.** The treated schedules deliver the same 16 infusions of the same
size; they differ in timing. For the full calibrated cohort (230 patients,
seed 2015), `cikabm compare scenarios/hcc_schedule_comparison.toml --out results/schedules`
gave median RFS 30.0 months (control), 47.3 (Lee 2015; HR 0.61, 95 % CI
0.48-0.78), 47.3 (weekly x6 then every 2 weeks; HR 0.62, 0.49-0.78) and 33.5
(Lee 2015 at half dose; HR 0.83, 0.66-1.04). The two full-dose schedules are
indistinguishable on the whole cohort: front-loading clears slightly more foci
(0.80 against 0.83 escaped foci per patient; 55 and 57 CIK cells reach a
patient's foci on average) and gives 63 patients a longer RFS against 40 a
shorter one (127 equal), but the medians and hazard ratios coincide. Halving
the dose halves the homing rate at every time and costs most of the effect: in
this model the number of CIK cells that reach a focus, not their timing, sets
the benefit. This is a model prediction, not a trial result; it rests on the
in vitro potency and on the homing and foci parameters fitted to one trial."""),
]


def build() -> nbformat.NotebookNode:
    """The notebook, cells in order."""
    nb = new_notebook()
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in CELLS]
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


if __name__ == "__main__":
    path = Path(__file__).resolve().parent / "dosing_schedules.ipynb"
    nbformat.write(build(), path)
    print(f"wrote {path}")

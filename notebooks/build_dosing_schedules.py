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

Here we run the same full cohort in this process, on three of its arms (about
half a minute)."""),
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
PATIENTS = ts.trial.patients  # the full cohort: 230 patients, about half a minute
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

Even with 230 patients most subgroup intervals are wide; a subgroup with
fewer than 20 patients in an arm or 10 events is reported as too few, with no
hazard ratio or p-value."""),
    ("code", """\
sub = cmp.subgroups
sub[["by", "level", "arm", "n", "events", "events_ref", "median_months", "median_ref_months", "hr",
     "hr_ci_low", "hr_ci_high", "logrank_p", "note"]].round(2)"""),
    ("code", """\
size = sub[sub["by"] == "primary_size_gt_5cm"].assign(
    label=lambda d: d["arm"] + ", >5 cm: " + d["level"].astype(str))
fig, ax = plt.subplots(figsize=(7, 3))
plot_forest(size, ax=ax, label="label")
ax.set_title("Hazard ratio vs control by primary tumour size", loc="left", fontweight="bold")
plt.show()"""),
    ("md", """\
## Does one schedule win? Patient by patient

Common random numbers allow a paired look: the same patient's course under
two schedules. `cikabm.mechanism.mechanism_breakdown` counts, against the
control arm, the patients a schedule **cures** (they recur in the control arm
within follow-up and not under CIK), those it only **delays** (they recur in
both; the median delay), and splits both by the source of the control arm's
recurrence: micrometastases of the primary (the early source) or de novo
tumours of the diseased liver (the late one). The same columns are in the
comparison table and `comparison.csv`."""),
    ("code", """\
from cikabm.mechanism import mechanism_breakdown

pts = cmp.patients
rows = {arm: mechanism_breakdown(pts, arm, "control") for arm in pts["arm"].unique() if arm != "control"}
pd.DataFrame(rows).T[["recurred_ref", "cured", "both_recur", "median_delay_months", "cured_micrometastasis",
                      "cured_de_novo", "cancer_deaths_ref", "cancer_deaths_arm"]]"""),
    ("md", """\
Why so few delays and so many all-or-nothing outcomes? The E:T ratio falls as
a lesion grows (effectors enter through its surface): CIK cells clear a lesion
that is still small while they are in the blood, and barely touch one that is
already large. Which lesions were small during the infusions is the question;
below, the paired RFS of the two full-dose schedules."""),
    ("code", """\
paired = pts.pivot(index="patient_id", columns="arm", values="rfs_months")
diff = paired["weekly6_biweekly"] - paired["lee2015"]
print(f"weekly6_biweekly vs lee2015, same patients: longer RFS for {(diff > 1e-9).sum()}, "
      f"shorter for {(diff < -1e-9).sum()}, equal for {(diff.abs() <= 1e-9).sum()} of {len(diff)}")
pts.groupby("arm", sort=False)[["lesions_micrometastasis", "lesions_de_novo", "cik_kills",
                               "infusions_received"]].mean().round(2)"""),
    ("md", """\
**Summary.** The treated schedules deliver the same 16 infusions of the same
size; they differ in timing. For the full calibrated cohort (230 patients,
seed 2015), `cikabm compare scenarios/hcc_schedule_comparison.toml --out results/schedules`
gave median RFS 26.1 months (control), 43.0 (Lee 2015; HR 0.70, 95 % CI
0.55-0.89), 51.2 (weekly x6 then every 2 weeks; HR 0.66, 0.52-0.84) and 34.7
(Lee 2015 at half dose; HR 0.78, 0.62-0.99). The mechanism columns say why: of
the control arm's 137 recurrences, Lee 2015 cures 31, front-loading 37 and the
half dose 23, nearly all of them micrometastases (27, 32 and 20); the patients
who recur in both arms are delayed a median of 3.0, 3.4 and 1.4 months.
Front-loading puts more CIK cells into the lesions while the micrometastases
are still small; halving the dose halves the homing at every time and loses a
quarter of the cures. Repeating the Lee 2015 schedule (`lee2015x2`, 32
infusions, `--schedules none,lee2015,lee2015x2`) gives HR 0.62 (0.49-0.80): 44
cures instead of 31, and a median delay of 2.7 months, so the extra infusions
work through cures of lesions that are still small in the second year, not
through longer delays. These are model predictions, not trial results; they
rest on the in vitro potency and on the burden, de novo rate and homing fitted
to one trial"""),
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

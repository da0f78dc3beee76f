"""Write notebooks/dosing_schedules.ipynb (run: ``python notebooks/build_dosing_schedules.py``).

The notebook is generated here with nbformat rather than edited by hand;
change the cells below and rerun this script. It writes the cells without
outputs; ``python notebooks/execute.py`` rebuilds the notebook from
:func:`build`, executes it and stores the outputs (what the repository holds).
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

Here we run the same full cohort and the same four arms in this process; the
run prints how long it took on the machine that executed this notebook."""),
    ("code", """\
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown

from cikabm.compare import (
    plot_blood_levels,
    plot_comparison,
    plot_forest,
    run_comparison,
)
from cikabm.scenario import load_scenario
from cikabm.schedules import dosing_days
from cikabm.survival import plot_km
from cikabm.trial_params import TrialScenario

root = Path.cwd() if (Path.cwd() / "scenarios").exists() else Path.cwd().parent
ts = load_scenario(root / "scenarios" / "hcc_schedule_comparison.toml", model=TrialScenario)
print(ts.scenario.description)
treated = [a.schedule != "none" for a in ts.arms]
pd.DataFrame([{"arm": a.name, "schedule": a.schedule, "cells per infusion": a.dose_cells if t else None,
               "infusions": len(dosing_days(a)),
               "first infusion (day)": dosing_days(a).min() if t else None,
               "last infusion (week after day 0)": dosing_days(a).max() / 7 if t else None,
               "weeks from first to last infusion": np.ptp(dosing_days(a)) / 7 if t else None}
              for a, t in zip(ts.arms, treated, strict=True)])"""),
    ("md", """\
## What the schedules put in the blood

Each infusion adds a two-part exponential to the blood level (a fast part with
a half-life of days and a persistent part with a half-life of weeks), and CIK
cells home into a focus at a rate proportional to that level. The full-dose
schedules give the same number of infusions of the same size (table above);
the design-card schedule (`weekly6_biweekly`) gives them in less than half the
weeks that Lee 2015 takes. So the design-card schedule puts more cells in the
blood early and gives none after its last infusion, while Lee 2015 keeps a
lower level going for more than a year (weeks counted from day 0, the day of
resection). The half-dose arm has the Lee 2015 shape at half the height. The area under
each curve (AUC) in the legend is the same for equal doses: the schedules
differ in *when*, not in *how much*."""),
    ("code", """\
fig, ax = plt.subplots(figsize=(8, 3.8))
plot_blood_levels(ts, ax=ax)
ax.axvline(ts.arms[1].start_day / 7, color="grey", lw=0.6, ls=":")
plt.show()"""),
    ("md", """\
## Run the comparison

`run_comparison` builds the arms from schedule specs (here the scenario's four:
no CIK, Lee 2015, the design-card schedule, and `lee2015*0.5`, Lee 2015 at half
the dose; `choi2018x2` would repeat a schedule), runs them with `cikabm.trial.run_trial`
(`workers=1`: in this process; leave it out to use every core through Dask)
and writes the trial files plus `comparison.csv`, `subgroups.csv` and
`comparison.png` to the output directory. New arms take the start day and the
dose of the scenario's first treated arm."""),
    ("code", """\
PATIENTS = ts.trial.patients  # the full cohort
out = Path(tempfile.mkdtemp(prefix="cikabm_schedules_"))  # only the file names are shown below
started = time.perf_counter()
cmp = run_comparison(ts, out, ["none", "lee2015", "weekly6_biweekly", "lee2015*0.5"], patients=PATIENTS,
                     workers=1, progress=False)
print(f"{PATIENTS} patients x {len(cmp.scenario.arms)} arms; wall time when this notebook was executed: "
      f"{time.perf_counter() - started:.0f} s")
print(f"files written: {', '.join(sorted(p.name for p in out.iterdir()))}")


def p_value(p: float | None) -> float:
    \"\"\"Two significant digits: rounding to 2 decimals would show p = 0.0004 as 0.0.\"\"\"
    return np.nan if pd.isna(p) else float(f"{p:.2g}")


columns = ["arm", "n", "events", "median_months", "median_ci_low", "median_ci_high", "hr", "hr_ci_low",
           "hr_ci_high", "logrank_p", "rmst_months", "infusions_mean"]
cmp.table[columns].round(2).assign(logrank_p=cmp.table["logrank_p"].map(p_value))"""),
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
     "hr_ci_low", "hr_ci_high", "logrank_p", "note"]].round(2).assign(logrank_p=sub["logrank_p"].map(p_value))"""),
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
## Summary

The treated schedules deliver the same number of infusions; the full-dose ones
differ only in timing, the half-dose one only in size. The cell below writes
the results of this run in words (the cohort and seed of
`cikabm compare scenarios/hcc_schedule_comparison.toml --out results/schedules`)."""),
    ("code", """\
t = cmp.table.set_index("arm")
mech = pd.DataFrame(rows).T  # the patient-by-patient counts of the cell above, one row per treated arm
treated_arms = list(mech.index)


def median_rfs(arm: str) -> str:
    m = t.loc[arm, "median_months"]
    return "not reached" if pd.isna(m) else f"{m:.1f} months"


def effect(arm: str) -> str:
    r, c = t.loc[arm], mech.loc[arm]
    delay = "" if pd.isna(c["median_delay_months"]) else f", by a median of {c['median_delay_months']:.1f} months"
    return (f"* `{arm}`: median RFS {median_rfs(arm)}, HR {r['hr']:.2f} (95 % CI {r['hr_ci_low']:.2f}-"
            f"{r['hr_ci_high']:.2f}); cures {c['cured']} ({c['cured_micrometastasis']} of them micrometastases), "
            f"delays the {c['both_recur']} patients who recur in both arms{delay}; "
            f"cancer deaths {c['cancer_deaths_arm']} (control: {c['cancer_deaths_ref']})")


Markdown(f"**This run** ({PATIENTS} patients, seed {cmp.scenario.scenario.seed}; RFS). Control: median RFS "
         f"{median_rfs('control')}, {mech['recurred_ref'].iloc[0]} recurrences within follow-up.\\n\\n"
         + "\\n".join(effect(arm) for arm in treated_arms))"""),
    ("md", """\
Front-loading (`weekly6_biweekly`) puts more CIK cells into the lesions while
the micrometastases are still small, and cures more of them than Lee 2015;
halving the dose halves the homing at every time and loses cures. Most cures
are of micrometastases. The next cell checks these statements on the
numbers above, so that the notebook fails, rather than mislead, if a change to
the model ever overturns them.

Does repeating the schedule help? Add `lee2015x2` (the Lee 2015 schedule twice)
to the specs of `run_comparison` above, or run
`cikabm compare scenarios/hcc_schedule_comparison.toml --out results/lee2015x2 --schedules none,lee2015,lee2015x2`,
and see whether the extra infusions work through more cures or through longer
delays.

These are model predictions, not trial results; they rest on the in vitro
potency and on the burden, de novo rate and homing fitted to one trial."""),
    ("code", """\
cured = mech["cured"]
assert cured["weekly6_biweekly"] > cured["lee2015"] > cured["lee2015*0.5"], cured
assert (mech["cured_micrometastasis"] > 0.5 * cured).all(), mech[["cured", "cured_micrometastasis"]]
assert (t.loc[treated_arms, "hr"] < 1).all()
print("The statements above hold for this run.")"""),
]


def build() -> nbformat.NotebookNode:
    """The notebook, cells in order, without outputs and with fixed cell ids.

    Fixed ids (nbformat would draw random ones) make a rebuild with unchanged cells give an identical
    file, so that ``python notebooks/execute.py`` shows only real changes in the diff.
    """
    nb = new_notebook()
    nb.cells = [
        new_markdown_cell(src, id=f"sched-{i:02d}") if kind == "md" else new_code_cell(src, id=f"sched-{i:02d}")
        for i, (kind, src) in enumerate(CELLS)
    ]
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


if __name__ == "__main__":
    path = Path(__file__).resolve().parent / "dosing_schedules.ipynb"
    nbformat.write(build(), path)
    print(f"wrote {path}")

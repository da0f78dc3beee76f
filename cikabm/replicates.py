"""Replicate virtual trials: the same trial run on new cohorts, and the distribution of its results.

``cikabm trial SCENARIO --replicates N --out DIR`` runs ``N`` trials of the
scenario's size, replicate ``r`` on the cohort of seed ``scenario.seed + r``
(replicate 0 is the plain trial), each into ``DIR/replicate_<r>`` (resumable
as any trial), then writes

* ``DIR/replicates.csv``: one row per replicate, endpoint and arm (median,
  its CI, events) or comparison (hazard ratio and CI, two-sided log-rank p,
  one-sided p in favour of the treated arm);
* ``DIR/replicates.json``: per endpoint, the mean, median and 2.5-97.5 %
  range over replicates of each arm's median and landmark survival and each
  comparison's hazard ratio, and the in-silico power: the share of replicates whose one-sided
  log-rank test at ``alpha`` (Lee 2015: 0.05) favours the treated arm;
* ``DIR/hr_replicates.png``: the hazard ratios over replicates against the
  published value and its confidence interval (the scenario's ``[[published]]``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cikabm.io import atomic_write_json, provenance, save_png, to_jsonable, writes_into_out
from cikabm.trial_params import TrialScenario

#: What ``cikabm trial --replicates`` writes into its output folder (see :data:`cikabm.trial.TRIAL_OUTPUTS`).
REPLICATE_OUTPUTS = ("replicate_[0-9][0-9][0-9]", "replicates.csv", "replicates.json", "hr_replicates.png", "*.tmp",
                     "*.tmp.png")
#: One-sided significance level of the in-silico power (Lee 2015: one-sided log-rank at 0.05).
ALPHA_ONE_SIDED = 0.05


def replicate_seeds(seed: int, n: int) -> list[int]:
    """Seeds of ``n`` replicate cohorts (the first is the trial's own)."""
    return [seed + r for r in range(n)]


@dataclass
class ReplicateRun:
    """Where the replicates are, their table and the summary over them."""

    out: Path
    table: pd.DataFrame
    summary: dict[str, Any]
    summaries: list[dict[str, Any]]  # each replicate's summary.json, in replicate order

    def patients(self, replicate: int) -> pd.DataFrame:
        """The patient table of one replicate (read from its folder)."""
        return pd.read_parquet(self.out / f"replicate_{replicate:03d}" / "patients.parquet")


def one_sided_p(two_sided: float | None, hr: float | None) -> float | None:
    """One-sided log-rank p in favour of the treated arm (HR < 1) from the two-sided p."""
    if two_sided is None or hr is None:
        return None
    return two_sided / 2.0 if hr < 1.0 else 1.0 - two_sided / 2.0


def replicate_rows(summary: dict[str, Any], replicate: int, seed: int) -> list[dict[str, Any]]:
    """The rows of one replicate's ``summary.json`` (arms and comparisons of every endpoint)."""
    rows = []
    for endpoint, result in summary["endpoints"].items():
        for arm, a in result["arms"].items():
            rows.append({"replicate": replicate, "seed": seed, "endpoint": endpoint, "kind": "arm", "name": arm,
                         "median_months": a["median_months"], "ci_low": a["ci_low"], "ci_high": a["ci_high"],
                         "events": a["events"], "n": a["n"],
                         **{f"survival_at_{t}": s for t, s in a["survival_at"].items()}})
        for name, c in result["comparisons"].items():
            rows.append({"replicate": replicate, "seed": seed, "endpoint": endpoint, "kind": "comparison",
                         "name": name, "hr": c["hr"], "ci_low": c["hr_ci_low"], "ci_high": c["hr_ci_high"],
                         "logrank_p": c["logrank_p"], "one_sided_p": one_sided_p(c["logrank_p"], c["hr"])})
    return rows


def distribution(values: Any) -> dict[str, Any]:
    """Mean, median and 2.5-97.5 % percentiles of the finite values (None and NaN: not estimable)."""
    v = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(dtype=float)
    finite = v[np.isfinite(v)]
    out: dict[str, Any] = {"replicates": int(v.size), "estimable": int(finite.size)}
    if finite.size:
        out.update(mean=float(finite.mean()), median=float(np.median(finite)),
                   p2_5=float(np.percentile(finite, 2.5)), p97_5=float(np.percentile(finite, 97.5)))
    return out


def summarise(table: pd.DataFrame, *, alpha: float = ALPHA_ONE_SIDED) -> dict[str, Any]:
    """Per endpoint: the distribution of each arm's median and each comparison's HR, and the power."""
    out: dict[str, Any] = {}
    for endpoint, rows in table.groupby("endpoint", sort=False):
        arms = {name: {"median_months": distribution(g["median_months"]),
                       "not_reached": int(g["median_months"].isna().sum()),
                       **{c: distribution(g[c]) for c in g.columns if c.startswith("survival_at_")}}
                for name, g in rows[rows["kind"] == "arm"].groupby("name", sort=False)}
        comps = {}
        for name, g in rows[rows["kind"] == "comparison"].groupby("name", sort=False):
            p = pd.to_numeric(g["one_sided_p"], errors="coerce")
            comps[name] = {"hr": distribution(g["hr"]), "logrank_p": distribution(g["logrank_p"]),
                           "power_one_sided": float((p < alpha).mean()), "alpha_one_sided": alpha}
        out[str(endpoint)] = {"arms": arms, "comparisons": comps}
    return out


@contextlib.contextmanager
def _client(workers: int | None, scheduler: str | None) -> Iterator[Any]:
    from cikabm.trial import dask_client

    if scheduler is None and workers == 1:
        yield None
        return
    with dask_client(workers, scheduler) as client:
        yield client


@writes_into_out
def run_replicates(ts: TrialScenario, out: Path, n_replicates: int, *, patients: int | None = None,
                   seed: int | None = None, workers: int | None = None, scheduler: str | None = None,
                   resume: bool = False, progress: bool | None = None) -> ReplicateRun:
    """Run ``n_replicates`` trials of ``ts`` on new cohorts and summarise them (see the module docstring)."""
    from cikabm.plotting_trials import plot_replicate_hazard_ratios
    from cikabm.trial import run_trial

    base = ts.scenario.seed if seed is None else int(seed)
    seeds = replicate_seeds(base, n_replicates)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    with _client(workers, scheduler) as client:
        for r, s in enumerate(seeds):
            run = run_trial(ts, out / f"replicate_{r:03d}", patients=patients, seed=s, workers=1 if client is None
                            else workers, resume=resume, progress=progress, client=client)
            rows.extend(replicate_rows(run.summary, r, s))
            summaries.append(json.loads(json.dumps(to_jsonable(run.summary))))  # as summary.json holds it
    table = pd.DataFrame(rows)
    summary = {"scenario": ts.scenario.name, **provenance(), "replicates": n_replicates, "seeds": seeds,
               "patients": patients or ts.trial.patients, "reference_arm": ts.trial.reference_arm,
               "endpoints": summarise(table),
               "published": [p.model_dump(mode="json") for p in ts.published]}
    tmp = out / "replicates.csv.tmp"
    table.to_csv(tmp, index=False)
    tmp.replace(out / "replicates.csv")
    atomic_write_json(out / "replicates.json", to_jsonable(summary))
    fig = plot_replicate_hazard_ratios(table, ts).figure
    tmp_png = out / "hr_replicates.tmp.png"
    save_png(fig, tmp_png, dpi=120)
    tmp_png.replace(out / "hr_replicates.png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    _remove_stale_replicates(out, n_replicates)
    return ReplicateRun(out=out, table=table, summary=summary, summaries=summaries)


def _remove_stale_replicates(out: Path, n_replicates: int) -> None:
    """Remove the folders of an earlier run's replicates beyond ``n_replicates``, if they hold only trial results.

    A folder that holds anything else (a user's file) is left where it is.
    """
    import shutil

    from cikabm.io import is_own_output
    from cikabm.trial import TRIAL_OUTPUTS

    for folder in sorted(out.glob("replicate_[0-9][0-9][0-9]")):
        if int(folder.name.split("_")[1]) < n_replicates or not folder.is_dir() or folder.is_symlink():
            continue
        if all(is_own_output(entry, TRIAL_OUTPUTS) for entry in folder.iterdir()):
            shutil.rmtree(folder)


def replicates_text(summary: dict[str, Any], out: Path) -> str:
    """The replicate summary for the terminal: per endpoint, medians and HRs over replicates, and power."""
    def dist(d: dict[str, Any], spec: str) -> str:
        if not d.get("estimable"):
            return "not estimable"
        return (f"mean {d['mean']:{spec}}, median {d['median']:{spec}} "
                f"(2.5-97.5 %: {d['p2_5']:{spec}}-{d['p97_5']:{spec}}; {d['estimable']} of {d['replicates']})")

    lines = [f"{summary['scenario']}: {summary['replicates']} replicate trials x {summary['patients']} patients "
             f"(seeds {summary['seeds'][0]}-{summary['seeds'][-1]})"]
    for endpoint, result in summary["endpoints"].items():
        lines.append(f"{endpoint.upper()}:")
        for arm, a in result["arms"].items():
            lines.append(f"  {arm} median months: {dist(a['median_months'], '.1f')}"
                         + (f"; not reached in {a['not_reached']}" if a["not_reached"] else ""))
            last = [k for k in a if k.startswith("survival_at_")][-1:]
            for key in last:
                lines.append(f"  {arm} event-free at {key.removeprefix('survival_at_')} months: "
                             f"{dist(a[key], '.3f')}")
        for name, c in result["comparisons"].items():
            lines.append(f"  {name} HR: {dist(c['hr'], '.2f')}; power (one-sided log-rank p < "
                         f"{c['alpha_one_sided']:g}) {c['power_one_sided']:.0%}")
    lines.append(f"results written to {out}")
    return "\n".join(lines) + "\n"

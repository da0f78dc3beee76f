"""The validation report: published results against the model over replicate virtual trials.

``cikabm validation SCENARIO [SCENARIO ...] --replicates N --out DIR`` runs
``N`` replicate trials of each scenario (:mod:`cikabm.replicates`) and writes
one table, ``DIR/validation.md`` (and ``.csv``, ``.json``), with a row per
published value of each scenario's ``[[published]]`` list: the published
value and its confidence interval, the model's median and 2.5-97.5 %
interval over the replicates, whether the published interval holds the
model's median, and whether the row was a calibration target or a
prediction. Two kinds of rows follow: the in-vitro lysis that fixed the CIK
potency (from ``calibration/potency_calibration.json``, a calibration), and,
for adjuvant trials, the mechanism of the CIK effect (cures and delays, by
recurrence source; model only). With ``--readme FILE`` the table replaces the
block between :data:`README_BEGIN` and :data:`README_END` in ``FILE``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from cikabm.io import atomic_write_json, provenance, to_jsonable, writes_into_out
from cikabm.modeldoc import markdown_table
from cikabm.replicates import ReplicateRun, distribution, run_replicates
from cikabm.trial_params import PublishedValue, TrialScenario

README_BEGIN = "<!-- validation table: begin -->"
README_END = "<!-- validation table: end -->"
#: The in vitro potency fit (stage 1 of the calibration hierarchy).
POTENCY_CALIBRATION = Path(__file__).resolve().parents[1] / "calibration" / "potency_calibration.json"
#: What ``cikabm validation`` writes into its output folder, beside one folder per scenario name.
VALIDATION_OUTPUTS = ("validation.md", "validation.csv", "validation.json", "*.tmp")
COLUMNS = ("target", "published", "model", "in published CI", "role", "source")


def _event_fraction(patients: pd.DataFrame, endpoint: str, arm: str, months: float) -> float:
    from lifelines import KaplanMeierFitter

    g = patients[patients["arm"] == arm]
    kmf = KaplanMeierFitter().fit(g[f"{endpoint}_months"], g[f"{endpoint}_event"])
    return float(1.0 - kmf.predict(min(months, float(g[f"{endpoint}_months"].max()))))


def model_values(entry: PublishedValue, ts: TrialScenario, run: ReplicateRun) -> list[float | None]:
    """The model's value of a published quantity in each replicate trial."""
    values: list[float | None] = []
    ref = ts.trial.reference_arm
    for r, summary in enumerate(run.summaries):
        result = summary["endpoints"].get(entry.endpoint)
        if result is None:
            raise ValueError(f"published entry {entry.quantity} of {entry.endpoint!r}: the trial has no such "
                             f"endpoint ({', '.join(summary['endpoints'])})")
        if entry.quantity == "median_months":
            values.append(result["arms"][entry.arm]["median_months"])
        elif entry.quantity == "hazard_ratio":
            values.append(result["comparisons"][f"{entry.arm}_vs_{ref}"]["hr"])
        else:
            values.append(_event_fraction(run.patients(r), entry.endpoint, entry.arm, entry.months))
    return values


def _fmt(x: float | None, spec: str) -> str:
    from cikabm.survival import format_estimate

    return format_estimate(x, spec)


def _label(entry: PublishedValue, ts: TrialScenario) -> str:
    what = {"rfs": "RFS", "pfs": "PFS", "os": "all-cause death" if entry.quantity == "hazard_ratio" else "OS",
            "css": "cancer-related death"}[entry.endpoint]
    if entry.quantity == "median_months":
        return f"{ts.scenario.name}: median {what}, {entry.arm} (months)"
    if entry.quantity == "hazard_ratio":
        return f"{ts.scenario.name}: {what} HR, {entry.arm} vs {ts.trial.reference_arm}"
    return f"{ts.scenario.name}: {what} events by {entry.months:g} months, {entry.arm}"


def published_rows(ts: TrialScenario, run: ReplicateRun) -> list[dict[str, Any]]:
    """One row per ``[[published]]`` entry of ``ts``."""
    rows = []
    for entry in ts.published:
        spec = ".0%" if entry.quantity == "event_fraction" else (".2f" if entry.quantity == "hazard_ratio" else ".1f")
        dist = distribution(model_values(entry, ts, run))
        ci = "" if entry.ci_low is None or entry.ci_high is None else \
            f" ({format(entry.ci_low, spec)}-{format(entry.ci_high, spec)})"
        model = "not estimable" if not dist["estimable"] else (
            f"{_fmt(dist['median'], spec)} ({_fmt(dist['p2_5'], spec)}-{_fmt(dist['p97_5'], spec)})")
        if dist["estimable"] < dist["replicates"]:
            missing = "not reached" if entry.quantity == "median_months" else "not estimable"
            model += f"; {missing} in {dist['replicates'] - dist['estimable']} of {dist['replicates']}"
        inside = ("" if entry.ci_low is None or entry.ci_high is None or not dist["estimable"]
                  else ("yes" if entry.ci_low <= dist["median"] <= entry.ci_high else "no"))
        rows.append({"target": _label(entry, ts), "published": format(entry.value, spec) + ci, "model": model,
                     "in published CI": inside, "role": entry.role, "source": entry.source,
                     "model_distribution": dist, "published_value": entry.model_dump(mode="json")})
    return rows


def mechanism_rows(ts: TrialScenario, run: ReplicateRun) -> list[dict[str, Any]]:
    """The CIK effect's mechanism over replicates: share of control recurrences cured, median delay of
    those recurring in both arms, by recurrence source (adjuvant trials)."""
    if ts.trial.setting != "adjuvant":
        return []
    per: dict[str, dict[str, list[float | None]]] = {}
    for summary in run.summaries:
        for name, m in summary.get("mechanism", {}).items():
            d = per.setdefault(name, {})
            d.setdefault("cured share of control recurrences", []).append(
                m["cured"] / m["recurred_ref"] if m["recurred_ref"] else None)
            d.setdefault("median delay when recurring in both arms (months)", []).append(m["median_delay_months"])
            for source, s in m["by_source"].items():
                d.setdefault(f"cured share, {source.replace('_', ' ')} recurrences", []).append(
                    s["cured"] / s["recurred_ref"] if s["recurred_ref"] else None)
            d.setdefault("cancer deaths averted per 100 patients", []).append(
                100.0 * (m["cancer_deaths_ref"] - m["cancer_deaths_arm"]) / m["patients"])
    rows = []
    for name, quantities in per.items():
        for label, values in quantities.items():
            dist = distribution(values)
            spec = ".1f" if "months" in label or "per 100" in label else ".0%"
            model = "not estimable" if not dist["estimable"] else (
                f"{_fmt(dist['median'], spec)} ({_fmt(dist['p2_5'], spec)}-{_fmt(dist['p97_5'], spec)})")
            rows.append({"target": f"{ts.scenario.name}: {name.replace('_', ' ')}, {label}", "published": "",
                         "model": model, "in published CI": "", "role": "mechanism (model only)",
                         "source": "patients.parquet of each replicate (cikabm.mechanism)",
                         "model_distribution": dist})
    return rows


def assay_row(path: Path = POTENCY_CALIBRATION) -> list[dict[str, Any]]:
    """The in vitro lysis of the potency fit, as recorded with its command (a calibration target)."""
    if not path.exists():
        return []
    d = json.loads(path.read_text())
    target = d["target"]
    lysis, se = d["lysis"], d["lysis_se"]
    return [{"target": f"in vitro lysis of the HCC line at E:T {target['et_ratio']:g}:1 in {target['hours']:g} h",
             "published": f"{target['specific_lysis']:.0%}", "model": f"{lysis:.1%} (95 % CI {lysis - 1.96 * se:.1%}-"
             f"{lysis + 1.96 * se:.1%})", "in published CI": "", "role": "calibrated",
             "source": f"Kim 2007; model: `{d['command']}`"}]


@writes_into_out
def run_validation(scenarios: list[tuple[Path, TrialScenario]], out: Path, replicates: int, *,
                   patients: int | None = None, workers: int | None = None, resume: bool = False,
                   progress: bool | None = None) -> pd.DataFrame:
    """Replicate trials of each scenario, then the validation table (written to ``out``)."""
    rows: list[dict[str, Any]] = []
    out = Path(out)
    for _path, ts in scenarios:
        n = patients if patients is not None else ts.trial.patients
        run = run_replicates(ts, out / ts.scenario.name, replicates, patients=n, workers=workers, resume=resume,
                             progress=progress)
        rows.extend(published_rows(ts, run))
        rows.extend(mechanism_rows(ts, run))
    rows.extend(assay_row())
    table = pd.DataFrame(rows)
    meta = {"replicates": replicates, "patients": patients, "scenarios": [str(p) for p, _ in scenarios]}
    atomic_write_json(out / "validation.json", to_jsonable({**provenance(), **meta, "rows": rows}))
    tmp = out / "validation.csv.tmp"
    table[list(COLUMNS)].to_csv(tmp, index=False)
    tmp.replace(out / "validation.csv")
    tmp = out / "validation.md.tmp"
    tmp.write_text(report_markdown(table, meta) + "\n", encoding="utf-8")
    tmp.replace(out / "validation.md")
    return table


def report_markdown(table: pd.DataFrame, meta: dict[str, Any]) -> str:
    """The table in Markdown, with the replicates and patients it rests on."""
    size = "each scenario's own size" if meta["patients"] is None else f"{meta['patients']} patients"
    head = (f"Model: median and 2.5-97.5 % interval over {meta['replicates']} replicate trials "
            f"({size}, seeds = scenario seed + 0, 1, ...).")
    rows = [{c: r[c] for c in COLUMNS} for r in table.to_dict("records")]
    return head + "\n\n" + markdown_table(rows, columns=COLUMNS)


def update_readme(readme: Path, text: str, command: str) -> None:
    """Replace the block between the README markers with ``text`` (and the command that made it)."""
    content = readme.read_text(encoding="utf-8")
    if README_BEGIN not in content or README_END not in content:
        raise ValueError(f"--readme {readme}: no {README_BEGIN} ... {README_END} block to replace")
    head, rest = content.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    block = f"{README_BEGIN}\n<!-- made by: {command} -->\n\n{text}\n\n{README_END}"
    tmp = readme.with_suffix(readme.suffix + ".tmp")
    tmp.write_text(head + block + tail, encoding="utf-8")
    tmp.replace(readme)

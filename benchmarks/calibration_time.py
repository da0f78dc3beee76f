"""Calibration time: the whole ``cikabm calibrate`` of the Lee 2015 scenario, timed.

Runs :func:`cikabm.calibrate.calibrate_adjuvant` with the scenario's recorded
targets (control median RFS 30 months, 5-year recurrence 70 %, RFS HR 0.63,
4 cohorts of 230 patients, at most 20 control-stage evaluations, per-cohort
refits) on a local Dask cluster, as the recorded command does, and writes the
wall time, the number of cohort evaluations and the fitted values.

Usage::

    python benchmarks/calibration_time.py [--workers 2] [--cohorts 4]
        [--out benchmarks/results/calibration_time.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from machine import machine_info, write_report

from cikabm.calibrate import calibrate_adjuvant
from cikabm.io import provenance
from cikabm.scenario import load_scenario
from cikabm.trial import CohortRunner, dask_client, simulate_chunk

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "hcc_adjuvant_lee2015.toml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cohorts", type=int, default=4)
    parser.add_argument("--max-evaluations", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "calibration_time.json")
    args = parser.parse_args(argv)
    ts = load_scenario(SCENARIO)
    simulate_chunk(ts, [0], ts.scenario.seed)  # compiles or loads the kernels; untimed
    start = time.perf_counter()
    with dask_client(args.workers) as client:
        result = calibrate_adjuvant(ts, CohortRunner(client), control_median_months=30.0, five_year_recurrence=0.70,
                                    hazard_ratio=0.63, treatment_arm="cik", n_cohorts=args.cohorts,
                                    max_evaluations=args.max_evaluations, report=lambda line: None)
    wall = time.perf_counter() - start
    report = {
        "benchmark": "calibration_time",
        **provenance(),
        "machine": {**machine_info(), "workers": args.workers},
        "scenario": str(SCENARIO.relative_to(ROOT)),
        "cohorts": args.cohorts, "patients_per_cohort": result.patients_per_cohort,
        "max_evaluations": args.max_evaluations,
        "wall_seconds": wall, "wall_minutes": wall / 60.0, "cohort_evaluations": result.evaluations,
        "fitted": {"foci_mean_at_5cm": result.foci_mean_at_5cm, "de_novo_per_year": result.de_novo_per_year,
                   "cik_per_site_per_day": result.cik_per_site_per_day},
        "spread": result.spread,
        "note": "wall time of the whole calibration (pooled fit of both stages, then the per-cohort refits) "
                "on a local Dask cluster, cluster start-up included; kernels compiled beforehand",
    }
    write_report(args.out, report)
    print(f"calibration: {wall / 60:.1f} min, {result.evaluations} cohort evaluations")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

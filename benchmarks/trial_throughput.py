"""Trial throughput: virtual patients (and patient-arms) simulated per second.

Runs the Lee 2015 scenario trial (``scenarios/hcc_adjuvant_lee2015.toml``)
end to end with :func:`cikabm.trial.run_trial` into a temporary directory, for
each worker count: with 1 worker the patients run in this process one at a
time, with more on a local Dask cluster of that many processes (cluster
start-up included, as in ``cikabm trial``), and ``default`` as ``cikabm trial``
without ``--workers`` (in this process, one thread per core, then a local
cluster for a long rest). Each
result records where its wall time went (``seconds_by_phase``: compile,
simulation, summary, files, figures; :data:`cikabm.trial.TRIAL_PHASES`).
Writing ``patients.parquet``, ``summary.json`` and
the Kaplan-Meier plots is included in the wall time. One patient is
simulated first, untimed, so the Numba kernels are compiled or loaded from
the on-disk cache before timing (Dask workers load that cache themselves,
inside the timed window).

Usage::

    python benchmarks/trial_throughput.py [--workers default,1,2] [--patients 230]
                                          [--patients-1 60] [--also-same-cohort]
                                          [--scenario scenarios/hcc_adjuvant_lee2015.toml]
                                          [--out benchmarks/results/trial_throughput.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from machine import machine_info, write_report

from cikabm.io import provenance
from cikabm.scenario import load_scenario
from cikabm.trial import run_trial, simulate_chunk

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SCENARIO = ROOT / "scenarios" / "hcc_adjuvant_lee2015.toml"


def package_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "not installed"


def time_trial(ts, n_patients: int, workers: int | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="cikabm_trial_bench_") as tmp:
        start = time.perf_counter()
        run = run_trial(ts, Path(tmp) / "trial", patients=n_patients, workers=workers, progress=False)
        wall = time.perf_counter() - start
    frame = run.patients
    n_arms = len(ts.arms)
    endpoint = "rfs" if ts.trial.setting == "adjuvant" else "pfs"
    medians = {arm: run.summary["endpoints"].get(endpoint, {}).get("arms", {}).get(arm, {}).get("median_months")
               for arm in frame["arm"].unique()}
    return {
        "workers": "default" if workers is None else workers,
        "ran_on": run.workers,
        "seconds_by_phase": run.seconds,
        "patients": n_patients,
        "patient_arms": n_patients * n_arms,
        "rows": len(frame),
        "wall_seconds": wall,
        "patients_per_s": n_patients / wall,
        "patient_arms_per_s": n_patients * n_arms / wall,
        f"median_{endpoint}_months": medians,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO)
    parser.add_argument("--workers", default="default,1,2",
                        help="comma list of worker counts, 'default' for cikabm trial's own choice "
                             "(default: default,1,2)")
    parser.add_argument("--patients", type=int, default=None,
                        help="patients per trial (default: the scenario's trial.patients)")
    parser.add_argument("--patients-1", dest="patients_1", type=int, default=None,
                        help="patients for the workers=1 case only (to shorten it; default: --patients)")
    parser.add_argument("--also-same-cohort", action="store_true",
                        help="also time every worker count on the --patients-1 cohort, so that the rates "
                             "compare like with like")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "trial_throughput.json")
    args = parser.parse_args(argv)

    ts = load_scenario(args.scenario)
    if not hasattr(ts, "trial"):
        parser.error(f"{args.scenario} is not a trial scenario")
    n_full = ts.trial.patients if args.patients is None else args.patients
    worker_counts = [None if w.strip() == "default" else int(w) for w in args.workers.split(",")]

    t0 = time.perf_counter()
    simulate_chunk(ts, [0], ts.scenario.seed)  # compiles or loads the kernels; untimed
    warmup_s = time.perf_counter() - t0

    runs = [(w, args.patients_1 if (w == 1 and args.patients_1 is not None) else n_full) for w in worker_counts]
    if args.also_same_cohort and args.patients_1 is not None:
        runs = [(w, args.patients_1) for w in worker_counts] + [r for r in runs if r[1] != args.patients_1]
    results = []
    for workers, n in runs:
        r = time_trial(ts, n, workers)
        r["shortened"] = n != ts.trial.patients
        results.append(r)
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in r["seconds_by_phase"].items())
        print(f"workers={r['workers']} (ran on: {r['ran_on']}): {n} patients x {len(ts.arms)} arms in "
              f"{r['wall_seconds']:.1f} s: {r['patients_per_s']:.2f} patients/s ({phases})", flush=True)
    for r in results:
        # Speed-up only against workers=1 on the same cohort (patients differ in cost).
        base = next((b for b in results if b["workers"] == 1 and b["patients"] == r["patients"]), None)
        r["speedup_vs_1"] = (r["patients_per_s"] / base["patients_per_s"]) if base else None
        processes = r["ran_on"] if isinstance(r["ran_on"], int) else 1
        r["efficiency"] = r["speedup_vs_1"] / processes if base else None

    report = {
        "benchmark": "trial_throughput",
        **provenance(),
        "machine": {
            **machine_info(),
            "dask": package_version("dask"),
            "distributed": package_version("distributed"),
        },
        "scenario": str(args.scenario.relative_to(ROOT) if args.scenario.is_relative_to(ROOT) else args.scenario),
        "scenario_patients": ts.trial.patients,
        "arms": [a.name for a in ts.arms],
        "seed": ts.scenario.seed,
        "chunk_patients": ts.trial.chunk_patients,
        "warmup_seconds": warmup_s,
        "note": ("wall time of run_trial into a temporary directory: simulation, chunk files, "
                 "patients.parquet, summary.json and KM plots; for workers > 1 it includes starting "
                 "the local Dask cluster and the workers' kernel-cache load. Patients differ in cost "
                 "(number of lesions, time on the lattice), so a shortened cohort (shortened = true) is the "
                 "first N patients and its rate is only roughly comparable with the full cohort's."),
        "results": results,
    }
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

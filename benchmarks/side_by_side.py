"""The kernel and the Lee 2015 trial, this tree beside an earlier commit, measured in one run.

Machines differ between sessions, so a speed-up is only meaningful as a
ratio measured side by side: this script extracts the baseline commit
(``git archive``) into a cache folder, and then times both trees in
alternating rounds, each measurement in a fresh child process that imports
its own tree's ``cikabm`` (``PYTHONPATH``) and loads its own Numba cache
(compiled once, in an untimed warm-up run). Only the timed window counts:
``Simulation.advance`` of a benchmark configuration after its warm-up steps
(:data:`cikabm.bench.config.CONFIGS`), and ``run_trial`` of the Lee 2015
scenario (simulation, files and KM figures) in one process one patient at a
time (``workers=1``) and as ``cikabm trial`` runs it without ``--workers`` in
each tree (``default``: at the issue's start a local Dask cluster of one
worker per core, now threads in one process).

The default baseline is the commit at the start of the kernel-v2 issue
(:data:`ISSUE_START`). Each result records the state digest (kernel) or the
medians (trial) of both trees: equal while the random-stream layout is the
same (``stream_version``), different after a new one.

Usage::

    python benchmarks/side_by_side.py [--baseline REV] [--configs 2d_1024,2d_256] [--threads 1]
                                      [--rounds 5] [--no-trial] [--trial-rounds 3]
                                      [--trial-workers 1,default]
                                      [--out benchmarks/results/side_by_side.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import machine_info, write_report

ROOT = Path(__file__).resolve().parent.parent
#: The commit at the start of the kernel-v2 issue: the kernel its speed-ups are measured against.
ISSUE_START = "5289ec4b479a6efe2f7ca71d39d7a0e1c0258b86"
SCENARIO = "scenarios/hcc_adjuvant_lee2015.toml"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cikabm-side-by-side"

#: What a child process measures: one kernel window or one trial, in the tree it is started in.
CHILD = r"""
import json, sys, tempfile, time
spec = json.loads(sys.argv[1])
import cikabm
from cikabm.scenario import load_scenario, scenario_from_dict
from cikabm.simulation import Simulation
out = {"package": cikabm.__file__}
if spec["what"] == "kernel":
    from cikabm.bench.config import CONFIGS, bench_scenario
    from cikabm.bench.worker import state_digest
    config = CONFIGS[spec["config"]]
    sim = Simulation(scenario_from_dict(bench_scenario(config.shape)), threads=spec["threads"])
    sim.advance(spec["warmup"])
    start = time.perf_counter()
    sim.advance(spec["steps"])
    out["seconds"] = time.perf_counter() - start
    out["sites"] = 1
    for n in config.shape:
        out["sites"] *= n
    out["effectors"] = int(sim.counters[0])
    out["digest"] = state_digest(sim)
else:
    from cikabm.trial import run_trial
    ts = load_scenario(spec["scenario"])
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        run = run_trial(ts, folder + "/out", workers=spec.get("workers", 1), patients=spec.get("patients"),
                        progress=False)
        out["seconds"] = time.perf_counter() - start
        summary = json.load(open(folder + "/out/summary.json"))
    first = "rfs" if "rfs" in summary["endpoints"] else "pfs"
    out["medians"] = {arm: v["median_months"] for arm, v in summary["endpoints"][first]["arms"].items()}
print("RESULT " + json.dumps(out))
"""


def baseline_tree(rev: str) -> Path:
    """The files of ``rev`` (``git archive``), kept in the cache folder with their Numba cache."""
    full = subprocess.run(["git", "-C", str(ROOT), "rev-parse", f"{rev}^{{commit}}"], check=True,
                          capture_output=True, text=True).stdout.strip()
    tree = CACHE / full
    if (tree / "cikabm" / "__init__.py").exists():
        return tree
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{full}.", dir=CACHE))
    with tempfile.TemporaryFile() as archive:
        subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", full], check=True, stdout=archive)
        archive.seek(0)
        with tarfile.open(fileobj=archive) as tar:
            tar.extractall(partial, filter="data")
    partial.replace(tree)
    return tree


def measure(tree: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in a fresh child process importing ``tree``'s cikabm."""
    env = {**os.environ, "PYTHONPATH": str(tree), "NUMBA_NUM_THREADS": str(max(spec.get("threads", 1), 1))}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], cwd=tree, env=env,
                          capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"measurement in {tree} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    if not Path(result.pop("package")).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"the child in {tree} imported another cikabm (is it installed elsewhere?)")
    return result


def alternate(trees: dict[str, Path], spec: dict[str, Any], rounds: int, label: str) -> dict[str, list]:
    """``rounds`` measurements of each tree, alternating (the first tree changes every round)."""
    names = list(trees)
    runs: dict[str, list] = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            result = measure(trees[name], spec)
            runs[name].append(result)
            print(f"  {label} round {r + 1}/{rounds} {name}: {result['seconds']:.3f} s", flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=ISSUE_START, help="commit to compare with (default: %(default).10s)")
    parser.add_argument("--configs", default="2d_1024,2d_256")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=288, help="timed steps per kernel measurement")
    parser.add_argument("--warmup", type=int, default=144, help="untimed steps before them")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-trial", action="store_true", help="leave out the Lee 2015 trial")
    parser.add_argument("--trial-rounds", type=int, default=3)
    parser.add_argument("--trial-workers", default="1,default",
                        help="how each tree runs the trial: 1 (this process, one patient at a time) and/or "
                             "default (as cikabm trial runs it without --workers in that tree)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "side_by_side.json")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    trees = {"baseline": baseline_tree(args.baseline), "current": ROOT}
    print(f"baseline {args.baseline[:10]} in {trees['baseline']}; current: {ROOT}", flush=True)
    for name, tree in trees.items():  # compile or load each tree's kernels, untimed
        measure(tree, {"what": "kernel", "config": "2d_256", "threads": args.threads, "warmup": 2, "steps": 2})
        if not args.no_trial:
            measure(tree, {"what": "trial", "scenario": SCENARIO, "patients": 4})
        print(f"{name}: kernels ready", flush=True)

    kernel = {}
    for config in [c.strip() for c in args.configs.split(",") if c.strip()]:
        spec = {"what": "kernel", "config": config, "threads": args.threads, "warmup": args.warmup,
                "steps": args.steps}
        runs = alternate(trees, spec, args.rounds, config)
        medians = {name: statistics.median(r["seconds"] for r in rs) for name, rs in runs.items()}
        sites = runs["current"][0]["sites"]
        kernel[config] = {
            "threads": args.threads, "warmup_steps": args.warmup, "steps": args.steps,
            "seconds": {name: [r["seconds"] for r in rs] for name, rs in runs.items()},
            "median_seconds": medians,
            "site_updates_per_s_per_thread": {name: sites * args.steps / m / args.threads
                                              for name, m in medians.items()},
            "speedup": medians["baseline"] / medians["current"],
            "effectors": {name: rs[0]["effectors"] for name, rs in runs.items()},
            "same_state": runs["baseline"][0]["digest"] == runs["current"][0]["digest"],
        }
        print(f"{config}: speed-up {kernel[config]['speedup']:.2f}x "
              f"(same state: {kernel[config]['same_state']})", flush=True)
    report: dict[str, Any] = {
        "benchmark": "side_by_side",
        "baseline": subprocess.run(["git", "-C", str(ROOT), "rev-parse", args.baseline], check=True,
                                   capture_output=True, text=True).stdout.strip(),
        "current": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True,
                                  capture_output=True, text=True).stdout.strip(),
        "current_has_changes": bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                                    "cikabm"], check=True, capture_output=True,
                                                   text=True).stdout.strip()),
        "machine": machine_info(),
        "note": "seconds of the timed window only, each in a fresh process of its tree; rounds alternate the "
                "order of the trees; speed-up = median baseline seconds / median current seconds",
        "kernel": kernel,
    }
    for workers in ([] if args.no_trial else [w.strip() for w in args.trial_workers.split(",") if w.strip()]):
        spec = {"what": "trial", "scenario": SCENARIO, "workers": None if workers == "default" else int(workers)}
        runs = alternate(trees, spec, args.trial_rounds, f"Lee 2015 trial, workers {workers}")
        medians = {name: statistics.median(r["seconds"] for r in rs) for name, rs in runs.items()}
        key = "trial" if workers == "1" else f"trial_workers_{workers}"
        report[key] = {
            "scenario": SCENARIO, "workers": workers,
            "seconds": {name: [r["seconds"] for r in rs] for name, rs in runs.items()},
            "median_seconds": medians,
            "time_fraction": medians["current"] / medians["baseline"],
            "first_endpoint_medians": {name: rs[0]["medians"] for name, rs in runs.items()},
        }
        print(f"Lee 2015 trial, workers {workers}: {medians['baseline']:.1f} s -> {medians['current']:.1f} s "
              f"({report[key]['time_fraction']:.2f} of the time)", flush=True)
    report["wall_seconds"] = time.perf_counter() - started
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    if shutil.which("git") is None:
        raise SystemExit("side_by_side.py needs git (it extracts the baseline commit)")
    raise SystemExit(main())

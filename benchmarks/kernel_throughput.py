"""Kernel throughput of one square 2D lattice: a thin wrapper over the benchmark suite.

Runs one strong-scaling configuration of :mod:`cikabm.bench` (the code behind
``cikabm bench``; see ``benchmarks/README.md`` for the method): a 2D
``size x size`` lattice with default rules, set-up, compile and stepping timed
separately, every thread count checked for bit-identical results. Writes the
suite's JSON layout (no plots) to ``--out``.

Usage::

    python benchmarks/kernel_throughput.py [--size 1024] [--steps 288] [--repeats 3]
                                           [--threads 1,2,3] [--out benchmarks/results/kernel_throughput.json]

``--steps`` must be a multiple of 36 (6 simulated hours).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from cikabm.bench import CONFIGS, BenchConfig, parse_threads, run_suite, summary_text
from cikabm.io import atomic_write_json

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="lattice edge (default 1024)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: the suite's, 288 at 1024)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=parse_threads, default=None,
                        help="comma list (default: 1, 2, 4, ... cores, cores + 1)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "kernel_throughput.json")
    args = parser.parse_args(argv)
    known = CONFIGS.get(f"2d_{args.size}")
    config = known or BenchConfig(f"2d_{args.size}", (args.size, args.size), f"2D {args.size}x{args.size}")
    try:
        config = replace(config, mesa=False, steps=config.steps if args.steps is None else args.steps)
    except ValueError as err:
        parser.error(f"--steps {args.steps}: {err}")
    report = run_suite([config], threads=args.threads, repeats=args.repeats, cold_compile=False,
                       command="python benchmarks/kernel_throughput.py " + " ".join(sys.argv[1:] if argv is None
                                                                                   else argv),
                       progress=lambda message: print(message, file=sys.stderr, flush=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, report)
    sys.stdout.write(summary_text(report) + f"wrote {args.out}\n")
    return 0 if report["checks"]["identical_across_threads"] is not False else 1


if __name__ == "__main__":
    raise SystemExit(main())

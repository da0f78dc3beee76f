"""The ``cikabm validation`` command (see :mod:`cikabm.validation`).

::

    cikabm validation SCENARIO [SCENARIO ...] --out DIR [--replicates N] [--patients N]
        [--workers N] [--resume] [--readme FILE]

Exit status as for every ``cikabm`` command: 0 success, 2 a bad scenario or
option (nothing written), 1 the results could not be written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_command(sub: Any, formatter: type, wrap: Any, int_in: Any) -> None:
    """Add ``validation`` to the ``cikabm`` sub-parsers."""
    val = sub.add_parser(
        "validation", help="the validation report: published results against replicate virtual trials",
        description=wrap(
            "Run --replicates replicate trials of each trial scenario (new cohorts: seeds SEED, SEED+1, ...) "
            "into DIR/<scenario name>/, then write DIR/validation.md, .csv and .json: one row per published "
            "value of each scenario's [[published]] list (published value and CI; the model's median and "
            "2.5-97.5 % interval over the replicates; calibrated or predicted), the in vitro lysis of the "
            "potency fit, and the mechanism of the CIK effect (cures and delays by recurrence source)."),
        epilog=wrap("example (the README table):\n  cikabm validation scenarios/hcc_adjuvant_lee2015.toml "
                    "scenarios/neuroblastoma_choi2018.toml --replicates 5 --out results/validation "
                    "--readme README.md"),
        formatter_class=formatter)
    val.add_argument("scenarios", metavar="SCENARIO", type=Path, nargs="+", help="trial scenario files")
    val.add_argument("--out", metavar="DIR", type=Path, required=True, help="output directory")
    val.add_argument("--replicates", metavar="N", type=int_in("--replicates", 1, 1000), default=5,
                     help="replicate trials per scenario (default: 5)")
    val.add_argument("--patients", metavar="N", type=int_in("--patients", 1, 1_000_000), default=None,
                     help="patients per replicate (default: each scenario's trial.patients)")
    val.add_argument("--workers", metavar="N", type=int_in("--workers", 1, 1024), default=None,
                     help="worker processes (default: one per CPU core)")
    val.add_argument("--resume", action="store_true", help="keep the finished patients of an interrupted run")
    val.add_argument("--readme", metavar="FILE", type=Path, default=None,
                     help="replace the validation block of this Markdown file with the table")
    val.add_argument("--no-progress", action="store_true", help="no progress bar")
    val.set_defaults(func=cmd_validation)


def cmd_validation(args: argparse.Namespace) -> int:
    """``cikabm validation``: the validation report."""
    from cikabm.cli import EXIT_OK, UserError, _write_stdout
    from cikabm.scenario import load_scenario
    from cikabm.trial_params import TrialScenario
    from cikabm.validation import README_BEGIN, report_markdown, run_validation, update_readme

    scenarios = [(p, load_scenario(p)) for p in args.scenarios]
    for path, ts in scenarios:
        if not isinstance(ts, TrialScenario):
            raise UserError(f"{path} has no [trial] table: validation runs trial scenarios")
    from cikabm.cli import check_output_dir
    from cikabm.validation import VALIDATION_OUTPUTS

    check_output_dir(args.out, (*VALIDATION_OUTPUTS, *(ts.scenario.name for _, ts in scenarios)))
    if args.readme is not None:
        text = args.readme.read_text(encoding="utf-8") if args.readme.is_file() else ""
        if README_BEGIN not in text:
            raise UserError(f"--readme {args.readme}: no '{README_BEGIN}' block to replace")
    progress = False if (args.no_progress or not sys.stderr.isatty()) else True
    try:
        table = run_validation(scenarios, args.out, args.replicates, patients=args.patients, workers=args.workers,
                               resume=args.resume, progress=progress)
    except ValueError as err:
        raise UserError(str(err)) from None
    meta = {"replicates": args.replicates, "patients": args.patients}
    text = report_markdown(table, meta)
    if args.readme is not None:
        command = " ".join(["cikabm validation", *map(str, args.scenarios), f"--replicates {args.replicates}",
                            *([f"--patients {args.patients}"] if args.patients else []), "--out", str(args.out)])
        update_readme(args.readme, text, command)
    _write_stdout(text + f"\nresults written to {args.out}\n")
    return EXIT_OK

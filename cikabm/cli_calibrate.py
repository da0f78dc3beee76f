"""The ``cikabm calibrate`` command (see :mod:`cikabm.calibrate`).

::

    cikabm calibrate SCENARIO --control-median 30 --five-year-recurrence 0.70 --hr 0.63 \\
        --treatment-arm cik [--cohorts 4] [--patients N] [--workers N] [--log FILE]

Exit status as for every ``cikabm`` command: 0 success, 2 a bad scenario or
option (nothing written), 1 the results could not be written.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: give a fraction, e.g. 0.70") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: must be between 0 and 1")
    return value


def add_command(sub: Any, formatter: type, wrap: Any, int_in: Any) -> None:
    """Add ``calibrate`` to the ``cikabm`` sub-parsers."""
    from cikabm.cli import positive_float

    cal = sub.add_parser(
        "calibrate", help="fit an adjuvant trial to its control arm's RFS and the RFS hazard ratio",
        description=wrap(
            "Fit adjuvant.foci_mean_at_5cm and adjuvant.de_novo_per_year to the control arm's median RFS "
            "and 5-year recurrence (scipy.optimize.minimize, Nelder-Mead), then homing.cik_per_site_per_day to the "
            "RFS hazard ratio of the treated arm (scipy.optimize.brentq), on the pooled patients of "
            "--cohorts replicate cohorts (seeds 10000, 10001, ...; never the trial's own seed). Each "
            "cohort is then fitted alone, and the spread of those fits is the uncertainty of the fitted "
            "values (see cikabm/calibrate.py). Prints the fitted values as TOML to paste into the "
            "scenario, and writes the search history to --log."),
        epilog=wrap("example:\n  cikabm calibrate scenarios/hcc_adjuvant_lee2015.toml --control-median 30 "
                    "--five-year-recurrence 0.70 --hr 0.63 --treatment-arm cik --log calibration.json"),
        formatter_class=formatter)
    cal.add_argument("scenario", metavar="SCENARIO", type=Path, help="trial scenario file (TOML with [trial])")
    cal.add_argument("--control-median", metavar="MONTHS", type=positive_float("--control-median", 600.0),
                     required=True,
                     help="target median RFS of the reference arm")
    cal.add_argument("--five-year-recurrence", metavar="FRACTION", type=_fraction, default=0.70,
                     help="target share of the reference arm with recurrence or death by 5 years (default 0.70)")
    cal.add_argument("--hr", metavar="HR", type=positive_float("--hr", 1.0), required=True,
                     help="target RFS hazard ratio, in (0, 1]")
    cal.add_argument("--treatment-arm", metavar="NAME", required=True, help="the treated arm")
    cal.add_argument("--cohorts", metavar="N", type=int_in("--cohorts", 1, 100), default=4,
                     help="replicate cohorts pooled in the fit (default: 4)")
    cal.add_argument("--patients", metavar="N", type=int_in("--patients", 10, 1_000_000), default=None,
                     help="patients per cohort (default: trial.patients)")
    cal.add_argument("--max-evaluations", metavar="N", type=int_in("--max-evaluations", 3, 200), default=14,
                     help="most cohort evaluations of the control stage's optimiser (default: 14)")
    cal.add_argument("--no-per-cohort", action="store_true",
                     help="skip the per-cohort refits (no uncertainty of the fitted values)")
    cal.add_argument("--workers", metavar="N", type=int_in("--workers", 1, 1024), default=None,
                     help="worker processes (default: one per CPU core)")
    cal.add_argument("--log", metavar="FILE", type=Path, default=None, help="write the search history (JSON)")
    cal.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args: argparse.Namespace) -> int:
    """``cikabm calibrate``: fit an adjuvant trial to RFS targets."""
    import time

    from cikabm.calibrate import calibrate_adjuvant, calibration_report
    from cikabm.cli import EXIT_FAILED, EXIT_OK, UserError, _error, _write_stdout, check_log_path
    from cikabm.io import atomic_write_json, to_jsonable
    from cikabm.scenario import load_scenario
    from cikabm.trial import CohortRunner, dask_client
    from cikabm.trial_params import TrialScenario

    ts = load_scenario(args.scenario)
    if not isinstance(ts, TrialScenario):
        raise UserError(f"{args.scenario} has no [trial] table: calibrate fits trial scenarios")
    arms = [a.name for a in ts.arms]
    if args.treatment_arm not in arms or args.treatment_arm == ts.trial.reference_arm:
        raise UserError(f"--treatment-arm {args.treatment_arm!r}: must be one of the arms {arms} other than "
                        f"the reference arm {ts.trial.reference_arm!r}")
    if ts.trial.setting != "adjuvant":
        raise UserError(f"{args.scenario}: calibrate fits adjuvant trials (trial.setting = 'adjuvant')")
    if args.log is not None:
        check_log_path(args.log)
    start = time.perf_counter()
    context = contextlib.nullcontext(None) if args.workers == 1 else dask_client(args.workers)
    with context as client:
        try:
            result = calibrate_adjuvant(
                ts, CohortRunner(client), control_median_months=args.control_median,
                five_year_recurrence=args.five_year_recurrence, hazard_ratio=args.hr,
                treatment_arm=args.treatment_arm, n_cohorts=args.cohorts, n_patients=args.patients,
                max_evaluations=args.max_evaluations, per_cohort=not args.no_per_cohort,
                report=lambda line: _write_stdout(line + "\n"))
        except ValueError as err:
            raise UserError(str(err)) from None
    wall = time.perf_counter() - start
    _write_stdout(calibration_report(result, wall))  # first: the fitted values are shown whatever the log does
    if args.log is not None:
        try:
            atomic_write_json(args.log, to_jsonable({**result.__dict__, "wall_seconds": wall,
                                                     "command": " ".join(["cikabm calibrate", str(args.scenario),
                                                                          *_flags(args)])}))
        except OSError as err:
            _error(f"--log {args.log}: could not write the search history ({err.strerror or err}); the fitted "
                   "values are above")
            return EXIT_FAILED
    return EXIT_OK


def _flags(args: argparse.Namespace) -> list[str]:
    flags = [f"--control-median {args.control_median:g}", f"--five-year-recurrence {args.five_year_recurrence:g}",
             f"--hr {args.hr:g}", f"--treatment-arm {args.treatment_arm}", f"--cohorts {args.cohorts}"]
    if args.patients is not None:
        flags.append(f"--patients {args.patients}")
    flags.append(f"--max-evaluations {args.max_evaluations}")
    if args.no_per_cohort:
        flags.append("--no-per-cohort")
    if args.workers is not None:
        flags.append(f"--workers {args.workers}")
    if args.log is not None:
        flags.append(f"--log {args.log}")
    return flags

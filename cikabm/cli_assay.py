"""The ``cikabm assay`` and ``cikabm calibrate-potency`` commands (see :mod:`cikabm.assay`).

::

    cikabm assay SCENARIO --out DIR [--et 1,3,10,30,100] [--hours 4] [--replicates N]
                 [--effectors product,tnk,...] [--blocking none,nkg2d,tcr] [--targets line,mhc_lost,mixed]
                 [--coculture lattice,well_mixed] [--targets-per-site D]
    cikabm calibrate-potency SCENARIO [--lysis 0.33] [--et 30] [--hours 4] [--replicates N]
                 [--targets-per-site D] [--log FILE]

Exit status as for every ``cikabm`` command: 0 success, 2 a bad scenario or
option (nothing written), 1 the results could not be written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cikabm.assay import DEFAULT_TARGETS_PER_SITE, NKG2D_BLOCKING_SOURCE

#: Files ``cikabm assay`` writes into its output directory.
ASSAY_FILES = ("assay.csv", "replicates.csv", "assay.png", "summary.json")


def _choice_list(option: str, allowed: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in allowed]
        if not items or bad:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: each of {option} must be one of "
                                             f"{', '.join(allowed)}")
        return list(dict.fromkeys(items))
    return parse


def _ratio_list(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: give numbers, e.g. 1,3,10,30,100") from None
    if not values or any(not (0 < v < 1e6) for v in values):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: each E:T ratio must be > 0")
    return sorted(set(values))




def add_commands(sub: Any, formatter: type, wrap: Any, int_in: Any) -> None:
    """Add ``assay`` and ``calibrate-potency`` to the ``cikabm`` sub-parsers."""
    from cikabm.assay import BLOCKING_CHOICES, COCULTURE_CHOICES, EFFECTOR_CHOICES, TARGET_CHOICES
    from cikabm.cli import positive_float

    asy = sub.add_parser(
        "assay", help="an in-silico chromium-release (cytotoxicity) assay of a scenario's effectors",
        description=wrap(
            "Co-culture the scenario's tumour line with its effectors (the CIK product, or one subset) at "
            "several E:T ratios, as in a 51Cr-release assay, and write DIR/assay.csv (mean specific lysis "
            "with its 95 % interval per condition and E:T, kills per effector by kind), "
            "DIR/replicates.csv (one row per well), DIR/assay.png (the E:T curves with the published "
            "point) and DIR/summary.json. Every combination of --effectors, --blocking, --targets and "
            "--coculture is one condition. Specific lysis = (dead - dead in the no-effector control) / "
            "(1 - dead in the control)."),
        epilog=wrap("An existing DIR is replaced only when it is empty or holds nothing but the files of an "
                    "earlier assay (" + ", ".join(ASSAY_FILES) + ").",
                    "example:\n  cikabm assay scenarios/hcc_adjuvant_lee2015.toml --out results/assay "
                    "--blocking none,nkg2d"),
        formatter_class=formatter)
    asy.add_argument("scenario", metavar="SCENARIO", type=Path, help="scenario file (TOML; a trial file works)")
    asy.add_argument("--out", metavar="DIR", type=Path, required=True, help="output directory")
    asy.add_argument("--et", metavar="LIST", type=_ratio_list, default=None,
                     help="E:T ratios (default: 1,3,10,30,100)")
    asy.add_argument("--hours", metavar="H", type=positive_float("--hours", 72.0), default=4.0,
                     help="duration of the co-culture (default: 4)")
    asy.add_argument("--replicates", metavar="N", type=int_in("--replicates", 2, 1000), default=10,
                     help="replicate wells per condition and E:T (default: 10)")
    asy.add_argument("--effectors", metavar="LIST", type=_choice_list("--effectors", EFFECTOR_CHOICES),
                     default=["product"], help="product and/or single kinds: " + ", ".join(EFFECTOR_CHOICES))
    asy.add_argument("--blocking", metavar="LIST", type=_choice_list("--blocking", BLOCKING_CHOICES),
                     default=["none", "nkg2d"], help="antibody blocking (default: none,nkg2d)")
    asy.add_argument("--targets", metavar="LIST", type=_choice_list("--targets", TARGET_CHOICES),
                     default=["line"], help="the line as it is, all MHC-I-lost, or half (default: line)")
    asy.add_argument("--coculture", metavar="LIST", type=_choice_list("--coculture", COCULTURE_CHOICES),
                     default=["lattice"], help="lattice (effectors walk) and/or well_mixed (default: lattice)")
    asy.add_argument("--targets-per-site", metavar="D", type=positive_float("--targets-per-site", 0.5),
                     default=DEFAULT_TARGETS_PER_SITE, help="target density of a well (default: 1 per 150 sites)")
    asy.add_argument("--no-progress", action="store_true", help="no progress bar")
    asy.set_defaults(func=cmd_assay)

    cal = sub.add_parser(
        "calibrate-potency", help="fit the CIK product's per-contact kill rate to a published assay",
        description=wrap(
            "Fit one factor on the per-contact rates (NKG2D and TCR) of the three CIK kinds, their "
            "ratios kept, so that the product lyses the target fraction of the scenario's tumour line at "
            "the given E:T in a lattice co-culture (Brent's method on log10(factor), the same wells at "
            "every evaluation). Prints the fitted CD3+CD56+ rate with its 95 % interval; --log writes "
            "the search history (JSON). Stage 1 of the calibration hierarchy (docs/model.md)."),
        epilog=wrap("example:\n  cikabm calibrate-potency scenarios/hcc_adjuvant_lee2015.toml --lysis 0.33 "
                    "--et 30 --hours 4 --log calibration/potency_calibration.json"),
        formatter_class=formatter)
    cal.add_argument("scenario", metavar="SCENARIO", type=Path, help="scenario file with the tumour line")
    cal.add_argument("--lysis", metavar="FRACTION", type=positive_float("--lysis", 0.999), default=0.33,
                     help="target specific lysis (default: 0.33, Kim 2007)")
    cal.add_argument("--et", metavar="RATIO", type=positive_float("--et", 1e5), default=30.0,
                     help="E:T ratio of the target (default: 30)")
    cal.add_argument("--hours", metavar="H", type=positive_float("--hours", 72.0), default=4.0,
                     help="assay duration (default: 4)")
    cal.add_argument("--replicates", metavar="N", type=int_in("--replicates", 2, 1000), default=20,
                     help="replicate wells per evaluation (default: 20)")
    cal.add_argument("--targets-per-site", metavar="D", type=positive_float("--targets-per-site", 0.5),
                     default=DEFAULT_TARGETS_PER_SITE, help="target density of a well (default: 1 per 150 sites)")
    cal.add_argument("--log", metavar="FILE", type=Path, default=None, help="write the search history (JSON)")
    cal.set_defaults(func=cmd_calibrate_potency)


def _load(path: Path) -> Any:
    from cikabm.scenario import load_scenario

    return load_scenario(path)


def cmd_assay(args: argparse.Namespace) -> int:
    """``cikabm assay``: run the in-silico cytotoxicity assay and write its table and figure."""
    from itertools import product

    from tqdm import tqdm

    from cikabm.assay import DEFAULT_ET, AssayCondition, AssayDesign, run_assay
    from cikabm.cli import EXIT_FAILED, EXIT_OK, UserError, _write_stdout, check_output_dir, replace_output_dir

    scenario = _load(args.scenario)
    check_output_dir(args.out, ASSAY_FILES)
    design = AssayDesign(hours=args.hours, replicates=args.replicates, targets_per_site=args.targets_per_site)
    ets = args.et or list(DEFAULT_ET)
    if max(ets) > design.max_et():
        raise UserError(f"--et {max(ets):g}: at most {design.max_et():.0f} effectors per target fit the well "
                        f"({design.targets} targets on {design.side}x{design.side} sites)")
    conditions = [AssayCondition(effectors=e, blocking=b, targets=t, coculture=c)
                  for e, b, t, c in product(args.effectors, args.blocking, args.targets, args.coculture)]
    bar = tqdm(total=len(conditions) * design.replicates * (len(ets) + 1), unit="well", delay=1.0, leave=False,
               disable=args.no_progress or not sys.stderr.isatty(), desc="assay")
    with bar:
        result = run_assay(scenario, conditions=conditions, et_ratios=ets, design=design,
                           progress=lambda done, total: bar.update(done - bar.n))
    table = result.table()
    fall = result.blocking_fall()

    def writer(tmp: Path) -> None:
        from matplotlib.figure import Figure

        from cikabm.io import atomic_write_json, provenance, save_png, to_jsonable
        from cikabm.plotting import plot_assay

        table.to_csv(tmp / "assay.csv", index=False, lineterminator="\n", float_format="%.6g")
        result.replicates.to_csv(tmp / "replicates.csv", index=False, lineterminator="\n", float_format="%.6g")
        fig = Figure(figsize=(6.6, 4.6), layout="constrained")
        plot_assay(result, ax=fig.add_subplot())
        save_png(fig, tmp / "assay.png", dpi=120)
        atomic_write_json(tmp / "summary.json", to_jsonable({
            "scenario": scenario.scenario.name, **provenance(), "design": design.__dict__, "et_ratios": ets,
            "conditions": [c.__dict__ for c in conditions], "anchor": result.anchor,
            "table": table.to_dict(orient="records"),
            "blocking_fall": {"table": fall.to_dict(orient="records"), "source": NKG2D_BLOCKING_SOURCE}}))

    if not replace_output_dir(args.out, writer, ASSAY_FILES):
        return EXIT_FAILED
    _write_stdout(assay_text(table, args.out, fall))
    return EXIT_OK


def assay_text(table: Any, out: Path | None = None, fall: Any = None) -> str:
    """The assay table for the terminal: lysis (95 % interval) per condition and E:T."""
    lines = []
    for keys, g in table.groupby(["effectors", "blocking", "targets", "coculture"], sort=False):
        e, b, t, c = keys
        lines.append(f"{e} effectors, blocking {b}, targets {t}, {c} co-culture:")
        for _, r in g.iterrows():
            lines.append(f"  E:T {r['et_ratio']:>5g}:1  lysis {100 * r['specific_lysis']:5.1f} % "
                         f"(95 % CI {100 * r['ci_low']:.1f}-{100 * r['ci_high']:.1f})")
    if fall is not None and len(fall):
        lines.append("fall in lysis with the receptor blocked (1 - blocked / unblocked):")
        for _, r in fall.iterrows():
            lines.append(f"  {r['effectors']}, {r['blocking'].upper()} blocked, E:T {r['et_ratio']:g}:1: "
                         f"{100 * r['fall']:.0f} % ({100 * r['lysis_unblocked']:.1f} -> "
                         f"{100 * r['lysis_blocked']:.1f} %)")
        lines.append(f"  the sources: {NKG2D_BLOCKING_SOURCE}")
    if out is not None:
        lines.append(f"results written to {out}")
    return "\n".join(lines) + "\n"


def calibrate_potency_command(args: argparse.Namespace) -> str:
    """The ``cikabm calibrate-potency`` command line that reproduces a fit (recorded in its log)."""
    parts = ["cikabm calibrate-potency", str(args.scenario), f"--lysis {args.lysis:g}", f"--et {args.et:g}",
             f"--hours {args.hours:g}", f"--replicates {args.replicates}"]
    if args.targets_per_site != DEFAULT_TARGETS_PER_SITE:
        parts.append(f"--targets-per-site {args.targets_per_site:g}")
    if args.log is not None:
        parts.append(f"--log {args.log}")
    return " ".join(parts)


def cmd_calibrate_potency(args: argparse.Namespace) -> int:
    """``cikabm calibrate-potency``: fit the CIK per-contact rate to a published lysis."""
    from cikabm.assay import AssayDesign, calibrate_potency
    from cikabm.cli import EXIT_OK, UserError, _write_stdout, check_log_path
    from cikabm.io import atomic_write_json, to_jsonable

    scenario = _load(args.scenario)
    if args.log is not None:
        check_log_path(args.log)
    design = AssayDesign(hours=args.hours, replicates=args.replicates, targets_per_site=args.targets_per_site)
    if args.et > design.max_et():
        raise UserError(f"--et {args.et:g}: at most {design.max_et():.0f} effectors per target fit the well")
    _write_stdout(f"fitting the CIK per-contact rate: {100 * args.lysis:g} % lysis at E:T {args.et:g}:1 in "
                  f"{args.hours:g} h, {args.replicates} wells of {design.targets} targets\n")
    try:
        fit = calibrate_potency(scenario, target_lysis=args.lysis, et_ratio=args.et, design=design,
                                report=lambda line: _write_stdout(line + "\n"))
    except ValueError as err:
        raise UserError(str(err)) from None
    if args.log is not None:
        record = to_jsonable(fit.__dict__)
        record["command"] = calibrate_potency_command(args)
        atomic_write_json(args.log, record)
    _write_stdout(
        f"fitted: CD3+CD56+ per-contact rate {fit.tnk_rate_per_hour:.4g}/h (95 % CI {fit.ci_low:.4g}-"
        f"{fit.ci_high:.4g}), x {fit.factor:.4g} of the scenario's; lysis at the fit "
        f"{100 * fit.lysis:.1f} % (SE {100 * fit.lysis_se:.1f})\n"
        f"set CIK_POTENCY_PER_HOUR = {fit.tnk_rate_per_hour:.4g} in cikabm/params.py (or scale every CIK "
        f"kind's nkg2d_rate_per_hour and tcr_rate_per_hour by {fit.factor:.4g} in the scenario)\n")
    return EXIT_OK

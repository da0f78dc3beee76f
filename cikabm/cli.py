"""The ``cikabm`` command: a thin layer over the Python API.

::

    cikabm run SCENARIO --out DIR [--seed N] [--threads N] [--no-progress] [--snapshots N]
    cikabm validate SCENARIO
    cikabm trial SCENARIO --out DIR [--replicates N] [--patients N] [--seed N] [--workers N] [...]
    cikabm compare SCENARIO --out DIR [--schedules A,B,C] [--append] [--reference ARM] [--patients N] [...]
    cikabm params [--format markdown|csv]
    cikabm calibrate SCENARIO --control-median MONTHS --hr HR --treatment-arm NAME [...] [--log FILE]
    cikabm validation SCENARIO [SCENARIO ...] --out DIR [--replicates N] [...] [--readme FILE]
    cikabm assay SCENARIO --out DIR [--et 1,3,10,30,100] [--hours 4] [--replicates N] [...]
    cikabm calibrate-potency SCENARIO [--lysis 0.33] [--et 30] [--hours 4] [--replicates N] [--log FILE]
    cikabm bench --out DIR [--quick] [--threads 1,2,3] [--repeats N] [--configs NAMES] [--machine NAME]
    cikabm teach [--host 127.0.0.1] [--port 8765] [--open]

Exit status: 0 on success; 2 for anything the user can fix (a bad scenario,
a bad option value, an output path that cannot be used), with a message on
stderr and nothing written; 1 when writing the results fails (a folder made
unwritable, a full disk) or memory runs out, with a message; 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import csv
import gc
import io
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cikabm import __version__
from cikabm.cli_text import comparison_text, run_summary_text, trial_summary_text, validate_text
from cikabm.io import RUN_OUTPUTS

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UserError(Exception):
    """A problem the user can fix: reported on stderr, exit status 2, no traceback."""


# --------------------------------------------------------------------------- argument types

def positive_float(option: str, hi: float) -> Any:
    """An argparse type: a number in (0, ``hi``] (NaN and infinity refused), the option named in the error."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: {option} takes a number") from None
        if not 0 < value <= hi:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: {option} must be in (0, {hi:g}]")
        return value
    return parse


def _int_in(name: str, lo: int, hi: int | None = None) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: not a whole number") from None
        if value < lo or (hi is not None and value > hi):
            top = "2**63 - 1" if hi == 2**63 - 1 else str(hi)
            bound = f"between {lo} and {top}" if hi is not None else f"at least {lo}"
            raise argparse.ArgumentTypeError(f"invalid value {value}: must be {bound}")
        return value

    parse.__name__ = name.lstrip("-")
    return parse


def _thread_limit() -> int:
    """Most threads ``--threads`` may ask for.

    Once Numba is imported its thread pool has a fixed size; before that, the
    pool can still be sized (``NUMBA_NUM_THREADS`` if set, else the CPU count).
    """
    numba = sys.modules.get("numba")
    if numba is not None:
        return int(numba.config.NUMBA_NUM_THREADS)
    env = os.environ.get("NUMBA_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else (os.cpu_count() or 1)


def _threads(text: str) -> int:
    return _int_in("--threads", 1, _thread_limit())(text)


def _size_thread_pool(threads: int | None) -> None:
    """Give Numba a pool of exactly ``threads`` threads if it has not started yet."""
    if threads is not None and "numba" not in sys.modules:
        os.environ["NUMBA_NUM_THREADS"] = str(threads)


def _thread_list(text: str) -> list[int]:
    """``--threads 1,2,3``: thread counts, each between 1 and 1024."""
    from cikabm.bench import parse_threads

    try:
        return parse_threads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: {err}") from None


def _config_list(text: str) -> list[str]:
    """``--configs A,B``: names of benchmark configurations."""
    from cikabm.bench import parse_configs

    try:
        return parse_configs(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: {err}") from None


def _machine_name(text: str) -> str:
    """``--machine NAME``: letters, digits, '.', '_' and '-' (it names a results directory)."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", text):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: use 1-64 letters, digits, '.', '_' or '-', "
                                         "starting with a letter or digit")
    return text


# --------------------------------------------------------------------------- parser

class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and epilogs (they are wrapped by :func:`_wrap`)."""


def _wrap(*paragraphs: str) -> str:
    return "\n\n".join(p if "\n" in p or p.startswith("  ") else textwrap.fill(p, 78) for p in paragraphs)


def _add_cohort_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by the commands that run a virtual cohort (trial, compare)."""
    parser.add_argument("--patients", metavar="N", type=_int_in("--patients", 1, 1_000_000), default=None,
                        help="virtual patients (default: the scenario's trial.patients)")
    parser.add_argument("--seed", metavar="N", type=_int_in("--seed", 0, 2**63 - 1), default=None,
                        help="random seed (default: the scenario's scenario.seed)")
    parser.add_argument("--workers", metavar="N", type=_int_in("--workers", 1, 1024), default=None,
                        help="worker processes of the local Dask cluster; 1 runs in this process, one "
                             "patient at a time (default: in this process, one thread per CPU core, then "
                             "one worker per core for the rest once it is projected to take over 30 s); "
                             "results do not depend on it")
    parser.add_argument("--scheduler", metavar="ADDRESS", default=None,
                        help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786")
    parser.add_argument("--resume", action="store_true", help="keep the finished patients of an interrupted run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``cikabm`` command."""
    parser = argparse.ArgumentParser(
        prog="cikabm",
        description="Agent-based simulation of tumour cells against CIK cell therapy.",
        epilog=_wrap("Run `cikabm COMMAND --help` for the options of a command.",
                     "Exit status: 0 success; 2 a bad scenario or option (nothing written); 1 the results "
                     "could not be written; 130 interrupted."),
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run", help="run a scenario and write its results",
        description=_wrap("Run a scenario and write, atomically, DIR/timeseries.csv, DIR/summary.json, "
                          "DIR/scenario.toml (a copy of the input), DIR/populations.png and "
                          "DIR/snapshots.png. A failed or interrupted run writes nothing."),
        epilog=_wrap("An existing DIR is used only when it is empty or holds nothing but the files "
                     "of an earlier run (" + ", ".join(RUN_OUTPUTS) + "), which are replaced whole; "
                     "a file that appears in DIR during the run is kept.",
                     "example:\n  cikabm run scenarios/teaching_mhc_loss.toml --out results/teaching"),
        formatter_class=_Formatter)
    run.add_argument("scenario", metavar="SCENARIO", type=Path, help="scenario file (TOML)")
    run.add_argument("--out", metavar="DIR", type=Path, required=True, help="output directory")
    run.add_argument("--seed", metavar="N", type=_int_in("--seed", 0, 2**63 - 1), default=None,
                     help="random seed (default: the scenario's scenario.seed)")
    run.add_argument("--threads", metavar="N", type=_threads, default=None,
                     help="Numba threads; results do not depend on it (default: one per CPU core)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--snapshots", metavar="N", type=_int_in("--snapshots", 0, 24), default=4,
                     help="lattice snapshots to take, evenly spaced, first and last day included "
                          "(0: none; default: 4)")
    run.set_defaults(func=cmd_run)

    val = sub.add_parser(
        "validate", help="check a scenario file",
        description=_wrap("Check a scenario file: print what it describes (a region: lattice, steps, "
                          "schedule; a trial: setting, patients, follow-up, each arm's schedule) and which "
                          "tables it sets, and exit 0; or list every problem (each naming the field and the "
                          "value) and exit 2."),
        formatter_class=_Formatter)
    val.add_argument("scenario", metavar="SCENARIO", type=Path, help="scenario file (TOML)")
    val.set_defaults(func=cmd_validate)

    tri = sub.add_parser(
        "trial", help="run a virtual trial: every virtual patient in every arm",
        description=_wrap("Run a virtual trial and write DIR/patients.parquet (one row per patient and "
                          "arm: times, event flags, infusions received, covariates), DIR/summary.json "
                          "(per endpoint and arm: median with 95 % CI; per comparison: hazard ratio with "
                          "95 % CI and log-rank p) and Kaplan-Meier plots DIR/km_<endpoint>.png.",
                          "Patients run in this process (in threads, one per core) or in parallel on Dask "
                          "distributed: a local cluster of --workers processes (by default only when the "
                          "trial is long enough to gain from it), or the cluster behind --scheduler. "
                          "Finished patients are kept in DIR/.chunks; after a crash, the same command "
                          "with --resume finishes the trial without redoing them, and the results equal "
                          "those of an uninterrupted run."),
        epilog=_wrap("example:\n  cikabm trial scenarios/hcc_adjuvant_lee2015.toml --out results/lee2015"),
        formatter_class=_Formatter)
    tri.add_argument("scenario", metavar="SCENARIO", type=Path, help="trial scenario file (TOML with [trial])")
    tri.add_argument("--out", metavar="DIR", type=Path, required=True, help="output directory")
    tri.add_argument("--replicates", metavar="N", type=_int_in("--replicates", 1, 1000), default=None,
                     help="run N trials of the scenario's size on new cohorts (seeds SEED, SEED+1, ...) into "
                          "DIR/replicate_<r>, and write the distribution of medians, hazard ratios and "
                          "p-values and the in-silico power to DIR/replicates.json, .csv and "
                          "hr_replicates.png")
    _add_cohort_options(tri)
    tri.set_defaults(func=cmd_trial)

    cmp_ = sub.add_parser(
        "compare", help="compare dosing schedules on the same virtual cohort",
        description=_wrap("Run the same virtual cohort (same seed, same patients: common random numbers) "
                          "under several dosing schedules and write DIR/comparison.csv (per arm: median "
                          "RFS or PFS with 95 % CI, hazard ratio vs the reference arm with 95 % CI, "
                          "log-rank p, infusions received), DIR/subgroups.csv (primary tumour above/below "
                          "5 cm, infusions received 0, 1-8, 9-16, 17+), DIR/comparison.png (medians and "
                          "hazard-ratio forest plot) and the trial files of `cikabm trial` "
                          "(patients.parquet, summary.json, km_<endpoint>.png with all arms).",
                          "Without --schedules the scenario's own arms are compared. A schedule is "
                          "NAME[*DOSE][xCYCLES] with NAME one of " + ", ".join(_schedule_names()) +
                          " (none: no CIK, arm 'control'); *DOSE multiplies the cells per infusion, "
                          "xCYCLES repeats the schedule. New arms start on the day and with the dose of "
                          "the scenario's first treated arm."),
        epilog=_wrap("example:\n  cikabm compare scenarios/hcc_schedule_comparison.toml --out results/schedules "
                     "\\\n      --schedules none,lee2015,weekly6_biweekly,lee2015*0.5"),
        formatter_class=_Formatter)
    cmp_.add_argument("scenario", metavar="SCENARIO", type=Path, help="trial scenario file (TOML with [trial])")
    cmp_.add_argument("--out", metavar="DIR", type=Path, required=True, help="output directory")
    cmp_.add_argument("--schedules", metavar="A,B,C", type=_schedule_list, default=None,
                      help="schedules to compare, comma-separated (default: the scenario's arms)")
    cmp_.add_argument("--append", action="store_true",
                      help="add the --schedules arms after the scenario's arms instead of replacing them")
    cmp_.add_argument("--reference", metavar="ARM", default=None,
                      help="arm the others are compared with (default: the scenario's reference arm if "
                           "kept, else control)")
    _add_cohort_options(cmp_)
    cmp_.set_defaults(func=cmd_compare)

    from cikabm.cli_calibrate import add_command as add_calibrate_command

    add_calibrate_command(sub, _Formatter, _wrap, _int_in)
    from cikabm.cli_validation import add_command as add_validation_command

    add_validation_command(sub, _Formatter, _wrap, _int_in)
    from cikabm.cli_assay import add_commands as add_assay_commands

    add_assay_commands(sub, _Formatter, _wrap, _int_in)

    par = sub.add_parser(
        "params", help="print the parameter reference",
        description=_wrap("Print every scenario parameter with its meaning, unit, default, allowed "
                          "range and source (the markdown is docs/parameters.md)."),
        formatter_class=_Formatter)
    par.add_argument("--format", choices=("markdown", "csv"), default="markdown",
                     help="output format (default: markdown)")
    par.set_defaults(func=cmd_params)

    ben = sub.add_parser(
        "bench", help="run the benchmark suite and write DIR/bench.json with plots",
        description=_wrap("Time the Numba kernel on small and large, 2D and 3D lattices with default "
                          "rules: set-up, compile (or cache load) and stepping separately, repeated, with "
                          "medians and min-max; strong scaling (fixed lattice, each thread count) and weak "
                          "scaling (lattice grows with the threads), checking in the same run that every "
                          "thread count gives bit-identical results; memory per lattice site and per "
                          "effector; the Mesa reference implementation on the same small configuration "
                          "(skipped, and said so, when Mesa is not installed).",
                          "Writes, atomically, DIR/bench.json (machine, settings, definitions and, per "
                          "configuration, site_updates_per_s_per_thread, effector_updates_per_s, "
                          "cell_hours_per_s, bytes_per_site, threads, speedup, efficiency, mesa_ratio "
                          "where Mesa ran, and every repeat) and DIR/strong_scaling.png, "
                          "DIR/weak_scaling.png, DIR/site_updates.png. Each configuration runs in a fresh "
                          "process whose Numba thread pool holds the largest --threads count. Exit status 1 "
                          "when the results differ across thread counts (the files are still written).",
                          "Configurations: " + ", ".join(_bench_config_names()) + ". Default: "
                          + ", ".join(_bench_sets()[1]) + "; with --quick: " + ", ".join(_bench_sets()[0])
                          + "."),
        epilog=_wrap("An existing DIR is replaced only when it is empty or holds nothing but the files of an "
                     "earlier benchmark.",
                     "examples:\n  cikabm bench --quick --out results/bench\n"
                     "  cikabm bench --out benchmarks/results/my-machine --threads 1,2,4,8,16,17"),
        formatter_class=_Formatter)
    ben.add_argument("--out", metavar="DIR", type=Path, required=True, help="output directory")
    ben.add_argument("--quick", action="store_true",
                     help="shorter timed windows, 2 repeats, smaller configurations where needed, no cold "
                          "compile (about a minute on 2 cores)")
    ben.add_argument("--threads", metavar="LIST", type=_thread_list, default=None,
                     help="thread counts, comma-separated (default: 1, 2, 4, ... up to the cores, the "
                          "cores, and cores + 1 for the identity check)")
    ben.add_argument("--repeats", metavar="N", type=_int_in("--repeats", 1, 100), default=None,
                     help="timed repeats per thread count (default: 9, in 3 rounds of workers; 2 with --quick)")
    ben.add_argument("--configs", metavar="NAMES", type=_config_list, default=None,
                     help="configurations to run, comma-separated (default: see above)")
    ben.add_argument("--machine", metavar="NAME", type=_machine_name, default=None,
                     help="name recorded for this machine (default: CPU model and cores, e.g. amd-epyc-2c)")
    ben.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    ben.set_defaults(func=cmd_bench)

    from cikabm.cli_teach import add_command as add_teach_command

    add_teach_command(sub, _Formatter, _wrap, _int_in)
    return parser


# --------------------------------------------------------------------------- output

def _write_stdout(text: str) -> None:
    """Write to stdout, falling back to UTF-8 bytes where the console cannot encode µ or ≥."""
    try:
        sys.stdout.write(text)
    except UnicodeEncodeError:
        sys.stdout.flush()
        sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.flush()


def _error(message: str) -> None:
    print(f"cikabm: error: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- commands

def _too_big(source: Path, scenario: Any) -> UserError:
    steps = scenario.time.duration_days * 1440.0 / scenario.time.dt_minutes
    return UserError(f"{source}: not enough memory for this scenario (lattice.shape = "
                     f"{scenario.lattice.shape}, effectors.capacity = {scenario.effectors.capacity}, "
                     f"{steps:.3g} steps of time.dt_minutes = {scenario.time.dt_minutes:g})")


def cmd_validate(args: argparse.Namespace) -> int:
    """``cikabm validate``: check a scenario file."""
    from cikabm.scenario import load_scenario

    scenario = load_scenario(args.scenario)
    try:
        text = validate_text(scenario)
    except MemoryError:
        raise _too_big(args.scenario, scenario) from None
    _write_stdout(text)
    return EXIT_OK


def cmd_params(args: argparse.Namespace) -> int:
    """``cikabm params``: print the parameter reference."""
    from cikabm.modeldoc import parameter_reference, parameter_rows

    if args.format == "csv":
        rows = parameter_rows()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        _write_stdout(buf.getvalue())
    else:
        _write_stdout(parameter_reference())
    return EXIT_OK


def check_output_dir(out: Path, allowed: Sequence[str] = RUN_OUTPUTS) -> None:
    """Refuse an output path that cannot be (re)placed, before any work is done.

    ``allowed`` names the files an earlier run of the command leaves, as names
    or ``fnmatch`` patterns (an existing directory holding only those may be
    replaced); a ``.chunks`` folder counts only with the manifest a trial writes
    in it, so that a user's folder of that name is never taken for one.

    Raises
    ------
    UserError
        If ``out`` is a file, a link, a directory holding anything but the
        files of an earlier run, or lies under a file or a directory that
        cannot be written.
    """
    from cikabm.io import is_own_output

    if out.absolute().name in ("", ".", ".."):
        raise UserError(f"--out {out}: give a directory with a name of its own, e.g. {out}/results")
    if out.is_symlink():
        raise UserError(f"--out {out}: is a symbolic link; give a real directory path")
    if out.exists():
        if not out.is_dir():
            raise UserError(f"--out {out}: exists and is not a directory")
        foreign = sorted(p.name for p in out.iterdir() if not is_own_output(p, allowed))
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise UserError(f"--out {out}: directory exists and holds files that are not cikabm results "
                            f"({shown}); refusing to replace it. Choose a new directory or empty it")
    ancestor = out.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"--out {out}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: cannot write in {ancestor} (permission denied)")


def replace_output_dir(out: Path, writer: Any, own: Sequence[str]) -> bool:
    """Write a command's folder whole (:func:`cikabm.io.write_output_dir`) by the rule of :func:`check_output_dir`.

    Only the command's ``own`` files of an earlier run are replaced; anything
    else that appeared in ``out`` meanwhile is kept, and the user is told.
    Returns False, having said why, when the folder could not be written.
    """
    from cikabm.io import write_output_dir

    def kept(names: list[str]) -> None:
        _write_stdout(f"kept what appeared in {out} while the command ran: {', '.join(names)}\n")

    try:
        write_output_dir(out, writer, own=own, on_kept=kept)
    except OSError as err:
        _error(f"could not write the results to {out}: {err}")
        return False
    return True


def check_log_path(path: Path) -> None:
    """Refuse a ``--log`` file that could not be written, before any work is done."""
    parent = path.absolute().parent
    if path.is_dir():
        raise UserError(f"--log {path}: is a directory; give a file name")
    if not parent.is_dir():
        raise UserError(f"--log {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--log {path}: cannot write in {parent} (permission denied)")
    if path.exists() and not _is_calibration_log(path):
        raise UserError(f"--log {path}: exists and is not a cikabm calibration log; refusing to replace it. "
                        "Give a new file name")


def _is_calibration_log(path: Path) -> bool:
    """A JSON object whose ``command`` is a ``cikabm calibrate...`` command (what ``--log`` writes)."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and str(data.get("command", "")).startswith("cikabm calibrate")


def cmd_run(args: argparse.Namespace) -> int:
    """``cikabm run``: run a scenario, write its results atomically."""
    _size_thread_pool(args.threads)
    from cikabm.params import Scenario
    from cikabm.scenario import load_scenario
    from cikabm.simulation import Simulation

    scenario = load_scenario(args.scenario)
    if type(scenario) is not Scenario:
        raise UserError(f"{args.scenario} is a trial scenario (it has a [trial] table): run it with "
                        f"`cikabm trial {args.scenario} --out DIR`")
    source_bytes = args.scenario.read_bytes()
    out: Path = args.out
    check_output_dir(out)
    try:
        sim = Simulation(scenario, seed=args.seed, threads=args.threads)
    except MemoryError:
        raise _too_big(args.scenario, scenario) from None
    progress = False if (args.no_progress or not sys.stderr.isatty()) else True
    results = sim.run(progress=progress, n_snapshots=args.snapshots)

    def writer(tmp: Path) -> None:
        results.write(tmp, scenario_source=source_bytes)

    if not replace_output_dir(out, writer, RUN_OUTPUTS):
        return EXIT_FAILED
    _write_stdout(run_summary_text(results, out))
    return EXIT_OK


def cmd_trial(args: argparse.Namespace) -> int:
    """``cikabm trial``: run a virtual trial."""
    from cikabm.scenario import load_scenario
    from cikabm.trial import run_trial
    from cikabm.trial_params import TrialScenario

    ts = load_scenario(args.scenario)
    if not isinstance(ts, TrialScenario):
        raise UserError(f"{args.scenario} has no [trial] table: it describes one tumour region; run it "
                        f"with `cikabm run {args.scenario} --out DIR`")
    out: Path = args.out
    from cikabm.replicates import REPLICATE_OUTPUTS
    from cikabm.trial import TRIAL_OUTPUTS

    check_output_dir(out, REPLICATE_OUTPUTS if args.replicates is not None else TRIAL_OUTPUTS)
    progress = False if (args.no_progress or not sys.stderr.isatty()) else True
    try:
        if args.replicates is not None:
            from cikabm.replicates import replicates_text, run_replicates

            reps = run_replicates(ts, out, args.replicates, patients=args.patients, seed=args.seed,
                                  workers=args.workers, scheduler=args.scheduler, resume=args.resume,
                                  progress=progress)
            _write_stdout(replicates_text(reps.summary, out))
            return EXIT_OK
        run = run_trial(ts, out, patients=args.patients, seed=args.seed, workers=args.workers,
                        scheduler=args.scheduler, resume=args.resume, progress=progress)
    except ValueError as err:
        raise UserError(str(err)) from None
    _write_stdout(trial_summary_text(run.summary, out))
    return EXIT_OK


def _schedule_names() -> tuple[str, ...]:
    from cikabm.schedules import SCHEDULE_NAMES

    return SCHEDULE_NAMES


def _schedule_list(text: str) -> list[str]:
    """``--schedules A,B,C``: every item checked now, so a bad name is a usage error (exit 2)."""
    from cikabm.schedules import parse_schedule_spec

    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: no schedule given")
    for item in items:
        try:
            parse_schedule_spec(item)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"invalid value {item!r}: {err}") from None
    return items


def cmd_compare(args: argparse.Namespace) -> int:
    """``cikabm compare``: compare dosing schedules on the same virtual cohort."""
    from cikabm.compare import comparison_scenario, run_comparison
    from cikabm.scenario import load_scenario
    from cikabm.trial_params import TrialScenario

    ts = load_scenario(args.scenario)
    if not isinstance(ts, TrialScenario):
        raise UserError(f"{args.scenario} has no [trial] table: compare runs trial scenarios")
    out: Path = args.out
    from cikabm.compare import COMPARISON_OUTPUTS

    check_output_dir(out, COMPARISON_OUTPUTS)
    mode = "append" if args.append else "replace"
    try:
        comparison_scenario(ts, args.schedules, mode=mode, reference_arm=args.reference)  # fail before any work
    except ValueError as err:
        raise UserError(str(err)) from None
    progress = False if (args.no_progress or not sys.stderr.isatty()) else True
    try:
        result = run_comparison(ts, out, args.schedules, mode=mode, reference_arm=args.reference,
                                patients=args.patients, seed=args.seed, workers=args.workers,
                                scheduler=args.scheduler, resume=args.resume, progress=progress)
    except ValueError as err:
        raise UserError(str(err)) from None
    _write_stdout(comparison_text(result.table, result.run.summary, out))
    return EXIT_OK


def _bench_config_names() -> list[str]:
    from cikabm.bench import CONFIGS

    return list(CONFIGS)


def _bench_sets() -> tuple[tuple[str, ...], tuple[str, ...]]:
    from cikabm.bench import FULL_SET, QUICK_SET

    return QUICK_SET, FULL_SET


def _bench_command(args: argparse.Namespace) -> str:
    """The ``cikabm bench`` command line that ``args`` stand for (recorded in bench.json)."""
    import shlex

    words = ["cikabm", "bench"] + (["--quick"] if args.quick else []) + ["--out", str(args.out)]
    if args.threads is not None:
        words += ["--threads", ",".join(map(str, args.threads))]
    if args.repeats is not None:
        words += ["--repeats", str(args.repeats)]
    if args.configs is not None:
        words += ["--configs", ",".join(args.configs)]
    if args.machine is not None:
        words += ["--machine", args.machine]
    return shlex.join(words)


def cmd_bench(args: argparse.Namespace) -> int:
    """``cikabm bench``: run the benchmark suite, write bench.json and plots atomically."""
    import time

    from cikabm.bench import BENCH_FILES, BenchError, run_suite, summary_text, write_report
    out: Path = args.out
    check_output_dir(out, BENCH_FILES)
    start = time.perf_counter()

    def progress(message: str) -> None:
        if not args.no_progress:
            print(f"[{time.perf_counter() - start:6.1f} s] {message}", file=sys.stderr, flush=True)

    try:
        report = run_suite(args.configs, quick=args.quick, threads=args.threads, repeats=args.repeats,
                           machine_name=args.machine, command=_bench_command(args), progress=progress)
    except BenchError as err:
        _error(str(err))
        return EXIT_FAILED
    if not replace_output_dir(out, lambda tmp: write_report(report, tmp), BENCH_FILES):
        return EXIT_FAILED
    _write_stdout(summary_text(report) + f"results written to {out}\n")
    if report["checks"]["identical_across_threads"] is False:
        _error("results differ across thread counts (see checks in bench.json)")
        return EXIT_FAILED
    return EXIT_OK


# --------------------------------------------------------------------------- entry point

def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cikabm`` command; returns the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).
    """
    from cikabm.scenario import ScenarioError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ScenarioError as err:
        print(str(err), file=sys.stderr)
        return EXIT_USAGE
    except UserError as err:
        _error(str(err))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted; nothing written")
        return EXIT_INTERRUPTED
    except MemoryError:
        _error("out of memory. `cikabm validate SCENARIO` estimates what a scenario needs; a smaller lattice, "
               "fewer effectors or records, or fewer --workers need less. A trial keeps its finished patients: "
               "rerun it with --resume")
        return EXIT_FAILED
    except OSError as err:  # a folder made unwritable, a full disk, a file removed under a running command
        where = f"{err.filename}: " if err.filename else ""
        _error(f"could not read or write {where}{err.strerror or err}. A trial keeps its finished patients: "
               "rerun it with --resume")
        return EXIT_FAILED


def console_main(argv: Sequence[str] | None = None) -> int:
    """The ``cikabm`` console script: :func:`main`, then ready the process to exit at once.

    The process ends right after: :func:`gc.freeze` spares Python's shutdown
    its collections over every object the libraries left (pandas, SciPy,
    Numba, Matplotlib), the slowest part of a trial's exit. Calls of
    :func:`main` from Python keep the collector as it is.
    """
    status = main(argv)
    gc.freeze()
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(console_main())

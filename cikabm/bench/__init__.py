"""The benchmark suite behind ``cikabm bench``: kernel throughput, memory, strong and weak scaling, and Mesa.

Its parts: :mod:`cikabm.bench.config`, the configurations;
:mod:`cikabm.bench.worker`, the machine and what one worker process measures
(a worker is ``python -m cikabm.bench SPEC.json RESULT.json``,
:mod:`cikabm.bench.__main__`); :mod:`cikabm.bench.busy`, the busy-machine case;
:mod:`cikabm.bench.report`, the summary, report and plots; and
:mod:`cikabm.bench.suite`, the driver (:func:`run_suite`) and what is measured.
Every public name is importable from here.
"""

from __future__ import annotations

from cikabm.bench.busy import run_busy_case
from cikabm.bench.config import (
    BENCH_FILES,
    BUSY_CONFIG,
    CONFIGS,
    DEFAULT_REPEATS,
    DEFINITIONS,
    FULL_SET,
    MESA_REPEATS,
    QUICK_REPEATS,
    QUICK_SET,
    ROUNDS,
    SCHEMA_VERSION,
    BenchConfig,
    BenchError,
    bench_scenario,
    default_threads,
)
from cikabm.bench.report import (
    load_reports,
    markdown_report,
    save_plots,
    summary_text,
    write_report,
)
from cikabm.bench.suite import (
    mesa_available,
    parse_configs,
    parse_threads,
    round_sizes,
    run_suite,
)
from cikabm.bench.worker import (
    cpu_model,
    default_machine_name,
    machine_info,
    memory_footprint,
    numba_threads,
    pin_cpus,
    run_config,
    run_mesa,
    state_digest,
)

__all__ = [
    "BENCH_FILES",
    "BUSY_CONFIG",
    "CONFIGS",
    "DEFAULT_REPEATS",
    "DEFINITIONS",
    "FULL_SET",
    "MESA_REPEATS",
    "QUICK_REPEATS",
    "QUICK_SET",
    "ROUNDS",
    "SCHEMA_VERSION",
    "BenchConfig",
    "BenchError",
    "bench_scenario",
    "cpu_model",
    "default_machine_name",
    "default_threads",
    "load_reports",
    "machine_info",
    "markdown_report",
    "memory_footprint",
    "mesa_available",
    "numba_threads",
    "parse_configs",
    "parse_threads",
    "pin_cpus",
    "round_sizes",
    "run_busy_case",
    "run_config",
    "run_mesa",
    "run_suite",
    "save_plots",
    "state_digest",
    "summary_text",
    "write_report",
]

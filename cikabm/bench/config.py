"""Benchmark configurations of ``cikabm bench``: lattices, thread counts, repeats (see :mod:`cikabm.bench`)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: Version of the layout of ``bench.json``.
SCHEMA_VERSION = 1

#: Fraction of the lattice the initial tumour ball fills.
TUMOUR_FILL = 0.35

#: Populations are recorded every 36 steps (6 h of 10-min steps); warm-up and
#: timed windows are whole multiples of it, so records bound every window.
RECORD_EVERY_STEPS = 36

#: Files ``cikabm bench`` writes into its output directory.
BENCH_FILES = ("bench.json", "strong_scaling.png", "weak_scaling.png", "site_updates.png")

#: What the figures of ``bench.json`` mean.
DEFINITIONS: dict[str, str] = {
    "site_updates_per_s_per_thread": "interior lattice sites x timed steps / median wall seconds / threads",
    "effector_updates_per_s": "effector sub-step updates (motility sub-steps per step x effectors present, "
                              "summed over the timed steps) / median wall seconds; effectors present are "
                              "integrated from the populations recorded every 6 simulated hours "
                              "(trapezoid rule)",
    "cell_hours_per_s": "(live tumour cells + effectors), integrated over the timed simulated hours as "
                        "above, / median wall seconds: simulated cell-hours per wall second",
    "bytes_per_site": "bytes of every lattice array (padded, border included) + the IFN-gamma field and its "
                      "scratch copy + any other state array not sized by the effector capacity, / interior "
                      "sites; the record table (sized by the run's duration) is left out",
    "bytes_per_effector": "bytes of one slot of every effector array (struct of arrays, allocated for "
                          "effectors.capacity)",
    "speedup": "median seconds at the smallest thread count x that count / median seconds at n threads "
               "(strong scaling: the same lattice)",
    "efficiency": "strong: t(1) / (n t(n)); weak (lattice grows with n): t(1, N) / t(n, n N); both "
                  "against the smallest thread count measured when it is not 1",
    "efficiency_min": "efficiency from the fastest repeat of each thread count instead of the median: "
                      "less sensitive to other work on the machine, which only ever adds time",
    "identical_across_threads": "the final lattice, effectors, field, records and tallies of every run "
                                "(all thread counts and repeats) hash to the same SHA-256 digest",
    "agent_updates_per_s": "Mesa comparison, the same for both implementations: (live tumour cells at the "
                           "start of each timed step + motility sub-steps x effectors at the start of each "
                           "timed step), summed, / wall seconds of the timed steps",
    "mesa_ratio": "kernel agent updates per second on one thread / Mesa reference agent updates per "
                  "second, same scenario, seed, warm-up and timed steps",
    "mesa_ratio_min": "the same from the fastest repeat of each (other work on the machine only adds time)",
    "seconds_by_pass": "the median timed seconds split over the passes of the step (supply, tumour propose, "
                       "tumour resolve, effectors, IFN-gamma field, record) in proportion to the CPU "
                       "time-stamp-counter ticks each took, summed over the repeats (x86-64 only); Mesa: the "
                       "same split in proportion to the wall seconds each pass method took over all repeats",
}


class BenchError(RuntimeError):
    """A benchmark worker failed; the message holds the end of its error output."""


# --------------------------------------------------------------------------- configurations

@dataclass(frozen=True)
class BenchConfig:
    """One benchmark configuration.

    Parameters
    ----------
    name : str
        Key in ``bench.json`` and value of ``--configs``.
    shape : tuple of int
        Interior lattice shape, ``(ny, nx)`` or ``(nz, ny, nx)``; for a weak
        configuration the shape per thread.
    description : str
        One line for tables.
    kind : {"strong", "weak"}
        Strong: the same lattice for every thread count. Weak: the last axis
        grows with the thread count.
    steps, warmup_steps : int
        Timed and untimed (warm-up) steps of the full suite.
    quick_steps, quick_warmup_steps : int
        The same with ``--quick``.
    mesa : bool
        Also run the Mesa reference implementation on this configuration.
    """

    name: str
    shape: tuple[int, ...]
    description: str
    kind: str = "strong"
    steps: int = 288
    warmup_steps: int = 144
    quick_steps: int = 72
    quick_warmup_steps: int = 72
    mesa: bool = False

    def __post_init__(self) -> None:
        if len(self.shape) not in (2, 3) or min(self.shape) < 3:
            raise ValueError(f"{self.name}: shape {self.shape} must be 2 or 3 edges of at least 3 sites")
        if self.kind not in ("strong", "weak"):
            raise ValueError(f"{self.name}: kind {self.kind!r} must be 'strong' or 'weak'")
        for label in ("steps", "warmup_steps", "quick_steps", "quick_warmup_steps"):
            value = getattr(self, label)
            if value < RECORD_EVERY_STEPS or value % RECORD_EVERY_STEPS:
                raise ValueError(f"{self.name}: {label} = {value} must be a positive multiple of "
                                 f"{RECORD_EVERY_STEPS}")

    @property
    def dims(self) -> int:
        """2 or 3."""
        return len(self.shape)

    def shape_for(self, threads: int) -> tuple[int, ...]:
        """Lattice shape run with ``threads`` threads (weak scaling: last axis x threads)."""
        if self.kind == "weak":
            return (*self.shape[:-1], self.shape[-1] * threads)
        return self.shape

    def window(self, quick: bool) -> tuple[int, int]:
        """``(warmup_steps, timed_steps)`` of the full or the quick suite."""
        return (self.quick_warmup_steps, self.quick_steps) if quick else (self.warmup_steps, self.steps)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the worker receives its configuration as JSON)."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "shape": tuple(data["shape"])})


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(n) for n in shape)


#: Every configuration the suite knows, by name.
CONFIGS: dict[str, BenchConfig] = {c.name: c for c in (
    BenchConfig("2d_256", (256, 256), "2D 256x256, small", mesa=True),
    BenchConfig("2d_1024", (1024, 1024), "2D 1024x1024"),
    BenchConfig("2d_4096", (4096, 4096), "2D 4096x4096, large", steps=72, quick_steps=36,
                quick_warmup_steps=36),
    BenchConfig("3d_64", (64, 64, 64), "3D 64x64x64, small"),
    BenchConfig("3d_128", (128, 128, 128), "3D 128x128x128", steps=144),
    BenchConfig("weak_2d_512", (512, 512), "2D weak scaling, 512x512 per thread", kind="weak"),
    BenchConfig("weak_2d_1024", (1024, 1024), "2D weak scaling, 1024x1024 per thread", kind="weak"),
    # Tiny configurations for the tests of the suite itself (not timed for real).
    BenchConfig("2d_64", (64, 64), "2D 64x64, tiny (tests)", mesa=True, steps=36, warmup_steps=36,
                quick_steps=36, quick_warmup_steps=36),
    BenchConfig("weak_2d_64", (64, 64), "2D weak scaling, 64x64 per thread, tiny (tests)", kind="weak",
                steps=36, warmup_steps=36, quick_steps=36, quick_warmup_steps=36),
)}

#: Configurations of the full suite.
FULL_SET = ("2d_256", "2d_1024", "2d_4096", "3d_128", "weak_2d_1024")
#: Configurations of ``--quick`` (about a minute on 2 cores).
QUICK_SET = ("2d_256", "2d_1024", "3d_64", "weak_2d_512")

#: The configuration of the busy-machine case (:mod:`cikabm.bench.busy`) when the run includes it
#: (otherwise the run's first strong-scaling configuration).
BUSY_CONFIG = "2d_1024"

#: Timed repeats per thread count: the full suite's, and ``--quick``'s.
DEFAULT_REPEATS = 9
QUICK_REPEATS = 2
#: Rounds (workers per thread count) the full suite spreads its repeats over.
ROUNDS = 3
#: Timed repeats of the Mesa reference implementation (at most; one per round).
MESA_REPEATS = 3

#: The speed ratio over the Mesa reference implementation the project aims at.
MESA_RATIO_TARGET = 300


def bench_scenario(shape: Sequence[int], *, seed: int = 11) -> dict[str, Any]:
    """The scenario of a configuration, as the dict :func:`cikabm.scenario_from_dict` takes.

    Default rules; a tumour ball of :data:`TUMOUR_FILL` x sites; endogenous CTLs
    at 2e-3 per site per day; CIK infusions on the Lee 2015 schedule from day
    0.5; room for one effector per four sites.
    """
    sites = math.prod(shape)
    return {
        "scenario": {"name": f"bench_{len(shape)}d_{_shape_text(shape)}", "seed": seed},
        "lattice": {"shape": list(shape)},
        "time": {"duration_days": 30.0, "dt_minutes": 10.0, "record_every_hours": 6.0},
        "tumour": {"initial_cells": int(TUMOUR_FILL * sites)},
        "homing": {"ctl_per_site_per_day": 2e-3, "cik_per_site_per_day": 7e-13},
        "dosing": {"schedule": "lee2015", "start_day": 0.5},
        "effectors": {"capacity": max(1000, sites // 4)},
    }


def default_threads(cores: int | None = None) -> list[int]:
    """Thread counts timed by default: 1, 2, 4, ... up to ``cores``, then ``cores``, then ``cores + 1``.

    The last one oversubscribes the machine: it is there so that the identity
    check covers more threads than cores (1, 2, 3 on a 2-core machine).
    """
    cores = max(1, cores or os.cpu_count() or 1)
    counts = {1, cores, cores + 1}
    n = 2
    while n < cores:
        counts.add(n)
        n *= 2
    return sorted(counts)

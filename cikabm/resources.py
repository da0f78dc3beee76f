"""What a scenario needs of the machine: memory and time, estimated before any work.

:func:`estimate_region` adds up the memory a region run holds (the lattice
state, the effector table, the per-step inputs, the time-series records, the
snapshots) and the largest transient on top of it (seeding a scattered tumour,
integrating the blood curve, writing the results), each part tied to the
scenario keys that size it. :func:`estimate_trial` does the same for one
patient region of a trial, at its longest, plus the patient table.
:func:`check_fits` refuses a scenario whose estimate exceeds this machine's
memory, naming those keys; ``cikabm validate`` prints the estimate.

The byte counts follow the arrays :class:`cikabm.simulation.Simulation`
allocates (a test checks them against a real one), and the transients were
measured with ``tracemalloc`` on a 3000 x 3000 lattice. The time is a lower
bound: lattice site updates at :data:`SITE_UPDATES_PER_SECOND`, effectors not
counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cikabm.convert import step_grid
from cikabm.kernels import core
from cikabm.kernels.geometry import make_geometry

#: Memory of the interpreter with NumPy, Numba, pandas and Matplotlib loaded (about 250 MB measured).
BASE_BYTES = 300 * 2**20
#: Bytes of state per padded lattice site (every field of ``core.LATTICE_FIELDS``).
LATTICE_BYTES_PER_SITE = sum(np.dtype(dtype).itemsize for _, dtype, _ in core.LATTICE_FIELDS)
#: Bytes of the IFN-gamma field per coarse cell (the field and its scratch copy, float64).
FIELD_BYTES_PER_CELL = 16
#: Bytes per effector slot (every field of ``core.EFFECTOR_FIELDS``).
EFFECTOR_BYTES = sum(np.dtype(dtype).itemsize for _, dtype, _, _ in core.EFFECTOR_FIELDS)
#: Bytes per lattice row of the per-row counts (three int64).
ROW_BYTES = 24
#: Transient bytes per interior site while a scattered tumour is seeded (flat index, hash, sort order).
SCATTER_BYTES_PER_SITE = 32
#: Transient bytes per interior site of the shown slice while a snapshot is taken.
SNAPSHOT_TRANSIENT_BYTES_PER_SITE = 6
#: Bytes per time step of the per-step inputs kept (expected CIK arrivals, float64) and the transient
#: arrays of the blood-curve integral.
STEP_INPUT_BYTES, STEP_TRANSIENT_BYTES = 8, 48
#: Memory of drawing and saving a run's figures (lattice images are at most 1024 pixels on a side,
#: cikabm.plotting.MAX_IMAGE_EDGE), beside one byte per shown site and snapshot.
FIGURE_BYTES = 128 * 2**20
#: Copies of the records held while results are written (kernel array, result, data frame, text).
RECORD_COPIES = 4
#: Bytes per row of a trial's patient table while it is written (about 50 columns, a few copies).
PATIENT_ROW_BYTES = 1600
#: Lattice site updates per second on one thread, a floor: 2.5-3.7e8 measured on a 2-core AMD EPYC
#: (benchmarks/results/amd-epyc-2c, ``site_updates_per_s_per_thread``).
SITE_UPDATES_PER_SECOND = 2.0e8


@dataclass(frozen=True)
class Part:
    """One part of an estimate: its bytes and the scenario keys that size it."""

    name: str
    bytes: float
    keys: str


@dataclass(frozen=True)
class ResourceEstimate:
    """Memory and time a scenario needs, by part (see the module docstring).

    Attributes
    ----------
    held : list of Part
        Memory held for the whole run.
    transient : list of Part
        Memory needed for a while on top of it (only the largest counts).
    site_updates : float
        Lattice site updates of the run (sites x steps).
    """

    held: list[Part] = field(default_factory=list)
    transient: list[Part] = field(default_factory=list)
    site_updates: float = 0.0

    @property
    def total_bytes(self) -> float:
        """Base + held parts + the largest transient."""
        return (BASE_BYTES + sum(p.bytes for p in self.held)
                + max((p.bytes for p in self.transient), default=0.0))

    @property
    def seconds(self) -> float:
        """Lower bound of the time on one thread."""
        return self.site_updates / SITE_UPDATES_PER_SECOND

    def largest(self, n: int = 3) -> list[Part]:
        """The ``n`` largest parts (held or the largest transient), largest first."""
        parts = list(self.held)
        if self.transient:
            parts.append(max(self.transient, key=lambda p: p.bytes))
        return sorted(parts, key=lambda p: -p.bytes)[:n]

    def text(self) -> str:
        """One line: memory, the largest parts, and the time (what ``cikabm validate`` prints)."""
        parts = ", ".join(f"{p.name} {format_bytes(p.bytes)}" for p in self.largest() if p.bytes >= 2**20)
        text = f"needs about {format_bytes(self.total_bytes)} of memory" + (f" ({parts})" if parts else "")
        if self.site_updates:
            text += f" and at least {format_seconds(self.seconds)} of lattice updates on one thread"
        return text


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 kB"``; binary multiples, three significant digits.

    >>> format_bytes(3 * 2**30)
    '3 GB'
    """
    for unit, size in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def format_seconds(s: float) -> str:
    """A duration in the largest unit that keeps it above 1: ``"40 s"``, ``"2.5 h"``, ``"3.1 days"``.

    >>> format_seconds(9000)
    '2.5 h'
    """
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if s >= size:
            return f"{s / size:.2g} {unit}"
    return f"{s:.2g} s"


def estimate_region(scenario: Any, *, n_snapshots: int = 4, duration_days: float | None = None,
                    record_every_hours: float | None = None, capacity: int | None = None) -> ResourceEstimate:
    """Memory and time of one region run.

    Parameters
    ----------
    scenario : Scenario
        A validated scenario.
    n_snapshots : int
        Lattice snapshots kept (``cikabm run`` keeps 4).
    duration_days, record_every_hours, capacity : optional
        Override the scenario's (a trial's patient region).
    """
    lat, time = scenario.lattice, scenario.time
    geom = make_geometry(tuple(lat.shape), lat.neighbourhood, lat.field_coarsening)
    sites = geom.nz * geom.ny * geom.nx
    padded = geom.pz * geom.py * geom.px
    slice_sites = geom.ny * geom.nx
    duration = time.duration_days if duration_days is None else duration_days
    record_hours = time.record_every_hours if record_every_hours is None else record_every_hours
    cap = scenario.effectors.capacity if capacity is None else capacity
    n_steps, record_every = step_grid(duration, time.dt_minutes, record_hours)
    n_records = n_steps // record_every + 1
    from cikabm.kernels import core

    shape = f"lattice.shape = {list(lat.shape)}"
    steps_keys = "time.duration_days / time.dt_minutes"
    held = [
        Part("lattice", padded * LATTICE_BYTES_PER_SITE + geom.cz * geom.cy * geom.cx * FIELD_BYTES_PER_CELL
             + geom.nz * geom.ny * ROW_BYTES, shape),
        Part("effectors", cap * EFFECTOR_BYTES, f"effectors.capacity = {cap}"),
        Part("per-step inputs", n_steps * STEP_INPUT_BYTES, f"{steps_keys} ({n_steps:.3g} steps)"),
        Part("records", n_records * core.N_REC * 8 * RECORD_COPIES,
             f"time.duration_days / time.record_every_hours ({n_records:.3g} records)"),
        Part("snapshots", n_snapshots * 2 * slice_sites, shape),
    ]
    transient = [
        Part("blood-curve integral", n_steps * STEP_TRANSIENT_BYTES, f"{steps_keys} ({n_steps:.3g} steps)"),
        Part("snapshot", slice_sites * SNAPSHOT_TRANSIENT_BYTES_PER_SITE if n_snapshots else 0.0, shape),
        Part("writing the figures", FIGURE_BYTES + n_snapshots * slice_sites if n_snapshots else 0.0, shape),
    ]
    if scenario.tumour.initial_pattern == "scattered" and scenario.tumour.initial_cells:
        transient.append(Part("seeding", sites * SCATTER_BYTES_PER_SITE,
                              f"{shape} with tumour.initial_pattern = \"scattered\""))
    return ResourceEstimate(held=held, transient=transient, site_updates=float(sites) * n_steps)


def estimate_trial(ts: Any) -> ResourceEstimate:
    """Memory and time of a trial in one process: its largest patient region, and the patient table.

    The time is not estimated (``site_updates`` is 0).
    """
    if ts.trial.setting == "adjuvant":
        # A lesion's lattice phase lasts at most adjuvant.lattice_max_days, with at most 20,000
        # effectors (cikabm.lesions).
        region = estimate_region(ts, n_snapshots=0, duration_days=ts.adjuvant.lattice_max_days,
                                 record_every_hours=ts.adjuvant.check_every_days * 24.0,
                                 capacity=min(ts.effectors.capacity, 20_000))
    else:
        region = estimate_region(ts, n_snapshots=0, duration_days=ts.advanced.sample_days,
                                 record_every_hours=24.0)
    rows = ts.trial.patients * len(ts.arms)
    table = Part("patient table", rows * PATIENT_ROW_BYTES, f"trial.patients = {ts.trial.patients} x "
                 f"{len(ts.arms)} arms")
    # No time: how many lesions reach the lattice, and for how long, is drawn per patient.
    return ResourceEstimate(held=[*region.held, table], transient=region.transient)


def estimate(scenario: Any) -> ResourceEstimate:
    """:func:`estimate_trial` for a trial scenario, else :func:`estimate_region`."""
    from cikabm.trial_params import TrialScenario

    return estimate_trial(scenario) if isinstance(scenario, TrialScenario) else estimate_region(scenario)


def machine_memory_bytes() -> int:
    """Memory this process may use: the physical memory, or the container's limit when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def check_fits(scenario: Any, source: str, *, memory_bytes: int | None = None) -> ResourceEstimate:
    """Refuse a scenario that needs more memory than the machine has, naming the keys that size it.

    Parameters
    ----------
    scenario : Scenario or TrialScenario
    source : str
        The file, for the message.
    memory_bytes : int, optional
        The machine's memory (default :func:`machine_memory_bytes`).

    Returns
    -------
    ResourceEstimate

    Raises
    ------
    ScenarioError
        When the estimate exceeds the memory; its parts of 1 MB or more are
        named with the keys that size them, largest first.
    """
    from cikabm.scenario import ScenarioError

    est = estimate(scenario)
    limit = machine_memory_bytes() if memory_bytes is None else memory_bytes
    if est.total_bytes > limit:
        by_keys: dict[str, list[Part]] = {}
        for p in est.largest(n=len(est.held) + 1):
            if p.bytes >= 2**20:
                by_keys.setdefault(p.keys, []).append(p)
        parts = "; ".join(f"{keys} ({', '.join(f'{p.name} {format_bytes(p.bytes)}' for p in group)})"
                          for keys, group in by_keys.items())
        raise ScenarioError(source, [f"needs about {format_bytes(est.total_bytes)} of memory, more than this "
                                     f"machine's {format_bytes(limit)}: {parts}"])
    return est


__all__ = ["Part", "ResourceEstimate", "check_fits", "estimate", "estimate_region", "estimate_trial",
           "format_bytes", "format_seconds", "machine_memory_bytes"]

"""Machine description shared by the benchmark scripts (the one in :mod:`cikabm.bench`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cikabm.bench import cpu_model
from cikabm.bench import machine_info as _machine_info
from cikabm.io import atomic_write_json

__all__ = ["cpu_model", "machine_info", "write_report"]


def machine_info() -> dict[str, Any]:
    """CPU, cores and the versions every benchmark JSON records, with Numba's threading layer.

    Call it after the kernels have run in this process: Numba knows its
    threading layer only once a parallel region has started.
    """
    import numba

    info = _machine_info()
    try:
        info["threading_layer"] = numba.threading_layer()
    except ValueError:
        info["threading_layer"] = "(not started)"
    return info


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write a benchmark's JSON report atomically (:func:`cikabm.io.atomic_write_json`), its folder first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, report)
    print(f"wrote {path}")

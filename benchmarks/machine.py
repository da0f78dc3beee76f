"""Machine description shared by the benchmark scripts (the one in :mod:`cikabm.bench`)."""

from __future__ import annotations

from typing import Any

from cikabm.bench import cpu_model
from cikabm.bench import machine_info as _machine_info

__all__ = ["cpu_model", "machine_info"]


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

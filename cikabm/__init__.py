"""cikabm: an agent-based simulator of tumour cells against CIK cell therapy.

The public names load lazily, so ``import cikabm`` (and ``cikabm --help``) does
not import Numba: the command line can still choose Numba's thread pool size
before Numba starts.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

# Numba's OpenMP threads spin-wait between parallel regions by default: on a machine with other
# load a 2-thread run was measured 15-60x slower than 1 thread. Passive waiting costs little when
# the machine is idle. The runtime reads the policy when it starts (at the first parallel region),
# so it is set here, before any cikabm module imports Numba; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

__version__ = "0.1.0"

_EXPORTS = {
    "Scenario": "cikabm.params",
    "ScenarioError": "cikabm.scenario",
    "load_scenario": "cikabm.scenario",
    "scenario_from_dict": "cikabm.scenario",
    "Results": "cikabm.simulation",
    "Simulation": "cikabm.simulation",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

if TYPE_CHECKING:
    from cikabm.params import Scenario  # noqa: F401
    from cikabm.scenario import ScenarioError, load_scenario, scenario_from_dict  # noqa: F401
    from cikabm.simulation import Results, Simulation  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cikabm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

"""cikabm: an agent-based simulator of tumour cells against CIK cell therapy."""

from __future__ import annotations

__version__ = "0.1.0"

from cikabm.params import Scenario  # noqa: E402
from cikabm.scenario import ScenarioError, load_scenario, scenario_from_dict  # noqa: E402
from cikabm.simulation import Results, Simulation  # noqa: E402

__all__ = ["Results", "Scenario", "ScenarioError", "Simulation", "__version__", "load_scenario",
           "scenario_from_dict"]

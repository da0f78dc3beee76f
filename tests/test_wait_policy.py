"""Importing cikabm sets OpenMP's passive wait policy (Numba's threads otherwise spin-wait), keeping a
value the user set."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("preset, expected", [(None, "passive"), ("active", "active")])
def test_import_sets_passive_wait_policy_unless_set(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset is not None:
        env["OMP_WAIT_POLICY"] = preset
    out = subprocess.run([sys.executable, "-c", "import os, cikabm.params; print(os.environ['OMP_WAIT_POLICY'])"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected

"""Inputs that once hung the kernel: each case runs in a subprocess under a time limit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cikabm.cli import main
from cikabm.params import MIN_HALF_LIFE_DAYS

#: Seconds a case may take (kernels load from the cache; a hang would run for ever).
LIMIT_S = 120


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=LIMIT_S)


@pytest.mark.parametrize("mean", ["float('nan')", "-1.0", "0.0", "float('-inf')"])
def test_the_poisson_sampler_returns_on_a_mean_that_is_not_positive(mean: str):
    """A NaN mean made the inversion loop run for ever at 100 % CPU (Ctrl+C ignored)."""
    result = _run_python(f"""
        import numpy as np
        from cikabm.kernels.core import poisson
        print(poisson(np.uint64(12345), {mean}))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


def test_the_poisson_sampler_is_unchanged_for_valid_means():
    result = _run_python("""
        import numpy as np
        from cikabm.kernels.core import poisson
        draws = [poisson(np.uint64(k), 3.5) for k in range(20000)]
        print(np.mean(draws), np.var(draws))
    """)
    mean, var = map(float, result.stdout.split())
    se = (3.5 / 20000) ** 0.5
    assert abs(mean - 3.5) < 5 * se and abs(var - 3.5) < 0.15


@pytest.mark.parametrize(("key", "value"), [("slow_half_life_days", "1e-310"), ("fast_half_life_days", "5e-324"),
                                            ("slow_half_life_days", "inf")])
def test_a_vanishing_half_life_is_refused_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           key: str, value: str):
    scenario = tmp_path / "s.toml"
    scenario.write_text(f"[persistence]\n{key} = {value}\n")
    assert main(["validate", str(scenario)]) == 2
    err = capsys.readouterr().err
    assert f"persistence.{key} = {value}" in err


def test_the_shortest_half_lives_allowed_run_to_the_end(tmp_path: Path):
    """At the floor (one minute) every dose's blood curve stays finite and the run ends."""
    scenario = tmp_path / "s.toml"
    scenario.write_text(textwrap.dedent(f"""
        [lattice]
        shape = [24, 24]
        [time]
        duration_days = 1.0
        [homing]
        cik_per_site_per_day = 1e-9
        [dosing]
        schedule = "lee2015"
        start_day = 0.0
        [persistence]
        fast_half_life_days = {MIN_HALF_LIFE_DAYS!r}
        slow_half_life_days = {MIN_HALF_LIFE_DAYS!r}
    """))
    result = subprocess.run([sys.executable, "-m", "cikabm.cli", "run", str(scenario), "--out", str(tmp_path / "out"),
                             "--no-progress", "--snapshots", "0"], capture_output=True, text=True, timeout=LIMIT_S)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "summary.json").is_file()


def test_a_non_finite_blood_curve_is_an_error_not_a_nan():
    from types import SimpleNamespace

    from cikabm.schedules import mean_blood_over_steps

    # Below the schema's floor (PersistenceParams refuses it): the function guards on its own.
    persistence = SimpleNamespace(fast_fraction=0.9, fast_half_life_days=1e-310, slow_half_life_days=20.0)
    with pytest.raises(ValueError, match="fast_half_life_days"):
        mean_blood_over_steps(10, 0.01, [0.0], 6.4e9, persistence)

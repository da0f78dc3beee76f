"""What a scenario needs of the machine: the estimate, the refusal, and the inputs that once exploded."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import make_scenario
from hypothesis import given, settings
from hypothesis import strategies as st

from cikabm import resources
from cikabm.bench.worker import memory_footprint
from cikabm.cli import main
from cikabm.kernels import core
from cikabm.resources import check_fits, estimate, estimate_region
from cikabm.scenario import ScenarioError, scenario_from_dict
from cikabm.schedules import MAX_INFUSIONS
from cikabm.simulation import Simulation, initial_tumour_sites

GB = 2**30


def _parts(est: resources.ResourceEstimate) -> dict[str, float]:
    return {p.name: p.bytes for p in [*est.held, *est.transient]}


@pytest.mark.parametrize("shape", [[57, 41], [13, 17, 11]])
def test_the_state_parts_are_the_arrays_a_simulation_allocates(shape):
    sc = make_scenario(lattice={"shape": shape}, effectors={"capacity": 777},
                       time={"duration_days": 1.0, "record_every_hours": 3.0})
    sim = Simulation(sc, seed=1)
    real = memory_footprint(sim)
    parts = _parts(estimate_region(sc))
    other_small = real["other_state_bytes"] - sim.row_counts.nbytes  # counters, kills, timers: bytes
    assert parts["lattice"] == real["lattice_bytes"] + real["field_bytes"] + sim.row_counts.nbytes
    assert 0 <= other_small < 1024
    assert parts["effectors"] == real["effector_bytes"] == 777 * resources.EFFECTOR_BYTES
    assert parts["per-step inputs"] == sim.disc.mean_cik_arrivals.nbytes
    assert parts["records"] == sim.records.nbytes * resources.RECORD_COPIES
    assert sim.records.shape[1] == core.N_REC


@pytest.mark.parametrize("pattern", ["ball", "scattered"])
def test_the_estimate_covers_what_a_run_and_its_results_take(tmp_path, pattern):
    """The memory a run allocates (tracemalloc peak, run and writing its results, a 1500 x 1500 lattice)
    is below the estimate less the interpreter's base, and not far below it."""
    sc = make_scenario(lattice={"shape": [1500, 1500]},
                       tumour={"initial_cells": 5000, "initial_pattern": pattern},
                       time={"duration_days": 0.25, "record_every_hours": 2.0})
    Simulation(make_scenario(), seed=1).run(progress=False, n_snapshots=2)  # compile before measuring
    tracemalloc.start()
    try:
        results = Simulation(sc, seed=1).run(progress=False, n_snapshots=4)
        results.write(tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    predicted = estimate(sc).total_bytes - resources.BASE_BYTES
    print(f"{pattern}: peak {peak / 2**20:.0f} MB, estimate less base {predicted / 2**20:.0f} MB")
    assert peak <= predicted
    assert predicted <= 4 * peak + resources.FIGURE_BYTES


def test_a_scenario_beyond_the_memory_is_refused_naming_its_keys():
    sc = make_scenario(lattice={"shape": [20000, 20000]})
    with pytest.raises(ScenarioError, match=r"more than this machine's 4 GB: lattice\.shape = \[20000, 20000\]"):
        check_fits(sc, "big.toml", memory_bytes=4 * GB)
    assert check_fits(sc, "big.toml", memory_bytes=64 * GB).total_bytes > 4 * GB


def test_validate_refuses_what_the_machine_cannot_hold(tmp_path, capsys, monkeypatch):
    """The reliability pass's cases: a 2**31-site lattice (107-141 GB) and a 4-line file of 24.5 GB of
    records, on a machine of 8 GB: exit 2, naming the keys."""
    monkeypatch.setattr(resources, "machine_memory_bytes", lambda: 8 * GB)
    cases = {
        "[lattice]\nshape = [46340, 46340]\n": "lattice.shape = [46340, 46340]",
        "[time]\nduration_days = 36500.0\ndt_minutes = 0.6\nrecord_every_hours = 0.01\n":
            "time.duration_days / time.record_every_hours",
        "[lattice]\nshape = [1290, 1290, 1290]\n": "lattice.shape = [1290, 1290, 1290]",
    }
    for text, named in cases.items():
        path = tmp_path / "s.toml"
        path.write_text(text, encoding="utf-8")
        assert main(["validate", str(path)]) == 2
        err = capsys.readouterr().err
        assert named in err and "more than this machine's 8 GB" in err, err


def test_validate_prints_the_estimate(capsys):
    root = Path(__file__).resolve().parents[1]
    assert main(["validate", str(root / "scenarios" / "teaching_mhc_loss.toml")]) == 0
    out = capsys.readouterr().out
    assert "needs about" in out and "of memory" in out and "lattice updates on one thread" in out


def test_validating_a_long_run_allocates_no_per_step_array():
    """1e8 steps: validate's text is built without the per-step inputs (it took 1.8 GB)."""
    from cikabm.cli_text import validate_text

    sc = scenario_from_dict({"time": {"duration_days": 6900.0, "dt_minutes": 0.1, "record_every_hours": 2400.0}})
    tracemalloc.start()
    try:
        text = validate_text(sc)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "99360000 steps" in text
    assert peak < 20 * 2**20


def test_a_schedule_has_a_bounded_number_of_infusions():
    phases = [{"count": 1000, "interval_days": 0.01}] * 2
    message = rf"\[dosing\]: phases hold 2000 infusions in all, more than {MAX_INFUSIONS}"
    with pytest.raises(ScenarioError, match=message):
        scenario_from_dict({"dosing": {"schedule": "custom", "phases": phases}})
    with pytest.raises(ValueError, match="more than 1000"):
        from cikabm.schedules import parse_schedule_spec

        parse_schedule_spec("lee2015x63")


def test_the_dose_marks_are_one_artist_however_many_doses():
    import matplotlib.pyplot as plt

    from cikabm.plotting import plot_populations

    sc = make_scenario(time={"duration_days": 2.0, "record_every_hours": 6.0})
    frame = Simulation(sc, seed=1).run(progress=False, n_snapshots=0).to_frame()
    counts = []
    for n in (2, MAX_INFUSIONS):
        fig, ax = plt.subplots()
        plot_populations(frame, infusion_days=np.linspace(0.0, 2.0, n), ax=ax)
        counts.append(len(ax.get_children()))
        plt.close(fig)
    assert counts[0] == counts[1]


def test_a_large_lattice_image_is_shown_at_most_max_image_edge_pixels_wide():
    import matplotlib.pyplot as plt

    from cikabm.plotting import MAX_IMAGE_EDGE, plot_snapshots
    from cikabm.simulation import Snapshot

    codes = np.zeros((3000, 2500), np.uint8)
    codes[1000:2000, 1000:2000] = 1
    fig, ax = plt.subplots()
    plot_snapshots([Snapshot(day=0.0, tumour=codes, effectors=np.full(codes.shape, -1, np.int8))], axes=[ax])
    image = ax.get_images()[0]
    assert max(image.get_array().shape[:2]) <= MAX_IMAGE_EDGE
    assert image.get_array().dtype == np.uint8
    assert ax.get_xlim() == (-0.5, 2499.5)
    plt.close(fig)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(3, 30), min_size=2, max_size=3), st.floats(0.0, 1.0))
def test_a_ball_is_the_sites_nearest_the_centre(shape, fill):
    """The initial ball (found in a growing box) is the ``initial_cells`` sites nearest the centre,
    ties by flat index, as sorting every site gives."""
    if len(shape) == 3:
        shape = [min(n, 12) for n in shape]
    count = round(fill * int(np.prod(shape)))
    sc = make_scenario(lattice={"shape": shape}, tumour={"initial_cells": count, "initial_pattern": "ball"})
    geom = Simulation(sc, seed=1).disc.geometry
    from cikabm.kernels.geometry import flat_index

    coords = np.indices(shape).reshape(len(shape), -1).T
    flat = flat_index(geom, coords)
    dist2 = ((coords - (np.asarray(shape) - 1) / 2.0) ** 2).sum(axis=1)
    expected = np.sort(flat[np.lexsort((flat, dist2))[:count]])
    np.testing.assert_array_equal(initial_tumour_sites(sc, geom, 1, 0), expected)

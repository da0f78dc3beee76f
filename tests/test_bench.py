"""The benchmark suite (``cikabm bench``, :mod:`cikabm.bench`): what it writes, never how fast.

One quick run on the tiny test configurations (``2d_64``, compared with Mesa,
and ``weak_2d_64``) with 1, 2 and 3 threads is shared by the tests of its
output; the configurations run in worker processes, as they always do.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import os
import platform
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import benchmark_script

from cikabm import bench
from cikabm.bench import suite
from cikabm.cli import main
from cikabm.kernels import STREAM_VERSION
from cikabm.kernels.core import PASS_NAMES

ROOT = Path(__file__).resolve().parents[1]
CYCLE_COUNTER = platform.machine().lower() in ("x86_64", "amd64")
HAVE_MESA = importlib.util.find_spec("mesa") is not None

#: Keys the issue documents for every configuration of bench.json.
CONFIG_KEYS = ("site_updates_per_s_per_thread", "effector_updates_per_s", "bytes_per_site", "threads", "efficiency")


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "run"
    rc, stdout, stderr = run_cli(["bench", "--quick", "--configs", "2d_64,weak_2d_64", "--threads", "1,2,3",
                                  "--machine", "test-box", "--out", str(out)])
    report = json.loads((out / "bench.json").read_text()) if (out / "bench.json").exists() else None
    return {"rc": rc, "stdout": stdout, "stderr": stderr, "out": out, "report": report}


def test_quick_run_writes_bench_json_with_documented_keys(quick_run: dict[str, Any]):
    assert quick_run["rc"] == 0, quick_run["stderr"]
    report = quick_run["report"]
    assert report["quick"] is True and report["stream_version"] == STREAM_VERSION
    assert report["machine"]["name"] == "test-box"
    for key in ("cpu", "cores", "python", "numba", "numpy", "threading_layer"):
        assert report["machine"][key], key
    assert report["command"].startswith("cikabm bench --quick --out ")
    assert set(report["configurations"]) == {"2d_64", "weak_2d_64"}
    for name, entry in report["configurations"].items():
        for key in CONFIG_KEYS:
            assert key in entry, (name, key)
        n = len(entry["threads"])
        for key in ("site_updates_per_s_per_thread", "effector_updates_per_s", "efficiency", "speedup",
                    "cell_hours_per_s"):
            assert len(entry[key]) == n and all(math.isfinite(v) and v > 0 for v in entry[key]), (name, key)
        assert 1.0 <= entry["bytes_per_site"] <= 64.0
        assert entry["bytes_per_effector"] > 0
        for run in entry["runs"]:
            assert len(run["seconds"]["all"]) == (2 if run["threads"] <= report["machine"]["cores"] else 1)
            assert run["seconds"]["min"] <= run["seconds"]["median"] <= run["seconds"]["max"]
        assert entry["efficiency"][0] == pytest.approx(1.0) == entry["efficiency_min"][0]
        t_min = [run["seconds"]["min"] for run in entry["runs"]]
        if entry["kind"] == "strong":
            assert entry["efficiency_min"] == pytest.approx([t_min[0] / (n * t) for n, t in
                                                             zip(entry["threads"], t_min, strict=True)])
        assert entry["compile_or_cache_load_seconds"] > 0
        assert entry["setup_seconds"]["median"] > 0
    assert report["configurations"]["2d_64"]["threads"] == [1, 2, 3]
    assert report["configurations"]["2d_64"]["oversubscribed"][-1] == (report["machine"]["cores"] < 3)
    weak = report["configurations"]["weak_2d_64"]
    assert [r["shape"] for r in weak["runs"]] == [[64, 64 * t] for t in weak["threads"]]
    assert report["compile"]["cold_compile_seconds"] is None  # not timed with --quick
    assert set(report["definitions"]) >= set(CONFIG_KEYS) - {"threads"}


def test_busy_machine_case_is_recorded(quick_run: dict[str, Any]):
    """One busy process beside unpinned workers: 1 thread and the default count, alternating, same results."""
    report = quick_run["report"]
    busy = report["busy_machine"]
    if len(os.sched_getaffinity(0)) < 2:
        assert "skipped" in busy
        return
    n = os.cpu_count()
    assert busy["configuration"] == "2d_64" and busy["default_threads"] == n
    assert [len(busy["seconds"][k]) for k in ("1", str(n))] == [bench.QUICK_REPEATS] * 2
    assert busy["ratio_default_over_one"] == pytest.approx(
        busy["median_seconds"][str(n)] / busy["median_seconds"]["1"])
    assert busy["within_limit"] == (busy["ratio_default_over_one"] <= busy["limit"])
    assert busy["identical"] is True and report["checks"]["identical_by_configuration"]["busy_machine"] is True
    assert "active_wait_seconds" not in busy  # the active-wait comparison is the full suite's
    assert "busy machine" in quick_run["stdout"]


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="CPU affinity is Linux-only")
def test_the_busy_loop_pins_itself_to_its_cpu_and_ends():
    import time

    from cikabm.bench.busy import busy_loop

    cpu = min(os.sched_getaffinity(0))
    proc = busy_loop(cpu)
    try:
        deadline = time.monotonic() + 10
        while os.sched_getaffinity(proc.pid) != {cpu} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.sched_getaffinity(proc.pid) == {cpu}
        assert proc.poll() is None  # still busy
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode is not None


def test_each_thread_count_runs_in_its_own_pinned_worker(quick_run: dict[str, Any]):
    report = quick_run["report"]
    for entry in report["configurations"].values():
        for run in entry["runs"]:
            assert run["numba_num_threads"] == run["threads"]  # a pool of exactly the threads used
            if hasattr(os, "sched_setaffinity"):
                assert len(run["pinned_cpus"]) == min(run["threads"], len(os.sched_getaffinity(0)))


def test_pin_cpus_restricts_this_process():
    if not hasattr(os, "sched_setaffinity"):
        assert bench.pin_cpus(1) is None
        return
    before = os.sched_getaffinity(0)
    try:
        chosen = bench.pin_cpus(1)
        assert len(chosen) == 1 and os.sched_getaffinity(0) == set(chosen) <= before
        assert set(bench.pin_cpus(len(before) + 5)) == os.sched_getaffinity(0)  # more than allowed: all
    finally:
        os.sched_setaffinity(0, before)


def test_results_identical_across_thread_counts(quick_run: dict[str, Any]):
    report = quick_run["report"]
    entry = report["configurations"]["2d_64"]
    assert entry["identical_across_threads"] is True
    assert len({run["digest"] for run in entry["runs"]}) == 1
    assert [run["threads"] for run in entry["runs"]] == [1, 2, 3]
    assert report["checks"]["identical_across_threads"] is True
    assert report["checks"]["repeats_identical"] is True
    assert report["configurations"]["weak_2d_64"]["identical_across_threads"] is None  # sizes differ


def test_plots_are_written(quick_run: dict[str, Any]):
    out: Path = quick_run["out"]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(bench.BENCH_FILES)
    assert quick_run["report"]["files"] == ["bench.json", "strong_scaling.png", "weak_scaling.png",
                                            "site_updates.png"]
    for name in names:
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_console_shows_progress_and_the_table(quick_run: dict[str, Any]):
    assert "2d_64: 3 thread(s), repeat 1/1" in quick_run["stderr"]
    assert "weak_2d_64 64x128" in quick_run["stderr"]
    stdout = quick_run["stdout"]
    assert "site upd/s/thr" in stdout
    assert "identical across threads 1/2/3: yes" in stdout
    assert f"results written to {quick_run['out']}" in stdout


@pytest.mark.skipif(not HAVE_MESA, reason="Mesa (extra 'teach') is not installed")
def test_mesa_comparison(quick_run: dict[str, Any]):
    report = quick_run["report"]
    entry = report["configurations"]["2d_64"]
    assert entry["mesa_ratio"] > 0
    assert report["mesa"]["mesa_ratio"] == entry["mesa_ratio"]
    cmp_ = entry["mesa"]
    assert cmp_["mesa_ratio"] == pytest.approx(cmp_["kernel_agent_updates_per_s"] / cmp_["mesa_agent_updates_per_s"])
    assert cmp_["steps_timed"] == entry["steps_timed"] and cmp_["warmup_steps"] == entry["warmup_steps"]
    kernel = cmp_["kernel_agent_updates"]
    assert kernel["agent_updates"] == kernel["tumour_cell_steps"] + kernel["effector_updates"] > 0
    # From the fastest repeat of each: the same agent counts over the minimum seconds.
    mesa_agents = statistics.median(c["agent_updates"] for c in cmp_["mesa_agent_updates"])
    assert cmp_["mesa_ratio_min"] == pytest.approx(
        (kernel["agent_updates"] / entry["runs"][0]["seconds"]["min"]) / (mesa_agents / cmp_["mesa_seconds"]["min"]))
    assert f"(fastest repeats: {cmp_['mesa_ratio_min']:.0f}x)" in quick_run["stdout"]
    assert "mesa_ratio" not in report["configurations"]["weak_2d_64"]
    assert "Mesa reference on 2d_64" in quick_run["stdout"]
    by_pass = cmp_["by_pass"]
    if CYCLE_COUNTER:
        assert list(by_pass) == list(PASS_NAMES)
        mesa_total = sum(v["mesa_seconds"] for v in by_pass.values())
        assert mesa_total == pytest.approx(cmp_["mesa_seconds"]["median"])  # the median, split over the passes
        assert sum(v["mesa_share"] for v in by_pass.values()) == pytest.approx(1.0)
        for v in by_pass.values():
            if v["kernel_seconds"] > 0:
                assert v["ratio"] == pytest.approx(v["mesa_seconds"] / v["kernel_seconds"])
        assert "pass by pass" in bench.markdown_report(report)
    else:
        assert by_pass is None


@pytest.mark.skipif(not CYCLE_COUNTER, reason="no time-stamp counter on this CPU")
def test_time_is_split_over_the_passes_of_the_step(quick_run: dict[str, Any]):
    for entry in quick_run["report"]["configurations"].values():
        for run in entry["runs"]:
            by_pass = run["seconds_by_pass"]
            assert list(by_pass) == list(PASS_NAMES)
            assert all(v >= 0 for v in by_pass.values())
            assert sum(by_pass.values()) == pytest.approx(run["seconds"]["median"])
            assert by_pass["tumour_propose"] > 0 and by_pass["effectors"] > 0
    assert "Where the time goes" in bench.markdown_report(quick_run["report"])


def test_simulation_time_by_pass():
    from cikabm import Simulation, scenario_from_dict

    sim = Simulation(scenario_from_dict(bench.bench_scenario((32, 32))))
    assert sim.time_by_pass() is None  # no step yet
    sim.advance(36)
    shares = sim.time_by_pass()
    if not CYCLE_COUNTER:
        assert shares is None
        return
    assert list(shares) == list(PASS_NAMES)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["record"] > 0  # step 36 is a record step
    before = sim.pass_ticks.copy()
    sim.advance(1)  # not a record step: the record pass gains nothing
    assert sim.pass_ticks[PASS_NAMES.index("record")] == before[PASS_NAMES.index("record")]
    assert (sim.pass_ticks >= before).all() and sim.pass_ticks.sum() > before.sum()


@pytest.fixture
def without_busy_case(monkeypatch: pytest.MonkeyPatch) -> None:
    """``cikabm bench`` without its busy-machine case (four more workers), for tests about something else:
    the shared quick run covers that case."""
    real = bench.run_suite
    monkeypatch.setattr(bench, "run_suite", lambda *args, **kwargs: real(*args, **kwargs, busy=False))


@pytest.mark.usefixtures("without_busy_case")
def test_without_mesa_the_comparison_is_skipped_and_said_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(suite, "mesa_available", lambda: False)
    out = tmp_path / "run"
    rc, stdout, stderr = run_cli(["bench", "--quick", "--configs", "2d_64", "--threads", "1", "--out", str(out)])
    assert rc == 0, stderr
    report = json.loads((out / "bench.json").read_text())
    assert report["mesa"]["available"] is False
    assert "Mesa is not installed" in report["mesa"]["note"]
    assert "mesa_ratio" not in report["configurations"]["2d_64"]
    assert "Mesa is not installed" in stdout and "Mesa is not installed" in stderr
    assert "strong_scaling.png" in report["files"] and "weak_scaling.png" not in report["files"]


@pytest.mark.skipif(not HAVE_MESA, reason="Mesa (extra 'teach') is not installed")
@pytest.mark.usefixtures("without_busy_case")
def test_a_failing_mesa_comparison_keeps_the_kernel_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    real = suite._run_worker

    def mesa_fails(spec: dict[str, Any], env: dict[str, str], emit: Any) -> dict[str, Any]:
        if spec["task"] == "mesa":
            raise bench.BenchError("benchmark worker for 2d_64 failed (exit status 1):\n  ImportError: mesa")
        return real(spec, env, emit)

    monkeypatch.setattr(suite, "_run_worker", mesa_fails)
    out = tmp_path / "run"
    rc, stdout, _ = run_cli(["bench", "--quick", "--configs", "2d_64", "--threads", "1", "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "bench.json").read_text())
    assert "the Mesa comparison failed" in report["mesa"]["note"] and "ImportError" in report["mesa"]["note"]
    assert "mesa_ratio" not in report["configurations"]["2d_64"]
    assert report["configurations"]["2d_64"]["site_updates_per_s_per_thread"][0] > 0
    assert "the Mesa comparison failed" in stdout


@pytest.mark.parametrize(("argv", "option", "value"), [
    (["--threads", "0"], "--threads", "'0'"),
    (["--threads", "1,two"], "--threads", "'two'"),
    (["--threads", ","], "--threads", "','"),
    (["--configs", "2d_256,2d_999"], "--configs", "'2d_999'"),
    (["--repeats", "0"], "--repeats", "0"),
    (["--machine", "a/b"], "--machine", "'a/b'"),
])
def test_bad_options_exit_2_naming_option_and_value(argv: list[str], option: str, value: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--quick", "--out", str(out), *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and value in err
    assert not out.exists()


def test_out_holding_other_files_is_refused_before_any_work(tmp_path: Path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    rc, _, stderr = run_cli(["bench", "--quick", "--configs", "2d_64", "--out", str(out)])
    assert rc == 2
    assert f"--out {out}" in stderr and "notes.txt" in stderr
    assert (out / "notes.txt").read_text() == "keep me"


def test_a_failed_worker_exits_1_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def fail(spec: dict[str, Any], env: dict[str, str], emit: Any) -> dict[str, Any]:
        raise bench.BenchError("benchmark worker for 2d_64 failed (exit status 1):\n  MemoryError")

    monkeypatch.setattr(suite, "_run_worker", fail)
    out = tmp_path / "run"
    rc, _, stderr = run_cli(["bench", "--quick", "--configs", "2d_64", "--out", str(out)])
    assert rc == 1
    assert "MemoryError" in stderr
    assert not out.exists()


def test_default_threads_cover_more_than_the_cores():
    assert bench.default_threads(1) == [1, 2]
    assert bench.default_threads(2) == [1, 2, 3]
    assert bench.default_threads(16) == [1, 2, 4, 8, 16, 17]


def test_configurations_are_valid_data():
    for name in (*bench.FULL_SET, *bench.QUICK_SET):
        assert name in bench.CONFIGS
    assert {"2d_256", "2d_1024", "2d_4096", "3d_128"} <= set(bench.FULL_SET)
    assert {"2d_256", "2d_1024"} <= set(bench.QUICK_SET)
    assert any(bench.CONFIGS[n].mesa for n in bench.QUICK_SET)
    assert any(bench.CONFIGS[n].kind == "weak" for n in bench.FULL_SET)
    config = bench.CONFIGS["weak_2d_512"]
    assert config.shape_for(3) == (512, 1536)
    assert bench.BenchConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="multiple of 36"):
        bench.BenchConfig("x", (32, 32), "x", steps=50)


def test_memory_and_digest_of_a_simulation():
    from cikabm import Simulation, scenario_from_dict

    sim = Simulation(scenario_from_dict(bench.bench_scenario((40, 40))))
    mem = bench.memory_footprint(sim)
    # 7 one-byte arrays per padded site + a coarse float64 field and its copy.
    assert 7.0 < mem["bytes_per_site"] < 16.0
    assert mem["bytes_per_effector"] == sum(a.itemsize for a in sim.effectors)
    assert mem["effector_capacity"] == 1000
    before = bench.state_digest(sim)
    assert bench.state_digest(sim) == before
    sim.advance(3)
    assert bench.state_digest(sim) != before


def test_run_suite_script_rewrites_the_readme_block(quick_run: dict[str, Any], tmp_path: Path):
    import shutil

    results = tmp_path / "results"
    shutil.copytree(quick_run["out"], results / "test-box")
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nbefore\n\n<!-- bench-results:begin -->\nold\n"
                      "<!-- bench-results:end -->\n\nafter\n")
    module = benchmark_script("run_suite")
    with contextlib.redirect_stdout(io.StringIO()):
        assert module.main(["--report-only", "--results", str(results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nbefore\n") and text.endswith("\n\nafter\n")
    assert "old" not in text
    assert "### test-box" in text
    assert "| 2d_64 (64x64) | 1 |" in text
    assert "![strong scaling](results/test-box/strong_scaling.png)" in text


def test_help_lists_the_configurations(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: cikabm bench")
    for name in bench.CONFIGS:
        assert name in out


def test_full_suite_pools_repeats_taken_in_rounds():
    """Without ``quick`` the repeats run in rounds of workers, thread counts (then Mesa) in turn; rounds are pooled."""
    messages: list[str] = []
    report = bench.run_suite(["2d_64"], quick=False, threads=[1, 2], repeats=2, cold_compile=False, busy=False,
                             progress=messages.append)
    entry = report["configurations"]["2d_64"]
    rounds = [m for m in messages if ": round " in m]
    mesa = [f"2d_64: round {r}/2, Mesa reference implementation" for r in (1, 2)] if HAVE_MESA else ["", ""]
    expected = ["2d_64: round 1/2, 1 thread(s)", "2d_64: round 1/2, 2 thread(s)", mesa[0],
                "2d_64: round 2/2, 1 thread(s)", "2d_64: round 2/2, 2 thread(s)", mesa[1]]
    assert rounds == [m for m in expected if m]
    if HAVE_MESA:  # one Mesa repeat per round, pooled
        cmp_ = entry["mesa"]
        assert len(cmp_["mesa_seconds"]["all"]) == 2
        assert len(cmp_["mesa_agent_updates"]) == 2
        assert sum(v["mesa_seconds"] for v in cmp_["by_pass"].values()) == pytest.approx(cmp_["mesa_seconds"]["median"])
    for run in entry["runs"]:
        assert len(run["seconds"]["all"]) == 2
        assert run["repeats_identical"] is True
        if CYCLE_COUNTER:
            assert sum(run["seconds_by_pass"].values()) == pytest.approx(run["seconds"]["median"])
    assert len(entry["setup_seconds"]["all"]) == 2
    assert entry["identical_across_threads"] is True


def test_rng_floor_script_writes_both_timings(tmp_path: Path):
    """benchmarks/rng_floor.py: the draws alone and the whole propose pass, on the same visited sites."""
    module = benchmark_script("rng_floor")
    out = tmp_path / "rng_floor.json"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert module.main(["--steps", "2", "--repeats", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert 0 < result["live_tumour_cells"] <= result["sites_visited_per_step"] <= 256 * 256
    for name in ("hash_only", "propose_pass"):
        assert result[name]["us_per_step"] > 0
        assert result[name]["ns_per_visited_site"] == pytest.approx(
            1e3 * result[name]["us_per_step"] / result["sites_visited_per_step"])
    assert "ns per visited site" in printed.getvalue()


def test_effector_floor_walk_moves_effectors_as_the_kernel_does():
    """The floor's walk is the rules' walk: effectors far apart, no tumour and no deaths, one step of the
    kernel's effector pass and of the floor's walk leave every position and heading the same."""
    from cikabm.kernels import core
    from cikabm.kernels.geometry import flat_index
    from cikabm.scenario import scenario_from_dict
    from cikabm.simulation import Simulation

    walk = benchmark_script("effector_floor").walk
    sim = Simulation(scenario_from_dict(bench.bench_scenario((64, 64))), threads=1)
    geom = sim.disc.geometry
    prm = sim.disc.params._replace(thr_eff_death=np.zeros_like(sim.disc.params.thr_eff_death))
    placed = sim.add_effectors(0, 16) + sim.add_effectors(3, 16)
    assert placed == 32
    lat, eff = sim.lattice, sim.effectors
    lat.cell[lat.cell != core.WALL] = core.EMPTY
    grid = np.array([(y, x) for y in range(4, 64, 16) for x in range(2, 64, 8)])  # at least 8 sites apart
    lat.has_effector[:] = 0
    eff.pos[:32] = flat_index(geom, grid)
    lat.has_effector[eff.pos[:32]] = 1
    eff.heading[:32] = np.arange(32) % (geom.n_neighbours + 1)  # some walking on, some about to turn
    pos, heading, has_effector = eff.pos.copy(), eff.heading.copy(), lat.has_effector.copy()
    walk(np.arange(32), pos, heading, eff.uid, eff.kind, has_effector, lat.cell, geom.offsets, geom.n_neighbours,
         geom.px, prm.thr_move, prm.thr_persist, sim.seed, sim.patient, 5, 1, prm.n_sub, False)
    core.effector_substeps(lat, eff, sim.counters, sim.kills, geom, prm, sim.ifn, sim.seed, sim.patient, 5,
                           core.effector_work(geom, prm, 1), 1)
    assert np.array_equal(eff.alive[:32], np.ones(32, np.uint8))
    assert not np.array_equal(pos[:32], flat_index(geom, grid))  # they walked
    assert np.array_equal(pos[:32], eff.pos[:32])
    assert np.array_equal(heading[:32], eff.heading[:32])
    assert np.array_equal(has_effector, lat.has_effector)


def test_effector_floor_script_writes_the_floors_and_the_step(tmp_path: Path):
    """benchmarks/effector_floor.py: both floors and the whole pass per effector sub-step, the step split."""
    out = tmp_path / "effector_floor.json"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert benchmark_script("effector_floor").main(["--configs", "2d_64", "--rounds", "1", "--steps", "2",
                                              "--out", str(out)]) == 0
    result = json.loads(out.read_text())["configs"]["2d_64"]
    assert result["effectors"] > 0
    for name in ("walk", "walk_contact", "effector_pass"):
        assert result[name]["ns_per_effector_substep_min"] > 0
    for name in ("walk", "walk_contact"):
        assert result[name]["share_of_effector_pass"] == pytest.approx(
            result[name]["ns_per_effector_substep_min"] / result["effector_pass"]["ns_per_effector_substep_min"])
    assert result["step"]["us_min"] > 0
    if CYCLE_COUNTER:
        assert sum(result["step"]["us_by_pass"].values()) == pytest.approx(result["step"]["us_min"])
        assert result["step"]["us_with_effectors_at_floor"] > 0
    assert "walk-and-contact floor" in printed.getvalue() or not CYCLE_COUNTER


@pytest.mark.parametrize(("repeats", "quick", "sizes"), [
    (9, False, [3, 3, 3]), (4, False, [2, 1, 1]), (2, False, [1, 1]), (1, False, [1]), (5, True, [5]),
])
def test_round_sizes_spread_the_repeats_over_rounds(repeats: int, quick: bool, sizes: list[int]):
    """The full suite's repeats go to at most ROUNDS workers per thread count, as evenly as they can."""
    assert bench.round_sizes(repeats, quick) == sizes
    assert sum(sizes) == repeats


def test_round_sizes_reject_no_repeats():
    with pytest.raises(ValueError, match="repeats 0"):
        bench.round_sizes(0, False)

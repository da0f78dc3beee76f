"""Each rule of the kernel on its own (docs/model.md, Submodels).

Two kinds of test: direct calls of the compiled passes in
:mod:`cikabm.kernels.core` on tiny hand-built lattices, and short
:class:`~cikabm.Simulation` runs whose records must obey a rule exactly (or,
for the statistical ones, within 4 standard deviations of a binomial or
Poisson count). Every run has a fixed seed.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import STILL, closed_neighbourhood_sizes, inject_effectors, make_scenario, run_scenario
from hypothesis import given, settings
from hypothesis import strategies as st

from cikabm import Simulation
from cikabm.convert import nkg2d_signal_table, threshold
from cikabm.kernels import core
from cikabm.kernels.geometry import flat_index, interior_view, make_geometry

ALWAYS = np.uint64(1) << np.uint64(32)  # threshold of probability 1
NEVER = np.uint64(0)
KINDS = ("tnk", "tcell", "nk", "ctl")
ALL_STILL = {k: STILL for k in KINDS}


# ------------------------------------------------------------------ helpers
def tiny_lattice(shape=(7, 7), neighbourhood="moore"):
    """An empty padded lattice of interior ``shape`` and its geometry."""
    geom = make_geometry(tuple(shape), neighbourhood, 4)
    lat, _ = core.allocate_state(geom, 0)
    return geom, lat


def key(i: int) -> np.uint64:
    return np.uint64(core.stream_key(3, 0, i, 77))


#: ``log(1 - p)`` of a probability of 1 (every draw succeeds) and of 0 (none does).
CERTAIN, IMPOSSIBLE = -1000.0, 0.0


def make_due(lat, step, p=1.0, rng=None, state=core.LIVE):
    """Make the cells in ``state`` due at ``step``, each with probability ``p``; the others not yet."""
    sites = np.flatnonzero(lat.cell == state)
    chosen = np.ones(sites.size, bool) if p >= 1.0 else rng.random(sites.size) < p
    lat.wake[sites] = np.where(chosen, step, step + 1)


def propose(lat, geom, step, death_share=0.0, clear_log_q=IMPOSSIBLE, due=True):
    """The propose pass at ``step`` (every live cell due unless ``due`` is False)."""
    if due:
        make_due(lat, step)
    core.tumour_propose(lat, geom, step, core.tumour_keys(3, 0, step), threshold(death_share), CERTAIN,
                        clear_log_q, False)


def resolve(lat, geom, step, thr_loss=NEVER, inherit_sd=0.0):
    core.tumour_resolve(lat, geom, step, core.tumour_keys(3, 0, step), np.uint64(thr_loss), inherit_sd, CERTAIN,
                        False)


def wall_mask(sim: Simulation) -> np.ndarray:
    geom = sim.disc.geometry
    inside = np.zeros(sim.lattice.cell.shape, bool)
    interior_view(inside, geom)[...] = True
    return ~inside


def check_invariants(sim: Simulation, walls: np.ndarray) -> None:
    """Occupancy and bookkeeping invariants that must hold after every step."""
    lat, eff, geom, prm = sim.lattice, sim.effectors, sim.disc.geometry, sim.disc.params
    # walls never change and never hold an effector
    assert np.all(lat.cell[walls] == core.WALL)
    assert not lat.has_effector[walls].any()
    # one tumour state per interior site
    assert np.isin(lat.cell[~walls], (core.EMPTY, core.LIVE, core.DYING)).all()
    assert np.isin(lat.mhc_lost, (0, 1)).all()
    # one effector per site, and has_effector is exactly the set of positions
    n = int(sim.counters[0])
    pos = eff.pos[:n]
    assert len(np.unique(pos)) == n
    assert not walls[pos].any()
    occupied = np.flatnonzero(lat.has_effector)
    np.testing.assert_array_equal(np.sort(pos), occupied)
    assert np.all(eff.alive[:n] == 1)
    # engaged targets are in the contact neighbourhood; caps hold
    target = eff.target[:n]
    engaged = target >= 0
    reach = pos[engaged, None] + geom.offsets[None, :]
    assert np.all((reach == target[engaged, None]).any(axis=1))
    assert np.all(eff.kills[:n] <= prm.kill_capacity)
    assert np.all(eff.granules[:n] <= prm.granules_max)
    # the IFN-gamma field is never negative
    assert np.all(sim.ifn >= 0.0)


BUSY = {
    "lattice": {"shape": [36, 36]},
    "tumour": {"initial_cells": 700, "division_rate_per_day": 2.0, "death_rate_per_day": 0.5,
               "clearance_time_hours": 3.0, "mhc_loss_per_division": 0.2,
               "initial_mhc_lost_fraction": 0.2},
    "homing": {"ctl_per_site_per_day": 0.1, "cik_per_site_per_day": 1e-11},
    "dosing": {"schedule": "lee2015"},
    "killing": {"granules_max": 2, "granule_regeneration_hours": 2.0, "kill_capacity": 4},
    "time": {"duration_days": 2.0},
}


# ------------------------------------------------------------------ contact inhibition and division
def test_surrounded_cell_never_proposes():
    geom, lat = tiny_lattice((7, 7))
    block = flat_index(geom, np.array([(y, x) for y in (2, 3, 4) for x in (2, 3, 4)]))
    lat.cell[block] = core.LIVE
    centre = flat_index(geom, np.array([3, 3]))[0]
    rim = block[block != centre]
    rim_proposed = 0
    for i in range(200):  # every cell draws "divide" every time
        propose(lat, geom, i)
        assert lat.proposal[centre] == 0
        rim_proposed += np.count_nonzero(lat.proposal[rim])
    assert rim_proposed == 200 * len(rim)  # the rim always finds an empty neighbour


@pytest.mark.parametrize("neighbourhood", ["moore", "von_neumann"])
def test_full_lattice_never_divides(neighbourhood):
    sc = make_scenario(lattice={"shape": [12, 12], "neighbourhood": neighbourhood},
                       tumour={"initial_cells": 144, "division_rate_per_day": 24.0,
                               "death_rate_per_day": 0.0},
                       time={"duration_days": 1.0})
    sim, frame = run_scenario(sc)
    assert (frame["tumour_total"] == 144).all()
    assert not sim.lattice.proposal.any()


@pytest.mark.parametrize("shape", [(9, 11), (5, 6, 7)])
@pytest.mark.parametrize("neighbourhood", ["moore", "von_neumann"])
def test_division_only_into_empty_sites(shape, neighbourhood):
    geom, lat = tiny_lattice(shape, neighbourhood)
    inside = np.flatnonzero(lat.cell == core.EMPTY)
    rng = np.random.default_rng(5)
    for trial in range(30):
        lat.cell[inside] = rng.choice([core.EMPTY, core.LIVE, core.DYING], size=inside.size,
                                      p=[0.45, 0.45, 0.10]).astype(np.uint8)
        lat.ligand[inside] = rng.integers(1, 256, inside.size, dtype=np.uint8)
        lat.wake[inside] = -1  # no dying cell due: none is cleared
        before = lat.cell.copy()
        ligand_before = lat.ligand.copy()
        propose(lat, geom, trial)
        src = np.flatnonzero(lat.proposal)
        assert np.all(before[src] == core.LIVE)
        tgt = src + geom.offsets[lat.proposal[src]]
        assert np.all(before[tgt] == core.EMPTY)  # only into empty neighbours
        # a cell with a proposal had an empty neighbour; a LIVE cell without one had none
        no_prop = inside[(before[inside] == core.LIVE) & (lat.proposal[inside] == 0)]
        nbh = no_prop[:, None] + geom.offsets[None, 1:]
        assert not (before[nbh] == core.EMPTY).any()
        resolve(lat, geom, trial)
        born = np.flatnonzero((before == core.EMPTY) & (lat.cell == core.LIVE))
        # one daughter per contested target, nothing else changes
        np.testing.assert_array_equal(born, np.unique(tgt))
        kept = before != core.EMPTY
        np.testing.assert_array_equal(lat.cell[kept], before[kept])
        np.testing.assert_array_equal(lat.ligand[kept], ligand_before[kept])
        # with no inheritance noise a daughter copies one of its proposers
        for t in born:
            parents = src[tgt == t]
            assert lat.ligand[t] in set(ligand_before[parents].tolist())


@settings(max_examples=60, deadline=None)
@given(shape=st.one_of(st.tuples(st.integers(3, 9), st.integers(3, 9)),
                       st.tuples(st.integers(3, 6), st.integers(3, 6), st.integers(3, 6))),
       neighbourhood=st.sampled_from(["moore", "von_neumann"]),
       density=st.floats(0.0, 1.0), p_death=st.floats(0.0, 0.5), p_clear=st.floats(0.0, 1.0),
       step=st.integers(0, 2**40))
def test_one_tumour_step_keeps_one_cell_per_site(shape, neighbourhood, density, p_death, p_clear, step):
    """Property: for any lattice, fill and probabilities, a propose + resolve pass only turns
    EMPTY into LIVE (one daughter per distinct target), LIVE into DYING, DYING into EMPTY."""
    geom, lat = tiny_lattice(shape, neighbourhood)
    inside = np.flatnonzero(lat.cell == core.EMPTY)
    rng = np.random.default_rng(step % 2**32)
    u = rng.random(inside.size)
    lat.cell[inside] = np.where(u < density, core.LIVE, np.where(u < density + 0.1, core.DYING, core.EMPTY))
    before = lat.cell.copy()
    step = step % 2**30  # (wake steps are int32)
    make_due(lat, step, 0.7, rng)  # each live cell has an event with probability 0.7, ...
    make_due(lat, step, p_clear, rng, state=core.DYING)  # ... each dying cell is cleared with p_clear
    propose(lat, geom, step, death_share=min(p_death, 0.7) / 0.7, due=False,
            clear_log_q=float(np.log1p(-p_clear)) if p_clear < 1.0 else CERTAIN)
    src = np.flatnonzero(lat.proposal)
    tgt = src + geom.offsets[lat.proposal[src]]
    resolve(lat, geom, step)
    after = lat.cell
    assert np.all(after[before == core.WALL] == core.WALL)
    changed = before != after
    moves = set(zip(before[changed].tolist(), after[changed].tolist(), strict=True))
    assert moves <= {(core.EMPTY, core.LIVE), (core.LIVE, core.DYING), (core.DYING, core.EMPTY),
                     (core.LIVE, core.EMPTY)}  # a cell may die and be cleared in one step
    assert np.all(before[src] == core.LIVE) and np.all(before[tgt] == core.EMPTY)
    born = np.flatnonzero((before == core.EMPTY) & (after == core.LIVE))
    np.testing.assert_array_equal(born, np.unique(tgt))


def test_contested_site_goes_to_one_proposer_chosen_fairly():
    """Eight cells whose only empty neighbour is the same site: one wins, uniformly."""
    geom, lat = tiny_lattice((3, 3))
    centre = flat_index(geom, np.array([1, 1]))[0]
    ring = centre + geom.offsets[1:]
    wins = np.zeros(8, int)
    n_trials = 1600
    for i in range(n_trials):
        lat.cell[ring] = core.LIVE
        lat.cell[centre] = core.EMPTY
        lat.ligand[ring] = np.arange(1, 9, dtype=np.uint8)
        propose(lat, geom, i)
        assert np.all(lat.proposal[ring] != 0)
        resolve(lat, geom, i)
        assert lat.cell[centre] == core.LIVE
        assert np.all(lat.cell[ring] == core.LIVE)
        wins[lat.ligand[centre] - 1] += 1
    expected = n_trials / 8
    chi2 = ((wins - expected) ** 2 / expected).sum()
    assert chi2 < 24.3  # chi-square, 7 degrees of freedom, p = 0.001


def test_death_and_clearance_in_the_propose_resolve_passes():
    """A death draws the clearance step: never (probability 0), or at once (probability 1: cleared in the
    same step's resolve pass)."""
    geom, lat = tiny_lattice((6, 6))
    inside = np.flatnonzero(lat.cell == core.EMPTY)
    lat.cell[inside] = core.LIVE
    propose(lat, geom, 1, death_share=1.0, clear_log_q=IMPOSSIBLE)
    assert np.all(lat.cell[inside] == core.DYING)
    assert not lat.proposal.any()
    assert np.all(lat.wake[inside] == core.NEVER)
    for step in (1, 2, 3):
        resolve(lat, geom, step)
        assert np.all(lat.cell[inside] == core.DYING)
    lat.cell[inside] = core.LIVE
    propose(lat, geom, 4, death_share=1.0, clear_log_q=CERTAIN)
    assert np.all(lat.cell[inside] == core.DYING) and np.all(lat.wake[inside] == 4)
    resolve(lat, geom, 4)
    assert np.all(lat.cell[inside] == core.EMPTY)


@pytest.mark.parametrize("p", [0.003, 0.1, 0.6])
def test_waiting_times_are_geometric(p):
    """``wait_steps`` is the first success of a Bernoulli(p) draw per step: P(W = k) = (1 - p)^(k-1) p, so
    P(W = 1) = p and E[W] = 1 / p (within 4 standard deviations)."""
    n = 200_000
    bits = np.empty(n, np.uint64)
    core.hash_sites(key(31), np.arange(n, dtype=np.int64), bits)
    log_q = float(np.log1p(-p))
    waits = np.array([core.wait_steps(b, log_q) for b in bits])
    assert waits.min() >= 1
    ones = np.count_nonzero(waits == 1)
    assert abs(ones - n * p) < 4 * np.sqrt(n * p * (1 - p))
    sd_mean = np.sqrt((1 - p) / p**2 / n)
    assert abs(waits.mean() - 1 / p) < 4 * sd_mean
    assert core.wait_steps(bits[0], 0.0) == core.NEVER  # probability 0: never



def test_hit_frequency_matches_probability():
    sites = np.arange(200_000, dtype=np.int64)
    bits = np.empty(sites.shape, np.uint64)
    core.hash_sites(key(9), sites, bits)
    for p in (0.001, 0.05, 0.5, 0.93):
        hits = np.count_nonzero((bits >> np.uint64(32)) < threshold(p))
        sd = np.sqrt(sites.size * p * (1 - p))
        assert abs(hits - sites.size * p) < 4 * sd, p
    assert core.hazard_to_probability(2.0, 0.25) == pytest.approx(1 - np.exp(-0.5), rel=1e-15)


# ------------------------------------------------------------------ invariants over many steps
@pytest.mark.parametrize("variant", ["walk_2d", "well_mixed_2d", "walk_3d_von_neumann"])
def test_occupancy_invariants_hold_every_step(variant):
    data = dict(BUSY)
    if variant == "well_mixed_2d":
        data["effectors"] = {"motility": "well_mixed"}
    if variant == "walk_3d_von_neumann":
        data["lattice"] = {"shape": [10, 12, 12], "neighbourhood": "von_neumann"}
        data["tumour"] = {**BUSY["tumour"], "initial_cells": 500}
    sim = Simulation(make_scenario(**data), threads=1)
    walls = wall_mask(sim)
    wall_values = [a[walls].copy() for a in sim.lattice]
    check_invariants(sim, walls)
    for _ in range(150):
        sim.advance(1)
        check_invariants(sim, walls)
    # wall sites keep every attribute they started with
    for before, arr in zip(wall_values, sim.lattice, strict=True):
        np.testing.assert_array_equal(arr[walls], before)
    # the last record (150 steps is a record step) agrees with the lattice it counts
    assert sim.step % sim.disc.record_every == 0
    row = sim.records[sim.step // sim.disc.record_every]
    # the run did what it should exercise
    assert row[core.REC_KILLS:core.REC_KILLS + 16].sum() > 10
    assert sim.counters[0] > 20
    live = sim.lattice.cell == core.LIVE
    assert row[core.REC_TUMOUR_MHC_PRESENT] == np.count_nonzero(live & (sim.lattice.mhc_lost == 0))
    assert row[core.REC_TUMOUR_MHC_LOST] == np.count_nonzero(live & (sim.lattice.mhc_lost == 1))
    assert row[core.REC_TUMOUR_DYING] == np.count_nonzero(sim.lattice.cell == core.DYING)
    kinds = np.bincount(sim.effectors.kind[:sim.counters[0]], minlength=4)
    np.testing.assert_array_equal(row[core.REC_EFFECTORS:core.REC_EFFECTORS + 4], kinds)


def test_cumulative_columns_never_decrease_and_ifn_is_non_negative():
    _, frame = run_scenario(make_scenario(**BUSY))
    cumulative = [c for c in frame.columns if c.startswith(("kills_", "arrivals_"))]
    cumulative.append("infusions_given")
    assert len(cumulative) > 30
    steps = frame[cumulative].diff().iloc[1:]
    assert (steps >= 0).all().all(), steps.min()[steps.min() < 0]
    assert (frame["ifn_mean"] >= 0).all()
    assert frame["ifn_mean"].iloc[1:].gt(0).all()  # engagements secrete
    assert frame["kills_total"].iloc[-1] == frame[[c for c in frame.columns if c.startswith(
        ("kills_perforin_", "kills_fas_"))]].iloc[-1].sum()


def test_no_engagement_means_no_ifn():
    """Effectors present but unable to kill (no granules, no FasL): no engagement, IFN stays 0."""
    no_fasl = {k: {"fasl": False} for k in KINDS}
    sc = make_scenario(**{**BUSY, "effectors": no_fasl,
                          "killing": {"granules_max": 0}})
    _, frame = run_scenario(sc)
    assert frame["arrivals_ctl"].iloc[-1] > 50
    assert (frame["kills_total"] == 0).all()
    assert (frame["effectors_engaged"] == 0).all()
    assert (frame["ifn_mean"] == 0).all()


def test_ifn_is_zero_without_effectors():
    sc = make_scenario(tumour={"initial_cells": 300, "division_rate_per_day": 1.0})
    sim, frame = run_scenario(sc)
    assert (frame["ifn_mean"] == 0).all()
    assert not sim.ifn.any()
    assert (frame[[c for c in frame.columns if c.startswith("effectors_")]] == 0).all().all()


# ------------------------------------------------------------------ MHC loss
def test_mhc_loss_probability_one_makes_every_daughter_lost():
    sc = make_scenario(lattice={"shape": [25, 25]},
                       tumour={"initial_cells": 1, "division_rate_per_day": 3.0,
                               "death_rate_per_day": 0.0, "mhc_loss_per_division": 1.0},
                       time={"duration_days": 3.0})
    _, frame = run_scenario(sc)
    assert frame["tumour_total"].iloc[-1] > 20
    assert (frame["tumour_mhc_present"] == 1).all()  # only the founder keeps MHC
    assert (frame["tumour_mhc_lost"] == frame["tumour_total"] - 1).all()


def test_mhc_loss_probability_zero_loses_nothing():
    sc = make_scenario(tumour={"initial_cells": 100, "division_rate_per_day": 2.0,
                               "mhc_loss_per_division": 0.0},
                       homing={"ctl_per_site_per_day": 0.005})
    _, frame = run_scenario(sc)
    assert frame["tumour_total"].iloc[-1] > 200
    assert (frame["tumour_mhc_lost"] == 0).all()


def test_mhc_loss_is_irreversible_even_under_ifn():
    sc = make_scenario(tumour={"initial_cells": 200, "division_rate_per_day": 1.0,
                               "initial_mhc_lost_fraction": 1.0, "mhc_loss_per_division": 0.0},
                       homing={"ctl_per_site_per_day": 0.05},
                       ifn={"secretion_per_hour": 50.0})
    sim = Simulation(sc, threads=1)
    inject_effectors(sim, core.KIND_TNK, 8)  # NKG2D killers engage and secrete IFN-gamma
    frame = sim.run(progress=False, n_snapshots=0).to_frame()
    assert frame["ifn_mean"].max() > 0
    assert frame["kills_tnk"].iloc[-1] > 0
    assert (frame["tumour_mhc_present"] == 0).all()
    assert frame["tumour_mhc_lost"].iloc[-1] > 0


def test_mhc_state_is_inherited_by_each_clone():
    """Two founders far apart, one MHC-lost: each clone keeps its founder's state."""
    sc = make_scenario(lattice={"shape": [21, 60]},
                       tumour={"initial_cells": 0, "division_rate_per_day": 2.0,
                               "death_rate_per_day": 0.0, "mhc_loss_per_division": 0.0},
                       time={"duration_days": 2.5})
    sim = Simulation(sc, threads=1)
    geom = sim.disc.geometry
    left, right = flat_index(geom, np.array([[10, 12], [10, 47]]))
    core.seed_tumour(sim.lattice, np.array([left, right]), 1, 0, 0.6, 0.0, 0.8, 0.0, 0.4, 0.0, 0.0,
                     sim.disc.params.event_log_q)
    sim.lattice.mhc_lost[left] = 1
    sim.advance(sim.disc.n_steps)
    live = interior_view(sim.lattice.cell, geom) == core.LIVE
    lost = interior_view(sim.lattice.mhc_lost, geom) == 1
    assert live[:, :30].sum() > 10 and live[:, 30:].sum() > 10
    assert not live[:, 28:32].any()  # the clones never met
    assert np.all(lost[:, :30][live[:, :30]])
    assert not np.any(lost[:, 30:][live[:, 30:]])


# ------------------------------------------------------------------ recognition
def test_recognition_rate_formula():
    rr = core.recognition_rate
    h = 0.7
    # CTL: TCR only, proportional to M, zero after MHC loss
    assert rr(h, 0.0, 0.0, 0.0, 2.0) == 0.0
    assert rr(h, 0.5, 0.0, 0.0, 2.0) == pytest.approx(1.0)
    assert rr(h, 1.0, 0.0, 0.0, 2.0) == pytest.approx(2.0)
    # NKG2D without missing-self weight does not depend on M
    assert rr(h, 0.0, 2.0, 0.0, 0.0) == pytest.approx(rr(h, 1.0, 2.0, 0.0, 0.0)) == pytest.approx(1.4)
    # missing self: MHC loss raises NK recognition
    nk = [rr(h, m, 2.0, 0.8, 0.0) for m in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(a > b for a, b in itertools.pairwise(nk))
    assert nk[0] == pytest.approx(1.4) and nk[-1] == pytest.approx(1.4 * 0.2)
    # activated T: both terms add
    assert rr(h, 0.6, 0.5, 0.0, 0.5) == pytest.approx(0.5 * h + 0.5 * 0.6)


def test_effective_mhc_and_nkg2d_signal():
    em = core.effective_mhc
    assert em(1.0, np.uint8(1), 0.9) == 0.0  # loss is genetic: IFN cannot restore it
    assert em(0.0, np.uint8(1), 1.0) == 0.0
    assert em(102 / 255, np.uint8(0), 0.0) == pytest.approx(0.4)
    assert em(102 / 255, np.uint8(0), 0.5) == pytest.approx(0.4 + 0.6 * 0.5)
    assert core.effective_level(0.25, 0.5) == 0.25 + 0.75 * 0.5  # Fas alike
    assert core.ifn_response(0.0, 2.0) == 0.0 and core.ifn_response(2.0, 2.0) == 0.5
    table = nkg2d_signal_table(0.3, 2.0)
    assert table[0] == 0.0 and np.all(np.diff(table) > 0)
    assert table[255] == pytest.approx(1 / (1 + 0.09))
    assert np.interp(0.3, np.arange(256) / 255, table) == pytest.approx(0.5, abs=2e-3)


STATIC = {  # no growth, no death, nothing cleared, fixed and uniform cell attributes
    "lattice": {"shape": [50, 50]},
    "tumour": {"initial_cells": 1000, "initial_pattern": "scattered", "division_rate_per_day": 0.0,
               "death_rate_per_day": 0.0, "clearance_time_hours": 1e6, "ligand_mean": 0.8,
               "ligand_sd": 0.0, "mhc_mean": 0.8, "mhc_sd": 0.0, "fas_mean": 0.4, "fas_sd": 0.0,
               "initial_mhc_lost_fraction": 0.5, "mhc_loss_per_division": 0.0},
    # Rates fixed here, not the calibrated defaults: these tests are about the rules. Every T cell's
    # TCR recognises the tumour, and no effector dies (no background death, no activation-induced death).
    "effectors": {"motility": "well_mixed",
                  "tnk": {"death_rate_per_day": 0.0, "nkg2d_rate_per_hour": 2.0, "tcr_rate_per_hour": 0.0},
                  "tcell": {"death_rate_per_day": 0.0, "nkg2d_rate_per_hour": 0.5, "tcr_rate_per_hour": 0.5,
                            "tcr_recognising_fraction": 1.0},
                  "nk": {"death_rate_per_day": 0.0, "nkg2d_rate_per_hour": 2.0},
                  "ctl": {"death_rate_per_day": 0.0}},
    "killing": {"kill_capacity": 255, "granules_max": 255, "perforin_time_minutes": 10.0,
                "activation_death_per_kill": 0.0},
    "ifn": {"secretion_per_hour": 0.0},
    "time": {"duration_days": 0.5},
}
#: a seed whose scattered seeding works in any order (see test_scattered_seeding_any_seed_order)
STATIC_SEED = 2


def kills_of(frame, kind: str, mhc: str):
    """Cumulative kills by effector ``kind`` of cells in MHC state ``mhc``, both mechanisms."""
    return frame[f"kills_perforin_{kind}_{mhc}"] + frame[f"kills_fas_{kind}_{mhc}"]


def run_static(kind: int, n_effectors: int, **overrides):
    sc = make_scenario(**{**STATIC, **overrides})
    sim = Simulation(sc, seed=STATIC_SEED, threads=1)
    live = sim.lattice.cell == core.LIVE
    n_lost = int(np.count_nonzero(live & (sim.lattice.mhc_lost == 1)))
    n_present = int(np.count_nonzero(live)) - n_lost
    inject_effectors(sim, kind, n_effectors)
    frame = sim.run(progress=False, n_snapshots=0).to_frame()
    return sim, frame, n_present, n_lost


def cumulative_hazard(killed: float, n: float) -> tuple[float, float]:
    """Cumulative kill hazard ``-log(1 - killed/n)`` of a group and the sd of its log.

    Delta method on a binomial fraction: ``sd(H) = sqrt(p / ((1 - p) n))``.
    """
    p = killed / n
    h = -np.log1p(-p)
    return h, np.sqrt(p / ((1 - p) * n)) / h


def per_capita_hazard_ratio(kills_a, n_a, kills_b, n_b):
    """Ratio of the cumulative kill hazards of groups a and b, and the sd of its log."""
    h_a, sd_a = cumulative_hazard(kills_a, n_a)
    h_b, sd_b = cumulative_hazard(kills_b, n_b)
    return h_a / h_b, np.hypot(sd_a, sd_b)


def test_ctl_never_kills_mhc_lost_cells():
    _, frame, n_present, n_lost = run_static(core.KIND_CTL, 30, ifn={"secretion_per_hour": 20.0})
    assert n_lost > 400 and n_present > 400
    last = frame.iloc[-1]
    assert kills_of(frame, "ctl", "mhc_present").iloc[-1] > 50
    assert last["kills_perforin_ctl_mhc_lost"] == 0 and last["kills_fas_ctl_mhc_lost"] == 0
    assert frame["ifn_mean"].max() > 0  # even with IFN-gamma raising M elsewhere


def test_ctl_kills_nothing_when_every_cell_is_mhc_lost():
    tumour = {**STATIC["tumour"], "initial_mhc_lost_fraction": 1.0}
    _, frame, _, n_lost = run_static(core.KIND_CTL, 100, tumour=tumour)
    assert n_lost == 1000
    assert (frame["kills_total"] == 0).all()
    assert (frame["effectors_engaged"] == 0).all()


def test_nk_missing_self_kills_mhc_lost_cells_more():
    """Equal ligand, w = 0.8, M = 0.8: the per-cell hazard ratio lost : present is 1/(1 - 0.64)."""
    _, frame, n_present, n_lost = run_static(core.KIND_NK, 20)
    last = frame.iloc[-1]
    k_lost = kills_of(frame, "nk", "mhc_lost").iloc[-1]
    k_present = kills_of(frame, "nk", "mhc_present").iloc[-1]
    assert last["kills_nk"] == last["kills_total"]
    assert k_lost > k_present > 20
    ratio, sd_log = per_capita_hazard_ratio(k_lost, n_lost, k_present, n_present)
    expected = 1 / (1 - 0.8 * 0.8)
    assert abs(np.log(ratio / expected)) < 4 * sd_log, (ratio, expected)


@pytest.mark.parametrize("kind", [core.KIND_TNK, core.KIND_TCELL])
def test_nkg2d_kinds_kill_mhc_lost_cells(kind):
    """T-NK (pure NKG2D) has no MHC preference; activated T adds TCR, so prefers MHC-present."""
    _, frame, n_present, n_lost = run_static(kind, 20 if kind == core.KIND_TNK else 40)
    key = KINDS[kind]
    k_lost = kills_of(frame, key, "mhc_lost").iloc[-1]
    k_present = kills_of(frame, key, "mhc_present").iloc[-1]
    assert k_lost > 20
    ratio, sd_log = per_capita_hazard_ratio(k_lost, n_lost, k_present, n_present)
    h = nkg2d_signal_table(0.3, 2.0)[round(0.8 * 255)]
    if kind == core.KIND_TNK:
        expected = 1.0
    else:  # 0.5 h / (0.5 h + 0.5 M)
        expected = (0.5 * h) / (0.5 * h + 0.5 * 0.8)
    assert abs(np.log(ratio / expected)) < 4 * sd_log, (ratio, expected)


# ------------------------------------------------------------------ mechanisms, granules, capacity
def test_no_granules_and_no_fasl_means_no_kills():
    no_fasl = {k: {"fasl": False, "death_rate_per_day": 0.0} for k in KINDS}
    _, frame, _, _ = run_static(core.KIND_TNK, 300, killing={"granules_max": 0},
                                effectors={"motility": "well_mixed", **no_fasl})
    assert (frame["kills_total"] == 0).all()
    assert (frame["effectors_engaged"] == 0).all()


def test_without_granules_only_fas_kills_and_only_above_the_fas_threshold():
    sc = make_scenario(**{**STATIC, "killing": {"granules_max": 0, "fas_threshold": 0.5,
                                                "fas_time_hours": 0.5, "kill_capacity": 255}})
    sim = Simulation(sc, seed=STATIC_SEED, threads=1)
    cells = np.flatnonzero(sim.lattice.cell == core.LIVE)
    high = cells[::2]
    low = cells[1::2]
    sim.lattice.fas[high] = round(0.6 * 255)
    sim.lattice.fas[low] = round(0.4 * 255)
    inject_effectors(sim, core.KIND_TNK, 40)
    frame = sim.run(progress=False, n_snapshots=0).to_frame()
    last = frame.iloc[-1]
    assert (frame["kills_perforin"] == 0).all()
    assert last["kills_fas"] > 50
    assert np.all(sim.lattice.cell[low] == core.LIVE)  # below threshold: never killed
    assert np.count_nonzero(sim.lattice.cell[high] != core.LIVE) == last["kills_fas"]


def test_granules_are_used_by_perforin_kills_and_then_fas_takes_over():
    """Two granules, no regeneration within the run: at most two perforin kills per effector."""
    killing = {"granules_max": 2, "granule_regeneration_hours": 1e9, "kill_capacity": 255,
               "fas_threshold": 0.0, "fas_time_hours": 1.0}
    sim, frame, _, _ = run_static(core.KIND_TNK, 100, killing=killing)
    last = frame.iloc[-1]
    assert 0 < last["kills_perforin"] <= 2 * 100
    assert last["kills_fas"] > 0
    assert last["kills_perforin"] > 150  # most effectors spent both granules
    n = int(sim.counters[0])
    assert np.all(sim.effectors.granules[:n] <= 2)


@pytest.mark.parametrize("capacity", [0, 1, 3])
def test_kill_capacity_caps_kills_per_effector(capacity):
    sc = make_scenario(lattice={"shape": [40, 40]},
                       tumour={"initial_cells": 1000, "division_rate_per_day": 0.5},
                       homing={"ctl_per_site_per_day": 0.05},
                       killing={"kill_capacity": capacity, "perforin_time_minutes": 5.0,
                                "activation_death_per_kill": 0.0},
                       effectors={"ctl": {"death_rate_per_day": 0.0}},
                       time={"duration_days": 1.5})
    sim, frame = run_scenario(sc)
    arrivals = frame[[f"arrivals_{k}" for k in KINDS]].sum(axis=1)
    assert arrivals.iloc[-1] > 80
    assert (frame["kills_total"] <= capacity * arrivals).all()
    n = int(sim.counters[0])
    assert np.all(sim.effectors.kills[:n] <= capacity)
    if capacity == 0:
        assert (frame["kills_total"] == 0).all()
        assert (frame["effectors_exhausted"] == frame["effectors_ctl"]).all()
    else:
        assert frame["effectors_exhausted"].iloc[-1] > 0  # the cap binds
        exhausted = np.count_nonzero(sim.effectors.kills[:n] >= capacity)
        assert frame["effectors_exhausted"].iloc[-1] == exhausted
    # every kill is attributed to a live effector (no death) of the CTL kind
    assert frame["kills_total"].iloc[-1] == sim.effectors.kills[:n].sum() == frame["kills_ctl"].iloc[-1]


# ------------------------------------------------------------------ effector supply and death
def test_effector_death_is_exponential():
    rate = 3.0  # per day
    n0 = 3000
    sc = make_scenario(lattice={"shape": [80, 80]}, tumour={"initial_cells": 0},
                       effectors={"ctl": {"death_rate_per_day": rate}},
                       time={"duration_days": 1.0, "record_every_hours": 2.0})
    sim = Simulation(sc, threads=1)
    inject_effectors(sim, core.KIND_CTL, n0)
    frame = sim.run(progress=False, n_snapshots=0).to_frame()
    t = frame["time_days"].to_numpy()
    alive = frame["effectors_ctl"].to_numpy()
    p = np.exp(-rate * t)
    sd = np.sqrt(n0 * p * (1 - p))
    assert alive[0] == n0
    assert np.all(np.abs(alive - n0 * p) <= 4 * sd + 1e-9), np.c_[alive, n0 * p]
    assert np.all(np.diff(alive) <= 0)
    # the fitted decay rate
    fitted = -np.log(alive[-1] / n0) / t[-1]
    assert fitted == pytest.approx(rate, rel=4 * np.sqrt((1 - p[-1]) / (n0 * p[-1])) / (rate * t[-1]))


def _arrivals(frame):
    return frame[[f"arrivals_{k}" for k in KINDS]].sum(axis=1)


def _live_effectors(frame):
    return frame[[f"effectors_{k}" for k in KINDS]].sum(axis=1)


def test_without_death_every_arrival_stays():
    no_death = {k: {"death_rate_per_day": 0.0} for k in KINDS}
    sc = make_scenario(**{**BUSY, "effectors": no_death,
                          "killing": {**BUSY["killing"], "activation_death_per_kill": 0.0}})
    _, frame = run_scenario(sc)
    assert (frame["arrivals_dropped"] == 0).all()
    assert (_arrivals(frame) == _live_effectors(frame)).all()
    for k in KINDS:
        assert (frame[f"arrivals_{k}"] == frame[f"effectors_{k}"]).all(), k
    assert frame["arrivals_tnk"].iloc[-1] > 0 and frame["arrivals_ctl"].iloc[-1] > 0


def test_with_death_arrivals_minus_live_is_a_cumulative_death_count():
    fast_death = {k: {"death_rate_per_day": 2.0} for k in KINDS}
    sc = make_scenario(**{**BUSY, "effectors": fast_death})
    _, frame = run_scenario(sc)
    deaths = _arrivals(frame) - _live_effectors(frame)
    assert (deaths >= 0).all()
    assert (deaths.diff().iloc[1:] >= 0).all()
    assert deaths.iloc[-1] > 50


def test_capacity_overflow_is_dropped_and_counted():
    sc = make_scenario(homing={"ctl_per_site_per_day": 0.5},
                       effectors={"capacity": 40, "ctl": {"death_rate_per_day": 0.0}},
                       killing={"activation_death_per_kill": 0.0}, time={"duration_days": 0.5})
    _, frame = run_scenario(sc)
    assert frame["effectors_ctl"].max() == 40
    assert (frame["arrivals_ctl"] == frame["effectors_ctl"]).all()
    assert frame["arrivals_dropped"].iloc[-1] > 0
    # expected arrivals 0.5 / site / day * 900 sites * 0.5 day = 225: placed + dropped
    total = frame["arrivals_ctl"].iloc[-1] + frame["arrivals_dropped"].iloc[-1]
    assert abs(total - 225) < 4 * np.sqrt(225)


# ------------------------------------------------------------------ kill bookkeeping
def test_every_kill_turns_a_live_cell_into_a_dying_one():
    _, frame, _, _ = run_static(core.KIND_TNK, 40)
    assert frame["kills_total"].iloc[-1] > 100
    assert (frame["tumour_dying"] == frame["kills_total"]).all()  # nothing is cleared
    assert (frame["tumour_total"] + frame["tumour_dying"] == 1000).all()


def test_killed_cells_are_cleared_and_never_counted_twice():
    tumour = {**STATIC["tumour"], "clearance_time_hours": 1.0}
    _, frame, _, _ = run_static(core.KIND_TNK, 40, tumour=tumour)
    assert frame["kills_total"].iloc[-1] > 100
    assert (frame["tumour_total"] + frame["kills_total"] == 1000).all()
    assert (frame["tumour_dying"] <= frame["kills_total"]).all()
    assert frame["tumour_dying"].iloc[-1] < frame["kills_total"].iloc[-1]  # clearance happened


def test_kill_hazard_follows_contact_neighbourhood():
    """A cell's kill chance scales with how many effector positions can reach it: edge cells
    (6 positions in a Moore lattice) are killed less often than interior ones (9)."""
    sim, _, _, _ = run_static(core.KIND_TNK, 12, lattice={"shape": [40, 40]},
                                  tumour={**STATIC["tumour"], "initial_cells": 800})
    cells = np.flatnonzero(np.isin(sim.lattice.cell, (core.LIVE, core.DYING)))  # nothing is cleared
    reach = closed_neighbourhood_sizes(sim, cells)
    killed = sim.lattice.cell[cells] == core.DYING
    inner, edge = killed[reach == 9], killed[reach == 6]
    assert edge.size > 50 and 0.1 < inner.mean() < 0.9
    ratio, sd_log = per_capita_hazard_ratio(edge.sum(), edge.size, inner.sum(), inner.size)
    assert abs(np.log(ratio / (6 / 9))) < 4 * sd_log, ratio


def test_all_still_kinds_use_one_substep():
    sc = make_scenario(effectors=ALL_STILL)
    assert Simulation(sc).disc.params.n_sub == 1


# ------------------------------------------------------------------ clonal TCR, blocking, activation-induced death
@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_tcr_clone_is_drawn_once_at_arrival_with_its_share(fraction):
    sc = make_scenario(STATIC, effectors={**STATIC["effectors"],
                                          "tcell": {**STATIC["effectors"]["tcell"],
                                                    "tcr_recognising_fraction": fraction}})
    sim = Simulation(sc, seed=STATIC_SEED, threads=1)
    n = 2000
    inject_effectors(sim, core.KIND_TCELL, n)
    matched = sim.effectors.tcr_match[:n].copy()
    sd = np.sqrt(n * fraction * (1 - fraction))
    assert abs(matched.sum() - n * fraction) <= 4 * sd + 1e-9
    sim.run(progress=False, n_snapshots=0)
    alive = sim.effectors.uid[: int(sim.counters[0])]
    assert np.array_equal(sim.effectors.tcr_match[: int(sim.counters[0])], matched[alive])  # kept for life


def test_only_recognising_t_cells_kill_through_their_tcr():
    """TCR-only CD3+CD56- cells (NKG2D 0): kills come from cells whose clone recognises the tumour."""
    tcell = {**STATIC["effectors"]["tcell"], "nkg2d_rate_per_hour": 0.0, "tcr_rate_per_hour": 2.0,
             "tcr_recognising_fraction": 0.3}
    sim, frame, _, _ = run_static(core.KIND_TCELL, 300, effectors={**STATIC["effectors"], "tcell": tcell})
    n = int(sim.counters[0])
    kills, matched = sim.effectors.kills[:n], sim.effectors.tcr_match[:n]
    assert kills[matched == 1].sum() > 50
    assert kills[matched == 0].sum() == 0
    assert kills_of(frame, "tcell", "mhc_lost").iloc[-1] == 0  # and never an MHC-I-lost target


@pytest.mark.parametrize("blocked, kind, killed", [("nkg2d_blocked", core.KIND_NK, False),
                                                    ("nkg2d_blocked", core.KIND_CTL, True),
                                                    ("tcr_blocked", core.KIND_CTL, False),
                                                    ("tcr_blocked", core.KIND_NK, True)])
def test_blocking_a_receptor_removes_exactly_its_killing(blocked, kind, killed):
    sim, frame, _, _ = run_static(kind, 100, killing={**STATIC["killing"], blocked: True})
    assert (frame["kills_total"].iloc[-1] > 20) == killed
    prm = sim.disc.params
    rates = prm.nkg2d_rate if blocked == "nkg2d_blocked" else prm.tcr_rate
    assert np.all(rates == 0.0)


@pytest.mark.parametrize("p_death", [0.3, 1.0])
def test_activation_induced_death_follows_kills(p_death):
    """No background death: every effector lost died right after a kill, with probability p per kill."""
    n0 = 400
    sim, frame, _, _ = run_static(core.KIND_CTL, n0,
                                  killing={**STATIC["killing"], "activation_death_per_kill": p_death})
    kills = int(frame["kills_total"].iloc[-1])
    died = n0 - int(frame["effectors_ctl"].iloc[-1])
    assert kills > 100
    sd = np.sqrt(kills * p_death * (1 - p_death))
    assert abs(died - kills * p_death) <= 4 * sd + 1e-9, (died, kills)
    n = int(sim.counters[0])
    if p_death == 1.0:
        assert died == kills and np.all(sim.effectors.kills[:n] == 0)  # nobody survives a kill


@pytest.mark.parametrize("shape", [(100, 100), (24, 24, 24)])
def test_walking_effectors_do_not_drift(shape):
    """Effectors walking on an empty lattice stay spread evenly: their mean position stays within 4
    standard deviations of the centre (sd = side / sqrt(12 n) for n independent uniform positions).
    With one fixed colour-class order they drifted: the mean row of 2,000 CTLs on 100x100 moved from 48
    to 34 in 2 days (later classes step into the sites earlier ones have just left)."""
    sc = make_scenario(lattice={"shape": list(shape)}, tumour={"initial_cells": 0},
                       time={"duration_days": 3.0, "record_every_hours": 24.0})
    sim = Simulation(sc, seed=4, threads=1)
    sim.add_effectors(core.KIND_CTL, int(np.prod(shape)) // 5)
    sim.advance(sim.disc.n_steps)
    n = int(sim.counters[0])
    geom = sim.disc.geometry
    occupied = np.argwhere(interior_view(sim.lattice.has_effector, geom) == 1)
    assert len(occupied) == n > 300
    for axis, side in enumerate(shape):
        sd = side / np.sqrt(12 * n)
        assert abs(occupied[:, axis].mean() - (side - 1) / 2) < 4 * sd, (axis, occupied[:, axis].mean())


def test_the_effector_field_list_is_the_state_the_kernel_moves():
    """One list of effector fields: the allocator makes exactly them, and compaction and the stores by
    site and arrival move exactly the carried ones (``_carried_wide`` / ``_carried_narrow``)."""
    from cikabm.kernels.geometry import make_geometry

    lattice, effectors = core.allocate_state(make_geometry((6, 7), "moore", 4), 5)
    assert effectors._fields == tuple(name for name, *_ in core.EFFECTOR_FIELDS)
    assert lattice._fields == tuple(name for name, *_ in core.LATTICE_FIELDS)
    for (name, dtype, value, _), arr in zip(core.EFFECTOR_FIELDS, effectors, strict=True):
        assert arr.dtype == dtype and arr.shape == (5,) and (arr == value).all(), name
    moved = core._carried_wide(effectors) + core._carried_narrow(effectors)
    moved_names = {name for name, arr in zip(effectors._fields, effectors, strict=True)
                   if any(arr is m for m in moved)}
    assert len(moved) == len(moved_names)
    assert moved_names == {name for name, _, _, carried in core.EFFECTOR_FIELDS if carried}


def test_compaction_keeps_the_survivors_in_order_with_every_carried_field():
    from cikabm.kernels.geometry import make_geometry

    _, eff = core.allocate_state(make_geometry((6, 7), "moore", 4), 8)
    n = 7
    carried = [name for name, _, _, is_carried in core.EFFECTOR_FIELDS if is_carried and name != "alive"]
    for k, name in enumerate(carried):
        getattr(eff, name)[:n] = np.arange(n) + 10 * k
    eff.alive[:n] = [1, 0, 1, 1, 0, 0, 1]
    counters = np.array([n, 0, 0], np.int64)
    core.compact_effectors(eff, counters)
    survivors = [0, 2, 3, 6]
    assert counters[core.C_STORED] == len(survivors)
    for k, name in enumerate(carried):
        assert list(getattr(eff, name)[:4]) == [s + 10 * k for s in survivors], name
    assert (eff.alive[:4] == 1).all()

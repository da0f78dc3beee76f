"""The in-silico cytotoxicity assay (:mod:`cikabm.assay`) and the subset rules it measures.

* The calibrated product on the HCC line lands on the published point
  (33 % at 30:1 in 4 h, Kim 2007) and lysis rises with E:T.
* Check 5 of the model (docs/model.md, "Analytic checks"): a well-mixed assay
  lyses ``1 - exp(-k (E:T) t)`` with ``k`` derived from the contact rules.
* NKG2D blocking leaves TCR killing of MHC-present targets and removes every
  kill of MHC-I-lost targets; CD3+CD56+ cells kill more per cell than
  CD3+CD56- cells by the documented ratio; NK cells prefer MHC-I-lost targets.

Tolerances are in standard deviations (binomial or between-replicate).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import closed_neighbourhood_sizes, no_engagement_probability

from cikabm import load_scenario
from cikabm.assay import (
    KIM2007_ANCHOR,
    AssayCondition,
    AssayDesign,
    assay_simulation,
    effector_counts,
    run_assay,
    scale_cik_potency,
)
from cikabm.kernels import core
from cikabm.params import TNK_OVER_TCELL_POTENCY

ROOT = Path(__file__).resolve().parents[1]
HCC = ROOT / "scenarios" / "hcc_adjuvant_lee2015.toml"


@pytest.fixture(scope="module")
def hcc():
    return load_scenario(HCC)


def test_product_counts_follow_the_shares(hcc):
    counts = effector_counts("product", 4500, hcc)
    assert sum(counts.values()) == 4500 and counts["ctl"] == 0
    assert counts["tnk"] == round(0.36 * 4500) and counts["nk"] == round(0.04 * 4500)
    assert effector_counts("nk", 10, hcc) == {"tnk": 0, "tcell": 0, "nk": 10, "ctl": 0}


def test_well_holds_the_design(hcc):
    design = AssayDesign(targets=100, targets_per_site=0.01, hours=2.0, replicates=1)
    sim, placed = assay_simulation(hcc, AssayCondition(targets="mhc_lost"), design, 30.0, replicate=0)
    live = sim.lattice.cell == core.LIVE
    assert np.count_nonzero(live) == 100
    assert np.all(sim.lattice.mhc_lost[live] == 1)
    assert sum(placed.values()) == 3000 == int(sim.counters[0])
    assert sim.scenario.tumour.division_rate_per_day == 0.0
    assert sim.disc.mean_cik_arrivals.sum() == 0.0 and sim.disc.mean_ctl_arrivals == 0.0
    with pytest.raises(ValueError, match="E:T"):
        assay_simulation(hcc, AssayCondition(), design, 1000.0, replicate=0)


def test_calibrated_product_lyses_a_third_of_the_hcc_line(hcc):
    """Acceptance: 28-38 % at 30:1 in 4 h over replicates, monotone in E:T from 1:1 to 100:1."""
    res = run_assay(hcc, design=AssayDesign(replicates=10))
    table = res.table().sort_values("et_ratio")
    lysis = table["specific_lysis"].to_numpy()
    at30 = float(table.loc[table["et_ratio"] == KIM2007_ANCHOR["et_ratio"], "specific_lysis"].iloc[0])
    print("lysis by E:T", dict(zip(table["et_ratio"], np.round(lysis, 3), strict=True)))
    assert 0.28 <= at30 <= 0.38
    assert np.all(np.diff(lysis) > 0)
    assert lysis[0] < 0.05 and lysis[-1] > 0.5


def test_well_mixed_assay_follows_exponential_lysis(hcc):
    """Check 5: lysed fraction ``1 - exp(-k (E:T) t)`` in a well-mixed co-culture.

    CD3+CD56+ cells alone with their TCR blocked, so every effector has the
    rate ``r = nkg2d_rate h(L)`` on every target (L fixed, no IFN-gamma); kills
    complete within the sub-step they begin (perforin time 1e-3 min), granules
    and capacity never run out, nothing dies spontaneously. An effector redrawn
    on a random site reaches a target from ``reach`` of the ``S`` sites, so a
    target's hazard is ``r reach E / S`` and ``k = r reach T / S``. The exact
    per-target value (hypergeometric number of effectors in reach, each
    engaging with ``1 - exp(-r dt)``) is checked too.
    """
    line = hcc.model_copy(update={
        "tumour": hcc.tumour.model_copy(update={"ligand_sd": 0.0, "mhc_sd": 0.0, "death_rate_per_day": 0.0}),
        "killing": hcc.killing.model_copy(update={"perforin_time_minutes": 1e-3, "granules_max": 255,
                                                  "kill_capacity": 255, "activation_death_per_kill": 0.0}),
        "ifn": hcc.ifn.model_copy(update={"secretion_per_hour": 0.0}),
        "effectors": hcc.effectors.model_copy(update={
            "tnk": hcc.effectors.tnk.model_copy(update={"death_rate_per_day": 0.0})}),
    })
    line = scale_cik_potency(line, 4.0)  # enough kills for a tight check
    cond = AssayCondition(effectors="tnk", blocking="tcr", coculture="well_mixed")
    design = AssayDesign(targets=400, targets_per_site=1 / 100, hours=4.0, replicates=4)
    ets = (3.0, 10.0, 30.0)
    res = run_assay(line, conditions=[cond], et_ratios=ets, design=design)

    sim, _ = assay_simulation(line, cond, design, 1.0, replicate=0)
    prm = sim.disc.params
    live = np.flatnonzero(sim.lattice.cell == core.LIVE)
    reach = closed_neighbourhood_sizes(sim, live)
    rate = float(prm.nkg2d_rate[core.KIND_TNK] * prm.nkg2d_signal[sim.lattice.ligand[live[0]]])
    sites = design.side**2
    n_sub = sim.disc.n_steps * prm.n_sub
    q = -math.expm1(-rate * prm.dt_sub_hours)
    for et in ets:
        observed = res.replicates.loc[np.isclose(res.replicates["et_ratio"], et), "dead"].sum()
        n = design.targets * design.replicates
        e = round(et * design.targets)
        # exact: a target survives a sub-step when none of the effectors in reach engages it
        p_none = {r: no_engagement_probability(sites, r, e, q) for r in np.unique(reach)}
        p_dead = np.array([1 - p_none[r] ** n_sub for r in reach])
        exact = design.replicates * p_dead.sum()
        sd = math.sqrt(design.replicates * (p_dead * (1 - p_dead)).sum())
        k = rate * reach.mean() * design.targets / sites  # per hour
        formula = n * -math.expm1(-k * et * design.hours)
        print(f"E:T {et:g}: killed {observed}, exact {exact:.1f} ± {sd:.1f}, 1 - exp(-k E:T t) {formula:.1f}")
        assert abs(observed - exact) < 4 * sd
        assert abs(observed - formula) < 4 * sd + 0.02 * formula
    assert res.lysis(cond, 30.0)[0] > 0.3  # the check covers the curved part of the curve


def test_nkg2d_blocking_leaves_tcr_killing_of_mhc_present_targets(hcc):
    """Blocked NKG2D: CD3+CD56+ still kill MHC-present targets (TCR); no CIK kill of an MHC-I-lost one."""
    design = AssayDesign(targets=300, replicates=6)
    mixed_blocked = AssayCondition(blocking="nkg2d", targets="mixed")
    mixed_open = AssayCondition(targets="mixed")
    res = run_assay(hcc, conditions=[mixed_open, mixed_blocked], et_ratios=[30.0, 100.0], design=design)
    for et in (30.0, 100.0):
        blocked = res.kills_per_cell(mixed_blocked, et)
        kills = res.wells(mixed_blocked, et)
        assert kills["kills_mhc_lost"].sum() == 0  # NKG2D was their only way in
        assert kills["kills_tnk"].sum() > 10  # TCR killing of MHC-present targets remains
        assert blocked["tnk"]["kills_per_cell_mhc_present"] > 0
        open_ = res.wells(mixed_open, et)
        assert open_["kills_mhc_lost"].sum() > 10  # without blocking, CIK do kill MHC-lost targets
        assert kills["kills"].sum() < 0.5 * open_["kills"].sum()


def test_tcr_blocking_leaves_nkg2d_killing(hcc):
    design = AssayDesign(targets=300, replicates=4)
    cond = AssayCondition(effectors="tcell", blocking="tcr", targets="mixed")
    res = run_assay(hcc, conditions=[cond], et_ratios=[100.0], design=design)
    wells = res.wells(cond, 100.0)
    assert wells["kills_tcell_mhc_lost"].sum() > 0  # NKG2D of CD3+CD56- cells still works


def test_tnk_kill_more_per_cell_than_tcell_by_the_documented_ratio(hcc):
    """A short, low-E:T assay (no effector near its capacity, few targets used up): kills per
    CD3+CD56+ cell over kills per CD3+CD56- cell equals the documented per-contact ratio."""
    design = AssayDesign(targets=600, hours=4.0, replicates=16)
    tnk, tcell = AssayCondition(effectors="tnk"), AssayCondition(effectors="tcell")
    res = run_assay(hcc, conditions=[tnk, tcell], et_ratios=[10.0], design=design)
    k_tnk = res.wells(tnk, 10.0)["kills_tnk"].sum()
    k_tcell = res.wells(tcell, 10.0)["kills_tcell"].sum()
    n = 10 * design.targets * design.replicates  # effectors of each subset, over the replicates
    ratio = (k_tnk / n) / (k_tcell / n)
    sd_log = math.sqrt(1 / k_tnk + 1 / k_tcell)  # Poisson counts
    print(f"kills per cell: tnk {k_tnk / n:.4f}, tcell {k_tcell / n:.4f}, ratio {ratio:.2f} "
          f"(documented {TNK_OVER_TCELL_POTENCY:g}, sd of log {sd_log:.3f})")
    assert res.wells(tnk, 10.0)["dead_fraction"].mean() < 0.25  # few targets used up
    assert abs(math.log(ratio / TNK_OVER_TCELL_POTENCY)) < 4 * sd_log + 0.05  # target depletion: < 5 %
    assert ratio > 2.0


def test_nk_kill_more_mhc_lost_than_mhc_present_targets(hcc):
    """Missing self: per target available, NK cells kill MHC-I-lost cells more often."""
    design = AssayDesign(targets=600, replicates=6)
    cond = AssayCondition(effectors="nk", targets="mixed")
    res = run_assay(hcc, conditions=[cond], et_ratios=[10.0], design=design)
    w = res.wells(cond, 10.0)
    lost_targets = w["n_targets_mhc_lost"].sum()
    present_targets = w["n_targets"].sum() - lost_targets
    k_lost = w["kills_nk_mhc_lost"].sum()
    k_present = w["kills_nk"].sum() - k_lost
    p_lost, p_present = k_lost / lost_targets, k_present / present_targets
    sd = math.sqrt(p_lost * (1 - p_lost) / lost_targets + p_present * (1 - p_present) / present_targets)
    print(f"NK: {p_lost:.3f} of MHC-lost and {p_present:.3f} of MHC-present targets killed (sd {sd:.3f})")
    assert p_lost - p_present > 4 * sd


def test_bad_conditions_are_refused():
    with pytest.raises(ValueError, match="effectors = 'b'"):
        AssayCondition(effectors="b")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hours"):
        AssayDesign(hours=0.0)

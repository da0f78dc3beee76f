"""The pure-Mesa reference model (:mod:`cikabm.mesa.reference`) against the Numba kernel.

The reference re-derives every per-step probability from the physical
parameters and states every rule as plain Python, so agreement in distribution
between the two is an independent check of both (GitHub issue 4).

* Unit tests check single reference rules where that is cheap.
* The agreement test runs one small scenario that exercises every rule on the
  kernel (:data:`N_KERNEL` seeds) and the reference (:data:`N_REFERENCE`
  seeds) and compares the means of :data:`STATS` at :data:`COMPARE_DAYS` with
  a Welch-style ``z = |mean_ref - mean_kernel| / sqrt(se_ref² + se_kernel²)``.
  The bound is Bonferroni-corrected: a family-wise false-alarm rate of 0.1 %
  over all :data:`N_COMPARISONS` (64) comparisons gives ``|z| < 4.32``.
* Mutation tests break one rule in either implementation and check that the
  same comparison then fails. Measured (Python 3.11 / Mesa 3.3, with the
  clonal TCR rule and activation-induced death in the scenario): the true
  agreement has max z 2.5; the mutants reach max z of 9.9 to 120 (each entry
  gives its own). ``pytest -s`` prints every max z.
* The clonal TCR rule has an agreement scenario of its own
  (:data:`TCR_AGREEMENT`), where its effect is large.

All seeds are fixed. The two implementations draw different random numbers, so
the comparison is statistical; the numbers above leave a wide margin on both
sides, so the outcome does not hinge on the particular draws.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from conftest import make_scenario
from scipy import integrate, stats

from cikabm import Simulation
from cikabm.kernels import core
from cikabm.kernels.geometry import interior_view
from cikabm.params import KIND_KEYS, Scenario

mesa = pytest.importorskip("mesa")

from cikabm.mesa.reference import (  # noqa: E402  (needs Mesa)
    DEFAULT_SCENARIO,
    FAS,
    LIVE,
    PERFORIN,
    Effector,
    ReferenceModel,
    StepRules,
    TumourCell,
    completes_in_rest_of_substep,
)

# ------------------------------------------------------------------ the agreement scenario
#: 30x30 sites, 2 days at 10 min (4 motility sub-steps): a 250-cell ball that
#: grows, dies and is cleared; 20 % MHC-lost at first and 40 % loss per
#: division, so both MHC states stay plentiful; CIK of all three subsets from
#: an infusion on day 0 (about 50 arrive) and endogenous CTLs (about 54);
#: one granule each, so most kills after the first are Fas/FasL; a Fas
#: threshold that IFN-gamma (coarse 6x6 field) has to lift part of the cells over.
#: A fifth of the CIK T cells' TCRs recognise the tumour (clonal TCR killing of
#: MHC-present cells beside NKG2D), and a fifth of kills end the killer's life
#: (activation-induced death); the rates are set here, well above the in vitro
#: defaults, so that every rule acts within 2 days.
AGREEMENT: dict[str, Any] = {
    "lattice": {"shape": [30, 30], "field_coarsening": 5},
    "time": {"duration_days": 2.0, "dt_minutes": 10.0, "record_every_hours": 12.0},
    "tumour": {"initial_cells": 250, "division_rate_per_day": 0.8, "death_rate_per_day": 0.1,
               "clearance_time_hours": 6.0, "initial_mhc_lost_fraction": 0.2, "mhc_loss_per_division": 0.4,
               "fas_mean": 0.3, "fas_sd": 0.15},
    "killing": {"granules_max": 1, "fas_threshold": 0.45, "activation_death_per_kill": 0.2},
    "effectors": {"tnk": {"nkg2d_rate_per_hour": 2.0, "tcr_rate_per_hour": 2.0, "tcr_recognising_fraction": 0.2},
                  "tcell": {"nkg2d_rate_per_hour": 0.7, "tcr_rate_per_hour": 0.7, "tcr_recognising_fraction": 0.2},
                  "nk": {"nkg2d_rate_per_hour": 2.0}},
    "ifn": {"half_effect": 4.0},
    "product": {"share_tnk": 0.4, "share_tcell": 0.35, "share_nk": 0.25},
    "dosing": {"schedule": "lee2015", "start_day": 0.0},
    "homing": {"cik_per_site_per_day": 5e-12, "ctl_per_site_per_day": 0.03},
}

#: The clonal TCR rule on its own: CD3+CD56- cells only (mostly TCR killing, a fifth of them
#: recognising the tumour), half of the kills fatal to the killer, a static tumour; the
#: TCR effect is then large enough to tell a broken TCR rule from noise.
TCR_AGREEMENT: dict[str, Any] = {
    **AGREEMENT,
    "tumour": {**AGREEMENT["tumour"], "division_rate_per_day": 0.0, "death_rate_per_day": 0.0,
               "mhc_loss_per_division": 0.0},
    "killing": {**AGREEMENT["killing"], "activation_death_per_kill": 0.5},
    "effectors": {"tcell": {"nkg2d_rate_per_hour": 0.2, "tcr_rate_per_hour": 4.0, "tcr_recognising_fraction": 0.2}},
    "product": {"share_tnk": 0.0, "share_tcell": 1.0, "share_nk": 0.0},
    "homing": {"cik_per_site_per_day": 2e-11, "ctl_per_site_per_day": 0.0},
}

N_KERNEL = 200  # kernel seeds of the baseline (a few ms each)
N_KERNEL_MUTANT = 100  # kernel seeds of a mutant: its effects are large
N_REFERENCE = 24  # reference seeds (about 0.25 s each)
REFERENCE_SEED0 = 1000

STATS = (
    "tumour_mhc_present", "tumour_mhc_lost", "tumour_dying",
    *(f"effectors_{k}" for k in KIND_KEYS),
    "kills_perforin", "kills_fas", "kills_mhc_present", "kills_mhc_lost",
    *(f"kills_{k}" for k in KIND_KEYS),
    "ifn_mean",
)
COMPARE_DAYS = (0.5, 1.0, 1.5, 2.0)
N_COMPARISONS = len(STATS) * len(COMPARE_DAYS)
#: Bonferroni bound: P(any |z| above it | both agree) = 0.1 %.
Z_BOUND = float(stats.norm.isf(0.001 / (2 * N_COMPARISONS)))


def agreement_scenario() -> Scenario:
    return make_scenario(**AGREEMENT)


def series(frame) -> np.ndarray:
    """``STATS`` at ``COMPARE_DAYS`` of one run, shape ``(len(COMPARE_DAYS), len(STATS))``."""
    days = frame["time_days"].to_numpy()
    rows = [int(np.argmin(np.abs(days - day))) for day in COMPARE_DAYS]
    assert np.allclose(days[rows], COMPARE_DAYS), "a compared day is not a record time"
    return frame.iloc[rows][list(STATS)].to_numpy(dtype=np.float64)


ParamChange = Callable[[core.KernelParams], dict[str, Any]]


def run_kernel(sc: Scenario, seeds: Sequence[int], change: ParamChange | None = None) -> np.ndarray:
    """Kernel runs, shape ``(len(seeds), len(COMPARE_DAYS), len(STATS))``.

    ``change(params)`` returns kernel numbers to replace before the run (a mutant).
    """
    out = []
    for seed in seeds:
        sim = Simulation(sc, seed=seed, threads=1)
        if change is not None:
            sim.disc = dataclasses.replace(sim.disc, params=sim.disc.params._replace(**change(sim.disc.params)))
        out.append(series(sim.run(progress=False, n_snapshots=0).to_frame()))
    return np.stack(out)


def run_reference(sc: Scenario, seeds: Sequence[int], model: type[ReferenceModel] = ReferenceModel) -> np.ndarray:
    """Reference runs, shaped like :func:`run_kernel`'s."""
    return np.stack([series(model(scenario=sc, seed=seed).run()) for seed in seeds])


def z_scores(kernel: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Welch-style ``|mean_ref - mean_kernel| / sqrt(se_ref² + se_kernel²)`` per time and statistic.

    A statistic with no spread in either is 0 when the means agree, else infinite.
    """
    diff = np.abs(reference.mean(axis=0) - kernel.mean(axis=0))
    se = np.sqrt(kernel.var(axis=0, ddof=1) / len(kernel) + reference.var(axis=0, ddof=1) / len(reference))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(se > 0, diff / se, np.where(diff > 0, np.inf, 0.0))


def disagreements(kernel: np.ndarray, reference: np.ndarray, bound: float = Z_BOUND) -> list[str]:
    """The statistics whose kernel and reference means differ by more than ``bound`` standard errors.

    Parameters
    ----------
    kernel, reference : ndarray
        Runs of each, shape ``(runs, len(COMPARE_DAYS), len(STATS))``.
    bound : float
        Largest acceptable ``z``.

    Returns
    -------
    list of str
        One line per statistic and time beyond ``bound``, with both means, their
        standard errors and ``z``; empty when they agree.
    """
    z = z_scores(kernel, reference)
    out = []
    for t, day in enumerate(COMPARE_DAYS):
        for s, name in enumerate(STATS):
            if z[t, s] > bound:
                k, r = kernel[:, t, s], reference[:, t, s]
                out.append(f"{name} at day {day:g}: kernel {k.mean():.3f} ± {k.std(ddof=1) / math.sqrt(len(k)):.3f}, "
                           f"reference {r.mean():.3f} ± {r.std(ddof=1) / math.sqrt(len(r)):.3f}, z = {z[t, s]:.1f}")
    return out


@pytest.fixture(scope="module")
def kernel_baseline() -> np.ndarray:
    return run_kernel(agreement_scenario(), range(N_KERNEL))


@pytest.fixture(scope="module")
def reference_baseline() -> np.ndarray:
    return run_reference(agreement_scenario(), range(REFERENCE_SEED0, REFERENCE_SEED0 + N_REFERENCE))


# ------------------------------------------------------------------ unit tests of reference rules
def test_default_model_matches_kernel_layout():
    """The default scenario runs, with the kernel frame's columns and record times; its tumour
    ball covers the same sites as the kernel's; nothing warns (Mesa 3.5 deprecates ``seed=``)."""
    sc = make_scenario(DEFAULT_SCENARIO, time={"duration_days": 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = ReferenceModel(scenario=sc, seed=5)
        frame = model.run()
    sim = Simulation(sc, seed=5, threads=1)
    kernel = sim.run(progress=False, n_snapshots=0).to_frame()
    assert list(frame.columns) == list(kernel.columns)
    np.testing.assert_array_equal(frame["time_days"], kernel["time_days"])
    assert frame["tumour_total"].dtype == kernel["tumour_total"].dtype

    fresh = ReferenceModel(scenario=sc, seed=5)
    ref_sites = {c.cell.coordinate for c in fresh.tumour_cells()}
    sim0 = Simulation(sc, seed=5, threads=1)
    live = interior_view(sim0.lattice.cell, sim0.disc.geometry) == core.LIVE
    assert ref_sites == {tuple(int(i) for i in yx) for yx in np.argwhere(live)}
    assert len(ref_sites) == sc.tumour.initial_cells


def test_unsupported_scenarios_raise():
    with pytest.raises(ValueError, match="2D only"):
        ReferenceModel(scenario=make_scenario(lattice={"shape": [5, 10, 10]}))
    with pytest.raises(ValueError, match="well_mixed"):
        ReferenceModel(scenario=make_scenario(effectors={"motility": "well_mixed"}))


def test_expected_arrivals_match_blood_integral():
    """Expected CIK arrivals over the run = homing x sites x the integral of the blood level:
    ``dose * (f (1 - e^{-k1 T}) / k1 + (1 - f)(1 - e^{-k2 T}) / k2)`` for one infusion at 0;
    CTLs arrive at ``ctl_per_site_per_day x sites`` per day."""
    sc = agreement_scenario()
    rules = StepRules.from_scenario(sc)
    days = rules.n_steps * rules.dt_days
    p = sc.persistence
    k1, k2 = math.log(2) / p.fast_half_life_days, math.log(2) / p.slow_half_life_days
    blood_integral = sc.dosing.dose_cells * (p.fast_fraction * -math.expm1(-k1 * days) / k1
                                             + (1 - p.fast_fraction) * -math.expm1(-k2 * days) / k2)
    sites = 30 * 30
    assert rules.mean_cik_arrivals.sum() == pytest.approx(sc.homing.cik_per_site_per_day * sites * blood_integral,
                                                          rel=1e-9)
    assert rules.mean_ctl_arrivals * rules.n_steps == pytest.approx(sc.homing.ctl_per_site_per_day * sites * days)
    assert rules.n_sub == 4  # 5 µm/min x 10 min / 15 µm = 3.3 sites per step
    assert rules.kinds["ctl"].p_move == pytest.approx(5.0 * 2.5 / 15.0)  # per 2.5-min sub-step


def test_arrivals_are_poisson_with_the_expected_mean():
    """The supply rule alone, over the steps of the agreement scenario (40 seeds): total CIK and
    CTL arrivals have Poisson means 49.4 and 54 per run, each matched within 4 Poisson standard
    errors; the CIK subsets split 0.4 : 0.35 : 0.25 (binomial, 4 SE); nothing is dropped."""
    sc = make_scenario(AGREEMENT, tumour={"initial_cells": 0})
    rules = StepRules.from_scenario(sc)
    n = 40
    counts = []
    for seed in range(n):
        model = ReferenceModel(scenario=sc, seed=seed)
        for step in range(rules.n_steps):
            model.clock = step  # supply only: effectors stay where they land
            model.supply()
        assert model.dropped == 0
        counts.append([model.arrivals[k] for k in KIND_KEYS])
    last = np.array(counts, dtype=float)
    mean_cik, mean_ctl = rules.mean_cik_arrivals.sum(), rules.mean_ctl_arrivals * rules.n_steps
    assert abs(last[:, :3].sum(axis=1).mean() - mean_cik) < 4 * math.sqrt(mean_cik / n)
    assert abs(last[:, 3].mean() - mean_ctl) < 4 * math.sqrt(mean_ctl / n)
    total = last[:, :3].sum()
    for share, count in zip((0.4, 0.35, 0.25), last[:, :3].sum(axis=0), strict=True):
        assert abs(count - share * total) < 4 * math.sqrt(total * share * (1 - share))


def test_completion_within_the_substep_of_engagement():
    """``1 - (1 - e^{-k dt}) / (k dt)`` is the chance that an exponential kill begun at a uniform
    time in the sub-step ends before the sub-step does: the integral, and the small-k limit."""
    k, dt = 1 / 30.0, 2.5
    direct, _ = integrate.quad(lambda s: -math.expm1(-k * (dt - s)) / dt, 0.0, dt)
    assert completes_in_rest_of_substep(k, dt) == pytest.approx(direct, rel=1e-10)
    assert completes_in_rest_of_substep(1e-12, 1.0) == pytest.approx(5e-13)


def test_contact_inhibition():
    """A lattice full of cells that divide at 24/day and never die stays as it is: no cell has an
    empty neighbour, so no division is ever proposed."""
    full = {"lattice": {"shape": [6, 6]}, "time": {"duration_days": 0.25},
            "tumour": {"initial_cells": 36, "division_rate_per_day": 24.0, "death_rate_per_day": 0.0}}
    model = ReferenceModel(scenario=make_scenario(full), seed=2)
    assert all(cell.propose() is None for _ in range(20) for cell in model.tumour_cells())
    frame = model.run()
    assert (frame["tumour_total"] == 36).all()
    # Control: with one site free, the cells around it do divide into it.
    model = ReferenceModel(scenario=make_scenario(full, tumour={"initial_cells": 35}), seed=2)
    assert model.run()["tumour_total"].iloc[-1] == 36


def test_ctl_never_engages_mhc_lost_cells():
    """CTLs recognise only through the MHC-restricted TCR (no NKG2D): a tumour of MHC-lost cells
    is never engaged, however much IFN-gamma there is; the same CTLs kill an MHC-present tumour."""
    base = {"lattice": {"shape": [12, 12]}, "time": {"duration_days": 0.5},
            "tumour": {"initial_cells": 100, "division_rate_per_day": 0.0, "death_rate_per_day": 0.0},
            "homing": {"ctl_per_site_per_day": 0.5}, "effectors": {"ctl": {"tcr_rate_per_hour": 20.0}}}
    lost = ReferenceModel(scenario=make_scenario(base, tumour={"initial_mhc_lost_fraction": 1.0}), seed=3)
    cell = lost.tumour_cells()[0]
    ctl = Effector(lost, lost.sites[0], "ctl")
    assert ctl.recognition_rate(cell, 0.0) == 0.0
    assert ctl.recognition_rate(cell, 1.0) == 0.0
    ctl.die()
    frame = lost.run()
    assert frame["arrivals_ctl"].iloc[-1] > 20
    assert frame["kills_ctl"].iloc[-1] == 0
    assert frame["effectors_engaged"].max() == 0
    present = ReferenceModel(scenario=make_scenario(base), seed=3).run()
    assert present["kills_ctl"].iloc[-1] > 10


def test_ifn_field_conserves_mass_and_decays():
    """One field step of a point source: diffusion moves IFN-gamma but keeps its total, and
    the total falls by exactly ``exp(-ln 2 dt / half-life)``; the spread stays symmetric."""
    sc = make_scenario(lattice={"shape": [30, 30], "field_coarsening": 3}, time={"duration_days": 0.5},
                       tumour={"initial_cells": 0}, ifn={"half_life_hours": 2.0, "diffusion_um2_per_min": 600.0})
    model = ReferenceModel(scenario=sc, seed=1)
    model.ifn[5, 5] = 10.0
    model.ifn_field_step()  # 14 explicit sub-steps at 45 µm cells
    assert model.ifn.sum() == pytest.approx(10.0 * math.exp(-math.log(2) * 10.0 / 120.0), rel=1e-12)
    assert model.ifn[5, 5] < 10.0 and model.ifn[4, 5] > 0.0
    np.testing.assert_allclose(model.ifn, model.ifn.T, rtol=1e-12)
    # A uniform field has no flux, also at the borders: it only decays.
    model.ifn[:] = 1.0
    model.ifn_field_step()
    np.testing.assert_allclose(model.ifn, math.exp(-math.log(2) * 10.0 / 120.0), rtol=1e-12)


def test_granules_and_mechanisms():
    """A perforin kill uses the effector's one granule; without granules only a FasL-expressing
    kind engages, only a Fas-sensitive target (``F + (1 - F) g >= threshold``), and by Fas/FasL."""
    strong = {"nkg2d_rate_per_hour": 50.0, "missing_self_weight": 0.0}
    sc = make_scenario(lattice={"shape": [5, 5]},
                       tumour={"initial_cells": 2, "fas_mean": 1.0, "fas_sd": 0.0, "death_rate_per_day": 0.0},
                       killing={"granules_max": 1, "fas_time_hours": 1000.0},
                       effectors={"nk": strong, "tnk": {**strong, "fasl": False}})
    model = ReferenceModel(scenario=sc, seed=4)
    first, second = model.tumour_cells()  # neighbours at the centre
    nk = Effector(model, first.cell, "nk")
    assert nk.granules == 1
    nk.target, nk.mechanism = first, PERFORIN
    nk.kill()
    assert first.state != LIVE and nk.granules == 0 and nk.kills == 1 and not nk.engaged
    assert model.kills[PERFORIN, "nk", "mhc_present"] == 1
    assert any(nk.engage() for _ in range(50))  # engages with p = 0.8 per try
    assert nk.target is second and nk.mechanism == FAS
    nk.release()
    second.fas = 0.0
    assert not nk.fas_sensitive(second, 0.0) and nk.fas_sensitive(second, 1.0)  # IFN-gamma raises Fas to 1
    assert not any(nk.engage() for _ in range(50))
    second.fas = 1.0
    tnk = Effector(model, second.cell, "tnk")  # standing on the target's site
    tnk.granules = 0
    assert not any(tnk.engage() for _ in range(50))  # no FasL, no granules: nothing to kill with


# ------------------------------------------------------------------ the agreement
@pytest.mark.slow
def test_reference_agrees_with_kernel(kernel_baseline, reference_baseline):
    """Means of every statistic at every compared time agree within the Bonferroni bound
    (4.32): measured max z = 2.5 (200 kernel seeds, 24 reference seeds)."""
    assert kernel_baseline[:, -1, STATS.index("kills_fas")].mean() > 20  # Fas kills happen
    assert kernel_baseline[:, -1, STATS.index("kills_perforin")].mean() > 20
    assert kernel_baseline[:, -1, STATS.index("kills_mhc_lost")].mean() > 20
    assert kernel_baseline[:, -1, STATS.index("ifn_mean")].mean() > 0.5
    for kind in KIND_KEYS:
        assert kernel_baseline[:, -1, STATS.index(f"kills_{kind}")].mean() > 5
    print(f"max z {z_scores(kernel_baseline, reference_baseline).max():.2f}")
    bad = disagreements(kernel_baseline, reference_baseline)
    assert not bad, "reference and kernel disagree:\n" + "\n".join(bad)


# ------------------------------------------------------------------ mutants of the reference
class _CtlSeesLostCells(Effector):
    """Broken: CTLs see MHC-I on MHC-lost cells (genetic loss ignored by the TCR)."""

    def recognition_rate(self, target: TumourCell, ifn_response: float) -> float:
        if self.kind != "ctl":
            return super().recognition_rate(target, ifn_response)
        m = target.mhc + (1.0 - target.mhc) * ifn_response
        return self.kind_rules.tcr_rate * m


class _GranuleNeverUsed(Effector):
    """Broken: a perforin kill keeps its granule, so effectors never fall back on Fas/FasL."""

    def spend_granule(self) -> None:
        pass


class _FasAtPerforinSpeed(Effector):
    """Broken: Fas/FasL kills complete at the perforin rate (minutes instead of hours)."""

    def complete_kill(self) -> None:
        if self.model.random.random() < self.model.rules.p_done[PERFORIN]:
            self.kill()


class _EveryTcrRecognises(Effector):
    """Broken: every CIK T cell's TCR recognises the tumour (no clonal specificity)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tcr_match = True


class _NoActivationDeath(Effector):
    """Broken: killers never die of activation-induced death."""

    def activation_induced_death(self) -> None:
        pass


class _LossNotInherited(TumourCell):
    """Broken: daughters of MHC-lost cells regain MHC-I (loss only de novo)."""

    def daughter_mhc_lost(self) -> bool:
        return self.model.random.random() < self.model.rules.p_mhc_loss


def _mutant(name: str, **agents: type) -> type[ReferenceModel]:
    return type(name, (ReferenceModel,), agents)


REFERENCE_MUTANTS = {
    # measured max z: 12.6
    "ctl_sees_mhc_lost_cells": _mutant("CtlSeesLost", effector_class=_CtlSeesLostCells),
    # measured max z: 120
    "perforin_kill_keeps_granule": _mutant("GranuleNeverUsed", effector_class=_GranuleNeverUsed),
    # measured max z: 50
    "fas_kill_at_perforin_speed": _mutant("FasAtPerforinSpeed", effector_class=_FasAtPerforinSpeed),
    # measured max z: 9.9
    "mhc_loss_not_inherited": _mutant("LossNotInherited", tumour_class=_LossNotInherited),
    # measured max z: 20.9
    "no_activation_death": _mutant("NoActivationDeath", effector_class=_NoActivationDeath),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REFERENCE_MUTANTS))
def test_broken_reference_rule_is_detected(name, kernel_baseline):
    """A reference model with one broken rule disagrees with the kernel (max z 9.9 to 120)."""
    reference = run_reference(agreement_scenario(), range(REFERENCE_SEED0, REFERENCE_SEED0 + N_REFERENCE),
                              REFERENCE_MUTANTS[name])
    print(f"max z {z_scores(kernel_baseline, reference).max():.1f}")
    assert disagreements(kernel_baseline, reference), f"mutant {name} was not detected"


# ------------------------------------------------------------------ mutants of the kernel
KERNEL_MUTANTS: dict[str, ParamChange] = {
    # measured max z: 61
    "perforin_kills_never_complete": lambda p: {"thr_perforin_done": np.uint64(0),
                                                "thr_perforin_same": np.uint64(0)},
    # measured max z: 11.5
    "no_mhc_loss_at_division": lambda p: {"thr_mhc_loss": np.uint64(0)},
    # measured max z: 32
    "engaged_effectors_secrete_no_ifn": lambda p: {"ifn_secretion": 0.0},
    # measured max z: 110
    "dead_cells_never_cleared": lambda p: {"clear_log_q": 0.0},
    # measured max z: 17.6
    "no_activation_death": lambda p: {"thr_aicd": np.uint64(0)},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(KERNEL_MUTANTS))
def test_broken_kernel_rule_is_detected(name, reference_baseline):
    """The kernel with one rule number broken disagrees with the reference (max z 11.5 to 110)."""
    kernel = run_kernel(agreement_scenario(), range(N_KERNEL_MUTANT), KERNEL_MUTANTS[name])
    print(f"max z {z_scores(kernel, reference_baseline).max():.1f}")
    assert disagreements(kernel, reference_baseline), f"mutant {name} was not detected"


# ------------------------------------------------------------------ the clonal TCR rule
def test_clonal_tcr_rule_agrees_and_its_mutants_are_detected():
    """TCR specificity drawn once per cell, and activation-induced death, in both implementations:
    they agree on :data:`TCR_AGREEMENT` (measured max z 1.3; mutants 27 and 9.8), and breaking the clonal rule in either
    one is detected (every T cell recognising, in the reference; none, in the kernel)."""
    sc = make_scenario(**TCR_AGREEMENT)
    kernel = run_kernel(sc, range(200))
    reference = run_reference(sc, range(REFERENCE_SEED0, REFERENCE_SEED0 + 30))
    assert kernel[:, -1, STATS.index("kills_tcell")].mean() > 100
    print(f"max z {z_scores(kernel, reference).max():.2f}")
    bad = disagreements(kernel, reference)
    assert not bad, "reference and kernel disagree:\n" + "\n".join(bad)
    every = run_reference(sc, range(REFERENCE_SEED0, REFERENCE_SEED0 + 15),  # (a large effect: few runs)
                          _mutant("EveryTcr", effector_class=_EveryTcrRecognises))
    none = run_kernel(sc, range(200), lambda p: {"thr_tcr_match": np.zeros_like(p.thr_tcr_match)})
    print(f"mutants: max z {z_scores(kernel, every).max():.1f} (reference), "
          f"{z_scores(none, reference).max():.1f} (kernel)")
    assert disagreements(kernel, every), "a reference in which every TCR recognises was not detected"
    assert disagreements(none, reference), "a kernel in which no TCR recognises was not detected"

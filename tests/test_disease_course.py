"""The disease course: the compartment model's analytic checks, its agreement with the lattice at the
hand-off, the two lesion sources, and the clinical rules after recurrence (retreatment, cancer death)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import inject_effectors, make_scenario

from cikabm.course import CANCER, OTHER, clinical_course, diameter_cm, meets_curative_criteria, outcome_row
from cikabm.kernels import compartment as ck
from cikabm.kernels import core
from cikabm.lesions import (
    DE_NOVO,
    MICROMETASTASIS,
    Lesion,
    compartment_inputs,
    de_novo_lead_days,
    draw_lesions,
    lesion_course,
    micrometastasis_mean,
)
from cikabm.patients import draw_patient, patient_region
from cikabm.scenario import scenario_from_dict
from cikabm.trial_params import TrialScenario

STEPS_PER_DAY = 4


def kernel_params(*, birth=0.0, death=0.0, mhc_loss=0.0, v0=1600.0, beta=2 / 3, ctl=0.0,
                  stochastic_below=1e4, stop=1e12, a=None, tau=None, q=None, mu=None):
    scal = np.zeros(ck.N_SCALARS)
    scal[ck.S_BIRTH], scal[ck.S_DEATH], scal[ck.S_MHC_LOSS] = birth, death, mhc_loss
    scal[ck.S_V0], scal[ck.S_BETA], scal[ck.S_CTL] = v0, beta, ctl
    scal[ck.S_STOCHASTIC], scal[ck.S_DT], scal[ck.S_STOP] = stochastic_below, 1.0 / STEPS_PER_DAY, stop
    a = np.zeros((4, 2)) if a is None else np.asarray(a, float)
    z = np.zeros(4)
    return (scal, a, z if tau is None else np.asarray(tau, float), z if q is None else np.asarray(q, float),
            z if mu is None else np.asarray(mu, float), np.array([0.36, 0.60, 0.04]))


def run_kernel(params, tumour, effectors=None, days=10, seed=1, lesion=0, cik=None):
    n_steps = days * STEPS_PER_DAY
    tumour = np.array(tumour, dtype=float)
    effectors = np.zeros(4) if effectors is None else np.array(effectors, dtype=float)
    kills = np.zeros((4, 2))
    out = np.zeros(days + 1)
    out[0] = tumour.sum()
    cik = np.zeros(n_steps) if cik is None else cik
    status, _ = ck.lesion_course(tumour, effectors, kills, params, cik, 0, n_steps, STEPS_PER_DAY, seed,
                                    lesion, out)
    return int(status), tumour, effectors, kills, out


# --------------------------------------------------------------------------- analytic checks

def test_large_lesion_grows_exponentially():
    """Check 1 in the deterministic regime: N = N0 exp((b - d) t), exactly (the step's exact solution)."""
    params = kernel_params(birth=0.05, death=0.01)
    status, _, _, _, out = run_kernel(params, [1e6, 0.0], days=100)
    days = np.arange(101)
    np.testing.assert_allclose(out, 1e6 * np.exp(0.04 * days), rtol=1e-9)
    assert status == ck.RAN_TO_END


def test_small_clone_mean_growth_follows_the_birth_death_process():
    """Stochastic regime: the mean of many clones of 50 cells after 20 days is N0 exp((b - d) t)."""
    params = kernel_params(birth=0.1, death=0.03)
    finals = np.array([run_kernel(params, [50.0, 0.0], days=20, lesion=i)[4][-1] for i in range(2000)])
    expected = 50.0 * math.exp(0.07 * 20)
    # birth-death variance of N(t): N0 (b + d)/(b - d) e^{rt} (e^{rt} - 1)
    var = 50.0 * (0.13 / 0.07) * math.exp(1.4) * (math.exp(1.4) - 1.0)
    se = math.sqrt(var / finals.size)
    assert abs(finals.mean() - expected) < 4 * se + 0.01 * expected, (finals.mean(), expected, se)
    assert finals.var(ddof=1) == pytest.approx(var, rel=0.15)


def test_small_clone_extinction_probability_with_a_constant_kill_hazard():
    """Check 3: a single cell with birth b, death d and immune kill kappa dies out with (d + kappa)/b.

    Ten effectors that never die nor exhaust, no handling time, in a region of 1000 sites: kappa =
    10 * a / 1000 per cell, constant while the clone stays below 1000 cells (stopped at 200)."""
    b, d, a = 0.5, 0.1, 2.0
    kappa = 10 * a / 1000.0
    params = kernel_params(birth=b, death=d, v0=1000.0, stop=200.0, a=[[a, a], [0, 0], [0, 0], [0, 0]])
    n = 3000
    extinct = sum(run_kernel(params, [1.0, 0.0], [10, 0, 0, 0], days=400, lesion=i)[0] == ck.EXTINCT
                  for i in range(n))
    p = (d + kappa) / b
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(extinct / n - p) < 4 * sigma + 0.01, (extinct / n, p)


def test_mhc_loss_and_immunoediting_by_ctls():
    """CTLs kill only MHC-present cells, so under CTL pressure the MHC-lost share rises (immunoediting)."""
    a_ctl = [[0, 0], [0, 0], [0, 0], [5.0, 0.0]]  # the CTL row: present cells only
    params = kernel_params(birth=0.2, death=0.05, mhc_loss=0.01, ctl=0.05, a=a_ctl, tau=[0, 0, 0, 0.01],
                           q=[0, 0, 0, 0.2], mu=[0, 0, 0, 0.1], stochastic_below=0.0)
    free = kernel_params(birth=0.2, death=0.05, mhc_loss=0.01, stochastic_below=0.0)
    _, edited, _, kills, _ = run_kernel(params, [1e5, 0.0], days=60)
    _, neutral, _, _, _ = run_kernel(free, [1e5, 0.0], days=60)
    assert kills[3, 0] > 0 and kills[3, 1] == 0
    assert edited[1] / edited.sum() > 1.5 * neutral[1] / neutral.sum()


def test_effector_entry_grows_with_the_surface():
    """Arrivals scale as V0 (N / V0) ** beta beyond the region: a 1000-fold larger lesion gets 100-fold
    more CTLs, so the E:T ratio falls 10-fold."""
    def ctls(n0):
        params = kernel_params(ctl=1e-3, mu=[0, 0, 0, 0.1], stochastic_below=0.0)
        return run_kernel(params, [n0, 0.0], days=30)[2][3]

    assert ctls(1.6e6) / ctls(1.6e3) == pytest.approx(1000 ** (2 / 3), rel=1e-6)


def test_draws_are_keyed_and_repeatable():
    params = kernel_params(birth=0.3, death=0.1, ctl=1e-3, a=[[0, 0]] * 3 + [[1.0, 0.0]], mu=[0, 0, 0, 0.1])
    one = run_kernel(params, [30.0, 0.0], days=30, lesion=7)
    two = run_kernel(params, [30.0, 0.0], days=30, lesion=7)
    other = run_kernel(params, [30.0, 0.0], days=30, lesion=8)
    np.testing.assert_array_equal(one[4], two[4])
    assert not np.array_equal(one[4], other[4])


# --------------------------------------------------------------------------- lattice and compartment agree

WELL_MIXED = dict(
    lattice={"shape": [40, 40]},
    tumour={"initial_cells": 150, "initial_pattern": "scattered", "division_rate_per_day": 0.0,
            "death_rate_per_day": 0.0, "clearance_time_hours": 1e6, "ligand_mean": 0.5, "ligand_sd": 0.0,
            "mhc_mean": 0.8, "mhc_sd": 0.0, "mhc_loss_per_division": 0.0, "fas_mean": 0.0, "fas_sd": 0.0},
    effectors={"motility": "well_mixed",
               "tnk": {"death_rate_per_day": 0.0, "tcr_rate_per_hour": 0.0, "nkg2d_rate_per_hour": 0.5}},
    killing={"granules_max": 255, "kill_capacity": 255, "activation_death_per_kill": 0.0},
    ifn={"secretion_per_hour": 0.0},
    homing={"ctl_per_site_per_day": 0.0, "cik_per_site_per_day": 0.0},
    time={"duration_days": 0.5, "record_every_hours": 12.0},
)


def _trial() -> TrialScenario:
    """A trial of defaults: the compartment takes its adjuvant settings, the region its rates."""
    return scenario_from_dict({"trial": {"patients": 1}}, model=TrialScenario)


def test_lattice_and_compartment_agree_on_kills_in_the_well_mixed_limit():
    """30 CD3+CD56+ effectors among 150 scattered targets for 12 h: the lattice with effectors
    redistributed every sub-step and the compartment (rates from the same kernel parameters, a
    perforin handling time) kill the same number of cells, within 4 standard errors and 10 %."""
    from cikabm.simulation import Simulation

    sc = make_scenario(**WELL_MIXED)
    lattice = []
    for seed in range(12):
        sim = Simulation(sc, seed=seed, threads=1)
        inject_effectors(sim, core.KIND_TNK, 30, granules=255)
        lattice.append(sim.run(progress=False, n_snapshots=0).to_frame()["kills_total"].iloc[-1])
    inputs = compartment_inputs(_trial(), sc, horizon_days=1.0, stop_cells=1e12)
    compart = []
    for i in range(400):
        tumour, effectors, kills = np.array([150.0, 0.0]), np.array([30.0, 0, 0, 0]), np.zeros((4, 2))
        out = np.zeros(2)
        ck.lesion_course(tumour, effectors, kills, inputs.params, np.zeros(8), 0, inputs.steps_per_day // 2,
                         inputs.steps_per_day, 3, i, out)
        compart.append(kills.sum())
    lattice, compart = np.array(lattice, float), np.array(compart)
    se = math.sqrt(lattice.var(ddof=1) / lattice.size + compart.var(ddof=1) / compart.size)
    print(f"kills in 12 h: lattice {lattice.mean():.1f}, compartment {compart.mean():.1f} (se {se:.1f})")
    assert lattice.mean() > 20
    assert abs(lattice.mean() - compart.mean()) < 4 * se + 0.10 * lattice.mean()


def test_lattice_and_compartment_agree_on_uncrowded_growth():
    """A scattered focus of 150 cells on an 80 x 80 lattice (no contact inhibition yet) and the
    compartment's birth-death process give the same cells after 3 days, within 4 standard errors."""
    from cikabm.simulation import Simulation

    growth = dict(WELL_MIXED, lattice={"shape": [80, 80]},
                  tumour={**WELL_MIXED["tumour"], "division_rate_per_day": 0.3, "death_rate_per_day": 0.05,
                          "clearance_time_hours": 1.0},
                  time={"duration_days": 3.0, "record_every_hours": 24.0})
    sc = make_scenario(**growth)
    lattice = np.array([Simulation(sc, seed=s, threads=1).run(progress=False, n_snapshots=0)
                        .to_frame()["tumour_total"].iloc[-1] for s in range(16)], float)
    inputs = compartment_inputs(_trial(), sc, horizon_days=3.0, stop_cells=1e12)
    compart = []
    for i in range(400):
        out = np.zeros(4)
        ck.lesion_course(np.array([150.0, 0.0]), np.zeros(4), np.zeros((4, 2)), inputs.params,
                         np.zeros(3 * inputs.steps_per_day), 0, 3 * inputs.steps_per_day, inputs.steps_per_day,
                         5, i, out)
        compart.append(out[3])
    compart = np.array(compart)
    se = math.sqrt(lattice.var(ddof=1) / lattice.size + compart.var(ddof=1) / compart.size)
    expected = 150 * math.exp(0.25 * 3)
    print(f"cells after 3 days: lattice {lattice.mean():.1f}, compartment {compart.mean():.1f}, "
          f"N0 exp(rt) {expected:.1f} (se {se:.1f})")
    assert abs(lattice.mean() - compart.mean()) < 4 * se + 0.03 * expected


# --------------------------------------------------------------------------- lesions and their sources

ADJ = {"trial": {"patients": 20, "follow_up_months": 60.0},
       "lattice": {"shape": [24, 24]},
       "homing": {"ctl_per_site_per_day": 2e-4, "cik_per_site_per_day": 1e-11},
       "arms": [{"name": "control", "schedule": "none"}, {"name": "cik", "schedule": "lee2015", "start_day": 14.0}]}


def test_micrometastases_grow_with_primary_size_and_mvi():
    ts = scenario_from_dict(ADJ, model=TrialScenario)
    small, large = micrometastasis_mean(ts, 2.5, False), micrometastasis_mean(ts, 5.0, False)
    assert large == pytest.approx(2 * small) == pytest.approx(ts.adjuvant.foci_mean_at_5cm)
    assert micrometastasis_mean(ts, 5.0, True) == pytest.approx(1.82 * large)


def test_lesions_of_both_sources_are_occult_at_resection():
    ts = scenario_from_dict({**ADJ, "adjuvant": {"foci_mean_at_5cm": 3.0, "de_novo_per_year": 0.3}},
                            model=TrialScenario)
    rng = np.random.default_rng(4)
    lesions = [les for _ in range(300) for les in draw_lesions(
        ts, rng, primary_size_cm=5.0, mvi=False, net_growth_per_day=0.01, horizon_days=1800.0)]
    micro = [les for les in lesions if les.source == MICROMETASTASIS]
    present = [les for les in lesions if les.source == DE_NOVO and les.onset_day == 0]
    new = [les for les in lesions if les.source == DE_NOVO and les.onset_day > 0]
    adj = ts.adjuvant
    assert len(micro) / 300 == pytest.approx(3.0, rel=0.1)
    lead = de_novo_lead_days(ts, 0.01)
    assert len(present) / 300 == pytest.approx(0.3 / 365.25 * lead, rel=0.15)
    assert len(new) / 300 == pytest.approx(0.3 / 365.25 * 1800, rel=0.15)
    for les in micro + present:
        assert adj.focus_initial_cells <= les.initial_cells <= adj.imaging_limit_cells
    assert all(les.initial_cells == adj.focus_initial_cells and les.onset_day < 1800 for les in new)
    # log-uniform sizes: the median is the geometric mean of the bounds
    median = np.median([les.initial_cells for les in micro])
    assert math.log(median) == pytest.approx(0.5 * math.log(adj.focus_initial_cells * adj.imaging_limit_cells),
                                             abs=0.6)


def _courses(ts, patient_id, lesions, arm):
    patient = draw_patient(ts, patient_id)
    region = patient_region(ts, patient, ts.arms[arm], initial_cells=8, duration_days=1800.0,
                            record_every_hours=24.0)
    inputs = compartment_inputs(ts, region, 1800.0, ts.outcomes.lethal_cells)
    return [lesion_course(ts, region, inputs, les, seed=1, patient_id=patient_id, n_days=1800) for les in lesions]


def test_cik_clears_a_small_lesion_and_barely_delays_a_large_one():
    """The E:T ratio falls as a lesion grows: infusions clear a lesion of 2000 cells that grows in the
    control arm, while a lesion of 5e8 cells is still detected, within a month of the control arm."""
    ts = scenario_from_dict({**ADJ, "cohort": {"manufacturing_failure": 0.0, "doubling_time_sd_log": 0.0,
                                               "homing_sd_log": 0.0, "product_yield_sd_log": 0.0}},
                            model=TrialScenario)
    lesions = [Lesion(0, MICROMETASTASIS, 0.0, 500_000_000), Lesion(1, MICROMETASTASIS, 0.0, 2000)]
    control, cik = _courses(ts, 3, lesions, 0), _courses(ts, 3, lesions, 1)
    detect = [int(np.argmax(c[0].burden >= 1e9)) for c in (control, cik)]
    assert 0 < detect[0] <= detect[1] <= detect[0] + 30
    assert control[1].burden[-1] > 1e6
    assert cik[1].status == ck.EXTINCT and cik[1].burden[-1] == 0
    assert cik[1].kills[:3].sum() > 0 and control[1].kills[:3].sum() == 0


# --------------------------------------------------------------------------- the clinical rules

def _ts(**recurrence) -> TrialScenario:
    return scenario_from_dict({"trial": {"patients": 1}, "recurrence": recurrence}, model=TrialScenario)


def _grow(n_days: int, start: float, day0: int, rate: float) -> np.ndarray:
    t = np.arange(n_days + 1, dtype=float)
    return np.where(t >= day0, start * np.exp(rate * (t - day0)), 0.0)


def test_milan_type_criteria():
    ts = _ts()
    cells = lambda d: ts.outcomes.cells_per_cm3 * math.pi / 6 * d**3  # noqa: E731
    assert diameter_cm(cells(2.0), ts.outcomes.cells_per_cm3) == pytest.approx(2.0)
    assert meets_curative_criteria([cells(4.9)], ts)
    assert not meets_curative_criteria([cells(5.1)], ts)
    assert meets_curative_criteria([cells(2.9)] * 3, ts)
    assert not meets_curative_criteria([cells(3.1), cells(1.0)], ts)
    assert not meets_curative_criteria([cells(1.0)] * 4, ts)
    assert not meets_curative_criteria([], ts)


def test_curative_retreatment_removes_the_seen_lesions_and_the_rest_goes_on():
    ts = _ts()
    n = 1800
    burdens = np.array([_grow(n, 1e9, 300, 0.01), _grow(n, 1e6, 0, 0.01)])  # unseen at day 300, 1e9 at ~690
    course = clinical_course(ts, burdens, [MICROMETASTASIS, DE_NOVO], censor_day=1800.0,
                             other_death_day=math.inf, fitness_draws=[0.1, 0.1])
    assert course["recurrence_day"] == 300 and course["recurrence_source"] == MICROMETASTASIS
    assert course["retreatments"] == 2 and course["recurrences"] == 2 and course["curative_at_first"]
    assert course["cause_of_death"] == "" and math.isinf(course["cancer_death_day"])


def test_a_recurrence_unfit_for_retreatment_ends_in_cancer_death_at_the_lethal_burden():
    ts = _ts()
    n = 1800
    burdens = np.array([_grow(n, 1e9, 100, 0.01)])
    course = clinical_course(ts, burdens, [DE_NOVO], censor_day=1800.0, other_death_day=math.inf,
                             fitness_draws=[0.9])
    lethal_day = 100 + math.ceil(math.log(1e3) / 0.01)
    assert course["retreatments"] == 0 and course["cancer_death_day"] == pytest.approx(lethal_day, abs=1)
    assert course["cause_of_death"] == CANCER
    row = outcome_row(course, censor_day=1800.0)
    assert row["rfs_event"] and row["os_event"] and row["css_event"]
    # an earlier other-cause death wins, and censors cancer-specific survival
    other = clinical_course(ts, burdens, [DE_NOVO], censor_day=1800.0, other_death_day=500.0, fitness_draws=[0.9])
    assert other["cause_of_death"] == OTHER
    row = outcome_row(other, censor_day=1800.0)
    assert row["os_event"] and not row["css_event"] and row["os_months"] == pytest.approx(500 / 30.4375)


def test_os_can_differ_with_identical_recurrence_times():
    """Two arms recur on the same day from the same large lesion; after curative retreatment the residual
    small lesion grows back in one arm (a second, unfit recurrence, then cancer death) and was cleared by
    CIK in the other: RFS is identical, OS is not. OS is therefore not bounded by RFS by construction."""
    ts = _ts()
    n = 1800
    large = _grow(n, 1e9, 200, 0.01)
    residual = _grow(n, 1e4, 0, 0.02)
    cleared = np.where(np.arange(n + 1) < 120, residual, 0.0)
    sources = [MICROMETASTASIS, MICROMETASTASIS]
    control = clinical_course(ts, np.array([large, residual]), sources, censor_day=1800.0,
                              other_death_day=math.inf, fitness_draws=[0.1, 0.9])
    cik = clinical_course(ts, np.array([large, cleared]), sources, censor_day=1800.0,
                          other_death_day=math.inf, fitness_draws=[0.1, 0.9])
    rows = [outcome_row(c, censor_day=1800.0) for c in (control, cik)]
    assert rows[0]["rfs_months"] == rows[1]["rfs_months"] and rows[0]["rfs_event"] and rows[1]["rfs_event"]
    assert rows[0]["os_event"] and not rows[1]["os_event"]
    assert control["cause_of_death"] == CANCER and cik["cause_of_death"] == ""

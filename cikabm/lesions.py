"""Tumour lesions of a virtual patient: their sources, and each one's course across scales.

After resection of HCC a patient carries lesions from two sources
(docs/model.md, "Disease course"):

* **micrometastases** of the primary, left at resection: a Poisson number
  whose mean grows with the primary's diameter and with microvascular
  invasion; they drive early recurrence;
* **de novo** (multicentric) tumours arising in the diseased liver at a
  constant hazard, independent of the primary: those that arose before the
  resection are present at it, the others arise during follow-up.

Every lesion present at resection is occult: between
``adjuvant.focus_initial_cells`` and ``adjuvant.imaging_limit_cells`` (a
larger one would have been seen). Sizes are log-uniform over that range:
the size distribution of lesions arising at a constant rate and growing
exponentially, and the flat limit of the power law of colony sizes of
metastatic seeding models (Iwata 2000 J Theor Biol 203:177).

A lesion smaller than ``adjuvant.handoff_cells`` lives on the lattice (its
own region, with the arm's CIK supply and the host's CTLs) until it reaches
that size, dies out, or has spent ``adjuvant.lattice_max_days`` there; it then
continues in the compartment model (:mod:`cikabm.kernels.compartment`), which
keeps feeling immune killing at the lattice's well-mixed rates, with effector
numbers from blood level, homing and the lesion's size. The result of one
lesion is its daily cell count over the follow-up.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from cikabm.convert import cik_arrivals_per_step, kernel_parameters
from cikabm.kernels import compartment as ck
from cikabm.kernels import core
from cikabm.kernels.geometry import n_sites
from cikabm.params import KIND_KEYS, Scenario
from cikabm.trial_params import TrialScenario

#: Lesion sources, as written in ``patients.parquet``.
MICROMETASTASIS = "micrometastasis"
DE_NOVO = "de_novo"
#: Purpose of the lesion draws in the per-patient generators of :mod:`cikabm.patients`.
LESION_PURPOSE = 3
#: Kernel keys: lesion ``j`` of patient ``i`` is ``i * LESION_KEY_STRIDE + j``.
LESION_KEY_STRIDE = 128


@dataclass(frozen=True)
class Lesion:
    """One lesion: where it comes from, when it starts and its size then."""

    index: int
    source: str
    onset_day: float
    initial_cells: int


@dataclass
class LesionCourse:
    """A lesion's daily cell counts (``burden[d]`` at the end of day ``d``) and its kills."""

    lesion: Lesion
    burden: np.ndarray
    kills: np.ndarray  # (kind, MHC state): kills in the compartment and on the lattice
    lattice_days: float
    status: int


def micrometastasis_mean(ts: TrialScenario, primary_size_cm: float, mvi: bool) -> float:
    """Expected micrometastases for a primary of ``primary_size_cm`` with or without MVI."""
    adj = ts.adjuvant
    mean = adj.foci_mean_at_5cm * (primary_size_cm / 5.0) ** adj.foci_size_exponent
    return mean * (adj.mvi_foci_ratio if mvi else 1.0)


def de_novo_lead_days(ts: TrialScenario, net_growth_per_day: float) -> float:
    """Days a de novo tumour takes from ``focus_initial_cells`` to the imaging limit.

    De novo tumours that arose within this time before the resection are
    present and occult at it.
    """
    adj = ts.adjuvant
    return math.log(adj.imaging_limit_cells / adj.focus_initial_cells) / net_growth_per_day


def draw_lesions(ts: TrialScenario, rng: np.random.Generator, *, primary_size_cm: float, mvi: bool,
                 net_growth_per_day: float, horizon_days: float) -> list[Lesion]:
    """The lesions of one patient (micrometastases first, then de novo tumours by onset)."""
    adj = ts.adjuvant
    lo, hi = math.log(adj.focus_initial_cells), math.log(adj.imaging_limit_cells)

    def occult_size() -> int:
        return round(math.exp(lo + (hi - lo) * rng.random()))

    lesions: list[Lesion] = []
    n_micro = min(int(rng.poisson(micrometastasis_mean(ts, primary_size_cm, mvi))), adj.max_foci)
    for _ in range(n_micro):
        lesions.append(Lesion(len(lesions), MICROMETASTASIS, 0.0, occult_size()))
    rate = adj.de_novo_per_year / 365.25
    n_present = int(rng.poisson(rate * de_novo_lead_days(ts, net_growth_per_day)))
    n_new = int(rng.poisson(rate * horizon_days))
    onsets = np.sort(rng.random(n_new) * horizon_days)
    for _ in range(min(n_present, adj.max_foci)):
        lesions.append(Lesion(len(lesions), DE_NOVO, 0.0, occult_size()))
    for day in onsets[: adj.max_foci]:
        lesions.append(Lesion(len(lesions), DE_NOVO, float(day), adj.focus_initial_cells))
    return lesions


# --------------------------------------------------------------------------- compartment inputs

@dataclass(frozen=True)
class CompartmentInputs:
    """The compartment kernel's parameter tuple and CIK supply of one patient in one arm."""

    params: tuple
    cik_per_step: np.ndarray
    steps_per_day: int
    dt_days: float


def mhc_lost_fraction_at(cells: float, mhc_loss_per_division: float) -> float:
    """Mean MHC-lost share of a clone grown to ``cells`` by neutral divisions (Luria-Delbrück mean)."""
    return min(1.0, mhc_loss_per_division * math.log(max(cells, 1.0)))


def compartment_inputs(ts: TrialScenario, region: Scenario, horizon_days: float, stop_cells: float
                       ) -> CompartmentInputs:
    """Compartment parameters from the lattice's own rules (the well-mixed limit of check 4).

    ``a[k, h]`` is a kind's engagement rate on one target of MHC state ``h``
    (the lattice kernel's :func:`~cikabm.kernels.core.recognition_rate` at the
    patient's mean ligand level and the region's MHC level, TCR term weighted
    by the kind's TCR-recognising share) times the contact neighbourhood; the
    handling time is the mean duration of the kills an effector makes
    (perforin for its granules, Fas/FasL for the rest), and one over its
    expected lifetime kills (capacity and activation-induced death) is the
    chance that a kill exhausts it.
    """
    adj = ts.adjuvant
    disc = kernel_parameters(region.model_copy(update={"time": region.time.model_copy(
        update={"duration_days": region.time.dt_minutes / 1440.0})}))
    prm = disc.params
    geom = disc.geometry
    reach = geom.n_neighbours + 1
    tum = region.tumour
    kill = region.killing
    ligand_level = min(255, max(0, round(tum.ligand_mean * 255.0)))
    signal = float(prm.nkg2d_signal[ligand_level])
    a = np.zeros((ck.N_KINDS, 2))
    tau = np.zeros(ck.N_KINDS)
    q = np.zeros(ck.N_KINDS)
    mu = np.zeros(ck.N_KINDS)
    aicd = kill.activation_death_per_kill
    cap = kill.kill_capacity
    lifetime = float(cap) if aicd == 0 else (1.0 - (1.0 - aicd) ** cap) / aicd
    for k, key in enumerate(KIND_KEYS):
        kind = region.effectors.kind(key)
        for h, mhc in enumerate((tum.mhc_mean, 0.0)):
            per_hour = core.recognition_rate(signal, mhc, prm.nkg2d_rate[k], prm.missing_self[k],
                                             prm.tcr_rate[k] * kind.tcr_recognising_fraction)
            a[k, h] = per_hour * 24.0 * reach
        kills_by_fas = max(0.0, lifetime - kill.granules_max) if kind.fasl else 0.0
        kills_total = min(lifetime, kill.granules_max) + kills_by_fas
        handling_hours = ((min(lifetime, kill.granules_max) * kill.perforin_time_minutes / 60.0
                           + kills_by_fas * kill.fas_time_hours) / kills_total) if kills_total > 0 else 0.0
        tau[k] = handling_hours / 24.0
        q[k] = 1.0 / kills_total if kills_total > 0 else 1.0
        mu[k] = kind.death_rate_per_day
    prod = region.product
    shares = np.array([prod.share_tnk, prod.share_tcell, prod.share_nk])
    shares = shares / shares.sum()
    steps_per_day = round(24.0 / adj.compartment_dt_hours)
    dt = 1.0 / steps_per_day
    n_steps = math.ceil(horizon_days * steps_per_day) + 1
    scal = np.zeros(ck.N_SCALARS)
    scal[ck.S_BIRTH] = tum.division_rate_per_day
    scal[ck.S_DEATH] = tum.death_rate_per_day
    scal[ck.S_MHC_LOSS] = tum.mhc_loss_per_division
    scal[ck.S_V0] = n_sites(geom)
    scal[ck.S_BETA] = adj.infiltration_exponent
    scal[ck.S_CTL] = region.homing.ctl_per_site_per_day
    scal[ck.S_STOCHASTIC] = adj.stochastic_below_cells
    scal[ck.S_DT] = dt
    scal[ck.S_STOP] = stop_cells
    cik = cik_arrivals_per_step(region, 1.0, n_steps, dt)  # per site: the kernel scales by A(N)
    return CompartmentInputs(params=(scal, a, tau, q, mu, shares.astype(np.float64)), cik_per_step=cik,
                             steps_per_day=steps_per_day, dt_days=dt)


# --------------------------------------------------------------------------- one lesion's course

def _lattice_phase(ts: TrialScenario, region: Scenario, lesion: Lesion, seed: int, key: int,
                   end_day: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int]:
    """Run a small lesion on the lattice: (tumour by MHC state, effectors by kind, kills, days, status)."""
    from cikabm.simulation import Simulation

    adj = ts.adjuvant
    days = max(0.0, min(adj.lattice_max_days, end_day - lesion.onset_day))
    tumour = region.tumour.model_copy(update={"initial_cells": lesion.initial_cells})
    time = region.time.model_copy(update={"duration_days": max(days, region.time.dt_minutes / 1440.0),
                                          "record_every_hours": adj.check_every_days * 24.0})
    effectors = region.effectors.model_copy(update={"capacity": min(region.effectors.capacity, 20_000)})
    sim = Simulation(region.model_copy(update={"tumour": tumour, "time": time, "effectors": effectors}),
                     seed=seed, patient=key, threads=1)
    if lesion.onset_day > 0:  # the supply of a lesion arising after day 0 follows the patient's clock
        d = sim.disc
        sim.disc = dataclasses.replace(d, mean_cik_arrivals=cik_arrivals_per_step(
            region, n_sites(d.geometry), d.n_steps, d.dt_days, shift_days=lesion.onset_day))
    # Checked every check_every_days (at least every step) for extinction or hand-off, in compiled code.
    sim.advance(sim.disc.n_steps, check_every=max(1, round(adj.check_every_days / sim.disc.dt_days)),
                stop_cells=adj.handoff_cells)
    live = sim.lattice.cell == core.LIVE
    status = ck.EXTINCT if not live.any() else ck.RAN_TO_END
    lost = int(np.count_nonzero(live & (sim.lattice.mhc_lost == 1)))
    tumour_counts = np.array([np.count_nonzero(live) - lost, lost], dtype=np.float64)
    n_eff = int(sim.counters[core.C_STORED])
    alive = sim.effectors.alive[:n_eff] == 1
    effector_counts = np.bincount(sim.effectors.kind[:n_eff][alive], minlength=ck.N_KINDS)[:ck.N_KINDS]
    kills = sim.kills.reshape(2, ck.N_KINDS, 2).sum(axis=0).astype(np.float64)
    return tumour_counts, effector_counts.astype(np.float64), kills, sim.step * sim.disc.dt_days, status


def lesion_course(ts: TrialScenario, region: Scenario, inputs: CompartmentInputs, lesion: Lesion, *,
                  seed: int, patient_id: int, n_days: int) -> LesionCourse:
    """One lesion's daily cell counts over ``n_days`` days (lattice while small, then compartment)."""
    key = patient_id * LESION_KEY_STRIDE + lesion.index
    burden = np.zeros(n_days + 1)
    kills = np.zeros((ck.N_KINDS, 2))
    start = lesion.onset_day
    lattice_days = 0.0
    if lesion.onset_day >= n_days:
        return LesionCourse(lesion, burden, kills, 0.0, ck.RAN_TO_END)
    if lesion.initial_cells < ts.adjuvant.handoff_cells:
        tumour, effectors, lattice_kills, lattice_days, status = _lattice_phase(
            ts, region, lesion, seed, key, float(n_days))
        kills += lattice_kills
        start = lesion.onset_day + lattice_days
        first = math.ceil(lesion.onset_day)
        last = min(n_days, math.floor(start))
        burden[first:last + 1] = float(tumour.sum())  # the lattice is sampled at hand-off only
        if status == ck.EXTINCT:
            burden[last + 1:] = 0.0
            return LesionCourse(lesion, burden, kills, lattice_days, status)
    else:
        lost = round(lesion.initial_cells * mhc_lost_fraction_at(lesion.initial_cells,
                                                                 region.tumour.mhc_loss_per_division))
        tumour = np.array([lesion.initial_cells - lost, lost], dtype=np.float64)
        effectors = np.zeros(ck.N_KINDS)
        burden[math.ceil(start)] = float(tumour.sum())
    step0 = round(start * inputs.steps_per_day)
    step1 = min(inputs.cik_per_step.shape[0], n_days * inputs.steps_per_day)
    status, _ = ck.lesion_course(tumour, effectors, kills, inputs.params, inputs.cik_per_step, step0, step1,
                                 inputs.steps_per_day, seed, key, burden)
    return LesionCourse(lesion, burden, kills, lattice_days, int(status))

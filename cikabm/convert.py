"""The one place where physical rates become per-step kernel numbers.

Every rate in a scenario is written in physical units (per day, per hour,
µm/min). :func:`kernel_parameters` turns them into per-step probabilities with
``p = 1 - exp(-rate * dt)`` (:func:`cikabm.kernels.core.hazard_to_probability`)
and into the integer thresholds the kernel compares its random bits with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cikabm.kernels.core import KernelParams, hazard_to_probability, no_event_log
from cikabm.kernels.core import threshold as _threshold
from cikabm.kernels.geometry import Geometry, make_geometry, n_sites
from cikabm.params import KIND_KEYS, Scenario
from cikabm.schedules import dosing_days, mean_blood_over_steps

#: Largest dimensionless diffusion number per field sub-step, as a fraction of
#: the explicit scheme's stability limit ``1 / (2 d)``.
_FIELD_STABILITY = 0.9


def threshold(p: float) -> np.uint64:
    """Kernel threshold of probability ``p``, typed ``uint64`` for Numba."""
    return np.uint64(_threshold(float(p)))


@dataclass(frozen=True)
class Discretisation:
    """Everything the kernel needs, derived from one scenario."""

    geometry: Geometry
    params: KernelParams
    dt_days: float
    n_steps: int
    record_every: int
    infusion_days: np.ndarray  # all scheduled infusions within the run
    mean_cik_arrivals: np.ndarray  # expected CIK arrivals per step
    mean_ctl_arrivals: float  # expected CTL arrivals per step

    @property
    def n_records(self) -> int:
        return self.n_steps // self.record_every + 1

    @property
    def record_days(self) -> np.ndarray:
        return np.arange(self.n_records) * self.record_every * self.dt_days


def completion_in_rest_of_substep(rate: float, dt: float) -> float:
    """Chance an engagement that began at a uniform time within a sub-step of
    length ``dt`` completes before its end: ``1 - (1 - exp(-rate dt)) / (rate dt)``."""
    x = rate * dt
    if x < 1e-8:
        return x / 2.0
    return 1.0 - hazard_to_probability(rate, dt) / x


def nkg2d_signal_table(half_saturation: float, hill: float) -> np.ndarray:
    """Hill response ``h(L) = L^n / (L^n + K^n)`` for the 256 ligand levels."""
    ligand = np.arange(256, dtype=np.float64) / 255.0
    ligand_n, half_n = ligand**hill, half_saturation**hill
    if half_n > 0.0:
        return ligand_n / (ligand_n + half_n)
    # K^n underflowed (a tiny K): 1 / (1 + (K/L)^n) stays finite where L^n / (L^n + 0) is 0/0 at L = 0.
    with np.errstate(divide="ignore"):
        return np.where(ligand > 0.0, 1.0 / (1.0 + (half_saturation / ligand) ** hill), 0.0)


def motility_substeps(scenario: Scenario) -> int:
    """Sub-steps per step so that no effector moves more than one site per sub-step."""
    fastest = max(scenario.effectors.kind(k).speed_um_per_min for k in KIND_KEYS)
    sites_per_step = fastest * scenario.time.dt_minutes / scenario.lattice.site_size_um
    return max(1, math.ceil(sites_per_step - 1e-12))


def blood_per_step(scenario: Scenario, n_steps: int, dt_days: float, shift_days: float = 0.0) -> np.ndarray:
    """Mean blood CIK level over each of ``n_steps`` steps of ``dt_days``, the clock starting
    ``shift_days`` after day 0 (earlier doses still count)."""
    doses = dosing_days(scenario.dosing) - shift_days
    doses = doses[doses < n_steps * dt_days]
    return mean_blood_over_steps(n_steps, dt_days, doses, scenario.dosing.dose_cells, scenario.persistence)


def cik_arrivals_per_step(scenario: Scenario, sites: float, n_steps: int, dt_days: float,
                          shift_days: float = 0.0) -> np.ndarray:
    """Expected CIK arrivals into ``sites`` lattice sites in each step: homing x blood level x dt."""
    return scenario.homing.cik_per_site_per_day * sites * blood_per_step(scenario, n_steps, dt_days,
                                                                         shift_days) * dt_days


def step_grid(duration_days: float, dt_minutes: float, record_every_hours: float) -> tuple[int, int]:
    """Steps of a run and steps between records: the one rounding of times to steps."""
    n_steps = max(1, round(duration_days / (dt_minutes / 1440.0)))
    record_every = max(1, round(record_every_hours / (dt_minutes / 60.0)))
    return n_steps, record_every


def kernel_parameters(scenario: Scenario) -> Discretisation:
    """Convert a validated scenario into kernel parameters and per-step inputs."""
    dims = scenario.dims
    geom = make_geometry(tuple(scenario.lattice.shape), scenario.lattice.neighbourhood,
                         scenario.lattice.field_coarsening)
    dt_min = scenario.time.dt_minutes
    dt_h = dt_min / 60.0
    dt_d = dt_min / 1440.0
    n_steps, record_every = step_grid(scenario.time.duration_days, dt_min, scenario.time.record_every_hours)

    tum = scenario.tumour
    total_rate = tum.division_rate_per_day + tum.death_rate_per_day

    n_sub = motility_substeps(scenario)
    dt_sub_min = dt_min / n_sub
    dt_sub_h = dt_sub_min / 60.0
    site = scenario.lattice.site_size_um
    kinds = [scenario.effectors.kind(k) for k in KIND_KEYS]
    kill = scenario.killing

    ifn = scenario.ifn
    dx_field = scenario.lattice.field_coarsening * site
    diffusion_number = ifn.diffusion_um2_per_min * dt_min / dx_field**2
    limit = _FIELD_STABILITY / (2.0 * dims)
    n_field_sub = max(1, math.ceil(diffusion_number / limit))
    field_dt_min = dt_min / n_field_sub
    decay_rate_per_min = math.log(2.0) / (ifn.half_life_hours * 60.0)

    prod = scenario.product
    shares = np.array([prod.share_tnk, prod.share_tcell, prod.share_nk])
    product_cum = np.cumsum(shares / shares.sum())

    params = KernelParams(
        thr_death_share=threshold(tum.death_rate_per_day / total_rate if total_rate > 0 else 0.0),
        # Waiting times of the event-driven tumour: log(1 - p) of the per-step probabilities.
        event_log_q=no_event_log(total_rate, dt_d),
        clear_log_q=no_event_log(1.0 / tum.clearance_time_hours, dt_h),
        thr_mhc_loss=threshold(tum.mhc_loss_per_division),
        inherit_sd=float(tum.inheritance_sd),
        nkg2d_signal=nkg2d_signal_table(kill.nkg2d_half_saturation, kill.nkg2d_hill),
        # A blocked receptor recognises nothing: its rate is 0 for every kind.
        nkg2d_rate=np.array([0.0 if kill.nkg2d_blocked else k.nkg2d_rate_per_hour for k in kinds],
                            dtype=np.float64),
        missing_self=np.array([k.missing_self_weight for k in kinds], dtype=np.float64),
        tcr_rate=np.array([0.0 if kill.tcr_blocked else k.tcr_rate_per_hour for k in kinds], dtype=np.float64),
        thr_tcr_match=np.array([threshold(k.tcr_recognising_fraction) for k in kinds], dtype=np.uint64),
        thr_aicd=threshold(kill.activation_death_per_kill),
        fasl=np.array([1 if k.fasl else 0 for k in kinds], dtype=np.uint8),
        thr_eff_death=np.array([threshold(hazard_to_probability(k.death_rate_per_day, dt_d))
                                for k in kinds], dtype=np.uint64),
        thr_move=np.array([threshold(k.speed_um_per_min * dt_sub_min / site) for k in kinds],
                          dtype=np.uint64),
        thr_persist=threshold(scenario.effectors.persistence),
        thr_perforin_done=threshold(hazard_to_probability(1.0 / kill.perforin_time_minutes, dt_sub_min)),
        thr_fas_done=threshold(hazard_to_probability(1.0 / kill.fas_time_hours, dt_sub_h)),
        thr_perforin_same=threshold(completion_in_rest_of_substep(1.0 / kill.perforin_time_minutes, dt_sub_min)),
        thr_fas_same=threshold(completion_in_rest_of_substep(1.0 / kill.fas_time_hours, dt_sub_h)),
        thr_regen=threshold(hazard_to_probability(1.0 / kill.granule_regeneration_hours, dt_sub_h)),
        fas_threshold=float(kill.fas_threshold),
        granules_max=int(kill.granules_max),
        kill_capacity=int(kill.kill_capacity),
        dt_sub_hours=float(dt_sub_h),
        n_sub=int(n_sub),
        ifn_secretion=float(ifn.secretion_per_hour * dt_sub_h),
        ifn_half_effect=float(ifn.half_effect),
        ifn_decay=float(math.exp(-decay_rate_per_min * field_dt_min)),
        ifn_alpha=float(diffusion_number / n_field_sub),
        n_field_sub=int(n_field_sub),
        well_mixed=scenario.effectors.motility == "well_mixed",
        product_cum=product_cum.astype(np.float64),
        granules_initial=int(kill.granules_max),
    )

    doses = dosing_days(scenario.dosing)
    doses = doses[doses < n_steps * dt_d]
    sites = n_sites(geom)
    mean_cik = cik_arrivals_per_step(scenario, sites, n_steps, dt_d)
    mean_ctl = scenario.homing.ctl_per_site_per_day * sites * dt_d
    return Discretisation(geometry=geom, params=params, dt_days=dt_d, n_steps=n_steps,
                          record_every=record_every, infusion_days=doses,
                          mean_cik_arrivals=mean_cik, mean_ctl_arrivals=float(mean_ctl))

"""The per-step numbers of the pure-Mesa reference model, derived again from a scenario.

:class:`StepRules` turns the physical rates of a scenario into every
probability and dimensionless number one step of
:class:`cikabm.mesa.reference.ReferenceModel` needs, written out in the order
of the step. It imports neither ``cikabm.convert`` nor ``cikabm.kernels`` on
purpose: the reference is an independent statement of the model, so a wrong
conversion in the kernel's path shows up as a disagreement between the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cikabm.params import KIND_KEYS, Scenario
from cikabm.schedules import dosing_days, mean_blood_over_steps

__all__ = ["FAS", "FIELD_STABILITY", "PERFORIN", "KindRules", "StepRules", "completes_in_rest_of_substep",
           "probability"]

#: Kill mechanisms: perforin/granzyme uses one granule; Fas/FasL needs none.
PERFORIN = "perforin"
FAS = "fas"

#: Largest diffusion number per IFN-gamma field sub-step, as a fraction of the
#: explicit scheme's stability limit 1 / (2 d).
FIELD_STABILITY = 0.9


# ------------------------------------------------------------------ rates to probabilities
def probability(rate: float, dt: float) -> float:
    """Chance that an event of constant hazard ``rate`` happens within ``dt``: ``1 - exp(-rate dt)``."""
    return -math.expm1(-rate * dt)


def completes_in_rest_of_substep(rate: float, dt: float) -> float:
    """Chance that an engagement begun at a uniform time within a sub-step of length ``dt``
    completes before the sub-step ends: ``1 - (1 - exp(-rate dt)) / (rate dt)``.

    Without it every kill would last at least one whole sub-step, which would
    make kill rates depend on the sub-step length.
    """
    x = rate * dt
    if x < 1e-8:
        return x / 2.0  # the series 1 - (1 - e^-x)/x = x/2 - ...
    return 1.0 - probability(rate, dt) / x


@dataclass(frozen=True)
class KindRules:
    """Per-step numbers of one effector kind."""

    p_death: float  # per step
    p_move: float  # per sub-step
    nkg2d_rate: float  # per hour, on a target with full NKG2D signal
    missing_self: float  # w in (1 - w M)
    tcr_rate: float  # per hour, on a target with M = 1, for a cell whose TCR recognises the tumour
    tcr_fraction: float  # share of arriving cells whose TCR recognises the tumour
    fasl: bool  # can kill by Fas/FasL without granules


@dataclass(frozen=True)
class StepRules:
    """Every probability and dimensionless number one step needs, derived from a scenario.

    Build it with :meth:`from_scenario`; the derivation is written out there
    in the order of the step.
    """

    dt_days: float
    n_steps: int
    record_every: int
    # tumour
    p_tumour_event: float  # death or division, competing, per step
    p_tumour_death: float  # the death share of p_tumour_event
    p_clear: float  # a dying cell's site is cleared, per step
    p_mhc_loss: float  # per division
    inheritance_sd: float
    nkg2d_half_saturation: float
    nkg2d_hill: float
    # effectors
    n_sub: int
    dt_sub_hours: float
    kinds: dict[str, KindRules]
    p_persist: float
    p_done: dict[str, float]  # kill completion per sub-step, by mechanism
    p_same: dict[str, float]  # completion within the sub-step the engagement began in
    p_regen: float  # one granule per sub-step
    fas_threshold: float
    granules_max: int
    kill_capacity: int
    p_aicd: float  # activation-induced death right after a kill
    # IFN-gamma field
    coarsening: int
    ifn_secretion: float  # field units per engaged effector per sub-step
    ifn_half_effect: float
    n_field_sub: int
    ifn_alpha: float  # D dt / dx^2 per field sub-step
    ifn_decay: float  # factor per field sub-step
    # supply
    cik_shares: tuple[float, float, float]  # tnk, tcell, nk, normalised
    mean_cik_arrivals: np.ndarray  # expected CIK arrivals in each step
    mean_ctl_arrivals: float  # expected CTL arrivals per step
    infusion_days: np.ndarray  # infusions given within the run
    capacity: int

    @classmethod
    def from_scenario(cls, sc: Scenario) -> StepRules:
        """Turn the physical rates of ``sc`` into per-step and per-sub-step numbers."""
        dt_min = sc.time.dt_minutes
        dt_h = dt_min / 60.0
        dt_d = dt_min / 1440.0
        n_steps = max(1, round(sc.time.duration_days / dt_d))
        record_every = max(1, round(sc.time.record_every_hours / dt_h))

        # Tumour: at most one event per cell per step. Death (mu) and division
        # (lambda) compete, so the event happens with 1 - exp(-(lambda + mu) dt)
        # and is a death with probability mu / (lambda + mu).
        tum = sc.tumour
        total = tum.division_rate_per_day + tum.death_rate_per_day
        p_event = probability(total, dt_d)
        p_death = p_event * tum.death_rate_per_day / total if total > 0 else 0.0

        # Effectors: sub-steps short enough that the fastest kind moves at most
        # one site per sub-step; then "move" is a Bernoulli trial per sub-step.
        site_um = sc.lattice.site_size_um
        fastest = max(sc.effectors.kind(k).speed_um_per_min for k in KIND_KEYS)
        n_sub = max(1, math.ceil(fastest * dt_min / site_um - 1e-12))
        dt_sub_min = dt_min / n_sub
        dt_sub_h = dt_sub_min / 60.0
        # An antibody-blocked receptor recognises nothing, whatever the kind.
        kill = sc.killing
        kinds = {}
        for key in KIND_KEYS:
            k = sc.effectors.kind(key)
            kinds[key] = KindRules(
                p_death=probability(k.death_rate_per_day, dt_d),  # drawn in the first sub-step only
                p_move=min(1.0, k.speed_um_per_min * dt_sub_min / site_um),
                nkg2d_rate=0.0 if kill.nkg2d_blocked else k.nkg2d_rate_per_hour,
                missing_self=k.missing_self_weight,
                tcr_rate=0.0 if kill.tcr_blocked else k.tcr_rate_per_hour,
                tcr_fraction=k.tcr_recognising_fraction,
                fasl=k.fasl,
            )
        perforin_rate_per_min = 1.0 / kill.perforin_time_minutes
        fas_rate_per_h = 1.0 / kill.fas_time_hours

        # IFN-gamma: explicit diffusion on the coarse grid, in as many field
        # sub-steps as stability needs; first-order decay over each.
        ifn = sc.ifn
        dx_um = sc.lattice.field_coarsening * site_um
        diffusion_number = ifn.diffusion_um2_per_min * dt_min / dx_um**2
        n_field_sub = max(1, math.ceil(diffusion_number / (FIELD_STABILITY / (2.0 * 2))))
        decay_per_min = math.log(2.0) / (ifn.half_life_hours * 60.0)

        # Supply: CIK homing follows the mean blood level over each step (exact
        # integral of the two-compartment decay, so arrivals do not depend on
        # dt); endogenous CTLs arrive at a constant rate.
        doses = dosing_days(sc.dosing)
        doses = doses[doses < n_steps * dt_d]
        blood = mean_blood_over_steps(n_steps, dt_d, doses, sc.dosing.dose_cells, sc.persistence)
        n_sites = math.prod(sc.lattice.shape)
        prod = sc.product
        shares = np.array([prod.share_tnk, prod.share_tcell, prod.share_nk])
        shares = shares / shares.sum()

        return cls(
            dt_days=dt_d,
            n_steps=n_steps,
            record_every=record_every,
            p_tumour_event=p_event,
            p_tumour_death=p_death,
            p_clear=probability(1.0 / tum.clearance_time_hours, dt_h),
            p_mhc_loss=tum.mhc_loss_per_division,
            inheritance_sd=tum.inheritance_sd,
            nkg2d_half_saturation=kill.nkg2d_half_saturation,
            nkg2d_hill=kill.nkg2d_hill,
            n_sub=n_sub,
            dt_sub_hours=dt_sub_h,
            kinds=kinds,
            p_persist=sc.effectors.persistence,
            p_done={PERFORIN: probability(perforin_rate_per_min, dt_sub_min),
                    FAS: probability(fas_rate_per_h, dt_sub_h)},
            p_same={PERFORIN: completes_in_rest_of_substep(perforin_rate_per_min, dt_sub_min),
                    FAS: completes_in_rest_of_substep(fas_rate_per_h, dt_sub_h)},
            p_regen=probability(1.0 / kill.granule_regeneration_hours, dt_sub_h),
            fas_threshold=kill.fas_threshold,
            granules_max=kill.granules_max,
            kill_capacity=kill.kill_capacity,
            p_aicd=kill.activation_death_per_kill,
            coarsening=sc.lattice.field_coarsening,
            ifn_secretion=ifn.secretion_per_hour * dt_sub_h,
            ifn_half_effect=ifn.half_effect,
            n_field_sub=n_field_sub,
            ifn_alpha=diffusion_number / n_field_sub,
            ifn_decay=math.exp(-decay_per_min * dt_min / n_field_sub),
            cik_shares=(float(shares[0]), float(shares[1]), float(shares[2])),
            mean_cik_arrivals=sc.homing.cik_per_site_per_day * n_sites * blood * dt_d,
            mean_ctl_arrivals=sc.homing.ctl_per_site_per_day * n_sites * dt_d,
            infusion_days=doses,
            capacity=sc.effectors.capacity,
        )

    def nkg2d_signal(self, ligand: float) -> float:
        """Hill response ``h(L) = L^n / (L^n + K^n)`` of the NKG2D receptor to ligand density ``L``."""
        ln = ligand**self.nkg2d_hill
        return ln / (ln + self.nkg2d_half_saturation**self.nkg2d_hill)

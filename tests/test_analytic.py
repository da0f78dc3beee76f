"""The analytic checks of docs/model.md ("Analytic checks"), and dt invariance.

Each test compares a simulated quantity with a closed-form expectation and
allows 4 standard deviations, the standard deviation coming from the
birth-death, binomial or Poisson variance of the quantity (not from the
simulation itself, except for the dt comparison where the between-seed spread
is the only estimate). All seeds are fixed.

Known approximations (documented at each test):

* The kernel draws at most one tumour event per cell per step, so its
  expected per-step growth factor is ``1 + p_div - p_death`` with
  ``p = 1 - exp(-(lambda + mu) dt)`` split by rate; this differs from
  ``exp((lambda - mu) dt)`` by a relative growth-rate error of about
  ``lambda dt`` (0.35 % at 5 min for lambda = 1/day). Both are checked.
* Well-mixed killing: an effector engages at most one target per sub-step and
  a kill completes on a later sub-step; the kill hazard derived below is exact
  for one cell alone in an effector's neighbourhood and ignores the (small)
  fraction of effectors busy completing a kill.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    STILL,
    closed_neighbourhood_sizes,
    inject_effectors,
    live_count,
    make_scenario,
    merge,
    no_engagement_probability,
    run_scenario,
)

from cikabm import Simulation
from cikabm.kernels import core

KINDS = ("tnk", "tcell", "nk", "ctl")
ALL_STILL = {k: STILL for k in KINDS}


# ------------------------------------------------------------------ check 1: pure growth
def test_pure_growth_is_exponential():
    """N = N0 exp((lambda - mu) t) for cells scattered thinly on a large lattice.

    Scattered founders at 2.5 % density for one day (growth x2.2): crowding
    within a clone is rare (measured: ~0.25 % of cells fully surrounded at the
    end). The birth-death variance per founder is
    ``(lambda + mu)/(lambda - mu) e^{gt} (e^{gt} - 1)``.
    """
    lam, mu, n0, days = 1.0, 0.2, 4000, 1.0
    sc = make_scenario(lattice={"shape": [400, 400]},
                       tumour={"initial_cells": n0, "initial_pattern": "scattered",
                               "division_rate_per_day": lam, "death_rate_per_day": mu},
                       time={"duration_days": days, "dt_minutes": 5.0, "record_every_hours": 6.0},
                       effectors=ALL_STILL)
    seeds = list(range(4))
    finals = []
    for seed in seeds:
        sim, frame = run_scenario(sc, seed=seed, threads=2)
        assert frame["tumour_total"].iloc[0] == n0
        finals.append(frame["tumour_total"].to_numpy())
    mean = np.mean(finals, axis=0)
    t = frame["time_days"].to_numpy()
    g = lam - mu
    expected = n0 * np.exp(g * t)
    sigma = np.sqrt(n0 * (lam + mu) / g * np.exp(g * t) * np.expm1(g * t) / len(seeds))
    # the kernel's own discrete-time expectation (at most one event per cell per step)
    dt = sim.disc.dt_days
    p_event = -np.expm1(-(lam + mu) * dt)
    discrete = n0 * (1.0 + p_event * (lam - mu) / (lam + mu)) ** np.round(t / dt)
    print(f"pure growth day {t[-1]:g}: mean {mean[-1]:.0f}, exp((l-m)t) {expected[-1]:.0f}, "
          f"discrete {discrete[-1]:.0f}, sigma {sigma[-1]:.0f}")
    assert np.all(np.abs(mean - expected) <= 4 * sigma + 1e-9), np.c_[mean, expected, sigma]
    assert np.all(np.abs(mean - discrete) <= 4 * sigma + 1e-9), np.c_[mean, discrete, sigma]
    assert abs(mean[-1] / expected[-1] - 1) < 0.02


# ------------------------------------------------------------------ check 2: contact-inhibited growth
def growth_exponent_with_offset(t: np.ndarray, n: np.ndarray) -> tuple[float, float]:
    """Least-squares fit of ``log N = c + d log(t - t0)`` over a grid of ``t0``: ``(d, t0)``.

    A clone grows exponentially until a front forms, so ``N ~ (t - t0)^d`` with
    a small positive ``t0``; fitting the offset removes its bias on ``d``.
    """
    best = (np.inf, np.nan, np.nan)
    for t0 in np.linspace(-0.5 * t[0], 0.9 * t[0], 141):
        (d, _c), res, *_ = np.polyfit(np.log(t - t0), np.log(n), 1, full=True)
        if res[0] < best[0]:
            best = (res[0], d, t0)
    return best[1], best[2]


def eden_run(shape, lam_t_end, seed):
    """Grow one cell with lambda = 12/day on an hourly clock (lambda dt = 0.5).

    The power law is a property of contact-inhibited growth, not of the clock,
    so a coarse clock keeps the runs short. Returns lambda t, N and whether the
    clone reached the lattice border (it must not, for the law to hold).
    """
    lam = 12.0
    sc = make_scenario(lattice={"shape": list(shape)},
                       tumour={"initial_cells": 1, "division_rate_per_day": lam,
                               "death_rate_per_day": 0.0},
                       time={"duration_days": lam_t_end / lam, "dt_minutes": 60.0,
                             "record_every_hours": 1.0},
                       effectors=ALL_STILL)
    sim, frame = run_scenario(sc, seed=seed, threads=2)
    geom = sim.disc.geometry
    cell = sim.lattice.cell.reshape(geom.pz, geom.py, geom.px)
    inner = cell[geom.z0:geom.z0 + geom.nz, 1:-1, 1:-1]
    faces = [inner[..., 0], inner[..., -1], inner[..., 0, :], inner[..., -1, :]]
    if geom.dims == 3:
        faces += [inner[0], inner[-1]]
    touched = any((f == core.LIVE).any() for f in faces)
    return frame["time_days"].to_numpy() * lam, frame["tumour_total"].to_numpy(), touched


@pytest.mark.parametrize("seed", [1, 2])
def test_contact_inhibited_growth_2d_is_quadratic(seed):
    t, n, touched = eden_run((401, 401), 180.0, seed)
    assert not touched
    late = t >= t[-1] / 2
    slope = np.polyfit(np.log(t[late]), np.log(n[late]), 1)[0]
    d, t0 = growth_exponent_with_offset(t[late], n[late])
    print(f"2D Eden seed {seed}: log-log slope {slope:.3f}, with offset {d:.3f} (t0 = {t0:.1f}/lambda)")
    assert abs(slope - 2.0) < 0.25, slope  # measured 2.07-2.08
    assert abs(d - 2.0) < 0.15, d  # measured 1.97-2.03
    # the radius grows linearly: sqrt(N) is a straight line in t
    r = np.corrcoef(t[late], np.sqrt(n[late]))[0, 1]
    assert r > 0.999


def test_contact_inhibited_growth_3d_is_cubic():
    """3D, 26 neighbours. The raw log-log slope over lambda t in [26, 52] is still ~3.6
    (the exponential start weighs heavily at these sizes), so the exponent is
    fitted with a time offset; measured 3.11-3.15."""
    t, n, touched = eden_run((101, 101, 101), 52.0, seed=3)
    assert not touched
    late = t >= t[-1] / 2
    d, t0 = growth_exponent_with_offset(t[late], n[late])
    slope = np.polyfit(np.log(t[late]), np.log(n[late]), 1)[0]
    print(f"3D Eden: log-log slope {slope:.3f}, with offset {d:.3f} (t0 = {t0:.1f}/lambda)")
    assert abs(d - 3.0) < 0.25, (d, t0)
    assert np.corrcoef(t[late], np.cbrt(n[late]))[0, 1] > 0.999


# ------------------------------------------------------------------ check 3: extinction of one cell
def extinction_fraction(sc, replicates: int, effectors: int = 0, stop_at: int = 25) -> float:
    """Fraction of one-cell clones that die out, ``patient`` = replicate number.

    A run stops when the clone is extinct or has ``stop_at`` live cells (from
    there extinction has probability below ``((mu + kappa)/lambda)^stop_at``).
    """
    extinct = 0
    for rep in range(replicates):
        sim = Simulation(sc, patient=rep, threads=1)
        if effectors:
            inject_effectors(sim, core.KIND_CTL, effectors, granules=255)
        per_day = round(1.0 / sim.disc.dt_days)
        while True:
            sim.advance(per_day)
            n = live_count(sim)
            if n == 0:
                extinct += 1
                break
            if n >= stop_at:
                break
            assert sim.step < sim.disc.n_steps, "clone neither died out nor grew"
    return extinct / replicates


EXTINCTION = {
    "lattice": {"shape": [41, 41]},
    "tumour": {"initial_cells": 1, "mhc_mean": 1.0, "mhc_sd": 0.0, "mhc_loss_per_division": 0.0,
               "inheritance_sd": 0.0},
    "time": {"duration_days": 60.0, "dt_minutes": 30.0, "record_every_hours": 24.0},
    "effectors": {**ALL_STILL, "capacity": 500},
}


def test_extinction_probability_without_immunity():
    """One cell, birth lambda, death mu: extinction probability mu / lambda.

    Exact in the kernel's discrete time too: per step the cell dies with
    ``p_event mu/(lambda+mu)`` and divides with ``p_event lambda/(lambda+mu)``,
    and the extinction root of the branching process is their ratio.
    """
    lam, mu, reps = 1.0, 0.4, 2000
    sc = make_scenario(merge(EXTINCTION, {"tumour": {"division_rate_per_day": lam,
                                                     "death_rate_per_day": mu}}))
    observed = extinction_fraction(sc, reps)
    expected = mu / lam
    sigma = np.sqrt(expected * (1 - expected) / reps)
    print(f"extinction, kappa = 0: {observed:.4f} vs {expected:.4f} (sigma {sigma:.4f})")
    assert abs(observed - expected) < 4 * sigma, (observed, expected)


def test_extinction_probability_with_constant_kill_hazard():
    """Extinction probability (mu + kappa) / lambda with an immune kill hazard kappa.

    A constant per-cell kill hazard: 100 well-mixed CTLs that never die, never
    exhaust (capacity and granules 255) and kill one sub-step after engaging
    (perforin time 0.001 min). Tumour cells have M = 1 exactly, so each CTL
    within reach engages a lone cell with ``q = 1 - exp(-tcr dt_sub)`` per
    sub-step. Effectors are redrawn on distinct random sites every sub-step,
    so ``kappa = -log(no_engagement_probability) / dt_sub`` exactly for a cell
    whose 9 reachable sites are interior (the clone stays near the centre).
    Approximations: the kill lands one sub-step (30 min) after engagement,
    during which the target can still divide (probability ~ lambda dt = 2 %),
    and clone cells share effectors (negligible at 100 effectors on 1681 sites).
    """
    lam, mu, target_kappa, n_eff, reps = 1.0, 0.2, 0.4, 100, 1200
    sites = 41 * 41
    tcr = target_kappa / 24.0 * sites / (9 * n_eff)  # per hour, mean-field
    ctl = {"tcr_rate_per_hour": tcr, "nkg2d_rate_per_hour": 0.0, "death_rate_per_day": 0.0,
           "speed_um_per_min": 0.0}
    sc = make_scenario(merge(EXTINCTION, {
        "tumour": {"division_rate_per_day": lam, "death_rate_per_day": mu},
        "effectors": {"motility": "well_mixed", "ctl": ctl},
        "killing": {"perforin_time_minutes": 1e-3, "granules_max": 255, "kill_capacity": 255},
        "ifn": {"secretion_per_hour": 0.0},
    }))
    dt_sub = Simulation(sc).disc.params.dt_sub_hours
    q = -np.expm1(-tcr * dt_sub)
    kappa = -np.log(no_engagement_probability(sites, 9, n_eff, q)) / dt_sub * 24.0
    assert kappa == pytest.approx(target_kappa, rel=0.01)
    observed = extinction_fraction(sc, reps, effectors=n_eff)
    expected = (mu + kappa) / lam  # 0.599
    sigma = np.sqrt(expected * (1 - expected) / reps)
    print(f"extinction, kappa = {kappa:.4f}/day: {observed:.4f} vs {expected:.4f} (sigma {sigma:.4f})")
    assert abs(observed - expected) < 4 * sigma, (observed, expected)
    # and clearly not the immunity-free value mu / lambda = 0.2
    assert observed - mu / lam > 8 * sigma


# ------------------------------------------------------------------ check 4: mass action
@pytest.mark.parametrize("n_eff", [500, 1000])
def test_well_mixed_killing_follows_mass_action(n_eff):
    """dT/dt = -k E T with k = rate * (reachable sites) / (lattice sites).

    1000 static tumour cells (no growth, death or clearance; M = 1 so a CTL's
    rate is its TCR rate) scattered over 200 x 200 sites; CTLs redrawn at
    random every sub-step, never dying or exhausting, killing one sub-step
    after engaging. Each cell's kill probability per sub-step is derived from
    its own number of reachable sites (9 inside, 6 on an edge, 4 in a corner),
    and the expected kill count is compared at every record, sigma from the
    sum of the cells' Bernoulli variances. The plain mass-action curve with
    the mean reach is checked too.
    """
    side, n0, rate, hours = 200, 1000, 0.5, 8.0
    sites = side * side
    ctl = {"tcr_rate_per_hour": rate, "nkg2d_rate_per_hour": 0.0, "death_rate_per_day": 0.0}
    sc = make_scenario(lattice={"shape": [side, side]},
                       tumour={"initial_cells": n0, "initial_pattern": "scattered",
                               "division_rate_per_day": 0.0, "death_rate_per_day": 0.0,
                               "clearance_time_hours": 1e6, "mhc_mean": 1.0, "mhc_sd": 0.0,
                               "mhc_loss_per_division": 0.0},
                       effectors={"motility": "well_mixed", "ctl": ctl},
                       killing={"perforin_time_minutes": 1e-3, "granules_max": 255,
                                "kill_capacity": 255},
                       ifn={"secretion_per_hour": 0.0},
                       time={"duration_days": hours / 24.0, "record_every_hours": 1.0})
    observed = expected = variance = 0.0
    reach_sum = 0.0
    for seed in range(3):
        sim = Simulation(sc, seed=seed, threads=1)
        inject_effectors(sim, core.KIND_CTL, n_eff, granules=255)
        cells = np.flatnonzero(sim.lattice.cell == core.LIVE)
        reach = closed_neighbourhood_sizes(sim, cells)
        frame = sim.run(progress=False, n_snapshots=0).to_frame()

        dt_sub = sim.disc.params.dt_sub_hours
        q = -np.expm1(-rate * dt_sub)
        p_none = {r: no_engagement_probability(sites, r, n_eff, q) for r in np.unique(reach)}
        p_none_cell = np.array([p_none[r] for r in reach])
        hours_t = frame["time_days"].to_numpy() * 24.0
        substeps = np.round(hours_t / dt_sub).astype(int)
        engaging = np.maximum(substeps - 1, 0)  # a kill is counted one sub-step after engagement
        p_killed = 1.0 - p_none_cell[None, :] ** engaging[:, None]
        expected = expected + p_killed.sum(axis=1)
        variance = variance + (p_killed * (1 - p_killed)).sum(axis=1)
        observed = observed + frame["kills_total"].to_numpy()
        reach_sum += reach.mean()
    sigma = np.sqrt(variance)
    k = rate * (reach_sum / 3) / sites
    mass_action = 3 * n0 * -np.expm1(-k * n_eff * hours_t)
    print(f"mass action E = {n_eff}: kills {observed[-1]:.0f}, per-cell expectation {expected[-1]:.1f}, "
          f"T0(1 - exp(-kEt)) {mass_action[-1]:.1f}, sigma {sigma[-1]:.1f}, k = {k:.3g}/h")
    assert observed[-1] > 0.3 * 3 * n0
    assert np.all(np.abs(observed - expected) <= 4 * sigma + 1e-9), np.c_[observed, expected, sigma]
    # the same in the mass-action form T(t) = T0 exp(-k E t), k from the mean reach
    assert abs(observed[-1] - mass_action[-1]) < 4 * sigma[-1] + 0.01 * mass_action[-1]


# ------------------------------------------------------------------ dt invariance
def _means_agree(a: np.ndarray, b: np.ndarray, n_sd: float = 4.0) -> tuple[bool, float]:
    se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    z = abs(a.mean() - b.mean()) / se
    return z < n_sd, z


def test_halving_dt_keeps_growth_and_kills_walk():
    """Tumour growth and CTL killing with walking effectors, dt = 10 vs 5 min.

    Speed 4 µm/min gives 3 and 2 motility sub-steps (3.3 and 2.5 min), so the
    effector clock changes too, not only the tumour clock.
    """
    four = {k: {"speed_um_per_min": 4.0} for k in KINDS}
    base = {"lattice": {"shape": [60, 60]},
            "tumour": {"initial_cells": 400, "division_rate_per_day": 0.8, "death_rate_per_day": 0.2},
            "homing": {"ctl_per_site_per_day": 0.01},
            "effectors": four,
            "time": {"duration_days": 4.0, "record_every_hours": 12.0}}
    results = {}
    for dt in (10.0, 5.0):
        sc = make_scenario(merge(base, {"time": {"dt_minutes": dt}}))
        assert Simulation(sc).disc.params.n_sub == {10.0: 3, 5.0: 2}[dt]
        rows = []
        for seed in range(24):
            _, frame = run_scenario(sc, seed=seed)
            last = frame.iloc[-1]
            rows.append([last["tumour_total"], last["kills_total"], last["effectors_ctl"]])
        results[dt] = np.asarray(rows, float)
    assert results[10.0][:, 1].mean() > 200  # killing matters in this scenario
    for column, name in enumerate(("tumour", "kills", "ctl")):
        ok, z = _means_agree(results[10.0][:, column], results[5.0][:, column])
        print(f"dt 10 vs 5 min, walk, {name}: {results[10.0][:, column].mean():.1f} vs "
              f"{results[5.0][:, column].mean():.1f} ({z:.2f} se)")
        assert ok, (name, z, results[10.0][:, column].mean(), results[5.0][:, column].mean())


def test_halving_dt_keeps_growth_without_effectors():
    """Growth alone (ball of 300 cells, contact inhibited), dt = 10 vs 5 min."""
    results = {}
    for dt in (10.0, 5.0):
        sc = make_scenario(lattice={"shape": [50, 50]},
                           tumour={"initial_cells": 300, "division_rate_per_day": 1.0,
                                   "death_rate_per_day": 0.3},
                           time={"duration_days": 4.0, "dt_minutes": dt, "record_every_hours": 24.0},
                           effectors=ALL_STILL)
        results[dt] = np.array([run_scenario(sc, seed=s)[1]["tumour_total"].iloc[-1]
                                for s in range(24)], float)
    ok, z = _means_agree(results[10.0], results[5.0])
    print(f"dt 10 vs 5 min: {results[10.0].mean():.1f} vs {results[5.0].mean():.1f} ({z:.2f} se)")
    assert ok, (z, results[10.0].mean(), results[5.0].mean())


def test_halving_dt_keeps_kills_well_mixed():
    """Well-mixed CTLs with one sub-step per step, so halving dt halves every clock:
    engagement, perforin completion (30 min), granule regeneration, death.

    Moderate load (effectors mostly searching, ~2 kills each in 12 h): the
    delay of about one sub-step that each engage-then-complete chain carries
    (engagement and completion are each geometric in sub-steps, mean
    ``dt/p ~ 1/rate + dt/2``) is far below the noise. Under heavy load it is
    not: 400 CTLs on 2000 cells (100 x 100, 3 granules then Fas, 12 h, 10
    seeds) gave total kills 1659 / 1674 / 1689 (se ~5) and Fas kills
    337 / 363 / 379 at dt = 10 / 5 / 2 min.
    """
    ctl = {"speed_um_per_min": 0.0, "death_rate_per_day": 1.0, "tcr_rate_per_hour": 0.5}
    base = {"lattice": {"shape": [80, 80]},
            "tumour": {"initial_cells": 600, "initial_pattern": "scattered",
                       "division_rate_per_day": 0.0, "death_rate_per_day": 0.0},
            "effectors": {**ALL_STILL, "ctl": ctl, "motility": "well_mixed"},
            "killing": {"granule_regeneration_hours": 2.0},
            "time": {"duration_days": 0.5, "record_every_hours": 6.0}}
    seeds = list(range(10))
    results = {}
    for dt in (10.0, 5.0):
        sc = make_scenario(merge(base, {"time": {"dt_minutes": dt}}))
        kills = []
        for seed in seeds:
            sim = Simulation(sc, seed=seed, threads=1)
            assert sim.disc.params.n_sub == 1
            inject_effectors(sim, core.KIND_CTL, 150)
            kills.append(sim.run(progress=False, n_snapshots=0).to_frame()["kills_total"].iloc[-1])
        results[dt] = np.asarray(kills, float)
    assert results[10.0].mean() > 100
    ok, z = _means_agree(results[10.0], results[5.0])
    print(f"dt 10 vs 5 min: {results[10.0].mean():.1f} vs {results[5.0].mean():.1f} ({z:.2f} se)")
    assert ok, (z, results[10.0].mean(), results[5.0].mean())

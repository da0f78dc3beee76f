"""Dosing schedules, blood persistence and homing supply (docs/model.md: Supply, analytic check 6)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_scenario, run_scenario

from cikabm.convert import kernel_parameters
from cikabm.params import PersistenceParams
from cikabm.schedules import (
    PRESET_SCHEDULES,
    blood_level,
    dosing_days,
    dosing_phases,
    infusion_days,
    mean_blood_over_steps,
    single_dose_level,
)

PERSIST = {"dose": 6.4e9, "persistence": PersistenceParams(fast_fraction=0.9, fast_half_life_days=4.0,
                                                           slow_half_life_days=20.0)}


def test_lee2015_weeks():
    days = infusion_days(PRESET_SCHEDULES["lee2015"])
    weeks = days / 7.0
    np.testing.assert_array_equal(weeks, [0, 1, 2, 3, 5, 7, 9, 11, 15, 19, 23, 27, 35, 43, 51, 59])


def test_choi2018_has_14_infusions():
    days = infusion_days(PRESET_SCHEDULES["choi2018"])
    assert len(days) == 14
    np.testing.assert_array_equal(np.diff(days), [7.0] * 5 + [14.0] * 8)


def test_weekly6_biweekly_has_16_infusions():
    days = infusion_days(PRESET_SCHEDULES["weekly6_biweekly"])
    assert len(days) == 16
    np.testing.assert_array_equal(np.diff(days), [7.0] * 5 + [14.0] * 10)


def test_start_day_shifts_every_infusion():
    base = infusion_days(PRESET_SCHEDULES["lee2015"])
    np.testing.assert_array_equal(infusion_days(PRESET_SCHEDULES["lee2015"], 10.5), base + 10.5)


@pytest.mark.parametrize("phases", [((0, 7.0),), ((2, 0.0),), ((2, -1.0),)])
def test_bad_phases_are_rejected(phases):
    with pytest.raises(ValueError):
        infusion_days(phases)


def test_custom_and_preset_schedules_through_the_scenario():
    custom = make_scenario(time={"duration_days": 40.0},
                           dosing={"schedule": "custom", "start_day": 2.0,
                                   "phases": [{"count": 3, "interval_days": 7.0},
                                              {"count": 2, "interval_days": 10.0}]})
    np.testing.assert_array_equal(dosing_days(custom.dosing), [2.0, 9.0, 16.0, 26.0, 36.0])
    lee = make_scenario(dosing={"schedule": "lee2015"}, time={"duration_days": 100.0})
    assert dosing_phases(lee.dosing) == PRESET_SCHEDULES["lee2015"]
    # only the infusions inside the run reach the kernel
    np.testing.assert_array_equal(kernel_parameters(lee).infusion_days / 7.0, [0, 1, 2, 3, 5, 7, 9, 11])
    none = make_scenario(dosing={"schedule": "none"})
    assert len(dosing_days(none.dosing)) == 0
    assert not kernel_parameters(none).mean_cik_arrivals.any()


def test_single_dose_curve():
    t = np.array([-1.0, 0.0, 4.0, 20.0])
    level = single_dose_level(t, **PERSIST)
    assert level[0] == 0.0  # nothing before the infusion
    assert level[1] == pytest.approx(6.4e9)
    assert level[2] == pytest.approx(6.4e9 * (0.9 * 0.5 + 0.1 * 2 ** (-4 / 20)))
    assert level[3] == pytest.approx(6.4e9 * (0.9 * 2.0**-5 + 0.1 * 0.5))


@pytest.mark.parametrize("name", sorted(PRESET_SCHEDULES))
def test_blood_level_is_the_superposition_of_single_doses(name):
    doses = infusion_days(PRESET_SCHEDULES[name], 3.0)
    t = np.linspace(0.0, doses[-1] + 120.0, 4001)
    total = blood_level(t, doses, **PERSIST)
    summed = sum(single_dose_level(t - d, **PERSIST) for d in doses)
    np.testing.assert_allclose(total, summed, rtol=1e-12, atol=0)
    # each dose adds exactly one dose's worth at its time, and the curve never drops below it
    for d in doses:
        jump = blood_level(np.array([d]), doses, **PERSIST) - blood_level(np.array([d - 1e-9]), doses,
                                                                        **PERSIST)
        assert jump[0] == pytest.approx(PERSIST["dose"], rel=1e-6)
    assert np.all(total >= 0)
    # linear in the dose
    half = blood_level(t, doses, **{**PERSIST, "dose": PERSIST["dose"] / 2})
    np.testing.assert_allclose(2 * half, total, rtol=1e-12)


def _integral(t_end, doses, dose, persistence):
    """Exact integral of the blood level from 0 to t_end."""
    p = persistence
    total = 0.0
    for d in doses:
        since = max(t_end - d, 0.0)
        for frac, half in ((p.fast_fraction, p.fast_half_life_days), (1 - p.fast_fraction, p.slow_half_life_days)):
            k = np.log(2) / half
            total += dose * frac * (1 - np.exp(-k * since)) / k
    return total


@pytest.mark.parametrize("dt_days", [1.0, 0.25, 1 / 144])
def test_mean_blood_over_steps_is_the_exact_step_average(dt_days):
    doses = infusion_days(PRESET_SCHEDULES["choi2018"], 0.3)  # doses off the step grid
    n = round(120 / dt_days)
    mean = mean_blood_over_steps(n, dt_days, doses, **PERSIST)
    assert mean.shape == (n,)
    # cumulative sums are exact integrals of the curve, whatever the step
    for k in (1, n // 3, n):
        assert mean[:k].sum() * dt_days == pytest.approx(_integral(k * dt_days, doses, **PERSIST),
                                                          rel=1e-9)


def test_mean_blood_over_steps_converges_to_the_sampled_curve():
    doses = infusion_days(PRESET_SCHEDULES["lee2015"])
    errors = []
    for dt in (0.5, 0.05, 0.005):
        n = round(200 / dt)
        mid = (np.arange(n) + 0.5) * dt
        mean = mean_blood_over_steps(n, dt, doses, **PERSIST)
        sampled = blood_level(mid, doses, **PERSIST)
        # doses fall on step edges here, so every step is smooth: midpoint error is O(dt^2)
        errors.append(np.max(np.abs(mean - sampled) / sampled))
    assert errors[0] < 1e-2
    assert errors[1] < errors[0] / 50 and errors[2] < errors[1] / 50
    assert errors[2] < 1e-6


def test_homing_rate_follows_blood_level_and_arrivals_match():
    """Expected CIK arrivals per step = homing x sites x mean blood x dt; the kernel's Poisson
    arrivals over the run match the total within 4 sigma."""
    sc = make_scenario(lattice={"shape": [40, 40]},
                       tumour={"initial_cells": 0},
                       homing={"cik_per_site_per_day": 4e-12, "ctl_per_site_per_day": 0.01},
                       dosing={"schedule": "lee2015", "start_day": 0.5},
                       effectors={"capacity": 20_000},
                       time={"duration_days": 12.0, "record_every_hours": 12.0})
    disc = kernel_parameters(sc)
    blood = mean_blood_over_steps(disc.n_steps, disc.dt_days, disc.infusion_days, sc.dosing.dose_cells,
                                  sc.persistence)
    np.testing.assert_allclose(disc.mean_cik_arrivals, 4e-12 * 1600 * blood * disc.dt_days, rtol=1e-12)
    assert disc.mean_ctl_arrivals == pytest.approx(0.01 * 1600 * disc.dt_days)
    _, frame = run_scenario(sc, seed=1)
    cik = frame[["arrivals_tnk", "arrivals_tcell", "arrivals_nk"]].sum(axis=1).to_numpy()
    expected = np.concatenate([[0.0], np.cumsum(disc.mean_cik_arrivals)])[::disc.record_every]
    assert frame["arrivals_dropped"].iloc[-1] == 0
    assert expected[-1] > 300
    assert np.all(np.abs(cik - expected) <= 4 * np.sqrt(expected) + 1e-9), np.c_[cik, expected]
    assert cik[frame["time_days"].to_numpy() < 0.5].sum() == 0  # nothing before the first dose
    ctl_expected = disc.mean_ctl_arrivals * disc.n_steps
    assert abs(frame["arrivals_ctl"].iloc[-1] - ctl_expected) < 4 * np.sqrt(ctl_expected)
    # product shares: T-NK : T : NK = 0.36 : 0.60 : 0.04 (binomial, 4 sigma)
    n = cik[-1]
    for key, share in (("tnk", 0.36), ("tcell", 0.60), ("nk", 0.04)):
        got = frame[f"arrivals_{key}"].iloc[-1]
        assert abs(got - n * share) < 4 * np.sqrt(n * share * (1 - share)), key
    # the frame reports the schedule
    np.testing.assert_array_equal(frame["infusions_given"],
                                  np.searchsorted(disc.infusion_days, frame["time_days"], side="right"))
    np.testing.assert_allclose(frame["blood_cik_cells"],
                               blood_level(frame["time_days"].to_numpy(), disc.infusion_days,
                                           sc.dosing.dose_cells, PERSIST["persistence"]))

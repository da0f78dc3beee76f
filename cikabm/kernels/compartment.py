"""Compartment kernel: one tumour lesion as the well-mixed limit of the lattice, at any size.

A lesion is its tumour cells by MHC state (present, lost) and the effectors
inside it by kind (``tnk``, ``tcell``, ``nk``, ``ctl``, the lattice kernel's
kind order). The step order, once per step of ``dt`` days:

1. Supply: CIK arrivals of each infused kind, Poisson with mean
   ``cik[step] * A(N) * share[k]`` (``cik[step]`` = homing per site x mean
   blood level over the step x dt), endogenous CTLs with mean
   ``ctl * A(N) * dt``. ``A(N) = V0 * max(1, N / V0) ** beta`` is the
   tumour's perfused area in lattice sites: the lattice region's ``V0`` sites
   while the lesion fits in it, then growing as ``N ** beta`` (entry through
   the tumour's surface, ``beta = 2/3``), so the E:T ratio falls as the
   lesion grows.
2. Effector death: each effector dies with ``1 - exp(-mu[k] dt)``.
3. Tumour: each cell of MHC state ``h`` has three competing hazards:
   division ``b``, death ``d`` and immune kill ``kappa_h = sum_k E_k
   a[k, h] / (V (1 + tau_k sum_h' a[k, h'] rho_h'))`` with ``V = max(V0, N)``
   and ``rho_h = N_h / V``: mass action (``a`` = per-contact recognition rate
   times the contact neighbourhood, the lattice's well-mixed limit) with a
   handling time ``tau_k`` per kill (Holling type II). A daughter of an
   MHC-present cell loses MHC-I with ``mhc_loss``.
4. Kills are shared between the kinds in proportion to their kill rates; each
   kill exhausts its effector with ``q[k]`` (one over its expected lifetime
   kills).

While the lesion holds fewer than ``stochastic_below`` cells every count is
an integer and every event a draw (tau-leaping: divisions, and deaths and
kills, are binomial draws whose means are those of the exact solution of the
step, from counter-based random numbers keyed on (seed, lesion, step, slot));
above it the tumour follows the exact
solution of its linear equations over the step and the effectors their
expected values (deterministic). The kernel is pure: it writes only into the
arrays it is given.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cikabm.kernels.core import draw, hazard_to_probability, mix64, normal, poisson, stream_key, uniform

#: Random-stream purpose of the compartment kernel (the lattice kernel's are 1-18).
P_COMPARTMENT = 40
N_KINDS = 4
N_CIK_KINDS = 3
#: Indices into the scalar parameter array.
S_BIRTH, S_DEATH, S_MHC_LOSS, S_V0, S_BETA, S_CTL, S_STOCHASTIC, S_DT, S_STOP = range(9)
N_SCALARS = 9
#: Status returned by :func:`lesion_course`.
RAN_TO_END, REACHED_STOP, EXTINCT = 0, 1, 2
#: Draw slots per step (one stream per slot and step).
_SLOTS = 64


@njit(cache=True)
def binomial(key, n, p):
    """Binomial draw of ``n`` trials (a float holding an integer) with probability ``p``.

    Inversion below a mean of 30 (by symmetry for ``p > 1/2``), a normal
    approximation clipped to ``[0, n]`` above.
    """
    if n <= 0.0 or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return n
    if p > 0.5:
        return n - binomial(mix64(key ^ np.uint64(0x5BD1E995)), n, 1.0 - p)
    mean = n * p
    if mean < 30.0:
        u = uniform(draw(key, 0))
        ratio = p / (1.0 - p)
        pmf = np.exp(n * np.log1p(-p))
        cdf = pmf
        k = 0.0
        while u > cdf and k < n:
            pmf *= ratio * (n - k) / (k + 1.0)
            k += 1.0
            cdf += pmf
        return k
    k = np.floor(mean + np.sqrt(mean * (1.0 - p)) * normal(key, 1) + 0.5)
    return min(max(k, 0.0), n)


@njit(cache=True, inline="always")
def _count(key, stochastic, n, p):
    """Events among ``n`` with probability ``p``: a binomial draw, or its mean."""
    if stochastic:
        return binomial(key, n, p)
    return n * p


@njit(cache=True, inline="always")
def _arrivals(key, stochastic, mean):
    if stochastic:
        return float(poisson(key, mean))
    return mean


# nogil: a trial simulates patients in threads of one process (cikabm.trial._run_here).
@njit(cache=True, nogil=True)
def lesion_course(tumour, effectors, kills, params, cik, step0, step1, steps_per_day, seed, lesion, out):
    """Advance one lesion from ``step0`` to at most ``step1``; the status and the last step.

    Parameters
    ----------
    tumour : float64[2]
        Cells with MHC-I present and lost (updated in place).
    effectors : float64[4]
        Effectors in the lesion by kind (updated in place).
    kills : float64[4, 2]
        Kills by kind and target MHC state (accumulated).
    params : tuple
        ``(scalars, a, tau, q, mu, share)``: :data:`N_SCALARS` scalars (birth
        and death per day, MHC loss per division, ``V0``, ``beta``, CTL
        arrivals per site per day, the stochastic threshold, dt in days, the
        stop size), the recognition rates ``a[k, h]`` per day at density 1,
        handling times ``tau[k]`` in days, exhaustion per kill ``q[k]``,
        death rates ``mu[k]`` per day, and the product shares ``share[k]`` of
        the three infused kinds.
    cik : float64[n]
        Expected CIK arrivals per site in each step (homing x blood x dt).
    step0, step1 : int
        First step and the step to stop at (absolute: they index ``cik``).
    steps_per_day : int
        ``out[d]`` receives the cell count at the end of each whole day ``d``.
    seed, lesion : int
        Key of the lesion's random streams.
    out : float64[n_days + 1]
        Daily cell counts (written for the days this call covers; after a
        stop, every later day holds the final count).

    Returns
    -------
    (int, int)
        :data:`RAN_TO_END`, :data:`REACHED_STOP` (the lesion reached the stop
        size) or :data:`EXTINCT`; and the step at which the call ended.
    """
    scal, a, tau, q, mu, share = params
    birth = scal[S_BIRTH]
    death = scal[S_DEATH]
    mhc_loss = scal[S_MHC_LOSS]
    v0 = scal[S_V0]
    beta = scal[S_BETA]
    ctl = scal[S_CTL]
    stochastic_below = scal[S_STOCHASTIC]
    dt = scal[S_DT]
    stop = scal[S_STOP]
    base = stream_key(seed, lesion, 0, P_COMPARTMENT)
    p_eff_death = np.empty(N_KINDS)
    for k in range(N_KINDS):
        p_eff_death[k] = hazard_to_probability(mu[k], dt)
    weight = np.empty((N_KINDS, 2))
    was_stochastic = True
    status = RAN_TO_END
    step = step0
    while step < step1:
        n = tumour[0] + tumour[1]
        stochastic = n < stochastic_below
        if stochastic and not was_stochastic:  # back to whole cells and effectors
            for h in range(2):
                tumour[h] = np.floor(tumour[h] + 0.5)
            for k in range(N_KINDS):
                effectors[k] = np.floor(effectors[k] + 0.5)
            n = tumour[0] + tumour[1]
        was_stochastic = stochastic
        slot = np.uint64(step) * np.uint64(_SLOTS)
        # 1. supply
        area = v0 * max(1.0, n / v0) ** beta
        for k in range(N_CIK_KINDS):
            effectors[k] += _arrivals(draw(base, slot + np.uint64(k)), stochastic, cik[step] * area * share[k])
        effectors[3] += _arrivals(draw(base, slot + np.uint64(3)), stochastic, ctl * area * dt)
        # 2. effector death
        for k in range(N_KINDS):
            effectors[k] -= _count(draw(base, slot + np.uint64(4 + k)), stochastic, effectors[k], p_eff_death[k])
        # 3. tumour: competing division, death and kill per cell
        vol = max(v0, n)
        kappa0 = 0.0
        kappa1 = 0.0
        for k in range(N_KINDS):
            denom = 1.0 + tau[k] * (a[k, 0] * tumour[0] + a[k, 1] * tumour[1]) / vol
            weight[k, 0] = effectors[k] * a[k, 0] / (vol * denom)
            weight[k, 1] = effectors[k] * a[k, 1] / (vol * denom)
            kappa0 += weight[k, 0]
            kappa1 += weight[k, 1]
        new_lost = 0.0
        for h in range(2):
            kappa = kappa0 if h == 0 else kappa1
            s = slot + np.uint64(8 + 8 * h)
            rate = birth - death - kappa
            x = rate * dt
            per_cell = np.expm1(x) / rate if abs(x) > 1e-12 else dt  # time a cell's line spends alive
            if stochastic:  # events drawn with the means of the exact solution (tau-leaping, mean-exact)
                removed = _count(draw(base, s), True, tumour[h], min(1.0, (death + kappa) * per_cell))
                killed = _count(draw(base, s + np.uint64(1)), True, removed,
                                kappa / (death + kappa)) if death + kappa > 0 else 0.0
                divisions = _count(draw(base, s + np.uint64(2)), True, tumour[h], min(1.0, birth * per_cell))
                grown = tumour[h] + divisions - removed
            else:  # the linear equations' exact solution over the step
                divisions = birth * tumour[h] * per_cell
                killed = kappa * tumour[h] * per_cell
                grown = tumour[h] * np.exp(x)
            if h == 0:
                lost = _count(draw(base, s + np.uint64(3)), stochastic, divisions, mhc_loss)
                tumour[0] = grown - lost
                new_lost += lost
            else:
                tumour[1] = grown
            # 4. kills shared between the kinds, each exhausting its effector with q[k]
            left = killed
            rest = kappa
            for k in range(N_KINDS):
                if left <= 0.0 or rest <= 0.0:
                    break
                share_k = weight[k, h] / rest
                if share_k >= 1.0 - 1e-12:
                    mine = left
                else:
                    mine = _count(draw(base, s + np.uint64(4 + k)), stochastic, left, share_k)
                left -= mine
                rest -= weight[k, h]
                kills[k, h] += mine
                spent = _count(draw(base, slot + np.uint64(32 + 4 * h + k)), stochastic, mine, q[k])
                effectors[k] = max(0.0, effectors[k] - spent)
        tumour[1] += new_lost
        for h in range(2):
            tumour[h] = max(tumour[h], 0.0)
        step += 1
        n = tumour[0] + tumour[1]
        if step % steps_per_day == 0:
            out[step // steps_per_day] = n
        if n >= stop:
            status = REACHED_STOP
            break
        if n <= 0.0 or (not stochastic and n < 0.5):
            tumour[0] = 0.0
            tumour[1] = 0.0
            status = EXTINCT
            break
    if status != RAN_TO_END:
        n = tumour[0] + tumour[1]
        for d in range(step // steps_per_day + 1, out.shape[0]):
            out[d] = n
    return status, step

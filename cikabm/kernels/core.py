"""The Numba tumour-CIK lattice kernel.

Everything compiled lives in this one module on purpose: Numba's on-disk
cache is invalidated per source file, so a kernel split over several files can
silently run a stale callee after an edit.

Conventions
-----------
* Lattices are flat, padded arrays (see :mod:`cikabm.kernels.geometry`).
* Every random decision is a counter-based draw: ``draw(key, agent)`` where
  ``key = stream_key(seed, patient, clock, purpose)``. Nothing depends on
  which thread evaluates it, so results are bit-identical for any thread count.
* Probabilities arrive as 32-bit integer thresholds (``threshold(p)``); an
  event happens when the top 32 bits of its draw are below the threshold.
* Kernels take every parameter as an argument and write into preallocated
  arrays. Nothing here reads configuration at import.

Step order (one call of :func:`run_steps` repeats it)
-----------------------------------------------------
1. Supply: Poisson arrivals of infused CIK cells and endogenous CTLs.
2. Tumour propose: each live cell draws death or division; a dividing cell
   picks an empty neighbour and writes only its own direction byte.
3. Tumour resolve: each proposal checks the other proposals on its target in
   a fixed order; the target's own draw picks the winner, which writes the
   daughter. Dead cells are cleared here.
4. Effectors, in ``n_sub`` motility sub-steps: death (first sub-step), kill
   completion, granule regeneration, recognition and engagement, movement.
   Effectors are bucketed by (z mod 3, y mod 3, x mod 3); members of one
   bucket are at least 3 sites apart, so their radius-1 neighbourhoods never
   overlap and a bucket is processed in parallel without locks.
5. IFN-gamma: engaged effectors secrete into the coarse field, which then
   diffuses and decays in explicit sub-steps.
6. Dead effectors are removed (stable compaction) and, on record steps, the
   populations are counted into the record table.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

# ---------------------------------------------------------------- constants
EMPTY = 0
LIVE = 1
DYING = 2
WALL = 3

KIND_TNK = 0  # CD3+CD56+
KIND_TCELL = 1  # CD3+CD56-
KIND_NK = 2  # CD3-CD56+
KIND_CTL = 3  # endogenous CTL, not infused
N_KINDS = 4

MECH_PERFORIN = 0
MECH_FAS = 1
N_MECHS = 2

EVENT_NONE = 0
EVENT_DIED = 1
EVENT_KILL = 2  # + 2 * mechanism + mhc_lost

# Random-stream purposes: one per kind of decision, so draws never collide.
P_TUMOUR_EVENT = 1
P_DIVISION_WINNER = 2
P_INHERIT = 3
P_CLEAR = 4
P_EFF_DEATH = 5
P_EFF_COMPLETE = 6
P_EFF_REGEN = 7
P_EFF_SCAN = 8
P_EFF_ENGAGE = 9
P_EFF_MOVE = 10
P_EFF_TURN = 11
P_ARRIVAL = 12
P_SEED = 13
P_SHUFFLE = 14
P_POISSON = 15
P_ARRIVAL_KIND = 16

MAX_SUBSTEPS = 16
N_CLASSES = 27

# Record table columns (the host names them; order fixed here).
REC_TUMOUR_MHC_PRESENT = 0
REC_TUMOUR_MHC_LOST = 1
REC_TUMOUR_DYING = 2
REC_EFFECTORS = 3  # + kind
REC_ENGAGED = 7
REC_EXHAUSTED = 8
REC_IFN_MEAN = 9
REC_KILLS = 10  # + (mechanism * N_KINDS + kind) * 2 + mhc_lost
REC_ARRIVALS = 26  # + kind
REC_DROPPED = 30
N_REC = 31

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_GOLDEN2 = np.uint64(0xD1B54A32D192ED03)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
_S11 = np.uint64(11)
_LOW32 = np.uint64(0xFFFFFFFF)


# ---------------------------------------------------------------- state
class LatticeState(NamedTuple):
    """Per-site arrays (flat, padded). 7 bytes per site."""

    cell: np.ndarray  # uint8: EMPTY, LIVE, DYING, WALL
    ligand: np.ndarray  # uint8: NKG2D-ligand density L * 255
    mhc: np.ndarray  # uint8: heritable MHC-I level M * 255
    fas: np.ndarray  # uint8: heritable Fas level F * 255
    mhc_lost: np.ndarray  # uint8: 1 after irreversible genetic MHC loss
    proposal: np.ndarray  # uint8: division direction (0 none), scratch
    has_effector: np.ndarray  # uint8: 1 where an effector stands


class EffectorState(NamedTuple):
    """Effector agents as a struct of arrays, with room for ``capacity``."""

    pos: np.ndarray  # int64 flat padded site
    kind: np.ndarray  # uint8
    granules: np.ndarray  # uint8 perforin/granzyme granules left
    kills: np.ndarray  # uint8 kills made
    target: np.ndarray  # int64 engaged site, -1 when free
    mechanism: np.ndarray  # uint8 mechanism of the current engagement
    heading: np.ndarray  # uint8 neighbour index of the persistent walk
    uid: np.ndarray  # int64 unique id, keys the effector's random draws
    born: np.ndarray  # int64 step of arrival (age = step - born)
    alive: np.ndarray  # uint8
    event: np.ndarray  # uint8 scratch: what happened this sub-step
    klass: np.ndarray  # int64 scratch: colour class
    order: np.ndarray  # int64 scratch: effectors sorted by class


class KernelParams(NamedTuple):
    """Per-step probabilities and dimensionless numbers (see ``cikabm.params``)."""

    thr_tumour_death: np.uint64
    thr_tumour_event: np.uint64  # death + division, competing
    thr_clear: np.uint64
    thr_mhc_loss: np.uint64
    inherit_sd: float
    nkg2d_signal: np.ndarray  # float64[256]: Hill response h(L) per ligand level
    nkg2d_rate: np.ndarray  # float64[kind], per hour
    missing_self: np.ndarray  # float64[kind]
    tcr_rate: np.ndarray  # float64[kind], per hour
    fasl: np.ndarray  # uint8[kind]
    thr_eff_death: np.ndarray  # uint64[kind], per step
    thr_move: np.ndarray  # uint64[kind], per sub-step
    thr_persist: np.uint64
    thr_perforin_done: np.uint64  # per sub-step
    thr_fas_done: np.uint64  # per sub-step
    thr_perforin_same: np.uint64  # within the rest of the sub-step an engagement began in
    thr_fas_same: np.uint64
    thr_regen: np.uint64  # per sub-step
    fas_threshold: float
    granules_max: int
    kill_capacity: int
    dt_sub_hours: float
    n_sub: int
    ifn_secretion: float  # field units per engaged effector per sub-step
    ifn_half_effect: float
    ifn_decay: float  # factor per field sub-step
    ifn_alpha: float  # D dt / dx^2 per field sub-step
    n_field_sub: int
    well_mixed: bool
    product_cum: np.ndarray  # float64[3] cumulative CIK subset shares
    granules_initial: int


# ---------------------------------------------------------------- RNG
@njit(cache=True, inline="always")
def mix64(z):
    """splitmix64 finaliser: a bijective avalanche of 64 bits."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True)
def stream_key(seed, patient, clock, purpose):
    """Key of one family of draws: (seed, patient, clock, purpose)."""
    h = mix64(np.uint64(seed) ^ (np.uint64(purpose) * _GOLDEN))
    h = mix64(h ^ (np.uint64(patient) * _GOLDEN2))
    return mix64(h ^ np.uint64(clock))


@njit(cache=True, inline="always")
def draw(key, agent):
    """64 random bits for one agent under one key."""
    return mix64(key ^ (np.uint64(agent) * _GOLDEN))


@njit(cache=True, inline="always")
def hit(bits, thr):
    """True with the probability that ``thr`` encodes (top 32 bits)."""
    return (bits >> _S32) < thr


@njit(cache=True, inline="always")
def pick(bits, n):
    """Uniform integer in [0, n) from the low 32 bits."""
    return np.int64(((bits & _LOW32) * np.uint64(n)) >> _S32)


@njit(cache=True, inline="always")
def uniform(bits):
    """Uniform float in (0, 1)."""
    return ((bits >> _S11) + 0.5) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def normal(key, agent):
    """Standard normal draw (Box-Muller) from two counter-based uniforms."""
    u1 = uniform(draw(key, 2 * agent))
    u2 = uniform(draw(key, 2 * agent + 1))
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


@njit(cache=True)
def poisson(key, mean):
    """Poisson draw: inversion for small means, normal approximation above 30."""
    if mean <= 0.0:
        return 0
    if mean > 30.0:
        mean = min(mean, 1e15)  # far beyond any capacity; keeps the int64 cast exact
        k = np.int64(np.floor(mean + np.sqrt(mean) * normal(key, 0) + 0.5))
        return max(k, 0)
    limit = np.exp(-mean)
    prod = 1.0
    k = 0
    while True:
        prod *= uniform(draw(key, k + 1000))
        if prod <= limit:
            return k
        k += 1


@njit(cache=True, inline="always")
def hazard_to_probability(rate, dt):
    """Per-step probability of an event with constant ``rate`` over ``dt``.

    The one place rates become probabilities: ``p = 1 - exp(-rate * dt)``.
    """
    return -np.expm1(-rate * dt)


@njit(cache=True)
def threshold(p):
    """32-bit integer threshold for probability ``p`` (see :func:`hit`)."""
    if p <= 0.0:
        return np.uint64(0)
    if p >= 1.0:
        return np.uint64(1) << _S32
    return np.uint64(p * 4294967296.0)


@njit(cache=True, parallel=True)
def hash_sites(key, sites, out):
    """``out[i] = draw(key, sites[i])``: used to pick random site subsets."""
    for i in prange(sites.shape[0]):
        out[i] = draw(key, sites[i])


# ---------------------------------------------------------------- helpers
@njit(cache=True, inline="always")
def _to_level(x):
    if x < 0.0:
        x = 0.0
    elif x > 1.0:
        x = 1.0
    return np.uint8(np.int64(x * 255.0 + 0.5))


@njit(cache=True)
def seed_tumour(lat, sites, seed, patient, ligand_mean, ligand_sd, mhc_mean, mhc_sd,
                fas_mean, fas_sd, lost_fraction):
    """Place live tumour cells on ``sites`` with drawn L, M, F and MHC-loss flag."""
    key = stream_key(seed, patient, 0, P_SEED)
    for i in range(sites.shape[0]):
        s = sites[i]
        lat.cell[s] = LIVE
        lat.ligand[s] = _to_level(ligand_mean + ligand_sd * normal(key, 4 * s))
        lat.mhc[s] = _to_level(mhc_mean + mhc_sd * normal(key, 4 * s + 1))
        lat.fas[s] = _to_level(fas_mean + fas_sd * normal(key, 4 * s + 2))
        lost = uniform(draw(key, 8 * s + 7)) < lost_fraction
        lat.mhc_lost[s] = 1 if lost else 0


@njit(cache=True, inline="always")
def _site_zyx(s, py, px):
    plane = py * px
    z = s // plane
    rem = s - z * plane
    y = rem // px
    return z, y, rem - y * px


@njit(cache=True, inline="always")
def _coarse_index(s, geom):
    z, y, x = _site_zyx(s, geom.py, geom.px)
    c = geom.coarsening
    return (((z - geom.z0) // c) * geom.cy + (y - 1) // c) * geom.cx + (x - 1) // c


@njit(cache=True)
def random_interior_site(bits, geom):
    """Uniform interior site (flat padded index) from 64 random bits."""
    n = geom.nz * geom.ny * geom.nx
    i = pick(bits, n)
    z = i // (geom.ny * geom.nx)
    rem = i - z * geom.ny * geom.nx
    y = rem // geom.nx
    x = rem - y * geom.nx
    return ((z + geom.z0) * geom.py + (y + 1)) * geom.px + (x + 1)


# ---------------------------------------------------------------- tumour
@njit(cache=True, inline="always")
def _propose_row(r, cell, proposal, geom, key_event, thr_death, thr_event):
    offsets = geom.offsets
    nnb = geom.n_neighbours
    base = ((r // geom.ny + geom.z0) * geom.py + (r % geom.ny) + 1) * geom.px
    for x in range(1, geom.nx + 1):
        s = base + x
        proposal[s] = 0
        if cell[s] != LIVE:
            continue
        bits = draw(key_event, s)
        u = bits >> _S32
        if u >= thr_event:
            continue
        if u < thr_death:
            cell[s] = DYING
            continue
        n_empty = 0
        for k in range(1, nnb + 1):
            if cell[s + offsets[k]] == EMPTY:
                n_empty += 1
        if n_empty == 0:
            continue  # contact inhibition
        chosen = pick(bits, n_empty)
        for k in range(1, nnb + 1):
            if cell[s + offsets[k]] == EMPTY:
                if chosen == 0:
                    proposal[s] = k
                    break
                chosen -= 1


@njit(cache=True, parallel=True)
def _propose_parallel(cell, proposal, geom, key_event, thr_death, thr_event):
    for r in prange(geom.nz * geom.ny):
        _propose_row(r, cell, proposal, geom, key_event, thr_death, thr_event)


@njit(cache=True)
def tumour_propose(lat, geom, key_event, thr_death, thr_event, parallel):
    """Phase 1: death, and division proposals into empty neighbours.

    Rows are independent: a row writes only its own sites, and reads of
    neighbour emptiness cannot change in this phase (deaths turn LIVE into
    DYING, never into EMPTY).
    """
    if parallel:
        _propose_parallel(lat.cell, lat.proposal, geom, key_event, thr_death, thr_event)
    else:
        for r in range(geom.nz * geom.ny):
            _propose_row(r, lat.cell, lat.proposal, geom, key_event, thr_death, thr_event)


@njit(cache=True, inline="always")
def _resolve_row(r, cell, proposal, ligand, mhc, fas, mhc_lost, geom, key_winner, key_inherit,
                 key_clear, thr_clear, thr_mhc_loss, inherit_sd):
    offsets = geom.offsets
    nnb = geom.n_neighbours
    base = ((r // geom.ny + geom.z0) * geom.py + (r % geom.ny) + 1) * geom.px
    for x in range(1, geom.nx + 1):
        s = base + x
        if cell[s] == DYING:
            if hit(draw(key_clear, s), thr_clear):
                cell[s] = EMPTY
            continue
        d = proposal[s]
        if d == 0:
            continue
        t = s + offsets[d]
        n_prop = 0
        rank = 0
        for k in range(1, nnb + 1):
            n = t + offsets[k]
            dn = proposal[n]
            if dn != 0 and n + offsets[dn] == t:
                if n == s:
                    rank = n_prop
                n_prop += 1
        if n_prop > 1 and pick(draw(key_winner, t), n_prop) != rank:
            continue
        cell[t] = LIVE
        a = 4 * t
        ligand[t] = _to_level(ligand[s] / 255.0 + inherit_sd * normal(key_inherit, a))
        mhc[t] = _to_level(mhc[s] / 255.0 + inherit_sd * normal(key_inherit, a + 1))
        fas[t] = _to_level(fas[s] / 255.0 + inherit_sd * normal(key_inherit, a + 2))
        if mhc_lost[s] == 1 or hit(draw(key_inherit, 8 * t + 7), thr_mhc_loss):
            mhc_lost[t] = 1
        else:
            mhc_lost[t] = 0


@njit(cache=True, parallel=True)
def _resolve_parallel(cell, proposal, ligand, mhc, fas, mhc_lost, geom, key_winner, key_inherit,
                      key_clear, thr_clear, thr_mhc_loss, inherit_sd):
    for r in prange(geom.nz * geom.ny):
        _resolve_row(r, cell, proposal, ligand, mhc, fas, mhc_lost, geom, key_winner, key_inherit,
                     key_clear, thr_clear, thr_mhc_loss, inherit_sd)


@njit(cache=True)
def tumour_resolve(lat, geom, key_winner, key_inherit, key_clear, thr_clear, thr_mhc_loss,
                   inherit_sd, parallel):
    """Phase 2: one winner per target writes the daughter; clear dead cells.

    Only the winning proposer writes a target (which was EMPTY, so no other
    row clears it), and proposals are read-only here: race-free.
    """
    if parallel:
        _resolve_parallel(lat.cell, lat.proposal, lat.ligand, lat.mhc, lat.fas, lat.mhc_lost, geom,
                          key_winner, key_inherit, key_clear, thr_clear, thr_mhc_loss, inherit_sd)
    else:
        for r in range(geom.nz * geom.ny):
            _resolve_row(r, lat.cell, lat.proposal, lat.ligand, lat.mhc, lat.fas, lat.mhc_lost, geom,
                         key_winner, key_inherit, key_clear, thr_clear, thr_mhc_loss, inherit_sd)


# ---------------------------------------------------------------- effectors
@njit(cache=True, inline="always")
def recognition_rate(nkg2d_signal, mhc_eff, nkg2d_rate, missing_self, tcr_rate):
    """Engagement hazard (per hour) of one effector on one target.

    ``nkg2d_rate * h(L) * (1 - w * M) + tcr_rate * M`` with ``h(L)`` the
    NKG2D signal of the target's ligand density and ``M`` its effective MHC-I
    level: NKG2D recognition is MHC-independent, the missing-self weight ``w``
    makes MHC loss raise NK killing, and the TCR term is MHC-restricted.
    """
    return nkg2d_rate * nkg2d_signal * (1.0 - missing_self * mhc_eff) + tcr_rate * mhc_eff


@njit(cache=True, inline="always")
def effective_mhc(mhc_level, lost, ifn_response):
    """MHC-I seen by effectors: the heritable level raised toward 1 by IFN-gamma,
    0 after genetic loss (IFN-gamma cannot restore it)."""
    if lost == 1:
        return 0.0
    m = mhc_level / 255.0
    return m + (1.0 - m) * ifn_response


@njit(cache=True, inline="always")
def _ifn_response(ifn, half):
    return ifn / (ifn + half) if ifn > 0.0 else 0.0


@njit(cache=True, inline="always")
def _kill(i, t, mech, cell, mhc_lost, e_granules, e_kills, e_target, e_event):
    """Effector ``i`` kills the cell on ``t`` by ``mech``: record it, free the effector."""
    cell[t] = DYING
    e_event[i] = EVENT_KILL + 2 * mech + mhc_lost[t]
    e_kills[i] += 1
    if mech == MECH_PERFORIN:
        e_granules[i] -= 1
    e_target[i] = -1


# Numba drops writes made through a NamedTuple attribute inside a prange body
# (``state.array[i] = v`` is lost), so the per-effector update takes the arrays
# it writes as plain arguments, unpacked outside the parallel loop.
@njit(cache=True, inline="always")
def _update_effector(i, cell, ligand, mhc, fas, mhc_lost, has_effector, e_pos, e_kind, e_granules,
                     e_kills, e_target, e_mechanism, e_heading, e_uid, e_alive, e_event,
                     geom, prm, ifn, first_sub, keys):
    """One sub-step of effector ``i``: death, kill, regenerate, engage, move."""
    pos = e_pos[i]
    kind = e_kind[i]
    uid = e_uid[i]
    e_event[i] = EVENT_NONE
    if first_sub and hit(draw(keys[0], uid), prm.thr_eff_death[kind]):
        e_alive[i] = 0
        e_event[i] = EVENT_DIED
        has_effector[pos] = 0
        e_target[i] = -1
        return
    t = e_target[i]
    if t >= 0:
        if cell[t] != LIVE:
            e_target[i] = -1  # target died another way: free again
        else:
            mech = e_mechanism[i]
            thr = prm.thr_perforin_done if mech == MECH_PERFORIN else prm.thr_fas_done
            if hit(draw(keys[1], uid), thr):
                _kill(i, t, mech, cell, mhc_lost, e_granules, e_kills, e_target, e_event)
            return  # engaged effectors do not move
    if e_granules[i] < prm.granules_max and hit(draw(keys[2], uid), prm.thr_regen):
        e_granules[i] += 1
    if e_kills[i] < prm.kill_capacity:
        # Competing hazards over the contact neighbourhood (own site + neighbours):
        # engage with probability 1 - exp(-R dt), R the summed recognition rate,
        # the target picked in proportion to its rate (weighted reservoir, one pass).
        has_granules = e_granules[i] > 0
        if has_granules or prm.fasl[kind] != 0:
            g = _ifn_response(ifn[_coarse_index(pos, geom)], prm.ifn_half_effect)
            rate_nkg2d = prm.nkg2d_rate[kind]
            weight_self = prm.missing_self[kind]
            rate_tcr = prm.tcr_rate[kind]
            total = 0.0
            chosen = -1
            for k in range(geom.n_neighbours + 1):
                n = pos + geom.offsets[k]
                if cell[n] != LIVE:
                    continue
                if not has_granules:  # Fas/FasL only: needs enough effective Fas
                    f = fas[n] / 255.0
                    if f + (1.0 - f) * g < prm.fas_threshold:
                        continue
                m = effective_mhc(mhc[n], mhc_lost[n], g)
                r = recognition_rate(prm.nkg2d_signal[ligand[n]], m, rate_nkg2d, weight_self, rate_tcr)
                if r <= 0.0:
                    continue
                total += r
                if uniform(draw(keys[3], uid * 32 + k)) * total < r:
                    chosen = n
            if chosen >= 0 and uniform(draw(keys[4], uid)) < hazard_to_probability(total, prm.dt_sub_hours):
                mech = MECH_PERFORIN if has_granules else MECH_FAS
                e_target[i] = chosen
                e_mechanism[i] = mech
                # The engagement began during this sub-step: the kill may already
                # complete in the time left, so that no kill lasts a whole sub-step
                # at least (which would make kill rates depend on dt).
                thr = prm.thr_perforin_same if mech == MECH_PERFORIN else prm.thr_fas_same
                if hit(draw(keys[1], uid), thr):
                    _kill(i, chosen, mech, cell, mhc_lost, e_granules, e_kills, e_target, e_event)
                return
    if prm.well_mixed:
        return
    bits = draw(keys[5], uid)
    if not hit(bits, prm.thr_move[kind]):
        return
    heading = e_heading[i]
    if heading == 0 or (bits & _LOW32) >= prm.thr_persist:
        heading = 1 + pick(draw(keys[6], uid), geom.n_neighbours)
    dest = pos + geom.offsets[heading]
    if cell[dest] != WALL and has_effector[dest] == 0:
        has_effector[pos] = 0
        has_effector[dest] = 1
        e_pos[i] = dest
        e_heading[i] = heading
    else:
        e_heading[i] = 0  # blocked: turn at the next move


@njit(cache=True, parallel=True)
def _update_class_parallel(members, lat, eff, geom, prm, ifn, first_sub, keys):
    cell, ligand, mhc, fas, mhc_lost = lat.cell, lat.ligand, lat.mhc, lat.fas, lat.mhc_lost
    has_effector = lat.has_effector
    e_pos, e_kind, e_granules, e_kills = eff.pos, eff.kind, eff.granules, eff.kills
    e_target, e_mechanism, e_heading = eff.target, eff.mechanism, eff.heading
    e_uid, e_alive, e_event = eff.uid, eff.alive, eff.event
    for j in prange(members.shape[0]):
        _update_effector(members[j], cell, ligand, mhc, fas, mhc_lost, has_effector, e_pos, e_kind,
                         e_granules, e_kills, e_target, e_mechanism, e_heading, e_uid, e_alive, e_event,
                         geom, prm, ifn, first_sub, keys)


@njit(cache=True)
def _update_class_serial(members, lat, eff, geom, prm, ifn, first_sub, keys):
    for j in range(members.shape[0]):
        _update_effector(members[j], lat.cell, lat.ligand, lat.mhc, lat.fas, lat.mhc_lost,
                         lat.has_effector, eff.pos, eff.kind, eff.granules, eff.kills, eff.target,
                         eff.mechanism, eff.heading, eff.uid, eff.alive, eff.event,
                         geom, prm, ifn, first_sub, keys)


@njit(cache=True)
def _sort_by_class(eff, n_eff, geom, class_start):
    """Counting sort of the live effectors into the 27 colour classes.

    Effectors that died earlier in this step stay in the arrays until
    compaction, but belong to no class, so they are never updated again.
    """
    class_start[:] = 0
    for i in range(n_eff):
        if eff.alive[i] == 0:
            eff.klass[i] = -1
            continue
        z, y, x = _site_zyx(eff.pos[i], geom.py, geom.px)
        c = (z % 3) * 9 + (y % 3) * 3 + (x % 3)
        eff.klass[i] = c
        class_start[c + 1] += 1
    for c in range(N_CLASSES):
        class_start[c + 1] += class_start[c]
    fill = class_start[:N_CLASSES].copy()
    for i in range(n_eff):
        c = eff.klass[i]
        if c >= 0:
            eff.order[fill[c]] = i
            fill[c] += 1


@njit(cache=True)
def _shuffle_effectors(lat, eff, n_eff, geom, key):
    """Well-mixed mode: put every free effector on a random free site."""
    for i in range(n_eff):
        if eff.target[i] >= 0 or eff.alive[i] == 0:
            continue
        for attempt in range(64):
            s = random_interior_site(draw(key, eff.uid[i] * 64 + attempt), geom)
            if lat.has_effector[s] == 0:
                lat.has_effector[eff.pos[i]] = 0
                lat.has_effector[s] = 1
                eff.pos[i] = s
                break


@njit(cache=True)
def effector_substeps(lat, eff, counters, kills, geom, prm, ifn, seed, patient, step,
                      class_start, parallel_min):
    """All motility sub-steps of one step (step order item 4 and secretion)."""
    keys = np.empty(7, dtype=np.uint64)
    for sub in range(prm.n_sub):
        n_eff = counters[0]
        if n_eff == 0:
            return
        clock = step * MAX_SUBSTEPS + sub
        keys[0] = stream_key(seed, patient, clock, P_EFF_DEATH)
        keys[1] = stream_key(seed, patient, clock, P_EFF_COMPLETE)
        keys[2] = stream_key(seed, patient, clock, P_EFF_REGEN)
        keys[3] = stream_key(seed, patient, clock, P_EFF_SCAN)
        keys[4] = stream_key(seed, patient, clock, P_EFF_ENGAGE)
        keys[5] = stream_key(seed, patient, clock, P_EFF_MOVE)
        keys[6] = stream_key(seed, patient, clock, P_EFF_TURN)
        if prm.well_mixed:
            _shuffle_effectors(lat, eff, n_eff, geom, stream_key(seed, patient, clock, P_SHUFFLE))
        _sort_by_class(eff, n_eff, geom, class_start)
        first_sub = sub == 0
        for c in range(N_CLASSES):
            lo = class_start[c]
            hi = class_start[c + 1]
            if hi == lo:
                continue
            members = eff.order[lo:hi]
            if hi - lo >= parallel_min:
                _update_class_parallel(members, lat, eff, geom, prm, ifn, first_sub, keys)
            else:
                _update_class_serial(members, lat, eff, geom, prm, ifn, first_sub, keys)
        # Serial tally: kills by (mechanism, kind, MHC state), and secretion.
        for i in range(n_eff):
            if eff.alive[i] == 0:
                continue
            ev = eff.event[i]
            if ev >= EVENT_KILL:
                code = ev - EVENT_KILL
                mech = code // 2
                lost = code - 2 * mech
                kills[(mech * N_KINDS + eff.kind[i]) * 2 + lost] += 1
            if eff.target[i] >= 0:
                ifn[_coarse_index(eff.pos[i], geom)] += prm.ifn_secretion


@njit(cache=True)
def compact_effectors(eff, counters):
    """Drop dead effectors, keeping the order of the survivors."""
    n_eff = counters[0]
    w = 0
    for i in range(n_eff):
        if eff.alive[i] == 0:
            continue
        if w != i:
            eff.pos[w] = eff.pos[i]
            eff.kind[w] = eff.kind[i]
            eff.granules[w] = eff.granules[i]
            eff.kills[w] = eff.kills[i]
            eff.target[w] = eff.target[i]
            eff.mechanism[w] = eff.mechanism[i]
            eff.heading[w] = eff.heading[i]
            eff.uid[w] = eff.uid[i]
            eff.born[w] = eff.born[i]
            eff.alive[w] = 1
        w += 1
    counters[0] = w


@njit(cache=True)
def add_effector(lat, eff, counters, geom, kind, granules, step, bits_key, tries):
    """Place one arriving effector on a random free site; False if none found."""
    n_eff = counters[0]
    if n_eff >= eff.pos.shape[0]:
        counters[2] += 1
        return False
    uid = counters[1]
    counters[1] += 1
    for attempt in range(tries):
        s = random_interior_site(draw(bits_key, uid * 64 + attempt), geom)
        if lat.has_effector[s] == 0:
            lat.has_effector[s] = 1
            eff.pos[n_eff] = s
            eff.kind[n_eff] = kind
            eff.granules[n_eff] = granules
            eff.kills[n_eff] = 0
            eff.target[n_eff] = -1
            eff.mechanism[n_eff] = 0
            eff.heading[n_eff] = 0
            eff.uid[n_eff] = uid
            eff.born[n_eff] = step
            eff.alive[n_eff] = 1
            counters[0] = n_eff + 1
            return True
    counters[2] += 1
    return False


@njit(cache=True)
def supply(lat, eff, counters, arrivals, geom, prm, seed, patient, step, mean_cik, mean_ctl):
    """Poisson arrivals of CIK (split by product shares) and endogenous CTLs."""
    key = stream_key(seed, patient, step, P_ARRIVAL)
    key_kind = stream_key(seed, patient, step, P_ARRIVAL_KIND)
    n_cik = poisson(stream_key(seed, patient, 2 * step, P_POISSON), mean_cik)
    n_ctl = poisson(stream_key(seed, patient, 2 * step + 1, P_POISSON), mean_ctl)
    free = eff.pos.shape[0] - counters[0]
    if n_cik + n_ctl > free:  # more than can ever be held: count the excess as dropped at once
        excess = n_cik + n_ctl - free
        counters[2] += excess
        cut_ctl = min(n_ctl, excess)
        n_ctl -= cut_ctl
        n_cik -= excess - cut_ctl
    for a in range(n_cik + n_ctl):
        if a < n_cik:
            u = uniform(draw(key_kind, counters[1]))
            kind = KIND_NK
            for k in range(3):
                if u < prm.product_cum[k]:
                    kind = k
                    break
        else:
            kind = KIND_CTL
        if add_effector(lat, eff, counters, geom, kind, prm.granules_initial, step, key, 32):
            arrivals[kind] += 1


# ---------------------------------------------------------------- IFN field
@njit(cache=True, inline="always")
def _diffuse_row(r, src, dst, cz, cy, cx, alpha, decay):
    z = r // cy
    y = r - z * cy
    for x in range(cx):
        i = (z * cy + y) * cx + x
        c = src[i]
        acc = 0.0
        nb = 0
        if x > 0:
            acc += src[i - 1]
            nb += 1
        if x < cx - 1:
            acc += src[i + 1]
            nb += 1
        if y > 0:
            acc += src[i - cx]
            nb += 1
        if y < cy - 1:
            acc += src[i + cx]
            nb += 1
        if z > 0:
            acc += src[i - cx * cy]
            nb += 1
        if z < cz - 1:
            acc += src[i + cx * cy]
            nb += 1
        v = (c + alpha * (acc - nb * c)) * decay
        dst[i] = v if v > 1e-30 else 0.0  # no denormals: they are slow


@njit(cache=True, parallel=True)
def _diffuse_parallel(src, dst, cz, cy, cx, alpha, decay):
    for r in prange(cz * cy):
        _diffuse_row(r, src, dst, cz, cy, cx, alpha, decay)


@njit(cache=True)
def field_step(ifn, ifn_tmp, geom, prm, parallel):
    """Diffuse and decay the IFN-gamma field over one step (explicit, zero-flux borders)."""
    for _ in range(prm.n_field_sub):
        if parallel:
            _diffuse_parallel(ifn, ifn_tmp, geom.cz, geom.cy, geom.cx, prm.ifn_alpha, prm.ifn_decay)
        else:
            for r in range(geom.cz * geom.cy):
                _diffuse_row(r, ifn, ifn_tmp, geom.cz, geom.cy, geom.cx, prm.ifn_alpha, prm.ifn_decay)
        ifn[:] = ifn_tmp


# ---------------------------------------------------------------- records
@njit(cache=True, inline="always")
def _count_row(r, cell, mhc_lost, geom, row_counts):
    base = ((r // geom.ny + geom.z0) * geom.py + (r % geom.ny) + 1) * geom.px
    present = 0
    lost = 0
    dying = 0
    for x in range(1, geom.nx + 1):
        s = base + x
        c = cell[s]
        if c == LIVE:
            if mhc_lost[s] == 1:
                lost += 1
            else:
                present += 1
        elif c == DYING:
            dying += 1
    row_counts[r, 0] = present
    row_counts[r, 1] = lost
    row_counts[r, 2] = dying


@njit(cache=True, parallel=True)
def _count_parallel(cell, mhc_lost, geom, row_counts):
    for r in prange(geom.nz * geom.ny):
        _count_row(r, cell, mhc_lost, geom, row_counts)


@njit(cache=True)
def record(row, lat, eff, counters, kills, arrivals, geom, prm, ifn, row_counts, parallel):
    """Count populations into one row of the record table."""
    if parallel:
        _count_parallel(lat.cell, lat.mhc_lost, geom, row_counts)
    else:
        for r in range(geom.nz * geom.ny):
            _count_row(r, lat.cell, lat.mhc_lost, geom, row_counts)
    row[:] = 0.0
    for r in range(row_counts.shape[0]):
        row[REC_TUMOUR_MHC_PRESENT] += row_counts[r, 0]
        row[REC_TUMOUR_MHC_LOST] += row_counts[r, 1]
        row[REC_TUMOUR_DYING] += row_counts[r, 2]
    for i in range(counters[0]):
        row[REC_EFFECTORS + eff.kind[i]] += 1
        if eff.target[i] >= 0:
            row[REC_ENGAGED] += 1
        if eff.kills[i] >= prm.kill_capacity:
            row[REC_EXHAUSTED] += 1
    total = 0.0
    for i in range(ifn.shape[0]):
        total += ifn[i]
    row[REC_IFN_MEAN] = total / ifn.shape[0]
    for j in range(kills.shape[0]):
        row[REC_KILLS + j] = kills[j]
    for k in range(N_KINDS):
        row[REC_ARRIVALS + k] = arrivals[k]
    row[REC_DROPPED] = counters[2]


# ---------------------------------------------------------------- driver
@njit(cache=True)
def run_steps(lat, eff, ifn, ifn_tmp, counters, kills, arrivals, geom, prm, seed, patient,
              step_begin, step_end, mean_cik, mean_ctl, record_every, records, row_counts,
              class_start, parallel_min):
    """Advance the model from ``step_begin`` to ``step_end`` (exclusive).

    ``mean_cik[step]`` is the expected number of CIK arrivals in that step;
    ``mean_ctl`` the constant expected CTL arrivals per step. After each step
    ``s`` with ``(s + 1) % record_every == 0`` the populations are written to
    ``records[(s + 1) // record_every]``. A pass runs in parallel when it has
    at least ``parallel_min`` work items (lattice sites, field cells, or
    effectors of one colour class); results do not depend on it.
    """
    lattice_parallel = geom.nz * geom.ny * geom.nx >= parallel_min
    field_parallel = geom.cz * geom.cy * geom.cx >= parallel_min
    effector_min = max(parallel_min // 256, 1)
    for step in range(step_begin, step_end):
        supply(lat, eff, counters, arrivals, geom, prm, seed, patient, step,
               mean_cik[step], mean_ctl)
        tumour_propose(lat, geom, stream_key(seed, patient, step, P_TUMOUR_EVENT),
                       prm.thr_tumour_death, prm.thr_tumour_event, lattice_parallel)
        tumour_resolve(lat, geom, stream_key(seed, patient, step, P_DIVISION_WINNER),
                       stream_key(seed, patient, step, P_INHERIT),
                       stream_key(seed, patient, step, P_CLEAR), prm.thr_clear,
                       prm.thr_mhc_loss, prm.inherit_sd, lattice_parallel)
        effector_substeps(lat, eff, counters, kills, geom, prm, ifn, seed, patient, step,
                          class_start, effector_min)
        compact_effectors(eff, counters)
        field_step(ifn, ifn_tmp, geom, prm, field_parallel)
        if (step + 1) % record_every == 0:
            record(records[(step + 1) // record_every], lat, eff, counters, kills, arrivals,
                   geom, prm, ifn, row_counts, lattice_parallel)

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
   completion (then activation-induced death), granule regeneration,
   recognition and engagement, movement.
   Effectors are bucketed by colour class (z mod 3, y mod 3, x mod 3) and the
   classes run in order; members of one class are at least 3 sites apart, so
   their radius-1 neighbourhoods never overlap. In parallel, strips of the
   lattice run their effectors class by class at the same time, and the few
   effectors near strip boundaries run afterwards: the same order wherever it
   matters (see "effector zones" below). At the end of each sub-step, engaged
   effectors secrete IFN-gamma into their coarse field cells.
5. IFN-gamma: the coarse field diffuses and decays in explicit sub-steps.
6. On record steps, the populations are counted into the record table.

Dead effectors stay in the arrays (``alive == 0``) until the end of the call,
or until arrivals need their room, and are then removed by a stable
compaction. Within a call the effectors are stored in the order of their
sites (arrivals are appended, so when the effector pass runs in strips this
is done again whenever the arrivals since the last time exceed a sixteenth of
the effectors: the strips then write to cache lines of their own), and put back
in order of arrival at its end (array order has no effect on results).
Between calls, the arrays are exactly those of compacting after
every step.

Performance notes
-----------------
* Numba tests a signed array index for wrap-around (negative indexing), and
  that test stops LLVM from vectorising a loop: the branch-free sweeps loop
  over unsigned indices (or over ``range(n)`` of a slice). In the scalar
  per-event and per-effector loops the test costs instructions on every
  access, so they compute indices signed and index with ``np.uint64`` of them
  (an index is never negative there; the wrapped sum of a negative offset is
  the same address).
* A function inlined by Numba that takes arrays increments and decrements
  their reference counts on every call: the per-effector update is written
  out inside its loop, and hot loops read parameters from small local arrays
  rather than through :class:`KernelParams` attributes.
* Numba drops writes through a NamedTuple attribute inside a ``prange`` body:
  parallel loops take the arrays they write as plain arguments.
* Mixing ``uint64`` and ``int64`` in arithmetic gives ``float64``: every hash
  constant is a ``np.uint64`` and unsigned indices are added to unsigned bases.
"""

from __future__ import annotations

import platform
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import cgutils, types
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic

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
# 4 (P_CLEAR, a draw per dying cell and step) was stream version 1's: clearance is drawn once now.
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
P_EFF_AICD = 17
P_TCR_MATCH = 18
P_TUMOUR_WAIT = 19  # steps to a live cell's next event, drawn at birth and after each event
P_SEED_WAIT = 20  # ... of a seeded cell
P_CLEAR_WAIT = 21  # steps from a natural death to clearance
P_KILL_CLEAR = 22  # steps from a kill to clearance
P_EFF_ORDER = 23  # the colour-class order of a step's effector sub-steps

#: ``wake`` of a cell that never acts (a rate of 0): beyond any run (at most 1e8 steps).
NEVER = 2**31 - 1

# The ``counters`` array (int64[N_COUNTERS]) carried between steps.
C_STORED = 0  # effectors in the arrays: the live ones (and, within a call, the dead not yet compacted away)
C_NEXT_UID = 1  # uid of the next arriving effector
C_DROPPED = 2  # arrivals that found no place (capacity or lattice full)
N_COUNTERS = 3
#: Kill tallies (``kills``, int64): index ``(mechanism * N_KINDS + kind) * 2 + mhc_lost``.
N_KILL_TALLIES = N_MECHS * N_KINDS * 2
#: Per-zone tallies of a sub-step (``kz``): the kill tallies, then the effectors that died.
KZ_DEATHS = N_KILL_TALLIES

MAX_SUBSTEPS = 16
# The effector pass runs in strips when it has at least parallel_min / this
# many effectors per colour class in use and strip (16 at parallel_min =
# 65536); below that a parallel region costs more than it saves.
EFFECTOR_MIN_DIVISOR = 4096
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
    """Per-site arrays (flat, padded). 11 bytes per site."""

    cell: np.ndarray  # uint8: EMPTY, LIVE, DYING, WALL
    ligand: np.ndarray  # uint8: NKG2D-ligand density L * 255
    mhc: np.ndarray  # uint8: heritable MHC-I level M * 255
    fas: np.ndarray  # uint8: heritable Fas level F * 255
    mhc_lost: np.ndarray  # uint8: 1 after irreversible genetic MHC loss
    proposal: np.ndarray  # uint8: division direction (0 none), scratch
    has_effector: np.ndarray  # uint8: 1 where an effector stands
    wake: np.ndarray  # int32: the step at which the cell here next acts (LIVE: an event; DYING: clearance);
    # on an EMPTY site a step in the past (-1 at the start), so that it is never due


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
    tcr_match: np.ndarray  # uint8 1 when the cell's TCR clone recognises the tumour (drawn at arrival)
    event: np.ndarray  # uint8 scratch: the effector's last death or kill (EVENT_*)
    klass: np.ndarray  # int64 scratch: packed site coordinates << 16 | bucket (see the effector zones)
    order: np.ndarray  # int64 scratch: two int32 buffers of effectors sorted by bucket (_order_buffers)


#: Every lattice field (:class:`LatticeState`, in its order): its dtype and the value of an interior site
#: at the start (the border is WALL in ``cell`` and the same elsewhere). The allocator and the bytes per
#: site (``cikabm.resources``) follow this list.
LATTICE_FIELDS: tuple[tuple[str, type, int], ...] = (
    ("cell", np.uint8, EMPTY), ("ligand", np.uint8, 0), ("mhc", np.uint8, 0), ("fas", np.uint8, 0),
    ("mhc_lost", np.uint8, 0), ("proposal", np.uint8, 0), ("has_effector", np.uint8, 0),
    ("wake", np.int32, -1))

#: Every effector field (:class:`EffectorState`, in its order): its dtype, its value in an empty slot,
#: and whether it is carried with the effector (compaction and the stores by site and by arrival move
#: it: :func:`_carried_wide` and :func:`_carried_narrow`, checked against this list by the tests) or is
#: scratch of a call. The allocator and the bytes per effector follow this list.
EFFECTOR_FIELDS: tuple[tuple[str, type, int, bool], ...] = (
    ("pos", np.int64, 0, True), ("kind", np.uint8, 0, True), ("granules", np.uint8, 0, True),
    ("kills", np.uint8, 0, True), ("target", np.int64, -1, True), ("mechanism", np.uint8, 0, True),
    ("heading", np.uint8, 0, True), ("uid", np.int64, 0, True), ("born", np.int64, 0, True),
    ("alive", np.uint8, 0, True), ("tcr_match", np.uint8, 0, True), ("event", np.uint8, 0, False),
    ("klass", np.int64, 0, False), ("order", np.int64, 0, False))


def allocate_state(geom, capacity: int) -> tuple[LatticeState, EffectorState]:
    """The lattice (every site as at the start: a WALL border around an empty interior) and room for
    ``capacity`` effectors, from :data:`LATTICE_FIELDS` and :data:`EFFECTOR_FIELDS`."""
    from cikabm.kernels.geometry import interior_view

    size = geom.pz * geom.py * geom.px
    lattice = {}
    for name, dtype, value in LATTICE_FIELDS:
        lattice[name] = np.full(size, value, dtype)
    lattice["cell"][:] = WALL
    interior_view(lattice["cell"], geom)[...] = EMPTY
    effectors = {name: np.full(capacity, value, dtype) for name, dtype, value, _ in EFFECTOR_FIELDS}
    return LatticeState(**lattice), EffectorState(**effectors)


class KernelParams(NamedTuple):
    """Per-step probabilities and dimensionless numbers (see ``cikabm.params``)."""

    thr_death_share: np.uint64  # share of a live cell's events that are deaths
    event_log_q: float  # log(1 - p) of a live cell's per-step event probability (death + division)
    clear_log_q: float  # log(1 - p) of a dying cell's per-step clearance probability
    thr_mhc_loss: np.uint64
    inherit_sd: float
    nkg2d_signal: np.ndarray  # float64[256]: Hill response h(L) per ligand level
    nkg2d_rate: np.ndarray  # float64[kind], per hour
    missing_self: np.ndarray  # float64[kind]
    tcr_rate: np.ndarray  # float64[kind], per hour, for a cell whose TCR recognises the tumour
    thr_tcr_match: np.ndarray  # uint64[kind]: share of arriving cells whose TCR recognises the tumour
    thr_aicd: np.uint64  # activation-induced death after a kill
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
    """Poisson draw: inversion for small means, normal approximation above 30.

    A mean that is not a positive number (NaN included) gives 0, and the
    inversion stops after 1000 terms (P(k > 1000) at a mean of 30 is below
    1e-300): no input can make the loop run for ever.
    """
    if not mean > 0.0:  # also NaN, on which every comparison below is False
        return 0
    if mean > 30.0:
        mean = min(mean, 1e15)  # far beyond any capacity; keeps the int64 cast exact
        k = np.int64(np.floor(mean + np.sqrt(mean) * normal(key, 0) + 0.5))
        return max(k, 0)
    limit = np.exp(-mean)
    prod = 1.0
    k = 0
    while k < 1000:
        prod *= uniform(draw(key, k + 1000))
        if prod <= limit:
            return k
        k += 1
    return k


@njit(cache=True, inline="always")
def hazard_to_probability(rate, dt):
    """Per-step probability of an event with constant ``rate`` over ``dt``.

    The one place rates become probabilities: ``p = 1 - exp(-rate * dt)``.
    """
    return -np.expm1(-rate * dt)


@njit(cache=True, inline="always")
def no_event_log(rate, dt):
    """``log(1 - p)`` of :func:`hazard_to_probability`'s ``p``: ``-rate * dt`` (of :func:`wait_steps`).

    At most -1000 (``p`` is 1 in double precision long before): finite for any rate.
    """
    return max(-rate * dt, -1000.0)


@njit(cache=True, inline="always")
def wait_steps(bits, log_q):
    """Steps to the first success (>= 1) of a per-step probability ``p`` with ``log_q = log(1 - p)``.

    Geometric by inversion of one uniform: exactly the distribution of the
    first step at which a Bernoulli(p) draw per step succeeds. A probability
    of 0 (``log_q = 0``) waits :data:`NEVER` steps.
    """
    if not log_q < 0.0:
        return np.int64(NEVER)
    w = 1.0 + np.floor(np.log(uniform(bits)) / log_q)
    return np.int64(w) if w < NEVER else np.int64(NEVER)


@njit(cache=True, inline="always")
def wake_at(step, bits, log_q):
    """The step ``wait_steps`` after ``step`` (at most :data:`NEVER`), as stored in ``wake``."""
    w = step + wait_steps(bits, log_q)
    return np.int32(w) if w < NEVER else np.int32(NEVER)


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
@intrinsic
def prefetch(typingctx, arr, idx):
    """Ask the CPU to bring ``arr[idx]`` into cache (a hint: no effect on results).

    ``idx`` must lie inside the array (no wrap-around or bounds check is made).
    """
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer2(context, builder, ary.data, cgutils.unpack_tuple(builder, ary.shape),
                                        cgutils.unpack_tuple(builder, ary.strides), aryty.layout, [args[1]],
                                        wraparound=False, boundscheck=False)
        i8p = ir.PointerType(ir.IntType(8))
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])  # read, keep, data
        return context.get_dummy_value()
    return sig, codegen


#: The passes of one step, in step order: the entries of ``pass_ticks`` (see :func:`run_steps`).
PASS_NAMES = ("supply", "tumour_propose", "tumour_resolve", "effectors", "ifn_field", "record")


@intrinsic
def cycle_counter(typingctx):
    """The CPU's time-stamp counter (``rdtsc``) on x86-64; 0 elsewhere.

    A few tens of cycles to read: cheap enough to time every pass of every
    step. Other architectures' cycle counters may trap in user space, so they
    are not read.
    """
    sig = types.uint64()

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        if platform.machine().lower() not in ("x86_64", "amd64"):
            return i64(0)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, []), "llvm.readcyclecounter")
        return builder.call(fn, [])
    return sig, codegen


@njit(cache=True, inline="always")
def _to_level(x):
    if x < 0.0:
        x = 0.0
    elif x > 1.0:
        x = 1.0
    return np.uint8(np.int64(x * 255.0 + 0.5))


@njit(cache=True)
def seed_tumour(lat, sites, seed, patient, ligand_mean, ligand_sd, mhc_mean, mhc_sd,
                fas_mean, fas_sd, lost_fraction, event_log_q):
    """Place live tumour cells on ``sites`` with drawn L, M, F, MHC-loss flag and first event step
    (step 0 is the first at which it may happen)."""
    key = stream_key(seed, patient, 0, P_SEED)
    key_wait = stream_key(seed, patient, 0, P_SEED_WAIT)
    for i in range(sites.shape[0]):
        s = sites[i]
        lat.cell[s] = LIVE
        lat.wake[s] = wake_at(-1, draw(key_wait, s), event_log_q)
        lat.ligand[s] = _to_level(ligand_mean + ligand_sd * normal(key, 4 * s))
        lat.mhc[s] = _to_level(mhc_mean + mhc_sd * normal(key, 4 * s + 1))
        lat.fas[s] = _to_level(fas_mean + fas_sd * normal(key, 4 * s + 2))
        lost = uniform(draw(key, 8 * s + 7)) < lost_fraction
        lat.mhc_lost[s] = 1 if lost else 0


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
# Both tumour passes work on blocks of whole rows (a row: fixed z and y, all
# x), and within a row only on its *hull*: the span from the first to the
# last occupied (LIVE or DYING) site. Everything else in the row is EMPTY and
# has nothing to do. Hulls are kept from step to step: a site can only become
# occupied next to a live cell (division), so the occupied sites of a row lie
# within the previous hulls of the row and its neighbour rows, grown by one
# site; the propose pass shrinks that candidate span to the exact hull by
# skipping EMPTY sites at both ends. Rows are read from the previous step's
# hulls and write their own, in a second buffer: rows stay independent.
#
# Tumour events are event-driven (stream version 2): every occupied site holds
# in ``wake`` the step at which its cell next acts, a geometric waiting time
# drawn when the cell is born, after each of its events, and when it dies
# (then: its clearance). Per step a pass compares ``wake`` with the step, in
# chunks of ``_CHUNK`` sites of the hull and a branch-free loop the compiler
# vectorises, and only a chunk with a cell due redoes its sites one by one.
# This is exact in distribution: a cell with per-step event probability p has
# its first event after a Geometric(p) number of steps, and so on after each
# event (the rates are constant per cell; contact inhibition acts at the event,
# as before: a division with no empty neighbour is lost).
#
# A row's hull record is ``hull[r] = (lo, hi, marks...)``: bit ``g & 63`` of
# ``marks[g >> 6]`` is set when the propose pass found a cell due in the group
# of eight sites ``8 g .. 8 g + 7`` of the row, and the resolve pass visits
# only the marked groups: the dying cells it clears and the proposers it
# resolves were all due at the step (a proposer, or a cell that died in the
# propose pass, was due itself; a kill by an effector sets its clearance step
# after the step's tumour passes). A row's proposals lie within its hull, so the
# propose pass clears only last step's hull of the row.
ROW_BLOCK = 8  # rows per parallel work item
_CHUNK = 64
_GROUP = 8  # sites per mark bit


@njit(cache=True)
def hull_width(nx):
    """Columns of a row's hull record for rows of ``nx`` sites: ``lo``, ``hi`` and the marks."""
    return 2 + (nx + 64 * _GROUP - 1) // (64 * _GROUP)


@njit(cache=True, inline="always")
def _row_base(r, ny, z0, py, px):
    """Flat padded index of the first interior site (x = 1) of interior row ``r``."""
    z = r // ny
    return ((z + z0) * py + (r - z * ny) + 1) * px + 1


@njit(cache=True, inline="always")
def _propose_rows(r0, r1, cell, wake, proposal, hull_prev, hull, offsets, nnb, nx, ny, nz, z0, py, px,
                  step, key_event, key_wait, key_clear_wait, thr_death_share, event_log_q, clear_log_q):
    one = np.uint64(1)
    step32 = np.int32(step)
    for r in range(r0, r1):
        base = _row_base(r, ny, z0, py, px)
        cell_row = cell[base:base + nx]
        wake_row = wake[base:base + nx]
        prop_row = proposal[base:base + nx]
        prop_row[hull_prev[r, 0]:hull_prev[r, 1]] = 0  # (see the tumour notes)
        for w in range(2, hull.shape[1]):
            hull[r, w] = 0
        # Sites that may be occupied: the neighbour rows' hulls grown by one.
        z = r // ny
        y = r - z * ny
        lo = nx
        hi = 0
        for zz in range(max(z - 1, 0), min(z + 2, nz)):
            for yy in range(max(y - 1, 0), min(y + 2, ny)):
                rr = zz * ny + yy
                if hull_prev[rr, 0] < hull_prev[rr, 1]:
                    lo = min(lo, hull_prev[rr, 0] - 1)
                    hi = max(hi, hull_prev[rr, 1] + 1)
        lo = max(lo, 0)
        hi = min(hi, nx)
        while lo < hi and cell_row[lo] == EMPTY:
            lo += 1
        while hi > lo and cell_row[hi - 1] == EMPTY:
            hi -= 1
        hull[r, 0] = lo
        hull[r, 1] = hi
        for x0 in range(lo, hi, _CHUNK):
            x1 = min(x0 + _CHUNK, hi)
            ux0 = np.uint64(x0)
            n_due = 0
            # Vectorised: an EMPTY site's wake is in the past (-1, or the step it was cleared), so
            # only occupied sites can be due. Unsigned indices: a signed one makes Numba test for
            # negative (wrap-around) indexing, which stops the vectoriser.
            for xu in range(ux0, np.uint64(x1)):
                n_due += wake_row[xu] == step32
            if n_due == 0:
                continue
            events = np.uint64(0)  # bit j: live site x0 + j has an event (a due DYING cell is cleared)
            for ju in range(np.uint64(x1 - x0)):
                if wake_row[ux0 + ju] == step32:
                    g = (x0 + np.int64(ju)) // _GROUP
                    hull[r, 2 + (g >> 6)] |= np.int64(1) << np.int64(g & 63)  # marked for the resolve pass
                    if cell_row[ux0 + ju] == LIVE:
                        events |= one << ju
            while events != 0:  # the events in increasing x, one bit each
                j = np.int64(trailing_zeros(events))
                events &= events - one
                s = base + x0 + j
                us = np.uint64(s)  # (unsigned indices from here: no wrap-around tests)
                bits = draw(key_event, s)
                if (bits >> _S32) < thr_death_share:
                    cell[us] = DYING  # cleared from this step's resolve pass on
                    wake[us] = wake_at(step - 1, draw(key_clear_wait, s), clear_log_q)
                    continue
                wake[us] = wake_at(step, draw(key_wait, s), event_log_q)
                empty = np.uint64(0)  # bit k: neighbour k is empty
                n_empty = 0
                for k in range(1, nnb + 1):
                    is_empty = cell[us + np.uint64(offsets[np.uint64(k)])] == EMPTY
                    empty |= np.uint64(is_empty) << np.uint64(k)
                    n_empty += is_empty
                if n_empty == 0:
                    continue  # contact inhibition
                for _ in range(pick(bits, n_empty)):  # the chosen one: that many empty ones before it
                    empty &= empty - one
                proposal[us] = trailing_zeros(empty)


@njit(cache=True, parallel=True)
def _propose_parallel(cell, wake, proposal, hull_prev, hull, offsets, nnb, nx, ny, nz, z0, py, px, step,
                      key_event, key_wait, key_clear_wait, thr_death_share, event_log_q, clear_log_q):
    n_rows = nz * ny
    for b in prange((n_rows + ROW_BLOCK - 1) // ROW_BLOCK):
        _propose_rows(b * ROW_BLOCK, min((b + 1) * ROW_BLOCK, n_rows), cell, wake, proposal, hull_prev, hull,
                      offsets, nnb, nx, ny, nz, z0, py, px, step, key_event, key_wait, key_clear_wait,
                      thr_death_share, event_log_q, clear_log_q)


@njit(cache=True)
def _propose_pass(lat, geom, hull_prev, hull, step, key_event, key_wait, key_clear_wait, thr_death_share,
                  event_log_q, clear_log_q, parallel):
    if parallel:
        _propose_parallel(lat.cell, lat.wake, lat.proposal, hull_prev, hull, geom.offsets, geom.n_neighbours,
                          geom.nx, geom.ny, geom.nz, geom.z0, geom.py, geom.px, step, key_event, key_wait,
                          key_clear_wait, thr_death_share, event_log_q, clear_log_q)
    else:
        _propose_rows(0, geom.nz * geom.ny, lat.cell, lat.wake, lat.proposal, hull_prev, hull, geom.offsets,
                      geom.n_neighbours, geom.nx, geom.ny, geom.nz, geom.z0, geom.py, geom.px, step, key_event,
                      key_wait, key_clear_wait, thr_death_share, event_log_q, clear_log_q)


@njit(cache=True)
def full_hulls(n_rows, nx):
    """Row hulls (see :func:`tumour_propose`) that claim and mark every site: a safe start."""
    hull = np.full((n_rows, hull_width(nx)), -1, np.int64)
    hull[:, 0] = 0
    hull[:, 1] = nx
    return hull


@njit(cache=True)
def tumour_keys(seed, patient, step):
    """The draw keys (uint64[5]) of one step's tumour passes (:func:`tumour_propose`, :func:`tumour_resolve`)."""
    keys = np.empty(5, np.uint64)
    _tumour_keys_into(keys, seed, patient, step)
    return keys


@njit(cache=True, inline="always")
def _tumour_keys_into(keys, seed, patient, step):
    """:func:`tumour_keys` into ``keys`` (the step loop allocates nothing per step)."""
    keys[0] = stream_key(seed, patient, step, P_TUMOUR_EVENT)
    keys[1] = stream_key(seed, patient, step, P_TUMOUR_WAIT)
    keys[2] = stream_key(seed, patient, step, P_CLEAR_WAIT)
    keys[3] = stream_key(seed, patient, step, P_DIVISION_WINNER)
    keys[4] = stream_key(seed, patient, step, P_INHERIT)


@njit(cache=True)
def tumour_propose(lat, geom, step, keys, thr_death_share, event_log_q, clear_log_q, parallel):
    """Phase 1: the live cells due at ``step`` die (turn DYING) or propose a division.

    Every interior site's proposal byte is cleared; a live cell whose ``wake``
    is ``step`` dies (and draws its clearance step, this step at the
    earliest) or draws its next event and, if it has empty neighbours, writes
    the index of the one its draw picks. Rows are independent: a row writes
    only its own sites, and reads of neighbour emptiness cannot change in this
    phase (deaths turn LIVE into DYING, never into EMPTY). ``keys``:
    :func:`tumour_keys`. Returns the row hull records (first and last + 1
    occupied x of every row, then the marks of its groups of sites with a cell
    due: see the tumour notes).
    """
    n_rows = geom.nz * geom.ny
    hull = np.empty((n_rows, hull_width(geom.nx)), np.int64)
    _propose_pass(lat, geom, full_hulls(n_rows, geom.nx), hull, step, keys[0], keys[1], keys[2],
                  thr_death_share, event_log_q, clear_log_q, parallel)
    return hull


@njit(cache=True, inline="always")
def _resolve_rows(r0, r1, cell, wake, proposal, ligand, mhc, fas, mhc_lost, hull, dying, offsets, nnb,
                  nx, ny, z0, py, px, step, key_winner, key_inherit, key_wait, thr_mhc_loss, inherit_sd,
                  event_log_q):
    """Resolve the rows ``r0 .. r1 - 1`` within their hulls, in the groups of sites the marks name.

    The sites of the marked groups are visited in increasing x: proposals
    are resolved on the spot (the daughter draws its first event step), and
    the due dying cells listed in ``dying`` (int64[nx]) and cleared
    afterwards. Clearing a dying cell and resolving a proposal touch
    different sites (targets were EMPTY), so the order between the two does
    not matter.
    """
    step32 = np.int32(step)
    for r in range(r0, r1):
        lo = hull[r, 0]
        hi = hull[r, 1]
        if lo >= hi:
            continue
        base = _row_base(r, ny, z0, py, px)
        cell_row = cell[base:base + nx]
        wake_row = wake[base:base + nx]
        prop_row = proposal[base:base + nx]
        n_dying = 0
        for m in range(2, hull.shape[1]):
            marks = np.uint64(hull[r, m])
            while marks != 0:
                g = (m - 2) * 64 + np.int64(trailing_zeros(marks))
                marks &= marks - np.uint64(1)
                for x in range(max(g * _GROUP, lo), min(g * _GROUP + _GROUP, hi)):
                    ux = np.uint64(x)
                    if cell_row[ux] == DYING:
                        if wake_row[ux] == step32:  # cleared now
                            dying[n_dying] = x
                            n_dying += 1
                        continue
                    if prop_row[ux] == 0:
                        continue
                    s = base + x
                    d = proposal[s]
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
                    wake[t] = wake_at(step, draw(key_wait, t), event_log_q)
                    a = 4 * t
                    ligand[t] = _to_level(ligand[s] / 255.0 + inherit_sd * normal(key_inherit, a))
                    mhc[t] = _to_level(mhc[s] / 255.0 + inherit_sd * normal(key_inherit, a + 1))
                    fas[t] = _to_level(fas[s] / 255.0 + inherit_sd * normal(key_inherit, a + 2))
                    if mhc_lost[s] == 1 or hit(draw(key_inherit, 8 * t + 7), thr_mhc_loss):
                        mhc_lost[t] = 1
                    else:
                        mhc_lost[t] = 0
        for j in range(n_dying):
            cell_row[dying[j]] = EMPTY


@njit(cache=True, parallel=True)
def _resolve_parallel(cell, wake, proposal, ligand, mhc, fas, mhc_lost, hull, offsets, nnb, nx, ny, nz, z0, py,
                      px, step, key_winner, key_inherit, key_wait, thr_mhc_loss, inherit_sd, event_log_q):
    n_rows = nz * ny
    for b in prange((n_rows + ROW_BLOCK - 1) // ROW_BLOCK):
        dying = np.empty(nx, np.int64)
        _resolve_rows(b * ROW_BLOCK, min((b + 1) * ROW_BLOCK, n_rows), cell, wake, proposal, ligand, mhc, fas,
                      mhc_lost, hull, dying, offsets, nnb, nx, ny, z0, py, px, step, key_winner, key_inherit,
                      key_wait, thr_mhc_loss, inherit_sd, event_log_q)


@njit(cache=True)
def _resolve_pass(lat, geom, hull, step, key_winner, key_inherit, key_wait, thr_mhc_loss, inherit_sd,
                  event_log_q, parallel, dying):
    """The resolve pass; ``dying`` (int64[nx]) is the serial pass's scratch, allocated once by the
    caller (the parallel pass has its own per row block)."""
    if parallel:
        _resolve_parallel(lat.cell, lat.wake, lat.proposal, lat.ligand, lat.mhc, lat.fas, lat.mhc_lost, hull,
                          geom.offsets, geom.n_neighbours, geom.nx, geom.ny, geom.nz, geom.z0, geom.py,
                          geom.px, step, key_winner, key_inherit, key_wait, thr_mhc_loss, inherit_sd,
                          event_log_q)
    else:
        _resolve_rows(0, geom.nz * geom.ny, lat.cell, lat.wake, lat.proposal, lat.ligand, lat.mhc, lat.fas,
                      lat.mhc_lost, hull, dying,
                      geom.offsets, geom.n_neighbours, geom.nx, geom.ny, geom.z0,
                      geom.py, geom.px, step, key_winner, key_inherit, key_wait, thr_mhc_loss, inherit_sd,
                      event_log_q)


@njit(cache=True)
def tumour_resolve(lat, geom, step, keys, thr_mhc_loss, inherit_sd, event_log_q, parallel):
    """Phase 2: one winner per target writes the daughter; clear the dead cells due at ``step``.

    Only the winning proposer writes a target (which was EMPTY, so no other
    row clears it, and it is neither dying nor a proposer itself), and
    proposals are read-only here: race-free, and rows may run in any order.
    ``keys``: :func:`tumour_keys`.
    """
    _resolve_pass(lat, geom, full_hulls(geom.nz * geom.ny, geom.nx), step, keys[3], keys[4], keys[1],
                  thr_mhc_loss, inherit_sd, event_log_q, parallel, np.empty(geom.nx, np.int64))


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
def ifn_response(ifn, half_effect):
    """IFN-gamma response ``g = x / (x + K)`` of a field value ``x`` (0 where there is none)."""
    return ifn / (ifn + half_effect) if ifn > 0.0 else 0.0


@njit(cache=True, inline="always")
def effective_level(level, ifn_response):
    """A heritable level (0-1: MHC-I or Fas) as effectors see it: raised toward 1 by IFN-gamma."""
    return level + (1.0 - level) * ifn_response


@njit(cache=True, inline="always")
def effective_mhc(mhc_level, lost, ifn_response):
    """MHC-I seen by effectors: the heritable level (0-1) raised toward 1 by IFN-gamma,
    0 after genetic loss (IFN-gamma cannot restore it). The effector update calls it."""
    if lost == 1:
        return 0.0
    return effective_level(mhc_level, ifn_response)


@njit(cache=True)
def _effector_tables(prm):
    """The effector rules' parameters unpacked from ``prm`` into five small arrays.

    ``kf[kind] = (nkg2d_rate, missing_self, tcr_rate)``;
    ``ku[kind] = (thr_eff_death, thr_move, fasl)`` and
    ``ku[N_KINDS] = (granules_max, kill_capacity, well_mixed)``;
    ``thr = (perforin_done, fas_done, perforin_same, fas_same, regen, persist, aicd)``;
    ``ff = (fas_threshold, dt_sub_hours, ifn_half_effect, clear_log_q)``;
    ``level[k] = k / 255`` for k < 256, then the NKG2D signal of the 256 ligand levels.
    """
    kf = np.empty((N_KINDS, 3), np.float64)
    ku = np.empty((N_KINDS + 1, 3), np.uint64)
    for k in range(N_KINDS):
        kf[k, 0] = prm.nkg2d_rate[k]
        kf[k, 1] = prm.missing_self[k]
        kf[k, 2] = prm.tcr_rate[k]
        ku[k, 0] = prm.thr_eff_death[k]
        ku[k, 1] = prm.thr_move[k]
        ku[k, 2] = prm.fasl[k]
    ku[N_KINDS, 0] = prm.granules_max
    ku[N_KINDS, 1] = prm.kill_capacity
    ku[N_KINDS, 2] = 1 if prm.well_mixed else 0
    thr = np.empty(7, np.uint64)
    thr[0] = prm.thr_perforin_done
    thr[1] = prm.thr_fas_done
    thr[2] = prm.thr_perforin_same
    thr[3] = prm.thr_fas_same
    thr[4] = prm.thr_regen
    thr[5] = prm.thr_persist
    thr[6] = prm.thr_aicd
    ff = np.empty(4, np.float64)
    ff[0] = prm.fas_threshold
    ff[1] = prm.dt_sub_hours
    ff[2] = prm.ifn_half_effect
    ff[3] = prm.clear_log_q
    level = np.empty(512, np.float64)
    for k in range(256):
        level[k] = k / 255.0
        level[256 + k] = prm.nkg2d_signal[k]
    return kf, ku, thr, ff, level


# An upper bound of ``hazard_to_probability(x / dt, dt) = -expm1(-x)`` (which is
# below ``x``) with room for the rounding of ``expm1``: a uniform draw at or
# above it cannot be below the probability, so ``expm1`` need not be called.
_EXPM1_BOUND = 1.0 + 1e-9


# ------------------------------------------------ effector zones (colour classes in strips)
# The order the rules define: colour class by colour class, every effector of
# a class after every effector of the classes before it, the classes in a
# random order drawn for each step (_draw_class_order: layer residue by layer
# residue, each at its place ``r(l)``, and within one the in-layer classes in
# one random order; a fixed order made walking effectors drift). Within a
# class, order does not matter: two effectors of one class are at least 3
# sites apart, and an effector touches only the 3x3(x3) box around the site it
# starts the sub-step on, so same-class effectors touch disjoint sites.
#
# Two effectors conflict (touch a common site) only within Chebyshev distance
# 2, and then they are of different classes. Results equal those of the class
# order as long as every conflicting pair runs in class order. A sub-step runs
# the effectors in zones:
#
# * the lattice is cut into ``n_strips`` strips of whole layers ``u`` (y in
#   2D, z in 3D); strip k keeps the effectors at ``u`` in
#   ``[b_k + 2 r, b_{k+1} - 2 r)`` with ``r = r(u mod 3)`` (no margin at the
#   outer walls): strips run at the same time, each in class order;
# * the rest (a few layers either side of each inner strip boundary) runs
#   afterwards, serially, in class order.
#
# Why this is the class order for every conflicting pair: ``l`` is the leading
# digit of the class (class = 9 (z mod 3) + 3 (y mod 3) + x mod 3, z = 0 in
# 2D) and ``r = r(l)`` its place in the step's order. A conflicting pair with
# equal ``l`` lies in the same layer (|du| <= 2 and du = 0 mod 3); otherwise
# the earlier class has the lower ``r``. So the earlier effector of a pair
# that conflicts with a kept effector at ``u``, of place ``r``, is at most 2
# layers away with a lower place, hence kept in the same strip: the kept sets
# are closed under "must run before", and the rest only needs what ran before
# it. Kept effectors of neighbouring strips are at least 3 layers apart
# (1 + 2 (r + r'), and same-class when r = r' = 0), so no two strips touch a
# common site. The margins follow the step's order, so with strips the
# zones are set afresh at the start of every step.
#
# (The field is only read during a sub-step; secretion is added after it.)
#
# Bookkeeping. An effector's *bucket* is ``zone * N_CLASSES + class``; its
# ``klass`` entry holds its packed site coordinates and bucket, and follows
# its moves. The first sub-step of a call sorts all effectors into buckets (a
# counting sort: one *source*) and sets the strip boundaries, at quantiles of
# the effector count over layers; with strips this is done at every step. Afterwards
# each zone, right after its updates, sorts its own effectors by their new
# buckets into its own segment of the other order buffer: the next sub-step
# (of this step or the next) reads bucket (zone, class) as one range per
# source, so no pass over all effectors stands between two sub-steps. A
# step's arrivals are sorted as one more source. A compaction, a change in
# the number of strips, and well-mixed motility (the shuffle moves
# everyone) start the lists afresh.
@njit(cache=True, inline="always")
def _fast_divmod(a, d, inv_d):
    """``divmod(a, d)`` for 0 <= a < 2**52 through a float reciprocal, corrected to exact."""
    q = np.int64(a * inv_d)
    r = a - q * d
    if r < 0:
        q -= 1
        r += d
    elif r >= d:
        q += 1
        r -= d
    return q, r


@njit(cache=True, inline="always")
def _bits(n):
    """Number of bits to hold 0 .. n - 1."""
    b = 1
    while (1 << b) < n:
        b += 1
    return b


@njit(cache=True)
def _site_tables(geom):
    """Per-layer, per-row and per-column parts of a site's colour class and field cell.

    For a site (z, y, x), ``t[z] + t[pz + y] + t[pz + py + x]`` is
    ``class + 256 * field_cell``.
    """
    pz, py, px = geom.pz, geom.py, geom.px
    c = geom.coarsening
    t = np.zeros(pz + py + px, np.int64)
    for z in range(pz):
        t[z] = (z % 3) * 9 + 256 * (max(z - geom.z0, 0) // c) * geom.cy * geom.cx
    for y in range(py):
        t[pz + y] = (y % 3) * 3 + 256 * (max(y - 1, 0) // c) * geom.cx
    for x in range(px):
        t[pz + py + x] = (x % 3) + 256 * (max(x - 1, 0) // c)
    return t


@njit(cache=True)
def _move_tables(geom):
    """Packed coordinates (see :func:`_pack`): their widths, and the effect of each move.

    ``shape = (bits of x, bits of y, mask of x, mask of y)``; ``dp[h]`` is what
    a move to neighbour ``h`` adds to packed coordinates; ``cnext[c, h]`` the
    colour class after a move to neighbour ``h`` from class ``c``.
    """
    sx = _bits(geom.px)
    sy = _bits(geom.py)
    shape = np.array([sx, sy, (1 << sx) - 1, (1 << sy) - 1], np.int64)
    nnb = geom.n_neighbours
    dp = np.zeros(nnb + 1, np.int64)
    cnext = np.zeros((N_CLASSES, nnb + 1), np.int64)
    plane = geom.py * geom.px
    for h in range(nnb + 1):
        off = geom.offsets[h]
        # the offset as (dz, dy, dx), each in -1 .. 1
        dz = (off + plane + plane // 2) // plane - 1 if geom.dims == 3 else 0
        rem = off - dz * plane
        dy = (rem + geom.px + geom.px // 2) // geom.px - 1
        dx = rem - dy * geom.px
        dp[h] = (dz << (sx + sy)) + (dy << sx) + dx
        for c in range(N_CLASSES):
            cz, cy, cx = c // 9, (c // 3) % 3, c % 3
            cnext[c, h] = ((cz + dz) % 3) * 9 + ((cy + dy) % 3) * 3 + (cx + dx) % 3
    return shape, dp, cnext


@njit(cache=True, inline="always")
def _pack(z, y, x, sx, sy):
    """Coordinates packed into one integer: ``(z << (sx + sy)) + (y << sx) + x``."""
    return (z << (sx + sy)) + (y << sx) + x


@njit(cache=True, inline="always")
def _unpack(packed, sx, sy, mx, my):
    """(z, y, x) from packed coordinates. The field cell of the site is
    ``(tab[z] + tab[pz + y] + tab[pz + py + x]) >> 8`` (``tab`` of :func:`_site_tables`)."""
    return packed >> (sx + sy), (packed >> sx) & my, packed & mx


@njit(cache=True, inline="always")
def _layer(packed, three_d, sx, sy, my):
    """Layer ``u`` (z in 3D, y in 2D) of a site from its packed coordinates."""
    return packed >> (sx + sy) if three_d else (packed >> sx) & my


@njit(cache=True, _nrt=False)
def _set_zones(n_strips, hist, zone_of, bounds, rank):
    """Strip boundaries (into ``bounds``, at least ``n_strips + 1`` long) at quantiles of ``hist``
    (effectors per layer) and the zone of every layer; ``rank[l]``: the place of layer residue ``l``
    in this step's class order (see the zone notes)."""
    n_u = hist.shape[0]
    if n_strips == 1:
        zone_of[:] = 0
        return
    n_live = 0
    for u in range(n_u):
        n_live += hist[u]
    bounds[0] = 1  # layers 1 .. n_u - 2 are interior
    bounds[n_strips] = n_u - 1
    k = 1
    cum = 0
    for u in range(1, n_u - 1):
        while k < n_strips and cum * n_strips >= k * n_live:
            bounds[k] = u
            k += 1
        cum += hist[u]
    while k < n_strips:
        bounds[k] = n_u - 1
        k += 1
    zone_of[:] = n_strips
    for k in range(n_strips):
        for u in range(bounds[k], bounds[k + 1]):
            margin = 2 * rank[u % 3]
            if (k == 0 or u >= bounds[k] + margin) and (k == n_strips - 1 or u < bounds[k + 1] - margin):
                zone_of[u] = k


@njit(cache=True, _nrt=False)
def _sort_range(i0, i1, e_pos, e_alive, klass, order, counts, base, geom, tab, shape, zone_of, hist, bounds,
                n_strips, rank):
    """Counting sort of the live effectors ``i0 .. i1 - 1`` into buckets: one source.

    ``klass[i]`` becomes ``packed_coordinates << 16 | bucket`` (-1 for a dead
    effector: it is in no bucket and is not updated again); bucket ``b`` is
    ``order[base + counts[b]:base + counts[b + 1]]``. With ``hist`` non-empty,
    the effectors per layer are counted into it first and the zones set from
    them (:func:`_set_zones` for ``n_strips``, into ``bounds``). Returns the number sorted.
    """
    three_d = geom.dims == 3
    pz, py, px = geom.pz, geom.py, geom.px
    sx, sy, my = shape[0], shape[1], shape[3]
    plane = py * px
    inv_plane = 1.0 / plane
    inv_px = 1.0 / px
    set_zones = hist.shape[0] > 0
    if set_zones:
        hist[:] = 0
    for i in range(i0, i1):  # packed coordinates and class
        if e_alive[i] == 0:
            klass[i] = -1
            continue
        z = 0
        rem = e_pos[i]
        if three_d:
            z, rem = _fast_divmod(rem, plane, inv_plane)
        y, x = _fast_divmod(rem, px, inv_px)
        klass[i] = (_pack(z, y, x, sx, sy) << 16) | ((tab[z] + tab[pz + y] + tab[pz + py + x]) & 255)
        if set_zones:
            hist[z if three_d else y] += 1
    if set_zones:
        _set_zones(n_strips, hist, zone_of, bounds, rank)
    counts[:] = 0
    n = 0
    for i in range(i0, i1):  # buckets
        kl = klass[i]
        if kl < 0:
            continue
        b = zone_of[_layer(kl >> 16, three_d, sx, sy, my)] * N_CLASSES + (kl & 0xFFFF)
        klass[i] = ((kl >> 16) << 16) | b
        counts[b + 1] += 1
        n += 1
    n_buckets = counts.shape[0] - 1
    for b in range(n_buckets):
        counts[b + 1] += counts[b]
    for i in range(i0, i1):
        kl = klass[i]
        if kl >= 0:
            b = kl & 0xFFFF
            order[base + counts[b]] = i
            counts[b] += 1
    for b in range(n_buckets, 0, -1):
        counts[b] = counts[b - 1]
    counts[0] = 0
    return n


_PREFETCH_AHEAD = 8  # effectors
# Below this many padded sites (bytes of one uint8 lattice array) the arrays
# the effectors read stay in a core's own caches (256x256: 66,564), and the
# prefetches only cost instructions.
_PREFETCH_MIN_SITES = 1 << 18


# Numba drops writes made through a NamedTuple attribute inside a prange body
# (``state.array[i] = v`` is lost); a function called from the body that
# receives the tuples and unpacks them before its loops keeps them (the
# parallel-path tests compare every thread count). The update of one effector
# is written out inside the loop on purpose: an inlined function taking arrays
# costs a reference-count increment and decrement of each array on every call.
@njit(cache=True, _nrt=False)
def _update_zone(zone, n_src, lists, lat, eff, geom, work, ifn, first_sub, step):
    """One sub-step of every effector of one zone, in this step's class order (``work.class_order``).

    ``lists = (order, loff, seg, next_order, next_loff, next_seg)``: this
    sub-step's buckets and where the next sub-step's go (see the zone notes).

    Bucket (zone, class) is ``order[seg[t] + loff[t, b]:seg[t] + loff[t, b + 1]]``
    for each source ``t < n_src``. Per effector: death (first sub-step), kill
    completion, granule regeneration, recognition and engagement, movement;
    kills are counted in ``kz[zone]``. Engagement is a competing hazard over
    the contact neighbourhood (own site + neighbours): engage with probability
    ``1 - exp(-R dt)``, ``R`` the summed recognition rate, on a target picked
    in proportion to its rate by a one-pass weighted reservoir (one draw per
    candidate). The sum is taken first and the reservoir pass runs only when
    the engagement draw succeeds: the same draws decide, so the outcome is
    that of drawing everything, at a fraction of the work. The parameters come
    unpacked by :func:`_effector_tables`.

    ``klass[i]`` follows the effector: a move updates its packed coordinates
    and bucket, a death sets it to -1 (deaths are counted in ``kz[zone, KZ_DEATHS]``).
    With ``next_order`` non-empty, the zone then sorts its effectors by their
    new buckets into ``next_order[next_seg[zone]:]``, offsets in
    ``next_loff[zone]`` (it is source ``zone`` of the next sub-step). Last, it
    writes the field cells of its engaged effectors over its own ranges of
    ``order`` (which nobody reads again in this sub-step), ``nsec[zone]`` of
    them: the secretion, added once every zone has read the field
    (:func:`_secrete`).
    """
    order, loff, seg, next_order, next_loff, next_seg = lists
    cell, ligand, mhc, fas, mhc_lost = lat.cell, lat.ligand, lat.mhc, lat.fas, lat.mhc_lost
    has_effector, wake = lat.has_effector, lat.wake
    e_pos, e_kind, e_granules, e_kills = eff.pos, eff.kind, eff.granules, eff.kills
    e_target, e_mechanism, e_heading = eff.target, eff.mechanism, eff.heading
    e_uid, e_alive, e_tcr_match, e_event, klass = eff.uid, eff.alive, eff.tcr_match, eff.event, eff.klass
    offsets, nnb = geom.offsets, geom.n_neighbours
    three_d = geom.dims == 3
    pz, py = geom.pz, geom.py
    kf, ku, thr, ff, level, keys = work.kf, work.ku, work.thr, work.ff, work.level, work.keys
    tab, zone_of, kz, nsec = work.tab, work.zone_of, work.kz, work.nsec
    shape, dp, cnext, class_order = work.shape, work.dp, work.cnext, work.class_order
    granules_max = ku[N_KINDS, 0]
    kill_capacity = ku[N_KINDS, 1]
    well_mixed = ku[N_KINDS, 2] != 0
    thr_perforin_done, thr_fas_done = thr[0], thr[1]
    thr_perforin_same, thr_fas_same = thr[2], thr[3]
    thr_regen, thr_persist, thr_aicd = thr[4], thr[5], thr[6]
    fas_threshold, dt_sub, ifn_half, clear_log_q = ff[0], ff[1], ff[2], ff[3]
    key_death, key_complete, key_regen, key_scan = keys[0], keys[1], keys[2], keys[3]
    key_engage, key_move, key_turn, key_aicd = keys[4], keys[5], keys[6], keys[7]
    key_kill_clear = keys[8]
    sx, sy, mx, my = shape[0], shape[1], shape[2], shape[3]
    b0 = zone * N_CLASSES
    px = tab.shape[0] - pz - py
    plane = py * px
    use_prefetch = cell.shape[0] > _PREFETCH_MIN_SITES
    for ci in range(N_CLASSES if three_d else 9):  # (2D: classes 9 .. 26 are always empty)
        c = class_order[ci]
        for src in range(n_src):
            j_end = seg[src] + loff[src, b0 + c + 1]
            for j in range(seg[src] + loff[src, b0 + c], j_end):
                if use_prefetch and j + _PREFETCH_AHEAD < j_end:
                    # The lattice lines the effector _PREFETCH_AHEAD places on will read
                    # (memory latency, not work, bounds this loop on large lattices).
                    a = e_pos[np.uint64(order[np.uint64(j + _PREFETCH_AHEAD)])] - px - 1 - (plane if three_d else 0)
                    for _dz in range(3 if three_d else 1):
                        for dy in range(3):
                            prefetch(cell, a + dy * px)
                            prefetch(has_effector, a + dy * px)
                        a += plane
                i = np.uint64(order[np.uint64(j)])  # unsigned indices: no wrap-around test (module notes)
                pos = e_pos[i]
                upos = np.uint64(pos)
                kind = e_kind[i]
                uid = e_uid[i]
                if first_sub and hit(draw(key_death, uid), ku[kind, 0]):
                    e_alive[i] = 0
                    e_event[i] = EVENT_DIED
                    has_effector[upos] = 0
                    e_target[i] = -1
                    klass[i] = -1
                    kz[zone, KZ_DEATHS] += 1
                    continue
                target = -1  # the live target a kill may complete on in this sub-step
                thr_kill = np.uint64(0)
                t = e_target[i]
                if t >= 0:
                    if cell[np.uint64(t)] != LIVE:
                        e_target[i] = -1  # target died another way: free again
                    else:
                        target = t
                        thr_kill = thr_perforin_done if e_mechanism[i] == MECH_PERFORIN else thr_fas_done
                if target < 0:
                    if e_granules[i] < granules_max and hit(draw(key_regen, uid), thr_regen):
                        e_granules[i] += 1
                    has_granules = e_granules[i] > 0
                    if e_kills[i] < kill_capacity and (has_granules or ku[kind, 2] != 0):
                        g = -1.0  # IFN-gamma response, found at the first live neighbour
                        rate_nkg2d = kf[kind, 0]
                        weight_self = kf[kind, 1]
                        # TCR recognition is clonal: only cells whose TCR recognises the tumour have it.
                        rate_tcr = kf[kind, 2] if e_tcr_match[i] != 0 else 0.0
                        # Two scans of the contact neighbourhood with the same partial sums: the
                        # first sums the rates; the second, only when the engagement draw
                        # succeeds, picks the target by the weighted reservoir.
                        total = 0.0
                        chosen = -1
                        # Most effectors stand where no cell lives: one branch-free test of the whole
                        # neighbourhood spares them a mispredicted branch per neighbour.
                        any_live = False
                        for k in range(nnb + 1):
                            any_live |= cell[np.uint64(pos + offsets[np.uint64(k)])] == LIVE
                        for scan in range(2 if any_live else 0):
                            if scan == 1:
                                if total <= 0.0:
                                    break
                                u = uniform(draw(key_engage, uid))
                                if not (u < total * dt_sub * _EXPM1_BOUND and u < hazard_to_probability(total, dt_sub)):
                                    break
                                total = 0.0
                            for k in range(nnb + 1):
                                n = pos + offsets[np.uint64(k)]
                                un = np.uint64(n)
                                if cell[un] != LIVE:
                                    continue
                                if g < 0.0:
                                    cz, cy, cx = _unpack(klass[i] >> 16, sx, sy, mx, my)
                                    x = ifn[(tab[cz] + tab[pz + cy] + tab[pz + py + cx]) >> 8]
                                    g = ifn_response(x, ifn_half)
                                if not has_granules:  # Fas/FasL only: needs enough effective Fas
                                    if effective_level(level[fas[un]], g) < fas_threshold:
                                        continue
                                m = effective_mhc(level[mhc[un]], mhc_lost[un], g)
                                lig = level[np.uint64(256) + ligand[un]]
                                r = recognition_rate(lig, m, rate_nkg2d, weight_self, rate_tcr)
                                if r <= 0.0:
                                    continue
                                total += r
                                if scan == 1 and uniform(draw(key_scan, uid * 32 + k)) * total < r:
                                    chosen = n
                        if chosen >= 0:
                            mech = MECH_PERFORIN if has_granules else MECH_FAS
                            e_target[i] = chosen
                            e_mechanism[i] = mech
                            target = chosen
                            # The engagement began during this sub-step: the kill may already
                            # complete in the time left, so that no kill lasts a whole sub-step
                            # at least (which would make kill rates depend on dt).
                            thr_kill = thr_perforin_same if mech == MECH_PERFORIN else thr_fas_same
                if target >= 0:
                    if hit(draw(key_complete, uid), thr_kill):
                        mech = e_mechanism[i]
                        ut = np.uint64(target)
                        cell[ut] = DYING  # cleared from the next step's resolve pass on
                        wake[ut] = wake_at(step, draw(key_kill_clear, target), clear_log_q)
                        lost = mhc_lost[ut]
                        e_event[i] = EVENT_KILL + 2 * mech + lost
                        kz[zone, (mech * N_KINDS + kind) * 2 + lost] += 1
                        e_kills[i] += 1
                        if mech == MECH_PERFORIN:
                            e_granules[i] -= 1
                        e_target[i] = -1
                        if thr_aicd > 0 and hit(draw(key_aicd, uid), thr_aicd):
                            # Activation-induced cell death: the killer dies after this kill.
                            e_alive[i] = 0
                            has_effector[upos] = 0
                            klass[i] = -1
                            kz[zone, KZ_DEATHS] += 1
                    continue  # engaged effectors do not move
                if well_mixed:
                    continue
                # Branch-free: whether it moves, keeps its heading or is blocked are coin flips that a
                # branch would mispredict half the time; the same draws decide, so nothing changes.
                bits = draw(key_move, uid)
                moving = hit(bits, ku[kind, 1])
                old_heading = np.int64(e_heading[i])
                turn = 1 + pick(draw(key_turn, uid), nnb)
                keep = (old_heading != 0) & ((bits & _LOW32) < thr_persist)
                heading = old_heading if keep else turn
                uh = np.uint64(heading)
                dest = pos + offsets[uh]
                udest = np.uint64(dest)
                free = moving & (cell[udest] != WALL) & (has_effector[udest] == 0)
                f = np.int64(free)
                has_effector[upos] = np.uint8(1 - f)
                has_effector[udest] = has_effector[udest] | np.uint8(f)
                e_pos[i] = pos + f * (dest - pos)
                # moved: the heading; blocked: 0 (turn at the next move); no move drawn: unchanged
                e_heading[i] = np.uint8(heading * f + old_heading * (1 - np.int64(moving)))
                kl = klass[i]
                packed = (kl >> 16) + dp[uh]
                u = _layer(packed, three_d, sx, sy, my)
                c_next = cnext[np.uint64((kl & 0xFFFF) % N_CLASSES), uh]
                new_kl = (packed << 16) | (zone_of[np.uint64(u)] * N_CLASSES + c_next)
                klass[i] = kl + f * (new_kl - kl)
    if next_order.shape[0] > 0:
        _sort_zone(zone, n_src, order, loff, seg, next_order, next_loff[zone], next_seg[zone], klass)
    # The secretion list, written behind the reading position.
    n_sec = 0
    w_src = 0
    w = seg[0] + loff[0, b0]
    w_end = seg[0] + loff[0, b0 + N_CLASSES]
    for src in range(n_src):
        for j in range(seg[src] + loff[src, b0], seg[src] + loff[src, b0 + N_CLASSES]):
            i = order[j]
            if e_alive[i] != 0 and e_target[i] >= 0:
                while w == w_end:
                    w_src += 1
                    w = seg[w_src] + loff[w_src, b0]
                    w_end = seg[w_src] + loff[w_src, b0 + N_CLASSES]
                cz, cy, cx = _unpack(klass[i] >> 16, sx, sy, mx, my)
                order[w] = (tab[cz] + tab[pz + cy] + tab[pz + py + cx]) >> 8
                w += 1
                n_sec += 1
    nsec[zone] = n_sec


@njit(cache=True, inline="always")
def _sort_zone(zone, n_src, order, loff, seg, next_order, counts, base, klass):
    """Sort a zone's effectors by their buckets in the next sub-step (counting sort)."""
    b0 = zone * N_CLASSES
    counts[:] = 0
    for src in range(n_src):
        for j in range(seg[src] + loff[src, b0], seg[src] + loff[src, b0 + N_CLASSES]):
            kl = klass[order[j]]
            if kl >= 0:
                counts[(kl & 0xFFFF) + 1] += 1
    n_buckets = counts.shape[0] - 1
    for b in range(n_buckets):
        counts[b + 1] += counts[b]
    for src in range(n_src):
        for j in range(seg[src] + loff[src, b0], seg[src] + loff[src, b0 + N_CLASSES]):
            i = order[j]
            kl = klass[i]
            if kl >= 0:
                b = kl & 0xFFFF
                next_order[base + counts[b]] = i
                counts[b] += 1
    for b in range(n_buckets, 0, -1):
        counts[b] = counts[b - 1]
    counts[0] = 0


@njit(cache=True, parallel=True)
def _update_strips_parallel(n_strips, n_src, lists, lat, eff, geom, work, ifn, first_sub, step):
    for k in prange(n_strips):
        _update_zone(k, n_src, lists, lat, eff, geom, work, ifn, first_sub, step)


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


@njit(cache=True, inline="always")
def _order_buffers(eff):
    """The two int32 order buffers (this sub-step's and the next's) that ``eff.order`` holds."""
    both = eff.order.view(np.int32)
    capacity = eff.order.shape[0]
    return both[:capacity], both[capacity:]


@njit(cache=True, inline="always")
def _draw_class_order(key, three_d, class_order, rank):
    """This step's class order into ``class_order``, and ``rank[l]``: the place of layer residue ``l``.

    The three layer residues (the leading digit of the class) in a uniformly random order and, within
    each, the in-layer classes (3 in 2D, 9 in 3D) in one uniformly random order. A fixed order lets
    effectors of later classes step into sites that earlier classes have just left, always in the
    same directions: a drift of walking effectors. The zones need the layer-major shape (notes above).
    """
    m = 9 if three_d else 3
    for a in range(3):
        rank[a] = a  # (first: the residues in order of place)
    for a in range(2, 0, -1):
        b = pick(draw(key, a), a + 1)
        rank[a], rank[b] = rank[b], rank[a]
    lay0, lay1, lay2 = rank[0], rank[1], rank[2]
    for q in range(m):
        class_order[q] = q  # (first: the in-layer order)
    for a in range(m - 1, 0, -1):
        b = pick(draw(key, 16 + a), a + 1)
        class_order[a], class_order[b] = class_order[b], class_order[a]
    for q in range(m):
        class_order[2 * m + q] = lay2 * m + class_order[q]
        class_order[m + q] = lay1 * m + class_order[q]
        class_order[q] = lay0 * m + class_order[q]
    rank[lay0] = 0
    rank[lay1] = 1
    rank[lay2] = 2


@njit(cache=True, inline="always")
def _zone_is_empty(zone, n_src, loff):
    """True when no source lists an effector in ``zone``'s buckets."""
    b0 = zone * N_CLASSES
    for src in range(n_src):
        if loff[src, b0 + N_CLASSES] != loff[src, b0]:
            return False
    return True


@njit(cache=True, _nrt=False)
def _secrete(n_zones, n_src, order, loff, seg, nsec, ifn, amount):
    """Add ``amount`` to the field cell of every engaged effector (the zones' secretion lists)."""
    for zone in range(n_zones):
        b0 = zone * N_CLASSES
        left = nsec[zone]
        src = 0
        while left > 0:
            j0 = seg[src] + loff[src, b0]
            n = min(left, seg[src] + loff[src, b0 + N_CLASSES] - j0)
            for j in range(j0, j0 + n):
                ifn[order[j]] += amount
            left -= n
            src += 1


# Where the lists stand between steps (EffectorWork.state).
_LISTS_VALID = 0  # 1: the zones' lists of the last sub-step hold every live effector of slots < _LISTED
_PARITY = 1  # which order buffer holds them (0 or 1: see _order_buffers)
_N_SRC = 2  # how many sources they form
_LISTED = 3  # effector slots covered by them (later slots are new arrivals)
_STRIPS = 4  # the number of strips they were made for


class EffectorWork(NamedTuple):
    """Scratch of the effector sub-steps of one :func:`run_steps` call, for up to ``max_strips`` strips."""

    tab: np.ndarray  # int64: per-layer/row/column class and field-cell parts (_site_tables)
    shape: np.ndarray  # int64[4]: packed-coordinate widths and masks (_move_tables)
    dp: np.ndarray  # int64[n_neighbours + 1]: packed-coordinate change of each move
    cnext: np.ndarray  # int64[N_CLASSES, n_neighbours + 1]: colour class after each move
    hist: np.ndarray  # int64[n_u]: effectors per layer, for the strip boundaries
    zone_of: np.ndarray  # int64[n_u]: zone of every layer
    bounds: np.ndarray  # int64[max_strips + 1]: the strips' first layers (_set_zones)
    class_order: np.ndarray  # int64[N_CLASSES]: this step's class order (_draw_class_order)
    rank: np.ndarray  # int64[3]: the place of each layer residue in it
    loff: np.ndarray  # int64[2, max_strips + 2, (max_strips + 1) * N_CLASSES + 1]: bucket offsets per source
    seg: np.ndarray  # int64[2, max_strips + 3]: segment start of every source
    kz: np.ndarray  # int64[max_strips + 1, KZ_DEATHS + 1]: kill tallies per zone, then deaths
    nsec: np.ndarray  # int64[max_strips + 1]: length of each zone's secretion list
    state: np.ndarray  # int64[5]: see _LISTS_VALID and below
    kf: np.ndarray  # float64[N_KINDS, 3]: the rules' parameters, unpacked (_effector_tables)
    ku: np.ndarray  # uint64[N_KINDS + 1, 3]
    thr: np.ndarray  # uint64[7]
    ff: np.ndarray  # float64[3]
    level: np.ndarray  # float64[512]
    keys: np.ndarray  # uint64[9]: the draw keys of one sub-step


@njit(cache=True)
def effector_work(geom, prm, max_strips):
    """Allocate :class:`EffectorWork` for ``geom`` and ``prm`` and up to ``max_strips`` strips."""
    n_u = geom.pz if geom.dims == 3 else geom.py
    m = max(max_strips, 1)
    shape, dp, cnext = _move_tables(geom)
    kf, ku, thr, ff, level = _effector_tables(prm)
    return EffectorWork(_site_tables(geom), shape, dp, cnext, np.zeros(n_u, np.int64), np.zeros(n_u, np.int64),
                        np.zeros(m + 1, np.int64), np.arange(N_CLASSES), np.arange(3),
                        np.zeros((2, m + 2, (m + 1) * N_CLASSES + 1), np.int64),
                        np.zeros((2, m + 3), np.int64), np.zeros((m + 1, KZ_DEATHS + 1), np.int64),
                        np.zeros(m + 1, np.int64), np.zeros(5, np.int64), kf, ku, thr, ff, level,
                        np.empty(9, np.uint64))


# No reference counting in the sub-steps (nothing in them allocates): with it, every array taken out of
# the state tuples, sliced or passed on cost an atomic increment and decrement, a quarter of a small
# lesion's run time.
@njit(cache=True, _nrt=False)
def effector_substeps(lat, eff, counters, kills, geom, prm, ifn, seed, patient, step, work, n_strips):
    """All motility sub-steps of one step (step order item 4 and secretion).

    ``n_strips`` > 1 runs the strips of each sub-step in parallel (see the
    zone comment above); 1 runs everything serially. Results do not depend on
    it. ``work`` is an :class:`EffectorWork` built for ``prm`` and at least ``n_strips`` strips.
    Effectors that die stay in the arrays (``alive == 0``) until
    :func:`compact_effectors`; the zones' lists are carried to the next step
    while ``work.state`` says they are valid. Returns the number of effectors
    that died.
    """
    n_eff = counters[C_STORED]
    state = work.state
    if n_eff == 0:
        state[_LISTS_VALID] = 0
        return 0
    e_pos, e_alive, klass = eff.pos, eff.alive, eff.klass
    three_d = geom.dims == 3
    keys, tab, hist, zone_of, kz, nsec = work.keys, work.tab, work.hist, work.zone_of, work.kz, work.nsec
    shape = work.shape
    n_zones = n_strips + 1
    n_buckets = n_zones * N_CLASSES
    no_hist = hist[:0]
    order_a, order_b = _order_buffers(eff)
    no_next = order_a[:0]
    class_order, rank = work.class_order, work.rank
    _draw_class_order(stream_key(seed, patient, step, P_EFF_ORDER), three_d, class_order, rank)
    # Strips' margins follow the step's order (rank): with strips, the zones are set afresh every step.
    full_sort = state[_LISTS_VALID] == 0 or state[_STRIPS] != n_strips or prm.well_mixed or n_strips > 1
    parity = state[_PARITY] if not full_sort else 0
    kz[:] = 0
    for sub in range(prm.n_sub):
        clock = step * MAX_SUBSTEPS + sub
        keys[0] = stream_key(seed, patient, clock, P_EFF_DEATH)
        keys[1] = stream_key(seed, patient, clock, P_EFF_COMPLETE)
        keys[2] = stream_key(seed, patient, clock, P_EFF_REGEN)
        keys[3] = stream_key(seed, patient, clock, P_EFF_SCAN)
        keys[4] = stream_key(seed, patient, clock, P_EFF_ENGAGE)
        keys[5] = stream_key(seed, patient, clock, P_EFF_MOVE)
        keys[6] = stream_key(seed, patient, clock, P_EFF_TURN)
        keys[7] = stream_key(seed, patient, clock, P_EFF_AICD)
        keys[8] = stream_key(seed, patient, clock, P_KILL_CLEAR)
        if prm.well_mixed:
            _shuffle_effectors(lat, eff, n_eff, geom, stream_key(seed, patient, clock, P_SHUFFLE))
        loff = work.loff[parity, :, :n_buckets + 1]
        seg = work.seg[parity]
        next_loff = work.loff[1 - parity, :, :n_buckets + 1]
        next_seg = work.seg[1 - parity]
        if parity == 0:
            order, next_order = order_a, order_b
        else:
            order, next_order = order_b, order_a
        if (sub == 0 and full_sort) or prm.well_mixed:
            seg[0] = 0
            _sort_range(0, n_eff, e_pos, e_alive, klass, order, loff[0], 0, geom, tab, shape, zone_of,
                        hist if sub == 0 else no_hist, work.bounds, n_strips, rank)
            n_src = 1
        elif sub == 0:  # the last sub-step's zones, and this step's arrivals as one more source
            n_src = state[_N_SRC]
            seg[n_src] = seg[n_src - 1] + loff[n_src - 1, n_buckets]
            _sort_range(state[_LISTED], n_eff, e_pos, e_alive, klass, order, loff[n_src], seg[n_src], geom, tab,
                        shape, zone_of, no_hist, work.bounds, n_strips, rank)
            n_src += 1
        else:
            n_src = n_zones
        if prm.well_mixed:
            next_order = no_next
        else:  # segments of the next sub-step's sources: the zones, in turn
            total = 0
            for z in range(n_zones):
                next_seg[z] = total
                for src in range(n_src):
                    total += loff[src, (z + 1) * N_CLASSES] - loff[src, z * N_CLASSES]
        first_sub = sub == 0
        lists = (order, loff, seg, next_order, next_loff, next_seg)
        if n_strips > 1:
            _update_strips_parallel(n_strips, n_src, lists, lat, eff, geom, work, ifn, first_sub, step)
        for zone in range(0 if n_strips == 1 else n_strips, n_zones):
            if _zone_is_empty(zone, n_src, loff):  # (serially, the margin zone always is)
                if not prm.well_mixed:
                    next_loff[zone, :] = 0
                nsec[zone] = 0
                continue
            _update_zone(zone, n_src, lists, lat, eff, geom, work, ifn, first_sub, step)
        # Secretion, once every effector has read the field.
        _secrete(n_zones, n_src, order, loff, seg, nsec, ifn, prm.ifn_secretion)
        parity = 1 - parity
    state[_LISTS_VALID] = 0 if prm.well_mixed else 1
    state[_PARITY] = parity
    state[_N_SRC] = n_zones
    state[_LISTED] = n_eff
    state[_STRIPS] = n_strips
    # Kills by (mechanism, kind, MHC state).
    n_died = 0
    for zone in range(n_zones):
        for j in range(N_KILL_TALLIES):
            kills[j] += kz[zone, j]
        n_died += kz[zone, KZ_DEATHS]
    return n_died


@njit(cache=True, inline="always")
def _carried_wide(eff):
    """The int64 fields carried with an effector (:data:`EFFECTOR_FIELDS`)."""
    return (eff.pos, eff.target, eff.uid, eff.born)


@njit(cache=True, inline="always")
def _carried_narrow(eff):
    """The uint8 fields carried with an effector (:data:`EFFECTOR_FIELDS`)."""
    return (eff.kind, eff.granules, eff.kills, eff.mechanism, eff.heading, eff.alive, eff.tcr_match)


@njit(cache=True)
def _permute_effectors(eff, n, perm, tmp_i64, tmp_u8):
    """Reorder the first ``n`` effectors: entry ``j`` becomes old entry ``perm[j]``."""
    for arr in _carried_wide(eff):
        for j in range(n):
            tmp_i64[j] = arr[perm[j]]
        arr[:n] = tmp_i64[:n]
    for arr in _carried_narrow(eff):
        for j in range(n):
            tmp_u8[j] = arr[perm[j]]
        arr[:n] = tmp_u8[:n]


#: The effectors are stored by site again once the arrivals since the last time
#: are more than 1 / _RESTORE_FRACTION of them (see run_steps).
_RESTORE_FRACTION = 16


@njit(cache=True)
def _store_by_site(eff, counters, perm, geom):
    """Store the effectors in the order of their sites (layer by layer, row by row).

    Effectors that are updated by the same strip then lie together in memory
    (no cache line shared between threads, and better locality). Order in the
    arrays has no effect on results: :func:`_store_by_arrival` restores it.
    """
    n = counters[C_STORED]
    if n < 2:
        return
    px = geom.px
    inv_px = 1.0 / px
    n_rows = geom.pz * geom.py
    counts = np.zeros(n_rows + 1, np.int64)
    for i in range(n):
        counts[_fast_divmod(eff.pos[i], px, inv_px)[0] + 1] += 1
    for r in range(n_rows):
        counts[r + 1] += counts[r]
    for i in range(n):
        r = _fast_divmod(eff.pos[i], px, inv_px)[0]
        perm[counts[r]] = i
        counts[r] += 1
    _permute_effectors(eff, n, perm, eff.klass, eff.event)


@njit(cache=True)
def _store_by_arrival(eff, counters, perm):
    """Store the effectors in order of arrival (of ``uid``), as the model defines it."""
    n = counters[C_STORED]
    if n < 2:
        return
    uid = eff.uid
    ordered = True
    for i in range(1, n):
        if uid[i] < uid[i - 1]:
            ordered = False
            break
    if ordered:
        return
    perm[:n] = np.argsort(uid[:n])
    _permute_effectors(eff, n, perm, eff.klass, eff.event)


@njit(cache=True)
def compact_effectors(eff, counters):
    """Drop dead effectors, keeping the order of the survivors."""
    n_eff = counters[C_STORED]
    alive = eff.alive
    w = 0
    while w < n_eff and alive[w] != 0:  # the survivors before the first death stay put
        w += 1
    first = w
    keep = eff.klass  # scratch: the survivors' slots (a compaction starts the effector lists afresh)
    for i in range(first, n_eff):
        if alive[i] != 0:
            keep[w] = i
            w += 1
    for arr in _carried_wide(eff):  # keep[j] >= j: moving forward overwrites nothing still to be read
        for j in range(first, w):
            arr[j] = arr[keep[j]]
    for arr in _carried_narrow(eff):
        for j in range(first, w):
            arr[j] = arr[keep[j]]
    counters[C_STORED] = w


@njit(cache=True)
def tcr_match_key(seed, patient):
    """Key of the TCR-clone draws: one per patient, so a cell's clone depends on its uid alone."""
    return stream_key(seed, patient, 0, P_TCR_MATCH)


@njit(cache=True, inline="always")
def tcr_match_of(key, uid, thr_match):
    """1 when effector ``uid``'s TCR clone recognises the tumour (``key``: :func:`tcr_match_key`)."""
    return np.uint8(1) if hit(draw(key, uid), thr_match) else np.uint8(0)


@njit(cache=True)
def add_effector(lat, eff, counters, geom, kind, granules, step, bits_key, tries, match_key, thr_match):
    """Place one arriving effector on a random free site; False if none found.

    Its TCR clone recognises the tumour with the probability of threshold
    ``thr_match`` (:func:`tcr_match_of` under ``match_key``), decided once, at arrival.
    """
    n_eff = counters[C_STORED]
    if n_eff >= eff.pos.shape[0]:
        counters[C_DROPPED] += 1
        return False
    uid = counters[C_NEXT_UID]
    counters[C_NEXT_UID] += 1
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
            eff.tcr_match[n_eff] = tcr_match_of(match_key, uid, thr_match)
            counters[C_STORED] = n_eff + 1
            return True
    counters[C_DROPPED] += 1
    return False


@njit(cache=True)
def supply(lat, eff, counters, arrivals, geom, prm, seed, patient, step, mean_cik, mean_ctl, n_dead=0):
    """Poisson arrivals of CIK (split by product shares) and endogenous CTLs.

    ``n_dead`` effectors in the arrays have died and not yet been compacted
    away: they hold no place. They are compacted first when the arrivals
    would not fit behind them. Returns the number still in the arrays.
    """
    key = stream_key(seed, patient, step, P_ARRIVAL)
    key_kind = stream_key(seed, patient, step, P_ARRIVAL_KIND)
    key_match = tcr_match_key(seed, patient)
    n_cik = poisson(stream_key(seed, patient, 2 * step, P_POISSON), mean_cik)
    n_ctl = poisson(stream_key(seed, patient, 2 * step + 1, P_POISSON), mean_ctl)
    free = eff.pos.shape[0] - (counters[C_STORED] - n_dead)
    if n_cik + n_ctl > free:  # more than can ever be held: count the excess as dropped at once
        excess = n_cik + n_ctl - free
        counters[C_DROPPED] += excess
        cut_ctl = min(n_ctl, excess)
        n_ctl -= cut_ctl
        n_cik -= excess - cut_ctl
    if n_dead > 0 and counters[C_STORED] + n_cik + n_ctl > eff.pos.shape[0]:
        compact_effectors(eff, counters)
        n_dead = 0
    # Sites without an effector: when none is left, every later arrival of this step would fail its
    # tries, so they are counted (uid and drop, as a failed placement does) without drawing any site.
    # A flooded supply then costs what the lattice holds, not what effectors.capacity allows.
    free_sites = geom.nz * geom.ny * geom.nx - (counters[C_STORED] - n_dead)
    for a in range(n_cik + n_ctl):
        if free_sites <= 0:
            rest = n_cik + n_ctl - a
            counters[C_NEXT_UID] += rest
            counters[C_DROPPED] += rest
            break
        if a < n_cik:
            u = uniform(draw(key_kind, counters[C_NEXT_UID]))
            kind = KIND_NK
            for k in range(3):
                if u < prm.product_cum[k]:
                    kind = k
                    break
        else:
            kind = KIND_CTL
        if add_effector(lat, eff, counters, geom, kind, prm.granules_initial, step, key, 32, key_match,
                        prm.thr_tcr_match[kind]):
            arrivals[kind] += 1
            free_sites -= 1
    return n_dead


# ---------------------------------------------------------------- IFN field
@njit(cache=True)
def _diffuse_row(r, src, dst, cz, cy, cx, alpha, decay):
    """One row of field cells: ``dst = decay * (c + alpha * (sum of neighbours - nb c))``.

    Neighbours that exist are summed in the order x-1, x+1, y-1, y+1, z-1, z+1.
    Cells away from every border take a branch-free, vectorised loop with the
    same operations in the same order.
    """
    z = r // cy
    y = r - z * cy
    row = r * cx
    interior = y > 0 and y < cy - 1 and cx > 2 and (cz == 1 or (z > 0 and z < cz - 1))
    for k in range(2 if interior else cx):  # border cells (interior rows: only x = 0 and cx - 1)
        x = (cx - 1) * k if interior else k
        i = row + x
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
    if not interior:
        return
    # Cells 1 .. cx - 2, through slices shifted by one neighbour each.
    mid = src[row + 1:row + cx - 1]
    left = src[row:row + cx - 2]
    right = src[row + 2:row + cx]
    up = src[row - cx + 1:row - 1]
    down = src[row + cx + 1:row + 2 * cx - 1]
    out = dst[row + 1:row + cx - 1]
    if cz == 1:
        for x in range(cx - 2):
            c = mid[x]
            acc = 0.0
            acc += left[x]
            acc += right[x]
            acc += up[x]
            acc += down[x]
            v = (c + alpha * (acc - 4 * c)) * decay
            out[x] = v if v > 1e-30 else 0.0
    else:
        plane = cx * cy
        below = src[row - plane + 1:row - plane + cx - 1]
        above = src[row + plane + 1:row + plane + cx - 1]
        for x in range(cx - 2):
            c = mid[x]
            acc = 0.0
            acc += left[x]
            acc += right[x]
            acc += up[x]
            acc += down[x]
            acc += below[x]
            acc += above[x]
            v = (c + alpha * (acc - 6 * c)) * decay
            out[x] = v if v > 1e-30 else 0.0


@njit(cache=True, parallel=True)
def _diffuse_parallel(src, dst, cz, cy, cx, alpha, decay):
    for r in prange(cz * cy):
        _diffuse_row(r, src, dst, cz, cy, cx, alpha, decay)


@njit(cache=True)
def field_step(ifn, ifn_tmp, geom, prm, parallel):
    """Diffuse and decay the IFN-gamma field over one step (explicit, zero-flux borders).

    Sub-steps alternate between ``ifn`` and ``ifn_tmp``; the result ends in ``ifn``.
    """
    src, dst = ifn, ifn_tmp
    for _ in range(prm.n_field_sub):
        if parallel:
            _diffuse_parallel(src, dst, geom.cz, geom.cy, geom.cx, prm.ifn_alpha, prm.ifn_decay)
        else:
            for r in range(geom.cz * geom.cy):
                _diffuse_row(r, src, dst, geom.cz, geom.cy, geom.cx, prm.ifn_alpha, prm.ifn_decay)
        src, dst = dst, src
    if prm.n_field_sub % 2 == 1:
        ifn[:] = ifn_tmp


# ---------------------------------------------------------------- records
@njit(cache=True, inline="always")
def _count_row(r, cell, mhc_lost, geom, row_counts):
    base = _row_base(r, geom.ny, geom.z0, geom.py, geom.px)
    cell_row = cell[base:base + geom.nx]
    lost_row = mhc_lost[base:base + geom.nx]
    live = 0
    lost = 0
    dying = 0
    for x in range(geom.nx):  # vectorised
        c = cell_row[x]
        live += c == LIVE
        lost += (c == LIVE) & (lost_row[x] == 1)
        dying += c == DYING
    row_counts[r, 0] = live - lost
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
    for i in range(counters[C_STORED]):
        if eff.alive[i] == 0:  # died, not yet compacted away
            continue
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
    row[REC_DROPPED] = counters[C_DROPPED]


# ---------------------------------------------------------------- driver
@njit(cache=True)
def live_cells(cell, geom):
    """Live tumour cells on the lattice."""
    n = 0
    for z in range(geom.nz):
        for y in range(geom.ny):
            row = ((z + geom.z0) * geom.py + (y + 1)) * geom.px + 1
            for x in range(geom.nx):
                n += cell[row + x] == LIVE
    return n


# nogil: a trial simulates patients in threads of one process (cikabm.trial._run_here).
@njit(cache=True, nogil=True)
def run_steps(lat, eff, ifn, ifn_tmp, counters, kills, arrivals, geom, prm, seed, patient,
              step_begin, step_end, mean_cik, mean_ctl, record_every, records, row_counts,
              n_threads, parallel_min, pass_ticks, check_every=0, stop_cells=0):
    """Advance the model from ``step_begin`` to ``step_end`` (exclusive); return the step reached.

    With ``check_every`` > 0 the live tumour cells are counted every
    ``check_every`` steps from ``step_begin`` and after the last step, and
    the run stops early, after such a check, when there are none or at
    least ``stop_cells`` (> 0): the checks of a lesion's lattice phase,
    without a return to Python between them.

    ``mean_cik[step]`` is the expected number of CIK arrivals in that step;
    ``mean_ctl`` the constant expected CTL arrivals per step. After each step
    ``s`` with ``(s + 1) % record_every == 0`` the populations are written to
    ``records[(s + 1) // record_every]``. A pass runs in parallel when it has
    at least ``parallel_min`` work items (lattice sites, field cells); the
    effector pass, in ``n_threads`` strips, when it has at least
    ``parallel_min // EFFECTOR_MIN_DIVISOR`` effectors per colour class in
    use (9 in 2D, 27 in 3D) and strip.
    Results depend neither on these choices nor on the number of threads.

    Per step this launches at most 2 + ``n_sub`` + ``n_field_sub`` parallel
    regions (tumour propose and resolve, one per effector sub-step, one per
    field sub-step when the field is large enough; one more on record steps).
    Scratch (row hulls, effector buckets) lives for one call; on return the
    effectors are compacted and in order of arrival.

    ``pass_ticks[k]`` (uint64, one entry per :data:`PASS_NAMES`) gains the
    :func:`cycle_counter` ticks spent in pass ``k``: where the time goes.
    """
    lattice_parallel = geom.nz * geom.ny * geom.nx >= parallel_min
    field_parallel = geom.cz * geom.cy * geom.cx >= parallel_min
    n_classes = 27 if geom.dims == 3 else 9
    effector_min = max((parallel_min // EFFECTOR_MIN_DIVISOR) * n_classes * n_threads, 1)
    hulls = np.empty((2, geom.nz * geom.ny, hull_width(geom.nx)), np.int64)  # row hulls of two steps, in turn
    hulls[0] = full_hulls(geom.nz * geom.ny, geom.nx)  # the lattice may have changed since the last call
    work = effector_work(geom, prm, n_threads)  # (the effectors are sorted afresh too)
    keys = np.empty(5, np.uint64)  # the step's tumour keys, and the serial resolve pass's scratch
    dying = np.empty(geom.nx, np.int64)
    if not prm.well_mixed:  # (well mixed: the shuffle goes through the effectors in arrival order)
        _store_by_site(eff, counters, _order_buffers(eff)[1], geom)
    uid_stored = counters[C_NEXT_UID]  # effectors of uid >= this arrived after the last store by site
    n_dead = 0  # dead effectors not yet compacted away
    reached = step_end
    for step in range(step_begin, step_end):
        t0 = cycle_counter()
        dead_before = n_dead
        n_dead = supply(lat, eff, counters, arrivals, geom, prm, seed, patient, step,
                        mean_cik[step], mean_ctl, n_dead)
        if n_dead < dead_before:  # compacted: the effector lists no longer apply
            work.state[_LISTS_VALID] = 0
        n_strips = 1
        if counters[C_STORED] - n_dead >= effector_min:
            n_strips = max(n_threads, 1)
        arrived = counters[C_NEXT_UID] - uid_stored
        if n_strips > 1 and not prm.well_mixed and arrived * _RESTORE_FRACTION > counters[C_STORED]:
            # Arrivals are appended in arrival order, wherever they landed: once they are
            # a fair share of the arrays, strips would write to shared cache lines.
            _store_by_site(eff, counters, _order_buffers(eff)[1], geom)
            work.state[_LISTS_VALID] = 0
            uid_stored = counters[C_NEXT_UID]
        hull_prev = hulls[(step - step_begin) % 2]
        hull = hulls[(step - step_begin + 1) % 2]
        t1 = cycle_counter()
        _tumour_keys_into(keys, seed, patient, step)
        _propose_pass(lat, geom, hull_prev, hull, step, keys[0], keys[1], keys[2], prm.thr_death_share,
                      prm.event_log_q, prm.clear_log_q, lattice_parallel)
        t2 = cycle_counter()
        _resolve_pass(lat, geom, hull, step, keys[3], keys[4], keys[1], prm.thr_mhc_loss, prm.inherit_sd,
                      prm.event_log_q, lattice_parallel, dying)
        t3 = cycle_counter()
        n_dead += effector_substeps(lat, eff, counters, kills, geom, prm, ifn, seed, patient, step,
                                    work, n_strips)
        t4 = cycle_counter()
        field_step(ifn, ifn_tmp, geom, prm, field_parallel)
        t5 = cycle_counter()
        pass_ticks[0] += t1 - t0
        pass_ticks[1] += t2 - t1
        pass_ticks[2] += t3 - t2
        pass_ticks[3] += t4 - t3
        pass_ticks[4] += t5 - t4
        if (step + 1) % record_every == 0:
            record(records[(step + 1) // record_every], lat, eff, counters, kills, arrivals,
                   geom, prm, ifn, row_counts, lattice_parallel)
            pass_ticks[5] += cycle_counter() - t5
        if check_every > 0 and ((step + 1 - step_begin) % check_every == 0 or step + 1 == step_end):
            n_live = live_cells(lat.cell, geom)
            if n_live == 0 or (stop_cells > 0 and n_live >= stop_cells):
                reached = step + 1
                break
    if n_dead > 0:
        compact_effectors(eff, counters)
    _store_by_arrival(eff, counters, _order_buffers(eff)[1])
    return reached

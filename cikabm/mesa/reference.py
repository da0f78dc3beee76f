"""A pure-Python Mesa reference model of the kernel's rules.

What it is for
--------------
:mod:`cikabm.kernels.core` runs the tumour-CIK model as a Numba kernel over
flat arrays, with counter-based random numbers and integer thresholds: fast,
but hard to read. This module states the same rules once more as plain Python
objects on a Mesa grid:

* a :class:`TumourCell` and an :class:`Effector` are Mesa ``CellAgent`` objects
  on an ``OrthogonalMooreGrid`` (or ``OrthogonalVonNeumannGrid``), at most one
  tumour cell and at most one effector per site (an effector may stand on a
  tumour cell's site);
* every rule is a method named after it (``propose``, ``die``, ``divide``,
  ``clear``, ``engage``, ``complete_kill``, ``activation_induced_death``,
  ``regenerate_granule``, ``move``);
* every per-step probability is derived again from the physical parameters of
  the scenario (:class:`~cikabm.mesa.rules.StepRules`, in ``cikabm/mesa/rules.py``),
  without importing ``cikabm.convert`` or ``cikabm.kernels``, so that a wrong
  conversion there shows up as a disagreement.

Students read it as the statement of the model; the test suite runs it and the
kernel over many seeds and compares their mean time series
(``tests/test_mesa_reference.py``).

It is slow on purpose: one Python object per cell, one method call per
decision, nothing vectorised except the small IFN-gamma field. Use it on small
2D lattices (tens of sites across, a few simulated days); use
:class:`cikabm.Simulation` for real runs. Only 2D lattices and the persistent
random walk are supported. Random numbers come from Mesa's ``model.random``
and ``model.rng``, so a run agrees with the kernel in distribution, never draw
for draw.

Step order (one call of :meth:`ReferenceModel.step`, one kernel step)
----------------------------------------------------------------------
1. Supply: Poisson arrivals of infused CIK cells (split by the product's
   subset shares) and of endogenous CTLs, each on a random site free of
   effectors (32 tries, else dropped).
2. Tumour propose: each live cell draws death or division (competing); a
   dividing cell picks a uniform empty neighbour, against the state before
   this step's divisions (none empty: contact inhibition).
3. Tumour resolve: dying cells are cleared; a site proposed by several cells
   gets one uniform winner, which places its daughter there.
4. Effectors, in ``n_sub`` motility sub-steps, each in random order: death
   (first sub-step only), kill completion, granule regeneration, recognition
   and engagement, movement. After each sub-step, engaged effectors secrete
   IFN-gamma into their coarse field cell. (A dead effector leaves the lattice
   at once; the kernel frees its site at once too and compacts its arrays
   after the sub-steps, which is the same thing.)
5. IFN-gamma: the coarse field diffuses and decays (explicit, zero-flux).
6. Every ``record_every`` steps the populations are counted by the
   ``DataCollector``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import mesa
import numpy as np
import pandas as pd
from mesa.discrete_space import Cell, CellAgent, OrthogonalMooreGrid, OrthogonalVonNeumannGrid

from cikabm.mesa.rules import (
    FAS,
    FIELD_STABILITY,
    PERFORIN,
    KindRules,
    StepRules,
    completes_in_rest_of_substep,
    probability,
)
from cikabm.params import KIND_KEYS, Scenario
from cikabm.scenario import scenario_from_dict
from cikabm.schedules import blood_level

__all__ = [
    "DEFAULT_SCENARIO",
    "FIELD_STABILITY",
    "Effector",
    "KindRules",
    "ReferenceModel",
    "Site",
    "StepRules",
    "TumourCell",
    "check_supported",
    "completes_in_rest_of_substep",
    "probability",
]

#: Tumour cell states (an empty site simply holds no tumour cell).
LIVE = "live"
DYING = "dying"

MECH_KEYS = (PERFORIN, FAS)
MHC_KEYS = ("mhc_present", "mhc_lost")

#: Infused CIK subsets, in the order of the product shares.
CIK_KINDS = ("tnk", "tcell", "nk")

#: Arrivals try this many random sites before they are dropped.
ARRIVAL_TRIES = 32

#: Neighbour directions (dy, dx) in the kernel's order; Mesa's grids use the
#: same (row, column) offsets as the keys of ``Cell.connections``.
MOORE = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
VON_NEUMANN = ((-1, 0), (0, -1), (0, 1), (1, 0))

#: The scenario used when none is given: a small region a few days after an
#: infusion, with both MHC states present. Quick enough to watch step by step.
DEFAULT_SCENARIO: dict[str, Any] = {
    "scenario": {"name": "mesa_reference_default", "seed": 1},
    "lattice": {"shape": [30, 30], "field_coarsening": 5},
    "time": {"duration_days": 2.0, "dt_minutes": 10.0, "record_every_hours": 6.0},
    "tumour": {"initial_cells": 200, "initial_mhc_lost_fraction": 0.2, "mhc_loss_per_division": 0.05},
    "product": {"share_tnk": 0.4, "share_tcell": 0.4, "share_nk": 0.2},
    "dosing": {"schedule": "lee2015", "start_day": 0.0},
    "homing": {"cik_per_site_per_day": 5e-12, "ctl_per_site_per_day": 0.01},
    "killing": {"granules_max": 1},
}


# ------------------------------------------------------------------ helpers
def clip01(x: float) -> float:
    """``x`` clipped to [0, 1]: L, M and F are fractions of their maximum."""
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


def check_supported(sc: Scenario) -> None:
    """Raise ``ValueError`` for what the reference model does not implement."""
    if sc.dims != 2:
        raise ValueError(f"the Mesa reference model is 2D only; lattice.shape = {list(sc.lattice.shape)} is "
                         f"{sc.dims}D")
    if sc.effectors.motility != "walk":
        raise ValueError(f"the Mesa reference model implements only effectors.motility = 'walk', "
                         f"not {sc.effectors.motility!r}")


# ------------------------------------------------------------------ space
class Site(Cell):
    """One lattice site: a Mesa cell holding at most one tumour cell and at most one effector.

    ``tumour`` and ``effector`` name the site's occupants. They mirror Mesa's
    own agent list of the cell (the agents keep both in step when they arrive,
    move and leave) so that the hot loops look an occupant up directly instead
    of copying and type-testing the list. ``neighbours`` is the contact
    neighbourhood in the kernel's order, ``closed`` the same with the site
    itself first (an effector recognises the cell it stands on too), and
    ``field_cell`` the index of the coarse IFN-gamma field cell it lies in.
    """

    __slots__ = ("closed", "effector", "field_cell", "neighbours", "tumour")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tumour: TumourCell | None = None
        self.effector: Effector | None = None
        self.neighbours: tuple[Site, ...] = ()
        self.closed: tuple[Site, ...] = ()
        self.field_cell: tuple[int, int] = (0, 0)


# ------------------------------------------------------------------ agents
class TumourCell(CellAgent):
    """A tumour cell with heritable NKG2D-ligand density ``L``, MHC-I level ``M`` and Fas level ``F``.

    Parameters
    ----------
    model : ReferenceModel
    site : Site
        An empty site (no tumour cell).
    ligand, mhc, fas : float
        L, M and F in [0, 1].
    mhc_lost : bool
        Genetic MHC-I loss: the cell shows no MHC-I, whatever ``mhc`` and IFN-gamma say.
    """

    def __init__(self, model: ReferenceModel, site: Site, *, ligand: float, mhc: float, fas: float,
                 mhc_lost: bool) -> None:
        super().__init__(model)
        self.ligand = ligand
        self.mhc = mhc
        self.fas = fas
        self.mhc_lost = mhc_lost
        # h(L) depends only on the heritable L, so it is worked out once, at birth.
        self.nkg2d_signal = model.rules.nkg2d_signal(ligand)
        self.state = LIVE
        self.cell = site
        site.tumour = self

    @property
    def mhc_state(self) -> str:
        """``"mhc_lost"`` or ``"mhc_present"``: the genetic state kills are recorded by."""
        return "mhc_lost" if self.mhc_lost else "mhc_present"

    def effective_mhc(self, ifn_response: float) -> float:
        """MHC-I seen by effectors: ``M`` raised toward 1 by IFN-gamma, 0 after genetic loss."""
        if self.mhc_lost:
            return 0.0  # IFN-gamma cannot restore a lost gene
        return self.mhc + (1.0 - self.mhc) * ifn_response

    def effective_fas(self, ifn_response: float) -> float:
        """Fas seen by FasL: ``F`` raised toward 1 by IFN-gamma."""
        return self.fas + (1.0 - self.fas) * ifn_response

    def propose(self) -> Site | None:
        """Draw this step's event; return the site a division is proposed into, if any.

        Death and division compete: one uniform number decides whether an event
        happens and, if so, which. A dividing cell picks a uniform empty
        neighbour; dying cells occupy their site, effectors do not block.
        """
        rules = self.model.rules
        u = self.model.random.random()
        if u >= rules.p_tumour_event:
            return None
        if u < rules.p_tumour_death:
            self.die()
            return None
        empty = [site for site in self.cell.neighbours if site.tumour is None]
        if not empty:
            return None  # contact inhibition
        return self.model.random.choice(empty)

    def die(self) -> None:
        """Become a dying cell: it still occupies its site until cleared, but is no target."""
        self.state = DYING

    def divide(self, site: Site) -> TumourCell:
        """Place a daughter on ``site``, inheriting L, M, F with noise and the MHC-loss flag."""
        sd = self.model.rules.inheritance_sd
        gauss = self.model.random.gauss
        return self.model.tumour_class(
            self.model, site,
            ligand=clip01(self.ligand + gauss(0.0, sd)),
            mhc=clip01(self.mhc + gauss(0.0, sd)),
            fas=clip01(self.fas + gauss(0.0, sd)),
            mhc_lost=self.daughter_mhc_lost(),
        )

    def daughter_mhc_lost(self) -> bool:
        """MHC-I loss is genetic: a daughter of a lost cell is lost; others lose it with ``p_mhc_loss``."""
        return self.mhc_lost or self.model.random.random() < self.model.rules.p_mhc_loss

    def clear(self) -> None:
        """Remove a dead cell, emptying its site."""
        self.cell.tumour = None
        self.remove()


class Effector(CellAgent):
    """An immune effector cell of one kind (``"tnk"``, ``"tcell"``, ``"nk"`` or ``"ctl"``).

    It walks persistently, recognises live tumour cells on its own site and
    its neighbours, engages one, and kills it by perforin (one granule) or,
    without granules, by Fas/FasL when its kind expresses FasL.

    Parameters
    ----------
    model : ReferenceModel
    site : Site
        A site with no effector.
    kind : str
        One of ``KIND_KEYS``.
    """

    def __init__(self, model: ReferenceModel, site: Site, kind: str) -> None:
        super().__init__(model)
        self.kind = kind
        self.kind_rules = model.rules.kinds[kind]
        self.granules = model.rules.granules_max  # effectors arrive fully loaded
        self.kills = 0
        self.target: TumourCell | None = None
        self.mechanism: str | None = None
        self.heading: tuple[int, int] | None = None  # None: pick a new direction at the next move
        # Clonal TCR specificity, decided once: does this cell's TCR recognise the tumour?
        self.tcr_match = model.random.random() < self.kind_rules.tcr_fraction
        self.alive = True
        self.cell = site
        site.effector = self

    @property
    def engaged(self) -> bool:
        """True while the effector is busy with a target."""
        return self.target is not None

    def substep(self, first: bool) -> None:
        """One motility sub-step: die, or finish a kill, or regenerate, engage, move.

        Parameters
        ----------
        first : bool
            The first sub-step of the step: the only one where the effector may die,
            so that its death probability is per step.
        """
        if first and self.model.random.random() < self.kind_rules.p_death:
            self.die()
            return
        if self.target is not None:
            if self.target.state == LIVE:
                self.complete_kill()
                return  # engaged effectors do not move
            self.release()  # the target died another way: free again, carry on
        self.regenerate_granule()
        if self.kills < self.model.rules.kill_capacity and self.engage():
            return  # a new engagement holds the effector in place
        self.move()

    def die(self) -> None:
        """Die in the tissue: leave the lattice (freeing the site for others at once) and the model."""
        self.alive = False
        self.target = None
        self.cell.effector = None
        self.remove()

    def release(self) -> None:
        """Become free of the current engagement."""
        self.target = None
        self.mechanism = None

    def complete_kill(self) -> None:
        """Finish the engagement with the per-sub-step completion probability of its mechanism."""
        if self.model.random.random() < self.model.rules.p_done[self.mechanism]:
            self.kill()

    def kill(self) -> None:
        """The target dies; the kill is counted by mechanism, kind and the target's MHC state.

        The killer then dies with probability ``p_aicd`` (activation-induced cell death).
        """
        target = self.target
        target.die()
        self.model.count_kill(self.mechanism, self.kind, target.mhc_state)
        self.kills += 1
        if self.mechanism == PERFORIN:
            self.spend_granule()
        self.release()
        self.activation_induced_death()

    def activation_induced_death(self) -> None:
        """Right after a kill the killer dies with probability ``p_aicd``."""
        if self.model.random.random() < self.model.rules.p_aicd:
            self.die()

    def spend_granule(self) -> None:
        """A perforin/granzyme kill uses up one granule."""
        self.granules -= 1

    def regenerate_granule(self) -> None:
        """A free effector regrows one granule per sub-step with probability ``p_regen``, up to the maximum."""
        rules = self.model.rules
        if self.granules < rules.granules_max and self.model.random.random() < rules.p_regen:
            self.granules += 1

    def recognition_rate(self, target: TumourCell, ifn_response: float) -> float:
        """Engagement hazard (per hour) on ``target``: ``nkg2d h(L) (1 - w M) + tcr M`` (TCR term only
        for a cell whose TCR recognises the tumour).

        NKG2D recognition needs no MHC, the missing-self weight ``w`` makes MHC
        loss raise NK-like killing, and the TCR term is MHC-restricted; ``M`` is
        the effective MHC-I level under the local IFN-gamma.
        """
        k = self.kind_rules
        m = target.effective_mhc(ifn_response)
        tcr = k.tcr_rate if self.tcr_match else 0.0
        return k.nkg2d_rate * target.nkg2d_signal * (1.0 - k.missing_self * m) + tcr * m

    def fas_sensitive(self, target: TumourCell, ifn_response: float) -> bool:
        """A Fas/FasL kill needs at least ``fas_threshold`` effective Fas on the target."""
        return target.effective_fas(ifn_response) >= self.model.rules.fas_threshold

    def engage(self) -> bool:
        """Try to engage a live cell of the closed neighbourhood; True if it engaged.

        Competing hazards: with ``R`` the summed recognition rate over the
        candidates, the effector engages with probability ``1 - exp(-R dt_sub)``
        and picks a target with probability ``r / R``. With granules it uses
        perforin; without, only FasL-expressing kinds engage, and only
        Fas-sensitive targets. The kill may complete within the same sub-step.
        """
        rules = self.model.rules
        has_granules = self.granules > 0
        if not has_granules and not self.kind_rules.fasl:
            return False  # nothing to kill with
        g = self.model.ifn_response(self.cell)
        candidates: list[TumourCell] = []
        rates: list[float] = []
        for site in self.cell.closed:
            cell = site.tumour
            if cell is None or cell.state != LIVE:
                continue
            if not has_granules and not self.fas_sensitive(cell, g):
                continue
            r = self.recognition_rate(cell, g)
            if r > 0.0:
                candidates.append(cell)
                rates.append(r)
        if not candidates:
            return False
        random = self.model.random
        if random.random() >= probability(sum(rates), rules.dt_sub_hours):
            return False
        self.target = candidates[0] if len(candidates) == 1 else random.choices(candidates, weights=rates)[0]
        self.mechanism = PERFORIN if has_granules else FAS
        if random.random() < rules.p_same[self.mechanism]:
            self.kill()
        return True

    def move(self) -> None:
        """Persistent random walk: a step with probability ``p_move`` along the heading.

        The heading is kept with probability ``persistence``, else a new one is
        drawn uniformly among the neighbour directions. The lattice edge and
        other effectors block the step; a blocked effector stays and turns at
        its next move.
        """
        model = self.model
        if model.random.random() >= self.kind_rules.p_move:
            return
        if self.heading is None or model.random.random() >= model.rules.p_persist:
            self.heading = model.random.choice(model.directions)
        dest = self.cell.connections.get(self.heading)
        if dest is None or dest.effector is not None:
            self.heading = None
            return
        self.cell.effector = None
        self.cell = dest
        dest.effector = self


# ------------------------------------------------------------------ model
class ReferenceModel(mesa.Model):
    """The tumour-CIK model of :mod:`cikabm.kernels.core`, one Python object per cell.

    Parameters
    ----------
    scenario : Scenario, optional
        A validated 2D scenario with effectors.motility = "walk" (default: the
        small :data:`DEFAULT_SCENARIO`).
    seed : int
        Seed of Mesa's random number generators.

    Attributes
    ----------
    settings : Scenario
        The scenario (not ``scenario``: Mesa 3.5 uses that name for its own object).
    rules : StepRules
        The per-step numbers derived from it.
    grid : OrthogonalMooreGrid or OrthogonalVonNeumannGrid
        The lattice of :class:`Site` cells.
    ifn : ndarray
        The coarse IFN-gamma field, shape ``(ceil(ny / c), ceil(nx / c))``.
    clock : int
        Steps done.
    datacollector : mesa.DataCollector
        The time series, with the column names of ``Results.to_frame()``.

    Examples
    --------
    >>> from cikabm.mesa.reference import ReferenceModel
    >>> frame = ReferenceModel(seed=3).run()  # doctest: +SKIP
    >>> frame[["time_days", "tumour_total", "kills_total"]].tail()  # doctest: +SKIP
    """

    #: The agent classes; a subclass may swap in variants (the mutation tests do).
    tumour_class: type[TumourCell] = TumourCell
    effector_class: type[Effector] = Effector

    def __init__(self, *, scenario: Scenario | None = None, seed: int = 1) -> None:
        sc = scenario_from_dict(DEFAULT_SCENARIO) if scenario is None else scenario
        check_supported(sc)
        super().__init__(rng=seed)  # Mesa >= 3.5 deprecates seed=; rng=int seeds both generators
        self.settings = sc
        self.rules = StepRules.from_scenario(sc)
        self.clock = 0
        ny, nx = sc.lattice.shape
        if sc.lattice.neighbourhood == "moore":
            grid_class: type = OrthogonalMooreGrid
            self.directions = MOORE
        else:
            grid_class = OrthogonalVonNeumannGrid
            self.directions = VON_NEUMANN
        self.grid = grid_class((ny, nx), torus=False, random=self.random, cell_klass=Site)
        c = self.rules.coarsening
        self.sites: list[Site] = [self.grid[(y, x)] for y in range(ny) for x in range(nx)]
        for site in self.sites:
            y, x = site.coordinate
            site.neighbours = tuple(site.connections[d] for d in self.directions if d in site.connections)
            site.closed = (site, *site.neighbours)
            site.field_cell = (y // c, x // c)
        self.ifn = np.zeros((-(-ny // c), -(-nx // c)))
        self.kills: dict[tuple[str, str, str], int] = {
            (m, k, h): 0 for m in MECH_KEYS for k in KIND_KEYS for h in MHC_KEYS}
        self.arrivals = dict.fromkeys(KIND_KEYS, 0)
        self.dropped = 0
        self.seed_tumour()
        self.census: dict[str, float] = {}
        self.datacollector = mesa.DataCollector(model_reporters=self._reporters())
        self.record()

    # -------------------------------------------------------------- set-up
    def seed_tumour(self) -> None:
        """Place the initial tumour: the sites nearest the centre (a ball), or scattered at random.

        Each cell draws L, M, F from normal distributions (clipped to [0, 1]) and
        is MHC-lost with probability ``initial_mhc_lost_fraction``.
        """
        tum = self.settings.tumour
        ny, nx = self.settings.lattice.shape
        if tum.initial_pattern == "ball":
            cy, cx = (ny - 1) / 2.0, (nx - 1) / 2.0
            # Nearest first; ties in row-major order, as in the kernel.
            ordered = sorted(self.sites, key=lambda s: ((s.coordinate[0] - cy) ** 2 + (s.coordinate[1] - cx) ** 2,
                                                         s.coordinate))
            chosen = ordered[:tum.initial_cells]
        else:
            chosen = self.random.sample(self.sites, tum.initial_cells)
        gauss = self.random.gauss
        for site in sorted(chosen, key=lambda s: s.coordinate):
            self.tumour_class(
                self, site,
                ligand=clip01(gauss(tum.ligand_mean, tum.ligand_sd)),
                mhc=clip01(gauss(tum.mhc_mean, tum.mhc_sd)),
                fas=clip01(gauss(tum.fas_mean, tum.fas_sd)),
                mhc_lost=self.random.random() < tum.initial_mhc_lost_fraction,
            )

    # -------------------------------------------------------------- agents
    def tumour_cells(self) -> list[TumourCell]:
        """All tumour cells (live and dying), as a list safe to change the model under."""
        return list(self.agents_by_type.get(self.tumour_class, ()))

    def effectors(self) -> list[Effector]:
        """All effectors, as a list safe to change the model under."""
        return list(self.agents_by_type.get(self.effector_class, ()))

    def ifn_response(self, site: Site) -> float:
        """``g = I / (I + half_effect)`` of the IFN-gamma level ``I`` in the site's field cell."""
        level = float(self.ifn[site.field_cell])
        return level / (level + self.rules.ifn_half_effect) if level > 0.0 else 0.0

    def count_kill(self, mechanism: str, kind: str, mhc_state: str) -> None:
        """Tally one kill."""
        self.kills[mechanism, kind, mhc_state] += 1

    # -------------------------------------------------------------- one step
    def step(self) -> None:
        """Advance one kernel time step (``time.dt_minutes``), in the kernel's order."""
        if self.clock >= self.rules.n_steps:
            raise RuntimeError(f"the scenario ends after {self.rules.n_steps} steps")
        self.supply()
        proposals = self.tumour_propose()
        self.tumour_resolve(proposals)
        self.effector_substeps()
        self.ifn_field_step()
        self.clock += 1
        if self.clock % self.rules.record_every == 0:
            self.record()

    def supply(self) -> None:
        """Poisson arrivals of CIK cells (subset by product share) and endogenous CTLs."""
        rules = self.rules
        n_cik = int(self.rng.poisson(rules.mean_cik_arrivals[self.clock]))
        n_ctl = int(self.rng.poisson(rules.mean_ctl_arrivals))
        free = rules.capacity - len(self.agents_by_type.get(self.effector_class, ()))
        if n_cik + n_ctl > free:  # more than can ever be held: the excess is dropped, CTLs first
            excess = n_cik + n_ctl - free
            self.dropped += excess
            cut_ctl = min(n_ctl, excess)
            n_ctl -= cut_ctl
            n_cik -= excess - cut_ctl
        kinds = self.random.choices(CIK_KINDS, weights=rules.cik_shares, k=n_cik) + ["ctl"] * n_ctl
        for kind in kinds:
            self.add_effector(kind)

    def add_effector(self, kind: str) -> bool:
        """Place one arriving effector on a random site free of effectors; False if dropped."""
        for _ in range(ARRIVAL_TRIES):
            site = self.random.choice(self.sites)
            if site.effector is None:
                self.effector_class(self, site, kind)
                self.arrivals[kind] += 1
                return True
        self.dropped += 1
        return False

    def tumour_propose(self) -> dict[Site, list[TumourCell]]:
        """Every live cell draws death or a division proposal; returns proposers by target site."""
        proposals: dict[Site, list[TumourCell]] = defaultdict(list)
        for cell in self.tumour_cells():
            if cell.state == LIVE:
                target = cell.propose()
                if target is not None:
                    proposals[target].append(cell)
        return proposals

    def tumour_resolve(self, proposals: dict[Site, list[TumourCell]]) -> None:
        """Clear dying cells (those that died this step too); one uniform winner per proposed site divides."""
        p_clear = self.rules.p_clear
        for cell in self.tumour_cells():
            if cell.state == DYING and self.random.random() < p_clear:
                cell.clear()
        for site, parents in proposals.items():
            winner = parents[0] if len(parents) == 1 else self.random.choice(parents)
            winner.divide(site)

    def effector_substeps(self) -> None:
        """All motility sub-steps of one step; engaged effectors secrete IFN-gamma after each."""
        for sub in range(self.rules.n_sub):
            effectors = self.effectors()
            if not effectors:
                return
            self.random.shuffle(effectors)
            for effector in effectors:
                if effector.alive:
                    effector.substep(first=sub == 0)
            self.secrete(effectors)

    def secrete(self, effectors: list[Effector]) -> None:
        """Each engaged effector adds one sub-step's secretion to its IFN-gamma field cell."""
        amount = self.rules.ifn_secretion
        for effector in effectors:
            if effector.alive and effector.target is not None:
                self.ifn[effector.cell.field_cell] += amount

    def ifn_field_step(self) -> None:
        """Diffuse and decay the IFN-gamma field over one step (explicit, zero-flux borders).

        Edge padding copies each border cell outward, so a missing neighbour
        contributes no flux.
        """
        rules = self.rules
        for _ in range(rules.n_field_sub):
            p = np.pad(self.ifn, 1, mode="edge")
            flux = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4.0 * self.ifn
            self.ifn = (self.ifn + rules.ifn_alpha * flux) * rules.ifn_decay

    # -------------------------------------------------------------- records
    def count(self) -> dict[str, float]:
        """The populations and cumulative tallies now, by the column names of ``Results.to_frame()``."""
        rules = self.rules
        row: dict[str, float] = {"time_days": self.clock * rules.dt_days}
        present = lost = dying = 0
        for cell in self.tumour_cells():
            if cell.state == DYING:
                dying += 1
            elif cell.mhc_lost:
                lost += 1
            else:
                present += 1
        row["tumour_total"] = present + lost
        row["tumour_mhc_present"] = present
        row["tumour_mhc_lost"] = lost
        row["tumour_dying"] = dying
        effectors = self.effectors()
        for key in KIND_KEYS:
            row[f"effectors_{key}"] = sum(e.kind == key for e in effectors)
        row["effectors_engaged"] = sum(e.target is not None for e in effectors)
        row["effectors_exhausted"] = sum(e.kills >= rules.kill_capacity for e in effectors)
        row["blood_cik_cells"] = float(blood_level(np.array([row["time_days"]]), rules.infusion_days,
                                                   self.settings.dosing.dose_cells, self.settings.persistence)[0])
        row["infusions_given"] = int(np.searchsorted(rules.infusion_days, row["time_days"], side="right"))
        row["ifn_mean"] = float(self.ifn.mean())
        k = self.kills
        row["kills_total"] = sum(k.values())
        for m in MECH_KEYS:
            row[f"kills_{m}"] = sum(v for (mm, _, _), v in k.items() if mm == m)
        for key in KIND_KEYS:
            row[f"kills_{key}"] = sum(v for (_, kk, _), v in k.items() if kk == key)
        for h in MHC_KEYS:
            row[f"kills_{h}"] = sum(v for (_, _, hh), v in k.items() if hh == h)
        for m in MECH_KEYS:
            for key in KIND_KEYS:
                for h in MHC_KEYS:
                    row[f"kills_{m}_{key}_{h}"] = k[m, key, h]
        for key in KIND_KEYS:
            row[f"arrivals_{key}"] = self.arrivals[key]
        row["arrivals_dropped"] = self.dropped
        return row

    def _reporters(self) -> dict[str, Any]:
        """One model reporter per column, reading the census taken by :meth:`record`."""
        return {name: (lambda m, name=name: m.census[name]) for name in self.count()}

    def record(self) -> None:
        """Count the populations and hand them to the DataCollector."""
        self.census = self.count()
        self.datacollector.collect(self)

    def run(self) -> pd.DataFrame:
        """Step to the end of ``time.duration_days``; return the time series.

        Returns
        -------
        DataFrame
            One row at time 0 and one every ``record_every`` steps, the rows and
            columns of ``Simulation(scenario, seed=...).run().to_frame()``.
        """
        while self.clock < self.rules.n_steps:
            self.step()
        frame = self.datacollector.get_model_vars_dataframe().reset_index(drop=True)
        floats = ("time_days", "blood_cik_cells", "ifn_mean")
        counts = [c for c in frame.columns if c not in floats]
        frame[counts] = frame[counts].astype(np.int64)
        return frame

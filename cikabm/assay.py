"""The in-silico cytotoxicity assay: a chromium-release experiment run on the kernel.

A co-culture of a scenario's tumour line (the *targets*) with effectors, at
several effector-to-target ratios, for a few hours, as in a 4-hour
51Cr-release assay. Every well is a small kernel simulation:

* targets: ``targets`` cells of the scenario's tumour line (its L, M, F
  distributions), scattered over a square 2D lattice at ``targets_per_site``;
  they do not divide (the assay counts the cells labelled at the start) but die
  spontaneously at the line's death rate;
* effectors: ``round(E:T x targets)`` cells placed at random at time 0, either
  the CIK product (subset counts in the product's shares) or one subset alone,
  with the scenario's per-kind rules; no homing, no infusions;
* conditions: optional antibody blocking of NKG2D or of the TCR
  (``killing.nkg2d_blocked`` / ``killing.tcr_blocked``), targets of the line as
  they are, all MHC-I-lost or half and half, and a lattice co-culture
  (effectors walk as in tissue) or a well-mixed one (effectors redrawn at
  random every sub-step: the mass-action limit).

Specific lysis is computed as the assay reports it: with ``d`` the fraction of
targets dead at the end and ``d0`` that of the no-effector control of the same
replicate (same random streams, so the same spontaneous deaths),
``(d - d0) / (1 - d0)``. Replicates differ in the simulation's patient key.

:func:`run_assay` runs a grid of conditions and returns an :class:`AssayResult`
(``.replicates``, one row per well; ``.table()``, mean lysis and 95 % interval
per condition and E:T; ``.kills_per_cell()``); :func:`plot_assay` draws the E:T
curves; :func:`calibrate_potency` fits the CIK product's per-contact rate to a
published point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from cikabm.params import KIND_KEYS, Scenario

#: The published anchor: CIK cells lysed 33 % of the HCC line SNU-354 at E:T 30:1
#: in a 51Cr-release assay (Kim 2007 Int Immunopharmacol 7:1793).
KIM2007_ANCHOR = {"et_ratio": 30.0, "hours": 4.0, "specific_lysis": 0.33, "label": "Kim 2007: 33 % at 30:1",
                  "source": "Kim 2007 Int Immunopharmacol 7:1793: 33 % of SNU-354 at E:T 30:1"}

#: What the sources say of NKG2D blocking, beside which the assay reports its own fall in lysis.
NKG2D_BLOCKING_SOURCE = ("Pievani 2011 Blood 118:3301: blocking NKG2D (or NKp30) removes the NK-like, "
                         "MHC-unrestricted killing of CIK cells and leaves their TCR-mediated killing; "
                         "no percentage for a tumour line is given")

#: The E:T ratios of a default assay.
DEFAULT_ET = (1.0, 3.0, 10.0, 30.0, 100.0)

EffectorChoice = Literal["product", "tnk", "tcell", "nk", "ctl"]
Blocking = Literal["none", "nkg2d", "tcr"]
TargetChoice = Literal["line", "mhc_lost", "mixed"]
Coculture = Literal["lattice", "well_mixed"]

EFFECTOR_CHOICES: tuple[str, ...] = ("product", *KIND_KEYS)
BLOCKING_CHOICES: tuple[str, ...] = ("none", "nkg2d", "tcr")
TARGET_CHOICES: tuple[str, ...] = ("line", "mhc_lost", "mixed")
COCULTURE_CHOICES: tuple[str, ...] = ("lattice", "well_mixed")

#: Targets per lattice site of a well, by default (a monolayer co-culture; see docs/model.md on what
#: the fitted potency owes to this choice).
DEFAULT_TARGETS_PER_SITE = 1.0 / 150.0

#: Most of the lattice effectors may fill (one effector per site): beyond it they jam.
MAX_EFFECTOR_DENSITY = 0.9

#: Key salt of the effectors' placement draws (distinct from every kernel purpose).
_PLACEMENT_SALT = 4001


@dataclass(frozen=True)
class AssayCondition:
    """One arm of an assay: which effectors, which blocking, which targets, which co-culture."""

    effectors: EffectorChoice = "product"
    blocking: Blocking = "none"
    targets: TargetChoice = "line"
    coculture: Coculture = "lattice"

    def __post_init__(self) -> None:
        for name, allowed in (("effectors", EFFECTOR_CHOICES), ("blocking", BLOCKING_CHOICES),
                              ("targets", TARGET_CHOICES), ("coculture", COCULTURE_CHOICES)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{name} = {value!r}: must be one of {', '.join(allowed)}")

    @property
    def label(self) -> str:
        """A short legend label, e.g. ``"product, NKG2D blocked"``."""
        parts = [self.effectors]
        if self.blocking != "none":
            parts.append(f"{self.blocking.upper()} blocked")
        if self.targets != "line":
            parts.append({"mhc_lost": "MHC-I-lost targets", "mixed": "half MHC-I-lost"}[self.targets])
        if self.coculture != "lattice":
            parts.append("well mixed")
        return ", ".join(parts)


@dataclass(frozen=True)
class AssayDesign:
    """The wells: targets per well, their density, the duration and the replicates."""

    hours: float = 4.0
    targets: int = 150
    targets_per_site: float = DEFAULT_TARGETS_PER_SITE
    replicates: int = 10

    def __post_init__(self) -> None:
        if not 0 < self.hours <= 72:
            raise ValueError(f"hours = {self.hours}: must be in (0, 72]")
        if not 1 <= self.targets <= 100_000:
            raise ValueError(f"targets = {self.targets}: must be 1-100000")
        if not 0 < self.targets_per_site <= 0.5:
            raise ValueError(f"targets_per_site = {self.targets_per_site}: must be in (0, 0.5]")
        if not 1 <= self.replicates <= 10_000:
            raise ValueError(f"replicates = {self.replicates}: must be 1-10000")

    @property
    def side(self) -> int:
        """Edge of the square lattice (sites)."""
        return max(3, math.ceil(math.sqrt(self.targets / self.targets_per_site)))

    def max_et(self) -> float:
        """The largest E:T ratio the lattice holds (effectors fill at most 90 % of the sites)."""
        return MAX_EFFECTOR_DENSITY * self.side**2 / self.targets


def region_of(scenario: Scenario) -> Scenario:
    """The region sections of a (possibly trial) scenario, as a plain :class:`Scenario`."""
    data = scenario.model_dump()
    return Scenario.model_validate({k: data[k] for k in Scenario.model_fields}, strict=False)


def assay_scenario(scenario: Scenario, condition: AssayCondition, design: AssayDesign) -> Scenario:
    """The scenario of one well: the line's targets, the scenario's effector rules, no supply."""
    base = region_of(scenario).model_dump()
    tum = dict(base["tumour"])
    tum.update(initial_cells=design.targets, initial_pattern="scattered", division_rate_per_day=0.0,
               mhc_loss_per_division=0.0)
    if condition.targets == "mhc_lost":
        tum["initial_mhc_lost_fraction"] = 1.0
    elif condition.targets == "mixed":
        tum["initial_mhc_lost_fraction"] = 0.5
    dt = min(base["time"]["dt_minutes"], 10.0, design.hours * 60.0)
    base.update(
        scenario={**base["scenario"], "name": f"assay: {condition.label}"},
        lattice={**base["lattice"], "shape": [design.side, design.side]},
        time={"duration_days": design.hours / 24.0, "dt_minutes": dt, "record_every_hours": design.hours},
        tumour=tum,
        effectors={**base["effectors"], "motility": "walk" if condition.coculture == "lattice" else "well_mixed",
                   "capacity": max(1, round(design.max_et() * design.targets) + 1)},
        killing={**base["killing"], "nkg2d_blocked": condition.blocking == "nkg2d",
                 "tcr_blocked": condition.blocking == "tcr"},
        dosing={"schedule": "none"},
        homing={"cik_per_site_per_day": 0.0, "ctl_per_site_per_day": 0.0},
    )
    return Scenario.model_validate(base, strict=False)


def effector_counts(choice: str, n_effectors: int, scenario: Scenario) -> dict[str, int]:
    """Effectors of each kind for ``n_effectors``: the product's shares (largest remainder) or one kind."""
    if choice != "product":
        return {k: (n_effectors if k == choice else 0) for k in KIND_KEYS}
    prod = scenario.product
    shares = np.array([prod.share_tnk, prod.share_tcell, prod.share_nk], dtype=float)
    exact = shares / shares.sum() * n_effectors
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: n_effectors - counts.sum()]:
        counts[i] += 1
    return {"tnk": int(counts[0]), "tcell": int(counts[1]), "nk": int(counts[2]), "ctl": 0}


def assay_simulation(scenario: Scenario, condition: AssayCondition, design: AssayDesign, et_ratio: float,
                     replicate: int) -> tuple[Any, dict[str, int]]:
    """One well, ready to run: ``(Simulation, effectors placed by kind)``.

    ``et_ratio = 0`` is the no-effector control. The replicate is the
    simulation's patient key, so a replicate's control and wells share streams.
    """
    from cikabm.simulation import Simulation

    if et_ratio < 0 or et_ratio > design.max_et() + 1e-9:
        raise ValueError(f"E:T = {et_ratio:g}: must be between 0 and {design.max_et():.0f} for "
                         f"{design.targets} targets at {design.targets_per_site:g} per site")
    sim = Simulation(assay_scenario(scenario, condition, design), patient=replicate, threads=1)
    wanted = effector_counts(condition.effectors, round(et_ratio * design.targets), scenario)
    placed = {}
    for k, key in enumerate(KIND_KEYS):
        placed[key] = sim.add_effectors(k, wanted[key], salt=_PLACEMENT_SALT + k)
        if placed[key] < wanted[key]:
            raise ValueError(f"E:T = {et_ratio:g}: only {placed[key]} of {wanted[key]} {key} effectors fit")
    return sim, placed


def _well(scenario: Scenario, condition: AssayCondition, design: AssayDesign, et_ratio: float,
          replicate: int) -> dict[str, Any]:
    """Run one well; its counts at the end."""
    from cikabm.kernels.core import LIVE
    from cikabm.simulation import record_columns

    sim, placed = assay_simulation(scenario, condition, design, et_ratio, replicate)
    lost0 = int(np.count_nonzero((sim.lattice.cell == LIVE) & (sim.lattice.mhc_lost == 1)))
    n0 = int(np.count_nonzero(sim.lattice.cell == LIVE))
    sim.run(progress=False, n_snapshots=0)
    last = {name: values[0] for name, values in record_columns(sim.records[-1:]).items()}  # the final counts
    row: dict[str, Any] = {"n_targets": n0, "n_targets_mhc_lost": lost0,
                           "dead": n0 - int(last["tumour_total"]), "kills": int(last["kills_total"])}
    for key in KIND_KEYS:
        row[f"effectors_{key}"] = placed[key]
        row[f"kills_{key}"] = int(last[f"kills_{key}"])
        row[f"kills_{key}_mhc_lost"] = int(last[f"kills_perforin_{key}_mhc_lost"] + last[f"kills_fas_{key}_mhc_lost"])
    row["kills_mhc_lost"] = int(last["kills_mhc_lost"])
    return row


@dataclass
class AssayResult:
    """The wells of an assay. ``replicates``: one row per condition, E:T and replicate."""

    design: AssayDesign
    conditions: list[AssayCondition]
    et_ratios: list[float]
    replicates: pd.DataFrame
    anchor: dict[str, Any] = field(default_factory=lambda: dict(KIM2007_ANCHOR))

    def table(self) -> pd.DataFrame:
        """Mean specific lysis with its 95 % t interval over replicates, per condition and E:T."""
        from scipy import stats

        keys = ["effectors", "blocking", "targets", "coculture", "et_ratio"]
        rows = []
        for values, g in self.replicates.groupby(keys, sort=False):
            x = g["specific_lysis"].to_numpy()
            n = x.size
            mean = float(x.mean())
            half = float(stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
            rows.append({**dict(zip(keys, values, strict=True)), "replicates": n, "specific_lysis": mean,
                         "ci_low": mean - half, "ci_high": mean + half,
                         "control_dead_fraction": float(g["control_dead_fraction"].mean()),
                         **{f"kills_per_cell_{k}": _per_cell(g, k) for k in KIND_KEYS}})
        return pd.DataFrame(rows)

    def kills_per_cell(self, condition: AssayCondition, et_ratio: float) -> dict[str, dict[str, float]]:
        """Kills per effector by kind (mean over replicates, with its standard error), on all targets
        and on MHC-I-lost ones."""
        g = self.wells(condition, et_ratio)
        out: dict[str, dict[str, float]] = {}
        for k in KIND_KEYS:
            n = g[f"effectors_{k}"].to_numpy(float)
            if n.sum() == 0:
                continue
            per = g[f"kills_{k}"].to_numpy(float) / np.maximum(n, 1)
            lost = g[f"kills_{k}_mhc_lost"].to_numpy(float) / np.maximum(n, 1)
            se = float(per.std(ddof=1) / math.sqrt(per.size)) if per.size > 1 else math.nan
            out[k] = {"kills_per_cell": float(per.mean()), "se": se,
                      "kills_per_cell_mhc_lost": float(lost.mean()),
                      "kills_per_cell_mhc_present": float((per - lost).mean())}
        return out

    def lysis(self, condition: AssayCondition, et_ratio: float) -> tuple[float, float]:
        """Mean specific lysis and its standard error at one condition and E:T."""
        x = self.wells(condition, et_ratio)["specific_lysis"].to_numpy()
        return float(x.mean()), (float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan)

    def blocking_fall(self) -> pd.DataFrame:
        """Relative fall in mean lysis with NKG2D (or TCR) blocked, per condition and E:T, where the
        same condition was also run unblocked: ``1 - lysis(blocked) / lysis(unblocked)``."""
        t = self.table()
        keys = ["effectors", "targets", "coculture", "et_ratio"]
        base = t[t["blocking"] == "none"].set_index(keys)["specific_lysis"]
        rows = []
        for _, r in t[t["blocking"] != "none"].iterrows():
            key = tuple(r[k] for k in keys)
            if key in base.index and base[key] > 0:
                rows.append({**{k: r[k] for k in keys}, "blocking": r["blocking"],
                             "lysis_unblocked": float(base[key]), "lysis_blocked": float(r["specific_lysis"]),
                             "fall": 1.0 - float(r["specific_lysis"]) / float(base[key])})
        return pd.DataFrame(rows)

    def wells(self, condition: AssayCondition, et_ratio: float) -> pd.DataFrame:
        """The replicate wells (rows of :attr:`replicates`) of one condition at one E:T."""
        r = self.replicates
        mask = np.isclose(r["et_ratio"], et_ratio)
        for name, value in asdict(condition).items():
            mask &= r[name] == value
        if not mask.any():
            raise KeyError(f"no wells for {condition.label} at E:T {et_ratio:g}")
        return r[mask]


def _per_cell(g: pd.DataFrame, kind: str) -> float:
    n = g[f"effectors_{kind}"].to_numpy(float)
    return float((g[f"kills_{kind}"] / np.maximum(n, 1)).mean()) if n.sum() > 0 else math.nan


def run_assay(scenario: Scenario, *, conditions: Sequence[AssayCondition] = (AssayCondition(),),
              et_ratios: Iterable[float] = DEFAULT_ET, design: AssayDesign | None = None,
              progress: Callable[[int, int], None] | None = None) -> AssayResult:
    """Run an in-silico chromium-release assay.

    Parameters
    ----------
    scenario : Scenario
        Supplies the tumour line (``tumour``), the effector rules
        (``effectors``, ``killing``, ``ifn``) and the product mix (``product``).
    conditions : sequence of AssayCondition
        The arms; each is run at every E:T with its own no-effector control.
    et_ratios : iterable of float
        Effector-to-target ratios (each > 0).
    design : AssayDesign, optional
        Targets per well, density, hours and replicates (default: 150 targets
        at 1 per 150 sites, 4 h, 10 replicates).
    progress : callable, optional
        ``progress(done, total)`` after every well.

    Returns
    -------
    AssayResult
    """
    design = design or AssayDesign()
    ets = [float(e) for e in et_ratios]
    if not ets or any(not (e > 0) for e in ets):
        raise ValueError(f"E:T ratios {ets}: give at least one, each > 0")
    conditions = list(conditions)
    total = len(conditions) * design.replicates * (len(ets) + 1)
    done = 0
    rows = []
    for cond in conditions:
        for rep in range(design.replicates):
            control = _well(scenario, cond, design, 0.0, rep)
            d0 = control["dead"] / control["n_targets"]
            done += 1
            if progress:
                progress(done, total)
            for et in ets:
                well = _well(scenario, cond, design, et, rep)
                d = well["dead"] / well["n_targets"]
                rows.append({**asdict(cond), "et_ratio": et, "replicate": rep,
                             "specific_lysis": (d - d0) / (1.0 - d0) if d0 < 1 else math.nan,
                             "dead_fraction": d, "control_dead_fraction": d0, **well})
                done += 1
                if progress:
                    progress(done, total)
    return AssayResult(design=design, conditions=conditions, et_ratios=ets, replicates=pd.DataFrame(rows))


# ------------------------------------------------------------------ potency calibration
def scale_cik_potency(scenario: Scenario, factor: float) -> Scenario:
    """``scenario`` with the per-contact rates (NKG2D and TCR) of the three CIK kinds times ``factor``.

    Their ratios stay those of the parameter table; endogenous CTLs are untouched.
    """
    eff = scenario.effectors
    update = {}
    for key in ("tnk", "tcell", "nk"):
        k = eff.kind(key)
        update[key] = k.model_copy(update={"nkg2d_rate_per_hour": k.nkg2d_rate_per_hour * factor,
                                           "tcr_rate_per_hour": k.tcr_rate_per_hour * factor})
    return scenario.model_copy(update={"effectors": eff.model_copy(update=update)})


@dataclass
class PotencyFit:
    """The fitted per-contact rate of CD3+CD56+ cells and how it was found."""

    tnk_rate_per_hour: float  # effectors.tnk.nkg2d_rate_per_hour after the fit (its TCR rate scales alike)
    factor: float  # multiplier applied to the scenario's CIK rates
    ci_low: float  # 95 % interval of the fitted rate from the simulation noise at the fit
    ci_high: float
    lysis: float  # mean specific lysis at the fitted rate
    lysis_se: float
    target: dict[str, Any]
    design: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)


def calibrate_potency(scenario: Scenario, *, target_lysis: float = KIM2007_ANCHOR["specific_lysis"],
                      et_ratio: float = KIM2007_ANCHOR["et_ratio"], design: AssayDesign | None = None,
                      log10_factor_range: tuple[float, float] = (-2.5, 2.5), tolerance: float = 0.002,
                      report: Callable[[str], None] = print) -> PotencyFit:
    """Fit one factor on the CIK kinds' per-contact rates so that the product lyses ``target_lysis``.

    The product mix at ``et_ratio`` in a lattice co-culture of ``design``
    (default 4 h, 20 replicates). Every evaluation uses the same wells (same
    seeds: common random numbers), so mean lysis is a deterministic,
    increasing step function of the factor; Brent's method on ``log10(factor)``
    finds the crossing to ``tolerance`` in log10. The interval of the fitted
    rate comes from the standard error of the mean lysis at the fit, divided by
    the local slope of lysis against ``log10(factor)`` (delta method).

    Parameters
    ----------
    scenario : Scenario
        The tumour line and the effector rules; its CIK rates are the starting point.
    target_lysis : float
        Specific lysis to reach (default: 0.33, Kim 2007).
    et_ratio : float
        E:T ratio of the target point (default: 30).
    design : AssayDesign, optional
        The wells (default: 4 h, 20 replicates of 150 targets at 1 per 150 sites).
    log10_factor_range : tuple of float
        Bracket of ``log10(factor)``; a target outside what it gives raises ``ValueError``.
    tolerance : float
        Brent's tolerance in ``log10(factor)``.
    report : callable
        Receives one line per evaluation.

    Returns
    -------
    PotencyFit
        The fitted CD3+CD56+ rate with its interval, the factor, the lysis at the fit and the history.
    """
    from scipy.optimize import brentq

    design = design or AssayDesign(replicates=20)
    if not 0 < target_lysis < 1:
        raise ValueError(f"target lysis {target_lysis}: must be in (0, 1)")
    cond = AssayCondition()
    history: list[dict[str, float]] = []

    seen: dict[float, tuple[float, float]] = {}

    def lysis_at(log_factor: float) -> tuple[float, float]:
        if log_factor in seen:
            return seen[log_factor]
        res = run_assay(scale_cik_potency(scenario, 10**log_factor), conditions=[cond], et_ratios=[et_ratio],
                        design=design)
        mean, se = res.lysis(cond, et_ratio)
        rate = scenario.effectors.tnk.nkg2d_rate_per_hour * 10**log_factor
        history.append({"factor": 10**log_factor, "tnk_rate_per_hour": rate, "lysis": mean, "se": se})
        report(f"  CD3+CD56+ rate {rate:.4g}/h (x {10**log_factor:.4g}): lysis {100 * mean:.1f} % "
               f"(SE {100 * se:.1f})")
        seen[log_factor] = (mean, se)
        return mean, se

    lo, hi = log10_factor_range
    f_lo, f_hi = lysis_at(lo)[0] - target_lysis, lysis_at(hi)[0] - target_lysis
    if f_lo > 0 or f_hi < 0:
        raise ValueError(f"target lysis {target_lysis:g} is outside what factors 10^{lo:g}-10^{hi:g} give "
                         f"({f_lo + target_lysis:.3f}-{f_hi + target_lysis:.3f})")
    log_fit = brentq(lambda x: lysis_at(x)[0] - target_lysis, lo, hi, xtol=tolerance)
    mean, se = lysis_at(log_fit)
    step = 0.05
    slope = (lysis_at(log_fit + step)[0] - lysis_at(log_fit - step)[0]) / (2 * step)
    half = 1.96 * se / slope if slope > 0 else math.inf
    rate0 = scenario.effectors.tnk.nkg2d_rate_per_hour
    return PotencyFit(tnk_rate_per_hour=rate0 * 10**log_fit, factor=10**log_fit,
                      ci_low=rate0 * 10 ** (log_fit - half), ci_high=rate0 * 10 ** (log_fit + half),
                      lysis=mean, lysis_se=se,
                      target={"specific_lysis": target_lysis, "et_ratio": et_ratio, "hours": design.hours},
                      design=asdict(design), history=history)

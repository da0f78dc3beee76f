"""The output of ``cikabm bench``: terminal summary, markdown report and plots (see :mod:`cikabm.bench`)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cikabm.bench.config import (
    MESA_RATIO_TARGET,
    _shape_text,
)
from cikabm.io import save_png

# --------------------------------------------------------------------------- output

def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def _mesa_lines(report: dict[str, Any], *, markdown: bool) -> list[str]:
    """The Mesa reference against the kernel, one line per configuration (terminal or Markdown)."""
    mesa = report["mesa"]
    out = []
    for name in mesa.get("configurations", ()):
        if "mesa" in report["configurations"][name]:
            cmp_ = report["configurations"][name]["mesa"]
            if markdown:
                out.append(f"Mesa reference on {name}: {cmp_['mesa_agent_updates_per_s']:.3g} agent updates/s, "
                           f"kernel on 1 thread {cmp_['kernel_agent_updates_per_s']:.3g}: **mesa_ratio "
                           f"{cmp_['mesa_ratio']:.0f}x**{_ratio_min_text(cmp_)}")
            else:
                out.append(f"Mesa reference on {name}: {cmp_['mesa_agent_updates_per_s']:.3g} agent updates/s; "
                           f"kernel (1 thread) {cmp_['kernel_agent_updates_per_s']:.3g}: mesa_ratio "
                           f"{cmp_['mesa_ratio']:.0f}x{_ratio_min_text(cmp_)}")
    if "note" in mesa:
        out.append(f"Mesa: {mesa['note']}")
    return out


def _ratio_min_text(comparison: dict[str, Any]) -> str:
    """`` (fastest repeats: Nx)`` where the comparison has ``mesa_ratio_min`` (older reports may not)."""
    ratio = comparison.get("mesa_ratio_min")
    return f" (fastest repeats: {ratio:.0f}x)" if ratio is not None else ""


def _busy_lines(report: dict[str, Any]) -> list[str]:
    """The busy-machine case in one sentence (console and Markdown alike)."""
    busy = report.get("busy_machine")
    if not busy:
        return []
    if "skipped" in busy:
        return [f"busy machine: skipped ({busy['skipped']})"]
    med = busy["median_seconds"]
    n = busy["default_threads"]
    line = (f"busy machine ({busy['busy_process']}, {busy['configuration']}): {n} threads {med[str(n)]:.3f} s, "
            f"1 thread {med['1']:.3f} s, ratio {busy['ratio_default_over_one']:.2f} "
            f"({'within' if busy['within_limit'] else 'OVER'} the limit {busy['limit']:g}; "
            f"OMP_WAIT_POLICY {busy['wait_policy']})")
    if "active_wait_ratio_over_one" in busy:
        line += f"; with OMP_WAIT_POLICY=active, ratio {busy['active_wait_ratio_over_one']:.2f}"
    return [line]


def summary_text(report: dict[str, Any]) -> str:
    """The console summary of a report: one table row per configuration and thread count."""
    m = report["machine"]
    lines = [f"benchmark suite{' (quick)' if report['quick'] else ''} on {m['name']} ({m['cpu']}, {m['cores']} cores, "
             f"Numba {m['numba']}, {m.get('threading_layer', '?')} layer): {report['wall_seconds']:.0f} s"]
    header = (f"{'configuration':<14} {'threads':>7} {'median s':>9} {'site upd/s/thr':>15} "
              f"{'effector upd/s':>15} {'cell-h/s':>9} {'speed-up':>8} {'efficiency':>10}")
    lines.append(header)
    for name, e in report["configurations"].items():
        for r in e["runs"]:
            mark = "*" if r["oversubscribed"] else " "
            lines.append(f"{name:<14} {r['threads']:>6}{mark} {r['seconds']['median']:>9.3f} "
                         f"{r['site_updates_per_s_per_thread']:>15.3g} {r['effector_updates_per_s']:>15.3g} "
                         f"{r['cell_hours_per_s']:>9.3g} {r['speedup']:>8.2f} {r['efficiency']:>10.2f}")
    if any(r["oversubscribed"] for e in report["configurations"].values() for r in e["runs"]):
        lines.append("(* more threads than cores)")
    for name, e in report["configurations"].items():
        ident = e["identical_across_threads"]
        check = ("-" if ident is None else "yes" if ident else "NO")
        lines.append(f"{name}: {e['bytes_per_site']:.2f} bytes/site, {e['bytes_per_effector']} bytes/effector, "
                     f"set-up {e['setup_seconds']['median']:.2f} s, identical across threads "
                     f"{'/'.join(str(t) for t in e['threads'])}: {check}")
    c = report["compile"]
    cold = c.get("cold_compile_seconds")
    if "cache_load_seconds" in c:
        lines.append(f"kernels: loaded from cache in {c['cache_load_seconds']['median']:.2f} s"
                     + (f", cold compile {cold:.1f} s" if cold is not None else ""))
    lines.extend(_mesa_lines(report, markdown=False))
    lines.extend(_busy_lines(report))
    ok = report["checks"]["identical_across_threads"]
    if ok is False:
        bad = [n for n, v in report["checks"]["identical_by_configuration"].items() if not v]
        lines.append(f"CHECK FAILED: results differ across thread counts in {', '.join(bad)}")
    return "\n".join(lines) + "\n"


def markdown_report(report: dict[str, Any], *, image_dir: str | None = None) -> str:
    """Markdown tables of one report (what ``benchmarks/README.md`` shows per machine).

    Parameters
    ----------
    report : dict
        A ``bench.json`` report.
    image_dir : str, optional
        Relative path of the report's plots, to link them below the tables.
    """
    m = report["machine"]
    load = (report.get("load_average") or {}).get("start")
    out = [f"**{m['name']}**: {m['cpu']}, {m['cores']} cores, Python {m['python']}, Numba {m['numba']} "
           f"({m.get('threading_layer', '?')} layer), NumPy {m['numpy']}, Mesa {m.get('mesa') or 'not installed'}, "
           f"OMP_WAIT_POLICY {m.get('omp_wait_policy')}"
           + (f", load average {load[0]:.2f} at the start" if load else "")
           + f"; cikabm {report['cikabm_version']}, {report['created_utc']}, "
           f"`{report.get('command') or 'cikabm bench'}` ({report['wall_seconds']:.0f} s).", ""]
    out += ["| configuration | threads | median s (min-max) | site updates/s/thread | effector updates/s "
            "| cell-hours/s | speed-up | efficiency (from min) |", "|---|---|---|---|---|---|---|---|"]
    for name, e in report["configurations"].items():
        for r in e["runs"]:
            s = r["seconds"]
            shape = _shape_text(r["shape"])
            over = " (more than cores)" if r["oversubscribed"] else ""
            out.append(f"| {name} ({shape}) | {r['threads']}{over} | {s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f}) "
                       f"| {r['site_updates_per_s_per_thread']:.3g} | {r['effector_updates_per_s']:.3g} "
                       f"| {r['cell_hours_per_s']:.3g} | {r['speedup']:.2f} | {r['efficiency']:.2f} "
                       f"({_fmt(r.get('efficiency_min'), '.2f')}) |")
    out += ["", "| configuration | timed steps (after warm-up) | tumour cells | effectors | bytes/site "
            "| bytes/effector | set-up s | identical across threads |", "|---|---|---|---|---|---|---|---|"]
    for name, e in report["configurations"].items():
        r0 = e["runs"][0]
        ident = e["identical_across_threads"]
        check = ("n/a (sizes differ)" if ident is None else
                 ("yes, " if ident else "**NO**, ") + ", ".join(str(t) for t in e["threads"]))
        out.append(f"| {name} | {e['steps_timed']} ({e['warmup_steps']}) | {r0['tumour_cells_mean']:,.0f} "
                   f"| {r0['effectors_mean']:,.0f} | {e['bytes_per_site']:.2f} | {e['bytes_per_effector']} "
                   f"| {e['setup_seconds']['median']:.2f} | {check} |")
    out += _pass_tables(report)
    c = report["compile"]
    parts = []
    if "cache_load_seconds" in c:
        parts.append(f"kernels loaded from the cache in {c['cache_load_seconds']['median']:.2f} s "
                     f"(import {c['import_seconds']['median']:.2f} s)")
    if c.get("cold_compile_seconds") is not None:
        parts.append(f"cold compile {c['cold_compile_seconds']:.1f} s")
    parts.extend(_mesa_lines(report, markdown=True))
    parts.extend(_busy_lines(report))
    if parts:
        out += ["", "; ".join(parts) + "."]
    if image_dir is not None:
        out += [""] + [f"![{stem.replace('_', ' ')}]({image_dir}/{stem}.png)"
                       for stem in ("strong_scaling", "weak_scaling", "site_updates")
                       if f"{stem}.png" in report.get("files", [])]
    return "\n".join(out) + "\n"


_PASS_LABELS = {"supply": "supply", "tumour_propose": "tumour propose", "tumour_resolve": "tumour resolve",
                "effectors": "effectors", "ifn_field": "IFN-gamma field", "record": "record"}


def _pass_tables(report: dict[str, Any]) -> list[str]:
    """Markdown: the share of each pass of the step, and the Mesa comparison pass by pass."""
    rows = []
    for name, e in report["configurations"].items():
        for r in e["runs"]:
            by_pass = r.get("seconds_by_pass")
            if by_pass and (r is e["runs"][0] or r["threads"] == min(report["machine"]["cores"], e["threads"][-1])):
                total = sum(by_pass.values())
                cells = " | ".join(f"{100 * by_pass.get(p, 0.0) / total:.0f} %" for p in _PASS_LABELS)
                rows.append(f"| {name} | {r['threads']} | {1e6 * total / e['steps_timed']:,.0f} | {cells} |")
    if not rows:
        return []
    out = ["", "Where the time goes (share of the timed seconds by pass of the step; time-stamp counter):", "",
           "| configuration | threads | µs per step | " + " | ".join(_PASS_LABELS.values()) + " |",
           "|---|---|---|" + "---|" * len(_PASS_LABELS), *rows]
    for name in report["mesa"].get("configurations", ()):
        cmp_ = report["configurations"][name].get("mesa", {}).get("by_pass")
        if not cmp_:
            continue
        steps = report["configurations"][name]["mesa"]["steps_timed"]
        out += ["", f"Mesa reference vs kernel (1 thread) on {name}, pass by pass:", "",
                "| pass | Mesa ms per step | kernel µs per step | kernel share | ratio |", "|---|---|---|---|---|"]
        for p, v in cmp_.items():
            ratio = "-" if v["ratio"] is None else f"{v['ratio']:.0f}x"
            share = 100 * (v["kernel_share"] or 0.0)
            out.append(f"| {_PASS_LABELS.get(p, p)} | {1e3 * v['mesa_seconds'] / steps:.2f} "
                       f"| {1e6 * v['kernel_seconds'] / steps:.1f} | {share:.0f} % | {ratio} |")
        mesa_step = sum(v["mesa_seconds"] for v in cmp_.values()) / steps
        kernel_step = sum(v["kernel_seconds"] for v in cmp_.values()) / steps
        out += ["", f"A Mesa step takes {1e3 * mesa_step:.2f} ms and a kernel step {1e6 * kernel_step:.0f} µs "
                    f"({mesa_step / kernel_step:.0f}x, pass times summed); at {MESA_RATIO_TARGET}x a kernel step "
                    f"would take {1e6 * mesa_step / MESA_RATIO_TARGET:.0f} µs."]
    return out


def save_plots(report: dict[str, Any], directory: str | os.PathLike[str]) -> list[Path]:
    """Write the report's figures as PNG into ``directory``; return the files written.

    * ``strong_scaling.png``: speed-up and parallel efficiency vs threads, one
      line per strong-scaling configuration (hollow markers: more threads
      than cores);
    * ``weak_scaling.png``: parallel efficiency and seconds per step vs threads
      of the weak-scaling configurations (only if there are any);
    * ``site_updates.png``: site updates per second per thread by configuration
      and thread count, with min-max bars.
    """
    from matplotlib.figure import Figure

    directory = Path(directory)
    configs = report["configurations"]
    machine = report["machine"]
    title = f"{machine['name']} ({machine['cores']} cores)"
    written = []
    strong = {n: e for n, e in configs.items() if e["kind"] == "strong"}
    weak = {n: e for n, e in configs.items() if e["kind"] == "weak"}

    def scatter_line(ax: Any, e: dict[str, Any], values: Sequence[float], label: str) -> None:
        line, = ax.plot(e["threads"], values, "-", label=label)
        for t, v, over in zip(e["threads"], values, e["oversubscribed"], strict=True):
            ax.plot([t], [v], "o", color=line.get_color(), mfc="white" if over else line.get_color())

    if strong:
        fig = Figure(figsize=(10, 4), layout="constrained")
        ax1, ax2 = fig.subplots(1, 2)
        top = max(max(e["threads"]) for e in strong.values())
        ax1.plot([1, top], [1, top], ":", color="grey", label="ideal")
        ax2.axhline(1.0, ls=":", color="grey")
        for name, e in strong.items():
            scatter_line(ax1, e, e["speedup"], name)
            scatter_line(ax2, e, e["efficiency"], name)
        for ax in (ax1, ax2):
            if top > machine["cores"]:
                ax.axvspan(machine["cores"] + 0.5, top + 0.5, color="0.93", zorder=0)
            ax.set_xlabel("threads")
            ax.set_xticks(sorted({t for e in strong.values() for t in e["threads"]}))
        ax1.set_ylabel("speed-up")
        ax1.set_title("strong scaling: speed-up")
        ax2.set_ylabel("parallel efficiency")
        ax2.set_ylim(0, max(1.15, *(v + 0.05 for e in strong.values() for v in e["efficiency"])))
        ax2.set_title("strong scaling: efficiency")
        ax1.legend(fontsize=8)
        fig.suptitle(f"{title}; grey: more threads than cores")
        path = directory / "strong_scaling.png"
        save_png(fig, path, dpi=110)
        written.append(path)

    if weak:
        fig = Figure(figsize=(10, 4), layout="constrained")
        ax1, ax2 = fig.subplots(1, 2)
        ax1.axhline(1.0, ls=":", color="grey")
        for name, e in weak.items():
            ax1.plot(e["threads"], e["efficiency"], "o-", label=name)
            per_step = [r["seconds"]["median"] / e["steps_timed"] * 1e3 for r in e["runs"]]
            ax2.plot(e["threads"], per_step, "o-", label=name)
        for ax in (ax1, ax2):
            ax.set_xlabel("threads (lattice grows with them)")
            ax.set_xticks(sorted({t for e in weak.values() for t in e["threads"]}))
        ax1.set_ylabel("parallel efficiency t(1, N) / t(n, nN)")
        ax1.set_ylim(0, max(1.15, *(v + 0.05 for e in weak.values() for v in e["efficiency"])))
        ax1.set_title("weak scaling: efficiency")
        ax2.set_ylabel("ms per step")
        ax2.set_ylim(bottom=0)
        ax2.set_title("weak scaling: time per step")
        ax1.legend(fontsize=8)
        fig.suptitle(title)
        path = directory / "weak_scaling.png"
        save_png(fig, path, dpi=110)
        written.append(path)

    if configs:
        fig = Figure(figsize=(max(6.0, 1.6 * len(configs) + 2), 4), layout="constrained")
        ax = fig.add_subplot()
        counts = sorted({t for e in configs.values() for t in e["threads"]})
        width = 0.8 / len(counts)
        for j, t in enumerate(counts):
            xs, ys, lo, hi = [], [], [], []
            for i, e in enumerate(configs.values()):
                for r in e["runs"]:
                    if r["threads"] == t:
                        sites_steps = r["lattice_sites"] * e["steps_timed"] / t
                        v = r["site_updates_per_s_per_thread"]
                        xs.append(i + (j - (len(counts) - 1) / 2) * width)
                        ys.append(v)
                        lo.append(max(0.0, v - sites_steps / r["seconds"]["max"]))
                        hi.append(max(0.0, sites_steps / r["seconds"]["min"] - v))
            hatch = "//" if t > machine["cores"] else None
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, hatch=hatch, label=f"{t} thread{'s' * (t > 1)}")
        ax.set_xticks(range(len(configs)), list(configs), fontsize=8)
        ax.set_ylabel("site updates / s / thread")
        ax.set_title(f"{title}: median, min-max bars; hatched: more threads than cores")
        ax.legend(fontsize=8)
        path = directory / "site_updates.png"
        save_png(fig, path, dpi=110)
        written.append(path)
    return written


def write_report(report: dict[str, Any], directory: str | os.PathLike[str]) -> list[Path]:
    """Write ``bench.json`` and the plots into an existing ``directory``; return the files."""
    from cikabm.io import atomic_write_json

    directory = Path(directory)
    plots = save_plots(report, directory)
    report["files"] = ["bench.json", *(p.name for p in plots)]
    return [atomic_write_json(directory / "bench.json", report), *plots]


def load_reports(root: str | os.PathLike[str]) -> list[tuple[Path, dict[str, Any]]]:
    """Every ``<machine>/bench.json`` under ``root``, by machine directory name."""
    found = []
    for path in sorted(Path(root).glob("*/bench.json")):
        found.append((path, json.loads(path.read_text())))
    return found

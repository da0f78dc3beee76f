"""Support of ``tests/test_fuzz_scenarios.py``: a TOML writer and a worker process.

* :func:`toml_text` renders a nested dict as TOML (``tomli_w`` is not installed).
* :class:`FuzzWorker` runs loader, CLI, kernel and trial in a long-lived ``spawn`` child, one request at
  a time under a deadline: a Numba loop ignores signals, so a hang is ended by killing the child.
"""

from __future__ import annotations

import contextlib
import io
import math
import multiprocessing
import os
import re
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------- TOML

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE.match(k) else _string(k)


def _string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        text = repr(v)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_scalar(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} as TOML")


def _is_table_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def toml_text(data: dict[str, Any]) -> str:
    """``data`` (nested dicts, lists of dicts as arrays of tables) as TOML text."""
    lines: list[str] = []

    def emit(table: dict[str, Any], path: list[str], header: str | None) -> None:
        if header is not None:
            lines.append(header)
        for k, v in table.items():
            if not isinstance(v, dict) and not _is_table_list(v):
                lines.append(f"{_key(k)} = {_scalar(v)}")
        for k, v in table.items():
            sub = [*path, _key(k)]
            if isinstance(v, dict):
                emit(v, sub, f"[{'.'.join(sub)}]")
            elif _is_table_list(v):
                for item in v:
                    emit(item, sub, f"[[{'.'.join(sub)}]]")

    emit(data, [], None)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the worker process


def _dispatchers() -> list[Any]:
    from numba.core.registry import CPUDispatcher

    from cikabm.kernels import compartment, core, geometry

    return [obj for mod in (core, compartment, geometry) for obj in vars(mod).values()
            if isinstance(obj, CPUDispatcher)]


def compiled_signatures() -> int:
    """How many compiled specialisations the cikabm kernels hold in this process."""
    return sum(len(d.signatures) for d in _dispatchers())


def signature_list() -> list[str]:
    """Every compiled specialisation, as ``kernel(argument types)``."""
    return sorted(f"{d.py_func.__module__}.{d.__name__}{tuple(str(t) for t in sig)}" for d in _dispatchers()
                  for sig in d.signatures)


def _cli_validate(path: str) -> dict[str, Any]:
    from cikabm.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["validate", path])
    except BaseException:  # SystemExit included: main must return, never raise
        return {"rc": None, "stdout": out.getvalue(), "stderr": err.getvalue(), "traceback": traceback.format_exc()}
    return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue(), "traceback": None}


def _non_finite_params(sc: Any) -> list[str]:
    """Names of kernel parameters (``convert.kernel_parameters``) that are NaN or infinite."""
    import numpy as np

    from cikabm.convert import kernel_parameters

    d = kernel_parameters(sc)
    bad = []
    for name in d.params._fields:
        value = np.asarray(getattr(d.params, name))
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            bad.append(f"params.{name}")
    if not np.isfinite(d.mean_cik_arrivals).all():
        bad.append("mean_cik_arrivals")
    if not math.isfinite(d.mean_ctl_arrivals):
        bad.append("mean_ctl_arrivals")
    return bad


def _handle(request: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """Answer one request; ``new_signatures`` lists the kernel specialisations it compiled."""
    if request["op"] == "sleep":  # stands in for a hang (tests the deadline)
        time.sleep(request["seconds"])
        return {"status": "slept", "signatures": compiled_signatures()}
    path = request["path"]
    before = signature_list()
    result: dict[str, Any] = _handle_file(request, path, scratch)
    after = signature_list()
    result["signatures"] = len(after)
    result["new_signatures"] = sorted(set(after) - set(before))
    return result


def _handle_file(request: dict[str, Any], path: str, scratch: Path) -> dict[str, Any]:
    from cikabm.params import Scenario as Region
    from cikabm.scenario import ScenarioError, load_scenario
    from cikabm.trial_params import TrialScenario as Trial

    result: dict[str, Any] = {"cli": _cli_validate(path) if request.get("cli", True) else None}
    start = time.perf_counter()
    try:
        sc = load_scenario(path)
    except ScenarioError as err:
        result.update(status="scenario_error", message=str(err), problems=list(err.problems))
        return result
    except BaseException:
        result.update(status="traceback", traceback=traceback.format_exc())
        return result
    result["load_s"] = time.perf_counter() - start
    is_trial = isinstance(sc, Trial)
    default = (Trial() if is_trial else Region()).model_dump(mode="json")
    result.update(status="accepted", trial=is_trial, dims=sc.dims, dump=sc.model_dump(mode="json"), default=default)
    try:
        if request["op"] in ("region", "params") and not is_trial:
            result["non_finite_params"] = _non_finite_params(sc)
        if request["op"] == "run1" and not is_trial:  # one run, one thread: its time
            from cikabm.simulation import Simulation

            t0 = time.perf_counter()
            Simulation(sc, threads=1).run(progress=False, n_snapshots=0)
            result["run_s_1"] = time.perf_counter() - t0
        if request["op"] == "region" and not is_trial:
            from cikabm.convert import kernel_parameters
            from cikabm.kernels.geometry import n_sites

            d = kernel_parameters(sc)
            from cikabm.kernels.core import EFFECTOR_MIN_DIVISOR
            from cikabm.simulation import PARALLEL_MIN_SITES

            result.update(n_sites=int(n_sites(d.geometry)), n_steps=d.n_steps, n_infusions=len(d.infusion_days),
                          capacity=sc.effectors.capacity,
                          # effectors from which the effector pass runs in strips with 2 threads (run_steps)
                          parallel_effectors=(PARALLEL_MIN_SITES // EFFECTOR_MIN_DIVISOR) * 2
                          * (27 if sc.dims == 3 else 9))
            frames = {}
            for threads in (1, 2):
                from cikabm.simulation import Simulation

                t0 = time.perf_counter()
                frames[threads] = Simulation(sc, threads=threads).run(progress=False, n_snapshots=0).to_frame()
                result[f"run_s_{threads}"] = time.perf_counter() - t0
            result["frames"] = frames
        elif request["op"] == "trial" and is_trial:
            from cikabm.trial import run_trial

            out = scratch / f"trial_{os.getpid()}_{time.monotonic_ns()}"
            t0 = time.perf_counter()
            run = run_trial(sc, out, workers=1, progress=False)
            result["run_s"] = time.perf_counter() - t0
            result["patients"] = run.patients
            result["summary_keys"] = sorted(run.summary)
            result["files"] = sorted(p.name for p in out.iterdir())
            import shutil

            shutil.rmtree(out, ignore_errors=True)
    except ScenarioError as err:  # a named error, but for a scenario the loader (and validate) accepted
        result.update(status="run_refused", message=str(err))
    except BaseException:
        result.update(status="run_traceback", traceback=traceback.format_exc())
    return result


def _warm_up(scratch: Path) -> dict[str, Any]:
    """Load (or compile) every kernel the requests use: a 2D and a 3D region, a trial of each setting."""
    start = time.perf_counter()
    region = {"lattice": {"shape": [10, 10]}, "time": {"duration_days": 0.2, "record_every_hours": 1.0},
              "tumour": {"initial_cells": 20}, "effectors": {"capacity": 200},
              "dosing": {"schedule": "lee2015"}, "homing": {"cik_per_site_per_day": 1e-9}}
    trial = {"trial": {"patients": 1, "follow_up_months": 0.5}, "lattice": {"shape": [20, 20]},
             "arms": [{"name": "control"}, {"name": "cik", "schedule": "lee2015"}],
             "adjuvant": {"lattice_max_days": 1.0}, "advanced": {"sample_days": 1.0}}
    requests = [("region", region), ("region", {**region, "lattice": {"shape": [6, 6, 6]},
                                                "tumour": {"initial_cells": 20, "initial_pattern": "scattered"}}),
                ("trial", trial), ("trial", {**trial, "trial": {**trial["trial"], "setting": "advanced"},
                                             "tumour": {"initial_cells": 30}})]
    for i, (op, data) in enumerate(requests):
        path = scratch / f"warm_up_{i}.toml"
        path.write_text(toml_text(data), encoding="utf-8")
        res = _handle({"op": op, "path": str(path), "cli": False}, scratch)
        if res["status"] != "accepted":
            raise RuntimeError(f"warm-up {op} failed: {res.get('message') or res.get('traceback')}")
    return {"warm_up_s": time.perf_counter() - start, "signatures": compiled_signatures(), "pid": os.getpid()}


def worker_main(conn: Any) -> None:
    """The child: warm up, then answer requests until told to stop (or killed)."""
    import warnings

    warnings.simplefilter("ignore")  # e.g. lifelines' convergence warnings on 2-patient trials
    with tempfile.TemporaryDirectory(prefix="cikabm_fuzz_") as tmp:
        scratch = Path(tmp)
        try:
            conn.send({"ready": _warm_up(scratch)})
        except BaseException:
            conn.send({"ready": None, "traceback": traceback.format_exc()})
            return
        while True:
            try:
                request = conn.recv()
            except EOFError:
                return
            if request is None:
                return
            try:
                conn.send(_handle(request, scratch))
            except BaseException:  # a result that cannot be sent back
                conn.send({"status": "worker_error", "traceback": traceback.format_exc()})


class FuzzTimeout(Exception):
    """A request ran past its deadline; the worker was killed and restarted."""


class FuzzWorker:
    """A long-lived ``spawn`` child that answers one request at a time under a deadline."""

    def __init__(self, warm_up_timeout_s: float):
        self.warm_up_timeout_s = warm_up_timeout_s
        self.starts: list[dict[str, Any]] = []
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_main, args=(child,), daemon=True, name="cikabm-fuzz-worker")
        self.proc.start()
        child.close()
        if not self.conn.poll(self.warm_up_timeout_s):
            self._kill()
            raise RuntimeError(f"the fuzz worker did not warm up within {self.warm_up_timeout_s:g} s")
        try:
            hello = self.conn.recv()
        except EOFError:
            self._kill()
            raise RuntimeError(f"the fuzz worker exited during warm-up (exit code {self.proc.exitcode})") from None
        if hello.get("ready") is None:
            self._kill()
            raise RuntimeError("the fuzz worker failed to warm up:\n" + hello.get("traceback", ""))
        self.starts.append(hello["ready"])

    @property
    def baseline_signatures(self) -> int:
        return self.starts[-1]["signatures"]

    def _kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(10)
        self.conn.close()

    def call(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """The worker's answer to ``request``; FuzzTimeout (worker restarted) past ``timeout_s``."""
        start = time.perf_counter()
        self.conn.send(request)
        if not self.conn.poll(timeout_s):
            self._kill()
            self.restarts += 1
            self._start()
            raise FuzzTimeout(f"no answer within {timeout_s:g} s")
        try:
            answer = self.conn.recv()
        except EOFError:
            code = self.proc.exitcode
            self._kill()
            self.restarts += 1
            self._start()
            return {"status": "worker_died", "exitcode": code}
        answer["wall_s"] = time.perf_counter() - start
        return answer

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(None)
        self.proc.join(10)
        self._kill()

"""The ``cikabm teach`` command: serve the teaching app (:mod:`cikabm.mesa.app`) to a classroom.

::

    cikabm teach [--host 127.0.0.1] [--port 8765] [--open]

The app runs in a child process, ``python -m solara run cikabm.mesa.app``,
with Solara's usage telemetry and version check off. Before starting it the
command checks that the port can be bound (exit status 2 if not) and warns when
``--host`` is not a loopback address; it prints the address only once the
server answers. Ctrl+C, SIGTERM and SIGHUP stop the child with it (a signal
ignored at start, as under ``nohup``, stays ignored), and on Linux the child
also gets SIGTERM if this process dies unannounced.

Exit status: 0 when stopped by Ctrl+C, SIGTERM or SIGHUP; 1 when the server
fails to start or stops by itself; 2 for anything the user can fix (a bad
option, the port in use or not bindable on that host, the teaching extra not
installed), with a message on stderr.
"""

from __future__ import annotations

import argparse
import errno
import http.client
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from types import FrameType
from typing import Any

#: The module ``solara run`` serves.
APP_MODULE = "cikabm.mesa.app"
#: Seconds the server may take to answer (the first start compiles the Numba kernels).
START_TIMEOUT_S = 300.0
#: Seconds the server gets to stop after SIGTERM before it is killed.
STOP_TIMEOUT_S = 5.0

#: Environment of the Solara child: telemetry and every other call home off.
SOLARA_ENVIRONMENT: dict[str, str] = {
    # Solara's only telemetry setting (solara.server.settings.Telemetry): when on,
    # the server posts usage events to api.mixpanel.com and looks up its public
    # IP at api.ipify.org at start-up and daily.
    "SOLARA_TELEMETRY_MIXPANEL_ENABLE": "False",
    # The page's <title> before the app sets it (Solara's default: "Solara ☀️").
    "SOLARA_THEME_TITLE": "cikabm: MHC-independent killing by CIK cells",
}

# Solara warns, 12 lines on every page load, that the session cookie falls back
# to SameSite=Lax on plain http to an address other than "localhost". Lax is
# right for this app (it is never embedded in another site's iframe), so the
# warning says nothing a teacher can act on.
COOKIE_WARNING_FILTER = "ignore:Cookies with samesite=none require https:UserWarning"

EXIT_STATUS_TEXT = """exit status:
  0  stopped by Ctrl+C, SIGTERM or SIGHUP (the server stops with it)
  1  the server failed to start, or stopped by itself
  2  a usage problem: a bad option, the teaching extra not installed, or the
     port in use or not bindable on that host ("port 8765 on 127.0.0.1 is in
     use; choose another with --port"); nothing is started"""


def add_command(sub: Any, formatter: type, wrap: Any, int_in: Any) -> None:
    """Add ``teach`` to the ``cikabm`` sub-parsers."""
    tea = sub.add_parser(
        "teach", help="serve the teaching app in the browser (needs cikabm[teach])",
        description=wrap(
            "Start the teaching app: a Mesa/Solara page where a tumour escapes CTLs by losing MHC "
            "class I and CIK cells still kill it. It shows the lattice, the tumour by MHC state and the "
            "kills by mechanism and kind, with controls for the MHC-loss rate, the CIK subset mix, the "
            "dose and the schedule, a switch for CTLs only vs CTLs + CIK and one that blocks NKG2D. "
            "Every browser tab gets its own model; reloading the page starts afresh.",
            "Prints the address once the server answers, and serves until Ctrl+C (or SIGTERM, SIGHUP), "
            "which stops the server too. Solara's usage telemetry and version check are off. With a "
            "--host other than a loopback address anyone on the network can open the app: a warning "
            "says so. Needs the teaching extra: pip install 'cikabm[teach]'."),
        epilog=wrap("examples:\n  cikabm teach --port 8765\n  cikabm teach --host 0.0.0.0 --open", EXIT_STATUS_TEXT),
        formatter_class=formatter)
    tea.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: every "
                          "network interface, for students' own machines)")
    tea.add_argument("--port", type=int_in("--port", 1, 65535), default=8765,
                     help="port to listen on (default: 8765)")
    tea.add_argument("--open", action="store_true", help="also open the page in the default browser")
    tea.set_defaults(func=cmd_teach)


# --------------------------------------------------------------------------- pieces (tested one by one)

def solara_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the Solara child: ``base`` (default: ours) with :data:`SOLARA_ENVIRONMENT` over it.

    The settings are forced, not defaults: a ``SOLARA_TELEMETRY_MIXPANEL_ENABLE=True``
    in the caller's environment does not turn telemetry back on.
    """
    env = dict(os.environ if base is None else base)
    env.update(SOLARA_ENVIRONMENT)
    return env


def solara_command(host: str, port: int) -> list[str]:
    """The command line of the Solara child (the browser is opened by ``cikabm teach``, once it answers)."""
    return [sys.executable, "-W", COOKIE_WARNING_FILTER, "-m", "solara", "run", APP_MODULE,
            "--host", host, "--port", str(port), "--production", "--no-open", "--no-check-version",
            "--log-level", "warning"]


def is_loopback(host: str) -> bool:
    """True when every address ``host`` stands for is a loopback address (127.0.0.0/8, ::1).

    Names are resolved (``localhost`` from the hosts file); a name that does not
    resolve counts as not loopback (the port check then reports it).
    """
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(bare, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def exposure_warning(host: str, port: int) -> str | None:
    """The warning for a ``--host`` that other machines can reach, or None for a loopback one."""
    if is_loopback(host):
        return None
    return (f"cikabm teach: warning: --host {host} is not a loopback address: anyone who can reach this "
            f"machine on port {port} can open the app and run models on it (there is no login). "
            "Leave out --host (127.0.0.1) to keep it to this machine.")


def port_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on ``host:port``, or None when it can.

    Binds the way the server (uvicorn) does: IPv6 when the host has a colon, and
    ``SO_REUSEADDR``, so a port left in TIME_WAIT by an earlier run counts as free.
    """
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        if os.name != "nt":  # on Windows SO_REUSEADDR would let the bind steal a port in use
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bare, port))
        except socket.gaierror:
            return f"--host {host}: no such host name; use an address of this machine, e.g. 127.0.0.1"
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is in use; choose another with --port"
            if err.errno == errno.EACCES:
                return f"port {port} on {host} needs administrator rights; choose one above 1023 with --port"
            if err.errno == errno.EADDRNOTAVAIL:
                return f"--host {host} is not an address of this machine; use 127.0.0.1 or 0.0.0.0"
            return f"cannot listen on port {port} on {host}: {err.strerror or err}"
    return None


def connect_host(host: str) -> str:
    """Where to reach a server listening on ``host`` from this machine (a wildcard host: loopback)."""
    bare = host.strip("[]")
    if bare in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bare == "::":
        return "::1"
    return bare


def page_address(host: str, port: int) -> str:
    """The page's address from this machine, e.g. ``http://127.0.0.1:8765/``."""
    where = connect_host(host)
    return f"http://[{where}]:{port}/" if ":" in where else f"http://{where}:{port}/"


def server_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when Solara's ``/readyz`` answers 200 (straight to the server: no proxy from the environment)."""
    conn = http.client.HTTPConnection(connect_host(host), port, timeout=timeout)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def die_with_parent() -> Any:
    """Linux: a ``preexec_fn`` that has the kernel send SIGTERM to the child when this process dies.

    That covers a ``cikabm teach`` killed by SIGKILL, where no handler runs. The
    C library is loaded here, before the fork, so the child only makes the call.
    Elsewhere: None (no such call; the signal handlers still stop the child).
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1
    parent = os.getpid()

    def set_death_signal() -> None:  # pragma: no cover - runs in the child, between fork and exec
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call: nobody would send the signal
            os.kill(os.getpid(), signal.SIGTERM)

    return set_death_signal


class _Stop(Exception):
    """SIGTERM or SIGHUP arrived: stop the server and exit."""


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM to the child's process group, then SIGKILL if it is still there after :data:`STOP_TIMEOUT_S`."""
    # A second Ctrl+C or SIGTERM must not cut the clean-up short and leave the server behind.
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    if proc.poll() is not None:
        return
    group = hasattr(os, "killpg")
    try:
        os.killpg(proc.pid, signal.SIGTERM) if group else proc.terminate()
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with_kill = getattr(signal, "SIGKILL", signal.SIGTERM)
        try:
            os.killpg(proc.pid, with_kill) if group else proc.kill()
        except ProcessLookupError:
            pass
        proc.wait()


# --------------------------------------------------------------------------- the command

def cmd_teach(args: argparse.Namespace) -> int:
    """``cikabm teach``: serve :mod:`cikabm.mesa.app` with Solara until stopped (see the module docstring)."""
    import importlib.util

    from cikabm.cli import EXIT_FAILED, EXIT_OK, UserError, _error

    missing = [m for m in ("mesa", "solara") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"cikabm teach needs {' and '.join(missing)}: pip install 'cikabm[teach]'")
    warning = exposure_warning(args.host, args.port)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    problem = port_problem(args.host, args.port)
    if problem:
        raise UserError(problem)

    handled = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)]
    previous = {sig: signal.getsignal(sig) for sig in handled}
    for sig in handled:
        # SIGINT raises KeyboardInterrupt already; an ignored signal stays ignored (nohup cikabm teach).
        if sig != signal.SIGINT and previous[sig] is not signal.SIG_IGN:
            signal.signal(sig, _raise_stop)
    proc: subprocess.Popen[Any] | None = None
    try:
        proc = subprocess.Popen(
            solara_command(args.host, args.port), env=solara_environment(), stdin=subprocess.DEVNULL,
            # Solara's stdout says only "Solara server is starting at ...", before it answers: the
            # address is announced below instead, once it does.
            stdout=subprocess.DEVNULL,
            # Its own process group: a stop reaches the server and anything it started, and a
            # Ctrl+C in the terminal reaches only this process, which stops the server in order.
            start_new_session=True,
            preexec_fn=die_with_parent())
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server_answers(args.host, args.port):
            if proc.poll() is not None:
                _error(f"the Solara server stopped before it answered (status {proc.returncode}); "
                       "its messages are above")
                return EXIT_FAILED
            if time.monotonic() > deadline:
                _error(f"the Solara server did not answer within {START_TIMEOUT_S:.0f} s")
                return EXIT_FAILED
            time.sleep(0.2)
        url = page_address(args.host, args.port)
        wildcard = connect_host(args.host) != args.host.strip("[]")
        where = " (and at this machine's network addresses)" if wildcard else ""
        print(f"cikabm teach: the teaching app is at {url}{where} (Ctrl+C to stop)", flush=True)
        if args.open:
            import webbrowser

            webbrowser.open(url)
        status = proc.wait()
        _error(f"the Solara server stopped by itself (status {status}); its messages are above")
        return EXIT_FAILED
    except (KeyboardInterrupt, _Stop):
        return EXIT_OK
    finally:
        if proc is not None:
            _stop(proc)
        for sig, handler in previous.items():
            if handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(sig, handler)

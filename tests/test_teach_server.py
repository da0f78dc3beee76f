"""``cikabm teach`` as a server, without a browser: telemetry, host warning, port check, signals.

The signal tests start three real servers at once (one each for SIGTERM,
SIGHUP and Ctrl+C) and check that the signal ends ``cikabm teach`` with
status 0, takes its Solara child with it and frees the port. Nothing here
sends traffic to a non-loopback address: the non-loopback hosts are only
classified, or bound (which fails locally, sending nothing).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cikabm.cli import main
from cikabm.cli_teach import (
    COOKIE_WARNING_FILTER,
    SOLARA_ENVIRONMENT,
    exposure_warning,
    page_address,
    port_problem,
    server_answers,
    solara_command,
    solara_environment,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and sends POSIX signals")

HAS_EXTRA = all(importlib.util.find_spec(m) is not None for m in ("mesa", "solara"))
needs_extra = pytest.mark.skipif(not HAS_EXTRA, reason="needs the teaching extra (Mesa, Solara)")
STOPS = {"SIGTERM": signal.SIGTERM, "SIGHUP": signal.SIGHUP, "Ctrl+C": signal.SIGINT}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc/*/stat)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _gone(pid: int, within: float = 15.0) -> bool:
    """True once ``pid`` has exited (absent, or a zombie nobody has reaped yet)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


# --------------------------------------------------------------------------- telemetry and the child's command

def test_child_environment_forces_telemetry_off():
    env = solara_environment({"PATH": "/usr/bin", "SOLARA_TELEMETRY_MIXPANEL_ENABLE": "True"})
    assert env["SOLARA_TELEMETRY_MIXPANEL_ENABLE"] == "False"
    assert env["PATH"] == "/usr/bin"


@needs_extra
def test_solara_sees_every_telemetry_switch_off_and_the_app_title():
    """Solara's own settings, read with the child's environment: every boolean of its Telemetry is False."""
    from cikabm.mesa.app import APP_TITLE

    code = ("import solara.server.settings as s\n"
            "fields = {k: getattr(s.telemetry, k) for k in type(s.telemetry).__annotations__}\n"
            "switches = {k: v for k, v in fields.items() if isinstance(v, bool)}\n"
            "print(sorted(switches.items()))\nprint(s.theme.title)\n")
    out = subprocess.run([sys.executable, "-c", code], env=solara_environment(), capture_output=True, text=True,
                         timeout=120, check=True).stdout.splitlines()
    assert out[0] == "[('mixpanel_enable', False)]"
    assert out[1] == APP_TITLE == SOLARA_ENVIRONMENT["SOLARA_THEME_TITLE"]


@needs_extra
def test_command_checks_no_version_and_silences_only_the_cookie_warning():
    command = solara_command("127.0.0.1", 8765)
    assert {"--no-check-version", "--no-open", "--production"} <= set(command)
    assert command[command.index("-W") + 1] == COOKIE_WARNING_FILTER
    action, message, category = COOKIE_WARNING_FILTER.split(":")
    assert (action, category) == ("ignore", "UserWarning")
    # The filter matches the start of Solara's message: it must still be Solara's wording.
    starlette = Path(importlib.util.find_spec("solara").origin).parent / "server" / "starlette.py"
    assert f'warnings.warn(f"""{message}' in starlette.read_text()


# --------------------------------------------------------------------------- host and port

@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost"])
def test_loopback_host_gives_no_warning(host):
    assert exposure_warning(host, 8765) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "10.1.2.3"])
def test_network_host_gives_a_warning(host):
    text = exposure_warning(host, 8765)
    assert text is not None and f"--host {host} is not a loopback address" in text
    assert "port 8765" in text and "there is no login" in text


def test_foreign_address_warns_then_exits_2(capsys):
    """192.0.2.10 (TEST-NET) is no address of this machine: the bind fails locally, nothing is sent."""
    if not HAS_EXTRA:
        pytest.skip("needs the teaching extra (Mesa, Solara)")
    assert main(["teach", "--host", "192.0.2.10", "--port", str(_free_port())]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith("cikabm teach: warning: --host 192.0.2.10 is not a loopback address")
    assert lines[1] == "cikabm: error: --host 192.0.2.10 is not an address of this machine; use 127.0.0.1 or 0.0.0.0"


@needs_extra
def test_port_in_use_exits_2_with_host_and_port(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["teach", "--port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # no address announced
    assert err == f"cikabm: error: port {port} on 127.0.0.1 is in use; choose another with --port\n"
    assert port_problem("127.0.0.1", port) is None  # free again once closed


def test_page_address_of_wildcard_hosts_is_local():
    assert page_address("0.0.0.0", 8765) == "http://127.0.0.1:8765/"
    assert page_address("::", 8765) == "http://[::1]:8765/"
    assert page_address("127.0.0.1", 80) == "http://127.0.0.1:80/"


def test_child_gets_sigterm_when_the_parent_is_killed():
    """PR_SET_PDEATHSIG: even a SIGKILLed ``cikabm teach`` (no handler runs) takes its child along."""
    code = ("import subprocess, sys, time\n"
            "from cikabm.cli_teach import die_with_parent\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
            "preexec_fn=die_with_parent())\n"
            "print(p.pid, flush=True)\ntime.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert not _gone(child, within=0.2)
        parent.kill()
        parent.wait(timeout=10)
        assert _gone(child), "the child outlived its SIGKILLed parent"
    finally:
        parent.kill()
        parent.wait()


# --------------------------------------------------------------------------- real servers, stopped by signals

@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Three ``cikabm teach`` servers started together; for each stop signal: (process, port, child pid, log)."""
    if not HAS_EXTRA:
        pytest.skip("needs the teaching extra (Mesa, Solara)")
    logs = tmp_path_factory.mktemp("teach")
    started = {}
    for name in STOPS:
        port = _free_port()
        log = logs / f"{name.replace('+', '')}.log"
        with log.open("w") as err:
            proc = subprocess.Popen([sys.executable, "-m", "cikabm.cli", "teach", "--port", str(port)],
                                    stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        started[name] = (proc, port, log)
    try:
        ready = {}
        deadline = time.monotonic() + 240
        for name, (proc, port, log) in started.items():
            readable, _, _ = select.select([proc.stdout], [], [], max(1.0, deadline - time.monotonic()))
            line = proc.stdout.readline() if readable else ""
            assert f"http://127.0.0.1:{port}/" in line, f"no address from {name}: {line!r}\n{log.read_text()[-2000:]}"
            children = _children(proc.pid)
            assert len(children) == 1, f"expected one Solara child, found {children}"
            ready[name] = (proc, port, children[0], log)
        yield ready
    finally:
        for proc, _port, _log in started.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("stop", list(STOPS))
def test_signal_stops_the_server_and_its_child(servers, stop):
    proc, port, child, log = servers[stop]
    assert server_answers("127.0.0.1", port), "the address was announced before the server answered"
    env = _environ(child)
    assert env["SOLARA_TELEMETRY_MIXPANEL_ENABLE"] == "False"
    proc.send_signal(STOPS[stop])  # to cikabm teach alone, not its process group
    assert proc.wait(timeout=30) == 0
    assert _gone(child), f"the Solara child outlived cikabm teach stopped by {stop}"
    assert port_problem("127.0.0.1", port) is None, f"port {port} still in use after {stop}"
    assert "Traceback" not in log.read_text()

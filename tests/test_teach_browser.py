"""The teaching app in a real browser: ``cikabm teach`` served, headless Chromium drives it.

Two browsers (two students) open the page at once: each has its own model.
Every control shows its value and unit without being touched, every slider
has a track, the page title names the app, and Reset goes back to day 0.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them)
and the teaching extra (Mesa, Solara, Selenium). Skipped, with the reason, when
any of them is missing. The screenshot of the stepped app is written to
``test-artifacts/teach_app.png`` (or ``$CIKABM_ARTIFACTS``); it is the
README's ``docs/images/teach_app.png``.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("mesa")
pytest.importorskip("solara")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from cikabm.mesa.app import APP_TITLE, MODEL_PARAMS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless Chromium is not installed (Debian packages chromium and chromium-driver; "
           ".ci/run installs them)")

POPULATIONS = re.compile(r"Day (?P<day>[\d.]+): tumour cells (?P<tumour>\d+) "
                         r"\(MHC-I present (?P<present>\d+), MHC-I lost (?P<lost>\d+)\)")
#: Mesa's generic controls, which the lesson's page must not show.
MESA_CONTROLS = ("Play Interval", "Render Interval", "Use Threads", "PAGE 0")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _artifacts() -> Path:
    path = Path(os.environ.get("CIKABM_ARTIFACTS", ROOT / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _log_path() -> Path:
    return _artifacts() / "teach_server.log"


@pytest.fixture(scope="module")
def app_url():
    """``cikabm teach`` on a free port, as a teacher starts it; yields its printed address, then SIGTERMs it."""
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = _log_path().open("w")
    proc = subprocess.Popen([sys.executable, "-m", "cikabm.cli", "teach", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=log, text=True, env=env, start_new_session=True)
    try:
        # The address comes only once the server answers (the first start compiles the kernels).
        ready, _, _ = select.select([proc.stdout], [], [], 240)
        if not ready:
            pytest.fail("cikabm teach printed no address within 240 s")
        first = proc.stdout.readline()
        match = re.search(r"http://\S+", first)
        if not match:
            log.flush()
            pytest.fail(f"cikabm teach printed no address: {first!r}; its log ends:\n"
                        f"{_log_path().read_text()[-2000:]}")
        yield match.group(0)
    finally:
        # SIGTERM to cikabm teach alone: it must stop its Solara child itself.
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with contextlib.suppress(ProcessLookupError):  # anything left of the group
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _chrome():
    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1500,1300"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(120)
    return driver


@pytest.fixture(scope="module")
def browsers():
    """Two separate headless browsers: two students, each with their own cookies."""
    drivers = [_chrome(), _chrome()]
    yield drivers
    for driver in drivers:
        driver.quit()


def _wait(driver, seconds: float = 120):
    return WebDriverWait(driver, seconds, poll_frequency=0.3)


def _open(driver, url: str) -> dict[str, float]:
    driver.get(url)
    _wait(driver, 180).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".cikabm-populations"))
    return _populations(driver)


def _populations(driver) -> dict[str, float]:
    text = driver.find_element(By.CSS_SELECTOR, ".cikabm-populations").text
    match = POPULATIONS.search(text)
    assert match, f"no population line in {text!r}"
    return {k: float(v) for k, v in match.groupdict().items()}


def _click(driver, label: str) -> None:
    buttons = [b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip().lower() == label.lower()]
    assert buttons, f"no {label!r} button; buttons: {[b.text for b in driver.find_elements(By.TAG_NAME, 'button')]}"
    buttons[0].click()


def _step(driver, times: int = 1) -> dict[str, float]:
    day = _populations(driver)["day"]
    for k in range(1, times + 1):
        _click(driver, "Step")
        _wait(driver).until(lambda d, k=k: _populations(d)["day"] >= day + 0.5 * k)
    return _populations(driver)


def _settled_day(driver, quiet: float = 1.5, within: float = 30.0) -> float:
    """The day shown once it has not changed for ``quiet`` seconds."""
    deadline = time.monotonic() + within
    day = _populations(driver)["day"]
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = _populations(driver)["day"]
        if now == day:
            return day
        day = now
    raise AssertionError(f"the day kept changing for {within:g} s (last {day})")


def _figures(driver) -> list[str]:
    """The ``src`` of every figure (PNG data URLs: equal sources, equal pictures)."""
    return [img.get_attribute("src") for img in driver.find_elements(By.CSS_SELECTOR, "img.cikabm-figure")]


def test_page_names_the_app_and_every_control_shows_its_value(app_url, browsers):
    """Title, each control's value and unit without any interaction, a track per slider, no Mesa controls."""
    driver = browsers[0]
    start = _open(driver, app_url)
    assert start["day"] == 0.0 and start["tumour"] == 200  # the teaching scenario's initial ball
    _wait(driver, 10).until(lambda d: d.title == APP_TITLE)
    body = driver.find_element(By.TAG_NAME, "body").text
    for name, control in MODEL_PARAMS.items():
        shown = control.text(control.value)
        assert shown in body, f"control {name!r} does not show its value: {shown!r} missing"
    assert "Dose: 6.4 × 10⁹ CIK cells per infusion" in body  # a value with its unit, spelled out
    assert "CIK mix: CD3+CD56- (activated T) share: 60 % of the CIK cells (the rest)" in body
    for generic in MESA_CONTROLS:
        assert generic not in body, f"Mesa's {generic!r} is on the page"

    sliders = [c for c in MODEL_PARAMS.values() if c.kind == "slider"]
    tracks = driver.find_elements(By.CSS_SELECTOR, ".v-slider__track-container")
    assert len(tracks) == len(sliders)
    widths = [t.size["width"] for t in tracks]
    assert all(t.is_displayed() for t in tracks) and min(widths) > 100, f"slider tracks too narrow: {widths}"
    images = _figures(driver)
    assert len(images) == 6 and all(src.startswith("data:image/png;base64,") for src in images)
    loaded = driver.execute_script(
        "return Array.from(document.querySelectorAll('img.cikabm-figure')).map(i => i.naturalWidth)")
    assert min(loaded) > 300, f"figures not drawn: widths {loaded}"


def test_two_browsers_drive_two_models(app_url, browsers):
    """Stepping one student's page leaves the other's where it was; a reload starts afresh."""
    first, second = browsers
    assert _open(first, app_url)["day"] == 0.0
    assert _open(second, app_url)["day"] == 0.0
    days = [_step(first) for _ in range(3)]
    assert [p["day"] for p in days] == [0.5, 1.0, 1.5]
    tumours = [200.0] + [p["tumour"] for p in days]
    assert tumours[-1] > 200, f"the tumour grows in its first days under CTLs: {tumours}"
    time.sleep(0.5)  # anything the first page's steps sent the second would have arrived
    assert _populations(second)["day"] == 0.0, "stepping one browser moved the other's model"
    assert _step(second)["day"] == 0.5
    assert _populations(first)["day"] == 1.5, "stepping the second browser moved the first's model"

    time.sleep(0.5)  # let the browser lay out the figures of the last step
    shot = _artifacts() / "teach_app.png"
    assert first.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
    assert _open(first, app_url)["day"] == 0.0, "a reload should give a fresh model"


def test_reset_returns_to_day_0(app_url, browsers):
    """Reset rebuilds the model from the controls: counts and figures back to day 0, and the same run again."""
    driver = browsers[0]
    _open(driver, app_url)
    initial = _figures(driver)
    _step(driver)
    first_step = driver.find_element(By.CSS_SELECTOR, ".cikabm-populations").text
    _step(driver)
    assert _figures(driver) != initial
    _click(driver, "Reset")
    _wait(driver).until(lambda d: _populations(d)["day"] == 0.0)
    _wait(driver).until(lambda d: _figures(d) == initial)  # same controls and seed: the same day 0
    _step(driver)  # a new model, not the old one: the same first half day again
    assert driver.find_element(By.CSS_SELECTOR, ".cikabm-populations").text == first_step

    dose = "Dose: 6.4 × 10⁹ CIK cells per infusion"
    driver.find_element(By.XPATH, "//label[contains(., 'CIK infusions: on')]").click()
    _wait(driver, 30).until(lambda d: "CIK infusions: off (endogenous CTLs only)" in d.page_source)
    body = driver.find_element(By.TAG_NAME, "body").text
    assert "press Reset to run with them" in body
    assert dose in body  # greyed out, value still shown
    _click(driver, "Reset")
    _wait(driver).until(lambda d: _populations(d)["day"] == 0.0)
    line = driver.find_element(By.CSS_SELECTOR, ".cikabm-populations").text
    assert "infusions given 0" in line
    assert "press Reset" not in driver.find_element(By.TAG_NAME, "body").text


def test_play_pause_and_reset_while_playing(app_url, browsers):
    """Play runs on until Pause; Reset while playing stops it at day 0."""
    driver = browsers[1]
    _open(driver, app_url)
    _click(driver, "Play")
    _wait(driver).until(lambda d: _populations(d)["day"] >= 1.0)
    at_pause = _populations(driver)["day"]
    _click(driver, "Pause")
    _wait(driver, 30).until(lambda d: "play" in [b.text.strip().lower() for b in d.find_elements(By.TAG_NAME,
                                                                                                  "button")])
    paused = _settled_day(driver)
    assert paused <= at_pause + 0.5, "Play went on after Pause (one step under way may finish)"
    _click(driver, "Play")
    _wait(driver).until(lambda d: _populations(d)["day"] > paused)
    _click(driver, "Reset")
    _wait(driver).until(lambda d: _populations(d)["day"] == 0.0)
    assert _settled_day(driver, quiet=1.0) == 0.0, "Reset during Play: the old run went on"
    assert [b.text.strip().lower() for b in driver.find_elements(By.TAG_NAME, "button")][:3] == ["step", "play",
                                                                                                  "reset"]


def test_server_log_stays_quiet(app_url, browsers):
    """After the page loads above: no cookie warning, no traceback, no warning in the server's log."""
    log = _log_path().read_text()
    assert "samesite" not in log.lower(), log[-2000:]
    assert "Traceback" not in log and "Warning" not in log, log[-2000:]

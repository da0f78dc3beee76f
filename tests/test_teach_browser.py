"""The teaching app in a real browser: ``cikabm teach`` served, headless Chromium steps it.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them)
and the teaching extra (Mesa, Solara, Selenium). Skipped, with the reason, when
any of them is missing. The screenshot of the stepped app is written to
``test-artifacts/teach_app.png`` (or ``$CIKABM_ARTIFACTS``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("mesa")
pytest.importorskip("solara")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless Chromium is not installed (Debian packages chromium and chromium-driver; "
           ".ci/run installs them)")

POPULATIONS = re.compile(r"Day (?P<day>[\d.]+): tumour cells (?P<tumour>\d+) "
                         r"\(MHC-I present (?P<present>\d+), MHC-I lost (?P<lost>\d+)\)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _artifacts() -> Path:
    path = Path(os.environ.get("CIKABM_ARTIFACTS", ROOT / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def app_url():
    """``cikabm teach`` on a free port; yields its printed address, then stops it."""
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SOLARA_TELEMETRY_MIXPANEL_ENABLE": "False"}
    log = (_artifacts() / "teach_server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "cikabm.cli", "teach", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=log, text=True, env=env,
                            start_new_session=True)
    try:
        first = proc.stdout.readline()
        match = re.search(r"http://\S+", first)
        assert match, f"cikabm teach printed no address: {first!r}"
        url = match.group(0)
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                log.flush()
                tail = (_artifacts() / "teach_server.log").read_text()[-2000:]
                pytest.fail(f"cikabm teach exited with status {proc.returncode}; its log ends:\n{tail}")
            assert time.monotonic() < deadline, "the app did not answer within 180 s"
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited by itself
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def browser():
    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1500,1300"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def _populations(driver) -> dict[str, float]:
    text = driver.find_element(By.CSS_SELECTOR, ".cikabm-populations").text
    match = POPULATIONS.search(text)
    assert match, f"no population line in {text!r}"
    return {k: float(v) for k, v in match.groupdict().items()}


def _click(driver, label: str) -> None:
    buttons = [b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip().lower() == label.lower()]
    assert buttons, f"no {label!r} button; buttons: {[b.text for b in driver.find_elements(By.TAG_NAME, 'button')]}"
    buttons[0].click()


def test_app_steps_and_populations_change(app_url, browser):
    """The page loads, shows the lattice and plots, and stepping changes the populations."""
    browser.get(app_url)
    wait = WebDriverWait(browser, 180, poll_frequency=0.5)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".cikabm-populations"))
    start = _populations(browser)
    assert start["day"] == 0.0
    assert start["tumour"] == 200  # the teaching scenario's initial ball
    page = browser.find_element(By.TAG_NAME, "body").text
    for control in ("MHC-I loss per division", "CIK mix", "Dose", "Schedule", "CIK infusions", "Block NKG2D"):
        assert control in page, f"control {control!r} missing from the page"
    images = browser.find_elements(By.TAG_NAME, "img")
    assert len(images) >= 3, "the lattice and the plots should be drawn as images"

    days = []
    for k in range(1, 7):
        _click(browser, "Step")
        wait.until(lambda d, k=k: _populations(d)["day"] >= 0.5 * k)
        days.append(_populations(browser))
    assert [p["day"] for p in days] == [0.5 * k for k in range(1, 7)]
    tumours = [start["tumour"]] + [p["tumour"] for p in days]
    assert len(set(tumours)) > 1, f"tumour count did not change over 3 days: {tumours}"
    assert tumours[-1] > start["tumour"], "the tumour grows in its first days under CTLs"
    time.sleep(1.0)  # let the figures of the last step arrive
    shot = _artifacts() / "teach_app.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_reset_with_ctl_only_toggle(app_url, browser):
    """Toggling CTL only and resetting builds a new model from day 0."""
    browser.get(app_url)
    wait = WebDriverWait(browser, 180, poll_frequency=0.5)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".cikabm-populations"))
    _click(browser, "Step")
    wait.until(lambda d: _populations(d)["day"] >= 0.5)
    box = browser.find_element(By.XPATH, "//label[contains(., 'CIK infusions')]")
    box.click()
    _click(browser, "Reset")
    wait.until(lambda d: _populations(d)["day"] == 0.0)
    assert "infusions given 0" in browser.find_element(By.CSS_SELECTOR, ".cikabm-populations").text

"""The real app in a real browser: `streamlit run app.py` as a subprocess, headless Chromium via
Selenium. Every page loads without an exception box, and the one-click demo on Home trains in the
background and shows its result. Screenshots go to test-artifacts/screenshots/; a few are copied
to docs/screenshots/ when missing there or with CNSDIFF_UPDATE_SCREENSHOTS=1."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SHOTS = ROOT / "test-artifacts" / "screenshots"
DOC_SHOTS = ROOT / "docs" / "screenshots"
PAGES = [("", "CNSDiff explorer", "home"), ("data", "Data & shift", "data"),
         ("training", "Train", "train"), ("compare", "Compare runs", "compare")]
EXPLORE = [("pages/5_denoising.py", "diffusion"), ("pages/6_negatives_map.py", "negatives"),
           ("pages/7_fhn_hardness.py", "fhn"), ("pages/8_schedule_lab.py", "schedules")]

pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                                reason="needs Debian's chromium and chromium-driver (scripts/setup.sh --with-browser)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A streamlit server on a free port with an empty run store; always killed afterwards."""
    runs = tmp_path_factory.mktemp("browser-runs")
    port = _free_port()
    SHOTS.mkdir(parents=True, exist_ok=True)
    log = open(SHOTS.parent / "streamlit-server.log", "w")
    env = dict(os.environ, CNSDIFF_RUNS=str(runs), PYTHONUNBUFFERED="1")
    for name in ("CNSDIFF_READ_ONLY", "CNSDIFF_DEMO_SET"):  # the real demo, in a writable app
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        end = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > end:
                raise RuntimeError(f"streamlit did not come up (exit {proc.poll()}); see {log.name}")
            time.sleep(0.5)
        yield base, runs
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group (start_new_session)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _wait_for_text(driver, text: str, timeout: float) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.5).until(
        EC.presence_of_element_located((By.XPATH, f"//*[contains(normalize-space(text()), {text!r})]")))


def _settle(driver, timeout: float = 30) -> None:
    """Wait until the script run finished (the status widget says nothing is running)."""
    from selenium.webdriver.common.by import By

    end = time.time() + timeout
    time.sleep(1.0)
    while time.time() < end:
        running = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')
        if not any("Running" in (e.text or "") for e in running):
            return
        time.sleep(0.5)


def _exceptions(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')]


def test_every_page_loads_without_an_exception(server, browser):
    base, _ = server
    pages = PAGES + [(url, None, url) for path, url in EXPLORE if (ROOT / path).is_file()]
    for url, title, shot in pages:
        browser.get(f"{base}/{url}")
        if title:
            _wait_for_text(browser, title, 60)
        _settle(browser)
        browser.save_screenshot(str(SHOTS / f"page-{shot}.png"))
        assert not _exceptions(browser), (url, _exceptions(browser))
    # the global choices are in the URL
    assert "dataset=sample" in browser.current_url and "shift=exposure" in browser.current_url


def test_demo_trains_in_the_background_and_shows_the_result(server, browser):
    from selenium.webdriver.common.by import By

    base, runs = server
    browser.get(f"{base}/")
    _wait_for_text(browser, "Run the demo", 60)
    _settle(browser)
    button = browser.find_element(By.XPATH, "//button[.//*[contains(text(), 'Run the demo')]]")
    button.click()
    started = time.time()
    _wait_for_text(browser, "Demo result", 420)  # generous: CI machines can be loaded; this is no timing test
    _settle(browser)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});",
                           browser.find_element(By.XPATH, "//*[contains(text(), 'Demo result')]"))
    time.sleep(0.5)
    browser.save_screenshot(str(SHOTS / "home-demo-result.png"))
    assert not _exceptions(browser), _exceptions(browser)
    labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, '[data-testid="stMetricLabel"]')]
    assert any("CNSDiff" in t and "OOD Recall@20" in t for t in labels), labels
    assert any("RNS" in t and "OOD Recall@20" in t for t in labels), labels
    assert browser.find_elements(By.XPATH, "//a[.//*[contains(text(), 'Compare runs')]]")
    assert len([p for p in Path(runs).iterdir() if p.is_dir() and not p.name.startswith(".")]) == 2
    print(f"demo finished and shown after {time.time() - started:.0f} s")

    # the sidebar now offers the demo runs and the URL carries the chosen run
    assert "run=" in browser.current_url
    browser.get(f"{base}/compare?{browser.current_url.split('?', 1)[1]}")
    _wait_for_text(browser, "Metrics side by side", 60)
    _settle(browser)
    browser.save_screenshot(str(SHOTS / "compare-after-demo.png"))
    assert not _exceptions(browser), _exceptions(browser)
    # docs/screenshots/ is committed: refresh it only when asked (or when a picture is missing),
    # so that running the tests does not leave binary diffs behind.
    DOC_SHOTS.mkdir(parents=True, exist_ok=True)
    refresh = os.environ.get("CNSDIFF_UPDATE_SCREENSHOTS") == "1"
    for name in ("home-demo-result.png", "compare-after-demo.png", "page-data.png", "page-train.png"):
        if (SHOTS / name).exists() and (refresh or not (DOC_SHOTS / name).exists()):
            shutil.copy(SHOTS / name, DOC_SHOTS / name)

"""The real app in a real browser: `streamlit run app.py` as a subprocess, headless Chromium via
Selenium. Every page loads without an exception box; the one-click demo on Home trains in the
background and shows its result; then every page is opened again on the demo's CNSDiff run, with
data, and the Denoising map's ▶ Play animates it in the browser.

Screenshots go to test-artifacts/screenshots/ on every run. The pictures of every page with data
(DOC_PICTURES, listed in docs/SCREENS.md) are copied to docs/screenshots/ when missing there or
with CNSDIFF_UPDATE_SCREENSHOTS=1."""
import json
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
PAGES = [("", "CNSDiff explorer", "home"), ("data_and_shift", "Data & shift", "data"),
         ("train", "Train", "train"), ("compare_runs", "Compare runs", "compare"), ("tune", "Tune", "tune")]
EXPLORE = [("pages/5_denoising.py", "denoising"), ("pages/6_negatives_map.py", "negatives_map"),
           ("pages/7_fhn_hardness.py", "fhn_hardness"), ("pages/8_schedule_lab.py", "schedule_lab")]
# Every page with the demo's runs, as a person sees it (docs/SCREENS.md describes each picture).
DOC_PICTURES = ["home-demo-result.png", "page-data.png", "page-train.png", "compare-after-demo.png",
                "compare-fair-benchmark.png",
                "page-denoising.png", "page-negatives-map.png", "page-fhn-hardness.png",
                "page-schedule-lab.png", "page-tune.png"]
# The explore pages with data: (url, title, picture, least number of charts drawn). The explore
# pages come last and Denoising before Negatives map: their first visit starts the server's
# background UMAP fit, which takes a core for minutes on a small machine.
WITH_DATA = [("data_and_shift", "Data & shift", "page-data.png", 1), ("train", "Train", "page-train.png", 0),
             ("fhn_hardness", "FHN & hardness", "page-fhn-hardness.png", 1),
             ("schedule_lab", "Noise schedule lab", "page-schedule-lab.png", 1),
             ("denoising", "Denoising", "page-denoising.png", 1),
             ("negatives_map", "Negatives map", "page-negatives-map.png", 1),
             ("tune", "Tune", "page-tune.png", 0)]

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
                "--disable-dev-shm-usage", "--window-size=1400,900"):
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


def _texts(driver, selector: str) -> list[str]:
    """The text of every element matching `selector`, read in one script call: elements that
    Streamlit replaces while the page reruns cannot go stale between finding and reading them."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText || e.textContent || '');",
        selector)


def _settle(driver, timeout: float = 30) -> None:
    """Wait until the script run finished (the status widget says nothing is running)."""
    end = time.time() + timeout
    time.sleep(1.0)
    while time.time() < end:
        if not any("Running" in t for t in _texts(driver, '[data-testid="stStatusWidget"]')):
            return
        time.sleep(0.5)


def _exceptions(driver) -> list[str]:
    return _texts(driver, '[data-testid="stException"]')


def _problems(driver) -> list[str]:
    """Exception boxes, st.error boxes and dialogs (such as Streamlit's "Page not found")."""
    return _texts(driver, '[data-testid="stException"], [data-testid="stAlertContentError"], '
                          '[data-testid="stDialog"], [role="dialog"]')


# Plotly charts that are drawn (not hidden in a collapsed expander), and spinners still showing.
_DRAWN = """return [...document.querySelectorAll('.js-plotly-plot')].filter(
    g => g._fullLayout && g.querySelector('.main-svg') && g.getBoundingClientRect().height > 0).length;"""
_SPINNING = """return document.querySelectorAll('[data-testid="stSpinner"]').length;"""


def _drawn(driver, charts: int, timeout: float) -> None:
    """Wait until the script run is over, no spinner shows and at least `charts` charts are drawn."""
    end = time.time() + timeout
    while True:
        _settle(driver, max(end - time.time(), 1))
        if driver.execute_script(_DRAWN) >= charts and not driver.execute_script(_SPINNING):
            break
        assert time.time() < end, (driver.current_url, driver.execute_script(_DRAWN), "charts drawn")
        time.sleep(0.5)
    time.sleep(0.7)  # let the last chart paint


def _show_first_chart(driver) -> None:
    """Scroll so that the first drawn chart is whole in the window, as much of the page above it
    as fits (nothing when the page has no chart)."""
    driver.execute_script("""
        const g = [...document.querySelectorAll('.js-plotly-plot')].find(
            g => g._fullLayout && g.getBoundingClientRect().height > 0);
        if (g) (g.closest('[data-testid="stPlotlyChart"]') || g).scrollIntoView({block: 'end'});""")
    time.sleep(0.5)


def _publish(names: list[str]) -> None:
    """docs/screenshots/ is committed: refresh it only when asked (or when a picture is missing),
    so that running the tests does not leave binary diffs behind."""
    DOC_SHOTS.mkdir(parents=True, exist_ok=True)
    refresh = os.environ.get("CNSDIFF_UPDATE_SCREENSHOTS") == "1"
    for name in names:
        if (SHOTS / name).exists() and (refresh or not (DOC_SHOTS / name).exists()):
            shutil.copy(SHOTS / name, DOC_SHOTS / name)


def test_a_deep_link_is_the_first_request_of_a_fresh_server(server, browser):
    # Runs first in this module: the server has served no page yet, so Streamlit's old
    # pages/-folder routing answers this request (it used to say "Page not found").
    base, _ = server
    browser.get(f"{base}/compare_runs?dataset=sample&shift=exposure")
    _wait_for_text(browser, "Compare runs", 60)
    _settle(browser)
    assert not _problems(browser), _problems(browser)
    assert browser.current_url.split("?")[0] == f"{base}/compare_runs"
    # inside app.py's frame: the sidebar holds the global choices
    assert any("Dataset, shift and run" in t for t in _texts(browser, '[data-testid="stSidebar"]'))


def test_every_page_loads_without_an_exception(server, browser):
    base, _ = server
    pages = PAGES + [(url, None, url) for path, url in EXPLORE if (ROOT / path).is_file()]
    for url, title, shot in pages:
        browser.get(f"{base}/{url}")
        if title:
            _wait_for_text(browser, title, 60)
        _settle(browser)
        browser.save_screenshot(str(SHOTS / f"empty-{shot}.png"))  # no runs yet
        assert not _problems(browser), (url, _problems(browser))
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
    labels = _texts(browser, '[data-testid="stMetricLabel"]')
    assert any("CNSDiff" in t and "OOD Recall@20" in t for t in labels), labels
    assert any("RNS" in t and "OOD Recall@20" in t for t in labels), labels
    assert browser.find_elements(By.XPATH, "//a[.//*[contains(text(), 'Compare runs')]]")
    assert len([p for p in Path(runs).iterdir() if p.is_dir() and not p.name.startswith(".")]) == 2
    print(f"demo finished and shown after {time.time() - started:.0f} s")

    # the sidebar now offers the demo runs and the URL carries the chosen run
    assert "run=" in browser.current_url
    browser.get(f"{base}/compare_runs?{browser.current_url.split('?', 1)[1]}")
    _wait_for_text(browser, "Metrics side by side", 60)
    _drawn(browser, 1, 60)
    _show_first_chart(browser)
    browser.save_screenshot(str(SHOTS / "compare-after-demo.png"))
    assert not _problems(browser), _problems(browser)
    # the shipped fair benchmark's panel opens and draws its chart (bars and MostPop's line)
    panel = next(e for e in browser.find_elements(By.CSS_SELECTOR, "summary") if "fair benchmark" in e.text)
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'}); arguments[0].click();", panel)
    _wait_for_text(browser, "best baseline", 60)
    _drawn(browser, 2, 60)
    time.sleep(1)
    browser.save_screenshot(str(SHOTS / "compare-fair-benchmark.png"))
    assert not _problems(browser), _problems(browser)
    _publish(["home-demo-result.png", "compare-after-demo.png", "compare-fair-benchmark.png"])


# --- every page with the demo's runs ------------------------------------------------------------------
_PLOT = """const g = [...document.querySelectorAll('.js-plotly-plot')].find(
    g => g._fullLayout && (g._fullLayout.updatemenus || []).length && (g._fullLayout.sliders || []).length);"""
# The animation's state as the browser has it: the slider's active step, its label, the number of
# frames, and the text of the last trajectory head (the longest chain: it moves until the last frame).
_FRAME = _PLOT + """
if (!g) return null;
const label = g.querySelector('.slider-container .slider-label');
const head = g.data[g.data.length - 1];
return {active: g._fullLayout.sliders[0].active, label: label ? label.textContent : null,
        frames: (g._transitionData._frames || []).length, head: String((head.text || [''])[0])};"""


def _press_play(driver) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for attempt in range(2):  # a rerun of the page may redraw the chart under the pointer: once more
        try:
            plot = driver.execute_script(_PLOT + "return g;")
            buttons = plot.find_elements(By.CSS_SELECTOR, "g.updatemenu-button")
            play = [b for b in buttons if "Play" in (b.get_attribute("textContent") or "")]
            assert play, [b.get_attribute("textContent") for b in buttons]
            play[0].click()
            return
        except StaleElementReferenceException:
            if attempt:
                raise
            time.sleep(1)


def test_every_page_with_the_demo_runs_and_the_denoising_animation_plays(server, browser):
    base, runs = server
    cns = [p.name for p in sorted(Path(runs).iterdir()) if (p / "config.json").is_file()
           and json.loads((p / "config.json").read_text()).get("sampler") == "cnsdiff"]
    if not cns:
        pytest.skip("needs the demo's CNSDiff run (trained by the test above)")
    query = f"run={cns[0]}"
    written = {u for u, *_ in PAGES} | {u for path, u in EXPLORE if (ROOT / path).is_file()}
    pages = [p for p in WITH_DATA if p[0] in written]
    for url, title, picture, charts in pages:
        started = time.time()
        browser.get(f"{base}/{url}?{query}")
        _wait_for_text(browser, title, 60)
        _drawn(browser, charts, 120)
        assert not _problems(browser), (url, _problems(browser))
        assert f"run={cns[0]}" in browser.current_url, browser.current_url  # the demo's CNSDiff run
        if url == "denoising":
            _show_first_chart(browser)
            before = browser.execute_script(_FRAME)
            assert before and before["frames"] > 2 and before["active"] == before["frames"] - 1, before
            _press_play(browser)
            seen, end = [before], time.time() + 6
            while time.time() < end and len({(f["active"], f["head"]) for f in seen}) < 3:
                time.sleep(0.25)
                seen += [f for f in [browser.execute_script(_FRAME)] if f]
            moved = [f for f in seen if f["active"] != before["active"]]
            assert moved, seen  # ▶ Play moved the slider within a few seconds ...
            assert len({f["head"] for f in seen}) >= 2, seen  # ... and the trajectory heads with it
            assert any(f["label"] and f["label"] != before["label"] for f in moved), seen
            # the picture: the whole trajectory, once the animation is back at the last frame
            end = time.time() + 3 + 0.6 * before["frames"]
            while time.time() < end and (browser.execute_script(_FRAME) or {}).get("active") != before["frames"] - 1:
                time.sleep(0.3)
            time.sleep(0.5)
            assert not _problems(browser), (url, _problems(browser))
        else:
            _show_first_chart(browser)
        browser.save_screenshot(str(SHOTS / picture))
        print(f"{url}: {time.time() - started:.0f} s")
    _publish([p[2] for p in pages])
    if len(pages) == len(WITH_DATA):  # every page is written: the documented set is complete
        assert not [n for n in DOC_PICTURES if not (SHOTS / n).exists()]

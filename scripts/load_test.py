"""Load test of a read-only workshop server: many browser sessions on one laptop.

Starts `streamlit run app.py -- --read-only` on a free loopback port over a bundle's runs folder,
then adds headless Chromium sessions in stages (default 1, 5, 10, 20). Every session picks a user,
opens the Denoising page for that user (a URL with ?run=&user=), steps the frame with the page's
◀ ▶ buttons (each a rerun, as scrubbing the frame slider is), and opens the Negatives map for that
user. Each interaction is timed from the action until the page shows the expected element and
Streamlit's running indicator is gone. The server's resident memory (its whole process tree, from
/proc) is sampled throughout. One table per stage: sessions, interactions, p50, p95, max, errors,
server peak RSS, server CPU seconds.

Chromium is heavy: sessions are spread over a few browser processes (--browsers, default 4), each
session its own window (its own Streamlit session and websocket). All sessions stay connected;
the browsers act concurrently, each working through its windows in turn.

    .venv/bin/python -m cnsdiff_core precompute --runs-dir /tmp/workshop
    .venv/bin/python scripts/load_test.py --runs /tmp/workshop [--sessions 20] [--browsers 4]

Bounded: at most --max-seconds overall (default 900) and --timeout per interaction; the server,
the browsers and their temporary profiles are always removed, also on Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,900", "--mute-audio",
                  "--disable-renderer-backgrounding", "--disable-background-timer-throttling",
                  "--disable-backgrounding-occluded-windows")
# Page state read in one round trip: is a script run going on, which 'Frame N' heading is shown,
# is a chart drawn, is there an exception box, the page title.
STATE_JS = """
const w = document.querySelector('[data-testid="stStatusWidget"]');
const running = !!(w && /Running|Connecting/i.test(w.innerText || ''));
const frames = [...document.querySelectorAll('h3')].map(h => (h.innerText || '').trim())
    .filter(t => /^Frame \\d+$/.test(t));
return {running: running,
        frame: frames.length ? parseInt(frames[0].slice(6)) : null,
        charts: document.querySelectorAll('.js-plotly-plot, [data-testid="stPlotlyChart"]').length,
        exception: document.querySelectorAll('[data-testid="stException"]').length,
        title: ((document.querySelector('h1') || {}).innerText || '').trim(),
        connected: !document.querySelector('[data-testid="stConnectionStatus"]')};
"""


# --- the server ------------------------------------------------------------------------------------
def checked_runs(path: str, hint: str) -> Path:
    """The run store folder to serve, after checking it exists and a browser is installed."""
    runs = Path(path).resolve()
    if not runs.is_dir():
        raise SystemExit(f"{runs} is not a folder; {hint}.")
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        raise SystemExit("needs Debian's chromium and chromium-driver (scripts/setup.sh --with-browser)")
    return runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`streamlit run app.py` on a free loopback port over a run store (read-only by default, as
    a workshop serves it), in its own process group."""

    def __init__(self, runs: Path, log_path: Path, read_only: bool = True) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(log_path, "w")
        env = dict(os.environ, CNSDIFF_RUNS=str(runs), PYTHONUNBUFFERED="1")
        if read_only:
            env["CNSDIFF_READ_ONLY"] = "1"
        else:
            env.pop("CNSDIFF_READ_ONLY", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(self.port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none", *(["--", "--read-only"] if read_only else [])],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, timeout: float = 90) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(f"{self.base}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"streamlit did not answer within {timeout:.0f} s; see {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # its own process group (start_new_session)
                self.proc.wait(timeout=15)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=15)
        self.log.close()


def _tree(pid: int) -> list[int]:
    """pid and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_and_cpu(pid: int) -> tuple[int, float]:
    """(resident bytes, CPU seconds) of a process tree."""
    rss, cpu = 0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) * 1024
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
                cpu += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            continue
    return rss, cpu


class MemorySampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.25) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.pid, self.every = pid, every
        self.peak = 0
        self.current = 0
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.is_set():
            rss, _ = rss_and_cpu(self.pid)
            self.current = rss
            self.peak = max(self.peak, rss)
            self._stop.wait(self.every)

    def reset_peak(self) -> None:
        self.peak = self.current

    def stop(self) -> None:
        self._stop.set()


# --- browsers --------------------------------------------------------------------------------------
@dataclass
class Session:
    index: int
    user: str
    window: str | None = None
    frame: int | None = None


@dataclass
class Browser:
    driver: object
    profile: str
    sessions: list[Session] = field(default_factory=list)


def start_browser() -> Browser:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="cnsdiff-load-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(90)
    driver.set_script_timeout(30)
    return Browser(driver, profile)


def close_browser(b: Browser) -> None:
    try:
        b.driver.quit()
    except Exception:  # noqa: BLE001 - best effort at shutdown
        pass
    shutil.rmtree(b.profile, ignore_errors=True)


# --- interactions ------------------------------------------------------------------------------------
class Timeout(Exception):
    pass


def wait_for(driver, done, timeout: float, poll: float = 0.05) -> dict:
    """Poll the page state until done(state) holds twice in a row (a rerun may start right after
    the first look) and nothing is running; raise Timeout."""
    end = time.time() + timeout
    ok_once = False
    state: dict = {}
    while time.time() < end:
        state = driver.execute_script(STATE_JS) or {}
        if state.get("exception"):
            raise RuntimeError(f"exception box on the page ({state.get('title')})")
        if not state.get("running") and state.get("connected") and done(state):
            if ok_once:
                return state
            ok_once = True
        else:
            ok_once = False
        time.sleep(poll)
    raise Timeout(f"timed out after {timeout:.0f} s (last state {state})")


def session_round(b: Browser, s: Session, base: str, run_id: str, scrubs: int, timeout: float,
                  record) -> None:
    """One round of a session: open Denoising for its user, step frames back and forth with the
    ◀ ▶ buttons (each a rerun that moves the Frame slider), open the Negatives map."""
    from selenium.webdriver.common.by import By

    d = b.driver
    d.switch_to.window(s.window)

    def timed(kind: str, action, done) -> dict | None:
        t0 = time.perf_counter()
        try:
            action()
            state = wait_for(d, done, timeout)
            record(kind, time.perf_counter() - t0, None)
            return state
        except Exception as exc:  # noqa: BLE001 - a failed interaction is a data point, not a crash
            record(kind, time.perf_counter() - t0, f"{type(exc).__name__}: {str(exc)[:160]}")
            return None

    url = f"{base}/denoising?run={run_id}&user={s.user}"
    state = timed("open denoising", lambda: d.get(url),
                  lambda st: st.get("title") == "Denoising" and st.get("frame") is not None and st.get("charts", 0) > 0)
    if state is None:
        return
    s.frame = state["frame"]
    last = s.frame  # opened without ?step=, the page shows the last frame
    step = -1
    for _ in range(scrubs):
        if s.frame <= 0:
            step = 1
        elif s.frame >= last:
            step = -1
        key, want = ("den_next" if step > 0 else "den_prev"), s.frame + step

        def click(key=key):  # a JS click: a toast or the sticky header may cover the button
            d.execute_script("arguments[0].click();", d.find_element(By.CSS_SELECTOR, f".st-key-{key} button"))

        state = timed("step frame", click, lambda st, want=want: st.get("frame") == want)
        if state is None:
            return
        s.frame = state["frame"]
    timed("open negatives map", lambda: d.get(f"{base}/negatives_map?run={run_id}&user={s.user}"),
          lambda st: st.get("title") == "Negatives map" and st.get("charts", 0) > 0)


# --- the run ------------------------------------------------------------------------------------------
def pick_run_and_users(runs: Path, n: int, seed: int) -> tuple[str, list[str]]:
    """A finished CNSDiff run of the bundle (tuned preset first) and n users with training items."""
    from cnsdiff_core import explore as ex
    from cnsdiff_core.data import load_dataset
    from cnsdiff_core.runs import RunStore
    from cnsdiff_core.samplers import WITH_DENOISER

    infos = [i for i in RunStore(runs).list_runs() if i.status in ("finished", "early-stopped", "stopped")
             and i.config.get("sampler") in WITH_DENOISER and (i.path / "embeddings.npz").exists()]
    if not infos:
        raise SystemExit(f"no finished CNSDiff run in {runs}; precompute a bundle first.")
    infos.sort(key=lambda i: (i.config.get("preset") != "tuned", i.config.get("dataset") != "sample"))
    info = infos[0]
    cfg = info.config
    data = load_dataset(cfg["dataset"], cfg.get("shift"), seed=cfg.get("data_seed", 0))
    users = ex.user_summary(data)
    ids = users.loc[users["n_train"] > 0, "user_id"].astype(str).tolist()
    rng = random.Random(seed)
    return info.run_id, [rng.choice(ids) for _ in range(n)]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", required=True, help="the bundle's runs folder")
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--stages", default="1,5,10,20", help="session counts to measure at (capped by --sessions)")
    ap.add_argument("--browsers", type=int, default=4, help="Chromium processes (sessions are windows in them)")
    ap.add_argument("--scrubs", type=int, default=3, help="frame steps per session per round")
    ap.add_argument("--timeout", type=float, default=90.0, help="seconds per interaction")
    ap.add_argument("--max-seconds", type=float, default=900.0, help="stop adding stages after this")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-warm", dest="warm", action="store_false",
                    help="measure from a cold server (default: one warm-up visit first, reported separately)")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)

    runs = checked_runs(args.runs, "precompute a bundle first")
    n_sessions = max(1, min(args.sessions, 60))  # bounded: a laptop, not a cluster
    stages = sorted({min(int(x), n_sessions) for x in args.stages.split(",") if x.strip()} | {n_sessions})
    n_browsers = max(1, min(args.browsers, n_sessions))
    random.seed(args.seed)
    run_id, users = pick_run_and_users(runs, n_sessions, args.seed)
    started = time.time()
    log_path = Path(tempfile.gettempdir()) / f"cnsdiff-load-server-{os.getpid()}.log"
    print(f"runs {runs}; run {run_id}; {n_sessions} sessions in {n_browsers} Chromium processes; "
          f"stages {stages}; server log {log_path}", flush=True)

    server = Server(runs, log_path)
    browsers: list[Browser] = []
    sampler: MemorySampler | None = None
    results: list[dict] = []
    first_visit: list[dict] = []
    interrupted = {"flag": False}

    def on_sigint(signum, frame):
        interrupted["flag"] = True
        raise KeyboardInterrupt

    old_handler = signal.signal(signal.SIGINT, on_sigint)
    try:
        server.wait_healthy()
        sampler = MemorySampler(server.proc.pid)
        sampler.start()
        base_rss, base_cpu = rss_and_cpu(server.proc.pid)
        print(f"server up on {server.base} (pid {server.proc.pid}, {base_rss / 1e6:.0f} MB before any session)",
              flush=True)
        for _ in range(n_browsers):
            browsers.append(start_browser())
        sessions: list[Session] = []
        if args.warm:  # the operator's own first visit before the room arrives (cold server caches)
            cold: list[tuple[str, float, str | None]] = []
            w = browsers[0]
            probe = Session(-1, users[0], w.driver.current_window_handle)
            session_round(w, probe, server.base, run_id, 1, args.timeout, lambda *x: cold.append(x))
            print("first visit on a cold server: " + ", ".join(f"{k} {sec:.1f}s" + (f" ({e})" if e else "")
                                                              for k, sec, e in cold), flush=True)
            first_visit = [{"kind": k, "seconds": sec, "error": e} for k, sec, e in cold]
        for stage in stages:
            if time.time() - started > args.max_seconds:
                print(f"stopping before stage {stage}: --max-seconds reached", flush=True)
                break
            while len(sessions) < stage:  # new sessions: a window each, in the least busy browser
                s = Session(len(sessions), users[len(sessions)])
                b = browsers[s.index % n_browsers]
                if not b.sessions:
                    s.window = b.driver.current_window_handle
                else:
                    b.driver.switch_to.new_window("window")
                    s.window = b.driver.current_window_handle
                b.sessions.append(s)
                sessions.append(s)
            samples: list[tuple[str, float, str | None]] = []
            lock = threading.Lock()

            def record(kind, seconds, error):
                with lock:
                    samples.append((kind, seconds, error))

            sampler.reset_peak()
            _, cpu0 = rss_and_cpu(server.proc.pid)
            t0 = time.time()

            def drive(b: Browser) -> None:
                for s in b.sessions:
                    if interrupted["flag"]:
                        return
                    session_round(b, s, server.base, run_id, args.scrubs, args.timeout, record)

            threads = [threading.Thread(target=drive, args=(b,), daemon=True) for b in browsers if b.sessions]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=max(args.max_seconds * 2 - (time.time() - started), 60))
            wall = time.time() - t0
            _, cpu1 = rss_and_cpu(server.proc.pid)
            ok = [sec for _, sec, err in samples if err is None]
            errors = [err for _, _, err in samples if err]
            by_kind = {}
            for kind in ("open denoising", "step frame", "open negatives map"):
                vals = [sec for k, sec, err in samples if k == kind and err is None]
                by_kind[kind] = {"n": len(vals), "p50": percentile(vals, 0.5), "p95": percentile(vals, 0.95)}
            row = {"sessions": stage, "interactions": len(samples), "ok": len(ok), "errors": len(errors),
                   "p50_s": percentile(ok, 0.5), "p95_s": percentile(ok, 0.95), "max_s": max(ok) if ok else float("nan"),
                   "mean_s": statistics.fmean(ok) if ok else float("nan"),
                   "server_peak_rss_mb": sampler.peak / 1e6, "server_cpu_s": cpu1 - cpu0, "wall_s": wall,
                   "by_kind": by_kind, "first_errors": errors[:3]}
            results.append(row)
            print(f"stage {stage:>2} sessions: {len(samples)} interactions, p50 {row['p50_s']:.2f}s, "
                  f"p95 {row['p95_s']:.2f}s, max {row['max_s']:.2f}s, errors {len(errors)}, server peak RSS "
                  f"{row['server_peak_rss_mb']:.0f} MB, server CPU {row['server_cpu_s']:.1f}s in {wall:.0f}s", flush=True)
            for err in errors[:3]:
                print(f"   error: {err}", flush=True)
    except KeyboardInterrupt:
        print("interrupted; stopping the server and the browsers", flush=True)
    finally:
        signal.signal(signal.SIGINT, old_handler)
        for b in browsers:
            close_browser(b)
        if sampler is not None:
            sampler.stop()
        server.stop()

    print()
    print("| sessions | interactions | errors | p50 (s) | p95 (s) | max (s) | server peak RSS (MB) | server CPU (s) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['sessions']} | {r['interactions']} | {r['errors']} | {r['p50_s']:.2f} | {r['p95_s']:.2f} | "
              f"{r['max_s']:.2f} | {r['server_peak_rss_mb']:.0f} | {r['server_cpu_s']:.1f} |")
    print()
    print("| sessions | open denoising p50/p95 (s) | step frame p50/p95 (s) | open negatives map p50/p95 (s) |")
    print("|---:|---:|---:|---:|")
    for r in results:
        k = r["by_kind"]
        cells = [f"{k[x]['p50']:.2f} / {k[x]['p95']:.2f}" for x in ("open denoising", "step frame", "open negatives map")]
        print(f"| {r['sessions']} | " + " | ".join(cells) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": str(runs), "run_id": run_id, "browsers": n_browsers,
                                              "first_visit": first_visit,
                                              "cpus": os.cpu_count(), "load_before": os.getloadavg(),
                                              "stages": results}, indent=2, default=float))
        print(f"wrote {args.out}")
    return 0 if results and all(r["errors"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Per-page server time of a warm rerun and the size of each page's Plotly figures.

Runs the app (app.py) in Streamlit's AppTest in this process, opens each page as a user would
(switch_page), then times reruns: a plain rerun and one rerun per change of each main control
(cycling over a few values), --reruns times each, and prints the median in seconds. A control
inside an st.fragment reruns only the fragment in a browser; AppTest reruns the whole script, so
for those both the fragment's own time (ui.profile.section) and the whole page are printed. The size of
every st.plotly_chart is the length of the JSON spec the server sends. The first open of a page
fills the caches and is reported separately (`open`); the background UMAP fit is switched off
(the toggles of the map pages) so it does not run during the timing.

    .venv/bin/python scripts/bench_app.py                    # trains the sample-world demo in a temp store
    .venv/bin/python scripts/bench_app.py --runs DIR [--run RUN_ID]   # a stored run, e.g. a Food run

Figures depend on the machine and on what else runs on it: state both with any figure you quote.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import logging  # noqa: E402

logging.getLogger("streamlit").setLevel(logging.ERROR)  # AppTest's bare-mode warnings

# (page file, [(widget kind, key, values to cycle through)]); "button" values are ignored (a click)
CONTROLS = {
    "pages/1_home.py": [],
    "pages/2_data_and_shift.py": [],
    "pages/4_compare_runs.py": [],
    "pages/5_denoising.py": [("slider", "den_step", "frames"), ("button", "den_next", None),
                             ("number_input", "den_seed", [1, 2, 3]), ("toggle", "den_exclude", [True, False]),
                             ("toggle", "den_zoom", [True, False]), ("radio", "den_s", "s =")],
    "pages/6_negatives_map.py": [("radio", "map_color", ["environment", "popularity"]),
                                 ("toggle", "map_size_nn", [False, True]), ("selectbox", "map_user", "user ids")],
    "pages/7_fhn_hardness.py": [("radio", "fhn_metric", ["own_positive", "fhn_lift", "fhn"]), ("toggle", "fhn_premix", [True, False]),
                                ("radio", "fhn_kind", ["violin", "box"])],
    "pages/8_schedule_lab.py": [],
    "pages/9_tune.py": [],
}
# controls inside a fragment: a change reruns only the fragment, timed by ui.profile.section(name)
FRAGMENT = {"den_step": "denoising frame view", "den_next": "denoising frame view", "den_s": "denoising frame view"}
NO_UMAP = {"den_umap": False, "map_umap": False}


def train_demo(root: Path, epochs: int) -> str:
    from cnsdiff_core.config import preset_config
    from cnsdiff_core.recorder import train_and_store
    from cnsdiff_core.runs import RunStore
    from cnsdiff_core.samplers import METHOD

    t = time.perf_counter()
    cfg = preset_config("demo", dataset="sample", sampler=METHOD, epochs=epochs, device="cpu")
    run_id, _ = train_and_store(cfg, RunStore(root))
    print(f"# trained demo run {run_id} (sample world, {epochs} epochs) in {time.perf_counter() - t:.0f} s",
          file=sys.stderr)
    return run_id


def _widget(at, kind: str, key: str):
    for w in at.get(kind):
        if getattr(w, "key", None) == key:
            return w
    return None


def _values(w, kind: str, spec):
    if spec == "frames":
        return [w.min, (w.min + w.max) // 2, w.max]
    if spec == "s =":  # the Denoising step radio shows "s = 2"
        return [int(o.split("=")[1]) for o in w.options][:4]
    if spec == "user ids":  # the map's user picker shows "u12  (no probe negatives)"
        return [o.split()[0] if o != "all probe users" else "all" for o in w.options][:4]
    return spec


def chart_sizes(at) -> dict[str, int]:
    return {(c.key or f"chart{i}"): len(c.proto.spec.encode()) for i, c in enumerate(at.get("plotly_chart"))}


def timed(at) -> float:
    t = time.perf_counter()
    at.run()
    dt = time.perf_counter() - t
    if at.exception:
        raise RuntimeError(f"exception during rerun: {[e.value for e in at.exception]}")
    return dt


def bench_page(page: str, run_id: str, reruns: int) -> list[tuple[str, float, int]]:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.session_state["run_id"] = run_id
    for k, v in NO_UMAP.items():
        at.session_state[k] = v
    at.run()
    at.switch_page(page)
    rows = [("open (first view, fills caches)", timed(at), 1)]
    if at.error:  # e.g. a run whose dataset cannot be loaded here: say so instead of timing an error page
        raise RuntimeError(f"{page} shows an error: {at.error[0].value}")
    rows.append(("rerun (no change)", statistics.median(timed(at) for _ in range(reruns)), reruns))
    for kind, key, spec in CONTROLS.get(page, []):
        w = _widget(at, kind, key)
        if w is None:
            rows.append((f"{key} (not on the page)", float("nan"), 0))
            continue
        times, frag = [], []
        for i in range(reruns):
            w = _widget(at, kind, key)
            if kind == "button":
                w.click()
            else:
                vals = _values(w, kind, spec)
                w.set_value(vals[i % len(vals)])
            times.append(timed(at))
            if key in FRAGMENT:
                try:
                    from ui import profile
                except ImportError:  # a checkout before the timer existed
                    continue
                if FRAGMENT[key] in profile.LAST:
                    frag.append(profile.LAST[FRAGMENT[key]])
        if frag:  # AppTest reruns the whole script; in a browser only the fragment reruns
            rows.append((f"{kind} {key} (fragment only)", statistics.median(frag), reruns))
        rows.append((f"{kind} {key}{' (whole page)' if frag else ''}", statistics.median(times), reruns))
    return rows, chart_sizes(at)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, help="a run store (default: train the demo into a temp store)")
    p.add_argument("--run", help="run id in --runs (default: the newest run with a denoiser)")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the demo run trained without --runs")
    p.add_argument("--reruns", type=int, default=5, help="reruns per control (median reported)")
    p.add_argument("--pages", nargs="*", help="page files (default: all explore and read pages)")
    a = p.parse_args(argv)
    tmp = None
    if a.runs is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-app-")
        a.runs = Path(tmp.name)
        os.environ["CNSDIFF_RUNS"] = str(a.runs)
        a.run = train_demo(a.runs, a.epochs)
    os.environ["CNSDIFF_RUNS"] = str(a.runs)
    os.environ.pop("CNSDIFF_READ_ONLY", None)
    if a.run is None:
        from cnsdiff_core.runs import RunStore
        from cnsdiff_core.samplers import WITH_DENOISER

        infos = [i for i in RunStore(a.runs).list_runs() if i.status not in ("damaged", "running", "queued")
                 and i.config.get("sampler") in WITH_DENOISER]
        if not infos:
            print(f"No finished run with a denoiser in {a.runs}: train one or pass --run.", file=sys.stderr)
            return 2
        a.run = infos[0].run_id
    print(f"run {a.run} in {a.runs}; median of {a.reruns} reruns, seconds of server time (AppTest, warm process)")
    print(f"{'page':28s} {'what':44s} {'seconds':>8s}")
    for page in a.pages or list(CONTROLS):
        rows, sizes = bench_page(page, a.run, a.reruns)
        for what, sec, _ in rows:
            print(f"{Path(page).stem:28s} {what:44s} {sec:8.3f}")
        for key, n in sizes.items():
            print(f"{Path(page).stem:28s} {'figure ' + key + ' (JSON bytes)':44s} {n:8d}")
        sys.stdout.flush()
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Browser time to interactive of every page (issue 14, goal 2), on a warm and on a fresh server.

Starts `streamlit run app.py` on a free loopback port over a run store, and opens every page in
headless Chromium (Debian's), for each run given (e.g. one on the sample world and one on Food).
Each open is timed from the navigation until the page's title shows, its charts are drawn and
Streamlit's running indicator is gone (twice in a row: a rerun may follow the first look). The
first open of each page after the server started is reported as `first`; then every page is opened
--repeats more times and the median is `warm`. A page with an exception box counts as an error.

    .venv/bin/python -m cnsdiff_core train --dataset sample --sampler cnsdiff --preset demo --runs-dir /tmp/pages
    .venv/bin/python -m cnsdiff_core train --dataset food --sampler cnsdiff --preset demo --runs-dir /tmp/pages
    .venv/bin/python scripts/page_open.py --runs /tmp/pages [--repeats 3] [--out page_open.json]

By default the newest finished CNSDiff run of each dataset in --runs is used (--run to pick ids).
The server, the browser and its profile are always removed, also on Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_test import CHROMEDRIVER, CHROMIUM, Server, close_browser, start_browser, wait_for  # noqa: E402

# (url path, title, least number of charts drawn, takes ?run=)
PAGES = [("", "CNSDiff explorer", 0, False), ("data_and_shift", "Data & shift", 1, False),
         ("train", "Train", 0, False), ("compare_runs", "Compare runs", 1, False), ("tune", "Tune", 0, False),
         ("denoising", "Denoising", 1, True), ("negatives_map", "Negatives map", 1, True),
         ("fhn_hardness", "FHN & hardness", 1, True), ("schedule_lab", "Noise schedule lab", 1, True)]


def pick_runs(runs: Path, wanted: list[str]) -> list[tuple[str, str]]:
    """(run id, dataset) of the runs to open: --run ids, else the newest finished CNSDiff run of
    each dataset in the store."""
    from cnsdiff_core.runs import RunStore
    from cnsdiff_core.samplers import WITH_DENOISER

    infos = {i.run_id: i for i in RunStore(runs).list_runs()}
    if wanted:
        missing = [r for r in wanted if r not in infos]
        if missing:
            raise SystemExit(f"run {missing[0]} is not in {runs}; `python -m cnsdiff_core runs` lists them.")
        return [(r, infos[r].config.get("dataset", "?")) for r in wanted]
    newest: dict[str, object] = {}
    for info in sorted(infos.values(), key=lambda i: i.created):
        if info.status in ("finished", "early-stopped") and info.config.get("sampler") in WITH_DENOISER:
            newest[info.config.get("dataset", "?")] = info
    if not newest:
        raise SystemExit(f"no finished CNSDiff run in {runs}; train one first (see the docstring).")
    return [(i.run_id, ds) for ds, i in newest.items()]


def open_page(driver, base: str, page: tuple, run_id: str, timeout: float) -> tuple[float, str | None]:
    path, title, charts, with_run = page
    url = f"{base}/{path}" + (f"?run={run_id}" if with_run else "")
    t0 = time.perf_counter()
    try:
        driver.get(url)
        wait_for(driver, lambda st: st.get("title") == title and st.get("charts", 0) >= charts, timeout)
        return time.perf_counter() - t0, None
    except Exception as exc:  # noqa: BLE001 - a failed open is a data point
        return time.perf_counter() - t0, f"{type(exc).__name__}: {str(exc)[:160]}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", required=True, help="a run store")
    ap.add_argument("--run", action="append", default=[], help="run id to open the explore pages on (repeatable)")
    ap.add_argument("--repeats", type=int, default=3, help="warm opens per page (median reported)")
    ap.add_argument("--timeout", type=float, default=90.0, help="seconds per open")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)

    runs = Path(args.runs).resolve()
    if not runs.is_dir():
        raise SystemExit(f"{runs} is not a folder; train a run into it first (see the docstring).")
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        raise SystemExit("needs Debian's chromium and chromium-driver (scripts/setup.sh --with-browser)")
    targets = pick_runs(runs, args.run)
    log_path = Path(tempfile.gettempdir()) / f"cnsdiff-page-open-server-{os.getpid()}.log"
    print(f"runs {runs}; " + ", ".join(f"{ds}: {rid}" for rid, ds in targets) + f"; server log {log_path}",
          flush=True)
    server = Server(runs, log_path, read_only=False)
    browser = None
    rows: list[dict] = []
    try:
        t_start = time.perf_counter()
        server.wait_healthy()
        up = time.perf_counter() - t_start
        browser = start_browser()
        d = browser.driver
        print(f"server healthy after {up:.1f} s", flush=True)
        seen: set[str] = set()
        for run_id, ds in targets:
            for page in PAGES:
                if not page[3] and page[0] in seen:
                    continue  # a page without a run is the same page for every run
                seen.add(page[0])
                first, err = open_page(d, server.base, page, run_id, args.timeout)
                warm, errors = [], [err] if err else []
                for _ in range(max(args.repeats, 0)):
                    sec, e = open_page(d, server.base, page, run_id, args.timeout)
                    (errors.append(e) if e else warm.append(sec))
                row = {"page": page[1], "dataset": ds if page[3] else "-", "run_id": run_id if page[3] else "",
                       "first_s": first if err is None else None,
                       "warm_median_s": statistics.median(warm) if warm else None,
                       "warm_max_s": max(warm) if warm else None, "errors": errors}
                rows.append(row)
                fmt = lambda v: "error" if v is None else f"{v:.2f}"  # noqa: E731
                print(f"{row['page']:<20} {row['dataset']:<8} first {fmt(row['first_s'])} s, warm median "
                      f"{fmt(row['warm_median_s'])} s (max {fmt(row['warm_max_s'])})"
                      + (f"; {len(errors)} error(s): {errors[0]}" if errors else ""), flush=True)
    except KeyboardInterrupt:
        print("interrupted; stopping the server and the browser", flush=True)
    finally:
        if browser is not None:
            close_browser(browser)
        server.stop()

    print()
    print("| page | data | first open after the server started (s) | warm open, median (max) (s) |")
    print("|---|---|---:|---:|")
    for r in rows:
        first = "error" if r["first_s"] is None else f"{r['first_s']:.2f}"
        warm = "error" if r["warm_median_s"] is None else f"{r['warm_median_s']:.2f} ({r['warm_max_s']:.2f})"
        print(f"| {r['page']} | {r['dataset']} | {first} | {warm} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": str(runs), "targets": targets, "cpus": os.cpu_count(),
                                              "load_before": os.getloadavg(), "pages": rows}, indent=2))
        print(f"wrote {args.out}")
    return 0 if rows and not any(r["errors"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

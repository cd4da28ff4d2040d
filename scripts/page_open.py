"""Browser time to interactive of every page (issue 14, goal 2), on a warm and on a fresh server.

Starts `streamlit run app.py` on a free loopback port over a run store, and opens every page in
headless Chromium (Debian's), for each run given (e.g. one on the sample world and one on Food),
two ways:

- **by URL** (a link, a new tab, a reload): the browser loads Streamlit's front end, opens a new
  session and runs the page. The first open of each page after the server started is `first`;
  then every page is opened --repeats more times and the median is `warm`.
- **in the app** (the sidebar's page links, how people move between pages): one session, each
  page reached by a click on its link; --repeats rounds over all pages, the median is reported.

Each open is timed from the navigation until the page's title shows, its charts are drawn and
Streamlit's running indicator is gone (twice in a row: a rerun may follow the first look). A page
with an exception box counts as an error.

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
from load_test import Server, checked_runs, close_browser, start_browser, wait_for  # noqa: E402

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


def click_page(driver, base: str, page: tuple, timeout: float) -> tuple[float, str | None]:
    """Reach a page by its link in the sidebar's navigation (same session, no reload)."""
    from selenium.webdriver.common.by import By

    path, title, charts, _ = page
    t0 = time.perf_counter()
    try:
        links = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNav"] a')
        want = f"{base}/{path}".rstrip("/")
        link = next(a for a in links if (a.get_attribute("href") or "").split("?")[0].rstrip("/") == want)
        driver.execute_script("arguments[0].click();", link)
        wait_for(driver, lambda st: st.get("title") == title and st.get("charts", 0) >= charts, timeout)
        return time.perf_counter() - t0, None
    except StopIteration:
        return time.perf_counter() - t0, f"no sidebar link to /{path}"
    except Exception as exc:  # noqa: BLE001 - a failed switch is a data point
        return time.perf_counter() - t0, f"{type(exc).__name__}: {str(exc)[:160]}"


def in_app_rounds(driver, base: str, run_id: str, ds: str, repeats: int, timeout: float) -> list[dict]:
    """One session on the run: every page reached from the previous one by its sidebar link."""
    driver.get(f"{base}/?run={run_id}")  # the sidebar's run choice for the session
    wait_for(driver, lambda st: st.get("title") == "CNSDiff explorer", timeout)
    times: dict[str, list[float]] = {p[1]: [] for p in PAGES}
    errors: dict[str, list[str]] = {p[1]: [] for p in PAGES}
    order = PAGES[1:] + PAGES[:1]  # from Home to every page in turn, back to Home
    for _ in range(max(repeats, 1)):
        for page in order:
            sec, e = click_page(driver, base, page, timeout)
            (errors[page[1]].append(e) if e else times[page[1]].append(sec))
    return [{"page": p[1], "dataset": ds if p[3] else "-", "median_s": statistics.median(times[p[1]]) if times[p[1]]
             else None, "max_s": max(times[p[1]]) if times[p[1]] else None, "errors": errors[p[1]]} for p in PAGES]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", required=True, help="a run store")
    ap.add_argument("--run", action="append", default=[], help="run id to open the explore pages on (repeatable)")
    ap.add_argument("--repeats", type=int, default=3, help="warm opens per page (median reported)")
    ap.add_argument("--timeout", type=float, default=90.0, help="seconds per open")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)

    runs = checked_runs(args.runs, "train a run into it first (see the docstring)")
    targets = pick_runs(runs, args.run)
    log_path = Path(tempfile.gettempdir()) / f"cnsdiff-page-open-server-{os.getpid()}.log"
    print(f"runs {runs}; " + ", ".join(f"{ds}: {rid}" for rid, ds in targets) + f"; server log {log_path}",
          flush=True)
    server = Server(runs, log_path, read_only=False)
    browser = None
    rows: list[dict] = []
    in_app: list[dict] = []
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
        for run_id, ds in targets:
            got = in_app_rounds(d, server.base, run_id, ds, args.repeats, args.timeout)
            in_app += [r for r in got if r["dataset"] != "-" or ds == targets[0][1]]
            for r in got:
                med = "error" if r["median_s"] is None else f"{r['median_s']:.2f}"
                print(f"in the app: {r['page']:<20} {ds:<8} median {med} s"
                      + (f"; {len(r['errors'])} error(s): {r['errors'][0]}" if r["errors"] else ""), flush=True)
    except KeyboardInterrupt:
        print("interrupted; stopping the server and the browser", flush=True)
    finally:
        if browser is not None:
            close_browser(browser)
        server.stop()

    print()
    switch = {(r["page"], r["dataset"]): r for r in in_app}
    print("| page | data | by URL: first open after the server started (s) | by URL: warm, median (max) (s) "
          "| in the app (sidebar link), median (max) (s) |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        first = "error" if r["first_s"] is None else f"{r['first_s']:.2f}"
        warm = "error" if r["warm_median_s"] is None else f"{r['warm_median_s']:.2f} ({r['warm_max_s']:.2f})"
        sw = switch.get((r["page"], r["dataset"]))
        inapp = "-" if sw is None else "error" if sw["median_s"] is None else f"{sw['median_s']:.2f} ({sw['max_s']:.2f})"
        print(f"| {r['page']} | {r['dataset']} | {first} | {warm} | {inapp} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": str(runs), "targets": targets, "cpus": os.cpu_count(),
                                              "load_before": os.getloadavg(), "pages": rows, "in_app": in_app},
                                             indent=2))
        print(f"wrote {args.out}")
    return 0 if rows and not any(r["errors"] for r in rows + in_app) else 1


if __name__ == "__main__":
    sys.exit(main())

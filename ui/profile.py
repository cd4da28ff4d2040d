"""A per-rerun timer of the page scripts, off unless CNSDIFF_PROFILE_PAGES is set.

CNSDIFF_PROFILE_PAGES=1 prints one line per rerun to stderr: the page, its script time in ms;
CNSDIFF_PROFILE_PAGES=N (N > 1) also runs the page under cProfile and prints its N costliest
functions (cumulative time)."""
from __future__ import annotations

import cProfile
import io
import os
import pstats
import sys
import time
from contextlib import contextmanager


def level() -> int:
    raw = os.environ.get("CNSDIFF_PROFILE_PAGES", "").strip()
    if not raw or raw in ("0", "false", "no"):
        return 0
    try:
        return max(int(raw), 1)
    except ValueError:
        return 1


@contextmanager
def page_timer(name: str, stream=None):
    """Time the block (one page's script run) and report it as `level()` says."""
    n = level()
    if not n:
        yield
        return
    out = stream or sys.stderr
    prof = cProfile.Profile() if n > 1 else None
    t = time.perf_counter()
    if prof:
        prof.enable()
    try:
        yield
    finally:
        if prof:
            prof.disable()
        ms = (time.perf_counter() - t) * 1000
        print(f"[cnsdiff profile] page {name}: {ms:.1f} ms", file=out)
        if prof:
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(n)
            lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
            print("\n".join(f"[cnsdiff profile]   {ln}" for ln in lines[-(n + 1):]), file=out)
        out.flush()


LAST: dict[str, float] = {}  # seconds of the latest run of each timed section (read by scripts/bench_app.py)


@contextmanager
def section(name: str, stream=None):
    """Time a part of a page that can rerun on its own (a fragment): kept in LAST[name] always
    (one perf_counter pair), printed like page_timer when CNSDIFF_PROFILE_PAGES is set."""
    t = time.perf_counter()
    try:
        yield
    finally:
        LAST[name] = time.perf_counter() - t
        if level():
            print(f"[cnsdiff profile] section {name}: {LAST[name] * 1000:.1f} ms", file=stream or sys.stderr)

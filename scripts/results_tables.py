"""Compact tables of docs/RESULTS.md from experiment CSVs (FHN columns refreshed from the runs).

    CNSDIFF_RUNS=RUNS .venv/bin/python scripts/results_tables.py results/untuned/sample*.csv -- results/untuned/coat*.csv

Prints, per group of CSVs (one dataset each, groups split by `--`): OOD Recall@20 with the
validation score in brackets (mean ± spread over seeds), and the FHN figures at the selected epoch
(trained-on negative, collapse onto the own positive, pre-mix h and its collapse, matched null,
ground truth where the world has one).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from cnsdiff_core.experiment import table_from_csvs  # noqa: E402
from cnsdiff_core.runs import RunStore  # noqa: E402


def fmt(row, col, d=4):
    v, s = row.get(col, np.nan), row.get(f"{col}_std", np.nan)
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return f"{v:.{d}f}" + (f" ± {s:.{d}f}" if int(row.get("seeds", 1)) > 1 and not np.isnan(s) else "")


def main(argv: list[str]) -> None:
    groups, cur = [], []
    for a in argv:
        if a == "--":
            groups.append(cur)
            cur = []
        else:
            cur.append(a)
    groups.append(cur)
    store = RunStore()
    for paths in [g for g in groups if g]:
        t = table_from_csvs(paths, refresh_store=store)
        s = t.summary
        print(f"\n#### {Path(paths[0]).stem}\n")
        print("| sampler | preset | seeds | OOD R@20 (valid R@20) | FHN trained-on | collapse | FHN pre-mix | "
              "pre-mix collapse | matched null (pre-mix) | true FHN |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for _, r in s.iterrows():
            print(f"| {r['sampler']} | {r['preset']} | {int(r['seeds'])} | {fmt(r, 'ood_recall@20')} "
                  f"({fmt(r, 'valid_recall@20')}) | {fmt(r, 'fhn', 3)} | {fmt(r, 'fhn_own_positive', 3)} | "
                  f"{fmt(r, 'fhn_synthesized', 3)} | {fmt(r, 'fhn_synthesized_own_positive', 3)} | "
                  f"{fmt(r, 'fhn_null', 3)} | {fmt(r, 'fhn_true', 3)} |")


if __name__ == "__main__":
    main(sys.argv[1:])

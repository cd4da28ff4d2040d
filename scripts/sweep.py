"""Resumable CNSDiff sweeps behind docs/RESULTS.md (one CSV row per run, appended as it finishes).

    .venv/bin/python scripts/sweep.py ramp   --out results/ramp_sweep.csv   [--part P --parts N]
    .venv/bin/python scripts/sweep.py causal --out results/causal_ablation.csv [--part P --parts N]

`ramp`: the mixing-ramp length (mix_ramp_epochs; 0 = over the epoch budget, the reference) and
the denoiser's per-t loss weighting, CNSDiff `tuned`, on the sample world and Coat, one seed;
chosen on IID validation Recall@20 only (the OOD columns are reported, never used).
`causal`: the causal ablation where the truth is known: synthetic worlds (the sample world's
generator settings) at confounding 0, 0.3, 0.6, 0.9 x causal none / kl / env-variance x seeds
0-2; OOD Recall@20 and the ground-truth FHN of the trained-on negative and of the pre-mix h.

A row already in --out (same dataset, overrides and seed) is skipped, so a killed sweep resumes
where it stopped; run parts in parallel on several cores (one thread each).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

import torch  # noqa: E402

from cnsdiff_core.config import preset_config  # noqa: E402
from cnsdiff_core.data import load_dataset  # noqa: E402
from cnsdiff_core.diagnostics import fhn_summary  # noqa: E402
from cnsdiff_core.samplers import METHOD  # noqa: E402
from cnsdiff_core.train import Trainer  # noqa: E402

WORLD = ("synthetic:n_users=600,n_items=800,dim=16,confounding={c},popularity_click_rate=0.05,relevance_rate=0.15,"
         "drift=0.3,popularity_drift=0.3,interactions_per_user=45,random_exposures_per_user=30,seed=2024")


def grid(name: str) -> list[tuple[str, dict, int]]:
    """(dataset, overrides of the `tuned` preset, seed) of every run of a sweep."""
    if name == "ramp":
        out = []
        for ds in ("sample", "coat"):
            for ramp in (0, 5, 10, 20, 40):
                out.append((ds, {"mix_ramp_epochs": ramp}, 0))
            for weighting in ("snr-diff-ref", "uniform"):
                out.append((ds, {"mix_ramp_epochs": 20, "loss_weighting": weighting}, 0))
        return out
    if name == "causal":
        # env-variance at the default weight 0.1 adds ~1e-5 to a denoiser loss of ~0.02 (the term is
        # ~1e-4 once losses are per-t normalized), so the strong-weight variant (10) is run after it
        kinds = [{"causal": "none"}, {"causal": "kl"}, {"causal": "env-variance"}]
        strong = [{"causal": "env-variance", "causal_weight": 10.0}]
        return ([(WORLD.format(c=c), kw, seed) for c in (0.0, 0.3, 0.6, 0.9) for kw in kinds for seed in range(3)]
                + [(WORLD.format(c=c), kw, seed) for c in (0.0, 0.3, 0.6, 0.9) for kw in strong for seed in range(3)])
    raise SystemExit(f"unknown sweep {name!r}: use ramp or causal")


FIELDS = ["dataset", "overrides", "seed", "valid_recall@20", "iid_recall@20", "ood_recall@20", "ood_ndcg@20",
          "best_epoch", "epochs_run", "fhn", "fhn_lo", "fhn_hi", "own_positive", "fhn_true", "fhn_true_lo",
          "fhn_true_hi", "premix_fhn", "premix_own_positive", "premix_fhn_true", "premix_null", "seconds"]


def done_keys(path: Path) -> set[tuple[str, str, int]]:
    if not path.exists():
        return set()
    with path.open(newline="", encoding="utf-8") as f:
        return {(r["dataset"], r["overrides"], int(r["seed"])) for r in csv.DictReader(f)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", choices=["ramp", "causal"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--part", type=int, default=0)
    ap.add_argument("--parts", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:  # exclusive create: parallel parts write the header once
        with out.open("x", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, fieldnames=FIELDS).writeheader()
    except FileExistsError:
        pass
    cache = {}
    for k, (dataset, kw, seed) in enumerate(grid(args.sweep)):
        key = (dataset, json.dumps(kw, sort_keys=True), seed)
        if k % args.parts != args.part or key in done_keys(out):
            continue
        if dataset not in cache:
            cache.clear()
            cache[dataset] = load_dataset(dataset)
        cfg = preset_config("tuned", sampler=METHOD, dataset=dataset, epochs=args.epochs, patience=args.patience,
                            seed=seed, test_eval="selected", cpu_threads=1, device="cpu", **kw)
        t = time.time()
        res = Trainer(cfg, cache[dataset]).fit()
        m, f = res.metrics, fhn_summary(res.diagnostics, METHOD, res.best_epoch)
        pre = [r for r in res.diagnostics if r["sampler"] == METHOD and r["step"] == -2
               and r["epoch"] == f.get("epoch")]
        pre = pre[0] if pre else {}
        row = {"dataset": dataset, "overrides": key[1], "seed": seed,
               **{c: m.get(c) for c in ("valid_recall@20", "iid_recall@20", "ood_recall@20", "ood_ndcg@20")},
               "best_epoch": res.best_epoch, "epochs_run": res.epochs_run, "fhn": f.get("observed"),
               "fhn_lo": (f.get("observed_ci") or [None])[0], "fhn_hi": (f.get("observed_ci") or [None, None])[1],
               "own_positive": f.get("own_positive"), "fhn_true": f.get("true"),
               "fhn_true_lo": (f.get("true_ci") or [None])[0], "fhn_true_hi": (f.get("true_ci") or [None, None])[1],
               "premix_fhn": pre.get("fhn"), "premix_own_positive": pre.get("own_positive"),
               "premix_fhn_true": pre.get("fhn_true"), "premix_null": pre.get("fhn_null"),
               "seconds": round(time.time() - t, 1)}
        with out.open("a", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, fieldnames=FIELDS).writerow(row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

"""CNSDiff knob sweep, selected on IID validation (docs/RESULTS.md section 3).

    .venv/bin/python scripts/knob_sweep.py --dataset sample --epochs 30 [--part 0 --parts 2]

Trains each variant (a preset plus overrides) with patience 10 on one CPU thread and prints one
JSON line per run: validation / IID / OOD Recall@20, OOD NDCG@20, the selected epoch, and the
observed FHN rate and mean hardness of the sampler's negatives at that epoch. Run two parts in
parallel on a 2-core machine. The OOD columns are reported, never used to choose.
"""
import argparse
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
from cnsdiff_core.samplers import HARD, METHOD, UNIFORM  # noqa: E402
from cnsdiff_core.train import Trainer  # noqa: E402

V1 = {"schedule": "cosine", "noise_scale": 1.0, "denoise_steps": 3, "hard_start": 10, "hard_stride": 4,
      "mix_a1": 9.0, "mix_b1": 1.0}  # the first `tuned` preset
M11 = {"mix_a1": 1.0, "mix_b1": 1.0}
HS2 = {"hard_start": 2, "hard_stride": 4}
GRID = [
    (UNIFORM, "tuned", {}), (HARD, "tuned", {}),
    (METHOD, "paper", {}), (METHOD, "reference", {}),
    (METHOD, "tuned", V1), (METHOD, "tuned", {**V1, "cl_weight": 0.0}),
    (METHOD, "tuned", {**V1, "causal": "none"}), (METHOD, "tuned", {**V1, "noise_scale": 0.3}),
    (METHOD, "tuned", {**V1, "denoise_steps": 8}),
    (METHOD, "tuned", {**V1, **M11}), (METHOD, "tuned", {**V1, "mix_a1": 1.0, "mix_b1": 9.0}),
    (METHOD, "tuned", {**V1, **M11, "denoise_steps": 8}), (METHOD, "tuned", {**V1, **M11, "causal": "kl"}),
    (METHOD, "tuned", {**V1, **M11, **HS2}), (METHOD, "tuned", {**V1, **M11, **HS2, "causal": "kl"}),
    (METHOD, "tuned", {**V1, **M11, **HS2, "causal": "none"}),
    (METHOD, "tuned", {**V1, **M11, **HS2, "denoise_steps": 8}),
    (METHOD, "tuned", {**V1, **M11, **HS2, "noise_scale": 0.5}),
    (METHOD, "tuned", {**V1, **M11, **HS2, "min_mix": 0.3}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="sample")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--part", type=int, default=0)
    ap.add_argument("--parts", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_dataset(args.dataset)
    for k, (sampler, preset, kw) in enumerate(GRID):
        if k % args.parts != args.part:
            continue
        cfg = preset_config(preset, sampler=sampler, dataset=args.dataset, epochs=args.epochs, patience=10, **kw)
        t = time.time()
        res = Trainer(cfg, data).fit()
        m = res.metrics
        mine = [r for r in res.diagnostics if r["sampler"] == sampler and r["step"] == -1
                and r["epoch"] == res.best_epoch]
        print(json.dumps({"dataset": args.dataset, "sampler": sampler, "preset": preset, "overrides": kw,
                          "valid_recall@20": m["valid_recall@20"], "iid_recall@20": m["iid_recall@20"],
                          "ood_recall@20": m["ood_recall@20"], "ood_ndcg@20": m["ood_ndcg@20"],
                          "best_epoch": res.best_epoch, "fhn": mine[0]["fhn"] if mine else None,
                          "hardness": mine[0]["hardness_mean"] if mine else None,
                          "seconds": round(time.time() - t)}), flush=True)


if __name__ == "__main__":
    main()

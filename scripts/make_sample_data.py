"""Generate the shipped sample data: the sample world and small import examples.

    python scripts/make_sample_data.py [--out sample_data]

Deterministic: rerunning writes the same files.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnsdiff_core.data.synthetic import WorldConfig, generate_world  # noqa: E402
from cnsdiff_core.data.world_files import save_world  # noqa: E402

SAMPLE_CONFIG = WorldConfig(n_users=600, n_items=800, dim=16, popularity_skew=1.0, confounding=0.7,
                            popularity_click_rate=0.05, relevance_rate=0.15, drift=0.3,
                            popularity_drift=0.3, interactions_per_user=45.0,
                            random_exposures_per_user=30, seed=2024)


def write_examples(world, out: Path, n_users: int = 40, seed: int = 7) -> None:
    """A small explicit-rating log (40 users) in three formats that parse to the same positives."""
    rng = np.random.default_rng(seed)
    users = np.arange(n_users)
    lp, lt = world.log_pairs, world.log_time
    sel = np.isin(lp[:, 0], users)
    pos = pd.DataFrame({"u": lp[sel, 0], "i": lp[sel, 1], "timestamp": lt[sel]})
    pos["rating"] = np.where(world.log_relevant[sel], 5, 4)
    # disliked items the users rated low (never in their log)
    n_neg = len(pos) // 3
    nu, ni = rng.choice(users, n_neg), rng.integers(world.n_items, size=n_neg)
    in_log = set(zip(pos["u"], pos["i"]))
    keep = np.array([(a, b) not in in_log for a, b in zip(nu, ni)])
    neg = pd.DataFrame({"u": nu[keep], "i": ni[keep],
                        "timestamp": rng.integers(lt.min(), lt.max(), size=keep.sum()),
                        "rating": rng.integers(1, 4, size=keep.sum())}).drop_duplicates(["u", "i"])
    df = pd.concat([pos, neg]).sort_values(["timestamp", "u", "i"], kind="stable")
    df = pd.DataFrame({"user": [f"u{u:03d}" for u in df["u"]], "item": [f"i{i:04d}" for i in df["i"]],
                       "rating": df["rating"].to_numpy(), "timestamp": df["timestamp"].to_numpy()})
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "ratings.csv", index=False)
    with open(out / "ratings.inter", "w", encoding="utf-8", newline="\n") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for r in df.itertuples(index=False):
            f.write(f"{r.user}\t{r.item}\t{r.rating}\t{r.timestamp}\n")
    with open(out / "ratings.txt", "w", encoding="utf-8", newline="\n") as f:
        for r in df.itertuples(index=False):
            f.write(f"{r.user} {r.item} {r.rating} {r.timestamp}\n")
    items = np.unique(df["item"])
    pd.DataFrame({"item": items, "title": world.item_titles[[int(s[1:]) for s in items]]}).to_csv(
        out / "items.csv", index=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "sample_data"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    world = generate_world(SAMPLE_CONFIG)
    save_world(world, out / "world")
    write_examples(world, out / "examples")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total / 1024:.0f} KiB): {world.summary()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

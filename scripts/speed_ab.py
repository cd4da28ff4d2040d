"""Before/after speed of an RNS and a CNSDiff epoch on a shared machine: two commits, round robin.

    .venv/bin/python scripts/speed_ab.py --base b586739 --datasets food,yelp2018 --rounds 4 --epochs 3
    .venv/bin/python scripts/speed_ab.py --base d58833d --samplers rns,mixgcf    (any samplers)

Each (commit, sampler) pair trains in its own process (one thread, the `tuned` preset): setup, one
warm-up epoch, then --epochs timed epochs; the four processes of a round run one after the other
in an order that rotates from round to round, so a machine whose load drifts affects every pair
alike. Printed per pair: the median epoch in wall time and in the process's CPU time (which leaves
out the time other jobs hold the core), and the minimum CPU time; then CNSDiff / RNS per commit.
The base commit is exported with `git archive` into a temporary folder; the other is this checkout.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cnsdiff_core.samplers import METHOD, UNIFORM  # noqa: E402  (the uniform baseline and the method)

ROOT = Path(__file__).resolve().parents[1]

ONE = """
import json, sys, time, torch
from cnsdiff_core.config import preset_config
from cnsdiff_core.data import load_dataset
from cnsdiff_core.train import Trainer
sampler, dataset, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = preset_config("tuned", sampler=sampler, dataset=dataset, epochs=1000, patience=0, device="cpu", cpu_threads=1)
trainer = Trainer(cfg, load_dataset(dataset))
trainer.setup()
# the public train_epoch(epoch) of the current trainer, or the older _train_epoch(epoch, t_start)
epoch = trainer.train_epoch if hasattr(trainer, "train_epoch") else (lambda e: trainer._train_epoch(e, time.perf_counter()))
epoch(0)
cpu, wall = [], []
for e in range(n):
    c, w = time.process_time(), time.perf_counter()
    epoch(e + 1)
    cpu.append(time.process_time() - c)
    wall.append(time.perf_counter() - w)
import cnsdiff_core
print(json.dumps({"cpu": cpu, "wall": wall, "code": cnsdiff_core.__file__}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the commit(s) to compare against, comma-separated (e.g. b586739)")
    ap.add_argument("--datasets", default="food")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per process")
    ap.add_argument("--samplers", default=f"{UNIFORM},{METHOD}",
                    help="comma-separated; each is also compared with the first")
    args = ap.parse_args()
    env = dict(os.environ)
    env.setdefault("CNSDIFF_DATA_ROOT", str(ROOT.parent / "shared" / "datasets"))
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for rev in args.base.split(","):
            folder = Path(tmp) / rev
            folder.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "cnsdiff_core"], capture_output=True,
                                     check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
            trees[rev] = str(folder)
        trees["this checkout"] = str(ROOT)
        samplers = [s for s in args.samplers.split(",") if s]
        pairs = [(code, s) for code in trees for s in samplers]
        for dataset in args.datasets.split(","):
            times: dict[tuple, dict[str, list[float]]] = {p: {"cpu": [], "wall": []} for p in pairs}
            for r in range(args.rounds):
                shift = r % len(pairs)
                for code, sampler in pairs[shift:] + pairs[:shift]:
                    # cwd = the tree: `python -c` puts the working directory before PYTHONPATH, so from
                    # this checkout's root every process would import this checkout's code
                    out = subprocess.run([sys.executable, "-c", ONE, sampler, dataset, str(args.epochs)],
                                         capture_output=True, text=True, cwd=trees[code],
                                         env=env | {"PYTHONPATH": trees[code]})
                    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
                    if not lines:
                        print(f"{code} {sampler}: failed: {out.stderr.strip().splitlines()[-1:]}")
                        continue
                    got = json.loads(lines[-1])
                    if not Path(got["code"]).resolve().is_relative_to(Path(trees[code]).resolve()):
                        raise SystemExit(f"{code}: the process imported {got['code']}, not the code under {trees[code]}")
                    for k in ("cpu", "wall"):
                        times[(code, sampler)][k] += got[k]
                    print(f"round {r + 1}: {code} {sampler} CPU s/epoch {', '.join(f'{x:.2f}' for x in got['cpu'])}",
                          flush=True)
            print(f"== {dataset}: {args.rounds} rounds x {args.epochs} epochs, one process per commit and sampler")
            for code in trees:
                med = {}
                for s in samplers:
                    t = times[(code, s)]
                    if not t["cpu"]:
                        continue
                    med[s] = (statistics.median(t["wall"]), statistics.median(t["cpu"]), min(t["cpu"]))
                    print(f"{code:14s} {s:8s} wall {med[s][0]:.3f} s/epoch, CPU {med[s][1]:.3f} s/epoch "
                          f"(min {med[s][2]:.3f})")
                first = samplers[0]
                for s in samplers[1:]:
                    if s in med and first in med:
                        m, u = med[s], med[first]
                        print(f"{code:14s} {s} / {first}: {m[0] / u[0]:.2f}x wall, {m[1] / u[1]:.2f}x CPU, "
                              f"{m[2] / u[2]:.2f}x CPU min")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Speed benchmark: seconds per epoch (RNS vs CNSDiff), evaluation time, peak memory, where the
time goes, and the share of the machine's measured matmul throughput an epoch reaches.

It measures and reports; it asserts nothing. Yields printable lines.
"""
from __future__ import annotations

import resource
import time
from typing import Iterator

import torch

from .config import preset_config
from .samplers import METHOD, UNIFORM, sampler_class
from .train import Trainer, device_label, resolve_device


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    """Measured fp32 dense matmul throughput of this device (GFLOP/s)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9


def epoch_flops(cfg, n_train: int, n_users: int, n_items: int, device_type: str = "cpu") -> dict[str, float]:
    """Floating-point operations of one training epoch, counted from the shapes (fwd + bwd ~ 3x fwd)."""
    B, d, L = min(cfg.batch_size, n_train), cfg.dim, cfg.layers
    n_batches = -(-n_train // B)
    nnz = 2 * n_train
    out = {"propagation": 3 * L * 2 * nnz * d * n_batches,  # sparse (U+I)x(U+I) times (U+I)xd per layer
           "bpr": 3 * 2 * 2 * B * d * n_batches}
    out |= sampler_class(cfg.sampler).epoch_flops(cfg, B, n_batches, device_type)
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_one(data, sampler: str, preset: str, epochs: int, device: str, threads: int | None = None) -> dict:
    extra = {} if threads is None else {"cpu_threads": threads}
    cfg = preset_config(preset, sampler=sampler, dataset=data.name, epochs=max(epochs, 1), patience=0,
                        device=device, **extra)
    trainer = Trainer(cfg, data, profile=True).setup()
    dev = trainer.device
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    trainer.train_epoch(0)  # warm-up epoch (allocator, kernels) not counted
    trainer.phase_seconds.clear()
    t = time.perf_counter()
    for e in range(1, epochs + 1):
        trainer.train_epoch(e)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    per_epoch = (time.perf_counter() - t) / epochs
    te = time.perf_counter()
    trainer.evaluate("iid", "ood", "valid")
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    eval_s = time.perf_counter() - te
    mem = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else peak_rss_mb()
    phases = {k: v / epochs for k, v in trainer.phase_seconds.items()}
    flops = epoch_flops(cfg, len(data.train), data.n_users, data.n_items, dev.type)
    return {"sampler": sampler, "preset": preset, "s_per_epoch": per_epoch, "eval_s": eval_s, "peak_mb": mem,
            "phases": phases, "flops": flops}


def run_bench(datasets=("food", "yelp2018"), epochs: int = 2, device: str = "auto",
              threads: int | None = None) -> Iterator[str]:
    from .data import load_dataset

    dev = resolve_device(device)
    if dev.type == "cpu":  # measure the peak with the thread count training will use
        from .config import TrainConfig

        n = TrainConfig().cpu_threads if threads is None else threads
        if n > 0:
            torch.set_num_threads(n)
    gflops = matmul_gflops(dev)
    yield f"device: {device_label(dev)}; measured fp32 matmul throughput {gflops:.1f} GFLOP/s"
    yield f"time per epoch = mean over {epochs} epoch(s) after one warm-up epoch; evaluation = valid + IID + OOD full ranking"
    for name in datasets:
        data = load_dataset(name)
        rows = [bench_one(data, s, "tuned", epochs, device, threads) for s in (UNIFORM, METHOD)]
        base, method = rows
        yield ""
        yield f"== {name}: {data.n_users} users, {data.n_items} items, {len(data.train)} training interactions"
        for r in rows:
            total_flops = sum(r["flops"].values())
            frac = total_flops / r["s_per_epoch"] / 1e9 / gflops
            yield (f"{r['sampler']:8s} {r['s_per_epoch']:.3f} s/epoch, evaluation {r['eval_s']:.3f} s, "
                   f"peak memory {r['peak_mb']:.0f} MB, {total_flops / 1e9:.2f} GFLOP/epoch = "
                   f"{frac * 100:.1f}% of measured matmul throughput")
            phase_total = sum(r["phases"].values()) or 1.0
            parts = ", ".join(f"{k} {v:.3f}s ({v / r['s_per_epoch'] * 100:.0f}%)"
                              for k, v in sorted(r["phases"].items(), key=lambda kv: -kv[1]))
            yield f"         where the time goes: {parts}; other {max(r['s_per_epoch'] - phase_total, 0):.3f}s"
            yield "         FLOP by part: " + ", ".join(f"{k} {v / 1e9:.2f}G" for k, v in r["flops"].items())
        yield (f"{sampler_class(METHOD).short_label()} / {sampler_class(UNIFORM).short_label()} time per epoch: "
               f"{method['s_per_epoch'] / base['s_per_epoch']:.2f}x")


def scale_one(n_users: int, n_items: int, per_user: int, sampler: str, device: str = "cpu") -> dict:
    """One world size: generate, split (popularity), train one epoch after a warm-up epoch,
    evaluate once. Meant to run in its own process so peak memory is this size's alone."""
    from .data import WorldConfig, generate_world, world_dataset

    t = time.perf_counter()
    world = generate_world(WorldConfig(n_users=n_users, n_items=n_items, interactions_per_user=per_user, seed=0))
    data = world_dataset(world, "popularity", seed=0)
    del world
    gen_s = time.perf_counter() - t
    cfg = preset_config("tuned", sampler=sampler, dataset="synthetic", epochs=2, patience=0, device=device,
                        eval_batch_users=256)
    trainer = Trainer(cfg, data).setup()
    trainer.train_epoch(0)
    t = time.perf_counter()
    trainer.train_epoch(1)
    epoch_s = time.perf_counter() - t
    t = time.perf_counter()
    trainer.evaluate("ood")
    eval_s = time.perf_counter() - t
    return {"users": data.n_users, "items": data.n_items, "train": len(data.train), "sampler": sampler,
            "generate_s": gen_s, "s_per_epoch": epoch_s, "eval_ood_s": eval_s, "peak_rss_mb": peak_rss_mb()}


def run_scale(sizes=(5_000, 10_000, 20_000), n_items: int = 100_000, per_user: int = 50,
              samplers=(UNIFORM, METHOD)) -> Iterator[str]:
    """World sizes with 100k items and n_users * per_user logged interactions, each size and
    sampler in a fresh process (peak memory per size)."""
    import json
    import subprocess
    import sys

    from .config import TrainConfig

    yield (f"synthetic worlds with {n_items} items, {per_user} logged interactions per user, popularity split; "
           f"one process per row; training threads: {TrainConfig().cpu_threads or torch.get_num_threads()}")
    yield "users  items   train_interactions  sampler   s/epoch  eval(OOD) s  peak RSS MB  (generation s)"
    for n_users in sizes:
        for sampler in samplers:
            code = (f"import json, warnings; warnings.filterwarnings('ignore'); from cnsdiff_core.bench import scale_one; "
                    f"print(json.dumps(scale_one({n_users}, {n_items}, {per_user}, {sampler!r})))")
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if out.returncode != 0:
                yield f"{n_users} users, {sampler}: failed: {out.stderr.strip().splitlines()[-1:]}"
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            yield (f"{r['users']:5d}  {r['items']:6d}  {r['train']:18d}  {r['sampler']:8s}  {r['s_per_epoch']:7.1f}  "
                   f"{r['eval_ood_s']:11.1f}  {r['peak_rss_mb']:11.0f}  ({r['generate_s']:.1f})")

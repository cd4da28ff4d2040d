"""Speed benchmark: seconds per epoch (RNS vs CNSDiff), evaluation time, peak memory, where the
time goes, and the share of the machine's measured matmul throughput an epoch reaches.

It measures and reports; it asserts nothing. Yields printable lines.
"""
from __future__ import annotations

import resource
import statistics
import time
from typing import Iterator

import torch

from . import fastops
from .config import preset_config
from .samplers import METHOD, UNIFORM, sampler_class
from .train import Trainer, device_label, resolve_device


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 10, fast: bool = False) -> float:
    """Measured fp32 dense matmul throughput of this device (GFLOP/s): torch's matmul, or with
    fast=True the product the CPU fast paths use (fastops.mm: oneDNN)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    mm = fastops.mm if fast else torch.mm
    mm(a, b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        mm(a, b)
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")


def launches_per_batch(trainer) -> dict[str, float]:
    """Kernel launches and CUDA graph replays per batch over one epoch (torch.profiler counts the
    runtime calls); meaningful on a GPU only."""
    from torch.profiler import ProfilerActivity, profile

    n_batches = -(-len(trainer.data.train) // trainer.cfg.batch_size)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        trainer.train_epoch(1)
        _sync(trainer.device)
    counts = {e.key: e.count for e in prof.key_averages()}
    return {"kernel launches": sum(counts.get(k, 0) for k in LAUNCHES) / n_batches,
            "graph replays": counts.get("cudaGraphLaunch", 0) / n_batches}


def _best_seconds(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def cnsdiff_floor(cfg, n_train: int, repeats: int = 30) -> dict[str, float]:
    """Seconds per epoch that CNSDiff's own dense products, random draws and exponentials take at
    best on this CPU: each of those its training step makes and an RNS step does not, at the step's
    shapes, on the kernels the step uses (oneDNN for the short sums, MKL for the long ones), timed
    alone with warm caches, the fastest of `repeats`, and added up over an epoch's batches. The step
    cannot take less than RNS's epoch plus this while computing the same numbers; everything else it
    does (element-wise passes, indexing, autograd, Adam over the denoiser) comes on top.

    Counted per batch of B rows (d = dim, H = denoiser_hidden, S = chains, N = contrastive
    negatives): synthesis, two B x d x H products per reverse step of every chain, the chains'
    start noise (S, B, d) and a (B, d) posterior draw per step above t = 1; the contrastive term,
    the (B, N) logits forward, and backward the two products of its gradients; the mixing weights'
    Beta draw (B gammas of two), the anchor's jitter (B, d) and the negatives' permutation (2B);
    the denoiser's update, its two forward products and three backward ones (the input's gradient
    is not needed), the step draw (B,), its noise (B, d) and the dropout's uniforms (B, d); the
    exponentials: the logits' exp (B, N), a sigmoid (B, H) per reverse step (the folded tanh) and
    the update's tanh (B, H)."""
    B, d, H = min(cfg.batch_size, n_train), cfg.dim, cfg.denoiser_hidden
    steps = cfg.hardness_steps()
    chain_t = [list(range(cfg.steps if cfg.reverse_from_T else s, (0 if cfg.reverse_from_T else cfg.stop_for(s)), -1))
               for s in steps]
    sizes = [B] * (n_train // B) + ([n_train % B] if n_train % B else [])
    out = {"synthesis products": 0.0, "contrastive products": 0.0, "denoiser products": 0.0, "random draws": 0.0,
           "exponentials": 0.0}
    g = torch.Generator().manual_seed(0)
    for rows in sorted(set(sizes)):
        count = sizes.count(rows)
        N = cfg.cl_negatives if 0 < cfg.cl_negatives < 2 * rows else 2 * rows
        x, w, w2 = torch.randn(rows, d), torch.randn(d, H), torch.randn(H, d)
        hid = torch.randn(rows, H)
        a, n, p = torch.randn(rows, d), torch.randn(N, d), torch.randn(rows, N)
        wt, w2t = w.T.contiguous(), w2.T.contiguous()
        n_steps = sum(len(c) for c in chain_t)
        n_post = sum(1 for c in chain_t for t in c if t > 1) if cfg.posterior_noise else 0
        conc = torch.tensor([1.0, 1.0]).expand(rows, 2)

        def synthesis():
            for _ in range(n_steps):
                fastops.mm(x, w)
                fastops.addmm(x, hid, w2, beta=0.5, alpha=0.5)

        def contrastive():
            fastops.linear(a, n)
            p.mm(n)
            p.t().mm(a)

        def denoiser():
            fastops.linear(x, wt)
            fastops.linear(hid, w2t)
            fastops.linear(x, w2)  # the hidden layer's input gradient: (B, d) x (d, H), a short sum
            x.t().mm(hid)  # the weights' gradients sum over the batch: MKL
            hid.t().mm(x)

        def draws():
            torch.randn((len(steps), rows, d), generator=g)
            for _ in range(n_post):
                torch.randn((rows, d), generator=g)
            torch._sample_dirichlet(conc, generator=g)
            torch.randn((rows, d), generator=g)
            torch.randperm(2 * rows, generator=g)
            torch.randint(1, cfg.steps + 1, (rows,), generator=g)
            torch.randn((rows, d), generator=g)
            torch.rand((rows, d), generator=g)

        def exponentials():
            if cfg.cl_weight > 0:
                torch.exp(p)
            for _ in range(n_steps):
                torch.sigmoid(hid)
            if cfg.train_denoiser:
                torch.tanh(hid)

        parts = {"synthesis products": synthesis, "contrastive products": contrastive if cfg.cl_weight > 0 else None,
                 "denoiser products": denoiser if cfg.train_denoiser else None, "random draws": draws,
                 "exponentials": exponentials}
        for key, fn in parts.items():
            if fn is not None:
                out[key] += count * _best_seconds(fn, repeats)
    return out


def bench_samplers(data, samplers=(UNIFORM, METHOD), preset: str = "tuned", epochs: int = 1, repeats: int = 3,
                   device: str = "auto", threads: int | None = None, cuda_graph: bool = False) -> list[dict]:
    """Seconds per epoch of each sampler, measured in one process with the samplers' epochs
    interleaved (RNS, CNSDiff, RNS, CNSDiff, ...: a machine whose load changes affects both alike):
    `repeats` rounds of `epochs` epochs each after one warm-up epoch; the median round, in wall
    time and in this process's CPU time. Then one profiled epoch each: where the time goes (per
    phase, with a device sync around each on a GPU), and on a GPU the kernel launches and graph
    replays per batch; then evaluation (valid + IID + OOD full ranking)."""
    extra = {} if threads is None else {"cpu_threads": threads}
    trainers = {}
    for s in samplers:
        cfg = preset_config(preset, sampler=s, dataset=data.name, epochs=1000, patience=0, device=device,
                            cuda_graph=cuda_graph, **extra)
        trainers[s] = Trainer(cfg, data).setup()
    dev = next(iter(trainers.values())).device
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for t in trainers.values():
        t.train_epoch(0)  # warm-up (allocator, kernels; graphs captured) not counted
    wall: dict[str, list[float]] = {s: [] for s in trainers}
    cpu: dict[str, list[float]] = {s: [] for s in trainers}
    for r in range(repeats):
        for s, t in trainers.items():
            _sync(dev)
            w, c = time.perf_counter(), time.process_time()
            for e in range(epochs):
                t.train_epoch(1 + r * epochs + e)
            _sync(dev)
            wall[s].append((time.perf_counter() - w) / epochs)
            cpu[s].append((time.process_time() - c) / epochs)
    rows = []
    for s, t in trainers.items():
        t.profile = True
        t.phase_seconds.clear()
        t.train_epoch(1)
        t.profile = False
        row = {"sampler": s, "s_per_epoch": statistics.median(wall[s]), "cpu_s_per_epoch": statistics.median(cpu[s]),
               "rounds": wall[s], "phases": dict(t.phase_seconds), "device": dev.type,
               "flops": epoch_flops(t.cfg, len(data.train), data.n_users, data.n_items, dev.type)}
        if dev.type == "cuda":
            row |= launches_per_batch(t)
        te = time.perf_counter()
        t.evaluate("valid", "iid", "ood")
        _sync(dev)
        row["eval_s"] = time.perf_counter() - te
        row["peak_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else peak_rss_mb()
        rows.append(row)
    return rows


def bench_one(data, sampler: str, preset: str, epochs: int, device: str, threads: int | None = None) -> dict:
    """One sampler on its own (bench_samplers with one sampler and one round)."""
    return bench_samplers(data, (sampler,), preset, epochs, 1, device, threads)[0]


def run_bench(datasets=("food", "yelp2018"), epochs: int = 1, device: str = "auto",
              threads: int | None = None, repeats: int = 3, cuda_graph: bool = False,
              samplers: list[str] | None = None) -> Iterator[str]:
    from .data import load_dataset

    dev = resolve_device(device)
    if dev.type == "cpu":  # measure the peak with the thread count training will use
        from .config import TrainConfig

        n = TrainConfig().cpu_threads if threads is None else threads
        if n > 0:
            torch.set_num_threads(n)
    gflops = matmul_gflops(dev)
    peak, peak_name = gflops, "torch.matmul"
    if dev.type == "cpu" and fastops.AVAILABLE:
        fast = matmul_gflops(dev, fast=True)
        yield (f"device: {device_label(dev)}; measured fp32 matmul throughput (2048 x 2048): torch.matmul (MKL) "
               f"{gflops:.1f} GFLOP/s, oneDNN (the CPU fast paths' products) {fast:.1f} GFLOP/s")
        if fast > gflops:
            peak, peak_name = fast, "oneDNN"
    else:
        yield f"device: {device_label(dev)}; measured fp32 matmul throughput {gflops:.1f} GFLOP/s"
    mode = ("the training step captured as a CUDA graph (cuda_graph)" if cuda_graph and dev.type == "cuda" else
            "the static step run eagerly (cuda_graph on a CPU)" if cuda_graph else "eager training step")
    yield (f"{mode}; time per epoch = median of {repeats} rounds of {epochs} epoch(s), the samplers' epochs "
           f"interleaved in this process, after one warm-up epoch each; evaluation = valid + IID + OOD full ranking; "
           f"share of peak = counted FLOP / time / the {peak_name} throughput")
    for name in datasets:
        data = load_dataset(name)
        rows = bench_samplers(data, tuple(samplers or (UNIFORM, METHOD)), "tuned", epochs, repeats, device, threads,
                              cuda_graph)
        yield ""
        yield f"== {name}: {data.n_users} users, {data.n_items} items, {len(data.train)} training interactions"
        for r in rows:
            total_flops = sum(r["flops"].values())
            frac = total_flops / r["s_per_epoch"] / 1e9 / peak
            cpu_part = f" (CPU time {r['cpu_s_per_epoch']:.3f} s)" if dev.type == "cpu" else ""
            yield (f"{r['sampler']:8s} {r['s_per_epoch']:.3f} s/epoch{cpu_part}, rounds "
                   f"{', '.join(f'{x:.3f}' for x in r['rounds'])}; evaluation {r['eval_s']:.3f} s, "
                   f"peak memory {r['peak_mb']:.0f} MB, {total_flops / 1e9:.2f} GFLOP/epoch = "
                   f"{frac * 100:.1f}% of the measured matmul peak")
            phase_total = sum(r["phases"].values())
            profiled = phase_total or 1.0
            parts = ", ".join(f"{k} {v:.3f}s ({v / profiled * 100:.0f}%)"
                              for k, v in sorted(r["phases"].items(), key=lambda kv: -kv[1]))
            yield f"         where the time goes: {parts} (one profiled epoch)"
            if "kernel launches" in r:
                yield (f"         per batch: {r['kernel launches']:.1f} kernel launches, "
                       f"{r['graph replays']:.2f} CUDA graph replays (torch.profiler, one epoch)")
            yield "         FLOP by part: " + ", ".join(f"{k} {v / 1e9:.2f}G" for k, v in r["flops"].items())
        base = next((r for r in rows if r["sampler"] == UNIFORM), None)
        for r in rows:
            if base is None or r is base:
                continue
            ratio = r["s_per_epoch"] / base["s_per_epoch"]
            cpu_ratio = (f" (CPU time: {r['cpu_s_per_epoch'] / base['cpu_s_per_epoch']:.2f}x)"
                         if dev.type == "cpu" else "")
            yield (f"{sampler_class(r['sampler']).short_label()} / {sampler_class(UNIFORM).short_label()} time per "
                   f"epoch: {ratio:.2f}x{cpu_ratio}")
        method = next((r for r in rows if r["sampler"] == METHOD), None)
        if dev.type == "cpu" and base is not None and method is not None:
            floor = cnsdiff_floor(preset_config("tuned", sampler=METHOD, dataset=data.name), len(data.train))
            total = sum(floor.values())
            yield (f"floor: {sampler_class(METHOD).short_label()}'s own products, random draws and exponentials "
                   f"alone take "
                   f"{total:.3f} s/epoch at best (" + ", ".join(f"{k} {v:.3f}" for k, v in floor.items()) + "); "
                   f"with {sampler_class(UNIFORM).short_label()}'s CPU time its ratio cannot go below "
                   f"{(base['cpu_s_per_epoch'] + total) / base['cpu_s_per_epoch']:.2f}x with these numbers; "
                   f"the rest of its extra time ({method['cpu_s_per_epoch'] - base['cpu_s_per_epoch'] - total:.3f} s) "
                   f"is element-wise passes, indexing, autograd and the denoiser's optimizer")


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

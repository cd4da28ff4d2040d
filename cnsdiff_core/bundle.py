"""The workshop bundle: a run store with every sampler trained on the sample world at two
confounding strengths (and optionally a real dataset), plus the 2-D maps the explore pages draw,
so a read-only app answers at once for a room full of browsers.

    python -m cnsdiff_core precompute [--runs-dir runs/workshop] [--epochs N] [--real-dataset coat]

Layout (relative paths only, so the folder can be zipped and carried):

  bundle.json               the manifest: name, plan, timing, one entry per run (its folder name)
  <run_id>/                 an ordinary run folder (see runs.py), plus
    projection_pca.npz      item coordinates and the PCA's mean / components (exact transform)
    projection_umap.npz     item coordinates of a cosine UMAP, and the exact UMAP placement of the
                            run's stored synthesized negatives; other vectors are placed by
                            interpolating between their nearest items (see StoredProjection)

Everything is stored as plain arrays (np.load with allow_pickle=False reads it back); nothing here
pickles. Finished runs drop checkpoint.pt (only needed to resume) unless asked to keep it.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .samplers import BASELINES, METHOD, UNIFORM, sampler_class
from .stored_maps import PROJECTION_FILES, StoredProjection, fingerprint, load_projection, save_projections

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = "cnsdiff-bundle"
# The sample world (confounding 0.7, seed 2024) and the same world with weak confounding.
BUNDLE_DATASETS = ("sample", "synthetic:confounding=0.2,seed=2024")
METHOD_PRESETS = ("tuned", "paper", "reference")  # the method's presets; every baseline trains with tuned


# =============================================================================== the plan
@dataclass(frozen=True)
class PlannedRun:
    dataset: str
    sampler: str
    preset: str
    role: str  # 'demo' (what Home shows) or 'grid'

    @property
    def key(self) -> str:
        return f"{self.dataset} · {self.sampler} · {self.preset}"


def bundle_plan(real_dataset: str | None = None, datasets: tuple[str, ...] | None = None,
                samplers: tuple[str, ...] | None = None, with_demo: bool = True) -> list[PlannedRun]:
    """Every (dataset, sampler, preset) of the bundle: baselines with preset tuned, CNSDiff with
    tuned, paper and reference, on each dataset; plus the one-click demo (CNSDiff and RNS, preset
    demo, sample world) so Home shows its result without training."""
    names = list(datasets or BUNDLE_DATASETS)
    if real_dataset and real_dataset not in names:
        names.append(real_dataset)
    chosen = tuple(samplers or (*BASELINES, METHOD))
    plan = []
    if with_demo and "sample" in names:
        plan += [PlannedRun("sample", s, "demo", "demo") for s in (METHOD, UNIFORM) if s in chosen]
    for name in names:
        plan += [PlannedRun(name, s, "tuned", "grid") for s in BASELINES if s in chosen]
        if METHOD in chosen:
            plan += [PlannedRun(name, METHOD, p, "grid") for p in METHOD_PRESETS]
    return plan


def _config(item: PlannedRun, epochs: int, overrides: dict):
    from .config import preset_config

    return preset_config(item.preset, dataset=item.dataset, sampler=item.sampler, epochs=epochs, **overrides)


def _cost(cfg) -> float:
    """Rough relative cost, to start the longest runs first when several workers share the CPU."""
    if not sampler_class(cfg.sampler).has_denoiser:  # synthesis by diffusion is the costly part
        return 1.0
    return 4.0 if cfg.cl_negatives == 0 else 2.0


# =============================================================================== precompute
def precompute_bundle(name: str = "workshop", runs_dir: str | os.PathLike | None = None,
                      epochs: int | None = None, real_dataset: str | None = None, *,
                      datasets: tuple[str, ...] | None = None, samplers: tuple[str, ...] | None = None,
                      overrides: dict | None = None, workers: int | None = None, threads: int | None = None,
                      projections: tuple[str, ...] = ("pca", "umap"),
                      keep_checkpoints: bool = False) -> Iterator[str]:
    """Train the bundle into `runs_dir` (default $CNSDIFF_RUNS or runs/) and write bundle.json.
    Yields one progress line at a time. Every setting is validated before anything trains.

    epochs: per run (default: the `demo` preset's budget). workers: training processes at once
    (default: 1 with a GPU, else up to 2); threads: torch threads per worker (default: its share of
    the CPUs; 1 is fastest on a busy machine). A failed run is
    recorded in the manifest and the others go on; at the end StoreError names the failures."""
    from .config import PRESETS, ConfigError
    from .data import load_dataset
    from .runs import RunStore, StoreError, write_json

    started = time.time()
    store = RunStore(runs_dir) if runs_dir is not None else RunStore()
    root = store.root
    if not str(name).strip() or any(c in str(name) for c in "/\\"):
        raise ConfigError(f"bundle name {name!r} is invalid; use a plain word such as workshop.")
    n_epochs = int(epochs) if epochs is not None else int(PRESETS["demo"].get("epochs", 15))
    if n_epochs < 1:
        raise ConfigError(f"epochs={epochs!r} is invalid: it must be an integer >= 1.")
    for method in projections:
        if method not in PROJECTION_FILES:
            raise ConfigError(f"projection {method!r} is unknown; use pca and/or umap.")
    plan = bundle_plan(real_dataset, datasets, samplers)
    configs = [_config(item, n_epochs, dict(overrides or {})) for item in plan]  # ConfigError first
    for dataset in dict.fromkeys(item.dataset for item in plan):  # DataError before any training
        load_dataset(dataset, None)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the runs folder {root} ({exc.strerror}); pick a writable "
                         "--runs-dir.") from None
    before = {p.name for p in root.iterdir() if p.is_dir()}
    n_workers = _workers(workers, configs)
    threads = int(threads) if threads else max(1, (os.cpu_count() or 1) // n_workers)
    yield (f"bundle {name!r}: {len(plan)} runs ({len(dict.fromkeys(i.dataset for i in plan))} datasets, "
           f"{n_epochs} epochs each) into {root}; {n_workers} worker(s) x {threads} thread(s)")
    if before:
        yield f"note: {len(before)} folder(s) already in {root} are kept but are not part of this bundle"

    jobs = [(i, cfg.to_dict()) for i, cfg in enumerate(configs)]
    results: dict[int, dict] = {}
    for idx, res in _run_all(jobs, str(root), n_workers, threads, tuple(projections), keep_checkpoints,
                             [_cost(c) for c in configs]):
        results[idx] = res
        item = plan[idx]
        if res.get("error"):
            yield f"[{len(results)}/{len(plan)}] {item.key}: FAILED ({res['error']})"
        else:
            ood = res.get("ood_recall@20")
            yield (f"[{len(results)}/{len(plan)}] {item.key}: {res['status']} in {res['seconds']:.1f}s"
                   f" (maps {res['map_seconds']:.1f}s); OOD R@20 "
                   f"{'n/a' if ood is None else f'{ood:.4f}'}; run {res['run_id']}")

    entries = []
    for idx, item in enumerate(plan):
        res = results.get(idx, {"error": "not run"})
        entries.append({"run_id": res.get("run_id"), "dataset": item.dataset, "sampler": item.sampler,
                        "preset": item.preset, "role": item.role, "status": res.get("status", "failed"),
                        "error": res.get("error", ""), "seconds": res.get("seconds"),
                        "map_seconds": res.get("map_seconds"), "cpu_seconds": res.get("cpu_seconds"),
                        "projections": res.get("projections", []),
                        "ood_recall@20": res.get("ood_recall@20"), "iid_recall@20": res.get("iid_recall@20")})
    failed = [e for e in entries if e["error"]]
    seconds = time.time() - started
    cpu = sum(e["cpu_seconds"] or 0.0 for e in entries)
    manifest = {"format": BUNDLE_FORMAT, "version": 1, "name": str(name),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(seconds, 1),
                "cpu_seconds": round(cpu, 1),
                "epochs": n_epochs, "workers": n_workers, "threads_per_worker": threads,
                "datasets": list(dict.fromkeys(item.dataset for item in plan)),
                "samplers": sorted({item.sampler for item in plan}),
                "projections": list(projections), "runs": entries,
                "software": _versions()}
    write_json(root / BUNDLE_FILE, manifest)
    _make_readable(root)
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    yield (f"wrote {root / BUNDLE_FILE}: {len(entries) - len(failed)} of {len(entries)} runs, "
           f"{size / 1e6:.1f} MB, {seconds:.0f} s wall, {cpu:.0f} s CPU in the training workers. Serve it "
           f"read-only: CNSDIFF_RUNS={root} "
           f"streamlit run app.py -- --read-only")
    if failed:
        raise StoreError(f"{len(failed)} of {len(entries)} bundle runs failed (first: {failed[0]['dataset']} "
                         f"{failed[0]['sampler']} {failed[0]['preset']}: {failed[0]['error']}); see "
                         f"{root / BUNDLE_FILE}.")


def _workers(workers: int | None, configs) -> int:
    if workers is not None:
        return max(1, int(workers))
    try:
        import torch

        if torch.cuda.is_available() and any(c.device in ("auto", "cuda") for c in configs):
            return 1  # one GPU: runs one after another
    except ImportError:  # pragma: no cover
        pass
    return max(1, min(2, os.cpu_count() or 1, len(configs)))


def _run_all(jobs, root: str, n_workers: int, threads: int, projections, keep_checkpoints: bool,
             costs: list[float]) -> Iterator[tuple[int, dict]]:
    """(index, result) as runs finish; in this process when one worker, else in spawned processes
    (the costliest first, so the last one to finish is short)."""
    if n_workers == 1:
        import torch

        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for idx, cfg in jobs:
                yield idx, _train_one(cfg, root, projections, keep_checkpoints)
        finally:
            torch.set_num_threads(old)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    order = sorted(jobs, key=lambda j: -costs[j[0]])
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=mp.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(_train_one, cfg, root, projections, keep_checkpoints): idx for idx, cfg in order}
        for fut in as_completed(futures):
            try:
                res = fut.result()
            except Exception as exc:  # a worker died (out of memory, killed): the others go on
                res = {"error": f"{type(exc).__name__}: {exc}"}
            yield futures[fut], res


def _init_worker(threads: int) -> None:
    import warnings

    import torch

    warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
    torch.set_num_threads(threads)


def _train_one(cfg_dict: dict, root: str, projections, keep_checkpoints: bool) -> dict:
    """Train one run, then store its maps and make its folder relocatable. Never raises."""
    from .config import TrainConfig
    from .runs import RunStore
    from .recorder import train_and_store

    created: list[str] = []
    cpu0 = time.process_time()
    try:
        cfg = TrainConfig.from_dict(cfg_dict)
        store = RunStore(root)
        run_id, res = train_and_store(cfg, store, on_created=created.append)
        t0 = time.time()
        run = store.load(run_id)
        done = save_projections(run, projections)
        relocatable_dataset_info(run.path)
        if not keep_checkpoints and res.status in ("finished", "early-stopped"):
            (run.path / "checkpoint.pt").unlink(missing_ok=True)
        m = res.metrics
        return {"run_id": run_id, "status": res.status, "seconds": res.seconds, "map_seconds": time.time() - t0,
                "cpu_seconds": time.process_time() - cpu0,
                "projections": done, "ood_recall@20": m.get("ood_recall@20"),
                "iid_recall@20": m.get("iid_recall@20")}
    except Exception as exc:  # recorded in the manifest; the run folder (if any) says 'failed'
        return {"run_id": created[0] if created else None, "status": "failed",
                "error": str(exc) or type(exc).__name__}


def relocatable_dataset_info(run_path: Path) -> None:
    """dataset.json keeps no absolute path: a world folder becomes its 'synthetic world {config}'
    description (what the FHN page reads its confounding from), anything else its folder name."""
    from .runs import write_json

    p = Path(run_path) / "dataset.json"
    try:
        info = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    source = str(info.get("source", "") or "")
    if not source or not os.path.isabs(source):
        return
    world = Path(source) / "world.json"
    try:
        cfg = json.loads(world.read_text(encoding="utf-8"))["config"] if world.is_file() else None
    except (OSError, ValueError, KeyError, TypeError):
        cfg = None
    info["source"] = ("synthetic world " + json.dumps(cfg, sort_keys=True)) if isinstance(cfg, dict) \
        else Path(source).name
    write_json(p, info)


def _make_readable(root: Path) -> None:
    """Run files are written 0600 (temp file + rename); a bundle is meant to be copied and served
    by another account, so make it world-readable (never writable)."""
    for p in [root, *root.rglob("*")]:
        try:
            if p.is_symlink():
                continue
            mode = p.stat().st_mode
            p.chmod((mode | (0o755 if p.is_dir() else 0o644)) & 0o7755)
        except OSError:
            pass


def _versions() -> dict:
    import platform

    out = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("torch", "sklearn", "umap"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - informational only
            out[mod] = "missing"
    return out


def read_manifest(root: str | os.PathLike | None = None) -> dict | None:
    """bundle.json of a runs folder, or None when there is none or it cannot be read."""
    from .runs import default_root

    p = Path(root if root is not None else default_root()) / BUNDLE_FILE
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == BUNDLE_FORMAT else None




__all__ = ["precompute_bundle", "bundle_plan", "read_manifest", "save_projections", "load_projection",
           "StoredProjection", "fingerprint", "BUNDLE_FILE", "PROJECTION_FILES", "BUNDLE_DATASETS"]

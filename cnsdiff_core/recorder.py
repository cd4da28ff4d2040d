"""Recording a run into the store (`runs`): the trainer callback that writes everything the app
shows as the run goes (`RunWriter`), training a config into a new run folder (`train_and_store`)
and continuing an interrupted one from its last checkpoint (`resume_run`)."""
from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from .config import ConfigError, TrainConfig
from .events import BestSelected, Checkpoint, EpochDone, Event, Finished, MapsProgress, Snapshot, Started
from .runs import RUNS_ENV, Run, RunInfo, RunStore, StoreError, write_csv, write_json, write_npz, write_torch


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    """What produced a run: the git commit of this checkout (None outside one), whether tracked
    files had uncommitted changes, and the torch version."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    commit, dirty = None, None
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if out.returncode == 0:
            commit = out.stdout.strip()
            st = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=5)
            dirty = bool(st.stdout.strip()) if st.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"commit": commit, "dirty": dirty, "torch": torch.__version__}


class RunWriter:
    """A trainer callback that writes everything the app shows, as the run goes."""

    def __init__(self, path: Path, cfg: TrainConfig, data_info: dict, resume: bool = False,
                 resume_epochs: int | None = None, meta: dict | None = None) -> None:
        self.path, self.cfg = Path(path), cfg
        self.run_id = self.path.name
        self.history: list[dict] = []
        self.diag: list[dict] = []
        self.created = time.time()
        self.status: dict[str, Any] = {"status": "running", "message": "", "created": self.created,
                                       "pid": os.getpid(), "device": "", "epochs_run": 0, "code": code_version()}
        if meta:  # who asked for the run, e.g. {"tune": {"study": ..., "trial": ...}}
            self.status.update(meta)
        if resume:
            old = Run(RunInfo(self.run_id, self.path, "running", "", cfg.to_dict(), {}, self.created))
            self.history = old.history().to_dict("records")
            self.diag = old.diagnostics().to_dict("records")
            if resume_epochs is not None:
                # a kill can land after an epoch's row was written but before its checkpoint: keep
                # only the epochs the checkpoint covers, as training restarts after them
                for name, rows in (("history.csv", self.history), ("diagnostics.csv", self.diag)):
                    kept = [r for r in rows if int(r["epoch"]) <= resume_epochs]
                    if len(kept) < len(rows):
                        rows[:] = kept
                        write_csv(self.path / name, kept)
            self.status |= {k: v for k, v in json.loads((self.path / "status.json").read_text()).items()
                            if k in ("created", "device", "code", "tune")}
            self.status["resumed_code"] = code_version()
            self.status["status"] = "running"
            self.status["pid"] = os.getpid()
        else:
            write_json(self.path / "config.json", cfg.to_dict())
            write_json(self.path / "dataset.json", data_info)
        self._write_status()

    def _write_status(self) -> None:
        self.status["updated"] = time.time()
        write_json(self.path / "status.json", self.status)

    def __call__(self, event: Event) -> None:
        if isinstance(event, Started):
            self.status["device"] = event.device
            self._write_status()
        elif isinstance(event, EpochDone):
            self.history.append(event.record)
            self.diag.extend(event.diagnostics)
            write_csv(self.path / "history.csv", self.history)
            write_csv(self.path / "diagnostics.csv", self.diag)
            self.status["epochs_run"] = event.record["epoch"]
            self._write_status()
        elif isinstance(event, BestSelected):
            write_torch(self.path / "model.pt", {"model": event.state["model"], "sampler": event.state["sampler"],
                                                 "epoch": event.epoch})
        elif isinstance(event, Checkpoint):
            write_torch(self.path / "checkpoint.pt", event.state)
        elif isinstance(event, Snapshot):
            flat = {f"{group}/{name}": np.asarray(arr) for group, d in event.raw.items() for name, arr in d.items()}
            write_npz(self.path / f"negatives_{event.epoch}.npz", flat)
        elif isinstance(event, Finished):
            res = event.result
            seen = {r.get("epoch") for r in self.diag}
            late = [r for r in event.late_diagnostics if r["epoch"] not in seen]  # a resumed run may hold them
            if late:
                self.diag.extend(late)
                write_csv(self.path / "diagnostics.csv", self.diag)
            write_json(self.path / "final.json", {"best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
                                                  "seconds": res.seconds, **res.metrics})
            if res.user_emb is not None:
                write_npz(self.path / "embeddings.npz", {"user": res.user_emb, "item": res.item_emb})
            if res.per_user:
                write_npz(self.path / "per_user.npz", res.per_user)
            self.status.update(status=res.status, message=res.message, seconds=res.seconds,
                               best_epoch=res.best_epoch, epochs_run=res.epochs_run)
            self._write_status()

    def fail(self, message: str) -> None:
        self.status.update(status="failed", message=message)
        self._write_status()

    def fail_quietly(self, exc: BaseException) -> None:
        """Mark the run failed with the exception's message; never raises (the original error is
        the one to report: when the disk is full, status.json cannot be written either)."""
        ours = isinstance(exc, (ConfigError, ValueError, RuntimeError))  # the engine's one-sentence errors
        message = str(exc) if ours and str(exc) else f"{type(exc).__name__}: {exc}"
        try:
            self.fail(message)
        except (StoreError, OSError):
            pass


def train_and_store(cfg: TrainConfig, store: RunStore | None = None, callbacks: Iterable = (),
                    should_stop: Callable[[], bool | str] | None = None, data=None,
                    on_created: Callable[[str], None] | None = None, meta: dict | None = None,
                    maps: tuple[str, ...] = ()):
    """Load the data, train, and write the run. Returns (run_id, TrainResult).

    meta: extra keys for status.json (a tuning trial records {"tune": {study, trial, ...}}).
    maps: 2-D item maps ('pca', 'umap') to compute and store with the run once it has trained, so
    the explore pages never fit one while people click (callbacks get MapsProgress events). The
    app's jobs and the `train` command ask for both; tuning trials and grid cells for none.
    A failure (bad data, NaN loss) marks the run 'failed' with the message and re-raises."""
    from .data import load_dataset, shift_report
    from .train import Trainer

    store = store or RunStore()
    if data is None:
        data = load_dataset(cfg.dataset, cfg.shift, seed=cfg.data_seed)
    info = {"name": data.name, "shift": data.shift, "stats": data.stats(), "notes": data.notes,
            "source": data.source}
    try:
        info["shift_report"] = shift_report(data)
    except Exception as exc:  # the report is informative only; never lose a run over it
        info["shift_report"] = {"error": str(exc)}
    writer = create_run(store, cfg, info, meta)
    if on_created:
        on_created(writer.run_id)
    try:
        result = Trainer(cfg, data, [writer, *callbacks], should_stop).fit()
    except Exception as exc:  # any failure is recorded on the run, then raised as it was
        writer.fail_quietly(exc)
        raise
    store_maps(store, writer.run_id, result, maps, callbacks, should_stop)
    return writer.run_id, result


def resume_run(run_id: str, store: RunStore | None = None, callbacks: Iterable = (),
               should_stop: Callable[[], bool] | None = None, maps: tuple[str, ...] = ()):
    """Continue an interrupted or stopped run from its last checkpoint, in the same folder
    (maps: as for train_and_store)."""
    from .data import load_dataset
    from .train import Trainer

    store = store or RunStore()
    info = store.info(run_id)
    if info.status not in ("interrupted", "stopped"):
        raise StoreError(f"run {run_id} is {info.status}; only interrupted or stopped runs can be resumed.")
    if not info.resumable:
        raise StoreError(f"run {run_id} was {info.message}; a pruned trial is not resumed (run the study on).")
    run = Run(info)
    state = run.checkpoint()
    if state is None:
        raise StoreError(f"run {run_id} has no checkpoint.pt; train it again instead.")
    cfg = run.config
    data = load_dataset(cfg.dataset, cfg.shift, seed=cfg.data_seed)
    writer = RunWriter(info.path, cfg, {}, resume=True, resume_epochs=int(state.get("epoch", -1)) + 1)
    trainer = Trainer(cfg, data, [writer, *callbacks], should_stop)
    best_record, best_state = _best_so_far(run, cfg)  # reads the history as the writer left it
    try:
        result = trainer.fit(resume_state=state, best_record=best_record, best_state=best_state)
    except Exception as exc:  # any failure is recorded on the run, then raised as it was
        writer.fail_quietly(exc)
        raise
    store_maps(store, run_id, result, maps, callbacks, should_stop)
    return run_id, result


def store_maps(store: RunStore, run_id: str, result, maps: tuple[str, ...], callbacks: Iterable = (),
               should_stop: Callable[[], bool | str] | None = None) -> list[str]:
    """Compute the run's 2-D item maps and store them in its folder (stored_maps). Only for a run
    that has embeddings and was not stopped by request; a map that fails is logged and left to the
    explore pages (the run itself is complete without it). Returns the methods stored."""
    import logging

    from .stored_maps import save_projections

    if not maps or result.user_emb is None or (should_stop is not None and should_stop()):
        return []
    callbacks = list(callbacks)

    def progress(note: str) -> None:
        for cb in callbacks:
            cb(MapsProgress(note))

    try:
        return save_projections(store.load(run_id), tuple(maps), progress)
    except Exception as exc:  # never lose a trained run over its map
        logging.getLogger(__name__).warning("maps of run %s not stored: %s", run_id, exc)
        progress(f"maps not stored ({exc}); the explore pages fit them when asked")
        return []


def _best_so_far(run: Run, cfg: TrainConfig) -> tuple[dict | None, dict | None]:
    """The selected epoch of a run's history (validation Recall@20) and its stored weights."""
    hist = run.history()
    if hist.empty or "valid_recall@20" not in hist or not (run.path / "model.pt").exists():
        return None, None
    weights = run.weights()
    rows = hist[hist["epoch"] == int(weights.get("epoch", -1))]
    if rows.empty:
        return None, None
    return rows.iloc[0].to_dict(), {"model": weights["model"], "sampler": weights.get("sampler", {})}


def create_run(store: RunStore, cfg: TrainConfig, data_info: dict | None = None,
               meta: dict | None = None) -> RunWriter:
    """A new run folder in the store (never an existing one) and the RunWriter that fills it."""
    try:
        store.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the runs folder {store.root} ({exc.strerror}); set {RUNS_ENV} "
                         "to a writable folder.") from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = _slug(cfg.dataset)
    for _ in range(20):
        run_id = f"{stamp}-{name}-{cfg.sampler}-{cfg.preset}-{secrets.token_hex(2)}"
        try:
            (store.root / run_id).mkdir()  # exclusive: an existing run is never reused
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise StoreError(f"cannot create a run folder in {store.root} ({exc.strerror}); set "
                             f"{RUNS_ENV} to a writable folder.") from None
    else:
        raise StoreError(f"could not find a free run name in {store.root}; try again.")
    try:
        return RunWriter(store.root / run_id, cfg, data_info or {}, meta=meta)
    except StoreError:  # nothing written yet (disk full, read-only): leave no empty folder behind
        shutil.rmtree(store.root / run_id, ignore_errors=True)
        raise


def _slug(text: str) -> str:
    base = Path(str(text)).name or "data"
    keep = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in base.split(":")[0])
    return keep[:24] or "data"

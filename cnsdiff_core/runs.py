"""The run store: one folder per run under CNSDIFF_RUNS (default `runs/`).

Layout of a run folder:
  config.json        the TrainConfig
  status.json        status (running | finished | stopped | early-stopped | failed), message, timing,
                     the code that ran (git commit, uncommitted changes or not, torch version),
                     device, pid (a 'running' run whose process is gone is listed as 'interrupted')
  dataset.json       statistics, shift report and notes of the data it was trained on
  history.csv        one row per epoch: losses, valid / IID / OOD metrics, seconds
  diagnostics.csv    one row per epoch x sampler (x CNSDiff step): FHN, lift, hardness, distances
  final.json         metrics at the selected epoch
  model.pt           selected weights (model + denoiser), tensors only (loaded with weights_only)
  checkpoint.pt      last epoch with optimizer, for resuming an interrupted run
  embeddings.npz     final user / item embeddings
  per_user.npz       per-user Recall/NDCG@20 on IID and OOD test (paired tests)
  negatives_*.npz    probe negatives of every sampler at chosen epochs and at the selected one
Every file is written to a temporary name and renamed, so a reader never sees half a file; a run
folder is created exclusively and never overwritten.
"""
from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import torch

from .config import ConfigError, TrainConfig
from .events import BestSelected, Checkpoint, EpochDone, Event, Finished, Snapshot, Started

RUNS_ENV = "CNSDIFF_RUNS"


PRUNED_PREFIX = "pruned by study"  # status message of a tuning trial stopped by its pruner


class StoreError(RuntimeError):
    """The run store cannot be read or written; the message says which path and what to do."""


def default_root() -> Path:
    return Path(os.environ.get(RUNS_ENV, "runs"))


# --- atomic writes --------------------------------------------------------------------------------
def _atomic(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, mode) as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise StoreError(f"could not write {path} ({exc.strerror or exc}); free disk space or make "
                         f"the runs folder writable (set {RUNS_ENV} to another folder).") from None


def write_json(path: Path, obj: Any) -> None:
    _atomic(path, lambda fh: json.dump(_jsonable(obj), fh, indent=2, sort_keys=True))


def write_csv(path: Path, rows: list[dict]) -> None:
    _atomic(path, lambda fh: pd.DataFrame(rows).to_csv(fh, index=False))


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    _atomic(path, lambda fh: np.savez_compressed(fh, **arrays), mode="wb")


def write_torch(path: Path, obj: Any) -> None:
    _atomic(path, lambda fh: torch.save(obj, fh), mode="wb")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if np.isfinite(v) else None
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return obj


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- reading ---------------------------------------------------------------------------------------
@dataclass
class RunInfo:
    run_id: str
    path: Path
    status: str  # as stored, 'interrupted' for a dead 'running' run, 'damaged' when unreadable
    message: str
    config: dict
    final: dict
    created: float

    @property
    def resumable(self) -> bool:
        """Interrupted or stopped by request; a tuning trial cut by its pruner is finished business."""
        return self.status in ("interrupted", "stopped") and not self.message.startswith(PRUNED_PREFIX)

    def label(self) -> str:
        c = self.config
        return f"{self.run_id} · {c.get('sampler', '?')} · {c.get('preset', '?')} · {self.status}"


class RunStore:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    def path(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or "\\" in run_id or run_id.startswith("."):
            raise StoreError(f"run id {run_id!r} is not a valid run name; pick one from the run list.")
        return self.root / run_id

    def list_runs(self) -> list[RunInfo]:
        """Every run folder, newest first; damaged ones are listed with the reason, never raised."""
        if not self.root.is_dir():
            return []
        try:
            entries = list(self.root.iterdir())
        except OSError as exc:
            raise StoreError(f"cannot read the runs folder {self.root} ({exc.strerror or exc}); make it "
                             f"readable or set {RUNS_ENV} to another folder.") from None
        out = []
        for p in entries:
            if not p.is_dir() or p.name.startswith("."):
                continue
            try:
                out.append(self.info(p.name))
            except StoreError:  # a folder name that is no run id (e.g. with a backslash): not a run
                continue
        return sorted(out, key=lambda r: r.created, reverse=True)

    def info(self, run_id: str) -> RunInfo:
        """A run's listing entry; a missing, truncated or unreadable file gives status 'damaged'
        with the file named in the message (never an exception: one bad folder must not hide the
        others)."""
        p = self.path(run_id)

        def damaged(why: str) -> RunInfo:
            return RunInfo(run_id, p, "damaged", why, {}, {}, _mtime(p))

        config, why = _read_json_object(p / "config.json")
        if why:
            return damaged(why)
        status, why = _read_json_object(p / "status.json")
        if why:
            return damaged(why)
        try:
            TrainConfig.from_dict(config)
        except (ConfigError, TypeError, ValueError) as exc:
            return damaged(f"config.json is invalid ({exc})")
        state = str(status.get("status", "unknown"))
        message = str(status.get("message", "") or "")
        try:
            pid = int(status.get("pid", -1))
        except (TypeError, ValueError, OverflowError):
            pid = -1
        if state == "running" and not (pid > 0 and _pid_alive(pid)):
            state = "interrupted"
        final: dict = {}
        if (p / "final.json").exists():
            final, why = _read_json_object(p / "final.json")
            if why:
                state, message, final = "damaged", why, {}
        if state in ("finished", "stopped", "early-stopped"):
            why = _missing_results(p, final)
            if why:
                state, message = "damaged", why
        try:
            created = float(status.get("created", _mtime(p)))
        except (TypeError, ValueError, OverflowError):
            created = _mtime(p)
        return RunInfo(run_id, p, state, message, config, final, created if np.isfinite(created) else 0.0)

    def load(self, run_id: str) -> "Run":
        info = self.info(run_id)
        if info.status == "damaged":
            raise StoreError(f"run {run_id} is damaged ({info.message}); delete it or train it again.")
        return Run(info)

    # --- writing -----------------------------------------------------------------------------------
    def create(self, cfg: TrainConfig, data_info: dict | None = None, meta: dict | None = None) -> "RunWriter":
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the runs folder {self.root} ({exc.strerror}); set {RUNS_ENV} "
                             "to a writable folder.") from None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = _slug(cfg.dataset)
        for _ in range(20):
            run_id = f"{stamp}-{name}-{cfg.sampler}-{cfg.preset}-{secrets.token_hex(2)}"
            try:
                (self.root / run_id).mkdir()  # exclusive: an existing run is never reused
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise StoreError(f"cannot create a run folder in {self.root} ({exc.strerror}); set "
                                 f"{RUNS_ENV} to a writable folder.") from None
        else:
            raise StoreError(f"could not find a free run name in {self.root}; try again.")
        try:
            return RunWriter(self.root / run_id, cfg, data_info or {}, meta=meta)
        except StoreError:  # nothing written yet (disk full, read-only): leave no empty folder behind
            shutil.rmtree(self.root / run_id, ignore_errors=True)
            raise


def _read_json_object(path: Path) -> tuple[dict, str]:
    """(object, '') or ({}, why it cannot be used) for a small JSON file of a run."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, f"{path.name} is missing"
    except (ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
        return {}, f"{path.name} is truncated or not valid JSON"
    except OSError as exc:
        return {}, f"{path.name} cannot be read ({exc.strerror or exc})"
    if not isinstance(obj, dict):
        return {}, f"{path.name} is not a JSON object"
    return obj, ""


def _missing_results(p: Path, final: dict) -> str:
    """'' when a finished run has its results, else which file is missing or truncated. Cheap:
    existence, the zip directory of model.pt / embeddings.npz, the last byte of history.csv."""
    import zipfile

    if not final:
        return "final.json is missing"
    for name in ("model.pt", "embeddings.npz"):
        f = p / name
        if not f.is_file():
            return f"{name} is missing"
        try:
            ok = zipfile.is_zipfile(f)
        except OSError:
            ok = False
        if not ok:
            return f"{name} is truncated or unreadable"
    hist = p / "history.csv"
    try:
        with open(hist, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                return "history.csv is empty"
            fh.seek(size - 1)
            if fh.read(1) != b"\n":
                return "history.csv is truncated"
    except FileNotFoundError:
        return "history.csv is missing"
    except OSError as exc:
        return f"history.csv cannot be read ({exc.strerror or exc})"
    return ""


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def _slug(text: str) -> str:
    base = Path(str(text)).name or "data"
    keep = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in base.split(":")[0])
    return keep[:24] or "data"


class Run:
    """Read access to a stored run; arrays are loaded lazily and never unpickled."""

    def __init__(self, info: RunInfo) -> None:
        self.info = info
        self.path = info.path
        self.config = TrainConfig.from_dict(info.config)

    @property
    def run_id(self) -> str:
        return self.info.run_id

    def history(self) -> pd.DataFrame:
        return _read_csv(self.path / "history.csv")

    def diagnostics(self) -> pd.DataFrame:
        return _read_csv(self.path / "diagnostics.csv")

    def dataset_info(self) -> dict:
        p = self.path / "dataset.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.path / "embeddings.npz", allow_pickle=False) as z:
            return z["user"], z["item"]

    def per_user(self) -> dict[str, np.ndarray]:
        p = self.path / "per_user.npz"
        if not p.exists():
            return {}
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def snapshot_names(self) -> list[str]:
        return sorted(p.stem.removeprefix("negatives_") for p in self.path.glob("negatives_*.npz"))

    def negatives(self, which: str = "best") -> dict[str, dict[str, np.ndarray]]:
        """{sampler or 'cnsdiff@s': {items, hardness, nn_dist, fhn, vec}, '_probe': {...}}."""
        p = self.path / f"negatives_{which}.npz"
        if not p.exists():
            return {}
        out: dict[str, dict[str, np.ndarray]] = {}
        with np.load(p, allow_pickle=False) as z:
            for key in z.files:
                group, name = key.split("/", 1)
                out.setdefault(group, {})[name] = z[key]
        return out

    def weights(self) -> dict:
        return torch.load(self.path / "model.pt", map_location="cpu", weights_only=True)

    def checkpoint(self) -> dict | None:
        p = self.path / "checkpoint.pt"
        return torch.load(p, map_location="cpu", weights_only=True) if p.exists() else None


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    return pd.read_csv(path)


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
                    on_created: Callable[[str], None] | None = None, meta: dict | None = None):
    """Load the data, train, and write the run. Returns (run_id, TrainResult).

    meta: extra keys for status.json (a tuning trial records {"tune": {study, trial, ...}}).
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
    writer = store.create(cfg, info, meta)
    if on_created:
        on_created(writer.run_id)
    try:
        result = Trainer(cfg, data, [writer, *callbacks], should_stop).fit()
    except Exception as exc:  # any failure is recorded on the run, then raised as it was
        writer.fail_quietly(exc)
        raise
    return writer.run_id, result


def resume_run(run_id: str, store: RunStore | None = None, callbacks: Iterable = (),
               should_stop: Callable[[], bool] | None = None):
    """Continue an interrupted or stopped run from its last checkpoint, in the same folder."""
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
    return run_id, result


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

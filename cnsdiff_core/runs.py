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
folder is created exclusively and never overwritten (`recorder.create_run`), and training writes it (`recorder`).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from .config import ConfigError, TrainConfig

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

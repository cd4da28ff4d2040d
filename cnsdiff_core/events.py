"""What the trainer announces while it trains, as typed events, and the result it returns: a callback is any callable that
takes one event and looks at the kinds it cares about (`isinstance` or `match`). The run store
writes files from them, the command line draws its progress bar, background tasks keep progress
and curves, a tuning study reports epochs to its pruner.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Union

import numpy as np


@dataclass
class TrainResult:
    status: str  # finished | stopped | early-stopped | failed
    message: str
    best_epoch: int
    epochs_run: int
    seconds: float
    metrics: dict[str, float]  # valid_*, iid_*, ood_* at the selected epoch
    history: list[dict] = field(default_factory=list)
    diagnostics: list[dict] = field(default_factory=list)
    per_user: dict[str, np.ndarray] = field(default_factory=dict)
    user_emb: np.ndarray | None = None
    item_emb: np.ndarray | None = None


@dataclass(frozen=True)
class Started:
    device: str  # 'cuda (<GPU>)' or 'cpu (N threads)'
    epochs: int  # the epoch budget
    n_train: int  # training interactions
    start_epoch: int  # 0-based epoch training starts at (> 0 when resuming)


@dataclass(frozen=True)
class BatchDone:
    """Every 10th batch and the last one of an epoch."""

    epoch: int  # 0-based
    batch: int  # 1-based
    n_batches: int
    loss: float
    eta_s: float  # seconds left for the whole budget

    @property
    def progress(self) -> float:
        """Epochs done, as a number: 2.5 = half way through the third epoch."""
        return self.epoch + self.batch / self.n_batches


@dataclass(frozen=True)
class EpochDone:
    record: dict[str, Any]  # the history row: epoch (1-based), losses, metrics, seconds
    diagnostics: list[dict]  # FHN and hardness rows of this epoch


@dataclass(frozen=True)
class BestSelected:
    epoch: int  # 1-based
    state: dict  # model and sampler tensors (a checkpoint without the optimizer's use)


@dataclass(frozen=True)
class Checkpoint:
    epoch: int  # 1-based
    state: dict  # resumable: model, sampler, optimizer


@dataclass(frozen=True)
class Snapshot:
    epoch: int | str  # 1-based, or 'best'
    raw: dict  # per-series arrays of the probe negatives


@dataclass(frozen=True)
class Finished:
    status: str
    message: str
    result: TrainResult
    late_diagnostics: tuple = ()  # the selected epoch's probe rows when that epoch was not measured in training


@dataclass(frozen=True)
class MapsProgress:
    """After training: the run's 2-D item maps (PCA, UMAP) are being computed and stored with it
    (`recorder.train_and_store(maps=...)`)."""

    note: str  # e.g. 'compiling UMAP', 'fitting the UMAP map'


@dataclass(frozen=True)
class TrialStarted:
    """A tuning study starts a trial (cnsdiff_core.tune); the trainer's events of that trial follow."""

    number: int
    study: str
    finished: int  # trials of the study finished before this one


Event = Union[Started, BatchDone, EpochDone, BestSelected, Checkpoint, Snapshot, Finished, MapsProgress,
              TrialStarted]
Callback = Callable[[Event], None]

"""The in-memory dataset every other module consumes.

A `Dataset` holds dense integer ids and the four splits the evaluation protocol needs
(train, IID validation, IID test, OOD test). Loaders and split functions build it; the trainer,
metrics and app only read it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SHIFTS = ("popularity", "temporal", "exposure", "random")


class DataError(ValueError):
    """A problem with user-supplied data; the message is one sentence that says what to do."""


def clip(text, limit: int = 40) -> str:
    """User-supplied text shown inside a one-line message: printable characters only, at most
    `limit` of them (a header cell or a file name can hold anything)."""
    out = "".join(ch if ch.isprintable() else "?" for ch in str(text)[: limit + 1])
    return out if len(out) <= limit else out[: limit - 1] + "…"


@dataclass
class GroundTruth:
    """True preferences of a synthetic world: user u likes item i iff u_f . i_f > threshold."""

    user_factors: np.ndarray  # (U, k) float32
    item_factors: np.ndarray  # (I, k) float32
    threshold: float

    def is_relevant(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Elementwise truth for paired arrays of user and item indices (any equal shapes)."""
        u = self.user_factors[np.asarray(users)]
        i = self.item_factors[np.asarray(items)]
        return (u * i).sum(-1) > self.threshold


@dataclass
class Dataset:
    """Dense-id interactions split for IID and OOD evaluation.

    All split arrays are (n, 2) int64 of (user, item) with ids in [0, n_users) x [0, n_items).
    """

    name: str
    shift: str  # one of SHIFTS: what differs between train and the OOD test
    n_users: int
    n_items: int
    train: np.ndarray
    valid: np.ndarray
    test_iid: np.ndarray
    test_ood: np.ndarray
    train_time: np.ndarray | None = None  # (n_train,) timestamps, when the source has them
    user_ids: np.ndarray | None = None  # (U,) original ids as str
    item_ids: np.ndarray | None = None  # (I,) original ids as str
    item_titles: np.ndarray | None = None  # (I,) str, when an item file gives them
    truth: GroundTruth | None = None  # synthetic worlds only
    notes: list[str] = field(default_factory=list)  # warnings and counts a user should see
    source: str = ""  # where it came from (folder, file, generator params)

    def item_popularity(self) -> np.ndarray:
        """(I,) number of training interactions per item."""
        return np.bincount(self.train[:, 1], minlength=self.n_items)

    def user_degree(self) -> np.ndarray:
        return np.bincount(self.train[:, 0], minlength=self.n_users)

    def item_environments(self, n_env: int = 4) -> np.ndarray:
        """(I,) popularity-quantile environment of each item (0 = least popular)."""
        pop = self.item_popularity().astype(np.float64)
        ranks = pop.argsort(kind="stable").argsort(kind="stable")
        return np.minimum(ranks * n_env // max(self.n_items, 1), n_env - 1).astype(np.int64)

    def train_environments(self, n_env: int = 4, kind: str = "auto") -> np.ndarray:
        """(n_train,) environment of each training interaction.

        kind: 'time' (quantiles of timestamps), 'popularity' (item popularity quantiles) or 'auto'
        (time when timestamps exist, popularity otherwise).
        """
        if kind not in ("auto", "time", "popularity"):
            raise DataError(f"environment kind {kind!r} is unknown; use auto, time or popularity.")
        if kind == "time" or (kind == "auto" and self.train_time is not None):
            if self.train_time is None:
                raise DataError(f"dataset {self.name!r} has no timestamps; use popularity environments.")
            ranks = self.train_time.argsort(kind="stable").argsort(kind="stable")
            return np.minimum(ranks * n_env // max(len(ranks), 1), n_env - 1).astype(np.int64)
        return self.item_environments(n_env)[self.train[:, 1]]

    def held_out(self) -> np.ndarray:
        """(n, 2) all held-out positives: validation + IID test + OOD test."""
        return np.concatenate([self.valid, self.test_iid, self.test_ood], axis=0)

    def test_mask(self) -> np.ndarray:
        """(n, 2) pairs masked when ranking for the IID and OOD tests: training + validation."""
        return np.concatenate([self.train, self.valid], axis=0)

    def stats(self) -> dict:
        return {
            "users": self.n_users,
            "items": self.n_items,
            "train": len(self.train),
            "valid": len(self.valid),
            "test_iid": len(self.test_iid),
            "test_ood": len(self.test_ood),
            "density": len(self.train) / max(self.n_users * self.n_items, 1),
            "has_timestamps": self.train_time is not None,
            "has_ground_truth": self.truth is not None,
        }


def popularity_by_split(ds: Dataset):
    """The long tail per split: items ranked by their interaction count in the train, IID test
    and OOD test split (count > 0), as a frame with columns split, rank, count, share (count /
    split size)."""
    import pandas as pd

    parts = []
    for split_name in ("train", "test_iid", "test_ood"):
        arr = getattr(ds, split_name)
        counts = np.sort(np.bincount(arr[:, 1], minlength=ds.n_items))[::-1] if len(arr) else np.zeros(0, int)
        counts = counts[counts > 0]
        parts.append(pd.DataFrame({"split": split_name, "rank": np.arange(1, len(counts) + 1),
                                   "count": counts, "share": counts / max(len(arr), 1)}))
    return pd.concat(parts, ignore_index=True)

"""What every explore view starts from: a run's denoiser, series names, users and items."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import torch

from ..config import TrainConfig
from ..data.dataset import Dataset
from ..diagnostics import PRE_MIX, TRAINED, parse_series_key
from ..diffusion import Denoiser
from ..samplers import SYNTHESIZING


class ExploreError(ValueError):
    """A view cannot be built from what was chosen; the message says what to pick instead."""


def build_denoiser(cfg: TrainConfig, state: Mapping | None = None) -> Denoiser:
    """A Denoiser shaped by `cfg` (as the CNSDiff sampler builds it), loaded and in eval mode."""
    if state is None:
        return Denoiser.from_config(cfg).eval()
    # Built on the meta device and loaded with assign=True: the random init is skipped, so loading
    # a stored denoiser never draws from torch's global RNG (a training thread may be using it).
    with torch.device("meta"):
        den = Denoiser.from_config(cfg)
    try:
        den.load_state_dict({k: v.detach().clone() for k, v in state.items()}, assign=True)
    except RuntimeError:
        raise ExploreError("the stored denoiser does not match the run's config (dim/hidden/conditioning); "
                           "train the run again.") from None
    return den.eval()


def run_denoiser(run) -> Denoiser:
    """The trained denoiser of a stored CNSDiff run (the one saved with the selected epoch)."""
    state = run.weights().get("sampler", {}) or {}
    if "denoiser" not in state:
        raise ExploreError(f"run {run.run_id} (sampler {run.config.sampler}) has no denoiser; pick a CNSDiff run.")
    return build_denoiser(run.config, state["denoiser"])


def sampler_key(key: str) -> tuple[str, int]:
    """'cnsdiff@14' -> ('cnsdiff', 14); 'cnsdiff@premix' -> ('cnsdiff', PRE_MIX); 'dns' -> ('dns',
    TRAINED) (the negative the sampler trains on)."""
    return parse_series_key(key)


def series_order(keys) -> list[str]:
    """Sampler series in reading order: by sampler, then CNSDiff steps numerically (@2 before @10)."""
    def order(k):
        base, step = sampler_key(k)
        return base, {TRAINED: -2, PRE_MIX: -1}.get(step, step)
    return sorted(set(keys), key=order)


def is_synthesized(key: str) -> bool:
    return sampler_key(key)[0] in SYNTHESIZING


def id_labels(ids: np.ndarray | None, n: int) -> np.ndarray:
    """(n,) original ids as str (the dense index when the dataset has none)."""
    return np.arange(n).astype(str) if ids is None else np.asarray(ids).astype(str)


def item_labels(data: Dataset) -> np.ndarray:
    """(I,) 'id · title' (or just the id) for pickers and tables."""
    ids = id_labels(data.item_ids, data.n_items)
    if data.item_titles is None:
        return ids
    return np.char.add(np.char.add(ids, " · "), np.asarray(data.item_titles).astype(str))


def user_items(data: Dataset, user: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (training positives, held-out positives) of one user; held-out = valid + IID test +
    OOD test minus training items (a training item can never be drawn as a negative)."""
    if not 0 <= int(user) < data.n_users:
        raise ExploreError(f"user index {user} is outside 0..{data.n_users - 1}; pick a user from the list.")
    train = np.unique(data.train[data.train[:, 0] == user, 1])
    held = data.held_out()
    held = np.setdiff1d(np.unique(held[held[:, 0] == user, 1]), train)
    return train, held


def users_with_training(data: Dataset) -> np.ndarray:
    """Sorted users that have at least one training positive (the only ones with a trajectory)."""
    return np.unique(data.train[:, 0])


def user_summary(data: Dataset) -> pd.DataFrame:
    """Users with training positives: user, user_id (original), n_train, n_heldout."""
    users = users_with_training(data)
    n_train = np.bincount(data.train[:, 0], minlength=data.n_users)
    held = data.held_out()
    n_held = np.bincount(held[:, 0], minlength=data.n_users) if len(held) else np.zeros(data.n_users, int)
    return pd.DataFrame({"user": users, "user_id": id_labels(data.user_ids, data.n_users)[users],
                         "n_train": n_train[users], "n_heldout": n_held[users]})

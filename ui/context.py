"""A run opened on an explore page: its config, dataset and embeddings in one RunContext (one
clear error, and the page stops, when it cannot be shown), its denoiser, recorded trajectories and
the step report of its own denoiser, all cached by the run key."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from cnsdiff_core import explore as ex
from cnsdiff_core.config import TrainConfig
from cnsdiff_core.runs import StoreError

from . import cache
from .data import load_dataset_cached


@dataclass
class RunContext:
    run_id: str
    run: Any
    data: Any
    user_emb: np.ndarray
    item_emb: np.ndarray
    cfg: TrainConfig


def run_context(run_id: str) -> RunContext:
    """The run, its dataset and embeddings; shows one error and stops the page when unusable."""
    try:
        run = cache.load_run(run_id)
        cfg = run.config
        data = load_dataset_cached(cfg.dataset, cfg.shift, cfg.data_seed)
        user_emb, item_emb = cache.embeddings(cache.run_key(run_id))
    except (StoreError, ValueError, OSError) as exc:  # DataError, ConfigError are ValueErrors
        st.error(f"Run {run_id} cannot be shown: {exc}")
        st.stop()
    if item_emb.shape[0] != data.n_items or user_emb.shape[0] != data.n_users:
        st.error(f"Run {run_id} was trained on {item_emb.shape[0]} items / {user_emb.shape[0]} users but "
                 f"dataset {cfg.dataset!r} loads with {data.n_items} / {data.n_users} here; pick another run.")
        st.stop()
    return RunContext(run_id, run, data, user_emb, item_emb, cfg)


def denoiser(ctx: RunContext):
    try:
        return cache.run_denoiser(cache.run_key(ctx.run_id))
    except ex.ExploreError as exc:
        st.error(str(exc))
        st.stop()


@st.cache_data(show_spinner="Denoising…", max_entries=64)
def _trajectories(key: cache.RunKey, user: int, pos: int, seed: int, exclude: bool,
                  data_key: tuple, _ctx: RunContext) -> ex.Trajectories:
    return ex.denoising_trajectories(_ctx.cfg, cache.run_denoiser(key), _ctx.user_emb, _ctx.item_emb,
                                     _ctx.data, user, pos, seed=seed, exclude_train=exclude)


def trajectories(ctx: RunContext, user: int, pos: int, seed: int, exclude: bool) -> ex.Trajectories:
    denoiser(ctx)  # a clear error for a run without a denoiser
    c = ctx.cfg
    return _trajectories(cache.run_key(ctx.run_id), int(user), int(pos), int(seed), bool(exclude),
                         (c.dataset, c.shift, c.data_seed), ctx)


@st.cache_data(show_spinner="Measuring the run's own denoiser…", max_entries=16)
def stored_step_report(key: cache.RunKey, data_key: tuple, _ctx: RunContext) -> pd.DataFrame | None:
    """step_report of the run's own trained denoiser (None for runs without one)."""
    try:
        den = cache.run_denoiser(key)
    except ex.ExploreError:
        return None
    return ex.step_report(_ctx.cfg, den, _ctx.data, _ctx.user_emb, _ctx.item_emb)


def own_step_report(ctx: RunContext) -> pd.DataFrame | None:
    c = ctx.cfg
    return stored_step_report(cache.run_key(ctx.run_id), (c.dataset, c.shift, c.data_seed), ctx)

"""2-D maps of a run's items on the explore pages: one ItemMaps per run shared by every session
(the maps stored with the run; for an older run PCA at once and UMAP fitted once in the background), the PCA / UMAP picker with its task panel, and the
negatives, items and trajectory states placed on the map (cached per run key and method)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from cnsdiff_core import explore as ex
from cnsdiff_core.tasks import Status

from . import cache
from .data import load_dataset_cached
from .context import RunContext
from .tasks import task_panel


@st.cache_resource(show_spinner="Fitting the PCA map…", max_entries=8)
def _map_job(key: cache.RunKey) -> ex.ItemMaps:
    return ex.ItemMaps(cache.embeddings(key)[1], Path(key[0]) / key[1], key[1])


def map_job(run_id: str) -> ex.ItemMaps:
    return _map_job(cache.run_key(run_id))


def map_method_picker(job: ex.ItemMaps, key: str, auto_key: str) -> str:
    """PCA / UMAP choice. A run's maps are normally stored with it when it finishes training; a run
    made before that gets its UMAP fitted once, in the background with its progress shown, and
    stored with the run for every later session (the task panel polls it every second)."""
    c_auto, c_method, c_status = st.columns([1.3, 1.2, 2], vertical_alignment="center")
    if not job.precomputed:
        auto = c_auto.toggle("Compute this run's UMAP", value=True, key=auto_key,
                             help="This run has no stored UMAP map (it was trained before maps were stored "
                                  "with runs). UMAP (cosine) is fitted once in the background and stored with "
                                  "the run for everyone; PCA shows meanwhile.")
        if auto:
            job.start_umap()
    options = ["pca", "umap"] if job.status == Status.FINISHED else ["pca"]
    if st.session_state.get(key) not in options:
        st.session_state[key] = "pca"
    method = c_method.radio("Map", options, key=key, horizontal=True,
                            format_func=lambda m: {"pca": "PCA", "umap": "UMAP (cosine)"}[m])
    with c_status:
        if job.status == Status.FAILED:
            st.caption(f"UMAP failed ({job.task.message}); PCA is shown.")
        elif job.status == Status.FINISHED and job.precomputed:
            st.caption("UMAP stored with the run: its stored negatives sit at their exact UMAP transform; other "
                       f"vectors (trajectories) at the weighted mean of their {job.umap.n_neighbors} nearest items.")
        elif job.status == Status.FINISHED:
            st.caption(f"UMAP ready ({job.task.message}); synthesized points use its transform.")
        elif job.task is not None:
            task_panel(lambda: [job.task], _umap_progress, f"umap_{key}")
    return method


def _umap_progress(tasks: list) -> None:
    task = tasks[0]
    if task.active:
        note = task.note or "waiting for another fit"
        st.caption(f"⏳ This run's UMAP map, fitted once and stored with the run: {note} ({task.seconds:.0f} s); "
                   "PCA meanwhile.")


@st.cache_resource(show_spinner="Placing negatives on the map…", max_entries=16)
def _negatives_placed(key: cache.RunKey, method: str, with_truth: bool) -> pd.DataFrame:
    job = _map_job(key)
    data = None
    if with_truth:
        cfg = cache.load_run(key[1]).config
        data = load_dataset_cached(cfg.dataset, cfg.shift, cfg.data_seed)
    return ex.negatives_frame(cache.negatives(key[1]), job.coords(method), job.projection(method), data)


def negatives_placed(ctx: RunContext, method: str) -> pd.DataFrame:
    method = map_job(ctx.run_id).effective(method)
    return _negatives_placed(cache.run_key(ctx.run_id), method, ctx.data.truth is not None)


@st.cache_data(show_spinner=False, max_entries=8)
def _items_table(key: cache.RunKey, method: str, _data, data_key: tuple) -> pd.DataFrame:
    return ex.item_frame(_data, _map_job(key).coords(method))


def items_table(ctx: RunContext, method: str) -> pd.DataFrame:
    method = map_job(ctx.run_id).effective(method)
    cfg = ctx.cfg
    return _items_table(cache.run_key(ctx.run_id), method, ctx.data,
                        (cfg.dataset, cfg.shift, cfg.data_seed))


@st.cache_data(show_spinner=False, max_entries=64)
def _placed_states(run: cache.RunKey, method: str, key: tuple, _states: np.ndarray) -> np.ndarray:
    return _map_job(run).projection(method).transform(_states)


def placed_states(ctx: RunContext, traj: ex.Trajectories, method: str, key: tuple) -> np.ndarray:
    method = map_job(ctx.run_id).effective(method)
    return _placed_states(cache.run_key(ctx.run_id), method, key, traj.states)


@st.cache_resource(show_spinner=False, max_entries=64)
def _trajectory_spec(run: cache.RunKey, method: str, key: tuple, zoom: bool, _items: pd.DataFrame,
                     _traj: ex.Trajectories, _xy: np.ndarray, _pos_xy: np.ndarray) -> dict:
    from .figures import trajectory_spec

    return trajectory_spec(_items, _traj, _xy, _pos_xy, zoom_items=zoom)


def trajectory_spec(ctx: RunContext, traj: ex.Trajectories, method: str, key: tuple, zoom: bool,
                    items: pd.DataFrame, xy: np.ndarray, pos: int) -> dict:
    """The denoising map's Plotly spec with every frame, built once per (run key, method,
    user/positive/seed/exclude key, zoom) and shared read-only by every session."""
    method = map_job(ctx.run_id).effective(method)
    return _trajectory_spec(cache.run_key(ctx.run_id), method, tuple(key), bool(zoom), items, traj, xy,
                            items.loc[pos, ["x", "y"]].to_numpy(float))

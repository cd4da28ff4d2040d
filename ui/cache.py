"""Cached reads of the run store: every cache of a run's files is keyed by one run key (folder,
run id, mtime of its status.json), so a run that finishes or is resumed is read again and every
session shares what did not change. Shared caches (st.cache_resource) hold read-only objects."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from cnsdiff_core import explore as ex
from cnsdiff_core import fair, runs_table
from cnsdiff_core.config import TrainConfig
from cnsdiff_core.runs import Run, RunInfo, RunStore, StoreError, default_root
from cnsdiff_core.samplers import WITH_DENOISER

RunKey = tuple[str, str, float]  # (run store folder, run id, mtime of the run's status.json)


def runs_root() -> Path:
    return default_root().resolve()


@st.cache_resource(show_spinner=False)
def _store(root: str) -> RunStore:
    return RunStore(root)


def store() -> RunStore:
    """The run store of $CNSDIFF_RUNS (one object per folder, shared by every session)."""
    return _store(str(runs_root()))


def list_runs() -> list[RunInfo]:
    """Every stored run, newest first (damaged ones included with their reason). Not cached: a
    listing is a few small JSON reads, and runs appear while the app runs."""
    return store().list_runs()


def run_key(run_id: str) -> RunKey:
    """The key of every cache of a run's files."""
    try:
        mtime = (store().path(run_id) / "status.json").stat().st_mtime
    except (OSError, StoreError):  # gone, unreadable, or a folder name that is no run id
        mtime = 0.0
    return str(runs_root()), run_id, mtime


def _load(key: RunKey) -> Run:
    return RunStore(key[0]).load(key[1])


@st.cache_resource(show_spinner=False, max_entries=64)
def _run(key: RunKey) -> Run:
    return _load(key)


def load_run(run_id: str) -> Run:
    """A stored run. Raises StoreError for a damaged run."""
    return _run(run_key(run_id))


@st.cache_data(show_spinner=False, max_entries=32)
def _per_user(key: RunKey) -> dict:
    return _load(key).per_user()


def per_user(run_id: str) -> dict:
    """Per-user test metrics of a run ({} when it has none). Raises StoreError for a damaged run."""
    return _per_user(run_key(run_id))


@st.cache_resource(show_spinner=False, max_entries=16)
def embeddings(key: RunKey):
    """(user, item) embeddings of a run."""
    return _load(key).embeddings()


@st.cache_resource(show_spinner=False, max_entries=16)
def run_denoiser(key: RunKey):
    """The run's trained denoiser (ExploreError for a run without one)."""
    return ex.run_denoiser(_load(key))


@st.cache_resource(show_spinner=False, max_entries=16)
def _negatives(key: RunKey) -> dict:
    return _load(key).negatives("best")


def negatives(run_id: str) -> dict:
    """The probe negatives of a run at its selected epoch."""
    return _negatives(run_key(run_id))


@st.cache_data(show_spinner=False, max_entries=64)
def _diagnostics(key: RunKey) -> pd.DataFrame:
    return _load(key).diagnostics()


def diagnostics(run_id: str) -> pd.DataFrame:
    return _diagnostics(run_key(run_id))


@st.cache_data(show_spinner=False, max_entries=256)
def _dataset_info(key: RunKey) -> dict:
    return _load(key).dataset_info()


@st.cache_data(show_spinner=False, max_entries=16)
def _runs_frame(root: str, signature: tuple) -> pd.DataFrame:
    return runs_table.runs_frame(RunStore(root))


def runs_frame() -> pd.DataFrame:
    """One row per stored run (cnsdiff_core.runs_table), cached per state of the store."""
    root = runs_root()
    sig = tuple(run_key(p.name) for p in sorted(root.iterdir())
                if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else ()
    return _runs_frame(str(root), sig)


def explorable_runs(with_denoiser: bool = False) -> list[RunInfo]:
    """Runs that finished with embeddings (newest first); only runs of a sampler with a trained
    denoiser when asked."""
    out = []
    for info in list_runs():
        if info.status in ("damaged", "running", "queued") or not (info.path / "embeddings.npz").exists():
            continue
        if with_denoiser and info.config.get("sampler") not in WITH_DENOISER:
            continue
        out.append(info)
    return out


def best_epoch(run_id: str) -> int | None:
    """The selected epoch of a stored run (None when it is not recorded)."""
    for info in explorable_runs(False):
        if info.run_id == run_id:
            be = info.final.get("best_epoch")
            return int(be) if be is not None else None
    return None


@st.cache_data(show_spinner=False, max_entries=8)
def _confounding(signature: tuple) -> pd.DataFrame:
    entries = []
    for key in signature:
        try:
            info = RunStore(key[0]).info(key[1])
            dinfo = _dataset_info(key)
            if ex.world_confounding(info.config, dinfo) is None:
                continue
            diag = _diagnostics(key)
        except (StoreError, OSError, ValueError):
            continue
        entries.append((key[1], info.config, dinfo, diag, info.final.get("best_epoch")))
    return ex.confounding_table(entries)


def confounding_over_store() -> pd.DataFrame:
    """FHN at the selected epoch vs the synthetic world's confounding, over every finished run."""
    return _confounding(tuple(run_key(i.run_id) for i in explorable_runs(False)))


@st.cache_resource(show_spinner=False)
def device_info() -> dict:
    """{'label': what training with device=auto uses, 'cuda': bool, 'reason': why not cuda}."""
    import torch

    from cnsdiff_core.train import device_label, resolve_device

    cuda = bool(torch.cuda.is_available())
    reason = "" if cuda else (
        "no CUDA GPU is visible to torch (torch.cuda.is_available() is False"
        + ("; this torch is a CPU build" if torch.version.cuda is None else "") + ")")
    if cuda:
        label = device_label(resolve_device("auto"))
    else:  # what a run will use (the cpu_threads setting), not what torch happens to use now
        n = TrainConfig().cpu_threads or torch.get_num_threads()
        label = f"cpu, {n} training thread{'s' if n != 1 else ''} of {os.cpu_count()} cores"
    return {"label": label, "cuda": cuda, "reason": reason}


@st.cache_resource(show_spinner=False, max_entries=96)  # bounds the memory: a Food map figure is a few MB
def _built(name: str, key: tuple, _build):
    out = _build()
    if isinstance(out, tuple):
        return tuple(_as_spec(x) for x in out)
    return _as_spec(out)


def _as_spec(obj):
    """A Plotly figure as its finished spec (typed arrays encoded once), so a rerun that draws it
    again neither validates nor re-encodes it; anything else as it is."""
    import plotly.graph_objects as go

    from .figures.maps import SpecFigure

    if isinstance(obj, go.Figure) and not isinstance(obj, SpecFigure):
        return SpecFigure(obj.to_dict())
    return obj


def built(name: str, key: tuple, build):
    """What build() returns (a figure, a spec, a table), made once per (name, key) and shared
    read-only by every session: key must hold everything it depends on (a run key and the
    parameters). A figure comes back as its finished spec (read-only: draw it, do not update it)."""
    return _built(name, key, build)


@st.cache_data(show_spinner=False, max_entries=4)
def _benchmark_table(path: str, mtime: float) -> pd.DataFrame:
    return fair.benchmark_table(path)


def _shipped_table() -> tuple[str, float]:
    """The shipped fair benchmark's path and its modification time: the key that rereads it when it changes."""
    path = fair.SHIPPED_TABLE
    return str(path), path.stat().st_mtime if path.is_file() else 0.0


def benchmark_table() -> pd.DataFrame:
    """The shipped fair benchmark's table (results/fair_benchmark.csv), read again when the file changes."""
    return _benchmark_table(*_shipped_table())


@st.cache_data(show_spinner=False, max_entries=16)
def _benchmark_pairs(dataset: str, sampler: str, path: str, mtime: float) -> pd.DataFrame:
    return fair.fair_pairs(dataset, sampler, path)


def benchmark_pairs(dataset: str, sampler: str) -> pd.DataFrame:
    """`fair.fair_pairs` on the shipped table, read again when the table changes; ValueError as there."""
    return _benchmark_pairs(dataset, sampler, *_shipped_table())

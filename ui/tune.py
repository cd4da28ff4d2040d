"""The Tune page's side of tuning studies (cnsdiff_core.tune): which storages it offers, open
storages shared by every session, and a study's best configuration handed to the Train form."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from cnsdiff_core.samplers import BASELINES, METHOD

from . import cache, forms, state
from .pages import REPO

TUNE_SAMPLERS = (METHOD, *BASELINES)  # the method first: the app is about it


def study_storages() -> list[str]:
    """Storages the Tune page offers: the runs folder's SQLite file (where the page starts studies;
    in read-only mode only when it exists) and journal files in the runs folder and results/studies."""
    from cnsdiff_core.study_storage import DEFAULT_DB, default_storage_url

    out = []
    if (cache.runs_root() / DEFAULT_DB).is_file() or not state.read_only():
        out.append(default_storage_url(cache.runs_root()))
    for folder in (cache.runs_root(), REPO / "results" / "studies"):
        if folder.is_dir():
            out += [f"journal:{p}" for p in sorted(folder.glob("*.journal"))]
    return out


@st.cache_resource(show_spinner=False, max_entries=8)
def study_storage(url: str):
    """An open Optuna storage, shared by every session (its engine / journal reader are thread-safe)."""
    from cnsdiff_core.study_storage import open_storage

    return open_storage(url)[0]


def storage_exists(url: str) -> bool:
    """False for a SQLite or journal file that is not there yet (opening it would create it)."""
    from cnsdiff_core.study_storage import journal_path

    path = journal_path(url) or (Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None)
    return path is None or path.is_file()


def storage_label(url: str) -> str:
    from cnsdiff_core.study_storage import DEFAULT_DB, journal_path

    path = journal_path(url)
    if path is not None:
        return f"journal · {path.name}"
    return f"runs folder · {DEFAULT_DB}" if url.endswith(f"/{DEFAULT_DB}") else url


def prefill_train_from_study(spec: dict, params: dict) -> None:
    """'Use the best configuration': the Train form gets the study's preset, epochs, fixed
    overrides and the best trial's parameters, the study's sampler, and the sidebar its dataset."""
    from cnsdiff_core.tune import trial_overrides

    for key in [k for k in st.session_state if str(k).startswith("cfg_")]:
        del st.session_state[key]  # the Train page refills every field from the preset first
    st.session_state["train_preset"] = spec.get("preset", "tuned")
    st.session_state["train_samplers"] = [spec["sampler"]]
    updates = {**spec.get("overrides", {}), "epochs": spec.get("epochs"),
               **trial_overrides(spec["sampler"], params)}
    forms.prefill_train_form({k: v for k, v in updates.items() if v is not None})
    state.select(dataset=spec.get("dataset"), shift=spec.get("shift"))

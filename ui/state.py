"""Session state and the URL: the global choices (dataset, shift, run) that the sidebar shows and
links carry, page-level URL parameters (user, item, step), workshop (read-only) mode, and the run
pickers of the explore pages, which follow the sidebar's run."""
from __future__ import annotations

import os
import sys
from typing import Any

import streamlit as st

from cnsdiff_core.data import DataError
from cnsdiff_core.data.imports import openable_path

from .cache import explorable_runs, list_runs, runs_root
from .data import APP_WORLD_LIMIT, DEFAULT_DATASET, bundle_datasets, dataset_registry, dataset_shifts

# --- session-state keys (also the widget keys of the sidebar) ---------------------------------------
KEY_DATASET, KEY_SHIFT, KEY_RUN = "dataset", "shift", "run_id"
KEY_DEMO_JOB = "demo_job_id"
KEY_EXTRA_DATASETS = "extra_datasets"  # generated / imported dataset names offered in the sidebar
KEY_PENDING = "_pending_selection"  # choices made by a page, applied before the sidebar renders
# URL query parameter per session key; pages may add user, item and step (see qp_get / qp_set).
QUERY_PARAMS = {KEY_DATASET: "dataset", KEY_SHIFT: "shift", KEY_RUN: "run"}
PAGE_PARAMS = ("user", "item", "step")
READ_ONLY_TEXT = ("read-only workshop mode: browsing precomputed runs; training, import and generating "
                  "worlds are switched off.")


def read_only() -> bool:
    """Workshop mode: precomputed runs only, no training or import."""
    env = os.environ.get("CNSDIFF_READ_ONLY", "").strip().lower()
    return env in ("1", "true", "yes", "on") or "--read-only" in sys.argv[1:]


def read_only_banner() -> None:
    if read_only():
        st.info(READ_ONLY_TEXT, icon="🔒")


def current_dataset() -> str:
    return st.session_state.get(KEY_DATASET) or DEFAULT_DATASET


def current_shift() -> str | None:
    shift = st.session_state.get(KEY_SHIFT)
    if shift:
        return shift
    return dataset_shifts(current_dataset())[1] or None


def current_run_id() -> str | None:
    return st.session_state.get(KEY_RUN)


def dataset_options() -> list[str]:
    """Datasets offered in the sidebar: available named ones, the workshop bundle's, then
    generated / imported ones."""
    names = [d["name"] for d in dataset_registry() if d["available"] and d["kind"] != "generator"]
    for extra in [*bundle_datasets(), *st.session_state.get(KEY_EXTRA_DATASETS, [])]:
        if extra not in names:
            names.append(extra)
    return names


def add_dataset(name: str) -> None:
    """Offer a generated or imported dataset in the sidebar."""
    extras = st.session_state.setdefault(KEY_EXTRA_DATASETS, [])
    if name not in extras:
        extras.append(name)


def select(dataset: str | None = None, shift: str | None = None, run_id: str | None = None) -> None:
    """Change the global choices from a page. Widgets of the sidebar were already drawn in this
    rerun, so the choice is applied at the start of the next one; call st.rerun() after."""
    pending = st.session_state.setdefault(KEY_PENDING, {})
    if dataset is not None:
        pending[KEY_DATASET] = dataset
        pending[KEY_SHIFT] = shift
    if run_id is not None:
        pending[KEY_RUN] = run_id


def apply_pending() -> None:
    """Called by app.py before the sidebar widgets exist."""
    pending = st.session_state.pop(KEY_PENDING, None)
    if not pending:
        return
    if KEY_DATASET in pending:
        if pending[KEY_DATASET] not in dataset_options():
            add_dataset(pending[KEY_DATASET])
        st.session_state[KEY_DATASET] = pending[KEY_DATASET]
        st.session_state[KEY_SHIFT] = pending.get(KEY_SHIFT) or dataset_shifts(pending[KEY_DATASET])[1]
    if KEY_RUN in pending:
        st.session_state[KEY_RUN] = pending[KEY_RUN]


def linkable_dataset(name: str) -> str:
    """'' when a dataset named in a link may be opened here, else why not (half a sentence).
    Links are untrusted: paths must lie under the import roots or the upload folder, and
    generated worlds must be small enough to build within a rerun."""
    known = {d["name"]: d for d in dataset_registry()}
    if name in known:
        d = known[name]
        return "" if d["available"] and d["kind"] != "generator" else "is not available here"
    if name.lower().startswith("synthetic"):
        from cnsdiff_core.data import parse_synthetic

        if read_only() and name not in bundle_datasets():
            return "is not one of the precomputed datasets (generating worlds is off in read-only mode)"
        try:
            cfg = parse_synthetic(name.split(":", 1)[1] if ":" in name else "")
        except DataError as exc:
            return f"has bad parameters ({exc})"
        if max(cfg.n_users, cfg.n_items) > APP_WORLD_LIMIT:
            return (f"is larger than the app generates ({APP_WORLD_LIMIT:,} users or items); "
                    "generate it with the command line")
        return ""
    if not openable_path(name, [(runs_root() / ".uploads").resolve()]):
        return "is not a dataset this app may open"
    return ""


def load_query_params() -> list[str]:
    """Once per session, copy dataset / shift / run from the URL into session state (before the
    sidebar widgets are drawn). Returns warnings about values that could not be used."""
    if st.session_state.get("_qp_loaded"):
        return []
    st.session_state["_qp_loaded"] = True
    qp = st.query_params
    warnings = []
    name = qp.get("dataset")
    if name:
        reason = linkable_dataset(name)
        if not reason:
            if name not in dataset_options():
                add_dataset(name)
            st.session_state[KEY_DATASET] = name
        else:
            warnings.append(f"Dataset {name!r} from the link {reason}; showing {DEFAULT_DATASET} instead.")
    shift = qp.get("shift")
    if shift:
        allowed, _ = dataset_shifts(current_dataset())
        if shift in allowed:
            st.session_state[KEY_SHIFT] = shift
        else:
            warnings.append(f"Shift {shift!r} from the link is not offered for {current_dataset()}; "
                            f"using its default.")
    run_id = qp.get("run")
    if run_id:
        if run_id in {r.run_id for r in list_runs()}:
            st.session_state[KEY_RUN] = run_id
        else:
            warnings.append(f"Run {run_id!r} from the link is not in this run store.")
    for name in PAGE_PARAMS:
        if qp.get(name) is not None:
            st.session_state[f"qp_{name}"] = qp.get(name)
    return warnings


def sync_query_params() -> None:
    """Write the global choices into the URL (only what changed), so a copied link restores them.
    Called by app.py after the sidebar on every rerun, which also restores them after a page
    switch."""
    for key, param in QUERY_PARAMS.items():
        value = st.session_state.get(key)
        if value in (None, ""):
            if param in st.query_params:
                del st.query_params[param]
        elif st.query_params.get(param) != str(value):
            st.query_params[param] = str(value)


def qp_get(name: str, default: Any = None) -> Any:
    """A page-level URL parameter (user, item, step): from the URL or the session's first URL."""
    value = st.query_params.get(name)
    if value is None:
        value = st.session_state.get(f"qp_{name}")
    return default if value is None else value


def qp_set(name: str, value: Any) -> None:
    st.session_state[f"qp_{name}"] = None if value is None else str(value)
    if value is None:
        if name in st.query_params:
            del st.query_params[name]
    elif st.query_params.get(name) != str(value):
        st.query_params[name] = str(value)


def url_state(key: str, param: str, options: list, fallback: Any, parse=str) -> None:
    """Before a widget: give it the URL's value (?user=..., ?item=..., ?step=...) on first render,
    or `fallback` when its current value is no longer an option. Pair with `qp_set` after."""
    if key in st.session_state and st.session_state[key] in options:
        return
    raw = qp_get(param) if key not in st.session_state else None
    try:
        value = parse(raw) if raw is not None else None
    except (TypeError, ValueError):
        value = None
    st.session_state[key] = value if value in options else fallback


def pick_run(key: str, with_denoiser: bool = False, label: str = "Run") -> str | None:
    """A run picker that defaults to (and follows) the sidebar's current run."""
    infos = explorable_runs(with_denoiser)
    if not infos:
        return None
    ids = [i.run_id for i in infos]
    labels = {i.run_id: i.label() for i in infos}
    current = current_run_id()
    seen = f"_{key}_sidebar_seen"
    if current in ids and st.session_state.get(seen) != current:
        st.session_state[key] = current  # the sidebar changed: follow it
    st.session_state[seen] = current
    if st.session_state.get(key) not in ids:
        st.session_state[key] = current if current in ids else ids[0]
    return st.selectbox(label, ids, key=key, format_func=lambda r: labels.get(r, r),
                        help="Defaults to the run chosen in the sidebar.")


def pick_runs(key: str, label: str = "Runs") -> list[str]:
    infos = explorable_runs(False)
    ids = [i.run_id for i in infos]
    labels = {i.run_id: i.label() for i in infos}
    current = current_run_id()
    if key not in st.session_state:
        st.session_state[key] = [current] if current in ids else ids[:1]
    st.session_state[key] = [r for r in st.session_state[key] if r in ids]
    return st.multiselect(label, ids, key=key, format_func=lambda r: labels.get(r, r))

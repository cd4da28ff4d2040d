"""Datasets on the Streamlit side: cached loading (a Dataset is shared read-only by every session),
what shifts a dataset offers, the long tail and shift report, checking and saving a user's
uploads, and CSV downloads."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pandas as pd
import streamlit as st

from cnsdiff_core.data import SHIFTS, DataError, list_datasets, load_dataset, shift_report, validate_files
from cnsdiff_core.data.dataset import popularity_by_split

from .cache import runs_root

DEFAULT_DATASET = "sample"
APP_WORLD_LIMIT = 5000  # users and items of a world generated inside the app (the CLI has no cap)


@st.cache_data(ttl=60, show_spinner=False)
def dataset_registry() -> list[dict]:
    return list_datasets()


@st.cache_resource(show_spinner="Loading the dataset…", max_entries=8)
def load_dataset_cached(name: str, shift: str | None = None, seed: int = 0):
    """A Dataset, shared read-only by every session (it holds numpy arrays). Raises DataError."""
    return load_dataset(name, shift, seed=seed)


def dataset_shifts(name: str) -> tuple[list[str], str]:
    """(allowed shifts, default shift) of a dataset name or path; never raises."""
    for d in dataset_registry():
        if d["name"] == name:
            return list(d["shifts"]), d.get("default_shift") or d["shifts"][0]
    if name.lower().startswith("synthetic"):
        return list(SHIFTS), "exposure"
    path = Path(name)
    try:
        if path.is_dir():
            if (path / "world.json").is_file():
                return list(SHIFTS), "exposure"
            ds = load_dataset_cached(name, None)
            return [ds.shift], ds.shift
        if path.is_file():
            verdict = validate_paths([path])[0]
            if verdict["has_timestamps"]:
                return ["temporal", "popularity", "random"], "temporal"
            return ["random", "popularity"], "random"
    except (DataError, OSError):
        pass
    return [], ""


def dataset_label(name: str) -> str:
    if name.startswith("synthetic:"):
        return "synthetic · " + name.split(":", 1)[1]
    if "/" in name or os.sep in name:
        return f"imported · {Path(name).name}"
    return name


@st.cache_data(ttl=30, show_spinner=False)
def _bundle_datasets(root: str) -> list[str]:
    from cnsdiff_core.bundle import read_manifest

    manifest = read_manifest(root) or {}
    return [str(d) for d in manifest.get("datasets", []) if isinstance(d, str)]


def bundle_datasets() -> list[str]:
    """Datasets of the workshop bundle in the run store (bundle.json), [] without one."""
    return _bundle_datasets(str(runs_root()))


@st.cache_data(show_spinner=False, max_entries=16)
def popularity_frame(name: str, shift: str | None, seed: int = 0) -> pd.DataFrame:
    """The long tail per split (cnsdiff_core.data.dataset.popularity_by_split)."""
    return popularity_by_split(load_dataset_cached(name, shift, seed))


@st.cache_data(show_spinner=False, max_entries=16)
def shift_report_cached(name: str, shift: str | None, seed: int = 0) -> dict:
    return shift_report(load_dataset_cached(name, shift, seed))


# --- a user's files ----------------------------------------------------------------------------------
def session_upload_dir() -> Path:
    """A folder for this session's uploads (inside the run store, hidden from the run list)."""
    sid = st.session_state.setdefault("_upload_session", uuid.uuid4().hex[:12])
    folder = runs_root() / ".uploads" / sid
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_uploads(files) -> list[Path]:
    folder = session_upload_dir()
    out = []
    for f in files:
        name = Path(f.name).name  # never a path from the browser
        if not name or name.startswith("."):
            name = f"upload-{uuid.uuid4().hex[:6]}"
        target = folder / name
        data = f.getvalue()
        if not (target.is_file() and target.stat().st_size == len(data) and target.read_bytes() == data):
            target.write_bytes(data)
        out.append(target)
    return out


@st.cache_data(show_spinner="Checking the files…", max_entries=32)
def _validate(paths: tuple[str, ...], signature: tuple) -> list[dict]:
    return validate_files([Path(p) for p in paths])


def validate_paths(paths: list[Path]) -> list[dict]:
    """A verdict per file (cnsdiff_core.data.validate_files), cached per file state."""
    sig = tuple((str(p), p.stat().st_mtime if p.exists() else 0, p.stat().st_size if p.exists() else 0) for p in paths)
    return _validate(tuple(str(p) for p in paths), sig)


def verdict_frame(verdicts: list[dict]) -> pd.DataFrame:
    rows = [{"file": v["file"], "ok": "✅ ok" if v["ok"] else "❌ not usable", "format": v.get("format") or "",
             "rows": v.get("rows", 0), "users": v.get("users", 0), "items": v.get("items", 0),
             "message": v["message"] + ("" if not v.get("warnings") else " Warnings: " + " ".join(v["warnings"]))}
            for v in verdicts]
    return pd.DataFrame(rows, columns=["file", "ok", "format", "rows", "users", "items", "message"])


def csv_bytes(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode("utf-8")


def csv_later(df: pd.DataFrame):
    """The CSV of df, made only when the user clicks the download button (st.download_button
    takes a callable): a page rerun does not pay for it."""
    return lambda: csv_bytes(df)

"""Where imported datasets live: the data directory and the names stored in it.

The data directory is env ``CNSDIFF_DATA`` or ``data/`` in the repository (git-ignored); each
imported dataset is a folder holding its files and an ``import.json`` (written by imports.py).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .dataset import DataError


def data_dir() -> Path:
    env = os.environ.get("CNSDIFF_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"


def imported_names() -> list[str]:
    root = data_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "import.json").is_file())


def imported_path(name: str) -> Path | None:
    """The stored copy of an imported dataset: its single file, or its folder."""
    folder = data_dir() / name
    meta = folder / "import.json"
    if not meta.is_file():
        return None
    try:
        info = json.loads(meta.read_text())
    except (OSError, ValueError):
        raise DataError(f"{meta} is damaged; import the dataset again with --force.") from None
    return folder / info["file"] if info.get("file") else folder

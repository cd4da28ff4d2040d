"""Imported datasets: a user's files registered under a name in the data directory, and the
sandbox that decides which local paths an app user may import or link to at all.

The data directory is env ``CNSDIFF_DATA`` or ``data/`` in the repository (git-ignored). An import
copies the source (one file, or a folder's files) into ``<data dir>/<name>/`` together with an
``import.json`` that records where it came from. The copy is validated by loading it first, written
to a temporary folder and renamed into place, so a failed import leaves nothing behind; an existing
name is never overwritten unless ``force`` is given (then the old copy is replaced atomically).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from .dataset import DataError
from .loaders import INTERACTION_SUFFIXES
from .registry import REPO_ROOT, load_dataset
from .stored import data_dir

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
RESERVED = {"sample", "food", "yelp2018", "coat", "kuairec", "synthetic"}
DATA_SUFFIXES = {*INTERACTION_SUFFIXES, ".json", ".npz"}  # interactions, a world's or folder's metadata


def import_dataset(source: str | Path, name: str, force: bool = False) -> dict:
    """Validate and copy a file or folder into the data directory under `name`.

    Returns a summary: name, path, shift, users, items, interactions per split, notes.
    """
    if not NAME_RE.match(name or ""):
        raise DataError(f"Dataset name {name!r} is not allowed; use 1-64 letters, digits, '-' or '_'.")
    if name.lower() in RESERVED:
        raise DataError(f"Dataset name {name!r} is reserved for a built-in dataset; pick another name.")
    src = Path(source).expanduser()
    if not src.exists():
        raise DataError(f"{src} does not exist; give the path of an interaction file or a split folder.")
    target = data_dir() / name
    if target.exists() and not force:
        raise DataError(f"A dataset named {name!r} already exists in {data_dir()}; pick another name "
                        f"or pass --force to replace it.")
    ds = load_dataset(str(src))  # validation: raises one-sentence DataErrors
    root = data_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    except OSError as exc:
        raise DataError(f"cannot write to the data directory {root} ({exc.strerror}); set CNSDIFF_DATA "
                        f"to a writable folder.") from None
    try:
        if src.is_file():
            shutil.copy2(src, tmp / src.name)
            file_name = src.name
        else:
            for p in src.iterdir():
                if p.is_file() and p.suffix.lower() in DATA_SUFFIXES:
                    shutil.copy2(p, tmp / p.name)
            file_name = None
        info = {"name": name, "source": str(src.resolve()), "file": file_name, "imported": time.time(),
                "shift": ds.shift, "users": ds.n_users, "items": ds.n_items}
        (tmp / "import.json").write_text(json.dumps(info, indent=2))
        if target.exists():  # force: swap in the new copy, then drop the old one
            old = root / f".{name}.old-{os.getpid()}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"could not copy {src} into {target} ({exc.strerror}); check free space and "
                        f"permissions.") from None
    return {"name": name, "path": str(target), "shift": ds.shift, "users": ds.n_users, "items": ds.n_items,
            "train": len(ds.train), "valid": len(ds.valid), "test_iid": len(ds.test_iid),
            "test_ood": len(ds.test_ood), "notes": ds.notes}


# --- the sandbox: which local paths the app may read ----------------------------------------------
def import_roots() -> list[Path]:
    """Folders an app user may import from: env CNSDIFF_IMPORT_ROOTS (os.pathsep-separated), else
    the repository's sample_data and ../shared/datasets."""
    env = os.environ.get("CNSDIFF_IMPORT_ROOTS")
    if env:
        return [Path(p).expanduser().resolve() for p in env.split(os.pathsep) if p.strip()]
    return [(REPO_ROOT / "sample_data").resolve(), (REPO_ROOT.parent / "shared" / "datasets").resolve()]


def inside(path: Path, roots: list[Path]) -> bool:
    return any(path == r or path.is_relative_to(r) for r in roots)


def escaping_entry(folder: Path, roots: list[Path]) -> Path | None:
    """The first entry of a folder that is a link resolving outside the roots (the loaders read a
    folder's files by name, so a link there would read elsewhere), else None."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return None
    for entry in entries:
        try:
            target = entry.resolve()
        except (OSError, RuntimeError):  # a link loop
            return entry
        if not inside(target, roots):
            return entry
    return None


def allowed_import_path(text: str, roots: list[Path] | None = None) -> Path:
    """Resolve a local path typed by the user; DataError unless it exists under an import root.
    `..` and links are resolved first, and a folder may not hold links that lead outside."""
    if not text.strip():
        raise DataError("Type a file or folder path first.")
    if "\x00" in text:
        raise DataError("The path contains a NUL character; type a plain path.")
    try:
        path = Path(text.strip()).expanduser().resolve()
    except (OSError, RuntimeError):
        raise DataError("The path cannot be resolved (a link loop?); type another path.") from None
    roots = import_roots() if roots is None else roots
    if not inside(path, roots):
        raise DataError(f"{path} is outside the folders this app may read ({', '.join(map(str, roots))}); "
                        "copy the data there or set CNSDIFF_IMPORT_ROOTS.")
    if not path.exists():
        raise DataError(f"{path} does not exist; check the spelling.")
    if path.is_dir():
        bad = escaping_entry(path, roots)
        if bad is not None:
            raise DataError(f"{bad.name} in {path} links outside the folders this app may read; copy "
                            "the file there instead of linking it.")
    return path


def openable_path(name: str, extra_roots: list[Path] = ()) -> bool:
    """Whether a dataset path named in a link may be opened: under an import root (or one of
    `extra_roots`, e.g. the upload folder), existing, and a folder without links leading out."""
    try:
        path = Path(name).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return False
    roots = [*import_roots(), *extra_roots]
    return inside(path, roots) and path.exists() and not (path.is_dir() and escaping_entry(path, roots))

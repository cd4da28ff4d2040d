"""Folders of pre-split files (the shared benchmark format) read into a `Dataset`."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import SHIFTS, DataError, Dataset, clip
from .ids import IdMap
from .loaders import COLUMN_ALIASES, INTERACTION_SUFFIXES, read_text, read_interactions
from .positives import to_positives

KNOWN_SHIFTS = {"food": "temporal", "yelp2018": "popularity", "coat": "exposure", "kuairec": "exposure"}
_ROLE_STEMS = {"train": ("train",), "valid": ("valid_iid", "valid", "val", "validation"),
               "test_iid": ("test_iid",), "test_ood": ("test_ood", "test")}


def find_role_file(folder: Path, role: str) -> Path | None:
    for stem in _ROLE_STEMS[role]:
        for ext in INTERACTION_SUFFIXES:
            p = folder / f"{stem}{ext}"
            if p.is_file():
                return p
    return None


def _declared_shift(folder: Path, key: str, notes: list[str]) -> str:
    if key in KNOWN_SHIFTS:
        return KNOWN_SHIFTS[key]
    declared = None
    if (folder / "shift.txt").is_file():
        declared = (folder / "shift.txt").read_text(encoding="utf-8", errors="replace").strip().lower()
        where = "shift.txt"
    elif (folder / "dataset.json").is_file():
        try:
            meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise DataError(f"{folder.name}/dataset.json is not valid JSON; fix it or remove it.") from None
        declared = str(meta.get("shift", "")).strip().lower() if isinstance(meta, dict) else ""
        where = "dataset.json"
    if declared is None or declared == "":
        notes.append("The folder does not declare its shift (no shift.txt or dataset.json), so it "
                     "is labelled 'random' (no known shift); add shift.txt naming one of "
                     f"{', '.join(SHIFTS)} to label it.")
        return "random"
    if declared not in SHIFTS:
        raise DataError(f"{folder.name}/{where} declares shift {clip(declared)!r}; use one of "
                        f"{', '.join(SHIFTS)}.")
    return declared


def _read_pos(path: Path, notes: list[str]) -> pd.DataFrame:
    df, warns = read_interactions(path)
    pos, warns2 = to_positives(df)
    notes.extend(w if w.startswith(path.name) else f"{path.name}: {w}" for w in warns + warns2)
    return pos


def _item_titles(folder: Path, items: IdMap, notes: list[str]) -> np.ndarray | None:
    for fname in ("items.csv", "items.tsv"):
        p = folder / fname
        if p.is_file():
            sep = "," if fname.endswith(".csv") else "\t"
            try:
                meta = pd.read_csv(io.StringIO(read_text(p)), sep=sep, dtype=str, keep_default_na=False)
            except (pd.errors.ParserError, ValueError) as e:
                raise DataError(f"{fname} could not be parsed ({str(e).splitlines()[0][:80]}); "
                                f"use a header 'item,title'.") from None
            lower = {c.strip().lower(): c for c in meta.columns}
            icol = next((lower[a] for a in COLUMN_ALIASES["item"] if a in lower), None)
            tcol = next((lower[a] for a in ("title", "name", "label") if a in lower), None)
            if icol is None or tcol is None:
                raise DataError(f"{fname} needs columns 'item' and 'title' (found: "
                                f"{', '.join(clip(c) for c in meta.columns[:6])}); rename them.")
            idx = items.encode(meta[icol].str.strip())
            titles = np.full(len(items), "", dtype=object)
            ok = idx >= 0
            titles[idx[ok]] = meta[tcol].to_numpy(dtype=object)[ok]
            if (~ok).sum():
                notes.append(f"{fname}: {int((~ok).sum()):,} items are not in the training data and "
                             f"were ignored.")
            return titles.astype(str)
    return None


def load_split_folder(folder, name: str | None = None, seed: int = 0) -> Dataset:
    """Load a folder of pre-split files (the shared benchmark format) into a Dataset.

    Files: ``train.txt`` and any of ``valid_iid.txt``, ``test_iid.txt``, ``test.txt`` or
    ``test_ood.txt`` (= OOD test); ``.csv``/``.tsv``/``.inter`` variants are read too, and
    ``items.csv`` (item,title) gives titles. Given splits are kept; a missing validation set is
    carved as a seeded random 10% of train, a missing IID test as 20% (both noted). Ids are mapped
    through the training file (integer ids keep their order, so 0..n-1 ids stay unchanged); held-out
    pairs with an unknown user or item, or that are training pairs, are dropped and counted.

    Shift: food=temporal, yelp2018=popularity, coat=exposure, kuairec=exposure; otherwise from
    ``shift.txt`` or ``dataset.json`` ({"shift": ...}); undeclared folders are labelled 'random'
    (no known shift) with a note. A folder without ``train.txt`` but with ``test_iid.txt`` and an
    OOD test (KuaiRec here) trains on the de-duplicated IID log, carving validation and IID test
    (train 5 : valid 1 : test 2) from it: a construction of ours, noted as such.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"Dataset folder {folder} does not exist; check the path or set "
                        f"CNSDIFF_DATA_ROOT.")
    key = (name or folder.name).lower()
    notes: list[str] = []
    files = {role: find_role_file(folder, role) for role in _ROLE_STEMS}
    shift = _declared_shift(folder, key, notes)
    constructed = False
    if files["train"] is None:
        if files["test_iid"] is None or files["test_ood"] is None:
            raise DataError(f"Folder {folder} has no train.txt; add train.txt (user item per line) "
                            f"or both test_iid.txt and test_ood.txt.")
        constructed = True
        train_df = _read_pos(files["test_iid"], notes)
        notes.insert(0, f"No training file: training, validation and IID test are carved from the "
                        f"de-duplicated {files['test_iid'].name} (train 5 : valid 1 : test 2, seed "
                        f"{seed}) and {files['test_ood'].name} is the OOD test; this construction "
                        f"is ours, not the paper's.")
    else:
        train_df = _read_pos(files["train"], notes)
    users = IdMap.from_values(train_df["user"].to_numpy())
    items = IdMap.from_values(train_df["item"].to_numpy())
    pairs = np.stack([users.encode(train_df["user"]), items.encode(train_df["item"])], axis=1)
    times = train_df["timestamp"].to_numpy(np.int64) if "timestamp" in train_df else None
    held, dropped = {}, {}
    for role in ("valid", "test_iid", "test_ood"):
        if constructed and role != "test_ood":
            held[role] = None
            continue
        p = files[role]
        if p is None:
            held[role] = None
            continue
        df = _read_pos(p, notes)
        arr = np.stack([users.encode(df["user"]), items.encode(df["item"])], axis=1)
        ok = (arr >= 0).all(axis=1)
        n_bad = int((~ok).sum())
        if n_bad:
            notes.append(f"{p.name}: dropped {n_bad:,} of {len(arr):,} pairs whose user or item has "
                         f"no training interaction.")
        dropped[role] = n_bad
        held[role] = arr[ok]
    from .splits import InteractionLog, given_split

    log = InteractionLog(pairs=pairs, n_users=len(users), n_items=len(items), times=times,
                         user_ids=users.ids, item_ids=items.ids,
                         item_titles=_item_titles(folder, items, notes), name=name or folder.name,
                         source=str(folder))
    shares = (1 / 8, 2 / 8) if constructed else (0.1, 0.2)
    ds = given_split(log, shift, valid=held["valid"], test_iid=held["test_iid"],
                     test_ood=held["test_ood"], seed=seed, valid_share=shares[0],
                     test_share=shares[1], dropped_before=dropped, extra_notes=notes)
    if constructed:  # the generic "no validation file" notes would mislead here
        ds.notes = [n for n in ds.notes if not n.startswith(("No validation file", "No IID test file"))]
    return ds

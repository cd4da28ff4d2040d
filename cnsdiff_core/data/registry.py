"""Named datasets: the shipped sample world, the shared benchmarks, generated worlds and files.

Names accepted by `load_dataset`:

- ``"sample"``: the world shipped in ``sample_data/world`` (default shift ``exposure``).
- ``"food"``, ``"yelp2018"``, ``"coat"``, ``"kuairec"``: the shared benchmark splits read from
  the data root (``data_root``, else env ``CNSDIFF_DATA_ROOT``, else ``../shared/datasets`` next
  to the repository). Their splits are fixed, so each supports only its own shift.
- ``"synthetic:<params>"``: a world generated on the fly; params are JSON
  (``synthetic:{"confounding": 0.8}``) or ``key=value`` pairs (``synthetic:confounding=0.8,
  n_users=500``) naming `WorldConfig` fields. Default shift ``exposure``.
- a folder path: a saved world (has ``world.json``) or a pre-split folder (``train.txt`` ...).
- a file path: one interaction log, split by the requested shift (default ``temporal`` when the
  file has timestamps, else ``random``; ``exposure`` needs a separate random-exposure test and is
  refused for a single file).

Nothing is cached here (the app caches).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .dataset import SHIFTS, DataError, Dataset, clip
from .folders import KNOWN_SHIFTS, find_role_file, load_split_folder
from .ids import IdMap
from .loaders import read_interactions
from .positives import to_positives
from .splits import InteractionLog, split
from .synthetic import WorldConfig, generate_world, world_dataset
from .world_files import load_world

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_WORLD = REPO_ROOT / "sample_data" / "world"
SHARED = ("food", "yelp2018", "coat", "kuairec")
_DESCRIPTIONS = {
    "sample": "Shipped synthetic world (600 users, 800 items, confounding 0.7) with ground truth.",
    "food": "Food.com recipes; OOD test = later interactions.",
    "yelp2018": "Yelp2018; OOD test drawn nearly uniformly over items (popularity shift).",
    "coat": "Coat shopping; OOD test collected under uniformly random exposure.",
    "kuairec": "KuaiRec; OOD test = the fully observed small matrix (training carved from the "
               "IID log: our construction).",
    "synthetic": "A world generated on the fly: synthetic:key=value,... with WorldConfig fields.",
}


def data_root_path(root=None) -> Path:
    """Where the shared benchmarks are looked for: ``root``, env CNSDIFF_DATA_ROOT, or
    ``../shared/datasets`` next to the repository."""
    if root is not None:
        return Path(root)
    env = os.environ.get("CNSDIFF_DATA_ROOT")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "datasets"


def _check_shift(name: str, shift: str, allowed) -> None:
    if shift not in allowed:
        raise DataError(f"Dataset {clip(name, 80)!r} does not support shift {clip(shift)!r}; allowed: "
                        f"{', '.join(allowed)}.")


def parse_synthetic(spec: str) -> WorldConfig:
    """``'confounding=0.8,n_users=500'`` or a JSON object -> WorldConfig."""
    spec = spec.strip()
    if not spec:
        return WorldConfig()
    if spec.startswith("{"):
        try:
            params = json.loads(spec)
        except (ValueError, RecursionError):
            raise DataError(f"Synthetic parameters {spec[:60]!r} are not valid JSON; use "
                            f"key=value pairs or a JSON object.") from None
        if not isinstance(params, dict):
            raise DataError("Synthetic parameters must be a JSON object such as {\"confounding\": 0.8}.")
    else:
        params = {}
        for part in spec.replace(";", ",").split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise DataError(f"Synthetic parameter {clip(part.strip())!r} lacks '='; write key=value "
                                f"pairs such as confounding=0.8.")
            k, v = part.split("=", 1)
            params[k.strip()] = v.strip()
    for k, v in params.items():  # WorldConfig's messages repeat keys and values: keep them short
        if len(str(k)) > 40 or len(str(v)) > 40:
            raise DataError(f"Synthetic parameter {clip(k)}={clip(v)} is too long; give a short "
                            f"WorldConfig field name and a number.")
    return WorldConfig.from_dict(params)


def _shared_folder(name: str, root: Path) -> Path:
    folder = root / name
    ok = folder.is_dir() and (find_role_file(folder, "train") is not None or
                              (find_role_file(folder, "test_iid") is not None and find_role_file(folder, "test_ood") is not None))
    if not ok:
        raise DataError(f"Dataset {name!r} was not found in {folder}; set CNSDIFF_DATA_ROOT to the "
                        f"folder holding the shared datasets or pass data_root=.")
    return folder


def _load_file(path: Path, shift: str | None, seed: int) -> Dataset:
    df, warns = read_interactions(path)
    pos, warns2 = to_positives(df)
    has_t = "timestamp" in pos.columns
    shift = shift or ("temporal" if has_t else "random")
    allowed = ("popularity", "temporal", "random") if has_t else ("popularity", "random")
    if shift == "exposure":
        raise DataError(f"A single file such as {path.name} cannot give an exposure shift (it needs "
                        f"a random-exposure test set); use a folder with test_ood.txt or allowed: "
                        f"{', '.join(allowed)}.")
    _check_shift(path.name, shift, allowed)
    users = IdMap.from_values(pos["user"].to_numpy())
    items = IdMap.from_values(pos["item"].to_numpy())
    log = InteractionLog(pairs=np.stack([users.encode(pos["user"]), items.encode(pos["item"])], 1),
                         n_users=len(users), n_items=len(items),
                         times=pos["timestamp"].to_numpy(np.int64) if has_t else None,
                         user_ids=users.ids, item_ids=items.ids, name=path.stem, source=str(path),
                         notes=[w if w.startswith(path.name) else f"{path.name}: {w}"
                                for w in warns + warns2])
    return split(log, shift, seed=seed)


def load_dataset(name: str, shift: str | None = None, seed: int = 0, data_root=None) -> Dataset:
    """Load a dataset by name or path (see the module doc); ``shift=None`` picks its default."""
    if not isinstance(name, (str, os.PathLike)) or not str(name).strip():
        raise DataError("Dataset name is empty; pick sample, food, yelp2018, coat, kuairec, "
                        "synthetic:... or a path.")
    if shift is not None and shift not in SHIFTS:
        raise DataError(f"Shift {clip(shift)!r} is unknown; use one of {', '.join(SHIFTS)}.")
    key = str(name).strip()
    low = key.lower()
    if low == "sample":
        if not (SAMPLE_WORLD / "world.json").is_file():
            raise DataError(f"The sample world is missing from {SAMPLE_WORLD}; run "
                            f"scripts/make_sample_data.py.")
        ds = world_dataset(load_world(SAMPLE_WORLD), shift or "exposure", seed=seed)
        ds.name, ds.source = "sample", str(SAMPLE_WORLD)
        return ds
    if low in SHARED:
        want = KNOWN_SHIFTS[low]
        if shift is not None:
            _check_shift(low, shift, (want,))
        return load_split_folder(_shared_folder(low, data_root_path(data_root)), name=low, seed=seed)
    if low.startswith("synthetic"):
        spec = key.split(":", 1)[1] if ":" in key else ""
        cfg = parse_synthetic(spec)
        ds = world_dataset(generate_world(cfg), shift or "exposure", seed=seed)
        ds.name = key if len(key) <= 80 else key[:77] + "..."
        return ds
    from .stored import imported_path

    stored = imported_path(key) if "/" not in key and "\\" not in key and key not in (".", "..") else None
    if stored is not None:  # a dataset registered with `python -m cnsdiff_core import`
        ds = load_dataset(str(stored), shift, seed)
        ds.name = key
        return ds
    path = Path(key).expanduser()
    if path.is_dir():
        if (path / "world.json").is_file():
            ds = world_dataset(load_world(path), shift or "exposure", seed=seed)
            ds.name, ds.source = path.name, str(path)
            return ds
        ds = load_split_folder(path, seed=seed)
        if shift is not None:
            _check_shift(path.name, shift, (ds.shift,))
        return ds
    if path.is_file():
        return _load_file(path, shift, seed)
    raise DataError(f"Dataset {clip(key, 120)!r} is neither a known name (sample, food, yelp2018, coat, kuairec, "
                    f"synthetic:...) nor an existing path; check the spelling.")


def list_datasets(data_root=None) -> list[dict]:
    """One dict per named dataset: name, kind, shifts, default_shift, available, reason, description."""
    root = data_root_path(data_root)
    out = []
    ok = (SAMPLE_WORLD / "world.json").is_file()
    out.append({"name": "sample", "kind": "synthetic", "shifts": list(SHIFTS),
                "default_shift": "exposure", "available": ok, "has_ground_truth": True,
                "reason": "" if ok else f"missing {SAMPLE_WORLD}; run scripts/make_sample_data.py",
                "description": _DESCRIPTIONS["sample"]})
    for name in SHARED:
        try:
            folder = _shared_folder(name, root)
            avail, reason = True, ""
            files = sorted(p.name for p in folder.iterdir() if p.is_file())
        except DataError:
            avail, files = False, []
            reason = f"not found in {root / name}; set CNSDIFF_DATA_ROOT"
        out.append({"name": name, "kind": "benchmark", "shifts": [KNOWN_SHIFTS[name]],
                    "default_shift": KNOWN_SHIFTS[name], "available": avail, "reason": reason,
                    "has_ground_truth": False, "files": files, "description": _DESCRIPTIONS[name],
                    "path": str(root / name)})
    out.append({"name": "synthetic", "kind": "generator", "shifts": list(SHIFTS),
                "default_shift": "exposure", "available": True, "reason": "",
                "has_ground_truth": True, "description": _DESCRIPTIONS["synthetic"]})
    from .stored import data_dir, imported_names

    for name in imported_names():
        try:
            info = json.loads((data_dir() / name / "import.json").read_text())
        except (OSError, ValueError):
            info = {}
        out.append({"name": name, "kind": "imported", "shifts": [info.get("shift", "random")],
                    "default_shift": info.get("shift", "random"), "available": bool(info),
                    "reason": "" if info else "import.json is damaged; import it again with --force",
                    "has_ground_truth": False, "description": f"imported from {info.get('source', '?')}",
                    "path": str(data_dir() / name)})
    return out


def validate_files(paths) -> list[dict]:
    """Check uploaded files one by one: a verdict per file for the app's import page.

    Each dict: file, ok, format, rows (parsed), positives, users, items, has_timestamps,
    has_ratings, warnings (list), message (one sentence: the error, or a summary).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for p in paths:
        p = Path(p)
        v = {"file": p.name, "path": str(p), "ok": False, "format": None, "rows": 0, "positives": 0,
             "users": 0, "items": 0, "has_timestamps": False, "has_ratings": False, "warnings": [],
             "message": ""}
        try:
            df, warns = read_interactions(p)
            pos, warns2 = to_positives(df)
        except DataError as e:
            v["message"] = str(e)
            out.append(v)
            continue
        v.update(ok=True, format=df.attrs.get("format"), rows=int(len(df)), positives=int(len(pos)),
                 users=int(pos["user"].nunique()), items=int(pos["item"].nunique()),
                 has_timestamps="timestamp" in df.columns, has_ratings="rating" in df.columns,
                 warnings=warns + warns2)
        v["message"] = (f"{v['positives']:,} positive interactions from {v['users']:,} users on "
                        f"{v['items']:,} items ({v['format']}"
                        f"{', with timestamps' if v['has_timestamps'] else ''})"
                        f"{'; ' + str(len(v['warnings'])) + ' warning(s)' if v['warnings'] else ''}.")
        out.append(v)
    return out

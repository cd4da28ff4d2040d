"""A synthetic world on disk: world.json, log.csv, random_exposure.csv, items.csv and factors.npz
in one folder (the shipped sample world is one); written by `save_world`, read by `load_world`."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import DataError, GroundTruth
from .synthetic import FORMAT, VERSION, World, WorldConfig

def save_world(world: World, folder) -> Path:
    """Write world.json, log.csv, random_exposure.csv, items.csv and factors.npz to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"user": world.log_pairs[:, 0], "item": world.log_pairs[:, 1],
                  "timestamp": world.log_time, "relevant": world.log_relevant.astype(np.int8)}
                 ).to_csv(folder / "log.csv", index=False)
    pd.DataFrame({"user": world.random_exposed[:, 0], "item": world.random_exposed[:, 1],
                  "relevant": world.random_relevant.astype(np.int8)}
                 ).to_csv(folder / "random_exposure.csv", index=False)
    pd.DataFrame({"item": np.arange(world.n_items), "title": world.item_titles,
                  "propensity": world.item_propensity, "exposures": world.item_exposures}
                 ).to_csv(folder / "items.csv", index=False, float_format="%.6g")
    np.savez_compressed(folder / "factors.npz", user_factors=world.truth.user_factors,
                        item_factors=world.truth.item_factors,
                        user_factors_start=world.user_factors_start, user_drift=world.user_drift,
                        threshold=np.array([world.truth.threshold]))
    meta = {"format": FORMAT, "version": VERSION, "config": asdict(world.config),
            "summary": world.summary(), "notes": world.notes,
            "files": {"log.csv": "biased log: user,item,timestamp (Unix s),relevant (1 = truly liked "
                                 "when clicked, 0 = popularity click)",
                      "random_exposure.csv": "uniform exposures at the end: user,item,relevant",
                      "items.csv": "item,title,propensity (base popularity),exposures",
                      "factors.npz": "ground truth: user_factors (end), item_factors, threshold, "
                                     "user_factors_start, user_drift"}}
    (folder / "world.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return folder

def _csv(folder: Path, name: str, cols: list[str]) -> pd.DataFrame:
    p = folder / name
    if not p.is_file():
        raise DataError(f"World folder {folder} lacks {name}; regenerate it with save_world.")
    try:
        df = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError):
        raise DataError(f"{folder.name}/{name} is not a readable CSV; regenerate the world.") from None
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"{folder.name}/{name} lacks column {missing[0]!r}; regenerate the world.")
    for c in cols:
        if c != "title" and not pd.api.types.is_numeric_dtype(df[c]):
            raise DataError(f"{folder.name}/{name} column {c!r} is not numeric; regenerate the world.")
    return df

def load_world(folder) -> World:
    """Read a world written by `save_world` (no pickles)."""
    folder = Path(folder)
    jp = folder / "world.json"
    if not jp.is_file():
        raise DataError(f"{folder} has no world.json; point to a folder written by save_world.")
    try:
        meta = json.loads(jp.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise DataError(f"{jp} is not valid JSON; regenerate the world.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{jp} is not a CNSDiff world file (format {FORMAT!r} expected).")
    if meta.get("version", 0) > VERSION:
        raise DataError(f"{jp} has version {meta.get('version')}, newer than this code reads "
                        f"({VERSION}); update the app.")
    cfg = WorldConfig.from_dict(meta.get("config", {}))
    log = _csv(folder, "log.csv", ["user", "item", "timestamp", "relevant"])
    rnd = _csv(folder, "random_exposure.csv", ["user", "item", "relevant"])
    items = _csv(folder, "items.csv", ["item", "title", "propensity", "exposures"])
    fp = folder / "factors.npz"
    if not fp.is_file():
        raise DataError(f"World folder {folder} lacks factors.npz; regenerate it with save_world.")
    try:
        with np.load(fp, allow_pickle=False) as z:
            fac = {k: z[k] for k in ("user_factors", "item_factors", "user_factors_start",
                                     "user_drift", "threshold")}
    except (KeyError, ValueError, OSError):
        raise DataError(f"{fp} is damaged or incomplete; regenerate the world.") from None
    U, I = cfg.n_users, cfg.n_items
    lp = log[["user", "item"]].to_numpy(np.int64)
    rp = rnd[["user", "item"]].to_numpy(np.int64)
    ok = (fac["user_factors"].shape == (U, cfg.dim) and fac["item_factors"].shape == (I, cfg.dim)
          and len(items) == I and (len(lp) == 0 or (lp.min() >= 0 and lp[:, 0].max() < U
                                                    and lp[:, 1].max() < I))
          and (len(rp) == 0 or (rp.min() >= 0 and rp[:, 0].max() < U and rp[:, 1].max() < I)))
    if not ok:
        raise DataError(f"The files in {folder} disagree with world.json (sizes or ids); regenerate "
                        f"the world.")
    items = items.sort_values("item")
    return World(config=cfg, log_pairs=lp, log_time=log["timestamp"].to_numpy(np.int64),
                 log_relevant=log["relevant"].to_numpy().astype(bool), random_exposed=rp,
                 random_relevant=rnd["relevant"].to_numpy().astype(bool),
                 truth=GroundTruth(user_factors=fac["user_factors"].astype(np.float32),
                                   item_factors=fac["item_factors"].astype(np.float32),
                                   threshold=float(fac["threshold"][0])),
                 user_factors_start=fac["user_factors_start"].astype(np.float32),
                 user_drift=fac["user_drift"].astype(np.float32),
                 item_propensity=items["propensity"].to_numpy(np.float64),
                 item_exposures=items["exposures"].to_numpy(np.int64),
                 item_titles=items["title"].astype(str).to_numpy(dtype=str),
                 notes=list(meta.get("notes", [])))

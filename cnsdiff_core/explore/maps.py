"""The Negatives map: 2-D maps fitted on the items, everything else placed with `transform`."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from ..stored_maps import StoredProjection, load_projection, store_projection
from ..data.dataset import Dataset
from ..projection import EmbeddingProjection, fit_item_map, warm_umap
from ..tasks import Status, Task, TaskPool
from ..samplers import SYNTHESIZING
from .common import ExploreError, id_labels, sampler_key, user_items


def item_frame(data: Dataset, coords: np.ndarray, n_env: int = 4) -> pd.DataFrame:
    """One row per item: item, item_id, title, x, y, popularity, log_popularity, environment."""
    if len(coords) != data.n_items:
        raise ExploreError(f"the map has {len(coords)} items but the dataset has {data.n_items}; "
                           "the run was trained on other data; pick the run's own dataset.")
    pop = data.item_popularity()
    env = data.item_environments(n_env)
    return pd.DataFrame({
        "item": np.arange(data.n_items), "item_id": id_labels(data.item_ids, data.n_items),
        "title": np.asarray(data.item_titles).astype(str) if data.item_titles is not None else "",
        "x": coords[:, 0], "y": coords[:, 1], "popularity": pop, "log_popularity": np.log10(1 + pop),
        "environment": [f"E{e} ({'least' if e == 0 else 'most' if e == n_env - 1 else 'mid'} popular)"
                        for e in env],
    })


def negatives_frame(negatives: Mapping[str, Mapping[str, np.ndarray]], item_coords: np.ndarray,
                    projection: EmbeddingProjection, data: Dataset | None = None) -> pd.DataFrame:
    """Every probe negative of every sampler placed on the map.

    Real items sit at their fitted coordinates; synthesized vectors (MixGCF, CNSDiff and each
    CNSDiff step) are placed with the fitted map's `transform` (never refit).
    Columns: layer, sampler, step, synthesized, triple, user, pos, item, x, y, hardness, score,
    s_pos, nn_dist, fhn, fhn_true (NaN without ground truth).
    """
    if "_probe" not in negatives:
        return pd.DataFrame(columns=["layer", "sampler", "step", "synthesized", "triple", "user", "pos",
                                     "item", "x", "y", "hardness", "score", "s_pos", "nn_dist", "fhn", "fhn_true"])
    probe = negatives["_probe"]
    users, pos, s_pos = probe["users"], probe["pos"], probe["s_pos"]
    frames = []
    for key, arr in negatives.items():
        if key.startswith("_"):
            continue
        base, step = sampler_key(key)
        synth = bool(arr["synthesized"]) if "synthesized" in arr else base in SYNTHESIZING  # older runs lack the flag
        items = np.asarray(arr["items"], dtype=np.int64)
        xy = projection.transform(arr["vec"]) if synth else item_coords[items]
        df = pd.DataFrame({"layer": key, "sampler": base, "step": step, "synthesized": synth,
                           "triple": np.arange(len(items)), "user": users, "pos": pos, "item": items,
                           "x": xy[:, 0], "y": xy[:, 1], "hardness": arr["hardness"],
                           "score": arr["hardness"] + s_pos, "s_pos": s_pos, "nn_dist": arr["nn_dist"],
                           "fhn": arr["fhn"].astype(bool)})
        df["fhn_true"] = (data.truth.is_relevant(users, items).astype(float)
                          if data is not None and data.truth is not None else np.nan)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def positives_frame(data: Dataset, item_coords: np.ndarray, user: int) -> pd.DataFrame:
    """The user's training and held-out positives at their map coordinates (layer, item, x, y)."""
    train, held = user_items(data, user)
    parts = [pd.DataFrame({"layer": name, "item": idx, "x": item_coords[idx, 0], "y": item_coords[idx, 1]})
             for name, idx in (("training positive", train), ("held-out positive", held))]
    return pd.concat(parts, ignore_index=True)


_log = logging.getLogger(__name__)

# UMAP fits (numba compile once per process, then a fit per run) share the process's CPUs.
MAP_FITS: TaskPool[Task] = TaskPool(2, name="map")


class ItemMaps:
    """The 2-D maps of one run's items. Maps stored in the run folder (by the run's job when it
    finished, or by the workshop bundle) are loaded and nothing is fitted. A run made before maps
    were stored gets PCA at once and UMAP (cosine) as a background task (`start_umap`; after
    `warm_umap()`), which then stores it in the run folder: it is fitted once, for every session
    and every later process."""

    def __init__(self, item_emb: np.ndarray, run_path: Path | None = None, label: str = "") -> None:
        self.item_emb, self.label = item_emb, label
        self.run_path = Path(run_path) if run_path is not None else None
        stored_pca = load_projection(run_path, "pca", item_emb) if run_path is not None else None
        self.pca = stored_pca or fit_item_map(item_emb, "pca")
        self.umap: EmbeddingProjection | StoredProjection | None = (
            load_projection(run_path, "umap", item_emb) if run_path is not None else None)
        self.precomputed = self.umap is not None  # the bundle's UMAP: ready at once, nothing to fit
        self.task: Task | None = None
        self._lock = threading.Lock()

    def start_umap(self) -> None:
        with self._lock:
            if self.task is not None or self.umap is not None:
                return
            self.task = MAP_FITS.start(Task(f"UMAP map {self.label}".strip(), "map"), self._fit_umap)

    def _fit_umap(self, task: Task) -> str:
        task.progress(note="compiling UMAP")
        warm_umap()
        task.progress(note="fitting UMAP")
        umap = fit_item_map(self.item_emb, "umap")
        saved = self._store(umap, task)
        self.umap = umap
        return f"fitted in {task.seconds:.0f} s" + ("; stored with the run" if saved else "")

    def _store(self, proj: EmbeddingProjection, task: Task) -> bool:
        """Keep a fitted UMAP in the run folder for later sessions and processes. A folder that
        cannot be written (read-only bundle, full disk) keeps the map in memory only."""
        if self.run_path is None:
            return False
        from ..runs import RunStore

        task.progress(note="storing the map with the run")
        try:
            run = RunStore(self.run_path.parent).load(self.run_path.name)
            store_projection(self.run_path, "umap", proj, self.item_emb, run.negatives("best"))
            return True
        except (OSError, ValueError, RuntimeError) as exc:
            _log.warning("UMAP map of %s not stored: %s", self.run_path, exc)
            return False

    @property
    def status(self) -> Status | None:
        """FINISHED once UMAP is there, else its task's status (None: not started)."""
        if self.umap is not None:
            return Status.FINISHED
        return self.task.status if self.task is not None else None

    def effective(self, method: str) -> str:
        """'umap' only once it is fitted; PCA otherwise (cache keys use this, never a stand-in)."""
        return "umap" if method == "umap" and self.umap is not None else "pca"

    def projection(self, method: str) -> EmbeddingProjection:
        return self.umap if self.effective(method) == "umap" else self.pca

    def coords(self, method: str) -> np.ndarray:
        return self.projection(method).embedding_

"""2-D maps stored in a run folder, so the explore pages never fit a map or compile UMAP while
people click. They are written once per run: by the run's own job when it finishes (the app's
training jobs and `python -m cnsdiff_core train`, `recorder.train_and_store(maps=...)`), by the
workshop bundle (`bundle.precompute_bundle`), or, for a run made before maps were stored, by the
first page that fits one (`explore.ItemMaps`), for every later session and process.

  projection_pca.npz   item coordinates and the PCA's mean / components (an exact transform)
  projection_umap.npz  item coordinates of a cosine UMAP, and the exact UMAP placement of the run's
                       stored synthesized negatives; other vectors are placed by interpolating
                       between their nearest items (StoredProjection)

Plain arrays only (np.load with allow_pickle=False reads them back); nothing here pickles.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np

from .diagnostics import parse_series_key
from .projection import check_vectors, fit_item_map
from .samplers import SYNTHESIZING

PROJECTION_FILES = {"pca": "projection_pca.npz", "umap": "projection_umap.npz"}

UMAP_NEIGHBORS = 15

def parse_maps(text: str) -> tuple[str, ...]:
    """'pca,umap', 'pca', 'umap' or 'none' (a --maps value, CNSDIFF_RUN_MAPS) as a tuple of methods."""
    parts = tuple(dict.fromkeys(p.strip().lower() for p in str(text).split(",") if p.strip()))
    if parts in ((), ("none",)):
        return ()
    bad = [p for p in parts if p not in PROJECTION_FILES]
    if bad:
        raise ValueError(f"map {bad[0]!r} is unknown; use pca, umap, pca,umap or none")
    return parts

def fingerprint(item_emb: np.ndarray) -> str:
    """Identifies the embeddings a map was fitted on (a map is used only for those)."""
    arr = np.ascontiguousarray(np.asarray(item_emb, dtype=np.float32))
    return hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).hexdigest()

def _vec_key(vec: np.ndarray) -> str:
    arr = np.ascontiguousarray(np.asarray(vec, dtype=np.float32))
    return hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).hexdigest()

def save_projections(run, methods=("pca", "umap"), progress=None) -> list[str]:
    """Fit the run's item maps and store them next to its embeddings; returns the methods done.
    progress(note) is told what is being done (UMAP compiles with numba on first use)."""
    from .projection import warm_umap

    _, item_emb = run.embeddings()
    done = []
    for method in methods:
        if method == "umap":
            if progress:
                progress("compiling UMAP")
            warm_umap()
        if progress:
            progress(f"fitting the {method.upper()} map")
        store_projection(run.path, method, fit_item_map(item_emb, method), item_emb, run.negatives("best"))
        done.append(method)
    return done

def store_projection(run_path, method: str, proj, item_emb: np.ndarray, negatives: dict | None = None) -> Path:
    """Write one fitted map (an `EmbeddingProjection`) into a run folder, atomically. For UMAP the
    exact transform of the run's stored synthesized negatives (`negatives`: Run.negatives('best'))
    is stored with it, for the negatives map."""
    from .runs import write_npz

    arrays = {"method": np.array(method), "fingerprint": np.array(fingerprint(item_emb)),
              "coords": np.asarray(proj.embedding_, dtype=np.float32),
              "n_neighbors": np.array(proj.n_neighbors)}
    if method == "pca":
        arrays["mean"] = np.asarray(proj.model_.mean_, dtype=np.float32)
        arrays["components"] = np.asarray(proj.model_.components_, dtype=np.float32)
    else:
        k = 0
        for key, arr in (negatives or {}).items():
            if key.startswith("_") or parse_series_key(key)[0] not in SYNTHESIZING or "vec" not in arr:
                continue
            arrays[f"known_{k}_key"] = np.array(_vec_key(arr["vec"]))
            arrays[f"known_{k}_xy"] = proj.transform(arr["vec"]).astype(np.float32)
            k += 1
    path = Path(run_path) / PROJECTION_FILES[method]
    write_npz(path, arrays)
    return path

class StoredProjection:
    """A 2-D map read from a run folder, with the interface the app's map code (ui/maps.py) uses of an
    `EmbeddingProjection` (`embedding_`, `transform`). PCA transforms exactly (x - mean) @ Cᵀ.
    UMAP returns the exact placement for the vectors stored at precompute time (the run's probe
    negatives) and places any other vector at the weighted mean of its nearest items' coordinates,
    weighted as UMAP weights its neighbour graph (what umap's own transform starts from)."""

    def __init__(self, method: str, coords: np.ndarray, item_emb: np.ndarray, n_neighbors: int = UMAP_NEIGHBORS,
                 mean: np.ndarray | None = None, components: np.ndarray | None = None,
                 known: dict[str, np.ndarray] | None = None, seconds: float = 0.0) -> None:
        self.method = method
        self.embedding_ = np.asarray(coords, dtype=np.float32)
        self.n_features_in_ = int(item_emb.shape[1])
        self.n_neighbors = int(n_neighbors)
        self.mean_, self.components_ = mean, components
        self.known_ = known or {}
        self.stored = True
        self.seconds = seconds
        items = np.asarray(item_emb, dtype=np.float32)
        self._items = items / np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = check_vectors(X, self.n_features_in_)
        if len(X) == 0:
            return np.zeros((0, 2), dtype=np.float32)
        if self.method == "pca":
            return ((X - self.mean_) @ self.components_.T).astype(np.float32)
        hit = self.known_.get(_vec_key(X))
        if hit is not None and len(hit) == len(X):
            return hit.copy()
        return self._interpolate(X)

    def _interpolate(self, X: np.ndarray) -> np.ndarray:
        v = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        out = np.empty((len(X), 2), dtype=np.float32)
        k = max(1, min(self.n_neighbors, len(self._items)))
        for start in range(0, len(X), 1024):  # bounded memory: 1024 x n_items at a time
            cos = v[start:start + 1024] @ self._items.T
            idx = np.argpartition(-cos, k - 1, axis=1)[:, :k]
            dist = np.clip(1.0 - np.take_along_axis(cos, idx, 1), 0.0, 2.0).astype(np.float64)
            w = _umap_weights(dist)
            pts = self.embedding_[idx]  # (b, k, 2)
            out[start:start + 1024] = (w[:, :, None] * pts).sum(1) / np.maximum(w.sum(1, keepdims=True), 1e-12)
        return out

def _umap_weights(dist: np.ndarray, n_iter: int = 64) -> np.ndarray:
    """exp(-(d - rho) / sigma) with rho the nearest distance and sigma such that the weights sum
    to log2(k): UMAP's smooth k-NN membership strengths, vectorised over rows."""
    k = dist.shape[1]
    rho = dist.min(1, keepdims=True)
    gap = np.maximum(dist - rho, 0.0)
    target = np.log2(k) if k > 1 else 1.0
    lo, hi = np.zeros((len(dist), 1)), np.full((len(dist), 1), np.inf)
    mid = np.ones((len(dist), 1))
    for _ in range(n_iter):
        total = np.exp(-gap / mid).sum(1, keepdims=True)
        big = total > target
        hi = np.where(big, mid, hi)
        lo = np.where(big, lo, mid)
        mid = np.where(np.isinf(hi), mid * 2, (lo + hi) / 2)
    return np.exp(-gap / np.maximum(mid, 1e-12))

def load_projection(run_path: str | os.PathLike, method: str, item_emb: np.ndarray) -> StoredProjection | None:
    """The map stored in a run folder, or None when there is none, it is unreadable, or it was
    fitted on other embeddings (the caller then fits one)."""
    name = PROJECTION_FILES.get(method)
    if name is None:
        return None
    p = Path(run_path) / name
    if not p.is_file():
        return None
    try:
        t0 = time.time()
        with np.load(p, allow_pickle=False) as z:
            if str(z["method"]) != method or str(z["fingerprint"]) != fingerprint(item_emb):
                return None
            coords = z["coords"]
            if coords.shape != (item_emb.shape[0], 2) or not np.isfinite(coords).all():
                return None
            kw: dict = {"n_neighbors": int(z["n_neighbors"])}
            if method == "pca":
                kw["mean"], kw["components"] = z["mean"], z["components"]
                if kw["components"].shape != (2, item_emb.shape[1]):
                    return None
            else:
                kw["known"] = {str(z[f]): z[f.replace("_key", "_xy")] for f in z.files
                               if f.startswith("known_") and f.endswith("_key")}
        return StoredProjection(method, coords, item_emb, seconds=time.time() - t0, **kw)
    except (OSError, ValueError, KeyError, EOFError, __import__("zipfile").BadZipFile):
        return None

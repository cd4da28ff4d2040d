"""2-D maps of item embeddings, scikit-learn style: fit on items, transform anything else.

Synthesized negatives are placed with the fitted map's `transform`, never by refitting, so the
items stay where they are. PCA is instant; UMAP (cosine) compiles with numba on first use (tens of
seconds), so callers show PCA first and swap UMAP in when `warm_umap` / `fit` is done.
"""
from __future__ import annotations

import threading
from typing import Literal

import numpy as np

Method = Literal["pca", "umap"]
_warm_lock = threading.Lock()
_warm_done = False


def check_random_state(seed: int | np.random.Generator | None) -> np.random.Generator:
    """Turn any seed into a numpy Generator (one helper, as scikit-learn does)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


class EmbeddingProjection:
    """fit(items) -> transform(vectors). Fitted attributes end with '_'.

    Args:
        method: 'pca' or 'umap'.
        n_neighbors, min_dist: UMAP parameters (metric is cosine: the denoiser works on directions).
        random_state: seed for reproducible maps.
    """

    def __init__(self, method: Method = "pca", n_neighbors: int = 15, min_dist: float = 0.1,
                 random_state: int = 0) -> None:
        self.method = method
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.random_state = random_state

    def fit(self, X: np.ndarray) -> "EmbeddingProjection":
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or len(X) < 3:
            raise ValueError(f"need a 2-D array of at least 3 embeddings to fit a map, got shape {X.shape}.")
        if self.method == "pca":
            from sklearn.decomposition import PCA

            self.model_ = PCA(n_components=2, random_state=self.random_state).fit(X)
            self.embedding_ = self.model_.transform(X).astype(np.float32)
        elif self.method == "umap":
            import umap

            self.model_ = umap.UMAP(n_components=2, metric="cosine", n_neighbors=min(self.n_neighbors, len(X) - 1),
                                    min_dist=self.min_dist, random_state=self.random_state, n_jobs=1)
            self.embedding_ = self.model_.fit_transform(X).astype(np.float32)
        else:
            raise ValueError(f"projection method {self.method!r} is unknown; use 'pca' or 'umap'.")
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "model_"):
            raise RuntimeError("call fit() before transform().")
        X = check_vectors(X, self.n_features_in_)
        if len(X) == 0:
            return np.zeros((0, 2), dtype=np.float32)
        return np.asarray(self.model_.transform(X), dtype=np.float32)

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        return self.fit(X).embedding_


def fit_item_map(item_emb: np.ndarray, method: str = "pca", random_state: int = 0) -> EmbeddingProjection:
    """Fit a 2-D map on the item embeddings only; everything else is placed with `transform`."""
    return EmbeddingProjection(method, random_state=random_state).fit(np.asarray(item_emb, dtype=np.float32))


def check_vectors(X: np.ndarray, n_features: int) -> np.ndarray:
    """(n, d) or (d,) -> (n, d) float32, with a clear error when d is not the map's dimension."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim == 1:
        X = X[None]
    if X.shape[1] != n_features:
        raise ValueError(f"vectors have {X.shape[1]} dimensions but the map was fitted on {n_features}.")
    return X


def warm_umap() -> None:
    """Compile UMAP's numba kernels once per process on a tiny input (idempotent, thread-safe)."""
    global _warm_done
    with _warm_lock:
        if _warm_done:
            return
        rng = np.random.default_rng(0)
        EmbeddingProjection("umap", n_neighbors=5).fit(rng.normal(size=(40, 8))).transform(rng.normal(size=(3, 8)))
        _warm_done = True


def umap_is_warm() -> bool:
    return _warm_done


def nearest_items(vectors: np.ndarray, items: np.ndarray, k: int = 5,
                  exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) vectors -> (n, k) nearest item indices by cosine and their cosines.

    exclude: optional (n, I) bool mask of items to skip (e.g. the user's training items)."""
    v = np.asarray(vectors, dtype=np.float32)
    v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
    it = items / np.maximum(np.linalg.norm(items, axis=-1, keepdims=True), 1e-12)
    cos = v @ it.T  # (n, I)
    if exclude is not None:
        cos = np.where(exclude, -np.inf, cos)
    k = min(k, cos.shape[1])
    idx = np.argpartition(-cos, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(cos, idx, 1).argsort(axis=1)[:, ::-1]
    idx = np.take_along_axis(idx, order, 1)
    return idx, np.take_along_axis(cos, idx, 1)

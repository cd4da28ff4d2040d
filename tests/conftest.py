import os
import warnings

import numpy as np
import pytest

warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
# runs trained by the app's jobs store their PCA map only: UMAP's numba compile would add tens of
# seconds to every test that trains through a job (test_tasks checks the default, both maps, as slow)
os.environ.setdefault("CNSDIFF_RUN_MAPS", "pca")
os.environ.setdefault("CNSDIFF_RUNS", os.path.join(os.path.dirname(__file__), "..", "test-artifacts", "runs"))


def make_toy(n_users=120, n_items=150, n_inter=3000, seed=0):
    """A small Dataset with a popularity skew, built directly (independent of the loaders)."""
    from cnsdiff_core.data.dataset import Dataset

    rng = np.random.default_rng(seed)
    items = np.minimum(rng.zipf(1.6, n_inter) - 1, n_items - 1)
    pairs = np.unique(np.stack([rng.integers(0, n_users, n_inter), items], 1), axis=0)
    pairs = pairs[rng.permutation(len(pairs))]
    n = len(pairs)
    tr, va, ti, to = np.split(pairs, [int(0.6 * n), int(0.7 * n), int(0.85 * n)])
    seen_u, seen_i = set(tr[:, 0]), set(tr[:, 1])
    keep = lambda a: a[[u in seen_u and i in seen_i for u, i in a]]  # noqa: E731
    return Dataset("toy", "random", n_users, n_items, tr.astype(np.int64), keep(va), keep(ti), keep(to))


@pytest.fixture
def toy():
    return make_toy()


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"

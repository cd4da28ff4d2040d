"""2-D maps (cnsdiff_core.projection): fit on items, place anything else with transform, nearest
items by cosine."""
import numpy as np
import pytest

from cnsdiff_core.projection import EmbeddingProjection, check_vectors, nearest_items


@pytest.fixture
def items():
    rng = np.random.default_rng(3)
    return (rng.normal(size=(200, 12)) * np.linspace(3, 0.1, 12)).astype(np.float32)


def test_pca_map_places_the_fitted_items_where_it_drew_them(items):
    proj = EmbeddingProjection("pca").fit(items)
    assert proj.embedding_.shape == (200, 2) and proj.n_features_in_ == 12
    np.testing.assert_allclose(proj.transform(items), proj.embedding_, atol=1e-4)
    # the first axis carries the most variance, and a single vector is placed as a row
    assert proj.embedding_[:, 0].var() >= proj.embedding_[:, 1].var()
    assert proj.transform(items[0]).shape == (1, 2) and proj.transform(items[:0]).shape == (0, 2)
    assert np.allclose(EmbeddingProjection("pca").fit_transform(items), proj.embedding_)


def test_bad_input_gives_one_clear_sentence(items):
    with pytest.raises(RuntimeError, match="call fit"):
        EmbeddingProjection("pca").transform(items)
    with pytest.raises(ValueError, match="at least 3 embeddings"):
        EmbeddingProjection("pca").fit(items[:2])
    with pytest.raises(ValueError, match="'tsne' is unknown"):
        EmbeddingProjection("tsne").fit(items)
    with pytest.raises(ValueError, match="vectors have 5 dimensions but the map was fitted on 12"):
        EmbeddingProjection("pca").fit(items).transform(items[:, :5])
    assert check_vectors(items[0], 12).shape == (1, 12)


def test_nearest_items_by_cosine_with_exclusions(items):
    queries = items[[5, 17]] * 3.0 + 0.01  # scaled copies: cosine ignores the norm
    idx, cos = nearest_items(queries, items, k=4)
    assert idx.shape == (2, 4) and list(idx[:, 0]) == [5, 17]
    unit = items / np.linalg.norm(items, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    brute = np.argsort(-(q @ unit.T), axis=1)[:, :4]
    np.testing.assert_array_equal(idx, brute)
    assert np.all(np.diff(cos, axis=1) <= 1e-7)  # best first
    mask = np.zeros((2, len(items)), dtype=bool)
    mask[0, 5] = mask[1, 17] = True
    idx2, _ = nearest_items(queries, items, k=4, exclude=mask)
    assert 5 not in idx2[0] and 17 not in idx2[1]
    assert list(idx2[0]) == list(brute[0, 1:4]) + [idx2[0, 3]]

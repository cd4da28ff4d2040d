"""Ranking metrics against hand-computed cases."""
import math

import numpy as np
import pytest
import torch

from cnsdiff_core.metrics import evaluate, long_tail_items, paired_test, popularity_scorer


def _fixed_scores(table):
    t = torch.tensor(table, dtype=torch.float32)
    return lambda users: t[users]


def test_hand_computed_recall_ndcg_precision_hit():
    # 1 user, 25 items; item 0 is a training item and must be masked although it scores highest.
    scores = np.zeros((1, 25))
    scores[0, :] = -np.arange(25)  # ranking 0, 1, 2, ...
    train = np.array([[0, 0]])
    test = np.array([[0, 2], [0, 5], [0, 24]])  # after masking item 0: item 2 is rank 1, item 5 rank 4
    res = evaluate(_fixed_scores(scores), train, test, 1, 25, ks=(10, 20))
    m = res.metrics
    assert m["recall@10"] == pytest.approx(2 / 3)
    assert m["precision@10"] == pytest.approx(2 / 10)
    assert m["hit@10"] == 1.0
    dcg = 1 / math.log2(2) + 1 / math.log2(5)  # ranks 1 and 4 (0-based 1 and 4 -> log2(2), log2(5))
    dcg = 1 / math.log2(1 + 2) + 1 / math.log2(4 + 2)  # positions 1 and 4 (0-based) after masking
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@10"] == pytest.approx(dcg / idcg)
    assert m["recall@20"] == pytest.approx(2 / 3)  # item 24 is at position 23 > 20


def test_users_without_test_items_are_not_counted_and_chunks_agree():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, 40))
    train = np.stack([rng.integers(0, 50, 300), rng.integers(0, 40, 300)], 1)
    test = np.stack([rng.integers(0, 25, 100), rng.integers(0, 40, 100)], 1)
    a = evaluate(_fixed_scores(scores), train, test, 50, 40, batch_users=7)
    b = evaluate(_fixed_scores(scores), train, test, 50, 40, batch_users=1000)
    assert a.metrics["users"] == len(np.unique(test[:, 0])) <= 25
    for k, v in a.metrics.items():
        assert b.metrics[k] == pytest.approx(v)
    assert len(a.per_user["recall@20"]) == a.metrics["users"]


def test_a_test_pair_given_twice_counts_once():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(30, 40))
    train = np.stack([rng.integers(0, 30, 200), rng.integers(0, 40, 200)], 1)
    test = np.unique(np.stack([rng.integers(0, 30, 90), rng.integers(0, 40, 90)], 1), axis=0)
    once = evaluate(_fixed_scores(scores), train, test, 30, 40, batch_users=8)
    twice = evaluate(_fixed_scores(scores), train, np.concatenate([test, test[::3]]), 30, 40, batch_users=8)
    assert once.metrics == twice.metrics
    # recall's denominator is each user's number of distinct held-out items
    user = int(test[0, 0])
    row = list(once.users).index(user)
    hits = np.isin(np.argsort(-np.where(np.isin(np.arange(40), train[train[:, 0] == user, 1]), -np.inf,
                                        scores[user]))[:20], test[test[:, 0] == user, 1]).sum()
    assert once.per_user["recall@20"][row] == pytest.approx(hits / (test[:, 0] == user).sum())


def test_mostpop_and_popularity_metrics():
    train = np.array([[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 2]])
    test = np.array([[3, 0], [3, 2]])
    pop = np.bincount(train[:, 1], minlength=30)
    res = evaluate(popularity_scorer(pop), train, test, 4, 30, ks=(10,))
    assert res.metrics["recall@10"] == 1.0  # items 0 and 2 are in the popular top 10
    assert res.metrics["rec_pop@10"] == pytest.approx(pop[np.argsort(-pop, kind="stable")[:10]].mean())
    tail = long_tail_items(pop, 0.2)
    assert not tail[0] and tail.sum() == 30 - 6


def test_paired_test_detects_a_real_difference():
    rng = np.random.default_rng(1)
    a = rng.random(200)
    out = paired_test(a + 0.1, a)
    assert out["wilcoxon_p"] < 1e-6 and out["mean_diff"] == pytest.approx(0.1)
    same = paired_test(a, a)
    assert same["wilcoxon_p"] == 1.0


def test_training_items_are_never_recommended():
    rng = np.random.default_rng(3)
    n_users, n_items = 30, 25
    train = np.unique(np.stack([rng.integers(0, n_users, 300), rng.integers(0, n_items, 300)], 1), axis=0)
    test = np.stack([np.arange(n_users), rng.integers(0, n_items, n_users)], 1)
    train_set = set(map(tuple, train.tolist()))
    test = test[[tuple(p) not in train_set for p in test.tolist()]]
    scores = np.zeros((n_users, n_items))
    scores[train[:, 0], train[:, 1]] = 100.0  # training items score highest of all

    res = evaluate(_fixed_scores(scores), train, test, n_users, n_items, ks=(10,), batch_users=7,
                   return_top=True)
    assert res.top.shape == (len(res.users), 10)
    recommended = {(int(u), int(i)) for u, row in zip(res.users, res.top) for i in row}
    assert not recommended & train_set

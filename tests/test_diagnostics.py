"""Hand-computed checks of every FHN definition (diagnostics.py) on worlds small enough to solve
by hand, and of the environment term of the causal regularizer."""
import math

import numpy as np
import pytest
import torch

from cnsdiff_core.config import TrainConfig
from cnsdiff_core.data.dataset import Dataset, GroundTruth
from cnsdiff_core.diagnostics import (PRE_MIX, TRAINED, fhn_summary, make_probe, matched_null, measure_negatives,
                                      parse_series_key, probe_diagnostics, resolve_to_items, series_key, wilson)
from cnsdiff_core.diffusion.training import env_variance
from cnsdiff_core.samplers import NegativePool, make_sampler


def test_wilson_interval_matches_the_textbook_formula():
    # k = 4 of n = 500: p = 0.008; the Wilson 95% bounds worked by hand
    z = 1.959963984540054
    n, p = 500, 0.008
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert wilson(4, 500) == pytest.approx((centre - half, centre + half))
    lo, hi = wilson(0, 100)
    assert lo == 0.0 and hi == pytest.approx(z * z / (100 + z * z))  # k = 0: the interval holds p = 0
    assert wilson(100, 100)[1] == 1.0
    assert all(math.isnan(v) for v in wilson(0, 0))
    # the default probe knows a rate of 0.01 to about +-0.004
    lo, hi = wilson(25, 2500)
    assert (hi - lo) / 2 < 0.0045


def _line_world():
    """4 users, 6 items on a line (1-d embeddings are enough to solve by hand).

    Item i sits at x = i. User u trained on item u; users 0 and 1 hold item 5 and item 2 out."""
    train = np.array([[0, 0], [1, 1], [2, 2], [3, 3]])
    valid = np.array([[0, 5]])
    test_iid = np.array([[1, 2]])
    test_ood = np.array([[2, 4]])
    return Dataset("line", "random", 4, 6, train, valid, test_iid, test_ood)


def _probe(data):
    pool = NegativePool(data.train, data.n_users, data.n_items, torch.device("cpu"))
    return make_probe(data, pool, 4, torch.device("cpu"), seed=0)


def test_probe_takes_one_triple_per_user_before_repeating_users(toy):
    pool = NegativePool(toy.train, toy.n_users, toy.n_items, torch.device("cpu"))
    probe = make_probe(toy, pool, 100, torch.device("cpu"), seed=1)
    assert len(probe.users) == 100 and len(torch.unique(probe.users)) == 100
    everyone = make_probe(toy, pool, toy.n_users + 30, torch.device("cpu"), seed=1)
    assert len(torch.unique(everyone.users)) == toy.n_users  # every user once, then repeats
    # every probe triple is a training pair
    keys = set(map(tuple, toy.train.tolist()))
    assert all((int(u), int(i)) in keys for u, i in zip(everyone.users, everyone.pos))


def test_uniform_rate_is_the_held_out_share_of_non_training_items():
    data = _line_world()
    probe = _probe(data)
    # per user: held-out items / (6 - 1 training item): users 0, 1, 2 have one, user 3 none
    assert probe.uniform_rate == pytest.approx(np.mean([1 / 5, 1 / 5, 1 / 5, 0]))


def test_resolution_is_euclidean_over_all_items_and_counts_collapse_onto_the_positive():
    items_e = torch.tensor([[float(i)] for i in range(6)])
    vecs = torch.tensor([[0.1], [4.6], [2.49], [-3.0]])
    idx, dist = resolve_to_items(vecs, items_e)
    assert idx.tolist() == [0, 5, 2, 0] and dist.tolist() == pytest.approx([0.1, 0.4, 0.49, 3.0], abs=1e-5)
    # norm matters: cosine would call [5.0] and [0.5] the same direction; Euclidean does not
    e2 = torch.tensor([[1.0, 0.0], [5.0, 0.0], [0.0, 1.0]])
    assert resolve_to_items(torch.tensor([[4.0, 0.1], [0.9, 0.0]]), e2)[0].tolist() == [1, 0]

    data = _line_world()
    probe = _probe(data)
    order = torch.argsort(probe.users)  # probe triples are in random order: index by user
    users = probe.users
    user_e = torch.ones(4, 1)
    pos_e = items_e[probe.pos]
    # user u's vector: u=0 lands on its own training positive (item 0), u=1 on its held-out item 2,
    # u=2 on its OOD item 4, u=3 on a plain negative (item 5)
    target = {0: 0.05, 1: 2.1, 2: 3.8, 3: 4.9}
    vec = torch.tensor([[target[int(u)]] for u in users])
    row, arrays = measure_negatives(probe, user_e, pos_e, items_e, vec, None)
    assert row["synthesized"] and row["n"] == 4
    assert row["own_positive"] == pytest.approx(0.25)  # the collapse of user 0 is a number
    assert row["own_train"] == pytest.approx(0.25)
    assert row["fhn"] == pytest.approx(0.5)  # users 1 and 2 hit held-out positives
    assert (row["fhn_lo"], row["fhn_hi"]) == pytest.approx(wilson(2, 4))
    assert arrays["items"][order.numpy()].tolist() == [0, 2, 4, 5]
    # hardness = s(u, neg) - s(u, pos) with u = 1: the vector's x minus the positive's x
    assert arrays["hardness"][order.numpy()] == pytest.approx([0.05 - 0, 2.1 - 1, 3.8 - 2, 4.9 - 3], abs=1e-5)
    # the nearest-item distance is relative to the positive's norm (user 0's positive has norm 0 -> clamped)
    assert arrays["nn_dist"][order.numpy()][1] == pytest.approx(0.1 / 1.0, abs=1e-5)


def test_item_negatives_use_their_item_and_have_no_matched_null():
    data = _line_world()
    probe = _probe(data)
    items_e = torch.tensor([[float(i)] for i in range(6)])
    pick = {0: 5, 1: 2, 2: 0, 3: 1}  # user 2 gets user 0's item: a training item, but not its own
    items = torch.tensor([pick[int(u)] for u in probe.users])
    row, _ = measure_negatives(probe, torch.ones(4, 1), items_e[probe.pos], items_e, items_e[items], items)
    assert not row["synthesized"] and row["fhn"] == pytest.approx(0.5)
    assert row["own_positive"] == 0 and row["own_train"] == 0
    assert math.isnan(row["fhn_null"]) and row["fhn_lift"] == pytest.approx(0.5 / probe.uniform_rate)


def test_matched_null_keeps_the_distance_and_randomizes_the_direction():
    gen = torch.Generator().manual_seed(0)
    anchors = torch.randn(500, 8)
    vecs = anchors + 0.3 * torch.randn(500, 8)
    null = matched_null(vecs, anchors, gen)
    assert (null - anchors).norm(dim=-1) == pytest.approx((vecs - anchors).norm(dim=-1), rel=1e-5)
    # directions are uniform: their mean is near 0, unlike a fixed offset
    dirs = torch.nn.functional.normalize(null - anchors, dim=-1)
    assert dirs.mean(0).norm() < 0.2


def test_matched_null_of_a_vector_that_sits_on_its_positive_is_the_positive_itself():
    data = _line_world()
    probe = _probe(data)
    items_e = torch.tensor([[float(i)] for i in range(6)])
    pos_e = items_e[probe.pos]
    row, _ = measure_negatives(probe, torch.ones(4, 1), pos_e, items_e, pos_e.clone(), None)
    assert row["own_positive"] == 1.0 and row["fhn"] == 0.0 and row["fhn_null"] == 0.0


def test_ground_truth_rate_uses_the_simulator_preferences():
    data = _line_world()
    # user u truly likes item i iff u_f * i_f > 0.5 with u_f = 1 and i_f = 1 for even items
    data.truth = GroundTruth(np.ones((4, 1), np.float32), np.array([[1.0], [0], [1], [0], [1], [0]], np.float32), 0.5)
    probe = _probe(data)
    items_e = torch.tensor([[float(i)] for i in range(6)])
    items = torch.tensor([{0: 2, 1: 3, 2: 4, 3: 5}[int(u)] for u in probe.users])
    row, _ = measure_negatives(probe, torch.ones(4, 1), items_e[probe.pos], items_e, items_e[items], items,
                               truth=data.truth)
    assert row["fhn_true"] == pytest.approx(0.5) and (row["fhn_true_lo"], row["fhn_true_hi"]) == pytest.approx(wilson(2, 4))


def test_probe_rows_report_the_trained_on_negative_and_the_pre_mix_candidate(toy):
    cfg = TrainConfig(sampler="cnsdiff", dim=16, hard_start=4, hard_stride=4, steps=20)
    from cnsdiff_core.model import LightGCN, normalized_adjacency

    torch.manual_seed(0)
    model = LightGCN(toy.n_users, toy.n_items, 16, 2)
    model.set_graph(normalized_adjacency(toy.train, toy.n_users, toy.n_items))
    pool = NegativePool(toy.train, toy.n_users, toy.n_items, torch.device("cpu"))
    probe = make_probe(toy, pool, 200, torch.device("cpu"))
    u, i, layers = model.propagate(keep_layers=True)
    samplers = {n: make_sampler(n, cfg.with_updates(sampler=n), torch.device("cpu")) for n in ("rns", "cnsdiff")}
    rows, raw = probe_diagnostics(samplers, probe, u, i, layers, toy.n_users, pool, 0, keep_raw=True)
    cns = {r["step"]: r for r in rows if r["sampler"] == "cnsdiff"}
    assert cns[TRAINED]["vector"] == "negative" and cns[PRE_MIX]["vector"] == "pre-mix"
    assert set(cns) - {TRAINED, PRE_MIX} == set(samplers["cnsdiff"].steps)
    # at epoch 0 lambda ~ Beta(1, 9): the trained-on vector sits far closer to a random item than h does
    assert cns[TRAINED]["cos_to_pos"] < cns[PRE_MIX]["cos_to_pos"]
    assert {"cnsdiff", "cnsdiff@premix", "rns", "_probe"} <= set(raw)
    rns = next(r for r in rows if r["sampler"] == "rns")
    assert rns["own_positive"] == 0 and math.isnan(rns["fhn_null"])
    for r in rows:
        r["epoch"] = 1
    s = fhn_summary(rows, "cnsdiff", 1)
    assert s["observed"] == cns[TRAINED]["fhn"] and s["synthesized"] == cns[PRE_MIX]["fhn"]
    assert s["observed_ci"] == [cns[TRAINED]["fhn_lo"], cns[TRAINED]["fhn_hi"]] and s["n"] == 200
    assert fhn_summary(rows, "rns", 1)["synthesized"] is None


@pytest.mark.parametrize("key, parsed", [("dns", ("dns", TRAINED)), ("cnsdiff@premix", ("cnsdiff", PRE_MIX)),
                                         ("cnsdiff@14", ("cnsdiff", 14))])
def test_series_keys_round_trip(key, parsed):
    assert parse_series_key(key) == parsed and series_key(*parsed) == key


# ---------------------------------------------------------------------------- causal term
def _env_batch(spread: float, shift: float = 0.0, B=40_000, steps=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(1, steps + 1, (B,), generator=g)
    env = torch.randint(0, 4, (B,), generator=g)
    scale = torch.logspace(0, math.log10(spread), steps + 1)  # per-t loss level: the SNR weights' spread
    per = scale[t] * torch.rand(B, generator=g) * 2
    per = torch.where(env == 3, per * (1 + shift), per)
    return per, t, env


def test_env_variance_is_near_zero_for_identical_environments_whatever_the_weight_spread():
    small = env_variance(*_env_batch(10.0), 4, 20)
    large = env_variance(*_env_batch(1e5), 4, 20)
    assert float(small) < 1e-3 and float(large) < 1e-3
    # per-t normalization makes the term blind to a per-t scale: the same draws give the same value
    assert float(large) == pytest.approx(float(small), rel=1e-3)
    # the raw form (variance of environment means of the raw loss) grows with the spread
    per, t, env = _env_batch(1e5)
    means = torch.stack([per[env == e].mean() for e in range(4)])
    assert float(means.var(unbiased=False) / means.mean() ** 2) > 10 * float(large)


def test_env_variance_sees_a_shifted_environment():
    base = env_variance(*_env_batch(1e3), 4, 20)
    shifted = env_variance(*_env_batch(1e3, shift=0.5), 4, 20)
    assert float(shifted) > 0.02 > 100 * float(base)


def test_env_variance_is_differentiable():
    per, t, env = _env_batch(100.0, B=512)
    per = per.clone().requires_grad_(True)
    env_variance(per, t, env, 4, 20).backward()
    assert per.grad is not None and torch.isfinite(per.grad).all()

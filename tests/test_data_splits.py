"""Split functions: determinism, no leakage, drops counted, and the shift each one creates."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnsdiff_core.data import (SHIFTS, DataError, InteractionLog, exposure_split, popularity_split,
                               random_split, shift_report, split, temporal_split)


def make_log(n_users=300, n_items=400, n=12_000, seed=0, times=True) -> InteractionLog:
    """A Zipf-popular log with timestamps and a few duplicates."""
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, n_items + 1)
    items = rng.choice(n_items, size=n, p=w / w.sum())
    users = rng.integers(n_users, size=n)
    t = rng.integers(1_600_000_000, 1_700_000_000, size=n) if times else None
    return InteractionLog(np.stack([users, items], 1), n_users, n_items, times=t, name="toy")


def keyset(a):
    return set(map(tuple, np.asarray(a).tolist()))


def check_invariants(ds, log):
    tr = keyset(ds.train)
    all_log = keyset(log.pairs)
    assert tr <= all_log
    seen_u, seen_i = set(ds.train[:, 0].tolist()), set(ds.train[:, 1].tolist())
    for name in ("valid", "test_iid", "test_ood"):
        arr = getattr(ds, name)
        assert arr.dtype == np.int64 and arr.ndim == 2 and arr.shape[1] == 2
        ks = keyset(arr)
        assert len(ks) == len(arr), f"{name} has duplicates"
        assert not ks & tr, f"{name} leaks training pairs"
        assert set(arr[:, 0].tolist()) <= seen_u and set(arr[:, 1].tolist()) <= seen_i, name
    assert ds.train.dtype == np.int64 and len(keyset(ds.train)) == len(ds.train)
    assert ds.train[:, 0].max() < ds.n_users and ds.train[:, 1].max() < ds.n_items
    if ds.train_time is not None:
        assert len(ds.train_time) == len(ds.train)
    # iid parts are disjoint from each other
    assert not keyset(ds.valid) & keyset(ds.test_iid)


def run(shift, log, seed, random_test=None):
    return split(log, shift, seed=seed, random_test=random_test)


@pytest.mark.parametrize("shift", SHIFTS)
def test_each_split_is_deterministic_and_clean(shift):
    log = make_log()
    rt = np.stack([np.arange(300), (np.arange(300) * 7) % 400], 1)
    a, b, c = run(shift, log, 0, rt), run(shift, log, 0, rt), run(shift, log, 1, rt)
    for f in ("train", "valid", "test_iid", "test_ood"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.train, c.train)
    assert a.shift == shift and a.name == "toy"
    check_invariants(a, log)
    check_invariants(c, log)
    n_unique = len(keyset(log.pairs))
    if shift != "exposure":
        # every unique log pair lands in exactly one split, except dropped OOD pairs
        total = len(a.train) + len(a.valid) + len(a.test_iid) + len(a.test_ood)
        dropped = sum(a.split_meta["dropped_unknown"].values())
        assert total + dropped == n_unique
    iid = len(a.train) + len(a.valid) + len(a.test_iid)
    assert abs(len(a.valid) / iid - 1 / 8) < 0.02 and abs(len(a.test_iid) / iid - 2 / 8) < 0.02
    assert any("duplicated (user, item) pairs" in n for n in a.notes)


def test_popularity_split_flattens_ood_items():
    log = make_log(n=20_000)
    ds = popularity_split(log, seed=0)
    rep = shift_report(ds)
    assert rep["mean_train_pop_test_ood"] < 0.5 * rep["mean_train_pop_test_iid"]
    assert rep["kl_test_ood"] > 2 * rep["kl_test_iid"]
    per_item = np.bincount(ds.test_ood[:, 1])
    assert per_item.max() <= ds.split_meta["cap"]
    assert abs(len(ds.test_ood) - 0.15 * len(keyset(log.pairs))) < 0.01 * len(log.pairs)
    capped = popularity_split(log, seed=0, cap=3)
    assert np.bincount(capped.test_ood[:, 1]).max() <= 3


def test_temporal_split_ood_is_later_than_everything_in_distribution():
    log = make_log()
    ds = temporal_split(log, seed=0)
    t_of = {}
    for (u, i), t in zip(log.pairs.tolist(), log.times.tolist()):
        t_of[(u, i)] = min(t, t_of.get((u, i), t))
    ood_t = np.array([t_of[k] for k in map(tuple, ds.test_ood.tolist())])
    early = np.array([t_of[k] for k in map(tuple, np.concatenate([ds.valid, ds.test_iid]).tolist())])
    cut = ds.split_meta["cut"]
    assert ood_t.min() >= cut > ds.train_time.max() and early.max() < cut
    assert np.array_equal(ds.train_time, np.array([t_of[k] for k in map(tuple, ds.train.tolist())]))
    tr = shift_report(ds)["time_ranges"]
    assert tr["test_ood"][0] >= cut and tr["train"][1] < cut
    with pytest.raises(DataError, match=r"temporal split needs timestamps and log 'toy' has none"):
        temporal_split(make_log(times=False))
    flat = make_log()
    flat.times = np.full(len(flat.pairs), 5)
    with pytest.raises(DataError, match=r"do not vary enough"):
        temporal_split(flat)


def test_temporal_split_drops_and_counts_late_newcomers():
    pairs = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [0, 2], [2, 1], [1, 3]])
    times = np.array([1, 2, 3, 4, 5, 100, 101])  # user 2 and item 3 only appear late
    ds = temporal_split(InteractionLog(pairs, 3, 4, times=times, name="tiny"), ood_frac=0.3)
    assert len(ds.test_ood) == 0
    assert ds.split_meta["dropped_unknown"]["test_ood"] == 2
    assert any("Dropped 2 OOD-test pairs whose user or item has no training interaction" in n for n in ds.notes)
    assert shift_report(ds)["dropped"]["unknown_user_or_item"]["test_ood"] == 2


def test_exposure_split_uses_the_random_test():
    log = make_log()
    rng = np.random.default_rng(5)
    rt = np.stack([rng.integers(300, size=2000), rng.integers(400, size=2000)], 1)
    ds = exposure_split(log, rt, seed=0)
    tu, ti = set(ds.train[:, 0].tolist()), set(ds.train[:, 1].tolist())
    known = {(u, i) for u, i in keyset(rt) if u in tu and i in ti}
    heldout = keyset(ds.valid) | keyset(ds.test_iid)
    assert keyset(ds.test_ood) == known - keyset(ds.train) - heldout
    assert ds.split_meta["ood_also_heldout"] == len((known - keyset(ds.train)) & heldout) > 0
    assert shift_report(ds)["dropped"]["ood_also_valid_or_iid"] == ds.split_meta["ood_also_heldout"]
    assert any("OOD-test pairs that are also validation or IID-test pairs" in n for n in ds.notes)
    assert ds.split_meta["dropped_unknown"]["test_ood"] == len(keyset(rt) - known) > 0
    assert ds.split_meta["removed_in_train"]["test_ood"] > 0
    with pytest.raises(DataError, match=r"needs a test set collected under random exposure"):
        exposure_split(log, None)
    with pytest.raises(DataError, match=r"ids outside the log's id range"):
        exposure_split(log, np.array([[0, 400]]))


def test_random_split_is_a_no_shift_control():
    rep = shift_report(random_split(make_log(n=20_000), seed=2))
    assert 0.9 < rep["pop_ratio_ood_vs_iid"] < 1.1
    assert abs(rep["kl_test_ood"] - rep["kl_test_iid"]) < 0.15


def test_shift_report_contents_are_json_ready():
    ds = popularity_split(make_log(), seed=0)
    rep = shift_report(ds)
    json.dumps(rep)
    for k in ("counts", "mean_train_pop_test_iid", "mean_train_pop_test_ood", "kl_test_iid", "kl_test_ood",
              "gini_train", "time_ranges", "dropped", "longtail_share_test_ood"):
        assert k in rep, k
    assert 0 < rep["gini_train"] < 1 and rep["counts"]["train"] == len(ds.train)
    assert rep["longtail_share_test_ood"] > rep["longtail_share_test_iid"]
    del ds.split_meta  # works without the optional attribute too
    assert "dropped" not in shift_report(ds) and "time_ranges" in shift_report(ds)


def test_bad_split_arguments():
    log = make_log()
    with pytest.raises(DataError, match=r"ood_frac must be between 0 and 0.9, got 1.5"):
        random_split(log, ood_frac=1.5)
    with pytest.raises(DataError, match=r"iid_ratios must be three non-negative numbers"):
        popularity_split(log, iid_ratios=(0, 1, 1))
    with pytest.raises(DataError, match=r"cap must be a positive number"):
        popularity_split(log, cap=0)
    with pytest.raises(DataError, match=r"must have shape \(n, 2\)"):
        random_split(np.arange(6))
    with pytest.raises(DataError, match=r"ids outside \[0, n_users\)"):
        random_split(InteractionLog(np.array([[0, 5]]), 1, 3))
    with pytest.raises(DataError, match=r"has no interactions"):
        random_split(InteractionLog(np.zeros((0, 2), np.int64), 1, 1))
    with pytest.raises(DataError, match=r"3 timestamps for 2 pairs"):
        temporal_split(InteractionLog(np.array([[0, 0], [0, 1]]), 1, 2, times=np.arange(3)))
    with pytest.raises(DataError, match=r"Shift 'sideways' is unknown"):
        split(log, "sideways")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(n_users=st.integers(1, 12), n_items=st.integers(1, 15), n=st.integers(1, 120),
       seed=st.integers(0, 2**16), shift=st.sampled_from(SHIFTS))
def test_split_invariants_on_random_small_logs(n_users, n_items, n, seed, shift):
    rng = np.random.default_rng(seed)
    log = InteractionLog(np.stack([rng.integers(n_users, size=n), rng.integers(n_items, size=n)], 1),
                         n_users, n_items, times=rng.integers(0, 50, size=n), name="h")
    rt = np.stack([rng.integers(n_users, size=10), rng.integers(n_items, size=10)], 1)
    try:
        ds = split(log, shift, seed=seed, random_test=rt)
    except DataError as e:  # tiny logs may have too few distinct timestamps
        assert shift == "temporal" and ("do not vary enough" in str(e) or "single distinct" in str(e))
        return
    check_invariants(ds, log)
    assert ds.n_users == n_users and ds.n_items == n_items

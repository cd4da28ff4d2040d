"""The confounded synthetic world: knobs do what they say, ground truth is coherent, files roundtrip."""
from __future__ import annotations

import json
import shutil
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cnsdiff_core.data import (SHIFTS, DataError, WorldConfig, generate_world, load_world, save_world,
                               shift_report, world_dataset)
from cnsdiff_core.data.synthetic import exposure_popularity_corr

ROOT = Path(__file__).resolve().parents[1]
SMALL = WorldConfig(n_users=200, n_items=300, interactions_per_user=20, random_exposures_per_user=20, seed=3)


@pytest.fixture(scope="module")
def world():
    return generate_world(SMALL)


def test_generation_is_deterministic(world):
    again = generate_world(SMALL)
    assert np.array_equal(world.log_pairs, again.log_pairs) and np.array_equal(world.log_time, again.log_time)
    assert np.array_equal(world.random_exposed, again.random_exposed)
    other = generate_world(replace(SMALL, seed=4))
    assert not np.array_equal(world.log_pairs[:100], other.log_pairs[:100])


def test_log_shape_and_time_order(world):
    lp, lt = world.log_pairs, world.log_time
    assert lp.dtype == np.int64 and lp.shape[1] == 2 and len(lt) == len(lp)
    keys = lp[:, 0] * SMALL.n_items + lp[:, 1]
    assert len(np.unique(keys)) == len(keys)  # unique pairs
    assert np.all(np.diff(lt) >= 0) and lt.min() >= 1_704_067_200 and lt.max() < 1_704_067_200 + 365 * 86400
    assert 0.8 * 200 * 20 < len(lp) < 1.2 * 200 * 20
    assert len(world.item_titles) == SMALL.n_items and world.item_titles[0].endswith("#0")


def test_confounding_knob_ties_exposure_to_popularity():
    corr, head_share = [], []
    for c in (0.0, 0.5, 1.0):
        w = generate_world(replace(SMALL, confounding=c))
        corr.append(exposure_popularity_corr(w))
        top = np.argsort(-w.item_propensity)[: SMALL.n_items // 10]
        head_share.append(np.isin(w.log_pairs[:, 1], top).mean())
    assert corr[0] < 0.2 < corr[1] < corr[2]
    assert head_share[0] < head_share[1] < head_share[2]


def test_ground_truth_of_observed_positives(world):
    gt = world.truth
    rel_log = gt.is_relevant(world.log_pairs[:, 0], world.log_pairs[:, 1]).mean()
    assert rel_log > 0.7 and rel_log > 4 * SMALL.relevance_rate
    # uniformly exposed pairs are relevant at about the base rate
    rr = world.random_relevant.mean()
    assert abs(rr - SMALL.relevance_rate) < 0.04
    assert np.array_equal(world.random_relevant, gt.is_relevant(world.random_exposed[:, 0], world.random_exposed[:, 1]))
    # the relevant flag is the truth at click time
    at_click = world.relevant_at(world.log_pairs[:, 0], world.log_pairs[:, 1], world.tau(world.log_time))
    assert (at_click == world.log_relevant).mean() > 0.995
    assert 0.8 < world.log_relevant.mean() < 1.0  # some popularity clicks


def test_no_drift_no_popularity_clicks_means_a_clean_log():
    w = generate_world(replace(SMALL, drift=0.0, popularity_click_rate=0.0))
    assert w.log_relevant.all()
    assert w.truth.is_relevant(w.log_pairs[:, 0], w.log_pairs[:, 1]).mean() > 0.999


def test_world_dataset_for_every_shift(world):
    for shift in SHIFTS:
        ds = world_dataset(world, shift, seed=1)
        assert ds.shift == shift and ds.truth is world.truth and ds.n_items == SMALL.n_items
        assert ds.item_titles is not None and ds.train_time is not None and len(ds.test_ood) > 50
        assert not set(map(tuple, ds.test_ood.tolist())) & set(map(tuple, ds.train.tolist()))
    ood = world_dataset(world, "exposure").test_ood
    assert set(map(tuple, ood.tolist())) <= set(map(tuple, world.random_positives.tolist()))
    pop = shift_report(world_dataset(world, "popularity"))
    assert pop["mean_train_pop_test_ood"] < pop["mean_train_pop_test_iid"]
    with pytest.raises(DataError, match=r"Shift 'sideways' is not available for a synthetic world"):
        world_dataset(world, "sideways")


def test_save_load_roundtrip(world, tmp_path):
    save_world(world, tmp_path / "w")
    back = load_world(tmp_path / "w")
    assert back.config == world.config
    for f in ("log_pairs", "log_time", "log_relevant", "random_exposed", "random_relevant", "item_exposures",
              "item_titles", "user_factors_start", "user_drift"):
        assert np.array_equal(getattr(back, f), getattr(world, f)), f
    assert np.allclose(back.item_propensity, world.item_propensity, rtol=1e-5)
    assert np.array_equal(back.truth.user_factors, world.truth.user_factors)
    assert back.truth.threshold == world.truth.threshold
    a, b = world_dataset(world, "popularity"), world_dataset(back, "popularity")
    assert np.array_equal(a.train, b.train) and np.array_equal(a.test_ood, b.test_ood)


def test_damaged_world_folders(world, tmp_path):
    base = save_world(world, tmp_path / "w")
    with pytest.raises(DataError, match=r"has no world\.json"):
        load_world(tmp_path)
    bad = tmp_path / "bad"
    shutil.copytree(base, bad)
    (bad / "factors.npz").unlink()
    with pytest.raises(DataError, match=r"lacks factors\.npz"):
        load_world(bad)
    shutil.copytree(base, bad, dirs_exist_ok=True)
    meta = json.loads((bad / "world.json").read_text())
    meta["config"]["n_items"] = 999
    (bad / "world.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"disagree with world\.json"):
        load_world(bad)
    (bad / "world.json").write_text("{broken")
    with pytest.raises(DataError, match=r"is not valid JSON"):
        load_world(bad)
    (bad / "world.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(DataError, match=r"is not a CNSDiff world file"):
        load_world(bad)


@pytest.mark.parametrize("kw, pattern", [
    ({"confounding": 1.5}, r"confounding must be in \[0, 1\], got 1\.5"),
    ({"n_users": 1}, r"n_users must be between 2 and"),
    ({"n_items": 10.5}, r"n_items must be an integer"),
    ({"relevance_rate": 0.0}, r"relevance_rate must be between 0\.001 and 0\.5"),
    ({"interactions_per_user": 500}, r"interactions_per_user must be between 1 and 80% of the relevant items"),
    ({"drift": float("nan")}, r"drift must be a finite number"),
    ({"random_exposures_per_user": 5000}, r"random_exposures_per_user must be between 0 and n_items"),
])
def test_world_config_validation(kw, pattern):
    with pytest.raises(DataError, match=pattern):
        WorldConfig(**kw)


def test_from_dict_parses_strings():
    cfg = WorldConfig.from_dict({"n_users": "50", "confounding": "0.25", "seed": "7"})
    assert (cfg.n_users, cfg.confounding, cfg.seed) == (50, 0.25, 7)
    with pytest.raises(DataError, match=r"World parameter seed='1.5' must be an integer"):
        WorldConfig.from_dict({"seed": "1.5"})


def test_shipped_sample_world_matches_its_script():
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("make_sample_data", ROOT / "scripts" / "make_sample_data.py")
    mod = module_from_spec(spec)
    spec.loader.exec_module(mod)
    shipped = load_world(ROOT / "sample_data" / "world")
    assert shipped.config == mod.SAMPLE_CONFIG
    assert (shipped.n_users, shipped.n_items) == (600, 800) and shipped.config.confounding == 0.7
    assert 25_000 <= len(shipped.log_pairs) <= 30_000
    fresh = generate_world(mod.SAMPLE_CONFIG)
    assert abs(len(fresh.log_pairs) - len(shipped.log_pairs)) <= 0.01 * len(shipped.log_pairs)
    size = sum(p.stat().st_size for p in (ROOT / "sample_data").rglob("*") if p.is_file())
    assert size < 2 * 1024 * 1024


def test_medium_world_is_fast_and_sparse():
    cfg = WorldConfig(n_users=3000, n_items=20_000, interactions_per_user=40, random_exposures_per_user=20, seed=1)
    tracemalloc.start()
    t = time.perf_counter()
    w = generate_world(cfg)
    secs = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert 100_000 < len(w.log_pairs) < 140_000
    assert secs < 10
    assert peak < 400e6  # a dense 3,000 x 20,000 float32 matrix alone would be 240 MB
    assert len(w.random_exposed) == 3000 * 20


@pytest.mark.slow
def test_large_world_100k_items_one_million_interactions():
    cfg = WorldConfig(n_users=20_000, n_items=100_000, interactions_per_user=50, seed=2)
    tracemalloc.start()
    t = time.perf_counter()
    w = generate_world(cfg)
    secs = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(w.log_pairs) > 950_000
    assert secs < 45
    assert peak < 1.5e9  # a dense 20,000 x 100,000 float32 matrix would be 8 GB
    ds = world_dataset(w, "popularity")
    assert len(ds.train) > 500_000

"""The run store (cnsdiff_core.runs) and the runs table over it (cnsdiff_core.runs_table)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from cnsdiff_core import runs_table
from cnsdiff_core.config import preset_config
from cnsdiff_core.runs import RunStore, StoreError, write_json
from cnsdiff_core.recorder import train_and_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three quick runs on the toy data: two seeds of one experiment and one of another sampler."""
    from conftest import make_toy

    toy = make_toy()
    s = RunStore(tmp_path_factory.mktemp("runs"))
    small = dict(epochs=1, batch_size=256, dim=8, probe_triples=32, patience=0, device="cpu", dataset="toy")
    ids = [train_and_store(preset_config("demo", sampler=smp, seed=seed, **small), s, data=toy)[0]
           for smp, seed in (("rns", 0), ("rns", 1), ("dns", 0))]
    return s, ids


def test_a_run_folder_holds_what_the_app_reads(store):
    s, ids = store
    run = s.load(ids[0])
    info = s.info(ids[0])
    assert info.status == "finished" and info.final["best_epoch"] == 1 and run.config.seed == 0
    for name in ("config.json", "status.json", "dataset.json", "history.csv", "diagnostics.csv", "final.json",
                 "model.pt", "embeddings.npz", "per_user.npz", "negatives_best.npz", "checkpoint.pt"):
        assert (info.path / name).is_file(), name
    assert not list(info.path.glob(".*.tmp"))  # every write went through a temp file and a rename
    status = json.loads((info.path / "status.json").read_text())
    assert status["code"]["torch"] and status["device"].startswith("cpu")
    assert [r.run_id for r in s.list_runs()] == sorted(ids, key=lambda r: s.info(r).created, reverse=True)


def test_damaged_and_invalid_runs_are_named_never_raised(store, tmp_path):
    s, ids = store
    copy = RunStore(tmp_path / "copy")
    for rid in ids[:2]:
        import shutil

        shutil.copytree(s.root / rid, copy.root / rid)
    (copy.root / ids[0] / "final.json").write_text("{trunc")
    os.remove(copy.root / ids[1] / "embeddings.npz")
    infos = {i.run_id: i for i in copy.list_runs()}
    assert infos[ids[0]].status == "damaged" and "final.json" in infos[ids[0]].message
    assert infos[ids[1]].status == "damaged" and "embeddings.npz is missing" in infos[ids[1]].message
    with pytest.raises(StoreError, match="is damaged"):
        copy.load(ids[0])
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(StoreError, match="not a valid run name"):
            copy.path(bad)


def test_the_runs_table_keys_experiments_and_summarizes_seeds(store):
    s, ids = store
    frame = runs_table.runs_frame(s)
    assert list(frame.columns) == runs_table.COLUMNS and set(frame["run_id"]) == set(ids)
    by_id = frame.set_index("run_id")
    # two seeds of one experiment share a key; the other sampler does not
    assert by_id.loc[ids[0], "experiment"] == by_id.loc[ids[1], "experiment"] != by_id.loc[ids[2], "experiment"]
    assert by_id.loc[ids[0], "shift"] == "random"  # read from dataset.json when the config says None
    summary = runs_table.seed_summary(frame, ["ood_recall@20"])
    assert len(summary) == 1 and summary["seeds"].iloc[0] == 2 and "±" in summary["ood_recall@20"].iloc[0]
    seeds = frame[frame["run_id"].isin(ids[:2])]["ood_recall@20"]
    assert summary["ood_recall@20"].iloc[0].startswith(f"{seeds.mean():.4f}")


def test_improvement_over_a_baseline_prefers_the_picked_run(store):
    s, ids = store
    usable = runs_table.runs_frame(s)
    rows = usable.set_index("run_id").loc[[ids[2]]]
    gains = runs_table.improvement_over(rows, usable, "rns", ["ood_recall@20"], preferred=[ids[1]])
    base = usable.set_index("run_id").loc[ids[1], "ood_recall@20"]
    mine = usable.set_index("run_id").loc[ids[2], "ood_recall@20"]
    assert gains["base_run"].iloc[0] == ids[1]
    assert gains["ood_recall@20"].iloc[0] == pytest.approx((mine - base) / base)
    none = runs_table.improvement_over(rows, usable[usable["sampler"] != "rns"], "rns", ["ood_recall@20"])
    assert none["base_run"].iloc[0] is None and none["ood_recall@20"].iloc[0] is None
    assert runs_table.relative(1.2, 1.0) == pytest.approx(0.2)
    assert runs_table.relative(1.0, 0.0) is None and runs_table.relative(np.nan, 1.0) is None


def test_latest_runs_takes_the_newest_of_each_sampler(store):
    s, ids = store
    latest = runs_table.latest_runs(s.list_runs(), ("dns", "rns", "pns"), "demo", "toy")
    assert list(latest) == ["dns", "rns"] and latest["rns"].run_id == ids[1]  # the later of the two seeds
    assert runs_table.latest_runs(s.list_runs(), ("rns",), "tuned", "toy") == {}


def test_write_json_is_atomic_and_refuses_clearly(tmp_path):
    write_json(tmp_path / "a.json", {"x": np.float32(1.5), "n": np.int64(3), "bad": float("nan")})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1.5, "n": 3, "bad": None}
    with pytest.raises(StoreError, match="could not write"):
        write_json(tmp_path / "missing-folder" / "a.json", {})
    assert runs_table.relative(None, 1.0) is None

import math

import numpy as np
import pytest
import torch

from cnsdiff_core.events import EpochDone
from cnsdiff_core.config import preset_config
from cnsdiff_core.runs import RunStore
from cnsdiff_core.recorder import resume_run, train_and_store
from cnsdiff_core.train import Trainer, TrainingError


def _cfg(**kw):
    base = dict(epochs=4, batch_size=256, dim=16, probe_triples=64, patience=0, device="cpu")
    base.update(kw)
    return preset_config(kw.pop("preset", "tuned"), **base)


def test_training_improves_over_random_ranking(toy):
    res = Trainer(_cfg(sampler="rns", epochs=8, lr=0.02), toy).fit()
    assert res.status == "finished" and res.epochs_run == 8
    # a random ranking gets Recall@20 about 20 / n_items; a trained model on a skewed toy world beats it
    assert res.metrics["iid_recall@20"] > 2 * 20 / toy.n_items
    assert res.history[0]["loss"] > res.history[-1]["loss"]


@pytest.mark.parametrize("preset", ["paper", "reference", "tuned"])
def test_cnsdiff_presets_train_and_report_per_step_diagnostics(toy, preset):
    cfg = _cfg(preset=preset, sampler="cnsdiff", epochs=2, probe_triples=100, probe_side_triples=40)
    res = Trainer(cfg, toy).fit()
    rows = [r for r in res.diagnostics if r["sampler"] == "cnsdiff"]
    steps = sorted({r["step"] for r in rows})
    assert steps == [-2, -1] + cfg.hardness_steps()  # pre-mix, trained-on, then every step
    assert {r["vector"] for r in rows} == {"negative", "pre-mix", "step"}
    assert cfg.hardness_steps() == ([2, 6, 10, 14, 18] if preset == "tuned" else [10, 14, 18])
    for r in rows:
        assert 0 <= r["fhn_lo"] <= r["fhn"] <= r["fhn_hi"] <= 1 and math.isfinite(r["hardness_mean"])
        # epoch 1 is a snapshot (whole probe); later the per-step candidates use the first triples
        assert 0 <= r["own_positive"] <= 1
        assert r["n"] == (100 if r["step"] < 0 or r["epoch"] == 1 else 40)
    others = [r for r in res.diagnostics if r["sampler"] != "cnsdiff" and r["epoch"] == 2]
    assert others and all(r["n"] == 40 for r in others)  # the comparison samplers: the first triples
    baseline = {r["sampler"] for r in res.diagnostics}
    assert baseline >= {"rns", "pns", "dns", "ahns", "mixgcf", "cnsdiff"}


def test_seed_makes_runs_reproducible(toy):
    a = Trainer(_cfg(sampler="dns", epochs=2), toy).fit()
    b = Trainer(_cfg(sampler="dns", epochs=2), toy).fit()
    assert a.metrics["valid_recall@20"] == b.metrics["valid_recall@20"]
    assert np.allclose(a.item_emb, b.item_emb)


def test_stop_request_ends_cleanly_and_keeps_the_model(toy):
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3

    res = Trainer(_cfg(sampler="rns", epochs=50, batch_size=128), toy, should_stop=stop).fit()
    assert res.status == "stopped" and res.epochs_run == 1
    assert res.item_emb is not None and "valid_recall@20" in res.metrics


def test_nan_loss_stops_with_a_message_naming_the_cause(toy):
    trainer = Trainer(_cfg(sampler="rns", epochs=3), toy)

    def poison(event):  # what a diverging learning rate does to the embeddings
        if isinstance(event, EpochDone):
            trainer.model.item_emb.data.fill_(float("inf"))

    trainer.callbacks.append(poison)
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 2, batch 1 .* lower lr=0.01"):
        trainer.fit()


def test_early_stopping_and_selection(toy):
    res = Trainer(_cfg(sampler="rns", epochs=30, patience=2, lr=0.05), toy).fit()
    best = max(res.history, key=lambda r: r["valid_recall@20"])
    assert res.best_epoch == best["epoch"]
    if res.status == "early-stopped":
        assert res.epochs_run - res.best_epoch == 2


def test_reference_selection_uses_the_ood_test(toy):
    res = Trainer(_cfg(preset="reference", sampler="cnsdiff", epochs=4), toy).fit()
    chosen = next(r for r in res.history if r["epoch"] == res.best_epoch)
    assert res.metrics["ood_recall@20"] == chosen["ood_recall@20"]


def test_run_store_round_trip_and_resume(toy, runs_dir):
    store = RunStore(runs_dir)
    cfg = _cfg(sampler="cnsdiff", epochs=6, snapshot_epochs=(2,))
    n = {"epochs": 0}

    def stop_after_two():
        return n["epochs"] >= 2

    def count(ev):
        if isinstance(ev, EpochDone):
            n["epochs"] += 1

    run_id, res = train_and_store(cfg, store, [count], should_stop=stop_after_two, data=toy)
    info = store.info(run_id)
    assert info.status == "stopped" and info.final["best_epoch"] >= 1
    run = store.load(run_id)
    assert len(run.history()) == 2 and not run.diagnostics().empty
    u, i = run.embeddings()
    assert u.shape == (toy.n_users, 16) and i.shape == (toy.n_items, 16)
    neg = run.negatives("best")
    assert set(neg) >= {"rns", "cnsdiff", "cnsdiff@10", "_probe"}
    assert "2" in run.snapshot_names()
    assert "denoiser" in run.weights()["sampler"]
    # a second run never reuses the folder
    run_id2, _ = train_and_store(_cfg(sampler="rns", epochs=1), store, data=toy)
    assert run_id2 != run_id and len(store.list_runs()) == 2
    # resume continues from epoch 3 and keeps the first two epochs
    from cnsdiff_core import runs as runs_mod
    orig = runs_mod.load_dataset if hasattr(runs_mod, "load_dataset") else None
    import cnsdiff_core.data as data_mod
    saved = data_mod.load_dataset
    data_mod.load_dataset = lambda *a, **k: toy
    try:
        resume_run(run_id, store)
    finally:
        data_mod.load_dataset = saved
    assert orig is None
    hist = store.load(run_id).history()
    assert list(hist["epoch"]) == [1, 2, 3, 4, 5, 6]
    assert store.info(run_id).status == "finished"
    # the status records the code that ran it, and the code that resumed it
    import json
    import re

    status = json.loads((store.info(run_id).path / "status.json").read_text())
    for key in ("code", "resumed_code"):
        code = status[key]
        assert code["torch"] == torch.__version__
        assert code["commit"] is None or re.fullmatch(r"[0-9a-f]{4,40}", code["commit"])


def test_interrupted_and_damaged_runs_are_listed_not_raised(toy, runs_dir):
    import json

    store = RunStore(runs_dir)
    run_id, _ = train_and_store(_cfg(sampler="rns", epochs=1), store, data=toy)
    p = store.path(run_id)
    status = json.loads((p / "status.json").read_text())
    status.update(status="running", pid=2**22 + 12345)  # a process that does not exist
    (p / "status.json").write_text(json.dumps(status))
    assert store.info(run_id).status == "interrupted"
    (p / "final.json").write_text('{"best_ep')
    assert store.info(run_id).status == "damaged"
    (p / "config.json").unlink()
    info = store.info(run_id)
    assert info.status == "damaged" and "config.json" in info.message
    assert [r.status for r in store.list_runs()] == ["damaged"]


def test_weights_load_with_weights_only(toy, runs_dir):
    store = RunStore(runs_dir)
    run_id, _ = train_and_store(_cfg(sampler="rns", epochs=1), store, data=toy)
    w = store.load(run_id).weights()
    assert isinstance(w["model"]["item_emb"], torch.Tensor)


def test_test_eval_selected_scores_the_tests_once_with_the_selected_weights(toy):
    every = Trainer(_cfg(sampler="rns", epochs=5, lr=0.05), toy).fit()
    once = Trainer(_cfg(sampler="rns", epochs=5, lr=0.05, test_eval="selected"), toy).fit()
    assert all("ood_recall@20" not in r and "valid_recall@20" in r for r in once.history)
    assert once.best_epoch == every.best_epoch
    for k in ("iid_recall@20", "ood_recall@20", "ood_ndcg@10", "valid_recall@20"):
        assert once.metrics[k] == pytest.approx(every.metrics[k], abs=1e-9), k


def test_test_eval_selected_is_refused_with_test_set_selection():
    with pytest.raises(ValueError, match="test_eval.*selection='ood-test'"):
        _cfg(preset="reference", sampler="cnsdiff", test_eval="selected")


def test_resume_drops_epochs_written_after_the_last_checkpoint(toy, runs_dir):
    # a kill between writing an epoch's history row and its checkpoint leaves one row too many
    import pandas as pd

    store = RunStore(runs_dir)
    n = {"epochs": 0}

    def count(ev):
        n["epochs"] += isinstance(ev, EpochDone)

    run_id, _ = train_and_store(_cfg(sampler="rns", epochs=5), store, [count], should_stop=lambda: n["epochs"] >= 2,
                                data=toy)
    path = store.info(run_id).path
    hist = pd.read_csv(path / "history.csv")
    assert list(hist["epoch"]) == [1, 2] and store.load(run_id).checkpoint()["epoch"] == 1  # 0-based: epoch 2
    extra = hist.iloc[[-1]].assign(epoch=3)
    pd.concat([hist, extra]).to_csv(path / "history.csv", index=False)  # epoch 3 written, never checkpointed
    import cnsdiff_core.data as data_mod
    saved = data_mod.load_dataset
    data_mod.load_dataset = lambda *a, **k: toy
    try:
        resume_run(run_id, store)
    finally:
        data_mod.load_dataset = saved
    assert list(store.load(run_id).history()["epoch"]) == [1, 2, 3, 4, 5]


def test_the_mixing_ramp_does_not_depend_on_the_epoch_budget(toy):
    """Two runs that differ only in `epochs` train epoch k with the same lambda (history.csv)."""
    short = Trainer(_cfg(sampler="cnsdiff", epochs=3, mix_ramp_epochs=4), toy).fit()
    long = Trainer(_cfg(sampler="cnsdiff", epochs=6, mix_ramp_epochs=4), toy).fit()
    lam_s = [r["lambda"] for r in short.history]
    lam_l = [r["lambda"] for r in long.history]
    assert lam_s == pytest.approx(lam_l[:3], abs=1e-6)
    assert lam_l[0] < 0.2 < lam_l[-1]  # Beta(1, 9) at epoch 0, Beta(9, 1) from epoch 4 on
    # the reference's budget-long ramp does depend on it
    ref_s = Trainer(_cfg(sampler="cnsdiff", epochs=3, mix_ramp_epochs=0), toy).fit()
    ref_l = Trainer(_cfg(sampler="cnsdiff", epochs=6, mix_ramp_epochs=0), toy).fit()
    assert abs(ref_s.history[2]["lambda"] - ref_l.history[2]["lambda"]) > 0.1


def test_tests_mask_training_and_validation_items(toy):
    from cnsdiff_core.metrics import embedding_scorer, evaluate

    t = Trainer(_cfg(sampler="rns", epochs=1), toy)
    res = t.fit()
    seen = np.concatenate([toy.train, toy.valid])
    for prefix, split in (("iid", toy.test_iid), ("ood", toy.test_ood)):
        want = evaluate(embedding_scorer(torch.as_tensor(res.user_emb), torch.as_tensor(res.item_emb)), seen, split,
                        toy.n_users, toy.n_items, "cpu")
        assert res.metrics[f"{prefix}_recall@20"] == pytest.approx(want.metrics["recall@20"], abs=1e-9)
        loose = evaluate(embedding_scorer(torch.as_tensor(res.user_emb), torch.as_tensor(res.item_emb)), toy.train,
                         split, toy.n_users, toy.n_items, "cpu")
        assert loose.metrics["ndcg@20"] != pytest.approx(want.metrics["ndcg@20"], abs=1e-9)  # the mask matters
    # validation itself masks training items only
    want = evaluate(embedding_scorer(torch.as_tensor(res.user_emb), torch.as_tensor(res.item_emb)), toy.train,
                    toy.valid, toy.n_users, toy.n_items, "cpu")
    assert res.metrics["valid_recall@20"] == pytest.approx(want.metrics["recall@20"], abs=1e-9)


def test_diagnostics_never_change_the_training(toy):
    """The probe draws on a fork of the RNG: a different probe size gives the same model."""
    a = Trainer(_cfg(sampler="cnsdiff", epochs=3, probe_triples=64), toy).fit()
    b = Trainer(_cfg(sampler="cnsdiff", epochs=3, probe_triples=100, probe_side_triples=30), toy).fit()
    assert np.array_equal(a.item_emb, b.item_emb)
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]


def test_diagnose_every_measures_fewer_epochs_and_trains_the_same(toy, tmp_path):
    """diagnose_every=0 (tuning trials): the probe runs at the first and the selected epoch only,
    the stored diagnostics hold both, and the model and metrics are those of a run measured every
    epoch; diagnose_every=2 measures every other epoch."""
    every = _cfg(sampler="cnsdiff", epochs=5)
    a = Trainer(every, toy).fit()
    store = RunStore(tmp_path)
    run_id, b = train_and_store(every.with_updates(diagnose_every=0), store, data=toy)
    assert np.array_equal(a.item_emb, b.item_emb)
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
    assert a.metrics == b.metrics
    assert sorted({r["epoch"] for r in a.diagnostics}) == [1, 2, 3, 4, 5]
    selected = b.best_epoch
    assert sorted({r["epoch"] for r in b.diagnostics}) == sorted({1, selected})
    stored = store.load(run_id).diagnostics()
    assert sorted(set(stored["epoch"])) == sorted({1, selected})
    main = [r for r in a.diagnostics if r["epoch"] == selected and r["sampler"] == "cnsdiff"]
    late = [r for r in b.diagnostics if r["epoch"] == selected and r["sampler"] == "cnsdiff"]
    assert [r["fhn"] for r in main] == [r["fhn"] for r in late]
    c = Trainer(every.with_updates(diagnose_every=2), toy).fit()
    measured = {r["epoch"] for r in c.diagnostics}
    assert {1, 2, 4} <= measured and measured - {c.best_epoch} == {1, 2, 4}


def test_tune_trials_measure_diagnostics_at_the_ends_unless_asked():
    from cnsdiff_core.tune import base_config

    assert base_config("sample", "rns").diagnose_every == 0
    assert base_config("sample", "rns", overrides={"diagnose_every": 3}).diagnose_every == 3


def test_public_api_train_epoch_evaluate_and_profile(toy):
    """What bench uses: setup(), train_epoch(), evaluate() and phase seconds with profile=True; the
    numbers are fit()'s own (same seed, same first epoch)."""
    from cnsdiff_core.events import BatchDone, Started

    cfg = _cfg(sampler="dns", epochs=1, eval_every=1)
    seen = []
    trainer = Trainer(cfg, toy, [seen.append], profile=True).setup()
    losses = trainer.train_epoch(0)
    assert {"loss", "bpr"} <= set(losses) and all(math.isfinite(v) for v in losses.values())
    assert {"draw negatives", "propagate", "sample", "loss", "backward + step"} <= set(trainer.phase_seconds)
    assert all(isinstance(e, BatchDone) for e in seen) and seen[-1].batch == seen[-1].n_batches
    results = trainer.evaluate()
    assert set(results) == {"valid", "iid", "ood"} and set(trainer.evaluate("ood")) == {"ood"}
    seen.clear()
    fitted = Trainer(cfg, toy, [seen.append]).fit()
    assert isinstance(seen[0], Started) and seen[0].epochs == 1
    assert fitted.history[0]["loss"] == pytest.approx(losses["loss"], rel=1e-6)
    assert fitted.history[0]["valid_recall@20"] == pytest.approx(results["valid"].metrics["recall@20"], abs=1e-12)
    assert not Trainer(cfg, toy).profile

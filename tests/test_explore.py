"""cnsdiff_core.explore: trajectories, nearest items, maps, FHN tables, schedule lab and refit,
on tiny runs trained here (toy data, tmp run store)."""
import numpy as np
import pandas as pd
import pytest
import torch

from cnsdiff_core import explore as ex
from cnsdiff_core.config import ConfigError, preset_config
from cnsdiff_core.runs import RunStore
from cnsdiff_core.recorder import train_and_store

from conftest import make_toy

BASE = dict(epochs=2, batch_size=256, dim=16, probe_triples=64, patience=0, device="cpu", dataset="toy")


@pytest.fixture(scope="module")
def toy_data():
    return make_toy()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, toy_data):
    """One tuned and one reference CNSDiff run, and one RNS run, trained on the toy data."""
    store = RunStore(tmp_path_factory.mktemp("runs"))
    out = {}
    for name, preset, sampler in (("tuned", "tuned", "cnsdiff"), ("reference", "reference", "cnsdiff"),
                                  ("rns", "tuned", "rns")):
        run_id, _ = train_and_store(preset_config(preset, sampler=sampler, **BASE), store, data=toy_data)
        out[name] = store.load(run_id)
    return out


def _user_with_heldout(data):
    for u in np.unique(data.train[:, 0]):
        tr, he = ex.user_items(data, u)
        if len(tr) >= 2 and len(he) >= 1:
            return int(u), tr, he
    raise AssertionError("toy data has no user with both training and held-out positives")


def _trajectories(run, data, user=None, pos=None, **kw):
    U, I = run.embeddings()
    if user is None:
        user, tr, _ = _user_with_heldout(data)
        pos = int(tr[0])
    return ex.denoising_trajectories(run.config, ex.run_denoiser(run), U, I, data, user, pos, **kw)


# --- trajectories -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tuned", "reference"])
def test_trajectory_length_and_last_update_is_the_ddpm_posterior_mean(runs, toy_data, name):
    run = runs[name]
    cfg = run.config
    traj = _trajectories(run, toy_data)
    assert traj.steps == cfg.hardness_steps() and len(traj.steps) >= 3
    for s in traj.steps:
        rows = traj.table[traj.table["s"] == s]
        n_reverse = cfg.steps if cfg.reverse_from_T else s - cfg.stop_for(s)
        assert (rows["phase"] == "forward").sum() == s + 1  # z_0 .. z_s
        assert (rows["phase"] == "reverse").sum() == n_reverse
        assert rows["frame"].tolist() == list(range(s + 1 + n_reverse))
        # the last reverse state is c1 * z0_hat + c2 * z_prev, with the numbers the page shows
        last, prev = rows.index[-1], rows.index[-2]
        r = traj.table.loc[last]
        expected = r["coef1"] * traj.z0_hats[last] + r["coef2"] * traj.states[prev]
        np.testing.assert_allclose(traj.states[last], expected, rtol=1e-5, atol=1e-5)
        assert r["t"] == (0 if cfg.reverse_from_T else cfg.stop_for(s))
        # the forward states are the closed form with one noise draw: z_0 is the positive itself
        assert rows.iloc[0]["cos_to_pos"] == pytest.approx(1.0, abs=1e-5)
    U, _ = run.embeddings()
    np.testing.assert_allclose(traj.table["score"], traj.states @ U[traj.user], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(traj.table["hardness"], traj.table["score"] - traj.s_pos, atol=1e-5)


def test_rows_by_step_and_frame_are_the_tables_rows(runs, toy_data):
    """Trajectories.at / last_frame / candidates read an index built once; it must give the rows
    a filter of the table gives, for every step and frame (clamped past a chain's end)."""
    traj = _trajectories(runs["tuned"], toy_data)
    t = traj.table
    for s in traj.steps:
        last = int(t.loc[t["s"] == s, "frame"].max())
        assert traj.last_frame(s) == last
        for frame in range(-1, traj.n_frames + 2):
            f = min(max(frame, 0), last)
            want = t[(t["s"] == s) & (t["frame"] == f)].iloc[0]
            assert traj.at(s, frame).equals(want)
    ends = [t.index[(t["s"] == s) & (t["frame"] == traj.last_frame(s))][0] for s in traj.steps]
    np.testing.assert_array_equal(traj.candidates(), traj.states[ends])


def test_fixed_seed_makes_a_trajectory_reproducible(runs, toy_data):
    a = _trajectories(runs["tuned"], toy_data, seed=3)
    b = _trajectories(runs["tuned"], toy_data, seed=3)
    c = _trajectories(runs["tuned"], toy_data, seed=4)
    np.testing.assert_array_equal(a.states, b.states)
    assert not np.allclose(a.states, c.states)


def test_update_formula_writes_the_numbers_of_the_step(runs, toy_data):
    traj = _trajectories(runs["tuned"], toy_data)
    row = traj.at(10, traj.last_frame(10))
    tex = ex.update_formula(row, 10)
    assert f"{row['coef1']:.4f}" in tex and f"{row['coef2']:.4f}" in tex and "hat z_0" in tex
    fwd = ex.update_formula(traj.at(10, 4), 10)
    assert f"{traj.at(10, 4)['sqrt_abar']:.4f}" in fwd and r"\epsilon" in fwd
    assert traj.at(10, 10_000)["frame"] == traj.last_frame(10)  # frames past the end clamp


def test_nearest_items_flag_training_and_heldout_positives(runs, toy_data):
    user, train, held = _user_with_heldout(toy_data)
    pos = int(train[0])
    with_train = _trajectories(runs["tuned"], toy_data, user, pos)
    nb = with_train.neighbours
    assert (nb["is_train"] == np.isin(nb["item"], train)).all()
    assert (nb["is_heldout"] == np.isin(nb["item"], held)).all()
    assert not (nb["is_train"] & nb["is_heldout"]).any()
    # frame 0 is z_0: its nearest item is the positive itself, a training positive
    first = with_train.neighbours_at(10, 0).iloc[0]
    assert first["item"] == pos and first["is_train"] and first["cos"] == pytest.approx(1.0, abs=1e-5)
    without = _trajectories(runs["tuned"], toy_data, user, pos, exclude_train=True)
    assert not without.neighbours["is_train"].any()
    assert not without.neighbours["item"].isin(train).any()
    assert len(without.neighbours) == len(nb) and (without.neighbours.groupby(["s", "frame"]).size() == 5).all()
    # the FHN resolution is Euclidean over all items: frame 0 (z_0 itself) resolves to the positive,
    # flagged as a collapse; held-out items are flagged
    t = with_train.table
    first_rows = t[t["frame"] == 0]
    assert (first_rows["resolved_item"] == pos).all() and first_rows["resolved_own_positive"].all()
    assert (first_rows["nn_dist"] < 1e-5).all()
    assert (t["resolved_own_positive"] == (t["resolved_item"] == pos)).all()
    assert (t["resolved_heldout"] == np.isin(t["resolved_item"], held)).all()


def test_user_items_rejects_unknown_users(toy_data):
    with pytest.raises(ex.ExploreError, match="outside"):
        ex.user_items(toy_data, toy_data.n_users + 5)


def test_reference_candidates_are_near_identical_across_steps_while_tuned_differ(runs, toy_data):
    user, train, _ = _user_with_heldout(toy_data)
    ref, tuned = [], []
    for pos in train[:3]:
        for name, out in (("reference", ref), ("tuned", tuned)):
            cos = _trajectories(runs[name], toy_data, user, int(pos)).candidate_cosines().to_numpy()
            out.append(cos[~np.eye(len(cos), dtype=bool)])
    assert np.min(ref) > 0.9  # the reference chain always runs T..0: the timestep does nothing
    assert np.mean(tuned) < 0.9 and np.min(tuned) < np.min(ref)


def test_a_run_without_a_denoiser_gives_a_clear_error(runs):
    with pytest.raises(ex.ExploreError, match="pick a CNSDiff run"):
        ex.run_denoiser(runs["rns"])


# --- maps -------------------------------------------------------------------------------------------------
def test_pca_map_transform_of_items_equals_the_fitted_coordinates(runs, toy_data):
    run = runs["tuned"]
    _, I = run.embeddings()
    proj = ex.fit_item_map(I, "pca")
    np.testing.assert_allclose(proj.transform(I), proj.embedding_, atol=1e-4)
    items = ex.item_frame(toy_data, proj.embedding_)
    assert len(items) == toy_data.n_items
    np.testing.assert_allclose(items[["x", "y"]].to_numpy(), proj.embedding_)
    assert (items["popularity"].to_numpy() == toy_data.item_popularity()).all()
    assert items["environment"].nunique() == 4
    negs = ex.negatives_frame(run.negatives("best"), proj.embedding_, proj, toy_data)
    real = negs[~negs["synthesized"]]
    np.testing.assert_allclose(real[["x", "y"]].to_numpy(), proj.embedding_[real["item"].to_numpy()])
    synth = negs[negs["layer"] == "cnsdiff@14"]
    np.testing.assert_allclose(synth[["x", "y"]].to_numpy(),
                               proj.transform(run.negatives("best")["cnsdiff@14"]["vec"]), atol=1e-5)
    assert set(negs["layer"]) >= {"rns", "pns", "dns", "ahns", "mixgcf", "cnsdiff", "cnsdiff@10", "cnsdiff@18"}
    assert negs.loc[negs["sampler"] == "mixgcf", "synthesized"].all()
    np.testing.assert_allclose(negs["score"] - negs["s_pos"], negs["hardness"], atol=1e-5)


def test_positives_frame_places_the_users_positives(toy_data):
    user, train, held = _user_with_heldout(toy_data)
    coords = np.random.default_rng(0).normal(size=(toy_data.n_items, 2)).astype(np.float32)
    df = ex.positives_frame(toy_data, coords, user)
    assert sorted(df.loc[df["layer"] == "training positive", "item"]) == sorted(train)
    assert sorted(df.loc[df["layer"] == "held-out positive", "item"]) == sorted(held)
    np.testing.assert_allclose(df[["x", "y"]].to_numpy(), coords[df["item"].to_numpy()])


def test_item_frame_rejects_a_map_of_other_data(toy_data):
    with pytest.raises(ex.ExploreError, match="other data"):
        ex.item_frame(toy_data, np.zeros((toy_data.n_items + 1, 2)))


# --- FHN tables ----------------------------------------------------------------------------------------
def test_fhn_curves_and_hardness_samples_cover_every_sampler_and_step(runs):
    run = runs["tuned"]
    curves = ex.fhn_curves({"a": run.diagnostics(), "b": runs["reference"].diagnostics()})
    assert set(curves["run"]) == {"a", "b"}
    assert {"cnsdiff", "cnsdiff@10", "cnsdiff@14", "cnsdiff@18", "rns", "dns"} <= set(curves["series"])
    assert curves["fhn"].between(0, 1).all() and curves["fhn_true"].isna().all()  # toy data: no truth
    picks = ex.fhn_curves({"a": run.diagnostics()}, include_steps=False)
    assert set(picks["step"]) == {-1, -2} and len(picks) < len(curves[curves["run"] == "a"])
    assert set(picks.loc[picks["step"] == -2, "series"]) == {"cnsdiff@premix", "mixgcf@premix"}
    assert (curves["fhn_lo"] <= curves["fhn"]).all() and (curves["fhn"] <= curves["fhn_hi"]).all()
    samples = ex.hardness_samples({"a": run.negatives("best")})
    n = len(run.negatives("best")["_probe"]["users"])
    assert (samples.groupby("series").size() == n).all()
    pos = samples[samples["series"] == "positive"]
    assert (pos["hardness"] == 0).all()
    assert ex.fhn_curves({}).empty and ex.hardness_samples({"x": {}}).empty


def test_world_confounding_is_read_from_the_dataset_string_or_source():
    assert ex.world_confounding({"dataset": "synthetic:confounding=0.3,n_users=50"}, {}) == 0.3
    assert ex.world_confounding({"dataset": 'synthetic:{"confounding": 0.9}'}, {}) == 0.9
    src = 'synthetic world {"n_users": 80, "confounding": 0.55}'
    assert ex.world_confounding({"dataset": "custom"}, {"source": src}) == 0.55
    assert ex.world_confounding({"dataset": "food"}, {"source": "/nowhere/food"}) is None
    from cnsdiff_core.data.registry import SAMPLE_WORLD

    assert ex.world_confounding({"dataset": "sample"}, {"source": str(SAMPLE_WORLD)}) == pytest.approx(0.7)


def test_confounding_table_uses_the_selected_epoch_and_skips_real_data():
    def diag(fhn_by_epoch):
        return pd.DataFrame([{"epoch": e, "sampler": "dns", "step": -1, "fhn": f, "fhn_lift": 2 * f, "fhn_true": f / 2}
                             for e, f in fhn_by_epoch.items()])

    entries = [("r1", {"dataset": "synthetic:confounding=0.2"}, {}, diag({1: 0.1, 2: 0.2}), 1),
               ("r2", {"dataset": "synthetic:confounding=0.8"}, {}, diag({1: 0.3, 2: 0.4}), None),
               ("r3", {"dataset": "food"}, {}, diag({1: 0.9}), 1)]
    table = ex.confounding_table(entries)
    assert table["run"].tolist() == ["r1", "r2"]
    assert table["confounding"].tolist() == [0.2, 0.8]
    assert table["fhn"].tolist() == [0.1, 0.4]  # r1 at its best epoch 1, r2 at its last epoch


# --- schedule lab ----------------------------------------------------------------------------------------
def test_schedule_curves_and_their_errors():
    df = ex.schedule_curves("cosine", 20, 1.0, 1e-4, 0.02, "B")
    assert len(df) == 20 and (df["schedule"] == "B").all()
    assert (np.diff(df["alphabar"]) < 0).all() and (np.diff(df["noise_std"]) > 0).all()
    np.testing.assert_allclose(df["snr"], df["alphabar"] / (1 - df["alphabar"]))
    with pytest.raises(ConfigError, match="beta_min <= beta_max"):
        ex.schedule_curves("linear", 20, 0.1, 0.5, 0.02)
    with pytest.raises(ConfigError, match="schedule='quadratic'"):
        ex.schedule_curves("quadratic", 20, 0.1, 1e-4, 0.02)
    with pytest.raises(ConfigError, match="steps=0"):
        ex.schedule_curves("linear", 0, 0.1, 1e-4, 0.02)
    with pytest.raises(ConfigError, match="noise_scale"):
        ex.schedule_curves("linear", 20, -1.0, 1e-4, 0.02)


def test_lab_config_keeps_the_hardness_steps_valid_when_T_changes():
    cfg = preset_config("tuned")
    small = ex.lab_config(cfg, "linear", 8, 0.5, 1e-4, 0.02)
    assert small.steps == 8 and small.schedule == "linear" and small.noise_scale == 0.5
    assert small.hardness_steps() and max(small.hardness_steps()) <= 8 and small.stop_step < small.hard_start
    same = ex.lab_config(cfg, "cosine", cfg.steps, 1.0, 1e-4, 0.02)
    assert same.hardness_steps() == cfg.hardness_steps()
    with pytest.raises(ConfigError):
        ex.lab_config(cfg, "linear", 20, 0.1, 0.03, 0.02)


def test_refit_denoiser_reduces_its_loss_and_reports_one_row_per_step(runs, toy_data):
    run = runs["reference"]  # its own denoiser was never trained: the refit trains a fresh one
    U, I = run.embeddings()
    cfg = ex.lab_config(run.config, "cosine", 20, 1.0, 1e-4, 0.02).with_updates(reverse_from_T=False, denoise_steps=3)
    calls = []
    refit, report = ex.refit_denoiser(cfg, toy_data, U, I, n_steps=200, n_triples=128,
                                      callback=lambda *a: calls.append(a))
    assert refit.eval_loss_after_ < 0.8 * refit.eval_loss_before_
    assert refit.n_steps_done_ == 200 and not refit.stopped_ and calls[-1][:2] == (200, 200)
    assert report["step"].tolist() == cfg.hardness_steps() + [-1]
    assert report["stop"].tolist()[:-1] == [cfg.stop_for(s) for s in cfg.hardness_steps()]
    assert report["fhn"].between(0, 1).all() and (report["nn_dist"] >= 0).all()
    assert report["own_positive"].between(0, 1).all() and report["fhn_null"].between(0, 1).all()
    assert report["fhn_true"].isna().all()  # toy data has no ground truth
    # the pick is the hardest candidate: its hardness is at least every step's on average
    assert report.iloc[-1]["hardness_mean"] >= report.iloc[:-1]["hardness_mean"].max() - 1e-6
    # a stop request ends early and keeps a usable denoiser
    stopped = ex.DenoiserRefit(cfg, n_steps=500).fit(I, toy_data.train, should_stop=lambda: True)
    assert stopped.stopped_ and stopped.n_steps_done_ == 1 and len(stopped.report(toy_data, U, I, 32)) == 4


def test_step_report_of_the_runs_own_denoiser_matches_its_stored_diagnostics_in_kind(runs, toy_data):
    run = runs["tuned"]
    U, I = run.embeddings()
    report = ex.step_report(run.config, ex.run_denoiser(run), toy_data, U, I, n_triples=64)
    diag = run.diagnostics()
    stored = diag[(diag["sampler"] == "cnsdiff") & (diag["step"] >= 0)]
    assert sorted(stored["step"].unique()) == report["step"].tolist()[:-1]
    # larger s = noisier start = farther from the positive (chains of equal length: s=6 and s=18
    # both take three reverse steps in the tuned preset)
    by_step = report.set_index("step")
    assert by_step.loc[6, "cos_to_pos"] > by_step.loc[18, "cos_to_pos"]


def test_refit_rejects_embeddings_of_the_wrong_size(toy_data):
    cfg = preset_config("tuned", dim=16)
    with pytest.raises(ex.ExploreError, match="dim=16"):
        ex.DenoiserRefit(cfg, n_steps=5).fit(np.zeros((toy_data.n_items, 8), np.float32), toy_data.train)
    with pytest.raises(ex.ExploreError, match="n_steps"):
        ex.DenoiserRefit(cfg, n_steps=0).fit(np.zeros((toy_data.n_items, 16), np.float32), toy_data.train)


def test_explore_does_not_touch_torchs_global_rng(runs, toy_data):
    state = torch.random.get_rng_state()
    _trajectories(runs["tuned"], toy_data)
    assert torch.equal(state, torch.random.get_rng_state())


def test_loaded_denoiser_and_trajectory_candidates_match_the_engine(runs, toy_data):
    """The page's chains are the sampler's: same weights, same candidates for the same noise."""
    from cnsdiff_core.diffusion import Denoiser, NoiseSchedule, synthesize_candidates

    run = runs["tuned"]
    cfg = run.config
    state = run.weights()["sampler"]["denoiser"]
    plain = Denoiser(cfg.dim, cfg.denoiser_hidden, 64, cfg.denoiser_dropout, cfg.condition_on_user)
    plain.load_state_dict(state)
    plain.eval()
    loaded = ex.build_denoiser(cfg, state)
    z, t = torch.randn(7, cfg.dim), torch.randint(1, cfg.steps + 1, (7,))
    with torch.no_grad():
        torch.testing.assert_close(loaded(z, t), plain(z, t))
    traj = _trajectories(run, toy_data, seed=5)
    U, I = run.embeddings()
    steps = cfg.hardness_steps()
    noise = torch.randn((len(steps), I.shape[1]), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        cands = synthesize_candidates(plain, NoiseSchedule.from_config(cfg).tensors("cpu"),
                                      torch.as_tensor(I[[traj.pos]]), steps, [cfg.stop_for(s) for s in steps],
                                      noise[:, None, :])[0]
    np.testing.assert_allclose(traj.candidates(), cands.numpy(), rtol=1e-4, atol=1e-5)


def test_series_order_reads_steps_numerically():
    from cnsdiff_core.explore import series_order

    assert series_order(["cnsdiff@14", "cnsdiff@2", "rns", "cnsdiff", "cnsdiff@10"]) == \
        ["cnsdiff", "cnsdiff@2", "cnsdiff@10", "cnsdiff@14", "rns"]

"""AppTest per explore page (Denoising, Negatives map, FHN & hardness, Noise schedule lab) over
tiny runs trained into a temporary run store."""
import os
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from cnsdiff_core import explore as ex
from cnsdiff_core.config import preset_config
from cnsdiff_core.data import load_dataset
from cnsdiff_core.runs import RunStore, train_and_store

PAGES = Path(__file__).resolve().parents[1] / "pages"
WORLD = "synthetic:n_users=70,n_items=90,interactions_per_user=9,random_exposures_per_user=15,confounding={c}"
SMALL = dict(epochs=2, batch_size=256, dim=16, probe_triples=64, patience=0, device="cpu")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A run store with a tuned-style CNSDiff run and a reference run on one synthetic world, and an
    RNS run on a world with another confounding strength (for the FHN-vs-confounding chart)."""
    root = tmp_path_factory.mktemp("explore-runs")
    old = os.environ.get("CNSDIFF_RUNS")
    os.environ["CNSDIFF_RUNS"] = str(root)
    s = RunStore(root)
    ids = {}
    for name, preset, sampler, conf in (("demo", "demo", "cnsdiff", 0.5), ("reference", "reference", "cnsdiff", 0.5),
                                        ("rns", "demo", "rns", 0.9)):
        cfg = preset_config(preset, sampler=sampler, dataset=WORLD.format(c=conf), **SMALL)
        ids[name], _ = train_and_store(cfg, s)
    yield {"root": root, "ids": ids, "store": s}
    if old is None:
        os.environ.pop("CNSDIFF_RUNS", None)
    else:
        os.environ["CNSDIFF_RUNS"] = old


def app(page: str, run_id: str | None = None, **state) -> AppTest:
    at = AppTest.from_file(str(PAGES / page), default_timeout=60)
    if run_id:
        at.session_state["run_id"] = run_id  # the sidebar's current run
    for k, v in state.items():
        at.session_state[k] = v
    return at


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def texts(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


# --- Denoising -------------------------------------------------------------------------------------------
def test_denoising_restores_user_item_and_step_from_the_url(store):
    run_id = store["ids"]["demo"]
    data = load_dataset(WORLD.format(c=0.5))
    user = int(np.unique(data.train[:, 0])[3])
    train, _ = ex.user_items(data, user)
    uid, iid = str(data.user_ids[user]), str(data.item_ids[train[-1]])
    at = app("5_denoising.py", run_id, den_umap=False)
    at.query_params.update({"user": uid, "item": iid, "step": "3"})
    at.run()
    no_exception(at)
    assert at.selectbox(key="den_user").value == uid and at.selectbox(key="den_item").value == iid
    assert at.slider(key="den_step").value == 3
    assert r"z_{3} = \sqrt{\bar\alpha_{3}}" in at.latex[0].value  # frame 3 is a forward step
    at.button(key="den_next").click().run()
    no_exception(at)
    assert at.slider(key="den_step").value == 4
    last = at.slider(key="den_step").max
    at.slider(key="den_step").set_value(last).run()
    no_exception(at)
    assert r"c_1\,\hat z_0 + c_2" in at.latex[0].value  # the last frame is a reverse update
    assert "Different steps give different candidates" in texts(at.caption)
    at.radio(key="den_s").set_value(18).run()
    no_exception(at)
    at.toggle(key="den_exclude").set_value(True).run()
    no_exception(at)


def test_denoising_shows_the_reference_near_constant_negative(store):
    at = app("5_denoising.py", store["ids"]["reference"], den_umap=False)
    at.run()
    no_exception(at)
    assert "near-constant negative" in texts(at.warning)
    assert "reverse chain runs from T" in texts(at.info)


def test_denoising_offers_only_cnsdiff_runs(store):
    at = app("5_denoising.py", store["ids"]["rns"], den_umap=False)  # sidebar on an RNS run
    at.run()
    no_exception(at)
    assert at.selectbox(key="den_run").value in (store["ids"]["demo"], store["ids"]["reference"])


# --- Negatives map ------------------------------------------------------------------------------------------
def test_negatives_map_renders_for_all_probe_users_and_one_user(store):
    at = app("6_negatives_map.py", store["ids"]["demo"], map_umap=False)
    at.run()
    no_exception(at)
    first_probe_user = at.selectbox(key="map_user").value
    assert first_probe_user != "all" and at.query_params["user"] == first_probe_user
    layers = at.multiselect(key="map_layers").value
    assert {"rns", "dns", "mixgcf", "cnsdiff", "cnsdiff@10"} <= set(layers)
    at.selectbox(key="map_user").set_value("all").run()
    no_exception(at)
    assert "negatives of" in texts(at.caption)
    at.radio(key="map_color").set_value("environment").run()
    at.toggle(key="map_size_nn").set_value(False).run()
    at.multiselect(key="map_layers").set_value(["rns", "cnsdiff@14"]).run()
    no_exception(at)
    keys = {b.key for b in at.get("download_button")} if at.get("download_button") else set()
    assert not keys or {"map_dl_items", "map_dl_negatives"} <= keys


def test_negatives_map_for_a_baseline_run(store):
    at = app("6_negatives_map.py", store["ids"]["rns"], map_umap=False)
    at.run()
    no_exception(at)
    layers = at.multiselect(key="map_layers").value
    assert "rns" in layers and not any("@" in x for x in layers)  # no CNSDiff steps in an RNS run


# --- FHN & hardness -------------------------------------------------------------------------------------------
def test_fhn_page_across_runs_with_ground_truth_and_confounding(store):
    ids = store["ids"]
    at = app("7_fhn_hardness.py", ids["demo"])
    at.run()
    no_exception(at)
    assert at.multiselect(key="fhn_runs").value == [ids["demo"]]
    at.multiselect(key="fhn_runs").set_value([ids["demo"], ids["reference"], ids["rns"]]).run()
    no_exception(at)
    assert "ground-truth FHN rate" in at.radio(key="fhn_metric").options  # synthetic worlds have truth
    at.radio(key="fhn_metric").set_value("fhn_true").run()
    at.radio(key="fhn_metric").set_value("fhn_lift").run()
    at.radio(key="fhn_kind").set_value("violin").run()
    at.toggle(key="fhn_steps").set_value(False).run()
    no_exception(at)
    assert "FHN vs confounding strength" in texts(at.subheader)  # worlds at 0.5 and 0.9


# --- Noise schedule lab -----------------------------------------------------------------------------------------
def test_schedule_lab_invalid_schedule_shows_an_error_not_an_exception(store):
    at = app("8_schedule_lab.py", store["ids"]["demo"])
    at.run()
    no_exception(at)
    assert not at.error
    at.number_input(key="lab_a_bmin").set_value(0.5).run()
    no_exception(at)
    assert "Schedule A" in texts(at.error) and "beta_min <= beta_max" in texts(at.error)
    at.number_input(key="lab_b_scale").set_value(-1.0).run()
    no_exception(at)
    assert "Schedule B" in texts(at.error) and "noise_scale" in texts(at.error)
    assert all("Traceback" not in e.value for e in at.error)


def test_schedule_lab_refits_in_the_background_and_reports_per_step(store):
    at = app("8_schedule_lab.py", store["ids"]["reference"])
    at.run()
    at.slider(key="lab_refit_steps").set_value(100).run()
    at.button(key="lab_refit").click().run()
    no_exception(at)
    deadline = time.time() + 40
    while not at.success and time.time() < deadline:
        time.sleep(0.5)
        at.run()
    no_exception(at)
    assert "100 steps" in texts(at.success)
    job = at.session_state["lab_refit_job"]
    assert job.status == "done" and job.eval_after < job.eval_before
    assert job.report["step"].tolist() == [10, 14, 18, -1]


def test_schedule_lab_starts_a_full_run_with_the_schedule(store):
    import app_support as sup

    at = app("8_schedule_lab.py", store["ids"]["demo"])
    at.run()
    at.radio(key="lab_refit_which").set_value("B").run()
    at.button(key="lab_train").click().run()
    no_exception(at)
    assert "Training started" in texts(at.success)
    job = next(j for j in sup.job_manager().jobs() if j["tag"] == "lab")
    assert job["samplers"] == ["cnsdiff"]
    deadline = time.time() + 60
    while sup.job_manager().get(job["job_id"])["status"] in ("queued", "running") and time.time() < deadline:
        time.sleep(0.5)
    done = sup.job_manager().get(job["job_id"])
    assert done["status"] == "finished", done["message"]
    cfg = store["store"].load(done["run_ids"][0]).config
    assert cfg.schedule == "linear-var" and cfg.sampler == "cnsdiff"  # schedule B of a demo (cosine) run


# --- without runs ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("page", ["5_denoising.py", "6_negatives_map.py", "7_fhn_hardness.py", "8_schedule_lab.py"])
def test_pages_explain_what_to_do_without_runs(tmp_path, monkeypatch, page):
    monkeypatch.setenv("CNSDIFF_RUNS", str(tmp_path / "empty"))
    at = app(page)
    at.run()
    no_exception(at)
    assert "Train" in texts(at.info)


# --- UMAP (numba compile: slow) -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_negatives_map_swaps_in_umap_when_ready(store):
    import explore_support as es

    at = app("6_negatives_map.py", store["ids"]["demo"], map_umap=True)
    at.run()
    no_exception(at)
    job = es.map_job(store["ids"]["demo"])
    deadline = time.time() + 300
    while job.status == "running" and time.time() < deadline:
        time.sleep(1)
    assert job.status == "ready", job.error
    at.run()
    assert at.radio(key="map_method").options == ["PCA", "UMAP (cosine)"]
    at.radio(key="map_method").set_value("umap").run()
    no_exception(at)

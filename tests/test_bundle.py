"""The workshop bundle: plan, precompute (tiny), manifest, relocatable folder, stored 2-D maps and
the explore pages reading them; read-only serving of a bundle."""
from __future__ import annotations

import json
import shutil
import stat
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cnsdiff_core import bundle as bd
from cnsdiff_core import stored_maps
from cnsdiff_core.config import PRESETS, preset_config
from cnsdiff_core.data import DataError, load_dataset, parse_synthetic
from cnsdiff_core.runs import RunStore

ROOT = Path(__file__).resolve().parents[1]
TINY = "synthetic:n_users=60,n_items=80,interactions_per_user=8,random_exposures_per_user=10,confounding=0.5"
SMALL = dict(batch_size=256, dim=8, probe_triples=32, device="cpu")


def test_plan_covers_every_sampler_presets_and_two_confounding_strengths():
    plan = bd.bundle_plan()
    keys = {(p.dataset, p.sampler, p.preset) for p in plan}
    assert len(keys) == len(plan)
    for dataset in bd.BUNDLE_DATASETS:
        for sampler in ("rns", "pns", "dns", "mixgcf", "ahns"):
            assert (dataset, sampler, "tuned") in keys
        for preset in ("tuned", "paper", "reference"):
            assert (dataset, "cnsdiff", preset) in keys
    assert {("sample", "cnsdiff", "demo"), ("sample", "rns", "demo")} <= keys  # what Home shows
    # the second world is the sample world with weak confounding: same size, same seed
    world = parse_synthetic(bd.BUNDLE_DATASETS[1].split(":", 1)[1])
    sample = json.loads((ROOT / "sample_data" / "world" / "world.json").read_text())["config"]
    assert world.confounding == 0.2 and sample["confounding"] == 0.7
    assert (world.n_users, world.n_items, world.seed) == (sample["n_users"], sample["n_items"], sample["seed"])
    # every config is valid with the demo budget
    for p in plan:
        cfg = preset_config(p.preset, dataset=p.dataset, sampler=p.sampler, epochs=PRESETS["demo"]["epochs"])
        assert cfg.epochs == PRESETS["demo"]["epochs"]
    assert any(p.dataset == "coat" for p in bd.bundle_plan(real_dataset="coat"))


def test_bad_settings_fail_before_anything_trains(tmp_path):
    with pytest.raises(DataError):
        list(bd.precompute_bundle(runs_dir=tmp_path / "b", real_dataset="no-such-dataset"))
    with pytest.raises(ValueError, match="epochs"):
        list(bd.precompute_bundle(runs_dir=tmp_path / "b", epochs=0))
    assert not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle") / "workshop"
    lines = list(bd.precompute_bundle("workshop", runs_dir=root, epochs=1, datasets=(TINY,),
                                      samplers=("rns", "cnsdiff"), overrides=SMALL, workers=1, threads=1,
                                      projections=("pca",)))
    return root, lines


def test_precompute_writes_runs_and_a_manifest(bundle):
    root, lines = bundle
    assert lines[0].startswith("bundle 'workshop': 4 runs") and lines[-1].startswith("wrote ")
    manifest = bd.read_manifest(root)
    assert manifest["format"] == "cnsdiff-bundle" and manifest["epochs"] == 1
    assert len(manifest["runs"]) == 4 and not any(r["error"] for r in manifest["runs"])
    infos = {r.run_id: r for r in RunStore(root).list_runs()}
    for entry in manifest["runs"]:
        info = infos[entry["run_id"]]
        assert info.status == "finished"
        assert (info.config["sampler"], info.config["preset"]) == (entry["sampler"], entry["preset"])
        assert (info.path / "projection_pca.npz").is_file()
        assert not (info.path / "checkpoint.pt").exists()  # not needed to browse; keeps the zip small
    assert sorted(r["preset"] for r in manifest["runs"] if r["sampler"] == "cnsdiff") == ["paper", "reference", "tuned"]


def test_bundle_is_relocatable_and_readable(bundle, tmp_path):
    root, _ = bundle
    for f in root.rglob("*"):
        if f.is_file():
            assert f.stat().st_mode & stat.S_IROTH, f  # served by another account after unzipping
        if f.suffix == ".json":
            text = f.read_text()
            assert str(root) not in text and str(ROOT) not in text, f"absolute path in {f}"
    # zip, carry, unzip elsewhere: everything still lists and loads
    archive = shutil.make_archive(str(tmp_path / "workshop"), "zip", root.parent, root.name)
    with zipfile.ZipFile(archive) as z:
        assert all(not Path(n).is_absolute() and ".." not in Path(n).parts for n in z.namelist())
        z.extractall(tmp_path / "elsewhere")
    moved = tmp_path / "elsewhere" / "workshop"
    infos = RunStore(moved).list_runs()
    assert len(infos) == 4 and all(i.status == "finished" for i in infos)
    run = RunStore(moved).load(infos[0].run_id)
    proj = bd.load_projection(run.path, "pca", run.embeddings()[1])
    assert proj is not None and proj.embedding_.shape == (run.embeddings()[1].shape[0], 2)


def test_stored_pca_transforms_like_the_fitted_one(bundle):
    from cnsdiff_core.explore import fit_item_map

    root, _ = bundle
    run = RunStore(root).load(RunStore(root).list_runs()[0].run_id)
    items = run.embeddings()[1]
    stored = bd.load_projection(run.path, "pca", items)
    fitted = fit_item_map(items, "pca")
    np.testing.assert_allclose(stored.embedding_, fitted.embedding_, atol=1e-5)
    x = np.random.default_rng(0).normal(size=(7, items.shape[1])).astype(np.float32)
    np.testing.assert_allclose(stored.transform(x), fitted.transform(x), atol=1e-4)
    assert stored.transform(x[0]).shape == (1, 2)
    # a map is used only for the embeddings it was fitted on, and a broken file is ignored
    assert bd.load_projection(run.path, "pca", items + 1.0) is None
    assert bd.load_projection(run.path, "umap", items) is None  # not computed in this bundle


def test_a_damaged_projection_file_is_ignored(bundle, tmp_path):
    root, _ = bundle
    info = RunStore(root).list_runs()[0]
    copy = tmp_path / info.run_id
    shutil.copytree(info.path, copy)
    data = (copy / "projection_pca.npz").read_bytes()
    (copy / "projection_pca.npz").write_bytes(data[: len(data) // 2])
    items = RunStore(root).load(info.run_id).embeddings()[1]
    assert bd.load_projection(copy, "pca", items) is None


def test_umap_interpolation_places_vectors_near_their_items():
    rng = np.random.default_rng(1)
    # 8 clusters of 25 items in 16-D, each drawn around its own spot on the 2-D map (as UMAP would)
    centers, spots = rng.normal(size=(8, 16)), rng.uniform(-10, 10, size=(8, 2))
    label = np.repeat(np.arange(8), 25)
    items = (centers[label] + 0.1 * rng.normal(size=(200, 16))).astype(np.float32)
    coords = (spots[label] + 0.3 * rng.normal(size=(200, 2))).astype(np.float32)
    known = rng.normal(size=(5, 16)).astype(np.float32)
    proj = bd.StoredProjection("umap", coords, items, n_neighbors=15,
                               known={stored_maps._vec_key(known): np.full((5, 2), 3.0, np.float32)})
    # a new vector of a cluster (any norm: the map is cosine) lands on that cluster's spot
    new = (centers + 0.1 * rng.normal(size=(8, 16))) * rng.uniform(0.5, 3, size=(8, 1))
    got = proj.transform(new)
    assert np.linalg.norm(got - spots, axis=1).max() < 1.0
    assert np.isfinite(proj.transform(np.zeros((2, 16), np.float32))).all()
    np.testing.assert_array_equal(proj.transform(known), np.full((5, 2), 3.0))  # stored exact placements
    assert proj.transform(np.zeros((0, 16))).shape == (0, 2)
    with pytest.raises(ValueError, match="dimensions"):
        proj.transform(np.zeros((1, 3)))


def test_map_job_uses_the_stored_maps(bundle, monkeypatch):
    from cnsdiff_core import explore as ex
    from cnsdiff_core.explore import maps

    root, _ = bundle
    run = RunStore(root).load(RunStore(root).list_runs()[0].run_id)
    items = run.embeddings()[1]
    monkeypatch.setattr(maps, "fit_item_map", lambda *a, **k: pytest.fail("refitted a stored map"))
    job = ex.ItemMaps(items, run.path)
    assert isinstance(job.pca, bd.StoredProjection) and job.status is None and not job.precomputed
    # with a stored UMAP the job is ready at once and never starts a thread
    coords = np.asarray(job.pca.embedding_ * 2, np.float32)
    umap_file = run.path / "projection_umap.npz"
    np.savez(umap_file, method=np.array("umap"), fingerprint=np.array(bd.fingerprint(items)), coords=coords,
             n_neighbors=np.array(15))
    try:
        job = ex.ItemMaps(items, run.path)
        job.start_umap()
        assert job.status == "finished" and job.precomputed and job.task is None
        assert job.effective("umap") == "umap" and job.coords("umap").shape == (items.shape[0], 2)
    finally:
        umap_file.unlink()


def test_an_older_runs_umap_is_fitted_once_and_stored_for_every_later_session(bundle, tmp_path, monkeypatch):
    """A run trained before maps were stored with runs: the first page that asks fits UMAP in the
    background, stores it in the run folder, and a new process (a fresh ItemMaps) reuses it."""
    from cnsdiff_core import explore as ex
    from cnsdiff_core.explore import maps
    from cnsdiff_core.projection import fit_item_map

    root, _ = bundle
    src = RunStore(root).load([i for i in RunStore(root).list_runs() if i.config.get("sampler") == "cnsdiff"][0].run_id)
    shutil.copytree(src.path, tmp_path / "runs" / src.run_id)
    run = RunStore(tmp_path / "runs").load(src.run_id)
    items = run.embeddings()[1]
    fits = []

    def quick_fit(emb, method, **kw):  # a PCA stands in for the numba UMAP: the storing is the point
        fits.append(method)
        proj = fit_item_map(emb, "pca")
        proj.n_neighbors = 15
        return proj

    monkeypatch.setattr(maps, "fit_item_map", quick_fit)
    monkeypatch.setattr(maps, "warm_umap", lambda: None)
    first = ex.ItemMaps(items, run.path)
    assert not first.precomputed and first.status is None
    first.start_umap()
    deadline = time.time() + 60
    while first.status != "finished" and time.time() < deadline:
        time.sleep(0.05)
    assert first.status == "finished" and "stored with the run" in first.task.message
    assert (run.path / "projection_umap.npz").is_file() and fits == ["umap"]
    later = ex.ItemMaps(items, run.path)  # another session or process
    later.start_umap()
    assert later.precomputed and later.task is None and fits == ["umap"]
    np.testing.assert_allclose(later.coords("umap"), first.coords("umap"), atol=1e-6)
    # the run's synthesized negatives keep their exact placement
    from cnsdiff_core.diagnostics import parse_series_key
    from cnsdiff_core.samplers import SYNTHESIZING

    neg = next(a["vec"] for k, a in run.negatives("best").items()
               if not k.startswith("_") and "vec" in a and parse_series_key(k)[0] in SYNTHESIZING)
    np.testing.assert_allclose(later.projection("umap").transform(neg), first.projection("umap").transform(neg),
                               atol=1e-5)


def test_a_map_that_cannot_be_stored_stays_in_memory(bundle, tmp_path, monkeypatch):
    from cnsdiff_core import explore as ex
    from cnsdiff_core.explore import maps
    from cnsdiff_core.projection import fit_item_map

    root, _ = bundle
    run = RunStore(root).load(RunStore(root).list_runs()[0].run_id)
    monkeypatch.setattr(maps, "fit_item_map", lambda emb, method, **kw: fit_item_map(emb, "pca"))
    monkeypatch.setattr(maps, "warm_umap", lambda: None)
    monkeypatch.setattr(maps, "store_projection", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space")))
    job = ex.ItemMaps(run.embeddings()[1], run.path)
    job.start_umap()
    deadline = time.time() + 60
    while job.status != "finished" and time.time() < deadline:
        time.sleep(0.05)
    assert job.status == "finished" and "stored" not in job.task.message
    assert job.effective("umap") == "umap" and not (run.path / "projection_umap.npz").exists()


def test_read_only_every_page_says_so_and_offers_no_training(bundle, monkeypatch):
    from streamlit.testing.v1 import AppTest

    root, _ = bundle
    monkeypatch.setenv("CNSDIFF_RUNS", str(root))
    monkeypatch.setenv("CNSDIFF_READ_ONLY", "1")
    manifest = bd.read_manifest(root)
    cns = next(r["run_id"] for r in manifest["runs"] if r["sampler"] == "cnsdiff" and r["preset"] == "tuned")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    at.query_params.update({"run": cns})  # the denoising page shows CNSDiff runs only
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.button(key="demo_run").disabled
    # the bundle's generated world is offered in the sidebar of a read-only app
    from ui import data

    assert data.dataset_label(TINY) in at.sidebar.selectbox(key="dataset").options
    with pytest.raises(ValueError):
        at.switch_page("pages/3_train.py")  # not even a page of the app
    pages = ["pages/1_home.py", "pages/2_data_and_shift.py", "pages/4_compare_runs.py", "pages/5_denoising.py",
             "pages/6_negatives_map.py", "pages/7_fhn_hardness.py", "pages/8_schedule_lab.py", "pages/9_tune.py"]
    for page in pages:
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert any("read-only workshop mode" in i.value for i in at.info), page
        assert any("read-only" in c.value for c in at.sidebar.caption), page
        keys = {b.key for b in at.button}
        assert not {k for k in keys if k and (k.startswith("resume_") or k in ("lab_train", "demo_run"))} - {"demo_run"}
        if page == "pages/2_data_and_shift.py":
            assert at.button(key="gen_button").disabled
            assert at.text_input(key="import_path").disabled and at.file_uploader(key="import_upload").disabled
        if page in ("pages/5_denoising.py", "pages/6_negatives_map.py"):
            assert at.get("plotly_chart"), page  # drawn from the bundle's stored maps
        if page == "pages/9_tune.py":  # studies are browsed, never started
            assert "tune_start" not in keys
        if page == "pages/8_schedule_lab.py":
            assert "lab_train" not in keys
            assert any("training is switched off" in c.value for c in at.caption)


def test_read_only_links_cannot_generate_worlds(bundle, monkeypatch):
    from streamlit.testing.v1 import AppTest

    root, _ = bundle
    monkeypatch.setenv("CNSDIFF_RUNS", str(root))
    monkeypatch.setenv("CNSDIFF_READ_ONLY", "1")
    for link, ok in (("synthetic:n_users=3000,n_items=3000", False), (TINY, True)):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
        at.query_params.update({"dataset": link})
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert (at.session_state["dataset"] == link) == ok
        if not ok:
            assert any("precomputed datasets" in w.value for w in at.sidebar.warning)


@pytest.mark.slow
def test_full_bundle_with_umap(tmp_path):
    """The real thing at the demo budget on this machine (minutes)."""
    lines = list(bd.precompute_bundle(runs_dir=tmp_path / "workshop"))
    manifest = bd.read_manifest(tmp_path / "workshop")
    assert not any(r["error"] for r in manifest["runs"]), lines
    for r in manifest["runs"]:
        assert r["projections"] == ["pca", "umap"]
    load_dataset(bd.BUNDLE_DATASETS[1])

"""AppTest per explore page (Denoising, Negatives map, FHN & hardness, Noise schedule lab) over
tiny runs trained into a temporary run store, including the Plotly figure specs the pages send
(animation frames of the denoising map, overlay layers and distance-sized markers of the map)."""
import base64
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from cnsdiff_core import explore as ex
from cnsdiff_core.config import preset_config
from cnsdiff_core.data import load_dataset
from cnsdiff_core.runs import RunStore
from cnsdiff_core.recorder import train_and_store

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
    """The app's frame (app.py: navigation, sidebar), switched to `page` as a user would; the
    caller's next run() draws the page."""
    at = AppTest.from_file(str(PAGES.parent / "app.py"), default_timeout=60)
    if run_id:
        at.session_state["run_id"] = run_id  # the sidebar's current run
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at.switch_page(f"pages/{page}")


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def texts(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


def chart_spec(at: AppTest, key: str) -> dict:
    """The Plotly figure JSON ({data, layout, frames}) that the page sent for st.plotly_chart(key=...)."""
    charts = {c.key: c for c in at.get("plotly_chart")}
    assert key in charts, sorted(k for k in charts if k)
    return json.loads(charts[key].proto.spec)


def arr(value) -> np.ndarray:
    """A data array of a figure spec: a list, or plotly's typed-array encoding {dtype, bdata[, shape]}."""
    if isinstance(value, dict) and "bdata" in value:
        out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        return out.reshape(value["shape"]) if "shape" in value else out
    return np.asarray(value)


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
    steps = at.radio(key="den_s").options  # the run's hardness steps, as "s = 2", ...
    values = sorted(int(str(o).split("=")[-1]) for o in steps)
    largest = values[-1]
    at.radio(key="den_s").set_value(largest).run()  # frame 3 is a forward step of the longest chain
    no_exception(at)
    assert r"z_{3} = \sqrt{\bar\alpha_{3}}" in at.latex[0].value
    at.button(key="den_next").click().run()
    no_exception(at)
    assert at.slider(key="den_step").value == 4
    last = at.slider(key="den_step").max
    at.slider(key="den_step").set_value(last).run()
    no_exception(at)
    assert r"c_1\,\hat z_0 + c_2" in at.latex[0].value  # the last frame is a reverse update
    assert "Different steps give different candidates" in texts(at.caption)
    at.radio(key="den_s").set_value(values[0]).run()
    no_exception(at)
    at.toggle(key="den_exclude").set_value(True).run()
    no_exception(at)


def test_denoising_chart_animates_the_trajectories_on_the_client(store):
    """The figure sent to the browser: items, the positive, a path and a head per hardness step s,
    and one Plotly frame per slider position that redraws only the trajectory traces."""
    at = app("5_denoising.py", store["ids"]["demo"], den_umap=False)
    at.run()
    no_exception(at)
    steps = sorted(int(str(o).split("=")[-1]) for o in at.radio(key="den_s").options)
    n_frames, frame = int(at.slider(key="den_step").max) + 1, int(at.slider(key="den_step").value)
    spec = chart_spec(at, "den_chart")
    paths, heads = [f"s={s} path" for s in steps], [f"s={s} now" for s in steps]
    assert [t["name"] for t in spec["data"]] == ["items", "positive z₀"] + paths + heads
    assert len(arr(spec["data"][0]["x"])) == load_dataset(WORLD.format(c=0.5)).n_items
    moving = list(range(2, 2 + 2 * len(steps)))

    frames = spec["frames"]
    assert [f["name"] for f in frames] == [str(k) for k in range(n_frames)]
    lengths = [len(arr(t["x"])) for t in frames[-1]["data"][:len(steps)]]  # each chain's length
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1] == n_frames  # larger s, longer chain
    for k, f in enumerate(frames):
        assert f["traces"] == moving  # the item cloud is never re-sent
        assert [t["name"] for t in f["data"]] == paths + heads
        for j, length in enumerate(lengths):
            px, py = arr(f["data"][j]["x"]), arr(f["data"][j]["y"])
            hx, hy = arr(f["data"][len(steps) + j]["x"]), arr(f["data"][len(steps) + j]["y"])
            assert len(px) == min(k + 1, length)  # the path grows one state per frame, then stops
            assert np.allclose([px[-1], py[-1]], [hx[0], hy[0]])  # the head sits at the path's end
    assert frames[0]["data"][0]["x"] != frames[-1]["data"][0]["x"]

    menu = spec["layout"]["updatemenus"][0]
    play = next(b for b in menu["buttons"] if "Play" in b["label"])
    assert play["method"] == "animate" and play["args"][0] is None  # None = every frame in order
    assert play["args"][1]["frame"]["duration"] > 0 and play["args"][1]["fromcurrent"]
    assert any("Pause" in b["label"] and b["method"] == "animate" for b in menu["buttons"])
    slider = spec["layout"]["sliders"][0]
    assert [step["args"][0] for step in slider["steps"]] == [[str(k)] for k in range(n_frames)]
    assert slider["active"] == frame == n_frames - 1  # the page opens on the final candidates
    def points(traces):
        return [(t["name"], arr(t["x"]).tolist(), arr(t["y"]).tolist()) for t in traces]

    assert points(spec["data"][2:]) == points(frames[frame]["data"])  # the drawn traces are that frame
    for j, t in enumerate(spec["data"][2:2 + len(steps)]):  # a path holds its whole chain's hover texts
        assert len(t["hovertext"]) == lengths[j] and len(t["marker"]["symbol"]) == lengths[j]
        assert all("hovertext" not in f["data"][j] for f in frames)  # ... sent once, not per frame

    at.slider(key="den_step").set_value(2).run()  # the page's frame slider redraws the static traces
    no_exception(at)
    moved = chart_spec(at, "den_chart")
    assert moved["layout"]["sliders"][0]["active"] == 2
    assert points(moved["data"][2:]) == points(frames[2]["data"]) and moved["frames"] == frames


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


def test_negatives_map_chart_has_a_layer_per_sampler_sized_by_distance_to_the_nearest_item(store):
    from ui import theme

    at = app("6_negatives_map.py", store["ids"]["demo"], map_umap=False)
    at.run()
    no_exception(at)
    layers = at.multiselect(key="map_layers").value
    steps = sorted({ex.sampler_key(x)[1] for x in layers if ex.sampler_key(x)[1] >= 0})
    spec = chart_spec(at, "map_chart")
    traces = {t["name"]: t for t in spec["data"]}
    assert spec["data"][0]["name"] == "items"
    assert len(arr(spec["data"][0]["x"])) == load_dataset(WORLD.format(c=0.5)).n_items
    # one user is shown: their training positives and one overlay trace per sampler layer
    assert "training positive" in traces and set(layers) <= set(traces)
    synthesized = [x for x in layers if "@" in x or x in ex.SYNTHESIZING]
    real = [x for x in layers if x not in synthesized]
    assert {"mixgcf", "cnsdiff"} <= set(synthesized) and {"rns", "dns"} <= set(real)

    # marker size = 6 + 22 * (distance to the nearest item) / the largest such distance
    dist, size = {}, {}
    for name in layers:
        t = traces[name]
        assert t["marker"]["symbol"] == theme.sampler_style(name, steps)[1]
        size[name] = arr(t["marker"]["size"]).astype(float)
        assert size[name].shape == arr(t["x"]).shape and len(size[name]) >= 1  # one size per point
        marked = ["dist to nearest item/‖pos‖" in h for h in t["hovertext"]]
        assert all(marked) if name in synthesized else not any(marked)
        dist[name] = np.array([float(h.split("dist to nearest item/‖pos‖ ")[1].split()[0]) if m else 0.0
                               for h, m in zip(t["hovertext"], marked)])
    d_max = max(d.max() for d in dist.values())
    assert d_max > 0
    for name in layers:
        tol = 22 * 0.001 / d_max + 1e-3  # the hover text rounds both distances to 3 decimals
        assert np.allclose(size[name], 6 + 22 * dist[name] / d_max, atol=tol), name
    assert all(np.allclose(size[x], 6.0) for x in real)  # picked real items: distance 0
    assert max(size[x].max() for x in synthesized) == pytest.approx(28.0, abs=1e-3)
    assert traces["training positive"]["marker"]["size"] == 11  # positives keep a fixed size

    at.toggle(key="map_size_nn").set_value(False).run()
    no_exception(at)
    flat = {t["name"]: t for t in chart_spec(at, "map_chart")["data"]}
    assert all(flat[x]["marker"]["size"] == 8 for x in layers)  # no distance encoding: one size

    at.multiselect(key="map_layers").set_value(["rns", "cnsdiff@" + str(steps[0])]).run()
    no_exception(at)
    names = [t["name"] for t in chart_spec(at, "map_chart")["data"]]
    assert "rns" in names and f"cnsdiff@{steps[0]}" in names and "mixgcf" not in names


def test_negatives_map_for_a_baseline_run(store):
    at = app("6_negatives_map.py", store["ids"]["rns"], map_umap=False)
    at.run()
    no_exception(at)
    layers = at.multiselect(key="map_layers").value
    assert "rns" in layers and not any(ex.sampler_key(x)[1] >= 0 for x in layers)  # no CNSDiff steps in an RNS run


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
    # by default: the trained-on negatives only, each with a Wilson band and (vectors) its matched null
    assert "cnsdiff" in at.multiselect(key="fhn_series").value
    assert not any("@" in x for x in at.multiselect(key="fhn_series").value)
    spec = chart_spec(at, "fhn_lines")
    bands = [t for t in spec["data"] if t.get("fill") == "toself"]
    assert len(bands) >= 3 and any("matched null" in (t.get("name") or "") for t in spec["data"])
    table = next(df.value for df in at.dataframe if "collapse" in df.value.columns)
    assert {"fhn", "ci", "collapse", "null"} <= set(table.columns) and table["collapse"].between(0, 1).all()
    at.toggle(key="fhn_premix").set_value(True).run()
    assert "cnsdiff@premix" in at.multiselect(key="fhn_series").value
    dashed = [t for t in chart_spec(at, "fhn_lines")["data"] if (t.get("line") or {}).get("dash") == "dash"]
    assert any(t["name"].startswith("cnsdiff@premix") for t in dashed)
    at.radio(key="fhn_metric").set_value("own_positive").run()
    at.radio(key="fhn_metric").set_value("null_ratio").run()
    no_exception(at)
    at.radio(key="fhn_metric").set_value("fhn_true").run()
    at.radio(key="fhn_metric").set_value("fhn_lift").run()
    at.radio(key="fhn_kind").set_value("violin").run()
    at.toggle(key="fhn_steps").set_value(False).run()
    no_exception(at)
    assert "FHN vs confounding strength" in texts(at.subheader)  # worlds at 0.5 and 0.9
    # the shipped causal ablation (results/causal_ablation.csv) is charted with error bars
    assert "Does the causal term help where the truth is known?" in texts(at.subheader)
    at.radio(key="fhn_abl_metric").set_value("fhn_true").run()
    no_exception(at)
    abl = chart_spec(at, "fhn_ablation")
    assert {"none", "kl", "env-variance"} <= {t["name"] for t in abl["data"]} and "error_y" in abl["data"][0]


# --- Noise schedule lab -----------------------------------------------------------------------------------------
def test_schedule_lab_invalid_schedule_shows_an_error_not_an_exception(store):
    at = app("8_schedule_lab.py", store["ids"]["demo"])
    at.run()
    no_exception(at)
    assert not at.error
    at.number_input(key="lab_a_bmin").set_value(0.5).run()
    no_exception(at)
    assert "Schedule A" in texts(at.error) and "beta_min <= beta_max" in texts(at.error)
    at.number_input(key="lab_a_bmin").set_value(1e-4).run()
    titles = [a["text"] for a in chart_spec(at, "lab_curves")["layout"]["annotations"]]
    assert any("loss weight" in t for t in titles)  # the per-t weights the denoiser is trained with
    at.selectbox(key="lab_a_weighting").set_value("snr-diff-ref").run()
    no_exception(at)
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
    assert job.status == "finished" and job.eval_after < job.eval_before
    assert job.report["step"].tolist() == [10, 14, 18, -1]


def test_schedule_lab_starts_a_full_run_with_the_schedule(store):
    from ui import tasks

    at = app("8_schedule_lab.py", store["ids"]["demo"])
    at.run()
    at.radio(key="lab_refit_which").set_value("B").run()
    at.button(key="lab_train").click().run()
    no_exception(at)
    assert "Training started" in texts(at.success)
    job = next(j for j in tasks.job_manager().jobs() if j["tag"] == "lab")
    assert job["samplers"] == ["cnsdiff"]
    deadline = time.time() + 60
    while tasks.job_manager().get(job["job_id"])["status"] in ("queued", "running") and time.time() < deadline:
        time.sleep(0.5)
    done = tasks.job_manager().get(job["job_id"])
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


def test_a_tuning_trials_run_opens_on_the_fhn_page_and_the_map(tmp_path, monkeypatch):
    """A trial measures its probe at the first and the selected epoch only (diagnose_every=0): the
    FHN page draws those epochs and the map opens the selected one, without an exception."""
    monkeypatch.setenv("CNSDIFF_RUNS", str(tmp_path / "trial-runs"))
    cfg = preset_config("demo", sampler="cnsdiff", dataset=WORLD.format(c=0.5), diagnose_every=0,
                        **(SMALL | {"epochs": 4}))
    run_id, res = train_and_store(cfg, RunStore(tmp_path / "trial-runs"))
    measured = sorted({r["epoch"] for r in res.diagnostics})
    assert measured == sorted({1, res.best_epoch})
    at = app("7_fhn_hardness.py", run_id)
    at.run()
    no_exception(at)
    xs = {float(x) for t in chart_spec(at, "fhn_lines")["data"] if t.get("fill") != "toself"
          for x in arr(t.get("x", []))}
    assert xs and xs <= {float(e) for e in measured}
    at = app("6_negatives_map.py", run_id)
    at.run()
    no_exception(at)


# --- UMAP (numba compile: slow) -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_negatives_map_swaps_in_umap_when_ready(store):
    from ui import maps

    at = app("6_negatives_map.py", store["ids"]["demo"], map_umap=True)
    at.run()
    no_exception(at)
    job = maps.map_job(store["ids"]["demo"])
    deadline = time.time() + 300
    while job.status in ("queued", "running") and time.time() < deadline:
        time.sleep(1)
    assert job.status == "finished", job.task.message
    at.run()
    assert at.radio(key="map_method").options == ["PCA", "UMAP (cosine)"]
    at.radio(key="map_method").set_value("umap").run()
    no_exception(at)


# --- interactive speed (issue 14): behaviour, not timings ----------------------------------------------
def test_denoising_frame_controls_rerun_only_a_fragment(store):
    """The frame slider, ◀ ▶, the map and the frame's numbers are one st.fragment: a frame step
    reruns that fragment, not the page (AppTest reruns the whole script, so the fragment is
    checked where Streamlit registers it)."""
    from ui import profile

    at = app("5_denoising.py", store["ids"]["demo"], den_umap=False)
    at.run()
    no_exception(at)
    wrapped = {c.cell_contents.__name__ for f in at._fragment_storage._fragments.values()
               for c in (f.__closure__ or ()) if callable(c.cell_contents) and hasattr(c.cell_contents, "__name__")}
    assert "frame_view" in wrapped, wrapped
    profile.LAST.pop("denoising frame view", None)
    at.slider(key="den_step").set_value(1).run()
    no_exception(at)
    assert "denoising frame view" in profile.LAST  # the frame view ran inside the timed section
    assert chart_spec(at, "den_chart")["layout"]["sliders"][0]["active"] == 1


def test_denoising_figure_spec_is_built_once_per_run_and_parameters(store, monkeypatch):
    import ui.figures as figs
    from ui import maps

    maps._trajectory_spec.clear()
    calls = []
    real = figs.trajectory_spec
    monkeypatch.setattr(figs, "trajectory_spec", lambda *a, **k: calls.append(k) or real(*a, **k))
    first = app("5_denoising.py", store["ids"]["demo"], den_umap=False)
    first.run()
    no_exception(first)
    for step in (0, 3, 5):  # frame steps reuse the spec
        first.slider(key="den_step").set_value(step).run()
        no_exception(first)
    second = app("5_denoising.py", store["ids"]["demo"], den_umap=False)  # another session, same choices
    second.run()
    no_exception(second)
    assert len(calls) == 1
    assert chart_spec(second, "den_chart")["frames"] == chart_spec(first, "den_chart")["frames"]
    second.toggle(key="den_zoom").set_value(True).run()  # another parameter: a new spec
    no_exception(second)
    assert len(calls) == 2 and calls[-1]["zoom_items"] is True


def test_profile_env_var_prints_page_time_and_top_costs(store, monkeypatch, capsys):
    import io

    from ui import profile

    monkeypatch.setenv("CNSDIFF_PROFILE_PAGES", "5")
    at = app("6_negatives_map.py", store["ids"]["demo"], map_umap=False)
    at.run()
    no_exception(at)
    err = capsys.readouterr().err
    assert "[cnsdiff profile] page Negatives map:" in err and " ms" in err
    assert "cumtime" in err and "6_negatives_map.py" in err  # the cProfile table of the page
    monkeypatch.setenv("CNSDIFF_PROFILE_PAGES", "0")
    buf = io.StringIO()
    with profile.page_timer("Off", stream=buf):
        pass
    assert buf.getvalue() == ""


def test_map_figure_by_environment_sends_one_webgl_trace_per_environment():
    """Coloured by environment, the item cloud is one Scattergl per environment (a colour per trace,
    not a colour string per item); every item is in exactly one trace and a selection of a point
    maps back to its own row; popularity travels as a typed array read by the hover template."""
    import plotly.io as pio

    from ui import figures

    rng = np.random.default_rng(0)
    n = 40
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(n)], "title": [""] * n,
                          "popularity": rng.integers(1, 99, n), "x": rng.normal(size=n), "y": rng.normal(size=n),
                          "environment": rng.choice(["q1", "q2", "q3"], n)},
                         index=np.arange(100, 100 + n))
    items["log_popularity"] = np.log10(1 + items["popularity"])
    overlay = pd.DataFrame({"layer": ["rns"], "x": [0.0], "y": [0.0], "nn_dist": [0.0], "hover": ["rns · i1"]})
    fig, registry = figures.map_figure(items, overlay, "environment", False, [])
    spec = json.loads(pio.to_json(fig))
    clouds = [t for t in spec["data"] if t["name"].startswith("items")]
    assert [t["name"] for t in clouds] == ["items · q1", "items · q2", "items · q3"]
    assert all(t["type"] == "scattergl" and isinstance(t["marker"]["color"], str) for t in clouds)
    rows = np.concatenate([registry[i][1] for i in range(len(clouds))])
    assert sorted(rows) == list(items.index)
    for i, t in enumerate(clouds):
        xs = arr(t["x"])
        assert np.allclose(xs, items.loc[registry[i][1], "x"].to_numpy(np.float32))
        assert (arr(t["customdata"]) == items.loc[registry[i][1], "popularity"].to_numpy()).all()
        assert "%{customdata}" in t["hovertemplate"] and t["name"][-2:] in t["hovertemplate"]
    picked = figures.selected_rows({"selection": {"points": [{"curve_number": 1, "point_index": 0}]}}, registry)
    assert picked["items"] == [registry[1][1][0]]


def test_cached_figures_come_back_as_finished_specs():
    """cache.built keeps a figure as its encoded spec: a rerun that draws it again neither validates
    nor re-encodes it (the FHN page's reruns spent most of their time there)."""
    import numpy as np
    import plotly.graph_objects as go

    from ui import cache
    from ui.figures.maps import SpecFigure

    fig = go.Figure(go.Scatter(x=np.arange(4.0), y=np.array([1.0, 3.0, 2.0, 4.0])))
    out = cache.built("test_spec", (time.time(),), lambda: fig)
    assert isinstance(out, SpecFigure) and out.to_dict()["data"][0]["type"] == "scatter"
    assert out.to_dict() == fig.to_dict()
    table, spec = cache.built("test_spec_pair", (time.time(),), lambda: ("rows", fig))
    assert table == "rows" and isinstance(spec, SpecFigure)


def test_the_spec_encoder_writes_what_plotlys_own_encoder_writes():
    import copy

    import numpy as np
    from _plotly_utils.utils import convert_to_base64

    from ui.figures.maps import _encode_arrays

    rng = np.random.default_rng(0)
    spec = {"data": [{"x": rng.normal(size=7).astype(np.float32), "y": rng.normal(size=7),
                      "marker": {"size": np.arange(5, dtype=np.int64), "color": ["red", "blue"]},
                      "customdata": rng.normal(size=(3, 2)), "text": "a", "ids": np.arange(3, dtype=np.int32)[::-1],
                      "empty": np.zeros(0, np.float32), "big": np.array([2 ** 40], dtype=np.int64)}],
            "layout": {"xaxis": {"range": np.array([0.0, 1.0])}, "height": 300},
            "frames": [{"data": [{"x": np.arange(4, dtype=np.float32)[::2]}]}]}
    ours, theirs = _encode_arrays(copy.deepcopy(spec)), copy.deepcopy(spec)
    convert_to_base64(theirs)

    def same(a, b):
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            return np.array_equal(a, b)
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return a == b

    assert same(ours, theirs)
    assert ours["data"][0]["x"]["dtype"] == "f4" and ours["data"][0]["marker"]["size"]["dtype"] == "i1"


def test_chain_lines_show_every_step_and_measure(store):
    import base64

    import numpy as np

    from cnsdiff_core import explore as ex
    from cnsdiff_core.data import load_dataset
    from ui.figures.maps import CHAIN_MEASURES, chain_lines_figure
    from ui.theme import step_colors

    run = store["store"].load(store["ids"]["demo"])
    cfg = run.config
    data = load_dataset(cfg.dataset, cfg.shift, seed=cfg.data_seed)
    user_emb, item_emb = run.embeddings()
    user, pos = (int(v) for v in data.train[0])
    traj = ex.denoising_trajectories(cfg, ex.run_denoiser(run), user_emb, item_emb, data, user, pos, seed=0)
    spec = chain_lines_figure(traj, step_colors(traj.steps)).to_dict()
    assert len(spec["data"]) == len(CHAIN_MEASURES) * len(traj.steps)
    assert {t["yaxis"] for t in spec["data"]} == {"y", "y2", "y3"}
    assert [t["name"] for t in spec["data"] if t["showlegend"]] == [f"s={s}" for s in traj.steps]
    for i, (col, _) in enumerate(CHAIN_MEASURES):  # each panel's first line is step s's values by frame
        trace = spec["data"][i * len(traj.steps)]
        part = traj.table[traj.table["s"] == traj.steps[0]].sort_values("frame", kind="stable")
        ys = np.frombuffer(base64.b64decode(trace["y"]["bdata"]), dtype=np.float64)
        np.testing.assert_allclose(ys, part[col].to_numpy(float))


def test_denoising_chain_lines_are_drawn_only_when_their_panel_is_opened(store):
    at = app("5_denoising.py", store["ids"]["demo"], den_umap=False)
    at.run()
    no_exception(at)
    assert "den_lines" not in {c.key for c in at.get("plotly_chart")}  # closed: not built, not sent
    at.session_state["den_chain_open"] = True  # what a click on the expander's header sets
    at.run()
    no_exception(at)
    spec = chart_spec(at, "den_lines")
    assert {t["yaxis"] for t in spec["data"]} == {"y", "y2", "y3"}

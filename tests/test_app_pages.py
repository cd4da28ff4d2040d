"""App tests with Streamlit's AppTest: the frame (app.py, st.navigation) is run and pages are
opened with switch_page, as a user would. Every test uses a temporary run store."""
import json
import time
from dataclasses import fields
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
MY_PAGES = ["pages/1_home.py", "pages/2_data_and_shift.py", "pages/3_train.py", "pages/4_compare_runs.py"]
TITLES = {"pages/1_home.py": "CNSDiff explorer", "pages/2_data_and_shift.py": "Data & shift",
          "pages/3_train.py": "Train", "pages/4_compare_runs.py": "Compare runs"}


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    """One run store for the module, with two quick RNS runs trained directly by the engine."""
    from cnsdiff_core.config import preset_config
    from cnsdiff_core.runs import RunStore
    from cnsdiff_core.recorder import train_and_store

    root = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("CNSDIFF_RUNS", str(root))
    mp.delenv("CNSDIFF_READ_ONLY", raising=False)
    ids = []
    for seed in (0, 1):
        cfg = preset_config("demo", sampler="rns", epochs=1, probe_triples=64, seed=seed, device="cpu")
        ids.append(train_and_store(cfg, RunStore(root))[0])
        time.sleep(1.1)  # distinct creation times: the newer run is the sidebar's default
    yield root, ids
    mp.undo()


def open_page(page: str | None = None, query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    if query:
        at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if page and page != MY_PAGES[0]:  # Home is the default page the app opens on
        at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def wait_until(at: AppTest, done, timeout: float = 150.0, what: str = "") -> AppTest:
    """Rerun the app (as the progress fragment would) until done() holds."""
    end = time.time() + timeout
    while time.time() < end:
        if done():
            return at
        time.sleep(0.5)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def table_with(at: AppTest, column: str):
    """The first st.dataframe whose frame has this column (display tables carry no key in AppTest)."""
    for df in at.dataframe:
        if column in df.value.columns:
            return df.value
    raise AssertionError(f"no table with a {column!r} column")


def store_infos(root):
    from cnsdiff_core.runs import RunStore

    return RunStore(root).list_runs()


@pytest.mark.parametrize("page", MY_PAGES)
def test_each_page_renders_on_the_default_data(store_root, page):
    at = open_page(page)
    assert at.title[0].value == TITLES[page]
    assert at.session_state["dataset"] == "sample" and at.session_state["shift"] == "exposure"
    assert "read-only" not in " ".join(i.value for i in at.info)


def test_sidebar_and_url_carry_the_global_choices(store_root):
    root, ids = store_root
    at = open_page()
    boxes = {s.key: s for s in at.sidebar.selectbox}
    assert boxes["dataset"].value == "sample"
    assert "sample" in boxes["dataset"].options and "synthetic" not in boxes["dataset"].options
    assert boxes["shift"].options == ["popularity", "temporal", "exposure", "random"]
    assert boxes["run_id"].value == ids[-1]  # newest finished run
    assert at.query_params == {"dataset": "sample", "shift": "exposure", "run": ids[-1]}
    assert any("Device" in c.value and "cpu" in c.value.lower() or "cuda" in c.value for c in at.sidebar.caption)


def test_query_params_restore_dataset_shift_and_run(store_root):
    root, ids = store_root
    at = open_page("pages/2_data_and_shift.py", query={"dataset": "sample", "shift": "popularity", "run": ids[0]})
    assert at.session_state["shift"] == "popularity"
    assert at.session_state["run_id"] == ids[0]  # not the default (newest) run
    assert {s.key: s.value for s in at.sidebar.selectbox}["run_id"] == ids[0]
    assert at.query_params["run"] == ids[0] and at.query_params["shift"] == "popularity"


def test_query_params_restore_a_generated_world(store_root):
    world = "synthetic:n_users=200,n_items=500,confounding=0.5,seed=1"
    at = open_page("pages/2_data_and_shift.py", query={"dataset": world, "shift": "temporal"})
    assert at.session_state["dataset"] == world and at.session_state["shift"] == "temporal"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Users"] == "200" and metrics["Items"] == "500"


def test_a_bad_link_warns_and_falls_back(store_root):
    at = open_page(query={"dataset": "no-such-data", "run": "not-a-run"})
    assert at.session_state["dataset"] == "sample"
    text = " ".join(w.value for w in at.sidebar.warning)
    assert "no-such-data" in text and "not-a-run" in text


def test_data_page_stats_long_tail_and_shift(store_root):
    at = open_page("pages/2_data_and_shift.py")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Users"] == "600" and metrics["Items"] == "800"
    assert float(metrics["KL(OOD test ‖ train)"]) > float(metrics["KL(IID test ‖ train)"])  # exposure shift
    from ui import data
    frame = data.popularity_frame("sample", "exposure")
    assert set(frame["split"]) == {"train", "test_iid", "test_ood"}
    assert (frame.groupby("split")["count"].apply(lambda c: c.is_monotonic_decreasing)).all()


def test_generate_a_synthetic_world_selects_it(store_root):
    at = open_page("pages/2_data_and_shift.py")
    at.slider(key="gen_users").set_value(200)
    at.slider(key="gen_items").set_value(500)
    at.slider(key="gen_confounding").set_value(0.9)
    at.button(key="gen_button").click().run()
    assert not at.exception
    name = "synthetic:n_users=200,n_items=500,confounding=0.9,seed=0"
    assert at.session_state["dataset"] == name
    assert at.query_params["dataset"] == name
    assert "synthetic · n_users=200,n_items=500,confounding=0.9,seed=0" in \
        {s.key: s for s in at.sidebar.selectbox}["dataset"].options  # shown with its label
    assert {m.label: m.value for m in at.metric}["Users"] == "200"


def test_import_a_local_file_shows_verdicts_and_selects_it(store_root):
    at = open_page("pages/2_data_and_shift.py")
    at.text_input(key="import_path").set_value(str(ROOT / "sample_data" / "examples")).run()
    verdicts = table_with(at, "message")
    assert set(verdicts["file"]) >= {"ratings.csv", "ratings.inter", "ratings.txt"}
    assert (verdicts.set_index("file").loc["ratings.csv", "ok"]).startswith("✅")
    target = ROOT / "sample_data" / "examples" / "ratings.csv"
    at.text_input(key="import_path").set_value(str(target)).run()
    at.button(key="import_path_use").click().run()
    assert not at.exception
    assert at.session_state["dataset"] == str(target.resolve())
    assert at.session_state["shift"] == "temporal"  # the file has timestamps
    assert {m.label: m.value for m in at.metric}["Users"] == "40"


def test_import_refuses_paths_outside_the_allowed_folders(store_root):
    at = open_page("pages/2_data_and_shift.py")
    at.text_input(key="import_path").set_value("/etc/passwd").run()
    assert any("outside the folders" in e.value for e in at.error)


def test_upload_shows_a_verdict_per_file(store_root):
    at = open_page("pages/2_data_and_shift.py")
    good = (ROOT / "sample_data" / "examples" / "ratings.csv").read_bytes()
    at.file_uploader(key="import_upload").set_value([("mine.csv", good, "text/csv"),
                                                     ("broken.csv", b"\x00\x01 not a log", "text/csv")]).run()
    assert not at.exception
    verdicts = table_with(at, "message").set_index("file")
    assert verdicts.loc["mine.csv", "ok"].startswith("✅")
    assert verdicts.loc["broken.csv", "ok"].startswith("❌") and verdicts.loc["broken.csv", "message"]
    saved = list((Path(store_root[0]) / ".uploads").rglob("mine.csv"))
    assert saved and saved[0].read_bytes() == good


def test_train_form_covers_every_setting():
    from ui import forms
    from cnsdiff_core.config import TrainConfig

    shown = [f for group in forms.form_groups().values() for f in group]
    assert len(shown) == len(set(shown))
    assert set(shown) | set(forms.FORM_EXCLUDED) == {f.name for f in fields(TrainConfig)}
    assert not set(shown) & set(forms.FORM_EXCLUDED)


def test_train_form_reports_a_bad_value_in_one_sentence(store_root):
    at = open_page("pages/3_train.py")
    at.text_input(key="cfg_lr").set_value("fast")
    at.button(key="train_run").click().run()
    assert any("lr='fast' is not a valid float" in e.value for e in at.error)


def test_preset_fills_the_form(store_root):
    at = open_page("pages/3_train.py")
    assert at.number_input(key="cfg_epochs").value == 120  # tuned (default preset)
    at.selectbox(key="train_preset").set_value("demo").run()
    assert at.number_input(key="cfg_epochs").value == 15
    assert at.selectbox(key="cfg_schedule").value == "cosine"
    assert at.number_input(key="cfg_batch_size").value == 1024
    at.switch_page("pages/2_data_and_shift.py").run()
    at.switch_page("pages/3_train.py").run()  # the choice survives a visit to another page
    assert at.selectbox(key="train_preset").value == "demo" and at.number_input(key="cfg_epochs").value == 15


def test_another_page_can_prefill_the_train_form(store_root):
    from ui import forms

    at = open_page("pages/2_data_and_shift.py")
    at.session_state[forms.KEY_TRAIN_PREFILL] = {"schedule": "linear", "noise_scale": "0.5"}
    at.switch_page("pages/3_train.py").run()
    assert not at.exception
    assert at.selectbox(key="cfg_schedule").value == "linear"
    assert at.text_input(key="cfg_noise_scale").value == "0.5"
    assert any("schedule=linear" in i.value for i in at.info)


def _start_from_form(at: AppTest, epochs: int, seeds: int = 1) -> None:
    at.selectbox(key="train_preset").set_value("demo").run()
    at.multiselect(key="train_samplers").set_value(["rns"])
    at.number_input(key="train_seeds").set_value(seeds)
    at.number_input(key="cfg_epochs").set_value(epochs)
    at.number_input(key="cfg_probe_triples").set_value(64)
    at.radio(key="train_device").set_value("cpu")
    at.button(key="train_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]


def test_train_form_starts_a_background_job_that_stores_a_run(store_root):
    root, _ = store_root
    before = {r.run_id for r in store_infos(root)}
    at = open_page("pages/3_train.py")
    _start_from_form(at, epochs=2, seeds=2)
    assert any("Started 2 run" in s.value for s in at.success)

    def finished():
        new = [r for r in store_infos(root) if r.run_id not in before]
        return len(new) == 2 and all(r.status == "finished" for r in new)

    wait_until(at, finished, what="the form's two runs to finish")
    both = [r for r in store_infos(root) if r.run_id not in before]
    assert sorted(r.config["seed"] for r in both) == [0, 1]  # seeds seed, seed+1
    new = both[0]
    assert new.config["sampler"] == "rns" and new.config["epochs"] == 2 and new.config["probe_triples"] == 64
    assert new.config["preset"] == "custom"  # the epochs differ from the demo preset
    assert new.final["epochs_run"] == 2 and new.final["ood_recall@20"] > 0
    at.run()  # the sidebar lists the finished run
    run_box = {s.key: s for s in at.sidebar.selectbox}["run_id"]
    assert run_box.options[0].startswith(new.run_id)  # newest first, labelled by RunInfo.label()


def test_stop_keeps_the_run_as_stopped(store_root):
    root, _ = store_root
    before = {r.run_id for r in store_infos(root)}
    at = open_page("pages/3_train.py")
    _start_from_form(at, epochs=300)

    def stop_button():
        return [b for b in at.button if (b.key or "").startswith("train_stop_") and not b.disabled]

    def running():  # a run folder exists and has a recorded epoch
        new = [r for r in store_infos(root) if r.run_id not in before]
        return new and (new[0].path / "history.csv").exists() and stop_button()

    wait_until(at, running, what="the long run to start")
    stop_button()[0].click().run()
    assert not at.exception

    def stopped():
        new = [r for r in store_infos(root) if r.run_id not in before]
        return new and new[0].status == "stopped"

    wait_until(at, stopped, timeout=60, what="the run to stop")
    info = [r for r in store_infos(root) if r.run_id not in before][0]
    assert "stopped by request" in info.message
    assert (info.path / "model.pt").exists() and info.final["epochs_run"] < 300


def test_compare_lists_runs_trained_in_the_test_and_damaged_ones(store_root):
    root, ids = store_root
    damaged = Path(root) / "20200101-000000-broken"
    damaged.mkdir(exist_ok=True)
    (damaged / "config.json").write_text("{not json")
    (damaged / "status.json").write_text("{}")
    interrupted = Path(root) / "20200101-000001-sample-rns-demo-dead"
    interrupted.mkdir(exist_ok=True)
    (interrupted / "config.json").write_text(json.dumps({"dataset": "sample", "sampler": "rns", "preset": "demo"}))
    (interrupted / "status.json").write_text(json.dumps({"status": "running", "pid": 2**22 + 12345, "created": 1.0}))

    at = open_page("pages/4_compare_runs.py")
    table = table_with(at, "reason").set_index("run_id")
    assert set(ids) <= set(table.index)
    assert table.loc[ids[0], "sampler"] == "rns" and table.loc[ids[0], "shift"] == "exposure"
    assert table.loc[ids[0], "ood_recall@20"] > 0
    assert "damaged" in table.loc[damaged.name, "status"] and table.loc[damaged.name, "reason"]
    assert "interrupted" in table.loc[interrupted.name, "status"]
    assert at.button(key=f"resume_{interrupted.name}")  # offered, as the app is not read-only
    csv = at.get("download_button")[0]
    assert csv is not None
    # relative improvement over RNS and the paired test between the two RNS runs
    rel = table_with(at, "RNS run")
    assert "RNS run" in rel.columns
    labels = [m.label for m in at.metric]
    assert "Wilcoxon p-value" in labels and "Users paired" in labels
    p = float({m.label: m.value for m in at.metric}["Wilcoxon p-value"])
    assert 0.0 <= p <= 1.0
    # the two module runs differ only in the seed: one repeated experiment, mean ± spread
    seeds = table_with(at, "seeds")
    row = seeds[seeds["runs"].str.contains(ids[0]) & seeds["runs"].str.contains(ids[1])].iloc[0]
    assert row["seeds"] == 2 and row["sampler"] == "rns"
    mean, spread = (float(x) for x in row["ood_recall@20"].split(" ± "))
    vals = table.loc[ids, "ood_recall@20"]
    assert mean == pytest.approx(vals.mean(), abs=1e-4) and spread == pytest.approx(vals.std(ddof=0), abs=1e-4)


def test_compare_shows_the_shipped_fair_benchmark_per_dataset(store_root):
    """The shipped table (results/fair_benchmark.csv): a bar per sampler with its spread, labelled
    against the best baseline, a row per sampler with its search and tests, for each finished dataset."""
    import pandas as pd

    shipped = pd.read_csv(ROOT / "results" / "fair_benchmark.csv")
    done = list(dict.fromkeys(shipped[shipped["seeds"].notna()]["dataset"]))
    at = open_page("pages/4_compare_runs.py")
    # the answer first: the method against each finished dataset's best baseline, from the same table
    verdict = table_with(at, "best baseline").set_index("dataset")
    assert list(verdict.index) == done
    cns = shipped[shipped["sampler"] == "cnsdiff"].set_index("dataset")
    for ds in done:
        assert verdict.loc[ds, "best baseline"] == cns.loc[ds, "best_baseline"]
        assert verdict.loc[ds, "difference"] == f"{cns.loc[ds, 'rel_ood_recall@20']:+.1%}"
    radio = at.radio(key="fair_dataset")
    assert radio.options == done and "food" in done
    radio.set_value("food").run()
    assert not at.exception
    spec = json.loads({c.key: c for c in at.get("plotly_chart")}["fair_bars"].proto.spec)
    bars = spec["data"][0]
    food = shipped[shipped["dataset"] == "food"]
    assert list(bars["x"]) == food["sampler"].tolist() and "best baseline" in bars["text"]
    mostpop = pd.read_csv(ROOT / "results" / "fair" / "food.csv").set_index("sampler").loc["mostpop", "ood_recall@20"]
    assert spec["layout"]["shapes"][0]["y0"] == pytest.approx(mostpop)  # the floor, dashed
    table = table_with(at, "vs best baseline")
    assert table["sampler"].tolist() == food["sampler"].tolist()
    cns = table.set_index("sampler").loc["cnsdiff"]
    rel = food.set_index("sampler").loc["cnsdiff", "rel_ood_recall@20"]
    assert cns["vs best baseline"] == f"{rel:+.1%}" and cns["seed runs"] == 5
    assert "lr=" in cns["best configuration"]
    # CNSDiff paired with every other sampler, from the shipped per-user copies
    from cnsdiff_core.fair import fair_pairs

    pairs = table_with(at, "differing")
    assert at.selectbox(key="fair_pair_sampler").value == "cnsdiff"
    expected = fair_pairs("food", "cnsdiff")
    assert pairs["against"].tolist() == expected["other"].tolist()
    ahns = pairs[(pairs["metric"] == "ood_recall@20") & (pairs["against"] == "ahns")].iloc[0]
    assert ahns["difference"] == f"{rel:+.1%}"  # AHNS is Food's best baseline: the table's own comparison
    at.selectbox(key="fair_pair_sampler").set_value("ahns").run()
    assert not at.exception and "cnsdiff" in table_with(at, "differing")["against"].tolist()


def test_benchmark_table_keeps_finished_datasets_and_names_a_bad_file(tmp_path):
    from cnsdiff_core.fair import benchmark_table

    assert benchmark_table(tmp_path / "none.csv").empty
    path = tmp_path / "t.csv"
    path.write_text("dataset,sampler,seeds,ood_recall@20\na,rns,5,0.1\nb,rns,,\n")
    assert benchmark_table(path)["dataset"].tolist() == ["a"]
    path.write_text("name,value\nx,1\n")
    with pytest.raises(ValueError, match=r"t\.csv lacks the column\(s\) dataset, sampler"):
        benchmark_table(path)


def test_resume_of_a_run_without_checkpoint_fails_with_a_message(store_root):
    root, _ = store_root
    dead = Path(root) / "20200101-000002-sample-rns-demo-nockpt"
    dead.mkdir(exist_ok=True)
    from cnsdiff_core.config import preset_config
    (dead / "config.json").write_text(json.dumps(preset_config("demo", sampler="rns").to_dict()))
    (dead / "status.json").write_text(json.dumps({"status": "running", "pid": 2**22 + 12346, "created": 2.0}))
    at = open_page("pages/4_compare_runs.py")
    at.button(key=f"resume_{dead.name}").click().run()
    assert not at.exception
    wait_until(at, lambda: any("no checkpoint.pt" in c.value for c in at.caption), timeout=30,
               what="the resume job to fail")


def test_read_only_mode_hides_training_and_import(store_root, monkeypatch):
    monkeypatch.setenv("CNSDIFF_READ_ONLY", "1")
    at = open_page()
    assert any("read-only workshop mode" in i.value for i in at.info)
    assert at.button(key="demo_run").disabled
    with pytest.raises(ValueError):
        at.switch_page("pages/3_train.py")
    for page in ("pages/2_data_and_shift.py", "pages/4_compare_runs.py"):
        at.switch_page(page).run()
        assert not at.exception
        assert any("read-only workshop mode" in i.value for i in at.info), page
    at.switch_page("pages/2_data_and_shift.py").run()
    assert at.text_input(key="import_path").disabled
    assert at.file_uploader(key="import_upload").disabled
    at.switch_page("pages/4_compare_runs.py").run()
    assert not [b for b in at.button if (b.key or "").startswith("resume_")]


def test_read_only_from_the_command_line(monkeypatch):
    from ui import state

    monkeypatch.delenv("CNSDIFF_READ_ONLY", raising=False)
    monkeypatch.setattr("sys.argv", ["app.py"])
    assert not state.read_only()
    monkeypatch.setattr("sys.argv", ["app.py", "--read-only"])  # streamlit run app.py -- --read-only
    assert state.read_only()


def test_a_failing_job_reports_its_message_and_never_raises(store_root):
    from cnsdiff_core.config import preset_config
    from cnsdiff_core.jobs import JobManager
    from cnsdiff_core.tasks import ACTIVE

    manager = JobManager()
    job_id = manager.submit([preset_config("demo", dataset="no-such-dataset", sampler="rns")])
    end = time.time() + 30
    while manager.get(job_id)["status"] in ACTIVE and time.time() < end:
        time.sleep(0.2)
    job = manager.get(job_id)
    assert job["status"] == "failed" and "no-such-dataset" in job["message"]
    assert job["outcomes"][0]["status"] == "failed"


def test_the_demo_runs_once_and_every_tab_follows_it(store_root, monkeypatch):
    monkeypatch.setenv("CNSDIFF_DEMO_SET", "epochs=1,probe_triples=64")
    root, _ = store_root
    before = {r.run_id for r in store_infos(root)}
    first = open_page()
    first.button(key="demo_run").click().run()
    assert not first.exception
    second = open_page()  # another tab while the demo trains: it follows, it cannot start a second
    assert second.session_state["demo_job_id"] == first.session_state["demo_job_id"] or \
        not [r for r in store_infos(root) if r.run_id not in before and r.status == "running"]

    def shown(at):
        return lambda: any("OOD Recall@20" in m.label for m in at.metric) and \
            any("Demo result" in m.value for m in at.markdown)

    wait_until(first, shown(first), what="the demo result")
    new = [r for r in store_infos(root) if r.run_id not in before]
    assert sorted(r.config["sampler"] for r in new) == ["cnsdiff", "rns"]
    assert all(r.config["preset"] == "demo" and r.status == "finished" for r in new)
    labels = [m.label for m in first.metric]
    assert any(label.startswith("CNSDiff") for label in labels) and any(label.startswith("RNS") for label in labels)
    cns = next(r.run_id for r in new if r.config["sampler"] == "cnsdiff")
    assert first.session_state["run_id"] == cns  # the demo's CNSDiff run is selected for exploring
    wait_until(second, shown(second), timeout=30, what="the demo result in the second tab")


@pytest.mark.parametrize("link", ["/etc/passwd", "synthetic:n_users=900000", "synthetic:bogus=1"])
def test_links_cannot_open_arbitrary_paths_or_huge_worlds(store_root, link):
    at = open_page(query={"dataset": link})
    assert at.session_state["dataset"] == "sample"
    assert any(link in w.value for w in at.sidebar.warning)

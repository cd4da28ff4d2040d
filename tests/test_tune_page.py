"""The Tune page (pages/9_tune.py) with Streamlit's AppTest, as tests/test_app_pages.py opens pages:
without any study, with a stored study (figures, trials linked to runs, the best configuration sent
to Train), read-only, started and stopped from the page, and the schedule lab's link to it."""
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from streamlit.testing.v1 import AppTest

from cnsdiff_core.runs import RunStore
from cnsdiff_core.study_storage import default_storage_url, open_storage
from cnsdiff_core.tune import run_study

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PAGE = "pages/9_tune.py"


def open_tune(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    if query:
        at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Tune"
    return at


def wait_until(at: AppTest, done, timeout: float = 180.0, what: str = "") -> None:
    end = time.time() + timeout
    while time.time() < end:
        if done():
            return
        time.sleep(0.5)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def load(root: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(default_storage_url(root))[0])


def test_the_page_renders_without_any_study_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("CNSDIFF_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("CNSDIFF_READ_ONLY", raising=False)
    at = open_tune()
    assert any("No study has been stored here yet" in i.value for i in at.info)
    assert at.button(key="tune_start")  # the form to start one
    assert not (tmp_path / "runs" / "studies.db").exists()  # browsing wrote nothing


@pytest.fixture(scope="module")
def stored_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune-runs")
    summary = run_study("sample", "rns", 3, study="page-study", epochs=2, preset="demo", device="cpu",
                        runs_dir=root, overrides={"probe_triples": 64})
    assert summary["n_complete"] == 3
    return root, summary


def test_a_stored_study_shows_figures_trials_and_links(stored_study, monkeypatch):
    root, summary = stored_study
    monkeypatch.setenv("CNSDIFF_RUNS", str(root))
    monkeypatch.delenv("CNSDIFF_READ_ONLY", raising=False)
    at = open_tune()
    assert at.selectbox(key="tune_study").value == "page-study"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Complete"] == "3" and metrics["Best valid. Recall@20"] == f"{summary['best_value']:.4f}"
    charts = at.get("plotly_chart")
    assert len(charts) == 4  # history, importances, parallel coordinates, contour
    table = next(df.value for df in at.dataframe if "run_id" in df.value.columns)
    assert sorted(table["trial"]) == [0, 1, 2] and set(table["state"]) == {"complete"}
    assert set(table["run_id"]) == {t.user_attrs["run_id"] for t in load(root, "page-study").trials}
    for run_id, link in zip(table["run_id"], table["open"]):
        assert link == f"/negatives_map?dataset=sample&shift=exposure&run={run_id}"
    at.selectbox(key="tune_open_run").set_value(summary["best_run_id"])
    at.button(key="tune_open").click().run()
    assert not at.exception
    assert at.session_state["run_id"] == summary["best_run_id"]  # selected for the explore pages
    assert at.title[0].value == "Negatives map"


def test_use_the_best_configuration_fills_the_train_form(stored_study, monkeypatch):
    from ui import forms
    from cnsdiff_core.config import TrainConfig

    root, summary = stored_study
    monkeypatch.setenv("CNSDIFF_RUNS", str(root))
    monkeypatch.delenv("CNSDIFF_READ_ONLY", raising=False)
    at = open_tune()
    at.button(key="tune_use_best").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Train"
    best = summary["best_params"]
    assert at.text_input(key="cfg_lr").value == forms.form_value(TrainConfig(lr=best["lr"]), "lr")
    assert at.text_input(key="cfg_l2").value == forms.form_value(TrainConfig(l2=best["l2"]), "l2")
    assert at.number_input(key="cfg_epochs").value == 2  # the study's epoch budget
    assert at.number_input(key="cfg_batch_size").value == 1024  # the rest from the study's preset (demo)
    assert at.multiselect(key="train_samplers").value == ["rns"]
    assert at.selectbox(key="train_preset").value == "demo"


def test_read_only_mode_browses_studies_only(stored_study, monkeypatch):
    root, _ = stored_study
    monkeypatch.setenv("CNSDIFF_RUNS", str(root))
    monkeypatch.setenv("CNSDIFF_READ_ONLY", "1")
    at = open_tune()
    assert any("starting studies is switched off" in i.value for i in at.info)
    assert not [b for b in at.button if b.key in ("tune_start", "tune_use_best")]
    assert at.selectbox(key="tune_study").value == "page-study" and len(at.get("plotly_chart")) == 4
    assert any("Best parameters: lr=" in c.value for c in at.caption)


def test_start_and_stop_a_study_from_the_page(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv("CNSDIFF_RUNS", str(root))
    monkeypatch.delenv("CNSDIFF_READ_ONLY", raising=False)
    at = open_tune()
    at.selectbox(key="tune_sampler").set_value("rns")
    at.number_input(key="tune_trials").set_value(2)
    at.number_input(key="tune_epochs").set_value(2)
    at.button(key="tune_start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    name = "sample-exposure-rns-demo-2ep-seed0"
    assert any(name in s.value for s in at.success)

    def finished() -> bool:
        return (root / "studies.db").exists() and \
            len(load(root, name).get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) >= 2

    wait_until(at, finished, what="the page's study to finish two trials")
    wait_until(at, lambda: any("trials finished" in c.value for c in at.caption), timeout=30, what="the job's end")
    assert at.selectbox(key="tune_study").value == name  # the page shows the study it started
    assert {m.label: m.value for m in at.metric}["Complete"] in ("1", "2")
    assert len(RunStore(root).list_runs()) == 2

    # a long study, stopped from the page while a trial trains: its run is kept as 'stopped', the trial
    # fails (it never counts towards the budget) and the study is left resumable
    at.number_input(key="tune_trials").set_value(3)
    at.number_input(key="tune_epochs").set_value(300)
    at.button(key="tune_start").click().run()
    long_name = "sample-exposure-rns-demo-300ep-seed0"

    def stop_button():
        return [b for b in at.button if (b.key or "").startswith("tune_stop_") and not b.disabled]

    def training() -> bool:
        new = [r for r in RunStore(root).list_runs() if r.config.get("epochs") == 300]
        return bool(new) and (new[0].path / "history.csv").exists() and bool(stop_button())

    wait_until(at, training, what="the long study's first trial to train an epoch")
    stop_button()[0].click().run()
    wait_until(at, lambda: any("stopped by request" in c.value for c in at.caption), timeout=60,
               what="the study job to stop")
    study = load(root, long_name)
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    assert study.trials[0].user_attrs["error"] == "stopped by request"
    info = RunStore(root).info(study.trials[0].user_attrs["run_id"])
    assert info.status == "stopped" and info.final["epochs_run"] < 300


def test_the_schedule_lab_links_to_tune_with_its_family(tmp_path, monkeypatch):
    monkeypatch.setenv("CNSDIFF_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("CNSDIFF_READ_ONLY", raising=False)
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    at.switch_page("pages/8_schedule_lab.py").run()
    assert not at.exception
    link = next(p for p in at.get("page_link") if "Search schedules" in p.proto.label)
    assert link.proto.page.endswith("tune") and "schedule=" in link.proto.query_string
    family = link.proto.query_string.split("schedule=")[1].split("&")[0]
    assert family in ("linear", "linear-var", "cosine")
    at = open_tune(query={"schedule": "cosine"})
    assert at.selectbox(key="tune_first_schedule").value == "cosine"

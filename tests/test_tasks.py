"""The one background-task system (cnsdiff_core.tasks) and the training jobs built on it."""
from __future__ import annotations

import threading
import time

import pytest

from cnsdiff_core.config import preset_config
from cnsdiff_core.jobs import JobManager
from cnsdiff_core.tasks import ACTIVE, Status, Task, TaskFailed, TaskPool, TaskStopped


def wait(task: Task, timeout: float = 60.0) -> Task:
    end = time.time() + timeout
    while task.active and time.time() < end:
        time.sleep(0.02)
    assert not task.active, f"{task.title} still {task.status}"
    return task


def test_status_words_are_one_vocabulary():
    assert [str(s) for s in Status] == ["queued", "running", "finished", "stopped", "failed"]
    assert "queued" in ACTIVE and "running" in ACTIVE and "finished" not in ACTIVE
    assert Status.RUNNING.active and not Status.FAILED.active


def test_a_task_reports_progress_and_ends_with_its_message():
    pool: TaskPool[Task] = TaskPool(1, "t")
    gate = threading.Event()

    def work(task: Task) -> str:
        task.progress(3, 4, "three of four")
        gate.wait(5)
        return "all done"

    task = pool.start(Task("count", total=4), work)
    end = time.time() + 5
    while task.done != 3 and time.time() < end:
        time.sleep(0.01)
    assert task.status == Status.RUNNING and task.fraction == 0.75 and task.note == "three of four"
    assert pool.active() == [task] and pool.get(task.task_id) is task
    gate.set()
    wait(task)
    assert task.status == Status.FINISHED and task.message == "all done" and task.fraction == 1.0
    assert task.seconds > 0 and pool.active() == []


def test_slots_queue_the_others_and_a_stop_before_start_never_runs():
    pool: TaskPool[Task] = TaskPool(1, "t")
    gate, ran = threading.Event(), []

    def work(task: Task) -> None:
        ran.append(task.title)
        gate.wait(5)

    first = pool.start(Task("first"), work)
    second = pool.start(Task("second"), work)
    third = pool.start(Task("third"), work)
    time.sleep(0.2)
    assert first.status == Status.RUNNING and second.status == Status.QUEUED and third.status == Status.QUEUED
    third.stop()
    gate.set()
    for t in (first, second, third):
        wait(t)
    assert ran == ["first", "second"]
    assert third.status == Status.STOPPED and third.message == "stopped before it started"
    assert [t.title for t in pool.tasks()] == ["third", "second", "first"]  # newest first


@pytest.mark.parametrize("raise_, status, message", [
    (TaskFailed("the data is gone; import it again."), Status.FAILED, "the data is gone; import it again."),
    (TaskStopped("kept 3 of 5 steps"), Status.STOPPED, "kept 3 of 5 steps"),
    (ValueError("lr=-1 is invalid."), Status.FAILED, "lr=-1 is invalid."),
    (KeyError("oops"), Status.FAILED, "KeyError: 'oops'"),
])
def test_how_work_ends_decides_the_status(raise_, status, message):
    def work(task: Task) -> None:
        raise raise_

    task = wait(TaskPool(1, "t").start(Task("x"), work))
    assert task.status == status and task.message == message


def test_a_stop_request_is_honoured_by_the_work_and_kept_as_stopped():
    def work(task: Task) -> str:
        while not task.stop_requested:
            time.sleep(0.01)
        return "kept what was done"

    task = TaskPool(1, "t").start(Task("loop"), work)
    time.sleep(0.1)
    task.stop()
    wait(task)
    assert task.status == Status.STOPPED and task.message == "kept what was done"


def test_a_training_job_is_a_task_and_reports_the_engines_message(tmp_path):
    manager = JobManager(max_parallel=1)
    bad = preset_config("demo", dataset=str(tmp_path / "missing.csv"), sampler="rns", epochs=1)
    job_id = manager.submit([bad], title="bad data", store_root=tmp_path / "runs")
    job = wait(manager.pool.get(job_id))
    snap = manager.get(job_id)
    assert job.status == Status.FAILED and snap["status"] == "failed" and "missing.csv" in snap["message"]
    assert snap["kind"] == "train" and snap["fraction"] == 1.0 and manager.active() == []


def test_a_training_job_trains_and_stores_its_run(tmp_path):
    manager = JobManager(max_parallel=1, maps=("pca",))
    cfg = preset_config("demo", sampler="rns", epochs=1, probe_triples=50, device="cpu")
    job_id = manager.submit([cfg], tag="t", store_root=tmp_path / "runs")
    wait(manager.pool.get(job_id), timeout=120)
    snap = manager.get(job_id)
    assert snap["status"] == "finished", snap["message"]
    assert len(snap["run_ids"]) == 1 and snap["outcomes"][0]["status"] == "finished"
    assert snap["losses"] and snap["valid"][0]["epoch"] == 1 and snap["epochs"] == 1
    assert (tmp_path / "runs" / snap["run_ids"][0] / "final.json").is_file()
    # the run's map is part of its job: stored with the run, announced while it was computed
    assert (tmp_path / "runs" / snap["run_ids"][0] / "projection_pca.npz").is_file()
    assert snap["note"] == "fitting the PCA map"


def test_the_maps_a_job_stores_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("CNSDIFF_RUN_MAPS", raising=False)
    assert JobManager(max_parallel=1).maps == ("pca", "umap")  # the default: both, with every run
    monkeypatch.setenv("CNSDIFF_RUN_MAPS", "none")
    assert JobManager(max_parallel=1).maps == ()
    monkeypatch.setenv("CNSDIFF_RUN_MAPS", "pca,umap3d")
    with pytest.raises(ValueError, match="CNSDIFF_RUN_MAPS='pca,umap3d'.*'umap3d' is unknown"):
        JobManager(max_parallel=1)


@pytest.mark.slow  # compiles UMAP (numba)
def test_a_job_stores_both_maps_and_the_explore_pages_fit_nothing(tmp_path):
    from cnsdiff_core import explore as ex
    from cnsdiff_core.runs import RunStore

    manager = JobManager(max_parallel=1, maps=("pca", "umap"))
    cfg = preset_config("demo", sampler="cnsdiff", epochs=1, probe_triples=50, device="cpu")
    job_id = manager.submit([cfg], store_root=tmp_path / "runs")
    wait(manager.pool.get(job_id), timeout=600)
    snap = manager.get(job_id)
    assert snap["status"] == "finished", snap["message"]
    run = RunStore(tmp_path / "runs").load(snap["run_ids"][0])
    job = ex.ItemMaps(run.embeddings()[1], run.path)
    assert job.precomputed and job.status == Status.FINISHED
    job.start_umap()
    assert job.task is None  # nothing fitted: the stored map is used

"""Faults: a training process killed mid-run, damaged run folders, failed writes. The run store
must keep every earlier run, list broken ones with a reason, and resume what was interrupted."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from cnsdiff_core.events import EpochDone
from cnsdiff_core.config import preset_config
from cnsdiff_core.runs import RunStore, StoreError
from cnsdiff_core.recorder import resume_run, train_and_store

ROOT = Path(__file__).resolve().parents[1]
TINY = "synthetic:n_users=60,n_items=80,interactions_per_user=8,random_exposures_per_user=10,confounding=0.5"
SMALL = dict(epochs=2, batch_size=256, dim=8, probe_triples=32, patience=0, device="cpu")
RESULT_FILES = ("config.json", "status.json", "final.json", "model.pt", "history.csv", "embeddings.npz")


def cli(capsys, *args: str, runs: Path) -> tuple[int, str, str]:
    """`python -m cnsdiff_core ARGS --runs-dir RUNS` in this process: (exit code, stdout, stderr)."""
    from cnsdiff_core.cli import main

    capsys.readouterr()
    code = main([*args, "--runs-dir", str(runs)])
    out = capsys.readouterr()
    return code, out.out, out.err


def folder_digest(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(path.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """One finished tiny run to copy and damage."""
    root = tmp_path_factory.mktemp("good")
    run_id, _ = train_and_store(preset_config("demo", sampler="rns", dataset=TINY, **SMALL), RunStore(root))
    return root / run_id


# --- a killed training process ---------------------------------------------------------------------------
def test_a_killed_run_is_interrupted_and_resumes_to_completion(tmp_path, capsys):
    runs = tmp_path / "runs"
    env = dict(os.environ, CNSDIFF_RUNS=str(runs), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, "-m", "cnsdiff_core", "train", "--dataset", "sample", "--preset", "demo",
                             "--sampler", "rns", "--set", "epochs=200", "--device", "cpu"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        hist = None
        while time.time() < deadline:
            found = list(runs.glob("*/history.csv"))
            if found and len(pd.read_csv(found[0])) >= 2:
                hist = found[0]
                break
            assert proc.poll() is None, "training ended before it could be killed"
            time.sleep(0.2)
        assert hist is not None, "no two epochs within 120 s"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    store = RunStore(runs)
    [info] = store.list_runs()
    assert info.status == "interrupted"
    assert (info.path / "checkpoint.pt").exists()
    done = int(pd.read_csv(info.path / "history.csv")["epoch"].max())
    assert cli(capsys, "list", runs=runs)[1].count("interrupted") == 1

    # Continue it to the end quickly: the test shortens the run (the config says 200 epochs) to a
    # few epochs past the kill; resuming reads epochs from config.json.
    cfg = json.loads((info.path / "config.json").read_text())
    cfg["epochs"] = done + 3
    (info.path / "config.json").write_text(json.dumps(cfg))

    # resume_run in this process, stopped after one more epoch ...
    calls = {"n": 0}

    def stop_after_one_epoch(event):
        calls["n"] += isinstance(event, EpochDone)

    _, res = resume_run(info.run_id, store, [stop_after_one_epoch], should_stop=lambda: calls["n"] >= 1)
    assert res.status == "stopped"
    assert store.info(info.run_id).status == "stopped"
    # ... and the command line continues the stopped run to completion
    code, out, err = cli(capsys, "resume", info.run_id, "--maps", "none", runs=runs)
    assert code == 0, err
    assert "finished" in out
    final = store.info(info.run_id)
    assert final.status == "finished" and final.final["epochs_run"] == done + 3
    epochs = pd.read_csv(final.path / "history.csv")["epoch"].tolist()
    assert epochs == list(range(1, done + 4)), "history must be contiguous, without repeated epochs"
    assert (final.path / "embeddings.npz").exists() and (final.path / "model.pt").exists()
    assert store.load(info.run_id).embeddings()[1].shape[0] > 0


# --- damaged folders -----------------------------------------------------------------------------------
def damage(folder: Path, name: str, how: str) -> None:
    p = folder / name
    if how == "missing":
        p.unlink()
        return
    data = p.read_bytes()
    cut = data[: len(data) // 2]
    if cut.endswith(b"\n"):
        cut = cut[:-1]
    p.write_bytes(cut)


@pytest.fixture(scope="module")
def damaged_store(good_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("damaged")
    shutil.copytree(good_run, root / good_run.name)
    cases = {}
    for name in RESULT_FILES:
        for how in ("missing", "truncated"):
            run_id = f"20200101-000000-{name.replace('.', '-')}-{how}"
            shutil.copytree(good_run, root / run_id)
            damage(root / run_id, name, how)
            cases[run_id] = name
    (root / "20200101-000001-empty-folder").mkdir()
    cases["20200101-000001-empty-folder"] = "config.json"
    (root / "20200101-000002-status-list").mkdir()
    shutil.copy(good_run / "config.json", root / "20200101-000002-status-list")
    (root / "20200101-000002-status-list" / "status.json").write_text('["running", 12]')
    cases["20200101-000002-status-list"] = "status.json"
    bad_pid = root / "20200101-000003-bad-pid"
    shutil.copytree(good_run, bad_pid)
    (bad_pid / "status.json").write_text(json.dumps({"status": "running", "pid": "x", "created": "never"}))
    (root / "not-a-run.txt").write_text("a stray file")
    (root / "back\\slash").mkdir()
    return root, good_run.name, cases


def test_damaged_runs_are_listed_with_the_file_and_never_break_the_listing(damaged_store):
    root, good_id, cases = damaged_store
    infos = {r.run_id: r for r in RunStore(root).list_runs()}
    assert infos[good_id].status == "finished"
    for run_id, name in cases.items():
        assert infos[run_id].status == "damaged", (run_id, infos[run_id].status)
        assert name in infos[run_id].message, (run_id, infos[run_id].message)
    assert infos["20200101-000003-bad-pid"].status == "interrupted"  # unreadable pid: treated as gone
    assert "back\\slash" not in infos  # not a run name: skipped, not an error
    for run_id in cases:
        with pytest.raises(StoreError, match="damaged"):
            RunStore(root).load(run_id)


def test_cli_list_shows_damaged_runs(damaged_store, capsys):
    root, good_id, cases = damaged_store
    code, out, err = cli(capsys, "list", runs=root)
    assert code == 0 and not err, err
    lines = {line.split("\t")[0]: line for line in out.splitlines()}
    assert "finished" in lines[good_id]
    for run_id, name in cases.items():
        assert "damaged" in lines[run_id] and name in lines[run_id]


def test_compare_page_lists_damaged_runs_with_reasons(damaged_store, monkeypatch):
    from streamlit.testing.v1 import AppTest

    root, good_id, cases = damaged_store
    monkeypatch.setenv("CNSDIFF_RUNS", str(root))
    monkeypatch.delenv("CNSDIFF_READ_ONLY", raising=False)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page("pages/4_compare_runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(df.value for df in at.dataframe if "reason" in df.value.columns).set_index("run_id")
    assert table.loc[good_id, "status"] == "finished"
    for run_id, name in cases.items():
        assert table.loc[run_id, "status"] == "damaged" and name in table.loc[run_id, "reason"]
    # the explore pages offer only the intact run
    from ui import cache

    assert {i.run_id for i in cache.explorable_runs()} == {good_id, "20200101-000003-bad-pid"}


# --- failed writes ---------------------------------------------------------------------------------------
def test_disk_full_gives_one_sentence_and_keeps_earlier_runs(good_run, tmp_path, monkeypatch, capsys):
    from cnsdiff_core import runs as runs_mod
    from cnsdiff_core.cli import main

    root = tmp_path / "runs"
    shutil.copytree(good_run, root / good_run.name)
    before = folder_digest(root / good_run.name)
    real_replace = os.replace

    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    # 1. at the first write: no run folder is left behind
    monkeypatch.setattr(runs_mod.os, "replace", full)
    with pytest.raises(StoreError) as err:
        train_and_store(preset_config("demo", sampler="rns", dataset=TINY, **SMALL), RunStore(root))
    msg = str(err.value)
    assert "No space left on device" in msg and "\n" not in msg and "free disk space" in msg
    assert sorted(p.name for p in root.iterdir()) == [good_run.name]
    assert not list(root.rglob("*.tmp"))

    # 2. in the middle of training (status, history and checkpoints are written every epoch)
    count = {"n": 0}

    def full_later(src, dst):
        count["n"] += 1
        if count["n"] > 6:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(runs_mod.os, "replace", full_later)
    code = main(["train", "--dataset", TINY, "--sampler", "rns", "--preset", "demo", "--runs-dir", str(root),
                 *[f"--set={k}={v}" for k, v in SMALL.items()]])
    # notes and the progress bar (\r-updated) go to stderr too; the error is the last line
    err_text = [line.strip() for line in re.split(r"[\r\n]+", capsys.readouterr().err) if line.strip()]
    assert code == 2
    errors = [line for line in err_text if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == err_text[-1] and not any("Traceback" in line for line in err_text)
    assert errors[0].startswith("error: could not write") and "No space left" in errors[0]
    monkeypatch.setattr(runs_mod.os, "replace", real_replace)

    assert folder_digest(root / good_run.name) == before  # the earlier run is byte-for-byte intact
    infos = {r.run_id: r for r in RunStore(root).list_runs()}
    assert infos[good_run.name].status == "finished"
    assert not list(root.rglob("*.tmp"))


def test_a_runs_folder_that_is_a_file_gives_one_sentence(tmp_path):
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="set CNSDIFF_RUNS"):
        train_and_store(preset_config("demo", sampler="rns", dataset=TINY, **SMALL), RunStore(blocker))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_runs_folder_gives_one_sentence(good_run, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(good_run, root / good_run.name)
    before = folder_digest(root / good_run.name)
    root.chmod(0o555)
    try:
        with pytest.raises(StoreError, match="writable") as err:
            train_and_store(preset_config("demo", sampler="rns", dataset=TINY, **SMALL), RunStore(root))
        assert "\n" not in str(err.value)
    finally:
        root.chmod(0o755)
    assert folder_digest(root / good_run.name) == before


# --- any exception marks the run failed ----------------------------------------------------------------
class Boom(Exception):
    pass


def test_any_exception_marks_the_run_failed_and_is_raised(tmp_path):
    store = RunStore(tmp_path / "runs")
    created = []

    def explode(event):
        if isinstance(event, EpochDone):
            raise Boom("a bug in a callback")

    with pytest.raises(Boom):
        train_and_store(preset_config("demo", sampler="rns", dataset=TINY, **SMALL), store, [explode],
                        on_created=created.append)
    info = store.info(created[0])
    assert info.status == "failed" and info.message == "Boom: a bug in a callback"


def test_any_exception_during_resume_marks_the_run_failed(good_run, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(good_run, root / good_run.name)
    run = root / good_run.name
    status = json.loads((run / "status.json").read_text())
    status.update(status="running", pid=2**22 + 4321)  # a process that no longer exists
    (run / "status.json").write_text(json.dumps(status))
    cfg = json.loads((run / "config.json").read_text())
    cfg["epochs"] = 4
    (run / "config.json").write_text(json.dumps(cfg))
    store = RunStore(root)
    assert store.info(run.name).status == "interrupted"

    def explode(event):
        if isinstance(event, EpochDone):
            raise KeyError("lost")

    with pytest.raises(KeyError):
        resume_run(run.name, store, [explode])
    info = store.info(run.name)
    assert info.status == "failed" and "KeyError" in info.message

"""Tuning studies (cnsdiff_core.tune) and the experiment grid on the same engine: the command line
contract, workers sharing one storage (SQLite, journal file, a real PostgreSQL server), a killed
worker, pruning, failing trials, and every sampler's search space. Runs are tiny (sample world,
demo preset, 2-6 epochs)."""
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from cnsdiff_core.config import SAMPLERS, ConfigError, preset_config
from cnsdiff_core.runs import RunStore, StoreError
from cnsdiff_core.recorder import resume_run
from cnsdiff_core.samplers import REGISTRY, make_sampler
from cnsdiff_core.study_storage import HeartbeatJournalStorage, open_storage
from cnsdiff_core.tune import FINISHED, TuneError, best_overrides, run_study, trial_overrides, trial_seconds

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ("study", "storage", "best_value", "best_params", "best_run_id", "n_complete", "n_pruned", "n_failed")


def env_for(runs: Path) -> dict:
    return {**os.environ, "CNSDIFF_RUNS": str(runs), "OMP_NUM_THREADS": "1"}


def tune_args(storage: str | None, trials: int, sampler: str = "rns", epochs: int = 2, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "cnsdiff_core", "tune", "--dataset", "sample", "--sampler", sampler,
            "--trials", str(trials), "--preset", "demo", "--epochs", str(epochs), "--device", "cpu",
            "--set", "probe_triples=64", *extra]
    return args + (["--storage", storage] if storage else [])


def run_cli(args: list[str], runs: Path, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    out = subprocess.run(args, cwd=ROOT, env=env_for(runs), capture_output=True, text=True, timeout=timeout)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def load(storage: str, name: str) -> optuna.Study:
    store, _ = open_storage(storage)
    return optuna.load_study(study_name=name, storage=store)


def assert_every_trial_has_its_run(study: optuna.Study, runs: Path) -> None:
    """No trial is lost: each one names a run folder, whose status records the study and trial."""
    trials = study.get_trials(deepcopy=False)
    ids = [t.user_attrs.get("run_id") for t in trials]
    assert all(ids), [t.number for t in trials if not t.user_attrs.get("run_id")]
    assert len(set(ids)) == len(ids)  # one run per trial
    for t, run_id in zip(trials, ids):
        status = json.loads((runs / run_id / "status.json").read_text())
        assert status["tune"]["study"] == study.study_name and status["tune"]["trial"] == t.number
    listed = {r.run_id for r in RunStore(runs).list_runs() if r.config.get("preset") == "trial"}
    assert listed == set(ids)  # and no run without its trial


# --- the command line --------------------------------------------------------------------------
def test_tune_prints_one_json_object_with_the_contract_and_resumes(tmp_path):
    runs = tmp_path / "runs"
    out = run_cli(tune_args(None, 2, "rns", 2, "--json"), runs)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert set(CONTRACT) <= set(summary)
    assert summary["n_complete"] + summary["n_pruned"] == 2 and summary["n_failed"] == 0
    assert summary["storage"] == f"sqlite:///{(runs / 'studies.db').resolve()}"  # the default: in the runs folder
    assert (runs / "studies.db").is_file()
    assert set(summary["best_params"]) == {"lr", "l2"}
    assert 0 < summary["best_value"] <= 1
    best = RunStore(runs).info(summary["best_run_id"])
    assert best.status == "finished" and best.config["test_eval"] == "selected"  # tests scored once, not watched
    assert best.final["valid_recall@20"] == pytest.approx(summary["best_value"])
    assert best.config["lr"] == pytest.approx(summary["best_params"]["lr"])
    study = load(summary["storage"], summary["study"])
    assert_every_trial_has_its_run(study, runs)
    # the same command again: the study already holds 2 finished trials, nothing new is trained
    again = json.loads(run_cli(tune_args(None, 2, "rns", 2, "--json"), runs).stdout)
    assert again["best_run_id"] == summary["best_run_id"] and again["n_complete"] + again["n_pruned"] == 2
    assert len([r for r in RunStore(runs).list_runs()]) == 2
    # a larger total continues the same study
    more = json.loads(run_cli(tune_args(None, 3, "rns", 2, "--json"), runs).stdout)
    assert more["study"] == summary["study"] and more["n_complete"] + more["n_pruned"] == 3


def test_bad_settings_are_one_sentence(tmp_path):
    runs = tmp_path / "runs"
    for args, needle in [
        (tune_args(None, 2) + ["--set", "lr=fast"], "lr='fast' is not a valid float"),
        ([a if a != "sample" else "no-such-data" for a in tune_args(None, 2)], "no-such-data"),
        (tune_args(str(tmp_path / "studies.txt"), 2), "neither a database URL"),
        (tune_args("ftp://nowhere/x", 2), "cannot open the study storage ftp://nowhere/x"),
        (tune_args(None, 0), "needs at least 1 trial"),
        (tune_args(None, 2) + ["--preset", "reference"], "tunes on IID validation only"),
    ]:
        out = run_cli(args, runs, check=False)
        assert out.returncode == 2, out.stderr
        assert needle in out.stderr and "Traceback" not in out.stderr
        assert out.stderr.strip().count("\n") == 0, out.stderr
    # the same study name with other settings is refused, not mixed
    run_cli(tune_args(None, 1, "rns", 2, "--study", "mine"), runs)
    out = run_cli(tune_args(None, 1, "rns", 3, "--study", "mine"), runs, check=False)
    assert out.returncode == 2 and "was created with epochs=2, not 3" in out.stderr


# --- workers sharing one storage ----------------------------------------------------------------
def _two_processes(storage: str, runs: Path, trials: int, name: str) -> None:
    procs = [subprocess.Popen(tune_args(storage, trials, "rns", 2, "--study", name), cwd=ROOT, env=env_for(runs),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_worker_processes_finish_the_total_and_lose_no_trial(tmp_path, kind):
    runs = tmp_path / "runs"
    storage = f"sqlite:///{tmp_path / 'shared.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'shared.journal'}"
    _two_processes(storage, runs, 5, "shared")
    study = load(storage, "shared")
    finished = study.get_trials(deepcopy=False, states=FINISHED)
    assert 5 <= len(finished) <= 5 + (2 - 1)  # Optuna's documented overshoot: workers - 1
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.FAIL))
    assert_every_trial_has_its_run(study, runs)
    assert len({t.params["lr"] for t in study.trials}) == len(study.trials)  # workers did not draw the same trials
    if kind == "journal":  # append-only text: one JSON operation per line, fit for git
        lines = (tmp_path / "shared.journal").read_text().splitlines()
        assert lines and all(json.loads(line)["op_code"] is not None for line in lines)


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_killed_worker_leaves_a_failed_trial_and_the_study_completes(tmp_path, kind):
    runs = tmp_path / "runs"
    storage = f"sqlite:///{tmp_path / 'k.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'k.journal'}"
    beat = ["--heartbeat-interval", "1", "--grace-period", "3", "--study", "killed"]
    victim = subprocess.Popen(tune_args(storage, 2, "cnsdiff", 6, *beat), cwd=ROOT, env=env_for(runs),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not glob.glob(str(runs / "*" / "history.csv")):
        assert victim.poll() is None, victim.stderr.read()[-2000:]
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)  # mid-trial: its first run has an epoch, not the last one
    victim.wait()
    killed_run = Path(glob.glob(str(runs / "*" / "history.csv"))[0]).parent.name
    time.sleep(4)  # past the grace period: the victim's heartbeat has stopped
    rescuer = run_cli(tune_args(storage, 2, "cnsdiff", 6, *beat, "--json"), runs)
    summary = json.loads(rescuer.stdout)
    assert summary["n_complete"] + summary["n_pruned"] == 2  # the study completed
    assert summary["n_failed"] == 1 and summary["n_running"] == 0
    study = load(storage, "killed")
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))[0]
    assert failed.number == 0 and failed.user_attrs["run_id"] == killed_run
    assert RunStore(runs).info(killed_run).status == "interrupted"  # the run store knows its process is gone
    assert_every_trial_has_its_run(study, runs)


# --- PostgreSQL ------------------------------------------------------------------------------------
def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server on a loopback port, stopped at teardown (as root: run as the
    postgres user, which owns the data folder; PostgreSQL refuses to run as root)."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL binaries (initdb) on this machine; install Debian's postgresql package")
    pytest.importorskip("psycopg2")
    root = os.geteuid() == 0
    as_pg = ["runuser", "-u", "postgres", "--"] if root else []
    tmp = tempfile.mkdtemp(prefix="cnsdiff-pg-")
    data, sock = os.path.join(tmp, "data"), os.path.join(tmp, "sock")
    os.makedirs(sock)
    if root:
        shutil.chown(tmp, "postgres")
        shutil.chown(sock, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*as_pg, str(bindir / "initdb"), "-D", data, "-A", "trust", "-U", "postgres"], check=True,
                   capture_output=True, timeout=120)
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1"
    subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", data, "-o", opts, "-l", os.path.join(tmp, "log"), "-w",
                    "start"], check=True, capture_output=True, timeout=120)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


def test_two_workers_on_a_real_postgresql_server(tmp_path, postgres_url):
    """The scale-out recipe on a real server: the same command started twice (as on two machines)
    against one URL makes one study with the requested total; then `--workers 2` adds to it."""
    runs = tmp_path / "runs"
    # two processes started together pay the same start-up, so both get trials; with --workers the
    # parent starts training while its child still imports torch, and may finish a short study alone
    _two_processes(postgres_url, runs, 6, "pg")
    study = load(postgres_url, "pg")
    assert 6 <= len(study.get_trials(deepcopy=False, states=FINISHED)) <= 7
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.FAIL))
    assert_every_trial_has_its_run(study, runs)
    pids = {json.loads((runs / t.user_attrs["run_id"] / "status.json").read_text())["pid"] for t in study.trials}
    assert len(pids) == 2  # both processes trained trials of the one study
    out = run_cli(tune_args(postgres_url, 9, "rns", 2, "--workers", "2", "--study", "pg", "--json"), runs)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["storage"] == postgres_url and summary["worker_exit_codes"] == [0]
    assert 9 <= summary["n_complete"] + summary["n_pruned"] <= 10 and summary["n_failed"] == 0
    assert_every_trial_has_its_run(load(postgres_url, "pg"), runs)


def test_an_unreachable_server_is_one_sentence(tmp_path):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = run_cli(tune_args(f"postgresql://postgres@127.0.0.1:{port}/x", 1), tmp_path / "runs", check=False)
    assert out.returncode == 2 and "cannot open the study storage" in out.stderr and "Traceback" not in out.stderr


# --- pruning, failures, search spaces (in process) --------------------------------------------------
def test_a_trial_below_the_threshold_is_pruned_through_the_stop_hook(tmp_path):
    runs = tmp_path / "runs"
    storage = f"sqlite:///{tmp_path / 'p.db'}"
    # validation Recall@20 is below 1.0 at every epoch: at epoch 2 (the end of the warm-up) this pruner must stop it
    pruner = optuna.pruners.ThresholdPruner(lower=1.0, n_warmup_steps=2)
    summary = run_study("sample", "rns", 2, storage=storage, study="prune", epochs=6, preset="demo", device="cpu",
                        runs_dir=runs, pruner=pruner, overrides={"probe_triples": 64})
    assert summary["n_pruned"] == 2 and summary["n_complete"] == 0 and summary["best_value"] is None
    study = load(storage, "prune")
    for t in study.trials:
        assert t.state == TrialState.PRUNED and sorted(t.intermediate_values) == [1, 2]
        info = RunStore(runs).info(t.user_attrs["run_id"])
        assert info.status == "stopped" and "pruned by study prune" in info.message
        assert info.final["epochs_run"] == 2 < 6  # stopped by the trainer's stop hook, not trained out
        assert not info.resumable  # a pruned trial is not offered for resuming
        with pytest.raises(StoreError, match="pruned trial is not resumed"):
            resume_run(t.user_attrs["run_id"], RunStore(runs))


def test_failing_trials_are_reported_in_one_sentence_and_the_worker_gives_up(tmp_path, monkeypatch):
    monkeypatch.setattr(REGISTRY["rns"], "search_space", classmethod(lambda cls, trial: {
        "lr": trial.suggest_float("lr", -2.0, -1.0)}))  # a broken search space: lr < 0
    summary = run_study("sample", "rns", 5, storage=f"sqlite:///{tmp_path / 'f.db'}", study="bad", epochs=2,
                        preset="demo", device="cpu", runs_dir=tmp_path / "runs")
    assert summary["n_failed"] == 3 and summary["n_complete"] == 0  # three in a row, then it stops
    assert "3 trials in a row failed" in summary["gave_up"]
    for f in summary["failures"]:
        assert f["error"].startswith("the search space gave an invalid configuration: lr=")
        assert "it must be a positive number." in f["error"]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_search_space_gives_valid_configurations(sampler):
    shared = {"lr", "l2"}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(40):
        trial = study.ask()
        space = REGISTRY[sampler].search_space(trial)
        assert shared <= set(space)
        cfg = preset_config("tuned", sampler=sampler, **space)  # validates
        make_sampler(sampler, cfg, __import__("torch").device("cpu"))  # e.g. the noise schedule is buildable
        assert 1e-4 <= cfg.lr <= 1e-2
        # the best configuration is read back from the stored parameters through the same space
        assert trial_overrides(sampler, trial.params) == space
        study.tell(trial, 0.0)
    own = set(space) - shared
    assert own or sampler == "rns"
    fixed = REGISTRY[sampler].search_space(optuna.trial.FixedTrial(dict(trial.params)))
    assert fixed == space


def test_cnsdiff_searches_every_knob_the_issue_names():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen: set[str] = set()
    for _ in range(30):
        seen |= set(REGISTRY["cnsdiff"].search_space(study.ask()))
    assert {"schedule", "noise_scale", "hard_start", "hard_stride", "denoise_steps", "cl_weight", "cl_temperature",
            "causal", "causal_weight", "lr", "l2", "mix_ramp_epochs", "loss_weighting"} <= seen


def test_the_causal_weight_range_follows_the_causal_kind():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    weights = {"kl": [], "env-variance": []}
    for _ in range(200):
        space = REGISTRY["cnsdiff"].search_space(study.ask())
        if space["causal"] in weights:
            weights[space["causal"]].append(space["causal_weight"])
        else:
            assert "causal_weight" not in space
    assert max(weights["kl"]) <= 1.0 and max(weights["env-variance"]) > 10  # env-variance needs large weights


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_the_journal_heartbeat_marks_a_silent_trial_stale(tmp_path):
    storage = HeartbeatJournalStorage(str(tmp_path / "h.journal"), heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage, study_name="h", direction="maximize")
    live, silent = study.ask(), study.ask()
    storage.record_heartbeat(silent._trial_id)
    time.sleep(2.5)
    storage.record_heartbeat(live._trial_id)
    assert storage._get_stale_trial_ids(study._study_id) == [silent._trial_id]
    optuna.storages.fail_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {live.number: TrialState.RUNNING, silent.number: TrialState.FAIL}


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_dead_workers_trial_costs_the_time_to_its_last_heartbeat(tmp_path):
    """A trial failed long after its worker died (the next session's worker marks it) counts until
    its last heartbeat, not until it was marked; finished trials count start to end."""
    storage = HeartbeatJournalStorage(str(tmp_path / "c.journal"), heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage, study_name="c", direction="maximize")
    dead, done = study.ask(), study.ask()
    storage.record_heartbeat(dead._trial_id)
    time.sleep(2.5)
    storage.record_heartbeat(done._trial_id)
    optuna.storages.fail_stale_trials(study)  # dead has been silent past the grace, done has not
    study.tell(done, 1.0)
    trials = {t.number: t for t in study.get_trials()}
    assert trials[dead.number].state == TrialState.FAIL
    assert trial_seconds(trials[dead.number]) < 1.0
    assert trial_seconds(trials[done.number]) >= 2.5


def test_best_overrides_reads_a_study_back(tmp_path):
    storage = f"sqlite:///{tmp_path / 'b.db'}"
    summary = run_study("sample", "dns", 2, storage=storage, study="b", epochs=2, preset="demo", device="cpu",
                        runs_dir=tmp_path / "runs", overrides={"probe_triples": 64})
    best = best_overrides(storage, "b", "dns")
    assert best == {k: summary["best_params"][k] for k in ("lr", "l2", "dns_candidates")}
    with pytest.raises(TuneError, match="tuned dns, not rns"):
        best_overrides(storage, "b", "rns")
    with pytest.raises(TuneError, match="there is no study 'nope'"):
        best_overrides(storage, "nope", "dns")


# --- the experiment grid on the same engine --------------------------------------------------------
GRID = ["experiment", "--dataset", "sample", "--samplers", "mostpop,rns,pns", "--preset", "demo", "--seeds", "2",
        "--epochs", "2", "--device", "cpu", "--no-reference", "--set", "probe_triples=64", "--set", "test_eval=selected"]


def test_the_grid_is_shared_by_worker_processes_and_keeps_its_table(tmp_path):
    runs = tmp_path / "runs"
    storage = f"journal:{tmp_path / 'grid.journal'}"
    out = run_cli([sys.executable, "-m", "cnsdiff_core", *GRID, "--workers", "2", "--storage", storage,
                   "--out", str(tmp_path / "t.csv")], runs)
    stored = [r for r in RunStore(runs).list_runs()]
    assert len(stored) == 4  # 2 samplers x 2 seeds, each cell trained exactly once by the two workers
    cells = {(r.config["sampler"], r.config["seed"]) for r in stored}
    assert cells == {("rns", 0), ("rns", 1), ("pns", 0), ("pns", 1)}
    # trained by the two processes between them; on a loaded machine the second one's start (importing
    # torch) can take longer than the four tiny cells, so which process trains how many is not fixed
    assert 1 <= len({json.loads((r.path / "status.json").read_text())["pid"] for r in stored}) <= 2
    header = "| sampler | preset | seeds | valid R@20 | IID R@20 | IID N@20 | OOD R@20 | OOD N@20 | OOD R@10 |"
    assert header in out.stdout and "| mostpop | - | 1 |" in out.stdout and "| rns | demo | 2 |" in out.stdout
    import pandas as pd

    frame = pd.read_csv(tmp_path / "t.csv")
    assert list(frame["sampler"]) == ["mostpop", "rns", "rns", "pns", "pns"]
    assert set(frame["run_id"].dropna()) == {r.run_id for r in stored}
    # again: nothing is trained, the same table comes back from the study
    again = run_cli([sys.executable, "-m", "cnsdiff_core", *GRID, "--storage", storage], runs)
    assert len(RunStore(runs).list_runs()) == 4
    assert again.stdout.split("### ")[1] == out.stdout.split("### ")[1].split("wrote")[0]


def test_a_stopped_grid_cell_is_trained_again_on_the_next_run(tmp_path):
    from cnsdiff_core.grid import run_experiment

    runs = tmp_path / "runs"
    small = {"epochs": 3, "probe_triples": 64, "test_eval": "selected"}
    started = []

    def stop_after_first_run() -> bool:
        started[:] = [r for r in RunStore(runs).list_runs()]
        return bool(started)

    first = run_experiment("sample", ["rns"], seeds=2, device="cpu", preset="demo", overrides=small,
                           with_reference=False, runs_dir=str(runs), with_mostpop=False, should_stop=stop_after_first_run)
    assert first.frame.empty  # the only cell it began was stopped: no row, the run is kept as 'stopped'
    assert [r.status for r in RunStore(runs).list_runs()] == ["stopped"]
    second = run_experiment("sample", ["rns"], seeds=2, device="cpu", preset="demo", overrides=small,
                            with_reference=False, runs_dir=str(runs), with_mostpop=False)
    assert sorted(second.frame["seed"]) == [0, 1] and (second.frame["epochs_run"] == 3).all()
    assert sorted(r.status for r in RunStore(runs).list_runs()) == ["finished", "finished", "stopped"]


def test_a_bad_grid_setting_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match="lr='x'"):
        from cnsdiff_core.grid import run_experiment

        run_experiment("sample", ["rns"], overrides={"lr": "x"}, runs_dir=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists() or not RunStore(tmp_path / "runs").list_runs()


def test_a_variant_ablates_the_methods_best_configuration_not_the_preset():
    """`experiment --best-from ... --variant nocausal:causal=none`: the variant's cell is the best
    configuration with that one setting changed (RESULTS 1's Yelp2018 ablation), the same config as
    `train` with the best settings and `--set causal=none`; without --best-from it is the preset's."""
    from cnsdiff_core.config import preset_config
    from cnsdiff_core.grid import cell_config, grid_cells

    best = {"cnsdiff": {"lr": 0.0026, "causal": "env-variance", "causal_weight": 103.0, "cl_weight": 0.07},
            "rns": {"lr": 0.008}}
    cells = grid_cells(["rns", "cnsdiff"], "tuned", seeds=1, with_reference=False,
                       variants={"nocausal": {"causal": "none"}}, sampler_overrides=best, label="optuna-best")
    by = {c.label if c.sampler == "cnsdiff" else c.sampler: c for c in cells}
    assert set(by) == {"rns", "optuna-best", "nocausal"}
    cfg = cell_config(by["nocausal"], "sample", "exposure", "cpu", {"epochs": 3})
    manual = preset_config("tuned", **{**best["cnsdiff"], "causal": "none", "epochs": 3, "dataset": "sample",
                                       "shift": "exposure", "sampler": "cnsdiff", "seed": 0, "device": "cpu"})
    assert cfg.to_dict() | {"preset": None} == manual.to_dict() | {"preset": None}
    assert cfg.lr == pytest.approx(0.0026) and cfg.causal == "none" and cfg.cl_weight == pytest.approx(0.07)
    plain = grid_cells(["cnsdiff"], "tuned", with_reference=False, variants={"nocausal": {"causal": "none"}})
    assert next(c for c in plain if c.label == "nocausal").overrides == {"causal": "none"}


# --- the fair benchmark's report ---------------------------------------------------------------------
def test_fair_report_tables_the_searches_the_seeds_and_paired_tests(tmp_path):
    import pandas as pd

    from cnsdiff_core.grid import run_experiment
    from cnsdiff_core.fair import fair_report, seeds_study_name, tune_study_name

    runs, studies = tmp_path / "runs", tmp_path / "results" / "studies"
    journal = f"journal:{studies / 'sample.journal'}"
    small = {"probe_triples": 64}
    for s in ("rns", "pns"):
        run_study("sample", s, 2, storage=journal, study=tune_study_name("sample", s), epochs=2, preset="demo",
                  device="cpu", runs_dir=runs, overrides=small)
    best = {s: best_overrides(journal, tune_study_name("sample", s), s) for s in ("rns", "pns")}
    table = run_experiment("sample", ["rns", "pns"], seeds=2, device="cpu", preset="demo",
                           overrides={**small, "epochs": 2, "test_eval": "selected"}, with_reference=False,
                           runs_dir=str(runs), with_mostpop=False, storage=journal,
                           study=seeds_study_name("sample", 2), sampler_overrides=best, label="optuna-best")
    assert set(table.frame["preset"]) == {"optuna-best"}
    assert table.frame.set_index(["sampler", "seed"]).loc[("pns", 0), "run_id"]
    rns_lr = RunStore(runs).info(table.frame[table.frame.sampler == "rns"]["run_id"].iloc[0]).config["lr"]
    assert rns_lr == pytest.approx(best["rns"]["lr"])  # the seeds train the study's best configuration
    out_csv, out_md = tmp_path / "results" / "fair.csv", tmp_path / "results" / "fair.md"
    frame = fair_report(["sample"], studies, ["rns", "pns"], {"sample": 2}, out_csv, out_md, runs_dir=runs)
    rows = frame.set_index("sampler")
    means = table.summary.set_index("sampler")["ood_recall@20"]
    base = means.idxmax()  # the best baseline is the one with the higher OOD Recall@20
    other = "pns" if base == "rns" else "rns"
    assert (rows["best_baseline"] == base).all() and rows.loc[other, "ood_recall@20"] == pytest.approx(means[other])
    assert rows.loc[other, "rel_ood_recall@20"] == pytest.approx(means[other] / means[base] - 1)
    assert 0 <= rows.loc[other, "wilcoxon_p"] <= 1 and rows.loc[other, "paired_users"] > 100
    assert pd.isna(rows.loc[base].get("wilcoxon_p")) and (rows["seeds"] == 2).all()
    assert (rows["n_complete"] + rows["n_pruned"] == 2).all() and (rows["tuning_hours"] > 0).all()
    assert f"| {other} | 2 | " in out_md.read_text() and "best baseline" in out_md.read_text()
    best_line = next(l for l in out_md.read_text().splitlines() if l.startswith(f"- {other} ("))
    assert f"lr={best[other]['lr']:.3g}" in best_line  # the configuration the seeds trained
    # a fresh clone has the journal and the per-user copies, not the runs: the same table
    shutil.rmtree(runs)
    again = fair_report(["sample"], studies, ["rns", "pns"], {"sample": 2}, out_csv, out_md)
    assert again.set_index("sampler").loc[other, "wilcoxon_p"] == pytest.approx(rows.loc[other, "wilcoxon_p"])


# --- scripts/fair_benchmark.sh: committing a live journal ------------------------------------------------
def _git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def test_fair_benchmark_snapshot_commits_a_live_journal_up_to_its_last_complete_line(tmp_path):
    """`fair_benchmark.sh --snapshot` commits each journal as a worker has written it so far, without
    the half-written last line and without touching the file the workers append to; a second
    snapshot with nothing new commits nothing."""
    repo = tmp_path / "clone"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[1] / "scripts" / "fair_benchmark.sh", repo / "scripts")
    journal = repo / "results" / "studies" / "toy.journal"
    journal.parent.mkdir(parents=True)
    journal.write_text('{"op": 0}\n')
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    journal.write_text('{"op": 0}\n{"op": 1}\n{"op": 2, "hal')  # a worker is writing line 3
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PYTHON": sys.executable}
    for _ in range(2):
        res = subprocess.run(["bash", "scripts/fair_benchmark.sh", "--snapshot"], cwd=repo, env=env,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
    assert _git(repo, "show", "HEAD:results/studies/toy.journal") == '{"op": 0}\n{"op": 1}\n'
    assert journal.read_text().endswith('{"op": 2, "hal')  # the live file is as the worker left it
    log = _git(repo, "log", "--format=%s").splitlines()
    assert log == ["Fair benchmark: toy journal so far (snapshot)", "start"]


def test_fair_benchmark_report_covers_every_dataset_with_a_journal_not_only_this_runs(tmp_path):
    """Resuming one dataset (`DATASETS=yelp2018`) ends in a report that is committed as the whole
    table: it must still hold the other datasets' rows, so it is asked for every dataset that has a
    journal (and each keeps its own budget), not only for those this run was given."""
    repo = tmp_path / "clone"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[1] / "scripts" / "fair_benchmark.sh", repo / "scripts")
    studies = repo / "results" / "studies"
    studies.mkdir(parents=True)
    for ds in ("sample", "food", "yelp2018"):
        (studies / f"{ds}.journal").write_text("")
    fake = tmp_path / "fake_python"  # stands in for the interpreter: records what the report asks for
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$ARGS_OUT"\n')
    fake.chmod(0o755)
    args_out = tmp_path / "args.txt"
    env = {**os.environ, "PYTHON": str(fake), "ARGS_OUT": str(args_out), "DATASETS": "yelp2018"}
    res = subprocess.run(["bash", "scripts/fair_benchmark.sh", "--report"], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    args = args_out.read_text().splitlines()
    assert args[args.index("--datasets") + 1] == "sample,food,yelp2018"
    budgets = [args[i + 1] for i, a in enumerate(args) if a == "--budget"]
    assert budgets == ["sample=24", "food=24", "yelp2018=8"]


def test_fair_pairs_tests_one_sampler_against_every_other_from_the_committed_copies(tmp_path):
    """`fair-pairs` pairs a sampler with each other sampler of a dataset over users, on the mean over
    each one's seeds, from the table's run ids and the per-user copies alone (no journal, no runs);
    it reports the share of users whose values differ; a dataset without seed runs is one sentence."""
    import numpy as np
    import pandas as pd
    from scipy import stats

    from cnsdiff_core.fair import fair_pairs, pairs_markdown

    rng = np.random.default_rng(0)
    users = np.arange(50, dtype=np.int32)
    per_user = tmp_path / "fair" / "per_user" / "toy"
    per_user.mkdir(parents=True)
    values = {}
    for sampler, shift in (("cnsdiff", 0.0), ("rns", 0.2), ("dns", 0.0)):
        for seed in range(2):
            ood = (rng.random(50) < 0.3 + shift).astype(np.float32)
            ood[:10] = 0.0  # ten users no sampler reaches
            values[sampler, seed] = ood
            np.savez_compressed(per_user / f"{sampler}-{seed}.npz", ood_users=users, **{"ood_recall@20": ood},
                                iid_users=users, **{"iid_recall@20": ood})
    table = tmp_path / "fair_benchmark.csv"
    pd.DataFrame([{"dataset": "toy", "sampler": s, "seeds": 2, "ood_recall@20": 0.1,
                   "run_ids": f"{s}-0 {s}-1"} for s in ("cnsdiff", "rns", "dns")]).to_csv(table, index=False)
    pairs = fair_pairs("toy", "cnsdiff", table, metrics=("ood_recall@20",))
    assert list(pairs["other"]) == ["rns", "dns"]
    mine = (values["cnsdiff", 0] + values["cnsdiff", 1]) / 2
    theirs = (values["rns", 0] + values["rns", 1]) / 2
    row = pairs.set_index("other").loc["rns"]
    assert row["mean"] == pytest.approx(mine.mean()) and row["other_mean"] == pytest.approx(theirs.mean())
    assert row["rel"] == pytest.approx(mine.mean() / theirs.mean() - 1)
    assert row["differing"] == pytest.approx(np.mean(mine != theirs)) and row["differing"] <= 0.8
    assert row["ttest_p"] == pytest.approx(stats.ttest_rel(mine, theirs).pvalue)
    assert "| ood_recall@20 | rns |" in pairs_markdown(pairs) and "| cnsdiff | the other |" in pairs_markdown(pairs)
    with pytest.raises(ValueError, match="no seed runs for dataset 'food'.*toy"):
        fair_pairs("food", "cnsdiff", table)
    with pytest.raises(ValueError, match="no seed runs of 'mixgcf'"):
        fair_pairs("toy", "mixgcf", table)
    (per_user / "dns-1.npz").unlink()  # a copy that went missing is said, not a comparison dropped
    with pytest.raises(ValueError, match="copy .* of dns's runs on toy is missing"):
        fair_pairs("toy", "cnsdiff", table, metrics=("ood_recall@20",))


def test_fair_markdown_writes_an_underflowed_p_value_as_a_bound():
    """scipy's rank test returns 0.0 for a p below the smallest double (KuaiRec's MixGCF row); the
    table must not claim p = 0."""
    import pandas as pd
    from cnsdiff_core.fair import p_value, to_markdown

    assert p_value(0.0) == "< 1e-300" and p_value(0.0123) == "0.0123" and p_value(float("nan")) == "-"
    frame = pd.DataFrame([{"dataset": "d", "sampler": "rns", "shift": "exposure", "best_baseline": "rns"},
                          {"dataset": "d", "sampler": "pns", "shift": "exposure", "best_baseline": "rns",
                           "rel_ood_recall@20": -0.18, "wilcoxon_p": 0.0, "ttest_p": 2.85e-24}])
    row = next(line for line in to_markdown(frame).splitlines() if line.startswith("| pns"))
    assert row.endswith("| -18.0% | < 1e-300 | 2.85e-24 |")
    # the popularity floor is said under the dataset's table when it is known
    assert "MostPop" not in to_markdown(frame)
    assert "MostPop (no training, the popularity floor): ood_recall@20 0.0493." in to_markdown(frame, floors={"d": 0.0493})


def test_the_fair_report_only_reads_a_journal_with_a_dead_workers_trial(tmp_path):
    """A report may run over a copy of a journal that a worker on another machine still appends to:
    it must not write (marking a stale trial failed is the workers' job), or the copies diverge."""
    import time as _time

    import optuna

    from cnsdiff_core.fair import fair_report, tune_study_name
    from cnsdiff_core.study_storage import HeartbeatJournalStorage

    studies = tmp_path / "studies"
    studies.mkdir()
    path = studies / "sample.journal"
    store = HeartbeatJournalStorage(str(path), 30, 120)
    study = optuna.create_study(study_name=tune_study_name("sample", "rns"), storage=store, direction="maximize")
    done = study.ask()
    study.tell(done, 0.1)
    dead = study.ask()  # its worker died long ago: last heartbeat an hour back
    store.set_trial_system_attr(dead._trial_id, HeartbeatJournalStorage.HEARTBEAT_ATTR, _time.time() - 3600)
    before = path.read_bytes()
    frame = fair_report(["sample"], studies, ["rns"], {"sample": 2}, tmp_path / "f.csv", tmp_path / "f.md")
    assert path.read_bytes() == before
    assert frame.set_index("sampler").loc["rns", "n_complete"] == 1
    # a worker (tune's summary) does mark it failed
    from cnsdiff_core.tune import study_summary
    assert study_summary(optuna.load_study(study_name=study.study_name, storage=store), "j")["n_failed"] == 1

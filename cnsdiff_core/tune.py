"""Hyper-parameter studies (Optuna) on one shared storage, so a sweep grows past one machine.

  storage  where studies live (`study_storage`): a SQLite file in the runs folder by default (`<runs>/studies.db`,
           nothing to start), any SQLAlchemy URL (`postgresql://user:pw@host/db`), or an Optuna
           journal file (`journal:PATH`, or a path ending in .journal / .log), which is
           append-only text and can be committed with results so a fresh clone resumes it
  study    one search: dataset, shift, sampler, preset, epoch budget and seed, stored with the
           study; a worker started with other settings on the same study is refused
  trial    one ordinary run in the run store; its status.json records {"tune": {study, trial,
           storage}}. The objective is the best IID-validation Recall@20 of the run (never a test
           metric: trials run with test_eval=selected). Validation Recall@20 is reported every
           epoch and Optuna's median pruner stops runs that trail the median after a warm-up.

`trials` is the study's TOTAL: a worker stops once the study holds that many finished (complete or
pruned) trials, so N workers on one storage overshoot by at most N - 1. Every running trial has a
heartbeat; when a worker dies, another worker marks its trial FAIL after the grace period and
fills the budget with a new trial. Start the same command on as many processes or machines as you
have, all pointing at one storage.

The search spaces live next to each sampler (`Sampler.search_space`). `experiment` runs its grid
(seeds x samplers x presets) as a study on the same storages (cnsdiff_core.experiment).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import optuna
from optuna.trial import TrialState

from .config import SAMPLERS, ConfigError, TrainConfig, preset_config
from .study_storage import GRACE_S, HEARTBEAT_S, HeartbeatJournalStorage, TuneError, _safe, open_storage
from .events import Callback, EpochDone, TrialStarted
from .runs import PRUNED_PREFIX, RunStore, StoreError

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
OBJECTIVE = "valid_recall@20"
MAX_FAILS_IN_A_ROW = 3  # a worker gives up after this many failed trials of its own in a row


class StudyStopped(Exception):
    """Raised inside a trial when the worker was asked to stop (the trial is recorded as FAIL,
    so it never counts towards the budget; running the study again fills it)."""


# --- the sampler of trials -----------------------------------------------------------------------
class TrialSeededTPE(optuna.samplers.TPESampler):
    """TPE whose random draws for trial n come from seed + n: a study is reproducible from its
    seed, and workers sharing a study do not propose the same startup configurations (a plain
    seeded TPESampler in each of two processes would draw the same random trials twice)."""

    def __init__(self, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(seed=seed, **kwargs)
        self._base_seed = int(seed)

    def before_trial(self, study, trial) -> None:
        s = (self._base_seed * 1_000_003 + trial.number) % (2**32)
        self._rng.rng.seed(s)
        self._random_sampler._rng.rng.seed(s)
        super().before_trial(study, trial)


def make_pruner(epochs: int, warmup: int | None = None, startup: int = 5) -> optuna.pruners.BasePruner:
    """Median pruning on the per-epoch validation curve: from the `startup`-th finished trial on, a
    run whose Recall@20 at an epoch after the warm-up is below the median of earlier trials at that
    epoch stops. The warm-up (default a fifth of the epochs, at least 2) spares slow starters such
    as small learning rates."""
    warm = max(2, epochs // 5) if warmup is None else int(warmup)
    return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warm)


# --- one study -----------------------------------------------------------------------------------
@dataclass
class StudySpec:
    """What a study searches; stored with the study (a worker with other settings is refused)."""

    dataset: str
    shift: str
    sampler: str
    preset: str
    epochs: int
    seed: int
    overrides: dict

    def as_dict(self) -> dict:
        return {"dataset": self.dataset, "shift": self.shift, "sampler": self.sampler, "preset": self.preset,
                "epochs": self.epochs, "seed": self.seed, "overrides": dict(sorted(self.overrides.items()))}


def default_study_name(spec: StudySpec) -> str:
    extra = f"-{_digest(spec.overrides)}" if spec.overrides else ""
    return f"{_slug(spec.dataset)}-{spec.shift}-{spec.sampler}-{spec.preset}-{spec.epochs}ep-seed{spec.seed}{extra}"


def _slug(text: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_.=," else "-" for ch in str(text))
    return keep[:48] or "data"


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def check_spec(study: optuna.Study, spec: dict, what: str = "study") -> None:
    """Record the spec on a new study; refuse a worker whose settings differ from the stored ones."""
    stored = study.user_attrs.get("spec")
    if stored is None:
        study.set_user_attr("spec", spec)
        return
    stored = json.loads(json.dumps(stored))
    mine = json.loads(json.dumps(spec))
    if stored != mine:
        diff = sorted(k for k in set(stored) | set(mine) if stored.get(k) != mine.get(k))
        k = diff[0]
        a, b = stored.get(k), mine.get(k)
        if isinstance(a, dict) and isinstance(b, dict):  # e.g. the grid's cells: name the first that differs
            sub = sorted(x for x in set(a) | set(b) if a.get(x) != b.get(x))[0]
            k, a, b = f"{k}[{sub}]", a.get(sub, "(absent)"), b.get(sub, "(absent)")
        raise TuneError(f"{what} {study.study_name!r} was created with {k}={_cut(a)}, not {_cut(b)}; "
                        "use the same settings to continue it or pass --study NEW_NAME for a new one.")


def _cut(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_or_create(storage, name: str, sampler=None, pruner=None) -> optuna.Study:
    try:
        return optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler,
                                   pruner=pruner, load_if_exists=True)
    except Exception as exc:  # a database error while creating the tables or the study
        if isinstance(exc, (TuneError, KeyboardInterrupt)):
            raise
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
        raise TuneError(f"cannot create or load study {name!r} ({type(exc).__name__}: {reason}); "
                        "check the storage.") from None


def count_states(study: optuna.Study) -> dict[str, int]:
    out = {"n_complete": 0, "n_pruned": 0, "n_failed": 0, "n_running": 0, "n_waiting": 0}
    names = {TrialState.COMPLETE: "n_complete", TrialState.PRUNED: "n_pruned", TrialState.FAIL: "n_failed",
             TrialState.RUNNING: "n_running", TrialState.WAITING: "n_waiting"}
    for t in study.get_trials(deepcopy=False):
        out[names[t.state]] += 1
    return out


def n_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def fail_stale(study: optuna.Study) -> None:
    optuna.storages.fail_stale_trials(study)


def trial_seconds(trial) -> float:
    """Wall seconds a finished trial computed. A failed trial whose worker died is marked failed by
    the next worker that looks, which can be a session later: its time ends at its last heartbeat
    (a journal keeps it with the trial), not when it was marked."""
    if not (trial.datetime_complete and trial.datetime_start):
        return 0.0
    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    beat = trial.system_attrs.get(HeartbeatJournalStorage.HEARTBEAT_ATTR)
    if trial.state == TrialState.FAIL and beat is not None:
        seconds = min(seconds, max(float(beat) - trial.datetime_start.timestamp(), 0.0))
    return seconds


def study_summary(study: optuna.Study, storage_label: str, extra: dict | None = None,
                  mark_stale: bool = True) -> dict:
    """The `tune --json` object: best value, its parameters and run, trial counts by state. First it
    marks the trials of dead workers failed, as a worker would; `mark_stale=False` only reads (a
    report over a copy of a journal that a worker elsewhere still writes must not add to it)."""
    if mark_stale:
        fail_stale(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = max(complete, key=lambda t: t.value) if complete else None
    failures = [{"trial": t.number, "error": t.user_attrs.get("error", "")}
                for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))]
    seconds = sum(trial_seconds(t) for t in study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.FAIL)))
    out = {"study": study.study_name, "storage": _safe(storage_label),
           "best_value": None if best is None else float(best.value),
           "best_params": {} if best is None else dict(best.params),
           "best_run_id": None if best is None else best.user_attrs.get("run_id"),
           "best_trial": None if best is None else best.number,
           **count_states(study), "trial_seconds": round(seconds, 1), "failures": failures,
           "spec": study.user_attrs.get("spec", {})}
    return out | (extra or {})


def trial_overrides(sampler: str, params: dict) -> dict:
    """TrainConfig overrides of a finished trial's parameters (replayed through the search space)."""
    from .samplers import REGISTRY

    return REGISTRY[sampler].search_space(optuna.trial.FixedTrial(dict(params)))


class TrialObjective:
    """One trial = one run in the run store, pruned on its validation curve."""

    def __init__(self, base: TrainConfig, data, store: RunStore, storage_label: str,
                 callbacks: Iterable[Callback] = (), should_stop: Callable[[], bool] | None = None,
                 log: Callable[[str], None] = lambda s: None) -> None:
        from .samplers import REGISTRY

        self.base, self.data, self.store, self.label = base, data, store, storage_label
        self.space = REGISTRY[base.sampler].search_space
        self.callbacks = list(callbacks)
        self.should_stop = should_stop or (lambda: False)
        self.log = log

    def __call__(self, trial: optuna.Trial) -> float:
        from .data.dataset import DataError
        from .recorder import train_and_store
        from .train import TrainingError

        name = trial.study.study_name
        finished = n_finished(trial.study)
        for cb in self.callbacks:
            cb(TrialStarted(trial.number, name, finished))
        try:
            cfg = self.base.with_updates(**self.space(trial), preset="trial")
        except ConfigError as exc:
            trial.set_user_attr("error", f"the search space gave an invalid configuration: {exc}")
            raise
        pruned: dict[str, int] = {}

        def on_event(event) -> None:
            if not isinstance(event, EpochDone):
                return
            rec = event.record
            value = rec.get(OBJECTIVE)
            if value is None or not math.isfinite(float(value)):
                return
            trial.report(float(value), int(rec["epoch"]))
            if trial.should_prune():
                pruned["epoch"] = int(rec["epoch"])

        def stop() -> bool | str:
            if pruned:
                return f"{PRUNED_PREFIX} {name} (trial {trial.number}) after epoch {pruned['epoch']}"
            return bool(self.should_stop())

        def created(run_id: str) -> None:
            trial.set_user_attr("run_id", run_id)  # first thing: a killed trial still names its run

        meta = {"tune": {"study": name, "trial": trial.number, "storage": _safe(self.label)}}
        try:
            run_id, res = train_and_store(cfg, self.store, [on_event, *self.callbacks], stop, data=self.data,
                                          on_created=created, meta=meta)
        except (ConfigError, TrainingError, StoreError, DataError) as exc:
            trial.set_user_attr("error", str(exc))
            raise
        trial.set_user_attr("best_epoch", res.best_epoch)
        trial.set_user_attr("epochs_run", res.epochs_run)
        trial.set_user_attr("seconds", round(res.seconds, 2))
        if pruned:
            self.log(f"trial {trial.number}: pruned after epoch {pruned['epoch']} ({run_id})")
            raise optuna.TrialPruned(f"the pruner stopped it on validation Recall@20 after epoch {pruned['epoch']}")
        if res.status == "stopped":
            trial.set_user_attr("error", "stopped by request")
            raise StudyStopped(f"trial {trial.number} was stopped by request; its run {run_id} is kept")
        value = res.metrics.get(OBJECTIVE)
        if value is None or not math.isfinite(float(value)):
            trial.set_user_attr("error", "the run has no validation Recall@20")
            raise TrainingError(f"run {run_id} has no validation Recall@20; check eval_every.")
        self.log(f"trial {trial.number}: validation Recall@20 {float(value):.4f} at epoch {res.best_epoch} ({run_id})")
        return float(value)


def base_config(dataset: str, sampler: str, preset: str = "tuned", shift: str | None = None,
                epochs: int | None = None, seed: int = 0, device: str = "auto",
                overrides: dict | None = None) -> TrainConfig:
    if sampler not in SAMPLERS:
        raise ConfigError(f"sampler {sampler!r} is unknown; use one of {', '.join(SAMPLERS)}.")
    updates = dict(overrides or {})
    if epochs is not None:
        updates["epochs"] = epochs
    updates.update(dataset=dataset, shift=shift, sampler=sampler, seed=seed, device=device)
    cfg = preset_config(preset, **updates)
    if cfg.selection != "iid-valid":
        raise ConfigError(f"preset {preset!r} selects epochs on the OOD test (selection={cfg.selection}); "
                          "a study tunes on IID validation only: use another preset or --set selection=iid-valid.")
    # the tests are scored once, never watched; FHN and hardness at the first and the selected epoch
    # only, unless asked (the probe runs on a forked generator: the trial's numbers are the same)
    return cfg.with_updates(test_eval="selected", **({} if "diagnose_every" in updates else {"diagnose_every": 0}))


@dataclass
class OpenStudy:
    study: optuna.Study
    label: str  # the storage as given (or the default SQLite URL)
    config: TrainConfig  # the base configuration of every trial
    data: Any
    trials: int


def open_study(dataset: str, sampler: str, trials: int, storage: str | None = None, study: str | None = None,
               epochs: int | None = None, preset: str = "tuned", shift: str | None = None, seed: int = 0,
               device: str = "auto", overrides: dict | None = None, runs_dir: str | Path | None = None,
               heartbeat_interval: int = HEARTBEAT_S, grace_period: int = GRACE_S, warmup: int | None = None,
               pruner=None, enqueue: dict | None = None) -> OpenStudy:
    """Validate the settings, load the data, open (or create) the study. Raises ConfigError /
    DataError / TuneError, before any training, when something is unusable."""
    from .data import load_dataset

    if int(trials) < 1:
        raise ConfigError(f"--trials {trials} is invalid: a study needs at least 1 trial.")
    cfg = base_config(dataset, sampler, preset, shift, epochs, seed, device, overrides)
    data = load_dataset(cfg.dataset, cfg.shift, seed=cfg.data_seed)
    cfg = cfg.with_updates(shift=data.shift)
    spec = StudySpec(dataset, data.shift, sampler, preset, cfg.epochs, seed, dict(overrides or {}))
    name = study or default_study_name(spec)
    store_, label = open_storage(storage, runs_dir, heartbeat_interval, grace_period)
    n_startup = max(2, min(10, int(trials) // 3))
    st = load_or_create(store_, name, TrialSeededTPE(seed=seed, n_startup_trials=n_startup),
                        pruner or make_pruner(cfg.epochs, warmup))
    check_spec(st, spec.as_dict())
    if st.user_attrs.get("budget") != int(trials):
        st.set_user_attr("budget", int(trials))  # the latest requested total (the Tune page shows it)
    if enqueue and not st.get_trials(deepcopy=False):
        st.enqueue_trial(dict(enqueue), skip_if_exists=True)
    return OpenStudy(st, label, cfg, data, int(trials))


def work(opened: OpenStudy, timeout: float | None = None, runs_dir: str | Path | None = None,
         callbacks: Iterable[Callback] = (), should_stop: Callable[[], bool] | None = None,
         log: Callable[[str], None] = lambda s: None) -> dict:
    """One worker: trials until the study holds `trials` finished ones (or `timeout` s pass, or
    should_stop()). Returns study_summary()."""
    from .data.dataset import DataError
    from .train import TrainingError

    st, trials = opened.study, opened.trials
    store = RunStore(runs_dir) if runs_dir else RunStore()
    objective = TrialObjective(opened.config, opened.data, store, opened.label, callbacks, should_stop, log)
    fail_stale(st)
    stopped, gave_up = False, ""
    t0 = time.time()
    if n_finished(st) < trials and not (should_stop and should_stop()):
        streak = {"fails": 0}

        def guard(study_: optuna.Study, frozen) -> None:
            nonlocal gave_up
            failed = frozen.state == TrialState.FAIL
            streak["fails"] = streak["fails"] + 1 if failed else 0
            if failed and frozen.user_attrs.get("error") != "stopped by request":
                log(f"trial {frozen.number} failed: {frozen.user_attrs.get('error') or 'see its run'}")
            if streak["fails"] >= MAX_FAILS_IN_A_ROW:
                gave_up = (f"{MAX_FAILS_IN_A_ROW} trials in a row failed (last: "
                           f"{frozen.user_attrs.get('error') or 'unknown error'}); fix the settings and run again.")
                study_.stop()

        try:
            st.optimize(objective, n_trials=None, timeout=timeout,
                        catch=(ConfigError, TrainingError, StoreError, DataError),
                        callbacks=[optuna.study.MaxTrialsCallback(trials, states=FINISHED), guard])
        except StudyStopped:
            stopped = True
    return study_summary(st, opened.label, {"trials": trials, "stopped": stopped, "gave_up": gave_up,
                                            "worker_seconds": round(time.time() - t0, 1)})


def run_study(dataset: str, sampler: str, trials: int, storage: str | None = None, study: str | None = None,
              epochs: int | None = None, timeout: float | None = None, preset: str = "tuned",
              shift: str | None = None, seed: int = 0, device: str = "auto", overrides: dict | None = None,
              runs_dir: str | Path | None = None, heartbeat_interval: int = HEARTBEAT_S,
              grace_period: int = GRACE_S, warmup: int | None = None, pruner=None,
              enqueue: dict | None = None, callbacks: Iterable[Callback] = (),
              should_stop: Callable[[], bool] | None = None, log: Callable[[str], None] = lambda s: None) -> dict:
    """open_study + work: one worker of a study, as `python -m cnsdiff_core tune` runs it.

    enqueue: parameters of a first trial (e.g. the schedule lab's family), used once per study.
    pruner: an Optuna pruner instead of the median pruner (tests use a threshold)."""
    opened = open_study(dataset, sampler, trials, storage, study, epochs, preset, shift, seed, device, overrides,
                        runs_dir, heartbeat_interval, grace_period, warmup, pruner, enqueue)
    return work(opened, timeout, runs_dir, callbacks, should_stop, log)


# --- local workers --------------------------------------------------------------------------------
def spawn_workers(args: list[str], n: int, env: dict | None = None) -> list[subprocess.Popen]:
    """Start n more worker processes of the command line `python -m cnsdiff_core ARGS` (one thread
    each); the caller works too and then waits for them (wait_workers)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    repo = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH", "")) if p)
    return [subprocess.Popen([sys.executable, "-m", "cnsdiff_core", *args], env=env, stdout=subprocess.DEVNULL)
            for _ in range(max(n, 0))]


def wait_workers(procs: list[subprocess.Popen]) -> list[int]:
    return [p.wait() for p in procs]


# --- browsing studies (the Tune page, the report) ---------------------------------------------------
def list_studies(storage) -> list[dict]:
    """Every study in a storage: name, spec, trial counts, best value (newest first as stored)."""
    out = []
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        out.append({"study": s.study_name, "spec": s.user_attrs.get("spec", {}), "kind": s.user_attrs.get("kind", "tune"),
                    "n_trials": s.n_trials, "started": s.datetime_start})
    return out


def trials_frame(study: optuna.Study):
    """One row per trial: number, state, value, run id, epochs, seconds, error, parameters."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        secs = ((t.datetime_complete - t.datetime_start).total_seconds()
                if t.datetime_complete and t.datetime_start else None)
        row = {"trial": t.number, "state": t.state.name.lower(), "value": t.value,
               "run_id": t.user_attrs.get("run_id"), "best_epoch": t.user_attrs.get("best_epoch"),
               "epochs_run": t.user_attrs.get("epochs_run", max(t.intermediate_values) if t.intermediate_values else None),
               "seconds": secs, "error": t.user_attrs.get("error", "")}
        row |= {f"param {k}": v for k, v in t.params.items()}
        rows.append(row)
    return pd.DataFrame(rows)


def best_overrides(storage: str | None, study: str, sampler: str, runs_dir: str | Path | None = None) -> dict:
    """TrainConfig overrides of a study's best trial (its parameters replayed through the sampler's
    search space). Raises TuneError when the study does not exist or has no complete trial."""
    store_, label = open_storage(storage, runs_dir)
    try:
        st = optuna.load_study(study_name=study, storage=store_)
    except KeyError:
        raise TuneError(f"there is no study {study!r} in {_safe(label)}; run `tune` first or check the name.") from None
    spec = st.user_attrs.get("spec", {})
    if spec.get("sampler") not in (None, sampler):
        raise TuneError(f"study {study!r} tuned {spec.get('sampler')}, not {sampler}; check the study name.")
    complete = st.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise TuneError(f"study {study!r} has no complete trial yet; let `tune` finish some first.")
    return trial_overrides(sampler, max(complete, key=lambda t: t.value).params)

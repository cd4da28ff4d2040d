"""Background training jobs, as tasks (`tasks`): a job trains a list of configs in turn, resumes a
run, or works on a tuning study (cnsdiff_core.tune) until it holds its trial budget. A front end
polls progress (epoch, batch, ETA, loss and validation curves) and asks for a stop, honoured after
the current batch. The app's Train, Home, Compare and Tune pages use one JobManager per server
process. Nothing here imports Streamlit.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import TrainConfig
from .data import load_dataset
from .events import BatchDone, EpochDone, Event, MapsProgress, Started, TrialStarted
from .runs import RunStore, default_root
from .recorder import resume_run, train_and_store
from .tasks import ACTIVE, Task, TaskFailed, TaskPool, TaskStopped, format_eta

_log = logging.getLogger(__name__)
MAX_POINTS = 4000  # loss points kept per job (older ones thinned)


@dataclass(eq=False)
class Job(Task):
    """One training job: its thread writes, pages read `snapshot()`."""

    configs: list[TrainConfig] = field(default_factory=list)
    store_root: str = ""
    resume_id: str | None = None
    study: dict | None = None  # keyword arguments of tune.run_study: this job works on a study
    n_total: int = 0  # a study job: its trial budget
    summary: dict = field(default_factory=dict)  # a study job: tune.study_summary at the end
    current: int = 0  # index of the config in training
    device: str = ""
    epoch: int = 0  # 1-based epoch in progress / last finished
    epochs: int = 0
    batch: int = 0
    n_batches: int = 0
    eta_s: float | None = None
    run_started: float | None = None
    run_ids: list[str] = field(default_factory=list)
    outcomes: list[dict] = field(default_factory=list)  # run_id, sampler, status, message
    losses: list[dict] = field(default_factory=list)  # run, sampler, x (epochs), loss
    valid: list[dict] = field(default_factory=list)  # run, sampler, epoch, valid / ood recall@20

    @property
    def job_id(self) -> str:
        return self.task_id

    @property
    def n_runs(self) -> int:
        return self.n_total or max(len(self.configs), 1)

    @property
    def fraction(self) -> float:
        if not self.active:
            return 1.0
        within = 0.0
        if self.epochs:
            within = ((max(self.epoch, 1) - 1) + (self.batch / self.n_batches if self.n_batches else 0)) / self.epochs
        return float(min(max((self.current + min(within, 1.0)) / self.n_runs, 0.0), 1.0))

    def total_eta(self) -> float | None:
        if self.eta_s is None or self.run_started is None:
            return None
        per_run = (time.time() - self.run_started) + self.eta_s
        return self.eta_s + per_run * (self.n_runs - self.current - 1)

    def snapshot(self) -> dict:
        with self.lock:
            return {"job_id": self.job_id, "title": self.title, "tag": self.tag, "status": str(self.status),
                    "message": self.message, "created": self.created, "ended": self.ended,
                    "current": self.current, "n_runs": self.n_runs, "device": self.device,
                    "epoch": self.epoch, "epochs": self.epochs, "batch": self.batch,
                    "n_batches": self.n_batches, "eta_s": self.total_eta(), "fraction": self.fraction,
                    "samplers": [c.sampler for c in self.configs], "run_ids": list(self.run_ids),
                    "outcomes": [dict(o) for o in self.outcomes], "losses": list(self.losses),
                    "valid": list(self.valid), "stop_requested": self.stop_requested,
                    "resume_id": self.resume_id, "kind": self.kind, "note": self.note,
                    "study": dict(self.study or {}), "summary": dict(self.summary)}


def run_maps_from_env() -> tuple[str, ...]:
    """CNSDIFF_RUN_MAPS: 'pca,umap' (default), 'pca', 'umap' or 'none'."""
    from .stored_maps import parse_maps

    raw = os.environ.get("CNSDIFF_RUN_MAPS", "pca,umap")
    try:
        return parse_maps(raw)
    except ValueError as exc:
        raise ValueError(f"CNSDIFF_RUN_MAPS={raw!r}: {exc}") from None


class JobManager:
    """Process-wide registry of training jobs (the app keeps one per process), run by a task pool
    whose slots are CNSDIFF_MAX_JOBS (default 1: later jobs wait as 'queued'); a front end polls
    `get()` / `jobs()` and asks for `stop()`."""

    def __init__(self, max_parallel: int | None = None, maps: tuple[str, ...] | None = None) -> None:
        n = max_parallel or int(os.environ.get("CNSDIFF_MAX_JOBS", "1") or 1)
        self.pool: TaskPool[Job] = TaskPool(n, name="job")
        # the item maps computed and stored with each trained run (recorder.store_maps), so no
        # explore page fits one while people click: CNSDIFF_RUN_MAPS, default "pca,umap"
        # ("pca" skips the UMAP fit, e.g. on a very slow machine; the pages then fit it when asked)
        self.maps = tuple(maps) if maps is not None else run_maps_from_env()

    # --- submitting ---------------------------------------------------------------------------
    def submit(self, configs: list[TrainConfig], title: str = "", tag: str = "",
               store_root: str | Path | None = None) -> str:
        job = Job(title or ", ".join(c.sampler for c in configs), "train", tag, configs=list(configs),
                  store_root=str(store_root or default_root().resolve()))
        return self.pool.start(job, self._train).job_id

    def submit_resume(self, run_id: str, store_root: str | Path | None = None) -> str:
        """Resume an interrupted or stopped run; an active job on the same run is reused."""
        for job in self.jobs():
            if job["resume_id"] == run_id and job["status"] in ACTIVE:
                return job["job_id"]
        root = str(store_root or default_root().resolve())
        cfg = RunStore(root).load(run_id).config
        job = Job(f"resume {run_id}", "train", "resume", configs=[cfg], store_root=root, resume_id=run_id)
        job.run_ids.append(run_id)
        return self.pool.start(job, self._train).job_id

    def submit_study(self, study: dict, title: str = "", store_root: str | Path | None = None) -> str:
        """Work on a tuning study in the background (tune.run_study(**study)) until it holds
        study['trials'] finished trials or stop() is asked (the trial in training then ends as a
        failed trial and does not count; the study continues when started again). An active job on
        the same study is reused."""
        for job in self.jobs():
            if job["kind"] == "study" and job["status"] in ACTIVE and job["study"].get("study") == study.get("study") \
                    and job["study"].get("storage") == study.get("storage"):
                return job["job_id"]
        root = str(store_root or default_root().resolve())
        job = Job(title or f"study of {study.get('sampler')}", "study", "tune", store_root=root,
                  study=dict(study), n_total=int(study.get("trials", 1)))
        return self.pool.start(job, self._study).job_id

    # --- reading / controlling ------------------------------------------------------------------
    def get(self, job_id: str | None) -> dict | None:
        job = self.pool.get(job_id)
        return job.snapshot() if job else None

    def jobs(self) -> list[dict]:
        """Every job of this process, newest first."""
        return [j.snapshot() for j in self.pool.tasks()]

    def active(self, tag: str | None = None) -> list[dict]:
        return [j.snapshot() for j in self.pool.active(tag)]

    def stop(self, job_id: str) -> None:
        """Ask a job to stop after the current batch; what was trained is kept as 'stopped'."""
        job = self.pool.get(job_id)
        if job:
            job.stop()

    # --- the thread -------------------------------------------------------------------------------
    def _on_event(self, job: Job, idx: int, sampler: str, event: Event) -> None:
        with job.lock:
            if isinstance(event, MapsProgress):
                job.note = event.note
            elif isinstance(event, Started):
                job.note = ""
                job.device, job.epochs = event.device, event.epochs
                job.epoch, job.batch, job.eta_s, job.run_started = event.start_epoch, 0, None, time.time()
            elif isinstance(event, BatchDone):
                job.epoch, job.batch, job.n_batches = event.epoch + 1, event.batch, event.n_batches
                job.eta_s = float(event.eta_s)
                job.losses.append({"run": idx, "sampler": sampler, "x": event.progress, "loss": float(event.loss)})
                if len(job.losses) > MAX_POINTS:
                    job.losses = job.losses[::2]
            elif isinstance(event, EpochDone):
                rec = event.record
                job.valid.append({"run": idx, "sampler": sampler, "epoch": int(rec["epoch"]),
                                  "loss": rec.get("loss"), "valid_recall@20": rec.get("valid_recall@20"),
                                  "ood_recall@20": rec.get("ood_recall@20")})

    def _study(self, job: Job) -> str:
        from .tune import run_study

        def on_event(event: Event) -> None:
            if isinstance(event, TrialStarted):
                with job.lock:
                    job.current = min(event.finished, max(job.n_total - 1, 0))
                    job.epoch, job.batch, job.eta_s = 0, 0, None
                    job.run_ids.append(f"trial {event.number}")
            else:
                self._on_event(job, job.current, job.study.get("sampler", "?"), event)

        def log(line: str) -> None:
            with job.lock:
                job.outcomes.append({"run_id": "", "sampler": job.study.get("sampler", "?"), "status": "", "message": line})

        summary = run_study(**job.study, runs_dir=job.store_root, callbacks=[on_event],
                            should_stop=job.stop_event.is_set, log=log)
        done = summary["n_complete"] + summary["n_pruned"]
        with job.lock:
            job.summary = summary
        if summary["gave_up"]:
            raise TaskFailed(summary["gave_up"])
        if summary["stopped"] or job.stop_requested:
            raise TaskStopped(f"stopped by request with {done} of {job.n_total} trials finished; start it again "
                              "to continue")
        best = summary["best_value"]
        return (f"{done} trials finished ({summary['n_pruned']} pruned, {summary['n_failed']} failed)"
                + (f"; best validation Recall@20 {best:.4f}" if best is not None else ""))

    def _train(self, job: Job) -> str:
        store_ = RunStore(job.store_root)
        failures: list[str] = []
        data_cache: dict = {}
        for idx, cfg in enumerate(job.configs):
            if job.stop_requested:
                break
            with job.lock:
                job.current, job.epoch, job.batch, job.eta_s = idx, 0, 0, None
            callback = lambda ev, i=idx, s=cfg.sampler: self._on_event(job, i, s, ev)  # noqa: E731
            n_created = len(job.run_ids)
            try:
                if job.resume_id:
                    _, res = resume_run(job.resume_id, store_, [callback], job.stop_event.is_set, maps=self.maps)
                    rid = job.resume_id
                else:
                    key = (cfg.dataset, cfg.shift, cfg.data_seed)
                    if key not in data_cache:
                        data_cache[key] = load_dataset(*key[:2], seed=key[2])
                    rid, res = train_and_store(cfg, store_, [callback], job.stop_event.is_set,
                                               data=data_cache[key], on_created=self._created(job),
                                               maps=self.maps)
                outcome = {"run_id": rid, "sampler": cfg.sampler, "status": res.status, "message": res.message}
            except Exception as exc:  # shown to the user; the run (if created) is marked failed
                if isinstance(exc, (ValueError, RuntimeError)):  # the engine's one-sentence errors
                    msg = str(exc)
                else:  # a bug: the traceback goes to the server log, the user sees its last line
                    _log.exception("training job %s failed", job.job_id)
                    msg = f"{type(exc).__name__}: {exc}"
                failures.append(f"{cfg.sampler}: {msg}")
                created = job.resume_id or (job.run_ids[n_created] if len(job.run_ids) > n_created else None)
                outcome = {"run_id": created, "sampler": cfg.sampler, "status": "failed", "message": msg}
            with job.lock:
                job.outcomes.append(outcome)
        if failures:
            raise TaskFailed("; ".join(failures))
        if job.stop_requested:
            return "stopped by request; what was trained is kept"
        return f"{len(job.outcomes)} run(s) done in {time.time() - job.created:.0f} s"

    @staticmethod
    def _created(job: Job):
        def on_created(run_id: str) -> None:
            with job.lock:
                job.run_ids.append(run_id)
        return on_created


def job_progress_text(job: dict) -> str:
    if job["status"] == "queued":
        return "queued: waiting for another training job to finish"
    if job["status"] != "running":
        return f"{job['status']}: {job['message']}"
    if job.get("kind") == "study":
        return (f"{job['current']} of {job['n_runs']} trials finished · trial in training: epoch {job['epoch']}/"
                f"{job['epochs']} · batch {job['batch']}/{job['n_batches']}")
    which = job["samplers"][job["current"]] if job["samplers"] else "?"
    if job.get("note"):  # trained; its maps are being computed and stored with it
        return f"run {job['current'] + 1}/{job['n_runs']} ({which}) trained · maps: {job['note']} (stored with the run)"
    return (f"run {job['current'] + 1}/{job['n_runs']} ({which}) · epoch {job['epoch']}/{job['epochs']} "
            f"· batch {job['batch']}/{job['n_batches']} · ETA {format_eta(job['eta_s'])}")

"""Background work, one system for all of it: training jobs and tuning studies (`jobs`), the
schedule lab's denoiser refits and the explore pages' UMAP fits (`explore.lab`, `explore.maps`).

A `Task` has a `Status`, progress (done of total, and a line saying what it does now), a stop
request its work honours at its next check, and timing. A `TaskPool` runs tasks in daemon threads
with a number of worker slots (the others wait as queued) and keeps the recent ones for front ends
to poll. Work reports a one-sentence failure by raising `TaskFailed`, an early end by `TaskStopped`;
any other exception fails the task with its message (a bug's traceback goes to the log).
Nothing here imports Streamlit.
"""
from __future__ import annotations

import enum
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Generic, TypeVar

_log = logging.getLogger(__name__)


class Status(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def active(self) -> bool:
        return self in (Status.QUEUED, Status.RUNNING)


ACTIVE = (Status.QUEUED, Status.RUNNING)  # equal to the strings 'queued', 'running'


class TaskFailed(Exception):
    """The work cannot be done; the message is one sentence for the user."""


class TaskStopped(Exception):
    """The work ended early (a stop request, a budget); the message says what was kept."""


@dataclass(eq=False)
class Task:
    """One piece of background work. Its thread writes (under `lock`), front ends read."""

    title: str
    kind: str = "task"  # what sort of work: 'train', 'study', 'refit', 'map', ...
    tag: str = ""  # who started it, for filtering ('demo', 'resume', 'lab', ...)
    task_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    status: Status = Status.QUEUED
    message: str = ""  # the outcome, once it ended
    done: float = 0.0  # progress: done of total units (steps, runs, ...)
    total: float = 1.0
    note: str = ""  # what it is doing now
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    stop_event: threading.Event = field(default_factory=threading.Event, repr=False)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def active(self) -> bool:
        return self.status.active

    @property
    def stop_requested(self) -> bool:
        return self.stop_event.is_set()

    def stop(self) -> None:
        """Ask the work to stop at its next check; what it did so far is kept."""
        self.stop_event.set()

    def progress(self, done: float | None = None, total: float | None = None, note: str | None = None) -> None:
        with self.lock:
            if done is not None:
                self.done = done
            if total is not None:
                self.total = total
            if note is not None:
                self.note = note

    @property
    def fraction(self) -> float:
        if self.status == Status.FINISHED:
            return 1.0
        return float(min(max(self.done / self.total, 0.0), 1.0)) if self.total else 0.0

    @property
    def seconds(self) -> float:
        """Seconds it has run (so far)."""
        if self.started is None:
            return 0.0
        return (self.ended or time.time()) - self.started

    def _end(self, status: Status, message: str) -> None:
        with self.lock:
            self.status, self.message, self.ended = status, message, time.time()


T = TypeVar("T", bound=Task)


class TaskPool(Generic[T]):
    """Runs tasks in daemon threads, at most `slots` at once (the others wait as queued), and keeps
    the active ones and the last `keep` that ended."""

    def __init__(self, slots: int = 1, name: str = "task", keep: int = 50) -> None:
        self.slots, self.name, self.keep = max(int(slots), 1), name, keep
        self._slots = threading.BoundedSemaphore(self.slots)
        self._tasks: dict[str, T] = {}
        self._lock = threading.Lock()

    def start(self, task: T, work: Callable[[T], str | None]) -> T:
        """Run work(task) in the background; its return value is the task's closing message."""
        with self._lock:
            self._tasks[task.task_id] = task
            ended = [t for t in self._tasks.values() if not t.active]
            for old in sorted(ended, key=lambda t: t.created)[:-self.keep]:
                del self._tasks[old.task_id]
        threading.Thread(target=self._run, args=(task, work), name=f"cnsdiff-{self.name}-{task.task_id}",
                         daemon=True).start()
        return task

    def _run(self, task: T, work: Callable[[T], str | None]) -> None:
        with self._slots:
            if task.stop_requested:
                task._end(Status.STOPPED, "stopped before it started")
                return
            with task.lock:
                task.status, task.started = Status.RUNNING, time.time()
            try:
                message = work(task) or ""
            except TaskStopped as exc:
                task._end(Status.STOPPED, str(exc))
            except TaskFailed as exc:
                task._end(Status.FAILED, str(exc))
            except Exception as exc:  # noqa: BLE001 - shown to the user; a bug also goes to the server log
                if isinstance(exc, (ValueError, RuntimeError)):  # the engine's one-sentence errors
                    message = str(exc)
                else:
                    _log.exception("%s task %s failed", self.name, task.task_id)
                    message = f"{type(exc).__name__}: {exc}"
                task._end(Status.FAILED, message)
            else:
                task._end(Status.STOPPED if task.stop_requested else Status.FINISHED, message)

    # --- reading --------------------------------------------------------------------------------
    def get(self, task_id: str | None) -> T | None:
        return self._tasks.get(task_id or "")

    def tasks(self) -> list[T]:
        """Every kept task, newest first."""
        return sorted(list(self._tasks.values()), key=lambda t: t.created, reverse=True)

    def active(self, tag: str | None = None) -> list[T]:
        return [t for t in self.tasks() if t.active and (tag is None or t.tag == tag)]


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "estimating…"
    seconds = max(int(seconds), 0)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"

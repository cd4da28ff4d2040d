"""The one panel for background tasks (cnsdiff_core.tasks: training jobs, studies, refits, map
fits): a fragment that redraws every second while a task it shows is active, and reruns the whole
app once when one of them ends (so the sidebar lists new runs and the page shows the outcome)."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import streamlit as st

from cnsdiff_core.jobs import JobManager, job_progress_text
from cnsdiff_core.tasks import ACTIVE, Task

KEY_JOBS = "my_job_ids"  # ids of the jobs this session started (the JobManager is process-wide)

STATUS_ICONS = {"finished": "✅", "early-stopped": "✅", "stopped": "⏹️", "running": "⏳",
                "queued": "⏳", "interrupted": "⚠️", "failed": "❌", "damaged": "❌"}


def _state(item: Any) -> tuple[str, str]:
    """(id, status) of a Task or of a job snapshot dict."""
    if isinstance(item, dict):
        return item["job_id"], str(item["status"])
    return item.task_id, str(item.status)


def is_active(item: Any) -> bool:
    return _state(item)[1] in ACTIVE


def _newly_ended(items: Iterable[Any], key: str) -> bool:
    """True once for each task seen ended since the last call with this key."""
    seen = st.session_state.setdefault(key, set())
    ended = {tid for tid, status in map(_state, items) if status not in ACTIVE}
    new = ended - seen
    seen |= ended
    return bool(new)


def task_panel(tasks: Callable[[], list], render: Callable[[list], None], key: str, every: float = 1.0) -> None:
    """Draw render(tasks()) now and, while any of them is active, every `every` seconds; when one
    of them ends while it is watched, rerun the whole app once. `key` names this panel's memory of
    the tasks it has seen end."""
    items = tasks()
    polling = any(map(is_active, items))
    seen_key = f"_tasks_seen_{key}"
    _newly_ended(items, seen_key)  # those that had ended when the page drew

    @st.fragment(run_every=every if polling else None)
    def panel() -> None:
        current = tasks()
        render(current)
        if _newly_ended(current, seen_key) and polling:
            st.rerun(scope="app")

    panel()


def progress(task: Task, text: str, stop_key: str | None = None, stop_label: str = "Stop") -> None:
    """A progress bar for a running Task, with a Stop button when stop_key is given."""
    st.progress(task.fraction, text=text)
    if stop_key is not None:
        st.button(stop_label, key=stop_key, on_click=task.stop, disabled=task.stop_requested,
                  icon=":material/stop:", help="Stops at the next check; what was done is kept.")


# --- training jobs (cnsdiff_core.jobs; one manager per process, CNSDIFF_MAX_JOBS at once) ------------
@st.cache_resource(show_spinner=False)
def job_manager() -> JobManager:
    return JobManager()


def remember_job(job_id: str) -> None:
    ids = st.session_state.setdefault(KEY_JOBS, [])
    if job_id not in ids:
        ids.append(job_id)


def my_jobs() -> list[dict]:
    """Jobs this session started plus every active job of the process (other tabs), newest first."""
    mine = set(st.session_state.get(KEY_JOBS, []))
    return [j for j in job_manager().jobs() if j["job_id"] in mine or j["status"] in ACTIVE]


def job_progress(job: dict, stop_key: str | None = None, stop_label: str = "Stop", title: str = "") -> None:
    """A progress bar for an active training job snapshot, with a Stop button when stop_key is given."""
    st.progress(job["fraction"], text=(f"{title}: " if title else "") + job_progress_text(job))
    if stop_key is not None:
        st.button(stop_label, key=stop_key, on_click=job_manager().stop, args=(job["job_id"],),
                  disabled=job["stop_requested"], icon=":material/stop:",
                  help="Stops after the current batch; what was trained is kept as 'stopped'.")

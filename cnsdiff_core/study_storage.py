"""Where tuning studies live (cnsdiff_core.tune): a SQLite file in the runs folder by default, any
SQLAlchemy URL (PostgreSQL through the pinned psycopg2), or an Optuna journal file with a
heartbeat, so a worker that dies leaves a trial another worker can mark failed."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from .runs import default_root

DEFAULT_DB = "studies.db"

HEARTBEAT_S = 30  # seconds between a running trial's heartbeats

GRACE_S = 120  # a running trial without a heartbeat for this long belongs to a dead worker

class TuneError(RuntimeError):
    """A study cannot be opened or run; the message names the storage / study and what to do."""

# --- storages -----------------------------------------------------------------------------------
def default_storage_url(runs_dir: str | Path | None = None) -> str:
    root = Path(runs_dir) if runs_dir else default_root()
    return f"sqlite:///{(root / DEFAULT_DB).resolve()}"

def journal_path(url: str) -> Path | None:
    """The file of a journal storage (`journal:PATH`, or a path ending .journal / .log), else None."""
    if url.startswith("journal:"):
        return Path(url[len("journal:"):]).expanduser()
    if "://" not in url and url.endswith((".journal", ".log")):
        return Path(url).expanduser()
    return None

class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """A journal storage with the heartbeat RDBStorage has: a running trial appends its time every
    `heartbeat_interval` s; a RUNNING trial silent for `grace_period` s is stale (its worker died)
    and Optuna's fail_stale_trials (run before every trial) marks it FAIL. Times are wall clocks,
    so machines sharing a journal need roughly synchronized clocks (well within the grace)."""

    HEARTBEAT_ATTR = "cnsdiff:heartbeat"

    def __init__(self, path: str, heartbeat_interval: int, grace_period: int) -> None:
        super().__init__(JournalFileBackend(path))
        self._heartbeat_interval, self._grace_period = heartbeat_interval, grace_period

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, self.HEARTBEAT_ATTR, time.time())
        except (optuna.exceptions.UpdateFinishedTrialError, KeyError):
            pass  # the trial just ended (or another worker failed it): nothing to keep alive

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            last = t.system_attrs.get(self.HEARTBEAT_ATTR)
            if last is None and t.datetime_start is not None:
                last = t.datetime_start.timestamp()  # naive local time, as the journal replays it
            if last is not None and now - float(last) > self._grace_period:
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return None

def open_storage(url: str | None = None, runs_dir: str | Path | None = None,
                 heartbeat_interval: int = HEARTBEAT_S, grace_period: int = GRACE_S):
    """(Optuna storage, its label) for a URL, a journal path, or None (the runs folder's SQLite)."""
    label = url or default_storage_url(runs_dir)
    if grace_period <= heartbeat_interval:
        raise TuneError(f"grace period {grace_period} s must exceed the heartbeat interval "
                        f"{heartbeat_interval} s; a live worker would be declared dead.")
    journal = journal_path(label)
    try:
        if journal is not None:
            journal.parent.mkdir(parents=True, exist_ok=True)
            return HeartbeatJournalStorage(str(journal), heartbeat_interval, grace_period), label
        if "://" not in label and label.endswith((".db", ".sqlite", ".sqlite3")):
            label = f"sqlite:///{Path(label).expanduser().resolve()}"  # a plain path to a SQLite file
        if "://" not in label:
            raise TuneError(f"storage {label!r} is neither a database URL (sqlite:///PATH, "
                            "postgresql://user@host/db, or a *.db file) nor a journal file (journal:PATH or "
                            "*.journal); give one of those.")
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if label.startswith("sqlite:///"):
            Path(label[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs = {"connect_args": {"timeout": 120}}  # wait for another worker's write lock
        storage = _rdb_storage(_driver_url(label), kwargs, heartbeat_interval, grace_period)
    except TuneError:
        raise
    except OSError as exc:
        raise TuneError(f"cannot use the study storage {label} ({exc.strerror or exc}); pick a writable "
                        "place (--storage).") from None
    except Exception as exc:  # SQLAlchemy: bad URL, missing driver, server down, wrong password
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
        raise TuneError(f"cannot open the study storage {_safe(label)} ({type(exc).__name__}: {reason}); "
                        "check the URL and that the database server is running.") from None
    return storage, label

def _rdb_storage(url: str, engine_kwargs: dict, heartbeat_interval: int, grace_period: int) -> RDBStorage:
    """RDBStorage, retried when workers starting together race to create the tables of a new
    database (one of them then sees a duplicate table or version row and only has to try again)."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(5):
        try:
            return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                              grace_period=grace_period)
        except (IntegrityError, OperationalError, ProgrammingError):
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")

def _driver_url(url: str) -> str:
    """SQLAlchemy 2.1 reads a plain postgresql:// URL with psycopg 3; requirements.txt pins psycopg2
    (binary wheels), so name that driver unless the URL names one or psycopg 3 is installed."""
    import importlib.util

    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain) and importlib.util.find_spec("psycopg") is None \
                and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len(plain):]
    return url

def _safe(url: str) -> str:
    """A URL without its password, for messages and summaries."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}" if ":" in cred else url
    return url

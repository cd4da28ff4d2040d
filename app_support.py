"""The Streamlit side of the explorer: cached loaders, session-state keys, URL state, colours
and the background training jobs. Pages stay thin: widgets -> one call here or in the core ->
render. Nothing in `cnsdiff_core` imports this module.

Environment:
  CNSDIFF_RUNS            run store folder (default runs/)
  CNSDIFF_READ_ONLY=1     workshop mode (also `streamlit run app.py -- --read-only`)
  CNSDIFF_IMPORT_ROOTS    folders (os.pathsep-separated) a local import may read from
                          (default: the repo's sample_data and ../shared/datasets)
  CNSDIFF_DEMO_SET        overrides of the one-click demo, `key=value,...` as in `--set`
                          (e.g. `epochs=5` for a slow laptop; the app tests use it)
  CNSDIFF_MAX_JOBS        training jobs that may run at once in this process (default 1;
                          later ones wait as 'queued' so a laptop is not oversubscribed)
"""
from __future__ import annotations

import json
import logging
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from cnsdiff_core.config import PRESETS, TrainConfig, parse_set_args, preset_config, settings_info
from cnsdiff_core.data import SHIFTS, DataError, list_datasets, load_dataset, validate_files
from cnsdiff_core.jobs import ACTIVE, JobManager, job_progress_text  # noqa: F401 (pages use them as sup.*)
from cnsdiff_core.runs import Run, RunInfo, RunStore, StoreError, default_root
from cnsdiff_core.samplers import BASELINES, METHOD, REGISTRY, UNIFORM

REPO = Path(__file__).resolve().parent
_log = logging.getLogger("cnsdiff.app")

# --- session-state keys (also the widget keys of the sidebar) ---------------------------------------
KEY_DATASET, KEY_SHIFT, KEY_RUN = "dataset", "shift", "run_id"
KEY_JOBS = "my_job_ids"  # ids of the jobs this session started (JobManager is process-wide)
KEY_DEMO_JOB = "demo_job_id"
KEY_EXTRA_DATASETS = "extra_datasets"  # generated / imported dataset names offered in the sidebar
KEY_PENDING = "_pending_selection"  # choices made by a page, applied before the sidebar renders
KEY_TRAIN_PREFILL = "_train_prefill"  # {field: value} the Train form takes over on its next render
# URL query parameter per session key; pages may add user, item and step (see qp_get / qp_set).
QUERY_PARAMS = {KEY_DATASET: "dataset", KEY_SHIFT: "shift", KEY_RUN: "run"}
PAGE_PARAMS = ("user", "item", "step")
DEFAULT_DATASET = "sample"

# --- colours: Okabe & Ito (2008), colour-blind safe --------------------------------------------------
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky_blue": "#56B4E9", "green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7",
             "grey": "#999999"}
# Real items are blue, synthesized negatives vermillion: the two never share a hue anywhere.
REAL_COLOR = OKABE_ITO["blue"]
SYNTH_COLOR = OKABE_ITO["vermillion"]
TRAIN_POS_COLOR = OKABE_ITO["blue"]  # the user's training positives (real items)
HELDOUT_COLOR = OKABE_ITO["green"]  # the user's held-out positives (real items)
CONTEXT_COLOR = "#BBBBBB"  # all other items, drawn behind everything
# One fixed colour per sampler, declared by the sampler (`Sampler.color`); the method that
# synthesizes by diffusion takes SYNTH_COLOR.
SAMPLER_COLORS = {name: cls.color for name, cls in REGISTRY.items()}
SPLIT_COLORS = {"train": OKABE_ITO["black"], "valid": OKABE_ITO["grey"], "test_iid": OKABE_ITO["blue"],
                "test_ood": OKABE_ITO["orange"]}
# Sequential shades within the synthesized hue: dark = hard (small step s, ends near the positive),
# light = easy (large s).
SYNTH_STEP_SCALE = ["#FDD0A2", "#FDAE6B", "#F16913", "#D55E00", "#8C2D04"]
# Sequential shades within the real-item hue, e.g. for popularity colouring of items.
REAL_SCALE = ["#DEEBF7", "#9ECAE1", "#4292C6", "#0072B2", "#08306B"]


def sampler_color(name: str) -> str:
    return SAMPLER_COLORS.get(str(name).split("@")[0], OKABE_ITO["grey"])


# --- modes ---------------------------------------------------------------------------------------------
def read_only() -> bool:
    """Workshop mode: precomputed runs only, no training or import."""
    env = os.environ.get("CNSDIFF_READ_ONLY", "").strip().lower()
    return env in ("1", "true", "yes", "on") or "--read-only" in sys.argv[1:]


READ_ONLY_TEXT = ("read-only workshop mode: browsing precomputed runs; training, import and generating "
                  "worlds are switched off.")


def read_only_banner() -> None:
    if read_only():
        st.info(READ_ONLY_TEXT, icon="🔒")


# --- runs ---------------------------------------------------------------------------------------------
def runs_root() -> Path:
    return default_root().resolve()


@st.cache_resource(show_spinner=False)
def _store(root: str) -> RunStore:
    return RunStore(root)


def store() -> RunStore:
    """The run store of $CNSDIFF_RUNS (one object per folder, shared by every session)."""
    return _store(str(runs_root()))


def list_runs() -> list[RunInfo]:
    """Every stored run, newest first (damaged ones included with their reason). Not cached: a
    listing is a few small JSON reads, and runs appear while the app runs."""
    return store().list_runs()


def _status_mtime(run_id: str) -> float:
    try:
        return (store().path(run_id) / "status.json").stat().st_mtime
    except (OSError, StoreError):  # gone, unreadable, or a folder name that is no run id
        return 0.0


@st.cache_resource(show_spinner=False, max_entries=64)
def _load_run(root: str, run_id: str, status_mtime: float) -> Run:
    return RunStore(root).load(run_id)


def load_run(run_id: str) -> Run:
    """A stored run (cached; keyed by the mtime of its status so a finishing run is re-read).
    Raises StoreError for a damaged run."""
    return _load_run(str(runs_root()), run_id, _status_mtime(run_id))


@st.cache_data(show_spinner=False, max_entries=32)
def _per_user(root: str, run_id: str, status_mtime: float) -> dict:
    return RunStore(root).load(run_id).per_user()


def per_user(run_id: str) -> dict:
    """Per-user test metrics of a run ({} when it has none). Raises StoreError for a damaged run."""
    return _per_user(str(runs_root()), run_id, _status_mtime(run_id))


def run_status_file(info: RunInfo) -> dict:
    """status.json of a run (device label, timing), {} when unreadable."""
    try:
        data = json.loads((info.path / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# --- datasets -----------------------------------------------------------------------------------------
@st.cache_data(ttl=60, show_spinner=False)
def dataset_registry() -> list[dict]:
    return list_datasets()


@st.cache_resource(show_spinner="Loading the dataset…", max_entries=8)
def load_dataset_cached(name: str, shift: str | None = None, seed: int = 0):
    """A Dataset, shared read-only by every session (it holds numpy arrays). Raises DataError."""
    return load_dataset(name, shift, seed=seed)


def dataset_shifts(name: str) -> tuple[list[str], str]:
    """(allowed shifts, default shift) of a dataset name or path; never raises."""
    for d in dataset_registry():
        if d["name"] == name:
            return list(d["shifts"]), d.get("default_shift") or d["shifts"][0]
    if name.lower().startswith("synthetic"):
        return list(SHIFTS), "exposure"
    path = Path(name)
    try:
        if path.is_dir():
            if (path / "world.json").is_file():
                return list(SHIFTS), "exposure"
            ds = load_dataset_cached(name, None)
            return [ds.shift], ds.shift
        if path.is_file():
            verdict = validate_paths([path])[0]
            if verdict["has_timestamps"]:
                return ["temporal", "popularity", "random"], "temporal"
            return ["random", "popularity"], "random"
    except (DataError, OSError):
        pass
    return [], ""


@st.cache_data(ttl=30, show_spinner=False)
def _bundle_datasets(root: str) -> list[str]:
    from cnsdiff_core.bundle import read_manifest

    manifest = read_manifest(root) or {}
    return [str(d) for d in manifest.get("datasets", []) if isinstance(d, str)]


def bundle_datasets() -> list[str]:
    """Datasets of the workshop bundle in the run store (bundle.json), [] without one."""
    return _bundle_datasets(str(runs_root()))


def dataset_options() -> list[str]:
    """Datasets offered in the sidebar: available named ones, the workshop bundle's, then
    generated / imported ones."""
    names = [d["name"] for d in dataset_registry() if d["available"] and d["kind"] != "generator"]
    for extra in [*bundle_datasets(), *st.session_state.get(KEY_EXTRA_DATASETS, [])]:
        if extra not in names:
            names.append(extra)
    return names


def add_dataset(name: str) -> None:
    """Offer a generated or imported dataset in the sidebar."""
    extras = st.session_state.setdefault(KEY_EXTRA_DATASETS, [])
    if name not in extras:
        extras.append(name)


def dataset_label(name: str) -> str:
    if name.startswith("synthetic:"):
        return "synthetic · " + name.split(":", 1)[1]
    if "/" in name or os.sep in name:
        return f"imported · {Path(name).name}"
    return name


def current_dataset() -> str:
    return st.session_state.get(KEY_DATASET) or DEFAULT_DATASET


def current_shift() -> str | None:
    shift = st.session_state.get(KEY_SHIFT)
    if shift:
        return shift
    return dataset_shifts(current_dataset())[1] or None


def current_run_id() -> str | None:
    return st.session_state.get(KEY_RUN)


def select(dataset: str | None = None, shift: str | None = None, run_id: str | None = None) -> None:
    """Change the global choices from a page. Widgets of the sidebar were already drawn in this
    rerun, so the choice is applied at the start of the next one; call st.rerun() after."""
    pending = st.session_state.setdefault(KEY_PENDING, {})
    if dataset is not None:
        pending[KEY_DATASET] = dataset
        pending[KEY_SHIFT] = shift
    if run_id is not None:
        pending[KEY_RUN] = run_id


def apply_pending() -> None:
    """Called by app.py before the sidebar widgets exist."""
    pending = st.session_state.pop(KEY_PENDING, None)
    if not pending:
        return
    if KEY_DATASET in pending:
        if pending[KEY_DATASET] not in dataset_options():
            add_dataset(pending[KEY_DATASET])
        st.session_state[KEY_DATASET] = pending[KEY_DATASET]
        st.session_state[KEY_SHIFT] = pending.get(KEY_SHIFT) or dataset_shifts(pending[KEY_DATASET])[1]
    if KEY_RUN in pending:
        st.session_state[KEY_RUN] = pending[KEY_RUN]


APP_WORLD_LIMIT = 5000  # users and items of a world generated inside the app (the CLI has no cap)


def linkable_dataset(name: str) -> str:
    """'' when a dataset named in a link may be opened here, else why not (half a sentence).
    Links are untrusted: paths must lie under the import roots or the upload folder, and
    generated worlds must be small enough to build within a rerun."""
    known = {d["name"]: d for d in dataset_registry()}
    if name in known:
        d = known[name]
        return "" if d["available"] and d["kind"] != "generator" else "is not available here"
    if name.lower().startswith("synthetic"):
        from cnsdiff_core.data import parse_synthetic

        if read_only() and name not in bundle_datasets():
            return "is not one of the precomputed datasets (generating worlds is off in read-only mode)"
        try:
            cfg = parse_synthetic(name.split(":", 1)[1] if ":" in name else "")
        except DataError as exc:
            return f"has bad parameters ({exc})"
        if max(cfg.n_users, cfg.n_items) > APP_WORLD_LIMIT:
            return (f"is larger than the app generates ({APP_WORLD_LIMIT:,} users or items); "
                    "generate it with the command line")
        return ""
    try:
        path = Path(name).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return "is not a dataset this app may open"
    roots = [*import_roots(), (runs_root() / ".uploads").resolve()]
    if not _inside(path, roots) or not path.exists() or (path.is_dir() and escaping_entry(path, roots)):
        return "is not a dataset this app may open"
    return ""


# --- URL state ------------------------------------------------------------------------------------------
def load_query_params() -> list[str]:
    """Once per session, copy dataset / shift / run from the URL into session state (before the
    sidebar widgets are drawn). Returns warnings about values that could not be used."""
    if st.session_state.get("_qp_loaded"):
        return []
    st.session_state["_qp_loaded"] = True
    qp = st.query_params
    warnings = []
    name = qp.get("dataset")
    if name:
        reason = linkable_dataset(name)
        if not reason:
            if name not in dataset_options():
                add_dataset(name)
            st.session_state[KEY_DATASET] = name
        else:
            warnings.append(f"Dataset {name!r} from the link {reason}; showing {DEFAULT_DATASET} instead.")
    shift = qp.get("shift")
    if shift:
        allowed, _ = dataset_shifts(current_dataset())
        if shift in allowed:
            st.session_state[KEY_SHIFT] = shift
        else:
            warnings.append(f"Shift {shift!r} from the link is not offered for {current_dataset()}; "
                            f"using its default.")
    run_id = qp.get("run")
    if run_id:
        if run_id in {r.run_id for r in list_runs()}:
            st.session_state[KEY_RUN] = run_id
        else:
            warnings.append(f"Run {run_id!r} from the link is not in this run store.")
    for name in PAGE_PARAMS:
        if qp.get(name) is not None:
            st.session_state[f"qp_{name}"] = qp.get(name)
    return warnings


def sync_query_params() -> None:
    """Write the global choices into the URL (only what changed), so a copied link restores them.
    Called by app.py after the sidebar on every rerun, which also restores them after a page
    switch."""
    for key, param in QUERY_PARAMS.items():
        value = st.session_state.get(key)
        if value in (None, ""):
            if param in st.query_params:
                del st.query_params[param]
        elif st.query_params.get(param) != str(value):
            st.query_params[param] = str(value)


def qp_get(name: str, default: Any = None) -> Any:
    """A page-level URL parameter (user, item, step): from the URL or the session's first URL."""
    value = st.query_params.get(name)
    if value is None:
        value = st.session_state.get(f"qp_{name}")
    return default if value is None else value


def qp_set(name: str, value: Any) -> None:
    st.session_state[f"qp_{name}"] = None if value is None else str(value)
    if value is None:
        if name in st.query_params:
            del st.query_params[name]
    elif st.query_params.get(name) != str(value):
        st.query_params[name] = str(value)


# --- device --------------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def device_info() -> dict:
    """{'label': what training with device=auto uses, 'cuda': bool, 'reason': why not cuda}."""
    import torch

    from cnsdiff_core.train import device_label, resolve_device

    cuda = bool(torch.cuda.is_available())
    reason = "" if cuda else (
        "no CUDA GPU is visible to torch (torch.cuda.is_available() is False"
        + ("; this torch is a CPU build" if torch.version.cuda is None else "") + ")")
    if cuda:
        label = device_label(resolve_device("auto"))
    else:  # what a run will use (the cpu_threads setting), not what torch happens to use now
        n = TrainConfig().cpu_threads or torch.get_num_threads()
        label = f"cpu, {n} training thread{'s' if n != 1 else ''} of {os.cpu_count()} cores"
    return {"label": label, "cuda": cuda, "reason": reason}


# --- the train form ---------------------------------------------------------------------------------
# Every setting describes itself (cnsdiff_core.settings): its group is the form's expander, its help
# the widget's help, its choices a select box. Settings with form=False come from the sidebar or
# widgets of their own (FORM_EXCLUDED). tests/test_app_pages.py checks that together they cover every field.
SETTINGS = {d.name: d for d in settings_info()}
FORM_EXCLUDED = tuple(name for name, d in SETTINGS.items() if not d.form)


def form_groups() -> dict[str, list[str]]:
    """{group: [setting, ...]} of every setting the form shows, in GROUPS order."""
    out: dict[str, list[str]] = {}
    for name, d in SETTINGS.items():
        if d.form:
            out.setdefault(d.group or "Other settings", []).append(name)
    return out


def base_config(preset: str) -> TrainConfig:
    return preset_config(preset) if preset in PRESETS else TrainConfig(preset="custom")


def form_value(cfg: TrainConfig, name: str) -> Any:
    """A field's value as its form widget holds it (floats and tuples as text)."""
    value = getattr(cfg, name)
    typ = SETTINGS[name].type
    if typ == "float":
        return f"{value:g}"
    if typ.startswith("tuple"):
        return ",".join(str(v) for v in value)
    return value


def build_configs(preset: str, samplers: list[str], values: dict[str, Any], dataset: str,
                  shift: str | None, device: str, seeds: int = 1) -> list[TrainConfig]:
    """One TrainConfig per sampler and seed from the form's values (seeds seed, seed+1, ...).
    Raises ConfigError (one sentence). The run is labelled with the preset when every value
    equals the preset's, else 'custom'."""
    from cnsdiff_core.config import ConfigError

    if not samplers:
        raise ConfigError("no sampler is selected; pick at least one sampler to train.")
    if not 1 <= int(seeds) <= MAX_SEEDS:
        raise ConfigError(f"seeds={seeds} is out of range; train 1 to {MAX_SEEDS} seeds per sampler.")
    base = base_config(preset)
    cfg = base.with_updates(dataset=dataset, shift=shift, device=device, **values)
    same = all(getattr(cfg, k) == getattr(base, k) for k in values)
    label = preset if (same and preset in PRESETS) else "custom"
    return [cfg.with_updates(sampler=s, preset=label, seed=cfg.seed + k) for s in samplers for k in range(int(seeds))]


MAX_SEEDS = 10
# settings that do not change what a run learns: runs that differ only in these (and the seed)
# are repetitions of one experiment
NOT_THE_EXPERIMENT = ("seed", "device", "cpu_threads", "max_seconds", "eval_batch_users", "snapshot_epochs",
                      "test_eval", "preset")


def experiment_key(config: dict) -> str:
    """Runs with the same key are the same experiment with different seeds."""
    kept = {k: v for k, v in sorted(config.items()) if k not in NOT_THE_EXPERIMENT}
    return json.dumps(kept, sort_keys=True, default=str)


def seed_summary(frame: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Mean and spread (population std) of each metric over runs that differ only in the seed,
    for experiments with at least two finished runs (experiment.summarize per experiment key)."""
    from cnsdiff_core.experiment import summarize

    done = frame[frame["status"].isin(["finished", "early-stopped"]) & frame["ood_recall@20"].notna()]
    keys = ("experiment", "sampler", "preset", "dataset", "shift")  # the last four are fixed by the first
    summary = summarize(done, by=keys)
    summary = summary[summary["seeds"] >= 2]
    if summary.empty:
        return pd.DataFrame()
    runs = done.groupby("experiment")["run_id"].agg(", ".join)
    out = summary[list(keys[1:])].assign(seeds=summary["seeds"], runs=summary["experiment"].map(runs))
    for m in metrics:
        out[m] = [f"{v:.4f} ± {sd:.4f}" for v, sd in zip(summary[m], summary[f"{m}_std"])]
    return out.reset_index(drop=True)


def prefill_train_form(updates: dict[str, Any]) -> None:
    """Let another page (e.g. the schedule lab) fill in Train form settings; then
    st.switch_page("pages/3_train.py")."""
    st.session_state[KEY_TRAIN_PREFILL] = {k: form_value(TrainConfig().with_updates(**{k: v}), k)
                                           for k, v in updates.items()}


def demo_configs() -> list[TrainConfig]:
    """The one-click demo: CNSDiff (preset demo) and RNS on the sample world, its default shift."""
    overrides = parse_set_args([p for p in os.environ.get("CNSDIFF_DEMO_SET", "").split(",") if p.strip()])
    return [preset_config("demo", dataset=DEFAULT_DATASET, sampler=s, **overrides) for s in (METHOD, UNIFORM)]


# --- background training jobs (cnsdiff_core.jobs; one manager per process) ---------------------------
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


# --- tables -------------------------------------------------------------------------------------------
METRIC_COLUMNS = ["valid_recall@20"] + [f"{split}_{m}@{k}" for split in ("iid", "ood") for k in (10, 20)
                  for m in ("recall", "ndcg", "precision", "hit")] + \
                 ["iid_rec_pop@20", "ood_rec_pop@20", "iid_tail_share@20", "ood_tail_share@20"]


@st.cache_data(show_spinner=False, max_entries=16)
def _runs_frame(root: str, signature: tuple) -> pd.DataFrame:
    rows = []
    for info in RunStore(root).list_runs():
        c, f = info.config, info.final
        status_file = run_status_file(info)
        row = {"run_id": info.run_id, "status": info.status, "reason": info.message,
               "dataset": c.get("dataset", ""), "shift": c.get("shift") or _stored_shift(info),
               "sampler": c.get("sampler", ""), "seed": c.get("seed"),
               "preset": c.get("preset", ""), "device": status_file.get("device", ""),
               "epochs": f.get("epochs_run", status_file.get("epochs_run")), "best_epoch": f.get("best_epoch"),
               "seconds": f.get("seconds"),
               "created": pd.Timestamp(info.created, unit="s", tz="UTC").tz_convert(None).floor("s")}
        for col in METRIC_COLUMNS:
            row[col] = f.get(col)
        row["experiment"] = experiment_key(c)
        rows.append(row)
    cols = ["run_id", "status", "reason", "dataset", "shift", "sampler", "seed", "preset", "device", "epochs",
            "best_epoch", "seconds", "created", *METRIC_COLUMNS, "experiment"]
    return pd.DataFrame(rows, columns=cols)


def _stored_shift(info: RunInfo) -> str:
    """The shift a run actually used (its config may say None = the dataset's default)."""
    try:
        data = json.loads((info.path / "dataset.json").read_text())
    except (OSError, ValueError):
        return ""
    return str(data.get("shift") or "") if isinstance(data, dict) else ""


def runs_frame() -> pd.DataFrame:
    """One row per stored run with its status, reason and final metrics (cached per store state)."""
    root = runs_root()
    sig = tuple((p.name, _status_mtime(p.name)) for p in sorted(root.iterdir())
                if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else ()
    return _runs_frame(str(root), sig)


@st.cache_data(show_spinner=False, max_entries=16)
def popularity_frame(name: str, shift: str | None, seed: int = 0) -> pd.DataFrame:
    """Long tail per split: items ranked by their interaction count in that split (count > 0).
    Columns split, rank, count, share (count / split size)."""
    import numpy as np

    ds = load_dataset_cached(name, shift, seed)
    parts = []
    for split_name in ("train", "test_iid", "test_ood"):
        arr = getattr(ds, split_name)
        counts = np.sort(np.bincount(arr[:, 1], minlength=ds.n_items))[::-1] if len(arr) else np.zeros(0, int)
        counts = counts[counts > 0]
        parts.append(pd.DataFrame({"split": split_name, "rank": np.arange(1, len(counts) + 1),
                                   "count": counts, "share": counts / max(len(arr), 1)}))
    return pd.concat(parts, ignore_index=True)


@st.cache_data(show_spinner=False, max_entries=16)
def shift_report_cached(name: str, shift: str | None, seed: int = 0) -> dict:
    from cnsdiff_core.data import shift_report

    return shift_report(load_dataset_cached(name, shift, seed))


# --- imports ---------------------------------------------------------------------------------------------
def import_roots() -> list[Path]:
    env = os.environ.get("CNSDIFF_IMPORT_ROOTS")
    if env:
        return [Path(p).expanduser().resolve() for p in env.split(os.pathsep) if p.strip()]
    return [(REPO / "sample_data").resolve(), (REPO.parent / "shared" / "datasets").resolve()]


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == r or path.is_relative_to(r) for r in roots)


def escaping_entry(folder: Path, roots: list[Path]) -> Path | None:
    """The first entry of a folder that is a link resolving outside the roots (the loaders read a
    folder's files by name, so a link there would read elsewhere), else None."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return None
    for entry in entries:
        try:
            target = entry.resolve()
        except (OSError, RuntimeError):  # a link loop
            return entry
        if not _inside(target, roots):
            return entry
    return None


def allowed_import_path(text: str) -> Path:
    """Resolve a local path typed by the user; DataError unless it exists under an import root.
    `..` and links are resolved first, and a folder may not hold links that lead outside."""
    if not text.strip():
        raise DataError("Type a file or folder path first.")
    if "\x00" in text:
        raise DataError("The path contains a NUL character; type a plain path.")
    try:
        path = Path(text.strip()).expanduser().resolve()
    except (OSError, RuntimeError):
        raise DataError("The path cannot be resolved (a link loop?); type another path.") from None
    roots = import_roots()
    if not _inside(path, roots):
        raise DataError(f"{path} is outside the folders this app may read ({', '.join(map(str, roots))}); "
                        "copy the data there or set CNSDIFF_IMPORT_ROOTS.")
    if not path.exists():
        raise DataError(f"{path} does not exist; check the spelling.")
    if path.is_dir():
        bad = escaping_entry(path, roots)
        if bad is not None:
            raise DataError(f"{bad.name} in {path} links outside the folders this app may read; copy "
                            "the file there instead of linking it.")
    return path


def session_upload_dir() -> Path:
    """A folder for this session's uploads (inside the run store, hidden from the run list)."""
    sid = st.session_state.setdefault("_upload_session", uuid.uuid4().hex[:12])
    folder = runs_root() / ".uploads" / sid
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_uploads(files) -> list[Path]:
    folder = session_upload_dir()
    out = []
    for f in files:
        name = Path(f.name).name  # never a path from the browser
        if not name or name.startswith("."):
            name = f"upload-{uuid.uuid4().hex[:6]}"
        target = folder / name
        data = f.getvalue()
        if not (target.is_file() and target.stat().st_size == len(data) and target.read_bytes() == data):
            target.write_bytes(data)
        out.append(target)
    return out


@st.cache_data(show_spinner="Checking the files…", max_entries=32)
def validate_cached(paths: tuple[str, ...], signature: tuple) -> list[dict]:
    return validate_files([Path(p) for p in paths])


def validate_paths(paths: list[Path]) -> list[dict]:
    sig = tuple((str(p), p.stat().st_mtime if p.exists() else 0, p.stat().st_size if p.exists() else 0) for p in paths)
    return validate_cached(tuple(str(p) for p in paths), sig)


def verdict_frame(verdicts: list[dict]) -> pd.DataFrame:
    rows = [{"file": v["file"], "ok": "✅ ok" if v["ok"] else "❌ not usable", "format": v.get("format") or "",
             "rows": v.get("rows", 0), "users": v.get("users", 0), "items": v.get("items", 0),
             "message": v["message"] + ("" if not v.get("warnings") else " Warnings: " + " ".join(v["warnings"]))}
            for v in verdicts]
    return pd.DataFrame(rows, columns=["file", "ok", "format", "rows", "users", "items", "message"])


def require_frame() -> None:
    """First call of every page. With a `pages/` folder next to app.py, Streamlit serves the first
    request of a fresh server (and every AppTest run) with its old folder routing, which runs a
    deep-linked page file on its own: no sidebar, no URL state. Then switch that routing off for
    the process, run app.py's frame here, in this same run (its st.navigation runs this page
    inside it; a button pressed in this run stays pressed), and stop. A no-op once app.py's
    navigation is in charge."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the old routing
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        import runpy

        PagesManager.uses_pages_directory = False
        runpy.run_path(str(REPO / "app.py"), run_name="__main__")
        st.stop()


def page_files() -> dict[str, Path]:
    """The explore pages that exist right now (they are written separately)."""
    names = {"denoising": "pages/5_denoising.py", "negatives_map": "pages/6_negatives_map.py",
             "fhn_hardness": "pages/7_fhn_hardness.py", "schedule_lab": "pages/8_schedule_lab.py"}
    return {k: REPO / v for k, v in names.items() if (REPO / v).is_file()}



# --- tuning studies (cnsdiff_core.tune; the Tune page) ------------------------------------------------
TUNE_SAMPLERS = (METHOD, *BASELINES)  # the method first: the app is about it


def study_storages() -> list[str]:
    """Storages the Tune page offers: the runs folder's SQLite file (where the page starts studies;
    in read-only mode only when it exists) and journal files in the runs folder and results/studies."""
    from cnsdiff_core.tune import DEFAULT_DB, default_storage_url

    out = []
    if (runs_root() / DEFAULT_DB).is_file() or not read_only():
        out.append(default_storage_url(runs_root()))
    for folder in (runs_root(), REPO / "results" / "studies"):
        if folder.is_dir():
            out += [f"journal:{p}" for p in sorted(folder.glob("*.journal"))]
    return out


@st.cache_resource(show_spinner=False, max_entries=8)
def study_storage(url: str):
    """An open Optuna storage, shared by every session (its engine / journal reader are thread-safe)."""
    from cnsdiff_core.tune import open_storage

    return open_storage(url)[0]


def storage_exists(url: str) -> bool:
    """False for a SQLite or journal file that is not there yet (opening it would create it)."""
    from cnsdiff_core.tune import journal_path

    path = journal_path(url) or (Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None)
    return path is None or path.is_file()


def storage_label(url: str) -> str:
    from cnsdiff_core.tune import DEFAULT_DB, journal_path

    path = journal_path(url)
    if path is not None:
        return f"journal · {path.name}"
    return f"runs folder · {DEFAULT_DB}" if url.endswith(f"/{DEFAULT_DB}") else url


def prefill_train_from_study(spec: dict, params: dict) -> None:
    """'Use the best configuration': the Train form gets the study's preset, epochs, fixed
    overrides and the best trial's parameters, the study's sampler, and the sidebar its dataset."""
    from cnsdiff_core.tune import trial_overrides

    for key in [k for k in st.session_state if str(k).startswith("cfg_")]:
        del st.session_state[key]  # the Train page refills every field from the preset first
    st.session_state["train_preset"] = spec.get("preset", "tuned")
    st.session_state["train_samplers"] = [spec["sampler"]]
    updates = {**spec.get("overrides", {}), "epochs": spec.get("epochs"),
               **trial_overrides(spec["sampler"], params)}
    prefill_train_form({k: v for k, v in updates.items() if v is not None})
    select(dataset=spec.get("dataset"), shift=spec.get("shift"))

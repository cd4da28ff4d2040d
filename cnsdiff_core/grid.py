"""The experiment grid: every sampler (the method also at further presets, the reference and
variants) x seeds on one dataset, worked as a study on a shared tuning storage (cnsdiff_core.tune:
each cell trained once across workers, failed cells queued again, resumable), then summarized as
one results table (`experiment`)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from .config import preset_config
from .experiment import ExperimentTable, mostpop_row, result_row, summarize, to_markdown
from .samplers import METHOD


@dataclass
class GridCell:
    sampler: str
    preset: str  # the preset the configuration starts from
    label: str  # the table's preset column (the preset, a variant's name, or 'optuna-best')
    seed: int
    overrides: dict

    @property
    def key(self) -> str:
        return f"{self.sampler}/{self.label}/seed{self.seed}"


def grid_cells(samplers: list[str], presets: list[str] | str = "tuned", seeds: int = 1, with_reference: bool = True,
               variants: dict[str, dict] | None = None, sampler_overrides: dict[str, dict] | None = None,
               label: str | None = None) -> list[GridCell]:
    """The experiment grid: every sampler at the first preset; CNSDiff also at every further preset
    (the presets differ in CNSDiff's knobs), at `reference` when asked, and in each variant (a name
    and overrides of the first preset); every cell for seeds 0..seeds-1. sampler_overrides: per
    sampler overrides (e.g. a study's best parameters), labelled `label`; a variant applies on top of
    the method's (an ablation of its best configuration)."""
    presets = [p.strip() for p in presets.split(",")] if isinstance(presets, str) else list(presets)
    presets = [p for p in presets if p] or ["tuned"]
    base: list[tuple[str, str, str, dict]] = []
    for s in samplers:
        extra = dict((sampler_overrides or {}).get(s, {}))
        base.append((s, presets[0], label or presets[0], extra))
        if s == METHOD:
            base += [(s, p, p, extra) for p in presets[1:]]
    if with_reference and METHOD in samplers and "reference" not in presets:
        base.append((METHOD, "reference", "reference", {}))
    if METHOD in samplers:  # a variant changes the method's own cell: its overrides go on top of the sampler's
        mine = dict((sampler_overrides or {}).get(METHOD, {}))
        base += [(METHOD, presets[0], name, {**mine, **v}) for name, v in (variants or {}).items()]
    return [GridCell(s, p, lab, seed, ov) for s, p, lab, ov in base for seed in range(int(seeds))]


def cell_config(cell: GridCell, dataset: str, shift: str, device: str, overrides: dict):
    updates = {**overrides, **cell.overrides, "dataset": dataset, "shift": shift, "sampler": cell.sampler,
               "seed": cell.seed, "device": device, "preset": cell.label}
    cfg = preset_config(cell.preset, **{k: v for k, v in updates.items() if k != "test_eval"})
    test_eval = updates.get("test_eval")
    # a row that selects on the OOD test (the reference) needs the tests every epoch
    if test_eval is not None and cfg.selection != "ood-test":
        cfg = cfg.with_updates(test_eval=test_eval)
    return cfg


def _jsonable_row(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if isinstance(v, (np.integer,)):
            v = int(v)
        elif isinstance(v, (float, np.floating)):
            v = float(v) if np.isfinite(v) else None
        out[k] = v
    return out


@dataclass
class OpenGrid:
    study: object  # optuna.Study
    label: str
    cells: list[GridCell]
    configs: dict  # cell key -> TrainConfig
    data: object
    dataset: str


def open_grid(dataset: str, samplers: list[str], seeds: int = 1, shift: str | None = None, device: str = "auto",
              preset: str | list[str] = "tuned", overrides: dict | None = None, with_reference: bool = True,
              runs_dir: str | None = None, storage: str | None = None, study: str | None = None,
              variants: dict[str, dict] | None = None, sampler_overrides: dict[str, dict] | None = None,
              label: str | None = None, heartbeat_interval: int | None = None, grace_period: int | None = None) -> OpenGrid:
    """Validate every cell's configuration, load the data and open (or create) the grid's study."""
    import optuna

    from .data import load_dataset
    from .study_storage import GRACE_S, HEARTBEAT_S, open_storage
    from .tune import _digest, _slug, check_spec, load_or_create

    overrides = dict(overrides or {})
    data = load_dataset(dataset, shift, seed=int(overrides.get("data_seed", 0)))
    cells = grid_cells([s for s in samplers if s != "mostpop"], preset, seeds, with_reference, variants,
                       sampler_overrides, label)
    configs = {c.key: cell_config(c, dataset, data.shift, device, overrides) for c in cells}  # all valid first
    spec = {"kind": "grid", "dataset": dataset, "shift": data.shift,
            "cells": {k: _digest({**cfg.to_dict(), "device": None}) for k, cfg in configs.items()}}
    name = study or f"experiment-{_slug(dataset)}-{data.shift}-{_digest(spec)}"
    store_, slabel = open_storage(storage, runs_dir, heartbeat_interval or HEARTBEAT_S, grace_period or GRACE_S)
    keys = [c.key for c in cells]
    st = load_or_create(store_, name, optuna.samplers.GridSampler({"cell": keys}, seed=0)) if keys else None
    if st is not None:
        check_spec(st, spec, "experiment study")
        if st.user_attrs.get("kind") != "grid":
            st.set_user_attr("kind", "grid")
    return OpenGrid(st, slabel, cells, configs, data, dataset)


def work_grid(grid: OpenGrid, runs_dir: str | None = None, log: Callable[[str], None] = lambda s: None,
              should_stop: Callable[[], bool] | None = None) -> None:
    """One worker of the grid: train cells nobody has finished or is training, until none is left.
    Cells are handed out by the storage (trial numbers are unique, GridSampler maps trial n < cells
    to cell n), so workers on other processes or machines never train the same cell; a cell whose
    run failed (or whose worker died) is queued again."""
    from optuna.trial import TrialState

    from .data.dataset import DataError
    from .runs import RunStore, StoreError
    from .recorder import train_and_store
    from .train import TrainingError
    from .study_storage import _safe
    from .tune import StudyStopped, fail_stale

    st = grid.study
    if st is None:
        return
    store = RunStore(runs_dir) if runs_dir else RunStore()
    keys = [c.key for c in grid.cells]

    def objective(trial) -> float:
        key = trial.suggest_categorical("cell", keys)
        cfg = grid.configs[key]
        meta = {"tune": {"study": st.study_name, "trial": trial.number, "cell": key, "storage": _safe(grid.label)}}
        t = time.time()
        try:
            run_id, res = train_and_store(cfg, store, (), should_stop, data=grid.data, meta=meta,
                                          on_created=lambda rid: trial.set_user_attr("run_id", rid))
        except (TrainingError, StoreError, DataError) as exc:
            trial.set_user_attr("error", str(exc))
            log(f"{grid.dataset} {key}: failed: {exc}")
            raise
        row = result_row(cfg, res) | {"run_id": run_id}
        if res.status == "stopped" and should_stop is not None and should_stop():
            trial.set_user_attr("error", "stopped by request")
            raise StudyStopped(f"cell {key} was stopped by request; its run {run_id} is kept")
        trial.set_user_attr("row", _jsonable_row(row))
        log(f"{grid.dataset} {cfg.sampler}/{cfg.preset} seed {cfg.seed}: OOD R@20 {row.get('ood_recall@20', float('nan')):.4f} "
            f"IID R@20 {row.get('iid_recall@20', float('nan')):.4f} ({time.time() - t:.0f}s, {run_id})")
        value = res.metrics.get("valid_recall@20")
        return float(value) if value is not None and np.isfinite(value) else 0.0

    while not (should_stop and should_stop()):
        fail_stale(st)
        trials = st.get_trials(deepcopy=False)
        done = {t.params.get("cell") for t in trials if t.state == TrialState.COMPLETE}
        busy = {t.params.get("cell") for t in trials if t.state == TrialState.RUNNING}
        busy |= {t.system_attrs.get("fixed_params", {}).get("cell") for t in trials if t.state == TrialState.WAITING}
        todo = [k for k in keys if k not in done and k not in busy]
        if not todo:
            return
        tried = {t.params.get("cell") for t in trials if t.state.is_finished()}
        if len(trials) >= len(keys) and all(k in tried for k in todo):
            # GridSampler hands out each cell once; a failed cell goes back into the queue
            st.enqueue_trial({"cell": todo[0]})
        try:
            st.optimize(objective, n_trials=1, catch=(TrainingError, StoreError, DataError))
        except StudyStopped:
            return


def grid_frame(grid: OpenGrid) -> pd.DataFrame:
    """One row per finished cell (the latest run of a cell that ran twice), in grid order."""
    from optuna.trial import TrialState

    latest: dict[str, dict] = {}
    if grid.study is not None:
        for t in sorted(grid.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number):
            if "row" in t.user_attrs:
                latest[t.params["cell"]] = dict(t.user_attrs["row"])
    return pd.DataFrame([latest[c.key] for c in grid.cells if c.key in latest])


def run_experiment(dataset: str, samplers: list[str], seeds: int = 1, shift: str | None = None,
                   device: str = "auto", preset: str | list[str] = "tuned", overrides: dict | None = None,
                   with_reference: bool = True, runs_dir: str | None = None,
                   log: Callable[[str], None] = lambda s: None, with_mostpop: bool = True,
                   storage: str | None = None, study: str | None = None, variants: dict[str, dict] | None = None,
                   sampler_overrides: dict[str, dict] | None = None, label: str | None = None,
                   should_stop: Callable[[], bool] | None = None) -> ExperimentTable:
    """The grid of every sampler x seed (x preset, x variant) as a study on a storage (default: the
    runs folder's SQLite): running the same command again resumes it (finished cells are kept), and
    more processes or machines with the same --storage share it (cnsdiff_core.tune)."""
    if "mostpop" in samplers:  # asked for by name: the MostPop row (no training), whatever with_mostpop says
        with_mostpop = True
    grid = open_grid(dataset, samplers, seeds, shift, device, preset, overrides, with_reference, runs_dir, storage,
                     study, variants, sampler_overrides, label)
    work_grid(grid, runs_dir, log, should_stop)
    return grid_table(grid, with_mostpop, log)


def grid_table(grid: OpenGrid, with_mostpop: bool = True, log: Callable[[str], None] = lambda s: None) -> ExperimentTable:
    data = grid.data
    rows = [mostpop_row(data)] if with_mostpop else []
    runs = grid_frame(grid)
    missing = len(grid.cells) - len(runs)
    if missing:
        log(f"{missing} of {len(grid.cells)} grid cells are not finished (running elsewhere, failed or stopped); "
            "run the command again to finish them.")
    frame = pd.concat([pd.DataFrame(rows), runs], ignore_index=True) if rows else runs
    frame.insert(0, "dataset", grid.dataset)
    frame.insert(1, "shift", data.shift)
    if frame.empty:  # nothing finished yet (stopped, or every cell running elsewhere)
        summary = pd.DataFrame(columns=["sampler", "preset", "seeds"])
        return ExperimentTable(frame, summary, to_markdown(summary, f"{grid.dataset} ({data.shift} shift)"))
    summary = summarize(frame)
    return ExperimentTable(frame, summary, to_markdown(summary, f"{grid.dataset} ({data.shift} shift)"))

"""Every sampler with the same backbone and budget on one dataset: one results table.

Epochs are selected on IID validation (the `reference` row keeps its own OOD-test rule, labelled).
MostPop (no training) is the floor. The table reports mean and spread over seeds, the relative
improvement of CNSDiff over the best baseline, the observed FHN rate of each sampler's negatives
at the selected epoch, and training time.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .config import preset_config
from .diagnostics import fhn_summary
from .metrics import evaluate, popularity_scorer
from .samplers import BASELINES, METHOD, SAMPLERS, sampler_class

METRICS = ("valid_recall@20", "iid_recall@20", "iid_ndcg@20", "ood_recall@20", "ood_ndcg@20",
           "iid_recall@10", "iid_ndcg@10", "ood_recall@10", "ood_ndcg@10", "ood_rec_pop@20")


@dataclass
class ExperimentTable:
    frame: pd.DataFrame  # one row per run (sampler x preset x seed)
    summary: pd.DataFrame  # one row per sampler/preset: mean and std over seeds
    markdown: str


def mostpop_row(data, device="cpu") -> dict:
    """Recommend the most popular unseen items to everyone (no training)."""
    pop = data.item_popularity()
    row = {"sampler": "mostpop", "preset": "-", "seed": 0, "best_epoch": 0, "epochs_run": 0, "seconds": 0.0,
           "s_per_epoch": 0.0, "fhn": np.nan, "status": "finished"}
    for prefix, split in (("iid", data.test_iid), ("ood", data.test_ood), ("valid", data.valid)):
        seen = data.train if prefix == "valid" else data.test_mask()  # tests mask validation items too
        res = evaluate(popularity_scorer(pop, device), seen, split, data.n_users, data.n_items, device,
                       popularity=pop)
        row |= {f"{prefix}_{k}": v for k, v in res.metrics.items()}
    return row


def result_row(cfg, res) -> dict:
    """One table row from a TrainResult: metrics at the selected epoch, FHN there (the trained-on
    negative with its Wilson interval, collapse share, pre-mix rate, matched null, truth), timing."""
    fhn = fhn_columns(res.diagnostics, cfg.sampler, res.best_epoch)
    train_s = sum(r.get("train_seconds", 0.0) for r in res.history)
    return {"sampler": cfg.sampler, "preset": cfg.preset, "seed": cfg.seed, "best_epoch": res.best_epoch,
            "epochs_run": res.epochs_run, "seconds": res.seconds,
            "s_per_epoch": train_s / max(len(res.history), 1), **fhn, "status": res.status, **res.metrics}


FHN_COLUMNS = ("fhn", "fhn_lo", "fhn_hi", "fhn_own_positive", "fhn_synthesized", "fhn_synthesized_own_positive",
               "fhn_null", "fhn_true")


def fhn_columns(diagnostics, sampler: str, best_epoch: int | None) -> dict:
    """The FHN columns of a results row (FHN_COLUMNS; NaN where undefined) from a run's
    diagnostics rows at its selected epoch (`diagnostics.fhn_summary`)."""
    f = fhn_summary(diagnostics, sampler, best_epoch)
    ci = f.get("observed_ci") or [None, None]
    out = {"fhn": f.get("observed"), "fhn_lo": ci[0], "fhn_hi": ci[1], "fhn_own_positive": f.get("own_positive"),
           "fhn_synthesized": f.get("synthesized"), "fhn_synthesized_own_positive": f.get("synthesized_own_positive"),
           "fhn_null": f.get("null"), "fhn_true": f.get("true")}
    return {k: np.nan if v is None else v for k, v in out.items()}


def refresh_fhn(frame: pd.DataFrame, store) -> pd.DataFrame:
    """Recompute the FHN columns of stored result rows from their runs' diagnostics (rows whose run
    is not in `store` keep theirs): for tables written before a column existed."""
    out = frame.copy()
    for c in FHN_COLUMNS:
        if c not in out:
            out[c] = np.nan
    for i, r in out.iterrows():
        run_id = r.get("run_id")
        if not isinstance(run_id, str) or not run_id:
            continue
        try:
            diag = store.load(run_id).diagnostics()
        except Exception:  # noqa: BLE001 - a run that is gone or damaged keeps the row's own figures
            continue
        for k, v in fhn_columns(diag.to_dict("records"), str(r["sampler"]), int(r["best_epoch"])).items():
            out.at[i, k] = v
    return out
ROW_ORDER = ("mostpop", *SAMPLERS)  # MostPop (no training) is the floor, then the samplers
PRESET_ORDER = ("-", "baseline", "tuned", "paper", "reference")


def summarize(frame: pd.DataFrame, by: tuple[str, ...] = ("sampler", "preset")) -> pd.DataFrame:
    """Mean and spread (population std) over seeds per group (sampler/preset; `by` must include
    both), in a fixed row order: MostPop, the baselines, then CNSDiff's presets and variants."""
    cols = [c for c in (*METRICS, *FHN_COLUMNS, "s_per_epoch", "best_epoch") if c in frame]
    g = frame.groupby(list(by), sort=False, dropna=False)
    mean = g[cols].mean()
    std = g[cols].std(ddof=0).add_suffix("_std")
    out = pd.concat([mean, std, g.size().rename("seeds")], axis=1).reset_index()

    def rank(row) -> tuple:
        s, p = str(row["sampler"]), str(row["preset"])
        return (ROW_ORDER.index(s) if s in ROW_ORDER else len(ROW_ORDER),
                PRESET_ORDER.index(p) if p in PRESET_ORDER else len(PRESET_ORDER), p)

    order = sorted(range(len(out)), key=lambda i: rank(out.iloc[i]))
    return out.iloc[order].reset_index(drop=True)


def improvement(summary: pd.DataFrame, metric: str = "ood_recall@20", method: str = METHOD) -> dict:
    """Relative improvement of the method over the best baseline.

    The method's row (among its presets/variants, the reference excluded) is chosen on IID
    validation, never on the test; the baseline is the best one on the reported metric itself,
    which makes the comparison conservative."""
    base = summary[summary["sampler"].isin(BASELINES)]
    ours = summary[(summary["sampler"] == method) & (summary["preset"] != "reference")]
    if base.empty or ours.empty:
        return {}
    b = base.loc[base[metric].idxmax()]
    sel = "valid_recall@20" if "valid_recall@20" in ours and ours["valid_recall@20"].notna().any() else metric
    o = ours.loc[ours[sel].idxmax()]
    floor = summary.loc[summary["sampler"] == "mostpop", metric]
    return {"metric": metric, "best_baseline": b["sampler"], "baseline": float(b[metric]),
            "ours": float(o[metric]), "ours_preset": o["preset"],
            "relative": float(o[metric] / b[metric] - 1) if b[metric] else float("nan"),
            "mostpop": float(floor.iloc[0]) if len(floor) else float("nan")}


def to_markdown(summary: pd.DataFrame, title: str = "") -> str:
    def cell(row, m):
        v, s = row.get(m, np.nan), row.get(f"{m}_std", np.nan)
        if pd.isna(v):
            return "-"
        return f"{v:.4f}" + (f" ± {s:.4f}" if row.get("seeds", 1) > 1 and not pd.isna(s) else "")

    head = ["sampler", "preset", "seeds", "valid R@20", "IID R@20", "IID N@20", "OOD R@20", "OOD N@20", "OOD R@10",
            "OOD N@10", "FHN", "collapse", "FHN pre-mix", "pre-mix collapse", "s/epoch", "sel. epoch"]
    lines = [f"### {title}" if title else "", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for _, r in summary.iterrows():
        def rate(c):
            return "-" if pd.isna(r.get(c, np.nan)) else f"{r[c]:.3f}"
        fhn = rate("fhn")
        if fhn != "-" and int(r.get("seeds", 1)) == 1 and not pd.isna(r.get("fhn_lo", np.nan)):
            fhn += f" [{r['fhn_lo']:.3f}, {r['fhn_hi']:.3f}]"
        spe = "-" if not r.get("s_per_epoch") else f"{r['s_per_epoch']:.2f}"
        be = "-" if not r.get("best_epoch") else f"{r['best_epoch']:.0f}"
        lines.append("| " + " | ".join([str(r["sampler"]), str(r["preset"]), str(int(r.get("seeds", 1))),
                                        cell(r, "valid_recall@20"), cell(r, "iid_recall@20"), cell(r, "iid_ndcg@20"), cell(r, "ood_recall@20"),
                                        cell(r, "ood_ndcg@20"), cell(r, "ood_recall@10"), cell(r, "ood_ndcg@10"),
                                        fhn, rate("fhn_own_positive"), rate("fhn_synthesized"),
                                        rate("fhn_synthesized_own_positive"), spe, be]) + " |")
    lines += ["", "FHN: the negative that is trained on, at the selected epoch (Wilson 95% interval for one seed); "
                  "collapse: share of those negatives that resolve to the user's own training positive (nearest "
                  "item by Euclidean distance, all items); FHN pre-mix and pre-mix collapse: the same for a "
                  "vector sampler's candidate before mixing (CNSDiff's h)."]
    imp = improvement(summary)
    if imp:
        ours = sampler_class(METHOD).short_label()
        lines += ["", f"{ours} ({imp['ours_preset']}, its best row on IID validation) vs the best baseline "
                      f"({imp['best_baseline']}) on "
                      f"{imp['metric']}: {imp['ours']:.4f} vs {imp['baseline']:.4f} "
                      f"({imp['relative'] * 100:+.1f}%)."
                  + ("" if np.isnan(imp["mostpop"]) else
                     f" MostPop (no training) reaches {imp['mostpop']:.4f}: {ours} is "
                     f"{'above' if imp['ours'] > imp['mostpop'] else 'NOT above'} that floor.")]
    return "\n".join(lines)


# --- the grid, as a study on a shared storage (cnsdiff_core.tune) -------------------------------------
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
    sampler overrides (e.g. a study's best parameters), labelled `label`."""
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
    if METHOD in samplers:
        base += [(METHOD, presets[0], name, dict(v)) for name, v in (variants or {}).items()]
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
    from .tune import GRACE_S, HEARTBEAT_S, _digest, _slug, check_spec, load_or_create, open_storage

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
    from .runs import RunStore, StoreError, train_and_store
    from .train import TrainingError
    from .tune import StudyStopped, _safe, fail_stale

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


def table_from_csvs(paths: list[str | Path], refresh_store=None) -> ExperimentTable:
    """Merge per-run CSVs written by `experiment --out` (e.g. from parallel jobs) into one table;
    with refresh_store (a RunStore), FHN columns are recomputed from the runs (`refresh_fhn`)."""
    frame = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    if refresh_store is not None:
        frame = refresh_fhn(frame, refresh_store)
    frame = frame.drop_duplicates(subset=["sampler", "preset", "seed"], keep="last")
    summary = summarize(frame)
    name = f"{frame['dataset'].iloc[0]} ({frame['shift'].iloc[0]} shift)" if len(frame) else ""
    return ExperimentTable(frame, summary, to_markdown(summary, name))


def causal_ablation(frame: pd.DataFrame) -> pd.DataFrame:
    """Summary of `scripts/sweep.py causal` rows (one per run): per confounding strength and
    causal kind, mean and spread (population std) over seeds of validation and OOD Recall@20 and
    of the ground-truth FHN of the trained-on negative and of the pre-mix h."""
    from .data.registry import parse_synthetic

    if frame.empty:
        return pd.DataFrame(columns=["confounding", "causal", "seeds"])
    f = frame.copy()
    f["confounding"] = [parse_synthetic(str(d).split(":", 1)[1]).confounding for d in f["dataset"]]
    def label(overrides: str) -> str:
        kw = json.loads(overrides)
        kind = kw.get("causal", "env-variance")
        return f"{kind} (weight {kw['causal_weight']:g})" if "causal_weight" in kw else kind

    f["causal"] = [label(o) for o in f["overrides"]]
    cols = [c for c in ("valid_recall@20", "ood_recall@20", "fhn_true", "premix_fhn_true", "own_positive") if c in f]
    g = f.groupby(["confounding", "causal"])
    out = pd.concat([g[cols].mean(), g[cols].std(ddof=0).add_suffix("_std"), g.size().rename("seeds")], axis=1)
    order = {"none": 0, "kl": 1, "env-variance": 2}  # stronger-weight variants after their kind
    out = out.reset_index()
    return out.sort_values(["confounding", "causal"],
                           key=lambda c: c.map(lambda k: order.get(k, len(order))) if c.name == "causal" else c,
                           ignore_index=True)


ABLATION_CSV = Path(__file__).resolve().parents[1] / "results" / "causal_ablation.csv"


def load_causal_ablation(path: str | Path | None = None) -> pd.DataFrame:
    """The shipped causal ablation (`scripts/sweep.py causal`) summarized by `causal_ablation`;
    an empty frame when the file is missing or unreadable."""
    p = Path(path) if path else ABLATION_CSV
    try:
        return causal_ablation(pd.read_csv(p))
    except (OSError, ValueError, KeyError, pd.errors.EmptyDataError):
        return pd.DataFrame(columns=["confounding", "causal", "seeds"])

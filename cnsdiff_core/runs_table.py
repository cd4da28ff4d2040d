"""The run store as a table: one row per stored run (status, reason, data, sampler, final metrics,
its experiment key), summaries over seeds, and improvement over a baseline run. What Compare runs
and Home show; nothing here imports Streamlit.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pandas as pd

from .runs import RunInfo, RunStore

METRIC_COLUMNS = ["valid_recall@20"] + [f"{split}_{m}@{k}" for split in ("iid", "ood") for k in (10, 20)
                                        for m in ("recall", "ndcg", "precision", "hit")] + \
                 ["iid_rec_pop@20", "ood_rec_pop@20", "iid_tail_share@20", "ood_tail_share@20"]
COLUMNS = ["run_id", "status", "reason", "dataset", "shift", "sampler", "seed", "preset", "device", "epochs",
           "best_epoch", "seconds", "created", *METRIC_COLUMNS, "experiment"]
USABLE = ("finished", "early-stopped", "stopped")  # runs with results to compare
# settings that do not change what a run learns: runs that differ only in these (and the seed)
# are repetitions of one experiment
NOT_THE_EXPERIMENT = ("seed", "device", "cpu_threads", "max_seconds", "eval_batch_users", "snapshot_epochs",
                      "test_eval", "preset", "diagnose_every")


def experiment_key(config: dict) -> str:
    """Runs with the same key are the same experiment with different seeds."""
    kept = {k: v for k, v in sorted(config.items()) if k not in NOT_THE_EXPERIMENT}
    return json.dumps(kept, sort_keys=True, default=str)


def _json_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_row(info: RunInfo) -> dict:
    """The table row of one run (a damaged run has its reason and no metrics)."""
    c, f = info.config, info.final
    status_file = _json_file(info.path / "status.json")
    # the shift a run actually used (its config may say None = the dataset's default)
    shift = c.get("shift") or str(_json_file(info.path / "dataset.json").get("shift") or "")
    row = {"run_id": info.run_id, "status": info.status, "reason": info.message,
           "dataset": c.get("dataset", ""), "shift": shift, "sampler": c.get("sampler", ""), "seed": c.get("seed"),
           "preset": c.get("preset", ""), "device": status_file.get("device", ""),
           "epochs": f.get("epochs_run", status_file.get("epochs_run")), "best_epoch": f.get("best_epoch"),
           "seconds": f.get("seconds"),
           "created": pd.Timestamp(info.created, unit="s", tz="UTC").tz_convert(None).floor("s")}
    row |= {col: f.get(col) for col in METRIC_COLUMNS}
    row["experiment"] = experiment_key(c)
    return row


def runs_frame(store: RunStore) -> pd.DataFrame:
    """One row per stored run, newest first (COLUMNS)."""
    return pd.DataFrame([run_row(info) for info in store.list_runs()], columns=COLUMNS)


def seed_summary(frame: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Mean and spread (population std) of each metric over runs that differ only in the seed,
    for experiments with at least two finished runs (experiment.summarize per experiment key)."""
    from .experiment import summarize

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


def relative(value, base) -> float | None:
    """(value - base) / base, None where either is missing or the base is 0."""
    if value is None or base is None or pd.isna(value) or pd.isna(base) or not base:
        return None
    return (value - base) / base


def improvement_over(rows: pd.DataFrame, usable: pd.DataFrame, baseline: str, metrics: list[str],
                     preferred: Iterable[str] = ()) -> pd.DataFrame:
    """Per run of `rows` (indexed by run_id): its relative improvement on each metric over a run of
    the `baseline` sampler on the same dataset and shift, taken from `usable` (one of `preferred`
    first, so the user chooses the baseline, else the newest). Columns: run_id, base_run, metrics."""
    preferred = set(preferred)
    out = []
    for run_id, row in rows.iterrows():
        base = usable[(usable["sampler"] == baseline) & (usable["dataset"] == row["dataset"])
                      & (usable["shift"] == row["shift"])]
        if len(base):
            base = base.assign(_picked=base["run_id"].isin(preferred)).sort_values("_picked", ascending=False,
                                                                                  kind="stable")
        entry = {"run_id": run_id, "base_run": base.iloc[0]["run_id"] if len(base) else None}
        for m in metrics:
            entry[m] = relative(row[m], base.iloc[0][m]) if len(base) else None
        out.append(entry)
    return pd.DataFrame(out, columns=["run_id", "base_run", *metrics])


def latest_runs(infos: Iterable[RunInfo], samplers: Iterable[str], preset: str, dataset: str) -> dict[str, RunInfo]:
    """The newest run with results of each sampler (in that order) with this preset and dataset."""
    out: dict[str, RunInfo] = {}
    for info in infos:
        c = info.config
        if (c.get("preset") == preset and c.get("dataset") == dataset and info.final and info.status in USABLE
                and c.get("sampler") not in out):
            out[c["sampler"]] = info
    return {s: out[s] for s in samplers if s in out}


__all__ = ["METRIC_COLUMNS", "COLUMNS", "NOT_THE_EXPERIMENT", "experiment_key", "run_row", "runs_frame",
           "seed_summary", "relative", "improvement_over", "latest_runs"]

"""Every sampler with the same backbone and budget on one dataset: one results table (the grid
that trains them is `grid`).

Epochs are selected on IID validation (the `reference` row keeps its own OOD-test rule, labelled).
MostPop (no training) is the floor. The table reports mean and spread over seeds, the relative
improvement of CNSDiff over the best baseline, the observed FHN rate of each sampler's negatives
at the selected epoch, and training time.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

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

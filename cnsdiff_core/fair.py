"""The fair benchmark's report (scripts/fair_benchmark.sh): every sampler tuned with the same trial
budget on IID validation, then its best configuration trained with several seeds and tested once
at the selected epoch; the table says what each search cost and tests every sampler against the
best baseline, paired over users.

Everything it reads is kept where a fresh clone finds it: each dataset's studies live in one
journal file (`STUDIES/<dataset>.journal`: the tuning studies `fair-<dataset>-<sampler>` and the
seeds grid `fair-seeds-<dataset>-t<budget>`), and the per-user test metrics of the seed runs are
copied, compactly, to `PER_USER/<dataset>/<run_id>.npz` the first time the report sees the run
store that trained them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .samplers import BASELINES, METHOD
from .metrics import paired_test

PER_USER_KEYS = ("ood_users", "ood_recall@20", "ood_ndcg@20", "iid_users", "iid_recall@20", "iid_ndcg@20")
METRICS = ("valid_recall@20", "iid_recall@20", "iid_ndcg@20", "ood_recall@20", "ood_ndcg@20")


def tune_study_name(dataset: str, sampler: str) -> str:
    return f"fair-{dataset}-{sampler}"


def seeds_study_name(dataset: str, budget: int) -> str:
    return f"fair-seeds-{dataset}-t{budget}"


def _per_user(run_id: str, dataset: str, runs_dir: Path | None, per_user_dir: Path) -> dict | None:
    """The seed run's per-user test metrics: the compact copy, made from the run store when the
    copy is missing; None when neither exists."""
    copy = per_user_dir / dataset / f"{run_id}.npz"
    if not copy.is_file() and runs_dir is not None and (runs_dir / run_id / "per_user.npz").is_file():
        with np.load(runs_dir / run_id / "per_user.npz", allow_pickle=False) as z:
            keep = {k: (z[k].astype(np.int32) if k.endswith("users") else z[k].astype(np.float32))
                    for k in PER_USER_KEYS if k in z.files}
        copy.parent.mkdir(parents=True, exist_ok=True)
        tmp = copy.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **keep)
        tmp.replace(copy)
    if not copy.is_file():
        return None
    with np.load(copy, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _user_means(runs: list[str], dataset: str, runs_dir, per_user_dir, metric: str) -> pd.Series | None:
    """A metric per user, averaged over a sampler's seed runs (users every run evaluated)."""
    split = metric.split("_")[0]
    series = []
    for run_id in runs:
        pu = _per_user(run_id, dataset, runs_dir, per_user_dir)
        if pu is None or metric not in pu:
            return None
        series.append(pd.Series(pu[metric], index=pu[f"{split}_users"]))
    if not series:
        return None
    return pd.concat(series, axis=1, join="inner").mean(axis=1)


def dataset_rows(dataset: str, storage: str, budget: int | None, samplers: list[str], runs_dir: Path | None,
                 per_user_dir: Path, metric: str = "ood_recall@20") -> list[dict]:
    """One row per sampler of one dataset: its search (budget, trials by state, hours, best
    validation value and parameters) and its seed runs (mean and spread of each metric, paired test
    of `metric` per user against the best baseline)."""
    import optuna

    from .tune import open_storage, study_summary

    store, label = open_storage(storage)
    names = {s.study_name: s for s in optuna.get_all_study_summaries(store, include_best_trial=False)}
    rows = []
    for sampler in samplers:
        row: dict = {"dataset": dataset, "sampler": sampler}
        name = tune_study_name(dataset, sampler)
        if name in names:
            study = optuna.load_study(study_name=name, storage=store)
            summ = study_summary(study, label, mark_stale=False)  # a report never writes to a journal
            row |= {"shift": summ["spec"].get("shift"), "budget": study.user_attrs.get("budget"),
                    "epochs": summ["spec"].get("epochs"), "n_complete": summ["n_complete"],
                    "n_pruned": summ["n_pruned"], "n_failed": summ["n_failed"],
                    "tuning_hours": summ["trial_seconds"] / 3600, "best_valid_in_search": summ["best_value"],
                    "best_params": json.dumps(summ["best_params"], sort_keys=True)}
        rows.append(row)
    grid_name = seeds_study_name(dataset, budget) if budget else None
    frame = pd.DataFrame()
    if grid_name in names:
        from optuna.trial import TrialState

        grid = optuna.load_study(study_name=grid_name, storage=store)
        latest = {}
        for t in sorted(grid.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number):
            if "row" in t.user_attrs:
                latest[t.params["cell"]] = t.user_attrs["row"]
        frame = pd.DataFrame(list(latest.values()))
    if frame.empty:
        return rows
    frame = frame[frame["sampler"].isin(samplers)]
    runs = frame.groupby("sampler")["run_id"].apply(list).to_dict()
    means = frame.groupby("sampler")[[m for m in METRICS if m in frame]].mean()
    spread = frame.groupby("sampler")[[m for m in METRICS if m in frame]].std(ddof=0)
    seconds = frame.groupby("sampler")["seconds"].sum() if "seconds" in frame else pd.Series(dtype=float)
    base = [s for s in BASELINES if s in means.index]
    best_base = max(base, key=lambda s: means.loc[s, metric]) if base else None
    base_users = (_user_means(runs[best_base], dataset, runs_dir, per_user_dir, metric)
                  if best_base else None)
    for row in rows:
        s = row["sampler"]
        if s not in means.index:
            continue
        row["seeds"] = len(runs[s])
        row["seed_hours"] = float(seconds.get(s, 0.0)) / 3600
        for m in means.columns:
            row[m], row[f"{m}_std"] = float(means.loc[s, m]), float(spread.loc[s, m])
        row["best_baseline"] = best_base
        if best_base is None:
            continue
        b = means.loc[best_base, metric]
        row[f"rel_{metric}"] = float(means.loc[s, metric] / b - 1) if b else math.nan
        mine = _user_means(runs[s], dataset, runs_dir, per_user_dir, metric)
        if s != best_base and mine is not None and base_users is not None:
            common = mine.index.intersection(base_users.index)
            res = paired_test(mine.loc[common].to_numpy(), base_users.loc[common].to_numpy())
            row |= {"paired_users": int(res["n_users"]), "paired_mean_diff": res["mean_diff"],
                    "wilcoxon_p": res["wilcoxon_p"], "ttest_p": res["ttest_p"]}
        row["run_ids"] = " ".join(runs[s])
    return rows


REPO = Path(__file__).resolve().parents[1]
SHIPPED_TABLE = REPO / "results" / "fair_benchmark.csv"  # what scripts/fair_benchmark.sh commits


def benchmark_table(path: str | Path = SHIPPED_TABLE) -> pd.DataFrame:
    """The fair benchmark's table as `fair_report` wrote it (one row per dataset x sampler), only
    the datasets whose seed runs are in; an empty frame where there is no table yet. A file that is
    not such a table raises ValueError naming the file and the missing columns."""
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame()
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a CSV table ({type(exc).__name__}); rebuild it with "
                         "`bash scripts/fair_benchmark.sh --report`.") from None
    missing = {"dataset", "sampler"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path} lacks the column(s) {', '.join(sorted(missing))}; rebuild it with "
                         "`bash scripts/fair_benchmark.sh --report`.")
    if "seeds" not in frame.columns or "ood_recall@20" not in frame.columns:
        return frame.iloc[0:0]
    done = frame.groupby("dataset", sort=False)["seeds"].transform(lambda s: s.notna().any())
    return frame[done].reset_index(drop=True)


def floor_value(dataset: str, metric: str = "ood_recall@20", seeds_dir: str | Path | None = None) -> float | None:
    """MostPop's score on a dataset in the benchmark's seed table (`results/fair/<dataset>.csv`): the
    floor a learned sampler has to clear; None where the table or the row is missing."""
    path = Path(seeds_dir or SHIPPED_TABLE.parent / "fair") / f"{dataset}.csv"
    try:
        rows = pd.read_csv(path)
        value = rows.loc[rows["sampler"] == "mostpop", metric]
    except (OSError, KeyError, ValueError, pd.errors.ParserError):
        return None
    return float(value.iloc[0]) if len(value) and pd.notna(value.iloc[0]) else None


def verdict_rows(table: pd.DataFrame, sampler: str | None = None, metric: str = "ood_recall@20") -> pd.DataFrame:
    """The benchmark's answer in one row per dataset: the method (or `sampler`) against that
    dataset's best tuned baseline on `metric`, with both paired tests, as `benchmark_table` holds it."""
    sampler = sampler or METHOD
    out = []
    for ds, part in table.groupby("dataset", sort=False):
        mine = part[part["sampler"] == sampler]
        if mine.empty:
            continue
        r = mine.iloc[0]
        base = r.get("best_baseline")
        rel = r.get(f"rel_{metric}")
        base_value = part.loc[part["sampler"] == base, metric]
        out.append({"dataset": ds, "shift": r.get("shift"), "best baseline": base,
                    f"its {metric}": round(float(base_value.iloc[0]), 4) if len(base_value) else None,
                    f"{sampler} {metric}": None if pd.isna(r.get(metric)) else round(float(r.get(metric)), 4),
                    "difference": None if pd.isna(rel) else f"{rel:+.1%}",
                    "Wilcoxon p": p_value(r.get("wilcoxon_p")), "t-test p": p_value(r.get("ttest_p"))})
    return pd.DataFrame(out)


def display_rows(part: pd.DataFrame, metric: str = "ood_recall@20") -> pd.DataFrame:
    """One dataset's rows of `benchmark_table` as the app shows them: the search, the seeds, mean ±
    spread of each metric, the difference from the best baseline and the paired tests."""
    def pm(r, m):
        v, sd = r.get(m), r.get(f"{m}_std")
        return None if pd.isna(v) else f"{v:.4f}" + ("" if pd.isna(sd) else f" ± {sd:.4f}")

    out = []
    for _, r in part.iterrows():
        base = r.get("best_baseline")
        rel = r.get(f"rel_{metric}")
        out.append({"sampler": r["sampler"],
                    "trials (complete / pruned / failed)": None if pd.isna(r.get("n_complete")) else
                    f"{int(r['n_complete'])} / {int(r['n_pruned'])} / {int(r['n_failed'])}",
                    "tuning CPU-h": r.get("tuning_hours"), "seed runs": r.get("seeds"),
                    "valid R@20": pm(r, "valid_recall@20"), "IID R@20": pm(r, "iid_recall@20"),
                    "OOD R@20": pm(r, "ood_recall@20"), "OOD N@20": pm(r, "ood_ndcg@20"),
                    "vs best baseline": "best baseline" if r["sampler"] == base else
                    (None if pd.isna(rel) else f"{rel:+.1%}"),
                    "Wilcoxon p": p_value(r.get("wilcoxon_p")), "t-test p": p_value(r.get("ttest_p")),
                    "best configuration": _params(r["best_params"]) if isinstance(r.get("best_params"), str) else None})
    return pd.DataFrame(out)


def fair_report(datasets: list[str], studies_dir: str | Path, samplers: list[str], budgets: dict[str, int],
                out_csv: str | Path, out_md: str | Path, runs_dir: str | Path | None = None,
                per_user_dir: str | Path | None = None, metric: str = "ood_recall@20") -> pd.DataFrame:
    """Write the benchmark table (CSV, one row per dataset x sampler) and its markdown; returns it.
    budgets: the trial budget of each dataset (it names the seeds study)."""
    studies_dir = Path(studies_dir)
    per_user_dir = Path(per_user_dir) if per_user_dir else studies_dir.parent / "fair" / "per_user"
    runs = Path(runs_dir) if runs_dir else None
    rows = []
    for ds in datasets:
        journal = studies_dir / f"{ds}.journal"
        if not journal.is_file():
            rows += [{"dataset": ds, "sampler": s} for s in samplers]
            continue
        rows += dataset_rows(ds, f"journal:{journal}", budgets.get(ds), samplers, runs, per_user_dir, metric)
    frame = pd.DataFrame(rows)
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out_csv, index=False)
    seeds_dir = per_user_dir.parent  # the seed tables (results/fair/<dataset>.csv) hold the MostPop row
    Path(out_md).write_text(to_markdown(frame, metric, {ds: floor_value(ds, metric, seeds_dir) for ds in datasets}))
    return frame


def fair_pairs(dataset: str, sampler: str, table: str | Path = SHIPPED_TABLE, per_user_dir: str | Path | None = None,
               metrics: tuple[str, ...] = ("ood_recall@20", "iid_recall@20")) -> pd.DataFrame:
    """One sampler against every other of a dataset, paired over users on each metric (mean over each
    sampler's seeds), from the benchmark table's run ids and the per-user copies: what the table's
    single comparison with the best baseline leaves out. `differing` is the share of users whose two
    values differ: where it is small the rank test (ties split between the sides) is conservative."""
    frame = benchmark_table(table)
    part = frame[frame["dataset"] == dataset] if not frame.empty else frame
    if part.empty:
        known = ", ".join(sorted(frame["dataset"].unique())) if not frame.empty else "none"
        raise ValueError(f"{table} has no seed runs for dataset {dataset!r} (datasets with seed runs: {known}).")
    runs = {r["sampler"]: str(r["run_ids"]).split() for _, r in part.iterrows() if isinstance(r.get("run_ids"), str)}
    if sampler not in runs:
        raise ValueError(f"{table} has no seed runs of {sampler!r} on {dataset} (samplers: {', '.join(runs)}).")
    per_user_dir = Path(per_user_dir) if per_user_dir else Path(table).parent / "fair" / "per_user"
    out = []
    for metric in metrics:
        means = {}
        for name, ids in runs.items():
            means[name] = _user_means(ids, dataset, None, per_user_dir, metric)
            if means[name] is None:
                raise ValueError(f"a per-user copy ({metric}) of {name}'s runs on {dataset} is missing under "
                                 f"{per_user_dir / dataset}; rebuild them with `bash scripts/fair_benchmark.sh "
                                 "--report` where the runs are.")
        mine = means[sampler]
        for other, theirs in means.items():
            if other == sampler:
                continue
            common = mine.index.intersection(theirs.index)
            a, b = mine.loc[common].to_numpy(), theirs.loc[common].to_numpy()
            res = paired_test(a, b)
            out.append({"dataset": dataset, "sampler": sampler, "other": other, "metric": metric,
                        "mean": float(a.mean()), "other_mean": float(b.mean()),
                        "rel": float(a.mean() / b.mean() - 1) if b.mean() else math.nan,
                        "users": len(common), "differing": float(np.mean(a != b)) if len(common) else math.nan,
                        "wilcoxon_p": res["wilcoxon_p"], "ttest_p": res["ttest_p"]})
    return pd.DataFrame(out)


def pairs_display(pairs: pd.DataFrame) -> pd.DataFrame:
    """`fair_pairs` as the app and `fair-pairs` show it: one row per metric and other sampler,
    numbers formatted."""
    return pd.DataFrame([{"metric": r["metric"], "against": r["other"], "this sampler": f"{r['mean']:.4f}",
                          "the other": f"{r['other_mean']:.4f}",
                          "difference": "-" if pd.isna(r["rel"]) else f"{r['rel']:+.1%}",
                          "users": int(r["users"]), "differing": f"{r['differing']:.1%}",
                          "Wilcoxon p": p_value(r["wilcoxon_p"]), "t-test p": p_value(r["ttest_p"])}
                         for _, r in pairs.iterrows()])


def pairs_markdown(pairs: pd.DataFrame) -> str:
    """`pairs_display` as a markdown table, its sampler named in the header."""
    shown = pairs_display(pairs)
    header = [str(pairs["sampler"].iloc[0]) if c == "this sampler" and len(pairs) else c for c in shown.columns]
    rows = ["| " + " | ".join(map(str, r)) + " |" for r in shown.itertuples(index=False)]
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows])


def p_value(v) -> str:
    """A p-value for a table: three significant digits; one that underflowed to 0 (scipy returns 0.0
    below the smallest double) reads "< 1e-300", not a p of exactly 0."""
    if v is None or pd.isna(v):
        return "-"
    return "< 1e-300" if float(v) == 0.0 else f"{float(v):.3g}"


def to_markdown(frame: pd.DataFrame, metric: str = "ood_recall@20", floors: dict[str, float | None] | None = None) -> str:
    """The report as markdown; `floors`: MostPop's score on `metric` per dataset (None: unknown), said
    under its table."""
    def num(v, fmt="{:.4f}"):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

    def cell(r, m):
        v, s = r.get(m), r.get(f"{m}_std")
        return "-" if v is None or pd.isna(v) else f"{v:.4f}" + ("" if s is None or pd.isna(s) else f" ± {s:.4f}")

    lines = ["# Fair benchmark: every sampler tuned with the same budget", "",
             f"Search: Optuna TPE on IID-validation Recall@20, median pruning; then the best configuration with "
             f"several seeds, tests scored once at the selected epoch. Paired tests: {metric} per user (mean over "
             "the seeds) against the best baseline (the baseline with the highest mean on that metric).", ""]
    for ds, part in frame.groupby("dataset", sort=False):
        shift = next((s for s in part.get("shift", pd.Series(dtype=object)) if isinstance(s, str)), "?")
        base = next((b for b in part.get("best_baseline", pd.Series(dtype=object)) if isinstance(b, str)), None)
        lines += [f"## {ds} ({shift} shift)", "",
                  "| sampler | budget | complete / pruned / failed | tuning h | seeds | valid R@20 | IID R@20 | "
                  f"OOD R@20 | OOD N@20 | vs {base or 'best baseline'} | Wilcoxon p | t-test p |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for _, r in part.iterrows():
            r = r.to_dict()
            trials = ("-" if pd.isna(r.get("n_complete", np.nan)) else
                      f"{int(r['n_complete'])} / {int(r['n_pruned'])} / {int(r['n_failed'])}")
            rel = r.get(f"rel_{metric}")
            lines.append("| " + " | ".join([
                str(r["sampler"]), num(r.get("budget"), "{:.0f}"), trials, num(r.get("tuning_hours"), "{:.3g}"),
                num(r.get("seeds"), "{:.0f}"), cell(r, "valid_recall@20"), cell(r, "iid_recall@20"),
                cell(r, "ood_recall@20"), cell(r, "ood_ndcg@20"),
                "-" if rel is None or pd.isna(rel) else ("best baseline" if r["sampler"] == base else f"{rel * 100:+.1f}%"),
                p_value(r.get("wilcoxon_p")), p_value(r.get("ttest_p"))]) + " |")
        lines.append("")
        if (floors or {}).get(ds) is not None:
            lines += [f"MostPop (no training, the popularity floor): {metric} {floors[ds]:.4f}.", ""]
        best = [(r["sampler"], r.get("best_valid_in_search"), r.get("best_params")) for _, r in part.iterrows()
                if isinstance(r.get("best_params"), str)]
        if best:
            lines += ["Best configuration of each search (its validation Recall@20 in the search; the seeds train it):", ""]
            lines += [f"- {sampler} ({num(value)}): {_params(params)}" for sampler, value, params in best]
            lines.append("")
    return "\n".join(lines)


def _params(text: str) -> str:
    """A trial's parameters as name=value, numbers to 3 significant digits."""
    params = json.loads(text)
    if not params:
        return "(no parameters)"
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))

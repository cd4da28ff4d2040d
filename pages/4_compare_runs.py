"""Compare runs: every stored run with its metrics, grouped bars, improvement over RNS, a paired
test across users, CSV export; interrupted runs can be resumed."""
import numpy as np
import streamlit as st

from cnsdiff_core import fair, runs_table
from cnsdiff_core.metrics import paired_test
from cnsdiff_core.runs import PRUNED_PREFIX, StoreError
from cnsdiff_core.samplers import METHOD, UNIFORM, sampler_class
from ui import cache, data, figures, pages, routing, state, tasks

routing.require_frame()

st.title("Compare runs")


def fair_benchmark() -> None:
    """The shipped fair benchmark: every sampler tuned with the same budget, 5 seeds, paired tests."""
    try:
        table = cache.benchmark_table()
    except ValueError as exc:
        st.error(str(exc))
        return
    if table.empty:
        st.caption("The fair benchmark has no finished dataset yet (scripts/fair_benchmark.sh).")
        return
    st.markdown(f"**{sampler_class(METHOD).label} against the best tuned baseline of each dataset** "
                "(OOD Recall@20, mean over the seeds; the paper claims +13.96% on average):")
    st.dataframe(fair.verdict_rows(table), hide_index=True, key="fair_verdict")
    names = list(dict.fromkeys(table["dataset"]))
    here = state.current_dataset()
    pick = st.radio("Dataset", names, index=names.index(here) if here in names else 0, key="fair_dataset",
                    horizontal=True)
    part = table[table["dataset"] == pick]
    st.plotly_chart(figures.benchmark_bars(part, floor=fair.floor_value(pick)), key="fair_bars",
                    config={"displaylogo": False})
    st.dataframe(fair.display_rows(part), hide_index=True, key="fair_table",
                 column_config={"tuning CPU-h": st.column_config.NumberColumn(format="%.2f")})
    st.caption("Every sampler searched with the same Optuna budget on IID validation (lr, L2 and its own "
               "knobs; median pruning), then its best configuration trained with 5 seeds and tested once at "
               "the selected epoch. p-values: paired over users (mean over seeds) against the best baseline. "
               "Commands, cost and the verdict: docs/RESULTS.md section 1. The studies themselves:")
    pages.link("tune", label="browse the benchmark's studies on Tune")
    samplers = part["sampler"].tolist()
    me = st.selectbox("Pair one sampler with every other", samplers, key="fair_pair_sampler",
                      index=samplers.index(METHOD) if METHOD in samplers else 0,
                      help="Paired over users on the OOD and IID tests (mean over each sampler's seeds): what "
                           "the table's one comparison with the best baseline leaves out.")
    try:
        pairs = cache.benchmark_pairs(pick, me)
    except ValueError as exc:
        st.warning(str(exc))
        return
    st.dataframe(fair.pairs_display(pairs), hide_index=True, key="fair_pairs")
    st.caption("'differing': the share of users whose two values differ; where it is small the rank test "
               "(ties split between the sides) is conservative. The same table: `python -m cnsdiff_core "
               f"fair-pairs --dataset {pick} --sampler {me}`.")


with st.expander("The fair benchmark: does CNSDiff beat baselines tuned the same way?", expanded=False,
                 icon=":material/balance:"):
    fair_benchmark()

frame = cache.runs_frame()
if frame.empty:
    st.info("No runs in the run store yet: run the demo on Home" +
            ("." if state.read_only() else " or train on the Train page."))
    st.stop()

name, shift = state.current_dataset(), state.current_shift()
only_here = st.toggle(f"Only runs on {data.dataset_label(name)} / {shift}", key="compare_only_here", value=False)
table = frame[(frame["dataset"] == name) & (frame["shift"].isin([shift, ""]))] if only_here else frame
table = table.drop(columns=["experiment"])
st.dataframe(table, hide_index=True, key="compare_table",
             column_config={c: st.column_config.NumberColumn(c, format="%.4f") for c in runs_table.METRIC_COLUMNS}
             | {"seconds": st.column_config.NumberColumn("seconds", format="%.0f")})
st.download_button("Download CSV", table.to_csv(index=False).encode(), file_name="cnsdiff_runs.csv",
                   mime="text/csv", key="compare_csv", icon=":material/download:")
bad = frame[frame["status"].isin(["damaged", "failed", "interrupted"])]
if not bad.empty:
    st.caption(f"{len(bad)} run(s) are damaged, failed or interrupted; the reason is in the table.")

repeated = runs_table.seed_summary(frame[frame["run_id"].isin(table["run_id"])],
                                   ["valid_recall@20", "iid_recall@20", "ood_recall@20", "ood_ndcg@20"])
if not repeated.empty:
    st.subheader("Repeated runs: mean ± spread over seeds")
    st.caption("Runs whose settings differ only in the seed (finished or early-stopped), summarized. "
               "A difference between two samplers smaller than these spreads may not survive another seed.")
    st.dataframe(repeated, hide_index=True, key="compare_seeds")

usable = frame[frame["status"].isin(runs_table.USABLE) & frame["ood_recall@20"].notna()]
labels = {r.run_id: f"{r.run_id} · {r.sampler}" for r in usable.itertuples()}

st.subheader("Metrics side by side")
if usable.empty:
    st.info("No finished run has metrics yet.")
    st.stop()
current = state.current_run_id()
same = usable[(usable["dataset"] == name) & (usable["shift"] == shift)]["run_id"].tolist()
default = ([current] if current in labels else []) + [r for r in same if r != current]
picked = st.multiselect("Runs", list(labels), default=default[:4], key="compare_runs",
                        format_func=lambda r: labels.get(r, r))
metrics = st.multiselect("Metrics", runs_table.METRIC_COLUMNS, key="compare_metrics",
                         default=["ood_recall@20", "ood_ndcg@20", "iid_recall@20", "iid_ndcg@20"])
rows = usable.set_index("run_id").loc[picked] if picked else usable.iloc[0:0].set_index("run_id")
if picked and metrics:
    st.plotly_chart(figures.compare_bars(rows, metrics, labels), key="compare_bars", config={"displaylogo": False})

    base_name = sampler_class(UNIFORM).short_label()
    st.markdown(f"##### Relative improvement over {base_name} (same dataset and shift)")
    # a baseline run picked above is preferred (so the user chooses it), else the newest
    gains = runs_table.improvement_over(rows, usable, UNIFORM, metrics, preferred=picked)
    gains.insert(0, "run", [labels[r] for r in gains["run_id"]])
    gains = gains.drop(columns="run_id").rename(columns={"base_run": f"{base_name} run"})
    gains[f"{base_name} run"] = gains[f"{base_name} run"].fillna(f"none on this data: train {base_name}")
    st.dataframe(gains, hide_index=True, key="compare_relative",
                 column_config={m: st.column_config.NumberColumn(m, format="percent") for m in metrics})

st.subheader("Paired test across users")
options = list(labels)
if len(options) < 2:
    st.caption("Train at least two runs to test them against each other.")
else:
    c1, c2, c3 = st.columns(3)
    a = c1.selectbox("Run A", options, index=0, key="paired_a", format_func=lambda r: labels[r])
    b = c2.selectbox("Run B", options, index=1, key="paired_b", format_func=lambda r: labels[r])
    metric = c3.selectbox("Per-user metric", ["ood_recall@20", "ood_ndcg@20", "iid_recall@20", "iid_ndcg@20"],
                          key="paired_metric")
    split = metric.split("_")[0]
    try:
        pa, pb = cache.per_user(a), cache.per_user(b)
    except StoreError as exc:
        st.error(str(exc))
        pa = pb = {}
    if a == b:
        st.caption("Pick two different runs.")
    elif metric not in pa or metric not in pb:
        st.warning("One of the runs has no per-user metrics (per_user.npz); it may have been stopped early.")
    else:
        common, ia, ib = np.intersect1d(pa[f"{split}_users"], pb[f"{split}_users"], return_indices=True)
        res = paired_test(pa[metric][ia], pb[metric][ib])
        m = st.columns(4)
        m[0].metric("Users paired", f"{len(common):,}")
        m[1].metric(f"Mean {metric} A − B", f"{res['mean_diff']:+.4f}")
        m[2].metric("Wilcoxon p-value", f"{res['wilcoxon_p']:.3g}")
        m[3].metric("Paired t-test p-value", f"{res['ttest_p']:.3g}")
        ra, rb = usable.set_index("run_id").loc[a], usable.set_index("run_id").loc[b]
        if (ra["dataset"], ra["shift"]) != (rb["dataset"], rb["shift"]):
            st.warning("The two runs use different data or shifts; users are matched by id only.")

# --- interrupted and stopped runs ------------------------------------------------------------------------
resumable = frame[frame["status"].isin(["interrupted", "stopped"])
                  & ~frame["reason"].fillna("").str.startswith(PRUNED_PREFIX)]  # pruned trials are done
if not resumable.empty:
    st.subheader("Interrupted and stopped runs")
    manager = tasks.job_manager()
    for row in resumable.itertuples():
        c1, c2 = st.columns([4, 1])
        c1.markdown(f"{tasks.STATUS_ICONS.get(row.status, '')} `{row.run_id}` · {row.sampler} · {row.status}: "
                    f"{row.reason or 'no reason recorded'}")
        if not state.read_only() and c2.button("Resume", key=f"resume_{row.run_id}",
                                             help="Continue from its last checkpoint, in the background."):
            try:
                tasks.remember_job(manager.submit_resume(row.run_id))
            except StoreError as exc:
                st.error(str(exc))

    def resume_list(jobs: list[dict]) -> None:
        for job in jobs[:3]:
            if job["status"] in tasks.ACTIVE:
                st.progress(job["fraction"], text=f"{job['title']}: {tasks.job_progress_text(job)}")
            else:
                st.caption(f"{job['title']}: {job['status']} ({job['message']})")

    tasks.task_panel(lambda: [j for j in tasks.my_jobs() if j["tag"] == "resume"], resume_list, "resume")

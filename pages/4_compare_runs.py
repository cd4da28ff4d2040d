"""Compare runs: every stored run with its metrics, grouped bars, improvement over RNS, a paired
test across users, CSV export; interrupted runs can be resumed."""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import app_support as sup
import ui.tasks as tasks_ui
from cnsdiff_core.metrics import paired_test
from cnsdiff_core.runs import PRUNED_PREFIX, StoreError
from cnsdiff_core.samplers import UNIFORM

sup.require_frame()

st.title("Compare runs")
frame = sup.runs_frame()
if frame.empty:
    st.info("No runs in the run store yet: run the demo on Home" +
            ("." if sup.read_only() else " or train on the Train page."))
    st.stop()

name, shift = sup.current_dataset(), sup.current_shift()
only_here = st.toggle(f"Only runs on {sup.dataset_label(name)} / {shift}", key="compare_only_here", value=False)
table = frame[(frame["dataset"] == name) & (frame["shift"].isin([shift, ""]))] if only_here else frame
table = table.drop(columns=["experiment"])
st.dataframe(table, hide_index=True, key="compare_table",
             column_config={c: st.column_config.NumberColumn(c, format="%.4f") for c in sup.METRIC_COLUMNS}
             | {"seconds": st.column_config.NumberColumn("seconds", format="%.0f")})
st.download_button("Download CSV", table.to_csv(index=False).encode(), file_name="cnsdiff_runs.csv",
                   mime="text/csv", key="compare_csv", icon=":material/download:")
bad = frame[frame["status"].isin(["damaged", "failed", "interrupted"])]
if not bad.empty:
    st.caption(f"{len(bad)} run(s) are damaged, failed or interrupted; the reason is in the table.")

repeated = sup.seed_summary(frame[frame["run_id"].isin(table["run_id"])],
                            ["valid_recall@20", "iid_recall@20", "ood_recall@20", "ood_ndcg@20"])
if not repeated.empty:
    st.subheader("Repeated runs: mean ± spread over seeds")
    st.caption("Runs whose settings differ only in the seed (finished or early-stopped), summarized. "
               "A difference between two samplers smaller than these spreads may not survive another seed.")
    st.dataframe(repeated, hide_index=True, key="compare_seeds")

usable = frame[frame["status"].isin(["finished", "early-stopped", "stopped"]) & frame["ood_recall@20"].notna()]
labels = {r.run_id: f"{r.run_id} · {r.sampler}" for r in usable.itertuples()}

st.subheader("Metrics side by side")
if usable.empty:
    st.info("No finished run has metrics yet.")
    st.stop()
current = sup.current_run_id()
same = usable[(usable["dataset"] == name) & (usable["shift"] == shift)]["run_id"].tolist()
default = ([current] if current in labels else []) + [r for r in same if r != current]
picked = st.multiselect("Runs", list(labels), default=default[:4], key="compare_runs",
                        format_func=lambda r: labels.get(r, r))
metrics = st.multiselect("Metrics", sup.METRIC_COLUMNS, key="compare_metrics",
                         default=["ood_recall@20", "ood_ndcg@20", "iid_recall@20", "iid_ndcg@20"])
rows = usable.set_index("run_id").loc[picked] if picked else usable.iloc[0:0].set_index("run_id")
if picked and metrics:
    fig = go.Figure()
    seen: dict[str, int] = {}
    patterns = ["", "/", ".", "x", "-", "+"]
    for run_id, row in rows.iterrows():
        k = seen.get(row["sampler"], 0)
        seen[row["sampler"]] = k + 1
        fig.add_trace(go.Bar(x=metrics, y=[row[m] for m in metrics], name=labels[run_id],
                             marker=dict(color=sup.sampler_color(row["sampler"]),
                                         pattern=dict(shape=patterns[k % len(patterns)]))))
    fig.update_layout(barmode="group", height=420, plot_bgcolor="white", margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(orientation="h", y=-0.15), yaxis=dict(gridcolor="#EEEEEE"))
    st.plotly_chart(fig, key="compare_bars", config={"displaylogo": False})

    st.markdown("##### Relative improvement over RNS (same dataset and shift)")
    out = []
    for run_id, row in rows.iterrows():
        base = usable[(usable["sampler"] == UNIFORM) & (usable["dataset"] == row["dataset"])
                      & (usable["shift"] == row["shift"])]
        if len(base):  # prefer an RNS run picked above (so the user chooses the baseline), else the newest
            base = base.assign(_picked=base["run_id"].isin(picked)).sort_values("_picked", ascending=False, kind="stable")
        entry = {"run": labels[run_id],
                 "RNS run": (base.iloc[0]["run_id"] if len(base) else "none on this data: train RNS")}
        for m in metrics:
            b = base.iloc[0][m] if len(base) else None
            entry[m] = (row[m] - b) / b if b and pd.notna(b) and pd.notna(row[m]) else None
        out.append(entry)
    st.dataframe(pd.DataFrame(out), hide_index=True, key="compare_relative",
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
        pa, pb = sup.per_user(a), sup.per_user(b)
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
    manager = sup.job_manager()
    for row in resumable.itertuples():
        c1, c2 = st.columns([4, 1])
        c1.markdown(f"{tasks_ui.STATUS_ICONS.get(row.status, '')} `{row.run_id}` · {row.sampler} · {row.status}: "
                    f"{row.reason or 'no reason recorded'}")
        if not sup.read_only() and c2.button("Resume", key=f"resume_{row.run_id}",
                                             help="Continue from its last checkpoint, in the background."):
            try:
                sup.remember_job(manager.submit_resume(row.run_id))
            except StoreError as exc:
                st.error(str(exc))

    def resume_list(jobs: list[dict]) -> None:
        for job in jobs[:3]:
            if job["status"] in tasks_ui.ACTIVE:
                st.progress(job["fraction"], text=f"{job['title']}: {sup.job_progress_text(job)}")
            else:
                st.caption(f"{job['title']}: {job['status']} ({job['message']})")

    tasks_ui.task_panel(lambda: [j for j in sup.my_jobs() if j["tag"] == "resume"], resume_list, "resume")

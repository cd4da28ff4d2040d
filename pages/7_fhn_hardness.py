"""FHN & hardness: how many of each sampler's negatives are false (observed: in the user's held-out
positives; ground truth on synthetic worlds), how hard they are, per epoch and across runs."""
import pandas as pd
import plotly.express as px
import streamlit as st

from cnsdiff_core import diagnostics as dg
from cnsdiff_core import explore as ex
from cnsdiff_core.experiment import ABLATION_CSV, load_causal_ablation
from cnsdiff_core.samplers import HARD, METHOD, UNIFORM
from ui import cache, data, figures, routing, state, theme

routing.require_frame()

st.title("FHN & hardness")
st.caption("Measured every epoch on a fixed probe of training triples (one per user where possible); "
           "never fed back into training. By default each sampler shows **the negative it trains on** "
           "(for CNSDiff the mixed vector λ·h + (1−λ)·random that enters the loss). Resolution rule: "
           f"{dg.RESOLUTION}. Bands are Wilson 95% intervals.")

run_ids = state.pick_runs("fhn_runs", label="Runs (one or several)")
if not run_ids:
    st.info("Pick at least one finished run (train one on the Train page, or the demo on Home).")
    st.stop()

keys = tuple(cache.run_key(r) for r in run_ids)  # every cached figure of the page is keyed by these
curves = cache.built("fhn_curves", keys, lambda: ex.fhn_curves({r: cache.diagnostics(r) for r in run_ids}))
if curves.empty:
    st.warning("The chosen runs have no diagnostics yet (diagnostics.csv is empty).")
    st.stop()
has_truth = bool(curves["fhn_true"].notna().any())
metrics = {"fhn": "observed FHN rate", "own_positive": "collapse onto own positive",
           "null_ratio": "observed / matched null", "fhn_lift": "lift over uniform"}
if has_truth:
    metrics["fhn_true"] = "ground-truth FHN rate"
c_metric, c_vec, c_sel = st.columns([2.2, 1.3, 2])
metric = c_metric.radio("Measure", list(metrics), key="fhn_metric", horizontal=True, format_func=metrics.get,
                        help="collapse = share of negatives whose nearest item is the user's own training "
                             "positive (the trap of a well-trained denoiser); matched null = the positive moved "
                             "by the same distance in a random direction, resolved the same way.")
with_premix = c_vec.toggle("Pre-mix candidates", value=False, key="fhn_premix",
                           help="Also CNSDiff's synthesized h and MixGCF's candidate before mixing (dashed).")
with_steps = c_vec.toggle("CNSDiff per step", value=False, key="fhn_steps",
                          help="Also the candidates at each diffusion step s (cnsdiff@s).")
visible = curves[(curves["vector"] == "negative") | (with_premix & (curves["vector"] == "pre-mix"))
                 | (with_steps & (curves["vector"] == "step"))]
all_series = ex.series_order(visible["series"].unique())
if st.session_state.get("_fhn_series_all") != all_series:  # other runs or toggles: show every series again
    st.session_state["_fhn_series_all"] = all_series
    st.session_state["fhn_series"] = all_series
series = c_sel.multiselect("Series", all_series, key="fhn_series")

shown = visible[visible["series"].isin(series)]
if metric in ("null_ratio",):
    shown = shown[shown["fhn_null"].notna()]
colors = theme.series_colors(ex.series_order(curves["series"].unique()) + ["positive"])
multi = len(run_ids) > 1
if shown.empty or shown[metric].isna().all():
    st.info(f"No series has '{metrics[metric]}' here (the matched null exists for synthesized vectors only; "
            "runs stored before it was measured lack it).")
else:
    def lines_figure():
        fig = figures.fhn_figure(shown, metric, metrics[metric], colors, multi, with_null=metric == "fhn")
        if metric in ("fhn_lift", "null_ratio"):
            fig.add_hline(y=1.0, line_dash="dot", line_color="#777",
                          annotation_text="uniform sampling" if metric == "fhn_lift" else "matched null")
        elif metric == "fhn":
            uni = curves.groupby("run")["uniform_rate"].first()
            for r, v in uni.items():
                fig.add_hline(y=float(v), line_dash="dot", line_color="#777",
                              annotation_text=f"uniform{'' if not multi else ' · ' + r[-14:]}")
        return fig

    st.plotly_chart(cache.built("fhn_lines", (keys, metric, with_premix, with_steps, tuple(series)), lines_figure),
                    key="fhn_lines")
if not has_truth:
    st.caption("Ground-truth FHN appears for runs on synthetic worlds (the sample world or synthetic:…).")

table = cache.built("fhn_table", keys,
                    lambda: ex.fhn_table({r: (cache.diagnostics(r), cache.best_epoch(r)) for r in run_ids}))
if not table.empty:
    st.subheader("At the selected epoch")
    st.dataframe(table[table["series"].isin(set(series) | set(table.loc[table["vector"] == "negative", "series"]))],
                 hide_index=True, key="fhn_table",
                 column_config={"collapse": st.column_config.NumberColumn(
                     help="share resolving to the user's own training positive")})

# --- hardness and score distributions at the selected epoch ---------------------------------------------
all_samples = cache.built("fhn_samples", keys, lambda: ex.hardness_samples({r: cache.negatives(r) for r in run_ids}))
if all_samples.empty:
    st.info("The chosen runs stored no probe negatives, so no distributions can be drawn.")
else:
    samples = cache.built("fhn_samples_shown", (keys, tuple(series)),
                          lambda: all_samples[all_samples["series"].isin(series + ["positive"])])
    st.subheader("Hardness at the selected epoch")
    st.caption("hardness = s(u, negative) − s(u, positive); above 0 the negative outscores the positive.")
    kind = st.radio("Plot", ["box", "violin"], key="fhn_kind", horizontal=True)
    negs = cache.built("fhn_negatives_shown", (keys, tuple(series)), lambda: samples[samples["series"] != "positive"])
    st.plotly_chart(cache.built("fhn_hardness", (keys, kind, tuple(series)),
                                lambda: figures.hardness_figure(negs, kind, colors, multi)), key="fhn_hardness")

    st.subheader("Score histograms")
    hist_series = ex.series_order(samples["series"].unique())
    default = [s for s in ("positive", UNIFORM, HARD, METHOD) if s in hist_series] or hist_series[:3]
    if st.session_state.get("fhn_hist_series") is None or not set(st.session_state["fhn_hist_series"]) <= set(hist_series):
        st.session_state["fhn_hist_series"] = default
    pick = st.multiselect("Series", hist_series, key="fhn_hist_series")
    def hist_figure():
        hist = px.histogram(samples[samples["series"].isin(pick)], x="score", color="series", barmode="overlay",
                            histnorm="probability density", opacity=0.55, nbins=60,
                            facet_row="run" if multi else None, color_discrete_map=colors, labels={"score": "s(u, ·)"})
        hist.update_layout(height=380 if not multi else 260 * len(run_ids))
        return hist

    st.plotly_chart(cache.built("fhn_hist", (keys, tuple(series), tuple(pick)), hist_figure), key="fhn_hist")
    summary = cache.built("fhn_hardness_summary", (keys, tuple(series)), lambda: (
        negs.groupby(["run", "series"])
        .agg(n=("hardness", "size"), hardness_mean=("hardness", "mean"), hardness_median=("hardness", "median"),
             fhn=("fhn", "mean"), nn_dist=("nn_dist", "mean"))
        .reset_index()))
    st.dataframe(summary, hide_index=True, key="fhn_summary")
    st.download_button("Download per-triple negatives (CSV)", data.csv_later(samples), file_name="negatives_hardness.csv",
                       mime="text/csv", key="fhn_dl_samples")
st.download_button("Download FHN per epoch (CSV)", data.csv_later(curves), file_name="fhn_per_epoch.csv",
                   mime="text/csv", key="fhn_dl_curves")

# --- FHN against the synthetic world's confounding strength -------------------------------------------
conf = cache.confounding_over_store()
if conf["confounding"].nunique() >= 2:
    st.subheader("FHN vs confounding strength (synthetic worlds)")
    st.caption("Every finished run on a synthetic world, at its selected epoch; several runs with "
               "the same strength are averaged.")
    conf_metric = st.radio("Measure", [m for m in ("fhn_true", "fhn", "fhn_lift") if conf[m].notna().any()],
                           key="fhn_conf_metric", horizontal=True,
                           format_func={"fhn_true": "ground-truth FHN", "fhn": "observed FHN",
                                        "fhn_lift": "lift over uniform"}.get)
    agg = conf.groupby(["series", "confounding"], as_index=False)[conf_metric].mean()
    agg = agg[agg["series"].isin(series)]
    def confounding_figure():
        chart = px.line(agg, x="confounding", y=conf_metric, color="series", markers=True,
                        color_discrete_map=theme.series_colors(list(agg["series"].unique())))
        chart.update_layout(height=380)
        return chart

    st.plotly_chart(cache.built("fhn_confounding", (int(pd.util.hash_pandas_object(agg).sum()), conf_metric),
                                confounding_figure), key="fhn_confounding")
else:
    n = conf["confounding"].nunique()
    st.caption("A chart of FHN against the world's confounding strength appears once runs on "
               f"synthetic worlds with at least two confounding strengths exist (now: {n}). Generate "
               "worlds on Data & shift and train on each.")

# --- the causal ablation on synthetic worlds (shipped results) ----------------------------------------
try:  # read once per version of the shipped file
    _abl_mtime = ABLATION_CSV.stat().st_mtime
except OSError:
    _abl_mtime = None
ablation = cache.built("causal_ablation", (str(ABLATION_CSV), _abl_mtime), load_causal_ablation)
if not ablation.empty:
    st.subheader("Does the causal term help where the truth is known?")
    st.caption("CNSDiff `tuned` on synthetic worlds (the sample world's generator) at four confounding "
               "strengths, with the causal term off, KL or env-variance (default weight 0.1, and 10); "
               "mean ± spread over "
               f"{int(ablation['seeds'].max())} seeds. Shipped with the app (results/causal_ablation.csv, "
               "made by `scripts/sweep.py causal`; docs/RESULTS.md has the table).")
    abl_metric = st.radio("Measure", ["ood_recall@20", "fhn_true", "premix_fhn_true", "valid_recall@20"],
                          key="fhn_abl_metric", horizontal=True,
                          format_func={"ood_recall@20": "OOD Recall@20", "fhn_true": "true FHN (trained-on)",
                                       "premix_fhn_true": "true FHN (pre-mix h)",
                                       "valid_recall@20": "valid Recall@20"}.get)
    def ablation_figure():
        abl = px.line(ablation, x="confounding", y=abl_metric, color="causal", markers=True,
                      error_y=f"{abl_metric}_std" if f"{abl_metric}_std" in ablation else None)
        abl.update_layout(height=360)
        return abl

    st.plotly_chart(cache.built("fhn_ablation", (str(ABLATION_CSV), _abl_mtime, abl_metric), ablation_figure), key="fhn_ablation")

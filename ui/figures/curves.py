"""Curves: noise schedules side by side, FHN-type measures over epochs with their bands, and the
schedule lab's per-step report of a refitted denoiser beside the run's own."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..theme import OKABE_ITO, SYNTH_COLOR, rgba


def schedule_figure(curves: pd.DataFrame) -> go.Figure:
    """beta_t, alphabar_t, SNR (log), noise std and the per-t loss weight (log) per step for one
    or two schedules."""
    cols = [c for c in ("beta", "alphabar", "snr", "noise_std", "loss_weight") if c in curves]
    titles = {"beta": "β_t", "alphabar": "ᾱ_t", "snr": "SNR_t = ᾱ/(1-ᾱ) (log)", "noise_std": "noise std √(1-ᾱ_t)",
              "loss_weight": "denoiser loss weight w(t), mean 1 (log)"}
    n_rows = (len(cols) + 1) // 2
    fig = make_subplots(rows=n_rows, cols=2, subplot_titles=[titles[c] for c in cols])
    colors = {"A": OKABE_ITO["blue"], "B": OKABE_ITO["vermillion"]}
    for label, sub in curves.groupby("schedule", sort=True):
        for i, col in enumerate(cols):
            fig.add_trace(go.Scatter(x=sub["t"], y=sub[col], mode="lines+markers", name=f"schedule {label}",
                                     line={"color": colors.get(label, "#444"), "dash": "solid" if label == "A" else "dash"},
                                     marker={"size": 4}, legendgroup=label, showlegend=i == 0),
                          row=i // 2 + 1, col=i % 2 + 1)
    fig.update_yaxes(type="log", row=2, col=1)
    if "loss_weight" in cols:
        fig.update_yaxes(type="log", row=3, col=1)
    fig.update_xaxes(title_text="step t")
    fig.update_layout(height=280 * n_rows, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def fhn_figure(shown: pd.DataFrame, metric: str, label: str, colors: dict[str, str], multi: bool,
               with_null: bool) -> go.Figure:
    """FHN-type curves per series (and run) over epochs, with Wilson 95% bands where the measure
    has them; the pre-mix candidates dashed; with_null adds each vector series' matched null dotted."""
    fig = go.Figure()
    lo_c, hi_c = f"{metric}_lo", f"{metric}_hi"
    for (run, series), d in shown.groupby(["run", "series"], sort=False):
        d = d.sort_values("epoch")
        color = colors.get(series, "#555555")
        name = f"{series} · {run[-14:]}" if multi else series
        premix = (d["vector"] == "pre-mix").any() if "vector" in d else False
        if lo_c in d and d[lo_c].notna().any():
            fig.add_trace(go.Scatter(x=np.concatenate([d["epoch"], d["epoch"][::-1]]),
                                     y=np.concatenate([d[hi_c], d[lo_c][::-1]]), fill="toself",
                                     fillcolor=rgba(color, 0.15), line={"width": 0}, hoverinfo="skip",
                                     showlegend=False, legendgroup=name))
        fig.add_trace(go.Scatter(x=d["epoch"], y=d[metric], mode="lines+markers", name=name, legendgroup=name,
                                 line={"color": color, "dash": "dash" if premix else "solid"},
                                 customdata=np.stack([d.get(lo_c, d[metric]), d.get(hi_c, d[metric]),
                                                      d["own_positive"]], axis=-1),
                                 hovertemplate=f"{name}<br>epoch %{{x}}<br>{label} %{{y:.4f}}"
                                               "<br>95% CI [%{customdata[0]:.4f}, %{customdata[1]:.4f}]"
                                               "<br>collapse onto own positive %{customdata[2]:.3f}<extra></extra>"))
        if with_null and d["fhn_null"].notna().any():
            fig.add_trace(go.Scatter(x=d["epoch"], y=d["fhn_null"], mode="lines", name=f"{name} · matched null",
                                     legendgroup=name, line={"color": color, "dash": "dot", "width": 1.5}))
    fig.update_layout(height=440, legend={"orientation": "h", "y": -0.2}, xaxis_title="epoch", yaxis_title=label)
    return fig


def refit_figure(report: pd.DataFrame) -> go.Figure:
    """Per-step hardness, distances and FHN of a refitted denoiser (and the run's own, when the
    report has rows with denoiser="run's own"), one panel per measure."""
    names = {"hardness_mean": "hardness (mean)", "cos_to_pos": "cosine to positive",
             "nn_dist": "distance to nearest item / ‖pos‖", "fhn": "observed FHN",
             "own_positive": "collapse onto own positive", "fhn_true": "ground-truth FHN"}
    cols = [c for c in names if c in report and report[c].notna().any()]
    long = report.rename(columns=names).melt(id_vars=["label", "denoiser"], value_vars=[names[c] for c in cols])
    chart = px.bar(long, x="label", y="value", color="denoiser", barmode="group", facet_col="variable",
                   facet_col_wrap=3, color_discrete_map={"refit": SYNTH_COLOR, "run's own": OKABE_ITO["grey"]},
                   labels={"label": "step"})
    chart.update_yaxes(matches=None, showticklabels=True, title_text="")
    chart.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    chart.update_layout(height=520)
    return chart


def hardness_figure(negs: pd.DataFrame, kind: str, colors: dict[str, str], multi: bool) -> go.Figure:
    """Hardness per sampler (box or violin; one column per run when several), one trace per
    (run, sampler) holding only its float32 values: the category is the trace's name, not a
    string repeated per point, so the browser gets the same boxes in a fraction of the bytes."""
    runs = list(dict.fromkeys(negs["run"])) if multi else [None]
    fig = make_subplots(rows=1, cols=len(runs), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=[f"run={r}" for r in runs] if multi else None)
    trace = go.Box if kind == "box" else go.Violin
    for c, run in enumerate(runs, start=1):
        sub = negs if run is None else negs[negs["run"] == run]
        for series, grp in sub.groupby("series", sort=False):
            y = grp["hardness"].to_numpy(np.float32)
            kw = {"boxpoints": "outliers"} if kind == "box" else {"points": "outliers", "box_visible": False}
            fig.add_trace(trace(y=y, x0=series, name=series, marker_color=colors.get(series), legendgroup=series,
                                showlegend=False, hovertemplate=f"{series}<br>hardness %{{y:.3f}}<extra></extra>",
                                **kw), row=1, col=c)
    fig.add_hline(y=0, line_dash="dot", line_color="#777")
    fig.update_layout(height=420, showlegend=False)
    fig.update_xaxes(title_text="sampler", type="category")
    fig.update_yaxes(title_text="hardness", col=1)
    return fig

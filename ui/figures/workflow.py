"""Figures of the workflow pages: the method schematic (Home), the long tail (Data & shift), loss
and validation curves of training jobs (Train) and grouped metric bars (Compare runs)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..theme import REAL_COLOR, SPLIT_COLORS, VERMILLION, sampler_color


def method_figure() -> go.Figure:
    """Schematic: positive -> forward noise to step s -> partial denoising -> candidate negative."""
    rng = np.random.default_rng(7)
    radius, angle = rng.uniform(0.5, 3.0, 45), rng.uniform(0, 2 * np.pi, 45)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=radius * np.cos(angle), y=radius * np.sin(angle), mode="markers",
                             name="real items", hoverinfo="skip",
                             marker=dict(color=REAL_COLOR, size=7, opacity=0.3)))
    # (step s, direction in degrees, distance of z_s, distance of the candidate, shade, hardness)
    steps = [(10, 35, 1.3, 0.55, VERMILLION[1], "hard"),
             (14, 155, 2.1, 1.0, VERMILLION[2], "medium"),
             (18, 275, 2.9, 1.6, VERMILLION[3], "easy")]
    for k, (s, deg, noisy_r, cand_r, shade, hard) in enumerate(steps):
        a = np.deg2rad(deg)
        zx, zy = noisy_r * np.cos(a), noisy_r * np.sin(a)
        cx, cy = cand_r * np.cos(a + 0.35), cand_r * np.sin(a + 0.35)
        fig.add_trace(go.Scatter(x=[0, zx], y=[0, zy], mode="lines", showlegend=k == 0, hoverinfo="skip",
                                 name="forward: noise to step s", line=dict(color="#777777", dash="dot")))
        fig.add_trace(go.Scatter(x=[zx], y=[zy], mode="markers+text", showlegend=False, text=[f"z_{s}"],
                                 textposition="middle left" if zx < 0 else "middle right",
                                 marker=dict(color="white", size=12, line=dict(color=shade, width=2)),
                                 hovertext=f"positive noised to step {s}", hoverinfo="text"))
        fig.add_annotation(x=cx, y=cy, ax=zx, ay=zy, xref="x", yref="y", axref="x", ayref="y", text="",
                           showarrow=True, arrowhead=3, arrowsize=1.2, arrowwidth=2, arrowcolor=shade)
        fig.add_trace(go.Scatter(x=[cx], y=[cy], mode="markers", name=f"negative from s={s}: {hard}",
                                 marker=dict(color=shade, size=15, symbol="diamond",
                                             line=dict(color="white", width=1))))
    fig.add_trace(go.Scatter(x=[0], y=[0], mode="markers", name="positive item",
                             marker=dict(color=REAL_COLOR, size=20, symbol="star",
                                         line=dict(color="white", width=1))))
    fig.update_layout(height=470, margin=dict(l=0, r=0, t=30, b=0), plot_bgcolor="white",
                      title=dict(text="Noise the positive to step s, denoise part of the way back", font=dict(size=14)),
                      legend=dict(orientation="h", x=0.0, y=-0.02, yanchor="top", font=dict(size=11)),
                      xaxis=dict(visible=False, range=[-3.3, 3.3]), yaxis=dict(visible=False, range=[-3.2, 3.0]))
    return fig


def long_tail_figure(frame: pd.DataFrame) -> go.Figure:
    """Item popularity long tail per split (log-log), from cnsdiff_core popularity_by_split."""
    names = {"train": "train", "test_iid": "IID test", "test_ood": "OOD test"}
    fig = go.Figure()
    for split_name, part in frame.groupby("split", sort=False):
        fig.add_trace(go.Scatter(x=part["rank"], y=part["share"], mode="lines", name=names[split_name],
                                 line=dict(color=SPLIT_COLORS[split_name], width=2,
                                           dash="solid" if split_name == "train" else
                                           ("dash" if split_name == "test_iid" else "dot")),
                                 customdata=part["count"],
                                 hovertemplate="rank %{x}<br>share %{y:.3%}<br>%{customdata} interactions"))
    fig.update_layout(title="Item popularity long tail (log-log)", height=420, plot_bgcolor="white",
                      margin=dict(l=10, r=10, t=50, b=10), legend=dict(orientation="h", y=1.02, x=1, xanchor="right"))
    fig.update_xaxes(type="log", title="item rank within the split", gridcolor="#EEEEEE")
    fig.update_yaxes(type="log", title="share of the split's interactions", gridcolor="#EEEEEE")
    return fig


def loss_figure(job: dict) -> go.Figure:
    fig = go.Figure()
    batches, epochs = pd.DataFrame(job["losses"]), pd.DataFrame(job["valid"])
    if not batches.empty:
        for (run, sampler), part in batches.groupby(["run", "sampler"]):
            fig.add_trace(go.Scatter(x=part["x"], y=part["loss"], mode="lines", name=f"{sampler} batches",
                                     line=dict(color=sampler_color(sampler), width=1), opacity=0.45))
    if not epochs.empty and "loss" in epochs:
        for (run, sampler), part in epochs.groupby(["run", "sampler"]):
            fig.add_trace(go.Scatter(x=part["epoch"], y=part["loss"], mode="lines+markers",
                                     name=f"{sampler} epoch mean", line=dict(color=sampler_color(sampler))))
    fig.update_layout(title="Training loss", height=300, margin=dict(l=10, r=10, t=40, b=10),
                      plot_bgcolor="white", xaxis_title="epoch", yaxis_title="loss",
                      legend=dict(orientation="h", y=-0.25))
    return fig


def valid_figure(job: dict) -> go.Figure:
    fig = go.Figure()
    frame = pd.DataFrame(job["valid"])
    if not frame.empty:
        for (run, sampler), part in frame.groupby(["run", "sampler"]):
            color = sampler_color(sampler)
            fig.add_trace(go.Scatter(x=part["epoch"], y=part["valid_recall@20"], mode="lines+markers",
                                     name=f"{sampler} valid", line=dict(color=color)))
            fig.add_trace(go.Scatter(x=part["epoch"], y=part["ood_recall@20"], mode="lines",
                                     name=f"{sampler} OOD test", line=dict(color=color, dash="dot")))
    fig.update_layout(title="Recall@20 by epoch", height=300, margin=dict(l=10, r=10, t=40, b=10),
                      plot_bgcolor="white", xaxis_title="epoch", legend=dict(orientation="h", y=-0.25))
    return fig


def compare_bars(rows: pd.DataFrame, metrics: list[str], labels: dict[str, str]) -> go.Figure:
    """Grouped bars of the chosen metrics per run (rows indexed by run_id), in each run's sampler
    colour; several runs of one sampler get different patterns."""
    fig = go.Figure()
    seen: dict[str, int] = {}
    patterns = ["", "/", ".", "x", "-", "+"]
    for run_id, row in rows.iterrows():
        k = seen.get(row["sampler"], 0)
        seen[row["sampler"]] = k + 1
        fig.add_trace(go.Bar(x=metrics, y=[row[m] for m in metrics], name=labels[run_id],
                             marker=dict(color=sampler_color(row["sampler"]),
                                         pattern=dict(shape=patterns[k % len(patterns)]))))
    fig.update_layout(barmode="group", height=420, plot_bgcolor="white", margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(orientation="h", y=-0.15), yaxis=dict(gridcolor="#EEEEEE"))
    return fig


def benchmark_bars(part: pd.DataFrame, metric: str = "ood_recall@20", floor: float | None = None) -> go.Figure:
    """One dataset of the fair benchmark: each sampler's mean over its seeds with the spread as an
    error bar, in its colour, labelled with its difference from the best baseline; floor: MostPop's
    score as a dashed line."""
    part = part[part[metric].notna()]
    rel = part.get(f"rel_{metric}", pd.Series(np.nan, index=part.index))
    base = part["best_baseline"].dropna().iloc[0] if part["best_baseline"].notna().any() else None
    text = ["best baseline" if s == base else ("" if pd.isna(r) else f"{r:+.1%}")
            for s, r in zip(part["sampler"], rel)]
    std = part.get(f"{metric}_std", pd.Series(0.0, index=part.index)).fillna(0.0)
    fig = go.Figure(go.Bar(x=part["sampler"], y=part[metric], error_y=dict(type="data", array=std, visible=True),
                           marker_color=[sampler_color(s) for s in part["sampler"]], text=text, textposition="none",
                           hovertemplate="%{x}: %{y:.4f} ± %{error_y.array:.4f} (%{text})<extra></extra>"))
    # the difference from the best baseline under each sampler's name, clear of the error bars
    fig.update_xaxes(tickmode="array", tickvals=list(part["sampler"]),
                     ticktext=[f"{s}<br>{t}" for s, t in zip(part["sampler"], text)])
    if floor is not None:
        fig.add_hline(y=floor, line=dict(color="#555555", dash="dash", width=1),
                      annotation_text=f"MostPop {floor:.4f}", annotation_position="top left")
    fig.update_layout(height=360, plot_bgcolor="white", margin=dict(l=10, r=10, t=30, b=10), showlegend=False,
                      yaxis=dict(title=f"{metric}, mean ± spread over seeds", gridcolor="#EEEEEE"))
    return fig

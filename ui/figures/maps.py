"""Map figures: the item cloud, the animated denoising trajectories and the negatives map with
its selection (Plotly)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from cnsdiff_core import explore as ex

from ..theme import CONTEXT_COLOR, ENV_GREYS, GREYS, POSITIVE_STYLE, TRAIN_POS_COLOR, sampler_style, step_colors


def _item_cloud(items: pd.DataFrame, color_by: str = "none") -> go.Scattergl:
    hover = items["item_id"].astype(str) + np.where(items["title"].astype(str) != "", " · " + items["title"].astype(str), "") \
        + " · popularity " + items["popularity"].astype(str)
    marker: dict = {"size": 5, "opacity": 0.55, "color": CONTEXT_COLOR}
    if color_by == "popularity":
        marker |= {"color": items["log_popularity"], "colorscale": GREYS, "showscale": True,
                   "colorbar": {"title": "log10(1+pop)", "thickness": 10, "x": 1.02}}
    elif color_by == "environment":
        envs = sorted(items["environment"].unique())
        cmap = {e: ENV_GREYS[min(i, len(ENV_GREYS) - 1)] for i, e in enumerate(envs)}
        marker |= {"color": items["environment"].map(cmap)}
        hover = hover + " · " + items["environment"]
    return go.Scattergl(x=items["x"], y=items["y"], mode="markers", marker=marker, name="items",
                        hovertext=hover, hoverinfo="text")


def _ranges(xs: list[np.ndarray], pad: float = 0.05) -> tuple[list[float], list[float]]:
    pts = np.concatenate([np.asarray(x, dtype=float) for x in xs])
    lo, hi = np.nanmin(pts, 0), np.nanmax(pts, 0)
    span = np.maximum(hi - lo, 1e-6)
    return [lo[0] - pad * span[0], hi[0] + pad * span[0]], [lo[1] - pad * span[1], hi[1] + pad * span[1]]


def trajectory_figure(items: pd.DataFrame, traj: ex.Trajectories, xy: np.ndarray, pos_xy: np.ndarray,
                      frame: int, zoom_items: bool = False, duration_ms: int = 450) -> go.Figure:
    """Items (static Scattergl) + one path and one head per hardness step, animated client-side:
    Plotly frames update only the trajectory traces (the item cloud is never re-sent)."""
    table = traj.table.assign(x=xy[:, 0], y=xy[:, 1])
    colors = step_colors(traj.steps)
    n_frames = traj.n_frames

    def traces_at(k: int) -> list[go.Scatter]:
        paths, heads = [], []
        for s in traj.steps:
            sub = table[table["s"] == s]
            f = min(k, int(sub["frame"].max()))
            path = sub[sub["frame"] <= f]
            head = path.iloc[-1]
            text = [f"s={s} · {lab} · score {sc:.3f} · cos→pos {c:.3f} · ‖z‖ {n:.3f}"
                    for lab, sc, c, n in zip(path["label"], path["score"], path["cos_to_pos"], path["norm"])]
            symbols = np.where(path["phase"] == "forward", "circle", "diamond")
            paths.append(go.Scatter(x=path["x"], y=path["y"], mode="lines+markers", name=f"s={s} path",
                                    line={"color": colors[s], "width": 2},
                                    marker={"color": colors[s], "size": 6, "symbol": symbols},
                                    hovertext=text, hoverinfo="text", legendgroup=str(s), showlegend=True))
            heads.append(go.Scatter(x=[head["x"]], y=[head["y"]], mode="markers+text", name=f"s={s} now",
                                    text=[f"s={s}: {head['label']}"], textposition="top center",
                                    marker={"color": colors[s], "size": 14, "symbol": "cross",
                                            "line": {"color": "black", "width": 1}},
                                    hovertext=[text[-1]], hoverinfo="text", legendgroup=str(s), showlegend=False))
        return paths + heads

    fig = go.Figure()
    fig.add_trace(_item_cloud(items))
    fig.add_trace(go.Scatter(x=[pos_xy[0]], y=[pos_xy[1]], mode="markers", name="positive z₀",
                             marker={"color": TRAIN_POS_COLOR, "size": 16, "symbol": "star",
                                     "line": {"color": "black", "width": 1}}))
    k0 = min(max(int(frame), 0), n_frames - 1)
    for tr in traces_at(k0):
        fig.add_trace(tr)
    moving = list(range(2, 2 + 2 * len(traj.steps)))
    fig.frames = [go.Frame(name=str(k), data=traces_at(k), traces=moving) for k in range(n_frames)]
    play = {"frame": {"duration": duration_ms, "redraw": False}, "fromcurrent": True,
            "transition": {"duration": 0}, "mode": "immediate"}
    pause = {"frame": {"duration": 0, "redraw": False}, "mode": "immediate", "transition": {"duration": 0}}
    fig.update_layout(
        updatemenus=[{"type": "buttons", "direction": "left", "x": 0, "y": -0.1, "xanchor": "left",
                      "yanchor": "top", "pad": {"r": 10, "t": 30}, "showactive": False,
                      "buttons": [{"label": "▶ Play", "method": "animate", "args": [None, play]},
                                  {"label": "⏸ Pause", "method": "animate", "args": [[None], pause]}]}],
        sliders=[{"active": k0, "x": 0.2, "len": 0.8, "y": -0.1, "yanchor": "top",
                  "currentvalue": {"prefix": "frame ", "xanchor": "right"},
                  "steps": [{"label": str(k), "method": "animate",
                             "args": [[str(k)], {"frame": {"duration": 0, "redraw": False},
                                                 "mode": "immediate", "transition": {"duration": 0}}]}
                            for k in range(n_frames)]}],
        height=640, margin={"l": 10, "r": 10, "t": 30, "b": 120}, legend={"orientation": "h", "y": 1.06},
        xaxis_title="map x", yaxis_title="map y")
    xr, yr = _ranges([items[["x", "y"]].to_numpy()] + ([] if zoom_items else [xy]))
    fig.update_xaxes(range=xr, autorange=False)
    fig.update_yaxes(range=yr, autorange=False)
    return fig


def map_figure(items: pd.DataFrame, overlay: pd.DataFrame, color_by: str, size_by_nn: bool,
               steps: list[int]) -> tuple[go.Figure, list[tuple[str, np.ndarray]]]:
    """Items + overlay layers. Returns the figure and, per trace, (source, row labels) so a box or
    lasso selection (curve_number, point_index) maps back to table rows."""
    fig = go.Figure()
    registry: list[tuple[str, np.ndarray]] = []
    fig.add_trace(_item_cloud(items, color_by))
    registry.append(("items", items.index.to_numpy()))
    nn_max = float(overlay["nn_dist"].max()) if len(overlay) and overlay["nn_dist"].notna().any() else 0.0
    for layer, sub in overlay.groupby("layer", sort=False):
        color, symbol = sampler_style(layer, steps)
        size: Any = 11 if layer in POSITIVE_STYLE else 8
        if size_by_nn and nn_max > 0 and layer not in POSITIVE_STYLE:
            size = (6 + 22 * sub["nn_dist"].fillna(0) / nn_max).to_numpy()
        hover = sub.get("hover", pd.Series(layer, index=sub.index))
        fig.add_trace(go.Scattergl(
            x=sub["x"], y=sub["y"], mode="markers", name=layer, hovertext=hover, hoverinfo="text",
            marker={"color": color, "symbol": symbol, "size": size,
                    "line": {"color": "black" if "open" not in symbol else color, "width": 1}}))
        registry.append(("overlay", sub.index.to_numpy()))
    fig.update_layout(height=640, margin={"l": 10, "r": 10, "t": 30, "b": 10}, dragmode="lasso",
                      legend={"orientation": "h", "y": 1.05}, xaxis_title="map x", yaxis_title="map y")
    return fig, registry


def selected_rows(event: Any, registry: list[tuple[str, np.ndarray]]) -> dict[str, list]:
    """{'items': [row labels], 'overlay': [row labels]} of a plotly selection event."""
    out: dict[str, list] = {"items": [], "overlay": []}
    try:
        points = event.selection.points  # type: ignore[union-attr]
    except AttributeError:
        try:
            points = event["selection"]["points"]
        except (KeyError, TypeError):
            return out
    for p in points or []:
        curve, idx = p.get("curve_number"), p.get("point_index", p.get("point_number"))
        if curve is None or idx is None or curve >= len(registry):
            continue
        source, labels = registry[curve]
        if 0 <= idx < len(labels):
            out[source].append(labels[idx])
    return out

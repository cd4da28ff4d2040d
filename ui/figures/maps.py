"""Map figures: the item cloud, the animated denoising trajectories and the negatives map with
its selection (Plotly)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from cnsdiff_core import explore as ex

from ..theme import CONTEXT_COLOR, ENV_GREYS, GREYS, POSITIVE_STYLE, TRAIN_POS_COLOR, sampler_style, step_colors


def item_cloud_specs(items: pd.DataFrame, color_by: str = "none") -> list[tuple[dict, np.ndarray]]:
    """The item cloud as finished WebGL trace specs with their row labels: one trace, or one per
    environment when coloured by environment (a colour per trace, not a colour string per item).
    Compact: float32 coordinates, popularity as an int32 typed array shown by the hover template,
    so the hover repeats no text per item beyond its id and title. Depends only on the map and the
    colouring: pages build it once per run and map and share it across users."""
    label = items["item_id"].astype(str) + np.where(items["title"].astype(str) != "", " · " + items["title"].astype(str), "")
    marker: dict = {"size": 5, "opacity": 0.55, "color": CONTEXT_COLOR}
    if color_by == "popularity":
        marker |= {"color": items["log_popularity"].to_numpy(np.float32), "colorscale": GREYS, "showscale": True,
                   "colorbar": {"title": {"text": "log10(1+pop)"}, "thickness": 10, "x": 1.02}}
    groups = [("items", items.index.to_numpy(), marker, "")]
    if color_by == "environment":
        envs = sorted(items["environment"].unique())
        groups = [(f"items · {e}", items.index[(items["environment"] == e).to_numpy()].to_numpy(),
                   marker | {"color": ENV_GREYS[min(i, len(ENV_GREYS) - 1)]}, f" · {e}") for i, e in enumerate(envs)]
    out = []
    for name, rows, mk, suffix in groups:
        sub = items.loc[rows]
        trace = {"type": "scattergl", "x": sub["x"].to_numpy(np.float32), "y": sub["y"].to_numpy(np.float32),
                 "mode": "markers", "marker": dict(mk), "name": name, "hovertext": label.loc[rows].tolist(),
                 "customdata": sub["popularity"].to_numpy(np.int32),
                 "hovertemplate": f"%{{hovertext}} · popularity %{{customdata}}{suffix}<extra></extra>"}
        out.append((_encode_arrays(trace), rows))
    return out


def _item_cloud(items: pd.DataFrame) -> dict:
    return item_cloud_specs(items)[0][0]


def _ranges(xs: list[np.ndarray], pad: float = 0.05) -> tuple[list[float], list[float]]:
    pts = np.concatenate([np.asarray(x, dtype=float) for x in xs])
    lo, hi = np.nanmin(pts, 0), np.nanmax(pts, 0)
    span = np.maximum(hi - lo, 1e-6)
    return [lo[0] - pad * span[0], hi[0] + pad * span[0]], [lo[1] - pad * span[1], hi[1] + pad * span[1]]


def _scatter(**kw) -> dict:
    return {"type": "scatter", **kw}


def trajectory_spec(items: pd.DataFrame, traj: ex.Trajectories, xy: np.ndarray, pos_xy: np.ndarray,
                    zoom_items: bool = False, duration_ms: int = 450) -> dict:
    """The animated denoising map as a plain Plotly spec (no graph_objects validation): the item
    cloud (static Scattergl, float32 arrays), the positive, and one Plotly frame per position that
    updates only the points of the trajectory traces (a path and a head per hardness step).
    `data` holds the static traces, `moving` the trajectory traces' style and hover texts;
    `trajectory_figure` joins them with the frame shown. Built once per run and
    parameters (the page caches it); never modified afterwards."""
    table = traj.table
    colors = step_colors(traj.steps)
    n_frames = traj.n_frames
    s_col, f_col = table["s"].to_numpy(), table["frame"].to_numpy()
    text = np.array([f"s={s} · {lab} · score {sc:.3f} · cos→pos {c:.3f} · ‖z‖ {n:.3f}" for s, lab, sc, c, n in
                     zip(s_col, table["label"], table["score"], table["cos_to_pos"], table["norm"])], dtype=object)
    chains = []
    for s in traj.steps:
        idx = np.flatnonzero(s_col == s)
        idx = idx[np.argsort(f_col[idx], kind="stable")]
        chains.append((int(s), idx, np.where(table["phase"].to_numpy()[idx] == "forward", "circle", "diamond"),
                       table["label"].to_numpy()[idx]))
    xy32 = np.asarray(xy, dtype=np.float32)

    # The moving traces carry their style, the whole chain's hover texts and marker symbols once
    # (a path at frame k shows the chain's first states, so text i belongs to point i); a frame
    # only sends the points (float32) and the head's label.
    base = [_scatter(name=f"s={s} path", mode="lines+markers", line={"color": colors[s], "width": 2},
                     marker={"color": colors[s], "size": 6, "symbol": symbols.tolist()},
                     hovertext=text[idx].tolist(), hoverinfo="text", legendgroup=str(s), showlegend=True)
            for s, idx, symbols, _ in chains]
    base += [_scatter(name=f"s={s} now", mode="markers+text", textposition="top center",
                      marker={"color": colors[s], "size": 14, "symbol": "cross", "line": {"color": "black", "width": 1}},
                      hoverinfo="text", legendgroup=str(s), showlegend=False)
             for s, _, _, _ in chains]

    def traces_at(k: int) -> list[dict]:
        paths, heads = [], []
        for s, idx, symbols, labs in chains:
            n = min(k, len(idx) - 1) + 1
            sel = idx[:n]
            paths.append(_scatter(name=f"s={s} path", x=xy32[sel, 0], y=xy32[sel, 1]))
            heads.append(_scatter(name=f"s={s} now", x=xy32[sel[-1:], 0], y=xy32[sel[-1:], 1],
                                  text=[f"s={s}: {labs[n - 1]}"], hovertext=[text[sel[-1]]]))
        return paths + heads

    cloud = _item_cloud(items)
    positive = _scatter(x=[float(pos_xy[0])], y=[float(pos_xy[1])], mode="markers", name="positive z₀",
                        marker={"color": TRAIN_POS_COLOR, "size": 16, "symbol": "star",
                                "line": {"color": "black", "width": 1}})
    moving = list(range(2, 2 + 2 * len(traj.steps)))
    frames = [{"name": str(k), "data": traces_at(k), "traces": moving} for k in range(n_frames)]
    play = {"frame": {"duration": duration_ms, "redraw": False}, "fromcurrent": True,
            "transition": {"duration": 0}, "mode": "immediate"}
    pause = {"frame": {"duration": 0, "redraw": False}, "mode": "immediate", "transition": {"duration": 0}}
    xr, yr = _ranges([items[["x", "y"]].to_numpy()] + ([] if zoom_items else [xy]))
    layout = {
        "updatemenus": [{"type": "buttons", "direction": "left", "x": 0, "y": -0.1, "xanchor": "left",
                         "yanchor": "top", "pad": {"r": 10, "t": 30}, "showactive": False,
                         "buttons": [{"label": "▶ Play", "method": "animate", "args": [None, play]},
                                     {"label": "⏸ Pause", "method": "animate", "args": [[None], pause]}]}],
        "sliders": [{"active": n_frames - 1, "x": 0.2, "len": 0.8, "y": -0.1, "yanchor": "top",
                     "currentvalue": {"prefix": "frame ", "xanchor": "right"},
                     "steps": [{"label": str(k), "method": "animate",
                                "args": [[str(k)], {"frame": {"duration": 0, "redraw": False},
                                                    "mode": "immediate", "transition": {"duration": 0}}]}
                               for k in range(n_frames)]}],
        "height": 640, "margin": {"l": 10, "r": 10, "t": 30, "b": 120}, "legend": {"orientation": "h", "y": 1.06},
        "xaxis": {"title": {"text": "map x"}, "range": xr, "autorange": False},
        "yaxis": {"title": {"text": "map y"}, "range": yr, "autorange": False}}
    return _encode_arrays({"data": [cloud, positive], "moving": base, "layout": layout, "frames": frames})


class SpecFigure(go.Figure):
    """A figure that is a finished Plotly spec (a dict of JSON-ready values, typed arrays already
    encoded): st.plotly_chart takes it as a Figure, so neither validates it again; its to_dict() is
    the spec itself. Read-only: use it only to draw."""

    def __init__(self, spec: dict) -> None:  # no BaseFigure.__init__: that would validate every trace
        object.__setattr__(self, "_spec", spec)

    def to_dict(self) -> dict:
        return self._spec

    def to_plotly_json(self) -> dict:
        return self._spec


_SHORT_TYPES = {"int8": "i1", "uint8": "u1", "int16": "i2", "uint16": "u2", "int32": "i4", "uint32": "u4",
                "float32": "f4", "float64": "f8"}  # plotly.js typed arrays (as _plotly_utils names them)
_PLAIN = (str, int, float, bool, type(None))


def _typed(v: np.ndarray) -> dict:
    """One numpy array in Plotly's typed-array form, the bytes plotly's own encoder writes."""
    import base64

    v = np.ascontiguousarray(v)
    out = {"dtype": _SHORT_TYPES[v.dtype.name], "bdata": base64.b64encode(v.tobytes()).decode("ascii")}
    if v.ndim > 1:
        out["shape"] = str(v.shape)[1:-1]
    return out


def _encode_arrays(spec: dict) -> dict:
    """numpy arrays in the spec -> Plotly's typed-array form ({dtype, bdata}), as to_dict() does,
    in place. Plain numeric arrays are encoded here directly (plotly's encoder copies and inspects
    each one: most of a trajectory spec's build time); anything else goes through plotly's own."""
    from _plotly_utils.utils import is_homogeneous_array, is_skipped_key, to_typed_array_spec

    def walk(obj) -> None:
        if isinstance(obj, dict):
            for key, value in obj.items():
                if isinstance(value, _PLAIN) or is_skipped_key(key):
                    continue
                if isinstance(value, np.ndarray) and value.dtype.name in _SHORT_TYPES and value.size:
                    obj[key] = _typed(value)
                elif isinstance(value, (dict, list, tuple)):
                    walk(value)
                elif is_homogeneous_array(value):
                    obj[key] = to_typed_array_spec(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                if not isinstance(value, _PLAIN):
                    walk(value)

    walk(spec)
    return spec


def trajectory_figure(spec: dict, frame: int) -> SpecFigure:
    """The cached spec showing `frame` (the static traces are that frame's, the slider sits on it);
    nothing is rebuilt or validated, so a frame costs only its JSON."""
    n_frames = len(spec["frames"])
    k = min(max(int(frame), 0), n_frames - 1)
    slider = dict(spec["layout"]["sliders"][0], active=k)
    layout = dict(spec["layout"], sliders=[slider])
    moving = [dict(style, **now) for style, now in zip(spec["moving"], spec["frames"][k]["data"])]
    return SpecFigure({"data": spec["data"] + moving, "layout": layout, "frames": spec["frames"]})


CHAIN_MEASURES = (("hardness", "hardness"), ("cos_to_pos", "cos to positive"), ("norm", "norm ‖z‖"))


def chain_lines_figure(traj: ex.Trajectories, colors: dict[int, str]) -> SpecFigure:
    """Hardness, cosine to the positive and norm along each chain, one line per step s, in three
    stacked panels sharing the frame axis. Written as a finished spec (plotly express took about
    a second per new user or seed to build the same chart)."""
    table = traj.table
    n = len(CHAIN_MEASURES)
    gap = 0.06
    height = (1.0 - gap * (n - 1)) / n
    traces, layout = [], {"height": 560, "margin": {"l": 10, "r": 10, "t": 30, "b": 40},
                          "legend": {"title": {"text": "step"}}, "hovermode": "closest"}
    parts = {s: table[table["s"] == s].sort_values("frame", kind="stable") for s in traj.steps}
    for row, (col, title) in enumerate(CHAIN_MEASURES):
        ax = "" if row == 0 else str(row + 1)
        top = 1.0 - row * (height + gap)
        layout[f"yaxis{ax}"] = {"domain": [top - height, top], "title": {"text": title}, "anchor": f"x{ax}"}
        layout[f"xaxis{ax}"] = {"anchor": f"y{ax}", "showticklabels": row == n - 1,
                                "title": {"text": "frame" if row == n - 1 else ""}}
        if row:
            layout[f"xaxis{ax}"]["matches"] = "x"
        for s in traj.steps:
            part = parts[s]
            traces.append({"type": "scatter", "mode": "lines+markers", "name": f"s={s}", "legendgroup": str(s),
                           "showlegend": row == 0, "xaxis": f"x{ax}", "yaxis": f"y{ax}",
                           "line": {"color": colors[s]}, "marker": {"color": colors[s]},
                           "x": part["frame"].to_numpy(np.float64), "y": part[col].to_numpy(np.float64),
                           "text": part["label"].astype(str).tolist(),
                           "hovertemplate": f"s={s} · %{{text}}<br>frame %{{x}}<br>{title} %{{y:.4f}}<extra></extra>"})
    return SpecFigure(_encode_arrays({"data": traces, "layout": layout}))


def map_figure(items: pd.DataFrame, overlay: pd.DataFrame, color_by: str, size_by_nn: bool,
               steps: list[int], clouds: list[tuple[dict, np.ndarray]] | None = None
               ) -> tuple[SpecFigure, list[tuple[str, np.ndarray]]]:
    """Items + overlay layers, as a finished spec. Returns the figure and, per trace, (source, row
    labels) so a box or lasso selection (curve_number, point_index) maps back to table rows.
    clouds: `item_cloud_specs(items, color_by)` when the caller keeps it (shared, never modified)."""
    data: list[dict] = []
    registry: list[tuple[str, np.ndarray]] = []
    for trace, rows in clouds if clouds is not None else item_cloud_specs(items, color_by):
        data.append(trace)
        registry.append(("items", rows))
    nn_max = float(overlay["nn_dist"].max()) if len(overlay) and overlay["nn_dist"].notna().any() else 0.0
    layers = []
    for layer, sub in overlay.groupby("layer", sort=False):
        color, symbol = sampler_style(layer, steps)
        size: Any = 11 if layer in POSITIVE_STYLE else 8
        if size_by_nn and nn_max > 0 and layer not in POSITIVE_STYLE:
            size = (6 + 22 * sub["nn_dist"].fillna(0) / nn_max).to_numpy(np.float64)
        hover = sub["hover"].astype(str).tolist() if "hover" in sub else [str(layer)] * len(sub)
        layers.append({"type": "scattergl", "x": sub["x"].to_numpy(np.float32), "y": sub["y"].to_numpy(np.float32),
                       "mode": "markers", "name": str(layer), "hovertext": hover, "hoverinfo": "text",
                       "marker": {"color": color, "symbol": symbol, "size": size,
                                  "line": {"color": "black" if "open" not in symbol else color, "width": 1}}})
        registry.append(("overlay", sub.index.to_numpy()))
    layout = {"height": 640, "margin": {"l": 10, "r": 10, "t": 30, "b": 10}, "dragmode": "lasso",
              "legend": {"orientation": "h", "y": 1.05}, "xaxis": {"title": {"text": "map x"}},
              "yaxis": {"title": {"text": "map y"}}}
    return SpecFigure({"data": data + _encode_arrays(layers), "layout": layout}), registry


def nn_distance_boxes(synth: pd.DataFrame, colors: dict[str, str]) -> SpecFigure:
    """One box (with every point) per layer of the synthesized negatives' distance to their
    nearest real item, as a finished spec."""
    traces = []
    for layer, sub in synth.groupby("layer", sort=False):
        color = colors.get(layer, CONTEXT_COLOR)
        traces.append({"type": "box", "name": str(layer), "x": [str(layer)] * len(sub),
                       "y": sub["nn_dist"].to_numpy(np.float64), "boxpoints": "all", "jitter": 0.3,
                       "pointpos": 0, "marker": {"color": color}, "line": {"color": color},
                       "hovertemplate": f"{layer}<br>%{{y:.4f}}<extra></extra>"})
    layout = {"height": 300, "showlegend": False, "margin": {"l": 10, "r": 10, "t": 10, "b": 10},
              "yaxis": {"title": {"text": "distance to nearest item / ‖positive‖"}}}
    return SpecFigure(_encode_arrays({"data": traces, "layout": layout}))


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

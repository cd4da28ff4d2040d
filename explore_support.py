"""The Streamlit side of the explore pages (Denoising, Negatives map, FHN & hardness, Noise
schedule lab): cached loaders of run artefacts, the process-wide 2-D maps (PCA at once, UMAP in a
background thread), background denoiser refits, colours/markers, and the Plotly figures.

All computation lives in `cnsdiff_core.explore`; this module only caches, threads and draws.
Shared caches (st.cache_resource) hold read-only objects: embeddings, denoisers, fitted maps.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

import app_support as sup
from ui.tasks import task_panel
from cnsdiff_core import explore as ex
from cnsdiff_core.config import TrainConfig
from cnsdiff_core.runs import RunInfo, RunStore, StoreError
from cnsdiff_core.samplers import REGISTRY, WITH_DENOISER
from cnsdiff_core.tasks import Status

# --- colours and markers ----------------------------------------------------------------------------
# Every sampler's negatives take its own colour and marker (`Sampler.color`, `Sampler.marker`):
# filled markers for real items, open or cross ones for synthesized vectors; the steps of a
# diffusion sampler take the vermillion family. The item cloud is grey so overlays stand out.
STEP_SCALE = ["#5C1F00", "#8F3500", "#D55E00", "#E8845A", "#F4B39A"]  # vermillion shades; dark = small s = harder
POSITIVE_STYLE = {"training positive": (sup.TRAIN_POS_COLOR, "star"),
                  "held-out positive": (sup.HELDOUT_COLOR, "star-diamond")}
GREYS = [[0, "#E6E6E6"], [1, "#333333"]]
ENV_GREYS = ["#D9D9D9", "#A6A6A6", "#737373", "#404040"]


def step_colors(steps: list[int]) -> dict[int, str]:
    """One shade of the synthesized hue per CNSDiff step (darkest = smallest s = hardest)."""
    n = len(steps)
    idx = np.linspace(0, len(STEP_SCALE) - 1, n).round().astype(int) if n > 1 else [2]
    return {int(s): STEP_SCALE[i] for s, i in zip(sorted(steps), idx)}


def layer_style(key: str, steps: list[int]) -> tuple[str, str]:
    """(colour, marker symbol) of an overlay layer: a sampler, 'cnsdiff@s' or a positive kind."""
    if key in POSITIVE_STYLE:
        return POSITIVE_STYLE[key]
    base, step = ex.sampler_key(key)
    if step >= 0:
        return step_colors(steps).get(step, sup.SYNTH_COLOR), "cross-open"
    if step == ex.PRE_MIX:  # a vector sampler's candidate before mixing
        return sup.sampler_color(base), "circle-x-open"
    cls = REGISTRY.get(base)
    return sup.sampler_color(base), cls.marker if cls else ("x" if base in ex.SYNTHESIZING else "circle")


def series_colors(series: list[str]) -> dict[str, str]:
    """Colours for chart series named 'sampler' or 'sampler@s' (plus 'positive')."""
    steps = sorted({ex.sampler_key(s)[1] for s in series if "@" in s and ex.sampler_key(s)[1] >= 0})
    out = {}
    for s in series:
        if s == "positive":
            out[s] = sup.TRAIN_POS_COLOR
        else:
            out[s] = layer_style(s, steps)[0]
    return out


# --- runs --------------------------------------------------------------------------------------------
def _root() -> str:
    return str(sup.runs_root())


def _mtime(run_id: str) -> float:
    try:
        return (sup.runs_root() / run_id / "status.json").stat().st_mtime
    except OSError:
        return 0.0


def explorable_runs(with_denoiser: bool = False) -> list[RunInfo]:
    """Runs that finished with embeddings (newest first); only runs of a sampler with a trained
    denoiser when asked."""
    out = []
    for info in sup.list_runs():
        if info.status in ("damaged", "running", "queued") or not (info.path / "embeddings.npz").exists():
            continue
        if with_denoiser and info.config.get("sampler") not in WITH_DENOISER:
            continue
        out.append(info)
    return out


def best_epoch(run_id: str) -> int | None:
    """The selected epoch of a stored run (None when it is not recorded)."""
    for info in explorable_runs(False):
        if info.run_id == run_id:
            be = info.final.get("best_epoch")
            return int(be) if be is not None else None
    return None


def pick_run(key: str, with_denoiser: bool = False, label: str = "Run") -> str | None:
    """A run picker that defaults to (and follows) the sidebar's current run."""
    infos = explorable_runs(with_denoiser)
    if not infos:
        return None
    ids = [i.run_id for i in infos]
    labels = {i.run_id: i.label() for i in infos}
    current = sup.current_run_id()
    seen = f"_{key}_sidebar_seen"
    if current in ids and st.session_state.get(seen) != current:
        st.session_state[key] = current  # the sidebar changed: follow it
    st.session_state[seen] = current
    if st.session_state.get(key) not in ids:
        st.session_state[key] = current if current in ids else ids[0]
    return st.selectbox(label, ids, key=key, format_func=lambda r: labels.get(r, r),
                        help="Defaults to the run chosen in the sidebar.")


def pick_runs(key: str, label: str = "Runs") -> list[str]:
    infos = explorable_runs(False)
    ids = [i.run_id for i in infos]
    labels = {i.run_id: i.label() for i in infos}
    current = sup.current_run_id()
    if key not in st.session_state:
        st.session_state[key] = [current] if current in ids else ids[:1]
    st.session_state[key] = [r for r in st.session_state[key] if r in ids]
    return st.multiselect(label, ids, key=key, format_func=lambda r: labels.get(r, r))


def url_state(key: str, param: str, options: list, fallback: Any, parse=str) -> None:
    """Before a widget: give it the URL's value (?user=..., ?item=..., ?step=...) on first render,
    or `fallback` when its current value is no longer an option. Pair with `sup.qp_set` after."""
    if key in st.session_state and st.session_state[key] in options:
        return
    raw = sup.qp_get(param) if key not in st.session_state else None
    try:
        value = parse(raw) if raw is not None else None
    except (TypeError, ValueError):
        value = None
    st.session_state[key] = value if value in options else fallback


@st.cache_resource(show_spinner=False, max_entries=16)
def _embeddings(root: str, run_id: str, mtime: float) -> tuple[np.ndarray, np.ndarray]:
    return RunStore(root).load(run_id).embeddings()


@st.cache_resource(show_spinner=False, max_entries=16)
def _denoiser(root: str, run_id: str, mtime: float):
    return ex.run_denoiser(RunStore(root).load(run_id))


@st.cache_resource(show_spinner=False, max_entries=16)
def _negatives(root: str, run_id: str, mtime: float) -> dict:
    return RunStore(root).load(run_id).negatives("best")


@st.cache_data(show_spinner=False, max_entries=64)
def _diagnostics(root: str, run_id: str, mtime: float) -> pd.DataFrame:
    return RunStore(root).load(run_id).diagnostics()


@st.cache_data(show_spinner=False, max_entries=256)
def _dataset_info(root: str, run_id: str, mtime: float) -> dict:
    return RunStore(root).load(run_id).dataset_info()


def negatives(run_id: str) -> dict:
    return _negatives(_root(), run_id, _mtime(run_id))


def diagnostics(run_id: str) -> pd.DataFrame:
    return _diagnostics(_root(), run_id, _mtime(run_id))


@dataclass
class RunContext:
    run_id: str
    run: Any
    data: Any
    user_emb: np.ndarray
    item_emb: np.ndarray
    cfg: TrainConfig


def run_context(run_id: str) -> RunContext:
    """The run, its dataset and embeddings; shows one error and stops the page when unusable."""
    try:
        run = sup.load_run(run_id)
        cfg = run.config
        data = sup.load_dataset_cached(cfg.dataset, cfg.shift, cfg.data_seed)
        user_emb, item_emb = _embeddings(_root(), run_id, _mtime(run_id))
    except (StoreError, ValueError, OSError) as exc:  # DataError, ConfigError are ValueErrors
        st.error(f"Run {run_id} cannot be shown: {exc}")
        st.stop()
    if item_emb.shape[0] != data.n_items or user_emb.shape[0] != data.n_users:
        st.error(f"Run {run_id} was trained on {item_emb.shape[0]} items / {user_emb.shape[0]} users but "
                 f"dataset {cfg.dataset!r} loads with {data.n_items} / {data.n_users} here; pick another run.")
        st.stop()
    return RunContext(run_id, run, data, user_emb, item_emb, cfg)


def denoiser(ctx: RunContext):
    try:
        return _denoiser(_root(), ctx.run_id, _mtime(ctx.run_id))
    except ex.ExploreError as exc:
        st.error(str(exc))
        st.stop()


# --- 2-D maps: PCA at once, UMAP as a background task (cnsdiff_core.explore.ItemMaps) ---------------
@st.cache_resource(show_spinner="Fitting the PCA map…", max_entries=8)
def _map_job(root: str, run_id: str, mtime: float) -> ex.ItemMaps:
    return ex.ItemMaps(_embeddings(root, run_id, mtime)[1], Path(root) / run_id, run_id)


def map_job(run_id: str) -> ex.ItemMaps:
    return _map_job(_root(), run_id, _mtime(run_id))


def map_method_picker(job: ex.ItemMaps, key: str, auto_key: str) -> str:
    """PCA / UMAP choice; UMAP is offered once the background fit is ready. The task panel polls
    the fit every second while it runs and reruns the page when it is done."""
    c_auto, c_method, c_status = st.columns([1.3, 1.2, 2], vertical_alignment="center")
    auto = c_auto.toggle("Fit UMAP in the background", value=True, key=auto_key,
                         help="UMAP (cosine) compiles and fits in a background thread, once per run "
                              "for everyone; PCA shows meanwhile.")
    if auto:
        job.start_umap()
    options = ["pca", "umap"] if job.status == Status.FINISHED else ["pca"]
    if st.session_state.get(key) not in options:
        st.session_state[key] = "pca"
    method = c_method.radio("Map", options, key=key, horizontal=True,
                            format_func=lambda m: {"pca": "PCA", "umap": "UMAP (cosine)"}[m])
    with c_status:
        if job.status == Status.FAILED:
            st.caption(f"UMAP failed ({job.task.message}); PCA is shown.")
        elif job.status == Status.FINISHED and job.precomputed:
            st.caption("UMAP precomputed with the workshop bundle: the run's stored negatives sit at their "
                       "exact UMAP transform; other vectors (trajectories) at the weighted mean of their "
                       f"{job.umap.n_neighbors} nearest items.")
        elif job.status == Status.FINISHED:
            st.caption(f"UMAP ready ({job.task.message}); synthesized points use its transform.")
        elif job.task is not None:
            task_panel(lambda: [job.task], _umap_progress, f"umap_{key}")
    return method


def _umap_progress(tasks: list) -> None:
    task = tasks[0]
    if task.active:
        st.caption(f"⏳ UMAP {task.note or 'waiting for another fit'} in the background ({task.seconds:.0f} s); "
                   "PCA meanwhile.")


@st.cache_resource(show_spinner="Placing negatives on the map…", max_entries=16)
def _negatives_placed(root: str, run_id: str, mtime: float, method: str, with_truth: bool) -> pd.DataFrame:
    job = _map_job(root, run_id, mtime)
    run = RunStore(root).load(run_id)
    data = None
    if with_truth:
        cfg = run.config
        data = sup.load_dataset_cached(cfg.dataset, cfg.shift, cfg.data_seed)
    return ex.negatives_frame(_negatives(root, run_id, mtime), job.coords(method), job.projection(method), data)


def negatives_placed(ctx: RunContext, method: str) -> pd.DataFrame:
    method = map_job(ctx.run_id).effective(method)
    return _negatives_placed(_root(), ctx.run_id, _mtime(ctx.run_id), method, ctx.data.truth is not None)


@st.cache_data(show_spinner=False, max_entries=8)
def _items_table(root: str, run_id: str, mtime: float, method: str, _data, data_key: tuple) -> pd.DataFrame:
    return ex.item_frame(_data, _map_job(root, run_id, mtime).coords(method))


def items_table(ctx: RunContext, method: str) -> pd.DataFrame:
    method = map_job(ctx.run_id).effective(method)
    cfg = ctx.cfg
    return _items_table(_root(), ctx.run_id, _mtime(ctx.run_id), method, ctx.data,
                        (cfg.dataset, cfg.shift, cfg.data_seed))


# --- trajectories ----------------------------------------------------------------------------------------
@st.cache_data(show_spinner="Denoising…", max_entries=64)
def _trajectories(root: str, run_id: str, mtime: float, user: int, pos: int, seed: int, exclude: bool,
                  data_key: tuple, _ctx: RunContext) -> ex.Trajectories:
    return ex.denoising_trajectories(_ctx.cfg, _denoiser(root, run_id, mtime), _ctx.user_emb, _ctx.item_emb,
                                     _ctx.data, user, pos, seed=seed, exclude_train=exclude)


def trajectories(ctx: RunContext, user: int, pos: int, seed: int, exclude: bool) -> ex.Trajectories:
    denoiser(ctx)  # a clear error for a run without a denoiser
    c = ctx.cfg
    return _trajectories(_root(), ctx.run_id, _mtime(ctx.run_id), int(user), int(pos), int(seed), bool(exclude),
                         (c.dataset, c.shift, c.data_seed), ctx)


@st.cache_data(show_spinner=False, max_entries=64)
def _placed_states(root: str, run_id: str, mtime: float, method: str, key: tuple, _states: np.ndarray) -> np.ndarray:
    return _map_job(root, run_id, mtime).projection(method).transform(_states)


def placed_states(ctx: RunContext, traj: ex.Trajectories, method: str, key: tuple) -> np.ndarray:
    method = map_job(ctx.run_id).effective(method)
    return _placed_states(_root(), ctx.run_id, _mtime(ctx.run_id), method, key, traj.states)


# --- figures ---------------------------------------------------------------------------------------------
def _item_cloud(items: pd.DataFrame, color_by: str = "none") -> go.Scattergl:
    hover = items["item_id"].astype(str) + np.where(items["title"].astype(str) != "", " · " + items["title"].astype(str), "") \
        + " · popularity " + items["popularity"].astype(str)
    marker: dict = {"size": 5, "opacity": 0.55, "color": sup.CONTEXT_COLOR}
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
                             marker={"color": sup.TRAIN_POS_COLOR, "size": 16, "symbol": "star",
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
        color, symbol = layer_style(layer, steps)
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


def schedule_figure(curves: pd.DataFrame) -> go.Figure:
    """beta_t, alphabar_t, SNR (log), noise std and the per-t loss weight (log) per step for one
    or two schedules."""
    cols = [c for c in ("beta", "alphabar", "snr", "noise_std", "loss_weight") if c in curves]
    titles = {"beta": "β_t", "alphabar": "ᾱ_t", "snr": "SNR_t = ᾱ/(1-ᾱ) (log)", "noise_std": "noise std √(1-ᾱ_t)",
              "loss_weight": "denoiser loss weight w(t), mean 1 (log)"}
    n_rows = (len(cols) + 1) // 2
    fig = make_subplots(rows=n_rows, cols=2, subplot_titles=[titles[c] for c in cols])
    colors = {"A": sup.OKABE_ITO["blue"], "B": sup.OKABE_ITO["vermillion"]}
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


@st.cache_data(show_spinner="Measuring the run's own denoiser…", max_entries=16)
def stored_step_report(root: str, run_id: str, mtime: float, data_key: tuple, _ctx: RunContext) -> pd.DataFrame | None:
    """step_report of the run's own trained denoiser (None for runs without one)."""
    try:
        den = _denoiser(root, run_id, mtime)
    except ex.ExploreError:
        return None
    return ex.step_report(_ctx.cfg, den, _ctx.data, _ctx.user_emb, _ctx.item_emb)


def own_step_report(ctx: RunContext) -> pd.DataFrame | None:
    c = ctx.cfg
    return stored_step_report(_root(), ctx.run_id, _mtime(ctx.run_id), (c.dataset, c.shift, c.data_seed), ctx)


# --- FHN across the store ---------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=8)
def _confounding(root: str, signature: tuple) -> pd.DataFrame:
    entries = []
    store = RunStore(root)
    for run_id, mtime in signature:
        try:
            info = store.info(run_id)
            dinfo = _dataset_info(root, run_id, mtime)
            if ex.world_confounding(info.config, dinfo) is None:
                continue
            diag = _diagnostics(root, run_id, mtime)
        except (StoreError, OSError, ValueError):
            continue
        entries.append((run_id, info.config, dinfo, diag, info.final.get("best_epoch")))
    return ex.confounding_table(entries)


def confounding_over_store() -> pd.DataFrame:
    """FHN at the selected epoch vs the synthetic world's confounding, over every finished run."""
    sig = tuple((i.run_id, _mtime(i.run_id)) for i in explorable_runs(False))
    return _confounding(_root(), sig)


def _rgba(color: str, alpha: float) -> str:
    c = color.lstrip("#")
    if len(c) != 6:
        return color
    return f"rgba({int(c[0:2], 16)}, {int(c[2:4], 16)}, {int(c[4:6], 16)}, {alpha})"


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
                                     fillcolor=_rgba(color, 0.15), line={"width": 0}, hoverinfo="skip",
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


def csv_bytes(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode("utf-8")


__all__ = ["url_state", "pick_run", "pick_runs", "run_context", "denoiser", "map_job", "map_method_picker",
           "negatives_placed", "items_table", "trajectories", "placed_states", "trajectory_figure",
           "map_figure", "selected_rows", "schedule_figure", "own_step_report",
           "confounding_over_store", "csv_bytes", "fhn_figure", "layer_style", "series_colors", "step_colors"]

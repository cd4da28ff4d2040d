"""Negatives map: every item of a run on one 2-D map, and the negatives each sampler picked or
synthesized for the probe's training triples, placed with the same fitted map (never refit)."""
import numpy as np
import pandas as pd
import streamlit as st

from cnsdiff_core import explore as ex
from ui import cache, context, data, figures, maps, routing, state, theme

routing.require_frame()

st.title("Negatives map")
st.caption("Items are fitted once (PCA at once, UMAP when ready); synthesized negatives are placed "
           "with the fitted map's transform. Box or lasso points to list them.")

run_id = state.pick_run("map_run", label="Run")
if run_id is None:
    st.info("No finished run yet: train one on the Train page (the one-click demo on Home does).")
    st.stop()
ctx = context.run_context(run_id)
dataset = ctx.data
negs = cache.negatives(run_id)
if "_probe" not in negs:
    st.warning("This run stored no probe negatives (negatives_best.npz); only items are shown.")

job = maps.map_job(run_id)
method = maps.map_method_picker(job, "map_method", "map_umap")
c_color, c_size = st.columns([1.4, 1.2])
color_by = c_color.radio("Colour items by", ["popularity", "environment"], key="map_color", horizontal=True,
                         format_func={"popularity": "popularity (log)", "environment": "environment"}.get,
                         help="Environment = item-popularity quartile (the causal term's environments).")
size_nn = c_size.toggle("Size = distance to nearest item", value=True, key="map_size_nn",
                        help="Marker size of a synthesized negative grows with its Euclidean distance to the "
                             "nearest item in the full embedding space, relative to the positive's norm "
                             "(a 2-D map hides it).")

items = maps.items_table(ctx, method)
placed = maps.negatives_placed(ctx, method)  # shared cache: never modified here
labels = ex.item_labels(dataset)
user_labels = ex.id_labels(dataset.user_ids, dataset.n_users)

# --- whose negatives ------------------------------------------------------------------------------------
probe_users = np.unique(placed["user"]) if len(placed) else np.array([], dtype=int)
users = ex.user_summary(dataset)
probe_ids = set(user_labels[probe_users])
options = ["all"] + sorted(probe_ids, key=lambda u: (len(u), u)) + \
    [u for u in users["user_id"] if u not in probe_ids]
state.url_state("map_user", "user", options, options[1] if len(options) > 1 else "all")  # one user is readable
c_user, c_layers = st.columns([1, 2])
uid = c_user.selectbox("User (type to search by id)", options, key="map_user",
                       format_func=lambda u: "all probe users" if u == "all"
                       else f"{u}{'' if u in probe_ids else '  (no probe negatives)'}")
state.qp_set("user", uid)
layer_names = list(pd.unique(placed["layer"])) if len(placed) else []
steps = sorted({ex.sampler_key(k)[1] for k in layer_names if ex.sampler_key(k)[1] >= 0})
chosen = c_layers.multiselect("Negatives to show", layer_names, default=layer_names, key="map_layers")


def build_view():
    """The overlay (this user's positives and the chosen negatives), the map figure and its
    selection registry: built once per (run key, map, user, layers, colour, size) for everyone."""
    neg = placed[placed["layer"].isin(chosen)]
    parts = []
    if uid != "all":
        user = int(np.flatnonzero(user_labels == uid)[0])
        neg = neg[neg["user"] == user]
        parts.append(ex.positives_frame(dataset, items[["x", "y"]].to_numpy(), user))
    overlay = pd.concat(parts + [neg], ignore_index=True)
    for col in ("hardness", "score", "nn_dist", "fhn_true"):
        if col not in overlay:
            overlay[col] = np.nan
    overlay["nn_dist"] = overlay["nn_dist"].fillna(0.0)
    overlay["item_label"] = labels[overlay["item"].to_numpy(int)]
    overlay["hover"] = (overlay["layer"] + " · " + overlay["item_label"]
                        + np.where(overlay["hardness"].notna(), " · hardness " + overlay["hardness"].round(3).astype(str), "")
                        + np.where(overlay["layer"].isin(ex.SYNTHESIZING) | overlay["layer"].str.contains("@"),
                                   " · dist to nearest item/‖pos‖ " + overlay["nn_dist"].round(3).astype(str), ""))

    clouds = cache.built("negatives_map_items", (cache.run_key(run_id), method, color_by),
                         lambda: figures.item_cloud_specs(items, color_by))  # the same for every user
    fig, registry = figures.map_figure(items, overlay, color_by, size_nn, steps, clouds)
    return neg, overlay, fig, registry


neg, overlay, fig, registry = cache.built(
    "negatives_map", (cache.run_key(run_id), method, uid, tuple(chosen), color_by, bool(size_nn)), build_view)
event = st.plotly_chart(fig, key="map_chart", on_select="rerun", selection_mode=("box", "lasso"),
                        config={"displaylogo": False})
if uid == "all":
    st.caption(f"{len(neg):,} negatives of {len(probe_users)} probe users. Pick a user to see their "
               "training and held-out positives.")

# --- selection -> table ------------------------------------------------------------------------------------
sel = figures.selected_rows(event, registry)
neg_cols = ["layer", "user", "pos", "item", "x", "y", "hardness", "score", "nn_dist", "fhn", "fhn_true"]


def readable(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    if "user" in out:
        out["user"] = [user_labels[int(u)] if pd.notna(u) else "" for u in out["user"]]
    if "pos" in out:
        out["pos"] = [labels[int(p)] if pd.notna(p) else "" for p in out["pos"]]
    out["item"] = labels[out["item"].to_numpy(int)]
    return out


if sel["items"] or sel["overlay"]:
    st.subheader(f"Selected: {len(sel['items'])} items, {len(sel['overlay'])} overlay points")
    if sel["overlay"]:
        st.dataframe(readable(overlay.loc[sel["overlay"], [c for c in neg_cols if c in overlay]]),
                     hide_index=True, key="map_sel_overlay")
    if sel["items"]:
        st.dataframe(items.loc[sel["items"], ["item_id", "title", "popularity", "environment", "x", "y"]],
                     hide_index=True, key="map_sel_items")
else:
    st.caption("Select points with the box or lasso tool to list them here.")

# --- the high-dimensional distance, per layer (linked to the map's layers) -----------------------------
synth = neg[neg["synthesized"]] if len(neg) else neg
if len(synth):
    st.markdown("**Distance of synthesized negatives to their nearest real item** (Euclidean, full "
                "embedding space, relative to the positive's norm; real-item negatives are at 0)")
    colors = theme.series_colors(list(synth["layer"].unique()))

    st.plotly_chart(cache.built("negatives_nn_box", (cache.run_key(run_id), method, uid, tuple(chosen)),
                                lambda: figures.nn_distance_boxes(synth, colors)), key="map_nn_box")

c1, c2 = st.columns(2)
c1.download_button("Download item coordinates (CSV)", data.csv_later(items), file_name=f"items_{method}_{run_id}.csv",
                   mime="text/csv", key="map_dl_items")
c2.download_button("Download negatives with coordinates (CSV)",
                   lambda: data.csv_bytes(readable(overlay[[c for c in neg_cols if c in overlay]])),
                   file_name=f"negatives_{method}_{run_id}.csv", mime="text/csv", key="map_dl_negatives")

"""Denoising: one user's positive noised to each hardness step s and denoised back, step by step,
on the same 2-D map as the items, with the numbers of every DDPM update."""
import numpy as np
import pandas as pd
import streamlit as st

from cnsdiff_core import explore as ex
from ui import cache, context, data, figures, maps, profile, routing, state, theme

routing.require_frame()

st.title("Denoising")
st.caption("CNSDiff noises the positive item's embedding to step s and denoises it back with its "
           "trained MLP. Press ▶ Play under the map to animate in the browser, or scrub the frame.")

run_id = state.pick_run("den_run", with_denoiser=True, label="CNSDiff run")
if run_id is None:
    st.info("No finished CNSDiff run yet: train one on the Train page (the one-click demo on Home does).")
    st.stop()
ctx = context.run_context(run_id)
context.denoiser(ctx)
dataset = ctx.data

# --- user and positive (both in the URL) -------------------------------------------------------------
users = ex.user_summary(dataset)
user_ids = users["user_id"].tolist()
by_uid = dict(zip(users["user_id"], users["user"]))
counts = {r.user_id: (r.n_train, r.n_heldout) for r in users.itertuples()}
state.url_state("den_user", "user", user_ids, user_ids[0])
c_user, c_item = st.columns(2)
uid = c_user.selectbox("User (type to search by id)", user_ids, key="den_user",
                       format_func=lambda u: f"{u}  ·  {counts[u][0]} training, {counts[u][1]} held-out")
state.qp_set("user", uid)
user = int(by_uid[uid])
train_items, held_items = ex.user_items(dataset, user)
item_ids = ex.id_labels(dataset.item_ids, dataset.n_items)
labels = ex.item_labels(dataset)
pos_options = item_ids[train_items].tolist()
by_iid = dict(zip(pos_options, train_items))
state.url_state("den_item", "item", pos_options, pos_options[0])
iid = c_item.selectbox("Training positive (type to search by id or title)", pos_options, key="den_item",
                       format_func=lambda i: labels[by_iid[i]])
state.qp_set("item", iid)
pos = int(by_iid[iid])

c_seed, c_excl, c_zoom = st.columns([1, 1.5, 1], vertical_alignment="bottom")
seed = int(c_seed.number_input("Noise seed", 0, 10**6, 0, key="den_seed",
                               help="The forward noise is drawn from this seed (one draw per step s)."))
exclude = c_excl.toggle("Hide training items from neighbours", value=False, key="den_exclude",
                        help="Only the neighbour lists; the FHN diagnostic resolves a vector to its nearest "
                             "item over all items (training items included).")
zoom = c_zoom.toggle("Zoom to items", value=False, key="den_zoom",
                     help="Noised states can lie far outside the item cloud; zoom in on the items.")
job = maps.map_job(run_id)
method = maps.map_method_picker(job, "den_method", "den_umap")

traj = context.trajectories(ctx, user, pos, seed, exclude)
n_frames = traj.n_frames

items = maps.items_table(ctx, method)
xy = maps.placed_states(ctx, traj, method, (user, pos, seed, exclude))
spec = maps.trajectory_spec(ctx, traj, method, (user, pos, seed, exclude), zoom, items, xy, pos)

# --- frame control (URL `step`); the Plotly slider and Play run on the client -----------------------
state.url_state("den_step", "step", list(range(n_frames)), n_frames - 1, parse=int)  # default: the candidates


def _move(delta: int) -> None:
    st.session_state["den_step"] = min(max(int(st.session_state["den_step"]) + delta, 0), n_frames - 1)


@st.fragment
def frame_view() -> None:
    """Frame controls, the map at that frame and its numbers: a step reruns only this fragment
    (the trajectories and the figure spec with every frame are cached)."""
    with profile.section("denoising frame view"):
        c_prev, c_slider, c_next = st.columns([1, 10, 1], vertical_alignment="bottom")
        c_prev.button("◀", key="den_prev", on_click=_move, args=(-1,), help="One frame back")
        frame = c_slider.slider("Frame (shared by all steps s; each chain stops at its last state)", 0,
                                n_frames - 1, key="den_step")
        state.qp_set("step", frame)
        c_next.button("▶", key="den_next", on_click=_move, args=(1,), help="One frame forward")
        st.plotly_chart(figures.trajectory_figure(spec, frame), key="den_chart", config={"displaylogo": False})
        st.caption("▶ Play and the slider under the map animate it in your browser; the numbers below follow "
                   "the Frame slider above it (◀ ▶ step one frame).")

        st.subheader(f"Frame {frame}")
        now = traj.frame(frame)
        show = now[["s", "label", "score", "hardness", "cos_to_pos", "norm", "norm_ratio", "nn_dist",
                    "resolved_item", "resolved_own_positive", "resolved_heldout"]].copy()
        show["resolved_item"] = labels[show["resolved_item"].to_numpy()]
        st.dataframe(show.rename(columns={"label": "state", "hardness": "score − s(u,pos)",
                                          "nn_dist": "dist to nearest item / ‖pos‖", "resolved_item": "resolves to",
                                          "resolved_own_positive": "is the positive (collapse)",
                                          "resolved_heldout": "held-out positive (FHN)"}),
                     hide_index=True, key="den_frame_table")

        s_pick = st.radio("Step s for the formula and neighbours", traj.steps, key="den_s", horizontal=True,
                          format_func=lambda s: f"s = {s}")
        row = traj.at(s_pick, frame)
        st.latex(ex.update_formula(row, s_pick))
        if row["phase"] == "reverse":
            st.caption(f"c₁ = β_t·√ᾱ_(t−1)/(1−ᾱ_t), c₂ = (1−ᾱ_(t−1))·√(1−β_t)/(1−ᾱ_t) at t = {int(row['t_in'])}; "
                       f"ẑ₀ = f_θ(z_t, t) has cosine {row['z0hat_cos_to_pos']:.3f} to the positive.")
        nb = traj.neighbours_at(s_pick, frame)
        nb_show = pd.DataFrame({"rank": nb["rank"], "item": labels[nb["item"].to_numpy()], "cosine": nb["cos"],
                                "training positive": nb["is_train"], "held-out positive (would-be FHN)": nb["is_heldout"]})
        st.markdown(f"**5 nearest real items** of s = {s_pick}, {row['label']}")
        st.dataframe(nb_show, hide_index=True, key="den_neighbours")


frame_view()

# --- over the whole chain -----------------------------------------------------------------------------
cos = traj.candidate_cosines()
off = cos.to_numpy()[~np.eye(len(cos), dtype=bool)]
if len(off):
    msg = (f"Cosine between the final candidates of different steps: {off.min():.3f} – {off.max():.3f}. ")
    if off.min() > 0.9:
        st.warning(msg + "The timestep barely changes the candidate: this is the reference code's "
                   "near-constant negative (untrained denoiser, chain always run from T).")
    else:
        st.caption(msg + "Different steps give different candidates: the timestep controls hardness.")
chain_panel = st.expander("Score, cosine and norm along each chain", key="den_chain_open", on_change="rerun")
if chain_panel.open:  # built and sent only when opened (a closed expander would still draw it)
    with chain_panel:
        chart = cache.built("den_lines", (cache.run_key(run_id), user, pos, seed, exclude),
                            lambda: figures.chain_lines_figure(traj, theme.step_colors(traj.steps)))
        st.plotly_chart(chart, key="den_lines")
        st.download_button("Download trajectory (CSV)", data.csv_later(traj.table.assign(map_x=xy[:, 0], map_y=xy[:, 1])),
                           file_name=f"trajectory_{run_id}_{uid}_{iid}.csv", mime="text/csv", key="den_download")
if ctx.cfg.reverse_from_T:
    st.info("This run uses the reference behaviour: the reverse chain runs from T down to 0 whatever s "
            "was, so every step ends at (nearly) the same vector.")

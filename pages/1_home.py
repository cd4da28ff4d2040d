"""Home: what CNSDiff does, the device in use, and a one-click demo trained in the background."""
import numpy as np
import plotly.graph_objects as go
import streamlit as st

import app_support as sup
import ui.tasks as tasks_ui
from cnsdiff_core.samplers import LABELS, METHOD, UNIFORM, sampler_class

sup.require_frame()

st.title("CNSDiff explorer")
st.caption("Negative sampling for recommenders under distribution shift, made visible.")

left, right = st.columns([1.1, 1])
with left:
    st.markdown(
        "1. Hard-negative samplers pick the unobserved items a model scores highest, but under "
        "popularity or exposure bias many of those are items the user would like and never saw: "
        "**false hard negatives**.\n"
        "2. **CNSDiff** does not pick negatives from the item pool; it *synthesizes* them in "
        "embedding space, starting from the user's positive item.\n"
        "3. It noises the positive's embedding to a diffusion step *s* and denoises it part of the "
        "way back: a small *s* ends close to the positive (a hard negative), a large *s* far from "
        "it (an easy one).\n"
        "4. The candidate the user scores highest is mixed with a random negative, with the "
        "synthesized share growing during training, while a causal term keeps the generator's "
        "behaviour the same across environments such as popularity strata.\n"
        "5. Here you can train it beside RNS, PNS, DNS, MixGCF and AHNS, step through the "
        "diffusion, and measure what it does to false hard negatives and to accuracy when the "
        "test distribution shifts."
    )
    st.markdown(f"**Device in use:** {sup.device_info()['label']}")


def method_figure() -> go.Figure:
    """Schematic: positive -> forward noise to step s -> partial denoising -> candidate negative."""
    rng = np.random.default_rng(7)
    radius, angle = rng.uniform(0.5, 3.0, 45), rng.uniform(0, 2 * np.pi, 45)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=radius * np.cos(angle), y=radius * np.sin(angle), mode="markers",
                             name="real items", hoverinfo="skip",
                             marker=dict(color=sup.REAL_COLOR, size=7, opacity=0.3)))
    # (step s, direction in degrees, distance of z_s, distance of the candidate, shade, hardness)
    steps = [(10, 35, 1.3, 0.55, sup.SYNTH_STEP_SCALE[4], "hard"),
             (14, 155, 2.1, 1.0, sup.SYNTH_STEP_SCALE[3], "medium"),
             (18, 275, 2.9, 1.6, sup.SYNTH_STEP_SCALE[2], "easy")]
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
                             marker=dict(color=sup.REAL_COLOR, size=20, symbol="star",
                                         line=dict(color="white", width=1))))
    fig.update_layout(height=470, margin=dict(l=0, r=0, t=30, b=0), plot_bgcolor="white",
                      title=dict(text="Noise the positive to step s, denoise part of the way back", font=dict(size=14)),
                      legend=dict(orientation="h", x=0.0, y=-0.02, yanchor="top", font=dict(size=11)),
                      xaxis=dict(visible=False, range=[-3.3, 3.3]), yaxis=dict(visible=False, range=[-3.2, 3.0]))
    return fig


with right:
    st.plotly_chart(method_figure(), key="home_method_figure", config={"displayModeBar": False})

st.divider()
st.subheader("Run the demo")
st.write("Trains CNSDiff (preset *demo*) and RNS on the shipped sample world with its default "
         "shift, in the background, then compares their OOD Recall@20.")

manager = sup.job_manager()
if not st.session_state.get(sup.KEY_DEMO_JOB):
    running = manager.active(tag="demo")  # a demo started in another tab: follow it, never duplicate
    if running:
        st.session_state[sup.KEY_DEMO_JOB] = running[0]["job_id"]
demo = manager.get(st.session_state.get(sup.KEY_DEMO_JOB))
demo_running = bool(demo and demo["status"] in tasks_ui.ACTIVE)

if st.button("Run the demo", key="demo_run", type="primary", icon=":material/play_arrow:",
             disabled=sup.read_only() or demo_running,
             help="Off in read-only workshop mode." if sup.read_only() else None):
    job_id = manager.submit(sup.demo_configs(), title="demo: CNSDiff + RNS", tag="demo")
    st.session_state[sup.KEY_DEMO_JOB] = job_id
    st.session_state.pop("demo_seen_done", None)
    sup.remember_job(job_id)
    demo_running = True


def last_demo_runs() -> dict:
    """The newest finished CNSDiff and RNS demo runs on the sample world, from the run store."""
    out = {}
    for info in sup.list_runs():
        c = info.config
        if (c.get("preset") == "demo" and c.get("dataset") == sup.DEFAULT_DATASET and info.final
                and info.status in ("finished", "early-stopped", "stopped") and c.get("sampler") not in out):
            out[c["sampler"]] = info
    return {k: out[k] for k in (METHOD, UNIFORM) if k in out}


def show_result(infos: dict, where: str) -> None:
    st.markdown(f"#### Demo result {where}")
    cols = st.columns(max(len(infos), 1))
    base = infos[UNIFORM].final.get("ood_recall@20") if UNIFORM in infos else None
    for col, (sampler, info) in zip(cols, infos.items()):
        value = info.final.get("ood_recall@20")
        delta = None
        if sampler != UNIFORM and base and value is not None:
            delta = f"{(value - base) / base:+.1%} vs {sampler_class(UNIFORM).short_label()}"
        col.metric(f"{LABELS.get(sampler, sampler)} · OOD Recall@20",
                   "n/a" if value is None else f"{value:.4f}", delta=delta, border=True,
                   help=f"run {info.run_id}, {info.status}")
    st.caption("One seed each, at a laptop budget: a gap of a few percent can flip with another seed "
               "(train several seeds on Train; docs/RESULTS.md has three-seed tables). "
               "Open a run in the sidebar to explore it, or go on:")
    links = st.columns(5)
    links[0].page_link("pages/4_compare_runs.py", label="Compare runs", icon=":material/leaderboard:")
    files = sup.page_files()
    for col, (key, label) in zip(links[1:], [("denoising", "Denoising"), ("negatives_map", "Negatives map"),
                                             ("fhn_hardness", "FHN & hardness"), ("schedule_lab", "Schedule lab")]):
        if key in files:
            col.page_link(str(files[key].relative_to(sup.REPO)), label=label)


def demo_view(jobs: list[dict]) -> None:
    job = jobs[0] if jobs else None
    if job is None:
        previous = last_demo_runs()
        if previous:
            show_result(previous, "(latest demo runs in the run store)")
        return
    if job["status"] in tasks_ui.ACTIVE:
        st.progress(job["fraction"], text=sup.job_progress_text(job))
        st.button("Stop the demo", key="demo_stop", on_click=manager.stop, args=(job["job_id"],))
        return
    if not st.session_state.get("demo_seen_done"):
        # Just finished: select the CNSDiff run and redraw the whole app (sidebar run list).
        st.session_state["demo_seen_done"] = True
        cns = [o["run_id"] for o in job["outcomes"] if o["sampler"] == METHOD and o["run_id"]]
        if cns and job["status"] != "failed":
            sup.select(run_id=cns[0])
        st.rerun(scope="app")
    if job["status"] == "failed":
        st.error(f"The demo failed: {job['message']}")
        return
    infos = {}
    for o in job["outcomes"]:
        if o["run_id"]:
            infos[o["sampler"]] = sup.store().info(o["run_id"])
    if job["status"] == "stopped":
        st.warning("The demo was stopped; the metrics below are from what was trained so far.")
    show_result(infos, f"({job['message']})")


tasks_ui.task_panel(lambda: [j for j in [manager.get(st.session_state.get(sup.KEY_DEMO_JOB))] if j], demo_view, "demo")

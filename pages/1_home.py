"""Home: what CNSDiff does, the device in use, and a one-click demo trained in the background."""
import streamlit as st

from cnsdiff_core.runs_table import latest_runs, relative
from cnsdiff_core.samplers import LABELS, METHOD, UNIFORM, sampler_class
from ui import cache, data, figures, forms, pages, routing, state, tasks

routing.require_frame()

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
    st.markdown(f"**Device in use:** {cache.device_info()['label']}")




with right:
    st.plotly_chart(figures.method_figure(), key="home_method_figure", config={"displayModeBar": False})

st.divider()
st.subheader("Run the demo")
st.write("Trains CNSDiff (preset *demo*) and RNS on the shipped sample world with its default "
         "shift, in the background, then compares their OOD Recall@20.")

manager = tasks.job_manager()
if not st.session_state.get(state.KEY_DEMO_JOB):
    running = manager.active(tag="demo")  # a demo started in another tab: follow it, never duplicate
    if running:
        st.session_state[state.KEY_DEMO_JOB] = running[0]["job_id"]
demo = manager.get(st.session_state.get(state.KEY_DEMO_JOB))
demo_running = bool(demo and demo["status"] in tasks.ACTIVE)

if st.button("Run the demo", key="demo_run", type="primary", icon=":material/play_arrow:",
             disabled=state.read_only() or demo_running,
             help="Off in read-only workshop mode." if state.read_only() else None):
    job_id = manager.submit(forms.demo_configs(), title="demo: CNSDiff + RNS", tag="demo")
    st.session_state[state.KEY_DEMO_JOB] = job_id
    st.session_state.pop("demo_seen_done", None)
    tasks.remember_job(job_id)
    demo_running = True


def show_result(infos: dict, where: str) -> None:
    st.markdown(f"#### Demo result {where}")
    cols = st.columns(max(len(infos), 1))
    base = infos[UNIFORM].final.get("ood_recall@20") if UNIFORM in infos else None
    for col, (sampler, info) in zip(cols, infos.items()):
        value = info.final.get("ood_recall@20")
        gain = relative(value, base) if sampler != UNIFORM else None
        delta = None if gain is None else f"{gain:+.1%} vs {sampler_class(UNIFORM).short_label()}"
        col.metric(f"{LABELS.get(sampler, sampler)} · OOD Recall@20",
                   "n/a" if value is None else f"{value:.4f}", delta=delta, border=True,
                   help=f"run {info.run_id}, {info.status}")
    st.caption("One seed each, at a laptop budget: a gap of a few percent can flip with another seed "
               "(train several seeds on Train; docs/RESULTS.md has three-seed tables). "
               "Open a run in the sidebar to explore it, or go on:")
    links = st.columns(5)
    for col, key in zip(links, ("compare_runs", "denoising", "negatives_map", "fhn_hardness", "schedule_lab")):
        pages.link(key, container=col)


def demo_view(jobs: list[dict]) -> None:
    job = jobs[0] if jobs else None
    if job is None:
        previous = latest_runs(cache.list_runs(), (METHOD, UNIFORM), "demo", data.DEFAULT_DATASET)
        if previous:
            show_result(previous, "(latest demo runs in the run store)")
        return
    if job["status"] in tasks.ACTIVE:
        st.progress(job["fraction"], text=tasks.job_progress_text(job))
        st.button("Stop the demo", key="demo_stop", on_click=manager.stop, args=(job["job_id"],))
        return
    if not st.session_state.get("demo_seen_done"):
        # Just finished: select the CNSDiff run and redraw the whole app (sidebar run list).
        st.session_state["demo_seen_done"] = True
        cns = [o["run_id"] for o in job["outcomes"] if o["sampler"] == METHOD and o["run_id"]]
        if cns and job["status"] != "failed":
            state.select(run_id=cns[0])
        st.rerun(scope="app")
    if job["status"] == "failed":
        st.error(f"The demo failed: {job['message']}")
        return
    infos = {}
    for o in job["outcomes"]:
        if o["run_id"]:
            infos[o["sampler"]] = cache.store().info(o["run_id"])
    if job["status"] == "stopped":
        st.warning("The demo was stopped; the metrics below are from what was trained so far.")
    show_result(infos, f"({job['message']})")


tasks.task_panel(lambda: [j for j in [manager.get(st.session_state.get(state.KEY_DEMO_JOB))] if j], demo_view, "demo")

"""Train: samplers, a preset, every hyper-parameter in one form; training runs in the background
with progress, ETA, live loss / validation curves and a Stop button that keeps what was trained."""
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import app_support as sup
import ui.tasks as tasks_ui
from cnsdiff_core.config import PRESETS, SAMPLERS, ConfigError
from cnsdiff_core.samplers import LABELS, METHOD

sup.require_frame()

st.title("Train")
if sup.read_only():
    st.info("Training is switched off in read-only workshop mode.")
    st.stop()

name, shift = sup.current_dataset(), sup.current_shift()
st.caption(f"Trains on dataset **{sup.dataset_label(name)}**, shift **{shift}** (change them in the "
           "sidebar). Several samplers train one after the other with the same settings.")
manager = sup.job_manager()
PRESET_TEXT = {"paper": "paper: the method as published (shows the trap)",
               "reference": "reference: the published code's behaviour",
               "tuned": "tuned: what IID validation picked (default)",
               "demo": "demo: small and fast on a laptop CPU", "custom": "custom: engine defaults"}
GROUPS = sup.form_groups()
KEYS = {f: f"cfg_{f}" for group in GROUPS.values() for f in group}


def apply_preset() -> None:
    cfg = sup.base_config(st.session_state["train_preset"])
    for field_name, key in KEYS.items():
        st.session_state[key] = sup.form_value(cfg, field_name)


st.session_state.setdefault("train_preset", "tuned")
if any(key not in st.session_state for key in KEYS.values()):
    apply_preset()
prefill = st.session_state.pop(sup.KEY_TRAIN_PREFILL, None)  # e.g. from the schedule lab
if prefill:
    for field_name, value in prefill.items():
        if field_name in KEYS:
            st.session_state[KEYS[field_name]] = value
    st.info("Settings were filled in from another page: " + ", ".join(f"{k}={v}" for k, v in prefill.items()))

top = st.columns([2, 2, 3])
top[0].selectbox("Preset", list(PRESETS) + ["custom"], key="train_preset", on_change=apply_preset,
                 format_func=lambda p: PRESET_TEXT.get(p, p), persist_state="session",
                 help="Choosing a preset refills every setting below.")
dev = sup.device_info()
top[1].radio("Device", ["auto", "cpu", "cuda"] if dev["cuda"] else ["auto", "cpu"], key="train_device",
             horizontal=True, persist_state="session", help=f"auto uses {dev['label']}.")
with top[2]:
    st.caption(f"auto → **{dev['label']}**")
    if not dev["cuda"]:
        st.caption(f"cuda is not offered: {dev['reason']}.")

with st.form("train_form", border=True):
    pick, reps = st.columns([4, 1])
    samplers = pick.multiselect("Samplers", list(SAMPLERS), default=[METHOD], key="train_samplers",
                                format_func=lambda s: LABELS.get(s, s), persist_state="session",
                                help="Each sampler becomes its own run; pick several to compare them.")
    seeds = reps.number_input("Seeds per sampler", 1, sup.MAX_SEEDS, 1, step=1, key="train_seeds",
                              persist_state="session",
                              help="Train each sampler with seeds seed, seed+1, ...; Compare runs then shows "
                                   "the mean and spread over them.")
    for i, (group, names) in enumerate(GROUPS.items()):
        with st.expander(group, expanded=i == 0):
            cols = st.columns(4)
            for j, field_name in enumerate(names):
                col, key, about = cols[j % 4], KEYS[field_name], sup.SETTINGS[field_name]
                typ, hint = about.type, about.help + (f" ({about.allowed()})" if about.allowed() else "")
                if about.choices is not None:
                    col.selectbox(field_name, about.choices, key=key, help=hint, persist_state="session")
                elif typ == "bool":
                    col.checkbox(field_name, key=key, help=hint, persist_state="session")
                elif typ == "int":
                    col.number_input(field_name, step=1, key=key, help=hint, persist_state="session")
                else:  # floats and the epoch list as text: exact values (1e-6) and clear errors
                    col.text_input(field_name, key=key, persist_state="session", help=hint)
    submitted = st.form_submit_button("Run", key="train_run", type="primary", icon=":material/play_arrow:")

if submitted:
    values = {f: st.session_state[k] for f, k in KEYS.items()}
    try:
        configs = sup.build_configs(st.session_state["train_preset"], samplers, values, name, shift,
                                    st.session_state.get("train_device", "auto"), seeds=int(seeds))
    except ConfigError as exc:
        st.error(str(exc))
    else:
        names = list(dict.fromkeys(c.sampler for c in configs))
        reps = f" × {int(seeds)} seeds" if int(seeds) > 1 else ""
        job_id = manager.submit(configs, title=f"{', '.join(names)}{reps} · {configs[0].preset} · "
                                               f"{sup.dataset_label(name)}/{shift}")
        sup.remember_job(job_id)
        st.success(f"Started {len(configs)} run(s) in the background; you can leave this page.")


def loss_figure(job: dict) -> go.Figure:
    fig = go.Figure()
    batches, epochs = pd.DataFrame(job["losses"]), pd.DataFrame(job["valid"])
    if not batches.empty:
        for (run, sampler), part in batches.groupby(["run", "sampler"]):
            fig.add_trace(go.Scatter(x=part["x"], y=part["loss"], mode="lines", name=f"{sampler} batches",
                                     line=dict(color=sup.sampler_color(sampler), width=1), opacity=0.45))
    if not epochs.empty and "loss" in epochs:
        for (run, sampler), part in epochs.groupby(["run", "sampler"]):
            fig.add_trace(go.Scatter(x=part["epoch"], y=part["loss"], mode="lines+markers",
                                     name=f"{sampler} epoch mean", line=dict(color=sup.sampler_color(sampler))))
    fig.update_layout(title="Training loss", height=300, margin=dict(l=10, r=10, t=40, b=10),
                      plot_bgcolor="white", xaxis_title="epoch", yaxis_title="loss",
                      legend=dict(orientation="h", y=-0.25))
    return fig


def valid_figure(job: dict) -> go.Figure:
    fig = go.Figure()
    frame = pd.DataFrame(job["valid"])
    if not frame.empty:
        for (run, sampler), part in frame.groupby(["run", "sampler"]):
            color = sup.sampler_color(sampler)
            fig.add_trace(go.Scatter(x=part["epoch"], y=part["valid_recall@20"], mode="lines+markers",
                                     name=f"{sampler} valid", line=dict(color=color)))
            fig.add_trace(go.Scatter(x=part["epoch"], y=part["ood_recall@20"], mode="lines",
                                     name=f"{sampler} OOD test", line=dict(color=color, dash="dot")))
    fig.update_layout(title="Recall@20 by epoch", height=300, margin=dict(l=10, r=10, t=40, b=10),
                      plot_bgcolor="white", xaxis_title="epoch", legend=dict(orientation="h", y=-0.25))
    return fig


def show_job(job: dict, charts: bool) -> None:
    with st.container(border=True):
        st.markdown(f"{tasks_ui.STATUS_ICONS.get(job['status'], '')} **{job['title']}** · {job['status']}"
                    + (f" · {job['device']}" if job["device"] else ""))
        if job["status"] in sup.ACTIVE:
            st.progress(job["fraction"], text=sup.job_progress_text(job))
            st.button("Stop", key=f"train_stop_{job['job_id']}", on_click=manager.stop, args=(job["job_id"],),
                      disabled=job["stop_requested"], icon=":material/stop:",
                      help="Stops after the current batch; the run is kept as 'stopped'.")
        elif job["status"] == "failed":
            st.error(job["message"])
        else:
            st.caption(job["message"])
        if job["outcomes"]:
            st.dataframe(pd.DataFrame(job["outcomes"]), hide_index=True, key=f"train_outcomes_{job['job_id']}")
        if charts and (job["losses"] or job["valid"]):
            c1, c2 = st.columns(2)
            c1.plotly_chart(loss_figure(job), key=f"train_loss_{job['job_id']}", config={"displaylogo": False})
            c2.plotly_chart(valid_figure(job), key=f"train_valid_{job['job_id']}", config={"displaylogo": False})
            c2.caption("Validation Recall@20 picks the epoch that is kept; the OOD test curve is for "
                       "watching only.")


def jobs_list(jobs: list[dict]) -> None:
    st.subheader("Training jobs")
    if not jobs:
        st.caption("No training jobs yet: fill in the form and press Run.")
        return
    for k, job in enumerate(jobs[:4]):
        show_job(job, charts=k < 2)
    if len(jobs) > 4:
        st.caption(f"{len(jobs) - 4} earlier job(s) not shown; their runs are in Compare runs.")


tasks_ui.task_panel(sup.my_jobs, jobs_list, "train")

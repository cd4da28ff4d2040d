"""Train: samplers, a preset, every hyper-parameter in one form; training runs in the background
with progress, ETA, live loss / validation curves and a Stop button that keeps what was trained."""
import pandas as pd
import streamlit as st

from cnsdiff_core.config import PRESETS, SAMPLERS, ConfigError
from cnsdiff_core.samplers import LABELS, METHOD
from ui import cache, data, figures, forms, routing, state, tasks

routing.require_frame()

st.title("Train")
if state.read_only():
    st.info("Training is switched off in read-only workshop mode.")
    st.stop()

name, shift = state.current_dataset(), state.current_shift()
st.caption(f"Trains on dataset **{data.dataset_label(name)}**, shift **{shift}** (change them in the "
           "sidebar). Several samplers train one after the other with the same settings.")
manager = tasks.job_manager()
prefill = forms.take_prefill()  # e.g. from the schedule lab or a study
if prefill:
    st.info("Settings were filled in from another page: " + ", ".join(f"{k}={v}" for k, v in prefill.items()))

top = st.columns([2, 2, 3])
top[0].selectbox("Preset", list(PRESETS) + ["custom"], key="train_preset", on_change=forms.fill_from_preset,
                 format_func=lambda p: forms.PRESET_TEXT.get(p, p), persist_state="session",
                 help="Choosing a preset refills every setting below.")
dev = cache.device_info()
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
    seeds = reps.number_input("Seeds per sampler", 1, forms.MAX_SEEDS, 1, step=1, key="train_seeds",
                              persist_state="session",
                              help="Train each sampler with seeds seed, seed+1, ...; Compare runs then shows "
                                   "the mean and spread over them.")
    values = forms.settings_widgets()
    submitted = st.form_submit_button("Run", key="train_run", type="primary", icon=":material/play_arrow:")

if submitted:
    try:
        configs = forms.build_configs(st.session_state["train_preset"], samplers, values, name, shift,
                                      st.session_state.get("train_device", "auto"), seeds=int(seeds))
    except ConfigError as exc:
        st.error(str(exc))
    else:
        names = list(dict.fromkeys(c.sampler for c in configs))
        reps = f" × {int(seeds)} seeds" if int(seeds) > 1 else ""
        job_id = manager.submit(configs, title=f"{', '.join(names)}{reps} · {configs[0].preset} · "
                                               f"{data.dataset_label(name)}/{shift}")
        tasks.remember_job(job_id)
        st.success(f"Started {len(configs)} run(s) in the background; you can leave this page.")


def show_job(job: dict, charts: bool) -> None:
    with st.container(border=True):
        st.markdown(f"{tasks.STATUS_ICONS.get(job['status'], '')} **{job['title']}** · {job['status']}"
                    + (f" · {job['device']}" if job["device"] else ""))
        if job["status"] in tasks.ACTIVE:
            tasks.job_progress(job, stop_key=f"train_stop_{job['job_id']}")
        elif job["status"] == "failed":
            st.error(job["message"])
        else:
            st.caption(job["message"])
        if job["outcomes"]:
            st.dataframe(pd.DataFrame(job["outcomes"]), hide_index=True, key=f"train_outcomes_{job['job_id']}")
        if charts and (job["losses"] or job["valid"]):
            c1, c2 = st.columns(2)
            c1.plotly_chart(figures.loss_figure(job), key=f"train_loss_{job['job_id']}", config={"displaylogo": False})
            c2.plotly_chart(figures.valid_figure(job), key=f"train_valid_{job['job_id']}", config={"displaylogo": False})
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


tasks.task_panel(tasks.my_jobs, jobs_list, "train")

"""The frame of the CNSDiff explorer: pages, navigation, and the global choices (dataset, shift,
run) in the sidebar and the URL. Start with `streamlit run app.py` (add `-- --read-only` or
CNSDIFF_READ_ONLY=1 for a workshop)."""
import streamlit as st

from ui import cache, data, pages, profile, state, tasks

st.set_page_config(page_title="CNSDiff explorer", page_icon="🧭", layout="wide")


def sidebar() -> None:
    state.apply_pending()
    warnings = state.load_query_params()
    with st.sidebar:
        st.markdown("#### Dataset, shift and run")
        options = state.dataset_options()
        if st.session_state.get(state.KEY_DATASET) not in options:
            st.session_state[state.KEY_DATASET] = data.DEFAULT_DATASET if data.DEFAULT_DATASET in options else options[0]
        st.selectbox("Dataset", options, key=state.KEY_DATASET, format_func=data.dataset_label,
                     help="Named datasets, plus worlds you generated and files you imported on Data & shift.")
        shifts, default_shift = data.dataset_shifts(st.session_state[state.KEY_DATASET])
        if st.session_state.get(state.KEY_SHIFT) not in shifts:
            st.session_state[state.KEY_SHIFT] = default_shift or None
        st.selectbox("Shift", shifts, key=state.KEY_SHIFT,
                     help="What differs between training and the OOD test.")
        runs = cache.list_runs()
        labels = {r.run_id: r.label() for r in runs}
        if st.session_state.get(state.KEY_RUN) not in labels:
            done = [r.run_id for r in runs if r.status in ("finished", "early-stopped", "stopped")]
            st.session_state[state.KEY_RUN] = (done or list(labels) or [None])[0]
        st.selectbox("Run", list(labels), key=state.KEY_RUN, format_func=lambda r: labels.get(r, str(r)),
                     placeholder="no runs yet: train one",
                     help="Stored runs, newest first. The explore pages show the chosen run.")
        for w in warnings:
            st.warning(w)
        st.caption(f"Device: **{cache.device_info()['label']}**")
        active = tasks.job_manager().active()
        if active:
            st.caption(f"⏳ {len(active)} training job(s) running or queued")
        if state.read_only():
            st.caption("🔒 read-only workshop mode")
    state.sync_query_params()


page = st.navigation(pages.navigation(state.read_only()))
sidebar()
state.read_only_banner()
with profile.page_timer(page.title):
    page.run()

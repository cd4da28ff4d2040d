"""The frame of the CNSDiff explorer: pages, navigation, and the global choices (dataset, shift,
run) in the sidebar and the URL. Start with `streamlit run app.py` (add `-- --read-only` or
CNSDIFF_READ_ONLY=1 for a workshop)."""
import streamlit as st

import app_support as sup

st.set_page_config(page_title="CNSDiff explorer", page_icon="🧭", layout="wide")

# The explore pages are written separately; each appears once its file exists. Every URL path is
# the one Streamlit's old `pages/`-folder routing derives from the file name ("3_train.py" ->
# "train"): on a freshly started server that routing handles the first request, so a deep link
# must name a page it knows; the page then hands over to this frame (sup.require_frame).
EXPLORE_PAGES = [("denoising", "Denoising", ":material/blur_on:", "denoising"),
                 ("negatives_map", "Negatives map", ":material/scatter_plot:", "negatives_map"),
                 ("fhn_hardness", "FHN & hardness", ":material/bar_chart:", "fhn_hardness"),
                 ("schedule_lab", "Noise schedule lab", ":material/tune:", "schedule_lab")]


def build_pages() -> dict[str, list]:
    work = [st.Page(sup.REPO / "pages/1_home.py", title="Home", icon=":material/home:", default=True, url_path="home"),
            st.Page(sup.REPO / "pages/2_data_and_shift.py", title="Data & shift", icon=":material/dataset:",
                    url_path="data_and_shift")]
    if not sup.read_only():
        work.append(st.Page(sup.REPO / "pages/3_train.py", title="Train", icon=":material/model_training:",
                            url_path="train"))
    work.append(st.Page(sup.REPO / "pages/4_compare_runs.py", title="Compare runs", icon=":material/leaderboard:",
                        url_path="compare_runs"))
    # Tune stays in read-only mode: it then only browses the stored studies
    work.append(st.Page(sup.REPO / "pages/9_tune.py", title="Tune", icon=":material/manage_search:", url_path="tune"))
    files = sup.page_files()
    explore = [st.Page(files[key], title=title, icon=icon, url_path=url)
               for key, title, icon, url in EXPLORE_PAGES if key in files]
    return {"Workflow": work, "Explore the diffusion": explore} if explore else {"Workflow": work}


def sidebar() -> None:
    sup.apply_pending()
    warnings = sup.load_query_params()
    with st.sidebar:
        st.markdown("#### Dataset, shift and run")
        options = sup.dataset_options()
        if st.session_state.get(sup.KEY_DATASET) not in options:
            st.session_state[sup.KEY_DATASET] = sup.DEFAULT_DATASET if sup.DEFAULT_DATASET in options else options[0]
        st.selectbox("Dataset", options, key=sup.KEY_DATASET, format_func=sup.dataset_label,
                     help="Named datasets, plus worlds you generated and files you imported on Data & shift.")
        shifts, default_shift = sup.dataset_shifts(st.session_state[sup.KEY_DATASET])
        if st.session_state.get(sup.KEY_SHIFT) not in shifts:
            st.session_state[sup.KEY_SHIFT] = default_shift or None
        st.selectbox("Shift", shifts, key=sup.KEY_SHIFT,
                     help="What differs between training and the OOD test.")
        runs = sup.list_runs()
        labels = {r.run_id: r.label() for r in runs}
        if st.session_state.get(sup.KEY_RUN) not in labels:
            done = [r.run_id for r in runs if r.status in ("finished", "early-stopped", "stopped")]
            st.session_state[sup.KEY_RUN] = (done or list(labels) or [None])[0]
        st.selectbox("Run", list(labels), key=sup.KEY_RUN, format_func=lambda r: labels.get(r, str(r)),
                     placeholder="no runs yet: train one",
                     help="Stored runs, newest first. The explore pages show the chosen run.")
        for w in warnings:
            st.warning(w)
        st.caption(f"Device: **{sup.device_info()['label']}**")
        active = sup.job_manager().active()
        if active:
            st.caption(f"⏳ {len(active)} training job(s) running or queued")
        if sup.read_only():
            st.caption("🔒 read-only workshop mode")
    sup.sync_query_params()


page = st.navigation(build_pages())
sidebar()
sup.read_only_banner()
page.run()

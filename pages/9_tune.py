"""Tune: an Optuna study of one sampler's settings (CNSDiff's noise schedule, hardness steps, mixing
and loss weights; every baseline's own knobs), started and stopped in the background, with the
study's figures live, its trials linked to their runs, and the best configuration sent to Train."""
import streamlit as st

from cnsdiff_core.config import PRESETS, SCHEDULES, ConfigError, preset_config
from cnsdiff_core.samplers import LABELS, WITH_DENOISER
from ui import data, pages, routing, state, tasks, tune

routing.require_frame()

st.title("Tune")
st.caption("A study tries settings of one sampler and keeps the one with the best **IID validation** "
           "Recall@20 (tests are scored once per run, at its selected epoch, and never steer the search). "
           "Each trial is an ordinary run; runs that trail the median of earlier trials after a warm-up "
           "are pruned. The same study can be worked on from the command line by any number of processes "
           "or machines (`python -m cnsdiff_core tune`, README: Tuning and scale-out).")

manager = tasks.job_manager()
storages = tune.study_storages()
name, shift = state.current_dataset(), state.current_shift()

# --- start a study --------------------------------------------------------------------------------------
lab_schedule = st.query_params.get("schedule") or st.session_state.get("tune_from_lab")
if lab_schedule in SCHEDULES:
    st.session_state["tune_from_lab"] = lab_schedule  # survives the URL sync of later reruns
if state.read_only():
    st.info("Read-only workshop mode: browse the stored studies below; starting studies is switched off.")
else:
    with st.form("tune_form", border=True):
        st.markdown(f"**New study** on dataset **{data.dataset_label(name)}**, shift **{shift}** "
                    "(change them in the sidebar)")
        c = st.columns([2, 1, 1, 2])
        sampler = c[0].selectbox("Sampler", list(tune.TUNE_SAMPLERS), key="tune_sampler",
                                 format_func=lambda s: LABELS.get(s, s))
        trials = c[1].number_input("Trials (study total)", 1, 500, 20, key="tune_trials",
                                   help="Finished (complete or pruned) trials the study should hold. "
                                        "Starting again with a larger number continues the same study.")
        epochs = c[2].number_input("Epochs per trial", 1, 1000, 15, key="tune_epochs")
        preset = c[3].selectbox("Start from preset", [p for p in PRESETS if p != "reference"], key="tune_preset",
                                index=[p for p in PRESETS if p != "reference"].index("demo"),
                                help="Settings that are not searched come from this preset.")
        schedules = ["any (searched)", *SCHEDULES]
        first = st.selectbox("First CNSDiff trial's schedule family", schedules, key="tune_first_schedule",
                             index=schedules.index(lab_schedule) if lab_schedule in SCHEDULES else 0,
                             help="The schedule lab sends its family here; the first trial of a new CNSDiff "
                                  "study uses it, TPE searches from there.")
        start = st.form_submit_button("Start study", key="tune_start", type="primary", icon=":material/play_arrow:")
    if start:
        from cnsdiff_core.tune import StudySpec, default_study_name

        try:
            cfg = preset_config(preset, dataset=name, shift=shift, sampler=sampler, epochs=int(epochs))
        except ConfigError as exc:
            st.error(str(exc))
        else:
            study_name = default_study_name(StudySpec(name, shift or "", sampler, preset, cfg.epochs, 0, {}))
            spec = {"dataset": name, "shift": shift, "sampler": sampler, "trials": int(trials), "preset": preset,
                    "epochs": int(epochs), "storage": storages[0], "study": study_name}
            if sampler in WITH_DENOISER and first in SCHEDULES:
                spec["enqueue"] = {"schedule": first}
            job_id = manager.submit_study(spec, title=f"study {study_name}")
            tasks.remember_job(job_id)
            # shown below as soon as the job has created it in the storage
            st.session_state["tune_storage"], st.session_state["tune_pending"] = storages[0], study_name
            st.success(f"Study {study_name} is running in the background; its figures appear below as trials finish.")

def study_jobs() -> list[dict]:
    return [j for j in tasks.my_jobs() if j.get("kind") == "study"]


def live(jobs: list[dict]) -> None:
    """The study jobs and the chosen study, redrawn every 2 s while a study job runs."""
    for job in jobs[:3]:
        with st.container(border=True):
            st.markdown(f"{tasks.STATUS_ICONS.get(job['status'], '')} **{job['title']}** · {job['status']}")
            if job["status"] in tasks.ACTIVE:
                st.progress(job["fraction"], text=tasks.job_progress_text(job))
                st.button("Stop study", key=f"tune_stop_{job['job_id']}", on_click=manager.stop,
                          args=(job["job_id"],), disabled=job["stop_requested"], icon=":material/stop:",
                          help="Stops the trial in training (its run is kept as stopped; the trial does not "
                               "count); start the study again to go on.")
            elif job["status"] == "failed":
                st.error(job["message"])
            else:
                st.caption(job["message"])
    browse(any(j["status"] in tasks.ACTIVE for j in jobs))


def browse(active: bool) -> None:
    import optuna
    from optuna.trial import TrialState

    from cnsdiff_core.tune import count_states, list_studies

    st.subheader("Studies")
    waiting = "Waiting for the study to appear in the storage…"
    if not storages:
        st.info("No stored studies here yet" + ("." if state.read_only() else ": start one above."))
        return
    if st.session_state.get("tune_storage") not in storages:
        st.session_state["tune_storage"] = storages[0]
    url = st.selectbox("Storage", storages, key="tune_storage", format_func=tune.storage_label)
    none_yet = "" if state.read_only() else ": start one above, or run `python -m cnsdiff_core tune` on the command line"
    if not tune.storage_exists(url):  # browsing never creates the runs folder's database
        if active:
            st.caption(waiting)
        else:
            st.info(f"No study has been stored here yet{none_yet}.")
        return
    try:
        storage = tune.study_storage(url)
        studies = [s for s in list_studies(storage) if s["kind"] != "grid"]
    except Exception as exc:  # an unreadable storage must not break the page
        st.error(f"Cannot read the studies in {url}: {exc}")
        return
    if not studies:
        if active:
            st.caption(waiting)
        else:
            st.info(f"This storage holds no tuning study yet{none_yet}.")
        return
    names = [s["study"] for s in studies]
    specs = {s["study"]: s["spec"] for s in studies}
    pending = st.session_state.get("tune_pending")
    if pending in names:  # the study this page just started: show it
        st.session_state["tune_study"] = pending
        del st.session_state["tune_pending"]
    elif pending and active:
        st.caption(f"Study {pending} is being created…")
    if st.session_state.get("tune_study") not in names:
        here = [n for n in names if specs[n].get("dataset") == name]
        st.session_state["tune_study"] = (here or names)[-1]
    picked = st.selectbox("Study", names, key="tune_study",
                          format_func=lambda n: f"{n} · {specs[n].get('sampler', '?')} on {specs[n].get('dataset', '?')}")
    study = optuna.load_study(study_name=picked, storage=storage)
    spec = specs[picked]
    counts = count_states(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = max(complete, key=lambda t: t.value) if complete else None
    m = st.columns(5)
    m[0].metric("Complete", counts["n_complete"])
    m[1].metric("Pruned", counts["n_pruned"])
    m[2].metric("Failed", counts["n_failed"])
    m[3].metric("Running", counts["n_running"])
    m[4].metric("Best valid. Recall@20", "–" if best is None else f"{best.value:.4f}",
                help=None if best is None else f"trial {best.number}")
    st.caption(f"Sampler **{spec.get('sampler')}**, dataset **{spec.get('dataset')}** / {spec.get('shift')}, "
               f"preset {spec.get('preset')}, {spec.get('epochs')} epochs per trial, budget "
               f"{study.user_attrs.get('budget', '?')} finished trials.")
    if not study.trials:
        st.info("No trial has started yet.")
        return
    figures(study, spec, len(complete))
    trials_table(study, spec)
    if best is not None and not state.read_only():
        if st.button("Use the best configuration", key="tune_use_best", type="primary", icon=":material/input:",
                     help="Fills the Train form with the study's preset and epochs plus the best trial's parameters."):
            tune.prefill_train_from_study(spec, dict(best.params))
            pages.switch("train")
    elif best is not None:
        st.caption("Best parameters: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                   for k, v in best.params.items()))


def figures(study, spec: dict, n_complete: int) -> None:
    import optuna.visualization as vis

    left, right = st.columns(2)
    left.plotly_chart(vis.plot_optimization_history(study, target_name="valid Recall@20"), key="tune_history")
    with right:
        if n_complete >= 2:
            try:
                st.plotly_chart(vis.plot_param_importances(study, target_name="valid Recall@20"), key="tune_importance")
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                st.caption(f"Parameter importances are not available yet ({exc}).")
        else:
            st.caption("Parameter importances appear once two trials are complete.")
    if n_complete >= 2:
        st.plotly_chart(vis.plot_parallel_coordinate(study, target_name="valid Recall@20"), key="tune_parallel")
        pair = ["schedule", "noise_scale"] if spec.get("sampler") in WITH_DENOISER else ["lr", "l2"]
        try:
            fig = vis.plot_contour(study, params=pair, target_name="valid Recall@20")
        except (ValueError, RuntimeError) as exc:
            st.caption(f"The contour of {pair[0]} and {pair[1]} is not available yet ({exc}).")
        else:
            st.plotly_chart(fig, key="tune_contour")
            st.caption(f"Validation Recall@20 over {pair[0]} × {pair[1]} (complete trials).")


def trials_table(study, spec: dict) -> None:
    from cnsdiff_core.tune import trials_frame

    frame = trials_frame(study)
    ds, sh = spec.get("dataset", name), spec.get("shift", shift)
    page = "denoising" if spec.get("sampler") in WITH_DENOISER else "negatives_map"
    frame.insert(4, "open", [f"/{page}?dataset={ds}&shift={sh}&run={r}" if isinstance(r, str) and r else None
                             for r in frame["run_id"]])
    st.dataframe(frame, hide_index=True, key="tune_trials",
                 column_config={"open": st.column_config.LinkColumn("open", display_text="explore ↗",
                                                                    help="The trial's run on the explore pages"),
                                "value": st.column_config.NumberColumn("valid R@20", format="%.4f"),
                                "seconds": st.column_config.NumberColumn("seconds", format="%.0f")})
    runs = [r for r in frame["run_id"] if isinstance(r, str) and r]
    if runs:
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        run = c1.selectbox("Open a trial's run", runs, key="tune_open_run",
                           format_func=lambda r: f"trial {int(frame.loc[frame['run_id'] == r, 'trial'].iloc[0])} · {r}")
        if c2.button("Explore it", key="tune_open", icon=":material/open_in_new:"):
            state.select(dataset=ds, shift=sh, run_id=run)
            target = "denoising" if spec.get("sampler") in WITH_DENOISER else "negatives_map"
            pages.switch(target if pages.exists(target) else "compare_runs")


tasks.task_panel(study_jobs, live, "tune", every=2.0)

"""Noise schedule lab: edit two schedules side by side, see their curves, refit only the denoiser
on a run's frozen embeddings with one of them (seconds) and see hardness and FHN per step."""
import pandas as pd
import plotly.express as px
import streamlit as st

from cnsdiff_core import explore as ex
from cnsdiff_core.config import LOSS_WEIGHTINGS, SCHEDULES, ConfigError, preset_config
from cnsdiff_core.samplers import METHOD
from ui import context, data, figures, forms, pages, routing, state, tasks

routing.require_frame()

st.title("Noise schedule lab")
st.caption("β_t per step, ᾱ_t = Π(1 − β), SNR = ᾱ/(1 − ᾱ), noise std √(1 − ᾱ). The paper's default "
           "(linear-var, scale 0.1) barely moves the positive; cosine at scale 1 reaches real noise.")

run_id = state.pick_run("lab_run", label="Run (its embeddings, denoiser settings and schedule A's defaults)")
ctx = context.run_context(run_id) if run_id else None
base = ctx.cfg if ctx else preset_config("paper")
tuned = preset_config("tuned")
DEFAULTS = {"a": base, "b": tuned if (base.schedule, base.noise_scale) != (tuned.schedule, tuned.noise_scale)
            else preset_config("paper")}


def schedule_inputs(col, tag: str) -> dict:
    d = DEFAULTS[tag]
    with col:
        st.markdown(f"**Schedule {tag.upper()}**")
        kind = st.selectbox("Family", SCHEDULES, index=SCHEDULES.index(d.schedule), key=f"lab_{tag}_kind")
        steps = st.number_input("Steps T", 1, 1000, int(d.steps), key=f"lab_{tag}_steps")
        scale = st.number_input("Noise scale", value=float(d.noise_scale), format="%.4g", key=f"lab_{tag}_scale")
        bmin = st.number_input("β min", value=float(d.beta_min), format="%.2e", step=1e-5, key=f"lab_{tag}_bmin")
        bmax = st.number_input("β max", value=float(d.beta_max), format="%.2e", step=1e-3, key=f"lab_{tag}_bmax")
        weighting = st.selectbox("Loss weighting w(t)", LOSS_WEIGHTINGS, index=LOSS_WEIGHTINGS.index(d.loss_weighting),
                                 key=f"lab_{tag}_weighting",
                                 help=forms.SETTINGS["loss_weighting"].help)
    return {"kind": kind, "steps": int(steps), "scale": float(scale), "beta_min": float(bmin), "beta_max": float(bmax),
            "weighting": weighting}


col_a, col_b = st.columns(2)
specs = {"A": schedule_inputs(col_a, "a"), "B": schedule_inputs(col_b, "b")}
curves, valid = [], {}
for label, spec, col in (("A", specs["A"], col_a), ("B", specs["B"], col_b)):
    try:
        curves.append(ex.schedule_curves(spec["kind"], spec["steps"], spec["scale"], spec["beta_min"],
                                         spec["beta_max"], label, weighting=spec["weighting"]))
        valid[label] = spec
    except ConfigError as exc:
        col.error(f"Schedule {label}: {exc}")
pages.link("tune", label=f"Search schedules: a tuning study starting from schedule A ({specs['A']['kind']})",
           query_params={"schedule": specs["A"]["kind"]},
           help="Opens Tune with this family as the first CNSDiff trial; the study then searches the family, "
                "scale, hardness steps, mixing and loss weights on IID validation.")
if curves:
    table = pd.concat(curves, ignore_index=True)
    st.plotly_chart(figures.schedule_figure(table), key="lab_curves")
    with st.expander("Numbers"):
        st.dataframe(table, hide_index=True, key="lab_table")
        st.download_button("Download curves (CSV)", data.csv_later(table), file_name="schedules.csv",
                           mime="text/csv", key="lab_dl_curves")

# --- refit only the denoiser ---------------------------------------------------------------------------
st.divider()
st.subheader("Refit the denoiser with a schedule")
if ctx is None:
    st.info("A finished run is needed for its embeddings: train one on the Train page (or the demo on Home).")
    st.stop()
if not valid:
    st.stop()
c_which, c_steps, c_go = st.columns([1, 2, 1], vertical_alignment="bottom")
which = c_which.radio("Schedule", list(valid), key="lab_refit_which", horizontal=True)
n_steps = c_steps.slider("Optimizer steps", 50, 2000, 300, step=50, key="lab_refit_steps")
spec = valid[which]
try:
    cfg = ex.lab_config(ctx.cfg, spec["kind"], spec["steps"], spec["scale"], spec["beta_min"], spec["beta_max"],
                        weighting=spec["weighting"])
except ConfigError as exc:
    st.error(str(exc))
    st.stop()
st.caption(f"Fresh denoiser (hidden {cfg.denoiser_hidden}, dropout {cfg.denoiser_dropout}, lr {cfg.denoiser_lr}, "
           f"causal {cfg.causal}) on the frozen item embeddings of {run_id}; candidates at steps "
           f"{cfg.hardness_steps()} denoised to {sorted({cfg.stop_for(s) for s in cfg.hardness_steps()})}"
           f"{' (reverse chain from T: reference behaviour)' if cfg.reverse_from_T else ''}.")
job: ex.RefitTask | None = st.session_state.get("lab_refit_job")
if c_go.button("Refit denoiser", key="lab_refit", type="primary", disabled=job is not None and job.active):
    job = ex.start_refit(cfg, int(n_steps), f"schedule {which}: {spec['kind']}, scale {spec['scale']:g}, T={spec['steps']}",
                         run_id, ctx.data, ctx.user_emb, ctx.item_emb)
    st.session_state["lab_refit_job"] = job


def refit_progress(items: list) -> None:
    j = items[0]
    if j.status == "queued":
        st.progress(0.0, text="Waiting for other refits on this machine to finish…")
    elif j.active:
        tasks.progress(j, f"Refitting ({j.title}): {j.note or 'starting'} · {j.seconds:.0f} s", stop_key="lab_refit_stop")


if job is not None:
    tasks.task_panel(lambda: [job], refit_progress, "lab_refit")


def show_refit(job: ex.RefitTask) -> None:
    """The outcome of an ended refit: per-step hardness and FHN beside the run's own denoiser."""
    if job.status == "failed":
        st.error(f"The refit failed: {job.message}")
        return
    st.success(f"{job.title}: {len(job.loss_curve)} steps in {job.seconds:.1f} s "
               f"({'stopped early; ' if job.status == 'stopped' else ''}fixed evaluation-batch loss "
               f"{job.eval_before:.4f} → {job.eval_after:.4f}).")
    report = job.report.assign(denoiser="refit")
    own = context.own_step_report(ctx) if job.run_id == run_id else None
    if own is not None:
        report = pd.concat([report, own.assign(denoiser="run's own")], ignore_index=True)
    chart = figures.refit_figure(report)
    st.plotly_chart(chart, key="lab_refit_chart")
    st.dataframe(report, hide_index=True, key="lab_refit_table")
    st.caption(f"Uniform sampling would give an FHN rate of {report['uniform_rate'].iloc[0]:.4f} on this probe.")
    loss = pd.DataFrame({"step": range(1, len(job.loss_curve) + 1), "loss": job.loss_curve})
    st.plotly_chart(px.line(loss, x="step", y="loss", height=260), key="lab_refit_loss")
    st.download_button("Download per-step report (CSV)", data.csv_later(report), file_name="refit_report.csv",
                       mime="text/csv", key="lab_dl_report")


if job is not None and not job.active:
    show_refit(job)

# --- a full run with this schedule -------------------------------------------------------------------------
st.divider()
train_cfg = cfg.with_updates(sampler=METHOD, preset="custom")
if state.read_only():
    st.caption("Read-only workshop mode: training is switched off.")
elif st.button(f"Train CNSDiff with schedule {which}", key="lab_train",
               help="Starts a full CNSDiff run in the background with the run's settings and this schedule."):
    job_id = tasks.job_manager().submit([train_cfg], title=f"schedule lab: {spec['kind']} ×{spec['scale']:g}", tag="lab")
    tasks.remember_job(job_id)
    st.success("Training started in the background; follow it on the Train page. The run appears in the "
               "sidebar when it is done.")

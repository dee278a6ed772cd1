"""Jobs: launch distillation runs in the background and watch them (they outlive the app); few-shot
jobs (launched on the Label efficiency page) are listed here too."""

import pandas as pd
import streamlit as st

from app_pages import common
from relviz.errors import RelvizError
from relviz.jobs import describe_rule, loss_curve, validation_curve
from relviz.losses import LOSSES
from relviz.models.minkunet import ARCHITECTURES
from relviz.train.config import TrainConfig
from relviz.viz.jobs_view import job_figures

st.title("Distillation jobs")
s = common.settings()
store = common.job_store(s)

d = TrainConfig.from_settings(s)  # the settings' dataset, teacher (with its weights) and device
datasets = sorted({p.name for p in s.datasets_dir.iterdir() if p.is_dir()} | {d.dataset})  # or a dataroot elsewhere
with st.form("launch"):
    st.subheader("New job")
    c = [*st.columns(4), *st.columns(4), *st.columns(2)]
    options = dict(
        loss=c[0].selectbox("loss", list(LOSSES), index=list(LOSSES).index(d.loss), key="job_loss"),
        arch=c[1].selectbox("model", list(ARCHITECTURES), index=list(ARCHITECTURES).index(d.arch), key="job_arch"),
        width=c[2].select_slider("width", [0.125, 0.25, 0.5, 1.0], value=d.width, key="job_width"),
        epochs=common.number(c[3], "epochs", 1, 500, d.epochs, "job_epochs", step=1),
        lr=common.number(c[4], "learning rate", 1e-5, 10.0, float(d.lr), "job_lr", format="%.4f"),
        batch=common.number(c[5], "batch", 1, 64, d.batch, "job_batch", step=1),
        max_steps=common.number(c[6], "max steps (0: epochs decide)", 0, 1_000_000, d.max_steps, "job_max_steps", step=1),
        pairs=common.number(c[7], "pairs per batch", 64, 65_536, d.pairs, "job_pairs", step=1),
        dataset=c[8].selectbox("dataset", datasets, index=datasets.index(d.dataset), key="job_dataset"))
    c[9].text_input("teacher", str(d.teacher_spec), disabled=True, key="job_teacher",
                    help="from the settings (RELVIZ_TEACHER, RELVIZ_TEACHER_PRETRAINED or relviz.toml)")
    if st.form_submit_button("Launch", type="primary"):
        if invalid := [k for k, v in options.items() if v is None]:
            st.error(f"Not launched: {', '.join(invalid)} empty or out of range (see the field)")
        else:
            try:
                st.success(f"job {store.submit(TrainConfig.from_settings(s, **options)).id} started")
            except RelvizError as e:
                st.error(str(e))
st.caption(describe_rule())
# the page refreshes itself only while a job is queued or running (and once more when that changes)
live = common.live_jobs(store)


@st.fragment(run_every="2s" if live else None)
def job_list() -> list:
    """The jobs table (status, phase and estimate from each run folder now); returns the jobs listed."""
    try:
        jobs = store.list()
        rows = [store.row(j) for j in jobs]
    except RelvizError as e:
        st.error(str(e))
        return []
    if common.live_ids(jobs) != live:
        st.rerun(scope="app")
    if not jobs:
        st.info("No jobs yet.")
    else:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1),
            "phase": st.column_config.TextColumn("phase", width="large")})
    return jobs


def job_detail(job_id: str):
    try:
        job = store.get(job_id)
        progress, (events, _) = store.progress_of(job), store.events(job)
    except RelvizError as e:
        st.error(str(e))
        return
    if bool(common.live_ids([job])) != (job_id in live):
        st.rerun(scope="app")
    st.metric("status", job.status)
    st.progress(progress.fraction, text=progress.text())  # the phase's count and estimate (none once ended)
    if progress.priority:
        st.caption(f"Runs at {progress.priority}.")
    for kind, figure in job_figures(job.name, validation_curve(events), loss_curve(events), common.fewshot_result(
            job.run_dir) if job.kind == "label_efficiency" else None).items():
        st.plotly_chart(figure, width="stretch", key=f"{kind}-{job_id}")
    action = {"running": "Cancel", "cancelled": "Resume", "lost": "Resume", "failed": "Resume"}.get(job.status)
    if action and st.button(action, key=f"{action.lower()}-{job_id}"):
        try:  # a cancel waits for the trainer's checkpoint (SIGKILL after 30 s)
            (store.cancel if action == "Cancel" else store.resume)(job_id)
            st.rerun(scope="app")
        except RelvizError as e:
            st.error(str(e))
    with st.expander("log (last lines)", expanded=job.status != "running"):
        st.code(store.log_tail(job, 60) or "(nothing logged yet: the run writes a line per logged step)")


names = {j.id: j.name for j in job_list()}  # its first run returns the jobs, a job launched above among them
if names:
    picked = st.selectbox("Job", list(names), format_func=lambda i: f"{i} ({names[i]})", key="job_pick")
    st.fragment(job_detail, run_every="2s" if picked in live else None)(picked)

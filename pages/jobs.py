"""Jobs: launch distillation runs in the background and watch them (they outlive the app)."""

import pandas as pd
import plotly.express as px
import streamlit as st

from pages import common
from relviz.errors import RelvizError
from relviz.jobs import JobStore
from relviz.losses import LOSSES
from relviz.models.minkunet import ARCHITECTURES
from relviz.train.config import TrainConfig

st.title("Distillation jobs")
s = common.settings()

try:
    store = JobStore(s)
except RelvizError as e:  # a damaged job database: say which and what to do
    st.error(str(e))
    st.stop()

defaults = TrainConfig.from_settings(s)  # the settings' dataset, teacher (with its weights) and device
with st.form("launch"):
    st.subheader("New job")
    c1, c2, c3, c4 = st.columns(4)
    loss = c1.selectbox("loss", list(LOSSES), index=list(LOSSES).index(defaults.loss), key="job_loss")
    arch = c2.selectbox("model", list(ARCHITECTURES), index=list(ARCHITECTURES).index(defaults.arch), key="job_arch")
    width = c3.select_slider("width", [0.125, 0.25, 0.5, 1.0], value=defaults.width, key="job_width")
    epochs = c4.number_input("epochs", 1, 500, defaults.epochs, key="job_epochs")
    c5, c6, c7, c8 = st.columns(4)
    lr = c5.number_input("learning rate", 1e-5, 10.0, defaults.lr, format="%.4f", key="job_lr")
    batch = c6.number_input("batch", 1, 64, defaults.batch, key="job_batch")
    max_steps = c7.number_input("max steps (0: epochs decide)", 0, 1_000_000, defaults.max_steps, key="job_max_steps")
    pairs = c8.number_input("pairs per batch", 64, 65_536, defaults.pairs, key="job_pairs")
    c9, c10 = st.columns(2)
    datasets = sorted(p.name for p in s.datasets_dir.iterdir() if p.is_dir()) if s.datasets_dir.is_dir() else []
    datasets = sorted(set(datasets) | {defaults.dataset})  # the configured one may be a dataroot elsewhere
    dataset = c9.selectbox("dataset", datasets, index=datasets.index(defaults.dataset), key="job_dataset")
    c10.text_input("teacher", str(defaults.teacher_spec), disabled=True, help="from the settings (RELVIZ_TEACHER, RELVIZ_TEACHER_PRETRAINED or "
                   "relviz.toml)", key="job_teacher")
    submitted = st.form_submit_button("Launch", type="primary")
if submitted:
    try:
        cfg = TrainConfig.from_settings(s, loss=loss, arch=arch, width=width, epochs=int(epochs), lr=float(lr),
                                        batch=int(batch), max_steps=int(max_steps), pairs=int(pairs), dataset=dataset)
        job = store.submit(cfg)
        st.success(f"job {job.id} started")
    except RelvizError as e:
        st.error(str(e))


@st.fragment(run_every="2s")
def job_list():
    try:
        jobs = store.list()
    except RelvizError as e:
        st.error(str(e))
        return
    if not jobs:
        st.info("No jobs yet.")
        return
    st.dataframe(pd.DataFrame([{"id": j.id, "name": j.name, "status": j.status, "progress": j.progress,
                                "step": f"{j.last_step}/{j.total_steps or '?'}", "error": j.error or ""}
                               for j in jobs]),
                 column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1)},
                 hide_index=True, width="stretch")


job_list()

try:
    jobs = store.list()  # again: a job launched above is in it
except RelvizError:
    jobs = []  # job_list() has said why
if jobs:
    pick = st.selectbox("Job", [j.id for j in jobs], format_func=lambda i: f"{i} ({next(j for j in jobs if j.id == i).status})",
                        key="job_pick")

    @st.fragment(run_every="2s")
    def job_detail(job_id: str):
        try:
            job = store.get(job_id)
            events, _ = store.events(job)
        except RelvizError as e:
            st.error(str(e))
            return
        steps = [e for e in events if e["event"] == "step"]
        c1, c2, c3 = st.columns(3)
        c1.metric("status", job.status)
        c2.metric("step", f"{job.last_step}/{job.total_steps or '?'}")
        if steps and job.status == "running":  # an ended job has no ETA
            c3.metric("ETA", f"{steps[-1]['eta_s']:.0f} s", help=f"{steps[-1]['it_s']:.2f} it/s")
        if steps:
            st.plotly_chart(px.line(pd.DataFrame(steps), x="step", y="loss", title="loss"), width="stretch",
                            key=f"loss-{job_id}")
        st.progress(job.progress)
        b1, b2 = st.columns(2)
        try:
            if job.status == "running" and b1.button("Cancel", key=f"cancel-{job_id}"):
                store.cancel(job_id, grace_s=30)
                st.rerun(scope="fragment")
            if job.status in ("cancelled", "lost", "failed") and b2.button("Resume", key=f"resume-{job_id}"):
                store.resume(job_id)
                st.rerun(scope="fragment")
        except RelvizError as e:
            st.error(str(e))
        with st.expander("log (last lines)"):
            st.code(store.log_tail(job, 60) or "(empty)")

    job_detail(pick)

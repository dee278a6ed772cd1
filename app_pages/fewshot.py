"""Label efficiency: few-shot mIoU against the fraction of labelled frames per student checkpoint and
dataset (in and out of distribution side by side), fine-tuning beside linear probing, each curve
computed by a background job."""

import pandas as pd
import streamlit as st

from app_pages import common
from relviz.errors import RelvizError
from relviz.eval.finetune import FINETUNE_SEEDS, FRACTIONS, SLIDR_FINETUNE
from relviz.jobs.fewshot import FewshotJob
from relviz.viz.fewshot import (checkpoint_label_efficiency, curve_table, finetune_minus_probe_frame, finetune_seed_row,
                                label_efficiency_by_dataset, latest_job_results, workspace_datasets)

st.title("Label efficiency")
s = common.settings()
store = common.job_store(s)
# fine-tuning needs the weights: an imported feature set's linear probe is on the Compare page
ckpts = {c.label: c for c in common.student_checkpoints(s) if c.error is None and c.kind != "features"}
label_of = {str(c.path): label for label, c in ckpts.items()}
datasets = workspace_datasets(s.datasets_dir)  # both layouts: in distribution and out of it
current = next((i for i, root in enumerate(datasets.values()) if root == common.dataset_root(s)), 0)

with st.form("fewshot_launch"):
    st.subheader("New few-shot job")
    a, d, b = st.columns([2, 2, 3])
    choice = a.selectbox("student", list(ckpts), key="fs_ckpt")
    dataset = d.selectbox("dataset", list(datasets), index=current, key="fs_dataset")
    fractions = b.multiselect("label fractions", FRACTIONS, default=[0.01, 0.1, 1.0], key="fs_fractions",
                              format_func=lambda f: f"{f:.0%}")
    numbers = [common.number(col, *box, step=1) for col, box in zip(st.columns(5), [
        ("fine-tuning steps (0: SLidR's 100 epochs)", 0, 100_000, 0, "fs_steps"),
        ("frames per step", 1, 64, SLIDR_FINETUNE["batch"], "fs_batch"),
        ("fine-tuning seeds", 1, 20, FINETUNE_SEEDS, "fs_finetune_seeds"),
        ("linear probe epochs", 1, 10_000, 300, "fs_probe_epochs"), ("seed", 0, 1_000_000, 0, "fs_seed")])]
    steps, batch, n_seeds, probe_epochs, seed = numbers
    st.caption("Frames: SLidR's rule (nuScenes: every k-th scene; SemanticKITTI: every k-th scan). Fine-tuning "
               "runs once per seed "
               "(seed, seed + 1, ...; one seed cannot tell the student from the fine-tuning's noise). SLidR's "
               "schedule on a CPU costs about 0.7-0.9 s per frame and step with the demo student: 100 epochs of "
               "8 frames take 10-12 min per seed.")
    launch = st.form_submit_button("Launch", type="primary", disabled=not ckpts)
    if launch and None in numbers:
        st.error("Not launched: a number is empty or out of range (see the field)")
    elif launch:
        try:
            job = FewshotJob(str(ckpts[choice].path), str(datasets[dataset]), fractions=tuple(fractions),
                             steps=steps or None, batch=batch, probe_epochs=probe_epochs, seed=seed,
                             finetune_seeds=n_seeds, backend=s.sparse_backend)
            st.success(f"job {store.submit_fewshot(job, f'few-shot {choice}').id} started")
        except RelvizError as e:
            st.error(str(e))


live = common.live_jobs(store, "label_efficiency")  # the curves refresh only while one runs (once more after)


@st.fragment(run_every="3s" if live else None)
def curves():
    try:
        jobs = [j for j in store.list() if j.kind == "label_efficiency"]
    except RelvizError as e:
        st.error(str(e))
        return
    if common.live_ids(jobs) != live:
        st.rerun(scope="app")
    for j in jobs:
        if j.status in ("running", "queued"):
            p = store.progress_of(j)
            st.progress(p.fraction, text=f"{j.name} ({j.id}): {p.text()}")
    results, sources = latest_job_results(jobs, label_of, common.fewshot_result)
    if not results:
        st.info("No finished few-shot job yet: launch one above (the Jobs page shows it too).")
        return
    frame = checkpoint_label_efficiency(results)
    st.plotly_chart(label_efficiency_by_dataset(frame, "mIoU on every val frame"), width="stretch", key="fs_curves")
    st.dataframe(curve_table(frame), hide_index=True, width="stretch", key="fs_table")
    st.caption("mIoU over the dataset's classes with ground truth in its val frames; fine-tuned: the mean over "
               "its seeds. "
               "Intervals: percentile bootstrap over the val scenes (for fine-tuning, of the mean over the seeds), "
               "given from 10 scenes on. " + "; ".join(sources) + ".")
    st.subheader("Fine-tuned minus linear probe")
    st.dataframe(finetune_minus_probe_frame(results), hide_index=True, width="stretch", key="fs_diff")
    st.caption("Paired on the same val keyframes, resampled by scene; significant: the 95% interval excludes 0; "
               "under 10 scenes each scene's difference instead (docs/results.md has the demo students' figures).")
    st.subheader("Fine-tuning seeds")
    st.dataframe(pd.DataFrame([finetune_seed_row(label, run["fraction"], run["finetune"]) for label, r in results.items()
                               for run in r["runs"]]), hide_index=True, width="stretch", key="fs_seeds")
    st.caption("Interval: two-stage bootstrap over fine-tuning seeds and val scenes (both sources of variance).")


curves()

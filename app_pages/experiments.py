"""Experiments: a grid of training runs x seeds as one thing: its progress, its table with intervals
over seeds, the differences between cells, the label-efficiency curve and the runs' curves."""

import pandas as pd
import streamlit as st

from app_pages import common
from relviz.demo import EVIDENCE_CARRIED, EXPERIMENT_REPORT_DIR
from relviz.errors import RelvizError
from relviz.experiment import Experiment, list_experiments
from relviz.files import read_json
from relviz.jobs import JobStore
from relviz.viz.evidence import correlation_frame
from relviz.experiment.aggregate import evaluation_set_words
from relviz.viz.experiment import (claims_frame, curves_figure, differences_frame, label_efficiency,
                                   label_efficiency_figure, report_frame)

# reports committed in the repository, shown without a workspace experiment
COMMITTED = {"demo (committed with the demo checkpoints)": EXPERIMENT_REPORT_DIR,
             "evidence (its runs carried so far, committed)": EVIDENCE_CARRIED / "report"}

st.title("Experiments")
s = common.settings()
names = list_experiments(s)
committed = {label: r for label, folder in COMMITTED.items() if (r := read_json(folder / "report.json"))}
choices = names + list(committed)
if not choices:
    st.info("No experiment yet. Declare one in a TOML file (see relviz/experiment/demo.toml) and start it with "
            "`relviz experiment run FILE --detach`.")
    st.stop()
choice = st.selectbox("experiment", choices, key="exp_name")

if choice in committed:
    report = committed[choice]
    st.caption(f"The report committed in {'/'.join(COMMITTED[choice].parts[-3:])}/.")
else:
    try:
        exp = Experiment.open(s, choice)
        status = exp.status(JobStore(s))
    except RelvizError as e:
        st.error(str(e))
        st.stop()
    st.progress(status["evaluated"] / status["total"],
                text=f"{status['evaluated']}/{status['total']} runs evaluated; "
                     + ", ".join(f"{n} {k}" for k, n in sorted(status["counts"].items()))
                     + (f"; supervised by process {status['supervisor_pid']}" if status["supervisor_pid"]
                        else "; no supervisor running"))
    with st.expander("runs", expanded=not status["complete"]):
        st.dataframe(pd.DataFrame([{"run": r["key"], "status": r["status"], "progress": r["progress"],
                                    "step": f"{r['step']}/{r['total_steps'] or '?'}", "evaluated": r["evaluated"],
                                    "error": r["error"] or r["evaluation_error"] or ""} for r in status["runs"]]),
                     hide_index=True, width="stretch", key="exp_runs",
                     column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1)})
    if not status["complete"] and status["supervisor_pid"] is None and st.button("Continue in the background"):
        try:
            st.success(f"supervised by process {exp.start_in_background()}")
        except RelvizError as e:
            st.error(str(e))
    report = exp.report()  # aggregates what is evaluated now (cheap: reads the runs' stored evaluations)

st.subheader("Cells: mean ± 95% interval over seeds and scenes (†), else over seeds")
st.dataframe(report_frame(report), hide_index=True, width="stretch", key="exp_table")
p = report.get("protocol") or {}
st.caption(f"† two-stage bootstrap over seeds and the evaluation scenes, where the runs stored scene resamples; "
           f"else {report['interval']}. U, T, G and zero-shot on {evaluation_set_words(p, report.get('teacher'))} of "
           f"{p.get('split')} "
           f"(up to {p.get('per_class')} points per class, sample seed {p.get('seed')}); few-shot learned on "
           f"{p.get('train_split')} frames, scored on every {p.get('split')} frame. Definitions: docs/protocol.md.")
if report.get("claims"):
    st.subheader("The paper's claims, here")
    st.dataframe(claims_frame(report["claims"]), hide_index=True, width="stretch", key="exp_claims")
    st.caption("One family: the verdict follows the Holm-adjusted p; \"too few seeds\" under 5 seeds and \"too few "
               "scenes\" under 10 evaluation scenes, whatever the p. p: two-stage bootstrap over seeds and scenes "
               "(the teacher's own evaluation noise included) where the runs stored scene resamples, else the t test "
               "over seeds. The correlations are over configurations (cells), not runs.")
if report.get("differences"):
    st.subheader("Differences between cells, paired by seed")
    st.dataframe(differences_frame(report), hide_index=True, width="stretch", key="exp_diff")
    st.caption("a - b over the seeds both cells have; * = the 95% t interval excludes 0.")
if not label_efficiency(report).empty:
    st.subheader("Label efficiency")
    st.plotly_chart(label_efficiency_figure(report), width="stretch", key="exp_label_eff")
if report.get("curves"):
    st.subheader("Structure during training")
    st.plotly_chart(curves_figure(report), width="stretch", key="exp_curves")
across = report.get("gap_vs_performance") or {}
if "correlations" in across:
    st.subheader("Gap vs performance, over configurations")
    st.dataframe(correlation_frame(across), hide_index=True, width="stretch", key="exp_corr")

"""Evidence: the paper's argument over every checkpoint (structural gap against zero-shot and
few-shot mIoU, with correlations and their intervals) and one student's class relations."""

import streamlit as st

from app_pages import common, kept
from app_pages.background import structures_or_last
from relviz.eval.evidence import MEASURES, MIN_CHECKPOINTS, gap_vs_performance
from relviz.eval.relations import class_relations
from relviz.eval.report import comparison_rows
from relviz.workspace import configuration_of
from relviz.viz.evidence import correlation_frame, gap_scatter, relation_figure

st.title("Evidence: structure gap vs performance")
s = common.settings()
ckpts = {c.label: c for c in common.student_checkpoints(s) if c.error is None}
partial = [x for x, c in ckpts.items() if c.partial]
if partial and not st.toggle(f"Include {len(partial)} partial checkpoint(s)", False, key="ev_partial",
                             help="Runs that did not finish (cancelled, failed or still training) are left out "
                                  "of the evidence unless chosen: " + ", ".join(partial)):
    ckpts = {x: c for x, c in ckpts.items() if not c.partial}
if len(ckpts) < MIN_CHECKPOINTS:
    st.info(f"The correlation needs {MIN_CHECKPOINTS} or more student checkpoints; there are {len(ckpts)}.")
    st.stop()
c1, c2, c3 = st.columns(3)
n_samples = common.eval_set_controls(c1, c2, "ev")
per_class = c3.select_slider("points per class", [100, 250, 500, 1000, 2000, 5000], value=500, key="ev_pc")
root = str(common.dataset_root(s))
try:  # computed in the background when not on disk, the last evidence shown meanwhile
    results, (sources, n_samples, per_class, _) = structures_or_last({**ckpts, "teacher": None}, root, n_samples,
                                                                      per_class, 0, "evidence")
except Exception as e:
    common.error_panel("Cannot compute the metrics", e)
    st.stop()
ckpts = {x: info for x, info in sources.items() if x != "teacher"}  # what is shown (also while others compute)
rows = comparison_rows([{"checkpoint": x, "loss": ckpts[x].loss, "source": ckpts[x].provenance, "structure": results[x],
                         "fewshot": common.fewshot(ckpts[x], root), "configuration": configuration_of(ckpts[x])}
                        for x in ckpts], results["teacher"])
# a student outside the teacher's space (an imported set or model that declares none) has no G: left out
usable, outside = [r for r in rows[:-1] if r["gap"] is not None], [r["checkpoint"] for r in rows[:-1] if r["gap"] is None]
if outside:
    st.caption(f"Left out of the correlation (no G: not in the teacher's space): {', '.join(outside)}.")
configurations = {r["configuration"] for r in usable}
if len(configurations) < MIN_CHECKPOINTS:
    st.info(f"The correlation needs {MIN_CHECKPOINTS} or more configurations with a G; there are "
            f"{len(configurations)}.")
    st.stop()
evidence = gap_vs_performance(usable, rows[-1])
st.dataframe(correlation_frame(evidence), hide_index=True, width="stretch", key="ev_table")
st.caption(f"{len(usable)} checkpoints of {len(configurations)} configurations (students "
           f"whose training differs only in the seed are one configuration: n counts configurations); U, T, G "
           f"and zero-shot on up to {per_class:,} points per class (seed 0) of {n_samples.describe()}; few-shot "
           f"where it was computed (Compare page). An interval or p is printed only where it can exist at that n. "
           f"The paper claims a negative correlation of the gap with performance. Definitions: docs/protocol.md.")
m1, m2 = st.columns(2)
measure = m1.selectbox("gap measure", MEASURES, key="ev_measure")
performance = m2.selectbox("performance", ["zeroshot_miou", "fewshot_miou"], key="ev_perf")
if any(m[performance] is not None for m in evidence["measures"]):
    st.plotly_chart(gap_scatter(evidence, measure, performance), width="stretch", key="ev_scatter")

st.subheader("Class relations")
student = st.selectbox("student", list(ckpts), key="ev_student")
of = (student, common.source_key(ckpts[student]), root, n_samples, per_class)  # kept for a second visit
relations = kept.cached("relations", of, lambda: class_relations(common.val_features(ckpts[student], root,
                                                                                         n_samples), per_class, 0))
st.metric("Linear CKA with the teacher", f"{relations['cka']:.3f}",
          help="Linear CKA (Kornblith et al. 2019) of student and teacher features at the same points: 1 is the "
               "same structure up to rotation and scale.")
st.plotly_chart(kept.cached("ev_rel", of, lambda: relation_figure(relations, student)), width="stretch", key="ev_rel")
st.caption(f"Cosine similarity of class centroids on the protocol sample ({relations['sample']['size']:,} points); "
           f"mean |difference| off the diagonal: {relations['mean_abs_difference']:.3f}.")

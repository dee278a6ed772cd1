"""Compare losses: checkpoints side by side with the teacher, with intervals, one shared PCA basis
and their structure during training."""

import streamlit as st

from app_pages import common, kept
from app_pages.background import structures_or_last
from relviz.eval.report import comparison_rows, sample_notes
from relviz.jobs import read_validation_curve
from relviz.viz import explain
from relviz.viz.compare import comparison_frame, difference_frame, per_class_figure
from relviz.viz.pca import shared_pca_figure
from relviz.viz.training import validation_figure

st.title("Compare losses")
s = common.settings()
ckpts = {c.label: c for c in common.student_checkpoints(s) if c.error is None}
if len(ckpts) < 2:
    st.info("Two or more student checkpoints are needed (the demo students, or runs from the Jobs page).")
    st.stop()
labels = list(ckpts)
# a link may name a checkpoint twice: each once, in its first place
wanted = list(dict.fromkeys(x for x in (common.query_param("ckpts") or "").split(",") if x in labels)) or \
    common.active_checkpoints(labels) or labels[:3]
chosen = st.multiselect("Checkpoints (2 to 4)", labels, default=wanted[:4], max_selections=4, key="cmp_ckpts")
c1, c2, c3 = st.columns(3)
n_samples = common.eval_set_controls(c1, c2, "cmp")
per_class = c3.select_slider("points per class", [100, 250, 500, 1000, 2000, 5000], value=500, key="cmp_pc")
common.set_query_params(ckpts=",".join(chosen))
if len(chosen) < 2:
    st.warning("Choose at least two checkpoints.")
    st.stop()

root = str(common.dataset_root(s))
try:  # computed in the background when not on disk, the last comparison shown meanwhile
    results, (sources, n_samples, per_class, _) = structures_or_last(
        {**{x: ckpts[x] for x in chosen}, "teacher": None}, root, n_samples, per_class, 0, "compare")
    chosen = [x for x in sources if x != "teacher"]
except Exception as e:
    common.error_panel("Cannot compare these checkpoints", e)
    st.stop()
ckpts = {**ckpts, **{x: sources[x] for x in chosen}}  # what is shown, also while another choice is computed

few = {label: common.fewshot(ckpts[label], root) for label in chosen}
rows = comparison_rows([{"checkpoint": x, "loss": ckpts[x].loss, "source": ckpts[x].provenance,
                         "structure": results[x], "fewshot": few[x]} for x in chosen], results["teacher"])
st.dataframe(comparison_frame(rows), hide_index=True, width="stretch",
             column_config={k: st.column_config.TextColumn(label, help=explain.help_text(k))
                            for k, (label, _) in explain.METRICS.items()})
st.caption(f"Value [95% interval]. {explain.interval_caption(results['teacher'])} Each column's sample:\n"
           + "\n".join(sample_notes(rows)))
st.subheader("Which is better, and how sure")
st.dataframe(difference_frame({x: results[x] for x in chosen}), hide_index=True, width="stretch", key="cmp_diff")
st.caption("a - b on the same points, paired over the same scene resamples; p: bootstrap; Holm over every row of "
           "this table; the verdict follows the adjusted p. With fewer than 10 scenes: each scene's difference, "
           "no interval and no verdict.")
missing = [x for x, f in few.items() if f is None]
if missing and st.button(f"Compute few-shot mIoU ({len(missing)} checkpoint{'s' if len(missing) > 1 else ''})",
                         key="cmp_fewshot", help="Trains one linear probe per checkpoint (about a minute each on "
                                                 "2 CPU cores)."):
    bar = st.progress(0.0, text="training linear probes")
    try:
        for i, label in enumerate(missing):
            bar.progress(i / len(missing), text=f"linear probe of {label} ({i + 1}/{len(missing)})")
            common.fewshot(ckpts[label], root, compute=True)
    except Exception as e:
        common.error_panel("Cannot compute the few-shot mIoU", e)
        st.stop()
    st.rerun()

shown = (kept.sources_key(sources), root, n_samples, per_class)  # what the figures below are of: kept
st.plotly_chart(kept.cached("cmp_pca", shown, lambda: shared_pca_figure({x: kept.structure_points(
    info, root, n_samples, per_class, 0) for x, info in sources.items()}, "teacher")), width="stretch",
                key="cmp_pca")
st.caption("Every panel in the teacher's first two principal axes, with the same axis ranges.")
for key, args in (("cmp_tpc", ("tolerance_per_class", "Tolerance per class", "tolerance")),
                  ("cmp_iou", ("zeroshot_iou", "Zero-shot IoU per class", "IoU"))):
    st.plotly_chart(kept.cached(key, shown, lambda: per_class_figure(results, *args)), width="stretch", key=key)
curves = {x: c for x in chosen if not (c := read_validation_curve(ckpts[x].path.parent)).empty}
if curves:
    st.plotly_chart(validation_figure(curves, teacher=results["teacher"]), width="stretch", key="cmp_curves")
    st.caption("Structure during training, from each run's validation events (its own validation sample).")

"""Feature structure: U, T (per class) and G with their intervals, and the PCA of exactly the sample
they were computed on."""

import streamlit as st

from pages import common
from relviz.viz import explain
from relviz.viz.compare import per_class_figure
from relviz.viz.pca import pca_figure

st.title("Feature structure")
s = common.settings()
ckpts = {c.label: c for c in common.student_checkpoints(s) if c.error is None}
options = ["teacher", *ckpts]
active = common.active_checkpoints(list(ckpts))
default = common.query_param("ckpt", (active or list(ckpts) or ["teacher"])[0])
c1, c2, c3, c4 = st.columns(4)
choice = c1.selectbox("Features of", options, index=options.index(default) if default in options else 0, key="ckpt")
n_samples = c2.slider("val keyframes", 1, 16, common.int_param("n", 4, 1, 16), key="n")
per_class = c3.select_slider("points per class", [100, 250, 500, 1000, 2000, 5000], value=500, key="per_class")
seed = int(c4.number_input("seed", 0, 10_000, common.int_param("seed", 0, 0, 10_000), key="seed"))
common.set_query_params(ckpt=choice, n=n_samples, seed=seed)

root = str(common.dataset_root(s))
try:
    with st.status("computing features, sample and metrics", expanded=False) as status:
        metrics = common.structure(ckpts.get(choice), root, n_samples, per_class, seed)
        z, y = common.structure_points(ckpts.get(choice), root, n_samples, per_class, seed)
        status.update(label="computed", state="complete")
except Exception as e:  # a broken checkpoint or dataset: an error panel, not a crash
    common.error_panel("Cannot compute the feature structure", e)
    st.stop()

intervals = metrics.get("intervals") or {}
for col, key in zip(st.columns(4), ("uniformity", "tolerance", "gap", "gap_all_pairs")):
    ci = intervals.get(key)
    col.metric(explain.METRICS[key][0], f"{metrics[key]:.3f}", help=explain.help_text(key),
               delta=f"95% [{ci['low']:.3f}, {ci['high']:.3f}]" if ci else None, delta_color="off")
st.caption(explain.sample_caption(metrics["sample_size"], per_class, metrics["sample"]["keyframes"], seed)
           + " Intervals: bootstrap over keyframes.")
view = st.radio("PCA view", ["2D", "3D"], horizontal=True, key="view")
st.plotly_chart(pca_figure(z, y, dims=3 if view == "3D" else 2), width="stretch", key="pca")
st.plotly_chart(per_class_figure({choice: metrics}, "tolerance_per_class", "Tolerance per class", "tolerance"),
                width="stretch", key="tol")
undefined = [common.CLASS_NAMES[c - 1] for c, n in metrics["sample_counts"].items() if n < 2]
if undefined:
    st.caption("No tolerance (a single point): " + ", ".join(undefined))

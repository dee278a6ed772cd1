"""Feature structure: per-class PCA of a class-stratified sample, with U, T (per class) and G."""

import time

import pandas as pd
import plotly.express as px
import streamlit as st
from pages import common
from relviz.metrics import fit_pca, sample_per_class
from relviz.viz import explain

st.title("Feature structure")
s = common.settings()
ckpts = [c for c in common.student_checkpoints(s) if c.error is None]
options = ["teacher"] + [c.label for c in ckpts]
default = common.query_param("ckpt", options[1] if len(options) > 1 else "teacher")
c1, c2, c3, c4 = st.columns(4)
choice = c1.selectbox("Features of", options, index=options.index(default) if default in options else 0, key="ckpt")
n_samples = c2.slider("val keyframes", 1, 16, common.int_param("n", 4, 1, 16), key="n")
per_class = c3.select_slider("points per class", [100, 250, 500, 1000, 2000, 5000], value=500, key="per_class")
seed = c4.number_input("seed", 0, 10_000, common.int_param("seed", 0, 0, 10_000), key="seed")
common.set_query_params(ckpt=choice, n=n_samples, seed=seed)


try:
    root = common.dataset_root(s)
    info = next((c for c in ckpts if c.label == choice), None)
    with st.status("computing features, sample, PCA and metrics", expanded=False) as status:
        t0 = time.perf_counter()
        data = common.val_features(info, str(root), n_samples)
        metrics = common.structure(info, str(root), n_samples, per_class, int(seed))
        idx = sample_per_class(data["labels"], per_class=per_class, seed=int(seed))  # the sample of the metrics
        z, y = data["features"][idx], data["labels"][idx]
        pca = fit_pca(z, k=3)
        proj = pca.transform(z).numpy()
        status.update(label=f"computed in {time.perf_counter() - t0:.1f} s", state="complete")
except Exception as e:  # a broken checkpoint or dataset: an error panel, not a crash
    common.error_panel("Cannot compute the feature structure", e)
    st.stop()

m1, m2, m3, m4 = st.columns(4)
for col, key in zip((m1, m2, m3), ("uniformity", "tolerance", "gap")):
    col.metric(explain.METRICS[key][0], f"{metrics[key]:.3f}", help=explain.help_text(key))
m4.metric("Sample", f"{metrics['sample_size']:,} points",
          help=f"up to {per_class} per class, seed {seed}, {n_samples} val keyframes")
st.caption(explain.sample_caption(metrics["sample_size"], per_class, n_samples, int(seed)))
df = pd.DataFrame({"PC1": proj[:, 0], "PC2": proj[:, 1], "PC3": proj[:, 2],
                   "class": [common.CLASS_NAMES[int(c) - 1] for c in y]})
view = st.radio("PCA view", ["2D", "3D"], horizontal=True, key="view")
ev = pca.explained_variance_ratio.tolist()
if view == "2D":
    fig = px.scatter(df, x="PC1", y="PC2", color="class", color_discrete_map=common.COLOR_MAP, render_mode="webgl",
                     labels={"PC1": f"PC1 ({ev[0]:.0%})", "PC2": f"PC2 ({ev[1]:.0%})"})
    fig.update_traces(marker_size=3)
else:
    fig = px.scatter_3d(df, x="PC1", y="PC2", z="PC3", color="class", color_discrete_map=common.COLOR_MAP)
    fig.update_traces(marker_size=2)
fig.update_layout(height=560, legend_itemsizing="constant")
st.plotly_chart(fig, width="stretch", key="pca")
counts = metrics["sample_counts"]
per = pd.DataFrame([{"class": common.CLASS_NAMES[c - 1], "tolerance": v, "points": counts[c]}
                    for c, v in sorted(metrics["tolerance_per_class"].items())])
st.plotly_chart(px.bar(per, x="class", y="tolerance", color="class", color_discrete_map=common.COLOR_MAP,
                       hover_data=["points"], title="Tolerance per class"), width="stretch", key="tol")
undefined = [c for c, n in counts.items() if n < 2]
if undefined:
    st.caption("No tolerance (a single point): " + ", ".join(common.CLASS_NAMES[c - 1] for c in undefined))

"""Feature structure: per-class PCA of a class-stratified sample, with U, T (per class) and G."""

import time

import pandas as pd
import plotly.express as px
import streamlit as st
from pages import common
from relviz.metrics import fit_pca, modality_gap, sample_per_class, tolerance, uniformity

st.title("Feature structure")
s = common.settings()
ckpts = [c for c in common.list_checkpoints(s) if c.error is None]
options = ["teacher"] + [c.label for c in ckpts]
default = common.query_param("ckpt", options[1] if len(options) > 1 else "teacher")
c1, c2, c3, c4 = st.columns(4)
choice = c1.selectbox("Features of", options, index=options.index(default) if default in options else 0, key="ckpt")
n_samples = c2.slider("val keyframes", 1, 16, int(common.query_param("n", 4)), key="n")
per_class = c3.select_slider("points per class", [100, 250, 500, 1000, 2000, 5000], value=500, key="per_class")
seed = c4.number_input("seed", 0, 10_000, int(common.query_param("seed", 0)), key="seed")
common.set_query_params(ckpt=choice, n=n_samples, seed=seed)


try:
    root = common.dataset_root(s)
    teacher = common.active_teacher(s)
    info = next((c for c in ckpts if c.label == choice), None)
    with st.status("computing features, sample, PCA and metrics", expanded=False) as status:
        t0 = time.perf_counter()
        data = common.val_features(str(info.path) if info else "", info.path.stat().st_mtime if info else 0.0, str(root),
                            n_samples, teacher.identity)
        idx = sample_per_class(data["labels"], per_class=per_class, seed=int(seed))
        z, y = data["features"][idx], data["labels"][idx]
        pca = fit_pca(z, k=3)
        proj = pca.transform(z).numpy()
        U = uniformity(z)
        tol = tolerance(z, y)
        G = modality_gap(data["pair_student"], data["pair_teacher"])
        status.update(label=f"computed in {time.perf_counter() - t0:.1f} s", state="complete")
except Exception as e:  # a broken checkpoint or dataset: an error panel, not a crash
    common.error_panel("Cannot compute the feature structure", e)
    st.stop()

m1, m2, m3, m4 = st.columns(4)
m1.metric("Uniformity U", f"{U:.3f}")
m2.metric("Tolerance T", f"{tol.mean:.3f}")
m3.metric("Modality gap G", f"{G:.3f}")
m4.metric("Sample", f"{len(idx):,} points", help=f"up to {per_class} per class, seed {seed}, {n_samples} val keyframes")
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
per = pd.DataFrame([{"class": common.CLASS_NAMES[c - 1], "tolerance": v, "points": tol.counts[c]}
                    for c, v in sorted(tol.per_class.items())])
st.plotly_chart(px.bar(per, x="class", y="tolerance", color="class", color_discrete_map=common.COLOR_MAP,
                       title="Tolerance per class"), width="stretch", key="tol")
if tol.undefined:
    st.caption("No tolerance (a single point): " + ", ".join(common.CLASS_NAMES[c - 1] for c in tol.undefined))

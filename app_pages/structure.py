"""Feature structure: U, T (per class) and G with their intervals, the PCA of exactly the sample
they were computed on, and the same sample in the scene, linked (a selection in one is ringed in the
other; a text query's matches are ringed in both)."""

import numpy as np
import streamlit as st

from app_pages import common, kept
from app_pages.background import structure_or_last
from app_pages.teachers_section import teachers_side_by_side
from relviz.errors import RelvizError
from relviz.viz import explain
from relviz.viz import structure_view as sv
from relviz.viz.compare import per_class_figure
from relviz.viz.linked import scene_figure, selected_sample
from relviz.viz.pca import pca_figure

st.title("Feature structure")
s = common.settings()
teachers_side_by_side(s, common.dataset_root(s))  # stored results of `relviz eval teachers`, in an expander
ckpts = {c.label: c for c in common.student_checkpoints(s) if c.error is None}
options = ["teacher", *ckpts]
active = common.active_checkpoints(list(ckpts))
default = common.query_param("ckpt", (active or list(ckpts) or ["teacher"])[0])
c1, c2, c3, c4, c5 = st.columns(5)
choice = c1.selectbox("Features of", options, index=options.index(default) if default in options else 0, key="ckpt")
n_samples = common.eval_set_controls(c2, c3, "st", common.int_param("k", 2, 1, 8))
per_class = c4.select_slider("points per class", [100, 250, 500, 1000, 2000, 5000], value=500, key="per_class")
if (seed := common.number(c5, "seed", 0, 10_000, common.int_param("seed", 0, 0, 10_000), "seed", step=1)) is None:
    st.stop()  # the box says why: nothing below is computed with a seed other than the one shown
common.set_query_params(ckpt=choice, k=n_samples.per_scene, seed=seed)
root = str(common.dataset_root(s))
try:  # computed in the background when not on disk, the last result shown meanwhile
    metrics, (z, y), (_, choice, n_samples, per_class, seed) = structure_or_last(
        ckpts.get(choice), choice, root, n_samples, per_class, seed)
except Exception as e:  # a broken checkpoint or dataset: an error panel, not a crash
    common.error_panel("Cannot compute the feature structure", e)
    st.stop()

for col, key in zip(st.columns(4), ("uniformity", "tolerance", "gap", "gap_all_pairs")):
    col.metric(*sv.metric_cell(metrics, key), help=explain.help_text(key), delta_color="off")
st.caption(explain.sample_caption(metrics["sample_size"], per_class, metrics["sample"]["keyframes"], seed,
                                  metrics["sample"].get("scenes")) + " " + explain.interval_caption(metrics))
sample_key = f"{choice}|{metrics['sample']['id']}"
if st.session_state.get("linked_for") != sample_key:  # another sample: indices into the old one mean nothing
    st.session_state.update(linked_sample=[], linked_for=sample_key)


def select_from(chart_key: str) -> None:  # a box or lasso selection in either view becomes the linked one
    st.session_state["linked_sample"] = selected_sample(st.session_state.get(chart_key), len(y))


q1, q2, q3 = st.columns([2, 3, 1])
view = q1.radio("PCA view", ["2D", "3D"], horizontal=True, key="view", help="select (box or lasso) in 2D")
query = q2.text_input("Ring the points matching a query", key="link_query", placeholder="e.g. parked car")
threshold = common.number(q3, "cosine at least", -1.0, 1.0, 0.2, "link_threshold", step=0.05)
ring = np.zeros(len(y), bool)
ring[[i for i in st.session_state.get("linked_sample", []) if i < len(y)]] = True
places, st.session_state["structure_selected"] = None, {}  # the teacher's sample has no place in the scene
if ckpts.get(choice) is not None:
    places = kept.sample_places(ckpts[choice], root, n_samples, per_class, seed)
    tokens = common.dataset(root).sample_tokens
    # this selection, by keyframe, for the Zero-shot page's 3D view; its box selection ringed here
    st.session_state["structure_selected"] = sv.selection_by_token(places, ring, tokens)
    for boxed, note in sv.boxed_rings(places, st.session_state.get("zs_selected"), tokens):
        ring |= boxed
        st.caption(note)
if query.strip() and threshold is not None:
    try:
        matches, note = sv.query_matches(z, query, threshold, common.class_embeddings(s),
                                         lambda: common.active_teacher(s))
        ring |= matches
        st.caption(note)
    except RelvizError as e:
        st.error(str(e))
pca = pca_figure(z, y, dims=3 if view == "3D" else 2, highlight=ring, highlight_name="ringed",  # the basis kept
                 basis=kept.pca_basis(ckpts.get(choice), root, n_samples, per_class, seed, 3 if view == "3D" else 2))
st.plotly_chart(pca, width="stretch", key="pca", **({} if view == "3D" else dict(
    on_select=lambda: select_from("pca"), selection_mode=("box", "lasso"))))
if places is None:
    st.caption("The teacher's features exist at camera-paired points only: choose a student to see its sample "
               "in the scene.")
else:
    ringed = np.nonzero(ring)[0]
    if st.session_state.get("link_ringed") != (sample_key, ringed.tobytes()):  # new rings: show where most are
        st.session_state.update(link_kf=sv.first_frame(places, ring), link_ringed=(sample_key, ringed.tobytes()))
    frame = st.selectbox("Scene: keyframe", places.frames, key="link_kf",
                         help="the keyframe with the most ringed points, until you choose another")
    m = places.frame == frame
    xyz = common.dataset(root).lidar(frame)[0][:, :3]
    st.plotly_chart(scene_figure(xyz, places.point[m], np.nonzero(m)[0], y.numpy()[m], ringed),
                    width="stretch", key="scene", on_select=lambda: select_from("scene"),
                    selection_mode=("box", "lasso"))
    st.caption(f"Bird's-eye view of keyframe {frame}: {int(m.sum()):,} sample points in colour over its lidar points; "
               "select (box or lasso) here or in the PCA to ring the same points in the other.")
st.plotly_chart(per_class_figure({choice: metrics}, "tolerance_per_class", "Tolerance per class", "tolerance"),
                width="stretch", key="tol")
if undefined := [common.CLASS_NAMES[c - 1] for c, n in metrics["sample_counts"].items() if n < 2]:
    st.caption("No tolerance (a single point): " + ", ".join(undefined))

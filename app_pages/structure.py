"""Feature structure: U, T (per class) and G with their intervals, the PCA of exactly the sample
they were computed on, and the same sample in the scene, linked (a selection in one is ringed in the
other; a text query's matches are ringed in both)."""

import numpy as np
import streamlit as st

from app_pages import common
from relviz.errors import RelvizError
from relviz.eval.structure import sample_indices, sample_locations
from relviz.eval.zeroshot import assign_by_text, parse_queries
from relviz.viz import explain
from relviz.viz import zeroshot_view as zv
from relviz.viz.compare import per_class_figure
from relviz.viz.linked import scene_figure, selected_sample
from relviz.viz.pca import pca_figure

st.title("Feature structure")
s = common.settings()
ckpts = {c.label: c for c in common.student_checkpoints(s) if c.error is None}
options = ["teacher", *ckpts]
active = common.active_checkpoints(list(ckpts))
default = common.query_param("ckpt", (active or list(ckpts) or ["teacher"])[0])
c1, c2, c3, c4, c5 = st.columns(5)
choice = c1.selectbox("Features of", options, index=options.index(default) if default in options else 0, key="ckpt")
n_samples = common.eval_set_controls(c2, c3, "st", common.int_param("k", 2, 1, 8))
per_class = c4.select_slider("points per class", [100, 250, 500, 1000, 2000, 5000], value=500, key="per_class")
seed = int(c5.number_input("seed", 0, 10_000, common.int_param("seed", 0, 0, 10_000), key="seed"))
common.set_query_params(ckpt=choice, k=n_samples.per_scene, seed=seed)

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
    col.metric(explain.METRICS[key][0], "-" if metrics[key] is None else f"{metrics[key]:.3f}", help=explain.help_text(key),
               delta=f"95% [{ci['low']:.3f}, {ci['high']:.3f}]" if ci else None, delta_color="off")
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
threshold = q3.number_input("cosine at least", -1.0, 1.0, 0.2, 0.05, key="link_threshold")
ring = np.zeros(len(y), bool)
ring[[i for i in st.session_state.get("linked_sample", []) if i < len(y)]] = True
kf = at = None
st.session_state["structure_selected"] = {}  # the teacher's sample has no place in the scene: no selection
if ckpts.get(choice) is not None:  # where each sample point lies: keyframe and point index
    val = common.val_features(ckpts[choice], root, n_samples)
    kf, at = (t.numpy() for t in sample_locations(val, sample_indices(val, metrics)))
    frames = val["keyframe_index"].tolist()  # the evaluated keyframes' indices in the split
    kf = np.asarray(frames)[kf]
    tokens = common.dataset(root).sample_tokens
    # this selection, by keyframe, for the Zero-shot page's 3D view
    st.session_state["structure_selected"] = {tokens[k]: at[ring & (kf == k)].tolist() for k in np.unique(kf[ring])}
    # and the 3D view's box selection, ringed here where it holds sample points
    for token, points in (st.session_state.get("zs_selected") or {}).items():
        frame = tokens.index(token) if token in tokens else None
        if points and frame in frames:
            boxed = (kf == frame) & np.isin(at, points)
            ring |= boxed
            st.caption(f"{int(boxed.sum()):,} sample points of keyframe {frame} are in the box selected "
                       f"in the Zero-shot page's 3D view ({len(points):,} points there).")
if query.strip():
    try:
        prompt = parse_queries(query).prompts[:1]
        text = zv.embed_prompts(prompt, common.class_embeddings(s), lambda: common.active_teacher(s))
        matches = (assign_by_text(z, text, threshold)[0] == 0).numpy()
        ring |= matches
        st.caption(f"{int(matches.sum()):,} of {len(y):,} sample points have cosine >= {threshold:.2f} with "
                   f"{prompt[0]!r}")
    except RelvizError as e:
        st.error(str(e))
pca = pca_figure(z, y, dims=3 if view == "3D" else 2, highlight=ring, highlight_name="ringed")
st.plotly_chart(pca, width="stretch", key="pca", **({} if view == "3D" else dict(
    on_select=lambda: select_from("pca"), selection_mode=("box", "lasso"))))
if ckpts.get(choice) is None:
    st.caption("The teacher's features exist at camera-paired points only: choose a student to see its sample "
               "in the scene.")
else:
    ringed = np.nonzero(ring)[0]
    if st.session_state.get("link_ringed") != (sample_key, ringed.tobytes()):  # new rings: show where most are
        most = np.bincount(kf[ring]).argmax() if ring.any() else frames[0]
        st.session_state.update(link_kf=int(most), link_ringed=(sample_key, ringed.tobytes()))
    frame = st.selectbox("Scene: keyframe", frames, key="link_kf",
                         help="the keyframe with the most ringed points, until you choose another")
    m = kf == frame
    xyz = common.dataset(root).lidar(frame)[0][:, :3]
    st.plotly_chart(scene_figure(xyz, at[m], np.nonzero(m)[0], y.numpy()[m], ringed),
                    width="stretch", key="scene", on_select=lambda: select_from("scene"),
                    selection_mode=("box", "lasso"))
    st.caption(f"Bird's-eye view of keyframe {frame}: {int(m.sum()):,} sample points in colour over its lidar points; "
               "select (box or lasso) here or in the PCA to ring the same points in the other.")
st.plotly_chart(per_class_figure({choice: metrics}, "tolerance_per_class", "Tolerance per class", "tolerance"),
                width="stretch", key="tol")
undefined = [common.CLASS_NAMES[c - 1] for c, n in metrics["sample_counts"].items() if n < 2]
if undefined:
    st.caption("No tolerance (a single point): " + ", ".join(undefined))

"""Zero-shot: type text queries, see the 3D segmentation of a keyframe and the camera view."""

import time

import numpy as np
import streamlit as st
import torch

from pages import common
from relviz.data.nuscenes import CAMERAS
from relviz.eval import confusion_matrix, iou_per_class
from relviz.errors import InputError
from relviz.eval.features import point_features_cached
from relviz.eval.zeroshot import parse_queries, predict_by_text
from relviz.viz.points import MODES, colors_for, decimate, point_cloud_figure, projected_points_figure, to_ply_bytes

st.title("Zero-shot 3D segmentation")
s = common.settings()
every = common.student_checkpoints(s)
ckpts = [c for c in every if c.error is None]
broken = [c for c in every if c.error]
for c in broken:
    st.error(f"Checkpoint {c.path} cannot be used and is left out: {c.error}")
if not ckpts:
    st.info("No student checkpoint yet: train one on the Jobs page or with `relviz demo`.")
    st.stop()
labels = [c.label for c in ckpts]
c1, c2, c3 = st.columns([2, 2, 1])
default = common.query_param("ckpt", labels[0])
choice = c1.selectbox("Student", labels, index=labels.index(default) if default in labels else 0, key="zs_ckpt")
info = ckpts[labels.index(choice)]
try:
    ds = common.dataset(str(common.dataset_root(s)), True)
    model, meta = common.student(info)
except Exception as e:
    common.error_panel("Cannot load the student, teacher or dataset", e)
    st.stop()
sample = c2.selectbox("Keyframe (mini_val)", range(len(ds)), index=common.int_param("sample", 0, 0, len(ds) - 1),
                      format_func=lambda i: f"{i}: {ds.sample_tokens[i][:8]}", key="zs_sample")
max_points = c3.select_slider("max points", [5_000, 10_000, 20_000, 35_000, 50_000], value=35_000, key="zs_max")

default_queries = "\n".join(name.replace("_", " ") for name in common.CLASS_NAMES)
queries_text = st.text_area("Queries, one per line: `text` (a class name) or `text = class`", default_queries,
                            height=140, key="zs_queries")
common.set_query_params(ckpt=choice, sample=sample)


try:
    prompts, prompt_classes = parse_queries(queries_text, common.CLASS_NAMES)
except InputError as e:
    st.error(str(e))
    st.stop()

item = ds[sample]
feats = torch.from_numpy(np.array(point_features_cached(model, info.key, ds, sample, s.cache_dir))).float()
t0 = time.perf_counter()
uses_class_ensembles = prompts == [n.replace("_", " ") for n in common.CLASS_NAMES]
if uses_class_ensembles:  # the default queries: the prompt ensembles, from the disk cache
    text = common.class_embeddings(s)
else:
    try:
        text = common.active_teacher(s).encode_text(prompts)
    except Exception as e:
        common.error_panel("Cannot load the teacher to encode the queries", e)
        st.stop()
try:
    pred = predict_by_text(feats, text, torch.tensor(prompt_classes)).numpy()
except InputError as e:
    common.error_panel(f"Cannot segment with {choice}", e)
    st.stop()
latency = time.perf_counter() - t0
gt = item["labels"]
cm = confusion_matrix(pred, gt)
iou = iou_per_class(cm)
m1, m2, m3 = st.columns(3)
m1.metric("Sample mIoU", f"{np.nanmean(iou):.3f}" if np.isfinite(iou).any() else "n/a")
m2.metric("Query latency", f"{latency * 1000:.0f} ms", help="text encoding + prediction for all points")
m3.metric("Points", f"{len(pred):,}")

mode = st.radio("Colour by", MODES, horizontal=True, key="zs_mode")
query_for_sim = None
if mode == "similarity to a query":
    query_for_sim = st.selectbox("query", prompts, key="zs_simq")
sim = None
if query_for_sim is not None:
    sim = (feats @ text[prompts.index(query_for_sim)].to(feats)).numpy()
keep = decimate(len(pred), max_points, seed=0)
colors = colors_for(mode, pred, gt, sim)
st.plotly_chart(point_cloud_figure(item["points"][keep, :3], colors[keep], mode), width="stretch", key="zs_cloud")
st.caption(f"showing {len(keep):,} of {len(pred):,} points (uniform random, seed 0)")

cam = st.selectbox("Camera", range(len(CAMERAS)), format_func=lambda i: CAMERAS[i], key="zs_cam")
m = item["pair_cameras"] == cam
st.plotly_chart(projected_points_figure(item["images"][cam], item["pair_pixels"][m], colors[item["pair_points"][m]]),
                width="stretch", key="zs_image")
per_class = {common.CLASS_NAMES[c - 1]: iou[c] for c in range(1, 17) if np.isfinite(iou[c])}
st.bar_chart(per_class, horizontal=True, height=380)
# the .ply is written (by open3d) only when the button is pressed
st.download_button("Export coloured point cloud (.ply)", lambda: to_ply_bytes(item["points"][:, :3], colors),
                   file_name=f"{choice}-{ds.sample_tokens[sample][:8]}-{mode.replace(' ', '_')}.ply",
                   mime="application/octet-stream", on_click="ignore", key="zs_ply")
# free-text queries need the teacher model: load it in the background, after this page is drawn
common.prefetch_teacher(s)

"""Zero-shot: free-text queries recolour the 3D view as they are typed; camera view, scores,
.ply export, and a search of the val split for one query."""

import numpy as np
import streamlit as st
import torch

from app_pages import common, zeroshot_parts
from relviz.data.nuscenes import CAMERAS
from relviz.eval.features import point_features_cached
from relviz.viz import explain
from relviz.viz import zeroshot_view as zv
from relviz.viz.points import decimate, projected_points_figure, to_ply_bytes
from relviz.workspace import teacher_identity, text_applies

st.title("Zero-shot 3D segmentation")
s = common.settings()
if s.teacher == "demo":
    st.info(explain.DEMO_TEACHER_NOTE)
every = common.student_checkpoints(s)
ckpts = [c for c in every if c.error is None and text_applies(s, c)]
for c in every:
    if c.error:
        st.error(f"Checkpoint {c.path} cannot be used and is left out: {c.error}")
if outside := [c.label for c in every if c.error is None and c not in ckpts]:
    st.caption(f"Not in this teacher's text space, so not listed: {', '.join(outside)} (an imported set or published "
               f"checkpoint whose declared text space is not `{teacher_identity(s)}`).")
if not ckpts:
    st.info("No student checkpoint yet: train one on the Jobs page or with `relviz demo`.")
    st.stop()
labels = [c.label for c in ckpts]
c1, c2, c3 = st.columns([2, 2, 1])
default = common.query_param("ckpt", labels[0])
choice = c1.selectbox("Student", labels, index=labels.index(default) if default in labels else 0, key="zs_ckpt")
info = ckpts[labels.index(choice)]
c1.caption(f"Features: {info.provenance}")
try:
    ds = common.dataset(str(common.dataset_root(s)), True)
    model, meta = common.student(info)
except Exception as e:
    common.error_panel("Cannot load the student, teacher or dataset", e)
    st.stop()
sample = c2.selectbox("Keyframe (mini_val)", range(len(ds)), index=common.int_param("sample", 0, 0, len(ds) - 1),
                      format_func=lambda i: f"{i}: {ds.sample_tokens[i][:8]}", key="zs_sample")
max_points = c3.select_slider("max points", [5_000, 10_000, 20_000, 35_000, 50_000], value=35_000, key="zs_max")
common.set_query_params(ckpt=choice, sample=sample)
item = ds[sample]
feats = torch.from_numpy(np.array(point_features_cached(model, info.key, ds, sample, s.cache_dir))).float()
keep = decimate(len(feats), max_points, seed=0)


def embed(prompts):
    return zv.embed_prompts(prompts, common.class_embeddings(s), lambda: common.active_teacher(s))


# the live view's controls stay outside its fragment: each Streamlit element inside it is redrawn on
# every keystroke (bench/README.md: the median keystroke 116 -> 83 ms without them and the metrics)
if "zs_mode_wanted" in st.session_state:
    st.session_state["zs_mode"] = st.session_state.pop("zs_mode_wanted")
a, b = st.columns([3, 1])
a.radio("Colour by", zv.MODES, horizontal=True, key="zs_mode")
common.number(b, "unassigned below similarity", -1.0, 1.0, None, "zs_threshold", optional=True, step=0.05,
              help="points whose best cosine similarity is lower stay unassigned (grey); empty: off")


zeroshot_parts.live(s, ds, sample, item, feats, keep, embed)
view = st.session_state.get("zs_view")
# outside the fragment too (they follow Ctrl+Enter, as the views below); the frame's note line says the
# same numbers as they are typed
for col, (label, value, meaning) in zip(st.columns(3), zv.metrics(view, len(feats))):
    col.metric(label, value, help=meaning)
if st.session_state.get("zs_error"):
    st.error(st.session_state["zs_error"])
if view is None or len(view.shown.index) != len(feats):
    st.stop()
st.caption(zv.scored_caption(view.seg) + " The views below follow the queries on Ctrl+Enter.")
colors = view.shown.rgb()
cam = st.selectbox("Camera", range(len(CAMERAS)), format_func=lambda i: CAMERAS[i], key="zs_cam")
m = item["pair_cameras"] == cam
st.plotly_chart(projected_points_figure(item["images"][cam], item["pair_pixels"][m], colors[item["pair_points"][m]]),
                width="stretch", key="zs_image")
st.bar_chart({k: v for k, v in view.seg.scores["iou"].items() if v is not None}, horizontal=True, height=380)
st.download_button("Export coloured point cloud (.ply)", lambda: to_ply_bytes(
    item["points"][:, :3], colors, f"relviz zero-shot of {choice}; features: {info.provenance}"),
                   file_name=f"{choice}-{ds.sample_tokens[sample][:8]}.ply", mime="application/octet-stream",
                   on_click="ignore", key="zs_ply")


zeroshot_parts.search(s, ds, info, model, view)
common.prefetch_teacher(s)

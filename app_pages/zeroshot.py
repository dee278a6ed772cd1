"""Zero-shot: free-text queries recolour the 3D view as they are typed; camera view, scores,
.ply export, and a search of the val split for one query."""

from dataclasses import replace

import numpy as np
import streamlit as st
import torch

from app_pages import common
from relviz.data.nuscenes import CAMERAS
from relviz.errors import RelvizError
from relviz.eval.features import point_features_cached
from relviz.eval.search import split_features
from relviz.tensors import one_thread
from relviz.teacher.text import teacher_vocabulary
from relviz.viz import explain
from relviz.viz import zeroshot_view as zv
from relviz.viz.live_cloud import live_cloud, points_name, typed
from relviz.viz.points import decimate, projected_points_figure, to_ply_bytes
from relviz.viz.split_search import search_prompt, thumbnails, top_points_table

st.title("Zero-shot 3D segmentation")
s = common.settings()
if s.teacher == "demo":
    st.info(explain.DEMO_TEACHER_NOTE)
every = common.student_checkpoints(s)
ckpts = [c for c in every if c.error is None]
for c in every:
    if c.error:
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
common.number(b, "unassigned below similarity", -1.0, 1.0, None, "zs_threshold", step=0.05,
              help="points whose best cosine similarity is lower stay unassigned (grey); empty: off")


@st.fragment
def live():
    """Reruns alone on each keystroke: the frame gets new colours, never new positions."""
    q = typed("zs_live", "zs_queries", "\n".join(n.replace("_", " ") for n in common.CLASS_NAMES))
    if not q.new and (stamps := st.session_state.pop("zs_reply_stamps", None)):
        q = replace(q, new=True, stamps=stamps)  # the message a rerun of the page took over: answer it
    token = ds.sample_tokens[sample]
    shown_xyz = item["points"][keep, :3]
    # a box selection in the 3D view, of the points shown now: kept as this keyframe's point indices
    if q.selection is not None and q.selection_points == points_name(shown_xyz):
        st.session_state["zs_selected"] = {token: zv.selected_points(q.selection, keep)}
    if q.new and q.focus != st.session_state.get("zs_focus_shown"):  # a legend row clicked: its heat map,
        st.session_state.update(zs_mode_wanted=zv.MODES[3] if q.focus else zv.MODES[0], zs_focus_shown=q.focus,
                                zs_reply_stamps=q.stamps)  # else the frame waits 3 s for an answer to its message
        st.rerun(scope="app")  # with the radio above showing it (a widget's value is set before it is drawn)
    mode, threshold = st.session_state.get("zs_mode", zv.MODES[0]), common.in_range(st.session_state.get("zs_threshold"), -1, 1)
    view, error = st.session_state.get("zs_view"), None
    try:
        with one_thread():  # small tensors per keystroke: see relviz.tensors.one_thread
            view = zv.live_view(feats, item["labels"], q.text, threshold, mode, embed, q.cursor, q.focus, view,
                                teacher_vocabulary(s.teacher_spec))
    except RelvizError as e:  # the frame shows the message and keeps the last good colours
        error = str(e)
    st.session_state.update(zs_view=view, zs_error=error)
    # this keyframe's selections, made here or on the Feature structure page, in the selection colour
    selections = [(where, by_token[token]) for where, by_token in (
        ("3D view", st.session_state.get("zs_selected")),
        ("Feature structure page", st.session_state.get("structure_selected"))) if by_token and token in by_token]
    coloring, legend = zv.mark_selections(*zv.shown(view, len(feats), keep), keep, selections)
    live_cloud(s.cache_dir, shown_xyz, coloring, legend, text=q.text,
               reply=q.reply(view.timings if view else {}, error), key="zs_live",
               note=f"{zv.summary(view, len(feats))} · showing {len(keep):,} of {len(feats):,} points (uniform "
                    f"random, seed 0)")
    if q.commit:
        st.rerun(scope="app")


live()
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
st.download_button("Export coloured point cloud (.ply)", lambda: to_ply_bytes(item["points"][:, :3], colors),
                   file_name=f"{choice}-{ds.sample_tokens[sample][:8]}.ply", mime="application/octet-stream",
                   on_click="ignore", key="zs_ply")


@st.fragment
def search():
    st.subheader("Search the val split")
    a, b = st.columns([3, 1], vertical_alignment="bottom")
    seg = view.seg
    target = a.selectbox("Keyframes and points most like", seg.labels.prompts, key="zs_search_query")
    asked, rule = (info.key, seg.labels, target), (seg.labels.threshold, seg.background)
    if b.button("Search", key="zs_search"):
        bar = st.progress(0.0, "student features of the split")
        found = search_prompt(split_features(model, info.key, ds, s.cache_dir, lambda d, n: bar.progress(d / n)),
                              seg.text, seg.labels.prompts, target, *rule)
        st.session_state["zs_found"] = (asked, *found)
    if (st.session_state.get("zs_found") or (None,))[0] != asked:
        return
    _, found, seconds = st.session_state["zs_found"]
    st.caption(f"{len(ds)} keyframes, {sum(m.total for m in found.keyframes):,} points searched in {seconds:.2f} s")
    for col, (k, image, caption) in zip(st.columns(3) * 2, thumbnails(
            found, ds, lambda i: point_features_cached(model, info.key, ds, i, s.cache_dir), seg.text,
            seg.labels.prompts.index(target), *rule)):
        col.image(image, caption=caption)
        if col.button(f"open keyframe {k}", key=f"zs_open_{k}", on_click=st.session_state.update,
                      kwargs={"zs_sample": k}):
            st.rerun(scope="app")
    st.dataframe(top_points_table(found, ds), hide_index=True)


search()
common.prefetch_teacher(s)

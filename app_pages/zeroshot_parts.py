"""The Zero-shot page's two fragments: the live view, which reruns alone on each keystroke, and the
search of the val split. Not a page of its own (app.py does not list it): the page passes what they read."""

from dataclasses import replace

import numpy as np
import streamlit as st
import torch

from app_pages import common
from relviz.config import Settings
from relviz.errors import RelvizError
from relviz.eval.features import point_features_cached
from relviz.eval.search import split_features
from relviz.teacher.text import teacher_vocabulary
from relviz.tensors import one_thread
from relviz.viz import zeroshot_view as zv
from relviz.viz.live_cloud import live_cloud, points_name, typed
from relviz.viz.split_search import search_prompt, thumbnails, top_points_table
from relviz.workspace import CheckpointInfo


@st.fragment
def live(s: Settings, ds, sample: int, item: dict, feats: torch.Tensor, keep: np.ndarray, embed) -> None:
    """Reruns alone on each keystroke: the frame gets new colours, never new positions. ``feats`` [N, D]:
    the keyframe's student features; ``keep``: the points shown; ``embed``: prompts -> text embeddings."""
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
    mode = st.session_state.get("zs_mode", zv.MODES[0])
    threshold = common.in_range(st.session_state.get("zs_threshold"), -1, 1)
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


@st.fragment
def search(s: Settings, ds, info: CheckpointInfo, model, view) -> None:
    """The val split's keyframes and points most like one of the typed queries (``view``'s)."""
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

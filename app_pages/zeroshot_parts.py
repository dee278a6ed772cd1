"""The Zero-shot page's two fragments: the live view, which reruns alone on each keystroke, and the
search of the val split. Not a page of its own (app.py does not list it): the page passes what they read."""

from dataclasses import replace
from functools import partial

import numpy as np
import streamlit as st
import torch

from app_pages import common
from relviz.config import Settings
from relviz.eval.features import point_features_cached
from relviz.eval.search import split_features
from relviz.teacher.text import teacher_vocabulary
from relviz.viz import zeroshot_view as zv
from relviz.viz.live_cloud import live_cloud, points_name, typed
from relviz.viz.live_cloud.channel import new_token, register
from relviz.viz.split_search import search_prompt, thumbnails, top_points_table
from relviz.viz.zeroshot_live import LiveInputs, session_live_state
from relviz.workspace import CheckpointInfo


@st.fragment
def live(s: Settings, ds, sample: int, item: dict, feats: torch.Tensor, keep: np.ndarray, embed) -> None:
    """Reruns alone on each message of the frame that needs Streamlit (keystrokes go to the direct channel,
    which answers the same way: relviz.viz.zeroshot_live): the frame gets new colours, never new positions.
    ``feats`` [N, D]: the keyframe's student features; ``keep``: the points shown; ``embed``: prompts -> text
    embeddings."""
    state = session_live_state(st.session_state, "\n".join(n.replace("_", " ") for n in common.CLASS_NAMES))
    q = typed("zs_live", "zs_queries", state.text, newer_than=state.seq)
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
    # this keyframe's selections, made here or on the Feature structure page, in the selection colour
    selections = [(where, by_token[token]) for where, by_token in (
        ("3D view", st.session_state.get("zs_selected")),
        ("Feature structure page", st.session_state.get("structure_selected"))) if by_token and token in by_token]
    inputs = LiveInputs(feats, item["labels"], keep, common.in_range(st.session_state.get("zs_threshold"), -1, 1),
                        st.session_state.get("zs_mode", zv.MODES[0]), embed, teacher_vocabulary(s.teacher_spec),
                        selections)
    view, error = state.compute(inputs, q)
    st.session_state.update(zs_view=view, zs_error=error)
    channel = register(st.session_state.setdefault("zs_channel_token", new_token()), partial(state.answer, inputs),
                       st.get_option("server.address") or "127.0.0.1")
    live_cloud(s.cache_dir, shown_xyz, *inputs.colours(view), text=q.text, reply=q.reply(view.timings if view else {},
               error), key="zs_live", note=inputs.note(view), channel=channel)
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

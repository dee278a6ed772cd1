"""The Feature structure page's "Teachers side by side": the stored results of `relviz eval teachers`
for the workspace's dataset (U, T and G per teacher, linear CKA between them, their class relations),
or the command that produces one. Not a page of its own: the structure page calls it."""

from pathlib import Path

import streamlit as st

from relviz.config import Settings
from relviz.eval.teachers import stored_comparisons
from relviz.viz import teachers as tv
from relviz.workspace import VAL_SPLIT, VERSION

TITLE = "Teachers side by side: U, T, G, class relations and CKA of several teachers on the same points"


def teachers_side_by_side(s: Settings, root: Path) -> None:
    """An expander with the newest stored comparison of teachers on ``root``'s validation split (a
    choice among them when there are several), or what to run when none is stored."""
    with st.expander(TITLE):
        stored = stored_comparisons(s.cache_dir, root, VERSION, VAL_SPLIT)
        if not stored:
            st.info(tv.how_to_produce(st.session_state.get("dataset", s.dataset)))
            return
        result = stored[st.selectbox("Stored comparison", range(len(stored)), key="teachers_result",
                                     format_func=lambda i: tv.result_label(stored[i]))]
        st.dataframe(tv.summary_frame(result), hide_index=True, width="stretch")
        st.caption(tv.interval_note(result))
        if note := tv.random_note(result):
            st.warning(note)
        if result["pairs"]:
            left, right = st.columns([2, 3])
            left.plotly_chart(tv.cka_figure(result), width="stretch", key="teachers_cka")
            right.dataframe(tv.pairs_frame(result), hide_index=True, width="stretch")
        else:
            st.caption("One teacher: no CKA (`relviz eval teachers` with two `--teacher` or more compares them).")
        st.plotly_chart(tv.relations_figure(result), width="stretch", key="teachers_relations")

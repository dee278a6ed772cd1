"""The paper's toy experiment: why the three losses end with different structure."""

import streamlit as st

from pages import common
from relviz.toy import ToyConfig, run_toy_cached, view_snapshots
from relviz.viz.toy import toy_sphere_figure, toy_uniformity_figure

st.title("Toy experiment")
st.caption("Clusters on the unit sphere; inputs reveal their target only through noise. A small MLP is trained "
           "with each loss; uniformity and tolerance of its outputs are compared with the source's.")
c1, c2, c3 = st.columns(3)
clusters = c1.radio("clusters", [1, 3], index=1, horizontal=True, key="toy_clusters")
iters = c2.select_slider("iterations", [100, 200, 400, 600, 1000, 1500], value=600, key="toy_iters")
seed = c3.number_input("seed", 0, 1000, 0, key="toy_seed")


@st.cache_resource(max_entries=8, show_spinner="training three MLPs")
def toy(clusters: int, iters: int, seed: int):
    """A run from the workspace cache (``relviz warm`` stores the default one), else trained."""
    return run_toy_cached(ToyConfig(clusters=clusters, iters=iters, seed=seed), common.settings().cache_dir,
                          view_snapshots(iters))


result = toy(int(clusters), int(iters), int(seed))
summary = result.summary()
cols = st.columns(4)
for col, (name, v) in zip(cols, summary.items()):
    col.metric(name, f"U {v['uniformity']:.3f}", f"T {v['tolerance']:.3f}", delta_color="off")
snap_iters = sorted(result.runs["relational"].snapshots)
at = st.select_slider("show outputs at iteration", snap_iters, value=snap_iters[-1], key="toy_at")
st.plotly_chart(toy_sphere_figure(result, at), width="stretch", key="toy_sphere")
c1, c2 = st.columns(2)
c1.plotly_chart(toy_uniformity_figure(result, "uniformity"), width="stretch", key="toy_u")
c2.plotly_chart(toy_uniformity_figure(result, "tolerance"), width="stretch", key="toy_t")

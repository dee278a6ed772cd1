"""Linked views: where each sample point lies (against a walk over the keyframes), selections read
back from plotly events, and the Feature structure page ringing the same points in the PCA and in
the scene, and a query's matches (against the cosine computed here)."""

import json

import numpy as np
import torch
import torch.nn.functional as F

from support import trace_values, wait_for
from relviz.eval.features import with_pairs
from relviz.eval.structure import sample_indices, sample_locations
from relviz.viz.linked import scene_figure, selected_sample


def test_sample_locations_walk_back_to_each_keyframes_points():
    gen = torch.Generator().manual_seed(0)
    sizes = [7, 3, 11]  # lidar points per keyframe
    keyframe = torch.cat([torch.full((n,), k) for k, n in enumerate(sizes)])
    paired = [torch.tensor([0, 2, 6]), torch.tensor([1]), torch.tensor([3, 4, 9, 10])]  # per keyframe, own indices
    offsets = [0, 7, 10]
    val = with_pairs({"features": torch.randn(sum(sizes), 4, generator=gen), "labels": torch.ones(sum(sizes)),
                      "keyframe": keyframe, "pair_index": torch.cat([p + o for p, o in zip(paired, offsets)])})
    idx = torch.tensor([7, 0, 3, 4, 5])
    kf, at = sample_locations(val, idx)
    own = [(k, int(p)) for k, ps in enumerate(paired) for p in ps]  # the pairs in order, by hand
    assert list(zip(kf.tolist(), at.tolist())) == [own[i] for i in idx.tolist()]


def test_selected_sample_reads_customdata_and_ignores_the_rest():
    event = {"selection": {"points": [{"customdata": 4}, {"customdata": [2]}, {"customdata": 4.0},
                                      {"curve_number": 0}, {"customdata": 99}, {"customdata": -1},
                                      {"customdata": True}, {"customdata": "3"}]}}
    assert selected_sample(event, size=10) == [2, 4]
    assert selected_sample(None, 10) == [] and selected_sample({"selection": {}}, 10) == []


def test_scene_figure_rings_the_highlighted_sample_points():
    xyz = np.arange(30, dtype=float).reshape(10, 3)
    fig = scene_figure(xyz, np.array([1, 4, 8]), np.array([10, 11, 12]), np.array([1, 1, 2]), highlight=[11, 12, 99])
    ringed = [t for t in fig.data if t.name.startswith("ringed")]
    assert len(ringed) == 1 and ringed[0].name == "ringed (2)"
    assert list(ringed[0].x) == [xyz[4, 0], xyz[8, 0]]
    assert sorted(int(c) for t in fig.data[1:3] for c in t.customdata) == [10, 11, 12]


def _fail():
    raise AssertionError("computed instead of read from the page's caches")


def test_structure_page_rings_selected_and_matching_points_in_both_views(app_workspace):
    from streamlit.testing.v1 import AppTest

    from relviz.config import load_settings
    from relviz.data.classes import CLASSES
    from relviz.workspace import (DEFAULT_EVAL_SET, class_embeddings, metric_sample, structure, structure_on_disk,
                                  student_checkpoints, val_features)

    from test_app import APP

    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page("app_pages/structure.py").run()
    at.selectbox(key="ckpt").set_value("test-relational").run()
    assert not at.exception, at.exception
    s = load_settings()
    info = {c.label: c for c in student_checkpoints(s)}["test-relational"]
    root = s.dataset_root("synthetic-mini")
    # not in the warm caches: computed in the background, the page showing the last result meanwhile
    wait_for(lambda: structure_on_disk(s, root, info, DEFAULT_EVAL_SET, 500, 0), timeout=240,
             what="the background structure of test-relational")
    at.run()
    # the page has stored all of these: no loader is called
    # the default evaluation set: 2 keyframes of each of the 2 scenes, every keyframe of this small split, so
    # the positions in the selection are the split's indices
    val, metrics = (val_features(s, root, info, DEFAULT_EVAL_SET, _fail),
                    structure(s, root, info, DEFAULT_EVAL_SET, 500, 0, _fail))
    assert val["keyframe_index"].tolist() == [0, 1, 2, 3]
    keyframe, _ = sample_locations(val, sample_indices(val, metrics))
    last = int(keyframe.max())  # select three points of the last keyframe: the scene goes there
    chosen = torch.nonzero(keyframe == last).flatten()[:3].tolist()
    at.session_state["linked_sample"] = chosen  # what a selection in either view stores
    at.run()
    pca, scene, _ = (json.loads(c.proto.spec) for c in at.get("plotly_chart"))  # page order
    assert at.selectbox(key="link_kf").value == last
    assert [t["name"] for t in pca["data"] if t["name"].startswith("ringed")] == ["ringed (3)"]
    ringed_in_scene = [t for t in scene["data"] if t["name"].startswith("ringed")]
    sample_in_scene = {int(c) for t in scene["data"][1:] if "customdata" in t for c in trace_values(t["customdata"])}
    assert set(chosen) <= sample_in_scene and sum(len(trace_values(t["x"])) for t in ringed_in_scene) == 3
    # the selection goes to the Zero-shot page's 3D view as (keyframe, point index) ...
    from relviz.data import NuScenesLidarSeg

    tokens = NuScenesLidarSeg(root, split="mini_val", load_images=False).sample_tokens
    _, at_point = sample_locations(val, sample_indices(val, metrics)[torch.tensor(chosen)])
    assert at.session_state["structure_selected"] == {tokens[last]: at_point.tolist()}
    # ... and a box selection there (every point it shows of keyframe 0) is ringed here
    at.switch_page("app_pages/zeroshot.py").run()
    at.selectbox(key="zs_ckpt").set_value("test-relational").run()
    assert not at.exception, at.exception
    n_points = int(at.metric[2].value.replace(",", ""))  # "Points" of keyframe 0, all shown (fewer than 35,000)
    assert n_points < 35_000
    from relviz.viz.live_cloud import points_name

    shown = points_name(NuScenesLidarSeg(root, split="mini_val", load_images=False)[0]["points"][:, :3])
    # a selection of another point set (made before the keyframe changed) is not applied to this one
    at.session_state["zs_live"] = {"seq": 1, "text": "car", "selection": [0, 1], "points": "points/other.f32"}
    at.run()
    assert not at.exception, at.exception
    assert "zs_selected" not in at.session_state
    at.session_state["zs_live"] = {"seq": 2, "text": "car", "selection": [*range(n_points), n_points, -1, True],
                                   "points": shown}
    at.run()  # what the frame sends after a box selection: indices into the points it shows (bad ones dropped)
    assert not at.exception, at.exception
    assert at.session_state["zs_selected"] == {tokens[0]: list(range(n_points))}
    at.switch_page("app_pages/structure.py").run()
    boxed = set(torch.nonzero(keyframe == 0).flatten().tolist())
    assert boxed and any(f"{len(boxed):,} sample points of keyframe 0 are in the box" in c.value for c in at.caption)
    pca = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [t["name"] for t in pca["data"] if t["name"].startswith("ringed")] == [f"ringed ({len(boxed | set(chosen)):,})"]
    at.session_state["zs_selected"] = {}
    # a query: the ringed points are those whose cosine with the query's embedding reaches the threshold
    at.text_input(key="link_query").set_value("driveable surface").run()
    at.number_input(key="link_threshold").set_value(0.1).run()
    assert not at.exception, at.exception
    z, _ = metric_sample(val, metrics)
    text = class_embeddings(s, _fail)[CLASSES.index("driveable_surface") - 1]  # class c is row c - 1
    expected = int(((F.normalize(z.float(), dim=1) @ F.normalize(text.float(), dim=0)) >= 0.1).sum())
    assert any(f"{expected:,} of {len(z):,} sample points" in c.value for c in at.caption)
    # another student: the selection (indices into the old sample) is dropped, the query stays
    at.text_input(key="link_query").set_value("").run()
    at.selectbox(key="ckpt").set_value("test-contrastive").run()
    other = {c.label: c for c in student_checkpoints(s)}["test-contrastive"]
    wait_for(lambda: structure_on_disk(s, root, other, DEFAULT_EVAL_SET, 500, 0), timeout=240,
             what="the background structure of test-contrastive")
    at.run()
    pca = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert not [t for t in pca["data"] if t["name"].startswith("ringed")]


def test_a_box_selection_becomes_keyframe_points_and_is_drawn_in_its_colour():
    from relviz.viz import zeroshot_view as zv
    from relviz.viz.labelcolors import SELECTED_RGB, Coloring

    keep = np.array([5, 9, 12, 40, 41])  # the shown points' indices in the keyframe
    assert zv.selected_points([3, 0, 3, 7, -1, True, "2"], keep) == [5, 40]  # out of range, bools, strings dropped
    coloring = Coloring(np.array([0, 1, 0, 1, 0], np.uint8), np.array([[10, 10, 10], [20, 20, 20]], np.uint8))
    shown, legend = zv.mark_selections(coloring, [{"prompt": "car"}], keep,
                                       [("3D view", [40, 5]), ("Feature structure page", [12, 99]), ("elsewhere", [1])])
    assert (shown.rgb()[[0, 2, 3]] == SELECTED_RGB).all() and (shown.rgb()[[1, 4]] == coloring.rgb()[[1, 4]]).all()
    assert legend[-1]["prompt"] == "selected (3D view, Feature structure page)" and legend[-1]["points"] == 3
    assert zv.mark_selections(coloring, [], keep, [("3D view", [1, 2])]) == (coloring, [])  # none shown: unchanged

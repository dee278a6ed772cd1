"""The zero-shot page under AppTest: free-text queries reach the live view's legend, only mapped
queries are scored (checked against the page's own per-point colours), hostile queries get a clear
message and the page keeps working, the similarity view, switching students, and the split search
(one test: each AppTest page costs seconds)."""

import json

import numpy as np

from test_app import _page

HOSTILE = {
    "100k characters": "car " * 25_000,
    "control characters": "car\nbus\x07\x1b[31m",
    "only whitespace": "   \n\t\n  ",
    "right-to-left text": "\u202eرَاكِب دراجة",
    "emoji": "🚗🚲 = car\n🚌",
}


def _live(at) -> tuple[dict, np.ndarray]:
    """The live view's arguments (JSON) and its per-point colour indices (the bytes argument)."""
    (component,) = at.get("component_instance")
    args = json.loads(component.proto.json_args)
    (colors,) = [a.bytes for a in component.proto.special_args if a.key == "colors"]
    return args, np.frombuffer(colors, dtype=np.uint8)


def _legend(at) -> dict:
    return {row["prompt"]: row for row in _live(at)[0]["legend"] if "heat" not in row}


def _query(at, text):
    at.session_state["zs_queries"] = text
    return at.run()


def test_live_view_free_text_scoring_hostile_queries_and_split_search(app_workspace):
    at = _page("app_pages/zeroshot.py")
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    assert len(_legend(at)) == 17  # the 16 class names and the unassigned points

    _query(at, "ambulance = car\nwet road")
    assert not at.exception and not at.error
    legend = _legend(at)
    assert legend["ambulance"]["class"] == "car" and legend["ambulance"]["scored"]
    wet = legend["wet road"]
    assert wet["class"] is None and not wet["scored"] and wet["iou"] is None
    assert any("Not scored (no class): wet road" in c.value for c in at.caption)
    # the scored IoU, computed directly from the colours the page sends (index 0 = ambulance) and the truth
    args, index = _live(at)
    assert args["n"] == len(index)
    from relviz.data.dataset import NuScenesLidarSeg

    root = app_workspace / "datasets" / "synthetic-mini"
    truth = NuScenesLidarSeg(root, split="mini_val", load_images=False)[0]["labels"]
    assert len(truth) == len(index)  # every point is drawn (fewer than the 35k shown by default)
    known = truth > 0
    car, ambulance = truth[known] == 4, index[known] == 0
    union = (car | ambulance).sum()
    expected = (car & ambulance).sum() / union if union else None
    assert legend["ambulance"]["iou"] == expected or abs(legend["ambulance"]["iou"] - expected) < 1e-12
    miou = at.metric[0].value
    assert miou == ("n/a" if expected is None else f"{expected:.3f}")

    for case, text in HOSTILE.items():  # each run after the previous hostile one: the page keeps working
        _query(at, text)
        assert not at.exception, (case, at.exception)
        message = at.error[0].value if at.error else ""
        if message:  # refused: a short message naming the problem, also shown in the live view
            assert len(message) < 800 and _live(at)[0]["reply"].get("error") in (None, message), case
            assert any(w in message for w in ("characters", "control character", "at least one query")), (case, message)
        else:  # accepted as free text: the legend shows it
            first = text.splitlines()[0].rpartition("=")[0 if "=" in text.splitlines()[0] else 2].strip()
            assert first in _legend(at), (case, list(_legend(at)))
    _query(at, "Car\nroad = Driveable_Surface")
    assert not at.exception and not at.error
    assert set(_legend(at)) >= {"Car", "road"}

    at.radio(key="zs_mode").set_value("similarity to a query").run()
    heat = _live(at)[0]["legend"][0]
    assert heat["prompt"] == "Car" and heat["heat"][0] <= heat["heat"][1]

    # a message of the frame: its text becomes the queries, and the answer carries its timings
    at.session_state["zs_live"] = {"seq": 7, "text": "tree = vegetation\nlamp post", "cursor": 1, "focus": None,
                                   "commit": False, "key": 1.0, "sent": 2.0}
    at.run()
    args, _ = _live(at)
    reply = args["reply"]
    assert reply["seq"] == 7 and reply["text_ms"] >= 0 and reply["end"] >= reply["start"]
    assert at.session_state["zs_queries"] == "tree = vegetation\nlamp post"
    assert args["legend"][0]["prompt"] == "lamp post"  # the heat map follows the cursor's line

    # a legend row clicked (its prompt as "focus"): the page reruns once so that the radio shows the
    # heat map, and the message is still answered (the frame waits for its seq before sending more)
    at.radio(key="zs_mode").set_value("prediction").run()
    at.session_state["zs_live"] = {"seq": 8, "text": "tree = vegetation\nlamp post", "cursor": 1, "focus": "tree",
                                   "commit": False, "key": 3.0, "sent": 4.0}
    at.run()
    assert not at.exception, at.exception
    args, _ = _live(at)
    assert at.radio(key="zs_mode").value == "similarity to a query" and args["reply"]["seq"] == 8
    assert args["legend"][0]["prompt"] == "tree"  # the clicked row's heat map, not the cursor's line

    at.selectbox(key="zs_ckpt").set_value("test-contrastive").run()  # another student keeps the queries
    assert not at.exception and {"tree", "lamp post"} <= set(_legend(at))

    # search the split for the first query ("tree"), then open another keyframe it shows
    assert at.selectbox(key="zs_search_query").value == "tree"
    at.button(key="zs_search").click().run()
    assert not at.exception, at.exception
    assert any("keyframes" in c.value and "points searched" in c.value for c in at.caption)
    table = at.dataframe[0].value
    assert len(table) == 20 and table["similarity"].is_monotonic_decreasing
    current = at.selectbox(key="zs_sample").value
    other = [b for b in at.button if b.key and b.key.startswith("zs_open_") and b.key != f"zs_open_{current}"]
    assert other, "the search shows no other keyframe with a match"
    target = int(other[-1].key.rsplit("_", 1)[1])
    other[-1].click().run()
    assert not at.exception and at.selectbox(key="zs_sample").value == target


def test_query_colours_stay_stable_while_typing():
    from relviz.data.classes import CLASS_COLORS
    from relviz.viz.labelcolors import PALETTE, stable_colors

    first = stable_colors(["car", "wet road"], [4, 0])
    assert (PALETTE[first[0]] == CLASS_COLORS[4]).all()  # a class name starts with its nuScenes colour
    assert first[1] >= 16  # free text starts with a colour no class has
    shown = list(zip(["car", "wet road"], first))
    for typed in ("wet road s", "wet road sh", "wet roads"):  # the line being typed keeps its colour
        colors = stable_colors(["car", typed], [4, 0], shown)
        assert colors == first
        shown = list(zip(["car", typed], colors))
    # inserting a line above moves no colour; the new line takes a free one
    inserted = stable_colors(["bus", "car", "wet roads"], [3, 4, 0], shown)
    assert inserted[1:] == first and inserted[0] not in first
    # a replaced line (nothing in common with the old one) is a new query: a new colour
    replaced = stable_colors(["car", "ambulance"], [4, 0], shown)
    assert replaced[0] == first[0] and replaced[1] != first[1]
    assert len(set(stable_colors([f"q{i}" for i in range(len(PALETTE))], [0] * len(PALETTE)))) == len(PALETTE)


def test_colourings_index_their_tables():
    from relviz.viz.labelcolors import UNASSIGNED_RGB, query_coloring, similarity_coloring

    c = query_coloring(np.array([1, -1, 0, 1]), [20, 3])
    assert (c.rgb()[[0, 3]] == c.table[1]).all() and (c.rgb()[1] == UNASSIGNED_RGB).all()
    sim = np.random.default_rng(0).uniform(-0.3, 0.8, 1000)
    heat = similarity_coloring(sim, levels=64)
    # level = floor((s - min) / (max - min) * 64), the maximum in the top level: compared with numpy's digitize
    edges = np.linspace(sim.min(), sim.max(), 65)[1:-1]
    expected = np.digitize(sim, edges)
    near_edge = np.abs(sim[:, None] - edges[None]).min(1) < 1e-12  # rounding may put these either side
    assert (heat.index[~near_edge] == expected[~near_edge]).all() and heat.scale == (sim.min(), sim.max())


def test_class_names_use_the_cached_class_rows_and_free_text_the_teacher():
    """The page embeds a class name from the cached class embeddings and only free text with the
    teacher; both must equal relviz.teacher.text.embed_queries. A fake text encoder whose rows do not
    depend on the batch makes the two paths the same float operations on the same values: equal."""
    import hashlib

    import torch
    import torch.nn.functional as F

    from relviz.teacher.clip import ClipTeacher
    from relviz.teacher.text import embed_queries
    from relviz.viz.zeroshot_view import embed_prompts

    class Encoder:
        identity = "fake-encoder-for-test"
        calls: list[list[str]] = []
        _group_means = ClipTeacher._group_means  # ClipTeacher's own averaging over a group's prompts

        def encode_text(self, texts):
            self.calls.append(list(texts))
            seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in texts]
            return F.normalize(torch.stack([torch.randn(8, generator=torch.Generator().manual_seed(s)) for s in seeds]),
                               dim=1)

    teacher = Encoder()
    class_rows = ClipTeacher.class_embeddings(teacher)
    teacher.calls.clear()
    prompts = ["Car", "wet road", "driveable surface", "a person on a bicycle"]
    ours = embed_prompts(prompts, class_rows, lambda: teacher)
    from relviz.teacher.prompts import prompt_ensemble

    # the teacher read the free text's ensembles only, not the class names' (those come from the cache)
    assert [t for call in teacher.calls for t in call] == prompt_ensemble("wet road") + prompt_ensemble(
        "a person on a bicycle")
    assert torch.equal(ours, embed_queries(teacher, prompts))
    loaded = []
    embed_prompts(["car", "vegetation"], class_rows, lambda: loaded.append(1))
    assert not loaded  # class names alone never load the teacher

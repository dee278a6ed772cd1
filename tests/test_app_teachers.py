"""Teachers side by side on the Feature structure page: a stored `relviz eval teachers` result is
shown with the stored numbers (names, U/T/G with intervals or per-scene values, CKA), a teacher with
random weights is said to be one, and without a stored result the page says what to run."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from streamlit.testing.v1 import AppTest

from relviz.eval.features import with_pairs
from relviz.eval.teachers import compare_teacher_vals, save_comparison, stored_comparisons
from relviz.viz import teachers as tv
from support import trace_values

ROOT = Path(__file__).resolve().parents[1]
PAGE_LINES = 100  # issue 31: no page file over 100 lines


def _vals(n_scenes: int, n: int = 240, seed: int = 0) -> tuple[dict, dict]:
    """Three teachers' validation features at the same n points of n_scenes one-keyframe scenes
    (as gather_teacher_val_features gives them), and their class text ([16, D] or None)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(1, 6, (n,), generator=gen)
    keyframe = torch.arange(n) % n_scenes
    centres = torch.randn(6, 16, generator=gen)
    base = centres[labels] + 0.8 * torch.randn(n, 16, generator=gen)
    features = {"clip": base, "siglip": base @ torch.randn(16, 12, generator=gen) + 0.5 * torch.randn(n, 12, generator=gen),
                "dino": torch.randn(n, 8, generator=gen)}
    vals = {name: with_pairs({"features": f, "labels": labels, "keyframe": keyframe, "pair_index": torch.arange(n),
                              "pair_teacher": f, "keyframe_scene": torch.arange(n_scenes),
                              "keyframe_index": torch.arange(n_scenes)}) for name, f in features.items()}
    text = {"clip": F.normalize(torch.randn(16, 16, generator=gen), dim=1),
            "siglip": F.normalize(torch.randn(16, 12, generator=gen), dim=1), "dino": None}
    return vals, text


def _store(root: Path, cache: Path, n_scenes: int, names=("clip", "siglip", "dino")) -> dict:
    """A comparison of the teachers ``names`` stored for ``root`` (the DINOv2 one with random weights)."""
    vals, text = _vals(n_scenes)
    result = compare_teacher_vals({n: vals[n] for n in names}, text, per_class=40, seed=0, n_resamples=200)
    for name, t in result["teachers"].items():
        t.update(weights=None if name == "dino" else f"/w/{name}.bin", random_weights=name == "dino")
    save_comparison({**result, "eval_set": {"scenes": n_scenes, "per_scene": 1, "seed": 0}}, cache, root,
                    "v1.0-mini", "mini_val")
    return stored_comparisons(cache, root, "v1.0-mini", "mini_val")[0]


def _section():
    """The section alone, as the structure page calls it (the rest of that page computes features)."""
    from app_pages.teachers_section import teachers_side_by_side
    from relviz.config import load_settings

    s = load_settings()
    teachers_side_by_side(s, s.dataset_root())


def _rendered(home: Path) -> AppTest:
    (home / "datasets" / "synthetic-mini").mkdir(parents=True, exist_ok=True)
    at = AppTest.from_function(_section, default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def _matrix(value) -> list[list[float]]:
    """A heatmap's z as the page sent it: a typed buffer with its shape (numpy) or nested lists."""
    if isinstance(value, dict):
        shape = [int(x) for x in value["shape"].split(",")]
        return np.asarray(trace_values(value)).reshape(shape).tolist()
    return [list(row) for row in value]


def _chart(at: AppTest, title: str) -> dict:
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return next(c for c in charts if c["layout"]["title"]["text"] == title)


@pytest.mark.parametrize("n_scenes", [12, 3])
def test_the_section_shows_the_stored_numbers(workspace_home, n_scenes):
    home = Path(workspace_home)
    stored = _store(home / "datasets" / "synthetic-mini", home / "cache", n_scenes)
    at = _rendered(home)
    table = at.dataframe[0].value.set_index("teacher")
    assert list(table.index) == ["clip", "siglip", "dino (random weights)"]
    assert list(table["weights"]) == ["/w/clip.bin", "/w/siglip.bin", "random"]
    assert "dino: random weights" in at.warning[0].value
    for name, label in zip(stored["teachers"], table.index):
        protocol = stored["teachers"][name]["protocol"]
        for metric, column in tv.COLUMNS.items():
            cell = table.loc[label, column]
            if metric not in protocol:  # G to text of a text-less teacher
                assert name == "dino" and metric == "gap_text" and cell == "-"
                continue
            assert cell.split()[0] == f"{protocol[metric]:.3f}"
            if n_scenes >= 10:  # an interval over scenes: the stored one
                ci = protocol["intervals"][metric]
                assert cell.endswith(f"[{ci['low']:.3f}, {ci['high']:.3f}]")
            else:  # no interval under 10 scenes: each scene's value ("-": U of a one-keyframe scene)
                assert protocol["intervals"] is None and "(scenes: " in cell
                assert cell.count(",") == n_scenes - 1
    assert ("Intervals: 95% bootstrap over 12 scenes" if n_scenes >= 10 else "No intervals: 3 scenes") in at.caption[0].value
    # the CKA heatmap holds the stored CKA of every pair, symmetric, 1 on the diagonal
    z = _matrix(_chart(at, "Linear CKA at the same points")["data"][0]["z"])
    names = list(stored["teachers"])
    for pair in stored["pairs"]:
        i, j = names.index(pair["a"]), names.index(pair["b"])
        assert z[i][j] == z[j][i] == pair["cka"]
    assert [z[i][i] for i in range(3)] == [1.0, 1.0, 1.0]
    pairs = at.dataframe[1].value
    assert list(pairs["CKA"]) == [f"{p['cka']:.3f}" for p in stored["pairs"]]
    # each teacher's class relations, as stored
    relations = _chart(at, "Class-centroid cosine similarities")["data"]
    assert _matrix(relations[0]["z"]) == stored["teachers"]["clip"]["centroid_similarity"]


def test_without_a_stored_result_the_section_says_what_to_run(workspace_home):
    at = _rendered(Path(workspace_home))
    message = at.info[0].value
    assert "No comparison of teachers is stored" in message and "relviz eval teachers --dataset synthetic-mini" in message
    assert not at.dataframe and not at.get("plotly_chart")


def test_one_teacher_has_no_cka_and_says_so(workspace_home):
    home = Path(workspace_home)
    _store(home / "datasets" / "synthetic-mini", home / "cache", 3, names=("clip",))
    at = _rendered(home)
    assert list(at.dataframe[0].value["teacher"]) == ["clip"] and len(at.dataframe) == 1 and not at.warning
    assert any("One teacher: no CKA" in c.value for c in at.caption)
    assert [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")] == [
        "Class-centroid cosine similarities"]


def test_several_stored_results_are_offered_newest_first(workspace_home):
    home = Path(workspace_home)
    _store(home / "datasets" / "synthetic-mini", home / "cache", 3)
    newest = _store(home / "datasets" / "synthetic-mini", home / "cache", 12)
    at = _rendered(home)
    stored = stored_comparisons(home / "cache", home / "datasets" / "synthetic-mini", "v1.0-mini", "mini_val")
    choice = at.selectbox(key="teachers_result")
    assert choice.options == [tv.result_label(r) for r in stored] and len(stored) == 2
    assert choice.index == 0 and stored[0]["eval_set"] == newest["eval_set"]  # the newest is shown first
    assert "12 scenes" in at.caption[0].value
    choice.set_value(1).run()
    assert "No intervals: 3 scenes" in at.caption[0].value


def test_the_structure_page_shows_the_section_and_stays_under_100_lines(app_workspace):
    from relviz.config import load_settings

    s = load_settings()
    stored = _store(s.dataset_root("synthetic-mini"), s.cache_dir, 3)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    at.run()
    at.switch_page("app_pages/structure.py").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(at.metric) == 4 and at.expander[0].label.startswith("Teachers side by side")  # the rest renders too
    assert list(at.dataframe[0].value["teacher"]) == list(tv.labels(stored).values())
    for page in (ROOT / "app_pages").glob("*.py"):
        if page.name in ("structure.py", "teachers_section.py"):
            assert len(page.read_text().splitlines()) < PAGE_LINES, page.name

"""Open vocabulary: free label sets, prompt ensembles for free text, the unlabelled rule, scoring over
mapped queries only, and the demo teacher's vocabulary."""

import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fp_bounds import U32, gamma
from relviz.data.classes import CLASSES
from relviz.errors import InputError
from relviz.eval import confusion_matrix
from relviz.eval.zeroshot import (MISSED, UNASSIGNED, LabelSet, Query, assign_by_text, evaluate_zeroshot,
                                  label_set_scores, parse_queries, scored_prediction, segment_by_queries)
from relviz.teacher import TeacherSpec
from relviz.teacher import text as text_module
from relviz.teacher.prompts import TEMPLATES, demo_vocabulary, words
from relviz.teacher.text import clear_query_cache, embed_queries, teacher_vocabulary, unseen_words

D = 8


class FixedTextTeacher:
    """A test double for a teacher's text side: every string has a fixed random unit vector (seeded
    by its CRC), float32 as a teacher returns them; it records what it was asked to encode."""

    def __init__(self, identity: str):
        self.identity, self.calls = identity, []

    @staticmethod
    def vector64(text: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(zlib.crc32(text.encode()))
        return F.normalize(torch.randn(D, generator=g, dtype=torch.float64), dim=0)

    def encode_text(self, prompts):
        self.calls.append(list(prompts))
        return torch.stack([self.vector64(p) for p in prompts]).float()


# ---------------------------------------------------------------------------------------- parsing
def test_parse_queries_accepts_free_text_and_mappings():
    labels = parse_queries("Car\nambulance=car\na person on a bicycle\n\u202eرَاكِب دراجة\n🚗🚲\n"
                           "road = Driveable_Surface\n# a comment\nsky = Background\n", threshold=0.25)
    assert labels.queries == (Query("Car", "car"), Query("ambulance", "car"), Query("a person on a bicycle"),
                              Query("\u202eرَاكِب دراجة"), Query("🚗🚲"), Query("road", "driveable_surface"))
    assert labels.background == ("sky",) and labels.threshold == 0.25
    assert [q.prompt for q in labels.scored] == ["Car", "ambulance", "road"]
    assert labels.classes == (CLASSES.index("car"), CLASSES.index("driveable_surface"))
    assert labels.class_of_query().tolist() == [4, 4, 0, 0, 0, 11]


@pytest.mark.parametrize("text, expected", [
    ("car " * 3_000, ["12,000 characters", "at most 10,000"]),
    ("a" * 400, ["line 1", "at most 300"]),
    ("car\nbus\x07\x1b[31m", ["line 2", "control character U+0007"]),
    ("   \n\t\n  ", ["at least one query"]),
    ("= car", ["line 1", "prompt before '=' is empty"]),
    ("ambulance = spaceship", ["line 1", "'spaceship' is not one of the 16 classes", "leave it unscored"]),
    ("car\nCar", ["line 2", "repeats line 1"]),
    ("sky = background", ["at least one query"]),
])
def test_parse_queries_refuses_hostile_text_clearly(text, expected):
    with pytest.raises(InputError) as e:
        parse_queries(text)
    for part in expected:
        assert part in str(e.value)
    assert len(str(e.value)) < 400  # the input is never echoed whole


@pytest.mark.parametrize("threshold", [1.5, float("nan"), "high", True])
def test_label_set_refuses_a_threshold_that_is_no_cosine(threshold):
    with pytest.raises(InputError, match="cosine similarity from -1 to 1"):
        LabelSet((Query("car", "car"),), threshold=threshold)


# ------------------------------------------------------------------------------------- prediction
def _reference_text(prompts):
    """Per prompt: the mean of its normalised template embeddings, normalised (float64)."""
    rows = [F.normalize(torch.stack([FixedTextTeacher.vector64(t.format(p)) for t in TEMPLATES]).mean(0), dim=0)
            for p in prompts]
    return torch.stack(rows)


def _cosine_error(prompts) -> float:
    """Bound on |float32 cosine - float64 reference|. Each template vector is rounded to float32 (u
    per entry); their mean of 4 adds gamma(5); normalising a mean of norm r moves it by <= 2 x its
    error / r, and the library normalises again ((D + 3) u); the point's normalisation is (D + 3) u,
    the D-term dot product of two unit vectors gamma(D). x2 safety."""
    r = min(torch.stack([FixedTextTeacher.vector64(t.format(p)) for t in TEMPLATES]).mean(0).norm().item()
            for p in prompts)
    text = 2 * (U32 + gamma(5, torch.float32)) / r + (D + 3) * U32
    return 2 * (text + (D + 3) * U32 + gamma(D, torch.float32))


def test_free_text_prediction_equals_argmax_of_cosine_over_ensembles_with_threshold():
    teacher = FixedTextTeacher("fixed-text-1")
    labels = parse_queries("ambulance = car\nwet road\na person on a bicycle", threshold=0.1)
    feats = torch.randn(400, D, generator=torch.Generator().manual_seed(1)) * 3  # not unit: cosine normalises
    query, best = segment_by_queries(feats, teacher, labels)

    cos = F.normalize(feats.double(), dim=1) @ _reference_text(labels.prompts).T
    ref_best, ref_query = cos.max(1)
    ref_query[ref_best < 0.1] = UNASSIGNED
    err = _cosine_error(labels.prompts)
    top2 = cos.topk(2, dim=1).values
    # the comparison decides every point: no top-2 margin and no distance to the threshold within the error
    assert ((top2[:, 0] - top2[:, 1]) > 2 * err).all() and ((ref_best - 0.1).abs() > err).all()
    assert torch.equal(query, ref_query)
    assert 0 < (query == UNASSIGNED).sum() < len(query)  # the threshold matters here
    torch.testing.assert_close(best.double(), ref_best, rtol=0, atol=err)


def test_background_prompts_unassign_the_points_closest_to_them():
    teacher = FixedTextTeacher("fixed-text-2")
    labels = parse_queries("car\nwet road\nsky = background\nbuilding facade = background")
    # points near each query's and each background prompt's embedding (the ensembles, by reference)
    centres = _reference_text(["car", "wet road", "sky", "building facade"]).float()
    noise = 0.05 * torch.randn(4, 5, D, generator=torch.Generator().manual_seed(2))
    feats = (centres[:, None] + noise).reshape(-1, D)
    query, best = segment_by_queries(feats, teacher, labels)
    cos = F.normalize(feats.double(), dim=1)
    to_queries = cos @ _reference_text(["car", "wet road"]).T
    to_background = cos @ _reference_text(["sky", "building facade"]).T
    # "car" expands to its class ensemble (detail "car"), the same texts as for free text here
    expected = torch.where(to_background.max(1).values > to_queries.max(1).values, UNASSIGNED,
                           to_queries.argmax(1))
    assert torch.equal(query, expected)
    assert query.tolist() == [0] * 5 + [1] * 5 + [UNASSIGNED] * 10
    torch.testing.assert_close(best.double(), to_queries.max(1).values, rtol=0,
                               atol=_cosine_error(["wet road", "sky", "building facade"]))
    # with no rule every point gets a query
    assert (assign_by_text(feats, embed_queries(teacher, ["car", "wet road"]))[0] != UNASSIGNED).all()


def test_assign_by_text_chunks_and_refuses_other_dimensions():
    teacher = FixedTextTeacher("fixed-text-3")
    feats = torch.randn(50, D, generator=torch.Generator().manual_seed(3))
    text = embed_queries(teacher, ["a", "b", "c"])
    whole = assign_by_text(feats, text, threshold=0.2)
    chunked = assign_by_text(feats, text, threshold=0.2, chunk=7)
    # the same D-term dot products of unit vectors, which BLAS may block differently by chunk size:
    # within 2 gamma(D) of each other; every point's decision lies further than that from a tie
    bound = 2 * gamma(D, torch.float32)
    cos = F.normalize(feats, dim=1) @ text.T
    top2 = cos.topk(2, dim=1).values
    assert ((top2[:, 0] - top2[:, 1]) > 2 * bound).all() and ((top2[:, 0] - 0.2).abs() > 2 * bound).all()
    assert torch.equal(whole[0], chunked[0])
    torch.testing.assert_close(whole[1], chunked[1], rtol=0, atol=bound)
    # features normalised once by the caller (the live view's per-keystroke path): the same decisions, and
    # the same similarities within the bound (the normalisation is the same row-wise operation)
    kept = assign_by_text(F.normalize(feats.float(), dim=1), text, threshold=0.2, chunk=7, unit_rows=True)
    assert torch.equal(whole[0], kept[0])
    torch.testing.assert_close(whole[1], kept[1], rtol=0, atol=bound)
    with pytest.raises(InputError, match="dimension 8 but the text embeddings 5"):
        assign_by_text(feats, torch.ones(2, 5))


def test_embed_queries_caches_per_prompt_and_evicts_the_oldest(monkeypatch):
    clear_query_cache()
    teacher = FixedTextTeacher("fixed-text-4")
    first = embed_queries(teacher, ["wet road", "car"])
    again = embed_queries(teacher, ["car", "parked car", "wet road"])
    assert teacher.calls[1] == [t.format("parked car") for t in TEMPLATES]  # only the new prompt is encoded
    assert torch.equal(again[0], first[1]) and torch.equal(again[2], first[0])
    monkeypatch.setattr(text_module, "CACHE_SIZE", 2)  # recency now: car, wet road, parked car (newest)
    embed_queries(teacher, ["bus"])  # keeps the 2 most recent: parked car, bus
    embed_queries(teacher, ["bus", "car"])  # car was evicted: encoded again; parked car is evicted now
    assert teacher.calls[-1] == [t.format("car") for t in TEMPLATES]
    embed_queries(teacher, ["bus", "parked car"])
    assert teacher.calls[-1] == [t.format("parked car") for t in TEMPLATES] and len(teacher.calls) == 5


# ---------------------------------------------------------------------------------------- scoring
def test_scores_cover_only_mapped_queries_and_misses_count():
    labels = parse_queries("ambulance = car\nroad = driveable surface\nwet road")
    car, road, bus = CLASSES.index("car"), CLASSES.index("driveable_surface"), CLASSES.index("bus")
    gt = torch.tensor([car, car, car, car, road, road, road, bus, bus, 0, 0])
    query = torch.tensor([0, 0, UNASSIGNED, 2, 1, 1, 0, 0, 2, 0, 1])
    pred = scored_prediction(query, labels)
    assert pred.tolist() == [car, car, MISSED, MISSED, road, road, car, car, MISSED, car, road]
    scores = label_set_scores(confusion_matrix(pred, gt, num_classes=MISSED + 1), labels)
    assert set(scores["iou"]) == {"car", "driveable_surface"}  # no bus: no query is scored as one
    assert scores["scored_queries"] == ["ambulance", "road"] and scores["unscored_queries"] == ["wet road"]

    def iou(c):  # by hand: points of class 0 are ignored; unassigned or unscored = a miss
        known = gt != 0
        tp = ((gt == c) & (pred == c)).sum().item()
        fp = (known & (gt != c) & (pred == c)).sum().item()
        fn = ((gt == c) & (pred != c)).sum().item()
        return tp / (tp + fp + fn)

    # car: tp 2, fp 2 (a road point, a bus point), fn 2 (unassigned, unscored): 2/6; road: 2/3
    # (one division of exact counts each: exact)
    assert scores["iou"]["car"] == iou(car) == 2 / 6 and scores["iou"]["driveable_surface"] == iou(road) == 2 / 3
    # a mean of 2 values <= 1: gamma(2) for the order, both sides
    assert scores["miou"] == pytest.approx((2 / 6 + 2 / 3) / 2, rel=0, abs=2 * gamma(2))
    nothing = label_set_scores(confusion_matrix(pred, gt, num_classes=MISSED + 1), parse_queries("wet road"))
    assert nothing["miou"] is None and nothing["iou"] == {} and nothing["unscored_queries"] == ["wet road"]


class PointwiseStudent(torch.nn.Module):
    """A stand-in student without sparse convolutions (a real one takes seconds per keyframe here): a
    fixed random linear map of each voxel's input features and coordinates."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.linear = torch.nn.Linear(in_channels + 4, D)

    def forward(self, x):
        return SimpleNamespace(features=self.linear(torch.cat([x.features, x.coordinates.float()], 1)))


def test_evaluate_zeroshot_with_a_label_set_scores_the_mapped_classes(nusc):
    from torch.utils.data import Subset

    from relviz.data import NuScenesLidarSeg
    from relviz.data.dataset import collate
    from relviz.eval.features import student_voxel_features

    ds = Subset(NuScenesLidarSeg(None, split="mini_val", nusc=nusc, load_images=False), [0])
    batch = collate([ds[0]])
    model = PointwiseStudent(batch["features"].shape[1]).eval()
    teacher = FixedTextTeacher("fixed-text-5")
    labels = parse_queries("Car\nroad = driveable surface\nwet road\nsky = background", threshold=-0.5)
    result = evaluate_zeroshot(model, teacher, ds, queries=labels)

    with torch.inference_mode():
        feats = student_voxel_features(model, batch)[batch["inverse"]]
    query, _ = segment_by_queries(feats, teacher, labels)  # checked against a direct computation above
    gt, pred = batch["labels"], scored_prediction(query, labels)
    known = gt != 0
    assert set(result["iou"]) == {"car", "driveable_surface"} and result["unscored_queries"] == ["wet road"]
    for name, c in (("car", CLASSES.index("car")), ("driveable_surface", CLASSES.index("driveable_surface"))):
        tp = ((gt == c) & (pred == c)).sum().item()
        union = ((gt == c) | (known & (pred == c))).sum().item()
        assert result["iou"][name] == (tp / union if union else None)  # one division of exact counts
    assert result["query_points"] == {p: int((query == i).sum()) for i, p in enumerate(labels.prompts)}
    assert result["unassigned"] == (query[known] == UNASSIGNED).sum().item() / known.sum().item()  # same division


# --------------------------------------------------------------------------- the demo teacher's text
@pytest.fixture(scope="module")
def demo_teacher():
    from relviz.teacher.demo import load_demo_teacher

    return load_demo_teacher()


def test_embed_queries_of_class_names_equals_class_embeddings(demo_teacher):
    clear_query_cache()
    names = [c.replace("_", " ") for c in CLASSES[1:]]
    # the same texts in the same one batch, then the same mean and normalisation: identical
    assert torch.equal(embed_queries(demo_teacher, names), demo_teacher.class_embeddings().cpu())
    free = embed_queries(demo_teacher, ["wet road"])[0]
    direct = F.normalize(demo_teacher.encode_text([t.format("wet road") for t in TEMPLATES]).mean(0), dim=0)
    assert torch.equal(free, direct.cpu())  # the same templates for free text, the same batch
    # right-to-left text and emoji go through the tokenizer as any text: unit vectors (normalising a
    # D-vector leaves its norm within (D + 3) u of 1, as in test_teacher; x2 safety)
    odd = embed_queries(demo_teacher, ["\u202eرَاكِب دراجة", "🚗🚲", "👨\u200d👩\u200d👧 family"])
    torch.testing.assert_close(odd.norm(dim=1), torch.ones(3), rtol=0, atol=2 * (demo_teacher.dim + 3) * U32)


def test_demo_vocabulary_is_the_training_prompts_and_flags_unseen_words(demo_teacher):
    from relviz.teacher.demo import _random_prompts

    gen = torch.Generator().manual_seed(0)
    # the words of the prompts the trainer draws; 400 draws miss a given (detail, template) pair with
    # probability <= (1 - 1/8)^400 < 1e-23
    drawn = {w for _ in range(400) for p in _random_prompts(gen) for w in words(p)}
    vocabulary = teacher_vocabulary(TeacherSpec())
    assert vocabulary == frozenset(drawn) == demo_vocabulary() == teacher_vocabulary(demo_teacher)
    assert unseen_words("a person on a bicycle", vocabulary) == ("on",)
    assert unseen_words("Ambulance, ambulance!", vocabulary) == ("ambulance", ",", "!")
    assert unseen_words("🚗 tree", vocabulary) == ("🚗",)
    assert unseen_words("Driveable_Surface", vocabulary) == ()  # a class name: embedded by its detail names
    assert teacher_vocabulary(TeacherSpec("ViT-B-16", "openai")) is None
    assert unseen_words("ambulance", None) == ()

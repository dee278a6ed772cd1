"""Prompt aggregation (issue #26 item 8): the class list scored by the mean prototype per class, or by
OpenScene's max over detail names mapped to their class; every result names which."""

import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fp_bounds import U32, gamma
from relviz.data.classes import CLASSES
from relviz.errors import InputError
from relviz.eval.zeroshot import (LabelSet, assign_by_text, evaluate_zeroshot, parse_queries, predict_by_text,
                                  segment_by_queries)
from relviz.segmentation import confusion_matrix
from relviz.teacher.clip import ClipTeacher
from relviz.teacher.prompts import (AGGREGATIONS, DEFAULT_AGGREGATION, OPENSCENE_TEMPLATES, TEMPLATES,
                                    check_aggregation, detail_classes, detail_names)
from relviz.teacher.text import build_text_classifier, clear_query_cache, embed_query_rows, text_classifier

D = 24

# OpenScene's dataset/label_constants.py (pengsongyou/openscene), copied as the reference
OPENSCENE_DETAILS = ('barrier', 'barricade', 'bicycle', 'bus', 'car', 'bulldozer', 'excavator', 'concrete mixer',
                     'crane', 'dump truck', 'motorcycle', 'person', 'pedestrian', 'traffic cone', 'trailer',
                     'semi trailer', 'cargo container', 'shipping container', 'freight container', 'truck', 'road',
                     'curb', 'traffic island', 'traffic median', 'sidewalk', 'grass', 'grassland', 'lawn', 'meadow',
                     'turf', 'sod', 'building', 'wall', 'pole', 'awning', 'tree', 'trunk', 'tree trunk', 'bush',
                     'shrub', 'plant', 'flower', 'woods')
OPENSCENE_MAPPING = (0, 0, 1, 2, 3, 4, 4, 4, 4, 4, 5, 6, 6, 7, 8, 8, 8, 8, 8, 9, 10, 11, 11, 11, 12, 13, 13, 13, 13,
                     13, 13, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15)  # 0-based; relviz's class 0 is ignore


class FixedTextClip(ClipTeacher):
    """ClipTeacher's text side on a fixed text encoder: every string has a random unit vector seeded by
    its CRC (float64, returned as float32 as a teacher does); no image tower is built."""

    def __init__(self, identity: str):
        self._name = identity

    @property
    def identity(self) -> str:
        return self._name

    @staticmethod
    def vector64(text: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(zlib.crc32(text.encode()))
        return F.normalize(torch.randn(D, generator=g, dtype=torch.float64), dim=0)

    def encode_text(self, prompts):
        return torch.stack([self.vector64(p) for p in prompts]).float()


def _unit_rows(n: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1)


def _points_near(rows: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n unit points, each a random row plus noise of about its size: the winning row is clear (far
    beyond float error) yet not always the row it started from."""
    g = torch.Generator().manual_seed(seed)
    start = rows[torch.randint(len(rows), (n,), generator=g)]
    return F.normalize(start + 0.25 * torch.randn(n, D, generator=g, dtype=torch.float64), dim=1)


def _template_mean64(name: str) -> torch.Tensor:
    """[D] float64: the mean (not normalised) of ``name``'s fixed vectors under the relviz templates."""
    return torch.stack([FixedTextClip.vector64(t.format(name)) for t in TEMPLATES]).mean(0)


def _decided(scores: torch.Tensor, err: float) -> bool:
    """Whether every row's top-2 scores are further apart than the float error of either side."""
    top2 = scores.topk(2, dim=1).values
    return bool(((top2[:, 0] - top2[:, 1]) > 2 * err).all())


def _row_error(r: float) -> float:
    """The float32 error of a text row, the normalised mean of 4 float32 unit vectors whose mean has
    norm r: each vector is within U32 of its float64 value, the mean adds gamma(5), normalising
    scales that by 1 / r and adds (D + 3) u."""
    return (U32 + gamma(len(TEMPLATES) + 1, torch.float32)) / r + (D + 3) * U32


# a float32 cosine of two D-vectors of norm <= 1 against the float64 one: the dot product's order
# gamma(D), the rounding of each operand to float32 (2 U32), normalising them again as assign_by_text
# does (2 (D + 3) U32); x2 safety
DOT_ERR = 2 * (gamma(D, torch.float32) + 2 * U32 + 2 * (D + 3) * U32)


def test_detail_names_and_mapping_are_openscenes():
    assert tuple(detail_names()) == OPENSCENE_DETAILS
    assert detail_classes() == [m + 1 for m in OPENSCENE_MAPPING]
    assert OPENSCENE_TEMPLATES == ("a {} in a scene",)  # util.util.extract_text_feature with prompt_eng
    # "mean" for now: one default with the structure protocol and its caches (relviz/teacher/prompts.py says why)
    assert set(AGGREGATIONS) == {"mean", "max"} and DEFAULT_AGGREGATION == "mean"


def test_max_equals_argmax_over_details_then_openscenes_mapping():
    details, classes = _unit_rows(43, 1), _unit_rows(16, 2)
    feats = _points_near(details, 300, 3)
    classifier = build_text_classifier("max", classes.float(), details.float())
    assert classifier.aggregation == "max" and classifier.row_names == OPENSCENE_DETAILS
    scores = feats @ details.T  # float64 reference
    assert _decided(scores, DOT_ERR)  # no point within the float error of a tie: the argmax is exact
    expected = torch.tensor(OPENSCENE_MAPPING)[scores.argmax(1)] + 1
    assert torch.equal(predict_by_text(feats.float(), classifier), expected)
    # the same as passing the rows and their classes by hand
    assert torch.equal(predict_by_text(feats.float(), details.float(), torch.tensor(detail_classes())), expected)


def test_mean_is_todays_argmax_over_the_class_prototypes():
    details, classes = _unit_rows(43, 4), _unit_rows(16, 5)
    feats = _points_near(classes, 300, 6)
    classifier = build_text_classifier("mean", classes.float(), details.float())
    assert classifier.embeddings.shape == (16, D) and classifier.row_names == CLASSES[1:]
    scores = feats @ classes.T
    assert _decided(scores, DOT_ERR)
    expected = scores.argmax(1) + 1
    assert torch.equal(predict_by_text(feats.float(), classifier), expected)
    assert torch.equal(predict_by_text(feats.float(), classes.float()), expected)  # the [16, D] call of before
    # the detail rows are not used by "mean"; the class rows (G's text side) are kept by both
    assert torch.equal(build_text_classifier("mean", classes.float()).embeddings, classifier.embeddings)
    assert torch.equal(build_text_classifier("max", classes.float(), details.float()).class_embeddings,
                       classifier.class_embeddings)


def test_heterogeneous_class_max_and_mean_disagree_as_expected():
    # vegetation's 8 names point in 8 orthogonal directions e0..e7 (they "lie apart"); terrain's 6 names
    # all point at normalise(e0 + e8); every other detail name at e9, orthogonal to both
    basis = torch.eye(D, dtype=torch.float64)
    details = basis[9].repeat(43, 1)
    veg = [i for i, c in enumerate(detail_classes()) if c == CLASSES.index("vegetation")]
    terrain = [i for i, c in enumerate(detail_classes()) if c == CLASSES.index("terrain")]
    assert len(veg) == 8 and len(terrain) == 6
    details[veg] = basis[:8]
    details[terrain] = F.normalize(basis[0] + basis[8], dim=0)
    cls = torch.tensor(detail_classes())
    prototypes = F.normalize(torch.stack([details[cls == c].mean(0) for c in range(1, 17)]), dim=1)
    # a point exactly on the detail "tree" (e0): cos 1 with "tree", but only 1/sqrt(8) = 0.35 with the
    # vegetation prototype, less than its 1/sqrt(2) = 0.71 with terrain; a point on the vegetation
    # centre is vegetation under both
    tree, centre = basis[0], F.normalize(basis[:8].sum(0), dim=0)
    feats = torch.stack([tree, centre]).float()
    by_max = predict_by_text(feats, build_text_classifier("max", prototypes.float(), details.float()))
    by_mean = predict_by_text(feats, build_text_classifier("mean", prototypes.float(), details.float()))
    assert by_max.tolist() == [CLASSES.index("vegetation")] * 2
    assert by_mean.tolist() == [CLASSES.index("terrain"), CLASSES.index("vegetation")]


def test_teacher_detail_embeddings_are_each_names_template_mean():
    teacher = FixedTextClip("fixed-clip-1")
    rows = teacher.detail_embeddings()
    means = torch.stack([_template_mean64(d) for d in detail_names()])
    reference = F.normalize(means, dim=1)
    tol = 2 * _row_error(means.norm(dim=1).min().item())
    torch.testing.assert_close(rows.double(), reference, rtol=0, atol=tol)
    # OpenScene's text features: each name under its one template, unit norm
    one = teacher.detail_embeddings(OPENSCENE_TEMPLATES)
    torch.testing.assert_close(one.double(), torch.stack([FixedTextClip.vector64(f"a {d} in a scene")
                                                          for d in detail_names()]), rtol=0, atol=2 * (D + 4) * U32)
    # text_classifier reads both from the teacher
    classifier = text_classifier(teacher, "max")
    assert torch.equal(classifier.embeddings, rows) and torch.equal(classifier.class_embeddings,
                                                                      teacher.class_embeddings())
    assert torch.equal(text_classifier(teacher, "mean").embeddings, teacher.class_embeddings())


def test_bad_aggregations_and_arguments_are_refused():
    with pytest.raises(InputError, match=r"prompt aggregation 'median': expected one of 'mean', 'max'"):
        check_aggregation("median")
    with pytest.raises(InputError, match="prompt aggregation"):
        text_classifier(FixedTextClip("fixed-clip-2"), "MAX")
    with pytest.raises(InputError, match="needs the 43 detail-name embeddings"):
        build_text_classifier("max", _unit_rows(16, 7).float())
    classifier = build_text_classifier("mean", _unit_rows(16, 7).float())
    with pytest.raises(InputError, match="pass no class_of_prompt"):
        predict_by_text(torch.ones(2, D), classifier, torch.arange(16))
    with pytest.raises(InputError, match="query_of_row"):
        assign_by_text(torch.ones(2, D), _unit_rows(3, 8).float(), query_of_row=torch.tensor([0, 2, 2]))


def test_class_name_queries_expand_under_max_and_free_text_does_not_change():
    clear_query_cache()
    teacher = FixedTextClip("fixed-clip-3")
    labels = parse_queries("vegetation\nwet road\nambulance = car")
    rows, prompt_of_row = embed_query_rows(teacher, labels.prompts, "max")
    assert prompt_of_row.tolist() == [0] * 8 + [1, 2]  # vegetation's 8 detail names; free text one row each
    feats = F.normalize(torch.randn(300, D, generator=torch.Generator().manual_seed(9), dtype=torch.float64), dim=1)
    query, best = segment_by_queries(feats.float(), teacher, labels, "max")
    # reference in float64: a query's similarity is the max over its rows, each a name's template mean
    means = torch.stack([_template_mean64(d) for d in ("tree", "trunk", "tree trunk", "bush", "shrub", "plant",
                                                       "flower", "woods", "wet road", "ambulance")])
    sims = feats @ F.normalize(means, dim=1).T
    cos = torch.stack([sims[:, :8].amax(1), sims[:, 8], sims[:, 9]], 1)
    err = DOT_ERR + 2 * _row_error(means.norm(dim=1).min().item())  # x2 safety on the rows' error
    assert _decided(cos, err)
    assert torch.equal(query, cos.argmax(1))
    torch.testing.assert_close(best.double(), cos.amax(1), rtol=0, atol=err)
    # free text alone: the same rows and the same assignment under both aggregations
    only_free = parse_queries("wet road\nambulance = car")
    for a, b in zip(segment_by_queries(feats.float(), teacher, only_free, "max"),
                    segment_by_queries(feats.float(), teacher, only_free, "mean")):
        assert torch.equal(a, b)


class _PointwiseStudent(torch.nn.Module):
    """A fixed random linear map of each voxel's inputs and coordinates (no sparse convolutions)."""

    def __init__(self, in_channels: int):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(in_channels + 4, D)

    def forward(self, x):
        from types import SimpleNamespace

        return SimpleNamespace(features=self.linear(torch.cat([x.features, x.coordinates.float()], 1)))


def test_evaluate_zeroshot_names_its_aggregation_and_scores_it(nusc):
    from torch.utils.data import Subset

    from relviz.data import NuScenesLidarSeg
    from relviz.data.dataset import collate
    from relviz.eval.features import student_voxel_features
    from relviz.eval.zeroshot import scored_prediction

    clear_query_cache()
    ds = Subset(NuScenesLidarSeg(None, split="mini_val", nusc=nusc, load_images=False), [0])
    batch = collate([ds[0]])
    model = _PointwiseStudent(batch["features"].shape[1]).eval()
    teacher = FixedTextClip("fixed-clip-4")
    with torch.inference_mode():
        feats = student_voxel_features(model, batch)[batch["inverse"]]
    gt = batch["labels"]
    results = {a: evaluate_zeroshot(model, teacher, ds, aggregation=a) for a in ("max", "mean")}
    assert evaluate_zeroshot(model, teacher, ds)["prompt_aggregation"] == DEFAULT_AGGREGATION == "mean"
    unit = F.normalize(feats.double(), dim=1)
    for aggregation, rows, classes in (("max", teacher.detail_embeddings(), torch.tensor(OPENSCENE_MAPPING) + 1),
                                       ("mean", teacher.class_embeddings(), torch.arange(1, 17))):
        # the rule written out: argmax over the rows (the 43 names, or the 16 prototypes), then the
        # row's class by OpenScene's mapping; the float32 product is relviz's own (the same call on the
        # same tensors, so near-ties resolve alike and the counts can be compared exactly)
        expected = classes[(feats @ rows.T).argmax(1)]
        assert results[aggregation]["prompt_aggregation"] == aggregation
        assert np.array_equal(np.array(results[aggregation]["confusion"]), confusion_matrix(expected, gt))
        # the 16 class names as a label set give the same classes, up to points whose best two classes
        # are within float error (assign_by_text normalises, then takes a class's max over its rows)
        labels = LabelSet.of_classes()
        by_names = scored_prediction(segment_by_queries(feats, teacher, labels, aggregation)[0], labels)
        class_scores = torch.full((len(unit), 17), -torch.inf, dtype=torch.float64).scatter_reduce(
            1, classes.expand(len(unit), -1), unit @ rows.double().T, "amax")[:, 1:]
        top2 = class_scores.topk(2, dim=1).values
        decided = (top2[:, 0] - top2[:, 1]) > 2 * DOT_ERR
        assert decided.double().mean() > 0.99  # the comparison covers nearly every point
        assert torch.equal(by_names[decided], expected[decided])
        with_queries = evaluate_zeroshot(model, teacher, ds, queries=labels, aggregation=aggregation)
        assert with_queries["prompt_aggregation"] == aggregation
    assert results["max"]["confusion"] != results["mean"]["confusion"]  # the rule matters for this student

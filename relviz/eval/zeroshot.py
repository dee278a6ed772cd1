"""Zero-shot 3D segmentation by text: a free label set (any prompts, some mapped to a class for
scoring, an optional unlabelled rule), prediction, evaluation and export.

The class list is scored under a prompt aggregation (``aggregation=``, default
:data:`~relviz.teacher.prompts.DEFAULT_AGGREGATION`, ``"max"``: argmax over OpenScene's 43 detail
names, mapped to their class, as OpenScene's nuScenes evaluation; ``"mean"``: argmax over one mean
prototype per class, relviz's rule before issue 26). Every result names it (``prompt_aggregation``).
Free text is one prompt ensemble under either; only class names expand to their detail names.

On a SemanticKITTI-format dataset (``dataset.classes`` is KITTI's) the class list is KITTI's 19
classes prompted by :data:`~relviz.teacher.prompts.KITTI_PROMPTS` (:func:`kitti_text_rows`), scored
over the classes with ground truth (relviz's rule, docs/kitti.md); free-text queries are not scored
there (their classes are nuScenes')."""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from relviz.data.classes import CLASSES
from relviz.data.dataset import collate
from relviz.errors import InputError, shorten
from relviz.eval.features import dataset_for, point_features_of
from relviz.files import atomic_path
from relviz.segmentation import (classes_with_ground_truth, confusion_matrix, iou_per_class, mean_iou,
                                 mean_iou_over)
from relviz.teacher.prompts import (DEFAULT_AGGREGATION, KITTI_PROMPTS, MAX, TEMPLATES, check_aggregation,
                                    class_named)
from relviz.teacher.text import TextClassifier, embed_query_rows, text_classifier

MAX_QUERY_CHARS = 10_000  # the whole query text
MAX_PROMPT_CHARS = 300  # one prompt; CLIP reads at most 77 tokens of it (the demo teacher 32)
MAX_QUERIES = 64  # queries and background prompts together
UNASSIGNED = -1  # the query index of a point that matches no query
BACKGROUND = "background"  # ``text = background`` makes a background prompt
MISSED = len(CLASSES)  # 17: the scoring column of points given no scored class (unassigned, unmapped query)


def _check_text(text: str, where: str) -> None:
    """Refuse control characters (and lone surrogates, which no encoder takes); right-to-left text,
    emoji and format characters (joiners, direction marks) are text like any other."""
    bad = next((c for c in text if unicodedata.category(c) in ("Cc", "Cs") and c != "\t"), None)
    if bad is not None:
        kind = "control character" if unicodedata.category(bad) == "Cc" else "unpaired surrogate"
        raise InputError(f"{where} {shorten(text)}: contains the {kind} U+{ord(bad):04X}; use plain text")


def _check_prompt(prompt: str, where: str) -> None:
    """Refuse a prompt no text encoder should get; ``where`` names it in the message."""
    if not prompt.strip():
        raise InputError(f"{where}: the prompt is empty; write some text")
    _check_text(prompt, where)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputError(f"{where} {shorten(prompt)}: {len(prompt):,} characters; at most {MAX_PROMPT_CHARS} "
                         f"per prompt")


@dataclass(frozen=True)
class Query:
    """One label: any text ``prompt``, scored as the nuScenes class ``class_name`` (one of
    ``CLASSES[1:]``) when it has one, else shown but not scored."""

    prompt: str
    class_name: str | None = None

    def __post_init__(self):
        _check_prompt(self.prompt, "query")
        if self.class_name is not None and self.class_name not in CLASSES[1:]:
            raise InputError(f"query {shorten(self.prompt)}: class {shorten(self.class_name)} is not one of the "
                             f"16 classes ({', '.join(CLASSES[1:])})")

    @property
    def class_index(self) -> int:
        """1..16 in ``CLASSES``, or 0 for an unmapped query."""
        return 0 if self.class_name is None else CLASSES.index(self.class_name)


@dataclass(frozen=True)
class LabelSet:
    """The user's labels. Every point takes the query whose text embedding is most similar, unless
    the unlabelled rule leaves it unassigned: its best cosine similarity is below ``threshold``
    (in [-1, 1]), or a ``background`` prompt is more similar to it than every query."""

    queries: tuple[Query, ...]
    background: tuple[str, ...] = ()
    threshold: float | None = None

    def __post_init__(self):
        if not self.queries:
            raise InputError("type at least one query (one per line)")
        for b in self.background:
            _check_prompt(b, "background prompt")
        if len(self.queries) + len(self.background) > MAX_QUERIES:
            raise InputError(f"{len(self.queries) + len(self.background)} queries; at most {MAX_QUERIES} "
                             f"are accepted")
        seen: set[str] = set()
        for p in [*self.prompts, *self.background]:
            if p.lower() in seen:
                raise InputError(f"query {shorten(p)} is given twice; give each prompt once")
            seen.add(p.lower())
        if self.threshold is not None:
            try:
                threshold = float(self.threshold)
            except (TypeError, ValueError):
                threshold = math.nan
            if isinstance(self.threshold, bool) or not -1 <= threshold <= 1:  # NaN fails the comparison
                raise InputError(f"threshold {shorten(self.threshold)}: expected a cosine similarity from -1 to 1")
            object.__setattr__(self, "threshold", threshold)  # a float, whatever number type was given

    @classmethod
    def of_classes(cls, threshold: float | None = None) -> "LabelSet":
        """The 16 classes by name, each scored as itself (their prompt ensembles)."""
        return cls(tuple(Query(name.replace("_", " "), name) for name in CLASSES[1:]), threshold=threshold)

    @property
    def prompts(self) -> tuple[str, ...]:
        return tuple(q.prompt for q in self.queries)

    @property
    def scored(self) -> tuple[Query, ...]:
        return tuple(q for q in self.queries if q.class_name is not None)

    @property
    def unscored(self) -> tuple[Query, ...]:
        return tuple(q for q in self.queries if q.class_name is None)

    @property
    def classes(self) -> tuple[int, ...]:
        """The classes (1..16) some query is scored as, ascending."""
        return tuple(sorted({q.class_index for q in self.scored}))

    def class_of_query(self) -> torch.Tensor:
        """int64 [P]: each query's class (1..16), 0 for an unmapped one."""
        return torch.tensor([q.class_index for q in self.queries], dtype=torch.long)


def parse_queries(text: str, threshold: float | None = None) -> LabelSet:
    """Query lines -> :class:`LabelSet` (with ``threshold``). A line is

    - ``prompt``: any text; scored as a class when it names one (``Car``, ``driveable surface``);
    - ``prompt = class``: any text scored as that class (``ambulance = car``);
    - ``prompt = background``: a background prompt (points closest to it stay unassigned).

    Class names match case-insensitively, with ``_`` or spaces; blank lines and lines starting with
    ``#`` are skipped; the last ``=`` separates the class. Refuses, with the line at fault (cut
    short), text that is too long, control characters, no query, an empty prompt, an unknown class,
    a prompt given twice."""
    if len(text) > MAX_QUERY_CHARS:
        raise InputError(f"the queries are {len(text):,} characters long; at most {MAX_QUERY_CHARS:,} are accepted")
    queries, background, line_of = [], [], {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"query line {number}"
        _check_text(line, where)  # anywhere on the line, the class part too
        prompt, sep, target = line.rpartition("=") if "=" in line else (line, "", "")
        prompt = " ".join(prompt.split())
        if not prompt:
            raise InputError(f"{where} {shorten(line)}: the prompt before '=' is empty; write `text = class`")
        _check_prompt(prompt, where)
        if prompt.lower() in line_of:
            raise InputError(f"{where}: {shorten(prompt)} repeats line {line_of[prompt.lower()]}; give each "
                             f"prompt once")
        line_of[prompt.lower()] = number
        if sep and " ".join(target.split()).lower() == BACKGROUND:
            background.append(prompt)
            continue
        cls = class_named(target if sep else prompt)
        if sep and cls is None:
            raise InputError(f"{where}: {shorten(' '.join(target.split()))} is not one of the 16 classes "
                             f"({', '.join(c.replace('_', ' ') for c in CLASSES[1:])}) or '{BACKGROUND}'; "
                             f"write the text alone to leave it unscored")
        queries.append(Query(prompt, cls))
    if not queries:
        raise InputError("type at least one query (one per line)" if not background else
                         "every line is a background prompt; type at least one query")
    return LabelSet(tuple(queries), tuple(background), threshold)


def _check_dims(point_features: torch.Tensor, text: torch.Tensor) -> None:
    if point_features.shape[-1] != text.shape[-1]:
        raise InputError(f"point features have dimension {point_features.shape[-1]} but the text embeddings "
                         f"{text.shape[-1]}: the student was distilled from another teacher than this one")


def predict_by_text(point_features: torch.Tensor, text: torch.Tensor | TextClassifier,
                    class_of_prompt: torch.Tensor | None = None) -> torch.Tensor:
    """Per-point class of ``point_features`` [N, D]: ``argmax_p k . t_p`` over text rows, then the
    winning row's class. Returns int64 [N].

    text: a :class:`~relviz.teacher.text.TextClassifier` (its rows and their classes: the prompt
    aggregation it was built with; ``class_of_prompt`` must then be None), or prompt embeddings
    [P, D] with ``class_of_prompt`` [P] (default p + 1: rows are the 16 classes in order, which for
    ``teacher.class_embeddings()`` is the ``"mean"`` aggregation)."""
    if isinstance(text, TextClassifier):
        if class_of_prompt is not None:
            raise InputError("predict_by_text: a TextClassifier carries the class of each row; pass no "
                             "class_of_prompt with it")
        text, class_of_prompt = text.embeddings, text.class_of_row
    _check_dims(point_features, text)
    best = (point_features.float() @ text.to(point_features.device).float().T).argmax(1)
    if class_of_prompt is None:
        return best + 1
    return class_of_prompt.to(best.device)[best]


def assign_by_text(point_features: torch.Tensor, text: torch.Tensor, threshold: float | None = None,
                   background: torch.Tensor | None = None, chunk: int = 1 << 16,
                   query_of_row: torch.Tensor | None = None,
                   unit_rows: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Each point's query by cosine similarity, with the unlabelled rule.

    point_features [N, D]; text [R, D] query embeddings, one row per query, or several when
    ``query_of_row`` [R] (int64, every query 0..P-1 with at least one row) says which query each row
    belongs to: a query's similarity is then the max over its rows (the ``"max"`` prompt
    aggregation); background [B, D] background-prompt embeddings or None. Returns (``query`` int64
    [N]: ``argmax_p cos(k, t_p)``, or ``UNASSIGNED`` (-1) when that best similarity is below
    ``threshold`` or some background row is strictly more similar; ``best`` float32 [N]:
    ``max_p cos(k, t_p)``, the heat-map value), on the features' device, computed ``chunk`` points at
    a time (at most [chunk, R + B] similarities at once). ``unit_rows``: ``point_features`` are float32
    with unit rows already (``F.normalize(x.float(), dim=1)``, kept by a caller that asks many times, as
    the live view does per keystroke), so they are not normalised again."""
    _check_dims(point_features, text)
    device = point_features.device
    n_queries = len(text)
    if query_of_row is not None:
        query_of_row = query_of_row.to(device, torch.long)
        present = torch.unique(query_of_row)  # sorted
        n_queries = len(present)
        contiguous = torch.equal(present, torch.arange(n_queries, device=device))
        if tuple(query_of_row.shape) != (len(text),) or not contiguous:
            raise InputError(f"query_of_row {shorten(query_of_row.tolist())}: expected one query index per text "
                             f"row ({len(text)}), every query from 0 to the largest given at least one row")
    text = F.normalize(text.to(device, torch.float32), dim=1)
    bg = None if background is None or not len(background) else F.normalize(background.to(device, torch.float32), dim=1)
    if bg is not None:
        _check_dims(point_features, bg)
    query = torch.empty(len(point_features), dtype=torch.long, device=device)
    best = torch.empty(len(point_features), dtype=torch.float32, device=device)
    for s in range(0, len(point_features), chunk):
        k = point_features[s:s + chunk] if unit_rows else F.normalize(point_features[s:s + chunk].float(), dim=1)
        sim = k @ text.T
        if query_of_row is not None:  # a query's similarity: the max over its rows
            sim = sim.new_full((len(k), n_queries), -torch.inf).scatter_reduce(
                1, query_of_row.expand(len(k), -1), sim, "amax")
        b, q = sim.max(1)
        unassigned = torch.zeros_like(q, dtype=torch.bool)
        if threshold is not None:
            unassigned |= b < threshold
        if bg is not None:
            unassigned |= (k @ bg.T).amax(1) > b
        query[s:s + chunk], best[s:s + chunk] = q.masked_fill(unassigned, UNASSIGNED), b
    return query, best


def segment_by_queries(point_features: torch.Tensor, teacher, labels: LabelSet,
                       aggregation: str = DEFAULT_AGGREGATION) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`assign_by_text` of ``point_features`` [N, D] by a label set, its prompts (and
    background prompts) embedded by :func:`~relviz.teacher.text.embed_query_rows` (cached): free
    text is one row under any ``aggregation``; under ``"max"`` a class name scores as the max over
    its detail names, under ``"mean"`` as its mean prototype."""
    background = embed_query_rows(teacher, labels.background, aggregation)[0] if labels.background else None
    text, query_of_row = embed_query_rows(teacher, labels.prompts, aggregation)
    return assign_by_text(point_features, text, labels.threshold, background, query_of_row=query_of_row)


def scored_prediction(query: torch.Tensor, labels: LabelSet, missed: int = MISSED) -> torch.Tensor:
    """Per-point class, int64 [N], from queries [N] (:func:`assign_by_text`): the class of the
    point's query (1..16), or ``missed`` for an unassigned point or one whose query has no class
    (``MISSED`` = 17 for scoring, where it is a miss; 0 to colour such points as unlabelled)."""
    table = torch.cat([labels.class_of_query(), torch.tensor([0])]).to(query.device)
    cls = table[torch.where(query == UNASSIGNED, len(labels.queries), query)]
    return cls.masked_fill(cls == 0, missed)


def label_set_scores(cm: np.ndarray, labels: LabelSet) -> dict:
    """Scores of a label set from its confusion matrix [18, 18] (rows = ground truth 0..16, columns =
    :func:`scored_prediction`): IoU of each class some query is scored as, their mean (None when
    none is defined), and which queries were scored."""
    iou = iou_per_class(cm)
    covered = {CLASSES[c]: (None if np.isnan(iou[c]) else float(iou[c])) for c in labels.classes}
    defined = [v for v in covered.values() if v is not None]
    return {"miou": float(np.mean(defined)) if defined else None, "iou": covered,
            "scored_queries": [q.prompt for q in labels.scored],
            "unscored_queries": [q.prompt for q in labels.unscored],
            "query_classes": {q.prompt: q.class_name for q in labels.queries},
            "background": list(labels.background), "threshold": labels.threshold}


def _point_features(model, dataset, device):
    """Yield (index, lidar token, student point features [N, D], labels [N] or None) over a dataset."""
    dataset = dataset_for(model, dataset)
    with torch.inference_mode():
        for i in range(len(dataset)):
            batch = collate([dataset[i]])
            feats = point_features_of(model, batch, device)
            yield i, batch["lidar_tokens"][0], feats, batch.get("labels")


def student_point_predictions(model, dataset, text: torch.Tensor | TextClassifier, device="cpu",
                              class_of_prompt=None):
    """Yield (index, lidar token, per-point predictions int64 [N], labels [N] or None) over a dataset,
    by :func:`predict_by_text` with ``text`` (a TextClassifier, or embeddings [P, D])."""
    for i, token, feats, labels in _point_features(model, dataset, device):
        yield i, token, predict_by_text(feats, text, class_of_prompt).cpu(), labels


def kitti_text_rows(teacher, aggregation: str = DEFAULT_AGGREGATION, templates: tuple[str, ...] = TEMPLATES
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """SemanticKITTI's class prompts as text rows: (embeddings float32 [R, D], L2-normalised; the class
    1..19 of each row int64 [R]). Each name of :data:`~relviz.teacher.prompts.KITTI_PROMPTS` is read
    under every template (normalised embeddings averaged, then normalised), never expanded into
    nuScenes' detail names (KITTI's "terrain" and "vegetation" are not nuScenes'); ``"max"``: one row per
    name; ``"mean"``: one prototype per class, the normalised mean of its names' rows."""
    check_aggregation(aggregation)
    names = [(c, name) for c, details in enumerate(KITTI_PROMPTS.values(), 1) for name in details]
    texts = [t.format(name) for _, name in names for t in templates]
    emb = F.normalize(teacher.encode_text(texts).float().cpu(), dim=1)
    rows = F.normalize(emb.view(len(names), len(templates), -1).mean(1), dim=1)
    class_of_row = torch.tensor([c for c, _ in names], dtype=torch.long)
    if aggregation == MAX:
        return rows, class_of_row
    classes = torch.arange(1, len(KITTI_PROMPTS) + 1)
    return F.normalize(torch.stack([rows[class_of_row == c].mean(0) for c in classes.tolist()]), dim=1), classes


def _evaluate_kitti_zeroshot(model, teacher, dataset, device, aggregation: str) -> dict:
    """:func:`evaluate_zeroshot` on a SemanticKITTI-format dataset: confusion [20, 20], per-class IoU,
    mIoU over the classes with ground truth (``classes``)."""
    names = tuple(dataset.classes)
    rows, class_of_row = kitti_text_rows(teacher, aggregation)
    cm = np.zeros((len(names), len(names)), dtype=np.int64)
    for _, _, pred, labels in student_point_predictions(model, dataset, rows, device, class_of_row):
        cm += confusion_matrix(pred, labels, num_classes=len(names))
    listed, iou = classes_with_ground_truth(cm), iou_per_class(cm)
    return {"miou": mean_iou_over(cm, listed), "classes": [names[c] for c in listed],
            "iou": {names[c]: (None if np.isnan(iou[c]) else float(iou[c])) for c in range(1, len(names))},
            "confusion": cm.tolist(), "samples": len(dataset), "prompt_aggregation": aggregation,
            "prompts": "semantickitti"}


def evaluate_zeroshot(model, teacher, dataset, device="cpu", queries: LabelSet | None = None,
                      aggregation: str = DEFAULT_AGGREGATION) -> dict:
    """Zero-shot 3D segmentation over a dataset: confusion matrix, per-class IoU, mIoU (devkit rules),
    and ``prompt_aggregation``, the ``aggregation`` it was scored under (default ``"max"``, OpenScene's
    max over detail names; ``"mean"``, one prototype per class; see the module docstring).

    Without ``queries``: the class list under ``aggregation``
    (:func:`~relviz.teacher.text.text_classifier`), every point classified (``confusion`` [17, 17]).
    With a label set: points take queries by :func:`assign_by_text`, and scores cover only the
    classes some query is scored as; a point left unassigned or given an unscored query counts as a
    miss for its true class (column ``MISSED`` of ``confusion`` [18, 18]), a point of another class
    given a scored query as a false positive. Also returns ``scored_queries``, ``unscored_queries``,
    ``unassigned`` (the fraction of labelled points left unassigned) and ``query_points`` (points
    per query)."""
    check_aggregation(aggregation)
    if tuple(getattr(dataset, "classes", CLASSES)) != CLASSES:  # SemanticKITTI's 19 classes
        if queries is not None:
            raise InputError("queries are scored against nuScenes' 16 classes; on a SemanticKITTI dataset only "
                             "its 19 class prompts are scored (give no queries)")
        return _evaluate_kitti_zeroshot(model, teacher, dataset, device, aggregation)
    if queries is None:
        classifier = text_classifier(teacher, aggregation)
        cm = np.zeros((17, 17), dtype=np.int64)
        for _, _, pred, labels in student_point_predictions(model, dataset, classifier, device):
            cm += confusion_matrix(pred, labels)
        iou = iou_per_class(cm)
        return {"miou": mean_iou(cm), "iou": {CLASSES[c]: (None if np.isnan(iou[c]) else float(iou[c]))
                                              for c in range(1, 17)},
                "confusion": cm.tolist(), "samples": len(dataset), "prompt_aggregation": aggregation}
    cm = np.zeros((MISSED + 1, MISSED + 1), dtype=np.int64)
    counts = torch.zeros(len(queries.queries) + 1, dtype=torch.long)  # the last: unassigned
    labelled = unassigned = 0
    for _, _, feats, labels in _point_features(model, dataset, device):
        query, _ = segment_by_queries(feats, teacher, queries, aggregation)
        query = query.cpu()
        cm += confusion_matrix(scored_prediction(query, queries), labels, num_classes=MISSED + 1)
        counts += torch.bincount(torch.where(query == UNASSIGNED, len(queries.queries), query),
                                 minlength=len(counts))
        known = labels != 0
        labelled += int(known.sum())
        unassigned += int((query[known] == UNASSIGNED).sum())
    return {**label_set_scores(cm, queries), "confusion": cm.tolist(), "samples": len(dataset),
            "unassigned": unassigned / labelled if labelled else None,
            "query_points": dict(zip(queries.prompts, counts[:-1].tolist())), "prompt_aggregation": aggregation}


def export_submission(model, teacher, dataset, out_dir, eval_set: str, device="cpu",
                      aggregation: str = DEFAULT_AGGREGATION) -> Path:
    """Write predictions of the class list under ``aggregation`` (see :func:`evaluate_zeroshot`) in
    the nuScenes-lidarseg submission format under ``out_dir``:
    ``lidarseg/<eval_set>/<lidar token>_lidarseg.bin`` (uint8, classes 1..16) and
    ``<eval_set>/submission.json``, plus ``relviz_export.json`` naming the prompt aggregation,
    templates and teacher (beside them: the devkit's validator accepts only its five meta keys in
    submission.json); returns ``out_dir``."""
    import json

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"export folder {out} exists and is not a directory; give a new or existing folder")
    bins = out / "lidarseg" / eval_set
    bins.mkdir(parents=True, exist_ok=True)
    (out / eval_set).mkdir(parents=True, exist_ok=True)
    classifier = text_classifier(teacher, check_aggregation(aggregation))
    for _, token, pred, _ in student_point_predictions(model, dataset, classifier, device):
        with atomic_path(bins / f"{token}_lidarseg.bin") as tmp:
            pred.numpy().astype(np.uint8).tofile(tmp)
    meta = {"meta": {"use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False,
                     "use_external": True}}  # the teacher's text embeddings are external knowledge
    (out / eval_set / "submission.json").write_text(json.dumps(meta, indent=2))
    provenance = {"prompt_aggregation": aggregation, "templates": list(TEMPLATES), "teacher": teacher.identity,
                  "eval_set": eval_set}
    (out / "relviz_export.json").write_text(json.dumps(provenance, indent=2))
    return out

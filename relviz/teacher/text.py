"""Text for a teacher: the class-list zero-shot classifier under a prompt aggregation
(:class:`TextClassifier`); free-text prompts embedded under the class templates, cached per
ensemble of texts, and checked against what the teacher has read (the demo teacher only knows its
training prompts)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from relviz.config import TeacherSpec
from relviz.data.classes import CLASSES
from relviz.errors import InputError
from relviz.teacher.prompts import (DEFAULT_AGGREGATION, DETAIL_PROMPTS, MEAN, TEMPLATES, check_aggregation,
                                    class_named, demo_vocabulary, detail_classes, detail_names, prompt_ensemble,
                                    words)

N_CLASSES = len(CLASSES) - 1  # 16; class 0 is ignore


@dataclass(frozen=True)
class TextClassifier:
    """The zero-shot classifier of the class list under one prompt aggregation: a point feature k
    takes ``class_of_row[argmax_r k . embeddings_r]``.

    aggregation: a key of :data:`~relviz.teacher.prompts.AGGREGATIONS` (``"mean"`` or ``"max"``).
    embeddings: float32 [P, D], L2-normalised rows: the 16 class prototypes ("mean", P = 16) or the
        43 detail-name embeddings ("max", P = 43).
    class_of_row: int64 [P], the class (1..16) each row stands for.
    row_names: [P] the class names ("mean") or detail names ("max") of the rows.
    class_embeddings: float32 [16, D], the mean class prototypes whatever the aggregation: the text
        side of the modality gap to text (``gap_text``: G to the mean of these rows), so that G does
        not change with the aggregation.
    """

    aggregation: str
    embeddings: torch.Tensor
    class_of_row: torch.Tensor
    row_names: tuple[str, ...]
    class_embeddings: torch.Tensor

    def __post_init__(self):
        check_aggregation(self.aggregation)
        rows, dim = self.embeddings.shape if self.embeddings.ndim == 2 else (None, None)
        if rows is None or rows == 0:
            raise InputError(f"text classifier embeddings: expected [P, D] with P >= 1, got "
                             f"{tuple(self.embeddings.shape)}")
        if tuple(self.class_of_row.shape) != (rows,) or len(self.row_names) != rows:
            raise InputError(f"text classifier: {rows} embedding rows but class_of_row "
                             f"{tuple(self.class_of_row.shape)} and {len(self.row_names)} row names; expected one "
                             f"of each per row")
        if self.class_of_row.is_floating_point() or self.class_of_row.is_complex():
            raise InputError(f"text classifier class_of_row: expected integer classes, got {self.class_of_row.dtype}")
        if not bool(((self.class_of_row >= 1) & (self.class_of_row <= N_CLASSES)).all()):
            raise InputError(f"text classifier class_of_row {self.class_of_row.tolist()}: expected classes "
                             f"1..{N_CLASSES}")
        if tuple(self.class_embeddings.shape) != (N_CLASSES, dim):
            raise InputError(f"text classifier class_embeddings {tuple(self.class_embeddings.shape)}: expected "
                             f"[{N_CLASSES}, {dim}]")

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])


def build_text_classifier(aggregation: str, class_embeddings: torch.Tensor,
                          detail_embeddings: torch.Tensor | None = None) -> TextClassifier:
    """The :class:`TextClassifier` of ``aggregation`` from embeddings already computed (a disk cache):
    ``class_embeddings`` [16, D] (``teacher.class_embeddings(templates)``) and, for ``"max"``,
    ``detail_embeddings`` [43, D] (``teacher.detail_embeddings(templates)``)."""
    check_aggregation(aggregation)
    classes = class_embeddings.detach().float().cpu()
    if aggregation == MEAN:
        return TextClassifier(aggregation, classes, torch.arange(1, N_CLASSES + 1), tuple(CLASSES[1:]), classes)
    names = detail_names()
    if detail_embeddings is None or tuple(detail_embeddings.shape[:1]) != (len(names),):
        got = None if detail_embeddings is None else tuple(detail_embeddings.shape)
        raise InputError(f"prompt aggregation 'max' needs the {len(names)} detail-name embeddings [43, D]; got {got}")
    return TextClassifier(aggregation, detail_embeddings.detach().float().cpu(), torch.tensor(detail_classes()),
                          tuple(names), classes)


def text_classifier(teacher, aggregation: str = DEFAULT_AGGREGATION, templates: tuple[str, ...] = TEMPLATES
                    ) -> TextClassifier:
    """The class-list zero-shot classifier of ``teacher`` under ``aggregation`` (default
    :data:`~relviz.teacher.prompts.DEFAULT_AGGREGATION`, ``"max"``: OpenScene's rule for its detail
    names; ``"mean"``: relviz's earlier mean prototype per class). The detail names are read under
    ``templates``; ``OPENSCENE_TEMPLATES`` with ``"max"`` is OpenScene's nuScenes evaluation exactly.
    Only the text tower is used (a teacher whose class embeddings are cached on disk is not built
    for ``"mean"``)."""
    check_aggregation(aggregation)
    details = None if aggregation == MEAN else teacher.detail_embeddings(templates)
    return build_text_classifier(aggregation, teacher.class_embeddings(templates), details)


# ------------------------------------------------------------------------------- free text
CACHE_SIZE = 4096  # ensembles kept (a 512-d embedding is 2 KiB): the app embeds one prompt per keystroke
# keyed by (teacher identity, the ensemble's texts): "Car", "car" and the detail name "car" under the
# same templates share one entry, so the same texts always give the bitwise same embedding
_cache: OrderedDict[tuple[str, tuple[str, ...]], torch.Tensor] = OrderedDict()
_cache_lock = threading.Lock()


def _embed_ensembles(teacher, ensembles: list[tuple[str, ...]]) -> torch.Tensor:
    """[E, D]: per ensemble of texts, the L2-normalised mean of their normalised embeddings (float32,
    on the CPU), from the LRU cache; the ensembles not there are encoded in one batch."""
    identity = teacher.identity
    found: dict[tuple[str, ...], torch.Tensor] = {}
    with _cache_lock:
        for ensemble in ensembles:
            key = (identity, ensemble)
            if key in _cache:
                _cache.move_to_end(key)
                found[ensemble] = _cache[key]
    missing = list(dict.fromkeys(e for e in ensembles if e not in found))
    if missing:
        emb = teacher.encode_text([text for ensemble in missing for text in ensemble])
        start = 0
        for ensemble in missing:
            found[ensemble] = F.normalize(emb[start:start + len(ensemble)].mean(0), dim=0).cpu()
            start += len(ensemble)
        with _cache_lock:
            for ensemble in missing:
                _cache[(identity, ensemble)] = found[ensemble]
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return torch.stack([found[e] for e in ensembles])


def embed_queries(teacher, prompts: list[str] | tuple[str, ...], templates: tuple[str, ...] = TEMPLATES
                  ) -> torch.Tensor:
    """Text embeddings [P, D] (float32, on the CPU) of any prompts: per prompt, the L2-normalised mean
    of the normalised embeddings of :func:`prompt_ensemble` (so a class name gives exactly its row of
    ``teacher.class_embeddings(templates)``, and free text the same templates). Kept in an LRU cache
    keyed by (teacher identity, the ensemble's texts); only the ensembles not there are encoded, in
    one batch, so a repeated prompt costs nothing and the teacher is not loaded."""
    if isinstance(prompts, str) or not prompts:
        raise InputError("embed_queries expects a non-empty list of prompts")
    return _embed_ensembles(teacher, [tuple(prompt_ensemble(p, templates)) for p in prompts])


def embed_query_rows(teacher, prompts: list[str] | tuple[str, ...], aggregation: str = DEFAULT_AGGREGATION,
                     templates: tuple[str, ...] = TEMPLATES) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows that score ``prompts`` under a prompt aggregation: (embeddings float32 [R, D],
    ``prompt_of_row`` int64 [R], which prompt each row belongs to). A prompt's similarity is the
    max over its rows. Under ``"mean"`` every prompt is one row, :func:`embed_queries`. Under
    ``"max"`` a class name gives one row per detail name of its class (the name under ``templates``,
    averaged), as :func:`text_classifier` scores the class list; any other text is one row under
    either aggregation."""
    if isinstance(prompts, str) or not prompts:
        raise InputError("embed_query_rows expects a non-empty list of prompts")
    if check_aggregation(aggregation) == MEAN:
        return embed_queries(teacher, prompts, templates), torch.arange(len(prompts))
    ensembles, prompt_of_row = [], []
    for i, prompt in enumerate(prompts):
        cls = class_named(prompt)
        rows = [tuple(t.format(d) for t in templates) for d in DETAIL_PROMPTS[cls]] if cls else \
            [tuple(prompt_ensemble(prompt, templates))]
        ensembles += rows
        prompt_of_row += [i] * len(rows)
    return _embed_ensembles(teacher, ensembles), torch.tensor(prompt_of_row, dtype=torch.long)


def clear_query_cache() -> None:
    """Forget every cached prompt embedding."""
    with _cache_lock:
        _cache.clear()


def teacher_vocabulary(teacher) -> frozenset[str] | None:
    """The words a teacher has read: the demo teacher's training prompts (:func:`demo_vocabulary`), or
    None for an open_clip teacher, whose tokenizer and training cover any text. ``teacher``: a
    :class:`TeacherSpec` (nothing is loaded) or a loaded teacher."""
    from relviz.teacher.base import DEMO_MODEL  # not demo.py, which imports this module

    if isinstance(teacher, TeacherSpec):
        is_demo = teacher.name == "demo"
    else:  # a teacher's identity starts with its open_clip model name (the demo teacher's without loading it)
        is_demo = teacher.identity.startswith(f"{DEMO_MODEL}-")
    return demo_vocabulary() if is_demo else None


def unseen_words(prompt: str, vocabulary: frozenset[str] | None) -> tuple[str, ...]:
    """The words of ``prompt`` outside ``vocabulary`` (each once, in order); none for an open
    vocabulary (None) or for a class name, which is embedded by its detail names."""
    if vocabulary is None or class_named(prompt):
        return ()
    return tuple(dict.fromkeys(w for w in words(prompt) if w not in vocabulary))

"""What the zero-shot page shows for one keyframe and one label set: each point's query, the scores
of the mapped queries, the colouring of a view mode and the legend, timed by part (text encoding,
similarity, colouring) so the page can report where the time goes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from relviz.data.classes import CLASSES
from relviz.errors import InputError
from relviz.eval.zeroshot import MISSED, LabelSet, assign_by_text, label_set_scores, parse_queries, scored_prediction
from relviz.segmentation import confusion_matrix
from relviz.teacher.prompts import class_named
from relviz.teacher.text import embed_queries, unseen_words
from relviz.viz.labelcolors import (PALETTE, SELECTED_RGB, UNASSIGNED_RGB, Coloring, class_coloring, error_coloring,
                                    hex_colors, query_coloring, similarity_coloring, stable_colors)

# the page's colour modes: the user's labels, the dataset's, where they differ, one query's similarity
MODES = ("prediction", "ground truth", "errors", "similarity to a query")


def embed_prompts(prompts: Sequence[str], class_embeddings: torch.Tensor, teacher_fn: Callable[[], object]
                  ) -> torch.Tensor:
    """Embeddings [P, D] of prompts: a class name's row of ``class_embeddings`` [16, D] (the same
    ensemble :func:`embed_queries` builds for it, read from the disk cache), any other text through
    :func:`embed_queries` with ``teacher_fn()``, which is only called when there is such text."""
    rows: list[torch.Tensor | None] = [None] * len(prompts)
    free = []
    for i, p in enumerate(prompts):
        cls = class_named(p)
        if cls is None:
            free.append(i)
        else:
            rows[i] = class_embeddings[CLASSES.index(cls) - 1].float().cpu()
    if free:
        encoded = embed_queries(teacher_fn(), [prompts[i] for i in free])
        for i, e in zip(free, encoded):
            rows[i] = e
    return torch.stack(rows)


@dataclass
class Segmentation:
    """One keyframe segmented by a label set: ``query`` int64 [N] (-1 = unassigned), ``best``
    float32 [N] (best cosine similarity), ``text`` [P, D] the query embeddings, ``scores`` (of
    :func:`label_set_scores`), ``counts`` [P + 1] points per query (the last: unassigned),
    ``colors`` palette index per query, ``background`` [B, D] the background prompts' embeddings
    (or None), and ``timings`` in ms."""

    labels: LabelSet
    query: np.ndarray
    best: np.ndarray
    text: torch.Tensor
    background: torch.Tensor | None
    scores: dict
    counts: np.ndarray
    colors: list[int]
    timings: dict = field(default_factory=dict)


def segment(features: torch.Tensor, truth: np.ndarray | None, labels: LabelSet,
            embed: Callable[[Sequence[str]], torch.Tensor], previous_colors: Sequence[tuple[str, int]] = (),
            unit: torch.Tensor | None = None) -> Segmentation:
    """Segment point features [N, D] by ``labels`` (prompts embedded by ``embed``), score the mapped
    queries against ``truth`` [N] (0..16, or None), and give each query a stable colour; ``unit``:
    :func:`unit_rows` of ``features`` when the caller keeps them (not normalised again)."""
    t0 = time.perf_counter()
    text = embed(list(labels.prompts))
    background = embed(list(labels.background)) if labels.background else None
    t1 = time.perf_counter()
    query, best = assign_by_text(features if unit is None else unit, text, labels.threshold, background,
                                 unit_rows=unit is not None)
    t2 = time.perf_counter()
    scores = {"miou": None, "iou": {}}
    if truth is not None:
        cm = confusion_matrix(scored_prediction(query, labels), truth, num_classes=MISSED + 1)
        scores = label_set_scores(cm, labels)
    query = query.numpy()
    counts = np.bincount(np.where(query < 0, len(labels.queries), query), minlength=len(labels.queries) + 1)
    colors = stable_colors(labels.prompts, [q.class_index for q in labels.queries], previous_colors)
    timings = {"text_ms": 1000 * (t1 - t0), "similarity_ms": 1000 * (t2 - t1),
               "scores_ms": 1000 * (time.perf_counter() - t2)}
    return Segmentation(labels, query, best.numpy(), text, background, scores, counts, colors, timings)


def similarity_to(features: torch.Tensor, embedding: torch.Tensor, unit: bool = False) -> np.ndarray:
    """Cosine similarity [N] of point features [N, D] to one embedding [D]; ``unit``: the features are
    float32 and L2-normalised already (:func:`unit_rows`: a keyframe's, once for every keystroke)."""
    return ((features if unit else unit_rows(features)) @ F.normalize(embedding.float(), dim=0)).numpy()


def unit_rows(features: torch.Tensor) -> torch.Tensor:
    """``features`` [N, D] as float32 with unit rows."""
    return F.normalize(features.float(), dim=1)


def coloring(seg: Segmentation, mode: str, features: torch.Tensor, truth: np.ndarray | None,
             heat: str | None = None, unit: torch.Tensor | None = None) -> Coloring:
    """The colouring of a view mode (one of :data:`MODES`); ``heat``: the prompt of the similarity view;
    ``unit``: :func:`unit_rows` of ``features`` when the caller keeps them."""
    if mode == "prediction":
        return query_coloring(seg.query, seg.colors)
    if mode in ("ground truth", "errors") and truth is None:
        raise InputError("this dataset has no lidarseg labels: no ground truth or errors view")
    if mode == "ground truth":
        return class_coloring(truth)
    if mode == "errors":
        return error_coloring(scored_prediction(torch.from_numpy(seg.query), seg.labels).numpy(), truth)
    if mode == "similarity to a query":
        heat_text = seg.text[seg.labels.prompts.index(heat)]
        return similarity_coloring(similarity_to(features, heat_text) if unit is None else
                                   similarity_to(unit, heat_text, unit=True))
    raise InputError(f"unknown colour mode {mode!r}; expected one of {', '.join(MODES)}")


def legend(seg: Segmentation, shown: Coloring, mode: str, heat: str | None, vocabulary: frozenset[str] | None
           ) -> list[dict]:
    """Legend rows for the live view: one per query (colour, class, share of the points, IoU of its
    class or not scored, words the teacher never read), the unassigned points, and in the similarity
    view the colour bar of ``heat``; in the ground-truth and errors views, their own colours."""
    if mode in ("ground truth", "errors"):
        names = [c.replace("_", " ") for c in CLASSES] if mode == "ground truth" else \
            ["no class (not scored)", "query's class is the true class", "wrong (or no scored query)"]
        counts = np.bincount(shown.index, minlength=len(shown.table))
        return [{"prompt": names[i], "color": color, "points": int(counts[i]), "fraction": counts[i] / len(shown.index)}
                for i, color in enumerate(hex_colors(shown.table)) if counts[i]]
    total = max(int(seg.counts.sum()), 1)
    colors = hex_colors(PALETTE[seg.colors])
    rows = []
    for i, q in enumerate(seg.labels.queries):
        iou = seg.scores["iou"].get(q.class_name) if q.class_name else None
        rows.append({"prompt": q.prompt, "color": colors[i],
                     "class": q.class_name, "scored": q.class_name is not None, "iou": iou,
                     "points": int(seg.counts[i]), "fraction": seg.counts[i] / total, "focus": q.prompt == heat,
                     "unseen": list(unseen_words(q.prompt, vocabulary))})
    rows.append({"prompt": "unassigned" + (f" (background: {', '.join(seg.labels.background)})"
                                          if seg.labels.background else ""),
                 "color": hex_colors(UNASSIGNED_RGB[None])[0], "points": int(seg.counts[-1]),
                 "fraction": seg.counts[-1] / total})
    if mode == "similarity to a query" and shown.scale is not None:
        rows.insert(0, {"heat": list(shown.scale), "prompt": heat, "colors": hex_colors(shown.table)})
    return rows


def heat_prompt(labels: LabelSet, text: str, cursor: int | None, focus: str | None, previous: str | None) -> str:
    """The query whose similarity the heat map shows: the one clicked (``focus``), else the one on the
    cursor's line of ``text``, else the one shown before, else the first."""
    prompts = {p.lower(): p for p in labels.prompts}
    lines = text.splitlines()
    on_line = None
    if cursor is not None and 0 <= cursor < len(lines):
        on_line = " ".join(lines[cursor].rpartition("=")[0 if "=" in lines[cursor] else 2].split())
    for candidate in (focus, on_line, previous):
        if candidate and candidate.lower() in prompts:
            return prompts[candidate.lower()]
    return labels.prompts[0]


@dataclass
class View:
    """What the live view shows: the segmentation, the colouring of the mode, the legend, the
    heat-map prompt, and the timings (ms) of text encoding, similarity and colouring."""

    seg: Segmentation
    shown: Coloring
    legend: list[dict]
    heat: str | None
    timings: dict


def live_view(features: torch.Tensor, truth: np.ndarray | None, text: str, threshold: float | None, mode: str,
              embed: Callable[[Sequence[str]], torch.Tensor], cursor: int | None = None, focus: str | None = None,
              previous: View | None = None, vocabulary: frozenset[str] | None = None,
              unit: torch.Tensor | None = None) -> View:
    """Parse the query ``text`` (raises InputError with the line at fault), segment ``features``
    [N, D], colour by ``mode`` and build the legend; colours and the heat-map prompt continue
    ``previous``; ``unit``: :func:`unit_rows` of ``features`` when the caller keeps them."""
    labels = parse_queries(text, threshold)
    before = list(zip(previous.seg.labels.prompts, previous.seg.colors)) if previous else ()
    seg = segment(features, truth, labels, embed, before, unit)
    heat = heat_prompt(labels, text, cursor, focus, previous.heat if previous else None)
    t0 = time.perf_counter()
    shown = coloring(seg, mode, features, truth, heat, unit)
    rows = legend(seg, shown, mode, heat if mode == MODES[3] else None, vocabulary)
    return View(seg, shown, rows, heat, {**seg.timings, "colour_ms": 1000 * (time.perf_counter() - t0)})


def shown(view: View | None, n: int, keep: np.ndarray) -> tuple[Coloring, list[dict]]:
    """The colouring of the points ``keep`` and the legend of ``view`` when it is of these ``n``
    points (a view kept from another keyframe is not), else every point unassigned (grey)."""
    if view is None or len(view.shown.index) != n:
        return Coloring(np.zeros(len(keep), np.uint8), UNASSIGNED_RGB[None]), []
    return view.shown.take(keep), view.legend


def selected_points(shown_indices: Sequence[int], keep: np.ndarray) -> list[int]:
    """A box selection of the live view (indices into the points it shows, ``keep`` [K]: their
    indices in the keyframe) as keyframe point indices, sorted; indices outside [0, K) are dropped."""
    at = np.asarray([i for i in shown_indices if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(keep)],
                    dtype=np.int64)
    return sorted(set(keep[at].tolist()))


def mark_selections(coloring: Coloring, legend: list[dict], keep: np.ndarray,
                    selections: Sequence[tuple[str, Sequence[int]]]) -> tuple[Coloring, list[dict]]:
    """The shown points ``keep`` [K] (keyframe indices) of ``selections`` ((where it was made,
    keyframe point indices)) drawn in the selection colour, with one legend row saying how many."""
    marked = np.zeros(len(keep), dtype=bool)
    names = []
    for source, points in selections:
        hit = np.isin(keep, np.asarray(points, dtype=np.int64))
        if hit.any():
            marked |= hit
            names.append(source)
    if not marked.any():
        return coloring, legend
    row = {"prompt": f"selected ({', '.join(names)})", "color": hex_colors(SELECTED_RGB[None])[0],
           "points": int(marked.sum()), "fraction": float(marked.mean())}
    return coloring.with_selected(marked), [*legend, row]


def metrics(view: View | None, n: int) -> list[tuple[str, str, str | None]]:
    """(label, value, help) of the page's numbers for ``view`` of ``n`` points."""
    ok = view is not None and len(view.shown.index) == n
    miou = view.seg.scores["miou"] if ok else None
    return [("Sample mIoU", "n/a" if miou is None else f"{miou:.3f}", "over the classes of the mapped queries"),
            ("Unassigned points", f"{view.seg.counts[-1] / n:.1%}" if ok else "n/a", None), ("Points", f"{n:,}", None)]


def summary(view: View | None, n: int) -> str:
    """:func:`metrics`' first two as one line for the live view's note ("sample mIoU 0.412 · unassigned 3.1%")."""
    return " · ".join(f"{label.lower()} {value}" for label, value, _ in metrics(view, n)[:2])


def scored_caption(seg: Segmentation) -> str:
    """Which queries the scores cover (with their class) and which they do not."""
    scored = ", ".join(f"{q.prompt} → {q.class_name}" for q in seg.labels.scored) or "none"
    unscored = ", ".join(q.prompt for q in seg.labels.unscored) or "none"
    return f"Scored (IoU of their classes on this keyframe): {scored}. Not scored (no class): {unscored}."

"""Views of a split search (relviz.eval.search): a camera thumbnail of a keyframe's matching points,
and the table of the points most similar to the query."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image

from relviz.data.classes import CLASSES
from relviz.data.nuscenes import CAMERAS
from relviz.eval.search import SplitSearch, search_split
from relviz.eval.zeroshot import assign_by_text

HIGHLIGHT = np.array([255, 40, 200], dtype=np.uint8)  # matching points: a colour no class uses


def match_thumbnail(dataset, index: int, matched: np.ndarray, width: int = 320) -> tuple[np.ndarray, str]:
    """The camera of keyframe ``index`` that sees most of its ``matched`` points (bool [N]), as a
    dimmed uint8 image [h, width, 3] with those points marked, and the camera's name."""
    points, _, lidar = dataset.lidar(index)
    xyz = points[:, :3].astype(np.float64)
    best = None
    for channel in CAMERAS:
        idx, uv, cam = dataset.camera_pairs(xyz, lidar, channel)
        hits = matched[idx]
        if best is None or hits.sum() > best[0].sum():
            best = (hits, uv, cam, channel)
    hits, uv, cam, channel = best
    image = Image.open(Path(dataset.dataroot) / cam["filename"]).convert("RGB")
    scale = width / image.width
    small = np.asarray(image.resize((width, max(1, round(image.height * scale))), Image.BILINEAR))
    out = (small * 0.55).astype(np.uint8)
    px = np.clip((uv[hits] * scale).astype(int), 0, [out.shape[1] - 1, out.shape[0] - 1])
    for dy in (-1, 0, 1):  # 3 x 3 marks, visible at thumbnail size
        for dx in (-1, 0, 1):
            out[np.clip(px[:, 1] + dy, 0, out.shape[0] - 1), np.clip(px[:, 0] + dx, 0, out.shape[1] - 1)] = HIGHLIGHT
    return out, channel


def search_prompt(features: Iterable, text: torch.Tensor, prompts: Sequence[str], prompt: str,
                  threshold: float | None = None, background: torch.Tensor | None = None) -> tuple[SplitSearch, float]:
    """:func:`search_split` for ``prompt`` of a label set (``prompts`` and their embeddings ``text``
    [P, D], with its unlabelled rule) over per-keyframe ``features``; returns it and its seconds."""
    start = time.perf_counter()
    return search_split(features, text, list(prompts).index(prompt), threshold, background), time.perf_counter() - start


def thumbnails(result: SplitSearch, dataset, features_of, text, query: int, threshold: float | None = None,
               background=None, count: int = 6, width: int = 320) -> list[tuple[int, np.ndarray, str]]:
    """(keyframe, thumbnail, caption) of the ``count`` best keyframes with a match: their points that
    take ``query`` (of text [P, D], with the label set's unlabelled rule) marked by
    :func:`match_thumbnail`; ``features_of(keyframe)`` gives its point features [N, D]."""
    out = []
    for m in [m for m in result.keyframes if m.points][:count]:
        features = torch.from_numpy(np.asarray(features_of(m.keyframe), dtype=np.float32))
        assigned, _ = assign_by_text(features, text, threshold, background)
        image, camera = match_thumbnail(dataset, m.keyframe, (assigned == query).numpy(), width)
        out.append((m.keyframe, image, f"keyframe {m.keyframe} ({camera}): {m.points:,} points ({m.fraction:.1%}), "
                                       f"mean similarity {m.mean_similarity:.3f}"))
    return out


def top_points_table(result: SplitSearch, dataset) -> pd.DataFrame:
    """One row per top point: keyframe, its sample token, the point, its similarity and its
    ground-truth class (when the dataset has labels)."""
    labels = {}
    for k in sorted({p.keyframe for p in result.points}):
        labels[k] = dataset.lidar(k)[1]
    return pd.DataFrame([{"keyframe": p.keyframe, "sample": dataset.sample_tokens[p.keyframe][:8], "point": p.point,
                          "similarity": round(p.similarity, 4),
                          "true class": CLASSES[labels[p.keyframe][p.point]] if labels[p.keyframe] is not None else ""}
                         for p in result.points])

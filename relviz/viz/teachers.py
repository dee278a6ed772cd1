"""Teachers side by side (a stored :func:`relviz.eval.teachers.compare_teachers` result): the table
of U, T and G per teacher with their intervals over scenes (or, under
:data:`relviz.stats.MIN_SCENES` scenes, each scene's value), linear CKA between every two teachers
as a heatmap, and each teacher's class-centroid cosine similarities.

A teacher whose weights were random (:func:`relviz.eval.teachers.has_random_weights`) is never shown
as a real teacher: its label says "random weights"."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from relviz.data.classes import CLASSES
from relviz.eval.report import format_value

COLUMNS = {"uniformity": "U", "tolerance": "T", "gap_text": "G to its class text"}
RANDOM = " (random weights)"


def labels(result: Mapping) -> dict[str, str]:
    """Teacher name -> the label shown for it (random weights said)."""
    return {name: name + (RANDOM if t.get("random_weights") else "") for name, t in result["teachers"].items()}


def _cell(protocol: Mapping, metric: str) -> str:
    """``0.368 [0.350, 0.381]`` with an interval; without one, the value and each scene's value."""
    value = protocol.get(metric)
    if value is None:
        return "-"
    ci = (protocol.get("intervals") or {}).get(metric)
    if ci:
        return format_value(value, ci["low"], ci["high"])
    scenes = (protocol.get("per_scene") or {}).get(metric) or []
    return format_value(value) + (" (scenes: " + ", ".join(format_value(v) for v in scenes) + ")" if scenes else "")


def summary_frame(result: Mapping) -> pd.DataFrame:
    """One line per teacher: its label, weights, dimension, whether it has text, and U, T and G to its
    class text under the analysis protocol ("-": a text-less teacher has no G to text)."""
    names = labels(result)
    weights = {name: "random" if t.get("random_weights") else t.get("weights") or "-"
               for name, t in result["teachers"].items()}
    return pd.DataFrame([{"teacher": names[name], "weights": weights[name], "dim": t["dim"],
                          "text": "yes" if t.get("gap_text") is not None else "no",
                          **{label: _cell(t["protocol"], m) for m, label in COLUMNS.items()}}
                         for name, t in result["teachers"].items()])


def interval_note(result: Mapping) -> str:
    """How the table's intervals were made, or why there are none, and the sample they are on."""
    first = next(iter(result["teachers"].values()))["protocol"]
    b, s = first.get("bootstrap") or {}, result["sample"]
    how = (f"No intervals: {b['skipped']}." if b.get("skipped") else
           f"Intervals: 95% bootstrap over {b['scenes']} scenes (keyframes nested in them)." if b.get("scenes") else
           "No intervals were computed.")
    return (f"{how} Sample: {s['size']:,} labelled points seen by a camera, up to {s['per_class']:,} per class (seed "
            f"{s['seed']}), from {result['keyframes']} keyframes of {result.get('scenes', '?')} scenes, the same "
            "points for every teacher. U is over pairs from different keyframes, as this page's U ('-' in a scene "
            "of one keyframe).")


def random_note(result: Mapping) -> str | None:
    """What a teacher with random weights in the result is (and is not), or None when there is none."""
    random = [name for name, t in result["teachers"].items() if t.get("random_weights")]
    if not random:
        return None
    return (f"{', '.join(random)}: random weights (built with random_init=True), an architecture check and not a "
            "real teacher; their numbers say nothing about the teacher of that name.")


def cka_matrix(result: Mapping) -> tuple[list[str], np.ndarray]:
    """(teacher names [n], linear CKA [n, n]) from the stored pairs; the diagonal is 1 (CKA of a
    representation with itself)."""
    names = list(result["teachers"])
    cka = np.eye(len(names))
    at = {name: i for i, name in enumerate(names)}
    for pair in result["pairs"]:
        cka[at[pair["a"]], at[pair["b"]]] = cka[at[pair["b"]], at[pair["a"]]] = pair["cka"]
    return names, cka


def cka_figure(result: Mapping, height: int = 360) -> go.Figure:
    """A heatmap of linear CKA between every two teachers at the same points, values written in."""
    names, cka = cka_matrix(result)
    shown = [labels(result)[n] for n in names]
    fig = go.Figure(go.Heatmap(z=cka, x=shown, y=shown, zmin=0, zmax=1, colorscale="Viridis", texttemplate="%{z:.3f}",
                               colorbar=dict(title="CKA"), hovertemplate="%{y} vs %{x}: CKA %{z:.4f}<extra></extra>"))
    return fig.update_layout(title="Linear CKA at the same points", height=height, yaxis_autorange="reversed",
                             margin=dict(l=10, r=10, t=40, b=10))


def pairs_frame(result: Mapping) -> pd.DataFrame:
    """One line per two teachers: CKA, the mean absolute difference of their class-centroid
    similarities, and G between them ("-" where their dimensions differ)."""
    names = labels(result)
    return pd.DataFrame([{"teachers": f"{names[p['a']]} / {names[p['b']]}", "CKA": format_value(p["cka"]),
                          "centroid similarity |difference|": format_value(p["centroid_mean_abs_difference"]),
                          "G between them": format_value(p.get("gap"))} for p in result["pairs"]])


def relations_figure(result: Mapping, height: int = 420) -> go.Figure:
    """Each teacher's class-centroid cosine similarities [C, C] side by side, on one colour scale."""
    teachers, names = result["teachers"], labels(result)
    fig = make_subplots(rows=1, cols=len(teachers), subplot_titles=[names[n] for n in teachers],
                        horizontal_spacing=0.04)
    for col, t in enumerate(teachers.values(), start=1):
        classes = [CLASSES[c] for c in t["classes"]]
        fig.add_trace(go.Heatmap(z=t["centroid_similarity"], x=classes, y=classes, zmin=-1, zmax=1,
                                 colorscale="RdBu_r", showscale=col == 1, colorbar=dict(title="cosine"),
                                 hovertemplate="%{y} / %{x}: %{z:.3f}<extra></extra>"), row=1, col=col)
        fig.update_yaxes(autorange="reversed", showticklabels=col == 1, row=1, col=col)
    return fig.update_layout(title="Class-centroid cosine similarities", height=height,
                             margin=dict(l=10, r=10, t=60, b=10))


def result_label(result: Mapping) -> str:
    """A stored result in one line, for choosing among several."""
    e, s = result["eval_set"], result["sample"]
    scenes = "every" if e["scenes"] is None else e["scenes"]
    return (f"{', '.join(labels(result).values())}: {scenes} scenes x {e['per_scene']} keyframes, "
            f"{s['per_class']} per class, seed {s['seed']} ({result['written']})")


def how_to_produce(dataset: str) -> str:
    """What to run when nothing is stored for ``dataset``."""
    return (f"No comparison of teachers is stored for the dataset `{dataset}`. `relviz eval teachers --dataset "
            f"{dataset} --teacher demo --teacher dinov2_vits14=PATH/dinov2_vits14_pretrain.pth --teacher "
            "ViT-B-16=PATH/open_clip_pytorch_model.bin` computes it (repeat `--teacher NAME=WEIGHTS` for each "
            "teacher; every teacher but `demo` needs its published weights file, as docs/teacher.md lists them) "
            "and stores it here. It compares U, T, G and the class relations of the teachers on the same points, "
            "with linear CKA between every two.")


__all__ = ["COLUMNS", "RANDOM", "cka_figure", "cka_matrix", "how_to_produce", "interval_note", "labels",
           "pairs_frame", "random_note", "relations_figure", "result_label", "summary_frame"]

"""The comparison views: the table of :func:`relviz.eval.report.comparison_rows` with its intervals
(the sample of every column is said by :func:`relviz.eval.report.sample_notes`), and per-class bars
of several checkpoints."""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from relviz.data.classes import CLASSES
from relviz.eval.report import METRICS, format_p, format_value, stored_differences


def comparison_frame(rows: Sequence[Mapping]) -> pd.DataFrame:
    """One line per row: checkpoint, loss, each metric with its 95% interval (as text), and the source:
    relviz checkpoint, imported feature set or imported published checkpoint, and which file."""
    return pd.DataFrame([{"checkpoint": r["checkpoint"], "loss": r["loss"],
                          **{m: format_value(r[m], r[f"{m}_low"], r[f"{m}_high"]) for m in METRICS},
                          "source": r.get("source") or ""} for r in rows])


def difference_frame(results: Mapping[str, Mapping]) -> pd.DataFrame:
    """Paired differences of every two students (:func:`relviz.eval.report.stored_differences`):
    a - b with its interval over scenes, raw and Holm-adjusted p and the verdict; with too few scenes
    each scene's difference instead."""
    def per_scene(r):
        return "" if r["per_scene"] is None else ", ".join(format_value(v, signed=True) for v in r["per_scene"])

    return pd.DataFrame([{"a - b": f"{r['a']} - {r['b']}", "metric": r["metric"],
                          "difference": format_value(r["value"], r["low"], r["high"], signed=True),
                          "p": format_p(r["p"]), "p (Holm)": format_p(r["p_holm"]),
                          "verdict": r["verdict"], "per scene": per_scene(r)} for r in stored_differences(results)])


def per_class_figure(results: Mapping[str, Mapping], key: str, title: str, y: str) -> go.Figure:
    """Grouped bars of a per-class result (``results[label][key]``: class index -> value); a result
    without it (zero-shot of features outside the teacher's text space) has no bars."""
    frame = pd.DataFrame([{"checkpoint": label, "class": CLASSES[int(c)], y: v}
                          for label, r in results.items() for c, v in sorted((r.get(key) or {}).items())],
                         columns=["checkpoint", "class", y])
    return px.bar(frame, x="class", y=y, color="checkpoint", barmode="group", title=title)


__all__ = ["comparison_frame", "difference_frame", "per_class_figure"]

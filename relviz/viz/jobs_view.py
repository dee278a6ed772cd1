"""The Jobs page's figures of one job: structure at its validations, a few-shot job's curves, the
training loss."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go

from relviz.viz.fewshot import checkpoint_label_efficiency, label_efficiency_curves
from relviz.viz.training import loss_figure, validation_figure


def job_figures(name: str, validation: pd.DataFrame, losses: pd.DataFrame,
                fewshot: Mapping | None = None) -> dict[str, go.Figure]:
    """The figures of one job's view on the Jobs page, those with data, by kind: ``val`` (structure at its
    validations, :func:`validation_figure`), ``fewshot`` (a few-shot job's result: its label-efficiency
    curves) and ``loss`` (:func:`loss_figure`)."""
    figures = {}
    if not validation.empty:
        figures["val"] = validation_figure({name: validation})
    if fewshot is not None:
        figures["fewshot"] = label_efficiency_curves(checkpoint_label_efficiency({name: fewshot}))
    if not losses.empty:
        figures["loss"] = loss_figure({name: losses})
    return figures

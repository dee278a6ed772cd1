"""Values derived from a source's features and kept for this server (issue #31: what a page's second
visit computed again, profiled in bench/README.md): the protocol sample behind a structure result, its
points, places and PCA basis, and figures. Not a page (app.py does not list it)."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from app_pages.common import source_key, structure, val_features
from relviz.eval.selection import EvalSet
from relviz.workspace import CheckpointInfo


def structure_points(info: CheckpointInfo | None, root: str, n: EvalSet, per_class: int, seed: int):
    """(features [S, D], labels [S]) of the sample behind :func:`app_pages.common.structure` of the same inputs."""
    val, idx = val_features(info, root, n), sample_index(info, root, n, per_class, seed)
    return val["pair_student"][idx], val["pair_labels"][idx]


def sample_index(info: CheckpointInfo | None, root: str, n: EvalSet, per_class: int, seed: int):
    """The sample [S] (indices into the paired points of :func:`val_features`) behind :func:`structure` of
    the same inputs (:func:`relviz.eval.structure.sample_indices`, which checks it), kept for this server."""
    from relviz.eval.structure import sample_indices

    return cached("sample", (source_key(info), root, n, per_class, seed), lambda: sample_indices(
        val_features(info, root, n), structure(info, root, n, per_class, seed)))


def cached(kind: str, key: tuple, build: Callable):
    """``build()``, kept for this server by (``kind``, ``key``): what a second visit of a page would compute
    again (a figure, a sample's indices, class relations; profiled in bench/README.md). ``key`` names all
    it depends on (:func:`source_key` for features); the value is shared by sessions, so it is read, never
    changed."""
    return _cached(kind, key, build)


@st.cache_resource(max_entries=96, show_spinner=False)
def _cached(kind: str, key: tuple, _build: Callable):  # the underscore: Streamlit does not hash the builder
    return _build()


def sample_places(info: CheckpointInfo, root: str, n: EvalSet, per_class: int, seed: int):
    """Where the sample behind :func:`structure` lies (:func:`relviz.viz.structure_view.sample_places`)."""
    from relviz.viz.structure_view import sample_places as places

    return cached("places", (source_key(info), root, n, per_class, seed), lambda: places(
        val_features(info, root, n), structure(info, root, n, per_class, seed), sample_index(info, root, n, per_class,
                                                                                            seed)))


def pca_basis(info: CheckpointInfo | None, root: str, n: EvalSet, per_class: int, seed: int, dims: int):
    """The PCA (``dims`` axes) of the sample behind :func:`structure` (:func:`relviz.metrics.fit_pca`)."""
    from relviz.metrics import fit_pca

    return cached("pca", (source_key(info), root, n, per_class, seed, dims), lambda: fit_pca(
        structure_points(info, root, n, per_class, seed)[0], k=dims))


def sources_key(sources: dict[str, CheckpointInfo | None]) -> tuple:
    """:func:`source_key` of several labelled sources, for a value derived from all of them."""
    return tuple((label, source_key(info)) for label, info in sources.items())

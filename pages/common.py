"""Shared pieces of the app's pages: settings, cached models and datasets, checkpoint discovery,
view state in the URL, and the error panel. Pages stay thin: everything else is a library call."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from relviz.config import ConfigError, Settings, load_settings
from relviz.data.classes import CLASS_COLORS, CLASSES
from relviz.teacher.demo import REPO_CHECKPOINTS

CLASS_NAMES = list(CLASSES[1:])
COLOR_MAP = {name: f"rgb{tuple(int(c) for c in CLASS_COLORS[i + 1])}" for i, name in enumerate(CLASS_NAMES)}


def settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as e:
        st.error(f"The workspace settings cannot be used: {e}")
        st.stop()


def error_panel(what: str, exc: BaseException) -> None:
    """A clear error box; the page (and the rest of the app) keeps working."""
    st.error(f"{what}: {exc}")
    with st.expander("details"):
        st.code("".join(traceback.format_exception(exc))[-4000:])


@dataclass(frozen=True)
class CheckpointInfo:
    label: str
    path: Path
    loss: str | None
    error: str | None = None


def list_checkpoints(s: Settings) -> list[CheckpointInfo]:
    """Student checkpoints: the committed demo students, and every run's final or last checkpoint."""
    from relviz.models.checkpoint import CheckpointError, read_metadata

    paths = sorted(REPO_CHECKPOINTS.glob("student-*.safetensors"))
    if s.runs_dir.is_dir():
        for run in sorted(p for p in s.runs_dir.iterdir() if p.is_dir()):
            final, last = run / "student.safetensors", run / "checkpoints" / "last.safetensors"
            if final.is_file() or last.is_file():
                paths.append(final if final.is_file() else last)
    out = []
    for p in paths:
        label = p.stem.removeprefix("student-") if p.parent == REPO_CHECKPOINTS else \
            (p.parent.name if p.name == "student.safetensors" else f"{p.parents[1].name} (last)")
        try:
            meta = read_metadata(p)
            out.append(CheckpointInfo(label, p, meta.get("loss")))
        except CheckpointError as e:
            out.append(CheckpointInfo(label, p, None, str(e)))
    return out


@st.cache_resource(max_entries=4, show_spinner="loading the student")
def load_student(path: str, mtime: float):
    """A student in eval mode, cached per (path, modification time)."""
    from relviz.models.checkpoint import load_student as _load

    return _load(path, backend="torch")


def student(info: CheckpointInfo):
    return load_student(str(info.path), info.path.stat().st_mtime)


@st.cache_resource(max_entries=2, show_spinner="loading the teacher")
def teacher(name: str, pretrained: str | None):
    from relviz.teacher import load_teacher

    return load_teacher(name, pretrained)


def active_teacher(s: Settings):
    return teacher(s.teacher, s.teacher_pretrained)


@st.cache_resource(max_entries=4, show_spinner="opening the dataset")
def dataset(root: str, split: str, load_images: bool = False):
    from relviz.data import NuScenesLidarSeg

    return NuScenesLidarSeg(root, split=split, load_images=load_images)


def dataset_root(s: Settings) -> Path:
    return s.dataset_root(st.session_state.get("dataset", s.dataset))


def query_param(key: str, default: str | None = None) -> str | None:
    return st.query_params.get(key, default)


def set_query_params(**values) -> None:
    """Mirror the view state in the URL so that a link reproduces the view."""
    for k, v in values.items():
        if v is None:
            st.query_params.pop(k, None)
        else:
            st.query_params[k] = str(v)


@st.cache_resource(max_entries=6, show_spinner=False)
def val_features(path: str, mtime: float, root: str, n: int, teacher_id: str) -> dict:
    """Point features of a student (``path``) or of the teacher (``path`` empty: the teacher's
    features on the paired points) over the first ``n`` mini_val keyframes, with labels."""
    from relviz.eval.zeroshot import gather_val_features
    from relviz.teacher.cache import FeatureCache

    s = settings()
    teacher = active_teacher(s)
    cache = FeatureCache(s.cache_dir, teacher.identity)
    ds = dataset(root, "mini_val")
    if path:
        model, _ = load_student(path, mtime)
        return gather_val_features(model, teacher, cache, ds, n, "cpu")
    import torch

    from relviz.data.dataset import collate
    from relviz.eval.features import teacher_pair_features

    feats, labels = [], []
    for i in range(min(n, len(ds))):
        batch = collate([ds[i]])
        feats.append(teacher_pair_features(teacher, cache, ds, batch))
        labels.append(batch["labels"][batch["pair_points"]])
    f = torch.cat(feats)
    return {"features": f, "labels": torch.cat(labels), "pair_student": f, "pair_teacher": f,
            "pair_labels": torch.cat(labels)}

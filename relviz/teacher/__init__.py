"""The CLIP teacher: dense MaskCLIP features, text embeddings, the feature cache, the demo teacher."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path

from relviz.teacher.cache import FeatureCache, cached_class_embeddings
from relviz.teacher.clip import ClipTeacher, TeacherWeightsError, dense_maskclip, sample_points
from relviz.teacher.prompts import DETAIL_PROMPTS, TEMPLATES, class_prompts


def load_teacher(name: str = "demo", pretrained: str | None = None, device: str = "cpu",
                 random_init: bool = False) -> ClipTeacher:
    """``demo`` -> the shipped demo teacher; otherwise an open_clip model with ``pretrained`` weights
    (a tag or a local file). Without weights it raises TeacherWeightsError unless ``random_init``."""
    if name == "demo":
        from relviz.teacher.demo import DEMO_TEACHER_PATH, load_demo_teacher

        return load_demo_teacher(pretrained or DEMO_TEACHER_PATH, device=device)
    return ClipTeacher(name, pretrained=pretrained, device=device, random_init=random_init)


_loading: dict[tuple, Future] = {}
_loading_lock = threading.Lock()


def load_teacher_async(name: str = "demo", pretrained: str | None = None, device: str = "cpu") -> Future:
    """:func:`load_teacher` in a background thread, shared by the whole process: the app's server
    starts it, pages wait on it only when they need the model (importing open_clip alone takes
    ~3.5 s). A failed load is retried by the next call; a changed weights file loads again; at
    most two teachers are kept."""
    key = (name, pretrained, device, weights_version(name, pretrained))
    with _loading_lock:
        future = _loading.get(key)
        if future is None or (future.done() and future.exception() is not None):
            for old in [k for k in _loading if k[:3] == key[:3] and k != key]:
                _loading.pop(old)  # an older version of the same weights
            while len(_loading) >= 2:
                _loading.pop(next(iter(_loading)))
            future = _loading[key] = Future()
            # not a daemon: a process that exits while the load runs waits for it, rather than
            # tearing torch down under it (which aborts with "terminate called ...")
            threading.Thread(target=_load_into_future, args=(future, name, pretrained, device),
                             name="relviz-teacher-load").start()
        return future


def _load_into_future(future: Future, name: str, pretrained: str | None, device: str) -> None:
    try:
        future.set_result(load_teacher(name, pretrained, device))
    except BaseException as e:  # handed to whoever waits on the future
        future.set_exception(e)


def weights_version(name: str = "demo", pretrained: str | None = None) -> int | None:
    """The modification time (ns) of the teacher's weights file when it is a local file (the demo
    teacher's, or a ``pretrained`` path), else None: part of the keys of anything derived from it."""
    if pretrained:
        weights = Path(pretrained)
    elif name == "demo":
        from relviz.teacher.demo import DEMO_TEACHER_PATH

        weights = DEMO_TEACHER_PATH
    else:
        return None
    return weights.stat().st_mtime_ns if weights.is_file() else None


def identity_of(name: str = "demo", pretrained: str | None = None) -> str:
    """The identity of the teacher :func:`load_teacher` gives for ``name`` and ``pretrained`` (the key
    of its feature caches). The demo teacher's is read from its file without building the model;
    another teacher is loaded to know it (through :func:`load_teacher_async`, so a load already
    under way is shared, not repeated)."""
    if name == "demo":
        from relviz.teacher.demo import DEMO_TEACHER_PATH, demo_teacher_identity

        return demo_teacher_identity(pretrained or DEMO_TEACHER_PATH)
    return load_teacher_async(name, pretrained).result().identity


__all__ = ["ClipTeacher", "FeatureCache", "TeacherWeightsError", "dense_maskclip", "sample_points", "DETAIL_PROMPTS",
           "TEMPLATES", "class_prompts", "load_teacher",
           "load_teacher_async", "weights_version", "identity_of", "cached_class_embeddings"]

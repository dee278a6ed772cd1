"""Teachers: the registry (demo, open_clip CLIP, SigLIP, DINOv2), dense features, text embeddings,
the feature cache."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path

import torch

from relviz.config import TeacherSpec
from relviz.teacher.base import require_text
from relviz.teacher.cache import FeatureCache, cached_class_embeddings
from relviz.teacher.clip import ClipTeacher, TeacherWeightsError, dense_maskclip, sample_points
from relviz.teacher.prompts import DETAIL_PROMPTS, TEMPLATES, class_prompts
from relviz.teacher.registry import TeacherEntry, build_teacher, entry_for, list_teachers


DEMO = TeacherSpec()


def load_teacher(spec: TeacherSpec = DEMO, device: str = "cpu", random_init: bool = False) -> ClipTeacher:
    """The teacher of registry entry ``spec.name`` (:mod:`relviz.teacher.registry`): the demo teacher
    (its shipped file unless ``spec.pretrained`` names another), an open_clip CLIP or SigLIP model
    with ``spec.pretrained`` weights (a tag or a local file), or DINOv2 from a local file. Without
    weights it raises TeacherWeightsError unless ``random_init``."""
    return build_teacher(spec.name, spec.pretrained, device, random_init)


class LazyDemoTeacher:
    """The demo teacher, built only when something needs the model. Its identity and dimension come
    from its file, and its class embeddings from the disk cache, so a training run whose teacher
    features are all cached (every resumed run) never imports open_clip or builds the model."""

    def __init__(self, path: str | Path, device: str = "cpu", cache_root: str | Path | None = None):
        from relviz.models.checkpoint import read_metadata
        from relviz.teacher.demo import demo_teacher_identity

        self.path, self.device, self._cache_root = Path(path), torch.device(device), cache_root
        if not self.path.is_file():
            raise TeacherWeightsError(f"demo teacher {path} not found; train it with `relviz teacher train`")
        self.identity = demo_teacher_identity(self.path)
        self.dim = int(read_metadata(self.path)["model_config"]["embed_dim"])
        self._teacher: ClipTeacher | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> ClipTeacher:
        with self._lock:
            if self._teacher is None:
                from relviz.teacher.demo import load_demo_teacher

                teacher = load_demo_teacher(self.path, device=self.device)
                if teacher.identity != self.identity:  # features of other weights must not land under this key
                    raise TeacherWeightsError(f"demo teacher {self.path} changed after this run started; restart it")
                self._teacher = teacher
            return self._teacher

    def class_embeddings(self, templates: tuple[str, ...] = TEMPLATES) -> torch.Tensor:
        if self._cache_root is None:
            return self.loaded.class_embeddings(templates)
        return cached_class_embeddings(self._cache_root, self.identity, lambda: self.loaded, templates).to(self.device)

    def __getattr__(self, name: str):  # image_features, encode_text, preprocess, ...: the model
        if name.startswith("_"):  # copy/pickle probes and unset private attributes: never build the model
            raise AttributeError(name)
        return getattr(self.loaded, name)


def teacher_for_training(spec: TeacherSpec, device: str, cache_root: str | Path) -> ClipTeacher:
    """The teacher of a training run: the demo teacher lazily (see :class:`LazyDemoTeacher`), any
    other now (its identity is a hash of its loaded weights)."""
    if spec.name == "demo":
        from relviz.teacher.demo import DEMO_TEACHER_PATH

        return LazyDemoTeacher(spec.pretrained or DEMO_TEACHER_PATH, device, cache_root)
    return load_teacher(spec, device)


_loading: dict[tuple, Future] = {}
_loading_lock = threading.Lock()


def load_teacher_async(spec: TeacherSpec = DEMO, device: str = "cpu") -> Future:
    """:func:`load_teacher` in a background thread, shared by the whole process: the app's server
    starts it, pages wait on it only when they need the model (importing open_clip alone takes
    ~3.5 s). A failed load is retried by the next call; a changed weights file loads again; at
    most two teachers are kept."""
    key = (spec, device, weights_version(spec))
    with _loading_lock:
        future = _loading.get(key)
        if future is None or (future.done() and future.exception() is not None):
            for old in [k for k in _loading if k[:2] == key[:2] and k != key]:
                _loading.pop(old)  # an older version of the same weights
            while len(_loading) >= 2:
                _loading.pop(next(iter(_loading)))
            future = _loading[key] = Future()
            # not a daemon: a process that exits while the load runs waits for it, rather than
            # tearing torch down under it (which aborts with "terminate called ...")
            threading.Thread(target=_load_into_future, args=(future, spec, device),
                             name="relviz-teacher-load").start()
        return future


def _load_into_future(future: Future, spec: TeacherSpec, device: str) -> None:
    try:
        future.set_result(load_teacher(spec, device))
    except BaseException as e:  # handed to whoever waits on the future
        future.set_exception(e)


def weights_version(spec: TeacherSpec = DEMO) -> int | None:
    """The modification time (ns) of the teacher's weights file when it is a local file (the demo
    teacher's, or a ``pretrained`` path), else None: part of the keys of anything derived from it."""
    if spec.pretrained:
        weights = Path(spec.pretrained)
    elif spec.name == "demo":
        from relviz.teacher.demo import DEMO_TEACHER_PATH

        weights = DEMO_TEACHER_PATH
    else:
        return None
    return weights.stat().st_mtime_ns if weights.is_file() else None


def identity_of(spec: TeacherSpec = DEMO) -> str:
    """The identity of the teacher :func:`load_teacher` gives for ``spec`` (the key of its feature
    caches). The demo teacher's is read from its file without building the model; another teacher
    is loaded to know it (through :func:`load_teacher_async`, so a load already under way is
    shared, not repeated)."""
    if spec.name == "demo":
        from relviz.teacher.demo import DEMO_TEACHER_PATH, demo_teacher_identity

        return demo_teacher_identity(spec.pretrained or DEMO_TEACHER_PATH)
    return load_teacher_async(spec).result().identity


__all__ = ["DEMO", "TeacherSpec", "TeacherEntry", "build_teacher", "entry_for", "list_teachers", "require_text", "ClipTeacher", "LazyDemoTeacher", "teacher_for_training", "FeatureCache", "TeacherWeightsError", "dense_maskclip", "sample_points", "DETAIL_PROMPTS",
           "TEMPLATES", "class_prompts", "load_teacher",
           "load_teacher_async", "weights_version", "identity_of", "cached_class_embeddings"]

"""Shared pieces of the app's pages: settings, cached models and datasets, checkpoint discovery,
view state in the URL, and the error panel. Pages stay thin: everything else is a library call."""

from __future__ import annotations

import traceback
from pathlib import Path

import streamlit as st

from relviz import workspace
from relviz.config import ConfigError, Settings, load_settings
from relviz.errors import RelvizError, shorten
from relviz.files import file_version
from relviz.data.classes import CLASS_COLORS, CLASSES
from relviz.eval.selection import EvalSet
from relviz.teacher import load_teacher_async, weights_version
from relviz.workspace import CheckpointInfo, student_checkpoints  # noqa: F401 (the pages call it from here)

CLASS_NAMES = list(CLASSES[1:])
COLOR_MAP = {name: f"rgb{tuple(int(c) for c in CLASS_COLORS[i + 1])}" for i, name in enumerate(CLASS_NAMES)}


def settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as e:
        st.error(f"The workspace settings cannot be used: {e}")
        st.stop()


def job_store(s: Settings):
    """The workspace's job store; a damaged or locked job database is said (which file, what to do)
    and the page stops there."""
    from relviz.jobs import JobStore

    try:
        return JobStore(s)
    except RelvizError as e:
        st.error(str(e))
        st.stop()


def fewshot_result(run_dir: Path) -> dict | None:
    """A finished few-shot job's curve (:func:`relviz.jobs.fewshot.read_result`), read again only when
    its file changes: the pages that show it refresh every few seconds. Shared, not copied: read only."""
    from relviz.jobs.fewshot import RESULT

    path = Path(run_dir) / RESULT
    return _fewshot_result(str(run_dir), file_version(path)) if path.is_file() else None


@st.cache_resource(max_entries=64, show_spinner=False)
def _fewshot_result(run_dir: str, version: str) -> dict | None:
    from relviz.jobs.fewshot import read_result

    return read_result(run_dir)


def error_panel(what: str, exc: BaseException) -> None:
    """A clear error box; the page (and the rest of the app) keeps working."""
    st.error(f"{what}: {exc}")
    with st.expander("details"):
        st.code("".join(traceback.format_exception(exc))[-4000:])


@st.cache_resource(max_entries=4, show_spinner="loading the student")
def load_student(info: CheckpointInfo, mtime: float):
    """(student model in eval mode or imported feature set, metadata), cached per (student, modification
    time): :func:`relviz.workspace.load_source`."""
    return workspace.load_source(info, backend="torch")


def student(info: CheckpointInfo):
    return load_student(info, _mtime(info))


def prefetch_teacher(s: Settings) -> None:
    """Start loading the teacher (once per process) without waiting for it."""
    load_teacher_async(s.teacher_spec)


def active_teacher(s: Settings):
    """The teacher, waiting for its background loading if needed (a failed load raises here)."""
    future = load_teacher_async(s.teacher_spec)
    if not future.done():
        with st.spinner("loading the teacher"):
            future.exception()
    return future.result()


def class_embeddings(s: Settings):
    """[16, D] from the disk cache (the teacher is only loaded when they are not there)."""
    return _class_embeddings(_teacher_key(s))


@st.cache_resource(max_entries=2, show_spinner=False)
def _class_embeddings(teacher_key: tuple):
    return workspace.class_embeddings(settings(), lambda: active_teacher(settings()))


def _teacher_key(s: Settings) -> tuple:
    """The teacher setting and its weights file's version: cached values derived from the teacher
    are keyed by it, so a retrained teacher invalidates them."""
    return s.teacher_spec, weights_version(s.teacher_spec)


@st.cache_resource(max_entries=4, show_spinner="opening the dataset")
def dataset(root: str, load_images: bool = False):
    """The validation keyframes of ``root`` (opened from the cached keyframe index)."""
    return workspace.open_val_dataset(settings(), root, load_images)


def dataset_root(s: Settings) -> Path:
    return s.dataset_root(st.session_state.get("dataset", s.dataset))


def query_param(key: str, default: str | None = None) -> str | None:
    return st.query_params.get(key, default)


def int_param(key: str, default: int, low: int, high: int) -> int:
    """A whole-number URL parameter in [low, high]; anything else is named in a warning and replaced
    by ``default`` (a link never crashes a page or starts an unbounded computation)."""
    raw = st.query_params.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        st.warning(f"URL parameter `{key}` = {shorten(raw)} ignored: expected a whole number from {low} to {high}; "
                   f"showing {default}")
        return default
    return value


def in_range(value, low: float, high: float):
    """``value`` when it is in [low, high] (or None), else None: what a page uses of a number box."""
    return value if value is None or low <= value <= high else None


def number(container, label: str, low: float, high: float, value, key: str, optional: bool = False, **kwargs):
    """A number box whose shown value is the used one. Streamlit's own min and max keep an out-of-range
    entry on screen while the page goes on with the previous value (a form's submit then does nothing,
    silently); here the box takes any number and one outside [low, high] is said under it, naming the
    range, and None is returned: the caller does not use it (and a form says why it did not submit).
    An empty box is None too, said unless ``optional`` (empty means "off")."""
    v = container.number_input(label, value=value, key=key, **kwargs)
    if v is None:
        if not optional:
            container.error(f"{label}: empty; not used")
    elif in_range(v, low, high) is None:
        container.error(f"{label}: {v:g} is outside {low:g} to {high:g}; not used")
    return in_range(v, low, high)


def set_query_params(**values) -> None:
    """Mirror the view state in the URL so that a link reproduces the view."""
    for k, v in values.items():
        if v is None:
            st.query_params.pop(k, None)
        else:
            st.query_params[k] = str(v)


def active_checkpoints(available: list[str]) -> list[str]:
    """The active checkpoints (one piece of session state, chosen on Home) that are in ``available``;
    a link's ``active`` URL parameter sets them when the session has none yet."""
    if "active_checkpoints" not in st.session_state and query_param("active"):
        st.session_state["active_checkpoints"] = query_param("active").split(",")
    chosen = [x for x in st.session_state.get("active_checkpoints", []) if x in available]
    if chosen:
        set_query_params(active=",".join(chosen))  # every page's URL carries the choice
    return chosen


def set_active_checkpoints(labels: list[str]) -> None:
    st.session_state["active_checkpoints"] = list(labels)
    set_query_params(active=",".join(labels) or None)


def _mtime(info: CheckpointInfo | None) -> float:
    return 0.0 if info is None else info.source_path.stat().st_mtime  # a feature set: its folder's


def _loaders(info: CheckpointInfo | None):
    """(teacher loader, student loader) for the workspace calls; they run only on a disk-cache miss."""
    s = settings()
    return (lambda: active_teacher(s)), (lambda: student(info)[0])


# mtime and teacher_key are part of the cache keys only: a rewritten checkpoint or a changed teacher
# gets fresh entries
@st.cache_resource(max_entries=6, show_spinner=False)
def _val_features(info: CheckpointInfo | None, mtime: float, root: str, n: EvalSet, teacher_key: tuple) -> dict:
    return workspace.val_features(settings(), root, info, n, *_loaders(info))


def fewshot(info: CheckpointInfo, root: str, compute: bool = False) -> dict | None:
    """The stored few-shot result of a student (None when there is none), trained now if ``compute``."""
    return workspace.fewshot(settings(), root, info, model_fn=(lambda: student(info)[0]) if compute else None)


def eval_set_controls(scenes_col, per_scene_col, key: str, per_scene: int = 2) -> EvalSet:
    """The evaluation set's two controls (val scenes, keyframes spread over each) and their EvalSet; their
    help says what a setting not computed before costs (the workspace's measured time per keyframe)."""
    per_keyframe = workspace.seconds_per_keyframe(settings())
    cost = (" A setting not computed before first gathers the features of its keyframes in the background"
            + (f" (about {per_keyframe:.1f} s per keyframe and checkpoint here, measured)" if per_keyframe else "")
            + "; the page shows the last result meanwhile.")
    scenes = scenes_col.select_slider("val scenes", ["all", 1, 2, 5, 10, 20, 50], value="all", key=f"{key}_scenes",
                                      help="Scenes are the unit of uncertainty: intervals need 10 or more." + cost)
    k = per_scene_col.slider("keyframes per scene", 1, 8, per_scene, key=f"{key}_k",
                             help="Spread over each scene (one drawn from each equal stretch of it)." + cost)
    return EvalSet(None if scenes == "all" else int(scenes), k, 0)


def val_features(info: CheckpointInfo | None, root: str, n: EvalSet) -> dict:
    """Validation features of a student (``info``) or of the teacher (None) over the mini_val
    keyframes ``n`` selects: from memory, else from the disk cache, else computed (and stored)."""
    return _val_features(info, _mtime(info), root, n, _teacher_key(settings()))


@st.cache_resource(max_entries=16, show_spinner=False)
def _structure(info: CheckpointInfo | None, mtime: float, root: str, n: EvalSet, per_class: int, seed: int,
               teacher_key: tuple) -> dict:
    return workspace.structure(settings(), root, info, n, per_class, seed, *_loaders(info))


def structure(info: CheckpointInfo | None, root: str, n: EvalSet, per_class: int, seed: int) -> dict:
    """U, T (per class), G and zero-shot IoU of a student (``info``) or the teacher (None), cached
    in memory and on disk."""
    return _structure(info, _mtime(info), root, n, per_class, seed, _teacher_key(settings()))


def live_ids(jobs) -> set[str]:
    """The ids of the jobs that are queued or running: a page refreshes itself only while there are some."""
    return {j.id for j in jobs if j.status in ("queued", "running")}


def live_jobs(store, kind: str | None = None) -> set[str]:
    """:func:`live_ids` of the store's jobs (of ``kind``); empty when the store cannot be read (the page
    says why where it lists the jobs)."""
    try:
        return live_ids(j for j in store.list() if kind is None or j.kind == kind)
    except RelvizError:
        return set()


def source_key(info: CheckpointInfo | None) -> tuple:
    """What a value derived from a student's (or the teacher's, None) features depends on: the source,
    its file's modification time and the teacher's version (:func:`app_pages.kept.cached` keys hold it)."""
    return info, _mtime(info), _teacher_key(settings())

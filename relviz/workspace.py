"""What the app reads from a workspace, and the disk caches that make a page's first render quick.

A page must not import nuscenes-devkit (~3 s), open_clip (~3.5 s) or run a model when the answer is
already on disk. So the dataset opens from its cached keyframe index, the teacher is known by an
identity read from its file, and class embeddings, validation features per checkpoint and toy runs
are stored under the workspace cache the first time they are computed. :func:`warm_caches` computes
them ahead for every checkpoint (``relviz warm``; ``make app`` runs it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from relviz.config import Settings
from relviz.errors import RelvizError
from relviz.eval.selection import EvalSet
from relviz.files import file_version, read_json, write_json
from relviz.models.checkpoint import PROVENANCE
from relviz.teacher.demo import REPO_CHECKPOINTS

VAL_SPLIT = "mini_val"
VERSION = "v1.0-mini"
# the keyframes the structure and comparison pages gather by default: 2 spread over every val scene
# (4 keyframes on mini_val, 2 scenes: per-scene values, no interval)
DEFAULT_EVAL_SET = EvalSet(scenes=None, per_scene=2, seed=0)
DEFAULT_PER_CLASS = 500  # and points per class of their stratified sample
BOOTSTRAP_RESAMPLES = 1000  # resamples of scenes behind every interval the app shows
PUBLISHED_SUFFIXES = (".pth", ".pt", ".ckpt", ".tar", ".safetensors")  # files in imported/ listed as students


@dataclass(frozen=True)
class CheckpointInfo:
    label: str
    path: Path  # the checkpoint file; for a feature set its manifest.json
    loss: str | None
    error: str | None = None
    partial: str | None = None  # why this student is not a finished run's ("stopped at step 689 of 2500")
    kind: str = "checkpoint"  # a key of PROVENANCE
    shown_path: str = ""  # the path as the pages show it (relative to the workspace or the repository)

    @property
    def key(self) -> str:
        """A cache key that changes whenever the file does (:func:`relviz.files.file_version`)."""
        if self.kind == "features":  # the folder: a new registration is a new folder (its manifest may be a copy)
            return f"features-{self.path.parent.name}-{file_version(self.path.parent)}"
        return f"{self.path.stem}-{file_version(self.path)}"

    @property
    def provenance(self) -> str:
        """Where the features come from, and which file: "relviz checkpoint runs/x/.../final.safetensors"."""
        return f"{PROVENANCE[self.kind]} {self.shown_path or self.path}"

    @property
    def source_path(self) -> Path:
        """What a loader opens: the checkpoint file, or the feature set's folder."""
        return self.path.parent if self.kind == "features" else self.path


def _shown(path: Path, settings: Settings) -> str:
    for base in (settings.home, REPO_CHECKPOINTS.parents[1]):
        try:
            return path.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            continue
    return str(path)


def imported_students(settings: Settings) -> list[CheckpointInfo]:
    """The registered feature sets (``features/<name>/``, labelled "<name> [features]") and the published
    checkpoints put in ``imported/`` ("<file stem> [published]"); a set whose manifest cannot be read is
    listed with its error. Published files are not opened here (a 200 MB torch.load per listing): a file
    relviz cannot rebuild says so when a page loads it."""
    from relviz.models.featureset import MANIFEST, feature_set_folders, read_manifest

    out = []
    for sub in feature_set_folders(settings.features_dir):
        path = sub / MANIFEST
        info = CheckpointInfo(f"{sub.name} [features]", path, None, kind="features", shown_path=_shown(sub, settings))
        try:
            read_manifest(sub)
        except RelvizError as e:
            info = replace(info, error=str(e))
        out.append(info)
    folder = settings.imported_dir
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.is_file() and path.suffix in PUBLISHED_SUFFIXES and not path.name.startswith("."):
            stem = path.name.removesuffix(".tar").rsplit(".", 1)[0]
            out.append(CheckpointInfo(f"{stem} [published]", path, None, kind="published",
                                      shown_path=_shown(path, settings)))
    return out


def student_checkpoints(settings: Settings) -> list[CheckpointInfo]:
    """Student checkpoints: the committed demo students, every run's final (else last) checkpoint, and
    what was imported (:func:`imported_students`); an unreadable file is listed with its error instead of
    its loss."""
    from relviz.models.checkpoint import CheckpointError, read_metadata
    from relviz.train.rundir import RunDir

    paths = sorted(REPO_CHECKPOINTS.glob("student-*.safetensors"))
    if settings.runs_dir.is_dir():
        paths += [c for run in sorted(p for p in settings.runs_dir.iterdir() if p.is_dir())
                  if (c := RunDir(run).checkpoint()) is not None]
    out = []
    for p in paths:
        finished = p.parent == REPO_CHECKPOINTS or p == RunDir(p.parent).final
        label = p.stem.removeprefix("student-") if p.parent == REPO_CHECKPOINTS else \
            (p.parent.name if finished else p.parents[1].name)
        try:
            meta = read_metadata(p)
        except CheckpointError as e:
            out.append(CheckpointInfo(label, p, None, str(e), shown_path=_shown(p, settings)))
            continue
        partial = None
        if not finished:  # a run cancelled, failed or still training: its last checkpoint, marked as such
            total = meta.get("total_steps")
            partial = f"stopped at step {meta.get('step', '?')}" + (f" of {total}" if total else "") + \
                " (the run did not finish)"
            label = f"{label} (partial, step {meta.get('step', '?')}" + (f"/{total})" if total else ")")
        out.append(CheckpointInfo(label, p, meta.get("loss"), partial=partial, shown_path=_shown(p, settings)))
    return out + imported_students(settings)


def load_source(info: CheckpointInfo, backend: str = "torch", device: str | torch.device = "cpu"):
    """(what the analysis reads features from, its metadata): a student model in eval mode (relviz's
    checkpoint, or a published one relviz can rebuild) or an opened feature set (its manifest as the
    metadata)."""
    if info.kind == "features":
        from relviz.models.featureset import open_feature_set

        fs = open_feature_set(info.source_path)
        return fs, {**fs.manifest.to_dict(), "provenance": info.provenance}
    from relviz.models.checkpoint import load_student

    model, meta = load_student(info.source_path, backend=backend, device=device)
    return model, {**meta, "provenance": info.provenance}


def text_applies(settings: Settings, info: CheckpointInfo | None) -> bool:
    """Whether a student's features live in the workspace teacher's space (zero-shot, G to text, and G to
    the teacher's features): relviz's students always; a feature set when its manifest's ``text_space``
    names this teacher; a published checkpoint never here (the teacher's identity is a hash of its weights,
    which a published text space cannot be matched to without them: the Zero-shot page leaves it out)."""
    if info is None or info.kind == "checkpoint":
        return True
    from relviz.models.featureset import read_manifest, text_space_matches

    if info.kind == "features":
        return text_space_matches(read_manifest(info.source_path).text_space, teacher_identity(settings))
    return False


def configuration_of(info: CheckpointInfo) -> str:
    """The configuration a student was trained with, seed left out (students of one configuration with
    different seeds share it: one point of a relation between configurations): ``<loss> <hash of the
    training config without seed>``; a checkpoint that records no training config is its own."""
    import hashlib
    import json

    from relviz.models.checkpoint import read_metadata

    if info.kind != "checkpoint":
        return info.label  # an imported model records no relviz training config: its own configuration
    training = dict(read_metadata(info.path).get("training") or {})
    if not training:
        return info.label
    training.pop("seed", None)
    digest = hashlib.sha256(json.dumps(training, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{training.get('loss', info.loss)} {digest}"


def open_val_dataset(settings: Settings, root: str | Path, load_images: bool = False):
    """The validation keyframes of ``root``, opened from the cached index when there is one."""
    from relviz.data import NuScenesLidarSeg

    return NuScenesLidarSeg(root, version=VERSION, split=VAL_SPLIT, load_images=load_images,
                            index_cache=settings.cache_dir)


def teacher_identity(settings: Settings) -> str:
    from relviz.teacher import identity_of

    return identity_of(settings.teacher_spec)


def class_embeddings(settings: Settings, teacher_fn: Callable) -> torch.Tensor:
    """The teacher's 16 class embeddings [16, D], from the cache (``teacher_fn`` loads it on a miss)."""
    from relviz.teacher import cached_class_embeddings

    return cached_class_embeddings(settings.cache_dir, teacher_identity(settings), teacher_fn)


def _val_dir(settings: Settings, root: str | Path) -> Path:
    """Where validation features and metrics of ``root``'s val split under the current teacher live."""
    from relviz.data.index import index_key

    return settings.cache_dir / "valfeatures" / teacher_identity(settings) / index_key(Path(root), VERSION, VAL_SPLIT)


def _val_path(settings: Settings, root: str | Path, checkpoint: CheckpointInfo | None, eval_set: EvalSet) -> Path:
    name = "teacher" if checkpoint is None else checkpoint.key
    return _val_dir(settings, root) / f"{name}-{eval_set.key()}.safetensors"


def _metrics_path(settings: Settings, root: str | Path, checkpoint: CheckpointInfo | None, eval_set: EvalSet,
                  per_class: int, seed: int) -> Path:
    name = "teacher" if checkpoint is None else checkpoint.key
    return (_val_dir(settings, root) / f"{name}-{eval_set.key()}-metrics-pc{per_class}-s{seed}"
            f"-b{BOOTSTRAP_RESAMPLES}.json")


def seconds_per_keyframe(settings: Settings) -> float | None:
    """The last measured time to gather one keyframe's validation features in this workspace (student
    and teacher features at its points), for the estimate a page shows before it computes; None before
    the first."""
    stored = read_json(settings.cache_dir / "valfeatures" / "timing.json")
    return stored.get("seconds_per_keyframe") if isinstance(stored, dict) else None


def structure_on_disk(settings: Settings, root: str | Path, checkpoint: CheckpointInfo | None, eval_set: EvalSet,
                      per_class: int, seed: int) -> bool:
    """Whether :func:`structure`'s features and metrics files exist (two stats, nothing read: a page asks on
    every render)."""
    return (_val_path(settings, root, checkpoint, eval_set).is_file()
            and _metrics_path(settings, root, checkpoint, eval_set, per_class, seed).is_file())


def val_features(settings: Settings, root: str | Path, checkpoint: CheckpointInfo | None, eval_set: EvalSet,
                 teacher_fn: Callable, model_fn: Callable | None = None,
                 progress: Callable[[int, int], None] | None = None) -> dict:
    """Validation features of a student (``checkpoint``; ``model_fn`` loads it) or of the teacher
    (``checkpoint`` None: its features at the paired points), over the keyframes ``eval_set`` selects,
    from the disk cache; computing them on a miss opens the dataset and calls the loaders (``progress``
    after each keyframe; the time per keyframe is recorded for :func:`seconds_per_keyframe`)."""
    from relviz.eval.features import cached_val_features
    from relviz.eval.structure import gather_teacher_val_features, gather_val_features
    from relviz.teacher.cache import FeatureCache

    def compute() -> dict:
        teacher = teacher_fn()
        cache = FeatureCache(settings.cache_dir, teacher_identity(settings))
        ds = open_val_dataset(settings, root)
        start = time.perf_counter()
        if checkpoint is None:
            val = gather_teacher_val_features(teacher, cache, ds, eval_set, progress)
        else:
            model = model_fn()
            device = next(model.parameters()).device if hasattr(model, "parameters") else "cpu"  # a feature set
            val = gather_val_features(model, teacher, cache, ds, eval_set, device, progress)
        if checkpoint is not None and len(val["keyframe_index"]):  # a student's: the slow kind a page waits for
            write_json(settings.cache_dir / "valfeatures" / "timing.json",
                       {"seconds_per_keyframe": (time.perf_counter() - start) / len(val["keyframe_index"])})
        return val

    return cached_val_features(_val_path(settings, root, checkpoint, eval_set), compute)


def structure(settings: Settings, root: str | Path, checkpoint: CheckpointInfo | None, eval_set: EvalSet,
              per_class: int, seed: int, teacher_fn: Callable, model_fn: Callable | None = None,
              progress: Callable[[int, int], None] | None = None) -> dict:
    """:func:`relviz.eval.structure.structure_metrics` (U, T and per class, G, zero-shot IoU) of
    :func:`val_features` (for the teacher G is 0), stored as JSON next to the features."""
    from relviz.eval.structure import from_json, structure_metrics

    path = _metrics_path(settings, root, checkpoint, eval_set, per_class, seed)
    stored = read_json(path)
    if isinstance(stored, dict):
        return from_json(stored)
    val = val_features(settings, root, checkpoint, eval_set, teacher_fn, model_fn, progress)
    # zero-shot and G only for features in this teacher's space (an imported set or model may not be)
    in_space = text_applies(settings, checkpoint)
    text = class_embeddings(settings, teacher_fn) if in_space else None
    out = structure_metrics(val, text, per_class, seed, n_resamples=BOOTSTRAP_RESAMPLES, replicates=BOOTSTRAP_RESAMPLES,
                            teacher_space=in_space)
    write_json(path, out)
    return out


def metric_sample(val: dict, metrics: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The points behind ``metrics`` (a :func:`structure` result of the features ``val``): their
    features [S, D] and labels [S], by :func:`relviz.eval.structure.sample_indices`, which checks the
    sample's id, so a figure shows exactly the sample its numbers describe."""
    from relviz.eval.structure import sample_indices

    idx = sample_indices(val, metrics)
    return val["pair_student"][idx], val["pair_labels"][idx]


def fewshot(settings: Settings, root: str | Path, checkpoint: CheckpointInfo, fraction: float = 0.01, seed: int = 0,
            model_fn: Callable | None = None) -> dict | None:
    """:func:`relviz.eval.fewshot.evaluate_fewshot` of a student (a linear probe on ``fraction`` of
    the mini_train frames, scored on every mini_val frame), stored as JSON per checkpoint, dataset,
    fraction and seed. Without ``model_fn`` only a stored result is returned (None when there is
    none): the probe takes seconds per checkpoint, so the app runs it when asked."""
    from relviz.data import NuScenesLidarSeg
    from relviz.data.index import index_key
    from relviz.eval.fewshot import evaluate_fewshot

    path = (settings.cache_dir / "fewshot" / index_key(Path(root), VERSION, VAL_SPLIT)
            / f"{checkpoint.key}-f{fraction:g}-s{seed}.json")
    stored = read_json(path)
    if stored is not None or model_fn is None:
        return stored
    train = NuScenesLidarSeg(root, version=VERSION, split="mini_train", load_images=False,
                             index_cache=settings.cache_dir)
    if checkpoint.kind == "features":
        from relviz.models.featureset import read_manifest

        if "mini_train" not in read_manifest(checkpoint.source_path).splits:
            raise RelvizError(f"{checkpoint.provenance}: the linear probe trains on mini_train's features, and this "
                              f"set holds only {', '.join(read_manifest(checkpoint.source_path).splits)}; export or "
                              f"write it with mini_train too")
    result = evaluate_fewshot(model_fn(), train, open_val_dataset(settings, root), fraction, seed=seed)
    write_json(path, result)
    return result


def pending_caches(settings: Settings, root: str | Path, eval_set: EvalSet = DEFAULT_EVAL_SET) -> list[str]:
    """What :func:`warm_caches` has not prepared yet for ``root`` (the dataset itself, the teacher's
    and each student's validation features), in words; empty when every page opens from disk.
    Only file existence is checked, so the Home page can ask on every render."""
    root = Path(root)
    if not (root / VERSION).is_dir():
        return [f"the dataset {root.name} (`relviz demo --dataset-only` generates it)"]
    pending = [] if _val_path(settings, root, None, eval_set).is_file() else ["the teacher's validation features"]
    pending += [f"validation features of {info.label}" for info in student_checkpoints(settings)
                if info.error is None and not _val_path(settings, root, info, eval_set).is_file()]
    return pending


def cache_finished_run(settings: Settings):
    """An ``on_finish`` hook for :class:`relviz.train.trainer.Trainer`: store the final student's
    validation features and metrics where the app reads them, so the run opens at once on every
    page. Only for the app's teacher and a v1.0-mini dataset; writes an ``app_cache`` event."""

    def hook(trainer, checkpoint: Path) -> None:
        if trainer.val_ds.version != VERSION or trainer.teacher.identity != teacher_identity(settings):
            return
        start = time.perf_counter()
        trainer.model.eval()
        info = CheckpointInfo(trainer.run_dir.name, checkpoint, trainer.cfg.loss)
        structure(settings, trainer.dataroot, info, DEFAULT_EVAL_SET, DEFAULT_PER_CLASS, 0,
                  lambda: trainer.teacher, lambda: trainer.model)
        trainer.events.write("app_cache", seconds=round(time.perf_counter() - start, 2))

    return hook


def warm_caches(settings: Settings, root: str | Path, eval_set: EvalSet = DEFAULT_EVAL_SET, log=print) -> dict:
    """Fill every cache the app's pages read for ``root`` and the workspace's checkpoints, so that
    no page computes on its first render: dataset index, class embeddings, teacher and student
    validation features, each student's features of the first keyframe (the zero-shot page's
    default) and the default toy run. Returns seconds per step; a second call finds everything.
    A step that fails is logged and the others still run; then :class:`WarmError` is raised."""
    from relviz.eval.features import point_features_cached
    from relviz.teacher import load_teacher
    from relviz.toy import ToyConfig, run_toy_cached, view_snapshots

    teacher = None

    def teacher_fn():
        nonlocal teacher
        if teacher is None:
            teacher = load_teacher(settings.teacher_spec)
        return teacher

    timings: dict[str, float] = {}
    failed: dict[str, str] = {}

    def step(name: str, fn: Callable) -> None:
        t = time.perf_counter()
        try:
            fn()
        except Exception as e:  # one broken checkpoint or teacher must not keep the rest cold
            failed[name] = f"{type(e).__name__}: {e}"
            log(f"{name}: failed ({failed[name]})")
            return
        timings[name] = round(time.perf_counter() - t, 2)
        log(f"{name}: {timings[name]:.1f} s")

    dataset = None

    def open_dataset():
        nonlocal dataset
        dataset = open_val_dataset(settings, root)

    step("dataset index", open_dataset)
    step("class embeddings", lambda: class_embeddings(settings, teacher_fn))
    step("teacher validation features", lambda: structure(settings, root, None, eval_set, DEFAULT_PER_CLASS, 0,
                                                          teacher_fn))
    for info in student_checkpoints(settings):
        if info.error is not None:
            log(f"skipping {info.path}: {info.error}")
            continue

        def student(info=info):
            model = load_source(info)[0]
            structure(settings, root, info, eval_set, DEFAULT_PER_CLASS, 0, teacher_fn, lambda: model)
            point_features_cached(model, info.key, dataset or open_val_dataset(settings, root), 0, settings.cache_dir)

        step(f"student {info.label}", student)
    step("toy run", lambda: run_toy_cached(ToyConfig(), settings.cache_dir, view_snapshots(ToyConfig().iters)))
    if failed:
        raise WarmError(failed, timings)
    return timings


class WarmError(RelvizError):
    """Some caches could not be filled (``failed``: step -> error); the others were (``timings``)."""

    def __init__(self, failed: dict[str, str], timings: dict[str, float]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in failed.items()))
        self.failed, self.timings = failed, timings

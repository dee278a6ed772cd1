"""The evaluations of one finished run, stored in its folder as ``evaluation.json``, and the
teacher's structure on the same keyframes (the reference for U and T).

Each evaluation is written as soon as it is done, with the checkpoint's SHA-256 and the protocol
(:meth:`EvaluationSpec.protocol`): an interrupted evaluation continues where it stopped, a fraction
added later is the only thing computed, and a changed checkpoint or protocol is evaluated again.
Every call into the evaluation protocols is in one small function (``_structure``,
``_linear_probe``, ``_finetune``, ``_teacher_structure``), so a change of their API is a change in
one place.
"""

from __future__ import annotations

import fcntl
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from relviz.config import Settings
from relviz.experiment.spec import EvaluationSpec, ExperimentError
from relviz.files import read_json, write_json
from relviz.train.config import TrainConfig
from relviz.train.rundir import RunDir

EVALUATION_FILE = "evaluation.json"


def _plain(value: Any) -> Any:
    """``value`` as JSON gives it back (numpy scalars as floats, int keys as strings)."""
    return json.loads(json.dumps(value, default=float))


def evaluation_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / EVALUATION_FILE


def stored_evaluation(run_dir: str | Path, config: TrainConfig, evaluation: EvaluationSpec) -> dict | None:
    """The run's stored evaluation when it holds everything ``evaluation`` asks for, under its
    protocol, else None."""
    stored = read_json(evaluation_path(run_dir))
    return stored if evaluation_complete(stored, config, evaluation) else None


def evaluation_complete(stored: Any, config: TrainConfig, evaluation: EvaluationSpec) -> bool:
    """Whether ``stored`` (a run's evaluation as JSON gives it) holds everything ``evaluation`` asks
    for, under its protocol for ``config``."""
    if not isinstance(stored, dict) or stored.get("protocol") != _plain(evaluation.protocol(config)) \
            or "structure" not in stored:
        return False
    places = [(stored, evaluation.wanted()),
              *((((stored.get("ood") or {}).get(name) or {}), evaluation.wanted_ood())
                for name in evaluation.ood_datasets)]
    return all(f"{f:g}" in (place.get(method) or {}) for place, wanted in places
               for method, fractions in wanted.items() for f in fractions)


def _datasets(settings: Settings, config: TrainConfig, protocol: dict):
    from relviz.data import NuScenesLidarSeg

    root = settings.dataset_root(config.dataset)
    if not root.is_dir():
        raise ExperimentError(f"dataset {root} of the run does not exist")

    def open_split(split: str):
        return NuScenesLidarSeg(root, config.version, split, config.voxel_size, config.cylindrical, load_images=False,
                                index_cache=settings.cache_dir)

    return open_split(protocol["split"]), open_split(protocol["train_split"])


OOD_KEY = "[evaluate] 'ood_datasets'"


def ood_roots(settings: Settings, evaluation: EvaluationSpec) -> dict[str, tuple[Path, str]]:
    """Each out-of-distribution dataset of ``evaluation`` -> (its folder, its format); an ExperimentError
    naming the key when one is not a folder of either layout (a runner can call it before training)."""
    from relviz.data.kitti import detect_format
    from relviz.errors import InputError

    out = {}
    for name in evaluation.ood_datasets:
        root = settings.dataset_root(name)
        try:
            out[name] = (root, detect_format(root))
        except InputError as e:
            raise ExperimentError(f"{OOD_KEY}: {name!r}: {e}") from None
    return out


def _ood_splits(root: Path, layout: str, settings: Settings, config: TrainConfig):
    """(val, train) of an out-of-distribution dataset, voxelized as the run's own: SemanticKITTI's 08 and
    00-07, 09, 10; nuScenes' mini_val / mini_train (v1.0-mini) or val / train (its one other version)."""
    from relviz.data import NuScenesLidarSeg
    from relviz.data.kitti import SemanticKitti, default_splits, nuscenes_versions

    grid = {"voxel_size": config.voxel_size, "cylindrical": config.cylindrical}
    if layout == "semantickitti":
        return tuple(SemanticKitti(root, split, **grid) for split in default_splits(layout))
    versions = nuscenes_versions(root)
    if len(versions) != 1:
        raise ExperimentError(f"{OOD_KEY}: {root} holds {len(versions)} nuScenes versions ({', '.join(versions)}); "
                              f"expected one")
    return tuple(NuScenesLidarSeg(root, versions[0], split, load_images=False, index_cache=settings.cache_dir, **grid)
                 for split in default_splits(layout, versions[0]))


def _structure(model, teacher, cache, val, evaluation: EvaluationSpec, device) -> dict:
    """U, T, G and zero-shot mIoU of the student on the evaluation set's keyframes (scenes x keyframes
    spread over each), with the shared scene resamples the claims' two-stage bootstrap reads."""
    from relviz.eval.structure import structure_and_zeroshot

    return structure_and_zeroshot(model, teacher, cache, val, evaluation.eval_set, per_class=evaluation.per_class,
                                  seed=evaluation.seed, device=device, replicates=evaluation.replicates,
                                  aggregation=evaluation.prompt_aggregation)


def _fewshot_val_frames(val, evaluation: EvaluationSpec) -> list[int] | None:
    """The val frames few-shot is scored on: None (every frame of ``val``) under ``fewshot_frames =
    "all"``; under ``"evaluation_set"`` the keyframes the structure is evaluated on (the evaluation
    set's scenes x keyframes, :func:`relviz.eval.structure.evaluation_keyframes`)."""
    from relviz.eval.structure import evaluation_keyframes

    if evaluation.fewshot_frames == "all":
        return None
    return evaluation_keyframes(val, evaluation.eval_set)[0]


def _linear_probe(model, train, val, fraction: float, seed: int, device, val_frames: list[int] | None) -> dict:
    """Linear-probe few-shot: a probe on ``fraction`` of ``train``'s frames, mIoU on every val frame
    (``val_frames`` None) or on the val frames ``val_frames``."""
    from relviz.eval.fewshot import evaluate_fewshot

    return evaluate_fewshot(model, train, val, fraction, device=device, seed=seed, val_frames=val_frames)


def _finetune(model, train, val, fraction: float, evaluation: EvaluationSpec, device,
              val_frames: list[int] | None) -> dict:
    """Fine-tuned few-shot: the whole student with a head on ``fraction`` of ``train``'s frames, once
    per fine-tuning seed (``evaluation.seed``, + 1, ...: ``finetune_seeds`` of them), scored on every
    val frame (``val_frames`` None) or on ``val_frames``; ``miou`` is the mean over them, each seed's
    value beside it, with the mean on ``evaluation.replicates`` shared scene resamples for the claims
    (:func:`relviz.eval.finetune.finetune_over_seeds`)."""
    from relviz.eval.fewshot import selection, val_selection
    from relviz.eval.finetune import finetune, finetune_over_seeds, seed_list

    schedule = {"batch": evaluation.finetune_batch}
    if evaluation.finetune_steps is not None:
        schedule["steps"] = evaluation.finetune_steps
    runs = [finetune(model, train, val, fraction, seed=seed, device=device, val_frames=val_frames, **schedule)
            for seed in seed_list(evaluation.finetune_seeds, evaluation.seed)]
    # resample seed 0: the structure's (structure_metrics' bootstrap_seed), so a run keeps one set of draws
    return {**selection(train, fraction)[1],
            **finetune_over_seeds(runs, bootstrap_seed=0, replicates=evaluation.replicates),
            **val_selection(val, val_frames)}


def _fewshot(method: str, model, train, val, fraction: float, evaluation: EvaluationSpec, device,
             val_frames: list[int] | None = None) -> dict:
    if method == "finetune":
        return _finetune(model, train, val, fraction, evaluation, device, val_frames)
    return _linear_probe(model, train, val, fraction, evaluation.seed, device, val_frames)


def _teacher_structure(teacher, cache, val, evaluation: EvaluationSpec) -> dict:
    """The teacher's U, T and zero-shot mIoU on its paired points of the same keyframes (G = 0)."""
    from relviz.eval.structure import gather_teacher_val_features, structure_metrics
    from relviz.teacher.text import text_classifier

    return structure_metrics(gather_teacher_val_features(teacher, cache, val, evaluation.eval_set),
                             text_classifier(teacher, evaluation.prompt_aggregation), evaluation.per_class,
                             evaluation.seed,
                             replicates=evaluation.replicates)


def _teacher(settings: Settings, config: TrainConfig, device):
    from relviz.teacher import FeatureCache, teacher_for_training

    teacher = teacher_for_training(config.teacher_spec, str(device), settings.cache_dir)
    return teacher, FeatureCache(settings.cache_dir, teacher.identity)


def evaluate_run(run_dir: str | Path, config: TrainConfig, evaluation: EvaluationSpec, settings: Settings,
                 log: Callable[[str], None] | None = None) -> dict:
    """Every evaluation of ``evaluation`` for the finished run in ``run_dir`` (trained with ``config``):
    ``structure`` (U, T, G, zero-shot mIoU), ``linear_probe`` and ``finetune`` (fraction -> few-shot
    result; fine-tuning's over ``finetune_seeds`` seeds; scored on every val frame, or with
    ``fewshot_frames = "evaluation_set"`` on the structure's keyframes), and ``ood``
    (out-of-distribution dataset -> its ``dataroot``, ``format`` and the same few-shot results on its
    own splits, scored on every frame of its val split: the evaluation set is drawn from the run's
    own val split), as stored in the run's ``evaluation.json`` (pieces already there for this
    checkpoint and protocol are kept; the file is replaced whole after each piece, so an evaluation
    killed mid-way leaves the pieces done before it, never half of one)."""
    from relviz.models.checkpoint import file_sha256, load_student
    from relviz.train.trainer import resolve_device

    checkpoint = RunDir(run_dir).final
    if not checkpoint.is_file():
        raise ExperimentError(f"run {run_dir} has no final student ({checkpoint.name}); it has not finished")
    ood = ood_roots(settings, evaluation)  # a bad folder fails before anything is computed
    protocol = _plain(evaluation.protocol(config))
    sha = file_sha256(checkpoint)
    stored = read_json(evaluation_path(run_dir))
    result = stored if isinstance(stored, dict) and stored.get("checkpoint_sha256") == sha and \
        stored.get("protocol") == protocol else {"checkpoint_sha256": sha, "protocol": protocol}
    device = resolve_device(config.device)
    val, train = _datasets(settings, config, protocol)
    loaded: list = []

    def student():  # loaded once, and only when something is left to evaluate
        if not loaded:
            loaded.append(load_student(checkpoint, backend=settings.sparse_backend, device=device)[0])
        return loaded[0]

    name = Path(run_dir).name
    if "structure" not in result:
        if log:
            log(f"{name}: structure and zero-shot on {evaluation.eval_set.describe()}")
        result["structure"] = _plain(_structure(student(), *_teacher(settings, config, device), val, evaluation,
                                                device))
        write_json(evaluation_path(run_dir), result)
    val_frames: list = []  # drawn once, and only when a few-shot result is left to compute

    def scored() -> list[int] | None:
        if not val_frames:
            val_frames.append(_fewshot_val_frames(val, evaluation))
        return val_frames[0]

    for method, fractions in evaluation.wanted().items():
        done = result.setdefault(method, {})
        for fraction in fractions:
            if f"{fraction:g}" not in done:
                if log:
                    log(f"{name}: {method.replace('_', ' ')} few-shot at {fraction:g}")
                done[f"{fraction:g}"] = _plain(_fewshot(method, student(), train, val, fraction, evaluation, device,
                                                        scored()))
                write_json(evaluation_path(run_dir), result)
    for dataset, (root, layout) in ood.items():
        entry = result.setdefault("ood", {}).setdefault(dataset, {"dataroot": str(root), "format": layout})
        splits: list = []  # opened once, and only when something is left to evaluate
        for method, fractions in evaluation.wanted_ood().items():
            done = entry.setdefault(method, {})
            for fraction in fractions:
                if f"{fraction:g}" not in done:
                    if log:
                        log(f"{name}: {method.replace('_', ' ')} few-shot at {fraction:g} on {dataset} "
                            f"(out of distribution)")
                    splits = splits or list(_ood_splits(root, layout, settings, config))
                    done[f"{fraction:g}"] = _plain(_fewshot(method, student(), splits[1], splits[0], fraction,
                                                            evaluation, device))
                    write_json(evaluation_path(run_dir), result)
    return result


def teacher_key(config: TrainConfig, evaluation: EvaluationSpec) -> str:
    """What the teacher's structure depends on: the teacher, its weights and the protocol."""
    return json.dumps({"teacher": [config.teacher, config.teacher_pretrained],
                       **_plain(evaluation.protocol(config))}, sort_keys=True)


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock (``flock``) on the file ``path`` (created if missing) for the block,
    waiting for another process that holds it; the kernel releases it when the holder exits, killed
    or not, so a stale lock never blocks."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _stored_references(path: str | Path) -> dict:
    stored = read_json(path)
    return stored if isinstance(stored, dict) else {}


def teacher_reference(path: str | Path, config: TrainConfig, evaluation: EvaluationSpec, settings: Settings,
                      log: Callable[[str], None] | None = None) -> dict:
    """The teacher's structure (:func:`_teacher_structure`) for ``config``'s teacher and dataset under
    ``evaluation``, stored in ``path`` (one JSON file of entries by :func:`teacher_key`, replaced
    whole). Computed once: evaluations running at once wait on the lock file ``<path>.lock`` while one
    of them computes it, then read it."""
    from relviz.train.trainer import resolve_device

    protocol = _plain(evaluation.protocol(config))
    key = teacher_key(config, evaluation)
    if key in (stored := _stored_references(path)):
        return stored[key]
    with file_lock(f"{path}.lock"):
        stored = _stored_references(path)  # again, under the lock: another process may have written it
        if key not in stored:
            device = resolve_device(config.device)
            teacher, cache = _teacher(settings, config, device)
            val, _ = _datasets(settings, config, protocol)
            stored[key] = {"teacher": config.teacher, "protocol": protocol,
                           "structure": _plain(_teacher_structure(teacher, cache, val, evaluation))}
            write_json(path, stored)
            if log:
                log(f"teacher's structure computed on {evaluation.eval_set.describe()} ({Path(path).name})")
    return stored[key]

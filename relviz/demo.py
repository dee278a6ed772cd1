"""The demo workspace, from nothing: the synthetic dataset, the demo teacher, and the demo
experiment (:data:`DEMO_EXPERIMENT`: the three losses x three seeds, evaluated with intervals over
seeds); one student per loss (seed 0) and the experiment's report are committed under
``checkpoints/demo/`` with a manifest (sha256, configuration, scores).

``make app`` only generates the dataset (the checkpoints are in the repository), so a first start
is quick; ``relviz demo`` rebuilds everything. The experiment's runs are background jobs in the
workspace: an interrupted ``relviz demo`` continues where it stopped when run again.

``relviz demo --evidence`` is the evidence experiment (:data:`EVIDENCE_EXPERIMENT`, docs/evidence.md):
a larger synthetic v1.0-trainval world (:func:`evidence_world`, :data:`EVIDENCE_DATASET`, generated
into a workspace outside the checkout) and the experiment that answers the paper's questions at 5
seeds and 12 validation scenes. It uses the committed demo teacher and publishes nothing into
``checkpoints/demo/``: its report stays in the workspace's experiment folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

from relviz.config import Settings
from relviz.errors import RelvizError
from relviz.files import atomic_path, without_paths
from relviz.teacher.demo import DEMO_TEACHER_PATH, REPO_CHECKPOINTS

DEMO_DATASET = "synthetic-mini"
LOSS_NAMES = ("contrastive", "similarity", "relational")
# the demo experiment: the demo preset (small students: MinkUNet14 at half width, 2.0 M parameters,
# committed in float16, 4 MB each) with the schedule the curves asked for, 3 losses x 3 seeds
DEMO_EXPERIMENT = Path(__file__).parent / "experiment" / "demo.toml"
EXPERIMENT_REPORT_DIR = REPO_CHECKPOINTS / "experiment"


# The evidence world (docs/evidence.md has the arithmetic): 243 v1.0-trainval scenes of 4 keyframes
# are 200 train scenes (SLidR's scene rule takes 2 at 1%, 20 at 10%, 200 at 100%) and 43 val scenes
# (the experiment evaluates 12 of them); 972 keyframes, about 1.4 GB.
EVIDENCE_DATASET = "synthetic-evidence"
EVIDENCE_SCENES = 243
EVIDENCE_KEYFRAMES = 4
EVIDENCE_EXPERIMENT = Path(__file__).parent / "experiment" / "evidence.toml"
# The evidence experiment's out-of-distribution world (issue #29, docs/evidence.md): the synthetic
# SemanticKITTI-format world of seed 0 with 20 scans a sequence: 200 training scans (00-07, 09, 10;
# the field's every-100th-scan rule labels 2 at 1%, 20 at 10%) and the 20 scans of val sequence 08.
EVIDENCE_KITTI_DATASET = "synthetic-kitti-evidence"
EVIDENCE_KITTI_SCANS = 20
# the evidence experiment's evaluated runs, carried from the machines that ran them (no weights):
# a new machine continues from them (:mod:`relviz.experiment.carry`)
EVIDENCE_CARRIED = REPO_CHECKPOINTS / "evidence"
REPO_ROOT = Path(__file__).resolve().parent.parent


def evidence_world():
    """The generator settings of the evidence world (:class:`relviz.data.synthetic.SynthConfig`)."""
    from relviz.data.synthetic import SynthConfig

    return SynthConfig(version="v1.0-trainval", scenes=EVIDENCE_SCENES, samples_per_scene=EVIDENCE_KEYFRAMES)


def evidence_kitti_world():
    """The generator settings of the evidence experiment's out-of-distribution world
    (:class:`relviz.data.synthetic_kitti.KittiSynthConfig`)."""
    from relviz.data.synthetic_kitti import KittiSynthConfig

    return KittiSynthConfig(seed=0, scans_per_sequence=EVIDENCE_KITTI_SCANS)


def ensure_kitti_world(settings: Settings, name: str, world, log=print) -> Path:
    """The synthetic SemanticKITTI-format world ``name`` in the workspace, generated with ``world`` (a
    :class:`relviz.data.synthetic_kitti.KittiSynthConfig`) when missing. An existing one generated with
    other settings is refused: the runs' out-of-distribution results would not be the declared world's."""
    from relviz.data.synthetic_kitti import generate_kitti

    root = settings.ensure().dataset_root(name)
    stamp = root / "relviz_synthetic_kitti.json"
    if root.exists():
        try:
            found = json.loads(stamp.read_text())
        except (OSError, ValueError):
            found = None
        declared = dataclasses.asdict(world)
        if not isinstance(found, dict) or any(found.get(k) != v for k, v in declared.items()):
            raise RelvizError(f"dataset {root} is not the {name} world ({stamp.name} missing or with other settings "
                              f"than {declared}); move it aside and run again to generate the declared one")
        return root
    log(f"generating the synthetic SemanticKITTI-format world into {root} ({world.sequences} sequences of "
        f"{world.scans_per_sequence} scans) ...")
    start = time.perf_counter()
    generate_kitti(root, world)
    log(f"{name} ready in {time.perf_counter() - start:.0f} s")
    return root


def student_path(loss: str) -> Path:
    return REPO_CHECKPOINTS / f"student-{loss}.safetensors"


def ensure_dataset(settings: Settings, log=print, name: str = DEMO_DATASET, world=None,
                   workers: int | None = None) -> Path:
    """The synthetic dataset ``name`` in the workspace, generated with ``world`` (a
    :class:`relviz.data.synthetic.SynthConfig`; default: the demo's v1.0-mini) when missing. An
    existing one with another number of scenes is refused: its runs would not be the declared world's."""
    from relviz.data.synthetic import SynthConfig, generate

    world = world or SynthConfig()
    root = settings.ensure().dataset_root(name)
    scenes = len(world.scene_names)
    if (root / world.version).is_dir():
        found = _scene_count(root / world.version / "scene.json")
        if found != scenes:
            raise RelvizError(f"dataset {root} has {found} scenes, not the {scenes} of the {name} world; move it "
                              f"aside and run again to generate the declared one")
        return root
    log(f"generating the synthetic dataset into {root} ({world.version}, {scenes} scenes of "
        f"{world.samples_per_scene} keyframes) ...")
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        elapsed = time.perf_counter() - start
        log(f"  scene {done}/{total}, {elapsed:.0f} s, about {elapsed / done * (total - done):.0f} s left")

    generate(root, world, progress=progress, workers=workers)
    log(f"dataset ready in {time.perf_counter() - start:.0f} s")
    return root


def _scene_count(scene_table: Path) -> int | None:
    """Rows of a nuScenes scene.json (None when it cannot be read)."""
    try:
        return len(json.loads(scene_table.read_text()))
    except (OSError, ValueError):
        return None


def write_manifest(directory: Path = REPO_CHECKPOINTS) -> Path:
    """manifest.json: every checkpoint of the folder with sha256, size, configuration and scores."""
    from relviz.models.checkpoint import file_sha256, read_metadata

    entries = {}
    for path in sorted(directory.glob("*.safetensors")):
        meta = read_metadata(path)
        entries[path.name] = {"sha256": file_sha256(path), "bytes": path.stat().st_size, "kind": meta.get("kind"),
                              "loss": meta.get("loss"), "config": meta.get("training"),
                              "scores": meta.get("scores") or meta.get("metrics")}
    manifest = directory / "manifest.json"
    with atomic_path(manifest) as tmp:
        Path(tmp).write_text(json.dumps({"checkpoints": entries,
                                         "total_bytes": sum(e["bytes"] for e in entries.values())}, indent=1))
    return manifest


def publish_students(experiment, report: dict, directory: Path = REPO_CHECKPOINTS, log=print) -> list[Path]:
    """For every loss of ``experiment``, the final student of its lowest evaluated seed as
    ``student-<loss>.safetensors`` in ``directory`` (float16, its evaluation as the scores, no machine
    paths), and the experiment's report as ``experiment/report.{json,csv,md}``; then the manifest."""
    from relviz.experiment.aggregate import write_report
    from relviz.experiment.evaluate import evaluation_path
    from relviz.files import read_json
    from relviz.models.checkpoint import load_state_dict, save_checkpoint
    from relviz.train.rundir import RunDir

    evaluated = {r["key"] for r in report["runs"] if r["metrics"] is not None}
    by_loss = {loss: {p.seed: p for p in experiment.plans if p.config.loss == loss and p.key in evaluated
                         and p.cell.sweep == 0  # the paper's comparison: the [grid]'s cells, never a sweep's
                         and RunDir(p.run_dir).final.is_file()}  # trained here (a carried run has no weights)
               for loss in LOSS_NAMES}
    common = set.intersection(*(set(seeds) for seeds in by_loss.values()))
    if not common:
        log(f"no seed of experiment {experiment.spec.name} is evaluated for every loss: each loss's lowest evaluated "
            f"seed is published")
    chosen = {loss: plans[min(common or plans)] for loss, plans in by_loss.items() if plans}  # one seed if possible
    for plan in chosen.values():  # all checked before any file is replaced: the manifest stays true
        if Path(plan.config.dataset).name != DEMO_DATASET:
            raise RelvizError(f"run {plan.key} was trained on {plan.config.dataset}, not the demo dataset "
                              f"{DEMO_DATASET}: it is not published as a demo student")
    written = []
    for loss in by_loss:
        if loss not in chosen:
            log(f"no evaluated {loss} run in experiment {experiment.spec.name}: its demo student is left as it is")
            continue
        plan = chosen[loss]
        state, meta = load_state_dict(RunDir(plan.run_dir).final)
        meta = {k: v for k, v in meta.items() if k not in ("format", "created", "versions")}
        meta["training"] = {**meta["training"], "dataset": DEMO_DATASET}  # a name, never a machine's path
        meta["experiment"] = {"name": experiment.spec.name, "run": plan.key, "seed": plan.seed}
        meta["scores"] = _summary(read_json(evaluation_path(plan.run_dir)) or {})
        half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        written.append(save_checkpoint(directory / f"student-{loss}.safetensors", half, without_paths(meta)))
        log(f"student {loss}: {plan.key} -> {written[-1].name}")
    write_report(without_paths(report), directory / "experiment", f"{experiment.spec.name} (relviz demo)")
    write_manifest(directory)
    return written


SUMMARY_KEYS = ("uniformity", "tolerance", "gap", "gap_all_pairs", "zeroshot_miou", "sample_size", "val_samples")


def _summary(evaluation: dict) -> dict:
    """The headline numbers of a run's evaluation (the manifest stays small: no confusion matrices)."""
    structure = evaluation.get("structure") or {}
    return {"protocol": evaluation.get("protocol"), **{k: structure.get(k) for k in SUMMARY_KEYS},
            **{f"{method}@{fraction}": {"miou": r.get("miou"), "miou_interval": r.get("miou_interval"),
                                        "frames": len(r.get("frames") or [])}
               for method in ("linear_probe", "finetune") for fraction, r in (evaluation.get(method) or {}).items()}}


def demo_settings(settings: Settings) -> Settings:
    """``settings`` with the demo's own dataset and teacher, whatever they name: the demo
    experiment's runs are built over the settings, and the demo is the same on every machine."""
    return dataclasses.replace(settings, dataset=DEMO_DATASET, teacher="demo", teacher_pretrained=None)


def build_demo(settings: Settings, retrain_teacher: bool = False, teacher_minutes: float = 12.0,
               experiment_file: Path = DEMO_EXPERIMENT, max_running: int | None = None, log=print) -> dict:
    """Dataset, teacher, the demo experiment (its jobs run in the background; this waits for them)
    and the published students; returns timings (seconds) per stage."""
    from relviz.experiment import Experiment
    from relviz.jobs import JobStore
    from relviz.teacher.demo import train_demo_teacher

    settings = demo_settings(settings)
    timings = {}
    start = time.perf_counter()
    root = ensure_dataset(settings, log)
    timings["dataset_s"] = time.perf_counter() - start
    experiment = Experiment.from_file(settings, experiment_file)  # over demo_settings: the demo's data
    if retrain_teacher or not DEMO_TEACHER_PATH.is_file():
        if experiment.folder.is_dir():  # its runs were distilled from the teacher about to be replaced
            raise RelvizError(f"the demo experiment in {experiment.folder} was distilled from the current demo "
                              f"teacher; move it aside before training a new teacher, or its students would be "
                              f"published as the new teacher's")
        t = time.perf_counter()
        train_demo_teacher(root, DEMO_TEACHER_PATH, minutes=teacher_minutes, log=log)
        timings["teacher_s"] = time.perf_counter() - t
    t = time.perf_counter()
    log(f"experiment {experiment.spec.name}: {len(experiment.plans)} runs in {experiment.folder} "
        f"(about {estimated_minutes(experiment, max_running):.0f} min on 2 CPU cores; run again to continue an "
        f"interrupted one)")
    report = experiment.supervise(JobStore(settings), max_running=max_running, log=log)
    timings["experiment_s"] = time.perf_counter() - t
    publish_students(experiment, report, log=log)
    timings["total_s"] = time.perf_counter() - start
    return timings


# Measured by the demo experiment of 2026-12-01 on the 2-core CPU (docs/results.md): seconds per training
# step of one run with two runs at once (one torch thread each; 0.84-1.09 s once the strided-coordinates
# fix was in), and per evaluation of a finished run (U/T/G and zero-shot on 16 keyframes 10-25 s, the
# linear probe 20-70 s, fine-tuning 60 steps 2-4 min). The whole experiment took 93 min (its evaluations
# then ran one at a time in the supervisor, beside the two trainings).
DEMO_SECONDS_PER_STEP = 1.0
DEMO_SECONDS_PER_EVALUATION = 240.0


@dataclass(frozen=True)
class EvaluationCost:
    """Seconds of the pieces of one run's evaluation on the 2-core demo machine (one torch thread,
    nice 10), measured on 2026-12-06 on a 30-scene evidence-like world with the demo student, the
    machine shared at load 4-6 (docs/evidence.md, "The compute budget, measured")."""

    structure_s_per_keyframe: float = 7.9 / 10  # U, T, G and zero-shot: 7.9 s on 10 keyframes
    probe_s: float = 15.0  # a linear probe's fixed part (fitting the head: 300 full-batch epochs)
    probe_s_per_labelled_frame: float = 0.43  # the probe's features of a labelled frame
    finetune_s_per_frame_step: float = 0.7  # a fine-tuning step, per frame of its batch (1.4 s at batch 2)
    score_s_per_frame: float = 0.23  # scoring a val frame (student + head), probe or fine-tuned
    kitti_scan_s: float = 1.0  # a synthetic KITTI scan's features, labelled or scored (bench/README.md, #29)


EVIDENCE_COST = EvaluationCost()


def evidence_split_scenes() -> dict[str, list[str]]:
    """The evidence world's scene names by split (``train``, ``val``), as nuscenes-devkit's split
    lists put them (:func:`relviz.data.synthetic.config.trainval_scene_names`)."""
    from nuscenes.utils.splits import create_splits_scenes

    from relviz.data.synthetic.config import trainval_scene_names

    val = set(create_splits_scenes()["val"])
    names = trainval_scene_names(EVIDENCE_SCENES)
    return {"train": [n for n in names if n not in val], "val": [n for n in names if n in val]}


def evaluation_seconds(evaluation, train_scenes: Sequence[str], val_scenes: int, keyframes_per_scene: int,
                       cost: EvaluationCost = EVIDENCE_COST, ood_scans: tuple[int, int] = (0, 0)) -> float:
    """Seconds of one run's evaluation under ``evaluation`` (an
    :class:`relviz.experiment.EvaluationSpec`) on a world whose training split has the scenes
    ``train_scenes`` and whose val split ``val_scenes`` scenes, ``keyframes_per_scene`` each: the
    structure on the evaluation set's keyframes; per linear-probe fraction the probe's fixed part,
    its labelled frames (SLidR's scene rule, :func:`relviz.eval.fewshot.fewshot_scenes`) and the
    scored val frames; per fine-tuning fraction and seed its steps (``finetune_steps``, else 100
    epochs of the labelled frames) of ``finetune_batch`` frames and the scored val frames. The scored
    frames are every val frame, or the evaluation set's with ``fewshot_frames = "evaluation_set"``.
    Each out-of-distribution dataset counts as a SemanticKITTI-format one of ``ood_scans`` (train, val)
    scans, its linear probes only (a fine-tuning on it is not counted)."""
    from relviz.eval.fewshot import fewshot_scenes

    k = keyframes_per_scene
    evaluated = min(evaluation.val_scenes or val_scenes, val_scenes) * min(evaluation.val_per_scene or k, k)
    scored = evaluated if evaluation.fewshot_frames == "evaluation_set" else val_scenes * k

    def labelled(fraction: float) -> int:
        return len(fewshot_scenes(train_scenes, fraction)) * k

    seconds = cost.structure_s_per_keyframe * evaluated
    for fraction in evaluation.linear_probe:
        seconds += cost.probe_s + cost.probe_s_per_labelled_frame * labelled(fraction) + cost.score_s_per_frame * scored
    batch = evaluation.finetune_batch
    for fraction in evaluation.finetune:
        steps = evaluation.finetune_steps or 100 * math.ceil(labelled(fraction) / batch)
        seconds += evaluation.finetune_seeds * (cost.finetune_s_per_frame_step * batch * steps
                                                + cost.score_s_per_frame * scored)
    ood_train, ood_val = ood_scans
    for fraction in evaluation.wanted_ood()["linear_probe"] if evaluation.ood_datasets else ():
        seconds += len(evaluation.ood_datasets) * (cost.probe_s + cost.kitti_scan_s
                                                   * (math.ceil(ood_train * fraction) + ood_val))
    return seconds


def evidence_evaluation_seconds(evaluation) -> float:
    """:func:`evaluation_seconds` on the evidence world (:func:`evidence_world`)."""
    splits = evidence_split_scenes()
    kitti = evidence_kitti_world()
    val_scans = kitti.scans_per_sequence  # sequence 08
    return evaluation_seconds(evaluation, splits["train"], len(splits["val"]), EVIDENCE_KEYFRAMES,
                              ood_scans=(kitti.sequences * kitti.scans_per_sequence - val_scans, val_scans))


def estimated_minutes(experiment, max_running: int | None = None,
                      seconds_per_evaluation: float | Callable[[Any], float] = DEMO_SECONDS_PER_EVALUATION,
                      done: Collection[str] = (), trained: Collection[str] = ()) -> float:
    """A rough duration of ``experiment`` on the demo machine (see the constants above) with
    ``max_running`` slots (default: the experiment's), for its runs but those keyed in ``done``
    (evaluated already, here or carried in); a run keyed in ``trained`` (its training finished here)
    counts its evaluation only. Each run is a training (its steps at
    :data:`DEMO_SECONDS_PER_STEP`, a step's time with two runs at once) and then its evaluation
    (``seconds_per_evaluation``: a number, or a function of the run's
    :class:`relviz.experiment.EvaluationSpec`), each occupying one slot while it runs, as the supervisor
    schedules them. The estimate is Graham's bound for such a list schedule: all the work W spread
    over the m slots, plus (1 - 1/m) x the longest run (training and evaluation), the tail that may
    run alone: W / m + (1 - 1/m) L."""
    spec = experiment.spec
    per_evaluation = seconds_per_evaluation if callable(seconds_per_evaluation) else \
        (lambda evaluation: float(seconds_per_evaluation))
    runs = [(0 if p.key in trained else (p.config.max_steps or 0) * DEMO_SECONDS_PER_STEP)
            + per_evaluation(spec.evaluation_for(p.cell)) for p in experiment.plans if p.key not in done]
    slots = max(1, max_running or spec.max_running)
    return (sum(runs) / slots + (1 - 1 / slots) * max(runs, default=0.0)) / 60


def check_outside_checkout(home: Path) -> None:
    """Refuse a workspace inside the repository: the evidence world and its runs are gigabytes that
    must never be committed or travel with the checkout."""
    home = Path(home).resolve()
    if home == REPO_ROOT or REPO_ROOT in home.parents:
        raise RelvizError(f"workspace {home} is inside the checkout {REPO_ROOT}; the evidence world (about 1.4 GB) "
                          f"and its runs go outside it: give --home DIR (or RELVIZ_HOME) elsewhere")


def build_evidence(settings: Settings, detach: bool = True, max_running: int | None = None,
                   workers: int | None = None, carried_from: Path | None = EVIDENCE_CARRIED, log=print) -> dict:
    """The evidence world (generated when missing, with ``workers`` processes) and the evidence
    experiment (:data:`EVIDENCE_EXPERIMENT`), with the runs evaluated on other machines carried in from
    ``carried_from`` (:data:`EVIDENCE_CARRIED`; none trained again): started in the background when ``detach`` (its
    supervisor's pid is returned; run again to continue after a stop), else supervised here to its
    report. The workspace must be outside the checkout; the demo teacher must exist (``relviz demo``).
    Returns ``dataset_s`` (generation seconds, 0 when it existed), ``experiment``, ``runs``,
    ``estimated_minutes`` and ``supervisor_pid`` (detached) or ``report`` (the report's folder)."""
    from relviz.experiment import Experiment
    from relviz.experiment.carry import carry_in
    from relviz.experiment.evaluate import stored_evaluation
    from relviz.jobs import JobStore
    from relviz.train.rundir import RunDir

    check_outside_checkout(settings.home)
    if not DEMO_TEACHER_PATH.is_file():
        raise RelvizError(f"the demo teacher {DEMO_TEACHER_PATH} is missing; train it with `relviz demo` first")
    start = time.perf_counter()
    ensure_dataset(settings, log, EVIDENCE_DATASET, evidence_world(), workers)
    ensure_kitti_world(settings, EVIDENCE_KITTI_DATASET, evidence_kitti_world(), log)
    out = {"dataset_s": round(time.perf_counter() - start, 1)}
    # the file names its dataset and teacher, so the detached supervisor (which reads the settings
    # again) builds the same runs as this process
    experiment = Experiment.from_file(settings, EVIDENCE_EXPERIMENT)
    if carried_from is not None and Path(carried_from).is_dir():
        experiment.save_grid()
        out["carried"] = carry_in(experiment, carried_from)
        log(f"{len(out['carried'])} evaluated runs carried in from {carried_from}")
    done = [p.key for p in experiment.plans
            if stored_evaluation(p.run_dir, p.config, experiment.spec.evaluation_for(p.cell)) is not None]
    trained = [p.key for p in experiment.plans if RunDir(p.run_dir).final.is_file()]  # an evaluation is left
    minutes = estimated_minutes(experiment, max_running, evidence_evaluation_seconds, done, trained)
    out.update(experiment=experiment.spec.name, runs=len(experiment.plans), estimated_minutes=round(minutes))
    log(f"experiment {experiment.spec.name}: {len(experiment.plans)} runs in {experiment.folder} (about "
        f"{minutes / 60:.1f} h on 2 CPU cores; run again to continue an interrupted one)")
    if detach:
        running = experiment.supervisor_pid()
        out["supervisor_pid"] = running if running is not None else experiment.start_in_background(max_running)
        log(f"supervised by process {out['supervisor_pid']} (log: {experiment.folder / 'supervisor.log'}); follow "
            f"it with `relviz experiment status {experiment.spec.name}`")
        return out
    experiment.supervise(JobStore(settings), max_running=max_running, log=log)
    out["report"] = str(experiment.folder)
    return out

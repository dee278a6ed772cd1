"""The demo workspace, from nothing: the synthetic dataset, the demo teacher, and one small student
per loss, committed under ``checkpoints/demo/`` with a manifest (sha256, configuration, scores).

``make app`` only generates the dataset (the checkpoints are in the repository), so a first start
is quick; ``relviz demo`` rebuilds everything.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from relviz.config import Settings
from relviz.files import atomic_path
from relviz.teacher.demo import DEMO_TEACHER_PATH, REPO_CHECKPOINTS

DEMO_DATASET = "synthetic-mini"
LOSS_NAMES = ("contrastive", "similarity", "relational")
# Small students: MinkUNet14 at half width (2.0 M parameters), stored in float16 (4 MB each).
DEMO_STUDENT = dict(arch="MinkUNet14", width=0.5, batch=1, pairs=2048, lr=0.1, max_steps=400, augment=True,
                    val_samples=4, val_per_class=500, checkpoint_every=100, val_every=400, log_every=10)


def student_path(loss: str) -> Path:
    return REPO_CHECKPOINTS / f"student-{loss}.safetensors"


def ensure_dataset(settings: Settings, log=print) -> Path:
    """The demo dataset in the workspace, generated when missing."""
    from relviz.data.synthetic import SynthConfig, generate

    root = settings.ensure().dataset_root(DEMO_DATASET)
    if not (root / "v1.0-mini").is_dir():
        log(f"generating the synthetic dataset into {root} (10 scenes) ...")
        start = time.perf_counter()

        def progress(done: int, total: int) -> None:
            elapsed = time.perf_counter() - start
            log(f"  scene {done}/{total}, {elapsed:.0f} s, about {elapsed / done * (total - done):.0f} s left")

        generate(root, SynthConfig(), progress=progress)
        log(f"dataset ready in {time.perf_counter() - start:.0f} s")
    return root


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


def build_demo(settings: Settings, retrain_teacher: bool = False, teacher_minutes: float = 12.0,
               student_steps: int = DEMO_STUDENT["max_steps"], losses=LOSS_NAMES, log=print) -> dict:
    """Dataset, teacher and students; returns timings (seconds) per stage."""
    from relviz.models.checkpoint import load_state_dict, save_checkpoint
    from relviz.teacher.demo import train_demo_teacher
    from relviz.train import RunDir, TrainConfig, Trainer
    from relviz.workspace import cache_finished_run

    timings = {}
    start = time.perf_counter()
    root = ensure_dataset(settings, log)
    timings["dataset_s"] = time.perf_counter() - start
    if retrain_teacher or not DEMO_TEACHER_PATH.is_file():
        t = time.perf_counter()
        train_demo_teacher(root, DEMO_TEACHER_PATH, minutes=teacher_minutes, log=log)
        timings["teacher_s"] = time.perf_counter() - t
    for loss in losses:
        t = time.perf_counter()
        cfg = TrainConfig.from_settings(settings, loss=loss, dataset=str(root), teacher="demo",
                                        **{**DEMO_STUDENT, "max_steps": student_steps})
        run_dir = settings.runs_dir / f"demo-{loss}"
        result = Trainer(cfg, run_dir, settings, on_finish=cache_finished_run(settings)).run()
        state, meta = load_state_dict(RunDir(run_dir).final)
        meta = {k: v for k, v in meta.items() if k not in ("format", "created", "versions")}
        meta["training"] = {**meta["training"], "dataset": DEMO_DATASET}  # committed: no machine paths
        save_checkpoint(student_path(loss), {k: v.half() if v.is_floating_point() else v for k, v in state.items()},
                        meta)
        timings[f"student_{loss}_s"] = time.perf_counter() - t
        log(f"student {loss}: step {result['step']}, zero-shot mIoU {result['metrics'].get('zeroshot_miou', float('nan')):.3f}")
    write_manifest()
    timings["total_s"] = time.perf_counter() - start
    return timings

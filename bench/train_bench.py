"""Training throughput on CPU and the input pipeline against it.

- steps/s of the demo student and of MinkUNet34 (batch 2) with the teacher cache warm, and of the
  demo student with the teacher inside the step (``teacher_features = "online"``);
- the loader alone: micro-batches/s with 0, 1 and 2 DataLoader workers (cache and online modes; the
  online mode also decodes the camera images its pairs use), to set against the step time.

``--mixed`` measures only SLidR's mixed augmentations (``image_augment``: crops and flips of the images
with their pairs; ``drop_cuboids``) against the plain online mode: the loader with 0 and 2 workers
and the demo student's steps/s.

Usage: RELVIZ_HOME=workspace .venv/bin/python bench/train_bench.py [--mixed]   (needs the demo dataset and teacher)
"""

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from relviz.config import load_settings
from relviz.train import TrainConfig, Trainer
from relviz.train.loader import end_workers

STEPS = 12
LOADED = 24  # micro-batches per loader measurement


def _trainer(cfg: TrainConfig) -> Trainer:
    trainer = Trainer(cfg, Path(tempfile.mkdtemp()) / "run", load_settings())
    trainer._build()
    trainer.prepare_teacher_cache()  # online: only the validation keyframes
    return trainer


def steps_per_second(cfg: TrainConfig) -> float:
    trainer = _trainer(cfg)
    trainer.model.train()
    batches = iter(trainer.loader(0))
    trainer._micro_step(next(batches)).backward()  # warm-up (step 0's first micro-batch)
    for _ in range(cfg.accumulate - 1):
        next(batches)
    t = time.perf_counter()
    for _ in range(STEPS):
        trainer.optimizer.zero_grad()
        for _ in range(cfg.accumulate):
            trainer._micro_step(next(batches)).backward()
        trainer.optimizer.step()
    rate = STEPS / (time.perf_counter() - t)
    shutil.rmtree(trainer.run_dir.parent, ignore_errors=True)
    return round(rate, 3)


def loader_per_second(cfg: TrainConfig, workers: int) -> float:
    trainer = _trainer(cfg.with_overrides(workers=workers, max_steps=(LOADED + 1) // cfg.accumulate + 1))
    batches = iter(trainer.loader(0))
    next(batches)  # the workers started and the first item made
    t = time.perf_counter()
    for _ in range(LOADED):
        next(batches)
    rate = LOADED / (time.perf_counter() - t)
    end_workers(batches)  # they ignore SIGTERM: the interpreter's exit would wait on them
    shutil.rmtree(trainer.run_dir.parent, ignore_errors=True)
    return round(rate, 2)


def main() -> None:
    settings = load_settings()
    demo = TrainConfig.from_settings(settings, preset="demo", dataset=str(settings.dataset_root("synthetic-mini")),
                                     workers=0, max_steps=STEPS + 2, teacher_features="cache")
    online = demo.with_overrides(teacher_features="online")
    if "--mixed" in sys.argv:
        mixed = online.with_overrides(image_augment=True, drop_cuboids=True)
        rec = {"threads": torch.get_num_threads(),
               **{f"loader_online_per_s_{w}_workers": loader_per_second(online, w) for w in (0, 2)},
               **{f"loader_online_mixed_augment_per_s_{w}_workers": loader_per_second(mixed, w) for w in (0, 2)},
               "demo_student_it_s_online": steps_per_second(online),
               "demo_student_it_s_online_mixed_augment": steps_per_second(mixed)}
        print(json.dumps(rec, indent=1))
        return
    big = demo.with_overrides(arch="MinkUNet34", width=1.0, batch=2, pairs=4096)
    rec = {"threads": torch.get_num_threads(), "cores": len(__import__("os").sched_getaffinity(0)),
           "demo_student_it_s": steps_per_second(demo),
           "demo_student_it_s_online_teacher": steps_per_second(online),
           "minkunet34_batch2_it_s": steps_per_second(big)}
    rec["teacher_cache_speedup"] = round(rec["demo_student_it_s"] / rec["demo_student_it_s_online_teacher"], 2)
    for workers in (0, 1, 2):
        rec[f"loader_cache_mode_per_s_{workers}_workers"] = loader_per_second(demo, workers)
        rec[f"loader_online_mode_per_s_{workers}_workers"] = loader_per_second(online, workers)
        print(json.dumps(rec), flush=True)  # as it goes: the loader runs take minutes
    print(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()

"""Training throughput on CPU: the demo student and MinkUNet34 at batch 2, with the teacher cache
warm, and the demo student with teacher features recomputed every step (no cache).

Usage: RELVIZ_HOME=workspace .venv/bin/python bench/train_bench.py   (needs the demo dataset and teacher)
"""

import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from relviz.config import load_settings
from relviz.train import TrainConfig, Trainer

STEPS = 12


def steps_per_second(cfg: TrainConfig, recompute_teacher: bool = False) -> float:
    trainer = Trainer(cfg, Path(tempfile.mkdtemp()) / "run", load_settings())
    trainer._build()
    if not recompute_teacher:
        trainer.prepare_teacher_cache()
    trainer.model.train()
    if recompute_teacher:  # every lookup misses: features are recomputed and re-stored each time
        trainer.cache.get = lambda token: None
    trainer._micro_step(0, 0).backward()  # warm-up
    t = time.perf_counter()
    for step in range(1, STEPS + 1):
        trainer.optimizer.zero_grad()
        for micro in range(cfg.accumulate):
            trainer._micro_step(step, micro).backward()
        trainer.optimizer.step()
    rate = STEPS / (time.perf_counter() - t)
    shutil.rmtree(trainer.run_dir.parent, ignore_errors=True)
    return round(rate, 3)


def main() -> None:
    settings = load_settings()
    demo = TrainConfig.from_settings(settings, preset="demo", dataset=str(settings.dataset_root("synthetic-mini")))
    big = TrainConfig(**{**demo.to_dict(), "arch": "MinkUNet34", "width": 1.0, "batch": 2, "pairs": 4096})
    rec = {"threads": torch.get_num_threads(),
           "demo_student_it_s": steps_per_second(demo),
           "demo_student_it_s_recomputing_teacher": steps_per_second(demo, recompute_teacher=True),
           "minkunet34_batch2_it_s": steps_per_second(big)}
    rec["teacher_cache_speedup"] = round(rec["demo_student_it_s"] / rec["demo_student_it_s_recomputing_teacher"], 2)
    print(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()

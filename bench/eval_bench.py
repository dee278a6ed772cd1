"""Zero-shot evaluation throughput on CPU (samples/s) for a demo student on the synthetic mini_val.

Usage: RELVIZ_HOME=workspace .venv/bin/python bench/eval_bench.py
"""

import json
import time

import torch

from relviz.config import load_settings
from relviz.data import NuScenesLidarSeg
from relviz.demo import student_path
from relviz.eval.zeroshot import evaluate_zeroshot
from relviz.models.checkpoint import load_student
from relviz.teacher import load_teacher


def main() -> None:
    settings = load_settings()
    ds = NuScenesLidarSeg(settings.dataset_root("synthetic-mini"), split="mini_val", load_images=False)
    teacher = load_teacher()
    model, _ = load_student(student_path("relational"))
    t = time.perf_counter()
    result = evaluate_zeroshot(model, teacher, ds)
    elapsed = time.perf_counter() - t
    print(json.dumps({"threads": torch.get_num_threads(), "samples": len(ds), "seconds": round(elapsed, 2),
                      "samples_per_s": round(len(ds) / elapsed, 2), "miou": result["miou"]}, indent=1))


if __name__ == "__main__":
    main()

"""Dense-feature time per camera image for each registered teacher size, on this machine's CPU.

Each teacher is built at its real architecture with explicitly random weights (timing does not depend
on the weights) and its registry input size; one 900x1600 camera image goes through
``image_features`` (resize, normalise, dense path) after one warm-up call; the median of ``--repeats``
calls is reported, with the threads torch uses. Run: ``.venv/bin/python bench/teacher_registry_bench.py``
(``--names`` to choose; ViT-g/14 and SO400M are slow to build: add them by name).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

DEFAULT = ["demo", "ViT-B-16", "ViT-L-14-336", "ViT-B-16-SigLIP", "dinov2_vits14", "dinov2_vits14_reg",
           "dinov2_vitb14", "dinov2_vitl14"]


def measure(name: str, repeats: int) -> dict:
    from relviz.teacher.registry import build_teacher, entry_for

    entry = entry_for(name)
    torch.manual_seed(0)
    start = time.perf_counter()
    teacher = build_teacher(name, random_init=True)  # explicitly random: the timing is the architecture's
    build_s = time.perf_counter() - start
    image = np.random.default_rng(0).integers(0, 256, (1, 900, 1600, 3), dtype=np.uint8)
    teacher.image_features(image)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        teacher.image_features(image)
        times.append(time.perf_counter() - start)
    return {"teacher": name, "family": entry.family, "dim": teacher.dim, "input_size": list(teacher.input_size),
            "grid": list(teacher.grid_size), "seconds_per_image": round(statistics.median(times), 3),
            "build_seconds": round(build_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--names", nargs="*", default=DEFAULT)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for name in args.names:
        rows.append(measure(name, args.repeats))
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

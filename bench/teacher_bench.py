"""Teacher costs on CPU: ViT-B/16 dense MaskCLIP features of one 224x416 image, a warm one-prompt
text encode, and reading one camera's cached features; the same for the demo teacher.

Usage: .venv/bin/python bench/teacher_bench.py   (random ViT-B/16 weights: the cost does not depend on them)
"""

import json
import statistics
import tempfile
import time

import numpy as np
import torch

from relviz.teacher import ClipTeacher, FeatureCache
from relviz.teacher.demo import load_demo_teacher


def timed(fn, repeats=5):
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return round(statistics.median(out) * 1000, 1)


def measure(teacher: ClipTeacher, size) -> dict:
    image = np.random.default_rng(0).integers(0, 255, (1, *size, 3), dtype=np.uint8)
    cache = FeatureCache(tempfile.mkdtemp(), teacher.identity)
    cache.put("tok", teacher.image_features(image)[0].half())
    return {"dense_one_image_ms": timed(lambda: teacher.image_features(image), 3),
            "text_one_prompt_ms": timed(lambda: teacher.encode_text(["a traffic cone in a scene"]), 10),
            "cache_read_one_camera_ms": timed(lambda: torch.from_numpy(np.asarray(cache.get("tok"))).float(), 20),
            "feature_grid": list(teacher.grid_size), "dim": teacher.dim}


def main() -> None:
    torch.manual_seed(0)
    rec = {"threads": torch.get_num_threads(),
           "vit_b16_224x416": measure(ClipTeacher("ViT-B-16", pretrained=None, input_size=(224, 416), random_init=True), (224, 416)),
           "demo_teacher_800x450_image": measure(load_demo_teacher(), (450, 800))}
    print(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()

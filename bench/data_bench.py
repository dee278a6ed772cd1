"""Synthetic dataset generation time, size on disk, and loader time per sample.

Usage: .venv/bin/python bench/data_bench.py [--out DIR] [--keep]
Prints a JSON record; bench/README.md holds the measured figures.
"""

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from relviz.data import NuScenesLidarSeg, SynthConfig, generate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp()) / "synthetic-mini"
    start = time.perf_counter()
    generate(out, SynthConfig())
    gen_s = time.perf_counter() - start
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    class_png = sum(f.stat().st_size for f in out.rglob("*.class.png"))
    ds = NuScenesLidarSeg(out, split="mini_train")
    ds[0]  # warm-up (imports, devkit indexes)
    times, voxels, points, pairs = [], [], [], []
    for i in range(len(ds)):
        t = time.perf_counter()
        item = ds[i]
        times.append(time.perf_counter() - t)
        voxels.append(len(item["voxels"]))
        points.append(len(item["points"]))
        pairs.append(len(item["pair_points"]))
    no_img = NuScenesLidarSeg(out, split="mini_train", load_images=False)
    t = time.perf_counter()
    for i in range(len(no_img)):
        no_img[i]
    t_no_img = (time.perf_counter() - t) / len(no_img)
    rec = {
        "cpu_count": os.cpu_count(), "generation_s": round(gen_s, 1), "size_mb": round(size / 2**20, 1),
        "class_png_mb": round(class_png / 2**20, 1), "samples": len(ds) + 16,
        "loader_ms_mean": round(1e3 * float(np.mean(times)), 1), "loader_ms_p95": round(1e3 * float(np.percentile(times, 95)), 1),
        "loader_ms_without_images": round(1e3 * t_no_img, 1),
        "points_mean": int(np.mean(points)), "voxels_mean": int(np.mean(voxels)), "pairs_mean": int(np.mean(pairs)),
    }
    print(json.dumps(rec, indent=1))
    if not args.keep:
        shutil.rmtree(out.parent if not args.out else out)


if __name__ == "__main__":
    main()

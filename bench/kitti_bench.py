"""The synthetic SemanticKITTI-format world: generation time and size of the default world, and the
reader's time per scan (read .bin + .label, learning map, voxelization: one ``SemanticKitti`` item).

    .venv/bin/python bench/kitti_bench.py [--out DIR] [--sequences 11] [--scans-per-sequence 6]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from relviz.data.kitti import SemanticKitti, read_classes, read_scan
from relviz.data.synthetic_kitti import KittiSynthConfig, generate_kitti


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="where to write the world (default: a temporary folder, removed)")
    parser.add_argument("--sequences", type=int, default=KittiSynthConfig.sequences)
    parser.add_argument("--scans-per-sequence", type=int, default=KittiSynthConfig.scans_per_sequence)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    scratch = None if args.out else Path(tempfile.mkdtemp())
    root = Path(args.out) if args.out else scratch / "synthetic-kitti"
    cfg = KittiSynthConfig(seed=args.seed, sequences=args.sequences, scans_per_sequence=args.scans_per_sequence)
    try:
        start = time.perf_counter()
        generate_kitti(root, cfg)
        generation_s = time.perf_counter() - start
        files = [p for p in root.rglob("*") if p.is_file()]
        data = SemanticKitti(root, "trainval")
        points = []
        read_s, item_s = [], []
        for i in range(len(data)):
            k = data.keyframes[i]
            t0 = time.perf_counter()
            scan = read_scan(k["velodyne"])
            read_classes(k["label"], len(scan))
            t1 = time.perf_counter()
            data[i]
            item_s.append(time.perf_counter() - t1)
            read_s.append(t1 - t0)
            points.append(len(scan))
        result = {"config": vars(args) | {"beams": cfg.beams, "azimuth_steps": cfg.azimuth_steps},
                  "sequences": len(cfg.sequence_names), "scans": len(data), "generation_s": round(generation_s, 2),
                  "size_mb": round(sum(p.stat().st_size for p in files) / 1e6, 1),
                  "points_per_scan_mean": int(np.mean(points)),
                  "read_ms_per_scan_median": round(1e3 * float(np.median(read_s)), 1),
                  "item_ms_per_scan_median": round(1e3 * float(np.median(item_s)), 1)}
        print(json.dumps(result, indent=1))
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

"""MinkUNet34 forward+backward on a synthetic 0.1 m cylindrical scan: relviz's pure-PyTorch sparse
backend against MinkowskiEngine (CPU) on the same input and weights, side by side in one process.

Usage: .venv/bin/python bench/sparse_bench.py [--dataset DIR] [--repeats 3]
MinkowskiEngine is optional (bench/install_minkowski.sh); without it only relviz is timed.
"""

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch

from relviz.data import NuScenesLidarSeg, SynthConfig, generate
from relviz.models import build_minkunet
from relviz.models.backends import available_backends
from relviz.sparse import SparseTensor


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 2 ms."""

    def __enter__(self):
        self.proc, self.base, self.peak, self.stop = psutil.Process(), psutil.Process().memory_info().rss, 0, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self.stop:
            self.peak = max(self.peak, self.proc.memory_info().rss - self.base)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()


def densest_scan(dataset: Path):
    ds = NuScenesLidarSeg(dataset, split="mini_train", load_images=False)
    best = max((ds[i] for i in range(len(ds))), key=lambda it: len(it["voxels"]))
    coords = torch.cat([torch.zeros(len(best["voxels"]), 1, dtype=torch.int32), torch.from_numpy(best["voxels"])], 1)
    return torch.from_numpy(best["voxel_features"]), coords


def run(model, feats, coords, repeats):
    fwd, bwd, peaks = [], [], []
    for i in range(repeats + 1):
        model.zero_grad(set_to_none=True)
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            out = model(SparseTensor(feats, coords))
            t1 = time.perf_counter()
            out.features.square().sum().backward()
            t2 = time.perf_counter()
        if i:  # the first run is a warm-up
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            peaks.append(mem.peak)
    return {"forward_s": round(statistics.median(fwd), 3), "backward_s": round(statistics.median(bwd), 3),
            "total_s": round(statistics.median(f + b for f, b in zip(fwd, bwd)), 3),
            "peak_rss_mb": round(max(peaks) / 2**20)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    dataset = Path(args.dataset) if args.dataset else generate(
        Path(tempfile.mkdtemp()) / "synthetic", SynthConfig(samples_per_scene=2, image_size=(96, 64)))
    feats, coords = densest_scan(dataset)
    torch.manual_seed(0)
    ours = build_minkunet("MinkUNet34", in_channels=1, out_channels=64).train()
    rec = {"voxels": len(coords), "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
           "relviz": run(ours, feats, coords, args.repeats)}
    if available_backends()["minkowski"]:
        me = build_minkunet("MinkUNet34", in_channels=1, out_channels=64, backend="minkowski").train()
        me.load_state_dict(ours.state_dict())
        with torch.no_grad():
            diff = (me.eval()(SparseTensor(feats, coords)).features
                    - ours.eval()(SparseTensor(feats, coords)).features).abs().max().item()
        me.train(), ours.train()
        rec["minkowski"] = run(me, feats, coords, args.repeats)
        rec["max_abs_output_difference"] = diff
        rec["relviz_speedup"] = round(rec["minkowski"]["total_s"] / rec["relviz"]["total_s"], 2)
    print(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()

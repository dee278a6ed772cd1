"""Is the synthetic KITTI-format world out of distribution for the demo students? The domain classifier
and the probe transfer of :mod:`relviz.eval.domain`, end to end (protocol: docs/kitti.md, "What is not
done"; figures: docs/results.md, "Out of distribution: the synthetic KITTI-format world").

    nice -n 10 .venv/bin/python bench/ood_bench.py --out /tmp/ood-home/ood.json [--home /tmp/ood-home]

Generates (once, under HOME/datasets) a synthetic nuScenes world (v1.0-trainval, unseen streets: a
seed the students were not trained on) and a synthetic KITTI-format world, then per student: one pass
over each world (raw KITTI reflectance, and reflectance x 255), the leave-one-scene-out probes, and
the domain classifiers (nuScenes vs KITTI raw, vs KITTI scaled, and the no-shift control: the
nuScenes world's scenes in two random halves). The JSON is rewritten after each student.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from relviz.data.dataset import NuScenesLidarSeg
from relviz.data.kitti import SemanticKitti
from relviz.data.synthetic import SynthConfig, generate
from relviz.data.synthetic_kitti import KittiSynthConfig, generate_kitti
from relviz.eval.domain import (REFLECTANCE_TO_INTENSITY, CommonKitti, CommonNuScenes, CommonRescaledKitti,
                                RescaledKitti, domain_classifier, drop_interval, leave_one_scene_out,
                                paired_student_difference, random_halves, transfer_scores, world_pass)
from relviz.stats import holm
from relviz.models.checkpoint import load_student

STUDENTS = ("contrastive", "similarity", "relational")


def worlds(home: Path, args) -> dict[str, list]:
    """The datasets of each world (generated on first use): nuScenes (train + val), KITTI raw and scaled."""
    nus_root = home / "datasets" / f"ood-nuscenes-s{args.nus_seed}-{args.nus_scenes}x{args.nus_keyframes}"
    kitti_root = home / "datasets" / f"ood-kitti-s{args.kitti_seed}-{args.kitti_sequences}x{args.kitti_scans}"
    timing = {}
    if not (nus_root / "v1.0-trainval").is_dir():
        start = time.perf_counter()
        generate(nus_root, SynthConfig(seed=args.nus_seed, samples_per_scene=args.nus_keyframes, image_size=(64, 64),
                                       version="v1.0-trainval", scenes=args.nus_scenes), workers=1)
        timing["nuscenes_generation_s"] = time.perf_counter() - start
    if not (kitti_root / "sequences").is_dir():
        start = time.perf_counter()
        generate_kitti(kitti_root, KittiSynthConfig(seed=args.kitti_seed, sequences=args.kitti_sequences,
                                                    scans_per_sequence=args.kitti_scans))
        timing["kitti_generation_s"] = time.perf_counter() - start
    nus_cls, kitti_cls, scaled_cls = ((CommonNuScenes, CommonKitti, CommonRescaledKitti) if args.common_classes
                                      else (NuScenesLidarSeg, SemanticKitti, RescaledKitti))
    nus = [nus_cls(nus_root, "v1.0-trainval", split, load_images=False) for split in ("train", "val")]
    return {"nuscenes": nus, "kitti": [kitti_cls(kitti_root, "trainval")],
            "kitti_scaled": [scaled_cls(kitti_root, "trainval", scale=REFLECTANCE_TO_INTENSITY)],
            "roots": {"nuscenes": str(nus_root), "kitti": str(kitti_root)}, "timing": timing}


def progress_line(student: str, world: str):
    def report(phase: str, done: int, total: int) -> None:
        if done == total:
            print(f"{student} {world} {phase} {done}/{total} at {time.strftime('%H:%M:%S')}", flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the JSON result file")
    parser.add_argument("--home", default=os.environ.get("RELVIZ_HOME", "/tmp/ood-home"))
    parser.add_argument("--checkpoints", default="checkpoints/demo")
    parser.add_argument("--students", nargs="+", default=list(STUDENTS))
    parser.add_argument("--nus-seed", type=int, default=2, help="not 0: the students were trained on seed 0's streets")
    parser.add_argument("--nus-scenes", type=int, default=12)
    parser.add_argument("--nus-keyframes", type=int, default=4)
    parser.add_argument("--kitti-seed", type=int, default=0)
    parser.add_argument("--kitti-sequences", type=int, default=11)
    parser.add_argument("--kitti-scans", type=int, default=4)
    parser.add_argument("--probe-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-per-class", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--permutations", type=int, default=100)
    parser.add_argument("--common-classes", action="store_true",
                        help="both worlds labelled with relviz.data.common_classes' 12 classes (the probes' scores "
                             "over one class list)")
    parser.add_argument("--domain-only", action="store_true",
                        help="the world passes and domain classifiers only (no leave-one-scene-out probes)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    # one BLAS thread: scikit-learn's fits on a shared 2-core machine ran 13x slower with OpenBLAS's
    # spinning threads (27 s against 2.1 s for 11 domain classifiers at load 12)
    threadpool_limits(1)
    start = time.perf_counter()
    data = worlds(Path(args.home), args)
    result = {"config": vars(args), "worlds": data["roots"], "timing": data["timing"], "students": {}}
    confusions = {}  # student -> world -> leave-one-scene-out confusions, for the paired comparisons
    for name in args.students:
        model, _ = load_student(str(Path(args.checkpoints) / f"student-{name}.safetensors"), backend="torch")
        per_world, passes = {}, {}
        t0 = time.perf_counter()
        for world in ("nuscenes", "kitti", "kitti_scaled"):
            datasets = data[world]
            passes[world] = world_pass(model, datasets, args.probe_seeds, args.max_per_class,
                                       progress=progress_line(name, world))
            if args.domain_only:
                continue
            per_world[world] = leave_one_scene_out(model, datasets, passes[world], args.probe_seeds,
                                                   args.max_per_class, args.epochs, progress=progress_line(name, world))
        nus = passes["nuscenes"]
        confusions[name] = {w: (per_world[w], passes[w].scenes) for w in per_world}
        entry = {"domain": {}}
        if not args.domain_only:
            entry["probe"] = {w: transfer_scores(per_world[w], passes[w].scenes, args.probe_seeds,
                                                 passes[w].class_names) for w in per_world}
            entry["drop"] = {w: drop_interval(per_world["nuscenes"], nus.scenes, per_world[w], passes[w].scenes)
                             for w in ("kitti", "kitti_scaled")}
        for w in ("kitti", "kitti_scaled"):
            other = passes[w]
            features = np.concatenate([nus.pooled, other.pooled])
            domains = np.r_[np.zeros(len(nus.scenes), int), np.ones(len(other.scenes), int)]
            groups = [f"nuscenes/{s}" for s in nus.scenes] + [f"kitti/{s}" for s in other.scenes]
            entry["domain"][w] = domain_classifier(features, domains, groups, args.folds, 0, args.permutations)
        entry["domain"]["control_nuscenes_halves"] = domain_classifier(
            nus.pooled, random_halves(nus.scenes), nus.scenes, args.folds, 0, args.permutations)
        entry["seconds"] = time.perf_counter() - t0
        result["students"][name] = entry
        result["timing"]["total_s"] = time.perf_counter() - start
        Path(args.out).write_text(json.dumps(result, indent=1))
        print(f"{name} done in {entry['seconds']:.0f} s", flush=True)
    if not args.domain_only and len(confusions) > 1:
        result["paired"] = paired_comparisons(confusions)
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} in {time.perf_counter() - start:.0f} s", file=sys.stderr)


def paired_comparisons(confusions: dict) -> list[dict]:
    """Every pair of students on the same frames: the KITTI world's mIoU (raw, scaled) and the drop
    from the nuScenes world, one family under Holm."""
    names, rows = list(confusions), []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for w in ("kitti", "kitti_scaled"):
                for measure in ("miou", "drop"):
                    def side(student):
                        out, scenes_out = confusions[student][w]
                        entry = {"out": out, "scenes_out": scenes_out}
                        if measure == "drop":
                            entry["in"], entry["scenes_in"] = confusions[student]["nuscenes"]
                        return entry
                    rows.append({"a": a, "b": b, "world": w, **paired_student_difference(side(a), side(b))})
    for row, adjusted in zip(rows, holm([r["p"] for r in rows])):
        row["p_holm"] = adjusted
        row["verdict"] = row.get("verdict") or ("cannot be told" if adjusted is None or adjusted > 0.05
                                                else "a > b" if row["value"] > 0 else "a < b")
    return rows


if __name__ == "__main__":
    main()

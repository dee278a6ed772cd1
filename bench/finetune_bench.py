"""Few-shot on a demo student: fine-tuning the whole network (SLidR's schedule) against the frozen
linear probe on the same labelled frames, mIoU on mini_val, with wall and CPU times.

Usage: RELVIZ_HOME=workspace .venv/bin/python bench/finetune_bench.py [--dataset synthetic-mini]
       [--loss relational] [--fractions 0.1] [--epochs 100 | --steps N] [--batch 16] [--seeds 0]

The defaults are SLidR's fine-tuning schedule (relviz.eval.finetune.SLIDR_FINETUNE); on 8 training
scenes 1, 5 and 10% all take one scene (2 to 8 keyframes, see relviz.eval.fewshot), so one epoch is
one step of that scene's frames.
"""

import argparse
import json
import time

import torch

from relviz.config import load_settings
from relviz.data import NuScenesLidarSeg
from relviz.demo import student_path
from relviz.eval.fewshot import evaluate_fewshot
from relviz.eval.finetune import SLIDR_FINETUNE, finetune, finetune_minus_probe
from relviz.models.checkpoint import load_student


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, {"wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(time.process_time() - cpu, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic-mini")
    parser.add_argument("--loss", default="relational", help="demo student: relational, similarity, contrastive")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1])
    parser.add_argument("--epochs", type=int, default=SLIDR_FINETUNE["epochs"])
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps instead of epochs")
    parser.add_argument("--batch", type=int, default=SLIDR_FINETUNE["batch"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()

    root = load_settings().dataset_root(args.dataset)
    train = NuScenesLidarSeg(root, split="mini_train", load_images=False)
    val = NuScenesLidarSeg(root, split="mini_val", load_images=False)
    model, _ = load_student(student_path(args.loss))
    rows = []
    for fraction in args.fractions:
        for seed in args.seeds:
            probe, probe_t = timed(lambda: evaluate_fewshot(model, train, val, fraction, seed=seed))
            tuned, tuned_t = timed(lambda: finetune(model, train, val, fraction, epochs=args.epochs, steps=args.steps,
                                                    batch=args.batch, seed=seed))
            rows.append({"fraction": fraction, "seed": seed, "frames": len(tuned["frames"]),
                         "scenes": tuned["scenes"], "linear_probe_miou": probe["miou"], "finetune_miou": tuned["miou"],
                         "finetune_minus_probe": finetune_minus_probe(tuned, probe, seed=seed),
                         "linear_probe_interval": probe["miou_interval"], "finetune_interval": tuned["miou_interval"],
                         "linear_probe_time": probe_t,
                         "finetune_time": tuned_t, "finetune_wall_s": tuned["wall_s"],
                         "loss_first_last": [tuned["loss"][0], tuned["loss"][-1]], "schedule": tuned["schedule"],
                         "iou": {"linear_probe": probe["iou"], "finetune": tuned["iou"]}})
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"threads": torch.get_num_threads(), "student": args.loss, "dataset": str(root),
                      "train_frames": len(train), "val_frames": len(val), "runs": rows}, indent=1))


if __name__ == "__main__":
    main()

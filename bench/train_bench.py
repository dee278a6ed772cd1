"""Training throughput on CPU and the input pipeline against it.

- steps/s of the demo student and of MinkUNet34 (batch 2) with the teacher cache warm, and of the
  demo student with the teacher inside the step (``teacher_features = "online"``);
- the loader alone: micro-batches/s with 0, 1 and 2 DataLoader workers (cache and online modes; the
  online mode also decodes the camera images its pairs use), to set against the step time.

``--mixed`` measures only SLidR's mixed augmentations (``image_augment``: crops and flips of the images
with their pairs; ``drop_cuboids``) against the plain online mode: the loader with 0 and 2 workers
and the demo student's steps/s.

``--rate STEPS`` measures only the demo student's steps (teacher cache warm, no workers, ``--threads``
torch threads, default 1: a background job's share of 2 cores): the median wall and CPU seconds of
STEPS steps after 2 warm-up steps, as JSON with the load average. To compare two versions of the code
on the same world and load, run it alternately with ``PYTHONPATH`` on a copy of each version's
package (``git archive <rev> relviz | tar -x -C DIR``; bench/README.md, "Training step, before and after").

``--paired REV STEPS`` compares the sparse backend (``relviz/sparse``: its kernel maps and convolution)
with its version at git revision REV in one process, paired: each of STEPS batches is trained on by
both versions in turn (order alternating), so that the machine's load falls on both alike; medians
of the wall and CPU seconds and of the per-batch ratios.

Usage: RELVIZ_HOME=workspace .venv/bin/python bench/train_bench.py
       [--mixed | --rate STEPS | --paired REV STEPS] [--threads T]      (needs the demo dataset and teacher)
"""

import json
import shutil
import statistics
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


def step_rate(cfg: TrainConfig, steps: int) -> dict:
    """Median wall and CPU (this process) seconds of ``steps`` optimizer steps after 2 warm-up steps."""
    trainer = _trainer(cfg.with_overrides(max_steps=steps + 3))
    trainer.model.train()
    batches = iter(trainer.loader(0))
    wall, cpu = [], []
    for i in range(steps + 2):
        t, c = time.perf_counter(), time.process_time()
        trainer.optimizer.zero_grad()
        for _ in range(cfg.accumulate):
            trainer._micro_step(next(batches)).backward()
        trainer.optimizer.step()
        if i >= 2:
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    shutil.rmtree(trainer.run_dir.parent, ignore_errors=True)
    return {"steps": steps, "median_step_s": round(statistics.median(wall), 4),
            "it_s": round(1 / statistics.median(wall), 3), "median_cpu_step_s": round(statistics.median(cpu), 4),
            "mean_it_s": round(steps / sum(wall), 3)}


def _sparse_at(rev: str) -> tuple:
    """(CoordinateManager.kernel_map, sparse_conv_features) of relviz/sparse as it is at git revision
    ``rev``, loaded from ``git show`` beside the current modules."""
    import subprocess
    import types

    root = Path(__file__).resolve().parents[1]
    modules = {}
    for name in ("core", "nn"):
        source = subprocess.run(["git", "-C", str(root), "show", f"{rev}:relviz/sparse/{name}.py"],
                                capture_output=True, text=True, check=True).stdout
        source = source.replace("from relviz.sparse.core import", "from relviz_sparse_core_at_rev import")
        module = types.ModuleType(f"relviz_sparse_{name}_at_rev")
        sys.modules[module.__name__] = module
        exec(compile(source, f"{rev}:relviz/sparse/{name}.py", "exec"), module.__dict__)
        modules[name] = module
    return modules["core"].CoordinateManager.kernel_map, modules["nn"].sparse_conv_features


def paired_rate(cfg: TrainConfig, rev: str, steps: int) -> dict:
    """Each of ``steps`` batches trained on by the current sparse backend and by the one at ``rev``
    (order alternating; 2 warm-up batches): medians of wall and CPU seconds per step and of the
    per-batch ratios rev / current."""
    import relviz.sparse.core as core
    import relviz.sparse.nn as sparse_nn

    versions = {"current": (core.CoordinateManager.kernel_map, sparse_nn.sparse_conv_features),
                rev: _sparse_at(rev)}
    trainer = _trainer(cfg.with_overrides(max_steps=steps + 3))
    trainer.model.train()
    batches = iter(trainer.loader(0))
    times = {v: {"wall": [], "cpu": []} for v in versions}
    for i in range(steps + 2):
        micro = [next(batches) for _ in range(cfg.accumulate)]
        for v in (list(versions) if i % 2 else list(versions)[::-1]):
            core.CoordinateManager.kernel_map, sparse_nn.sparse_conv_features = versions[v]
            t, c = time.perf_counter(), time.process_time()
            trainer.optimizer.zero_grad()
            for batch in micro:
                trainer._micro_step(batch).backward()
            trainer.optimizer.step()
            if i >= 2:
                times[v]["wall"].append(time.perf_counter() - t)
                times[v]["cpu"].append(time.process_time() - c)
    core.CoordinateManager.kernel_map, sparse_nn.sparse_conv_features = versions["current"]
    shutil.rmtree(trainer.run_dir.parent, ignore_errors=True)
    med = statistics.median
    rec = {"steps": steps}
    for v, t in times.items():
        rec[v] = {"it_s": round(1 / med(t["wall"]), 3), "median_step_s": round(med(t["wall"]), 4),
                  "median_cpu_step_s": round(med(t["cpu"]), 4)}
    for kind in ("wall", "cpu"):
        rec[f"median_ratio_{kind}_{rev}_over_current"] = round(
            med(a / b for a, b in zip(times[rev][kind], times["current"][kind])), 3)
    return rec


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
    if "--rate" in sys.argv or "--paired" in sys.argv:
        threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 1
        torch.set_num_threads(threads)
        import relviz

        rec = {"threads": threads, "code": str(Path(relviz.__file__).parent),
               "loadavg_before": open("/proc/loadavg").read().split()[:3]}
        if "--rate" in sys.argv:
            rec.update(step_rate(demo, int(sys.argv[sys.argv.index("--rate") + 1])))
        else:
            at = sys.argv.index("--paired")
            rec.update(paired_rate(demo, sys.argv[at + 1], int(sys.argv[at + 2])))
        rec["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
        print(json.dumps(rec), flush=True)
        return
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

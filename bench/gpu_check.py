"""The one prepared GPU check (issue #32), driven by ``bench/gpu_check.sh``; read that script first.

Modes:

- ``prepare FOLDER``: on this CPU machine, write the synthetic dataset the GPU check reads (nuScenes
  trainval layout, nuScenes-sized scans, 1536x864 images) into FOLDER, to be carried to the GPU.
- ``check OUT``: on a CUDA machine, every check, at full size: the CUDA-marked tests
  (tests/test_cuda.py); MinkUNet34 forward+backward on a nuScenes-sized scan (relviz's pure-PyTorch
  backend; spconv if importable, else why not); a SLidR-preset run with the online ViT-B/16 teacher
  (random weights, named so) and the loader at its worker count, and the preset's projected wall
  time on nuScenes trainval.
- ``check --dry OUT``: the same on the CPU: the CUDA tests skip (with their reason), timings run at
  toy size (MinkUNet14, the demo teacher's architecture with random weights, a tiny dataset made
  on the spot), and imports are refused for every package the GPU machine lacks
  (bench/gpu_machine_packages.txt, less the carried bench/gpu_wheels.txt), so that a missing
  package breaks here rather than there.

Each check runs even when one before it failed. OUT receives three files only (the device tool
returns at most 8): ``gpu_check.json`` (one record), ``gpu_check.log`` (a short log) and
``cuda_tests.xml`` (the tests' JUnit report). The exit status is 0 when every check passed.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
# nuScenes v1.0-trainval: the 700 train scenes hold 28,130 keyframes (docs/presets.md)
TRAINVAL_TRAIN_KEYFRAMES = 28_130
# the dataset carried to the GPU: the largest image the generator renders (its noise field holds
# 4M values: 3 x 1600 x 900 does not fit, 3 x 1536 x 864 does), 3 trainval scenes of 2 keyframes
# (4 train, 2 val): about 18 MB
CARRIED_DATASET = dict(image_size=(1536, 864), scenes=3, samples_per_scene=2, workers=3)
TOY_DATASET = dict(image_size=(160, 90), samples_per_scene=2, beams=8, version="v1.0-mini")


@dataclass(frozen=True)
class Size:
    """What a mode runs at."""

    arch: str  # the student timed alone
    width: float
    repeats: int  # timed forward+backward passes, after one warm-up
    teacher: str  # the open_clip architecture given random weights
    steps: int  # training steps of the SLidR-preset run
    warm_steps: int  # its first steps, not timed (the workers start, CUDA builds its kernels)
    compute_steps: int  # steps timed on one batch already in memory
    loader_items: int  # micro-batches timed through the loader alone
    overrides: tuple[tuple[str, Any], ...]  # config fields set over the preset


GPU = Size("MinkUNet34", 1.0, repeats=5, teacher="ViT-B-16", steps=12, warm_steps=2, compute_steps=5, loader_items=24,
           overrides=())
DRY = Size("MinkUNet14", 0.125, repeats=1, teacher="relviz-demo-vit", steps=2, warm_steps=1, compute_steps=1,
           loader_items=2,
           overrides=(("arch", "MinkUNet14"), ("width", 0.125), ("batch", 1), ("pairs", 256), ("val_scenes", 1),
                      ("val_per_scene", 1), ("val_per_class", 50)))


def log(out: Path, line: str) -> None:
    print(line, flush=True)
    with open(out / "gpu_check.log", "a") as f:
        f.write(line + "\n")


def run_check(record: dict, out: Path, name: str, fn: Callable[[], dict]) -> dict | None:
    """``fn()``'s dict under ``record[name]`` with ``ok`` and ``seconds``; a failure is recorded
    (error and the end of its traceback) and the next check runs."""
    t = time.perf_counter()
    try:
        result = {"ok": True, **fn()}
    except Exception as e:  # recorded, not raised: the other checks still run
        result = {"ok": False, "error": f"{type(e).__name__}: {e}",
                  "traceback": traceback.format_exc().splitlines()[-12:]}
    result["seconds"] = round(time.perf_counter() - t, 2)
    record["checks"][name] = result
    (out / "gpu_check.json").write_text(json.dumps(record, indent=1))  # so far: a run cut short still tells
    log(out, f"[{'ok' if result['ok'] else 'FAILED'}] {name} ({result['seconds']} s)"
             + ("" if result["ok"] else f": {result['error']}"))
    return result if result["ok"] else None


# ----------------------------------------------------------------------------------- environment
def listed(file: str) -> set[str]:
    """The distribution names of bench/``file`` (one a line, ``name==version`` or ``name``, # comments)."""
    lines = (line.split("#")[0].strip() for line in (BENCH / file).read_text().splitlines())
    return {_normalise(line.split("==")[0]) for line in lines if line}


def _normalise(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def absent_on_gpu() -> list[str]:
    """Top-level modules installed here whose every distribution is missing on the GPU machine.
    What a package that it has requires here is left alone: there, its own version brings its own
    requirements (huggingface_hub's HTTP client differs between versions, say)."""
    import importlib.metadata as md
    import re

    installed = {_normalise(d.metadata["Name"]): d for d in md.distributions()}
    there = listed("gpu_machine_packages.txt") & set(installed)
    todo = list(there)
    while todo:  # the requirements of what the GPU machine has, transitively
        for req in installed[todo.pop()].requires or []:
            if "extra ==" in req:
                continue
            name = _normalise(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0])
            if name in installed and name not in there:
                there.add(name)
                todo.append(name)
    # the carried wheels come without their requirements, and relviz's are the ones in question
    there |= listed("gpu_wheels.txt") | {"relviz"}
    return sorted(module for module, dists in md.packages_distributions().items()
                  if not module.startswith("_") and not any(_normalise(d) in there for d in dists))


_BLOCKER = '''import sys
ABSENT = frozenset({absent!r})

class _NotOnTheGpuMachine:
    """bench/gpu_check.py --dry: the GPU machine lacks these packages."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {{name!r}} on the GPU machine (bench/gpu_machine_packages.txt; "
                                      f"carry it in bench/gpu_wheels.txt if it is needed)", name=name)
        return None

sys.meta_path.insert(0, _NotOnTheGpuMachine())
'''


def refuse_absent_packages(folder: Path) -> list[str]:
    """In this process and every Python process it starts (``sitecustomize`` on PYTHONPATH), refuse
    to import the modules the GPU machine lacks. Returns them."""
    absent = absent_on_gpu()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_BLOCKER.format(absent=absent))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(folder), str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    namespace: dict = {}
    exec(_BLOCKER.format(absent=absent), namespace)  # this process started before the file existed
    return absent


def environment() -> dict:
    import importlib.metadata as md

    import torch

    def version(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    cuda = torch.cuda.is_available()
    return {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cuda_available": cuda, "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
            "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
            "cores": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
            # DataLoader workers hand their batches over through it (docs/distributed.md: ~100 MB a
            # slidr micro-batch with its images, times workers x 2 prefetched)
            "dev_shm_mb": round(shutil.disk_usage("/dev/shm").total / 2**20) if os.path.isdir("/dev/shm") else None,
            "packages": {d: version(d) for d in ("numpy", "open_clip_torch", "nuscenes-devkit", "timm", "scipy",
                                                 "safetensors", "tensorboard", "spconv")}}


# --------------------------------------------------------------------------------------- dataset
def make_dataset(folder: Path, image_size: tuple[int, int], samples_per_scene: int, beams: int = 32,
                 version: str = "v1.0-trainval", scenes: int | None = None, workers: int = 1) -> Path:
    """A synthetic nuScenes set: v1.0-trainval (train and val scenes, as the slidr preset reads) or
    v1.0-mini (its 10 scenes; generated without the devkit's scene list, faster)."""
    from relviz.data.synthetic import SynthConfig, generate

    config = SynthConfig(samples_per_scene=samples_per_scene, image_size=image_size, beams=beams, version=version,
                         scenes=scenes)
    return generate(folder, config, workers=workers)


def splits_of(dataroot: Path) -> dict:
    """The version and splits of a synthetic dataroot, as config fields."""
    if (dataroot / "v1.0-trainval").is_dir():
        return {"version": "v1.0-trainval", "split": "train", "val_split": "val"}
    return {"version": "v1.0-mini", "split": "mini_train", "val_split": "mini_val"}


def dataset_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------- CUDA tests
def cuda_tests(dataset: Path, out: Path) -> dict:
    """tests/test_cuda.py in a pytest process of its own, on ``dataset``: counts, and why tests skipped."""
    report = out / "cuda_tests.xml"
    env = {**os.environ, "RELVIZ_GPU_CHECK_DATASET": str(dataset)}
    # the project's addopts run two xdist workers; one process here (each worker would start CUDA)
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "test_cuda.py"), "-o", "addopts=", "-p", "no:dash",
           "-p", "no:cacheprovider", "-q", "-rs", f"--junitxml={report}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    cases = ET.parse(report).getroot().iter("testcase") if report.is_file() else []
    outcomes, reasons, failures = {"passed": 0, "failed": 0, "skipped": 0}, set(), {}
    for case in cases:
        name = case.get("name")
        skipped = case.find("skipped")
        failed = case.find("failure") if case.find("failure") is not None else case.find("error")
        if skipped is not None:
            outcomes["skipped"] += 1
            reasons.add(skipped.get("message", ""))
        elif failed is not None:
            outcomes["failed"] += 1
            failures[name] = (failed.get("message") or "")[:300]
        else:
            outcomes["passed"] += 1
    collected = sum(outcomes.values())
    if proc.returncode not in (0, 5) and not outcomes["failed"] or not collected:
        raise RuntimeError(f"pytest exited {proc.returncode}: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    if outcomes["failed"]:
        raise AssertionError(f"{outcomes['failed']} of {collected} CUDA tests failed: {json.dumps(failures)}")
    return {"collected": collected, **outcomes, "skip_reasons": sorted(reasons), "pytest_exit": proc.returncode}


# --------------------------------------------------------------------- CUDA paths, checked on a CPU
def autocast_student(dataset: Path) -> dict:
    """The student's forward and backward under autocast, as the trainer runs them on CUDA, here on
    the CPU with bfloat16 (CPU autocast's type): the same Python code, the same dtype changes of
    matrix products inside the sparse convolution. Outputs and every gradient must be finite."""
    import torch

    from relviz.models import build_minkunet
    from relviz.sparse import SparseTensor

    feats, coords, _ = densest_scan(dataset)
    torch.manual_seed(0)
    model = build_minkunet("MinkUNet14", in_channels=1, out_channels=16, width=0.125).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(SparseTensor(feats, coords)).features
    out.float().square().sum().backward()
    grads = [p.grad for p in model.parameters()]
    if not torch.isfinite(out).all() or any(g is None or not torch.isfinite(g).all() for g in grads):
        raise AssertionError("non-finite output or gradient under autocast")
    return {"output_dtype": str(out.dtype), "voxels": len(coords)}


# ----------------------------------------------------------------------------------- sparse timing
@functools.lru_cache(maxsize=1)
def densest_scan(dataset: Path):
    """(features [V, 1], coordinates [V, 4], points) of the train scan with the most voxels among
    the first 4 (the carried set has 4)."""
    import torch

    from relviz.data import NuScenesLidarSeg

    splits = splits_of(dataset)
    ds = NuScenesLidarSeg(dataset, splits["version"], splits["split"], load_images=False,
                          index_cache=Path(tempfile.gettempdir()) / "relviz-gpu-check-index")
    best = max((ds[i] for i in range(min(4, len(ds)))), key=lambda it: len(it["voxels"]))
    coords = torch.cat([torch.zeros(len(best["voxels"]), 1, dtype=torch.int32), torch.from_numpy(best["voxels"])], 1)
    return torch.from_numpy(best["voxel_features"]), coords, len(best["points"])


def _time_passes(model, feats, coords, repeats: int, device, autocast: bool) -> dict:
    import torch

    from relviz.sparse import SparseTensor

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    fwd, bwd = [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(repeats + 1):  # the first pass warms up (and builds CUDA's kernels)
        model.zero_grad(set_to_none=True)
        sync()
        t0 = time.perf_counter()
        with torch.autocast(device.type, enabled=autocast):
            out = model(SparseTensor(feats.to(device), coords.to(device))).features
        sync()
        t1 = time.perf_counter()
        out.float().square().sum().backward()
        sync()
        t2 = time.perf_counter()
        if i:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    rec = {"forward_s": round(statistics.median(fwd), 4), "backward_s": round(statistics.median(bwd), 4),
           "total_s": round(statistics.median(f + b for f, b in zip(fwd, bwd)), 4)}
    if device.type == "cuda":
        rec["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return rec


def spconv_status() -> dict:
    """Whether spconv can be timed here, and if not, why."""
    if importlib.util.find_spec("spconv") is None:
        return {"timed": False, "reason": (
            "spconv is not installed: its newest CUDA build, spconv-cu126 2.3.8 (70.5 MB) with cumm-cu126 0.8.2 "
            "(27.5 MB), is over the 64 MiB the GPU machine receives with the working tree, and it is built for "
            "CUDA 12.6 while that machine's torch uses CUDA 13; no spconv build for CUDA 13 exists (checked with "
            "pip download, 2026-12)")}
    import importlib.metadata as md

    return {"timed": False, "version": md.version("spconv"),
            "reason": "spconv is importable, but relviz has no spconv network to time yet: a spconv backend behind "
                      "relviz.models.backends is issue #32's step 3, once this check has measured relviz's CUDA step"}


def sparse_timing(dataset: Path, size: Size) -> dict:
    import torch

    from relviz.models import build_minkunet

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    feats, coords, points = densest_scan(dataset)
    torch.manual_seed(0)
    model = build_minkunet(size.arch, in_channels=1, out_channels=64, width=size.width).to(device).train()
    rec = {"backend": "relviz (pure PyTorch)", "arch": size.arch, "width": size.width, "points": points,
           "voxels": len(coords), "device": str(device), "repeats": size.repeats,
           "float32": _time_passes(model, feats, coords, size.repeats, device, autocast=False)}
    if device.type == "cuda":  # the trainer's mode on CUDA
        rec["autocast_float16"] = _time_passes(model, feats, coords, size.repeats, device, autocast=True)
    rec["spconv"] = spconv_status()
    return rec


# ------------------------------------------------------------------------------ SLidR-preset step
def random_teacher_weights(model_name: str, folder: Path) -> Path:
    """An open_clip model's randomly initialised weights (seed 0) at the registry's input size, in a
    file named so: the teacher loads them through ``teacher_pretrained`` as it would real weights."""
    import inspect

    import open_clip
    import torch
    from safetensors.torch import save_file

    from relviz.teacher.clip import ClipTeacher
    from relviz.teacher.demo import register_demo_config

    from relviz.errors import InputError
    from relviz.teacher.registry import entry_for

    register_demo_config()  # relviz-demo-vit, the dry mode's small architecture
    try:  # the input size the teacher registry builds this model at (its positional embedding's grid)
        input_size = entry_for(model_name).input_size
    except InputError:
        input_size = inspect.signature(ClipTeacher).parameters["input_size"].default
    torch.manual_seed(0)
    model = open_clip.create_model(model_name, pretrained=None, force_image_size=input_size)
    path = folder / f"{model_name}-random-weights-seed0.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def slidr_step(dataset: Path, size: Size, workspace: Path) -> dict:
    """A run of the slidr preset (only the dataset, the teacher's weights and the run's length set
    over it; at toy size in the dry mode) through Trainer.run: its per-step times from its events,
    its validation time; then the loader alone at the run's worker count, and steps on one batch
    already in memory (the step without waiting for data)."""
    import torch

    from relviz.config import load_settings
    from relviz.train import TrainConfig, Trainer
    from relviz.train.loader import StepKeys, end_workers, micro_batch_loader
    from relviz.train.rundir import read_events

    weights = random_teacher_weights(size.teacher, workspace)
    # splits_of: the preset's own (trainval) on the carried set, the mini set's in the dry mode
    cfg = TrainConfig.from_settings(load_settings(), preset="slidr", dataset=str(dataset), teacher=size.teacher,
                                    teacher_pretrained=str(weights), max_steps=size.steps, log_every=1,
                                    val_every=10**9, checkpoint_every=10**9, **splits_of(dataset),
                                    **dict(size.overrides))
    trainer = Trainer(cfg, workspace / "run", load_settings())
    result = trainer.run()
    if result["status"] != "succeeded":
        raise RuntimeError(f"the slidr run ended {result['status']}")
    events, _ = read_events(trainer.layout.events)
    steps = [e for e in events if e["event"] == "step"]
    step_s = [1 / e["it_s"] for e in steps[size.warm_steps:]]
    started = next(e["ts"] for e in events if e["event"] == "phase" and e.get("phase") == "validate")
    validation_s = next(e["ts"] for e in events if e["event"] == "val") - started

    # the loader alone, at the run's worker count
    batches = iter(micro_batch_loader(trainer.micro_batches(), StepKeys(0, size.loader_items + 1, 0, 1),
                                      trainer.workers, pin_memory=trainer.device.type == "cuda"))
    batch = next(batches)  # the workers started and the first item made
    t = time.perf_counter()
    for _ in range(size.loader_items):
        next(batches)
    loader_per_s = size.loader_items / (time.perf_counter() - t)
    end_workers(batches)

    # the step on a batch in memory: teacher, student, loss, backward, optimiser (no data wait)
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    times = []
    for _ in range(size.compute_steps):
        sync()
        t = time.perf_counter()
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.scaler.scale(trainer._micro_step(batch)).backward()
        trainer.scaler.step(trainer.optimizer)
        trainer.scaler.update()
        sync()
        times.append(time.perf_counter() - t)

    median_step = statistics.median(step_s)
    per_epoch, total = TrainConfig.from_settings(load_settings(), preset="slidr").steps(TRAINVAL_TRAIN_KEYFRAMES)
    projected_s = total * median_step + cfg.epochs * validation_s  # slidr validates at each epoch's end
    return {
        "preset": "slidr", "overrides": {"dataset": "the carried synthetic set" if size is GPU else "a toy set",
                                         "teacher_pretrained": weights.name, "max_steps": size.steps,
                                         **splits_of(dataset), **dict(size.overrides)},
        "teacher": f"{size.teacher} (random weights, seed 0: timing only)", "device": str(trainer.device),
        "arch": cfg.arch, "batch": cfg.batch, "pairs": cfg.pairs, "image_augment": cfg.image_augment,
        "drop_cuboids": cfg.drop_cuboids, "teacher_features": "online" if trainer.online else "cache",
        "workers": trainer.workers, "timed_steps": len(step_s),
        "step_s": [round(s, 4) for s in step_s], "step_s_median": round(median_step, 4),
        "step_s_on_a_batch_in_memory": round(statistics.median(times), 4),
        "loader_micro_batches_per_s": round(loader_per_s, 2),
        "loader_s_per_micro_batch": round(1 / loader_per_s, 4),
        "peak_memory_mb": steps[-1].get("mem_mb"), "validation_s": round(validation_s, 2),
        "projection": {"what": "the slidr preset on nuScenes trainval, one process: total_steps x median step + "
                               "epochs x this run's validation" + (" (toy size: no real figure)" if size is DRY else ""),
                       "train_keyframes": TRAINVAL_TRAIN_KEYFRAMES, "steps_per_epoch": per_epoch,
                       "total_steps": total, "hours": round(projected_s / 3600, 1)},
    }


# ------------------------------------------------------------------------------------------- main
def check(out: Path, dry: bool, dataset: Path | None) -> int:
    out.mkdir(parents=True, exist_ok=True)  # the log is appended to (gpu_check.sh clears it)
    t0 = time.perf_counter()
    size = DRY if dry else GPU
    record: dict = {"mode": "dry" if dry else "gpu", "size": asdict(size), "checks": {},
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    work = Path(tempfile.mkdtemp(prefix="relviz-gpu-check-"))
    os.environ["RELVIZ_HOME"] = str(work / "home")  # the runs, caches and index of this check only
    if dataset is None:  # the toy set, made as `prepare` makes the carried one: in a process of its own
        dataset = work / "dataset"
        run_check(record, out, "dataset", lambda: _toy_dataset(dataset))
    else:
        run_check(record, out, "dataset", lambda: {"path": str(dataset), "bytes": dataset_size(dataset)}
                  if dataset.is_dir() else _missing(dataset))
    if dry:
        record["absent_on_gpu"] = refuse_absent_packages(work / "site")
        log(out, f"dry mode: {len(record['absent_on_gpu'])} modules refused as absent on the GPU machine")
    env = run_check(record, out, "environment", environment)
    record["environment"] = (env or {})
    record["cuda_tests"] = run_check(record, out, "cuda_tests", lambda: cuda_tests(dataset, out))
    run_check(record, out, "autocast_student_on_cpu", lambda: autocast_student(dataset))
    record["sparse"] = run_check(record, out, "sparse_timing", lambda: sparse_timing(dataset, size))
    record["slidr"] = run_check(record, out, "slidr_step", lambda: slidr_step(dataset, size, work))
    record["ok"] = all(c["ok"] for c in record["checks"].values())
    record["wall_s"] = round(time.perf_counter() - t0, 1)
    (out / "gpu_check.json").write_text(json.dumps(record, indent=1))
    summary(record, out)
    shutil.rmtree(work, ignore_errors=True)
    return 0 if record["ok"] else 1


def _toy_dataset(folder: Path) -> dict:
    """v1.0-mini, 160x90 images, 8 lidar beams, 2 keyframes a scene (generation imports
    open3d, which the GPU machine lacks: in a process of its own, before imports are refused)."""
    subprocess.run([sys.executable, __file__, "prepare", str(folder), "--toy"], check=True, capture_output=True,
                   timeout=300)
    return {"path": str(folder), "bytes": dataset_size(folder)}


def _missing(dataset: Path) -> dict:
    raise FileNotFoundError(f"{dataset}: no dataset; run `bench/gpu_check.sh prepare` on the CPU machine first and "
                            f"carry bench/out/gpu_carry")


def summary(record: dict, out: Path) -> None:
    tests, sparse, slidr = record.get("cuda_tests") or {}, record.get("sparse") or {}, record.get("slidr") or {}
    failed = [name for name, c in record["checks"].items() if not c["ok"]]
    verdict = "FAILED: " + ", ".join(failed) if failed else "all checks passed"
    lines = [f"mode {record['mode']}: {verdict} in {record['wall_s']} s"]
    if tests:
        lines.append(f"CUDA tests: {tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped"
                     + (f" ({'; '.join(tests['skip_reasons'])})" if tests["skip_reasons"] else ""))
    if sparse:
        lines.append(f"{sparse['arch']} forward+backward, {sparse['voxels']} voxels, {sparse['device']}: float32 "
                     f"{sparse['float32']['total_s']} s" + (f", autocast {sparse['autocast_float16']['total_s']} s"
                                                            if "autocast_float16" in sparse else "")
                     + f"; spconv: {sparse['spconv']['reason'][:80]}...")
    if slidr:
        p = slidr["projection"]
        lines.append(f"slidr step ({slidr['teacher']}, {slidr['workers']} workers): median {slidr['step_s_median']} s, "
                     f"{slidr['step_s_on_a_batch_in_memory']} s on a batch in memory, loader "
                     f"{slidr['loader_s_per_micro_batch']} s per micro-batch")
        lines.append(f"projected: slidr on trainval, {p['total_steps']} steps: {p['hours']} h on one {slidr['device']}")
    for line in lines:
        log(out, line)


def prepare(folder: Path, toy: bool = False) -> int:
    """The dataset carried to the GPU machine (``toy``: the dry mode's)."""
    if folder.exists():
        shutil.rmtree(folder)
    make_dataset(folder, **(TOY_DATASET if toy else CARRIED_DATASET))
    print(json.dumps({"dataset": str(folder), "bytes": dataset_size(folder)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("prepare", help="write the dataset carried to the GPU machine")
    p.add_argument("folder", type=Path)
    p.add_argument("--toy", action="store_true", help="the dry mode's toy size")
    c = sub.add_parser("check", help="run the checks; write gpu_check.json, gpu_check.log into OUT")
    c.add_argument("out", type=Path)
    c.add_argument("--dry", action="store_true", help="on a CPU: CUDA tests skip, timings at toy size")
    c.add_argument("--dataset", type=Path, default=None, help="a dataset made by `prepare` (default in the "
                   "dry mode: a toy one made on the spot)")
    args = ap.parse_args(argv)
    if args.mode == "prepare":
        return prepare(args.folder, args.toy)
    # a relative dataset path would be read as a dataset's name in the workspace
    return check(args.out, args.dry, args.dataset.resolve() if args.dataset else None)


if __name__ == "__main__":
    raise SystemExit(main())

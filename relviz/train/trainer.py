"""Distillation of a CLIP teacher into a MinkUNet student: resumable, event-logging, DDP-ready.

Every random choice is a function of (seed, epoch, step, micro-batch): the sample order, the
augmentation and the sampled point-pixel pairs. A resumed run therefore continues exactly where the
last checkpoint left off, and N DDP ranks reproduce one process that accumulates N micro-batches.

The run folder's layout is :mod:`relviz.train.rundir`'s.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from relviz.config import Settings, available_cores, load_settings
from relviz.data.dataset import NuScenesLidarSeg
from relviz.errors import NonFiniteError
from relviz.eval.features import camera_size, pair_features_from_dense, student_voxel_features, teacher_pair_features
from relviz.files import atomic_path, remove_temporaries
from relviz.models.checkpoint import load_into, load_state_dict, save_checkpoint
from relviz.models.minkunet import build_minkunet
from relviz.teacher import FeatureCache, teacher_for_training
from relviz.train.config import TrainConfig, TrainConfigError
from relviz.train.loader import MicroBatches, StepKeys, end_workers, micro_batch_loader, resolve_workers
from relviz.train.tensorboard import TensorBoardSink, write_projector
from relviz.train.rundir import EventLog, Heartbeat, RunDir, read_events, stdout_log  # noqa: F401 (read_events re-exported)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainConfigError("config field 'device': cuda was asked for but no CUDA device is available")
    return torch.device(name)


def _atomic_torch_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class Trainer:
    def __init__(self, config: TrainConfig, run_dir: str | Path, settings: Settings,
                 on_finish: Callable[["Trainer", Path], None] | None = None):
        """``settings``: the workspace (caches, sparse backend); ``on_finish(trainer, checkpoint)``
        runs on rank 0 after the final checkpoint is written (the surface that launches training
        wires the app's caches there); a failure in it is an event, never a failed run."""
        self.cfg = config.validate()
        self.settings = settings
        self._resumed_metrics: dict = {}
        self.on_finish = on_finish
        self.run_dir = Path(run_dir)
        self.layout = RunDir(self.run_dir)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = resolve_device(config.device)
        if self.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)  # NCCL's barrier and the loader's pinning thread use it
        dataroot = self.settings.dataset_root(config.dataset)
        if not dataroot.is_dir():
            raise TrainConfigError(f"config field 'dataset': {dataroot} does not exist "
                                   f"(generate it with `relviz synth` or point to a nuScenes dataroot)")
        self.dataroot = dataroot
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.layout.checkpoints.mkdir(exist_ok=True)
        self.events = EventLog(self.layout.events, enabled=self.rank == 0,  # TensorBoard reads the same events
                               sinks=[TensorBoardSink(self.layout.tensorboard), stdout_log] if self.rank == 0 else [])
        self.stop_requested = False  # set by a signal
        self.stopped = False  # what the ranks agreed on: the run ends as cancelled

    # ------------------------------------------------------------------------------------ pieces
    def _build(self):
        cfg = self.cfg
        self.teacher = teacher_for_training(cfg.teacher_spec, str(self.device), self.settings.cache_dir)
        self.cache = FeatureCache(self.settings.cache_dir, self.teacher.identity)
        # the keyframe index is cached in the workspace: a started or resumed run skips the devkit
        self.train_ds = NuScenesLidarSeg(self.dataroot, cfg.version, cfg.split, cfg.voxel_size, cfg.cylindrical,
                                         load_images=False, augment=cfg.augment, seed=cfg.seed,
                                         index_cache=self.settings.cache_dir, drop_cuboids=cfg.drop_cuboids)
        self.val_ds = NuScenesLidarSeg(self.dataroot, cfg.version, cfg.val_split, cfg.voxel_size, cfg.cylindrical,
                                       load_images=False, index_cache=self.settings.cache_dir)
        torch.manual_seed(cfg.seed)
        self.model = build_minkunet(cfg.arch, in_channels=1, out_channels=self.teacher.dim, width=cfg.width,
                                    normalize=True, backend=self.settings.sparse_backend)
        self.dtype = getattr(torch, cfg.precision)
        self.model = self.model.to(self.device, self.dtype)
        self.model.voxelization = (cfg.voxel_size, cfg.cylindrical)  # as load_student sets it
        self.ddp_model = self.model
        if self.world > 1:
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         dampening=cfg.dampening, weight_decay=cfg.weight_decay)
        self._set_schedule()
        self._loss_fn = cfg.loss_function()  # resolved once per run
        self.online = cfg.online_teacher(self.device)
        self.workers = resolve_workers(cfg.workers, self.device, available_cores(),  # this machine's processes
                                       int(os.environ.get("LOCAL_WORLD_SIZE", self.world)))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda" and self.dtype == torch.float32)

    def _set_schedule(self) -> None:
        """Keyframes per step, steps per epoch and in all, of this config on this many processes."""
        self.global_batch = self.cfg.batch * self.cfg.accumulate * self.world
        self.steps_per_epoch, self.total_steps = self.cfg.steps(len(self.train_ds), self.world)  # as --dry-run says

    def _loss(self, k: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self._loss_fn(k, q)

    def micro_batches(self) -> MicroBatches:
        """Micro-batch ``(step, micro)`` of this run (:mod:`relviz.train.loader`)."""
        return MicroBatches(self.train_ds, self.cfg.seed, self.cfg.batch, self.global_batch, self.steps_per_epoch,
                            self.cfg.pairs, images=self.online, image_augment=self.cfg.image_augment)

    def loader(self, start: int) -> DataLoader:
        """This rank's micro-batches from step ``start`` to the end, in training order."""
        return micro_batch_loader(self.micro_batches(), StepKeys(start, self.total_steps, self.rank,
                                                                 self.cfg.accumulate),
                                  self.workers, pin_memory=self.device.type == "cuda")

    def teacher_targets(self, batch: dict) -> torch.Tensor:
        """The teacher's features [P, D] at the micro-batch's chosen pairs: from the cache, or (online)
        computed from the images the loader decoded, rounded to float16 as the cache stores them, so
        that both modes give a run the same targets (bitwise on the CPU for the same images; on a GPU
        up to the rounding of kernels that depend on how many images run together)."""
        chosen = batch["pairs_chosen"]
        with torch.no_grad():
            if not self.online:
                return teacher_pair_features(self.teacher, self.cache, self.train_ds, batch, chosen)
            used = batch["used_images"]  # the teacher runs in float16 on CUDA (relviz.teacher.clip)
            dense = self.teacher.image_features(batch["used_pixels"].to(self.device, non_blocking=True))
            size = camera_size(self.train_ds, batch["camera_tokens"][int(used[0])])
            return pair_features_from_dense(dense.half().float(), used, batch, chosen, size)

    def _micro_step(self, batch: dict) -> torch.Tensor:
        chosen = batch["pairs_chosen"]
        q = self.teacher_targets(batch).to(self.device, self.dtype)
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda" and self.dtype == torch.float32):
            voxels = student_voxel_features(self.ddp_model, batch, self.device, check_finite=False)
            k = voxels[batch["inverse"].to(self.device)[batch["pair_points"][chosen].to(self.device)]]
        return self._loss(k.to(self.dtype), q)

    # --------------------------------------------------------------------------------- checkpoints
    def _metadata(self, step: int, metrics: dict | None = None) -> dict:
        return {"kind": "student", "architecture": self.model.config.to_dict(), "arch": self.cfg.arch,
                "loss": self.cfg.loss, "teacher": {"name": self.cfg.teacher, "identity": self.teacher.identity,
                                                    "dim": self.teacher.dim},
                "voxelization": {"voxel_size": self.cfg.voxel_size, "cylindrical": self.cfg.cylindrical},
                "training": self.cfg.to_dict(), "step": step, "total_steps": self.total_steps,
                "epoch": step // self.steps_per_epoch,
                "world_size": self.world, "metrics": metrics or {}}

    def save(self, step: int, metrics: dict | None = None) -> None:
        """Checkpoint the weights and the optimizer state of ``step``. The weights file is the commit
        point: the optimizer state of its step is written before it and older states are removed
        only after it, so a kill at any moment leaves a matching pair to resume from."""
        if self.rank != 0:
            return
        state_path = self.layout.optimizer_state(step)
        _atomic_torch_save({"step": step, "optimizer": self.optimizer.state_dict(),
                            "scaler": self.scaler.state_dict()}, state_path)  # the loss scale too: exact resume
        save_checkpoint(self.layout.last, self.model, self._metadata(step, metrics))
        for old in [*self.layout.checkpoints.glob("state-*.pt"), self.layout.checkpoints / "last.state.pt"]:
            if old != state_path:
                old.unlink(missing_ok=True)
        self.events.write("checkpoint", step=step, path=str(self.layout.last))

    def _try_resume(self) -> int:
        ckpt, weights = self.layout.checkpoints, self.layout.last
        if self.rank == 0:  # left by a kill inside a write; never read
            remove_temporaries(ckpt)
            remove_temporaries(self.run_dir)
        if not weights.is_file():
            return 0
        state, meta = load_state_dict(weights)
        step = meta.get("step")
        # state-<step>.pt; last.state.pt is the layout of runs written before it
        candidates = [self.layout.optimizer_state(step), ckpt / "last.state.pt"] if isinstance(step, int) else []
        train_state = next((s for s in (torch.load(p, map_location="cpu", weights_only=True)
                                         for p in candidates if p.is_file()) if s["step"] == step), None)
        if train_state is None:
            raise TrainConfigError(f"{weights}: no optimizer state for its step {step} in {ckpt}; move the "
                                   f"checkpoints folder aside to restart the run from scratch")
        # the folder's checkpoint must be this run's: same architecture and teacher
        if meta.get("architecture") != json.loads(json.dumps(self.model.config.to_dict())) or \
                (meta.get("teacher") or {}).get("identity") != self.teacher.identity:
            raise TrainConfigError(f"{self.run_dir} holds a checkpoint of another run (architecture "
                                   f"{meta.get('arch')!r}, teacher {(meta.get('teacher') or {}).get('name')!r}) than "
                                   f"this config ({self.cfg.arch!r}, {self.cfg.teacher!r}); use a new run folder")
        converted = self._keep_global_batch(meta, weights)
        load_into(self.model, state, source=str(weights))
        self.optimizer.load_state_dict(train_state["optimizer"])
        if train_state.get("scaler"):
            self.scaler.load_state_dict(train_state["scaler"])
        self._resumed_metrics = meta.get("metrics") or {}  # the last validation, until the next one
        self.events.write("resumed", step=step, **converted)
        return step

    def _keep_global_batch(self, meta: dict, weights: Path) -> dict:
        """The resumed run keeps the saved run's global batch, on another number of processes or with
        a config whose ``accumulate`` was written anew (a preset applied again): ``accumulate`` is
        converted (:meth:`TrainConfig.resumed_on`). Returns what changed, for the ``resumed`` event."""
        saved, saved_world = meta.get("training") or {}, int(meta.get("world_size") or 1)
        resumed = self.cfg.resumed_on(self.world, saved, saved_world, source=str(weights))
        if resumed.accumulate == self.cfg.accumulate and saved_world == self.world:
            return {}
        converted = {"world_size_before": saved_world, "world_size": self.world,
                     "accumulate_before": int(saved.get("accumulate", self.cfg.accumulate)),
                     "accumulate_asked": self.cfg.accumulate, "accumulate": resumed.accumulate}
        self.cfg = resumed
        self._set_schedule()
        return converted

    def prepare_teacher_cache(self, chunk: int = 12) -> None:
        """Fill the teacher feature cache for every camera of the train split (not with the online
        teacher) and the val samples used for validation (rank 0; other ranks wait), with progress
        events."""
        from relviz.eval.features import camera_images

        if self.rank == 0:
            missing = []  # (dataset, camera token) of every image without cached features
            from relviz.eval.structure import evaluation_keyframes

            validated = [self.val_ds.keyframes[i] for i in evaluation_keyframes(self.val_ds, self.cfg.val_set)[0]]
            splits = [validated] if self.online else [self.train_ds.keyframes, validated]
            for keyframes in splits:
                for keyframe in keyframes:
                    ds = self.val_ds if keyframes is validated else self.train_ds
                    missing += [(ds, cam["token"]) for cam in keyframe["cameras"].values()
                                if not self.cache.path(cam["token"]).is_file()]
            self.events.write("prepare", done=0, total=len(missing))  # the count is known before the first chunk
            for s in range(0, len(missing), chunk):
                if self.stop_requested:  # cancelled while preparing: the loop below does not start
                    break
                part = missing[s:s + chunk]
                self.cache.features(self.teacher, [t for _, t in part],
                                    lambda idx: np.concatenate([camera_images(part[i][0], [part[i][1]]) for i in idx]))
                self.events.write("prepare", done=min(s + chunk, len(missing)), total=len(missing))
        if self.world > 1:
            dist.barrier()

    # ------------------------------------------------------------------------------------ validation
    def validate_structure(self) -> dict:
        """U, T, G of student features on a fixed sample of val points; zero-shot mIoU by text."""
        from relviz.eval.structure import structure_and_zeroshot

        self.model.eval()
        try:
            return structure_and_zeroshot(
                self.model, self.teacher, self.cache, self.val_ds, self.cfg.val_set,
                per_class=self.cfg.val_per_class, seed=self.cfg.seed, device=self.device,
                on_features=lambda val: write_projector(self.layout.tensorboard, val, self._step, seed=self.cfg.seed))
        finally:
            self.model.train()

    # ------------------------------------------------------------------------------------------ run
    def run(self) -> dict:
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self._install_signal_handlers()
        self._heartbeat = Heartbeat(self.events).start()
        try:
            self.events.write("phase", phase="prepare")
            self._build()
            self.prepare_teacher_cache()
            step = self._try_resume()
            if self.rank == 0:  # after the resume check: a refused config never replaces the folder's
                with atomic_path(self.layout.config) as tmp:
                    Path(tmp).write_text(json.dumps(self.cfg.to_dict(), indent=2))
            self.events.write("start", step=step, total_steps=self.total_steps, steps_per_epoch=self.steps_per_epoch,
                              world_size=self.world, device=str(self.device))
            metrics = self._loop(step)
            if self.stopped:
                self._finish("cancelled", step=self._step)
                return {"status": "cancelled", "step": self._step}
            if self.rank == 0:
                self.events.write("phase", phase="finalize", step=self._step)
                final = self.layout.final
                save_checkpoint(final, self.model, self._metadata(self._step, metrics))
                self._run_on_finish(final)
            self._finish("done", step=self._step, metrics=metrics)
            return {"status": "succeeded", "step": self._step, "metrics": metrics}
        except Exception as e:
            self._finish("failed", error=f"{type(e).__name__}: {e}")
            raise
        finally:
            self._stop_heartbeat()
            if self.world > 1 and dist.is_initialized():
                dist.destroy_process_group()

    def _run_on_finish(self, checkpoint: Path) -> None:
        if self.on_finish is None:
            return
        try:
            self.on_finish(self, checkpoint)
        except Exception as e:
            self.events.write("on_finish_failed", error=f"{type(e).__name__}: {e}")

    def _stop_heartbeat(self) -> None:
        self._heartbeat.stop()

    def _finish(self, event: str, **fields) -> None:
        """The terminal event is always the last line: the heartbeat stops first."""
        self._stop_heartbeat()
        self.events.write(event, **fields)

    def _loop(self, step: int) -> dict:
        self._step = step
        self.model.train()
        # every decision to stop is the agreed one (a flag set by a signal after an agreement waits for
        # the next), so all ranks leave the loop after the same step; a signal during preparation too
        self.stopped = self._agree_to_stop()
        if self.stopped:
            return dict(self._resumed_metrics)
        batches = iter(self.loader(step))  # workers start here
        try:
            return self._steps(step, batches)
        finally:
            end_workers(batches)

    def _steps(self, step: int, batches) -> dict:
        cfg = self.cfg
        metrics: dict = dict(self._resumed_metrics)
        t_last, s_last = time.perf_counter(), step
        while step < self.total_steps and not self.stopped:
            lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / self.total_steps))
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for micro in range(cfg.accumulate):
                loss = self._micro_step(next(batches)) / cfg.accumulate
                self.scaler.scale(loss).backward()
                total += float(loss.detach())
            if not math.isfinite(total):
                raise NonFiniteError(f"loss became {total} at step {step}; lower the learning rate")
            self.scaler.step(self.optimizer)
            self.scaler.update()
            step += 1
            self._step = step
            if step % cfg.log_every == 0 or step == self.total_steps:
                now = time.perf_counter()
                it_s = (step - s_last) / max(now - t_last, 1e-9)
                t_last, s_last = now, step
                mem = torch.cuda.max_memory_allocated() / 2**20 if self.device.type == "cuda" else \
                    __import__("psutil").Process().memory_info().rss / 2**20
                self.events.write("step", step=step, epoch=step // self.steps_per_epoch, loss=total, lr=lr,
                                  it_s=round(it_s, 4), eta_s=round((self.total_steps - step) / max(it_s, 1e-9), 1),
                                  mem_mb=round(mem), total_steps=self.total_steps)
            end_of_epoch = step % self.steps_per_epoch == 0
            if (cfg.val_every and step % cfg.val_every == 0) or (not cfg.val_every and end_of_epoch) \
                    or step == self.total_steps:
                if self.rank == 0:
                    self.events.write("phase", phase="validate", step=step)
                    metrics = self.validate_structure()
                    self.events.write("val", step=step, **metrics)
            # after validation (the other ranks waited for rank 0 there): a signal during it stops now
            self.stopped = self._agree_to_stop()
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or \
                    (not cfg.checkpoint_every and end_of_epoch) or self.stopped:
                self.save(step, metrics)
        return metrics

    def _agree_to_stop(self) -> bool:
        """Whether to stop after this step. Under DDP a signal reaches the ranks at different moments:
        one all-reduce of the flag, or a rank that stopped alone would leave the others waiting
        forever in the next step's all-reduce."""
        if self.world == 1:
            return self.stop_requested
        flag = torch.tensor([float(self.stop_requested)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def request_stop(signum, frame):  # finish the step, checkpoint, exit cleanly
            self.stop_requested = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)


def main(argv: list[str] | None = None, prog: str = "relviz.train",
         on_finish_for: Callable[[Settings], Callable] | None = None) -> int:
    """``python -m relviz.train --config run_dir/config.json --run-dir DIR``: the trainer alone.
    ``on_finish_for(settings)`` gives the run an on_finish hook (:mod:`relviz.jobs.run` passes the
    app's caches)."""
    import argparse

    from relviz.train.config import load_config

    ap = argparse.ArgumentParser(prog=prog)
    ap.add_argument("--config", required=True)
    ap.add_argument("--run-dir", required=True)
    args = ap.parse_args(argv)
    settings = load_settings()
    on_finish = on_finish_for(settings) if on_finish_for else None
    result = Trainer(load_config(args.config), args.run_dir, settings, on_finish=on_finish).run()
    return 0 if result["status"] in ("succeeded", "cancelled") else 1


if __name__ == "__main__":
    raise SystemExit(main())

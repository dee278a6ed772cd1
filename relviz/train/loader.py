"""The training input pipeline: micro-batches built in DataLoader worker processes (or in process).

Micro-batch ``(step, micro)`` is a pure function of ``(seed, step, micro)``: its keyframes (a
permutation drawn from ``(seed, epoch)``), their augmentation (``(seed, epoch, keyframe)``, see
:class:`relviz.data.dataset.NuScenesLidarSeg`) and its sampled point-pixel pairs (``(seed, step,
micro)``). Workers therefore yield exactly the batches the training process would build itself, in
the same order, and a resumed run starts the sequence at its step: resume stays exact with any
number of workers.

For the online teacher a micro-batch also carries the camera images its sampled pairs fall in
(decoded in the worker, so the training process only runs the teacher on them), and with
``image_augment`` each image is a random resized crop, maybe flipped, with its pairs moved along
(:mod:`relviz.data.augment`, drawn from ``(seed, step, micro)``).
"""

from __future__ import annotations

import signal
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from relviz.data.augment import ImageView, random_view
from relviz.data.dataset import NuScenesLidarSeg, collate
from relviz.errors import InputError
from relviz.eval.features import camera_images, camera_size


class MicroBatches(Dataset):
    """Item ``(step, micro)`` -> the collated micro-batch (:func:`relviz.data.dataset.collate`) with
    ``pairs_chosen`` int64 [P] (indices into its pairs) and, when ``images``, ``used_images`` int64
    [I] (indices into ``camera_tokens``, sorted) and ``used_pixels`` uint8 [I, H, W, 3]. Keys are
    drawn by :class:`StepKeys` (no length: the sequence of steps is the sampler's)."""

    def __init__(self, dataset: NuScenesLidarSeg, seed: int, batch: int, global_batch: int, steps_per_epoch: int,
                 pairs: int, images: bool = False, image_augment: bool = False):
        if image_augment and not images:
            raise InputError("image_augment needs the micro-batches' images (the teacher inside the step)")
        self.dataset, self.seed, self.batch, self.global_batch = dataset, seed, batch, global_batch
        self.steps_per_epoch, self.pairs, self.images, self.image_augment = steps_per_epoch, pairs, images, image_augment
        self._order: tuple[int, torch.Tensor] | None = None  # (epoch, its permutation): one draw per epoch

    def indices(self, step: int, micro: int) -> list[int]:
        """The keyframes of micro-batch ``micro`` (``rank * accumulate + local micro``) of ``step``."""
        epoch = step // self.steps_per_epoch
        if self._order is None or self._order[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._order = (epoch, torch.randperm(len(self.dataset), generator=gen))
        perm = self._order[1]
        start = (step % self.steps_per_epoch) * self.global_batch + micro * self.batch
        return [int(perm[(start + i) % len(perm)]) for i in range(self.batch)]

    def __getitem__(self, key: tuple[int, int]) -> dict:
        step, micro = key
        self.dataset.set_epoch(step // self.steps_per_epoch)  # this process's copy: workers have their own
        batch = collate([self.dataset[i] for i in self.indices(step, micro)])
        views = self._views(batch, step, micro) if self.image_augment else None
        gen = torch.Generator().manual_seed(((self.seed * 1_000_003 + step) * 1009 + micro) % 2**63)
        batch["pairs_chosen"] = torch.randperm(len(batch["pair_points"]), generator=gen)[: self.pairs]
        if self.images:
            used = torch.unique(batch["pair_images"][batch["pairs_chosen"]])
            batch["used_images"] = used
            pixels = camera_images(self.dataset, [batch["camera_tokens"][i] for i in used.tolist()])
            if views is not None:
                pixels = np.stack([views[i].image(image) for i, image in zip(used.tolist(), pixels)])
            batch["used_pixels"] = torch.from_numpy(pixels)
        return batch

    def _views(self, batch: dict, step: int, micro: int) -> list[ImageView]:
        """A random view (crop, flip) of every camera image of the micro-batch, drawn from (seed, step,
        micro): its pairs move with it and those outside the crop leave the batch (before pairs are
        chosen, so the count chosen stays ``pairs`` where there are that many)."""
        rng = np.random.default_rng([self.seed, step, micro, 2])
        images, pixels = batch["pair_images"].numpy(), batch["pair_pixels"].numpy()
        moved, keep, views = pixels.copy(), np.zeros(len(pixels), dtype=bool), []
        for k, token in enumerate(batch["camera_tokens"]):
            at = np.flatnonzero(images == k)
            view = random_view(rng, camera_size(self.dataset, token), pixels[at])
            moved[at], keep[at] = view.pixels(pixels[at])
            views.append(view)
        keep_t = torch.from_numpy(keep)
        batch["pair_pixels"] = torch.from_numpy(moved)[keep_t]
        batch["pair_points"], batch["pair_images"] = batch["pair_points"][keep_t], batch["pair_images"][keep_t]
        return views


class StepKeys(Sampler):
    """``(step, rank * accumulate + micro)`` for every step from ``start`` to ``total`` and every
    micro-batch of this rank, in training order."""

    def __init__(self, start: int, total: int, rank: int, accumulate: int):
        self.start, self.total, self.rank, self.accumulate = start, total, rank, accumulate

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for step in range(self.start, self.total):
            for micro in range(self.accumulate):
                yield step, self.rank * self.accumulate + micro

    def __len__(self) -> int:
        return max(0, self.total - self.start) * self.accumulate


def _as_is(item: dict) -> dict:
    return item


def resolve_workers(workers: int, device: torch.device, cores: int, world: int = 1) -> int:
    """``workers`` >= 0 as given; -1 (auto): none on the CPU, where loading is 4-10% of a demo step
    (bench/README.md) and a worker would take a core from the step; on a GPU, the cores of this
    process's share of the machine (``world``: the processes on this machine) but one, for the
    training process itself, at most 8."""
    if workers >= 0:
        return workers
    if device.type != "cuda":
        return 0
    return max(1, min(8, cores // max(world, 1) - 1))


def micro_batch_loader(micro_batches: MicroBatches, keys: StepKeys, workers: int, pin_memory: bool,
                       prefetch: int = 2) -> DataLoader:
    """A DataLoader over ``keys``: ``workers`` processes (0: in this process), each keeping
    ``prefetch`` micro-batches ready (a worker runs one thread, as DataLoader sets it); pinned memory
    for an asynchronous copy to the GPU."""
    return DataLoader(micro_batches, batch_size=None, sampler=keys, num_workers=workers, collate_fn=_as_is,
                      pin_memory=pin_memory, prefetch_factor=prefetch if workers else None,
                      worker_init_fn=_ignore_stop_signals if workers else None)


def _ignore_stop_signals(_: int) -> None:
    """A cancel (``killpg(SIGTERM)``) or a scheduler's warning signal reaches the whole process group:
    PyTorch's workers would die of it, and the training process would fail on their exit instead of
    finishing its step and checkpointing. Workers leave the signal to the training process, which
    ends them (:func:`end_workers`)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def end_workers(batches) -> None:
    """End the worker processes of a loader's iterator now (they ignore SIGTERM, so the interpreter's
    exit would wait on them); nothing to do for a loader without workers."""
    shutdown = getattr(batches, "_shutdown_workers", None)  # DataLoader's own orderly shutdown
    if shutdown is not None:
        shutdown()
    for worker in getattr(batches, "_workers", []):  # its last resort is SIGTERM, which they ignore
        if worker.is_alive():
            worker.kill()
            worker.join(timeout=5)

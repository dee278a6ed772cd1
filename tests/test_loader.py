"""The training input pipeline (relviz/train/loader.py): worker processes yield the in-process
batches, and the teacher inside the step gives the cached teacher's loss."""

import pytest
import torch

from support import TINY
from relviz.config import load_settings
from relviz.train import Trainer, TrainConfigError, from_dict
from relviz.train.loader import StepKeys, resolve_workers


def _trainer(synthetic_root, tmp_path, **fields) -> Trainer:
    cfg = from_dict({**TINY, "dataset": str(synthetic_root), "split": "mini_val", "val_scenes": 1, "val_per_scene": 1, **fields})
    trainer = Trainer(cfg, tmp_path / "run", load_settings())
    trainer._build()
    return trainer


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b  # tokens, counts


def test_workers_yield_the_in_process_batches_across_an_epoch_and_from_a_resumed_step(synthetic_root, tmp_path):
    """Two workers against none, with every augmentation on (points: drawn from (seed, epoch,
    keyframe); image crops and flips: from (seed, step, micro)), over an epoch boundary and from a
    step other than 0, as a resumed run starts: the same micro-batches in the same order, every array
    equal (the same code on the same inputs: exact)."""
    augment = dict(augment=True, drop_cuboids=True, image_augment=True)
    in_process = _trainer(synthetic_root, tmp_path / "a", **augment, batch=1, accumulate=2, workers=0,
                          teacher_features="online", max_steps=6)
    workers = _trainer(synthetic_root, tmp_path / "b", **augment, batch=1, accumulate=2, workers=2,
                       teacher_features="online", max_steps=6)
    assert (in_process.workers, workers.workers, in_process.steps_per_epoch) == (0, 2, 2)  # 4 keyframes, 2 a step
    start = 1  # steps 1..5: epochs 0, 1 and 2
    a, b = list(in_process.loader(start)), list(workers.loader(start))
    assert len(a) == len(b) == (6 - start) * 2
    assert all(_same(x, y) for x, y in zip(a, b))
    # what the keys mean: micro-batch (step, micro) of the run, whichever process built it
    direct = in_process.micro_batches()[(3, 1)]
    assert _same(a[(3 - start) * 2 + 1], direct)
    # every keyframe once per epoch (steps 0-1, then 2-3), in another order, and augmented anew
    keys = in_process.micro_batches()
    epochs = [[i for s in steps for m in (0, 1) for i in keys.indices(s, m)] for steps in ((0, 1), (2, 3))]
    assert sorted(epochs[0]) == sorted(epochs[1]) == [0, 1, 2, 3] and epochs[0] != epochs[1]
    ds = in_process.train_ds
    ds.set_epoch(0)
    before = ds[0]["points"]
    ds.set_epoch(1)
    after = ds[0]["points"]  # another rotation and flips, another dropped box
    assert before.shape != after.shape or not (before == after).all()
    # the online teacher's images travel with the batch: exactly the cameras the chosen pairs fall in
    for item in a:
        used = torch.unique(item["pair_images"][item["pairs_chosen"]])
        assert torch.equal(item["used_images"], used) and item["used_pixels"].shape[0] == len(used)
        assert item["used_pixels"].dtype == torch.uint8 and len(item["pairs_chosen"]) == 256
        # the pairs moved with the crops stay inside the image (pixel centres from 0 to size - 1)
        height, width = item["used_pixels"].shape[1:3]
        px = item["pair_pixels"]
        assert (px[:, 0] >= -0.5).all() and (px[:, 0] < width - 0.5).all() and (px[:, 1] >= -0.5).all()
        assert (px[:, 1] < height - 0.5).all()
    from relviz.eval.features import camera_images

    raw = camera_images(in_process.train_ds, [direct["camera_tokens"][i] for i in direct["used_images"].tolist()])
    assert direct["used_pixels"].shape == raw.shape  # the camera's size: the teacher's input is unchanged
    unchanged = (direct["used_pixels"].numpy() == raw).all(axis=(1, 2, 3))
    assert not unchanged.all()  # cropped or flipped (an image may keep its whole view: no crop kept its pairs)
    # a step on the augmented micro-batch: the teacher runs on the views, the loss is finite
    in_process.model.train()
    assert torch.isfinite(in_process._micro_step(direct))


def test_step_keys_are_this_ranks_micro_batches_from_the_start_step():
    assert list(StepKeys(2, 4, rank=1, accumulate=2)) == [(2, 2), (2, 3), (3, 2), (3, 3)]
    assert len(StepKeys(2, 4, rank=1, accumulate=2)) == 4 and list(StepKeys(5, 4, 0, 1)) == []


def test_workers_auto_rule():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_workers(-1, cpu, cores=16) == 0  # loading is ~2% of a CPU step
    assert resolve_workers(-1, cuda, cores=16, world=2) == 7 and resolve_workers(-1, cuda, cores=64) == 8
    assert resolve_workers(-1, cuda, cores=1) == 1 and resolve_workers(3, cpu, cores=2) == 3


def test_online_and_cached_teacher_give_the_same_loss_on_the_same_batch(synthetic_root, tmp_path):
    """The online teacher runs on the images the loader decoded; the cache computes the same images
    on a miss (camera_images from the same files) and stores float16, which the online path rounds
    to as well: the same operations on the same inputs in one process, so the losses are equal
    exactly, on a miss and on the hit that reads the stored file back."""
    trainer = _trainer(synthetic_root, tmp_path, teacher_features="online", workers=0, lr=0.1)
    assert trainer.online
    batch = next(iter(trainer.loader(0)))
    trainer.model.train()
    online = trainer._micro_step(batch)
    trainer.online = False
    assert not any(trainer.cache.path(t).is_file() for t in batch["camera_tokens"])
    miss = trainer._micro_step(batch)
    assert trainer.cache.misses > 0 and all(trainer.cache.path(batch["camera_tokens"][i]).is_file()
                                            for i in batch["used_images"].tolist())
    hit = trainer._micro_step(batch)
    assert torch.isfinite(online) and online.item() == miss.item() == hit.item()


def test_online_teacher_prepares_only_the_validation_keyframes(synthetic_root, tmp_path):
    from relviz.train.rundir import read_events

    trainer = _trainer(synthetic_root, tmp_path, teacher_features="online")
    trainer.prepare_teacher_cache()
    prepared = [e for e in read_events(trainer.layout.events)[0] if e["event"] == "prepare"]
    assert prepared[-1]["total"] == 6  # the 6 cameras of the one validation keyframe, none of the train split
    with pytest.raises(TrainConfigError, match="teacher_features"):
        from_dict({"teacher_features": "gpu"})
    with pytest.raises(TrainConfigError, match="'image_augment': needs the teacher inside the step"):
        from_dict({"image_augment": True, "teacher_features": "cache"})
    assert from_dict({"image_augment": True}).online_teacher(torch.device("cpu"))  # auto: online for the crops

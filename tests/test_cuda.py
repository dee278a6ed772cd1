"""What only a CUDA device can show: sparse parity with the CPU, training steps under autocast and the
loss scaler, the online teacher, DDP on NCCL, and files written on the GPU read on the CPU.

Run on a GPU machine by ``bench/gpu_check.sh`` (which sets RELVIZ_GPU_CHECK_DATASET to the dataset
it carries); skipped, with the reason, wherever ``torch.cuda.is_available()`` is False.
"""

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fp_bounds import U16, U32, gamma
from support import TINY
from relviz.config import TeacherSpec, load_settings
from relviz.losses import LOSSES
from relviz.sparse import SparseConv3d, SparseConvTranspose3d, SparseTensor

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA device (torch.cuda.is_available() is False): "
                                        "bench/gpu_check.sh runs these on a GPU machine")]

CUDA = torch.device("cuda")


@pytest.fixture
def dataset(request) -> Path:
    """The dataset gpu_check.sh carries (nuScenes trainval layout), else the tests' synthetic mini set
    (generating it needs open3d)."""
    path = os.environ.get("RELVIZ_GPU_CHECK_DATASET")
    return Path(path) if path else request.getfixturevalue("synthetic_root")


def _tiny(dataroot: Path, **overrides):
    """A small training config on ``dataroot`` (its version and splits read from its folders)."""
    from relviz.train import TrainConfig

    splits = dict(version="v1.0-trainval", split="train", val_split="val") if (dataroot / "v1.0-trainval").is_dir() \
        else dict(version="v1.0-mini", split="mini_train", val_split="mini_val")
    fields = dict(TINY, dataset=str(dataroot), **splits, checkpoint_every=1000, device="cuda", workers=0,
                  teacher_features="online")
    return TrainConfig(**{**fields, **overrides}).validate()


# ------------------------------------------------------------------------------------- sparse parity
C_IN, C_OUT, N, SIDE = 16, 32, 2000, 24
# kind -> (layer class, kernel size, stride, its kernel map's arguments: in/out stride, k, dilation, transposed)
LAYERS = {"submanifold-k3": (SparseConv3d, 3, 1, (1, 1, 3, 1, False)),
          "strided-k2": (SparseConv3d, 2, 2, (1, 2, 2, 1, False)),
          "transposed-k2": (SparseConvTranspose3d, 2, 2, (2, 1, 2, 1, True))}


def _forward_backward(layer, kind: str, coords, fine, coarse, probe, device) -> list[torch.Tensor]:
    """(output coordinates, kernel map table, features, d(features . probe)/d input, .../d kernel)
    of ``layer`` on ``device``. Its input: ``fine`` [N, C] at ``coords``, or for the transposed
    layer ``coarse`` at their stride-2 coordinates (in the same coordinate manager)."""
    layer = layer.to(device)
    x = base = SparseTensor(fine.detach().to(device).requires_grad_(), coords.to(device))
    if kind == "transposed-k2":
        x = SparseTensor(coarse.detach().to(device).requires_grad_(), base.manager.strided_coords(1, 2), 2,
                         base.manager)
    out = layer(x)
    g_x, g_w = torch.autograd.grad((out.features * probe.to(device)).sum(), [x.features, layer.kernel])
    nbr = base.manager.kernel_map(*LAYERS[kind][3]).nbr
    return [t.detach().cpu() for t in (out.coordinates, nbr, out.features, g_x, g_w)]


@pytest.mark.parametrize("kind", list(LAYERS))
def test_sparse_layer_on_cuda_matches_cpu(kind, monkeypatch):
    """The same layer, weights, input and output probe on both devices: identical coordinates and
    kernel maps (integer work), and features and both gradients within the float32 bound of two
    summation orders."""
    # the bound is for IEEE float32 products; TF32 (10-bit mantissa) would need another unit roundoff
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    cls, k, stride, _ = LAYERS[kind]
    torch.manual_seed(0)
    layer = cls(C_IN, C_OUT, kernel_size=k, stride=stride)
    gen = torch.Generator().manual_seed(1)
    cells = torch.randperm(2 * SIDE ** 3, generator=gen)[:N]
    b, rest = cells // SIDE ** 3, cells % SIDE ** 3
    coords = torch.stack([b, rest % SIDE, (rest // SIDE) % SIDE, rest // SIDE ** 2], dim=1)
    n_coarse = len(SparseTensor(torch.zeros(N, 1), coords).manager.strided_coords(1, 2))
    fine, coarse = torch.randn(N, C_IN, generator=gen), torch.randn(n_coarse, C_IN, generator=gen)
    probe = torch.randn(n_coarse if kind == "strided-k2" else N, C_OUT, generator=gen)

    cpu = _forward_backward(copy.deepcopy(layer), kind, coords, fine, coarse, probe, "cpu")
    gpu = _forward_backward(copy.deepcopy(layer), kind, coords, fine, coarse, probe, CUDA)
    assert torch.equal(cpu[0], gpu[0]) and torch.equal(cpu[1], gpu[1])
    # sum|terms| of every output and gradient: the same computation on |input|, |kernel|, |probe| in
    # float64. Most terms in one sum: K^3 * C_in (forward), K^3 * C_out (input gradient), the pairs of
    # one offset (kernel gradient, at most N). Each device is within gamma(n) sum|terms| of the exact
    # value, so the two differ by <= 2 gamma(n) sum|terms| (x2 safety, as in tests/test_sparse.py).
    abs_layer = copy.deepcopy(layer).double()
    abs_layer.kernel.data.abs_()
    bounds = _forward_backward(abs_layer, kind, coords, fine.abs().double(), coarse.abs().double(),
                               probe.abs().double(), "cpu")[2:]
    tol = 2 * 2 * gamma(max(k ** 3 * max(C_IN, C_OUT), N), torch.float32)
    for what, a, b, bound in zip(("features", "input gradient", "kernel gradient"), cpu[2:], gpu[2:], bounds):
        err = (a.double() - b.double()).abs()
        assert bool((err <= tol * bound).all()), f"{kind} {what}: max error / bound {(err / (tol * bound)).max():.3g}"


# ---------------------------------------------------------------------------------- training steps
@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "autocast-scaler"])
def test_training_step_on_cuda(loss, autocast, dataset, tmp_path):
    """One step of every loss on CUDA: in plain float32, and as the trainer runs it there (autocast
    and GradScaler). The loss is finite and non-negative (every loss is), the step changes the
    weights, and they stay finite."""
    from relviz.eval.features import student_voxel_features
    from relviz.train import Trainer

    trainer = Trainer(_tiny(dataset, loss=loss), tmp_path / "run", load_settings())
    trainer._build()
    assert trainer.online and trainer.scaler.is_enabled()
    batch = next(iter(trainer.loader(0)))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    for attempt in range(3):  # the scaler skips a step whose float16 gradients overflowed, and halves its scale
        trainer.optimizer.zero_grad(set_to_none=True)
        if autocast:
            value = trainer._micro_step(batch)  # the trainer's own step: autocast on CUDA
            scale = trainer.scaler.get_scale()
            trainer.scaler.scale(value).backward()
            trainer.scaler.step(trainer.optimizer)
            trainer.scaler.update()
            stepped = trainer.scaler.get_scale() >= scale
        else:  # _micro_step's lines without autocast
            q = trainer.teacher_targets(batch).to(trainer.device)
            voxels = student_voxel_features(trainer.model, batch, trainer.device, check_finite=False)
            chosen = batch["pairs_chosen"]
            k = voxels[batch["inverse"].to(trainer.device)[batch["pair_points"][chosen].to(trainer.device)]]
            assert k.dtype == torch.float32
            value = trainer._loss(k, q)
            value.backward()
            trainer.optimizer.step()
            stepped = True
        assert torch.isfinite(value) and value.item() >= 0, f"{loss}: loss {value.item()}"
        if stepped:
            break
    assert stepped, f"{loss}: the scaler skipped 3 steps in a row (float16 gradients overflowed each time)"
    after = list(trainer.model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert sum(not torch.equal(a, b) for a, b in zip(before, after)) > len(after) // 2  # most tensors moved


# ---------------------------------------------------------------------------------- online teacher
def _random_vit_b16(folder: Path) -> Path:
    """ViT-B/16 with random weights (seed 0) at ClipTeacher's input size, in a file named so."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16", pretrained=None, force_image_size=(224, 416))
    path = folder / "ViT-B-16-random-weights-seed0.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_online_teacher_on_cuda(tmp_path):
    """ViT-B/16 (random weights) on CUDA runs in float16 and gives unit dense features [B, 512, 14, 26]
    and unit text embeddings, as on the CPU."""
    from relviz.teacher import load_teacher

    teacher = load_teacher(TeacherSpec("ViT-B-16", str(_random_vit_b16(tmp_path))), device="cuda")
    assert next(teacher.model.parameters()).dtype == torch.float16
    images = np.random.default_rng(0).integers(0, 256, (3, 450, 800, 3), dtype=np.uint8)
    dense = teacher.image_features(images)
    assert dense.shape == (3, 512, 14, 26) and dense.dtype == torch.float32 and dense.is_cuda
    norms = dense.double().norm(dim=1)
    assert bool(((norms - 1).abs() <= _unit_norm_bound(U16, 512)).all())
    text = teacher.class_embeddings()  # normalised in float32
    assert text.shape == (16, 512) and bool(((text.double().norm(dim=1) - 1).abs() <= _unit_norm_bound(U32, 512)).all())


def _unit_norm_bound(u: float, dim: int) -> float:
    """How far from 1 the norm of ``F.normalize(x)`` [dim] computed in a float type of unit roundoff
    ``u`` can be. The norm is accumulated in float32 (also for float16: CUDA reductions accumulate in
    float) within gamma(dim + 2) (dim squares and sums, the square root), rounded to the type (u),
    and each quotient rounded once (u): the result's norm lies in
    [(1 - u) / ((1 + u)(1 + g)), (1 + u) / ((1 - u)(1 - g))]. The float64 norm taken here adds gamma(dim)."""
    g = gamma(dim + 2, torch.float32)
    return (1 + u) / ((1 - u) ** 2 * (1 - g)) - 1 + gamma(dim)


# -------------------------------------------------------------------------------------------- DDP
def test_ddp_one_process_on_nccl(tmp_path):
    """The student under DistributedDataParallel on NCCL (one process): every gradient bucket goes
    through NCCL's all-reduce and comes back unchanged (the mean of one), and the trainer's stop
    flag all-reduce and barrier run."""
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel

    from relviz.models import build_minkunet

    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = build_minkunet("MinkUNet14", out_channels=16, width=0.125).to(CUDA).train()
        ddp = DistributedDataParallel(model, device_ids=[CUDA.index or 0])
        buckets = []

        def record(state, bucket):  # DDP's default all-reduce, keeping each bucket before and after
            before = bucket.buffer().clone()

            def keep(fut):
                buckets.append((before, fut.value().clone()))
                return fut.value()

            return default_hooks.allreduce_hook(state, bucket).then(keep)

        ddp.register_comm_hook(None, record)
        gen = torch.Generator().manual_seed(1)
        coords = torch.unique(torch.randint(0, 40, (3000, 3), generator=gen), dim=0)
        coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.long), coords], 1)
        x = SparseTensor(torch.randn(len(coords), 1, generator=gen).to(CUDA), coords.to(CUDA))
        # float32, no autocast: this test is about DDP and NCCL (autocast has its own test above)
        ddp(x).features.square().sum().backward()
        torch.cuda.synchronize()
        assert buckets and all(torch.equal(before, after) for before, after in buckets)
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        flag = torch.tensor([1.0], device=CUDA)  # Trainer._agree_to_stop
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        assert flag.item() == 1.0
        dist.barrier()
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------ written on GPU, read on CPU
def test_teacher_cache_written_on_cuda_is_read_on_cpu(dataset, tmp_path):
    """A teacher's identity (the key of its feature cache) is the same on both devices, so features
    cached by a GPU run are found by the CPU (the app): they read back as the float16 of the CUDA
    features, exactly."""
    from relviz.data import NuScenesLidarSeg
    from relviz.eval.features import camera_images
    from relviz.teacher import FeatureCache, load_teacher

    spec = TeacherSpec("ViT-B-16", str(_random_vit_b16(tmp_path)))
    on_gpu, on_cpu = load_teacher(spec, device="cuda"), load_teacher(spec, device="cpu")
    assert on_gpu.identity == on_cpu.identity
    ds = NuScenesLidarSeg(dataset, **{k: v for k, v in _tiny(dataset).to_dict().items() if k in ("version", "split")},
                          load_images=False, index_cache=tmp_path / "index")
    tokens = [cam["token"] for cam in ds.keyframes[0]["cameras"].values()][:2]
    # computed on the GPU and written (float16), returned as what was written
    written = FeatureCache(tmp_path / "cache", on_gpu.identity).features(
        on_gpu, tokens, lambda idx: camera_images(ds, [tokens[i] for i in idx]))
    assert written.shape == (2, 512, 14, 26) and not written.is_cuda
    reader = FeatureCache(tmp_path / "cache", on_cpu.identity)
    for i, token in enumerate(tokens):
        read = reader.get(token)
        assert read is not None and read.dtype == np.float16
        assert torch.equal(torch.from_numpy(np.array(read)).float(), written[i])


def test_run_trained_on_cuda_resumes_on_cpu(dataset, tmp_path):
    """Two steps on CUDA (weights, optimizer and loss-scale state checkpointed from the GPU), then the
    same run folder resumed on the CPU for a third: it starts from the GPU's weights exactly and finishes."""
    from relviz.models.checkpoint import load_state_dict
    from relviz.train import RunDir, Trainer, read_events

    layout = RunDir(tmp_path / "run")
    cfg = _tiny(dataset, max_steps=2, checkpoint_every=1)
    assert Trainer(cfg, layout.path, load_settings()).run()["status"] == "succeeded"
    saved, meta = load_state_dict(layout.last)
    assert meta["step"] == 2 and all(not v.is_cuda for v in saved.values())
    resumed = Trainer(cfg.with_overrides(device="cpu", max_steps=3), layout.path, load_settings())
    loaded = {}
    resumed.on_finish = lambda trainer, checkpoint: loaded.update(step=trainer._step)
    original_resume = resumed._try_resume

    def resume_and_compare() -> int:  # the CPU model right after loading the GPU's checkpoint
        step = original_resume()
        loaded["equal"] = all(torch.equal(v, saved[k]) for k, v in resumed.model.state_dict().items())
        return step

    resumed._try_resume = resume_and_compare
    assert resumed.run()["status"] == "succeeded" and loaded == {"equal": True, "step": 3}
    events, _ = read_events(layout.events)
    assert any(e["event"] == "resumed" and e["step"] == 2 for e in events)

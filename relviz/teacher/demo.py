"""The demo teacher: a small open_clip model that relviz trains on the synthetic camera images.

No CLIP weights can be downloaded here, so the embedded demo needs a teacher of its own. It is a
custom open_clip config (``relviz-demo-vit``: a 4-layer ViT-16 image tower and a 2-layer text tower,
about 4 M parameters) registered with open_clip. It is trained so that its dense features, taken by the
same MaskCLIP value path as CLIP's, match the text embeddings of the class prompts at every patch:
each step draws one prompt per class (a detail name under a template) and applies a per-patch
cross-entropy against the patch's class mix from the synthetic per-pixel class images, with classes
weighted by inverse square-root frequency so that small objects are learnt too. The
result segments the synthetic images by text, as a real CLIP teacher does real images.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from relviz.data.classes import merge_labels
from relviz.data.nuscenes import DatasetError
from relviz.segmentation import confusion_matrix, iou_per_class, mean_iou
from relviz.teacher.base import DEMO_MODEL
from relviz.teacher.clip import ClipTeacher, TeacherWeightsError, dense_maskclip, teacher_identity, weights_identity
from relviz.teacher.prompts import DEFAULT_AGGREGATION, DETAIL_PROMPTS, TEMPLATES
from relviz.teacher.text import TextClassifier, text_classifier

CONFIG_DIR = Path(__file__).parent / "configs"
REPO_CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints" / "demo"
DEMO_TEACHER_PATH = REPO_CHECKPOINTS / "teacher.safetensors"
INPUT_SIZE = (256, 448)


def register_demo_config() -> None:
    """Make ``relviz-demo-vit`` known to open_clip (idempotent)."""
    import open_clip

    if DEMO_MODEL not in open_clip.list_models():
        open_clip.add_model_config(str(CONFIG_DIR))


def _camera_images(dataset, split: str, with_classes: bool = True):
    """(uint8 images [N, H, W, 3], merged class maps [N, H, W]) of every camera of a split."""
    from relviz.data import CAMERAS, open_nuscenes, split_scenes

    nusc = open_nuscenes(dataset)
    scenes = set(split_scenes(nusc, split))
    images, classes = [], []
    for sample in nusc.sample:
        if nusc.get("scene", sample["scene_token"])["name"] not in scenes:
            continue
        for cam in CAMERAS:
            sd = nusc.get("sample_data", sample["data"][cam])
            path = Path(nusc.dataroot) / sd["filename"]
            images.append(np.asarray(Image.open(path).convert("RGB")))
            if with_classes:
                cls_path = path.with_name(path.name.replace(".jpg", ".class.png"))
                if not cls_path.is_file():
                    raise DatasetError(f"{cls_path}: per-pixel class image missing; the demo teacher trains on "
                                            f"the synthetic dataset, which writes one beside every JPEG")
                classes.append(merge_labels(np.asarray(Image.open(cls_path))))
    return np.stack(images), (np.stack(classes) if with_classes else None)


def _patch_targets(classes: np.ndarray, grid: tuple[int, int]) -> torch.Tensor:
    """Class mix of each patch [N, 17, gh, gw] (fractions of its pixels; index 0 = ignore/sky), so
    that patches straddling a small object still teach it."""
    t = torch.from_numpy(classes.astype(np.int64))
    gh, gw = grid
    t = F.interpolate(t[:, None].float(), size=(gh * 8, gw * 8), mode="nearest")[:, 0].long()
    onehot = F.one_hot(t, 17).permute(0, 3, 1, 2).float()
    return F.avg_pool2d(onehot, 8)


def _random_prompts(gen: torch.Generator) -> list[str]:
    prompts = []
    for details in DETAIL_PROMPTS.values():
        d = details[int(torch.randint(len(details), (1,), generator=gen))]
        t = TEMPLATES[int(torch.randint(len(TEMPLATES), (1,), generator=gen))]
        prompts.append(t.format(d))
    return prompts


def pixel_predictions(teacher: ClipTeacher, images: np.ndarray, text: torch.Tensor | TextClassifier,
                      batch: int = 16) -> np.ndarray:
    """Per-pixel class (1..16) of uint8 images [N, H, W, 3] by text: dense logits against the text
    rows upsampled bilinearly, the argmax row's class. ``text``: a :class:`TextClassifier` (its
    prompt aggregation), or [16, D] rows of the classes in order."""
    rows, class_of_row = (text.embeddings, text.class_of_row) if isinstance(text, TextClassifier) else \
        (text, torch.arange(1, len(text) + 1))
    out = []
    for s in range(0, len(images), batch):
        dense = teacher.image_features(images[s:s + batch])
        logits = torch.einsum("bdhw,cd->bchw", dense, rows.to(dense))
        logits = F.interpolate(logits, size=images.shape[1:3], mode="bilinear", align_corners=False)
        out.append(class_of_row.to(logits.device)[logits.argmax(1)].to(torch.uint8).cpu().numpy())
    return np.concatenate(out)


def score_2d(teacher: ClipTeacher, images: np.ndarray, classes: np.ndarray,
             aggregation: str = DEFAULT_AGGREGATION) -> dict:
    """2D zero-shot pixel scores of the class list under the prompt ``aggregation``: mIoU, per-class
    IoU and ``prompt_aggregation``. (The shipped demo teacher's recorded scores predate issue 26 and
    name no aggregation: they were made with ``"mean"``.)"""
    pred = pixel_predictions(teacher, images, text_classifier(teacher, aggregation))
    cm = confusion_matrix(pred, classes)
    from relviz.data.classes import CLASSES

    iou = iou_per_class(cm)
    return {"miou": mean_iou(cm), "per_class_iou": {CLASSES[c]: (None if np.isnan(iou[c]) else float(iou[c]))
                                                    for c in range(1, 17)}, "prompt_aggregation": aggregation}


def fixed_image() -> tuple[np.ndarray, np.ndarray]:
    """The fixed check image: mini_val's first scene, front camera, 1 s into the drive (800x450)."""
    from relviz.data.synthetic import SynthConfig, render_view

    rgb, fine = render_view(SynthConfig(), scene_index=8, camera="CAM_FRONT", time_s=1.0)
    return rgb, merge_labels(fine)


def train_demo_teacher(dataset: str | Path, out: str | Path = DEMO_TEACHER_PATH, minutes: float = 12.0,
                       max_steps: int = 900, batch: int = 12, lr: float = 3e-3, seed: int = 0,
                       log=print) -> dict:
    """Train, score on mini_val and the fixed image, and save the demo teacher. Returns its metadata."""
    import open_clip

    from relviz.models.checkpoint import save_checkpoint

    register_demo_config()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = open_clip.create_model(DEMO_MODEL, pretrained=None)
    teacher = ClipTeacher(DEMO_MODEL, pretrained=None, input_size=INPUT_SIZE, model=model)
    images, classes = _camera_images(dataset, "mini_train")
    pixels = teacher.preprocess(images).float()  # [N, 3, 224, 416], computed once
    targets = _patch_targets(classes, teacher.grid_size)
    # rare classes (buses, trailers, cones) cover few patches: weight classes by inverse sqrt frequency
    freq = targets[:, 1:].sum(dim=(0, 2, 3))
    class_weight = (freq.clamp_min(1) / freq.mean()).pow(-0.5).clamp(0.2, 5.0).view(1, 16, 1, 1)
    log(f"demo teacher: {len(images)} training images, grid {teacher.grid_size}")
    model.train().requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    start = time.perf_counter()
    step, history = 0, []
    budget = minutes * 60
    while step < max_steps and time.perf_counter() - start < budget:
        idx = torch.randint(len(pixels), (batch,), generator=gen)
        x, y = pixels[idx], targets[idx]
        flip = torch.rand(batch, generator=gen) < 0.5
        x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
        dense = dense_maskclip(model.visual, x)  # [B, D, gh, gw]
        text = F.normalize(model.encode_text(teacher.tokenizer(_random_prompts(gen))), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * torch.einsum("bdhw,cd->bchw", dense, text)
        labelled = y[:, 1:].sum(1)  # fraction of the patch that is not ignore/sky
        soft = y[:, 1:] / labelled.clamp_min(1e-6)[:, None]
        loss = -(class_weight * soft * logits.log_softmax(1)).sum(1)[labelled > 0.3].mean()
        opt.zero_grad()
        loss.backward()
        # warm-up, then cosine decay over the steps (or the time budget, whichever ends first)
        frac = max(step / max_steps, (time.perf_counter() - start) / budget)
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + np.cos(np.pi * min(1.0, frac)))
        opt.step()
        step += 1
        history.append(float(loss.detach()))
        if step % 50 == 0:
            log(f"step {step}  loss {np.mean(history[-50:]):.3f}  {time.perf_counter() - start:.0f} s")
    train_s = time.perf_counter() - start
    model.eval().requires_grad_(False)
    val_images, val_classes = _camera_images(dataset, "mini_val")
    val = score_2d(teacher, val_images, val_classes)
    fixed_rgb, fixed_cls = fixed_image()
    fixed = score_2d(teacher, fixed_rgb[None], fixed_cls[None])
    log(f"demo teacher: mini_val pixel mIoU {val['miou']:.3f}, fixed image {fixed['miou']:.4f}")
    meta = {
        "kind": "teacher", "model_name": DEMO_MODEL,
        "model_config": json.loads((CONFIG_DIR / f"{DEMO_MODEL}.json").read_text()),
        "input_size": list(INPUT_SIZE), "dense_path": "maskclip-value",
        # the dataset by name, not this machine's path
        "training": {"dataset": Path(dataset).name, "split": "mini_train", "images": len(images), "steps": step,
                     "batch": batch, "lr": lr, "seed": seed, "train_seconds": round(train_s, 1),
                     "final_loss": float(np.mean(history[-50:]))},
        "scores": {"mini_val_pixel_miou": val["miou"], "mini_val_per_class_iou": val["per_class_iou"],
                   "fixed_image_pixel_miou": fixed["miou"], "prompt_aggregation": val["prompt_aggregation"]},
    }
    half = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_checkpoint(out, half, meta)
    return meta


def load_demo_teacher(path: str | Path = DEMO_TEACHER_PATH, device: str | torch.device = "cpu") -> ClipTeacher:
    """The shipped (or a retrained) demo teacher as a :class:`ClipTeacher`."""
    import open_clip

    from relviz.models.checkpoint import CheckpointError, load_into, load_state_dict

    path = Path(path)
    if not path.is_file():
        raise TeacherWeightsError(f"demo teacher {path} not found; train it with `relviz teacher train --dataset DIR`")
    state, meta = load_state_dict(path)
    if meta.get("kind") != "teacher":
        raise CheckpointError(f"{path}: not a teacher checkpoint (kind={meta.get('kind')!r})")
    register_demo_config()  # for the tokenizer
    # build from the configuration stored with the weights, not from today's config file
    cfg = json.loads(json.dumps(meta["model_config"]))
    cfg["vision_cfg"]["image_size"] = list(meta["input_size"])
    model = open_clip.CLIP(**cfg)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    load_into(model, state, source=str(path))
    teacher = ClipTeacher(meta["model_name"], pretrained=None, input_size=tuple(meta["input_size"]), device=device,
                          model=model, identity=weights_identity(meta["model_name"], state))
    teacher.metadata = meta
    return teacher


def demo_teacher_identity(path: str | Path = DEMO_TEACHER_PATH) -> str:
    """The identity :func:`load_demo_teacher` gives the teacher in ``path``, read from the file alone
    (without importing open_clip or building the model), remembered per file version."""
    st = Path(path).stat()
    return _file_identity(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _file_identity(path: str, size: int, mtime_ns: int) -> str:
    from relviz.models.checkpoint import CheckpointError, load_state_dict

    state, meta = load_state_dict(path)
    if meta.get("kind") != "teacher":
        raise CheckpointError(f"{path}: not a teacher checkpoint (kind={meta.get('kind')!r})")
    return teacher_identity(weights_identity(meta["model_name"], state), meta["input_size"])

"""What every teacher offers the rest of relviz: images in, dense features out.

A teacher has ``identity`` (the key of its feature caches), ``dim``, ``input_size`` (height, width)
and ``patch_size`` (so ``grid_size``), ``preprocess`` (uint8 images -> normalised pixels),
``dense_features`` (pixels -> [B, D, h, w]) and ``image_features`` (both); ``has_text`` says whether
it also has ``encode_text`` / ``class_embeddings`` / ``detail_embeddings``. Training, the feature
caches and structure use only the image side, so any teacher works there.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod

import numpy as np
import torch
import torch.nn.functional as F

from relviz.errors import InputError, RelvizError

DEMO_MODEL = "relviz-demo-vit"  # the demo teacher's open_clip config name (relviz/teacher/configs/)


class TeacherWeightsError(RelvizError, FileNotFoundError):
    """The teacher's weights cannot be found or loaded; the message says how to provide them."""


def check_input_size(input_size: tuple[int, int], patch_size: tuple[int, int], name: str) -> tuple[int, int]:
    """``input_size`` (height, width), refused unless both are whole multiples of the patch: a
    remainder would be cut off by the patch embedding, and the grid would no longer cover the image
    that :func:`~relviz.teacher.clip.sample_points` assumes it covers."""
    h, w = int(input_size[0]), int(input_size[1])
    if h < patch_size[0] or w < patch_size[1] or h % patch_size[0] or w % patch_size[1]:
        raise InputError(f"teacher {name}: input size {h}x{w} must be a positive multiple of its "
                         f"{patch_size[0]}x{patch_size[1]}-pixel patches (e.g. "
                         f"{max(1, round(h / patch_size[0])) * patch_size[0]}x"
                         f"{max(1, round(w / patch_size[1])) * patch_size[1]})")
    return h, w


def require_text(teacher, what: str) -> None:
    """Refuse ``what`` (e.g. "zero-shot segmentation") with a teacher that has no text tower
    (DINOv2): raises InputError naming the teacher and the reason. ``teacher``: a teacher, or a
    :class:`~relviz.teacher.registry.TeacherEntry`."""
    if not getattr(teacher, "has_text", True):
        name = getattr(teacher, "name", None) or getattr(teacher, "model_name", None) or type(teacher).__name__
        raise InputError(f"{what} needs class text embeddings, and teacher {name} has no text tower "
                         f"(it is an image-only model); use a text-aligned teacher (CLIP or SigLIP) for {what}. "
                         f"Training, feature structure and few-shot work with any teacher")


class ImageTeacher(ABC):
    """The image side shared by every teacher. Subclasses set ``model``, ``name``, ``input_size``,
    ``patch_size``, ``mean``/``std`` [1, 3, 1, 1], ``device``, ``dim``, ``dense_path`` and implement
    :meth:`dense_features`."""

    has_text = False
    dense_path = ""

    def _set_model(self, model, entry) -> None:
        """The frozen model on the teacher's device (half precision on CUDA) with the entry's
        normalisation; the lock that lets several app sessions share it."""
        self.model = model.eval().requires_grad_(False)
        if self.device.type == "cuda":
            self.model = self.model.half()
        self.model.to(self.device)
        self.mean = torch.tensor(entry.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(entry.std).view(1, 3, 1, 1)
        self._init_lock()

    def _init_lock(self) -> None:
        self._lock = threading.Lock()  # one teacher may serve several app sessions

    def _init_entry(self, entry, pretrained: str | None, device, random_init: bool,
                    input_size: tuple[int, int] | None, model, model_name: str, weights: str) -> None:
        """The fields every registered teacher sets from its entry; refuses to build without weights
        unless ``random_init`` (never random by accident). ``weights``: what to set, in words."""
        if model is None and pretrained is None and not random_init:
            raise TeacherWeightsError(f"teacher {entry.name} has no weights: set teacher_pretrained to {weights} "
                                      f"(random weights only with random_init=True)")
        self.entry, self.name, self.model_name, self.pretrained = entry, entry.name, model_name, pretrained
        self.random_init = model is None and pretrained is None  # said wherever its figures are shown
        self.dense_path = entry.dense_path
        self.patch_size = (entry.patch, entry.patch)
        self.input_size = check_input_size(input_size or entry.input_size, self.patch_size, entry.name)
        self.device = torch.device(device)

    @property
    def grid_size(self) -> tuple[int, int]:
        """(h, w): the patch grid of the dense features at ``input_size``."""
        return self.input_size[0] // self.patch_size[0], self.input_size[1] // self.patch_size[1]

    def preprocess(self, images) -> torch.Tensor:
        """uint8 images [B, H, W, 3] (numpy or tensor) -> normalised float [B, 3, h, w] at input size
        (the whole image resized, so a non-square camera image keeps its full field of view)."""
        x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise InputError(f"images: expected uint8 [B, H, W, 3], got {tuple(x.shape)}")
        x = x.to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        if tuple(x.shape[-2:]) != tuple(self.input_size):
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        return ((x - self.mean.to(x)) / self.std.to(x)).to(next(self.model.parameters()).dtype)

    @abstractmethod
    def dense_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Dense features [B, D, h, w] of preprocessed pixels [B, 3, H, W] (each teacher's own path)."""

    def image_features(self, images) -> torch.Tensor:
        """uint8 images [B, H, W, 3] -> L2-normalised dense features [B, D, h/p, w/p] (float32)."""
        return self.dense_features(self.preprocess(images)).float()

    # a text-less teacher refuses the text side with the reason (a CLIP or SigLIP teacher overrides these)
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        require_text(self, "text encoding")

    def class_embeddings(self, *args, **kwargs) -> torch.Tensor:
        require_text(self, "class text embeddings")

    def detail_embeddings(self, *args, **kwargs) -> torch.Tensor:
        require_text(self, "detail text embeddings")


__all__ = ["ImageTeacher", "TeacherWeightsError", "check_input_size", "require_text"]

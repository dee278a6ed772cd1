"""Training configuration: one dataclass, loadable from JSON/TOML and flags, validated up front;
presets (published settings, ``relviz/train/presets/<name>.toml``) and the layers a config is built
from (docs/presets.md)."""

from __future__ import annotations

import functools
import inspect
import json
import math
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

import torch

from relviz.config import Settings, TeacherSpec
from relviz.errors import RelvizError, shorten
from relviz.losses import LOSSES, get_loss
from relviz.models.minkunet import ARCHITECTURES


class TrainConfigError(RelvizError):
    """A training configuration that cannot run; the message names the field and what is expected."""


PRECISIONS = ("float32", "float64")
TEACHER_FEATURES = ("auto", "cache", "online")


@dataclass(frozen=True)
class TrainConfig:
    loss: str = "relational"
    dataset: str = "synthetic-mini"  # folder under <workspace>/datasets, or a dataroot path
    version: str = "v1.0-mini"
    split: str = "mini_train"
    val_split: str = "mini_val"
    teacher: str = "demo"  # "demo" or an open_clip model name
    teacher_pretrained: str | None = None
    arch: str = "MinkUNet14"
    width: float = 0.25
    epochs: int = 10
    batch: int = 2
    accumulate: int = 1  # micro-batches per optimiser step (one per rank under DDP)
    pairs: int = 4096  # point-pixel pairs sampled per micro-batch
    lr: float = 0.5  # SLidR's SGD settings
    momentum: float = 0.9
    dampening: float = 0.1
    weight_decay: float = 1e-4
    temperature: float = 0.07
    intra_weight: float = 1.0
    voxel_size: float = 0.1
    cylindrical: bool = True
    augment: bool = True  # rotation about z, flips of x and y (SLidR's transforms_clouds)
    image_augment: bool = False  # resized crops and flips of the camera images, pairs moved along (teacher online)
    drop_cuboids: bool = False  # drop one random box of points per keyframe (SLidR's DropCuboids)
    seed: int = 0
    val_every: int = 0  # steps; 0: at the end of every epoch
    val_scenes: int = 2  # val scenes for U, T, G and zero-shot (drawn with seed 0: the same for every run)
    val_per_scene: int = 2  # keyframes spread over each of them
    val_per_class: int = 500
    checkpoint_every: int = 0  # steps; 0: at the end of every epoch
    log_every: int = 5
    max_steps: int = 0  # 0: epochs decide
    device: str = "auto"
    teacher_features: str = "auto"  # "cache" (on disk before step 0) | "online" (in the step) | auto: online on CUDA
    workers: int = -1  # DataLoader worker processes; -1: none on the CPU, the cores but one on a GPU
    precision: str = "float32"  # float64: exact-arithmetic checks (DDP and resume parity), CPU only

    def validate(self) -> "TrainConfig":
        def bad(field: str, msg: str):
            raise TrainConfigError(f"config field '{field}': {msg}")

        if self.loss not in LOSSES:
            bad("loss", f"unknown loss {self.loss!r}; expected one of {', '.join(LOSSES)}")
        if self.arch not in ARCHITECTURES:
            bad("arch", f"unknown architecture {self.arch!r}; expected one of {', '.join(ARCHITECTURES)}")
        for name in ("lr", "width", "voxel_size", "temperature"):
            if not getattr(self, name) > 0:
                bad(name, f"must be > 0, got {getattr(self, name)}")
        for name in ("epochs", "batch", "accumulate", "pairs", "val_scenes", "val_per_scene", "val_per_class",
                     "log_every"):
            if getattr(self, name) < 1:
                bad(name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("momentum", "dampening"):
            if not 0 <= getattr(self, name) < 1:
                bad(name, f"must be in [0, 1), got {getattr(self, name)}")
        for name in ("weight_decay", "intra_weight", "val_every", "checkpoint_every", "max_steps"):
            if getattr(self, name) < 0:
                bad(name, f"must be >= 0, got {getattr(self, name)}")
        if self.device not in ("auto", "cpu", "cuda"):
            bad("device", f"expected auto, cpu or cuda, got {self.device!r}")
        if self.teacher_features not in TEACHER_FEATURES:
            bad("teacher_features", f"expected one of {', '.join(TEACHER_FEATURES)}, got {self.teacher_features!r}")
        if self.drop_cuboids and not self.augment:
            bad("drop_cuboids", "is one of the point augmentations: set augment = true as well")
        if self.image_augment and self.teacher_features == "cache":
            bad("image_augment", "needs the teacher inside the step (teacher_features = 'online' or 'auto'): cached "
                "teacher features are of the whole, unflipped image")
        if self.workers < -1:
            bad("workers", f"must be >= 0, or -1 for auto, got {self.workers}")
        if self.precision not in PRECISIONS:
            bad("precision", f"expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.precision == "float64" and self.device == "cuda":
            bad("precision", "float64 is for exact-arithmetic checks on the CPU; use float32 with device cuda")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def val_set(self):
        """The validation keyframes (:class:`relviz.eval.selection.EvalSet`): ``val_scenes`` scenes x
        ``val_per_scene`` keyframes spread over each, drawn with seed 0 for every run."""
        from relviz.eval.selection import EvalSet

        return EvalSet(self.val_scenes, self.val_per_scene, 0)

    @property
    def teacher_spec(self) -> TeacherSpec:
        return TeacherSpec(self.teacher, self.teacher_pretrained)

    @classmethod
    def from_settings(cls, settings: Settings, preset: str | None = None, **overrides) -> "TrainConfig":
        """The one way a surface builds a config, in layers (docs/presets.md): defaults < the
        ``preset`` (a file of relviz/train/presets/) < the settings (dataset and device always; the
        teacher with its weights when the settings name one, i.e. differ from the built-in demo
        teacher) < ``overrides`` (a config file's table, flags; None means unset). A teacher comes
        with the weights of the layer that names it (or none), never with the weights a lower layer
        gives another teacher. Validated."""
        site: dict[str, Any] = {"dataset": settings.dataset, "device": settings.device}
        if settings.teacher_spec != TeacherSpec():  # the settings name a teacher: it and its weights
            site.update(teacher=settings.teacher, teacher_pretrained=settings.teacher_pretrained)
        given = {k: v for k, v in overrides.items() if v is not None}
        return from_dict(merge_layers(read_preset(preset) if preset else {}, site, given))

    def loss_function(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The registered loss ``loss(k [N, D], q [N, D])``, given the config fields its signature
        names (temperature, intra_weight, ...)."""
        fn = get_loss(self.loss)
        options = {name: getattr(self, name) for name in inspect.signature(fn).parameters
                   if name not in ("k", "q") and name in _FIELDS}
        return functools.partial(fn, **options)

    def steps(self, n_keyframes: int, world: int = 1) -> tuple[int, int]:
        """(steps per epoch, total steps) of a train split of ``n_keyframes`` on ``world`` processes:
        every step takes ``batch * accumulate * world`` keyframes; the last partial batch is dropped."""
        per_epoch = max(1, n_keyframes // (self.batch * self.accumulate * world))
        return per_epoch, self.max_steps or self.epochs * per_epoch

    def online_teacher(self, device: torch.device) -> bool:
        """Whether the teacher runs inside the step (``teacher_features``; auto: on CUDA, where it is
        cheap beside the student and a cache of a large split would take hours and tens of GB, and
        wherever ``image_augment`` asks for it: a crop of the image has no cached features)."""
        auto = self.teacher_features == "auto" and (device.type == "cuda" or self.image_augment)
        return self.teacher_features == "online" or auto

    def resumed_on(self, world: int, saved: dict[str, Any], saved_world: int, source: str) -> "TrainConfig":
        """This config on ``world`` processes continuing a run saved by ``saved_world`` processes with
        the fields ``saved``: ``accumulate`` converted to keep the run's global batch (``batch *
        accumulate * world`` keyframes per step), so its step counter, learning-rate schedule and sample
        order continue unchanged and micro-batch ``rank * accumulate + micro`` is the same keyframes
        as before. A process count (or batch) that cannot keep it is refused, naming the counts that can."""
        batch, accumulate = int(saved.get("batch", self.batch)), int(saved.get("accumulate", self.accumulate))
        per_step = batch * accumulate * saved_world
        if batch != self.batch:
            raise TrainConfigError(
                f"{source}: saved with batch {batch} (x accumulate {accumulate} on {saved_world} process(es)); this "
                f"config's batch {self.batch} would change what a step is, so the run could not continue where it "
                f"stopped. Resume with batch {batch}, or start a new run folder")
        if per_step % (batch * world):
            fits = [w for w in range(1, per_step // batch + 1) if (per_step // batch) % w == 0]
            raise TrainConfigError(
                f"{source}: saved by {saved_world} process(es) with batch {batch} x accumulate {accumulate} = "
                f"{per_step} keyframes per step; on {world} process(es) no whole accumulate keeps that, so the run "
                f"could not continue where it stopped. Resume on {', '.join(map(str, fits))} process(es), or start "
                f"a new run folder")
        return self.with_overrides(accumulate=per_step // (batch * world))

    def with_overrides(self, **overrides) -> "TrainConfig":
        return from_dict({**self.to_dict(), **{k: v for k, v in overrides.items() if v is not None}})


_FIELDS = {f.name: f for f in fields(TrainConfig)}


def _finite(v: float | int) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


def from_dict(d: dict[str, Any], source: str = "config") -> TrainConfig:
    if "val_samples" in d:
        raise TrainConfigError(f"{source}: field 'val_samples' (the first n val keyframes) was replaced by "
                               f"'val_scenes' and 'val_per_scene' (keyframes spread over scenes)")
    unknown = sorted(set(d) - set(_FIELDS))
    if unknown:
        raise TrainConfigError(f"{source}: unknown field(s) {', '.join(shorten(u, 40) for u in unknown[:5])}; "
                               f"known: {', '.join(_FIELDS)}")
    cfg = TrainConfig()
    values = {}
    for k, v in d.items():
        default = getattr(cfg, k)
        if isinstance(default, bool) and not isinstance(v, bool):
            raise TrainConfigError(f"{source}: field '{k}' must be true or false, got {v!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TrainConfigError(f"{source}: field '{k}' must be a number, got {shorten(v)}")
            if not _finite(v):
                raise TrainConfigError(f"{source}: field '{k}' must be a finite number, got {v}")
            if isinstance(default, int) and not float(v).is_integer():
                raise TrainConfigError(f"{source}: field '{k}' must be a whole number, got {v}")
            v = type(default)(v)
        if isinstance(default, str) and k != "teacher_pretrained" and not isinstance(v, str):
            raise TrainConfigError(f"{source}: field '{k}' must be a string, got {shorten(v)}")
        if k == "teacher_pretrained" and v is not None and not isinstance(v, str):
            raise TrainConfigError(f"{source}: field '{k}' must be a string or null, got {shorten(v)}")
        values[k] = v
    return replace(cfg, **values).validate()


def read_config_table(path: str | Path) -> dict[str, Any]:
    """The fields a .json or .toml config file sets (checked by :func:`from_dict` when used)."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as e:
        raise TrainConfigError(f"config file {path}: cannot be read ({e.strerror or e})") from e
    try:
        data = tomllib.loads(text.decode()) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise TrainConfigError(f"config file {path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'} ({e})") from e
    if not isinstance(data, dict):
        raise TrainConfigError(f"config file {path}: expected a table of settings")
    from_dict(data, source=f"config file {path}")  # name the file in any error
    return data


def load_config(path: str | Path) -> TrainConfig:
    """A TrainConfig from a .json or .toml file (a run folder's config.json: complete as written)."""
    return from_dict(read_config_table(path), source=f"config file {path}")


# --------------------------------------------------------------------------------------------- presets
PRESETS_DIR = Path(__file__).parent / "presets"
# where the data is and what runs it are the machine's settings, never a preset's
SITE_FIELDS = ("dataset", "device")


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def read_preset(name: str) -> dict[str, Any]:
    """The fields preset ``name`` (``relviz/train/presets/<name>.toml``) sets, checked against the
    config's fields and values; a preset never sets :data:`SITE_FIELDS`."""
    names = preset_names()
    if name not in names:
        raise TrainConfigError(f"unknown preset {shorten(name, 40)}; expected one of {', '.join(names)}")
    path = PRESETS_DIR / f"{name}.toml"
    table = read_config_table(path)
    site = [k for k in SITE_FIELDS if k in table]
    if site:
        raise TrainConfigError(f"preset file {path}: sets {', '.join(site)}, which are the machine's settings "
                               f"(relviz.toml, RELVIZ_*) or flags, never a preset's")
    return table


def merge_layers(*layers: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``layers`` (lowest first), a higher layer's value winning; a layer that names
    another teacher than the one below drops the weights (``teacher_pretrained``) below."""
    out: dict[str, Any] = {}
    for layer in layers:
        if "teacher" in layer and layer["teacher"] != out.get("teacher", TrainConfig.teacher):
            out.pop("teacher_pretrained", None)
        out.update(layer)
    return out

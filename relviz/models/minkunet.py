"""MinkUNet students (Res16UNet family), with SLidR's / MinkowskiEngine's parameter names.

``MinkUNet34`` is SLidR's ``Res16UNet34C`` (about 37.8 M parameters at width 1, in=1, out=64):
a k=3 stem, four stride-2 k=2 encoder convolutions each followed by BasicBlocks, four stride-2 k=2
transposed convolutions each followed by a skip concatenation and BasicBlocks, and a 1x1 ``final``
with bias. ``width`` scales every channel count for small demo students (key names are unchanged).
The output is L2-normalised when ``normalize=True`` (distillation students).

``MinkUNet18A`` is OpenScene's 3D-distill network (pengsongyou/openscene ``models/mink_unet.py``,
the definition of MinkowskiEngine's ``examples/minkunet.py`` with PLANES of its "A" variant): a
k=5 stem, MinkowskiBatchNorm's momentum 0.1 everywhere, and a ``final`` 1x1 convolution without
bias (OpenScene comments ``has_bias=True`` out and ME's default is ``bias=False``; ME's example has
one). OpenScene feeds nuScenes lidar as constant ones [V, 3] (``input_color: False``), which
``ones_input`` reproduces whatever features the caller gives (docs/openscene.md).

Layers come from a backend: the pure-PyTorch :mod:`relviz.sparse` (default) or MinkowskiEngine when
it is installed and chosen; both share parameter names and layouts, so weights move freely.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch.nn as nn
import torch.nn.functional as F

from relviz.errors import InputError
from relviz.models.backends import SparseBackend, get_backend
from relviz.sparse import SparseTensor


@dataclass(frozen=True)
class MinkUNetConfig:
    """Architecture of a MinkUNet; stored in checkpoints so a model can be rebuilt exactly."""

    layers: tuple[int, ...]
    planes: tuple[int, ...]
    in_channels: int = 1
    out_channels: int = 64
    init_dim: int = 32
    stem_kernel: int = 3
    width: float = 1.0
    bn_momentum: float = 0.05
    normalize: bool = True
    final_bias: bool = True  # False for OpenScene's MinkUNet18A (its ``final`` has no bias)
    ones_input: bool = False  # True: input features replaced by ones [N, in_channels] (OpenScene's recipe)

    def scaled(self, c: int) -> int:
        return max(1, int(round(c * self.width)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MinkUNetConfig":
        d = dict(d)
        d["layers"], d["planes"] = tuple(d["layers"]), tuple(d["planes"])
        return cls(**d)


# PointContrast/SLidR definitions
ARCHITECTURES = {
    "MinkUNet14": dict(layers=(1, 1, 1, 1, 1, 1, 1, 1), planes=(32, 64, 128, 256, 128, 128, 96, 96)),
    "MinkUNet18": dict(layers=(2, 2, 2, 2, 2, 2, 2, 2), planes=(32, 64, 128, 256, 128, 128, 96, 96)),
    "MinkUNet34": dict(layers=(2, 3, 4, 6, 2, 2, 2, 2), planes=(32, 64, 128, 256, 256, 128, 96, 96)),
    # OpenScene's net3d (models/mink_unet.py: MinkUNet18A, kernel_size=5 stem, final without bias)
    "MinkUNet18A": dict(layers=(2, 2, 2, 2, 2, 2, 2, 2), planes=(32, 64, 128, 256, 128, 128, 96, 96),
                        stem_kernel=5, bn_momentum=0.1, final_bias=False),
}


class BasicBlock(nn.Module):
    """Two k=3 convolutions with batch norm and a residual (1x1 conv + BN when channels change)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, backend: SparseBackend, downsample: nn.Module | None = None,
                 bn_momentum: float = 0.1):
        super().__init__()
        self.conv1 = backend.conv(inplanes, planes, kernel_size=3, stride=1)
        self.norm1 = backend.batch_norm(planes, momentum=bn_momentum)
        self.conv2 = backend.conv(planes, planes, kernel_size=3, stride=1)
        self.norm2 = backend.batch_norm(planes, momentum=bn_momentum)
        self.relu = backend.relu()
        self.downsample = downsample
        self._backend = backend

    def forward(self, x):
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self._backend.add(out, residual))


class MinkUNet(nn.Module):
    """Res16UNet: [N points or voxels, in_channels] sparse input -> [N, out_channels] features."""

    def __init__(self, config: MinkUNetConfig, backend: str | SparseBackend = "torch"):
        super().__init__()
        self.config = config
        be = get_backend(backend) if isinstance(backend, str) else backend
        self.backend = be
        c, s = config, config.scaled
        planes = [s(p) for p in c.planes]
        self.inplanes = s(c.init_dim)
        self.conv0p1s1 = be.conv(c.in_channels, self.inplanes, kernel_size=c.stem_kernel)
        self.bn0 = be.batch_norm(self.inplanes, momentum=c.bn_momentum)
        for i, name in enumerate(("conv1p1s2", "conv2p2s2", "conv3p4s2", "conv4p8s2")):
            setattr(self, name, be.conv(self.inplanes, self.inplanes, kernel_size=2, stride=2))
            setattr(self, f"bn{i + 1}", be.batch_norm(self.inplanes, momentum=c.bn_momentum))
            setattr(self, f"block{i + 1}", self._make_layer(planes[i], c.layers[i]))
        skips = [planes[2], planes[1], planes[0], s(c.init_dim)]
        for i, name in enumerate(("convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2")):
            setattr(self, name, be.conv_transpose(self.inplanes, planes[4 + i], kernel_size=2, stride=2))
            setattr(self, f"bntr{4 + i}", be.batch_norm(planes[4 + i], momentum=c.bn_momentum))
            self.inplanes = planes[4 + i] + skips[i]
            setattr(self, f"block{5 + i}", self._make_layer(planes[4 + i], c.layers[4 + i]))
        self.final = be.conv(planes[7], c.out_channels, kernel_size=1, bias=c.final_bias)
        self.relu = be.relu()

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        downsample = None
        if self.inplanes != planes:
            downsample = nn.Sequential(self.backend.conv(self.inplanes, planes, kernel_size=1),
                                       self.backend.batch_norm(planes))
        layers = [BasicBlock(self.inplanes, planes, self.backend, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes, self.backend) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: SparseTensor) -> SparseTensor:
        be = self.backend
        if self.config.ones_input:  # the features carry nothing for this model: only the occupancy does
            x = x.replace(x.features.new_ones(x.features.shape[0], self.config.in_channels))
        out_p1 = self.relu(self.bn0(self.conv0p1s1(be.from_relviz(x))))
        out_b1p2 = self.block1(self.relu(self.bn1(self.conv1p1s2(out_p1))))
        out_b2p4 = self.block2(self.relu(self.bn2(self.conv2p2s2(out_b1p2))))
        out_b3p8 = self.block3(self.relu(self.bn3(self.conv3p4s2(out_b2p4))))
        out = self.block4(self.relu(self.bn4(self.conv4p8s2(out_b3p8))))
        for i, skip in enumerate((out_b3p8, out_b2p4, out_b1p2, out_p1)):
            up = getattr(self, ("convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2")[i])
            out = self.relu(getattr(self, f"bntr{4 + i}")(up(out)))
            out = getattr(self, f"block{5 + i}")(be.cat(out, skip))
        out = self.final(out)
        out = be.to_relviz(out, like=x)
        if self.config.normalize:
            out = out.replace(F.normalize(out.features, dim=1))
        return out


def build_minkunet(arch: str = "MinkUNet34", in_channels: int = 1, out_channels: int = 64, width: float = 1.0,
                   normalize: bool = True, backend: str = "torch", **overrides) -> MinkUNet:
    """A MinkUNet by architecture name (MinkUNet14, MinkUNet18, MinkUNet34, MinkUNet18A).

    backend: 'torch' or 'minkowski' (surfaces pass the ``sparse_backend`` setting).
    overrides: further :class:`MinkUNetConfig` fields; they win over the architecture's own.
    """
    if arch not in ARCHITECTURES:
        raise InputError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
    if width <= 0:
        raise InputError(f"width must be > 0, got {width}")
    fields = {**ARCHITECTURES[arch], **overrides}
    cfg = MinkUNetConfig(**fields, in_channels=in_channels, out_channels=out_channels, width=width,
                         normalize=normalize)
    return MinkUNet(cfg, backend)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


"""F_v, the visual encoder: X3D (Feichtenhofer 2020, "X3D: Expanding Architectures for Efficient Video
Recognition") as built by PyTorchVideo 0.1.5's ``create_x3d``, with the classifier replaced by a linear
projection into EPG's 512-d embedding space (Wang et al. 2025, section 4.1).

The module tree and attribute names repeat PyTorchVideo's (``blocks.0.conv.conv_t``,
``blocks.1.res_blocks.0.branch2.norm_b.1.block.0``, ``blocks.5.pool.post_conv``, ``blocks.5.proj``...)
so that the state dict of the ``paper`` configuration has exactly the names and shapes of
``create_x3d(input_clip_length=5, input_crop_size=224, depth_factor=2.2, model_num_class=512,
head_activation=None)`` and the published Kinetics-400 X3D-M weights load by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from avsurv.constants import EMBEDDING_DIM
from avsurv.models.standardize import standardizer

KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)
"""PyTorchVideo's Kinetics normalisation, which the published X3D weights expect."""

_BASE_STAGE_DEPTHS = (1, 2, 5, 3)
"""X3D's stage depths before the depth factor (2.2 for X3D-M gives 3, 5, 11, 7)."""


@dataclass(frozen=True)
class X3DConfig:
    """The ``create_x3d`` arguments that differ between profiles; defaults are X3D-M as in EPG."""

    width_factor: float = 2.0
    depth_factor: float = 2.2
    stem_dim_in: int = 12
    bottleneck_factor: float = 2.25
    se_ratio: float = 0.0625
    head_dim_out: int = 2048
    dropout_rate: float = 0.5
    input_pool: int = 1
    """Average-pool factor over height and width applied before the stem (1: none)."""
    standardize: bool = False
    """Standardise the embedding over the batch (:mod:`avsurv.models.standardize`); X3D-M has none."""


def round_width(width: float, multiplier: float, min_width: int = 8, divisor: int = 8) -> int:
    """PyTorchVideo's ``round_width``: scale, round to a multiple of ``divisor``, never lose over 10%."""
    width *= multiplier
    width_out = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if width_out < 0.9 * width:
        width_out += divisor
    return int(width_out)


def round_repeats(repeats: int, multiplier: float) -> int:
    """PyTorchVideo's ``round_repeats``: stage depths are rounded up."""
    return math.ceil(multiplier * repeats)


def _norm(channels: int) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(channels, eps=1e-5, momentum=0.1)


class Conv2plus1d(nn.Module):
    """The stem's factorised conv. PyTorchVideo swaps the names: ``conv_t`` is the spatial 1x3x3 conv
    and ``conv_xy`` the depthwise temporal 5x1x1 conv, applied in that order."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv_t = nn.Conv3d(
            in_channels, out_channels, kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False
        )
        self.conv_xy = nn.Conv3d(
            out_channels,
            out_channels,
            kernel_size=(5, 1, 1),
            padding=(2, 0, 0),
            groups=out_channels,
            bias=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_xy(self.conv_t(x))


class Stem(nn.Module):
    """PyTorchVideo's ``ResNetBasicStem`` for X3D: conv, BN, ReLU, no pooling."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = Conv2plus1d(in_channels, out_channels)
        self.norm = _norm(out_channels)
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(x)))


class SqueezeExcitation(nn.Module):
    """PyTorchVideo's 3D ``SqueezeExcitation``: the gate is ``block`` (conv, ReLU, conv, sigmoid)."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv3d(channels, reduced, kernel_size=1, bias=True),
            nn.ReLU(),
            nn.Conv3d(reduced, channels, kernel_size=1, bias=True),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.block(nn.functional.adaptive_avg_pool3d(x, 1))


class Bottleneck(nn.Module):
    """X3D bottleneck: 1x1x1 conv (ReLU), depthwise 3x3x3 conv (optional SE, Swish), 1x1x1 conv.
    ``norm_b`` is ``Sequential(BN, SE or Identity)`` as in PyTorchVideo, hence ``norm_b.0``/``norm_b.1``."""

    def __init__(
        self, dim_in: int, dim_inner: int, dim_out: int, spatial_stride: int, se_ratio: float
    ) -> None:
        super().__init__()
        self.conv_a = nn.Conv3d(dim_in, dim_inner, kernel_size=1, bias=False)
        self.norm_a = _norm(dim_inner)
        self.act_a = nn.ReLU()
        self.conv_b = nn.Conv3d(
            dim_inner,
            dim_inner,
            kernel_size=3,
            stride=(1, spatial_stride, spatial_stride),
            padding=1,
            groups=dim_inner,
            bias=False,
        )
        se = SqueezeExcitation(dim_inner, round_width(dim_inner, se_ratio)) if se_ratio > 0 else nn.Identity()
        self.norm_b = nn.Sequential(_norm(dim_inner), se)
        self.act_b = nn.SiLU()  # Swish, x * sigmoid(x)
        self.conv_c = nn.Conv3d(dim_inner, dim_out, kernel_size=1, bias=False)
        self.norm_c = _norm(dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act_a(self.norm_a(self.conv_a(x)))
        x = self.act_b(self.norm_b(self.conv_b(x)))
        return self.norm_c(self.conv_c(x))


class ResBlock(nn.Module):
    """Residual block; the shortcut is a strided 1x1x1 conv when shape changes, with BN only when the
    width changes (PyTorchVideo's ``create_x3d_res_block``), and ReLU after the sum."""

    def __init__(
        self, dim_in: int, dim_inner: int, dim_out: int, spatial_stride: int, se_ratio: float
    ) -> None:
        super().__init__()
        needs_projection = dim_in != dim_out or spatial_stride > 1
        self.branch1_conv = (
            nn.Conv3d(dim_in, dim_out, kernel_size=1, stride=(1, spatial_stride, spatial_stride), bias=False)
            if needs_projection
            else None
        )
        self.branch1_norm = _norm(dim_out) if dim_in != dim_out else None
        self.branch2 = Bottleneck(dim_in, dim_inner, dim_out, spatial_stride, se_ratio)
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.branch1_conv is not None:
            shortcut = self.branch1_conv(x)
        if self.branch1_norm is not None:
            shortcut = self.branch1_norm(shortcut)
        return self.activation(shortcut + self.branch2(x))


class ResStage(nn.Module):
    """A stage: the first block strides 2 in space; SE on every other block, starting with the first."""

    def __init__(self, depth: int, dim_in: int, dim_inner: int, dim_out: int, se_ratio: float) -> None:
        super().__init__()
        self.res_blocks = nn.ModuleList(
            ResBlock(
                dim_in if index == 0 else dim_out,
                dim_inner,
                dim_out,
                spatial_stride=2 if index == 0 else 1,
                se_ratio=se_ratio if index % 2 == 0 else 0.0,
            )
            for index in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.res_blocks:
            x = block(x)
        return x


class ProjectedPool(nn.Module):
    """X3D head pooling: 1x1x1 conv + BN + ReLU, average over (T, H, W), 1x1x1 conv + ReLU.
    Adaptive pooling replaces PyTorchVideo's fixed kernel (equal at 5x224x224) so any input size works."""

    def __init__(self, dim_in: int, dim_inner: int, dim_out: int) -> None:
        super().__init__()
        self.pre_conv = nn.Conv3d(dim_in, dim_inner, kernel_size=1, bias=False)
        self.pre_norm = _norm(dim_inner)
        self.pre_act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.post_conv = nn.Conv3d(dim_inner, dim_out, kernel_size=1, bias=False)
        self.post_act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.pre_act(self.pre_norm(self.pre_conv(x))))
        return self.post_act(self.post_conv(x))


class Head(nn.Module):
    """PyTorchVideo's ``ResNetBasicHead`` with ``proj`` mapping to the embedding and no activation."""

    def __init__(
        self, dim_in: int, dim_inner: int, dim_out: int, embedding_dim: int, dropout_rate: float,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        self.pool = ProjectedPool(dim_in, dim_inner, dim_out)
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else nn.Identity()
        self.proj = nn.Linear(dim_out, embedding_dim)
        self.standardize = standardizer(standardize, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardize(self.proj(self.dropout(self.pool(x).flatten(1))))


class X3D(nn.Module):
    """F_v: ``[B, 3, T, H, W]`` video in [0, 1] -> ``{"visual": [B, 512]}``, not L2-normalised.

    Kinetics mean/std normalisation happens inside, with non-persistent buffers so the state dict names
    stay exactly PyTorchVideo's. The paper configuration has 4,023,762 parameters.
    """

    def __init__(self, config: X3DConfig | None = None, embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        config = config or X3DConfig()
        self.config = config
        self.register_buffer("mean", torch.tensor(KINETICS_MEAN).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(KINETICS_STD).view(1, 3, 1, 1, 1), persistent=False)
        self.input_pool = (
            nn.AvgPool3d((1, config.input_pool, config.input_pool))
            if config.input_pool > 1
            else nn.Identity()
        )
        self.blocks = nn.ModuleList(_build_blocks(config, embedding_dim))
        init_weights(self)

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video must be [B, 3, T, H, W], got {list(video.shape)}")
        # Pooling first is exact (the normalisation is affine per channel) and touches fewer values.
        x = (self.input_pool(video) - self.mean) / self.std
        for block in self.blocks:
            x = block(x)
        return {"visual": x}


def init_weights(module: nn.Module) -> None:
    """PyTorchVideo's ``init_net_weights(style="resnet")``, which ``create_x3d`` models get: He-normal
    (fan-out) convs with zero bias, BN scale 1 and shift 0, linear weights N(0, 0.01^2) with zero bias."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv3d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm3d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)


def _build_blocks(config: X3DConfig, embedding_dim: int) -> list[nn.Module]:
    """Stem, four residual stages and the head, with ``create_x3d``'s width and depth rounding."""
    stem_dim = round_width(config.stem_dim_in, config.width_factor)
    blocks: list[nn.Module] = [Stem(3, stem_dim)]
    stage_dim = config.stem_dim_in
    dim_in, dim_inner = stem_dim, stem_dim
    for base_depth in _BASE_STAGE_DEPTHS:
        dim_out = round_width(stage_dim, config.width_factor)
        dim_inner = int(config.bottleneck_factor * dim_out)
        depth = round_repeats(base_depth, config.depth_factor)
        blocks.append(ResStage(depth, dim_in, dim_inner, dim_out, config.se_ratio))
        dim_in = dim_out
        stage_dim = round_width(stage_dim, 2.0)  # X3D doubles the base width at every stage
    blocks.append(
        Head(dim_in, dim_inner, config.head_dim_out, embedding_dim, config.dropout_rate, config.standardize)
    )
    return blocks

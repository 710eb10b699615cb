"""F_v of the ``fg`` profile: a small 3D CNN over whole frames minus their camera's background.

Why not X3D on crops (issue 12, measured on a generated 3-camera scene, visible class of each second,
linear probe fitted on cam0): on raw frames every encoder we tried, trained with labels or not, learns
each camera's look and scores below always predicting the most frequent class on the other cameras;
the same small CNN, randomly initialised, fed each frame minus its camera's median background, scores
86 / 75 % on the similar / challenging camera (most frequent class 62 / 63 %). So this encoder sees the
whole 398x224 frame (no crops: an object in one crop is missing from the other) at a quarter of its
size, as the signed difference from the background (:mod:`avsurv.media.background`), in [-1, 1].

Layout: four conv-BN-ReLU blocks (the first spatial only, the others 3x3x3 with spatial stride 2), then
the mean and the max of the last feature map over time and space (the max keeps a small object that the
mean would dilute), a linear projection to the 512-d space and the parameter-free standardiser that the
``tiny`` profile uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from avsurv.constants import EMBEDDING_DIM
from avsurv.models.standardize import standardizer


@dataclass(frozen=True)
class ForegroundConfig:
    height: int = 56
    width: int = 100
    """Input size: the 398x224 frame resized to a quarter (a car is about 9x4 pixels)."""
    widths: tuple[int, ...] = (32, 64, 128, 128)
    standardize: bool = True


def _block(channels_in: int, channels_out: int, temporal: int, stride: int) -> nn.Sequential:
    conv = nn.Conv3d(channels_in, channels_out, (temporal, 3, 3), (1, stride, stride), (temporal // 2, 1, 1),
                     bias=False)
    return nn.Sequential(conv, nn.BatchNorm3d(channels_out), nn.ReLU(inplace=True))


class ForegroundEncoder(nn.Module):
    """``[B, 3, T, H, W]`` frame minus background in [-1, 1] -> ``{"visual": [B, 512]}``."""

    def __init__(self, config: ForegroundConfig, embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.config = config
        layers, channels = [], 3
        for i, width in enumerate(config.widths):
            layers.append(_block(channels, width, 1 if i == 0 else 3, 1 if i == 0 else 2))
            channels = width
        self.blocks = nn.Sequential(*layers)
        self.proj = nn.Linear(2 * channels, embedding_dim)
        self.standardize = standardizer(config.standardize, embedding_dim)

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        expected = (3, self.config.height, self.config.width)
        if video.ndim != 5 or (video.shape[1], *video.shape[3:]) != expected:
            raise ValueError(f"video must be [B, 3, T, {expected[1]}, {expected[2]}], got {list(video.shape)}")
        # Channels-last: oneDNN's fast 3D convolutions on CPU (1.3x in float32, and what makes bf16 pay off).
        features = self.blocks(video.contiguous(memory_format=torch.channels_last_3d))
        pooled = torch.cat([features.mean(dim=(2, 3, 4)), features.amax(dim=(2, 3, 4))], dim=1)
        return {"visual": self.standardize(self.proj(pooled))}

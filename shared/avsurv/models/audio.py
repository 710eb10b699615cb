"""F_a, the audio encoder: a ResNet18-style 2D CNN (He et al. 2016; BasicBlock stages of 2, 2, 2, 2) on
the [1, 128, 64] log-mel of one clip, global average pooling and a linear map into EPG's 512-d space
(Wang et al. 2025, section 4.1), without activation.

EPG reports 4.16M parameters for its ResNet18 audio encoder but not its widths; a standard ResNet18
(64, 128, 256, 512) with this input and head has 11.4M. The paper profile narrows the stage widths to
48, 80, 152, 304 (multiples of 8, roughly doubling), giving 4,161,216 parameters, which rounds to 4.16M.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from avsurv.constants import EMBEDDING_DIM, N_MELS
from avsurv.models.standardize import standardizer


@dataclass(frozen=True)
class AudioConfig:
    """Stage widths and depths; defaults are the paper's narrowed ResNet18."""

    widths: tuple[int, ...] = (48, 80, 152, 304)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    stem_kernel: int = 7
    stem_pool: bool = True
    """ResNet's 3x3 stride-2 max pool after the stem."""
    standardize: bool = False
    """Standardise the embedding over the batch (:mod:`avsurv.models.standardize`)."""


class BasicBlock(nn.Module):
    """ResNet BasicBlock: two 3x3 convs with BN; 1x1 strided projection on the shortcut when needed."""

    def __init__(self, dim_in: int, dim_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim_in, dim_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(dim_out)
        self.conv2 = nn.Conv2d(dim_out, dim_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(dim_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(nn.Conv2d(dim_in, dim_out, 1, stride=stride, bias=False), nn.BatchNorm2d(dim_out))
            if stride != 1 or dim_in != dim_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


def _stage(dim_in: int, dim_out: int, depth: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        *(BasicBlock(dim_in if i == 0 else dim_out, dim_out, stride if i == 0 else 1) for i in range(depth))
    )


class AudioEncoder(nn.Module):
    """F_a: ``[B, 1, 128, T]`` log-mel in dB -> ``{"audio": [B, 512]}``, not L2-normalised.

    Each mel bin is standardised with the persistent buffers ``mel_mean`` and ``mel_std`` (saved with
    the model; 0 and 1 until :meth:`set_normalization` is given training-set statistics).
    """

    def __init__(self, config: AudioConfig | None = None, embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        config = config or AudioConfig()
        if len(config.widths) != len(config.depths):
            raise ValueError("AudioConfig needs one depth per stage width")
        self.config = config
        self.register_buffer("mel_mean", torch.zeros(N_MELS))
        self.register_buffer("mel_std", torch.ones(N_MELS))
        width = config.widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, config.stem_kernel, stride=2, padding=config.stem_kernel // 2, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1) if config.stem_pool else nn.Identity(),
        )
        self.stages = nn.Sequential(
            *(
                _stage(config.widths[max(i - 1, 0)], dim_out, depth, stride=1 if i == 0 else 2)
                for i, (dim_out, depth) in enumerate(zip(config.widths, config.depths, strict=True))
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.proj = nn.Linear(config.widths[-1], embedding_dim)
        self.standardize = standardizer(config.standardize, embedding_dim)
        for layer in self.modules():  # torchvision's ResNet init for the convolutions
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        # The projection starts like X3D's (N(0, 0.01^2)) so both embeddings start at the same small
        # scale, inside the loss margin: with PyTorch's default init the audio norm started ~20x the
        # visual one and every negative pair lay beyond tau, so only the positives pulled.
        nn.init.normal_(self.proj.weight, std=0.01)
        nn.init.zeros_(self.proj.bias)

    @torch.no_grad()
    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-mel-bin statistics of the training log-mels, each of shape [128]; std must be positive."""
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != self.mel_mean.shape or std.shape != self.mel_std.shape:
            raise ValueError(
                f"mean and std must have shape [{N_MELS}], got {list(mean.shape)} and {list(std.shape)}"
            )
        if not bool((std > 0).all()):
            raise ValueError("every mel bin's std must be positive")
        self.mel_mean.copy_(mean)
        self.mel_std.copy_(std)

    def forward(self, log_mel: torch.Tensor) -> dict[str, torch.Tensor]:
        if log_mel.ndim != 4 or log_mel.shape[1] != 1 or log_mel.shape[2] != N_MELS:
            raise ValueError(f"log-mel must be [B, 1, {N_MELS}, T], got {list(log_mel.shape)}")
        x = (log_mel - self.mel_mean.view(1, 1, -1, 1)) / self.mel_std.view(1, 1, -1, 1)
        x = self.stages(self.stem(x))
        return {"audio": self.standardize(self.proj(self.pool(x).flatten(1)))}

"""What a head is trained against, per batch of windows."""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = -1
"""Target of a segment or window without a usable label; losses skip it."""


@dataclass(frozen=True)
class Targets:
    """``segments`` int64 [B, T]: class index of each segment, all ``IGNORE`` under weak supervision;
    ``windows`` int64 [B]: the window's weak label, a class index (localization) or 1/0 for anomalous/normal
    (AVACA), ``IGNORE`` if the window has none; ``shares`` float32 [B, K]: the share of each class among the
    window's labelled seconds, the segment labels average-pooled (CCLN's video-level label), 0 if none."""

    segments: torch.Tensor
    windows: torch.Tensor
    shares: torch.Tensor

"""Symmetric InfoNCE on synchronised audio-visual pairs: the common contrastive AV baseline."""

from typing import Final

import torch
import torch.nn.functional as F
from torch import nn

INFONCE_TEMPERATURE: Final = 0.07
"""Softmax temperature of InfoNCE as in instance discrimination (Wu et al. 2018), MoCo (He et al. 2020)
and CLIP's initial value (Radford et al. 2021)."""


class SymmetricInfoNCE(nn.Module):
    """InfoNCE (van den Oord et al. 2018) in both directions, positives = temporally aligned pairs only.

    ``s_mn = cos(zv_m, za_n) / temperature``;
    ``L = 1/2 [ -1/B sum_m log softmax_n(s_mn)[m]  -  1/B sum_n log softmax_m(s_mn)[n] ]``
    (video -> audio and audio -> video cross-entropy, averaged).

    Shapes: ``z_v`` [B, D], ``z_a`` [B, D] -> scalar.

    Example:
        >>> loss = SymmetricInfoNCE(temperature=0.01)
        >>> z = 5.0 * torch.eye(4)
        >>> float(loss(z, z)) < 1e-6  # each video's own audio dominates its row and column
        True
    """

    def __init__(self, temperature: float = INFONCE_TEMPERATURE) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, z_v: torch.Tensor, z_a: torch.Tensor) -> torch.Tensor:
        if z_v.ndim != 2 or z_v.shape != z_a.shape:
            raise ValueError(f"z_v and z_a must both be [B, D], got {list(z_v.shape)} and {list(z_a.shape)}")
        logits = F.normalize(z_v, dim=1) @ F.normalize(z_a, dim=1).T / self.temperature
        aligned = torch.arange(z_v.shape[0], device=z_v.device)
        return (F.cross_entropy(logits, aligned) + F.cross_entropy(logits.T, aligned)) / 2

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"

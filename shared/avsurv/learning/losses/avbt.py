"""AV-BT: audio-visual Barlow Twins, the TACMA baseline (Ran et al. 2022, section 3.2, Eq. 1-2).

A shared projector maps both modalities; per video, each projected dimension is standardised along time
and the audio-visual cross-correlation is driven to the identity.
"""

import itertools
from collections.abc import Sequence
from typing import Final, Literal

import torch
from torch import nn

from avsurv.constants import AVBT_LAMBDA, EMBEDDING_DIM

PROJECTOR_DIMS: Final = (1024, 1024, 1024)
"""Output sizes of the three projector layers, reduced for CPU training."""

STANDARDIZE_EPS: Final = 1e-5
"""Added to the variance before dividing, as BatchNorm1d (Barlow Twins standardises with it)."""

Average = Literal["correlation", "loss"]


def off_diagonal(x: torch.Tensor) -> torch.Tensor:
    """Flat view of the off-diagonal entries of square matrices [..., D, D] -> [..., D * (D - 1)].

    As in facebookresearch/barlowtwins ``main.py``, extended to a leading batch of matrices.
    """
    d = x.shape[-1]
    if x.shape[-2] != d:
        raise ValueError(f"off_diagonal expects square matrices [..., D, D], got {list(x.shape)}")
    leading = x.shape[:-2]
    return x.flatten(-2)[..., :-1].reshape(*leading, d - 1, d + 1)[..., 1:].flatten(-2)


def barlow_twins_objective(c: torch.Tensor, lambda_: float = AVBT_LAMBDA) -> torch.Tensor:
    """TACMA Eq. 2 for cross-correlations [..., D, D] -> [...]:
    ``sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2``."""
    invariance = (1.0 - torch.diagonal(c, dim1=-2, dim2=-1)).pow(2).sum(-1)
    redundancy = off_diagonal(c).pow(2).sum(-1)
    return invariance + lambda_ * redundancy


def per_video_cross_correlation(
    p_a: torch.Tensor, p_v: torch.Tensor, video_ids: torch.Tensor
) -> torch.Tensor:
    """Cross-correlation ``C = Z_a^T Z_v / T`` per video (TACMA Eq. 1, Algorithm 1).

    Each dimension is standardised along the T clips of its video (population std, as BatchNorm, so that
    identical inputs give ``C_ii = 1``). Every video needs at least 2 clips.

    Shapes: ``p_a`` [B, D], ``p_v`` [B, D], ``video_ids`` [B] -> [V, D, D], videos in sorted id order.
    """
    _, video_index, clips_per_video = video_ids.unique(return_inverse=True, return_counts=True)
    if (clips_per_video < 2).any():
        raise ValueError("every video needs at least 2 clips to standardise along time")
    # membership[v, b] = 1 / T_v if clip b belongs to video v: per-video means as matrix products.
    videos = torch.arange(len(clips_per_video), device=video_ids.device)
    membership = (videos[:, None] == video_index[None, :]).to(p_a.dtype)
    membership = membership / clips_per_video[:, None].to(p_a.dtype)

    def standardize(p: torch.Tensor) -> torch.Tensor:
        centred = p - (membership @ p)[video_index]
        variance = (membership @ centred.pow(2))[video_index]
        return centred / (variance + STANDARDIZE_EPS).sqrt()

    weighted_audio = membership[:, :, None] * standardize(p_a)[None]  # [V, B, D]
    return weighted_audio.transpose(1, 2) @ standardize(p_v)


def projector(dims: Sequence[int]) -> nn.Sequential:
    """Barlow Twins projector: (Linear-BN-ReLU) for every hidden layer, then a plain Linear."""
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(dims[:-1]):
        layers += [nn.Linear(fan_in, fan_out, bias=False), nn.BatchNorm1d(fan_out), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(dims[-2], dims[-1], bias=False))
    return nn.Sequential(*layers)


class AVBTLoss(nn.Module):
    """AV-BT loss with its shared 3-layer projector (TACMA section 3.2.1, Eq. 1-2, Algorithm 1).

    ``z_a`` and ``z_v`` go through the same projector (Linear-BN-ReLU, Linear-BN-ReLU, Linear; default
    sizes ``PROJECTOR_DIMS``, the paper's ``avsurv.constants.TACMA_PROJECTOR_DIMS``), then per video

        ``C = Z_a^T Z_v / T``,   ``L = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2``.

    Videos with fewer than 2 clips are skipped (no standardisation along time is possible).
    ``average="correlation"`` follows TACMA ("the total loss ... is obtained based on the average C over
    all videos in a batch", Algorithm 1: ``c = c.sum(0) / N``); ``average="loss"`` averages the per-video
    losses instead.

    Shapes: ``z_a`` [B, D_in], ``z_v`` [B, D_in], ``video_ids`` [B] integer -> scalar. The loss is
    unchanged by swapping the modalities (C becomes C^T), but the argument order follows ``C = Z_a^T Z_v``.

    Example:
        >>> loss = AVBTLoss(embedding_dim=8, projector_dims=(16, 16, 4))
        >>> z_a, z_v = torch.randn(6, 8), torch.randn(6, 8)
        >>> loss(z_a, z_v, torch.tensor([0, 0, 0, 1, 1, 1])).shape
        torch.Size([])
    """

    def __init__(
        self,
        embedding_dim: int = EMBEDDING_DIM,
        projector_dims: Sequence[int] = PROJECTOR_DIMS,
        lambda_: float = AVBT_LAMBDA,
        average: Average = "correlation",
    ) -> None:
        super().__init__()
        if len(projector_dims) != 3 or min(embedding_dim, *projector_dims) < 1:
            raise ValueError(f"projector_dims must be 3 positive sizes, got {tuple(projector_dims)}")
        if lambda_ < 0:
            raise ValueError(f"lambda_ must be >= 0, got {lambda_}")
        if average not in ("correlation", "loss"):
            raise ValueError(f"average must be 'correlation' or 'loss', got {average!r}")
        self.projector = projector([embedding_dim, *projector_dims])
        self.lambda_, self.average = lambda_, average

    def forward(self, z_a: torch.Tensor, z_v: torch.Tensor, video_ids: torch.Tensor) -> torch.Tensor:
        if z_a.ndim != 2 or z_a.shape != z_v.shape:
            raise ValueError(f"z_a and z_v must both be [B, D], got {list(z_a.shape)} and {list(z_v.shape)}")
        if video_ids.shape != z_a.shape[:1]:
            raise ValueError(f"video_ids must be [{z_a.shape[0]}], got {list(video_ids.shape)}")
        _, video_index, clips_per_video = video_ids.unique(return_inverse=True, return_counts=True)
        kept = clips_per_video[video_index] >= 2
        if not kept.any():
            raise ValueError("AV-BT needs a video with at least 2 clips in the batch; group clips by video")
        c = per_video_cross_correlation(self.projector(z_a[kept]), self.projector(z_v[kept]), video_ids[kept])
        if self.average == "correlation":
            return barlow_twins_objective(c.mean(0), self.lambda_)
        return barlow_twins_objective(c, self.lambda_).mean()

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}, average={self.average!r}"

"""Focal loss of the CCLN classifier (Sun et al. 2025, Eq. 28 and 32; Lin et al. 2017)."""

import torch
import torch.nn.functional as F

from avsurv.constants import FOCAL_ALPHA, FOCAL_GAMMA


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = FOCAL_ALPHA,
               gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Binary focal loss of every class, summed over classes, mean over items:

    ``FL = -alpha y (1 - p)^gamma log(p) - (1 - alpha) (1 - y) p^gamma log(1 - p)``, ``p = sigmoid(x)``.

    With one-hot targets y this is Lin et al.'s loss (``p_t``, ``alpha_t`` form), as CCLN applies per
    segment (Eq. 28, fully supervised). Eq. 32 (weakly supervised) applies it per video to the paper's
    video label, the segment labels average-pooled over time: y is then the share of each class.

    Shapes: ``logits`` [N, K], ``targets`` [N, K] in [0, 1] -> scalar.
    Example: ``focal_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]))`` = (0.25 + 0.75) * 0.25 ln 2.
    """
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits must be [N >= 1, K], got {list(logits.shape)}")
    if targets.shape != logits.shape or not ((targets >= 0) & (targets <= 1)).all():
        raise ValueError(f"targets must be {list(logits.shape)} in [0, 1], got {list(targets.shape)}")
    if not 0.0 <= alpha <= 1.0 or gamma < 0.0:
        raise ValueError(f"focal loss needs alpha in [0, 1] and gamma >= 0, got {alpha} and {gamma}")
    p = torch.sigmoid(logits)
    positive = -alpha * targets * (1.0 - p).pow(gamma) * F.logsigmoid(logits)
    negative = -(1.0 - alpha) * (1.0 - targets) * p.pow(gamma) * F.logsigmoid(-logits)  # log(1 - p)
    return (positive + negative).sum(dim=1).mean()

"""The multi-positive contrastive loss of EPG (Eq. 4), in the margin form of Hadsell et al. (2006)."""

from typing import Final, Literal

import torch
from torch import nn

from avsurv.constants import W
from avsurv.learning.distance import pairwise_distance

DEFAULT_TAU: Final = 1.0
"""Margin of Eq. 4; the paper gives no value. Two orthogonal embeddings whose squared Euclidean gap is 1
are at d = w * 1 + (1 - w) * (1 - 0) = 1 for every w, so tau = 1 is a scale reference that does not move
with w. It also keeps the margin reachable by the cosine term alone (w = 0: d <= 2), where it asks
negatives to be at least orthogonal. Positives are pulled to d = 0, negatives pushed to d >= tau, so tau
sets the scale of the space: check aligned vs negative distances with ``alignment_stats``."""

Reduction = Literal["balanced", "sum", "mean"]


class MultiPositiveContrastiveLoss(nn.Module):
    """EPG Eq. 4 over every (video m, audio n) pair of a batch, with pair labels y from Eq. 1 or TPG:

        ``L = sum_m sum_n [ y(m,n) d(zv_m, za_n)^2 + (1 - y(m,n)) max(tau - d(zv_m, za_n), 0)^2 ]``

    with d the distance of Eq. 5 (weight ``w``).

    Reductions:
        "balanced" (default, docs/METHOD.md Decision): mean of the positive terms over the positive pairs
            plus mean of the negative terms over the negative pairs, so the B - 1 negatives per anchor
            cannot drown the positives. A batch without negatives (or positives) adds 0 for that part.
        "sum": the paper's plain double sum.
        "mean": the double sum over B^2.

    Shapes: ``z_v`` [B, D], ``z_a`` [B, D], ``labels`` [B, B] bool -> scalar.

    Example:
        >>> loss = MultiPositiveContrastiveLoss()
        >>> z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> float(loss(z, z, torch.eye(2, dtype=torch.bool)))  # aligned; negatives at d = 1.5 > tau
        0.0
    """

    def __init__(self, tau: float = DEFAULT_TAU, w: float = W, reduction: Reduction = "balanced") -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"the margin tau must be > 0, got {tau}")
        if not 0.0 <= w <= 1.0:
            raise ValueError(f"the distance weight w must lie in [0, 1], got {w}")
        if reduction not in ("balanced", "sum", "mean"):
            raise ValueError(f"reduction must be 'balanced', 'sum' or 'mean', got {reduction!r}")
        self.tau, self.w, self.reduction = tau, w, reduction

    def forward(self, z_v: torch.Tensor, z_a: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if z_v.ndim != 2 or z_v.shape != z_a.shape:
            raise ValueError(f"z_v and z_a must both be [B, D], got {list(z_v.shape)} and {list(z_a.shape)}")
        batch = z_v.shape[0]
        if labels.shape != (batch, batch) or labels.dtype != torch.bool:
            raise ValueError(
                f"labels must be a bool [{batch}, {batch}] tensor, got {labels.dtype} {list(labels.shape)}"
            )
        d = pairwise_distance(z_v, z_a, self.w)
        positive_terms = d.pow(2)
        negative_terms = (self.tau - d).clamp_min(0.0).pow(2)
        if self.reduction == "balanced":
            return _masked_mean(positive_terms, labels) + _masked_mean(negative_terms, ~labels)
        terms = torch.where(labels, positive_terms, negative_terms)
        return terms.sum() if self.reduction == "sum" else terms.mean()

    def extra_repr(self) -> str:
        return f"tau={self.tau}, w={self.w}, reduction={self.reduction!r}"


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked entries; 0 (still in the graph) when the mask is empty."""
    return (values * mask).sum() / mask.sum().clamp_min(1)

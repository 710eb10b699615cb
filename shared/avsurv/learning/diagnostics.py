"""Alignment diagnostics logged every training epoch (docs/METHOD.md "Measured risks").

The loss value alone does not show whether the encoders align: these numbers do.
"""

import torch

from avsurv.constants import W
from avsurv.learning.distance import pairwise_distance


@torch.no_grad()
def alignment_stats(
    z_v: torch.Tensor, z_a: torch.Tensor, labels: torch.Tensor | None = None, w: float = W
) -> dict[str, float]:
    """Audio-visual alignment of a batch, all by the distance d of EPG Eq. 5.

    - ``recall_at_1``: share of clips whose own audio is strictly the nearest of the batch's audios to
      their video (ties count as misses, so a collapsed space scores 0, not 1).
    - ``aligned_distance``: mean ``d(zv_m, za_m)``.
    - ``negative_distance``: mean ``d(zv_m, za_n)`` over ``m != n``.
    - ``gap``: ``negative_distance - aligned_distance``; > 0 once aligned pairs are the closer ones.
    - ``positives_per_anchor`` (only with ``labels`` [B, B]): mean row sum of the labels.

    Shapes: ``z_v`` [B, D], ``z_a`` [B, D] with B >= 2.

    Example:
        >>> z = torch.eye(3)
        >>> alignment_stats(z, z)["recall_at_1"]
        1.0
    """
    if z_v.ndim != 2 or z_v.shape != z_a.shape or z_v.shape[0] < 2:
        shapes = f"{list(z_v.shape)} and {list(z_a.shape)}"
        raise ValueError(f"z_v and z_a must both be [B, D] with B >= 2, got {shapes}")
    batch = z_v.shape[0]
    d = pairwise_distance(z_v, z_a, w)
    diagonal = torch.eye(batch, dtype=torch.bool, device=d.device)
    aligned = d.diagonal()
    nearest_other = d.masked_fill(diagonal, float("inf")).min(dim=1).values
    negatives = d[~diagonal]
    stats = {
        "recall_at_1": (aligned < nearest_other).float().mean().item(),
        "aligned_distance": aligned.mean().item(),
        "negative_distance": negatives.mean().item(),
    }
    stats["gap"] = stats["negative_distance"] - stats["aligned_distance"]
    if labels is not None:
        if labels.shape != (batch, batch):
            raise ValueError(f"labels must be [{batch}, {batch}], got {list(labels.shape)}")
        stats["positives_per_anchor"] = labels.float().sum(dim=1).mean().item()
    return stats

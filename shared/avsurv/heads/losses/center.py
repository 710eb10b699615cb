"""Center loss on anomaly scores (Leporowski et al. 2023, Eq. 2; Wan et al. 2020)."""

import torch


def center_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 2, mean over videos: a normal video's scores are pulled to their own centre, anomalous ones add 0.

    ``L_c = 1/t sum_j (s_j - c)^2`` with ``c = 1/t sum_j s_j`` if ``y = 0``, else 0.

    Shapes: ``scores`` [B, t], ``labels`` [B] of 0 (normal) or 1 (anomalous) -> scalar.
    """
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"scores must be [B >= 1, t], got {list(scores.shape)}")
    if labels.shape != scores.shape[:1] or not ((labels == 0) | (labels == 1)).all():
        raise ValueError(f"labels must be [{scores.shape[0]}] of 0 or 1")
    spread = (scores - scores.mean(dim=1, keepdim=True)).pow(2).mean(dim=1)
    return torch.where(labels == 0, spread, torch.zeros_like(spread)).mean()

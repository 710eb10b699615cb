"""Dynamic multiple-instance learning loss of AVACA (Leporowski et al. 2023, Eq. 1; Wan et al. 2020)."""

import torch
import torch.nn.functional as F

DMIL_ALPHA = 4
"""k = floor(t / alpha) of the k-max selection; the AVACA paper gives no value. With t = 10 clips, k = 2."""


def k_max(clips: int, alpha: float = DMIL_ALPHA) -> int:
    """k = floor(t / alpha), at least 1 so that a video shorter than alpha still selects its top clip."""
    if clips < 1 or alpha <= 0:
        raise ValueError(f"k-max needs t >= 1 clips and alpha > 0, got {clips} and {alpha}")
    return max(1, int(clips // alpha))


def dmil_loss(scores: torch.Tensor, labels: torch.Tensor, alpha: float = DMIL_ALPHA) -> torch.Tensor:
    """Eq. 1, mean over videos: the binary cross-entropy of each of the k highest anomaly scores of a video
    against the video's label, averaged over the k:

    ``L_DMIL = 1/k sum_{s in top-k(s_i)} -[y_i log(s) + (1 - y_i) log(1 - s)]``, ``k = floor(t / alpha)``.

    The paper prints ``-y log(s) + (1 - y) log(1 - s)``; the sign of the second term is a typo (it would
    reward normal videos for high scores), Wan et al.'s loss is the cross-entropy.

    Shapes: ``scores`` [B, t] in (0, 1), ``labels`` [B] of 0 (normal) or 1 (anomalous) -> scalar.
    """
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"scores must be [B >= 1, t], got {list(scores.shape)}")
    if labels.shape != scores.shape[:1] or not ((labels == 0) | (labels == 1)).all():
        raise ValueError(f"labels must be [{scores.shape[0]}] of 0 or 1")
    top = scores.topk(k_max(scores.shape[1], alpha), dim=1).values
    targets = labels.to(scores.dtype)[:, None].expand_as(top)
    return F.binary_cross_entropy(top, targets, reduction="none").mean(dim=1).mean()

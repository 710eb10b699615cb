"""Pair labels for a batch of clips: TPG (temporal) and EPG (embedding-based, EPG Eq. 1).

Entry ``(m, n)`` of a label matrix says whether the pair (video of clip m, audio of clip n) is positive.
Labels are targets, not part of the graph: they are computed under ``torch.no_grad()``.
"""

from typing import Literal

import torch

from avsurv.constants import SIGMA, W
from avsurv.learning.distance import distance, pairwise_distance

Rule = Literal["or", "and", "cross"]
RULES: tuple[Rule, ...] = ("or", "and", "cross")


def _check_times(times: torch.Tensor, batch_size: int | None = None) -> None:
    if times.ndim != 1 or (batch_size is not None and times.shape[0] != batch_size):
        expected = "[B]" if batch_size is None else f"[{batch_size}]"
        raise ValueError(f"times must be a 1-D tensor of capture times {expected}, got {list(times.shape)}")


def _check_sigma(sigma: float) -> None:
    if sigma < 0:
        raise ValueError(f"the temporal constraint sigma must be >= 0 seconds, got {sigma}")


@torch.no_grad()
def tpg_labels(times: torch.Tensor, sigma: float = SIGMA) -> torch.Tensor:
    """Temporal pair generation (TPG, EPG section 3.1 and Table 2): positives by time alone.

    ``y(m, n) = 1`` iff ``m == n`` or ``|t_m - t_n| < sigma``; with ``sigma = 0`` only the diagonal.

    Args:
        times: [B] capture times in seconds.
        sigma: temporal constraint in seconds, >= 0.

    Returns:
        [B, B] bool labels.

    Example:
        >>> tpg_labels(torch.tensor([0.0, 1.0, 30.0]), sigma=2.5).int().tolist()
        [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    """
    _check_times(times)
    _check_sigma(sigma)
    close_in_time = (times[:, None] - times[None, :]).abs() < sigma
    return close_in_time | torch.eye(times.shape[0], dtype=torch.bool, device=times.device)


def _keep_nearest(candidates: torch.Tensor, score: torch.Tensor, k: int) -> torch.Tensor:
    """Per row, keep the (at most) ``k`` candidates with the smallest score."""
    k = min(k, candidates.shape[1])
    if k == 0:
        return torch.zeros_like(candidates)
    masked = score.masked_fill(~candidates, float("inf"))
    nearest = masked.topk(k, dim=1, largest=False).indices
    kept = torch.zeros_like(candidates).scatter_(1, nearest, True)
    # Rows with fewer than k candidates picked some inf entries: drop those again.
    return kept & candidates


@torch.no_grad()
def epg_labels(
    z_v: torch.Tensor,
    z_a: torch.Tensor,
    times: torch.Tensor,
    *,
    w: float = W,
    sigma: float = SIGMA,
    rule: Rule = "or",
    max_positives: int | None = None,
) -> torch.Tensor:
    """Embedding-based pair generation (EPG Eq. 1, threshold per docs/METHOD.md "Pair labels").

    Per anchor m the threshold is its aligned cross-modal distance ``delta_m = d(zv_m, za_m)`` (Eq. 5,
    detached), and

        ``y(m, n) = 1``  iff  ``d(zv_m, zv_n) <= delta_m``  OR  ``d(za_m, za_n) <= delta_m``

    (``rule="and"`` requires both). ``rule="cross"`` is the other reading the paper allows (section 4.1:
    delta "determine[s] whether the distance in embedding space of a temporally misaligned data pair is
    smaller than a temporally aligned pair", a data pair being (video m, audio n)): ``y(m, n) = 1`` iff
    ``d(zv_m, za_n) <= delta_m``, which compares cross-modal distances with a cross-modal threshold
    instead of same-modality ones (docs/METHOD.md "Measured risks": their scales differ until the encoders
    are aligned). ``y(m, m) = 1`` always, and clips closer than ``sigma`` seconds are positives too
    (``tpg_labels``).

    ``max_positives=k`` is a safeguard, not the paper's rule (docs/METHOD.md "Measured risks": before the
    encoders are aligned, same-modality distances are far below ``delta_m`` and positives per anchor run
    away to B). It keeps per anchor only the k embedding positives nearest by the smaller of the two
    same-modality distances (by the cross-modal distance for ``rule="cross"``); the diagonal and the
    sigma positives are always kept on top of them.
    Ablate it against ``max_positives=None`` (the paper).

    Args:
        z_v: [B, D] visual embeddings.
        z_a: [B, D] audio embeddings.
        times: [B] capture times in seconds.
        w: Eq. 5 weight in [0, 1].
        sigma: temporal constraint in seconds, >= 0.
        rule: "or" (Eq. 1), "and" or "cross".
        max_positives: None (paper) or k >= 0 embedding positives kept per anchor.

    Returns:
        [B, B] bool labels, no grad.

    Example:
        >>> z_v = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0]])
        >>> z_a = z_v + torch.tensor([0.0, 0.5])  # delta_m = 0.25 for w = 1
        >>> epg_labels(z_v, z_a, torch.tensor([0.0, 60.0, 120.0]), w=1.0).int().tolist()
        [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    """
    if z_v.ndim != 2 or z_v.shape != z_a.shape:
        raise ValueError(f"z_v and z_a must both be [B, D], got {list(z_v.shape)} and {list(z_a.shape)}")
    _check_times(times, z_v.shape[0])
    _check_sigma(sigma)
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if max_positives is not None and max_positives < 0:
        raise ValueError(f"max_positives must be None or >= 0, got {max_positives}")

    delta = distance(z_v, z_a, w)[:, None]
    if rule == "cross":
        nearness = pairwise_distance(z_v, z_a, w)
        positives = nearness <= delta
    else:
        d_visual = pairwise_distance(z_v, z_v, w)
        d_audio = pairwise_distance(z_a, z_a, w)
        near_visual, near_audio = d_visual <= delta, d_audio <= delta
        positives = near_visual | near_audio if rule == "or" else near_visual & near_audio
        nearness = torch.minimum(d_visual, d_audio)

    diagonal = torch.eye(z_v.shape[0], dtype=torch.bool, device=z_v.device)
    if max_positives is not None:
        positives = _keep_nearest(positives & ~diagonal, nearness, max_positives)
    return positives | tpg_labels(times, sigma)

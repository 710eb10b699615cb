"""The embedding distance of EPG, Eq. 5.

``d(z1, z2) = w * ||z1 - z2||^2 + (1 - w) * (2 - (cos(z1, z2) + 1))``, w in [0, 1].
The cosine term is ``1 - cos``: 0 for parallel vectors, 2 for opposite ones. Embeddings are not
normalised: the Euclidean term sees their magnitude (EPG section 5.4.2).
"""

import torch
import torch.nn.functional as F

from avsurv.constants import W

_EPS = 1e-8


def _check_w(w: float) -> None:
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"the distance weight w must lie in [0, 1], got {w}")


def distance(z1: torch.Tensor, z2: torch.Tensor, w: float = W) -> torch.Tensor:
    """Row-wise distance: [..., D] and [..., D] (broadcastable) -> [...]."""
    _check_w(w)
    squared = (z1 - z2).pow(2).sum(dim=-1)
    cosine = F.cosine_similarity(z1, z2, dim=-1, eps=_EPS)
    return w * squared + (1.0 - w) * (1.0 - cosine)


def pairwise_distance(a: torch.Tensor, b: torch.Tensor, w: float = W) -> torch.Tensor:
    """All pairs: [M, D] and [N, D] -> [M, N] with entry (m, n) = d(a_m, b_n)."""
    _check_w(w)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"pairwise_distance expects [M, D] and [N, D], got {list(a.shape)} and {list(b.shape)}")
    squared = (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1)[None, :] - 2.0 * a @ b.T).clamp_min(0.0)
    cosine = F.normalize(a, dim=1, eps=_EPS) @ F.normalize(b, dim=1, eps=_EPS).T
    return w * squared + (1.0 - w) * (1.0 - cosine)

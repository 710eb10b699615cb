"""TACMA: temporally adaptive cross-modal attention (Ran et al. 2022, sections 3.3-3.4, Eq. 3-9).

A supervised event-localization head over the frozen features of one video's T segments:

- Eq. 3: ``M^av = (f_a W_a^1)(f_v W_v^1)^T / sqrt(d_l)``, ``M^va = (M^av)^T``, each then ReLU and a
  softmax along its rows (rows of M^av: audio segments i; columns: visual segments j);
- Eq. 4-5: ``W^av = exp(-theta |i - j| / M^av_ij) * M^av`` (and the same for M^va): attention between
  segments far apart in time is weakened, less so where the two segments are similar;
- Eq. 6: the attention aggregates the other modality's projected values onto each segment, plus a
  residual; Eq. 7: a linear layer and layer normalisation per modality;
- Eq. 8-9: the sum of both goes through a 3-layer MLP to per-segment class logits, trained with
  cross-entropy over the T segments.

**Eq. 6 as printed** pairs W^va (rows: visual segments) with the visual values and adds f_a, which only
type-checks because both modalities have T segments. Each attention matrix is paired here with the values
of its column modality and the residual of its row modality (cross-attention as in PSP, which TACMA
builds on): ``V^fuse = W^av (f_v W_v^2) + f_a``, ``A^fuse = W^va (f_a W_a^2) + f_v``.

**M_ij = 0.** A row softmax is strictly positive in exact arithmetic, but it can underflow to 0 in
floating point, making Eq. 4 divide by zero; and where M_ij is tiny but positive, the gradient
theta |i - j| / M_ij^2 overflows to infinity and, times the weight's 0, gives NaN. M is therefore clamped
below at ``MIN_ATTENTION`` = 1e-6 before dividing. No weight changes noticeably: on the diagonal
(|i - j| = 0) it stays exp(0) = 1, and elsewhere exp(-theta |i - j| / M_ij) is below exp(-300) ~ 5e-131
for every M_ij below 1e-4 (theta = 0.03): 0 in float32, the limit of Eq. 4 as M_ij -> 0+.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from avsurv.constants import TACMA_THETA
from avsurv.heads.layers import BUILD_ORDER
from avsurv.heads.targets import IGNORE, Targets

MIN_ATTENTION = 1e-6
"""Floor of M_ij in Eq. 4 (see the module docstring)."""
DEFAULT_HIDDEN = 128
"""d_h of the queries/keys and d_e of the fused features; the paper does not give them. Small for CPU."""


def temporal_weights(attention: torch.Tensor, theta: float = TACMA_THETA) -> torch.Tensor:
    """Eq. 4: ``W_ij = exp(-theta |i - j| / M_ij)`` for attention matrices [..., T, T] (see the M_ij = 0 note)."""
    if attention.ndim < 2 or attention.shape[-1] != attention.shape[-2]:
        raise ValueError(f"attention must be [..., T, T], got {list(attention.shape)}")
    if theta < 0:
        raise ValueError(f"theta must be >= 0, got {theta}")
    steps = torch.arange(attention.shape[-1], device=attention.device, dtype=attention.dtype)
    distance = (steps[:, None] - steps[None, :]).abs()
    return torch.exp(-theta * distance / attention.clamp_min(MIN_ATTENTION))


def adaptive_attention(query_audio: torch.Tensor, query_visual: torch.Tensor, scale: float,
                       theta: float = TACMA_THETA) -> dict[str, torch.Tensor]:
    """Eq. 3-5 from the projected features [B, T, d_h]: {"av": W^av, "va": W^va}, each [B, T, T]."""
    scores = query_audio @ query_visual.transpose(1, 2) / scale
    attention = {"av": F.relu(scores).softmax(dim=-1), "va": F.relu(scores.transpose(1, 2)).softmax(dim=-1)}
    return {name: temporal_weights(m, theta) * m for name, m in attention.items()}


class TACMA(nn.Module):
    """Per-segment class logits from audio and visual features of one window.

    ``forward({"audio": f_a, "visual": f_v})`` with both [B, T, D] returns ``{"audio": f_{a<-v},
    "visual": f_{v<-a}`` ([B, T, hidden]), ``"attention": {"av", "va"}`` ([B, T, T]) and ``"logits"``
    ([B, T, classes])}.
    """

    def __init__(self, dim: int, classes: int, hidden: int = DEFAULT_HIDDEN, theta: float = TACMA_THETA,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if dim < 1 or classes < 2 or hidden < 1 or theta < 0 or not 0 <= dropout < 1:
            raise ValueError(f"TACMA needs dim, hidden >= 1, classes >= 2, theta >= 0 and dropout in [0, 1), "
                             f"got {dim}, {hidden}, {classes}, {theta}, {dropout}")
        self.theta, self.scale = theta, math.sqrt(dim)  # Eq. 3 scales by sqrt(d_l), d_l the feature size
        self.query = nn.ModuleDict({m: nn.Linear(dim, hidden, bias=False) for m in BUILD_ORDER})  # W^1
        self.value = nn.ModuleDict({m: nn.Linear(dim, dim, bias=False) for m in BUILD_ORDER})  # W^2
        self.output = nn.ModuleDict({m: nn.Sequential(nn.Linear(dim, hidden), nn.LayerNorm(hidden))
                                     for m in BUILD_ORDER})  # W^3 and layernorm, Eq. 7
        self.classifier = nn.Sequential(  # Eq. 8, the three-layer MLP
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, classes),
        )

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | dict[str, torch.Tensor]]:
        f_a, f_v = features["audio"], features["visual"]
        weighted = adaptive_attention(self.query["audio"](f_a), self.query["visual"](f_v), self.scale, self.theta)
        v_fuse = weighted["av"] @ self.value["visual"](f_v) + f_a
        a_fuse = weighted["va"] @ self.value["audio"](f_a) + f_v
        fused = {"visual": self.output["visual"](v_fuse), "audio": self.output["audio"](a_fuse)}
        return {**fused, "attention": weighted, "logits": self.classifier(fused["visual"] + fused["audio"])}

    def loss(self, outputs: dict, targets: Targets) -> dict[str, torch.Tensor]:
        """Eq. 9: cross-entropy of the labelled segments, mean over them."""
        logits = outputs["logits"]
        ce = F.cross_entropy(logits.flatten(0, 1), targets.segments.flatten(), ignore_index=IGNORE)
        return {"total": ce, "ce": ce}

    def predict(self, outputs: dict) -> torch.Tensor:
        """Class probabilities [B, T, classes]."""
        return outputs["logits"].softmax(dim=-1)

"""AVACA: audio-visual anomaly cross-attention (Leporowski et al. 2023, section IV).

A weakly supervised anomaly head: trained from one anomalous/normal label per window, it scores every
segment of the window in (0, 1).

- Stage 1, per modality: two convolutions over time give V' and P'. The paper's visual stage 1 is 2D
  convolutions over SlowFast feature maps; the embeddings here are pooled vectors, so both paths use 1D
  convolutions along the segments.
- The difference sequence ``u_i = p'_{i+1} - p'_i`` (T - 1 items) keeps what changes in the audio.
- VAT, in the visual path: ``Q = P'``, ``K = V = V'`` (the full audio sequence queries the visual one, as
  listed in section IV-D); AVT, in the audio path: ``Q = V'``, ``K = V = U`` (the "focused audio path").
  Each is a Transformer layer with ``AVACA_HEADS`` heads.
- Stage 2, per path: two 1D convolutions; the two outputs are concatenated and a fully connected layer
  with a sigmoid gives each segment's anomaly score.

Loss: ``theta L_DMIL + lambda L_c`` (Eq. 1-2, ``dmil_loss`` and ``center_loss``), each the mean over the
windows of a batch.
"""

from __future__ import annotations

import torch
from torch import nn

from avsurv.constants import AVACA_HEADS, AVACA_LAMBDA, AVACA_THETA
from avsurv.heads.layers import BUILD_ORDER, CrossAttention
from avsurv.heads.losses import DMIL_ALPHA, center_loss, dmil_loss
from avsurv.heads.targets import IGNORE, Targets

DEFAULT_HIDDEN = 128
"""Channels of the convolutions and the transformers; the paper does not state them. Small for CPU."""
KERNEL = 3
"""Temporal kernel of every convolution, padded so that each stage keeps the T segments."""


def difference_sequence(p: torch.Tensor) -> torch.Tensor:
    """``u_i = p_{i+1} - p_i``: [B, T, d] -> [B, T - 1, d]."""
    if p.ndim != 3 or p.shape[1] < 2:
        raise ValueError(f"the difference sequence needs [B, T >= 2, d], got {list(p.shape)}")
    return p[:, 1:] - p[:, :-1]


def _temporal_convolutions(channels_in: int, channels: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(channels_in, channels, KERNEL, padding=KERNEL // 2), nn.ReLU(), nn.Dropout(dropout),
        nn.Conv1d(channels, channels, KERNEL, padding=KERNEL // 2), nn.ReLU(),
    )


class AVACA(nn.Module):
    """``forward({"audio", "visual"} [B, T, D])`` returns ``{"visual": tau'_VAT, "audio": tau'_AVT``
    [B, T, hidden], ``"scores"`` [B, T] in (0, 1)}."""

    def __init__(self, dim: int, hidden: int = DEFAULT_HIDDEN, heads: int = AVACA_HEADS, dropout: float = 0.1,
                 alpha: float = DMIL_ALPHA, theta: float = AVACA_THETA, lambda_: float = AVACA_LAMBDA) -> None:
        super().__init__()
        if dim < 1 or hidden < 1 or hidden % heads or alpha <= 0 or theta < 0 or lambda_ < 0:
            raise ValueError(f"AVACA needs dim >= 1, hidden divisible by heads, alpha > 0 and loss weights "
                             f">= 0; got {dim}, {hidden}, {heads}, {alpha}, {theta}, {lambda_}")
        self.alpha, self.theta, self.lambda_ = alpha, theta, lambda_
        self.stage1 = nn.ModuleDict({m: _temporal_convolutions(dim, hidden, dropout) for m in BUILD_ORDER})
        self.vat = CrossAttention(hidden, heads, dropout)
        self.avt = CrossAttention(hidden, heads, dropout)
        self.stage2 = nn.ModuleDict({m: _temporal_convolutions(hidden, hidden, dropout) for m in BUILD_ORDER})
        self.score = nn.Linear(2 * hidden, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # Conv1d convolves the last axis: [B, T, D] -> [B, D, T] and back.
        v1, p1 = (self.stage1[m](features[m].transpose(1, 2)).transpose(1, 2) for m in ("visual", "audio"))
        paths = {"visual": self.vat(query=p1, context=v1),
                 "audio": self.avt(query=v1, context=difference_sequence(p1))}
        stage2 = {m: self.stage2[m](x.transpose(1, 2)).transpose(1, 2) for m, x in paths.items()}
        scores = torch.sigmoid(self.score(torch.cat([stage2["visual"], stage2["audio"]], dim=-1))).squeeze(-1)
        return {**stage2, "scores": scores}

    def loss(self, outputs: dict[str, torch.Tensor], targets: Targets) -> dict[str, torch.Tensor]:
        """``theta L_DMIL + lambda L_c`` over the windows with a label."""
        labelled = targets.windows != IGNORE
        scores, labels = outputs["scores"][labelled], targets.windows[labelled]
        parts = {"dmil": dmil_loss(scores, labels, self.alpha), "center": center_loss(scores, labels)}
        parts["total"] = self.theta * parts["dmil"] + self.lambda_ * parts["center"]
        return parts

    def predict(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Anomaly scores [B, T] in (0, 1)."""
        return outputs["scores"]

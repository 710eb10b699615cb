"""Pieces shared by the heads: the order they build per-modality layers in, and the CCLN and AVACA
Transformer layers."""

from __future__ import annotations

from typing import Final

import torch
from torch import nn

from avsurv.constants import AUDIO, VISUAL

BUILD_ORDER: Final = (AUDIO, VISUAL)
"""Audio, then visual (not ``MODALITIES``' order): the order every head creates its per-modality layers and
buffers in (and CCLN runs them in), which fixes a seeded head's initial weights, its dropout draws and the
key order of its saved state dict."""


class SelfAttention(nn.Module):
    """``Sa(x) = x + MultiHeadAttention(x, x, x)``: the residual keeps each segment's own features."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attention(x, x, x, need_weights=False)[0]


class FeedForward(nn.Module):
    """``Fl(x) = x + W_2 ReLU(W_1 x)``, position-wise, with the Transformer's residual."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class Integration(nn.Sequential):
    """``Ln(Fl(Sa(x)))``: CCLN Eq. 11-12 and 25-26."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__(SelfAttention(dim, heads, dropout), FeedForward(dim, dropout), nn.LayerNorm(dim))


class CrossAttention(nn.Module):
    """One Transformer layer whose queries come from one sequence and keys and values from another:
    ``x = Ln(q + MHA(q, kv, kv))``, output ``Ln(Fl(x))``. Shapes: [B, Tq, d], [B, Tkv, d] -> [B, Tq, d]."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(FeedForward(dim, dropout), nn.LayerNorm(dim))

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.norm(query + self.attention(query, context, context, need_weights=False)[0])
        return self.feed_forward(x)

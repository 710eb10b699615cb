"""Embedding standardisation: a parameter-free last layer that removes the clips' common mode.

``z -> BatchNorm1d(z, affine=False) / sqrt(D)``: each dimension is centred and scaled over the clips,
and the whole vector divided by sqrt(D) so a typical embedding has norm about 1, the scale of the loss
margin tau. Why: trained from scratch on a fixed camera, both encoders first map every clip to nearly
the same vector (the visual spread across clips measured 3e-4 of its norm), and the contrastive loss
sat on that plateau for epochs; standardised, the per-clip differences are what the distance sees.
It has no parameters, so embeddings keep their per-clip magnitude (EPG section 5.4.2) and the
encoder's other weights are unchanged.
"""

import math

import torch
from torch import nn


class EmbeddingStandardizer(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.norm(z) * self.scale


def standardizer(enabled: bool, dim: int) -> nn.Module:
    """The standardiser, or an identity that adds nothing to the state dict."""
    return EmbeddingStandardizer(dim) if enabled else nn.Identity()

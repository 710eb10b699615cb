"""NT-Xent over two augmented views of each clip's sound: the audio encoder's own contrastive term.

Why (issue 12): cross-modal objectives (TPG, EPG, InfoNCE) only teach the audio encoder what the picture can
predict, and most of a street's labelled seconds are sounds with no picture (a siren round the corner).
Asking two differently disturbed views of one clip's log-mel to embed alike, and apart from the batch's
other clips (SimCLR, Chen et al. 2020), teaches it to tell sounds apart whether or not they are seen.
"""

from typing import Final

import torch
import torch.nn.functional as F
from torch import nn

VIEWS_TEMPERATURE: Final = 0.1
"""Softmax temperature of the views term (SimCLR's best for its batch sizes, Chen et al. 2020, Table 5)."""


class ViewsContrastiveLoss(nn.Module):
    """NT-Xent (Chen et al. 2020) on two views of each of B clips.

    With ``z = normalize([z_1; z_2])`` ([2B, D]) and ``s_ij = z_i . z_j / temperature``, each row's positive
    ``p(i)`` is the other view of its clip (``i + B`` or ``i - B``):
    ``L = -1/(2B) sum_i log( exp(s_i,p(i)) / sum_{j != i} exp(s_ij) )``.

    Shapes: ``z_1`` [B, D], ``z_2`` [B, D] (B >= 2) -> scalar.

    Example:
        >>> loss = ViewsContrastiveLoss(temperature=0.01)
        >>> z = 5.0 * torch.eye(4)
        >>> float(loss(z, z)) < 1e-6  # each view's twin is the only similar row
        True
    """

    def __init__(self, temperature: float = VIEWS_TEMPERATURE) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, z_1: torch.Tensor, z_2: torch.Tensor) -> torch.Tensor:
        if z_1.ndim != 2 or z_1.shape != z_2.shape or z_1.shape[0] < 2:
            raise ValueError(f"z_1 and z_2 must both be [B, D] with B >= 2, got {list(z_1.shape)} and "
                             f"{list(z_2.shape)}")
        n = z_1.shape[0]
        z = F.normalize(torch.cat([z_1, z_2]), dim=1)
        logits = (z @ z.T / self.temperature).fill_diagonal_(float("-inf"))
        twins = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
        return F.cross_entropy(logits, twins)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"

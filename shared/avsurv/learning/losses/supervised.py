"""Cross-entropy with the event labels: the supervised ceiling of the evaluation (issue 5), not a method of
the paper. The encoders are trained end to end through three linear classifiers, so that each modality's
embedding alone and the two together are made to separate the classes the linear probe is later fitted on.
"""

import torch
import torch.nn.functional as F
from torch import nn


class SupervisedLoss(nn.Module):
    """``L = 1/3 [CE(W_v zv, y) + CE(W_a za, y) + CE(W_av [zv, za], y)]``, each CE the mean over the batch.

    Shapes: ``z_v`` [B, D], ``z_a`` [B, D], ``targets`` int64 [B] in ``[0, classes)`` -> scalar.
    The three linear layers are this module's parameters, trained with the encoders.
    """

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        if dim < 1 or classes < 2:
            raise ValueError(f"needs dim >= 1 and at least 2 classes, got dim {dim} and {classes} classes")
        self.classes = classes
        self.heads = nn.ModuleDict({"visual": nn.Linear(dim, classes), "audio": nn.Linear(dim, classes),
                                    "av": nn.Linear(2 * dim, classes)})

    def forward(self, z_v: torch.Tensor, z_a: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if z_v.ndim != 2 or z_v.shape != z_a.shape:
            raise ValueError(f"z_v and z_a must both be [B, D], got {list(z_v.shape)} and {list(z_a.shape)}")
        if targets.shape != z_v.shape[:1] or targets.dtype != torch.int64:
            raise ValueError(f"targets must be int64 [{z_v.shape[0]}], got {targets.dtype} {list(targets.shape)}")
        if targets.min() < 0 or targets.max() >= self.classes:
            raise ValueError(f"targets must lie in [0, {self.classes}), got {int(targets.min())}..{int(targets.max())}")
        logits = (self.heads["visual"](z_v), self.heads["audio"](z_a), self.heads["av"](torch.cat([z_v, z_a], 1)))
        return sum(F.cross_entropy(x, targets) for x in logits) / len(logits)

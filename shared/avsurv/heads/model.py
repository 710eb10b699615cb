"""The head kinds and the module every head is wrapped in: standardised inputs, then the paper's network."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from avsurv.constants import MODALITIES
from avsurv.heads.avaca import AVACA
from avsurv.heads.ccln import CCLN
from avsurv.heads.layers import BUILD_ORDER
from avsurv.heads.tacma import TACMA
from avsurv.heads.targets import Targets

NETS: dict[str, type[nn.Module]] = {"tacma": TACMA, "ccln": CCLN, "avaca": AVACA}
KINDS = tuple(NETS)
LOCALIZATION_KINDS = ("tacma", "ccln")
"""Heads that classify segments (scored by segment-wise accuracy); AVACA scores anomalies (ROC-AUC)."""
SUPERVISIONS = {"tacma": ("full",), "ccln": ("full", "weak"), "avaca": ("weak",)}
"""Label settings of each paper; the first is the default."""
_STD_FLOOR = 1e-6
"""A constant embedding dimension is divided by 1 instead of ~0."""


class HeadModel(nn.Module):
    """``net`` behind per-dimension standardisation of each modality with the training clips' mean and std
    (buffers, so they travel with the weights)."""

    def __init__(self, net: nn.Module, dim: int) -> None:
        super().__init__()
        self.net = net
        for m in BUILD_ORDER:
            self.register_buffer(f"{m}_mean", torch.zeros(dim))
            self.register_buffer(f"{m}_std", torch.ones(dim))

    def fit_scale(self, features: dict[str, np.ndarray]) -> None:
        """Sets the mean and std of each modality from clips [N, D]."""
        for m in MODALITIES:
            std = features[m].std(axis=0)
            getattr(self, f"{m}_mean").copy_(torch.from_numpy(features[m].mean(axis=0)))
            getattr(self, f"{m}_std").copy_(torch.from_numpy(np.where(std > _STD_FLOOR, std, 1.0)))

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, Any]:
        return self.net({m: (features[m] - getattr(self, f"{m}_mean")) / getattr(self, f"{m}_std")
                         for m in MODALITIES})

    def loss(self, outputs: dict[str, Any], targets: Targets) -> dict[str, torch.Tensor]:
        return self.net.loss(outputs, targets)

    def predict(self, outputs: dict[str, Any]) -> torch.Tensor:
        """Class probabilities [B, T, classes] (localization) or anomaly scores [B, T]."""
        return self.net.predict(outputs)


def build_head(kind: str, arguments: dict[str, Any]) -> HeadModel:
    """A freshly initialised head of ``kind`` from its network's keyword arguments (which include ``dim``)."""
    return HeadModel(NETS[kind](**arguments), arguments["dim"])

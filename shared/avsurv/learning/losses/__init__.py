"""Pair labels and losses: EPG (Eq. 1, Eq. 4), the AV-BT and InfoNCE baselines, and the audio encoder's own
views term."""

from avsurv.learning.losses.avbt import (
    AVBT_LAMBDA,
    AVBTLoss,
    barlow_twins_objective,
    off_diagonal,
    per_video_cross_correlation,
)
from avsurv.learning.losses.contrastive import DEFAULT_TAU, MultiPositiveContrastiveLoss
from avsurv.learning.losses.infonce import INFONCE_TEMPERATURE, SymmetricInfoNCE
from avsurv.learning.losses.pairs import RULES, epg_labels, tpg_labels
from avsurv.learning.losses.supervised import SupervisedLoss
from avsurv.learning.losses.views import VIEWS_TEMPERATURE, ViewsContrastiveLoss

__all__ = [
    "AVBT_LAMBDA",
    "DEFAULT_TAU",
    "INFONCE_TEMPERATURE",
    "RULES",
    "VIEWS_TEMPERATURE",
    "AVBTLoss",
    "MultiPositiveContrastiveLoss",
    "SupervisedLoss",
    "SymmetricInfoNCE",
    "ViewsContrastiveLoss",
    "barlow_twins_objective",
    "epg_labels",
    "off_diagonal",
    "per_video_cross_correlation",
    "tpg_labels",
]

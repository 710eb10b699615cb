"""The anomaly score of EPG section 4.3 on embeddings: Eq. 5 between each clip's own ``z_v`` and ``z_a``,
and the :class:`~avsurv.learning.calibration.Calibration` fitted on the scores of clips taken as normal.
Apart from the calibration itself because these need torch, which the platform's registry does not."""

from __future__ import annotations

import numpy as np
import torch

from avsurv.constants import ANOMALY_STDS, W
from avsurv.errors import TaskError
from avsurv.learning.calibration import Calibration
from avsurv.learning.distance import distance


def clip_scores(z_v: np.ndarray, z_a: np.ndarray, w: float = W) -> np.ndarray:
    """float64 [N]: Eq. 5 between each clip's z_v and z_a, float32 [N, D] each."""
    with torch.no_grad():
        return distance(torch.from_numpy(z_v).double(), torch.from_numpy(z_a).double(), w).numpy()


def fit_calibration(z_v: np.ndarray, z_a: np.ndarray, *, w: float = W, stds: float = ANOMALY_STDS,
                    model_sha256: str = "") -> Calibration:
    """Calibration on clips taken as normal, float32 [N, D] each, all with audio."""
    if not 0.0 <= w <= 1.0:
        raise TaskError(f"the distance weight w must lie in [0, 1], got {w}")
    scores = clip_scores(np.asarray(z_v, dtype=np.float32), np.asarray(z_a, dtype=np.float32), w)
    return Calibration.of_scores(scores, w=w, stds=stds, model_sha256=model_sha256)

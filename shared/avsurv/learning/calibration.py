"""The anomaly score's calibration (EPG section 4.3), one per model version and, in the platform, per
camera: the mean and std of the Eq. 5 score ``d(z_v, z_a)`` over clips taken as normal, and the
threshold ``mean + stds * std`` above which a clip is anomalous. The weight ``w`` the scores were
computed with travels with the statistics: a score is only comparable with a threshold on its own scale.
Training writes one into the model directory; the platform's embedder fits one per camera; the
offline ``avsurv anomalies`` and the platform's detector both read thresholds only from here.

Plain numbers and JSON, no torch (the platform's registry holds these): the scores themselves and the fit
on embeddings are in :mod:`avsurv.learning.scores`."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from avsurv.constants import ANOMALY_STDS, W
from avsurv.errors import TaskError, read_json

CALIBRATION_FORMAT = "avsurv-calibration-v1"


@dataclass(frozen=True)
class Calibration:
    """Score statistics of normal clips of one model (its training clips, or one camera's stored clips);
    ``threshold = mean + stds * std`` on the scale of ``w``."""

    mean: float
    std: float
    stds: float = ANOMALY_STDS
    w: float = W
    clips: int = 0
    model_sha256: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std >= 0):
            raise TaskError(f"calibration needs a finite mean and std >= 0, got {self.mean} and {self.std}")
        if not (math.isfinite(self.stds) and 0.0 <= self.w <= 1.0):
            raise TaskError(f"calibration needs finite stds and w in [0, 1], got {self.stds} and {self.w}")

    @classmethod
    def of_scores(cls, scores: np.ndarray, *, w: float, stds: float = ANOMALY_STDS,
                  model_sha256: str = "") -> Calibration:
        """Mean and (population) std of Eq. 5 scores [N >= 2] computed with ``w``."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.size < 2:
            raise TaskError(f"calibration needs at least 2 clips with audio, got {scores.size}")
        return cls(mean=float(scores.mean()), std=float(scores.std()), stds=stds, w=w, clips=int(scores.size),
                   model_sha256=model_sha256)

    @property
    def threshold(self) -> float:
        return self.mean + self.stds * self.std

    def with_stds(self, stds: float) -> Calibration:
        """The same statistics with another multiple of std in the threshold."""
        return replace(self, stds=stds)

    def to_dict(self) -> dict[str, Any]:
        # The threshold is written for people reading the file; load() checks it still agrees.
        return {"format": CALIBRATION_FORMAT, **asdict(self), "threshold": self.threshold}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        path = Path(path)
        data = read_json(path, "calibration")
        try:
            return cls.from_dict(data)
        except TaskError as error:
            raise TaskError(f"{path}: {error}") from None

    @classmethod
    def from_dict(cls, data: Any) -> Calibration:
        """Reads :meth:`to_dict`'s output; anything else raises a one-line TaskError."""
        if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
            raise TaskError(f"not a calibration (format must be {CALIBRATION_FORMAT!r})")
        try:
            calibration = cls(mean=float(data["mean"]), std=float(data["std"]), stds=float(data["stds"]),
                              w=float(data["w"]), clips=int(data["clips"]),
                              model_sha256=str(data["model_sha256"]))
        except (KeyError, TypeError, ValueError) as error:
            raise TaskError(f"calibration: missing or bad field {error}") from None
        if "threshold" in data and not math.isclose(float(data["threshold"]), calibration.threshold,
                                                    rel_tol=1e-9, abs_tol=1e-12):
            raise TaskError(f"threshold {data['threshold']} is not mean + stds * std = {calibration.threshold}; "
                            "edit stds, not threshold")
        return calibration

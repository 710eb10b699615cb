"""Supervised heads on frozen clip embeddings, over windows of consecutive clips of one camera.

- ``tacma``: TACMA, temporally adaptive cross-modal attention (Ran et al. 2022), event localization;
- ``ccln``: CCLN, cross-modal contrastive learning network (Sun et al. 2025), event localization with
  segment labels or one label per window;
- ``avaca``: AVACA, audio-visual anomaly cross-attention (Leporowski et al. 2023), per-clip anomaly
  scores learned from window-level anomaly labels;
- ``losses``: focal, WCCL, DMIL and center losses; ``windows``: cutting streams into windows;
  ``labels``: anomaly labels and window-level (weak) labels;
- ``training``: train, save, load and apply any head; ``evaluate``: accuracy and ROC-AUC;
- ``stream``: a head applied to one camera's clips as they arrive (the platform's anomaly detector);
- ``cli``: ``avsurv heads train|eval|apply`` (``register_cli``).
"""

from .cli import register_cli
from .evaluate import HeadReport, evaluate_anomaly, evaluate_head, evaluate_localization
from .labels import ANOMALY, BACKGROUND, NORMAL, read_anomaly_labels
from .model import KINDS, LOCALIZATION_KINDS, SUPERVISIONS
from .stream import HeadStream, StreamPrediction
from .training import ClipPredictions, HeadSettings, TrainedHead, load_head, train_head
from .windows import DEFAULT_WINDOW, cut_windows

__all__ = [
    "ANOMALY", "BACKGROUND", "DEFAULT_WINDOW", "KINDS", "LOCALIZATION_KINDS", "NORMAL", "SUPERVISIONS",
    "ClipPredictions", "HeadReport", "HeadSettings", "HeadStream", "StreamPrediction", "TrainedHead",
    "cut_windows", "evaluate_anomaly", "evaluate_head", "evaluate_localization", "load_head",
    "read_anomaly_labels", "register_cli", "train_head",
]

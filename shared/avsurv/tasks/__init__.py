"""Downstream tasks on frozen clip embeddings (EPG sections 4.2, 4.3).

- ``anomalies``: d(z_v, z_a) events over a calibration (``avsurv.learning.calibration``), and the site
  novelty detector;
- ``search``: query by example with exclusion and separation windows;
- ``probe``: linear evaluation (segment-wise accuracy of a linear classifier);
- ``metrics``: ROC-AUC, precision@k, average precision, event precision and recall;
- ``cli``: the ``calibrate``, ``anomalies``, ``search`` and ``probe`` sub-commands (``register_cli``).

The embeddings file they read, the per-camera normalization and calibration live one floor down, in
``avsurv.learning``; per-second labels in ``avsurv.labels``.
"""

from .anomalies import AnomalyEvent, anomaly_scores, calibrate, detect
from .cli import register_cli
from .probe import LinearProbe, ProbeReport, evaluate_probe, train_probe
from .search import SearchResult, find_clip, parse_query, search, search_by_clip

__all__ = [
    "AnomalyEvent", "LinearProbe", "ProbeReport", "SearchResult",
    "anomaly_scores", "calibrate", "detect", "evaluate_probe", "find_clip", "parse_query", "register_cli",
    "search", "search_by_clip", "train_probe",
]

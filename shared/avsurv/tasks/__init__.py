"""Downstream tasks on frozen clip embeddings (EPG sections 4.2, 4.3).

- ``embeddings``: the per-clip embeddings file every task reads;
- ``anomalies``: d(z_v, z_a) scores, mean + 2 std calibration, merged anomalous events;
- ``search``: query by example with exclusion and separation windows;
- ``probe``: linear evaluation (segment-wise accuracy of a linear classifier);
- ``normalization``: per-camera running mean and variance of the embeddings, and standardizing with them;
- ``cli``: the ``calibrate``, ``anomalies``, ``search`` and ``probe`` sub-commands (``register_cli``).
"""

from .anomalies import AnomalyEvent, Calibration, anomaly_scores, calibrate, detect
from .cli import register_cli
from .embeddings import EmbeddingSet, TaskError, concat, load_many
from .normalization import CameraStats, SiteNormalization
from .probe import LinearProbe, ProbeReport, evaluate_probe, read_labels, train_probe
from .search import SearchResult, find_clip, parse_query, search, search_by_clip

__all__ = [
    "AnomalyEvent", "Calibration", "CameraStats", "EmbeddingSet", "LinearProbe", "ProbeReport", "SearchResult",
    "SiteNormalization", "TaskError",
    "anomaly_scores", "calibrate", "concat", "detect", "evaluate_probe", "find_clip", "load_many",
    "parse_query", "read_labels", "register_cli", "search", "search_by_clip", "train_probe",
]

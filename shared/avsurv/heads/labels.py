"""Segment labels, anomaly labels and the window-level (weak) labels derived from them.

Per-second labels come from ``read_labels`` (the ``label`` of each second, see ``avsurv.tasks.probe``).
Anomaly labels come from the ``anomaly`` field of each second of a ``ground_truth.json`` or from a CSV
with the header ``camera_id,t,anomaly`` (1/0, true/false, yes/no); they are kept as a ``Labels`` mapping
whose values are ``ANOMALY`` or ``NORMAL``, so ``clip_labels`` reads both kinds alike.

Weak (video-level) labels of a window, derived from its labelled seconds:
- class: the most frequent non-background label; a tie goes to the label seen first in the window;
  background when every labelled second is background;
- anomaly: anomalous if any labelled second is, normal if none is;
- class shares (CCLN's video label, computed in training): each class's share of the labelled seconds.
A window without any labelled second has no weak label.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from avsurv.errors import TaskError
from avsurv.heads.targets import IGNORE
from avsurv.labels import UNLABELLED, Labels, read_per_second

BACKGROUND = "background"
"""The generator's label of a second without any event (``avsurv synth``)."""
ANOMALY = "anomaly"
NORMAL = "normal"
_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")


def read_anomaly_labels(path: str | Path) -> Labels:
    """(camera_id, t) -> ``ANOMALY`` or ``NORMAL`` from a ``ground_truth.json`` or a ``camera_id,t,anomaly`` CSV."""
    return read_per_second(path, "anomaly", lambda source, value: ANOMALY if _flag(source, value) else NORMAL)


def _flag(path: Path, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise TaskError(f"{path}: anomaly must be 1/0, true/false or yes/no, got {value!r}")


def segment_targets(labels: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
    """int64 [W, L]: index of each position's label in ``classes``, ``IGNORE`` if unlabelled or unknown."""
    position = {name: index for index, name in enumerate(classes)}
    return np.vectorize(lambda label: position.get(label, IGNORE), otypes=[np.int64])(labels)


def window_class(labels: np.ndarray, background: str = BACKGROUND) -> np.ndarray:
    """str [W]: the weak class of each window of labels [W, L] (see the module docstring)."""
    return np.asarray([_weak_class(row.tolist(), background) for row in labels], dtype=np.str_)


def _weak_class(labels: list[str], background: str) -> str:
    known = [label for label in labels if label != UNLABELLED]
    events = [label for label in known if label != background]
    if events:
        return Counter(events).most_common(1)[0][0]  # Counter keeps first-seen order among ties
    return background if known else UNLABELLED


def window_anomaly(anomalies: np.ndarray) -> np.ndarray:
    """int64 [W]: 1 if any labelled second of a window of anomaly labels [W, L] is anomalous, 0 if none is,
    ``IGNORE`` if no second is labelled."""
    anomalous = (anomalies == ANOMALY).any(axis=1)
    labelled = (anomalies != UNLABELLED).any(axis=1)
    return np.where(labelled, anomalous.astype(np.int64), IGNORE)

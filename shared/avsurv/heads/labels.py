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

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np

from avsurv.heads.targets import IGNORE
from avsurv.tasks.embeddings import TaskError
from avsurv.tasks.probe import SCENE_FORMAT, UNLABELLED, Labels

BACKGROUND = "background"
"""The generator's label of a second without any event (``avsurv synth``)."""
ANOMALY = "anomaly"
NORMAL = "normal"
_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")


def read_anomaly_labels(path: str | Path) -> Labels:
    """(camera_id, t) -> ``ANOMALY`` or ``NORMAL`` from a ``ground_truth.json`` or a ``camera_id,t,anomaly`` CSV."""
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"{path}: no such label file")
    return _truth_anomalies(path) if path.suffix.lower() == ".json" else _csv_anomalies(path)


def _truth_anomalies(path: Path) -> Labels:
    try:
        truth = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TaskError(f"{path}: not JSON ({error})") from None
    if not isinstance(truth, dict) or truth.get("format") != SCENE_FORMAT:
        raise TaskError(f"{path}: not a ground-truth file (format must be {SCENE_FORMAT!r})")
    try:
        return {(str(camera), int(second["t"])): ANOMALY if _flag(path, second["anomaly"]) else NORMAL
                for camera, seconds in truth["seconds"].items() for second in seconds}
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise TaskError(f"{path}: bad 'seconds' entry ({error!r})") from None


def _csv_anomalies(path: Path) -> Labels:
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"camera_id", "t", "anomaly"} <= set(reader.fieldnames):
                raise TaskError(f"{path}: anomaly labels need a ground_truth.json or a CSV with the header "
                                "camera_id,t,anomaly")
            labels = {}
            for row in reader:
                try:
                    second = int(row["t"])
                except (TypeError, ValueError):
                    raise TaskError(f"{path}:{reader.line_num}: t must be a whole second, got {row['t']!r}") from None
                labels[(row["camera_id"], second)] = ANOMALY if _flag(path, row["anomaly"]) else NORMAL
            return labels
    except UnicodeDecodeError as error:
        raise TaskError(f"{path}: not a text file ({error})") from None


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

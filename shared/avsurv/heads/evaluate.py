"""Scores of trained heads: segment-wise accuracy (TACMA, CCLN) and ROC-AUC of anomaly scores (AVACA).

Accuracy is the share of labelled test clips whose predicted class is their label; classes seen only at
test time count as errors. ROC-AUC compares every clip's anomaly score with its second's anomaly label.
Test clips without a label are left out, as are clips in runs too short for a window ("uncovered").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from avsurv.errors import TaskError
from avsurv.heads.labels import ANOMALY
from avsurv.heads.model import LOCALIZATION_KINDS
from avsurv.heads.training import HeadSettings, TrainedHead, train_head
from avsurv.labels import UNLABELLED, Labels
from avsurv.learning.embeddings import EmbeddingSet
from avsurv.tasks.metrics import roc_auc
from avsurv.tasks.probe import clip_labels


@dataclass(frozen=True)
class SetResult:
    """One test set: ``clips`` labelled clips scored, ``truth`` and ``predicted`` their labels (or anomaly
    labels and scores), ``unlabelled`` and ``uncovered`` clips left out."""

    name: str
    truth: np.ndarray
    predicted: np.ndarray
    unlabelled: int
    uncovered: int

    @property
    def clips(self) -> int:
        return len(self.truth)


@dataclass(frozen=True)
class HeadReport:
    """Scores of one head on named test sets: ``metric`` is "accuracy" or "roc_auc"."""

    kind: str
    metric: str
    sets: tuple[SetResult, ...]
    majority_class: str | None
    """Localization heads: the most frequent training class, a baseline that always predicts it."""

    def score(self, result: SetResult) -> float:
        """Accuracy or ROC-AUC of one set; NaN where undefined (no clips, or only one anomaly label)."""
        if self.metric == "accuracy":
            return float((result.predicted == result.truth).mean()) if result.clips else math.nan
        return roc_auc(result.predicted.astype(np.float64), result.truth == ANOMALY)

    def scores(self) -> dict[str, float]:
        return {result.name: self.score(result) for result in self.sets}

    def overall(self) -> SetResult:
        """Every test set's clips together."""
        return SetResult("overall", np.concatenate([r.truth for r in self.sets]),
                         np.concatenate([r.predicted for r in self.sets]),
                         sum(r.unlabelled for r in self.sets), sum(r.uncovered for r in self.sets))

    def majority_accuracy(self) -> float:
        truth = self.overall().truth
        return float((truth == self.majority_class).mean()) if len(truth) else math.nan

    def to_dict(self) -> dict[str, Any]:
        sets = [*self.sets, self.overall()]
        report: dict[str, Any] = {
            "kind": self.kind, "metric": self.metric,
            "sets": [{"name": r.name, "clips": r.clips, self.metric: _json_number(self.score(r)),
                      "unlabelled": r.unlabelled, "uncovered": r.uncovered} for r in sets],
        }
        if self.majority_class is not None:
            report |= {"majority_class": self.majority_class,
                       "majority_accuracy": _json_number(self.majority_accuracy())}
        return report


def _json_number(value: float) -> float | None:
    """JSON has no NaN: an undefined score is null."""
    return None if math.isnan(value) else value


def evaluate_head(head: TrainedHead, tests: Mapping[str, EmbeddingSet], labels: Labels) -> HeadReport:
    """Scores ``head`` on each named test set; ``labels`` are class labels or anomaly labels to match it."""
    if not tests:
        raise TaskError("no test embedding sets")
    sets = tuple(_set_result(head, name, embeddings, labels) for name, embeddings in tests.items())
    if not sum(r.clips for r in sets):
        raise TaskError("no labelled test clips: check that the labels name the test cameras")
    if head.kind in LOCALIZATION_KINDS:
        counts = head.config["training"]["class_clips"]
        return HeadReport(head.kind, "accuracy", sets, max(sorted(counts), key=counts.__getitem__))
    return HeadReport(head.kind, "roc_auc", sets, None)


def _set_result(head: TrainedHead, name: str, embeddings: EmbeddingSet, labels: Labels) -> SetResult:
    predictions = head.predict(embeddings)
    truth = clip_labels(embeddings, labels)
    labelled = truth[predictions.rows] != UNLABELLED
    predicted = predictions.labels if head.kind in LOCALIZATION_KINDS else predictions.scores
    return SetResult(name, truth[predictions.rows][labelled], predicted[labelled], int((~labelled).sum()),
                     predictions.uncovered)


def evaluate_localization(kind: str, train: EmbeddingSet, tests: Mapping[str, EmbeddingSet], labels: Labels,
                          seed: int = 0, **settings: Any) -> dict[str, float]:
    """Trains a TACMA or CCLN head on ``train`` and returns the segment-wise accuracy of each test set.

    ``settings`` are further ``HeadSettings`` fields, e.g. ``supervision="weak"`` or ``window=10``.
    """
    if kind not in LOCALIZATION_KINDS:
        raise TaskError(f"localization heads are {', '.join(LOCALIZATION_KINDS)}, got {kind!r}")
    head = train_head(train, labels, HeadSettings(kind=kind, seed=seed, **settings))
    return evaluate_head(head, tests, labels).scores()


def evaluate_anomaly(train: EmbeddingSet, test: EmbeddingSet, anomaly_labels: Labels, seed: int = 0,
                     **settings: Any) -> float:
    """Trains an AVACA head on ``train`` with window-level (weak) anomaly labels derived from
    ``anomaly_labels`` (``read_anomaly_labels``) and returns the per-clip ROC-AUC on ``test``."""
    head = train_head(train, anomaly_labels, HeadSettings(kind="avaca", seed=seed, **settings))
    auc = evaluate_head(head, {"test": test}, anomaly_labels).scores()["test"]
    if math.isnan(auc):
        raise TaskError("ROC-AUC needs anomalous and normal test clips; the test set has only one kind")
    return auc

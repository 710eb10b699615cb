"""Linear evaluation of frozen embeddings: event localization (EPG section 4.2, Table 1).

A one-layer linear classifier is trained with cross-entropy on per-clip features of some cameras and
tested on others; the score is segment-wise accuracy, the share of clips classified correctly.
Features are ``visual`` (z_v), ``audio`` (z_a) or ``av`` (the concatenation [z_v, z_a]), standardised
with the training mean and std. The classifier is fitted full-batch with L-BFGS and an L2 penalty
(weight decay) from a seeded initialisation, so one seed gives one result. With ``per-camera``
normalization each camera's embeddings are first standardized with that camera's own statistics (no
labels), which removes the shift of the whole feature cloud from camera to camera (docs/METHOD.md,
"Measured: the encoders learn the camera"); ``paper`` (the default) keeps Table 1's protocol.

Labels come from the generator's ``ground_truth.json`` (one field of second floor(clip_start) of the
clip's camera, see LABEL_FIELDS) or from a CSV ``camera_id,t,<field>``. Each feature set is best scored on
what its modality can perceive (FEATURE_LABEL_FIELD): a visual probe cannot know a siren it only hears.
Clips without a label are skipped and counted; classes seen only at test time count as errors, since the
classifier cannot predict them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from avsurv.errors import TaskError
from avsurv.labels import UNLABELLED, Labels, csv_columns, labels_at
from avsurv.learning.embeddings import EmbeddingSet, concat
from avsurv.learning.normalization import CameraStats, SiteNormalization

FEATURES = ("av", "audio", "visual")
NORMALIZATIONS = ("paper", "per-camera")
"""``paper``: only the probe's scaler, fitted on the training clips (EPG Table 1); ``per-camera``: each
camera's embeddings first standardized with that camera's own statistics (``avsurv.learning.normalization``)."""
DEFAULT_STEPS = 100
DEFAULT_WEIGHT_DECAY = 1e-3

FEATURE_LABEL_FIELD = {"visual": "visual_label", "audio": "audio_label", "av": "label"}
"""The field each feature set is scored on by default: the classes its modality can perceive."""


def default_label_field(path: str | Path, features: str) -> str:
    """The field ``features`` is scored on by default: its own (FEATURE_LABEL_FIELD), but ``label`` for a
    CSV without that column, whose one ``label`` column then serves every feature set."""
    path = Path(path)
    field = FEATURE_LABEL_FIELD[features]
    if path.suffix.lower() == ".json" or not path.is_file() or field in csv_columns(path):
        return field
    return "label"


def clip_labels(embeddings: EmbeddingSet, labels: Labels) -> np.ndarray:
    """str [N]: label of second floor(clip_start) of each clip's camera, ``UNLABELLED`` where none."""
    return labels_at(embeddings.camera_id.tolist(), embeddings.clip_start, labels)


def clip_features(embeddings: EmbeddingSet, features: str) -> np.ndarray:
    """float32 [N, F]: z_v, z_a or [z_v, z_a]."""
    if features not in FEATURES:
        raise TaskError(f"features must be one of {', '.join(FEATURES)}, got {features!r}")
    parts = {"visual": [embeddings.z_v], "audio": [embeddings.z_a], "av": [embeddings.z_v, embeddings.z_a]}
    return np.concatenate(parts[features], axis=1)


@dataclass(frozen=True)
class LinearProbe:
    """A fitted linear classifier over standardised features."""

    classes: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    layer: torch.nn.Linear

    def predict(self, x: np.ndarray) -> np.ndarray:
        """str [N]: the predicted class of each feature row."""
        with torch.no_grad():
            logits = self.layer(torch.from_numpy((x - self.mean) / self.std))
        return np.asarray(self.classes, dtype=np.str_)[logits.argmax(dim=1).numpy()]


def train_probe(x: np.ndarray, y: np.ndarray, *, steps: int = DEFAULT_STEPS,
                weight_decay: float = DEFAULT_WEIGHT_DECAY, seed: int = 0) -> LinearProbe:
    """Fits ``softmax(W x + b)`` to labels ``y`` (str [N]) by full-batch L-BFGS, ``steps`` iterations.

    Loss: mean cross-entropy + weight_decay / 2 * ||W||^2 (the bias is not penalised).
    """
    if len(y) == 0:
        raise TaskError("no labelled training clips")
    if steps < 1 or weight_decay < 0:
        raise TaskError(f"steps must be >= 1 and weight decay >= 0, got {steps} and {weight_decay}")
    classes, targets = np.unique(y, return_inverse=True)
    mean, std = x.mean(axis=0), x.std(axis=0)
    # A constant feature is 0 after centring; dividing it by 1 instead of 0 keeps it finite.
    std = np.where(std > 0, std, 1.0).astype(np.float32)
    inputs = torch.from_numpy((x - mean) / std)
    labels = torch.from_numpy(targets.astype(np.int64))
    generator = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(x.shape[1], len(classes))
    with torch.no_grad():
        layer.weight.copy_(0.01 * torch.randn(layer.weight.shape, generator=generator))
        layer.bias.zero_()
    optimiser = torch.optim.LBFGS(layer.parameters(), max_iter=steps, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(layer(inputs), labels) + 0.5 * weight_decay * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return LinearProbe(tuple(classes.tolist()), mean, std, layer)


@dataclass(frozen=True)
class SetAccuracy:
    name: str
    clips: int
    correct: int
    skipped: int
    """Clips without a label, not counted in ``clips``."""

    @property
    def accuracy(self) -> float:
        return self.correct / self.clips if self.clips else math.nan


@dataclass(frozen=True)
class ProbeReport:
    """Accuracy of one probe; ``confusion[i, j]`` counts clips of class ``classes[i]`` predicted as ``j``."""

    features: str
    train_clips: int
    train_skipped: int
    sets: tuple[SetAccuracy, ...]
    classes: tuple[str, ...]
    """Training classes first, then classes seen only at test time."""
    confusion: np.ndarray
    majority_class: str
    majority_accuracy: float
    """Accuracy on the test clips of always predicting the most frequent training class."""
    normalization: str = "paper"

    @property
    def accuracy(self) -> float:
        """Over all labelled test clips."""
        return float(np.trace(self.confusion) / self.confusion.sum())

    def per_class(self) -> dict[str, tuple[int, float]]:
        """class -> (labelled test clips, accuracy); classes without test clips are left out."""
        support = self.confusion.sum(axis=1)
        return {name: (int(n), float(self.confusion[i, i] / n))
                for i, (name, n) in enumerate(zip(self.classes, support, strict=True)) if n}

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": self.features, "train_clips": self.train_clips, "train_skipped": self.train_skipped,
            "sets": [{"name": s.name, "clips": s.clips, "correct": s.correct, "skipped": s.skipped,
                      "accuracy": s.accuracy} for s in self.sets],
            "accuracy": self.accuracy,
            "per_class": {name: {"clips": n, "accuracy": acc} for name, (n, acc) in self.per_class().items()},
            "classes": list(self.classes), "confusion": self.confusion.tolist(),
            "majority_class": self.majority_class, "majority_accuracy": self.majority_accuracy,
            "normalization": self.normalization,
        }


def evaluate_probe(train: Sequence[EmbeddingSet], test: Mapping[str, EmbeddingSet], labels: Labels, *,
                   features: str = "av", steps: int = DEFAULT_STEPS, weight_decay: float = DEFAULT_WEIGHT_DECAY,
                   seed: int = 0, normalization: str = "paper") -> ProbeReport:
    """Trains on the labelled clips of ``train`` and scores each named set of ``test``, after normalizing
    the embeddings as ``normalization`` (one of NORMALIZATIONS) says."""
    if not test:
        raise TaskError("no test embedding sets")
    if normalization not in NORMALIZATIONS:
        raise TaskError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
    training = concat(train)
    for name, embeddings in test.items():
        if embeddings.model_sha256 != training.model_sha256 or embeddings.dim != training.dim:
            raise TaskError(f"test set {name} comes from another model than the training sets")
    if normalization == "per-camera":
        site = _per_camera(training, test)
        training, test = site.standardize(training), {name: site.standardize(s) for name, s in test.items()}
    x_train, y_train, train_skipped = _labelled(training, labels, features)
    probe = train_probe(x_train, y_train, steps=steps, weight_decay=weight_decay, seed=seed)
    truths, predictions, sets = [], [], []
    for name, embeddings in test.items():
        x, y, skipped = _labelled(embeddings, labels, features)
        predicted = probe.predict(x) if len(y) else np.asarray([], dtype=np.str_)
        sets.append(SetAccuracy(name, len(y), int((predicted == y).sum()), skipped))
        truths.append(y)
        predictions.append(predicted)
    truth, predicted = np.concatenate(truths), np.concatenate(predictions)
    if truth.size == 0:
        raise TaskError("no labelled test clips: check that the labels name the test cameras")
    test_only = sorted(set(truth.tolist()) - set(probe.classes))
    classes = (*probe.classes, *test_only)
    position = {name: i for i, name in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    cells = ([position[c] for c in truth.tolist()], [position[c] for c in predicted.tolist()])
    np.add.at(confusion, cells, 1)
    majority = Counter(y_train.tolist()).most_common(1)[0][0]
    return ProbeReport(features, len(y_train), train_skipped, tuple(sets), classes, confusion,
                       majority, float((truth == majority).mean()), normalization)


def _per_camera(training: EmbeddingSet, test: Mapping[str, EmbeddingSet]) -> SiteNormalization:
    """Each camera's statistics over its clips of every set, each clip once, labelled or not; the training
    clips pooled are the reference for cameras with too few clips."""
    clips = concat([training, *test.values()])
    _, first = np.unique(np.char.add(np.char.add(clips.source, "|"), clips.clip_id), return_index=True)
    clips = clips.select(np.sort(first))
    return SiteNormalization.fit(clips.camera_id, clips.z_v, clips.z_a,
                                 reference=CameraStats.of(training.z_v, training.z_a))


def _labelled(embeddings: EmbeddingSet, labels: Labels, features: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Features and labels of the labelled clips, and how many clips had no label."""
    y = clip_labels(embeddings, labels)
    known = y != UNLABELLED
    return clip_features(embeddings, features)[known], y[known], int((~known).sum())

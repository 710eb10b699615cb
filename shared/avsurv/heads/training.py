"""Training, saving, loading and applying any head on embedded clips.

A head is trained on windows of consecutive clips (``windows``) of an ``EmbeddingSet`` with per-second
labels: class labels (``read_labels``) for TACMA and CCLN, anomaly labels (``read_anomaly_labels``) for
AVACA. Training is seeded (weights, dropout and batch order) and runs on the CPU in seconds: Adam with
weight decay (AdamW) over mini-batches of windows for a fixed number of epochs. The papers train for
100-200 epochs at learning rates 1e-5 to 1e-3 on thousands of videos; the defaults here are sized for
a few hundred clips.

A trained head is a directory like an encoder's (``avsurv.learning.modeldir``): ``model.safetensors``
(weights and the input standardisation), ``config.json`` (kind, classes, network arguments, training
settings and history, the embedding model it was trained on) and ``model.sha256``, checked on load.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from avsurv.errors import ModelError, TaskError
from avsurv.heads.labels import (
    ANOMALY,
    BACKGROUND,
    NORMAL,
    segment_targets,
    window_anomaly,
    window_class,
)
from avsurv.heads.model import KINDS, LOCALIZATION_KINDS, SUPERVISIONS, HeadModel, build_head
from avsurv.heads.targets import IGNORE, Targets
from avsurv.heads.windows import DEFAULT_WINDOW, MIN_WINDOW, Windows, cut_windows, window_features
from avsurv.labels import UNLABELLED, Labels
from avsurv.learning.embeddings import EmbeddingSet
from avsurv.learning.modeldir import CONFIG, load_verified, save_weights
from avsurv.tasks.probe import clip_labels

FORMAT = "avsurv-head-v1"
DEFAULT_EPOCHS = 40
DEFAULT_BATCH = 8
DEFAULT_LR = 1e-3
DEFAULT_WEIGHT_DECAY = 1e-4
DEFAULT_HIDDEN = 128
DEFAULT_DROPOUT = 0.1
ANOMALY_SCORE = 0.5
"""AVACA's scores are probabilities (a sigmoid); a clip is labelled anomalous at or above this."""
_PREDICT_BATCH = 256
"""Windows per forward pass when predicting: bounds memory on long streams."""


@dataclass(frozen=True)
class HeadSettings:
    """How to train one head; ``supervision`` None means the kind's default (``SUPERVISIONS``).
    ``network``: further keyword arguments of the head's network (e.g. ``theta`` of TACMA, ``tau``,
    ``top_k``, ``lambda_``, ``eta`` of CCLN, ``alpha`` of AVACA), checked when the network is built."""

    kind: str
    supervision: str | None = None
    window: int = DEFAULT_WINDOW
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH
    lr: float = DEFAULT_LR
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    hidden: int = DEFAULT_HIDDEN
    dropout: float = DEFAULT_DROPOUT
    seed: int = 0
    background: str = BACKGROUND
    network: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TaskError(f"head must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.supervision is None:
            object.__setattr__(self, "supervision", SUPERVISIONS[self.kind][0])
        if self.supervision not in SUPERVISIONS[self.kind]:
            raise TaskError(f"{self.kind} is trained with {' or '.join(SUPERVISIONS[self.kind])} supervision, "
                            f"not {self.supervision!r}")
        checks = [(self.window >= MIN_WINDOW, f"window must hold at least {MIN_WINDOW} clips"),
                  (self.epochs >= 1, "epochs must be >= 1"), (self.batch_size >= 1, "batch size must be >= 1"),
                  (self.lr > 0 and math.isfinite(self.lr), "learning rate must be > 0"),
                  (self.weight_decay >= 0, "weight decay must be >= 0"),
                  (self.hidden >= 8 and self.hidden % 8 == 0, "hidden size must be a multiple of 8"),
                  (0 <= self.dropout < 1, "dropout must lie in [0, 1)"), (self.seed >= 0, "seed must be >= 0")]
        for ok, message in checks:
            if not ok:
                raise TaskError(message)


@dataclass(frozen=True)
class ClipPredictions:
    """What a head says about each clip it covers. ``rows`` int64 [M] index the embedding set (ascending);
    ``labels`` str [M]: the predicted class, or ``ANOMALY``/``NORMAL`` (score >= 0.5) for AVACA; ``scores``
    float64 [M]: the probability of that class, or the anomaly score; ``uncovered``: clips in runs shorter
    than ``MIN_WINDOW``, left without a prediction."""

    rows: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    uncovered: int


@dataclass
class _Group:
    """The training windows of one length, as tensors."""

    features: dict[str, torch.Tensor]
    targets: Targets

    def __len__(self) -> int:
        return int(self.targets.windows.shape[0])

    def take(self, index: np.ndarray) -> tuple[dict[str, torch.Tensor], Targets]:
        picked = torch.from_numpy(index)
        return ({m: x[picked] for m, x in self.features.items()},
                Targets(self.targets.segments[picked], self.targets.windows[picked], self.targets.shares[picked]))


class TrainedHead:
    """A head and its config; :meth:`predict` applies it to embedded clips."""

    def __init__(self, model: HeadModel, config: dict[str, Any]) -> None:
        self.model, self.config = model.eval(), config

    @property
    def kind(self) -> str:
        return self.config["kind"]

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.config["classes"])

    def predict(self, embeddings: EmbeddingSet) -> ClipPredictions:
        """Predictions for every clip in a window (see ``windows``) of ``embeddings``."""
        self._check_compatible(embeddings)
        rows, values = [], []
        for windows in cut_windows(embeddings, self.config["window"]):
            for start in range(0, len(windows), _PREDICT_BATCH):
                part = windows.select(np.arange(start, min(start + _PREDICT_BATCH, len(windows))))
                with torch.no_grad():
                    predicted = self.model.predict(self.model(window_features(embeddings, part)))
                rows.append(part.rows[part.owned])
                values.append(predicted[torch.from_numpy(part.owned)].double().numpy())
        if not rows:
            return ClipPredictions(np.zeros(0, np.int64), np.zeros(0, np.str_), np.zeros(0), len(embeddings))
        row, value = np.concatenate(rows), np.concatenate(values)
        order = np.argsort(row)
        labels, scores = self._decide(value[order])
        return ClipPredictions(row[order], labels, scores, len(embeddings) - len(row))

    def predict_window(self, z_v: np.ndarray, z_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels str [L] and scores float64 [L] (as in :class:`ClipPredictions`) of one window of L
        consecutive clips, from their z_v and z_a float32 [L, D]."""
        features = {"visual": torch.from_numpy(z_v[None]), "audio": torch.from_numpy(z_a[None])}
        with torch.no_grad():
            value = self.model.predict(self.model(features))[0].double().numpy()
        return self._decide(value)

    def _decide(self, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities [M, classes] -> most likely class and its probability; anomaly scores [M] ->
        ``ANOMALY`` at score >= 0.5, else ``NORMAL``, and the score."""
        if self.kind in LOCALIZATION_KINDS:
            return np.asarray(self.classes, dtype=np.str_)[value.argmax(axis=1)], value.max(axis=1)
        return np.where(value >= ANOMALY_SCORE, ANOMALY, NORMAL).astype(np.str_), value

    def _check_compatible(self, embeddings: EmbeddingSet) -> None:
        trained_on = self.config["embeddings"]
        if embeddings.dim != self.config["network"]["dim"]:
            raise TaskError(f"the head takes {self.config['network']['dim']}-d embeddings, got {embeddings.dim}-d")
        if embeddings.model_sha256 != trained_on["model_sha256"]:
            raise TaskError(f"embeddings of model {embeddings.model_sha256[:12]}... but the head was trained on "
                            f"embeddings of model {trained_on['model_sha256'][:12]}...; embed with that model")

    def save(self, directory: str | Path) -> str:
        """Writes the head directory; returns the weights' sha256."""
        return save_weights(self.model, Path(directory), self.config)

    @classmethod
    def load(cls, directory: str | Path) -> TrainedHead:
        """Reads a head directory, refusing weights that do not match ``model.sha256``."""
        state, config = load_verified(directory)
        if config.get("format") != FORMAT or config.get("kind") not in KINDS:
            raise ModelError(f"{directory} is not a head directory (its {CONFIG} has format "
                             f"{config.get('format')!r}, expected {FORMAT!r})")
        model = build_head(config["kind"], config["network"])
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise ModelError(f"{directory}: weights do not fit the {config['kind']} head of its config "
                             f"({str(error).splitlines()[0]})") from None
        return cls(model, config)


load_head = TrainedHead.load


def train_head(embeddings: EmbeddingSet, labels: Labels, settings: HeadSettings, *,
               progress: bool = False) -> TrainedHead:
    """Trains ``settings.kind`` on the windows of ``embeddings`` that have labels (see the module docstring)."""
    windows = cut_windows(embeddings, settings.window)
    names = clip_labels(embeddings, labels)
    if settings.kind in LOCALIZATION_KINDS:
        classes = _classes(names, windows)
        groups = [_localization_group(embeddings, w, names[w.rows], classes, settings) for w in windows]
    else:
        classes = ()
        groups = [_anomaly_group(embeddings, w, names[w.rows]) for w in windows]
    groups = [group for group in groups if len(group)]
    summary = _summary(groups, names, classes, settings)
    network = _network_arguments(settings, embeddings.dim, classes)
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        try:
            model = build_head(settings.kind, network)
        except (TypeError, ValueError) as error:  # an unknown or impossible network argument
            raise TaskError(f"{settings.kind} head: {error}") from None
        model.fit_scale({"audio": embeddings.z_a, "visual": embeddings.z_v})
        history = _fit(model, groups, settings, progress)
    config = {
        "format": FORMAT, "kind": settings.kind, "supervision": settings.supervision,
        "window": settings.window, "classes": list(classes), "network": network,
        "settings": asdict(settings),
        "embeddings": {"model_sha256": embeddings.model_sha256, "profile": embeddings.profile,
                       "method": embeddings.method},
        "training": {**summary, "clips": len(embeddings), "history": history},
    }
    return TrainedHead(model, config)


def _classes(names: np.ndarray, windows: list[Windows]) -> tuple[str, ...]:
    """The labels of the clips in training windows, sorted."""
    seen = set(np.concatenate([names[w.rows].ravel() for w in windows]).tolist()) if windows else set()
    classes = tuple(sorted(seen - {UNLABELLED}))
    if len(classes) < 2:
        raise TaskError(f"the training clips need labels of at least 2 classes, found {list(classes)}; check "
                        "that the labels name the training cameras")
    return classes


def _localization_group(embeddings: EmbeddingSet, windows: Windows, names: np.ndarray, classes: tuple[str, ...],
                        settings: HeadSettings) -> _Group:
    """``names`` str [W, L]: the label of each window position. Under weak supervision the segment targets
    are hidden (all ``IGNORE``): only the window-level class and class shares reach the loss."""
    segments = segment_targets(names, classes)
    weak = segment_targets(window_class(names, settings.background)[:, None], classes)[:, 0]
    counts = (segments[:, :, None] == np.arange(len(classes))).sum(axis=1)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    keep = weak != IGNORE  # a window has a weak class exactly when one of its seconds has a label
    if settings.supervision == "weak":
        segments = np.full_like(segments, IGNORE)
    return _group(embeddings, windows.select(keep), segments[keep], weak[keep], shares[keep])


def _anomaly_group(embeddings: EmbeddingSet, windows: Windows, names: np.ndarray) -> _Group:
    """``names`` str [W, L]: ``ANOMALY``, ``NORMAL`` or ``UNLABELLED`` for each window position."""
    anomalous = window_anomaly(names)
    keep = anomalous != IGNORE
    rows = windows.rows[keep]
    return _group(embeddings, windows.select(keep), np.full(rows.shape, IGNORE), anomalous[keep],
                  np.zeros((len(rows), 0)))


def _group(embeddings: EmbeddingSet, windows: Windows, segments: np.ndarray, weak: np.ndarray,
           shares: np.ndarray) -> _Group:
    return _Group(window_features(embeddings, windows),
                  Targets(torch.from_numpy(segments.astype(np.int64)), torch.from_numpy(weak.astype(np.int64)),
                          torch.from_numpy(shares.astype(np.float32))))


def _summary(groups: list[_Group], names: np.ndarray, classes: tuple[str, ...], settings: HeadSettings
             ) -> dict[str, Any]:
    """Counts of the training windows and labels (``names``: each clip's); rejects training data a head
    cannot learn from."""
    if not groups:
        raise TaskError("no training window has a label: check that the labels name the training cameras and "
                        f"that they hold runs of at least {MIN_WINDOW} consecutive clips")
    weak = torch.cat([g.targets.windows for g in groups]).tolist()
    if settings.kind not in LOCALIZATION_KINDS:
        anomalous = sum(weak)
        if anomalous == 0 or anomalous == len(weak):
            raise TaskError(f"AVACA needs anomalous and normal training windows, got {anomalous} anomalous of "
                            f"{len(weak)}; train on more clips or check the anomaly labels")
        return {"windows": len(weak), "anomalous_windows": anomalous}
    counts = Counter(names[names != UNLABELLED].tolist())
    return {"windows": len(weak), "class_clips": {name: counts[name] for name in classes},
            "window_classes": {classes[c]: n for c, n in sorted(Counter(weak).items())}}


def _network_arguments(settings: HeadSettings, dim: int, classes: tuple[str, ...]) -> dict[str, Any]:
    common = {**settings.network, "dim": dim, "hidden": settings.hidden, "dropout": settings.dropout}
    if settings.kind == "tacma":
        return {**common, "classes": len(classes)}
    if settings.kind == "ccln":
        background = classes.index(settings.background) if settings.background in classes else None
        return {**common, "classes": len(classes), "background": background, "supervision": settings.supervision}
    return common


def _fit(model: HeadModel, groups: list[_Group], settings: HeadSettings, progress: bool) -> list[dict[str, float]]:
    """Mini-batch AdamW for ``settings.epochs``; returns each epoch's mean loss terms."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay,
                                  foreach=True)
    order = np.random.default_rng(settings.seed)
    history: list[dict[str, float]] = []
    model.train()
    bar = tqdm(range(settings.epochs), desc=f"{settings.kind} ({settings.supervision})", unit="epoch",
               disable=not progress, leave=False)
    for _ in bar:
        sums: dict[str, float] = {}
        batches = [(g, part) for g, group in enumerate(groups)
                   for part in np.array_split(order.permutation(len(group)),
                                              math.ceil(len(group) / settings.batch_size))]
        for index in order.permutation(len(batches)):
            group, part = batches[index]
            features, targets = groups[group].take(part)
            parts = model.loss(model(features), targets)
            optimizer.zero_grad()
            parts["total"].backward()
            optimizer.step()
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + value.item() / len(batches)
        history.append(dict(sums))
        bar.set_postfix(loss=f"{sums['total']:.4f}")
    model.eval()
    return history


def describe(config: dict[str, Any]) -> str:
    """One line about a trained head."""
    training = config["training"]
    return (f"{config['kind']} head ({config['supervision']} supervision, windows of {config['window']} clips) "
            f"trained on {training['windows']} windows of {training['clips']} clips for "
            f"{config['settings']['epochs']} epochs; final loss {training['history'][-1]['total']:.4g}; "
            f"{json.dumps(config['classes']) if config['classes'] else 'anomaly scores'}")


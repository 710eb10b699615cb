"""Per-camera normalization of embeddings (docs/METHOD.md, "Measured: the encoders learn the camera, not
the objects", issue 12 item 4).

The encoders' whole feature cloud shifts from camera to camera; standardizing each camera's embeddings
with that camera's own per-dimension mean and variance (no labels needed) lifts cross-camera linear probes
several-fold. :class:`CameraStats` keeps those moments for both modalities as a running estimate that
merges batch by batch exactly (Chan, Golub and LeVeque 1979, the parallel form of Welford's update):

    n = n_a + n_b,   delta = mean_b - mean_a,
    mean = mean_a + delta * n_b / n,   M2 = M2_a + M2_b + delta^2 * n_a * n_b / n,   var = M2 / n,

so any split of the clips into batches gives the statistics of one pass over all of them. Every clip
counts in both modalities, those without audio included: their silent ``z_a`` is what the camera's audio
embeddings hold for those seconds, and probes and search use them alike.

**Decision**: a camera with fewer than ``MIN_CLIPS`` clips is standardized with the reference statistics
(the training cameras' clips pooled), i.e. the paper's protocol, not with its own. A camera that has only
seen one event so far would otherwise take that event as its mean and standardize it away; and leaving
its embeddings as they are would put them on another scale than every standardized camera's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from avsurv.constants import AUDIO, MODALITIES, VISUAL
from avsurv.errors import TaskError, read_json
from avsurv.learning.embeddings import EmbeddingSet

MIN_CLIPS = 60
"""A minute of clips: fewer than this and a camera falls back to the reference statistics."""
EPS = 1e-5
"""Added to the variance before the square root, so a constant dimension stays finite (BatchNorm's value)."""
STATS_FORMAT = "avsurv-camera-stats-v1"
CAMERA, NONE = "camera", "none"
NORMALIZATIONS = (CAMERA, NONE)
"""The platform's ``normalization`` setting: the embedder stores and publishes each camera's embeddings
standardized with that camera's statistics (``camera``), or as the model gives them (``none``)."""


@dataclass(frozen=True, eq=False)
class CameraStats:
    """Per-dimension mean and sum of squared deviations (M2) of one camera's ``count`` clips, float64 [D]
    per modality in ``MODALITIES``."""

    count: int
    mean: Mapping[str, np.ndarray]
    m2: Mapping[str, np.ndarray]

    @classmethod
    def of(cls, z_v: np.ndarray, z_a: np.ndarray) -> CameraStats:
        """The statistics of one batch of clips, ``z_v`` and ``z_a`` [N >= 1, D] each."""
        batch = {"visual": np.asarray(z_v, dtype=np.float64), "audio": np.asarray(z_a, dtype=np.float64)}
        shape = batch["visual"].shape
        if batch["audio"].shape != shape or len(shape) != 2 or 0 in shape:
            raise TaskError(f"camera statistics need z_v and z_a of one shape [N >= 1, D >= 1], got "
                            f"{list(shape)} and {list(batch['audio'].shape)}")
        means = {m: z.mean(axis=0) for m, z in batch.items()}
        return cls(shape[0], means, {m: ((z - means[m]) ** 2).sum(axis=0) for m, z in batch.items()})

    @property
    def dim(self) -> int:
        return int(self.mean[MODALITIES[0]].shape[0])

    @property
    def var(self) -> dict[str, np.ndarray]:
        """Population variance per modality (numpy's default, ddof 0)."""
        return {m: self.m2[m] / self.count for m in MODALITIES}

    def merged(self, other: CameraStats) -> CameraStats:
        """The statistics of both sets of clips together (Chan et al.'s exact merge)."""
        if other.dim != self.dim:
            raise TaskError(f"cannot merge {self.dim}-d and {other.dim}-d camera statistics")
        count = self.count + other.count
        delta = {m: other.mean[m] - self.mean[m] for m in MODALITIES}
        mean = {m: self.mean[m] + delta[m] * (other.count / count) for m in MODALITIES}
        m2 = {m: self.m2[m] + other.m2[m] + delta[m] ** 2 * (self.count * other.count / count) for m in MODALITIES}
        return CameraStats(count, mean, m2)

    def updated(self, z_v: np.ndarray, z_a: np.ndarray) -> CameraStats:
        """These statistics with one more batch of clips."""
        return self.merged(CameraStats.of(z_v, z_a))

    def standardize(self, z_v: np.ndarray, z_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``(z - mean) / sqrt(var + EPS)`` of each modality."""
        var = self.var
        scaled = {m: (np.asarray(z, dtype=np.float64) - self.mean[m]) / np.sqrt(var[m] + EPS)
                  for m, z in ((VISUAL, z_v), (AUDIO, z_a))}
        return scaled[VISUAL].astype(np.float32), scaled[AUDIO].astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        var = self.var
        return {"count": self.count,
                **{m: {"mean": self.mean[m].tolist(), "var": var[m].tolist()} for m in MODALITIES}}

    @classmethod
    def from_dict(cls, data: Any) -> CameraStats:
        """Reads :meth:`to_dict`'s output; anything else raises a one-line TaskError."""
        if not isinstance(data, dict) or not all(isinstance(data.get(m), dict) for m in MODALITIES):
            raise TaskError(f"camera statistics need count, {' and '.join(MODALITIES)} {{mean, var}}")
        count = data.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise TaskError(f"camera statistics need a whole count >= 1, got {count!r}")
        mean = {m: _vector(data[m], "mean", m) for m in MODALITIES}
        var = {m: _vector(data[m], "var", m) for m in MODALITIES}
        if len({v.shape for v in (*mean.values(), *var.values())}) != 1:
            raise TaskError(f"camera statistics: mean and var of {' and '.join(MODALITIES)} must have one length")
        if any((v < 0).any() for v in var.values()):
            raise TaskError("camera statistics: a variance is negative")
        return cls(count, mean, {m: var[m] * count for m in MODALITIES})


def standardized(x: np.ndarray) -> np.ndarray:
    """float32 copy of one set of features ``x`` [N >= 1, D] standardized with its own per-dimension mean and
    variance, as :class:`CameraStats` standardizes a modality."""
    return CameraStats.of(x, x).standardize(x, x)[0]


def _vector(data: dict[str, Any], key: str, modality: str) -> np.ndarray:
    try:
        vector = np.asarray(data[key], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise TaskError(f"camera statistics: {modality} {key} must be a list of numbers") from None
    if vector.ndim != 1 or vector.size == 0 or not np.isfinite(vector).all():
        raise TaskError(f"camera statistics: {modality} {key} must be a non-empty list of finite numbers")
    return vector


def per_camera(camera_ids: Sequence[str] | np.ndarray, z_v: np.ndarray, z_a: np.ndarray) -> dict[str, CameraStats]:
    """camera_id -> the statistics of that camera's rows of ``z_v`` and ``z_a`` [N, D]."""
    cameras = np.asarray(camera_ids, dtype=np.str_)
    return {str(camera): CameraStats.of(z_v[cameras == camera], z_a[cameras == camera])
            for camera in np.unique(cameras)}


def merged_per_camera(known: Mapping[str, CameraStats], batch: Mapping[str, CameraStats]) -> dict[str, CameraStats]:
    """``known`` with each camera of ``batch`` merged in."""
    return {**known, **{camera: known[camera].merged(stats) if camera in known else stats
                        for camera, stats in batch.items()}}


@dataclass(frozen=True, eq=False)
class SiteNormalization:
    """Each camera's statistics, and the reference ones (the training cameras' clips pooled) for cameras
    with fewer than ``MIN_CLIPS`` clips."""

    reference: CameraStats
    cameras: Mapping[str, CameraStats] = field(default_factory=dict)
    model_sha256: str = ""

    @classmethod
    def fit(cls, camera_ids: Sequence[str] | np.ndarray, z_v: np.ndarray, z_a: np.ndarray, *,
            reference: CameraStats | None = None, model_sha256: str = "") -> SiteNormalization:
        """Each camera's statistics over its clips; ``reference`` defaults to all the clips pooled."""
        pooled = CameraStats.of(z_v, z_a) if reference is None else reference
        return cls(pooled, per_camera(camera_ids, z_v, z_a), model_sha256)

    @classmethod
    def of_cameras(cls, cameras: Mapping[str, CameraStats], model_sha256: str = "") -> SiteNormalization:
        """From each camera's statistics; the reference is all of them pooled (merged exactly)."""
        if not cameras:
            raise TaskError("site normalization needs the statistics of at least one camera")
        stats = list(cameras.values())
        reference = stats[0]
        for other in stats[1:]:
            reference = reference.merged(other)
        return cls(reference, dict(cameras), model_sha256)

    def stats_for(self, camera_id: str) -> CameraStats:
        """The camera's own statistics once it has ``MIN_CLIPS`` clips, else the reference ones."""
        own = self.cameras.get(camera_id)
        return own if own is not None and own.count >= MIN_CLIPS else self.reference

    def standardize(self, embeddings: EmbeddingSet) -> EmbeddingSet:
        """A copy whose z_v and z_a are standardized with each clip's camera's statistics."""
        z_v, z_a = self.standardize_rows(embeddings.camera_id, embeddings.z_v, embeddings.z_a)
        return replace(embeddings, z_v=z_v, z_a=z_a)

    def standardize_rows(self, camera_ids: Sequence[str] | np.ndarray, z_v: np.ndarray,
                         z_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 copies of ``z_v`` and ``z_a`` [N, D], each row standardized with its camera's statistics."""
        cameras = np.asarray(camera_ids, dtype=np.str_)
        out_v, out_a = np.array(z_v, dtype=np.float32), np.array(z_a, dtype=np.float32)
        for camera in np.unique(cameras):
            rows = cameras == camera
            out_v[rows], out_a[rows] = self.stats_for(str(camera)).standardize(out_v[rows], out_a[rows])
        return out_v, out_a

    def to_dict(self) -> dict[str, Any]:
        return {"format": STATS_FORMAT, "model_sha256": self.model_sha256, "reference": self.reference.to_dict(),
                "cameras": {camera: stats.to_dict() for camera, stats in sorted(self.cameras.items())}}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict()) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> SiteNormalization:
        """Reads a file written by :meth:`save`; any problem raises a one-line TaskError naming the file."""
        path = Path(path)
        data = read_json(path, "camera statistics")
        if not isinstance(data, dict) or data.get("format") != STATS_FORMAT:
            raise TaskError(f"{path}: not a camera statistics file (format must be {STATS_FORMAT!r})")
        if not isinstance(data.get("cameras"), dict) or not isinstance(data.get("model_sha256"), str):
            raise TaskError(f"{path}: needs a 'cameras' object and a 'model_sha256' string")
        reference = _read_stats(path, "reference", data.get("reference"))
        cameras = {str(camera): _read_stats(path, f"camera {camera}", stats)
                   for camera, stats in data["cameras"].items()}
        if any(stats.dim != reference.dim for stats in cameras.values()):
            raise TaskError(f"{path}: every camera's statistics must have the reference's {reference.dim} dimensions")
        return cls(reference, cameras, data["model_sha256"])


def _read_stats(path: Path, name: str, data: Any) -> CameraStats:
    try:
        return CameraStats.from_dict(data)
    except TaskError as error:
        raise TaskError(f"{path}: {name}: {error}") from None

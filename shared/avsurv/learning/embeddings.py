"""Per-clip embeddings on disk: the input of every downstream task (EPG sections 4.2, 4.3).

An embeddings file is one ``.npz`` without pickles (``np.load(allow_pickle=False)`` reads it) holding
aligned arrays, one row per 1-second clip:

- ``clip_start`` float64 [N]: media seconds of the clip in its source;
- ``z_v`` float32 [N, D]: visual embedding (mean over the two crops), not normalised;
- ``z_a`` float32 [N, D]: audio embedding, not normalised;
- ``clip_id``, ``camera_id``, ``source`` unicode [N];
- ``capture_time`` float64 [N]: epoch seconds, NaN when unknown;
- ``has_audio`` bool [N]: False where the clip's audio was missing (its log-mel is silence);
- scalars ``model_sha256``, ``profile``, ``method`` (unicode) and ``format``.

D is ``EMBEDDING_DIM`` (512) for EPG models; any D is accepted as long as ``z_v`` and ``z_a`` agree,
because Eq. 5 compares them with each other.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avsurv.errors import TaskError

FORMAT = "avsurv-embeddings-v1"

_FLOAT_FIELDS = ("clip_start", "capture_time")
_EMBEDDING_FIELDS = ("z_v", "z_a")
_STRING_FIELDS = ("clip_id", "camera_id", "source")
ARRAY_FIELDS = ("clip_start", "z_v", "z_a", "clip_id", "camera_id", "capture_time", "has_audio", "source")
META_FIELDS = ("model_sha256", "profile", "method")



@dataclass(eq=False)
class EmbeddingSet:
    """Aligned per-clip arrays; the constructor converts dtypes and rejects inconsistent shapes."""

    clip_start: np.ndarray
    z_v: np.ndarray
    z_a: np.ndarray
    clip_id: np.ndarray
    camera_id: np.ndarray
    capture_time: np.ndarray
    has_audio: np.ndarray
    source: np.ndarray
    model_sha256: str = ""
    profile: str = ""
    method: str = ""

    def __post_init__(self) -> None:
        try:
            for name in _FLOAT_FIELDS:
                setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64))
            for name in _EMBEDDING_FIELDS:
                setattr(self, name, np.asarray(getattr(self, name), dtype=np.float32))
            for name in _STRING_FIELDS:
                setattr(self, name, np.asarray(getattr(self, name), dtype=np.str_))
            self.has_audio = np.asarray(self.has_audio, dtype=bool)
        except (TypeError, ValueError) as error:
            raise TaskError(f"embedding set: an array has the wrong type ({error})") from None
        problem = self._problem()
        if problem:
            raise TaskError(f"embedding set: {problem}")

    def _problem(self) -> str | None:
        """The first inconsistency, or None."""
        if self.z_v.ndim != 2 or self.z_a.ndim != 2:
            return f"z_v and z_a must be [N, D], got {list(self.z_v.shape)} and {list(self.z_a.shape)}"
        if self.z_v.shape != self.z_a.shape or self.z_v.shape[1] == 0:
            return f"z_v {list(self.z_v.shape)} and z_a {list(self.z_a.shape)} must have one shape [N, D > 0]"
        rows = self.z_v.shape[0]
        for name in ARRAY_FIELDS:
            value = getattr(self, name)
            if name not in _EMBEDDING_FIELDS and value.shape != (rows,):
                return f"{name} has shape {list(value.shape)}, expected [{rows}] like z_v"
        for name in META_FIELDS:
            if not isinstance(getattr(self, name), str):
                return f"{name} must be a string"
        if not (np.isfinite(self.z_v).all() and np.isfinite(self.z_a).all()):
            return "z_v or z_a holds NaN or infinite values"
        if not np.isfinite(self.clip_start).all():
            return "clip_start holds NaN or infinite values"
        if np.isinf(self.capture_time).any():
            return "capture_time holds infinite values (use NaN for unknown)"
        return None

    def __len__(self) -> int:
        return int(self.z_v.shape[0])

    @property
    def dim(self) -> int:
        return int(self.z_v.shape[1])

    def select(self, rows: np.ndarray) -> EmbeddingSet:
        """The clips picked by a boolean mask [N] or an integer index array."""
        picked = {name: getattr(self, name)[rows] for name in ARRAY_FIELDS}
        return EmbeddingSet(**picked, **self._meta())

    def _meta(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in META_FIELDS}

    def save(self, path: str | Path) -> Path:
        """Writes the ``.npz`` at exactly ``path`` (atomically, via a temporary file beside it)."""
        path = Path(path)
        arrays = {name: getattr(self, name) for name in ARRAY_FIELDS}
        scalars = {name: np.str_(value) for name, value in [("format", FORMAT), *self._meta().items()]}
        partial = path.with_name(path.name + ".partial")
        with partial.open("wb") as handle:
            np.savez(handle, **arrays, **scalars)
        os.replace(partial, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingSet:
        """Reads a file written by :meth:`save`; any problem raises a one-line TaskError naming the file."""
        path = Path(path)
        if not path.is_file():
            raise TaskError(f"{path}: no such embeddings file")
        try:
            with np.load(path, allow_pickle=False) as data:
                stored = {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise TaskError(f"{path}: not an embeddings .npz file ({_first_line(error)})") from None
        missing = [name for name in (*ARRAY_FIELDS, *META_FIELDS) if name not in stored]
        if missing:
            raise TaskError(f"{path}: not an embeddings file, missing {', '.join(missing)}")
        if "format" in stored and str(stored["format"]) != FORMAT:
            raise TaskError(f"{path}: format {str(stored['format'])!r}, expected {FORMAT!r}")
        for name in META_FIELDS:
            if stored[name].shape != () or stored[name].dtype.kind != "U":
                raise TaskError(f"{path}: {name} must be a string scalar")
        try:
            return cls(**{name: stored[name] for name in ARRAY_FIELDS},
                       **{name: str(stored[name]) for name in META_FIELDS})
        except TaskError as error:
            raise TaskError(f"{path}: {str(error).removeprefix('embedding set: ')}") from None

    @staticmethod
    def concat(sets: Sequence[EmbeddingSet]) -> EmbeddingSet:
        """One set holding every clip of ``sets`` in order; they must come from one model."""
        if not sets:
            raise TaskError("no embedding sets to join")
        first = sets[0]
        for other in sets[1:]:
            for name in META_FIELDS:
                if getattr(other, name) != getattr(first, name):
                    raise TaskError(f"embedding sets disagree on {name} ({getattr(first, name)!r} vs "
                                    f"{getattr(other, name)!r}); use embeddings of one model")
            if other.dim != first.dim:
                raise TaskError(f"embedding sets have {first.dim}-d and {other.dim}-d embeddings")
        joined = {name: np.concatenate([getattr(s, name) for s in sets]) for name in ARRAY_FIELDS}
        return EmbeddingSet(**joined, **first._meta())


concat = EmbeddingSet.concat


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def load_many(paths: Sequence[str | Path]) -> EmbeddingSet:
    """Loads and joins several embeddings files."""
    return concat([EmbeddingSet.load(path) for path in paths])


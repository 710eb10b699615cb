"""Per-second ground truth: which class each second of each camera shows, read from the scene
generator's ``ground_truth.json`` or a CSV ``camera_id,t,<field>``. Probes, heads and the supervised
ceiling all label clips with it, so it sits below every floor that uses it."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avsurv.errors import TaskError, read_json

SCENE_FORMAT = "avsurv-scene-v1"
UNLABELLED = ""
"""Label of a clip no label file covers; readers reject empty labels, so it is unambiguous."""
_START_TOLERANCE_S = 1e-6
"""Clip starts computed in floating point may fall just below a whole second."""

MODALITY_LABEL_FIELDS = ("visual_label", "audio_label")
"""The largest visible class and the loudest audible class of a second (``avsurv.synth.truth``)."""
LABEL_FIELDS = ("label", *MODALITY_LABEL_FIELDS)
"""Per-second class fields; ``label`` is the visible class, else the audible one."""
Labels = dict[tuple[str, int], str]
"""(camera_id, whole second t) -> label of [t, t + 1)."""


def read_labels(path: str | Path, field: str = "label") -> Labels:
    """Labels of each second's ``field`` (one of LABEL_FIELDS) from a ``ground_truth.json``
    (avsurv-scene-v1) or a CSV with header ``camera_id,t,<field>``."""
    if field not in LABEL_FIELDS:
        raise TaskError(f"label field must be one of {', '.join(LABEL_FIELDS)}, got {field!r}")
    return read_per_second(path, field, _label)


def read_per_second(path: str | Path, field: str, value: Callable[[Path, Any], str]) -> Labels:
    """(camera_id, t) -> ``value(path, v)`` of each second's ``field``, from a ``ground_truth.json``
    (avsurv-scene-v1) or a CSV with header ``camera_id,t,<field>``; bad input raises TaskError."""
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"{path}: no such label file")
    return _ground_truth(path, field, value) if path.suffix.lower() == ".json" else _csv(path, field, value)


def _ground_truth(path: Path, field: str, value: Callable[[Path, Any], str]) -> Labels:
    truth = read_json(path, "label")
    if not isinstance(truth, dict) or truth.get("format") != SCENE_FORMAT:
        raise TaskError(f"{path}: not a ground-truth file (format must be {SCENE_FORMAT!r})")
    try:
        return {(str(camera), int(second["t"])): value(path, second[field])
                for camera, seconds in truth["seconds"].items() for second in seconds}
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        if isinstance(error, KeyError) and error.args == (field,) and field in MODALITY_LABEL_FIELDS:
            raise TaskError(f"{path}: this ground truth predates per-modality labels (no {field!r}); re-render "
                            "the scene with `avsurv synth`, or use the field 'label' (--label-field label)") from None
        raise TaskError(f"{path}: bad 'seconds' entry ({error!r})") from None


def _csv(path: Path, field: str, value: Callable[[Path, Any], str]) -> Labels:
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"camera_id", "t", field} <= set(reader.fieldnames):
                raise TaskError(f"{path}: a label CSV needs the header camera_id,t,{field}")
            return {(row["camera_id"], _whole_second(path, reader.line_num, row["t"])): value(path, row[field])
                    for row in reader}
    except UnicodeDecodeError as error:
        raise TaskError(f"{path}: not a text file ({error})") from None


def csv_columns(path: Path) -> list[str]:
    try:
        with path.open(newline="") as handle:
            return next(csv.reader(handle), [])
    except UnicodeDecodeError as error:
        raise TaskError(f"{path}: not a text file ({error})") from None


def _whole_second(path: Path, line: int, text: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise TaskError(f"{path}:{line}: t must be a whole second, got {text!r}") from None


def _label(path: Path, label: Any) -> str:
    if not isinstance(label, str) or not label.strip():
        raise TaskError(f"{path}: empty or non-text label {label!r}")
    return label.strip()


def labels_at(cameras: Sequence[str], clip_starts: np.ndarray, labels: Labels) -> np.ndarray:
    """str [N]: label of second floor(clip_start) of each camera, ``UNLABELLED`` where none."""
    seconds = np.floor(np.asarray(clip_starts) + _START_TOLERANCE_S).astype(np.int64)
    found = [labels.get((camera, int(t)), UNLABELLED) for camera, t in zip(cameras, seconds, strict=True)]
    return np.asarray(found, dtype=np.str_)

"""The errors that reach people: each carries one line saying which input is wrong and how. Every
floor of the core raises these, so they live below all of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MediaError(Exception):
    """An input that cannot be read at all; the message is one line meant for people."""


class NoClipError(MediaError):
    """An input that was read but gave no clip. ``kind`` names the class of reason (one of
    ``avsurv.media.segment.NO_CLIP_KINDS``) for callers that count or act on it; the message says it for people."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class ModelError(Exception):
    """A model directory that cannot be used; one line for people."""


class TaskError(ValueError):
    """Bad input to a downstream task; the message says which input and what is wrong, in one line."""


def read_json(path: Path, what: str) -> Any:
    """The JSON document in ``path``, a file of ``what`` (e.g. "calibration"); a missing file or one that
    is not JSON raises a one-line TaskError naming it."""
    if not path.is_file():
        raise TaskError(f"{path}: no such {what} file")
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TaskError(f"{path}: not JSON ({error})") from None

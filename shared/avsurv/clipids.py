"""Clip ids, the one key of a clip everywhere (topics, clip store, Qdrant payloads, events):
``<camera_id>:<start in integer milliseconds>``, e.g. ``cam0:1767225688000``. The start is the clip's
capture time in epoch seconds when known, else its media time, rounded to the millisecond (the clip grid
of a camera is whole seconds from its first capture instant, so rounding never merges two clips).

Camera ids are checked here too (:func:`check_camera_id`), by everything that takes one from outside (the
settings, the control API) and by the clip store, so that an id accepted anywhere is stored everywhere."""

from __future__ import annotations

import re

SEPARATOR = ":"
MAX_CAMERA_ID_CHARS = 64
CAMERA_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
"""Letters, digits, '_', '-' and '.', not first: a camera id names a directory of the clip store."""


def clip_id(camera_id: str, start_s: float) -> str:
    """The id of ``camera_id``'s clip that starts at ``start_s`` seconds."""
    return f"{camera_id}{SEPARATOR}{round(start_s * 1000)}"


def parse_clip_id(value: str) -> tuple[str, int]:
    """(camera id, start in integer milliseconds); ValueError for anything :func:`clip_id` cannot make."""
    camera, _, stamp = value.rpartition(SEPARATOR)
    if not camera or not stamp.lstrip("-").isdigit():
        raise ValueError(f"not a clip id: {value!r}")
    return camera, int(stamp)


MAX_TIME_S = 4_102_444_800.0
"""Capture times are epoch seconds (or media seconds): up to 2100-01-01, either sign."""


def check_camera_id(camera_id: str) -> str:
    """``camera_id`` if it is a valid camera id, else ValueError with the reason."""
    if not 0 < len(camera_id) <= MAX_CAMERA_ID_CHARS:
        raise ValueError(f"a camera id has 1 to {MAX_CAMERA_ID_CHARS} characters, got {len(camera_id)}")
    if not CAMERA_ID.fullmatch(camera_id):
        raise ValueError(f"a camera id is letters, digits, '_', '-' and '.' (not first), got {camera_id!r}")
    return camera_id

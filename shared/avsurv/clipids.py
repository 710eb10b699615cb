"""Clip ids, the one key of a clip everywhere (topics, clip store, Qdrant payloads, events):
``<camera_id>:<start in integer milliseconds>``, e.g. ``cam0:1767225688000``. The start is the clip's
capture time in epoch seconds when known, else its media time, rounded to the millisecond (the clip grid
of a camera is whole seconds from its first capture instant, so rounding never merges two clips)."""

from __future__ import annotations

SEPARATOR = ":"


def clip_id(camera_id: str, start_s: float) -> str:
    """The id of ``camera_id``'s clip that starts at ``start_s`` seconds."""
    return f"{camera_id}{SEPARATOR}{round(start_s * 1000)}"


def parse_clip_id(value: str) -> tuple[str, int]:
    """(camera id, start in integer milliseconds); ValueError for anything :func:`clip_id` cannot make."""
    camera, _, stamp = value.rpartition(SEPARATOR)
    if not camera or not stamp.lstrip("-").isdigit():
        raise ValueError(f"not a clip id: {value!r}")
    return camera, int(stamp)

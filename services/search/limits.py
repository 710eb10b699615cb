"""The API's bounds on request fields, in one place. A request outside them is refused with
INVALID_ARGUMENT and the reason (:class:`RequestError`) before anything is looked up, so that no value a
client sends reaches a store or a loop unchecked (NaN times, absurd epochs, megabyte ids)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from avsurv.adapters.state import SCORE_POINTS
from avsurv.clipids import MAX_CAMERA_ID_CHARS, MAX_TIME_S, check_camera_id, parse_clip_id
from avsurv.v1 import api_pb2

MAX_TOP_K = 100
"""Search results per request (0: the default, 5)."""
MAX_EPOCHS = 200
"""Epochs of a requested training round (0: ``train_epochs``); the site's rounds take minutes per epoch."""
MAX_NAME_CHARS = 128
"""Model versions, site and detector names, camera ids to remove (ids from before their check)."""
MAX_CLIP_ID_CHARS = MAX_CAMERA_ID_CHARS + 21
"""A camera id, ':' and a signed 64-bit millisecond count."""
MAX_SOURCE_CHARS = 2048
MAX_FILTER_ITEMS = 256
"""Cameras or detectors named in one request."""
MAX_LIST_LIMIT = 10_000
"""Events per Anomalies.List response (0: 100)."""
MAX_WINDOW_S = 7 * 86_400.0
"""Search exclusion and separation."""
MAX_MEDIA_OFFSET_S = 3_600.0
"""Second of an uploaded query clip (a short media file)."""
EXPORT_MARGIN_S = 2.0
"""Seconds an evidence export keeps before and after its event when the request names none."""
MAX_EXPORT_MARGIN_S = 60.0
MAX_EXPORT_S = 600.0
"""The longest window an export encodes (event and margins): some 10 MB of mp4, a few seconds of encoding."""
SCORES_LIMIT = 3_600
"""Points of a camera's score series answered when the request names no limit: its last hour."""
MAX_EVENT_REFERENCE_CHARS = 256
"""An export's event id, or its evidence URI (scheme, site, id and path)."""
MAX_ECHO_CHARS = 80
"""Of a refused value quoted back in an error."""


class RequestError(ValueError):
    """A request field outside its bounds; the message says which and why."""


def echo(value: str) -> str:
    """``value`` quoted for an error message, cut to :data:`MAX_ECHO_CHARS`."""
    if len(value) <= MAX_ECHO_CHARS:
        return repr(value)
    return f"{value[:MAX_ECHO_CHARS]!r}... ({len(value)} characters)"


def check_text(name: str, value: str, limit: int = MAX_NAME_CHARS) -> str:
    if len(value) > limit:
        raise RequestError(f"{name} has {len(value)} characters, at most {limit}")
    return value


def check_number(name: str, value: float, low: float, high: float) -> float:
    if not math.isfinite(value) or not low <= value <= high:
        raise RequestError(f"{name} must be a finite number in [{low:g}, {high:g}], got {value}")
    return value


def check_camera(name: str, camera_id: str) -> str:
    try:
        return check_camera_id(camera_id)
    except ValueError as error:
        raise RequestError(f"{name}: {error}") from None


def check_clip_id(clip_id: str) -> str:
    try:
        camera, _ = parse_clip_id(check_text("clip_id", clip_id, MAX_CLIP_ID_CHARS))
    except ValueError:
        raise RequestError(f"clip_id is <camera_id>:<start in milliseconds>, got {echo(clip_id)}") from None
    check_camera("clip_id's camera", camera)
    return clip_id


def check_filters(camera_ids: Sequence[str], detectors: Sequence[str] = ()) -> None:
    for name, values in (("camera_ids", camera_ids), ("detectors", detectors)):
        if len(values) > MAX_FILTER_ITEMS:
            raise RequestError(f"{name} names {len(values)}, at most {MAX_FILTER_ITEMS}")
    for camera_id in camera_ids:
        check_camera("camera_ids", camera_id)
    for detector in detectors:
        check_text("detectors", detector)


def check_time_range(request: api_pb2.SearchRequest | api_pb2.ListAnomaliesRequest | api_pb2.ScoresRequest
                     ) -> None:
    start = request.start_time if request.HasField("start_time") else None
    end = request.end_time if request.HasField("end_time") else None
    for name, value in (("start_time", start), ("end_time", end)):
        if value is not None:
            check_number(name, value, -MAX_TIME_S, MAX_TIME_S)
    if start is not None and end is not None and start > end:
        raise RequestError(f"start_time {start:g} is after end_time {end:g}")


def check_search(request: api_pb2.SearchRequest) -> None:
    kind = request.WhichOneof("query")
    if kind == "clip_id":
        check_clip_id(request.clip_id)
    elif kind == "clip_at":
        check_camera("clip_at.camera_id", request.clip_at.camera_id)
        check_number("clip_at.capture_time", request.clip_at.capture_time, -MAX_TIME_S, MAX_TIME_S)
    elif kind == "media":
        check_number("media.offset", request.media.offset, 0.0, MAX_MEDIA_OFFSET_S)
    check_number("top_k", request.top_k, 0, MAX_TOP_K)
    for name in ("exclusion_s", "separation_s"):
        if request.HasField(name):
            check_number(name, getattr(request, name), 0.0, MAX_WINDOW_S)
    check_filters(request.camera_ids)
    check_time_range(request)


def check_list(request: api_pb2.ListAnomaliesRequest) -> None:
    check_filters(request.camera_ids, request.detectors)
    check_time_range(request)
    if request.HasField("min_score"):
        check_number("min_score", request.min_score, -math.inf, math.inf)
    check_number("limit", request.limit, 0, MAX_LIST_LIMIT)


def check_export(request: api_pb2.ExportEvidenceRequest) -> float:
    """The request's margin (the default when unset)."""
    check_text("event_id", request.event_id, MAX_EVENT_REFERENCE_CHARS)
    if not request.HasField("margin_s"):
        return EXPORT_MARGIN_S
    return check_number("margin_s", request.margin_s, 0.0, MAX_EXPORT_MARGIN_S)


def check_scores(request: api_pb2.ScoresRequest) -> int:
    """The request's limit (the default when 0)."""
    check_camera("camera_id", request.camera_id)
    check_time_range(request)
    return int(check_number("limit", request.limit, 0, SCORE_POINTS)) or SCORES_LIMIT


def check_trigger(request: api_pb2.TriggerTrainingRequest) -> None:
    check_text("site", request.site)
    check_number("epochs", request.epochs, 0, MAX_EPOCHS)


def check_camera_source(source: str, schemes: Sequence[str], roots: Sequence[str]) -> str:
    """The source as ingest will open it: a URL of one of ``schemes`` with a host, or an absolute path that
    resolves (links followed) under one of ``roots``; anything else (other schemes, FFmpeg protocols such
    as ``concat:`` or ``pipe:``, devices, files elsewhere) is refused."""
    check_text("source", source, MAX_SOURCE_CHARS)
    if not source or any(ord(c) < 32 for c in source):
        raise RequestError("source must be non-empty, without control characters")
    url = urlsplit(source)
    if "://" in source:
        if url.scheme.lower() not in {s.lower() for s in schemes} or not url.hostname:
            raise RequestError(f"source must be a URL with a host and one of the schemes "
                               f"{', '.join(schemes) or '(none set)'} (setting api_camera_schemes)")
        return source
    path = Path(source)
    resolved = path.resolve()
    if not path.is_absolute() or not any(resolved.is_relative_to(Path(root).resolve()) for root in roots):
        raise RequestError("source must be such a URL or an absolute path under a directory of the setting "
                           f"api_camera_roots ({', '.join(roots) or 'none set'})")
    return str(resolved)

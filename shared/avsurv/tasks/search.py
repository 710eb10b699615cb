"""Query-by-example event search (EPG section 4.3).

Clips are ranked by their Eq. 5 distance to the query clip: ``visual`` mode compares ``z_v`` with
``z_v``, ``audio`` mode ``z_a`` with ``z_a``. **Decision**: ``av`` mode ranks by the mean of the visual
and the audio distance, so that both modalities weigh equally whatever their scales are (the paper does
not say how the two are combined).

As in the paper, results within ``exclusion_s`` (1 minute) of the query are dropped, and a result is
shown only if it is at least ``separation_s`` (1 minute) from every higher-ranked result. Two clips are
"close" when ``|dt| < window``: dt from capture times when both clips have one, otherwise from media
times (``clip_start``), and then only within the same camera: clips of different cameras without
capture times cannot be placed on one time line, so they are never close. A window of 0 disables it.
In ``audio`` and ``av`` modes, clips without audio are not candidates (their audio embedding is that of
silence).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from avsurv.constants import CLIP_SECONDS, SEARCH_EXCLUSION_S, SEARCH_SEPARATION_S, W
from avsurv.errors import TaskError
from avsurv.learning.distance import pairwise_distance
from avsurv.learning.embeddings import EmbeddingSet

MODES = ("av", "audio", "visual")
DEFAULT_TOP_K = 5
"""Results of a search when the caller names no number (the CLI and the gRPC API alike)."""


@dataclass(frozen=True)
class SearchResult:
    """One ranked clip of the index; ``row`` is its position in the index set."""

    rank: int
    row: int
    clip_id: str
    camera_id: str
    source: str
    clip_start: float
    capture_time: float | None
    distance: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def search(
    index: EmbeddingSet,
    query_z_v: np.ndarray,
    query_z_a: np.ndarray,
    query_time: float,
    query_camera: str,
    *,
    query_capture_time: float | None = None,
    mode: str = "av",
    top_k: int = DEFAULT_TOP_K,
    exclusion_s: float = SEARCH_EXCLUSION_S,
    separation_s: float = SEARCH_SEPARATION_S,
    w: float = W,
) -> list[SearchResult]:
    """The ``top_k`` clips of ``index`` nearest the query, after exclusion and separation.

    ``query_time`` is the query clip's media start (``clip_start``) in ``query_camera``;
    ``query_capture_time`` its capture time in epoch seconds, when known.
    """
    _check_options(mode, top_k, exclusion_s, separation_s, w)
    distances = _distances(index, np.asarray(query_z_v), np.asarray(query_z_a), mode, w)
    capture = math.nan if query_capture_time is None else query_capture_time
    times = (index.clip_start, index.capture_time, index.camera_id)
    candidate = ~_close(*times, query_time, capture, query_camera, exclusion_s)
    if mode != "visual":
        candidate &= index.has_audio
    order = np.flatnonzero(candidate)
    order = order[np.argsort(distances[order], kind="stable")]
    kept: list[int] = []
    for row in order:
        # Greedy: a clip survives only if no better-ranked kept clip lies within the separation window.
        if kept and _close(*(t[kept] for t in times), *(t[row] for t in times), separation_s).any():
            continue
        kept.append(int(row))
        if len(kept) == top_k:
            break
    return [_result(index, rank, row, distances[row]) for rank, row in enumerate(kept, start=1)]


def search_by_clip(index: EmbeddingSet, queries: EmbeddingSet, row: int,
                   **options: Any) -> list[SearchResult]:
    """:func:`search` with row ``row`` of ``queries`` as the query clip; options as in ``search``."""
    if options.get("mode", "av") != "visual" and not queries.has_audio[row]:
        raise TaskError(f"query clip {queries.clip_id[row]} has no audio; search with mode visual")
    capture = float(queries.capture_time[row])
    return search(index, queries.z_v[row], queries.z_a[row], float(queries.clip_start[row]),
                  str(queries.camera_id[row]), query_capture_time=capture if math.isfinite(capture) else None,
                  **options)


def parse_query(text: str) -> tuple[str, float]:
    """``CAMERA_OR_SOURCE@SECONDS`` -> (camera or source, media seconds)."""
    key, at, seconds = text.rpartition("@")
    try:
        value = float(seconds)
    except ValueError:
        value = math.nan
    if not (at and key and math.isfinite(value)):
        raise TaskError(f"query {text!r} is not CAMERA_OR_SOURCE@SECONDS, e.g. cam0@125")
    return key, value


def find_clip(embeddings: EmbeddingSet, key: str, seconds: float) -> int:
    """Row of the clip of camera or source ``key`` whose [start, start + 1 s) holds ``seconds``."""
    stream = (embeddings.camera_id == key) | (embeddings.source == key)
    if not stream.any():
        cameras = sorted(set(embeddings.camera_id.tolist()))
        shown = ", ".join(cameras[:10]) + (", ..." if len(cameras) > 10 else "")
        raise TaskError(f"no clips of camera or source {key!r}; cameras: {shown or 'none'}")
    starts = embeddings.clip_start
    rows = np.flatnonzero(stream & (starts <= seconds) & (seconds < starts + CLIP_SECONDS))
    if rows.size == 0:
        raise TaskError(f"no clip of {key!r} holds {seconds:g} s; its clips start between "
                        f"{starts[stream].min():g} and {starts[stream].max():g} s")
    if rows.size > 1:
        sources = sorted(set(embeddings.source[rows].tolist()))
        raise TaskError(f"{rows.size} clips of {key!r} hold {seconds:g} s (sources {', '.join(sources)}); "
                        "name the source instead")
    return int(rows[0])


def _check_options(mode: str, top_k: int, exclusion_s: float, separation_s: float, w: float) -> None:
    if mode not in MODES:
        raise TaskError(f"search mode must be one of {', '.join(MODES)}, got {mode!r}")
    if top_k < 1:
        raise TaskError(f"top_k must be at least 1, got {top_k}")
    if not (exclusion_s >= 0 and separation_s >= 0):
        raise TaskError(f"exclusion and separation must be >= 0 s, got {exclusion_s} and {separation_s}")
    if not 0.0 <= w <= 1.0:
        raise TaskError(f"the distance weight w must lie in [0, 1], got {w}")


def _distances(index: EmbeddingSet, query_z_v: np.ndarray, query_z_a: np.ndarray, mode: str,
               w: float) -> np.ndarray:
    """float64 [N]: Eq. 5 distance of every index clip to the query in ``mode``."""
    if query_z_v.shape != (index.dim,) or query_z_a.shape != (index.dim,):
        raise TaskError(f"query embeddings must be [{index.dim}] like the index, got "
                        f"{list(query_z_v.shape)} and {list(query_z_a.shape)}")
    pairs = {"visual": [(query_z_v, index.z_v)], "audio": [(query_z_a, index.z_a)],
             "av": [(query_z_v, index.z_v), (query_z_a, index.z_a)]}[mode]
    with torch.no_grad():
        per_modality = [pairwise_distance(torch.from_numpy(query[None, :]).double(),
                                          torch.from_numpy(clips).double(), w)[0] for query, clips in pairs]
    return torch.stack(per_modality).mean(dim=0).numpy()


def _close(starts: np.ndarray, captures: np.ndarray, cameras: np.ndarray,
           start: float, capture: float, camera: str, window: float) -> np.ndarray:
    """bool [M]: which of M clips (media starts, capture times, cameras) lie within ``window`` of one clip."""
    if window <= 0:
        return np.zeros(starts.shape, dtype=bool)
    by_capture = np.isfinite(captures) & math.isfinite(capture)
    near_capture = by_capture & (np.abs(captures - capture) < window)
    near_media = ~by_capture & (cameras == camera) & (np.abs(starts - start) < window)
    return near_capture | near_media


def _result(index: EmbeddingSet, rank: int, row: int, distance: float) -> SearchResult:
    capture = float(index.capture_time[row])
    return SearchResult(rank=rank, row=row, clip_id=str(index.clip_id[row]),
                        camera_id=str(index.camera_id[row]), source=str(index.source[row]),
                        clip_start=float(index.clip_start[row]),
                        capture_time=capture if math.isfinite(capture) else None, distance=float(distance))

"""Retention: the clip store and the vector collections kept within days and GB per camera, as an NVR keeps
its recordings, with the clips of anomaly events kept longer.

A pass (:meth:`Retention.run`, every ``retention_every_s`` by the trainer service) looks at each camera's
stored clips in capture order and deletes:

- an ordinary clip older than ``retention_days``;
- a clip an event holds (inside the event's span, or named by it: its clips, peak clip and normal clips)
  once ``event_retention_days`` have passed since the event's end;
- then, while the camera holds more than ``retention_gb_per_camera``, its oldest ordinary clips, and its
  oldest event clips only when those alone are over (the disk bound comes first).

Ages are measured from the camera's newest stored clip, not the wall clock: a file replayed with media times
or a fast-forwarded replay ages as it was captured, and a camera that went dark keeps its last days as
evidence (its disk still capped). The size cap is enforced with headroom: each camera is trimmed to the cap
less what it wrote since the previous pass, so that it stays under the cap until the next one.

The vectors go with their clips: in every model version's collection of the site, each camera's points up to
the newest clip deleted so far whose clip is no longer stored are deleted. Sweeping that time range rather
than deleting the ids just removed also catches a clip embedded after its media was deleted (at the next
pass), so the search stops returning a clip whose media is gone within ``retention_every_s``.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from avsurv.adapters.vectors import QdrantVectors, collection_name
from avsurv.clipids import MAX_TIME_S, parse_clip_id
from avsurv.platform.archive import ClipArchive
from avsurv.platform.config import Settings
from avsurv.platform.registry import Registry
from avsurv.v1 import messages_pb2 as pb

log = logging.getLogger("avsurv")

DAY_S = 86_400.0
GB = 1e9
LONGEST_EVENT_S = DAY_S
"""Events that started this long before a camera's oldest stored clip are not read: they hold none of it."""

DELETED = Counter("avsurv_retention_deleted_clips_total", "Clips deleted by retention", ["camera"])
STORED = Gauge("avsurv_clip_store_bytes", "Bytes of stored clips after the last retention pass", ["camera"])


@dataclass(frozen=True)
class CameraPass:
    camera_id: str
    kept_clips: int
    kept_bytes: int
    deleted_clips: int
    deleted_bytes: int
    deleted_event_clips: int


@dataclass(frozen=True)
class RetentionPass:
    cameras: list[CameraPass]
    vectors_deleted: int

    @property
    def kept_bytes(self) -> int:
        return sum(c.kept_bytes for c in self.cameras)

    @property
    def deleted_clips(self) -> int:
        return sum(c.deleted_clips for c in self.cameras)


class EventHolds:
    """Which stored clips anomaly events hold, and until when (the end of the latest event holding each)."""

    def __init__(self, events: Iterable[bytes]) -> None:
        self.spans: dict[str, list[tuple[float, float]]] = {}
        self.named: dict[str, float] = {}
        for payload in events:
            event = pb.AnomalyEvent.FromString(payload)
            camera, end = event.header.camera_id, event.end_time
            self.spans.setdefault(camera, []).append((event.start_time, end))
            for clip_id in (*event.clip_ids, event.peak_clip_id, *event.normal_clip_ids):
                if clip_id:
                    self.named[clip_id] = max(end, self.named.get(clip_id, end))

    def ends(self, camera_id: str, clip_ids: list[str], times: list[float]) -> list[float | None]:
        """For each clip (``times`` sorted), the end of the latest event holding it, None if none does."""
        held: list[float | None] = [self.named.get(clip_id) for clip_id in clip_ids]
        for start, end in self.spans.get(camera_id, []):
            # [start, end): an event ends where its last clip does, so a clip starting there is not its
            for position in range(bisect.bisect_left(times, start), bisect.bisect_left(times, end)):
                current = held[position]
                held[position] = end if current is None else max(current, end)
        return held


def choose(clip_ids: list[str], sizes: list[int], held: list[float | None], days: float, event_days: float,
           budget: float | None) -> list[int]:
    """Positions of the clips to delete (clips in capture order, ``held`` from :meth:`EventHolds.ends`,
    ``budget`` the bytes the camera may keep, None: no cap); see the module's doc for the rules."""
    times = [parse_clip_id(clip_id)[1] / 1000 for clip_id in clip_ids]
    newest = times[-1]
    doomed = set()
    for position, (captured, end) in enumerate(zip(times, held, strict=True)):
        if end is None:
            if days and newest - captured > days * DAY_S:
                doomed.add(position)
        elif event_days and newest - end > event_days * DAY_S:
            doomed.add(position)
    if budget is not None:
        total = sum(size for position, size in enumerate(sizes) if position not in doomed)
        ordinary = [p for p in range(len(clip_ids)) if held[p] is None]
        held_ones = [p for p in range(len(clip_ids)) if held[p] is not None]
        for position in ordinary + held_ones:
            if total <= budget:
                break
            if position not in doomed:
                doomed.add(position)
                total -= sizes[position]
    return sorted(doomed)


class Retention:
    """Retention passes over one site's clip store and vector collections (``vectors`` None: clips only)."""

    def __init__(self, archive: ClipArchive, vectors: QdrantVectors | None, registry: Registry,
                 settings: Settings) -> None:
        self.archive, self.vectors, self.registry = archive, vectors, registry
        self.days, self.event_days = settings.retention_days, settings.event_retention_days
        self.cap = settings.retention_gb_per_camera * GB if settings.retention_gb_per_camera else None
        self.site = settings.site
        self._after: dict[str, int] = {}
        """Each camera's bytes after the previous pass: what it wrote since is the headroom the cap keeps."""
        self._horizon: dict[str, float] = {}
        """Each camera's newest deleted clip: its vectors up to there belong to stored clips only."""

    @property
    def enabled(self) -> bool:
        return bool(self.days or self.cap)

    def run(self) -> RetentionPass:
        stored = {camera: self.archive.sizes(camera) for camera in self.archive.cameras()}
        stored = {camera: entries for camera, entries in stored.items() if entries}
        oldest = min((parse_clip_id(entries[0][0])[1] / 1000 for entries in stored.values()), default=0.0)
        holds = EventHolds(self.registry.events_since(oldest - LONGEST_EVENT_S))
        passes, kept_ids = [], {}
        for camera, entries in stored.items():
            clip_ids, sizes = [e[0] for e in entries], [e[1] for e in entries]
            times = [parse_clip_id(clip_id)[1] / 1000 for clip_id in clip_ids]
            held = holds.ends(camera, clip_ids, times)
            total = sum(sizes)
            budget = None
            if self.cap is not None:
                budget = max(0.0, self.cap - max(0, total - self._after.get(camera, total)))
            doomed = choose(clip_ids, sizes, held, self.days, self.event_days, budget)
            self.archive.delete(clip_ids[p] for p in doomed)
            gone = sum(sizes[p] for p in doomed)
            self._after[camera] = total - gone
            if doomed:
                self._horizon[camera] = max(self._horizon.get(camera, -MAX_TIME_S), max(times[p] for p in doomed))
            dropped = set(doomed)
            kept_ids[camera] = {clip_id for p, clip_id in enumerate(clip_ids) if p not in dropped}
            passes.append(CameraPass(camera, len(clip_ids) - len(doomed), total - gone, len(doomed), gone,
                                     sum(1 for p in doomed if held[p] is not None)))
            DELETED.labels(camera).inc(len(doomed))
            STORED.labels(camera).set(total - gone)
        result = RetentionPass(passes, self._sweep_vectors(kept_ids))
        if result.deleted_clips or result.vectors_deleted:
            log.info("retention: deleted %d clips and %d vectors; %d clips (%.3f GB) kept", result.deleted_clips,
                     result.vectors_deleted, sum(c.kept_clips for c in passes), result.kept_bytes / GB)
        return result

    def _sweep_vectors(self, kept_ids: dict[str, set[str]]) -> int:
        """Deletes, in every model version's collection, the points up to each camera's horizon whose clip is
        no longer stored; returns how many."""
        if self.vectors is None:
            return 0
        prefix = collection_name(self.site, "")
        deleted = 0
        for collection in self.vectors.collections():
            if not collection.startswith(prefix):
                continue
            for camera, horizon in self._horizon.items():
                kept = kept_ids.get(camera, set())
                # + 1 s: a point's capture time may exceed its clip id's millisecond by a rounding
                stale = [hit.id for hit in self.vectors.window(collection, camera, -MAX_TIME_S, horizon + 1.0)
                         if hit.payload.get("clip_id") not in kept]
                if stale:
                    self.vectors.delete(collection, stale)
                    deleted += len(stale)
        return deleted

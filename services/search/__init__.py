"""Search: the gRPC API (protos/avsurv/v1/api.proto): event search over the site's alias (one model version
per response), anomaly listing and live feed, and the control surface. Health checking and reflection are
the runtime's (every service's server answers them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from avsurv.adapters.artifacts import Artifacts
from avsurv.adapters.state import ScoreSeries
from avsurv.adapters.vectors import Hit, QdrantVectors, alias_name, open_vectors, point_id
from avsurv.clipids import clip_id as make_clip_id
from avsurv.constants import CLIP_SECONDS, SEARCH_EXCLUSION_S, SEARCH_SEPARATION_S
from avsurv.errors import MediaError, TaskError
from avsurv.learning.embeddings import EmbeddingSet
from avsurv.learning.normalization import CAMERA, NONE, SiteNormalization
from avsurv.media import Clip, Segmenter
from avsurv.media.background import Backgrounds
from avsurv.media.evidence import clip_time, evidence_mp4
from avsurv.platform.archive import ClipArchive
from avsurv.platform.config import Settings, without_credentials
from avsurv.platform.event_uri import event_of
from avsurv.platform.messages import InvalidMessage, clip_from_message
from avsurv.platform.model_versions import LoadedModel, load_version
from avsurv.platform.registry import ModelRecord, Registry
from avsurv.platform.runtime import Ports, ServiceParts
from avsurv.tasks.search import DEFAULT_TOP_K, search
from avsurv.v1 import api_pb2, api_pb2_grpc
from avsurv.v1 import messages_pb2 as pb

from . import limits

MAX_CANDIDATES = 16_384
"""At most this many nearest points are re-ranked: the store's first ``candidates``, grown 4x while exclusion
and separation leave fewer than ``top_k`` results."""
MODES = {api_pb2.SEARCH_MODE_UNSPECIFIED: "av", api_pb2.SEARCH_MODE_AUDIO_VISUAL: "av",
         api_pb2.SEARCH_MODE_AUDIO: "audio", api_pb2.SEARCH_MODE_VISUAL: "visual"}
INTERNAL_DETAIL = "internal error; the server logged it"
"""All a caller learns of an unexpected failure: its traceback and values stay in the server's log."""
FEED_BACKLOG = 1_000
"""Live events a Watch caller may fall behind before its feed is ended (RESOURCE_EXHAUSTED)."""
FEED_POLL_S = 0.5
"""How often the live event reader checks whether anyone still watches."""
Context = grpc.ServicerContext
log = logging.getLogger("avsurv")


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


def _handled(method: Callable) -> Callable:
    """Turns :class:`_Abort`, refused requests and task errors into gRPC statuses with a clear message, and
    anything else into INTERNAL with a generic one (never UNKNOWN with a traceback's words)."""
    def wrapper(self: object, request: object, context: Context) -> object:
        try:
            return method(self, request, context)
        except _Abort as error:
            context.abort(error.code, error.detail)
        except (limits.RequestError, TaskError, MediaError) as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except Exception:
            log.exception("search: %s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, INTERNAL_DETAIL)
    wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
    return wrapper


def _handled_feed(method: Callable) -> Callable:
    """:func:`_handled` for a server-streaming coroutine."""
    async def wrapper(self: object, request: object, context: grpc.aio.ServicerContext) -> AsyncIterator:
        try:
            async for response in method(self, request, context):
                yield response
        except limits.RequestError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except Exception as error:
            if isinstance(error, grpc.aio.AbortError):
                raise
            log.exception("search: %s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_DETAIL)
    wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
    return wrapper


class SearchServicer(api_pb2_grpc.EventSearchServicer):
    def __init__(self, vectors: QdrantVectors, registry: Registry, artifacts: Artifacts, cache_dir: Path,
                 device: str = "auto", normalization: str = NONE, archive: ClipArchive | None = None,
                 precision: str = "auto") -> None:
        self.vectors, self.registry, self.artifacts, self.cache_dir = vectors, registry, artifacts, cache_dir
        self.archive = archive  # the clip store GetClip reads; None: this server answers only searches
        self.device, self.precision, self.normalization = device, precision, normalization
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def _record(self, version: str) -> ModelRecord:
        """The version's contract (its ``w``): a search by clip needs no weights."""
        record = self.registry.model(version)
        if record is None:
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, f"model version {version} is not registered")
        return record

    def _model(self, version: str) -> LoadedModel:
        """The version's weights, loaded only to embed an uploaded media query."""
        with self._lock:
            if version not in self._models:
                self._models = {version: load_version(version, self.registry, self.artifacts, self.cache_dir,
                                                      self.device, self.precision)}
            return self._models[version]

    @_handled
    def Search(self, request: api_pb2.SearchRequest, context: Context) -> api_pb2.SearchResponse:
        limits.check_search(request)
        mode = MODES.get(request.mode)
        if mode is None:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown search mode {request.mode}")
        site = self.registry.site
        collection = self.vectors.alias_target(alias_name(site))
        if collection is None:
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, "no model version is indexed yet")
        version = collection.removeprefix(f"avsurv_{site}_")  # the concrete collection: one version
        z_v, z_a, camera, capture = self._query(request, collection, version)
        top_k = request.top_k or DEFAULT_TOP_K
        options = {"mode": mode, "top_k": top_k, "w": self._record(version).w, "query_capture_time": capture,
                   "exclusion_s": request.exclusion_s if request.HasField("exclusion_s") else SEARCH_EXCLUSION_S,
                   "separation_s": request.separation_s if request.HasField("separation_s") else SEARCH_SEPARATION_S}
        limit = self.vectors.candidates
        while True:
            hits = self.vectors.nearest(collection, z_v, z_a, mode, limit, request.camera_ids,
                                        request.start_time if request.HasField("start_time") else None,
                                        request.end_time if request.HasField("end_time") else None)
            results = search(_index(hits), z_v, z_a, capture, camera, **options) if hits else []
            # Exact search keeps the nearest in order, so re-ranking more points can only add results.
            if len(results) >= top_k or len(hits) < limit or limit >= MAX_CANDIDATES:
                break
            limit *= 4
        response = api_pb2.SearchResponse(model_version=version)
        response.results.extend(api_pb2.SearchResult(
            clip_id=r.clip_id, camera_id=r.camera_id, capture_time=r.capture_time or r.clip_start,
            distance=r.distance, media_uri=r.source) for r in results)
        return response

    @_handled
    def GetClip(self, request: api_pb2.GetClipRequest, context: Context) -> api_pb2.ClipMedia:
        """The stored clip's JPEG frames as the clip store keeps them (no re-encoding) and its middle one."""
        clip_id = limits.check_clip_id(request.clip_id)
        if self.archive is None:
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, "this server has no clip store")
        try:
            stored = self.archive.get(clip_id)
        except KeyError:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"clip {limits.echo(clip_id)} is not in the clip store") from None
        frames = list(stored.frames_jpeg)
        return api_pb2.ClipMedia(clip_id=clip_id, camera_id=stored.header.camera_id,
                                 capture_time=stored.header.capture_time, has_audio=stored.has_audio,
                                 frames_jpeg=frames, thumbnail_jpeg=frames[len(frames) // 2] if frames else b"")

    def _query(self, request: api_pb2.SearchRequest, collection: str,
               version: str) -> tuple[np.ndarray, np.ndarray, str, float]:
        """The query's vectors in ``version``'s space, its camera and capture time."""
        kind = request.WhichOneof("query")
        if kind == "media":
            return self._media_query(request.media, version)
        if kind == "clip_at":
            # the clip holding that instant: clips start on whole seconds of capture time
            clip_id = make_clip_id(request.clip_at.camera_id, math.floor(request.clip_at.capture_time))
        elif kind == "clip_id":
            clip_id = request.clip_id
        else:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "a search needs a clip_id, clip_at or media query")
        found = self.vectors.retrieve(collection, [point_id(clip_id, version)])
        if not found:
            raise _Abort(grpc.StatusCode.NOT_FOUND,
                         f"clip {limits.echo(clip_id)} is not indexed in model version {version}")
        hit = found[0]
        return hit.z_v, hit.z_a, str(hit.payload["camera_id"]), float(hit.payload["capture_time"])

    def _media_query(self, media: api_pb2.MediaQuery, version: str) -> tuple[np.ndarray, np.ndarray, str, float]:
        if not media.data:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "the media query holds no data")
        with tempfile.NamedTemporaryFile(suffix=".media") as upload:
            upload.write(media.data)
            upload.flush()
            clips = [c for c in Segmenter(upload.name, "query", capture_start=0.0)
                     if c.start <= media.offset < c.start + 1.0]
        if not clips:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"the uploaded media has no clip at {media.offset:g} s")
        z_v, z_a = self._model(version).embed(clips, Backgrounds())  # an upload shares no camera's history
        if self.normalization == CAMERA:  # stored vectors are standardized: an upload takes the site's pooled stats
            cameras = self.registry.all_camera_stats(version)
            if cameras:
                z_v, z_a = SiteNormalization.of_cameras(cameras).reference.standardize(z_v, z_a)
        return z_v[0], z_a[0], "", math.nan  # not on any camera's timeline: nothing is excluded


def _index(hits: Sequence[Hit]) -> EmbeddingSet:
    capture = np.array([float(h.payload["capture_time"]) for h in hits])
    return EmbeddingSet(
        clip_start=capture, z_v=np.stack([h.z_v for h in hits]), z_a=np.stack([h.z_a for h in hits]),
        clip_id=np.array([h.payload["clip_id"] for h in hits]),
        camera_id=np.array([h.payload["camera_id"] for h in hits]),
        capture_time=capture, has_audio=np.array([bool(h.payload.get("has_audio", True)) for h in hits]),
        source=np.array([h.payload.get("media_uri", "") for h in hits]),
    )


class AnomaliesServicer(api_pb2_grpc.AnomaliesServicer):
    def __init__(self, registry: Registry, archive: ClipArchive) -> None:
        self.registry, self.archive = registry, archive
        self.feed = LiveFeed(registry)
        self.scores = ScoreSeries(registry.state, registry.site)

    @_handled
    def Export(self, request: api_pb2.ExportEvidenceRequest, context: Context) -> api_pb2.EvidenceFile:
        """The stored clips overlapping the event widened by the margin, as an mp4 with their sound."""
        margin = limits.check_export(request)
        try:
            identifier = event_of(request.event_id, self.registry.site)  # an id, or the event's evidence_uri
        except LookupError as error:
            raise _Abort(grpc.StatusCode.NOT_FOUND, str(error)) from None
        except ValueError as error:
            raise limits.RequestError(f"event_id: {error}, got {limits.echo(request.event_id)}") from None
        payload = self.registry.event(identifier)
        if payload is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"no event {limits.echo(request.event_id)}")
        event = pb.AnomalyEvent.FromString(payload)
        first, end = math.floor(event.start_time - margin), math.ceil(event.end_time + margin)
        if end - first > limits.MAX_EXPORT_S:
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, f"the event and its margins span {end - first} s; "
                         f"an export holds at most {limits.MAX_EXPORT_S:g} s (ask for a smaller margin_s)")
        stored = self._stored(event.header.camera_id, range(first, end))
        if not stored:
            raise _Abort(grpc.StatusCode.NOT_FOUND,
                         f"no readable clip of event {identifier} is in the clip store")
        clips = [clip for _, clip in stored]
        return api_pb2.EvidenceFile(
            event_id=identifier, camera_id=event.header.camera_id, start_time=clip_time(clips[0]),
            end_time=clip_time(clips[-1]) + CLIP_SECONDS, mp4=evidence_mp4(clips),
            clip_ids=[m.header.clip_id for m, _ in stored],
            silent_clip_ids=[m.header.clip_id for m, clip in stored if clip.audio is None])

    def _stored(self, camera_id: str, seconds: range) -> list[tuple[pb.Clip, Clip]]:
        """The camera's readable stored clips starting at these seconds (clips start on whole seconds), in
        order; a damaged one is left out like a missing one, so the rest of the evidence still comes."""
        stored = []
        for second in seconds:
            with contextlib.suppress(KeyError):
                message = self.archive.get(make_clip_id(camera_id, second))
                try:
                    stored.append((message, clip_from_message(message)))
                except InvalidMessage as error:
                    log.warning("search: export leaves out a damaged clip: %s", error)
        return stored

    @_handled
    def Scores(self, request: api_pb2.ScoresRequest, context: Context) -> api_pb2.ScoreSeries:
        """The camera's recorded score series in the window (the anomaly detector writes it)."""
        limit = limits.check_scores(request)
        points = self.scores.read(request.camera_id, request.start_time if request.HasField("start_time") else None,
                                  request.end_time if request.HasField("end_time") else None, limit)
        return api_pb2.ScoreSeries(camera_id=request.camera_id, points=[api_pb2.ScorePoint(
            capture_time=p.capture_time, score=p.score, threshold=p.threshold, anomalous=p.anomalous) for p in points])

    @_handled
    def List(self, request: api_pb2.ListAnomaliesRequest, context: Context) -> api_pb2.ListAnomaliesResponse:
        limits.check_list(request)
        events = [pb.AnomalyEvent.FromString(p) for p in self.registry.events(
            request.start_time if request.HasField("start_time") else None,
            request.end_time if request.HasField("end_time") else None, limit=-1)]
        chosen = [e for e in events if _chosen(e, request)
                  and (not request.HasField("min_score") or e.peak_score >= request.min_score)]
        return api_pb2.ListAnomaliesResponse(events=chosen[: request.limit or 100])

    @_handled_feed
    async def Watch(self, request: api_pb2.WatchAnomaliesRequest,
                    context: grpc.aio.ServicerContext) -> AsyncIterator[pb.AnomalyEvent]:
        """A coroutine on the server's event loop: an open feed holds a queue, not a thread. Its headers
        are sent once it is subscribed: a caller that waits for them misses no later event."""
        limits.check_filters(request.camera_ids, request.detectors)
        with self.feed.subscription() as events:
            await context.send_initial_metadata(())
            while True:
                event = await events.get()
                if isinstance(event, FeedEnd):
                    await context.abort(event.code, event.detail)
                if _chosen(event, request):
                    yield event


@dataclass(frozen=True)
class FeedEnd:
    """Ends a Watch call with this status (its feed fell behind, or the live events could not be read)."""

    code: grpc.StatusCode
    detail: str


BEHIND = FeedEnd(grpc.StatusCode.RESOURCE_EXHAUSTED, f"this feed fell {FEED_BACKLOG} events behind; watch again")
FAILED = FeedEnd(grpc.StatusCode.UNAVAILABLE, "the live events cannot be read now; watch again")


class LiveFeed:
    """The registry's live events, read by one thread while anyone watches and handed to every watcher's
    queue on its event loop; a queue gets a :class:`FeedEnd` when its feed cannot go on."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._queues: dict[asyncio.Queue, asyncio.AbstractEventLoop] = {}
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    @contextlib.contextmanager
    def subscription(self) -> Iterator[asyncio.Queue]:
        events: asyncio.Queue = asyncio.Queue(FEED_BACKLOG + 1)  # room for the end
        with self._lock:
            self._queues[events] = asyncio.get_running_loop()
            if self._reader is None:
                self._reader = threading.Thread(target=self._read, name="live-events", daemon=True)
                self._reader.start()
        try:
            yield events
        finally:
            with self._lock:
                self._queues.pop(events, None)

    def _read(self) -> None:
        try:
            live = self.registry.live_events()
            try:
                while self._watched():
                    message = live.get_message(timeout=FEED_POLL_S)
                    if message is not None and message["type"] == "message":
                        self._hand_out(pb.AnomalyEvent.FromString(message["data"]))
            finally:
                live.close()
        except Exception:
            with self._lock:
                watchers, self._reader = bool(self._queues), None  # the next watcher reads again
            if watchers:  # with none left, this is the state store closing after the server
                log.exception("search: the live events cannot be read")
                self._hand_out(FAILED)

    def _watched(self) -> bool:
        """Whether anyone still watches; if not, the reader ends (the next watcher starts another)."""
        with self._lock:
            if not self._queues:
                self._reader = None
            return self._reader is not None

    def _hand_out(self, item: pb.AnomalyEvent | FeedEnd) -> None:
        with self._lock:
            for events, loop in list(self._queues.items()):
                loop.call_soon_threadsafe(_offer, events, item)


def _offer(events: asyncio.Queue, item: pb.AnomalyEvent | FeedEnd) -> None:
    """On the watcher's loop: queue the item, or end a feed that has fallen too far behind."""
    if events.qsize() < FEED_BACKLOG:
        events.put_nowait(item)
    elif events.qsize() == FEED_BACKLOG:
        events.put_nowait(BEHIND)


def _chosen(event: pb.AnomalyEvent,
            request: api_pb2.ListAnomaliesRequest | api_pb2.WatchAnomaliesRequest) -> bool:
    """The event is of one of the request's cameras and detectors (none named: all)."""
    return ((not request.camera_ids or event.header.camera_id in request.camera_ids)
            and (not request.detectors or event.detector in request.detectors))


class ControlServicer(api_pb2_grpc.ControlServicer):
    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry, self.settings = registry, settings

    def _camera(self, camera_id: str) -> api_pb2.Camera:
        wanted = self.registry.wanted_cameras()
        for state in self.registry.camera_states():
            if state.camera_id == camera_id:
                return api_pb2.Camera(camera_id=camera_id, source=state.source, status=state.status,
                                      last_capture_time=state.last_capture_time, detail=state.detail)
        return api_pb2.Camera(camera_id=camera_id, source=without_credentials(wanted.get(camera_id, "")),
                              status="starting" if camera_id in wanted else "removed")

    @_handled
    def AddCamera(self, request: api_pb2.AddCameraRequest, context: Context) -> api_pb2.Camera:
        camera_id = limits.check_camera("camera_id", request.camera_id)
        source = limits.check_camera_source(request.source, self.settings.api_camera_schemes,
                                            self.settings.api_camera_roots)
        self.registry.want_camera(camera_id, source)
        return self._camera(camera_id)

    @_handled
    def RemoveCamera(self, request: api_pb2.RemoveCameraRequest, context: Context) -> api_pb2.Camera:
        if not self.registry.drop_camera(limits.check_text("camera_id", request.camera_id)):
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"no camera {limits.echo(request.camera_id)}")
        return api_pb2.Camera(camera_id=request.camera_id, status="removed")

    @_handled
    def ListCameras(self, request: api_pb2.ListCamerasRequest, context: Context) -> api_pb2.ListCamerasResponse:
        ids = sorted(set(self.registry.wanted_cameras()) | {c.camera_id for c in self.registry.camera_states()})
        return api_pb2.ListCamerasResponse(cameras=[self._camera(i) for i in ids])

    def _training(self) -> api_pb2.TrainingStatus:
        status = self.registry.trainer_status()
        return api_pb2.TrainingStatus(state=status.get("state", "idle"), detail=status.get("detail", ""),
                                      clips_available=int(status.get("clips_available", 0)),
                                      last_version=status.get("last_version", ""),
                                      updated_time=float(status.get("updated_time", 0.0)))

    @_handled
    def TriggerTraining(self, request: api_pb2.TriggerTrainingRequest, context: Context) -> api_pb2.TrainingStatus:
        limits.check_trigger(request)
        if request.site and request.site != self.registry.site:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"this deployment serves site {self.registry.site!r}")
        self.registry.request_training(request.epochs)
        return self._training()

    @_handled
    def GetTrainingStatus(self, request: api_pb2.TrainingStatusRequest, context: Context) -> api_pb2.TrainingStatus:
        return self._training()

    @_handled
    def CancelTraining(self, request: api_pb2.CancelTrainingRequest, context: Context) -> api_pb2.TrainingStatus:
        cancelled = self.registry.cancel_training()
        if cancelled is None:
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, "no training round is requested or running")
        if cancelled == "requested":  # the trainer never saw it: its status is ours to set
            self.registry.set_trainer_status(**{**self.registry.trainer_status(), "state": "cancelled",
                                                "detail": "the requested round was cancelled before it started"})
        return self._training()  # a running round reports "cancelled" when it stops, after its epoch

    def _version(self, version: str) -> api_pb2.ModelVersion:
        record = self.registry.model(version)
        if record is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"no model version {limits.echo(version)}")
        return api_pb2.ModelVersion(
            model_version=record.version, sha256=record.sha256, created_time=record.created_time,
            active=record.version == self.registry.active_version(), indexed=record.indexed, metrics=record.metrics)

    @_handled
    def ListModels(self, request: api_pb2.ListModelsRequest, context: Context) -> api_pb2.ListModelsResponse:
        return api_pb2.ListModelsResponse(models=[self._version(r.version) for r in self.registry.models()])

    @_handled
    def ActivateModel(self, request: api_pb2.ActivateModelRequest, context: Context) -> api_pb2.ModelVersion:
        version = self._version(limits.check_text("model_version", request.model_version))  # NOT_FOUND first
        self.registry.set_target(request.model_version)
        return version

    @_handled
    def RollbackModel(self, request: api_pb2.RollbackModelRequest, context: Context) -> api_pb2.ModelVersion:
        previous = self.registry.roll_back()
        if previous is None:
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, "no earlier active version to roll back to")
        return self._version(previous)


def build(ports: Ports, settings: Settings) -> ServiceParts:
    if ports.vectors is None:
        ports.vectors = open_vectors(settings.vectors_url)
    search = SearchServicer(ports.vectors, ports.registry, ports.artifacts, settings.data_dir / "model-cache",
                            settings.device, settings.normalization, ports.archive, settings.precision)
    return ServiceParts(servicers={"EventSearch": search,
                                   "Anomalies": AnomaliesServicer(ports.registry, ports.archive),
                                   "Control": ControlServicer(ports.registry, settings)})

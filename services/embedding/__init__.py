"""Embedding: clips in, vectors into the current Qdrant collection and ``avsurv.embeddings.v1`` out.

Hot-swap: when the registry names a new target version, a background thread loads it (checksum
verified; a version that fails to load is skipped and the old one keeps serving), creates its collection,
re-embeds every stored clip into it while live batches are written to both collections, calibrates the
anomaly scores per camera for it (Eq. 5, ``avsurv.learning.calibration``, and site novelty,
``avsurv.tasks.novelty``, both on the camera's stored clips), and only then flips the site's alias and
activates the version. The live loop changes model between batches, so a search sees one version, and no
clip is dropped.

Per model version and camera, the embedder also keeps the running mean and variance of the embeddings
(``avsurv.learning.normalization.CameraStats``, for per-camera normalization): the backfill computes them
over the stored clips, then every live batch of the serving version is merged in and the camera's stats
are written to the registry, so a restart goes on from them. Live clips embedded by a version still
being prepared are not counted: the stored clips stand for the camera's history.

With ``normalization: camera`` those statistics standardize every vector the embedder writes and publishes
(``SiteNormalization``: a camera with fewer than ``MIN_CLIPS`` clips takes the site's pooled statistics),
so search, the detector's history and its calibrations all see one space per version. The backfill first
indexes the stored clips as embedded, and once it has the cameras' statistics standardizes them in place
(read back from the collection), with any live clips written meanwhile; live clips of the serving version
are standardized with the statistics that include their batch. A new version recomputes all of it.

Decode and model overlap (``embed_prefetch``, on by default): just before the model embeds a batch, the
loop takes the clips already waiting (up to a batch, without waiting for more) and hands their JPEG frames
to the decoder threads, so the next batch is decoded while this one is embedded; the next step tops that
batch up as a batch always fills (``batch_size``, ``batch_wait_s``). One batch ahead at most. Its clips are
started in the commit tracker when taken and done only once embedded and published, so none is committed
early: ``drained()`` waits for them, and a batch taken ahead but not embedded when the service closes is
redelivered to the group's next consumer. A step that fails (the state store, the vector store or the broker
away) starts over as a restart would: it drops the batches in hand and rejoins the group, which hands back
every uncommitted clip (found by the chaos run: a batch whose camera statistics could not be written to a
killed Redis waited, unindexed, for the next restart).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from avsurv.adapters.artifacts import Artifacts
from avsurv.adapters.bus import Bus, CommitTracker, Message, Subscription, leave
from avsurv.adapters.vectors import Hit, Point, QdrantVectors, alias_name, collection_name, open_vectors, point_id
from avsurv.errors import ModelError, TaskError
from avsurv.learning.calibration import Calibration
from avsurv.learning.data import chunks
from avsurv.learning.normalization import CAMERA, CameraStats, SiteNormalization, merged_per_camera, per_camera
from avsurv.learning.scores import clip_scores
from avsurv.media.background import Backgrounds
from avsurv.media.segment import Clip
from avsurv.platform.archive import ClipArchive
from avsurv.platform.config import Settings
from avsurv.platform.messages import CLIPS, EMBEDDINGS, InvalidMessage, clip_from_message, dead_letter, parse
from avsurv.platform.model_versions import LoadedModel, load_version
from avsurv.platform.registry import Registry
from avsurv.platform.runtime import Ports, ServiceParts
from avsurv.platform.worker import DEAD_LETTERED, PROCESSED, Worker, log
from avsurv.tasks.novelty import NOVELTY_HISTORY, NoveltyCalibration
from avsurv.v1 import messages_pb2 as pb

BACKFILL_BATCH = 32
STANDARDIZED = "standardized"
"""Payload flag of a point whose vectors are standardized: a clip the live loop wrote as embedded while the
backfill standardized it is standardized once, never twice."""
Stored = deque[tuple[float, np.ndarray, np.ndarray, bool]]
"""A camera's latest stored clips for its calibrations: (capture time, z_v, z_a, has audio)."""
Decoded = tuple[pb.Clip, Clip] | InvalidMessage
"""A clips-topic message parsed with its frames decoded, or why it is refused."""
Prefetched = tuple[list[Message], list[Future[Decoded]]]
"""A batch taken ahead and its messages' decoding, in order."""


def points_for(clips: list[Clip], messages: list[pb.Clip], z_v: np.ndarray, z_a: np.ndarray,
               standardized: bool = False) -> list[Point]:
    return [Point(clip.clip_id, z_v[i], z_a[i], {
        "camera_id": clip.camera_id, "capture_time": float(clip.capture_time or clip.start),
        "has_audio": bool(clip.has_audio), "media_uri": messages[i].media_uri, STANDARDIZED: standardized,
    }) for i, clip in enumerate(clips)]


def standardized_points(hits: list[Hit], normalization: SiteNormalization) -> list[Point]:
    """The points of ``hits`` (as indexed) with their vectors standardized per camera."""
    if not hits:
        return []
    z_v, z_a = normalization.standardize_rows([h.payload["camera_id"] for h in hits],
                                              np.stack([h.z_v for h in hits]), np.stack([h.z_a for h in hits]))
    return [Point(h.payload["clip_id"], z_v[i], z_a[i], {**h.payload, STANDARDIZED: True}) for i, h in enumerate(hits)]


class _Swap(threading.Thread):
    """Prepares one model version in the background: load, index every stored clip, calibrate."""

    def __init__(self, service: EmbeddingService, version: str) -> None:
        super().__init__(name=f"swap-{version}", daemon=True)
        self.service, self.version = service, version
        self.collection = collection_name(service.settings.site, version)
        self.model: LoadedModel | None = None  # set once loaded: live batches are then written here too
        self.ready = False
        self.cancelled = threading.Event()
        self.backfilled = 0
        self.camera_stats: dict[str, CameraStats] = {}
        self.normalization: SiteNormalization | None = None  # set once the stored clips are standardized
        self._unstandardized: list[str] = []  # live clips written as embedded while normalizing
        self._unstandardized_lock = threading.Lock()

    def run(self) -> None:
        s = self.service
        try:
            model = load_version(self.version, s.registry, s.artifacts, s.cache_dir, s.settings.device,
                                 s.settings.precision)
        except (ModelError, OSError, KeyError, ValueError) as error:
            s.failed_versions[self.version] = str(error)
            log.error("embedding: cannot load model %s, keeping %s: %s", self.version,
                      s.serving.version if s.serving else "no model", error)
            return
        s.vectors.ensure_collection(self.collection)
        self.model = model
        started = time.monotonic()
        ids = s.archive.clip_ids()
        stored = self._index(model, ids)
        if stored is None:
            return
        if s.normalize and self.camera_stats:
            self.normalization = SiteNormalization.of_cameras(self.camera_stats, model.sha256)
            self.restandardize(ids)
            self.restandardize_live()
            stored = {camera: _standardized(camera, rows, self.normalization) for camera, rows in stored.items()}
        self._calibrate(stored, model)
        self._fit_novelty(stored, model)
        for camera, stats in self.camera_stats.items():
            s.registry.set_camera_stats(self.version, camera, stats)
        log.info("embedding: model %s indexed %d stored clips in %.1f s", self.version, len(ids),
                 time.monotonic() - started)
        self.ready = True

    def _index(self, model: LoadedModel, ids: list[str]) -> dict[str, Stored] | None:
        """Embeds and indexes the stored clips as the model gives them, gathering each camera's statistics;
        returns each camera's latest ones for the calibrations (None when cancelled)."""
        s = self.service
        keep = max(NOVELTY_HISTORY, s.settings.calibration_clips)  # bounded: a site may store days of clips
        stored: dict[str, Stored] = {}
        # The stored clips replay each camera's history in their own backgrounds: the live loop meanwhile
        # embeds newer clips with this model from another thread, into the live stream's.
        history = Backgrounds()
        for chunk in chunks(ids, BACKFILL_BATCH):
            if self.cancelled.is_set() or s.stopping.is_set():
                return None
            messages = [self._stored(clip_id) for clip_id in chunk]
            clips = [clip_from_message(m) for m in messages]
            z_v, z_a = model.embed(clips, history)
            s.vectors.upsert(self.collection, self.version, points_for(clips, messages, z_v, z_a))
            for i, clip in enumerate(clips):
                stored.setdefault(clip.camera_id, deque(maxlen=keep)).append(
                    (float(clip.capture_time or clip.start), z_v[i], z_a[i], bool(clip.has_audio)))
            batch_stats = per_camera([clip.camera_id for clip in clips], z_v, z_a)
            self.camera_stats = merged_per_camera(self.camera_stats, batch_stats)
            self.backfilled += len(chunk)
        return stored

    def _stored(self, clip_id: str) -> pb.Clip:
        """The stored clip with its URI: the clip store writes a clip before its URI is known, so the stored
        message's own ``media_uri`` is empty and search results would have nothing to fetch."""
        message = self.service.archive.get(clip_id)
        message.media_uri = message.media_uri or self.service.archive.uri(clip_id)
        return message

    def wrote_live(self, clip_ids: list[str]) -> None:
        """Live clips just written to this version's collection as the model gave them."""
        with self._unstandardized_lock:
            self._unstandardized += clip_ids

    def restandardize(self, clip_ids: list[str]) -> None:
        """Rewrites these clips' points of the collection standardized with the final statistics."""
        assert self.normalization is not None
        vectors = self.service.vectors
        for chunk in chunks(clip_ids, BACKFILL_BATCH):
            hits = vectors.retrieve(self.collection, [point_id(clip_id, self.version) for clip_id in chunk])
            points = standardized_points([h for h in hits if not h.payload.get(STANDARDIZED)], self.normalization)
            if points:
                vectors.upsert(self.collection, self.version, points)

    def restandardize_live(self) -> None:
        """Standardizes the live clips written so far (the service calls it again under its batch lock)."""
        with self._unstandardized_lock:
            clip_ids, self._unstandardized = self._unstandardized, []
        self.restandardize(clip_ids)

    def _calibrate(self, stored: dict[str, Stored], model: LoadedModel) -> None:
        """Per camera, the calibration of the score over its most recent stored clips with audio."""
        settings = self.service.settings
        for camera, rows in stored.items():
            with_audio = [row for row in rows if row[3]][-settings.calibration_clips:]
            if len(with_audio) >= 2:
                scores = clip_scores(np.stack([row[1] for row in with_audio]),
                                     np.stack([row[2] for row in with_audio]), model.w)
                calibration = Calibration.of_scores(np.asarray(scores), w=model.w, stds=settings.anomaly_stds,
                                                    model_sha256=model.sha256)
                self.service.registry.set_calibration(self.version, camera, calibration)

    def _fit_novelty(self, stored: dict[str, Stored], model: LoadedModel) -> None:
        """Per camera, the site novelty of its latest stored clips, each against the others outside its
        exclusion window; a camera without enough clips gets none yet (its clips are not flagged by novelty)."""
        settings = self.service.settings
        for camera, all_rows in stored.items():
            rows = list(all_rows)[-NOVELTY_HISTORY:]
            times = np.array([row[0] for row in rows])
            z_v, z_a = np.stack([row[1] for row in rows]), np.stack([row[2] for row in rows])
            try:
                novelty = NoveltyCalibration.fit(z_v, z_a, times, w=model.w, stds=settings.anomaly_stds,
                                                 exclusion_s=settings.novelty_exclusion_s, model_sha256=model.sha256)
            except TaskError as error:
                log.info("embedding: no novelty calibration of %s for %s yet: %s", camera, self.version, error)
                continue
            self.service.registry.set_novelty(self.version, camera, novelty)


def _standardized(camera: str, rows: Stored, normalization: SiteNormalization) -> Stored:
    z_v, z_a = normalization.stats_for(camera).standardize(np.stack([row[1] for row in rows]),
                                                           np.stack([row[2] for row in rows]))
    return deque(((row[0], z_v[i], z_a[i], row[3]) for i, row in enumerate(rows)), maxlen=rows.maxlen)


class EmbeddingService(Worker):
    name_ = "embedding"

    def __init__(self, bus: Bus, vectors: QdrantVectors, registry: Registry, artifacts: Artifacts,
                 archive: ClipArchive, settings: Settings) -> None:
        super().__init__()
        self.bus, self.vectors, self.registry, self.artifacts = bus, vectors, registry, artifacts
        self.archive, self.settings = archive, settings
        self.normalize = settings.normalization == CAMERA
        self.cache_dir = Path(settings.data_dir) / "model-cache"
        self.subscription: Subscription | None = None  # None after a failed step, until the next one rejoins
        self._join()
        self.serving: LoadedModel | None = None
        self.swap: _Swap | None = None
        self.failed_versions: dict[str, str] = {}
        self.swaps: list[dict[str, object]] = []  # what each flip found: the new index covers the old one
        self.clips_embedded = 0
        self._batch_lock = threading.Lock()
        self._decoder = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="embedding-decode")
        self._prefetched: Prefetched | None = None  # the next batch, taken and decoding while this one embeds
        self.camera_stats: dict[str, CameraStats] = {}  # the serving version's, per camera
        active = registry.active_version()
        if active:
            try:
                self.serving = load_version(active, registry, artifacts, self.cache_dir, settings.device,
                                            settings.precision)
            except (ModelError, OSError) as error:
                log.error("embedding: cannot load the active model %s: %s", active, error)
            self.camera_stats = registry.all_camera_stats(active)

    # -- model versions ---------------------------------------------------------------------------
    def _follow_registry(self) -> None:
        target = self.registry.target_version()
        serving = self.serving.version if self.serving else None
        if self.swap is not None and self.swap.ready:
            self._complete_swap(self.swap)
        elif target and target != serving and target not in self.failed_versions and \
                (self.swap is None or self.swap.version != target):
            if self.swap is not None:
                self.swap.cancelled.set()
            self.swap = _Swap(self, target)
            self.swap.start()
            log.info("embedding: preparing model %s (serving %s)", target, serving or "nothing yet")

    def _complete_swap(self, swap: _Swap) -> None:
        with self._batch_lock:  # between batches: every live clip so far is in both collections
            old = collection_name(self.settings.site, self.serving.version) if self.serving else None
            self.swaps.append({"version": swap.version, "indexed": self.vectors.count(swap.collection),
                               "previously_indexed": self.vectors.count(old) if old else 0})
            self.vectors.set_alias(alias_name(self.settings.site), swap.collection)
            self.registry.mark_indexed(swap.version)
            self.registry.activate(swap.version)
            if swap.normalization is not None:
                swap.restandardize_live()  # those written since its backfill; no more come while we hold the lock
            previous, self.serving, self.swap = self.serving, swap.model, None
            self.camera_stats = swap.camera_stats
        log.info("embedding: hot-swapped %s -> %s", previous.version if previous else "nothing", swap.version)

    # -- the live loop ----------------------------------------------------------------------------
    def step(self) -> None:
        self._follow_registry()
        if self.serving is None:  # no model yet: clips wait, uncommitted, for the first one
            self.stopping.wait(0.5)
            return
        if self.subscription is None:
            self._join()
        batch, decoding = self._prefetched or ([], [])
        batch = self._next_batch(batch)  # tops up the batch taken ahead
        self._prefetched = None
        if batch:
            decoding = decoding + self._decode(batch[len(decoding):])
            with self._batch_lock:
                self._embed(batch, decoding)

    def _join(self) -> None:
        self.subscription = self.bus.subscribe("embedding", [CLIPS])
        self.tracker = CommitTracker(self.subscription)

    def start_over(self) -> None:
        """Drops the clips in hand (the batch taken ahead too) and leaves the group: the next step rejoins it
        and gets every uncommitted clip again, the failed batch with them (their upserts repeat harmlessly;
        the detector skips an embedding it has scored)."""
        self._prefetched = None
        leave(self.subscription)
        self.subscription = None

    def _next_batch(self, batch: list[Message] | None = None) -> list[Message]:
        """A batch of clips messages: ``batch`` (taken ahead) topped up to ``batch_size``, waiting at most
        ``batch_wait_s`` once it has one."""
        size, batch = self.settings.batch_size, list(batch or [])
        deadline = time.monotonic() + self.settings.batch_wait_s
        while len(batch) < size and not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if batch and remaining <= 0:
                break
            messages = self.subscription.poll(timeout_s=max(0.05, remaining) if batch else 0.5,
                                              max_messages=size - len(batch))
            if not messages and not batch:
                return []
            for message in messages:
                self.tracker.started(message)
            batch += messages
        return batch

    def _decode(self, messages: list[Message]) -> list[Future[Decoded]]:
        return [self._decoder.submit(_decoded, message) for message in messages]

    def _prefetch(self) -> None:
        """Takes the clips already waiting (a batch at most, no wait) and starts decoding them: the model
        embeds the current batch meanwhile. They stay uncommitted until embedded (``tracker``)."""
        if not self.settings.embed_prefetch or self._prefetched is not None or self.stopping.is_set():
            return
        messages = self.subscription.poll(timeout_s=0, max_messages=self.settings.batch_size)
        if messages:
            for message in messages:
                self.tracker.started(message)
            self._prefetched = (messages, self._decode(messages))

    def _embed(self, batch: list[Message], decoding: list[Future[Decoded]] | None = None) -> None:
        decoding = self._decode(batch) if decoding is None else decoding
        self._prefetch()  # the next batch decodes while this one is embedded below
        usable: list[tuple[Message, pb.Clip, Clip]] = []
        for message, future in zip(batch, decoding, strict=True):
            decoded = future.result()
            if isinstance(decoded, InvalidMessage):
                dead_letter(self.bus, message, str(decoded), self.name_, self.settings.site)
                DEAD_LETTERED.labels(self.name_).inc()
                self.tracker.done(message)
            else:
                usable.append((message, *decoded))
        if not usable:
            return
        assert self.serving is not None
        messages, clip_messages, clips = zip(*usable, strict=True)
        targets = [self.serving] + ([self.swap.model] if self.swap is not None and self.swap.model else [])
        for model in targets:
            z_v, z_a = model.embed(list(clips))
            if model is self.serving:
                self._update_stats(clips, z_v, z_a, model.version)
                if self.normalize:
                    normalization = SiteNormalization.of_cameras(self.camera_stats, model.sha256)
                    z_v, z_a = normalization.standardize_rows([clip.camera_id for clip in clips], z_v, z_a)
            collection = collection_name(self.settings.site, model.version)
            self.vectors.ensure_collection(collection)
            standardized = self.normalize and model is self.serving
            self.vectors.upsert(collection, model.version,
                                points_for(list(clips), list(clip_messages), z_v, z_a, standardized))
            if model is self.serving:
                self._publish(clip_messages, z_v, z_a, model)
            elif self.normalize and self.swap is not None:
                self.swap.wrote_live([clip.clip_id for clip in clips])
        for message in messages:
            self.tracker.done(message)
        self.clips_embedded += len(clips)
        PROCESSED.labels(self.name_).inc(len(clips))

    def _update_stats(self, clips: tuple[Clip, ...], z_v: np.ndarray, z_a: np.ndarray, version: str) -> None:
        """Merges a live batch into its cameras' running statistics and stores them for a restart."""
        batch_stats = per_camera([clip.camera_id for clip in clips], z_v, z_a)
        merged = merged_per_camera(self.camera_stats, batch_stats)
        for camera in batch_stats:
            self.registry.set_camera_stats(version, camera, merged[camera])
        self.camera_stats = merged  # only once stored: a batch that fails here comes again

    def _publish(self, clip_messages: tuple[pb.Clip, ...], z_v: np.ndarray, z_a: np.ndarray,
                 model: LoadedModel) -> None:
        for i, clip_message in enumerate(clip_messages):
            embedding = pb.Embedding(header=clip_message.header, model_version=model.version, z_v=z_v[i].tolist(),
                                     z_a=z_a[i].tolist(), has_audio=clip_message.has_audio,
                                     point_id=point_id(clip_message.header.clip_id, model.version), w=model.w,
                                     model_sha256=model.sha256, profile=model.profile)
            self.bus.publish(EMBEDDINGS, clip_message.header.camera_id, embedding.SerializeToString())
        self.bus.flush()

    def drained(self) -> bool:
        """Every clip given is embedded; without a model yet, clips wait and are not waited for."""
        return (self.serving is None and self.swap is None) or (self.subscription is not None
                                                                and self.tracker.drained())

    def close(self) -> None:
        if self.swap is not None:
            self.swap.cancelled.set()
        if self._prefetched is not None:  # taken ahead, never embedded: uncommitted, so redelivered
            log.info("embedding: %d clips taken ahead are left to the group's next consumer",
                     len(self._prefetched[0]))
            self._prefetched = None
        self._decoder.shutdown(cancel_futures=True)
        if self.subscription is not None:
            self.subscription.close()


def _decoded(message: Message) -> Decoded:
    """A clips-topic message and its clip, frames decoded (in the decoder threads), or why it is refused."""
    try:
        clip_message = parse(pb.Clip, message.value)
        return clip_message, clip_from_message(clip_message)
    except InvalidMessage as error:
        return error


def build(ports: Ports, settings: Settings) -> ServiceParts:
    if ports.vectors is None:
        ports.vectors = open_vectors(settings.vectors_url)
    return ServiceParts(worker=EmbeddingService(ports.bus, ports.vectors, ports.registry, ports.artifacts,
                                                ports.archive, settings))

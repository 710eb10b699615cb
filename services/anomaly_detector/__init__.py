"""Anomaly detector: embeddings in, anomaly events out (``avsurv.anomalies.v1``), EPG section 4.3.

The label-free score is the one the ``anomaly_detector`` setting names (``platform.config``):
- ``novelty`` (the default, detector ``novelty`` on its events): how unlike the camera's last half hour
  the clip is, in sight and in sound (``avsurv.tasks.novelty``), against the camera's novelty
  calibration in the clip's model version, which the embedder fits on the stored clips. The history is
  read once per camera and version from the vector store, then follows the clips as they come. A camera
  without a calibration or without a minute of history flags nothing yet.
- ``eq5`` (detector empty): ``d(z_v, z_a)`` (Eq. 5) with the ``w`` of the clip's model version, which the
  embedding message carries, against the calibration of its camera and model version
  (``avsurv.learning.calibration``, fitted by the embedder and kept in the state store; the version's
  training calibration from its registry record when a camera has none). A calibration on another scale
  than the message's ``w`` is refused, so score and threshold always agree.

Either way a clip with audio is anomalous above ``mean + anomaly_stds * std`` of its calibration, and
consecutive anomalous clips of a camera merge into one event with a lifecycle (issue 16): a ``NEW`` message
at its first anomalous clip, an ``UPDATE`` when its peak rose or it extended (at most one per
``UPDATE_INTERVAL_S`` of capture time: deterministic, so a replay makes the same messages), and ``END`` when
the run ends: at the camera's next clip that does not go on with it, or after ``anomaly_run_idle_s`` without
clips once the camera has captured nothing after the run (its state in the registry). Event ids are
deterministic and each message has a sequence; the registry keeps each event's latest message, and a message
not beyond it is not published again, so a replay after a restart repeats nothing; offsets are committed once
a clip's event has ended.

**Decision** (each lifecycle message on the topic once, for consumers that de-duplicate nothing): an outbox
keyed by (event id, phase, sequence). The key goes into the state store's pending set before the message is
published, and leaves it once the message is recorded. A detector that died in between finds the key pending
when the replay makes the same message, and reads the tail of the anomalies topic (``READ_BACK`` messages of
each partition) for it: published already, it is only recorded; not there, it is published.
Kafka transactions would do the same for Kafka only (the in-process bus has none, and the registry write is
outside any Kafka transaction anyway). A step that fails (the state store or the broker away) starts over as
a restart would: it forgets what is in flight and rejoins the group, which hands back every uncommitted
embedding.

Heads attached to a camera (``avsurv.platform.head_attachments``) see the same embeddings through a ``HeadStream``
each; consecutive clips a head gives the same event label make one event of that head (``detector``).
A clip's offset is committed once every detector is done with it.

Every lifecycle message carries the evidence of the event's peak clip (issue 16 item 2): its id, a thumbnail
(the middle frame read from the clip store, ``THUMBNAIL_WIDTH`` px wide), which modality deviated (novelty:
each modality's term of the score against the threshold; Eq. 5: the two disagree) and the camera's nearest
earlier clips that the label-free detector did not flag (``NORMAL_CLIPS``), from the history it keeps of
every camera when a vector store is at hand. They are worked out again only when the peak moves. Its
``evidence_uri`` (``avsurv.platform.event_uri``) names the event's evidence mp4 for ``avsurv export`` and
the dashboard.

Every clip the label-free detector scores against a calibration goes into its camera's score series
(``avsurv.adapters.state.ScoreSeries``: capture time, score, threshold, flagged), written once per poll: the
dashboard's per-camera timeline reads it through ``Anomalies.Scores``.
"""

from __future__ import annotations

import io
import math
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError
from PIL import Image

from avsurv.adapters.artifacts import Artifacts
from avsurv.adapters.bus import Bus, CommitTracker, Message, Subscription, leave
from avsurv.adapters.state import ScorePoint, ScoreSeries
from avsurv.adapters.vectors import QdrantVectors, collection_name, open_vectors
from avsurv.clipids import clip_id, parse_clip_id
from avsurv.constants import ANOMALY_STDS, CLIP_SECONDS, EMBEDDING_DIM
from avsurv.errors import ModelError
from avsurv.heads.model import LOCALIZATION_KINDS
from avsurv.heads.stream import HeadStream, StreamPrediction
from avsurv.heads.training import ANOMALY_SCORE
from avsurv.learning.calibration import Calibration
from avsurv.learning.normalization import NONE
from avsurv.learning.scores import clip_scores
from avsurv.platform.archive import ClipArchive
from avsurv.platform.config import EQ5, LABEL_FREE_DETECTORS, NOVELTY, Settings
from avsurv.platform.event_uri import evidence_uri
from avsurv.platform.head_attachments import HEADS_REFRESH_S, load_attached
from avsurv.platform.messages import ANOMALIES, EMBEDDINGS, InvalidMessage, dead_letter, event_id, header, parse
from avsurv.platform.registry import HeadRecord, Registry
from avsurv.platform.runtime import Ports, ServiceParts
from avsurv.platform.worker import DEAD_LETTERED, PROCESSED, Worker, log
from avsurv.tasks.novelty import NOVELTY_HISTORY, CameraHistory, NoveltyCalibration
from avsurv.v1 import messages_pb2 as pb

RUN_WAIT_FACTOR = 10
"""An idle run whose camera has captured the seconds after it waits for them (a stage upstream is restarting
or behind: closing now would split the event in two), but at most this many times ``anomaly_run_idle_s``."""
READ_BACK = 1_000
"""Messages of each anomalies partition read back for an event pending since a death: far more than the
messages published between a detector's death and its restart."""
UPDATE_INTERVAL_S = 2.0
"""Capture seconds an event's ``UPDATE`` waits after its previous message: consumers follow a long event's
progress without a message per clip."""
THUMBNAIL_WIDTH = 160
"""Pixels across an event's thumbnail: enough to recognise the scene, a few KB in every message."""
THUMBNAIL_QUALITY = 75
NORMAL_CLIPS = 3
"""Nearest normal clips an event names."""
NORMAL_SEPARATION_S = 10.0
"""Seconds between two of an event's normal clips: different moments, not the seconds around one."""
_Deviation = pb.AnomalyEvent.Deviation


@dataclass(frozen=True)
class _Clip:
    """An embedding message and what an event needs of it."""

    message: Message
    clip_id: str
    capture_time: float
    site: str
    z_v: np.ndarray  # [D]
    z_a: np.ndarray
    w: float


@dataclass(frozen=True)
class _Verdict:
    """A detector's word on one clip."""

    flagged: bool
    score: float
    threshold: float
    deviation: _Deviation = pb.AnomalyEvent.UNEXPLAINED
    modalities: tuple[float, float] | None = None  # novelty's (visual, audio) terms, against ``threshold``
    calibrated: bool = True  # False: no calibration to hold the clip against (``threshold`` means nothing)

    def explained(self, event: pb.AnomalyEvent) -> None:
        """Writes the explanation into ``event``."""
        event.deviation = self.deviation
        if self.modalities is not None:
            event.visual.CopyFrom(pb.AnomalyEvent.ModalityScore(score=self.modalities[0], threshold=self.threshold))
            event.audio.CopyFrom(pb.AnomalyEvent.ModalityScore(score=self.modalities[1], threshold=self.threshold))


def _novelty_verdict(anomalous: bool, modalities: tuple[float, float], threshold: float) -> _Verdict:
    visual, audio = (term > threshold for term in modalities)
    deviation = (pb.AnomalyEvent.BOTH if visual and audio else pb.AnomalyEvent.VISUAL if visual
                 else pb.AnomalyEvent.AUDIO if audio else pb.AnomalyEvent.UNEXPLAINED)
    return _Verdict(anomalous, sum(modalities) / 2, threshold, deviation, modalities)


@dataclass
class _Run:
    camera_id: str
    detector: str  # "" for d(z_v, z_a), "novelty", else HeadRecord.detector
    label: str
    version: str
    threshold: float
    start: float
    last: float
    peak: _Clip
    verdict: _Verdict  # of the peak clip
    site: str
    clip_ids: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    touched: float = field(default_factory=time.monotonic)
    sequence: int = -1  # of its last lifecycle message
    sent_at: float = -math.inf  # the capture time of that message's last clip
    evidence: pb.AnomalyEvent | None = None  # the peak's evidence fields, once worked out

    @property
    def event_id(self) -> str:
        return event_id(self.camera_id, self.start, self.version, self.detector)

    @property
    def peak_score(self) -> float:
        return self.verdict.score


@dataclass
class _Attached:
    """A head attached to a camera, with the clips of the run it is reading."""

    record: HeadRecord
    stream: HeadStream[_Clip]
    version: str = ""  # of the clips in the stream
    touched: float = field(default_factory=time.monotonic)

    @property
    def threshold(self) -> float:
        return 0.0 if self.record.kind in LOCALIZATION_KINDS else ANOMALY_SCORE


class AnomalyService(Worker):
    name_ = "anomaly-detector"

    def __init__(self, bus: Bus, registry: Registry, artifacts: Artifacts, cache_dir: Path,
                 run_idle_s: float, stds: float = ANOMALY_STDS, detector: str = EQ5,
                 vectors: QdrantVectors | None = None, normalization: str = NONE,
                 archive: ClipArchive | None = None) -> None:
        super().__init__()
        if detector not in LABEL_FREE_DETECTORS or (detector == NOVELTY and vectors is None):
            raise ValueError(f"the label-free detector must be one of {LABEL_FREE_DETECTORS} (novelty with a "
                             f"vector store), got {detector!r}")
        self.run_idle_s, self.stds, self.detector, self.vectors = run_idle_s, stds, detector, vectors
        self.label_free = "" if detector == EQ5 else NOVELTY  # its events' detector
        # The training calibration is on the encoders' own scale: no fallback once vectors are standardized.
        self._training_fallback = normalization == NONE
        self._last_seen: dict[str, float] = {}
        self.bus, self.registry, self.artifacts, self.cache_dir = bus, registry, artifacts, cache_dir
        self.archive = archive  # where thumbnails come from; None: events carry none
        self._pending = f"avsurv:{registry.site}:events:pending"  # the outbox: ids published, not yet recorded
        self.subscription: Subscription | None = None
        self._join()
        self.runs: dict[tuple[str, str], _Run] = {}  # (camera, detector) -> its open event
        self._calibrations: dict[tuple[str, str], Calibration | None] = {}
        self._novelty: dict[tuple[str, str], NoveltyCalibration | None] = {}
        self._histories: dict[tuple[str, str], CameraHistory] = {}  # (version, camera) -> its clips so far
        self.events_published = 0  # ended
        self.messages_published = 0
        self.heads: dict[tuple[str, str], _Attached] = {}  # (camera, name) -> head
        self._heads_read = -math.inf
        self._failed_heads: set[tuple[str, str, str]] = set()  # (camera, name, sha256), logged once
        self._model_sha: dict[str, str] = {}
        self._holders: dict[tuple[str, int, int], int] = {}  # message -> detectors not done with it
        self.scores = ScoreSeries(registry.state, registry.site)
        self._scored: dict[str, list[ScorePoint]] = {}  # camera -> points of this poll, not yet written

    def calibration(self, version: str, camera_id: str) -> Calibration | None:
        """The camera's calibration in ``version``, else (vectors not standardized) the version's training
        one, with this detector's ``stds``; None while there is neither (its clips are then not flagged)."""
        key = (version, camera_id)
        if self._calibrations.get(key) is None:
            record = self.registry.model(version)
            found = self.registry.calibration(version, camera_id) or (
                record and self._training_fallback and record.training_calibration())
            self._calibrations[key] = found.with_stds(self.stds) if found else None
        return self._calibrations[key]

    def novelty(self, version: str, camera_id: str) -> NoveltyCalibration | None:
        """The camera's novelty calibration in ``version`` (None until the embedder has fitted one)."""
        key = (version, camera_id)
        if self._novelty.get(key) is None:
            self._novelty[key] = self.registry.novelty(version, camera_id)
        return self._novelty[key]

    def _history(self, version: str, camera_id: str, before: float, dim: int) -> CameraHistory:
        """The camera's clips in ``version``'s space before ``before``: read once from the vector store (the
        stored clips the embedder indexed, and after a restart the live ones too), then kept up to date
        here. A camera's histories of other versions are dropped."""
        key = (version, camera_id)
        if key not in self._histories:
            for old in [k for k in self._histories if k[1] == camera_id]:
                del self._histories[old]
            assert self.vectors is not None
            hits = self.vectors.window(collection_name(self.registry.site, version), camera_id,
                                       before - NOVELTY_HISTORY * CLIP_SECONDS, before - CLIP_SECONDS / 2)
            history = CameraHistory.empty(dim)
            if hits:
                history = history.added(np.stack([h.z_v for h in hits]), np.stack([h.z_a for h in hits]),
                                        np.array([float(h.payload["capture_time"]) for h in hits]))
                history = history.flagged(self._flagged_stamps(camera_id, float(history.times.min()), before))
            self._histories[key] = history
        return self._histories[key]

    def _flagged_stamps(self, camera_id: str, since: float, before: float) -> set[int]:
        """Starts (ms) of the camera's clips in the label-free events recorded from ``since`` to ``before``:
        a history read after a restart learns which of its clips are no normal examples."""
        stamps: set[int] = set()
        for payload in self.registry.events(since, before, READ_BACK):
            with suppress(DecodeError):
                event = pb.AnomalyEvent.FromString(payload)
                if event.header.camera_id == camera_id and event.detector == self.label_free:
                    stamps |= {parse_clip_id(c)[1] for c in event.clip_ids}
        return stamps

    def _label_free(self, embedding: pb.Embedding, z_v: np.ndarray, z_a: np.ndarray) -> _Verdict:
        """The configured label-free detector's verdict on the clip, which then joins its camera's history."""
        h, version = embedding.header, embedding.model_version
        if self.vectors is None:
            return self._eq5_of(embedding, z_v, z_a)
        history = self._history(version, h.camera_id, h.capture_time, z_v.shape[1])
        verdict = (self._novelty_of(embedding, z_v, z_a, history) if self.detector == NOVELTY
                   else self._eq5_of(embedding, z_v, z_a))
        self._histories[(version, h.camera_id)] = history.added(z_v, z_a, np.array([h.capture_time]),
                                                                np.array([not verdict.flagged]))
        return verdict

    def _novelty_of(self, embedding: pb.Embedding, z_v: np.ndarray, z_a: np.ndarray,
                 history: CameraHistory) -> _Verdict:
        h = embedding.header
        novelty = self.novelty(embedding.model_version, h.camera_id)
        modalities = novelty.modalities(z_v[0], z_a[0], h.capture_time, history) if novelty else None
        if novelty is None or modalities is None:
            return _Verdict(False, 0.0, 0.0, calibrated=False)  # no calibration or history: nothing to compare with
        threshold = novelty.calibration.with_stds(self.stds).threshold
        return _novelty_verdict(embedding.has_audio and sum(modalities) / 2 > threshold, modalities, threshold)

    def _eq5_of(self, embedding: pb.Embedding, z_v: np.ndarray, z_a: np.ndarray) -> _Verdict:
        h, version = embedding.header, embedding.model_version
        calibration = self.calibration(version, h.camera_id)
        if calibration is not None and not math.isclose(calibration.w, embedding.w):
            log.error("anomaly: %s of %s scored with w=%g but its calibration has w=%g: not flagged", h.clip_id,
                      version, embedding.w, calibration.w)
            calibration = None
        score = float(clip_scores(z_v, z_a, embedding.w)[0])
        if calibration is None:
            return _Verdict(False, score, 0.0, calibrated=False)
        return _Verdict(embedding.has_audio and score > calibration.threshold, score, calibration.threshold,
                        pb.AnomalyEvent.DISAGREE)

    def _join(self) -> None:
        self.subscription = self.bus.subscribe("anomaly-detector", [EMBEDDINGS])
        self.tracker = CommitTracker(self.subscription)

    def start_over(self) -> None:
        """Forgets the embeddings in flight, the runs and the histories built from them, and leaves the group,
        so that the next step rejoins it and gets every uncommitted one again."""
        leave(self.subscription)
        self.subscription = None
        self.runs.clear()
        self._holders.clear()
        self._last_seen.clear()
        self._histories.clear()
        self.heads.clear()  # their streams hold clips of the forgotten messages
        self._heads_read = -math.inf
        self._scored.clear()  # their clips come again

    def step(self) -> None:
        if self.subscription is None:
            self._join()
        assert self.subscription is not None
        if time.monotonic() - self._heads_read > HEADS_REFRESH_S:
            self._read_heads()
        messages = self.subscription.poll(timeout_s=0.5, max_messages=64)
        for message in messages:
            self.tracker.started(message)
        for message in messages:
            self._process(message)
        if self._scored:
            self.scores.add(self._scored)
            self._scored.clear()
        now = time.monotonic()
        for attached in [a for a in self.heads.values() if a.stream.waiting and now - a.touched > self.run_idle_s]:
            self._end_stream(attached)
        # A head's event may go on with the clips its stream still holds: it ends with the stream.
        held = {(a.record.camera_id, a.record.detector) for a in self.heads.values() if a.stream.waiting}
        idle = [r for r in self.runs.values()
                if now - r.touched > self.run_idle_s and (r.camera_id, r.detector) not in held]
        if idle:
            captured = {c.camera_id: c.last_capture_time for c in self.registry.camera_states()}
            for run in idle:
                if (captured.get(run.camera_id, -math.inf) < run.last + 2 * CLIP_SECONDS
                        or now - run.touched > RUN_WAIT_FACTOR * self.run_idle_s):
                    self._close(run)

    def _read_heads(self) -> None:
        """Follows the registry: loads newly attached heads, ends the streams of detached or replaced ones."""
        self._heads_read = time.monotonic()
        records = {(r.camera_id, r.name): r for r in self.registry.heads()}
        for key, attached in list(self.heads.items()):
            if records.get(key) != attached.record:
                self._end_stream(attached)
                del self.heads[key]
        for key, record in records.items():
            if key in self.heads or (*key, record.sha256) in self._failed_heads:
                continue
            try:
                head = load_attached(record, self.artifacts, self.cache_dir)
            except (ModelError, OSError, ValueError) as error:
                self._failed_heads.add((*key, record.sha256))
                log.error("head %s of %s cannot be loaded, left out: %s", record.name, record.camera_id, error)
                continue
            self.heads[key] = _Attached(record, HeadStream(head))
            log.info("head %s (%s) watches %s for %s", record.name, record.kind, record.camera_id,
                     ", ".join(record.labels))

    def _process(self, message: Message) -> None:
        try:
            embedding = parse(pb.Embedding, message.value)
            if len(embedding.z_v) != EMBEDDING_DIM or len(embedding.z_a) != EMBEDDING_DIM:
                raise InvalidMessage(f"embedding of sizes {len(embedding.z_v)}/{len(embedding.z_a)}, "
                                     f"expected {EMBEDDING_DIM}")
            if self.registry.model(embedding.model_version) is None:
                raise InvalidMessage(f"embedding of model version {embedding.model_version[:80]!r}, which the "
                                     "registry does not hold")
        except InvalidMessage as error:
            dead_letter(self.bus, message, str(error), self.name_, self.registry.site)
            DEAD_LETTERED.labels(self.name_).inc()
            self.tracker.done(message)
            return
        PROCESSED.labels(self.name_).inc()
        if _slot(message) in self._holders:
            return  # polled again after a rebalance while a run holds it: the run marks it done
        h, version = embedding.header, embedding.model_version
        if h.capture_time <= self._last_seen.get(h.camera_id, -math.inf):
            self.tracker.done(message)  # redelivered after an upstream restart: already scored
            return
        self._last_seen[h.camera_id] = h.capture_time
        heads = self._heads_reading(h.camera_id, version)
        self._holders[_slot(message)] = 1 + len(heads)
        z_v, z_a = np.asarray([embedding.z_v], np.float32), np.asarray([embedding.z_a], np.float32)
        clip = _Clip(message, h.clip_id, h.capture_time, h.site, z_v[0], z_a[0], embedding.w)
        verdict = self._label_free(embedding, z_v, z_a)
        if verdict.calibrated:
            self._scored.setdefault(h.camera_id, []).append(
                ScorePoint(h.capture_time, verdict.score, verdict.threshold, verdict.flagged))
        self._extend(clip, h.camera_id, self.label_free, "", version, verdict)
        for attached in heads:
            attached.version, attached.touched = version, time.monotonic()
            for prediction in attached.stream.add(clip, h.capture_time, z_v[0], z_a[0]):
                self._head_says(attached, prediction)

    def _heads_reading(self, camera_id: str, version: str) -> list[_Attached]:
        """The camera's heads trained on ``version``'s model; the others' runs end here."""
        if version not in self._model_sha:
            record = self.registry.model(version)
            self._model_sha[version] = record.sha256 if record else ""
        reading = []
        for attached in (a for a in self.heads.values() if a.record.camera_id == camera_id):
            if attached.record.model_sha256 == self._model_sha[version]:
                reading.append(attached)
            elif attached.version != version:
                log.warning("head %s of %s was trained on another model than %s: idle on its clips",
                            attached.record.name, camera_id, version)
                self._end_stream(attached)
                attached.version = version
        return reading

    def _end_stream(self, attached: _Attached) -> None:
        for prediction in attached.stream.end():
            self._head_says(attached, prediction)
        run = self.runs.get((attached.record.camera_id, attached.record.detector))
        if run is not None:
            self._close(run)

    def _head_says(self, attached: _Attached, prediction: StreamPrediction[_Clip]) -> None:
        record = attached.record
        self._extend(prediction.key, record.camera_id, record.detector, prediction.label or "", attached.version,
                     _Verdict(prediction.label in record.labels, prediction.score, attached.threshold))

    def _extend(self, clip: _Clip, camera_id: str, detector: str, label: str, version: str,
                verdict: _Verdict) -> None:
        """Adds a flagged clip to the (camera, detector) event, or ends that event at an unflagged one."""
        run, time_ = self.runs.get((camera_id, detector)), clip.capture_time
        if run is not None and (not verdict.flagged or run.version != version or run.label != label
                                or not 0 < time_ - run.last <= CLIP_SECONDS * 1.5):
            self._close(run)
            run = None
        if not verdict.flagged:
            self._release(clip.message)
            return
        if run is None:
            run = self.runs[(camera_id, detector)] = _Run(camera_id, detector, label, version, verdict.threshold,
                                                          time_, time_, clip, verdict, clip.site)
        run.last, run.touched = time_, time.monotonic()
        run.clip_ids.append(clip.clip_id)
        run.messages.append(clip.message)
        if verdict.score > run.peak_score:
            run.peak, run.verdict, run.evidence = clip, verdict, None
        if run.sequence < 0:
            self._emit(run, pb.AnomalyEvent.NEW)
        elif time_ - run.sent_at >= UPDATE_INTERVAL_S:  # each clip extends the event
            self._emit(run, pb.AnomalyEvent.UPDATE)

    def _release(self, message: Message) -> None:
        """One detector is done with the clip; the last one lets its offset be committed."""
        slot = _slot(message)
        self._holders[slot] -= 1
        if self._holders[slot] == 0:
            del self._holders[slot]
            self.tracker.done(message)

    def _close(self, run: _Run) -> None:
        self._emit(run, pb.AnomalyEvent.END)
        del self.runs[(run.camera_id, run.detector)]
        for message in run.messages:
            self._release(message)

    def _emit(self, run: _Run, phase: pb.AnomalyEvent.Phase) -> None:
        """Publishes the run's next lifecycle message once, and records it as the event's latest state."""
        run.sequence, run.sent_at, identifier = run.sequence + 1, run.last, run.event_id
        event = pb.AnomalyEvent(
            header=header(run.site, run.camera_id, run.clip_ids[0], run.start), event_id=identifier,
            start_time=run.start, end_time=run.last + CLIP_SECONDS, peak_score=run.peak_score,
            peak_time=run.peak.capture_time, threshold=run.threshold, model_version=run.version,
            clip_ids=run.clip_ids, detector=run.detector, label=run.label, phase=phase, sequence=run.sequence,
            evidence_uri=evidence_uri(self.registry.site, identifier),
        )
        event.MergeFrom(self._evidence(run))
        payload, key = event.SerializeToString(), _outbox_key(event)
        if (self.registry.event_sequence(identifier) < run.sequence
                and self._publish_once(key, event, payload)):
            self.messages_published += 1
            self.events_published += phase == pb.AnomalyEvent.END
            log.info("anomaly %s (%s): %s %.1f-%.1f peak %.3f > %.3f", pb.AnomalyEvent.Phase.Name(phase),
                     f"{run.detector} {run.label}" if run.detector else "d(z_v, z_a)", run.camera_id, run.start,
                     run.last + 1, run.peak_score, run.threshold)
        self.registry.record_event_message(identifier, run.start, run.sequence, payload)  # a replay: not again
        self.registry.state.srem(self._pending, key)

    def _evidence(self, run: _Run) -> pb.AnomalyEvent:
        """The evidence fields of the run's peak clip, worked out once per peak."""
        if run.evidence is None:
            peak = run.peak
            run.evidence = pb.AnomalyEvent(peak_clip_id=peak.clip_id, thumbnail_jpeg=self._thumbnail(peak.clip_id))
            run.verdict.explained(run.evidence)
            if (history := self._histories.get((run.version, run.camera_id))) is not None:
                times = history.nearest_normal(peak.z_v, peak.z_a, peak.w, run.start, NORMAL_CLIPS,
                                               NORMAL_SEPARATION_S)
                run.evidence.normal_clip_ids.extend(clip_id(run.camera_id, t) for t in times)
        return run.evidence

    def _thumbnail(self, clip_id_: str) -> bytes:
        """The clip's middle frame, ``THUMBNAIL_WIDTH`` px wide; empty when the clip store cannot give it (an
        event goes out without its picture rather than not at all)."""
        if self.archive is None:
            return b""
        try:
            frames = self.archive.get(clip_id_).frames_jpeg
            image = Image.open(io.BytesIO(frames[len(frames) // 2])).convert("RGB")
        except (KeyError, IndexError, OSError) as error:
            log.warning("anomaly: no thumbnail of %s: %s", clip_id_, error)
            return b""
        image.thumbnail((THUMBNAIL_WIDTH, THUMBNAIL_WIDTH * image.height // image.width + 1))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY)
        return buffer.getvalue()

    def _publish_once(self, key: str, event: pb.AnomalyEvent, payload: bytes) -> bool:
        """Publishes the message, unless a detector that died before recording it had (the outbox)."""
        if self.registry.state.sismember(self._pending, key) and self._landed(key, event.header.camera_id):
            log.info("anomaly: %s was published before a restart: recorded, not published again", key)
            return False
        self.registry.state.sadd(self._pending, key)
        self.bus.publish(ANOMALIES, event.header.camera_id, payload)
        self.bus.flush()
        return True

    def _landed(self, key: str, camera_id: str) -> bool:
        for value in self.bus.recent(ANOMALIES, camera_id, READ_BACK):
            with suppress(DecodeError):  # anyone may write to the topic
                if _outbox_key(pb.AnomalyEvent.FromString(value)) == key:
                    return True
        return False

    def drained(self) -> bool:
        """Every embedding given is scored and every event it opened is closed."""
        return self.subscription is not None and self.tracker.drained() and not self.runs

    def close(self) -> None:
        if self.subscription is not None:
            self.subscription.close()  # open runs stay uncommitted: the next detector rebuilds them


def _outbox_key(event: pb.AnomalyEvent) -> str:
    """A lifecycle message's key: (event id, phase, sequence)."""
    return f"{event.event_id}/{pb.AnomalyEvent.Phase.Name(event.phase)}/{event.sequence}"


def _slot(message: Message) -> tuple[str, int, int]:
    return message.topic, message.partition, message.offset


def build(ports: Ports, settings: Settings) -> ServiceParts:
    if ports.vectors is None:
        ports.vectors = open_vectors(settings.vectors_url)  # the cameras' histories: novelty, normal clips
    return ServiceParts(worker=AnomalyService(ports.bus, ports.registry, ports.artifacts,
                                              settings.data_dir / "model-cache", settings.anomaly_run_idle_s,
                                              settings.anomaly_stds, settings.anomaly_detector, ports.vectors,
                                              settings.normalization, ports.archive))

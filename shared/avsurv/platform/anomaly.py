"""Anomaly detector: embeddings in, anomaly events out (``avsurv.anomalies.v1``), EPG section 4.3.

A clip's score is ``d(z_v, z_a)`` (Eq. 5); it is anomalous above ``mean + 2 std`` of the calibration of
its camera and model version (kept in the state store by the embedder; the model's own training
calibration when a camera has none). Consecutive anomalous clips of a camera merge into one event,
published when the run ends. Event ids are deterministic, and an event already stored is not published
again, so a replay after a restart repeats nothing; offsets are committed once a clip's event is out.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avsurv.adapters.artifacts import Artifacts
from avsurv.adapters.bus import Bus, CommitTracker, Message
from avsurv.constants import ANOMALY_STDS, CLIP_SECONDS, EMBEDDING_DIM
from avsurv.learning.modeldir import CALIBRATION
from avsurv.platform.messages import ANOMALIES, EMBEDDINGS, InvalidMessage, dead_letter, event_id, header, parse
from avsurv.platform.registry import Registry
from avsurv.platform.worker import DEAD_LETTERED, PROCESSED, Worker, log
from avsurv.tasks.anomalies import clip_scores
from avsurv.v1 import messages_pb2 as pb


@dataclass
class _Run:
    camera_id: str
    version: str
    threshold: float
    start: float
    last: float
    peak_score: float
    peak_time: float
    site: str
    clip_ids: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    touched: float = field(default_factory=time.monotonic)


class AnomalyService(Worker):
    name_ = "anomaly-detector"

    def __init__(self, bus: Bus, registry: Registry, artifacts: Artifacts, cache_dir: Path,
                 run_idle_s: float) -> None:
        super().__init__()
        self.run_idle_s = run_idle_s
        self._last_seen: dict[str, float] = {}
        self.bus, self.registry, self.artifacts, self.cache_dir = bus, registry, artifacts, cache_dir
        self.subscription = bus.subscribe("anomaly-detector", [EMBEDDINGS])
        self.tracker = CommitTracker(self.subscription)
        self.runs: dict[str, _Run] = {}
        self._thresholds: dict[tuple[str, str], float | None] = {}
        self.events_published = 0

    def threshold(self, version: str, camera_id: str) -> float | None:
        key = (version, camera_id)
        if self._thresholds.get(key) is None:
            stats = self.registry.calibration(version, camera_id) or self._model_calibration(version)
            self._thresholds[key] = stats["mean"] + ANOMALY_STDS * stats["std"] if stats else None
        return self._thresholds[key]

    def _model_calibration(self, version: str) -> dict[str, float] | None:
        record = self.registry.model(version)
        if record is None:
            return None
        path = self.artifacts.fetch(record.artifact_uri, self.cache_dir) / CALIBRATION
        return json.loads(path.read_text()) if path.is_file() else None

    def step(self) -> None:
        messages = self.subscription.poll(timeout_s=0.5, max_messages=64)
        for message in messages:
            self.tracker.started(message)
        for message in messages:
            self._process(message)
        now = time.monotonic()
        for run in [r for r in self.runs.values() if now - r.touched > self.run_idle_s]:
            self._close(run)

    def _process(self, message: Message) -> None:
        try:
            embedding = parse(pb.Embedding, message.value)
            if len(embedding.z_v) != EMBEDDING_DIM or len(embedding.z_a) != EMBEDDING_DIM:
                raise InvalidMessage(f"embedding of sizes {len(embedding.z_v)}/{len(embedding.z_a)}, "
                                     f"expected {EMBEDDING_DIM}")
        except InvalidMessage as error:
            dead_letter(self.bus, message, str(error), self.name_, self.registry.site)
            DEAD_LETTERED.labels(self.name_).inc()
            self.tracker.done(message)
            return
        PROCESSED.labels(self.name_).inc()
        h, version = embedding.header, embedding.model_version
        if h.capture_time <= self._last_seen.get(h.camera_id, -math.inf):
            self.tracker.done(message)  # redelivered after an upstream restart: already scored
            return
        self._last_seen[h.camera_id] = h.capture_time
        threshold = self.threshold(version, h.camera_id)
        score = float(clip_scores(np.asarray([embedding.z_v], np.float32), np.asarray([embedding.z_a], np.float32))[0])
        anomalous = embedding.has_audio and threshold is not None and score > threshold
        run = self.runs.get(h.camera_id)
        if run is not None and (not anomalous or run.version != version
                                or not 0 < h.capture_time - run.last <= CLIP_SECONDS * 1.5):
            self._close(run)
            run = None
        if not anomalous:
            self.tracker.done(message)
            return
        if run is None:
            run = self.runs[h.camera_id] = _Run(h.camera_id, version, float(threshold), h.capture_time,
                                                h.capture_time, score, h.capture_time, h.site)
        run.last, run.touched = h.capture_time, time.monotonic()
        run.clip_ids.append(h.clip_id)
        run.messages.append(message)
        if score > run.peak_score:
            run.peak_score, run.peak_time = score, h.capture_time

    def _close(self, run: _Run) -> None:
        del self.runs[run.camera_id]
        identifier = event_id(run.camera_id, run.start, run.version)
        event = pb.AnomalyEvent(
            header=header(run.site, run.camera_id, run.clip_ids[0], run.start), event_id=identifier,
            start_time=run.start, end_time=run.last + CLIP_SECONDS, peak_score=run.peak_score,
            peak_time=run.peak_time, threshold=run.threshold, model_version=run.version, clip_ids=run.clip_ids,
        )
        payload = event.SerializeToString()
        if not self.registry.has_event(identifier):  # a replayed run is not published twice
            self.bus.publish(ANOMALIES, run.camera_id, payload)
            self.bus.flush()
            self.registry.record_event(identifier, run.start, payload)
            self.events_published += 1
            log.info("anomaly: %s %.1f-%.1f peak %.3f > %.3f", run.camera_id, run.start, run.last + 1,
                     run.peak_score, run.threshold)
        for message in run.messages:
            self.tracker.done(message)

    def close(self) -> None:
        self.subscription.close()  # open runs stay uncommitted: the next detector rebuilds them

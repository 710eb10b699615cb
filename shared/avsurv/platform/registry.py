"""The platform's small durable state, kept in the state store (Redis): cameras, model versions,
anomaly calibrations, per-camera embedding statistics, heads attached to cameras, anomaly events and
training requests. Keys are namespaced by site."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from avsurv.errors import ModelError
from avsurv.learning.calibration import Calibration
from avsurv.learning.normalization import CameraStats
from avsurv.tasks.novelty import NoveltyCalibration

EVENTS_CHANNEL = "avsurv:{site}:anomalies:live"


@dataclass
class CameraState:
    camera_id: str
    source: str
    status: str = "starting"
    last_capture_time: float = 0.0
    detail: str = ""


@dataclass
class ModelRecord:
    """A model version's contract: what every service needs to use its embeddings without loading its
    weights: the Eq. 5 weight ``w`` its scores and distances are computed with, its profile, and the
    anomaly calibration of its training clips (``Calibration.to_dict()``; None if it has none)."""

    version: str
    sha256: str
    artifact_uri: str
    created_time: float
    w: float
    profile: str
    calibration: dict[str, Any] | None = None
    parent_version: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    indexed: bool = False

    def training_calibration(self) -> Calibration | None:
        return Calibration.from_dict(self.calibration) if self.calibration else None


@dataclass
class HeadRecord:
    """A trained head attached to a camera (``avsurv.platform.head_attachments``): ``labels`` are the head's labels
    that make events."""

    camera_id: str
    name: str
    kind: str
    sha256: str
    artifact_uri: str
    model_sha256: str
    labels: list[str]
    attached_time: float

    @property
    def detector(self) -> str:
        return f"head:{self.kind}:{self.name}"


def _model_record(raw: bytes) -> ModelRecord:
    data = json.loads(raw)
    if "w" not in data:
        raise ModelError(f"model version {data.get('version')} was registered without its w and profile (an "
                         "older avsurv): publish its directory again")
    return ModelRecord(**data)


class Registry:
    def __init__(self, state: redis.Redis, site: str) -> None:
        self.state, self.site = state, site

    def _key(self, *parts: str) -> str:
        return ":".join(("avsurv", self.site, *parts))

    # -- cameras ---------------------------------------------------------------------------------
    def wanted_cameras(self) -> dict[str, str]:
        """Camera id -> source, as set through the control API (ingest follows it)."""
        return {k.decode(): v.decode() for k, v in self.state.hgetall(self._key("cameras", "wanted")).items()}

    def want_camera(self, camera_id: str, source: str) -> None:
        self.state.hset(self._key("cameras", "wanted"), camera_id, source)

    def drop_camera(self, camera_id: str) -> bool:
        return bool(self.state.hdel(self._key("cameras", "wanted"), camera_id))

    def report_camera(self, camera: CameraState) -> None:
        self.state.hset(self._key("cameras", "status"), camera.camera_id, json.dumps(asdict(camera)))

    def forget_camera_status(self, camera_id: str) -> None:
        self.state.hdel(self._key("cameras", "status"), camera_id)

    def camera_states(self) -> list[CameraState]:
        raw = self.state.hgetall(self._key("cameras", "status"))
        return sorted((CameraState(**json.loads(v)) for v in raw.values()), key=lambda c: c.camera_id)

    # -- models ----------------------------------------------------------------------------------
    def add_model(self, record: ModelRecord) -> None:
        self.state.hset(self._key("models"), record.version, json.dumps(asdict(record)))

    def model(self, version: str) -> ModelRecord | None:
        raw = self.state.hget(self._key("models"), version)
        return _model_record(raw) if raw else None

    def models(self) -> list[ModelRecord]:
        records = [_model_record(v) for v in self.state.hgetall(self._key("models")).values()]
        return sorted(records, key=lambda r: r.created_time)

    def mark_indexed(self, version: str) -> None:
        record = self.model(version)
        if record is not None:
            record.indexed = True
            self.add_model(record)

    def active_version(self) -> str | None:
        raw = self.state.get(self._key("models", "active"))
        return raw.decode() if raw else None

    def target_version(self) -> str | None:
        """The version the embedder should serve: set by a publication, activation or rollback; it becomes
        active once it is indexed and calibrated."""
        raw = self.state.get(self._key("models", "target"))
        return raw.decode() if raw else None

    def set_target(self, version: str) -> None:
        if self.model(version) is None:
            raise KeyError(f"unknown model version {version!r}")
        pipe = self.state.pipeline()
        pipe.set(self._key("models", "target"), version)
        pipe.delete(self._key("models", "rollback"))  # a new target supersedes a pending rollback
        pipe.execute()

    def activate(self, version: str) -> None:
        """Makes ``version`` active and remembers the previous one for rollback, unless ``version`` is the
        target of a rollback: then the previous one was rolled back from, and the history walks back."""
        previous = self.active_version()
        rollback = self.state.get(self._key("models", "rollback"))
        pipe = self.state.pipeline()
        if previous and previous != version and rollback != version.encode():
            pipe.rpush(self._key("models", "history"), previous)
        pipe.delete(self._key("models", "rollback"))
        pipe.set(self._key("models", "active"), version)
        pipe.execute()

    def previous_version(self) -> str | None:
        raw = self.state.lindex(self._key("models", "history"), -1)
        return raw.decode() if raw else None

    def roll_back(self) -> str | None:
        """Targets the version active before the current one and takes it off the history; None if there
        is none. Each rollback goes one version further back."""
        raw = self.state.rpop(self._key("models", "history"))
        if raw is None:
            return None
        previous = raw.decode()
        pipe = self.state.pipeline()
        pipe.set(self._key("models", "target"), previous)
        pipe.set(self._key("models", "rollback"), previous)
        pipe.execute()
        return previous

    # -- calibration -----------------------------------------------------------------------------
    def set_calibration(self, version: str, camera_id: str, calibration: Calibration) -> None:
        self.state.hset(self._key("calibration", version), camera_id, json.dumps(calibration.to_dict()))

    def calibration(self, version: str, camera_id: str) -> Calibration | None:
        """The camera's calibration in ``version`` (fitted by the embedder on its stored clips), else None."""
        raw = self.state.hget(self._key("calibration", version), camera_id)
        return Calibration.from_dict(json.loads(raw)) if raw else None

    def set_novelty(self, version: str, camera_id: str, novelty: NoveltyCalibration) -> None:
        self.state.hset(self._key("novelty", version), camera_id, json.dumps(novelty.to_dict()))

    def novelty(self, version: str, camera_id: str) -> NoveltyCalibration | None:
        """The camera's novelty calibration in ``version`` (fitted by the embedder on its stored clips)."""
        raw = self.state.hget(self._key("novelty", version), camera_id)
        return NoveltyCalibration.from_dict(json.loads(raw)) if raw else None

    # -- per-camera embedding statistics (avsurv.learning.normalization) ----------------------------
    def set_camera_stats(self, version: str, camera_id: str, stats: CameraStats) -> None:
        self.state.hset(self._key("camera_stats", version), camera_id, json.dumps(stats.to_dict()))

    def camera_stats(self, version: str, camera_id: str) -> CameraStats | None:
        """The running statistics of the camera's embeddings in ``version``'s space, None before any."""
        raw = self.state.hget(self._key("camera_stats", version), camera_id)
        return CameraStats.from_dict(json.loads(raw)) if raw else None

    def all_camera_stats(self, version: str) -> dict[str, CameraStats]:
        """camera_id -> :meth:`camera_stats` of every camera seen in ``version``'s space."""
        raw = self.state.hgetall(self._key("camera_stats", version))
        return {camera.decode(): CameraStats.from_dict(json.loads(value)) for camera, value in raw.items()}

    # -- heads -----------------------------------------------------------------------------------
    def attach_head(self, record: HeadRecord) -> None:
        """Attaches a head to its camera, replacing the camera's head of the same name."""
        self.state.hset(self._key("heads"), f"{record.camera_id}/{record.name}", json.dumps(asdict(record)))

    def detach_head(self, camera_id: str, name: str) -> bool:
        return bool(self.state.hdel(self._key("heads"), f"{camera_id}/{name}"))

    def heads(self) -> list[HeadRecord]:
        records = [HeadRecord(**json.loads(v)) for v in self.state.hgetall(self._key("heads")).values()]
        return sorted(records, key=lambda r: (r.camera_id, r.name))

    # -- anomaly events --------------------------------------------------------------------------
    def has_event(self, event_id: str) -> bool:
        return bool(self.state.hexists(self._key("events"), event_id))

    def record_event(self, event_id: str, start_time: float, payload: bytes) -> bool:
        """Stores an event once; False if it was already stored (a replay)."""
        if not self.state.hsetnx(self._key("events"), event_id, payload):
            return False
        self.state.zadd(self._key("events", "by_time"), {event_id: start_time})
        self.state.publish(EVENTS_CHANNEL.format(site=self.site), payload)
        return True

    def event_sequence(self, event_id: str) -> float:
        """The sequence of the event's latest recorded lifecycle message: -1 for none, inf for an event
        recorded whole before the lifecycle (it had one message)."""
        if (sequence := self.state.hget(self._key("events", "sequence"), event_id)) is not None:
            return int(sequence)
        return math.inf if self.has_event(event_id) else -1

    def record_event_message(self, event_id: str, start_time: float, sequence: int, payload: bytes) -> bool:
        """Stores a lifecycle message as the event's latest state, and hands it to live watchers; False if
        a message as late was already stored (a replay). One detector writes each event."""
        if sequence <= self.event_sequence(event_id):
            return False
        with self.state.pipeline() as pipe:
            pipe.hset(self._key("events"), event_id, payload)
            pipe.hset(self._key("events", "sequence"), event_id, sequence)
            pipe.zadd(self._key("events", "by_time"), {event_id: start_time})
            pipe.publish(EVENTS_CHANNEL.format(site=self.site), payload)
            pipe.execute()
        return True

    def event(self, event_id: str) -> bytes | None:
        """The event's latest stored message."""
        return self.state.hget(self._key("events"), event_id)

    def events(self, start_time: float | None, end_time: float | None, limit: int) -> list[bytes]:
        """Stored events, newest first, starting in [start_time, end_time]."""
        ids = self.state.zrevrangebyscore(self._key("events", "by_time"),
                                          "+inf" if end_time is None else end_time,
                                          "-inf" if start_time is None else start_time, start=0, num=limit)
        return [p for p in self.state.hmget(self._key("events"), ids) if p is not None] if ids else []

    def events_since(self, start_time: float) -> list[bytes]:
        """Every stored event starting at or after ``start_time``, oldest first (no limit: retention must see
        each event whose clips it keeps)."""
        ids = self.state.zrangebyscore(self._key("events", "by_time"), start_time, "+inf")
        return [p for p in self.state.hmget(self._key("events"), ids) if p is not None] if ids else []

    def live_events(self) -> redis.client.PubSub:
        pubsub = self.state.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(EVENTS_CHANNEL.format(site=self.site))
        return pubsub

    # -- trainer ---------------------------------------------------------------------------------
    def request_training(self, epochs: int = 0) -> None:
        """Asks for a training round (``epochs`` 0: the configured number)."""
        self.state.set(self._key("trainer", "requested"), epochs)

    def start_round(self, round_id: str) -> None:
        """The trainer's round ``round_id`` is running (what :meth:`cancel_training` cancels)."""
        self.state.set(self._key("trainer", "running"), round_id)

    def end_round(self) -> None:
        self.state.delete(self._key("trainer", "running"), self._key("trainer", "cancel"))

    def cancel_training(self) -> str | None:
        """Drops a pending request and asks the running round to stop: "requested", "running" (both:
        "running"), or None when there was nothing to cancel."""
        dropped = self.state.delete(self._key("trainer", "requested"))
        running = self.state.get(self._key("trainer", "running"))
        if running is not None:
            self.state.set(self._key("trainer", "cancel"), running)  # names the round: never a later one
            return "running"
        return "requested" if dropped else None

    def round_cancelled(self, round_id: str) -> bool:
        return self.state.get(self._key("trainer", "cancel")) == round_id.encode()

    def take_training_request(self) -> int | None:
        """The pending request's epochs (0: configured), or None when nothing is asked for."""
        raw = self.state.getdel(self._key("trainer", "requested"))
        return None if raw is None else int(raw)

    def set_trainer_status(self, **status: Any) -> None:
        self.state.set(self._key("trainer", "status"), json.dumps({**status, "updated_time": time.time()}))

    def trainer_status(self) -> dict[str, Any]:
        raw = self.state.get(self._key("trainer", "status"))
        return json.loads(raw) if raw else {"state": "idle", "updated_time": 0.0}

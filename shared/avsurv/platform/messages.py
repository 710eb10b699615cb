"""Topic names and the conversions between core objects and the protobuf payloads of the topics."""

from __future__ import annotations

import hashlib
import time
from typing import TypeVar

import numpy as np
from google.protobuf.message import Message

from avsurv.adapters.bus import Bus
from avsurv.adapters.bus import Message as BusMessage
from avsurv.constants import FRAME_HEIGHT, FRAME_WIDTH, FRAMES_PER_CLIP, MEL_FRAMES, N_MELS
from avsurv.media.clipstore import decode_jpeg, encode_jpeg
from avsurv.media.segment import Clip
from avsurv.v1 import messages_pb2 as pb

CHUNKS = "avsurv.chunks.v1"
CLIPS = "avsurv.clips.v1"
EMBEDDINGS = "avsurv.embeddings.v1"
ANOMALIES = "avsurv.anomalies.v1"
MODELS = "avsurv.models.v1"
DEAD_LETTERS = "avsurv.deadletter.v1"
TOPICS = (CHUNKS, CLIPS, EMBEDDINGS, ANOMALIES, MODELS, DEAD_LETTERS)

M = TypeVar("M", bound=Message)


class InvalidMessage(ValueError):
    """A payload that cannot be used; it goes to the dead-letter topic with this reason."""


def header(site: str, camera_id: str = "", clip_id: str = "", capture_time: float = 0.0) -> pb.Header:
    return pb.Header(schema_version=pb.SCHEMA_VERSION_1, site=site, camera_id=camera_id, clip_id=clip_id,
                     capture_time=capture_time)


def parse(message_type: type, payload: bytes):
    """Decodes a payload and checks its schema version; raises :class:`InvalidMessage` otherwise."""
    try:
        message = message_type.FromString(payload)
    except Exception as error:  # protobuf raises DecodeError and, for some inputs, others
        raise InvalidMessage(f"not a {message_type.__name__} message: {error}") from error
    version = message.header.schema_version
    if version != pb.SCHEMA_VERSION_1:
        raise InvalidMessage(f"{message_type.__name__} has schema version {version}, this service reads 1")
    return message


def clip_to_message(clip: Clip, site: str, media_uri: str = "") -> pb.Clip:
    capture = clip.capture_time if clip.capture_time is not None else clip.start
    return pb.Clip(
        header=header(site, clip.camera_id, clip.clip_id, capture),
        frames_jpeg=[encode_jpeg(frame) for frame in clip.frames],
        log_mel_f16=clip.log_mel.astype("<f2").tobytes(), has_audio=clip.has_audio, media_uri=media_uri,
    )


def clip_from_message(message: pb.Clip, source: str = "") -> Clip:
    """The core clip of a message (frames decoded); capture time is the header's."""
    if len(message.frames_jpeg) != FRAMES_PER_CLIP:
        raise InvalidMessage(f"clip {message.header.clip_id} has {len(message.frames_jpeg)} frames, "
                             f"expected {FRAMES_PER_CLIP}")
    if len(message.log_mel_f16) != N_MELS * MEL_FRAMES * 2:
        raise InvalidMessage(f"clip {message.header.clip_id} has a log-mel of {len(message.log_mel_f16)} bytes")
    try:
        frames = np.stack([decode_jpeg(data) for data in message.frames_jpeg])
    except Exception as error:  # Pillow raises several types for damaged JPEG
        raise InvalidMessage(f"clip {message.header.clip_id} has a frame that is not a JPEG: {error}") from error
    if frames.shape != (5, FRAME_HEIGHT, FRAME_WIDTH, 3):
        raise InvalidMessage(f"clip {message.header.clip_id} has frames of shape {list(frames.shape[1:])}")
    log_mel = np.frombuffer(message.log_mel_f16, "<f2").astype(np.float32).reshape(1, N_MELS, MEL_FRAMES)
    h = message.header
    return Clip(camera_id=h.camera_id, start=h.capture_time, capture_time=h.capture_time,
                source=source or message.media_uri, has_audio=message.has_audio, frames=frames, log_mel=log_mel)


def event_id(camera_id: str, start_time: float, model_version: str, detector: str = "") -> str:
    """Deterministic: the same event found twice (a replay after a restart) has the same id; events of
    different detectors (``AnomalyEvent.detector``) starting together have different ids."""
    key = f"{camera_id}\x00{start_time:.3f}\x00{model_version}" + (f"\x00{detector}" if detector else "")
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def dead_letter(bus: Bus, message: BusMessage, reason: str, service: str, site: str) -> None:
    """Sends an unusable message to the dead-letter topic with why; the caller then commits it."""
    letter = pb.DeadLetter(header=header(site), topic=message.topic, partition=message.partition,
                           offset=message.offset, key=message.key.encode(), payload=message.value,
                           reason=reason, service=service, time=time.time())
    bus.publish(DEAD_LETTERS, message.key, letter.SerializeToString())
    bus.flush()

"""Topic names and the conversions between core objects and the protobuf payloads of the topics."""

from __future__ import annotations

import hashlib
import math
import time
from typing import TypeVar

import numpy as np
from google.protobuf.message import Message

from avsurv.adapters.bus import Bus
from avsurv.adapters.bus import Message as BusMessage
from avsurv.clipids import MAX_TIME_S, check_camera_id, parse_clip_id
from avsurv.constants import FRAME_HEIGHT, FRAME_WIDTH, FRAMES_PER_CLIP, MEL_FRAMES, N_MELS
from avsurv.media.clipstore import CLIP_SAMPLES, decode_jpeg, frames_as_jpeg, from_pcm16, to_pcm16
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


MAX_FPS = 1000.0
"""A chunk's frame rate; cameras give tens."""


class InvalidMessage(ValueError):
    """A payload that cannot be used; it goes to the dead-letter topic with this reason."""


def header(site: str, camera_id: str = "", clip_id: str = "", capture_time: float = 0.0) -> pb.Header:
    return pb.Header(schema_version=pb.SCHEMA_VERSION_1, site=site, camera_id=camera_id, clip_id=clip_id,
                     capture_time=capture_time)


def parse(message_type: type, payload: bytes):
    """Decodes a payload and checks its schema version, camera id and capture time, and the fields of a
    chunk, clip or embedding (finite times, samples and vectors; a clip id of its camera; w in [0, 1]);
    raises :class:`InvalidMessage` with the reason otherwise."""
    try:
        message = message_type.FromString(payload)
    except Exception as error:  # protobuf raises DecodeError and, for some inputs, others
        raise InvalidMessage(f"not a {message_type.__name__} message: {error}") from error
    version = message.header.schema_version
    if version != pb.SCHEMA_VERSION_1:
        raise InvalidMessage(f"{message_type.__name__} has schema version {version}, this service reads 1")
    try:
        check_camera_id(message.header.camera_id)
    except ValueError as error:
        raise InvalidMessage(f"{message_type.__name__}: {error}") from None
    _check_time("header.capture_time", message.header.capture_time)
    check = _CHECKS.get(message_type)
    if check is not None:
        check(message)
    return message


def _check_time(name: str, value: float) -> None:
    if not (math.isfinite(value) and abs(value) <= MAX_TIME_S):
        raise InvalidMessage(f"{name} must be a finite time of at most {MAX_TIME_S:g} s either way, got {value}")


def _check_chunk(chunk: pb.Chunk) -> None:
    if not chunk.session:
        raise InvalidMessage("chunk without a session")
    _check_time("chunk capture_epoch", chunk.capture_epoch)
    if not (math.isfinite(chunk.fps) and 0 <= chunk.fps <= MAX_FPS):
        raise InvalidMessage(f"chunk fps must lie in [0, {MAX_FPS:g}], got {chunk.fps}")
    for piece in [*chunk.frames, *chunk.audio]:
        _check_time("chunk media_time", piece.media_time)
    if any(len(a.pcm_f32le) % 4 for a in chunk.audio):
        raise InvalidMessage(f"chunk {chunk.session}/{chunk.sequence} has audio that is not whole float samples")
    if not all(np.isfinite(np.frombuffer(a.pcm_f32le, "<f4")).all() for a in chunk.audio):
        raise InvalidMessage(f"chunk {chunk.session}/{chunk.sequence} has audio samples that are not finite")


def _check_clip(clip: pb.Clip) -> None:
    try:
        camera, _ = parse_clip_id(clip.header.clip_id)
    except ValueError as error:
        raise InvalidMessage(f"clip: {error}") from None
    if camera != clip.header.camera_id:
        raise InvalidMessage(f"clip {clip.header.clip_id[:80]!r} is not of camera {clip.header.camera_id!r}")
    if len(clip.log_mel_f16) % 2 or not np.isfinite(np.frombuffer(clip.log_mel_f16, "<f2")).all():
        raise InvalidMessage(f"clip {clip.header.clip_id} has a log-mel that is not finite float16 values")


def _check_embedding(embedding: pb.Embedding) -> None:
    if not embedding.model_version:
        raise InvalidMessage(f"embedding of {embedding.header.clip_id} names no model version")
    if not (np.isfinite(embedding.z_v).all() and np.isfinite(embedding.z_a).all()):
        raise InvalidMessage(f"embedding of {embedding.header.clip_id} has values that are not finite")
    if not 0.0 <= embedding.w <= 1.0:  # NaN fails too
        raise InvalidMessage(f"embedding of {embedding.header.clip_id} has w {embedding.w}, outside [0, 1]")


_CHECKS = {pb.Chunk: _check_chunk, pb.Clip: _check_clip, pb.Embedding: _check_embedding}


def clip_to_message(clip: Clip, site: str, media_uri: str = "") -> pb.Clip:
    capture = clip.capture_time if clip.capture_time is not None else clip.start
    return pb.Clip(
        header=header(site, clip.camera_id, clip.clip_id, capture),
        frames_jpeg=frames_as_jpeg(clip),
        log_mel_f16=clip.log_mel.astype("<f2").tobytes(), has_audio=clip.has_audio, media_uri=media_uri,
        audio_pcm_s16le=to_pcm16(clip.audio).astype("<i2").tobytes() if clip.audio is not None else b"",
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
                source=source or message.media_uri, has_audio=message.has_audio, frames=frames, log_mel=log_mel,
                audio=clip_audio(message))


def clip_audio(message: pb.Clip) -> np.ndarray | None:
    """The clip's stored samples (float32 [44100]), None when it was stored without them."""
    if not message.audio_pcm_s16le:
        return None
    if len(message.audio_pcm_s16le) != CLIP_SAMPLES * 2:
        raise InvalidMessage(f"clip {message.header.clip_id} has {len(message.audio_pcm_s16le)} bytes of audio, "
                             f"expected {CLIP_SAMPLES * 2}")
    return from_pcm16(np.frombuffer(message.audio_pcm_s16le, "<i2"))


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

"""Fuzz the topics (issue 14 item 3): seeded, certainly-invalid messages on every topic a service consumes
(garbage bytes, a wrong schema version, camera ids the clip store refuses, NaN and infinite times, bad
frames, sizes and vectors) go to the dead-letter topic with a reason, and no service step fails.

CI sends 60 per topic (180); the long variant sends more, with another seed:
``AVSURV_FUZZ_PER_TOPIC=400 AVSURV_FUZZ_SEED=1 pytest tests/test_fuzz_topics.py`` (1,200 messages)."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
from platformkit import untrained_model, wait_for

from avsurv.adapters.bus import InProcessBus
from avsurv.constants import EMBEDDING_DIM, FRAME_HEIGHT, FRAME_WIDTH, MEL_FRAMES, N_MELS
from avsurv.media.clipstore import encode_jpeg
from avsurv.platform.config import load_settings
from avsurv.platform.messages import CHUNKS, CLIPS, DEAD_LETTERS, EMBEDDINGS, header
from avsurv.platform.runtime import SERVICES, Runtime
from avsurv.platform.worker import ERRORS
from avsurv.v1 import messages_pb2 as pb

PER_TOPIC = int(os.environ.get("AVSURV_FUZZ_PER_TOPIC", "60"))
SEED = int(os.environ.get("AVSURV_FUZZ_SEED", "14"))
BAD_CAMERAS = ("", "../x", "cam0\n", ".hidden", "c" * 1000, "cam 0", "cam/0")
BAD_TIMES = (math.nan, math.inf, -math.inf, 1e300, -1e300)
JPEG = encode_jpeg(np.zeros((FRAME_HEIGHT, FRAME_WIDTH, 3), np.uint8))


def _chunk(rng: random.Random) -> pb.Chunk:
    chunk = pb.Chunk(header=header("site", "cam9"), session="s1", sequence=rng.randrange(100), capture_epoch=1.7e9,
                     fps=25.0, has_audio=True, source="x.mp4")
    chunk.frames.extend(pb.Frame(media_time=i / 25, jpeg=JPEG) for i in range(5))
    chunk.audio.append(pb.AudioPiece(media_time=0.0, pcm_f32le=np.zeros(4800, "<f4").tobytes()))
    bad: list[Callable[[], None]] = [
        lambda: setattr(chunk, "capture_epoch", rng.choice(BAD_TIMES)),
        lambda: setattr(chunk.frames[rng.randrange(5)], "media_time", rng.choice(BAD_TIMES)),
        lambda: setattr(chunk, "fps", rng.choice((math.nan, math.inf, -25.0, 1e9))),
        lambda: setattr(chunk.frames[rng.randrange(5)], "jpeg", rng.randbytes(rng.randrange(1, 64))),
        lambda: setattr(chunk.audio[0], "pcm_f32le", _floats(rng.choice(BAD_TIMES), 4800, "<f4")),
        lambda: setattr(chunk.audio[0], "media_time", rng.choice(BAD_TIMES)),
        lambda: setattr(chunk, "session", ""),
    ]
    return _mutated(rng, chunk, bad)


def _clip(rng: random.Random) -> pb.Clip:
    clip = pb.Clip(header=header("site", "cam9", "cam9:1700000000000", 1.7e9), frames_jpeg=[JPEG] * 5,
                   log_mel_f16=np.zeros(N_MELS * MEL_FRAMES, "<f2").tobytes(), has_audio=True)
    bad: list[Callable[[], None]] = [
        lambda: setattr(clip.header, "capture_time", rng.choice(BAD_TIMES)),
        lambda: clip.frames_jpeg.__setitem__(rng.randrange(5), rng.randbytes(rng.randrange(1, 64))),
        lambda: clip.frames_jpeg.append(JPEG),
        lambda: setattr(clip, "log_mel_f16", clip.log_mel_f16[: rng.randrange(len(clip.log_mel_f16))]),
        lambda: setattr(clip, "log_mel_f16", _floats(rng.choice(BAD_TIMES), N_MELS * MEL_FRAMES, "<f2")),
        lambda: setattr(clip.header, "clip_id", rng.choice(("", "cam9", "cam9:x", "other:1700000000000"))),
    ]
    return _mutated(rng, clip, bad)


def _floats(value: float, count: int, dtype: str) -> bytes:
    with np.errstate(over="ignore"):  # 1e300 becomes infinity, as intended
        return np.full(count, value).astype(dtype).tobytes()


def _embedding(rng: random.Random) -> pb.Embedding:
    embedding = pb.Embedding(header=header("site", "cam9", "cam9:1700000000000", 1.7e9), model_version="v1",
                             z_v=np.zeros(EMBEDDING_DIM), z_a=np.zeros(EMBEDDING_DIM), has_audio=True, point_id="p",
                             w=0.5)
    bad: list[Callable[[], None]] = [
        lambda: setattr(embedding.header, "capture_time", rng.choice(BAD_TIMES)),
        lambda: embedding.z_v.__setitem__(rng.randrange(EMBEDDING_DIM), rng.choice(BAD_TIMES)),
        lambda: embedding.z_a.append(0.0),
        lambda: setattr(embedding, "w", rng.choice((math.nan, -0.5, 2.0))),
        lambda: setattr(embedding, "model_version", ""),
    ]
    return _mutated(rng, embedding, bad)


def _mutated(rng: random.Random, message, bad: list[Callable[[], None]]):
    for mutate in rng.sample(bad, rng.randint(1, 2)):
        mutate()
    if rng.random() < 0.3:
        message.header.camera_id = rng.choice(BAD_CAMERAS)
    if rng.random() < 0.1:
        message.header.schema_version = 7
    return message


def _garbage(rng: random.Random) -> bytes:
    # a first byte of 0x08 | 0x0a... may parse; a header field with schema version 1 by chance is refused anyway
    return rng.randbytes(rng.randrange(0, 300))


def test_bad_messages_on_every_topic_are_dead_lettered_and_fail_no_step(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    model = untrained_model(tmp_path / "model", seed=1)
    settings = load_settings(environ={}, data_dir=tmp_path / "data", grpc_port=0, model=str(model))
    runtime = Runtime(SERVICES, settings, embedded=True)
    errors_before = {name: ERRORS.labels(name)._value.get() for name in ("segmentation", "embedding",
                                                                            "anomaly-detector")}
    runtime.start()
    try:
        bus = runtime.ports.bus
        assert isinstance(bus, InProcessBus)
        sent = 0
        for topic, make in ((CHUNKS, _chunk), (CLIPS, _clip), (EMBEDDINGS, _embedding)):
            for i in range(PER_TOPIC):
                payload = _garbage(rng) if i % 4 == 0 else make(rng).SerializeToString()
                bus.publish(topic, "cam9", payload)
                sent += 1
        subscription = bus.subscribe("fuzz", [DEAD_LETTERS])
        letters: list[pb.DeadLetter] = []
        wait_for(lambda: len(letters.__iadd__([pb.DeadLetter.FromString(m.value) for m in
                                               subscription.poll(timeout_s=0.2, max_messages=10_000)])) >= sent,
                 max(120, sent / 5), f"{sent} dead letters")
        subscription.close()
        assert all(letter.reason for letter in letters)
        for name in ("segmentation", "embedding", "anomaly-detector"):
            assert runtime.workers[name].failure is None, name
            assert ERRORS.labels(name)._value.get() == errors_before[name], f"{name}: a step failed"
        assert not runtime.ports.archive.clip_ids("cam9")
    finally:
        runtime.stop()

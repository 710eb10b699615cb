"""The embedder decodes the next batch while the model embeds this one (issue 17 item 2, ``embed_prefetch``),
and still embeds, publishes, stores and commits every clip once, in order: a batch taken ahead is committed
only once embedded, and one left when the service closes goes to the group's next consumer."""

from __future__ import annotations

import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from avsurv.adapters.bus import InProcessBus, Message
from avsurv.clipids import clip_id
from avsurv.constants import FRAME_HEIGHT, FRAME_WIDTH, FRAMES_PER_CLIP, MEL_FRAMES, N_MELS
from avsurv.media.clipstore import encode_jpeg
from avsurv.platform.config import load_settings
from avsurv.platform.messages import CLIPS, DEAD_LETTERS, EMBEDDINGS, header
from avsurv.services import embedding
from avsurv.services.embedding import EmbeddingService
from avsurv.v1 import messages_pb2 as pb

BATCH = 4
START = 1.7e9
CAMERAS = ("cam0", "cam1")
DIM = 8
FRAME = encode_jpeg(np.full((FRAME_HEIGHT, FRAME_WIDTH, 3), 90, np.uint8))
LOG_MEL = np.zeros((N_MELS, MEL_FRAMES), "<f2").tobytes()


def _clip(camera: str, second: int) -> pb.Clip:
    return pb.Clip(header=header("default", camera, clip_id(camera, START + second), START + second),
                   frames_jpeg=[FRAME] * FRAMES_PER_CLIP, log_mel_f16=LOG_MEL, has_audio=True, media_uri="m.mp4")


def _vector(clip_id_: str) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(clip_id_.encode())).normal(size=DIM).astype(np.float32)


class FakeModel:
    """Vectors from the clip id alone (what a batch holds cannot change them); ``during`` runs inside
    every call, as a slow forward pass would."""

    version, w, sha256, profile = "v1", 0.5, "0" * 64, "tiny"

    def __init__(self, during=lambda clips: None) -> None:
        self.during = during
        self.batches: list[list[str]] = []

    def embed(self, clips):
        ids = [clip_id(c.camera_id, c.capture_time) for c in clips]
        self.batches.append(ids)
        self.during(clips)
        z = np.stack([_vector(i) for i in ids])
        return z, -z


class FakeVectors:
    def __init__(self) -> None:
        self.upserted: list[str] = []

    def ensure_collection(self, name: str) -> None:
        pass

    def upsert(self, collection: str, version: str, points) -> None:
        self.upserted += [p.clip_id for p in points]


def _service(tmp_path: Path, bus: InProcessBus, model: FakeModel, vectors: FakeVectors,
             prefetch: bool = True) -> EmbeddingService:
    settings = load_settings(environ={}, data_dir=tmp_path / "data", batch_size=BATCH, batch_wait_s=0.05,
                             decode_threads=2, embed_prefetch=prefetch)
    registry = SimpleNamespace(active_version=lambda: None, target_version=lambda: None,
                               set_camera_stats=lambda *a: None)
    service = EmbeddingService(bus, vectors, registry, None, None, settings)
    service.serving = model
    return service


def _publish(bus: InProcessBus, clips: list[pb.Clip]) -> None:
    for clip in clips:
        bus.publish(CLIPS, clip.header.camera_id, clip.SerializeToString())


def _published(bus: InProcessBus, topic: str) -> list[bytes]:
    return [m.value for log in bus._log(topic) for m in log]


@pytest.mark.parametrize("prefetch", [True, False])
def test_the_next_batch_decodes_while_the_model_embeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       prefetch: bool) -> None:
    bus, vectors = InProcessBus(partitions=1), FakeVectors()
    clips = [_clip("cam0", s) for s in range(3 * BATCH)]
    _publish(bus, clips)
    decoding_started: dict[str, threading.Event] = {c.header.clip_id: threading.Event() for c in clips}
    decoded = embedding._decoded

    def instrumented(message: Message):
        decoding_started[pb.Clip.FromString(message.value).header.clip_id].set()
        return decoded(message)

    monkeypatch.setattr(embedding, "_decoded", instrumented)
    overlapped: list[bool] = []
    order = [c.header.clip_id for c in clips]

    def slow_forward(batch) -> None:  # waits (at most 2 s) for the next batch's first clip to start decoding
        last = order.index(clip_id(batch[-1].camera_id, batch[-1].capture_time))
        if last + 1 < len(order):
            overlapped.append(decoding_started[order[last + 1]].wait(2.0 if prefetch else 0.3))

    model = FakeModel(slow_forward)
    service = _service(tmp_path, bus, model, vectors, prefetch)
    try:
        for _ in range(20):  # bounded: a lost batch fails the test rather than hanging it
            if service.clips_embedded >= len(clips):
                break
            service.step()
    finally:
        service.close()
    assert overlapped == [prefetch, prefetch]  # batches 1 and 2 decoded during the forward of 0 and 1
    assert [i for batch in model.batches for i in batch] == order
    assert [len(batch) for batch in model.batches] == [BATCH] * 3  # the same batches as without prefetch


def test_every_clip_is_embedded_published_and_committed_once_in_order_across_close(tmp_path: Path) -> None:
    bus = InProcessBus(partitions=2)
    clips = [_clip(camera, s) for s in range(9) for camera in CAMERAS]
    broken = pb.Clip(header=clips[5].header, frames_jpeg=[b"not a jpeg"] * FRAMES_PER_CLIP, log_mel_f16=LOG_MEL)
    broken.header.clip_id = clip_id(broken.header.camera_id, START + 100)
    broken.header.capture_time = START + 100
    clips.insert(6, broken)
    _publish(bus, clips)
    done: Counter[tuple[int, int]] = Counter()

    def counted(service: EmbeddingService) -> EmbeddingService:
        original = service.tracker.done
        service.tracker.done = lambda m: (done.update([(m.partition, m.offset)]), original(m))[1]
        return service

    vectors, first_model = FakeVectors(), FakeModel()
    first = counted(_service(tmp_path, bus, first_model, vectors))
    first.step()
    first.step()
    assert first._prefetched is not None  # a third batch taken ahead, decoding, not embedded
    ahead = first._prefetched[0]
    assert not first.drained()
    committed = {p: bus._committed[("embedding", CLIPS, p)] for p in range(2)}
    assert all(committed[m.partition] <= m.offset for m in ahead)  # nothing taken ahead is committed
    first.stopping.set()
    first.close()  # as the worker's loop does once stopped: the batch taken ahead is left uncommitted
    assert {(m.partition, m.offset) for m in ahead}.isdisjoint(done)

    second_model = FakeModel()
    second = counted(_service(tmp_path, bus, second_model, vectors))
    try:
        for _ in range(20):
            if second.drained():
                break
            second.step()
    finally:
        second.close()

    valid = [c for c in clips if c is not broken]
    embedded = [pb.Embedding.FromString(v) for v in _published(bus, EMBEDDINGS)]
    assert sorted(e.header.clip_id for e in embedded) == sorted(c.header.clip_id for c in valid)  # each once
    for camera in CAMERAS:  # per camera (a partition), in capture order
        mine = [c.header.clip_id for c in valid if c.header.camera_id == camera]
        assert [e.header.clip_id for e in embedded if e.header.camera_id == camera] == mine
        assert [i for i in vectors.upserted if i.startswith(camera)] == mine
    for e in embedded:
        np.testing.assert_allclose(e.z_v, _vector(e.header.clip_id), rtol=1e-6)
    assert len(_published(bus, DEAD_LETTERS)) == 1
    assert set(done.values()) == {1} and len(done) == len(clips)  # every message done once, the broken one too
    assert all(bus._committed[("embedding", CLIPS, p)] == len(bus._log(CLIPS)[p]) for p in range(2))


def test_a_batch_that_fails_comes_again_once_the_embedder_starts_over(tmp_path: Path) -> None:
    """The state store away while a batch's camera statistics are written (the chaos run's Redis kill): the
    loop starts over as a restart would, and every clip is embedded, counted once and committed; before,
    the failed batch waited, unindexed, for the next restart and the commits behind it stalled."""
    bus = InProcessBus(partitions=1)
    clips = [_clip("cam0", s) for s in range(3 * BATCH)]
    _publish(bus, clips)
    stored: dict[str, object] = {}
    failures = [ConnectionError("the state store is away")]

    def set_camera_stats(version: str, camera: str, stats: object) -> None:
        if failures:
            raise failures.pop()
        stored[camera] = stats

    vectors = FakeVectors()
    service = _service(tmp_path, bus, FakeModel(), vectors)
    service.registry.set_camera_stats = set_camera_stats
    service.start()
    try:
        deadline = time.monotonic() + 30
        while not (service.drained() and service.clips_embedded >= len(clips)) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        service.stop()
    ids = [c.header.clip_id for c in clips]
    assert not failures and set(vectors.upserted) == set(ids)
    assert sorted({pb.Embedding.FromString(v).header.clip_id for v in _published(bus, EMBEDDINGS)}) == sorted(ids)
    assert stored["cam0"].count == service.camera_stats["cam0"].count == len(clips)  # the failed batch once
    assert bus._committed[("embedding", CLIPS, 0)] == len(clips)

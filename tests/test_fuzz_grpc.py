"""Fuzz the gRPC API (issue 14 item 3): seeded generated requests to every RPC of api.proto (NaN and
infinite times, huge and negative numbers, unknown enum values, odd and megabyte camera ids, paths and
URLs, empty fields, undecodable bytes) are each answered, or refused with a status that names the problem
(INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ...) and a short message; never UNKNOWN or INTERNAL,
never a traceback in the server's log, and the server still answers afterwards.

CI sends 25 requests per RPC (350); the long variant sends more, with another seed:
``AVSURV_FUZZ_PER_RPC=100 AVSURV_FUZZ_SEED=1 pytest tests/test_fuzz_grpc.py -s`` (1,400 requests)."""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from platformkit import untrained_model

from avsurv.adapters.vectors import Point, alias_name, collection_name
from avsurv.constants import EMBEDDING_DIM
from avsurv.platform.config import load_settings
from avsurv.platform.model_versions import publish_model
from avsurv.platform.runtime import Runtime
from avsurv.v1 import api_pb2
from avsurv.v1 import messages_pb2 as pb

PER_RPC = int(os.environ.get("AVSURV_FUZZ_PER_RPC", "25"))
SEED = int(os.environ.get("AVSURV_FUZZ_SEED", "14"))
MiB = 1024 * 1024
DATA = Path(__file__).parent / "data"
MEDIA = [(DATA / name).read_bytes()[: 256 * 1024] for name in ("parking-lot-cars.mp4", "street-msmpeg4-mp3.avi")]
DOUBLES = (math.nan, -math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -1.0, 0.0, -0.0, 1.7e9, 2.0**63, 0.5)
UINTS = (0, 1, 5, 100, 101, 200, 201, 10_000, 10_001, 2**31, 2**32 - 1)
ENUMS = (0, 1, 2, 3, 4, -1, 2**31 - 1, -(2**31))
ODD_TEXT = ("", " ", "cam0", "cam0\n", ".cam0", "..", "../../etc/passwd", "cam 0", "cam/0", "cam:0", "cam\x00",
            "kamera\u00e9", "\u202ecam", "\U0001f4f7", "cam0:1000", "cam0:-1", "cam0:nan", "cam0:1e999",
            "cam0:99999999999999999999999", ":1000", "v1", "%s%n%x", "rtsp://camera.local/s", "http://[::1]:0/x",
            "rtsp://user:pw@h/s", "file:///etc/passwd", "concat:a|b", "pipe:0", "/dev/zero", "/proc/self/mem",
            "/etc/passwd", "relative/path.mp4", "\n", "epg", "detector")
ODD_SHARE = 0.15
HUGE = (65, 129, 2049, 100_000, MiB)
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE,
           grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED}
WATCH_S = 0.2
"""A Watch that is accepted stays open: it counts as answered when its deadline ends it."""
MAX_DETAIL_CHARS = 400


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """A search-only runtime with something behind every look-up: a published model (an uploaded query is
    embedded), its indexed version with points, stored events, a camera."""
    root = tmp_path_factory.mktemp("fuzz-api")
    settings = load_settings(environ={}, data_dir=root / "data", grpc_port=0, api_camera_roots=[str(root)])
    runtime = Runtime(["search"], settings, embedded=True)
    runtime.start()
    ports = runtime.ports
    version = publish_model(untrained_model(root / "model", seed=1), ports.registry, ports.artifacts, None).version
    collection = collection_name(settings.site, version)
    ports.vectors.ensure_collection(collection)
    rng = np.random.default_rng(0)
    ports.vectors.upsert(collection, version, [
        Point(f"cam0:{1000 * t}", rng.normal(size=EMBEDDING_DIM), rng.normal(size=EMBEDDING_DIM),
              {"camera_id": "cam0", "capture_time": float(t), "media_uri": ""}) for t in range(40)])
    ports.vectors.set_alias(alias_name(settings.site), collection)
    for number in range(5):
        event = pb.AnomalyEvent(header=pb.Header(camera_id="cam0"), event_id=f"e{number}", start_time=number * 10.0,
                                end_time=number * 10.0 + 3, peak_score=float(number))
        ports.registry.record_event(event.event_id, event.start_time, event.SerializeToString())
    ports.registry.want_camera("cam0", "rtsp://camera.local/s")
    ports.archive.put(pb.Clip(header=pb.Header(camera_id="cam0", clip_id="cam0:1000", capture_time=1.0),
                              frames_jpeg=[b"\xff\xd8 frame"] * 5))  # what GetClip finds (its bytes as stored)
    yield runtime
    runtime.stop()


def _odd(rng: random.Random) -> bool:
    """Whether this field gets an odd value; the others keep sane ones, so requests get past the first check."""
    return rng.random() < ODD_SHARE


def _text(rng: random.Random, sane: str = "cam0") -> str:
    kind = rng.random()
    if not _odd(rng):
        return sane
    if kind < 0.6:
        return rng.choice(ODD_TEXT)
    if kind < 0.8:
        return rng.choice("abc.-_:\n") * rng.choice(HUGE)
    # any code point but surrogates, which a protobuf string cannot hold
    return "".join(chr(rng.choice((rng.randrange(1, 0xD800), rng.randrange(0xE000, 0x110000))))
                   for _ in range(rng.randrange(1, 40)))


def _texts(rng: random.Random, sane: str = "cam0") -> list[str]:
    if rng.random() < 0.05:
        return [sane] * rng.choice((256, 257, 5000))
    return [_text(rng, sane) for _ in range(rng.choice((0, 0, 1, 2, 3)))]


def _number(rng: random.Random, odd: tuple, sane: float) -> float:
    return rng.choice(odd) if _odd(rng) else sane


def _maybe(rng: random.Random, request: object, name: str, value: Callable[[], object]) -> None:
    if rng.random() < 0.5:
        setattr(request, name, value())


def _times(rng: random.Random, request: object) -> None:
    _maybe(rng, request, "start_time", lambda: _number(rng, DOUBLES, rng.uniform(-10, 20)))
    _maybe(rng, request, "end_time", lambda: _number(rng, DOUBLES, rng.uniform(20, 50)))


def _search(rng: random.Random) -> api_pb2.SearchRequest:
    request = api_pb2.SearchRequest(mode=int(_number(rng, ENUMS, rng.randrange(4))),
                                    top_k=int(_number(rng, UINTS, rng.randrange(20))), camera_ids=_texts(rng))
    kind = rng.choice(("clip_id", "clip_id", "clip_at", "media", None))
    if kind == "clip_id":
        request.clip_id = _text(rng, f"cam0:{1000 * rng.randrange(45)}")
    elif kind == "clip_at":
        request.clip_at.camera_id = _text(rng)
        request.clip_at.capture_time = _number(rng, DOUBLES, rng.uniform(-5, 45))
    elif kind == "media":
        source = rng.choice(MEDIA)
        request.media.data = rng.choice((b"", rng.randbytes(rng.randrange(1, 4096)),
                                         source[: rng.randrange(1, len(source))]))
        request.media.offset = _number(rng, DOUBLES, rng.uniform(0, 3))
    _maybe(rng, request, "exclusion_s", lambda: _number(rng, DOUBLES, rng.uniform(0, 30)))
    _maybe(rng, request, "separation_s", lambda: _number(rng, DOUBLES, rng.uniform(0, 30)))
    _times(rng, request)
    return request


def _list(rng: random.Random) -> api_pb2.ListAnomaliesRequest:
    request = api_pb2.ListAnomaliesRequest(camera_ids=_texts(rng), detectors=_texts(rng, ""),
                                           limit=int(_number(rng, UINTS, rng.randrange(10))))
    _maybe(rng, request, "min_score", lambda: _number(rng, DOUBLES, rng.uniform(0, 5)))
    _times(rng, request)
    return request


def _scores(rng: random.Random) -> api_pb2.ScoresRequest:
    request = api_pb2.ScoresRequest(camera_id=_text(rng), limit=int(_number(rng, UINTS, rng.randrange(100))))
    _times(rng, request)
    return request


REQUESTS: dict[str, tuple[type, Callable[[random.Random], object]]] = {
    "EventSearch/Search": (api_pb2.SearchResponse, _search),
    "EventSearch/GetClip": (api_pb2.ClipMedia, lambda rng: api_pb2.GetClipRequest(
        clip_id=_text(rng, rng.choice(("cam0:1000", "cam0:2000"))))),  # stored, or NOT_FOUND, unless odd
    "Anomalies/List": (api_pb2.ListAnomaliesResponse, _list),
    "Anomalies/Export": (api_pb2.EvidenceFile, lambda rng: api_pb2.ExportEvidenceRequest(
        event_id=_text(rng, "e0"), margin_s=_number(rng, DOUBLES, 2.0))),  # unknown (NOT_FOUND) unless odd
    "Anomalies/Scores": (api_pb2.ScoreSeries, lambda rng: _scores(rng)),
    "Anomalies/Watch": (pb.AnomalyEvent, lambda rng: api_pb2.WatchAnomaliesRequest(
        camera_ids=_texts(rng), detectors=_texts(rng, ""))),
    "Control/AddCamera": (api_pb2.Camera, lambda rng: api_pb2.AddCameraRequest(
        camera_id=_text(rng), source=_text(rng, "rtsp://camera.local/s"))),
    "Control/RemoveCamera": (api_pb2.Camera, lambda rng: api_pb2.RemoveCameraRequest(camera_id=_text(rng))),
    "Control/ListCameras": (api_pb2.ListCamerasResponse, lambda rng: api_pb2.ListCamerasRequest()),
    "Control/TriggerTraining": (api_pb2.TrainingStatus, lambda rng: api_pb2.TriggerTrainingRequest(
        site=_text(rng, ""), epochs=int(_number(rng, UINTS, rng.randrange(10))))),
    "Control/GetTrainingStatus": (api_pb2.TrainingStatus, lambda rng: api_pb2.TrainingStatusRequest()),
    "Control/CancelTraining": (api_pb2.TrainingStatus, lambda rng: api_pb2.CancelTrainingRequest()),
    "Control/ListModels": (api_pb2.ListModelsResponse, lambda rng: api_pb2.ListModelsRequest()),
    "Control/ActivateModel": (api_pb2.ModelVersion, lambda rng: api_pb2.ActivateModelRequest(
        model_version=_text(rng, "v1"))),  # unknown (NOT_FOUND) unless odd (INVALID_ARGUMENT)
    "Control/RollbackModel": (api_pb2.ModelVersion, lambda rng: api_pb2.RollbackModelRequest()),
}


def test_every_rpc_of_the_api_is_fuzzed() -> None:
    """An RPC added to api.proto must get its generator here."""
    assert set(REQUESTS) == {f"{service.name}/{method.name}" for service in api_pb2.DESCRIPTOR.services_by_name.values()
                             for method in service.methods}


def _wire(rng: random.Random, request: object) -> bytes:
    """The request's bytes; one in eight is damaged: truncated, bit-flipped, garbage, or with unknown fields."""
    data = request.SerializeToString()
    damage = rng.randrange(32)
    if damage == 0 and data:
        return data[: rng.randrange(len(data))]
    if damage == 1 and data:
        flipped = bytearray(data)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        return bytes(flipped)
    if damage == 2:
        return rng.randbytes(rng.randrange(1, 256))
    if damage == 3:  # field 99 (varint) and field 100 (length-delimited): unknown to every request
        return data + bytes([0x98, 0x06, rng.randrange(128), 0xA2, 0x06, 3]) + b"abc"
    return data


def _call(channel: grpc.Channel, rpc: str, response: type, data: bytes) -> tuple[grpc.StatusCode, str]:
    method = f"/avsurv.v1.{rpc}"
    try:
        if rpc == "Anomalies/Watch":
            stream = channel.unary_stream(method, response_deserializer=response.FromString)(data, timeout=WATCH_S)
            for _ in stream:
                pass
        else:
            channel.unary_unary(method, response_deserializer=response.FromString)(data, timeout=30)
    except grpc.RpcError as error:
        if rpc == "Anomalies/Watch" and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return grpc.StatusCode.OK, ""  # accepted: the feed stayed open until the caller's deadline
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def test_generated_bad_requests_are_answered_or_refused_with_a_reason(
        runtime: Runtime, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(SEED)
    outcomes: Counter[tuple[str, str]] = Counter()
    bad: list[str] = []
    started = time.perf_counter()
    caplog.set_level(logging.WARNING)
    with grpc.insecure_channel(f"127.0.0.1:{runtime.port}",
                               options=[("grpc.max_receive_message_length", 64 * MiB)]) as channel:
        for rpc, (response, generate) in REQUESTS.items():
            for _ in range(PER_RPC):
                data = _wire(rng, generate(rng))
                code, detail = _call(channel, rpc, response, data)
                outcomes[rpc, code.name] += 1
                if code not in ALLOWED or (code != grpc.StatusCode.OK
                                           and not 0 < len(detail) <= MAX_DETAIL_CHARS):
                    bad.append(f"{rpc} {code.name} {detail[:200]!r} for {data[:120]!r}")
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    with capsys.disabled():
        print(f"\n{sum(outcomes.values())} requests (seed {SEED}) in {time.perf_counter() - started:.1f} s: "
              + ", ".join(f"{rpc} {code} {n}" for (rpc, code), n in sorted(outcomes.items())))
    assert bad == [], f"{len(bad)} requests got no clear refusal:\n" + "\n".join(bad[:20])
    assert tracebacks == []
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert sum(outcomes.values()) == PER_RPC * len(REQUESTS)

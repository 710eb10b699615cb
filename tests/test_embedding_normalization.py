"""Per-camera normalization in the product (issue 12 item 4): with ``normalization: camera`` the embedder
stores, publishes and calibrates each camera's vectors standardized with that camera's statistics, a young
camera with the site's pooled ones, and never standardizes a point twice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from platformkit import untrained_model, wait_for
from realparts import redis_server

from avsurv.adapters.artifacts import DirectoryArtifacts
from avsurv.adapters.bus import InProcessBus
from avsurv.adapters.state import connect_state
from avsurv.adapters.vectors import collection_name, point_id
from avsurv.clipids import clip_id
from avsurv.constants import FRAME_HEIGHT, FRAME_WIDTH, FRAMES_PER_CLIP, MEL_FRAMES, N_MELS
from avsurv.learning import normalization
from avsurv.learning.calibration import Calibration
from avsurv.learning.normalization import EPS, SiteNormalization
from avsurv.media.clipstore import encode_jpeg
from avsurv.platform.config import load_settings
from avsurv.platform.messages import CLIPS, EMBEDDINGS, header
from avsurv.platform.registry import ModelRecord, Registry
from avsurv.platform.runtime import Runtime
from avsurv.services.anomaly_detector import AnomalyService
from avsurv.services.embedding import _Swap
from avsurv.services.search import SearchServicer
from avsurv.v1 import api_pb2
from avsurv.v1 import messages_pb2 as pb

DATA = Path(__file__).parent / "data"
START = 1.7e9
MIN_CLIPS = 12
"""Lowered from a minute so that the test embeds few clips."""
CLIPS_PER_CAMERA = {"cam0": MIN_CLIPS + 4, "cam1": MIN_CLIPS - 6}  # cam1 is young: the pooled statistics serve it
LIVE = 4


def _clip(camera: str, second: int, rng: np.random.Generator) -> pb.Clip:
    """A clip whose frames carry the camera's own look (cam1 brighter) and a random sound."""
    base = (60 if camera == "cam0" else 170) + rng.normal(0, 30, (FRAME_HEIGHT // 8, FRAME_WIDTH // 8 + 1, 3))
    frame = np.clip(np.kron(base, np.ones((8, 8, 1))), 0, 255).astype(np.uint8)[:, :FRAME_WIDTH]
    frames = [encode_jpeg(frame) for _ in range(FRAMES_PER_CLIP)]
    log_mel = rng.normal(-4, 2, (N_MELS, MEL_FRAMES)).astype("<f2").tobytes()
    capture = START + second
    return pb.Clip(header=header("default", camera, clip_id(camera, capture), capture), frames_jpeg=frames,
                   log_mel_f16=log_mel, has_audio=True, media_uri=f"{camera}.mp4")


def test_the_embedder_standardizes_what_it_stores_and_publishes_per_camera(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(normalization, "MIN_CLIPS", MIN_CLIPS)
    rng = np.random.default_rng(0)
    settings = load_settings(environ={}, data_dir=tmp_path / "data", grpc_port=0, normalization="camera",
                             model=str(untrained_model(tmp_path / "model", seed=2)), novelty_exclusion_s=2.0)
    runtime = Runtime(["embedding"], settings, embedded=True)
    ports = runtime.ports
    for camera, count in CLIPS_PER_CAMERA.items():
        for second in range(count):
            ports.archive.put(_clip(camera, second, rng))
    runtime.start()
    try:
        embedder = runtime.workers["embedding"]
        wait_for(lambda: ports.registry.active_version() is not None, 120, "the backfill and the flip")
        version = ports.registry.active_version()
        collection = collection_name("default", version)
        raw = ports.registry.all_camera_stats(version)  # the model's own vectors' statistics
        assert {camera: stats.count for camera, stats in raw.items()} == CLIPS_PER_CAMERA
        reference = SiteNormalization.of_cameras(raw).reference
        stored = {camera: _vectors(ports.vectors, collection, version, camera) for camera in CLIPS_PER_CAMERA}
        for modality, rows in (("visual", 0), ("audio", 1)):
            own = stored["cam0"][rows]  # standardized with its own statistics: mean 0, variance 1
            np.testing.assert_allclose(own.mean(axis=0), 0.0, atol=1e-4)
            np.testing.assert_allclose(own.var(axis=0), raw["cam0"].var[modality] / (raw["cam0"].var[modality] + EPS),
                                       rtol=1e-3, atol=1e-4)
            young = stored["cam1"][rows]  # standardized with the pooled statistics
            scale = np.sqrt(reference.var[modality] + EPS)
            np.testing.assert_allclose(young.mean(axis=0), (raw["cam1"].mean[modality] - reference.mean[modality])
                                       / scale, rtol=1e-3, atol=1e-3)
        novelty = ports.registry.novelty(version, "cam0")  # calibrated in the space the detector scores
        np.testing.assert_allclose(novelty.stats.mean["visual"], 0.0, atol=1e-4)

        # A second pass finds every point standardized already and changes none.
        swap = _Swap(embedder, version)
        swap.normalization = SiteNormalization.of_cameras(raw)
        swap.restandardize(ports.archive.clip_ids())
        again = _vectors(ports.vectors, collection, version, "cam0")
        np.testing.assert_array_equal(again[0], stored["cam0"][0])

        embeddings = ports.bus.subscribe("test", [EMBEDDINGS])
        live = [_clip("cam1", CLIPS_PER_CAMERA["cam1"] + i, rng) for i in range(LIVE)]
        for clip in live:
            ports.bus.publish(CLIPS, "cam1", clip.SerializeToString())
        published: list[pb.Embedding] = []
        wait_for(lambda: len(published.__iadd__([pb.Embedding.FromString(m.value) for m in
                                                 embeddings.poll(timeout_s=0.2, max_messages=100)])) >= LIVE,
                 60, "the live clips' embeddings")
        embeddings.close()
        hits = {h.payload["clip_id"]: h for h in ports.vectors.retrieve(
            collection, [point_id(clip.header.clip_id, version) for clip in live])}
        for embedding in published:  # what the detector scores is what search finds
            hit = hits[embedding.header.clip_id]
            assert hit.payload["standardized"] is True
            np.testing.assert_allclose(embedding.z_v, hit.z_v, rtol=1e-6)
            np.testing.assert_allclose(embedding.z_a, hit.z_a, rtol=1e-6)
        assert ports.registry.camera_stats(version, "cam1").count == CLIPS_PER_CAMERA["cam1"] + LIVE

        # An uploaded media query is searched in the same space: standardized with the site's pooled stats.
        query = api_pb2.MediaQuery(data=(DATA / "parking-lot-cars.mp4").read_bytes(), offset=0.5)
        servicers = {normalization: SearchServicer(ports.vectors, ports.registry, ports.artifacts,
                                                   tmp_path / "cache", "cpu", normalization)
                     for normalization in ("none", "camera")}
        raw_v, raw_a, _, _ = servicers["none"]._media_query(query, version)
        z_v, z_a, _, _ = servicers["camera"]._media_query(query, version)
        pooled = SiteNormalization.of_cameras(ports.registry.all_camera_stats(version)).reference
        expected = pooled.standardize(raw_v[None], raw_a[None])
        np.testing.assert_allclose(z_v, expected[0][0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(z_a, expected[1][0], rtol=1e-5, atol=1e-5)
    finally:
        runtime.stop()


def _vectors(vectors, collection: str, version: str, camera: str) -> tuple[np.ndarray, np.ndarray]:
    hits = vectors.window(collection, camera, START - 1, START + 10_000)
    assert hits and all(h.payload["standardized"] for h in hits)
    return np.stack([h.z_v for h in hits]).astype(np.float64), np.stack([h.z_a for h in hits]).astype(np.float64)


@pytest.mark.parametrize(("setting", "falls_back"), [("none", True), ("camera", False)])
def test_the_detector_falls_back_to_the_training_calibration_only_for_unstandardized_vectors(
        tmp_path: Path, setting: str, falls_back: bool) -> None:
    """The training calibration is on the encoders' own scale, not on a camera's standardized one."""
    with redis_server(tmp_path) as redis_url:
        registry = Registry(connect_state(redis_url), "site")
        registry.add_model(ModelRecord(version="v1", sha256="0" * 64, artifact_uri="", created_time=0.0, w=0.5,
                                       profile="tiny", calibration=Calibration(mean=1.0, std=0.5, w=0.5).to_dict()))
        detector = AnomalyService(InProcessBus(), registry, DirectoryArtifacts(tmp_path / "artifacts"),
                                  tmp_path / "cache", run_idle_s=1.0, detector="eq5", normalization=setting)
        assert (detector.calibration("v1", "cam0") is not None) is falls_back

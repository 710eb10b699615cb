"""The per-camera score series behind the dashboard's timeline (issue 16 item 4): the anomaly detector records
each clip it scores against a calibration (capture time, score, threshold, flagged) in the state store, capped
per camera, and ``Anomalies.Scores`` answers it over gRPC, refusing bad arguments. Planted embeddings (those
of tests/test_chaos.py), so every score is known; the evidence URI that events carry (issue 16 item 2) is
checked here against the API's Export too."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from realparts import redis_server
from test_chaos import NORMAL, ODD, VERSION, W, _publish_clips, _register, _run_until

import avsurv.adapters.state as state
from avsurv.adapters.artifacts import DirectoryArtifacts
from avsurv.adapters.bus import InProcessBus
from avsurv.adapters.state import ScorePoint, ScoreSeries, connect_state
from avsurv.learning.scores import clip_scores
from avsurv.platform.archive import ClipArchive
from avsurv.platform.event_uri import event_of, evidence_uri
from avsurv.platform.grpc_server import serve_grpc
from avsurv.platform.messages import ANOMALIES, EMBEDDINGS, header
from avsurv.platform.registry import Registry
from avsurv.services.anomaly_detector import AnomalyService
from avsurv.services.search import AnomaliesServicer
from avsurv.v1 import api_pb2, api_pb2_grpc
from avsurv.v1 import messages_pb2 as pb

CLIPS = [(100, NORMAL), (101, ODD), (102, ODD), (103, NORMAL), (104, ODD), (105, NORMAL)]


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[AnomalyService, api_pb2_grpc.AnomaliesStub]]:
    """An Eq. 5 detector whose cam0 is calibrated (cam1 is not), and the API's Anomalies service over gRPC on
    the same state store."""
    with redis_server(tmp_path) as redis_url:
        registry = Registry(connect_state(redis_url), "site")
        _register(registry)
        detector = AnomalyService(InProcessBus(), registry, DirectoryArtifacts(tmp_path / "artifacts"),
                                  tmp_path / "cache", run_idle_s=60.0, detector="eq5")
        api = Registry(connect_state(redis_url), "site")  # the API's own client, as in a deployment
        server, port, _ = serve_grpc(0, {"Anomalies": AnomaliesServicer(api, ClipArchive(tmp_path / "clips"))}, {})
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield detector, api_pb2_grpc.AnomaliesStub(channel)
        finally:
            server.stop(None)


def _scored(detector: AnomalyService) -> None:
    """Every published embedding scored and its events ended."""
    _run_until(detector, lambda: detector.tracker.pending() == 0 and not detector.runs)


def test_the_series_through_the_api_is_what_the_detector_scored(
        platform: tuple[AnomalyService, api_pb2_grpc.AnomaliesStub]) -> None:
    detector, api = platform
    _publish_clips(detector.bus, CLIPS)
    for second in (100, 101):  # cam1 has no calibration: its clips are held against nothing
        detector.bus.publish(EMBEDDINGS, "cam1", pb.Embedding(
            header=header("site", "cam1", f"cam1:{second * 1000}", float(second)), model_version=VERSION,
            z_v=NORMAL, z_a=ODD, has_audio=True, point_id=f"cam1-{second}", w=W).SerializeToString())
    _scored(detector)

    threshold = detector.registry.calibration(VERSION, "cam0").with_stds(detector.stds).threshold
    expected = [(float(second), float(clip_scores(NORMAL[None], z_a[None], W)[0]), threshold, z_a is ODD)
                for second, z_a in CLIPS]
    series = api.Scores(api_pb2.ScoresRequest(camera_id="cam0"), timeout=10)
    assert series.camera_id == "cam0"
    assert [(p.capture_time, p.score, p.threshold, p.anomalous) for p in series.points] == [
        (t, pytest.approx(s, rel=1e-6), pytest.approx(h), flagged) for t, s, h, flagged in expected]
    assert sum(p.anomalous for p in series.points) == 3 and min(p.score for p in series.points if p.anomalous) > \
        threshold > max(p.score for p in series.points if not p.anomalous)
    # The flagged clips are the events' clips, and each event's peak is on its camera's line.
    events = [pb.AnomalyEvent.FromString(v) for v in detector.bus.recent(ANOMALIES, "cam0", 100)]
    ended = [e for e in events if e.phase == pb.AnomalyEvent.END]
    assert [c for e in ended for c in e.clip_ids] == [f"cam0:{int(p.capture_time * 1000)}" for p in series.points
                                                       if p.anomalous]
    for event in ended:
        [peak] = [p for p in series.points if p.capture_time == event.peak_time]
        assert (peak.score, peak.threshold) == (event.peak_score, event.threshold)

    assert api.Scores(api_pb2.ScoresRequest(camera_id="cam1"), timeout=10).points == []
    assert api.Scores(api_pb2.ScoresRequest(camera_id="cam9"), timeout=10).points == []  # never scored
    window = api.Scores(api_pb2.ScoresRequest(camera_id="cam0", start_time=101, end_time=103), timeout=10)
    assert [p.capture_time for p in window.points] == [101.0, 102.0, 103.0]
    newest = api.Scores(api_pb2.ScoresRequest(camera_id="cam0", start_time=101, limit=2), timeout=10)
    assert [p.capture_time for p in newest.points] == [104.0, 105.0]  # the newest of the window, oldest first


@pytest.mark.parametrize(("request_", "field"), [
    (api_pb2.ScoresRequest(), "camera_id"),
    (api_pb2.ScoresRequest(camera_id="../cam0"), "camera_id"),
    (api_pb2.ScoresRequest(camera_id="c" * 65), "camera_id"),
    (api_pb2.ScoresRequest(camera_id="cam0", start_time=math.nan), "start_time"),
    (api_pb2.ScoresRequest(camera_id="cam0", end_time=math.inf), "end_time"),
    (api_pb2.ScoresRequest(camera_id="cam0", start_time=5.0, end_time=4.0), "after end_time"),
    (api_pb2.ScoresRequest(camera_id="cam0", limit=state.SCORE_POINTS + 1), "limit"),
], ids=["no-camera", "path", "long-camera", "nan-start", "infinite-end", "reversed", "over-limit"])
def test_scores_refuses_bad_arguments_naming_the_field(
        platform: tuple[AnomalyService, api_pb2_grpc.AnomaliesStub], request_: api_pb2.ScoresRequest,
        field: str) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        platform[1].Scores(request_, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in refused.value.details()


def test_the_series_keeps_one_point_per_clip_and_the_newest_per_camera(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "SCORE_POINTS", 5)
    with redis_server(tmp_path) as redis_url:
        series = ScoreSeries(connect_state(redis_url), "site")
        series.add({"cam0": [ScorePoint(float(t), t / 10, 0.5, False) for t in range(8)],
                    "cam1": [ScorePoint(1.0, np.float64(0.25), np.float32(0.5), False)]})  # numpy values as floats
        series.add({"cam0": [ScorePoint(6.0, 0.9, 0.4, True)]})  # clip 6 scored again (a replay, a new calibration)
        assert series.read("cam0", None, None, 100) == [ScorePoint(3.0, 0.3, 0.5, False),
                                                        ScorePoint(4.0, 0.4, 0.5, False),
                                                        ScorePoint(5.0, 0.5, 0.5, False),
                                                        ScorePoint(6.0, 0.9, 0.4, True),
                                                        ScorePoint(7.0, 0.7, 0.5, False)]
        assert series.read("cam1", None, None, 100) == [ScorePoint(1.0, 0.25, 0.5, False)]
        assert ScoreSeries(connect_state(redis_url), "other").read("cam0", None, None, 100) == []  # per site


def test_every_lifecycle_message_names_its_evidence_and_export_takes_that_uri(
        platform: tuple[AnomalyService, api_pb2_grpc.AnomaliesStub]) -> None:
    """The URI is checked against the API: of this site it reaches the event (NOT_FOUND here only because
    no clip is stored, past the look-up), of another site or malformed it is refused."""
    detector, api = platform
    _publish_clips(detector.bus, CLIPS[:4])
    _scored(detector)
    messages = [pb.AnomalyEvent.FromString(v) for v in detector.bus.recent(ANOMALIES, "cam0", 100)]
    assert [m.phase for m in messages] == [pb.AnomalyEvent.NEW, pb.AnomalyEvent.END]
    identifier = messages[0].event_id
    assert {m.evidence_uri for m in messages} == {f"avsurv://site/events/{identifier}/evidence.mp4"}
    assert event_of(evidence_uri("site", identifier), "site") == event_of(identifier, "site") == identifier

    def refusal(reference: str) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as refused:
            api.Export(api_pb2.ExportEvidenceRequest(event_id=reference), timeout=10)
        return refused.value.code(), refused.value.details()

    assert refusal(messages[0].evidence_uri) == (
        grpc.StatusCode.NOT_FOUND, f"no readable clip of event {identifier} is in the clip store")
    assert refusal(f"avsurv://elsewhere/events/{identifier}/evidence.mp4") == (
        grpc.StatusCode.NOT_FOUND, "the evidence URI is of site 'elsewhere'; this deployment serves site 'site'")
    for malformed in (f"avsurv://site/events/{identifier}", f"avsurv://site/events/{identifier}/evidence.mp4?x=1",
                      "avsurv://"):
        code, detail = refusal(malformed)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "evidence URI" in detail
    assert refusal("unknown-event")[0] == grpc.StatusCode.NOT_FOUND

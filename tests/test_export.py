"""Evidence export (issue 16 item 3): the clip store keeps each clip's samples, and ``Anomalies.Export`` /
``avsurv export`` give an event's seconds with a margin as an mp4 that decodes with PyAV, spans the stored
seconds, holds five frames per clip and the scene's sound; old clips without samples are silent."""

from __future__ import annotations

import io
from pathlib import Path

import av
import grpc
import numpy as np
import pytest
from platformkit import small_scene, wait_for

from avsurv.cli import main
from avsurv.clipids import clip_id
from avsurv.constants import FRAME_HEIGHT, FRAME_WIDTH, FRAMES_PER_CLIP, MEL_FRAMES, N_MELS, SAMPLE_RATE
from avsurv.media import MediaReader, Segmenter
from avsurv.media.clipstore import ClipStore, ClipWriter, encode_jpeg
from avsurv.platform.archive import ClipArchive
from avsurv.platform.config import load_settings
from avsurv.platform.messages import CLIPS, clip_from_message, clip_to_message, event_id, header
from avsurv.platform.runtime import Runtime
from avsurv.v1 import api_pb2, api_pb2_grpc
from avsurv.v1 import messages_pb2 as pb

SCENE_S = 10
PCM_STEP = 1 / 32767


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_scene(tmp_path_factory.mktemp("scene"), duration_s=SCENE_S, cameras=1)


def test_the_clip_stores_keep_each_clips_samples(scene: Path, tmp_path: Path) -> None:
    clips = list(Segmenter(scene / "cam0.mp4", "cam0"))
    assert clips and all(c.audio is not None and c.audio.shape == (SAMPLE_RATE,) for c in clips)
    assert max(float(np.abs(c.audio).max()) for c in clips) > 0.01  # the scene has sound
    with ClipWriter(tmp_path / "clips") as writer:  # the offline clip directory
        for clip in clips:
            writer.add(clip)
    for clip, stored in zip(clips, ClipStore(tmp_path / "clips"), strict=True):
        assert stored.audio is not None
        np.testing.assert_allclose(stored.audio, clip.audio, atol=PCM_STEP)
    archive = ClipArchive(tmp_path / "archive")  # the platform's clip store
    archive.put(clip_to_message(clips[3], "default"))
    stored = clip_from_message(archive.get(clips[3].clip_id))
    np.testing.assert_allclose(stored.audio, clips[3].audio, atol=PCM_STEP)
    silent = clip_to_message(clips[4], "default")
    silent.ClearField("audio_pcm_s16le")  # a clip stored before the samples were kept
    assert clip_from_message(silent).audio is None


def _old_clip(camera: str, capture: float) -> pb.Clip:
    """A clip stored before the clip store kept samples: no audio_pcm_s16le."""
    frames = [encode_jpeg(np.full((FRAME_HEIGHT, FRAME_WIDTH, 3), 40 * i, np.uint8)) for i in range(FRAMES_PER_CLIP)]
    return pb.Clip(header=header("default", camera, clip_id(camera, capture), capture), frames_jpeg=frames,
                   log_mel_f16=np.zeros(N_MELS * MEL_FRAMES, "<f2").tobytes(), has_audio=True)


def _event(runtime: Runtime, camera: str, start: float, end: float) -> str:
    """An event as the anomaly detector records it (its END message)."""
    identifier = event_id(camera, start, "v-test")
    message = pb.AnomalyEvent(header=header("default", camera, clip_id(camera, start), start), event_id=identifier,
                              start_time=start, end_time=end, peak_score=1.0, peak_time=start, threshold=0.5,
                              model_version="v-test", clip_ids=[clip_id(camera, start)])
    runtime.ports.registry.record_event_message(identifier, start, 0, message.SerializeToString())
    return identifier


def _decoded(mp4: bytes) -> tuple[int, float, np.ndarray]:
    """The file's video frame count, video duration (s) and mono audio samples."""
    with av.open(io.BytesIO(mp4)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        duration = float(video.duration * video.time_base)
    with av.open(io.BytesIO(mp4)) as container:
        assert container.streams.audio[0].sample_rate == SAMPLE_RATE
        sound = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])
    return frames, duration, sound


def _scene_sound(path: Path) -> tuple[float, np.ndarray]:
    """The scene file's capture epoch and its sound resampled to 44.1 kHz mono, from media time 0."""
    with MediaReader(path) as reader:
        epoch = reader.info.capture_epoch
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    with av.open(str(path)) as container:
        pieces = [f.to_ndarray()[0] for frame in container.decode(audio=0) for f in resampler.resample(frame)]
    return epoch, np.concatenate(pieces)


def _best_lag(exported: np.ndarray, reference: np.ndarray, span: int = 2048) -> tuple[int, float]:
    """The shift of ``exported`` against ``reference`` with the highest correlation, and that correlation."""
    middle = exported[span : len(reference) - span]
    scores = {lag: float(np.corrcoef(middle, reference[span + lag : span + lag + len(middle)])[0, 1])
              for lag in range(-span, span + 1, 8)}
    lag = max(scores, key=scores.__getitem__)
    return lag, scores[lag]


def _export(stub: api_pb2_grpc.AnomaliesStub, identifier: str, **margin: float) -> api_pb2.EvidenceFile:
    return stub.Export(api_pb2.ExportEvidenceRequest(event_id=identifier, **margin), timeout=60)


def test_an_events_evidence_is_an_mp4_of_its_stored_seconds_with_their_sound(scene: Path, tmp_path: Path) -> None:
    settings = load_settings(environ={}, data_dir=tmp_path / "data", grpc_port=0,
                             cameras={"cam0": str(scene / "cam0.mp4")})
    runtime = Runtime(["ingest", "segmentation", "search"], settings, embedded=True)
    runtime.start()
    try:
        archive = runtime.ports.archive
        wait_for(lambda: len(archive.clip_ids("cam0")) >= SCENE_S - 1, 60, "the scene's clips in the clip store")
        epoch, reference = _scene_sound(scene / "cam0.mp4")
        stored = archive.clip_ids("cam0")
        first = clip_from_message(archive.get(stored[0])).capture_time
        assert first is not None and all(archive.get(c).audio_pcm_s16le for c in stored)
        probe = runtime.ports.bus.subscribe("export-probe", [CLIPS])  # the topic's copies carry no samples
        published = [pb.Clip.FromString(m.value) for m in probe.poll(timeout_s=5, max_messages=100)]
        probe.close()
        assert published and not any(c.audio_pcm_s16le for c in published)
        with grpc.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            stub = api_pb2_grpc.AnomaliesStub(channel)
            event = _event(runtime, "cam0", first + 4, first + 6)
            evidence = _export(stub, event)  # the default margin: 2 s either side
            assert evidence.clip_ids == [clip_id("cam0", first + s) for s in range(2, 8)]
            assert (evidence.start_time, evidence.end_time) == (first + 2, first + 8)
            assert not evidence.silent_clip_ids
            frames, duration, sound = _decoded(evidence.mp4)
            assert frames == 6 * FRAMES_PER_CLIP
            assert duration == pytest.approx(6.0, abs=0.05)
            assert len(sound) == pytest.approx(6 * SAMPLE_RATE, abs=2048)  # AAC pads its last frame
            offset = round((evidence.start_time - epoch) * SAMPLE_RATE)
            lag, correlation = _best_lag(sound[: 6 * SAMPLE_RATE], reference[offset : offset + 6 * SAMPLE_RATE])
            assert correlation > 0.9 and abs(lag) <= 64, (lag, correlation)

            wide = _export(stub, event, margin_s=30.0)  # clipped to what the store holds
            assert list(wide.clip_ids) == stored
            frames, duration, _ = _decoded(wide.mp4)
            assert frames == len(stored) * FRAMES_PER_CLIP
            assert duration == pytest.approx(wide.end_time - wide.start_time, abs=0.05)

            _old_clips_are_silent(runtime, stub, first)
            _refusals(runtime, stub, event, first)
        _cli(runtime.port, event, tmp_path)
    finally:
        runtime.stop()


def _old_clips_are_silent(runtime: Runtime, stub: api_pb2_grpc.AnomaliesStub, first: float) -> None:
    """Clips stored without samples, one second missing between them: silence, the gap kept on the timeline."""
    for second in (0, 1, 3):
        runtime.ports.archive.put(_old_clip("cam1", first + second))
    evidence = _export(stub, _event(runtime, "cam1", first + 1, first + 2), margin_s=2.0)
    assert list(evidence.silent_clip_ids) == list(evidence.clip_ids) == [clip_id("cam1", first + s) for s in (0, 1, 3)]
    frames, duration, sound = _decoded(evidence.mp4)
    assert frames == 3 * FRAMES_PER_CLIP
    assert duration == pytest.approx(4.0, abs=0.05)
    assert len(sound) >= 4 * SAMPLE_RATE and not np.abs(sound).max() > 1e-4


def _refusals(runtime: Runtime, stub: api_pb2_grpc.AnomaliesStub, event: str, first: float) -> None:
    long = _event(runtime, "cam0", first + 1, first + 1000)
    nothing = _event(runtime, "cam0", first + 5000, first + 5001)
    for request, code in ((api_pb2.ExportEvidenceRequest(event_id="0" * 32), grpc.StatusCode.NOT_FOUND),
                          (api_pb2.ExportEvidenceRequest(event_id=nothing), grpc.StatusCode.NOT_FOUND),
                          (api_pb2.ExportEvidenceRequest(event_id=long), grpc.StatusCode.FAILED_PRECONDITION),
                          (api_pb2.ExportEvidenceRequest(event_id="x" * 500), grpc.StatusCode.INVALID_ARGUMENT)):
        with pytest.raises(grpc.RpcError) as error:
            stub.Export(request, timeout=30)
        assert error.value.code() == code, request.event_id[:40]
    for margin in (-1.0, 61.0, float("nan"), float("inf")):
        with pytest.raises(grpc.RpcError) as error:
            _export(stub, event, margin_s=margin)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "margin_s" in error.value.details()


def _cli(port: int, event: str, tmp_path: Path) -> None:
    out = tmp_path / "evidence.mp4"
    assert main(["export", event, "--out", str(out), "--margin-s", "1", "--api", f"127.0.0.1:{port}"]) == 0
    frames, duration, _ = _decoded(out.read_bytes())
    assert (frames, round(duration)) == (4 * FRAMES_PER_CLIP, 4)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging file left
    missing = tmp_path / "missing.mp4"
    assert main(["export", "0" * 32, "--out", str(missing), "--api", f"127.0.0.1:{port}"]) == 2
    assert not missing.exists()

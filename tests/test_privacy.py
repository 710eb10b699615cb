"""Privacy before storage (issue 14 item 6): masks are exactly black and nothing else changes, in the filter,
in the chunks the ingest service publishes and in the clips ``avsurv segment`` stores; bad polygons are
refused with a line naming them; the bundled cascades find and blur a real face and a drawn plate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import matplotlib
import numpy as np
import pytest
import yaml
from PIL import Image
from platformkit import wait_for
from scipy import ndimage

from avsurv.adapters.bus import InProcessBus
from avsurv.cli import main
from avsurv.constants import FRAME_HEIGHT, FRAME_WIDTH
from avsurv.media import Segmenter
from avsurv.media.clipstore import ClipStore, decode_jpeg
from avsurv.media.decode import MediaReader
from avsurv.media.privacy import CameraPrivacy, PrivacyError, PrivacyFilter, parse_privacy, privacy_filter
from avsurv.media.segment import ClipFeed
from avsurv.platform.config import ConfigError, load_settings
from avsurv.platform.messages import CHUNKS
from avsurv.platform.runtime import Runtime
from avsurv.services.ingest import ChunkBuilder
from avsurv.services.segmentation import chunk_events
from avsurv.v1 import messages_pb2 as pb

DATA = Path(__file__).parent / "data"
SOURCE = DATA / "parking-lot-cars.mp4"  # 768x432: a real picture, so "unchanged" means something
MASK = [[0.1, 0.1], [0.6, 0.15], [0.5, 0.8], [0.05, 0.7]]
JPEG_BLOCK = 16  # a 4:2:0 JPEG's coding unit: decoded pixels depend only on their block and its neighbours
SECONDS = 6.0


def _filter(entry: dict[str, Any], camera: str = "cam0") -> PrivacyFilter:
    chosen = privacy_filter(parse_privacy({camera: entry}), camera)
    assert chosen is not None
    return chosen


def _textured_frame(seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(0, 256, (FRAME_HEIGHT, FRAME_WIDTH, 3), dtype=np.uint8)
    return ndimage.uniform_filter(noise, (5, 5, 1))


def _blocks(covered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel masks of the JPEG blocks wholly inside ``covered`` and a block away from its edge, and of the
    blocks at least a block away from any covered pixel."""
    height, width = covered.shape
    rows, cols = -(-height // JPEG_BLOCK), -(-width // JPEG_BLOCK)
    padded = np.zeros((rows * JPEG_BLOCK, cols * JPEG_BLOCK), bool)
    padded[:height, :width] = covered
    tiles = padded.reshape(rows, JPEG_BLOCK, cols, JPEG_BLOCK)
    ring = np.ones((3, 3), bool)
    inside = ndimage.binary_erosion(tiles.all(axis=(1, 3)), structure=ring)
    clear = ~ndimage.binary_dilation(tiles.any(axis=(1, 3)), structure=ring)
    grow = np.ones((JPEG_BLOCK, JPEG_BLOCK), bool)
    return np.kron(inside, grow)[:height, :width], np.kron(clear, grow)[:height, :width]


def _check_stored(frames: np.ndarray, plain: np.ndarray, covered: np.ndarray) -> None:
    """JPEG frames of the masked picture against those of the plain one: black inside, identical away."""
    inside, clear = _blocks(covered)
    assert inside.sum() > 5_000 and clear.sum() > 20_000  # both regions are large enough to mean something
    assert frames[:, inside].max() == 0
    np.testing.assert_array_equal(frames[:, clear], plain[:, clear])


# -- the filter ----------------------------------------------------------------------------------
def test_masked_pixels_are_exactly_black_and_the_others_unchanged() -> None:
    frame = _textured_frame()
    privacy = _filter({"masks": [MASK, [[0.8, 0.0], [1.0, 0.0], [1.0, 1.0]]]})
    out = privacy(frame)
    covered = privacy.covered(FRAME_HEIGHT, FRAME_WIDTH)
    assert (out[covered] == 0).all()
    np.testing.assert_array_equal(out[~covered], frame[~covered])
    assert frame[covered].any()  # the test picture had something there to hide
    # The polygons' areas (shoelace: 0.3025 and the triangle's 0.1), plus the covered outlines.
    assert 0.4025 <= covered.mean() <= 0.4025 + 0.015


def test_pixel_masks_with_a_frame_size_are_the_normalized_ones() -> None:
    size = (1920, 1080)
    pixels = [[x * size[0], y * size[1]] for x, y in MASK]
    normalized = _filter({"masks": [MASK]}).covered(FRAME_HEIGHT, FRAME_WIDTH)
    scaled = _filter({"masks": [pixels], "frame_size": list(size)}).covered(FRAME_HEIGHT, FRAME_WIDTH)
    np.testing.assert_array_equal(normalized, scaled)
    whole = _filter({"masks": [[[0, 0], [1, 0], [1, 1], [0, 1]]]})
    assert whole.covered(FRAME_HEIGHT, FRAME_WIDTH).all()


def test_every_camera_entry_applies_to_cameras_without_their_own() -> None:
    privacy = parse_privacy({"*": {"masks": [MASK]}, "gate": {"blur": ["faces"]}})
    assert privacy_filter(privacy, "cam7").privacy.masks  # type: ignore[union-attr]
    assert privacy_filter(privacy, "gate").privacy == CameraPrivacy((), ("faces",))  # type: ignore[union-attr]
    assert privacy_filter(parse_privacy({"gate": {"masks": []}}), "gate") is None


@pytest.mark.parametrize(("entry", "message"), [
    ({"masks": [[[0, 0], [1, 0]]]}, r"privacy.cam0.masks\[0\]: a polygon needs at least 3"),
    ({"masks": [MASK, [[0, 0], [1.5, 0], [1, 1]]]}, r"masks\[1\]\[1\]: point \(1.5, 0\) lies outside the picture; "
                                                   r"points are normalized to \[0, 1\] \(or give frame_size\)"),
    ({"masks": [[[0, 0], [2000, 0], [0, 900]]], "frame_size": [1920, 1080]}, r"point \(2000, 0\) lies outside"),
    ({"masks": [[[0, 0], [1, 1], [1, 0], [0, 1]]]}, r"masks\[0\]: edges 0 and 2 cross"),
    ({"masks": [[[0, 0], [0.5, 0.5], [1, 1]]]}, r"masks\[0\]: the polygon encloses no area"),
    ({"masks": [[[0, 0], [1, 0], [0, float("nan")]]]}, r"masks\[0\]\[2\]: expected a finite number"),
    ({"masks": [[[0, 0], [1, 0], "0.5,1"]]}, r"masks\[0\]\[2\]: expected \[x, y\]"),
    ({"masks": [MASK], "frame_size": [0, 1080]}, r"frame_size: width and height must be at least 1"),
    ({"blur": ["faces", "tattoos"]}, r"privacy.cam0.blur: expected a list of faces and plates"),
    ({"mask": [MASK]}, r"unknown key\(s\) mask; known: masks, frame_size, blur"),
])
def test_bad_privacy_settings_are_refused_with_what_is_wrong(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(PrivacyError, match=message):
        parse_privacy({"cam0": entry})
    with pytest.raises(ConfigError, match=message):  # the platform refuses to start with it
        load_settings(environ={}, privacy={"cam0": entry})


def test_privacy_for_an_impossible_camera_id_is_refused() -> None:
    with pytest.raises(PrivacyError, match="privacy: a camera id is letters"):
        parse_privacy({".hidden": {"masks": [MASK]}})


# -- the cascades --------------------------------------------------------------------------------
def test_a_real_face_is_found_and_blurred() -> None:
    photo = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")
    frame = np.full((FRAME_HEIGHT, FRAME_WIDTH, 3), 90, np.uint8)
    frame[:150, 200:328] = np.asarray(photo.resize((128, 150), Image.Resampling.LANCZOS))
    privacy = _filter({"blur": ["faces"]})
    (x, y, w, h), = privacy.detect(frame)
    assert x >= 200 and x + w <= 328 and 20 <= w <= 90  # her face, not the whole photo
    out = privacy(frame)
    face = (slice(y, y + h), slice(x, x + w))
    assert privacy.blurred == 1
    assert np.abs(cv2.Laplacian(out[face], cv2.CV_64F)).mean() < 0.2 * np.abs(cv2.Laplacian(frame[face],
                                                                                            cv2.CV_64F)).mean()
    np.testing.assert_array_equal(out[:, :150], frame[:, :150])  # nothing else changes
    assert privacy.detect(out) == []


def test_a_drawn_licence_plate_is_found_and_blurred() -> None:
    frame = np.full((FRAME_HEIGHT, FRAME_WIDTH, 3), 70, np.uint8)
    plate = np.full((39, 180, 3), 235, np.uint8)
    cv2.rectangle(plate, (0, 0), (179, 38), (0, 0, 0), 1)
    cv2.putText(plate, "A123BC77", (9, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.93, (0, 0, 0), 2)
    frame[100:139, 150:330] = plate
    privacy = _filter({"blur": ["plates"]})
    boxes = privacy.detect(frame)
    assert len(boxes) == 1 and boxes[0][0] < 200 and boxes[0][0] + boxes[0][2] > 280
    out = privacy(frame)
    assert out[100:139, 150:330].std() < 0.5 * plate.std()
    assert privacy.detect(out) == []


# -- where frames leave ingest -------------------------------------------------------------------
def _chunks(privacy: PrivacyFilter | None, epoch: float) -> list[pb.Chunk]:
    with MediaReader(str(SOURCE)) as reader:
        builder = ChunkBuilder("site", "cam0", str(SOURCE), epoch, reader.info.fps, reader.has_audio,
                               chunk_seconds=2.0, privacy=privacy)
        chunks = []
        for event in reader.events():
            if event.time >= SECONDS:
                break
            builder.add(event)
            if builder.full():
                chunks.append(builder.take())
        chunks.append(builder.take(end_of_stream=True))
    return chunks


def _frames(chunks: list[pb.Chunk]) -> np.ndarray:
    return np.stack([decode_jpeg(frame.jpeg) for chunk in chunks for frame in chunk.frames])


def test_published_chunks_and_live_clips_are_masked_as_offline_ones() -> None:
    epoch = 1_700_000_000.0
    privacy = _filter({"masks": [MASK]})
    covered = privacy.covered(FRAME_HEIGHT, FRAME_WIDTH)
    masked = _chunks(privacy, epoch)
    _check_stored(_frames(masked), _frames(_chunks(None, epoch)), covered)
    feed = ClipFeed("cam0", str(SOURCE), capture_epoch=epoch, fps=masked[0].fps, has_audio=masked[0].has_audio)
    live = [clip for chunk in masked for event in chunk_events(chunk) for clip in feed.push(event)] + feed.end()
    offline = list(Segmenter(SOURCE, "cam0", capture_start=epoch, max_seconds=SECONDS,
                             privacy=_filter({"masks": [MASK]})))
    assert [c.clip_id for c in live] == [c.clip_id for c in offline] and len(live) >= 4
    for ours, theirs in zip(live, offline, strict=True):
        assert (theirs.frames[:, covered] == 0).all()  # offline: the filter's frames, before any JPEG
        assert ours.frames[:, _blocks(covered)[0]].max() == 0
        assert np.abs(ours.frames.astype(int) - theirs.frames).mean() < 3.0  # one JPEG apart


def test_the_ingest_service_applies_the_configured_masks(tmp_path: Path) -> None:
    settings = load_settings(environ={}, data_dir=tmp_path / "data", grpc_port=0,
                             cameras={"cam0": str(DATA / "street-msmpeg4-mp3.avi")},
                             privacy={"*": {"masks": [[[0, 0], [1, 0], [1, 0.5], [0, 0.5]]]}})
    runtime = Runtime(["ingest"], settings, embedded=True)
    bus = runtime.ports.bus
    assert isinstance(bus, InProcessBus)
    subscription = bus.subscribe("test-privacy", [CHUNKS])
    runtime.start()
    try:
        wait_for(runtime.workers["ingest"].finished, 60, "the camera to be read")
        chunks = [pb.Chunk.FromString(m.value) for m in subscription.poll(timeout_s=0.5, max_messages=10_000)]
    finally:
        subscription.close()
        runtime.stop()
    frames = _frames(chunks)
    assert len(frames) >= 50  # 12.5 s at 5 frames a second
    assert frames[:, : FRAME_HEIGHT // 2 - JPEG_BLOCK].max() == 0  # the top half is gone
    assert frames[:, FRAME_HEIGHT // 2 + JPEG_BLOCK :].mean() > 30  # the street below is still there


def test_avsurv_segment_stores_masked_clips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "avsurv.yaml"
    config.write_text(yaml.safe_dump({"site": "lot", "privacy": {"lot": {"masks": [MASK], "blur": ["faces"]}}}))
    out = tmp_path / "clips"
    assert main(["segment", str(SOURCE), "--camera-id", "lot", "--max-seconds", "3", "--out", str(out),
                 "--privacy", str(config), "--no-progress"]) == 0
    assert "privacy: 1 mask(s) blacked out in" in capsys.readouterr().out
    plain = tmp_path / "plain"
    assert main(["segment", str(SOURCE), "--camera-id", "lot", "--max-seconds", "3", "--out", str(plain),
                 "--no-progress"]) == 0
    stored, unmasked = ClipStore(out), ClipStore(plain)
    covered = _filter({"masks": [MASK]}).covered(FRAME_HEIGHT, FRAME_WIDTH)
    _check_stored(np.concatenate([stored[i].frames for i in range(len(stored))]),
                  np.concatenate([unmasked[i].frames for i in range(len(unmasked))]), covered)


def test_avsurv_segment_refuses_a_bad_privacy_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "privacy.yaml"
    config.write_text(yaml.safe_dump({"privacy": {"lot": {"masks": [[[0, 0], [1, 1], [1, 0], [0, 1]]]}}}))
    with pytest.raises(SystemExit) as stopped:
        main(["segment", str(SOURCE), "--privacy", str(config)])
    assert stopped.value.code == 2
    assert "privacy.lot.masks[0]: edges 0 and 2 cross" in capsys.readouterr().err


def test_avsurv_segment_warns_when_no_entry_names_the_camera(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "privacy.yaml"
    config.write_text(yaml.safe_dump({"privacy": {"gate": {"masks": [MASK]}}}))
    assert main(["segment", str(SOURCE), "--camera-id", "lot", "--max-seconds", "1", "--privacy", str(config),
                 "--no-progress"]) == 0
    assert "no entry for camera 'lot' (nor '*'): its frames are stored unmasked" in capsys.readouterr().err

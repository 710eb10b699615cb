"""Segmentation into 1-second clips: frame sampling, crop geometry, A/V alignment, containers, real files."""

import re
from fractions import Fraction
from pathlib import Path

import av
import mediagen as mg
import numpy as np
import pytest
import torch

from avsurv.constants import AUDIO_TENSOR_SHAPE, CROP_OFFSETS, FRAME_HEIGHT, FRAME_WIDTH, VIDEO_TENSOR_SHAPE
from avsurv.media import Segmenter
from avsurv.media.segment import FrameResizer
from avsurv.models.inputs import crops

DATA = Path(__file__).parent / "data"
SLOTS = (0.1, 0.3, 0.5, 0.7, 0.9)


def segment(path: Path, **kwargs):
    segmenter = Segmenter(path, **kwargs)
    return list(segmenter), segmenter.report


def first_video_time(path: Path) -> float:
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).time


def assert_sampled_by_timestamp(spec: mg.Spec, clip, shift: float, slack: float) -> None:
    """Each frame is the one on screen at its instant: the last frame at or before it.

    ``shift`` is where the muxer put the first frame (MPEG-TS delays everything); ``slack`` accepts a
    neighbouring frame for ties when a container rounds timestamps to its time base.
    """
    times = np.array(mg.frame_times(spec)) - spec.video_offset + shift
    for frame, slot in zip(clip.frames, SLOTS, strict=True):
        instant = clip.start + slot
        first, last = np.searchsorted(times, [instant - slack, instant + slack], side="right") - 1
        allowed = {mg.level(index) for index in range(first, last + 1)}
        assert min(abs(int(frame.mean()) - level) for level in allowed) <= 6, (instant, frame.mean(), allowed)


CONTAINERS = {
    "mp4-h264-aac-25fps-48k-stereo": ("x.mp4", mg.Spec()),
    "mkv-h264-aac-29.97fps-44k-mono": ("x.mkv", mg.Spec(fps=Fraction(30000, 1001), audio_rate=44_100, layout="mono")),
    "webm-vp9-opus-30fps": ("x.webm", mg.Spec(vcodec="libvpx-vp9", acodec="libopus", fps=Fraction(30))),
    "webm-vp8-opus-25fps": ("x.webm", mg.Spec(vcodec="libvpx", acodec="libopus")),
    "avi-mpeg4-mp3-44k": ("x.avi", mg.Spec(vcodec="mpeg4", acodec="libmp3lame", audio_rate=44_100)),
    "avi-mjpeg-pcm-30fps-mono": ("x.avi", mg.Spec(vcodec="mjpeg", acodec="pcm_s16le", fps=Fraction(30), layout="mono")),
    "mkv-h264-variable-frame-rate": ("x.mkv", mg.Spec(vfr=True)),
    "mpegts-h264-aac": ("x.ts", mg.Spec()),
}


@pytest.mark.parametrize("name", list(CONTAINERS))
def test_containers_and_codecs_give_full_clips_sampled_by_timestamp(tmp_path, name):
    filename, spec = CONTAINERS[name]
    path = mg.write(tmp_path / filename, spec)
    clips, report = segment(path)
    # AVI stores no timestamps: the decoder's MPEG-4 delay shows frames one period late there.
    slack = 1.0 / float(spec.fps) if filename.endswith(".avi") else 0.002
    assert len(clips) == 3, report.summary()
    for clip in clips:
        assert clip.has_audio
        assert clip.frames.shape == (5, 224, 398, 3) and clip.frames.dtype == np.uint8
        assert_sampled_by_timestamp(spec, clip, first_video_time(path), slack)
        assert clip.log_mel.max() > -20  # the 440 Hz tone is there


def test_tensor_shapes_are_as_documented(tmp_path):
    clip = segment(mg.write(tmp_path / "x.mp4", mg.Spec(duration=1.0)))[0][0]
    video = crops(clip.frames)
    assert tuple(video.shape) == VIDEO_TENSOR_SHAPE == (2, 3, 5, 224, 224)
    assert clip.log_mel.shape == AUDIO_TENSOR_SHAPE == (1, 128, 64) and clip.log_mel.dtype == np.float32
    assert video.dtype == torch.float32 and 0.0 <= video.min() <= 1.0


def test_crops_are_the_left_and_right_224_columns_overlapping_by_50():
    columns = np.broadcast_to(np.arange(398, dtype=np.float64)[None, None, :, None] % 251, (5, 224, 398, 3))
    video = crops(columns.astype(np.uint8)) * 255.0
    left, right = video[0, 0, 0, 0], video[1, 0, 0, 0]
    assert CROP_OFFSETS == (0, 174)
    np.testing.assert_allclose(left.numpy(), np.arange(224) % 251)
    np.testing.assert_allclose(right.numpy(), np.arange(174, 398) % 251)
    assert torch.equal(left[-50:], right[:50])  # the shared strip


def test_audio_offset_keeps_sound_with_its_picture(tmp_path):
    # The audio stream starts 0.5 s after the video; a click and a flash both happen at 2.0 s.
    spec = mg.Spec(duration=4.0, audio_offset=0.5, clicks=(2.0,), flashes=(2.0,))
    clips, report = segment(mg.write(tmp_path / "offset.mp4", spec))
    by_start = {clip.start: clip for clip in clips}
    loudest = max(clips, key=lambda clip: clip.log_mel.max())
    assert loudest.start == 2.0
    assert loudest.frames[0].mean() > 250  # the flash is in the same clip ...
    energy = loudest.log_mel[0].mean(axis=0)
    assert int(energy.argmax()) <= 2  # ... at its first mel frames, as the click is at the clip's start
    assert not by_start[0.0].has_audio and by_start[1.0].has_audio  # audio starts inside clip 0
    assert any("audio covers only" in note for note in report.notes)


def test_video_offset_skips_the_partial_first_second(tmp_path):
    spec = mg.Spec(duration=3.0, video_offset=0.5)
    clips, report = segment(mg.write(tmp_path / "late-video.mp4", spec))
    assert [clip.start for clip in clips] == [1.0, 2.0]
    assert report.skipped[0].start == 0.0
    assert re.match(r"video starts at 0\.[45]\d s, inside this clip", report.skipped[0].reason)


def test_capture_time_alignment_puts_boundaries_on_whole_capture_seconds(tmp_path):
    path = mg.write(tmp_path / "x.mp4", mg.Spec(duration=4.0))
    clips, _ = segment(path, capture_start=1_700_000_000.5)
    assert [clip.start for clip in clips] == [0.5, 1.5, 2.5]
    assert [clip.capture_time for clip in clips] == [1_700_000_001.0, 1_700_000_002.0, 1_700_000_003.0]
    assert clips[0].clip_id == "x:1700000001000"


def test_real_h264_aac_recording_uses_its_creation_time():
    clips, report = segment(DATA / "parking-lot-cars.mp4")
    assert len(clips) == 30 and all(clip.has_audio for clip in clips)  # silent audio is still audio
    assert report.info.video_codec == "h264" and report.info.fps == 12.5
    assert clips[0].capture_time == pytest.approx(1524177960.0)  # 2018-04-19T22:46:00Z
    assert np.all(clips[0].log_mel == -100.0)  # the track is digitally silent
    assert clips[0].frames.std() > 10  # a real picture, not a flat frame


def test_real_msmpeg4_mp3_avi():
    clips, report = segment(DATA / "street-msmpeg4-mp3.avi")
    assert len(clips) == 12
    assert report.info.video_codec == "msmpeg4v2" and report.info.audio_codec.startswith("mp3")
    moving = np.abs(clips[0].frames.astype(int) - clips[-1].frames.astype(int)).mean()
    assert moving > 1  # frames at different times differ


def test_frame_resizer_keeps_one_context_and_gives_each_frames_own_resize() -> None:
    """The resizer reuses swscale's context across frames: the same pixels as each frame's own ``reformat``
    (area averaging), also when the input's size and pixel format change mid-stream; arrays pass through."""
    rng = np.random.default_rng(7)
    resize = FrameResizer()
    for width, height, layout in [(640, 360, "yuv420p"), (640, 360, "yuv420p"), (1280, 720, "yuv420p"),
                                  (320, 180, "yuvj420p"), (640, 360, "yuv420p")]:
        frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (height * 3 // 2, width), dtype=np.uint8),
                                           format="yuv420p").reformat(format=layout)
        own = frame.reformat(width=FRAME_WIDTH, height=FRAME_HEIGHT, format="rgb24", interpolation="AREA")
        assert np.array_equal(resize(frame), own.to_ndarray())
    resized = np.zeros((FRAME_HEIGHT, FRAME_WIDTH, 3), np.uint8)
    assert resize(resized) is resized

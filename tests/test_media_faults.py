"""Damaged and unusual media through the segmenter (issue 14): odd channel layouts, headers without a codec,
timestamp jumps, a mid-stream sample-rate change, mp4s cut inside their index, special files and inputs that
give no clip (too short, video in pieces, stuck timestamps) are either segmented or refused with one line
naming the file and the reason, and no timestamp or resolution makes memory run away.

Inputs that crashed the process or took gigabytes before the fixes are segmented in a child process under an
address-space cap, so a regression fails the test instead of taking the machine."""

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import mediagen as mg
import numpy as np
import pytest

from avsurv.cli import main
from avsurv.errors import MediaError, NoClipError
from avsurv.learning.data import iter_clips
from avsurv.media import Segmenter
from avsurv.media.decode import VideoSample
from avsurv.media.segment import NO_WHOLE_SECOND, STUCK_TIMESTAMPS, TOO_SHORT, ClipFeed

DATA = Path(__file__).parent / "data"
RATE = 48_000
MEMORY_BOUND_MB = 300
"""Peak resident memory allowed to a child segmenting one small damaged input (the interpreter, numpy and
PyAV take about 70 MB); before the fixes a 1 h timestamp jump took 540 MB, a 9000x9000 frame 980 MB."""

CHILD = """
import json, resource, sys
cap = 2 << 30  # the unfixed segmenter wants 3-12 GB for some of these inputs: fail here instead
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
from avsurv.errors import MediaError
from avsurv.media import Segmenter
segmenter = Segmenter(sys.argv[1])
clips, error = [], None
try:
    clips = [{"start": c.start, "has_audio": c.has_audio, "log_mel": float(c.log_mel.mean())} for c in segmenter]
except MediaError as failure:
    error = str(failure)
# VmHWM, the peak of this process's own memory: ru_maxrss would keep the parent's peak across exec
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
rss = int(status["VmHWM"].split()[0]) / 1024
print(json.dumps({"clips": clips, "notes": segmenter.report.notes, "error": error, "rss_mb": rss}))
"""


def segment_in_child(path: Path) -> dict:
    """The clips (start, has_audio, mean log-mel), notes, MediaError text and peak memory of segmenting
    ``path`` in a fresh process; a crash (a segfault is -11) or a MemoryError fails the test here."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-1500:]}"
    return json.loads(done.stdout.splitlines()[-1])


def segment(path: Path):
    segmenter = Segmenter(path)
    return list(segmenter), segmenter.report


# -- generated inputs --------------------------------------------------------------------------------------
def _tone(start: int, count: int) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 440.0 * np.arange(start, start + count) / RATE)).astype(np.float32)


def with_audio(path: Path, acodec: str, layout: str, gains: list[float], seconds: float = 2.0) -> Path:
    """64x48 grey video with a 440 Hz tone at ``gains[c]`` in channel ``c`` of ``layout``, in s16 samples."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream(acodec, rate=RATE)
        audio.layout, audio.format = layout, "s16"
        step = audio.codec_context.frame_size or 1024
        for start in range(0, int(seconds * RATE) - step + 1, step):
            channels = np.array(gains, np.float32)[:, None] * _tone(start, step)[None]
            interleaved = (channels.T.reshape(1, -1) * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = RATE, start, Fraction(1, RATE)
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
        for index in range(int(seconds * 25)):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 100, np.uint8), format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
    return path


def scene(path: Path, video_starts: list[float], audio_starts: list[float] | None = None,
          seconds: float = 2.0) -> Path:
    """``seconds`` of 25 fps video (and mono audio) from each start time: the timestamps jump between runs."""
    audio_starts = video_starts if audio_starts is None else audio_starts
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", options={"bf": "0"})
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.codec_context.time_base = Fraction(1, 1000)
        audio = container.add_stream("aac", rate=RATE)
        audio.layout = "mono"
        for v_start, a_start in zip(video_starts, audio_starts, strict=True):
            sent = 0  # audio frames sent so far in this run
            for index in range(round(seconds * 25)):
                frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 + 8 * (index % 25), np.uint8), "rgb24")
                frame.pts, frame.time_base = round((v_start + index / 25) * 1000), Fraction(1, 1000)
                container.mux(video.encode(frame))
                while sent * 1024 < (index + 1) * RATE / 25:
                    chunk = av.AudioFrame.from_ndarray(_tone(sent * 1024, 1024)[None], format="fltp", layout="mono")
                    chunk.sample_rate, chunk.time_base = RATE, Fraction(1, RATE)
                    chunk.pts = round(a_start * RATE) + sent * 1024
                    container.mux(audio.encode(chunk))
                    sent += 1
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    return path


def concatenated_ts(path: Path, starts: list[float]) -> Path:
    """MPEG-TS runs cut one after the other (as a restarted encoder sends them): timestamps may step back."""
    parts = [scene(path.with_suffix(f".{index}.ts"), [start]) for index, start in enumerate(starts)]
    path.write_bytes(b"".join(part.read_bytes() for part in parts))
    return path


def cut_inside_index(source: Path, path: Path) -> Path:
    """``source`` (index at the end) cut where its video track's sample-to-chunk table begins: the track is
    declared, but none of its samples can be found."""
    data = source.read_bytes()
    path.write_bytes(data[: data.find(b"stsc") - 4])
    return path


# -- 8-channel audio ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("acodec", "layout"), [("flac", "7.1"), ("pcm_s16le", "7.1"), ("pcm_s16le", "octagonal")])
def test_eight_channel_audio_is_the_mean_of_its_channels(tmp_path, acodec, layout):
    eight = segment_in_child(with_audio(tmp_path / "eight.mkv", acodec, layout, [1.0] + [0.0] * 7))
    mono_same_mean = segment_in_child(with_audio(tmp_path / "mean.mkv", acodec, "mono", [1 / 8]))
    mono_loud = segment_in_child(with_audio(tmp_path / "loud.mkv", acodec, "mono", [1.0]))
    assert [c["has_audio"] for c in eight["clips"]] == [True, True]
    for clip, same, loud in zip(eight["clips"], mono_same_mean["clips"], mono_loud["clips"], strict=True):
        assert clip["log_mel"] == pytest.approx(same["log_mel"], abs=0.5)
        assert loud["log_mel"] - clip["log_mel"] > 15  # one channel of eight: 18 dB below it alone


# -- headers without a codec -------------------------------------------------------------------------------
def test_video_stream_without_a_codec_is_one_clear_error(tmp_path):
    path = tmp_path / "flipped.mkv"
    data = mg.write(tmp_path / "good.mkv", mg.Spec()).read_bytes()
    path.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/AVX"))
    with pytest.raises(MediaError, match="its video stream names no codec") as error:
        segment(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_audio_stream_without_a_codec_gives_clips_without_audio(tmp_path):
    path = tmp_path / "flipped.mkv"
    path.write_bytes(mg.write(tmp_path / "good.mkv", mg.Spec()).read_bytes().replace(b"A_AAC", b"A_AAX"))
    clips, report = segment(path)
    assert len(clips) == 3 and not any(clip.has_audio for clip in clips)
    assert any("audio stream names no codec" in note for note in report.notes)


# -- timestamp jumps ---------------------------------------------------------------------------------------
def test_forward_jump_of_an_hour_resumes_at_the_new_time_in_bounded_memory(tmp_path):
    result = segment_in_child(scene(tmp_path / "jump.mkv", [0.0, 3600.0]))
    assert [c["start"] for c in result["clips"]] == [0.0, 1.0, 3600.0, 3601.0]
    assert all(c["has_audio"] for c in result["clips"])
    assert any("jump from 1.96 s to 3600.00 s" in note for note in result["notes"])
    assert result["rss_mb"] < MEMORY_BOUND_MB


def test_forward_jump_of_20000_s_in_an_mp4(tmp_path):
    # the average frame rate over this file is 0.005 fps: it must not hold frames on screen for minutes
    result = segment_in_child(scene(tmp_path / "jump.mp4", [0.0, 20_000.0]))
    assert [c["start"] for c in result["clips"]] == [0.0, 1.0, 20_000.0, 20_001.0]
    assert result["rss_mb"] < MEMORY_BOUND_MB


def test_mpeg_ts_stepping_back_from_3600_s_to_0(tmp_path):
    # the demuxer unwraps the step back as a 33-bit timestamp wrap: a forward jump of about 91,800 s
    result = segment_in_child(concatenated_ts(tmp_path / "step.ts", [3600.0, 0.0]))
    starts = [c["start"] for c in result["clips"]]
    assert starts[:2] == [3600.0, 3601.0] and len(starts) >= 3 and starts[2] > 90_000
    assert any("video timestamps jump from 3601.96 s" in note for note in result["notes"])
    assert result["rss_mb"] < MEMORY_BOUND_MB


def test_audio_far_ahead_of_the_video_is_dropped_with_a_note(tmp_path):
    clips, report = segment(scene(tmp_path / "ahead.mkv", [0.0, 2.0], audio_starts=[0.0, 3600.0]))
    assert [clip.start for clip in clips] == [0.0, 1.0, 2.0, 3.0]
    assert [clip.has_audio for clip in clips] == [True, True, False, False]
    assert not report.skipped  # no second of the dropped audio waits for video that never comes
    assert any("s of audio was dropped: it lay more than 60 s ahead" in note for note in report.notes)


def test_frames_whose_timestamps_go_back_are_dropped_with_a_note(tmp_path):
    clips, report = segment(concatenated_ts(tmp_path / "back.ts", [0.0, 1.0]))  # 1.00-1.96 s come twice
    assert [clip.start for clip in clips] == [0.0, 1.0, 2.0]
    assert any(note.startswith("25 video frames were dropped because their timestamps went back")
               and "(first: 1.00 s after 1.9" in note for note in report.notes)


# -- sample-rate change ------------------------------------------------------------------------------------
def _rate_flipped(tmp_path: Path) -> Path:
    """The real MP3 recording with one mid-file frame header switched from 44.1 to 48 kHz."""
    data = bytearray((DATA / "street-msmpeg4-mp3.avi").read_bytes())
    chunk = data.find(b"01wb", len(data) // 2)  # an audio chunk; its MP3 frame header follows the size
    assert data[chunk + 8 : chunk + 11] == b"\xff\xfb\x10"
    data[chunk + 10] = 0x14  # sampling-frequency bits 00 (44.1 kHz) -> 01 (48 kHz)
    path = tmp_path / "rate.avi"
    path.write_bytes(bytes(data))
    return path


def test_mid_stream_sample_rate_change_is_resampled_and_noted(tmp_path):
    clips, report = segment(_rate_flipped(tmp_path))
    assert len(clips) == 12 and all(clip.has_audio for clip in clips)
    assert any("audio format (rate, channels or sample format) changed" in note for note in report.notes)


def test_cli_goes_on_after_a_sample_rate_change(tmp_path, capsys):
    good = mg.write(tmp_path / "good.mp4", mg.Spec())
    assert main(["segment", "--no-progress", str(_rate_flipped(tmp_path)), str(good)]) == 0
    out = capsys.readouterr().out
    assert "rate: 12 clips" in out and "good: 3 clips" in out


# -- mp4s cut inside the index, special files, absurd resolutions --------------------------------------------
@pytest.mark.parametrize("source", ["real", "generated"])
def test_mp4_cut_inside_its_index_is_one_clear_error(tmp_path, source, capsys):
    original = DATA / "parking-lot-cars.mp4" if source == "real" else mg.write(tmp_path / "m.mp4", mg.Spec())
    path = cut_inside_index(original, tmp_path / "cut.mp4")
    with pytest.raises(MediaError, match=r"cannot use .*cut\.mp4.*: no video frame could be decoded"):
        segment(path)
    assert main(["segment", "--no-progress", str(path)]) == 2
    assert "no video frame could be decoded" in capsys.readouterr().err


def test_fifo_is_refused_as_a_fifo_without_blocking(tmp_path):
    path = tmp_path / "camera.mp4"
    os.mkfifo(path)
    with pytest.raises(MediaError, match=r"camera\.mp4.*is a named pipe \(fifo\), not a regular file"):
        segment(path)


def test_absurd_resolution_is_refused_before_it_is_allocated(tmp_path):
    path = tmp_path / "huge.mov"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("png", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "rgb24"
        for index in range(25):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 4 * index, np.uint8), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    side = (9000).to_bytes(4, "big")  # every PNG header claims 9000x9000: 243 MB per RGB frame
    path.write_bytes(path.read_bytes().replace(b"IHDR\x00\x00\x00\x40\x00\x00\x00\x30", b"IHDR" + side + side))
    result = segment_in_child(path)
    assert result["error"] and "no video frame could be decoded" in result["error"]
    assert result["rss_mb"] < MEMORY_BOUND_MB


# -- inputs that give no clip (the long media fuzz's 21 silent files, issue 14 item 3) -------------------------
def test_recording_shorter_than_one_clip_is_refused_with_its_length(tmp_path, capsys):
    path = mg.write(tmp_path / "short.mp4", mg.Spec(duration=0.4))
    refusal = r"short\.mp4.*: its video lasts only 0\.40 s, less than one 1 s clip$"  # no container length: not damage
    with pytest.raises(NoClipError, match=refusal) as error:
        segment(path)
    assert error.value.kind == TOO_SHORT
    assert main(["segment", "--no-progress", str(path)]) == 2
    assert "its video lasts only 0.40 s" in capsys.readouterr().err


def test_truncated_file_names_the_length_its_container_declares(tmp_path):
    path = mg.write(tmp_path / "cut.mkv", mg.Spec(duration=6.0))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 20])  # the header still says 6 s
    with pytest.raises(NoClipError, match=r"its video lasts only 0\.\d\d s, .*\(the container declares 6\.01 s\)"):
        segment(path)


def test_video_in_pieces_without_a_whole_second_is_refused_with_the_first_skipped_second(tmp_path):
    path = mg.write(tmp_path / "pieces.mkv", mg.Spec(duration=3.0, video_gaps=((0.5, 1.6), (1.9, 2.5))))
    with pytest.raises(NoClipError, match=r"no second is covered by video throughout .*3 seconds skipped: 0\.00 s,"
                       r" video gap: no frame from 0\.48 s to 1\.60 s") as error:
        segment(path)
    assert error.value.kind == NO_WHOLE_SECOND


def test_video_whose_timestamps_never_advance_is_refused_as_such(tmp_path):
    path = tmp_path / "stuck.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        for index in range(50):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 4 * index, np.uint8), format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                packet.pts = packet.dts = 0  # a camera whose clock stopped
                container.mux(packet)
    with pytest.raises(NoClipError, match="its video timestamps do not advance: 49 of 50 frames") as error:
        segment(path)
    assert error.value.kind == STUCK_TIMESTAMPS


@pytest.mark.parametrize("outlier", [2983.14, 6.19])
def test_one_frame_with_a_damaged_timestamp_is_dropped_not_taken_as_a_jump(outlier):
    """The fuzz's bit flips in an MPEG-TS PTS: one frame at 2983 s (or 6 s) among frames 0.04 s apart used to
    end the video there, every later frame dropped for going back: no clip from 3 s of video."""
    feed = ClipFeed("cam", "test", capture_epoch=None, fps=25.0, has_audio=False)
    times = [index / 25 for index in range(75)]
    times[12] = outlier
    clips = [clip for t in times for clip in feed.push(VideoSample(t, np.zeros((224, 398, 3), np.uint8)))]
    clips += feed.end()
    assert [clip.start for clip in clips] == [0.0, 1.0, 2.0]
    assert feed.report.notes == [f"1 video frames were dropped because their timestamps lay ahead of the frames"
                                 f" before and after them (first: {outlier:.2f} s between 0.44 s and 0.52 s)"]


def test_training_inputs_skip_a_file_that_gives_no_clip_with_its_reason(tmp_path, capsys):
    """Among several inputs, one too short is skipped with its reason; alone, it is refused."""
    good = mg.write(tmp_path / "good.mp4", mg.Spec(duration=2.2))
    short = mg.write(tmp_path / "short.mp4", mg.Spec(duration=0.4))
    clips = list(iter_clips([short, good], progress=False))
    assert [clip.start for clip in clips] == [0.0, 1.0]
    assert "skipped: cannot use" in capsys.readouterr().err
    with pytest.raises(NoClipError) as error:
        list(iter_clips([short], progress=False))
    assert error.value.kind == TOO_SHORT

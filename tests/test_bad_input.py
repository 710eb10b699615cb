"""Damaged and unusual inputs: clips that can be made are made, the rest are reported, nothing crashes."""

import subprocess
import sys
from pathlib import Path

import av
import mediagen as mg
import numpy as np
import pytest

from avsurv.cli import main
from avsurv.errors import MediaError
from avsurv.media import Segmenter

DATA = Path(__file__).parent / "data"


def segment(path: Path):
    segmenter = Segmenter(path)
    return list(segmenter), segmenter.report


def test_no_audio_track_gives_clips_without_audio(tmp_path):
    clips, report = segment(mg.write(tmp_path / "mute.mp4", mg.Spec(acodec=None)))
    assert len(clips) == 3 and not any(clip.has_audio for clip in clips)
    assert all(np.all(clip.log_mel == -100.0) for clip in clips)
    assert any("no audio track" in note for note in report.notes)


def test_silent_audio_is_audio(tmp_path):
    clips, _ = segment(mg.write(tmp_path / "silent.mkv", mg.Spec(silent=True)))
    assert len(clips) == 3 and all(clip.has_audio for clip in clips)
    assert all(clip.log_mel.max() < -60 for clip in clips)


def test_video_gap_skips_the_seconds_it_covers_with_the_reason(tmp_path):
    clips, report = segment(mg.write(tmp_path / "gap.mkv", mg.Spec(duration=5.0, video_gaps=((1.5, 3.0),))))
    assert [clip.start for clip in clips] == [0.0, 3.0, 4.0]
    assert [s.start for s in report.skipped] == [1.0, 2.0]
    assert all(s.reason.startswith("video gap: no frame from 1.4") for s in report.skipped)


def test_audio_gap_makes_clips_without_audio_and_says_so(tmp_path):
    clips, report = segment(mg.write(tmp_path / "agap.mkv", mg.Spec(duration=4.0, audio_gaps=((1.2, 2.6),))))
    assert [clip.has_audio for clip in clips] == [True, False, False, True]
    assert sum("audio covers only" in note for note in report.notes) == 2


def _truncate(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _corrupt_tail(path: Path, start: float) -> Path:
    data = bytearray(path.read_bytes())
    cut = int(len(data) * start)
    data[cut:] = np.random.default_rng(7).integers(0, 256, len(data) - cut, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("suffix", [".mkv", ".ts", ".webm"])
def test_truncated_tail_keeps_the_clips_before_the_cut(tmp_path, suffix):
    spec = mg.Spec(duration=6.0) if suffix != ".webm" else mg.Spec(duration=6.0, vcodec="libvpx", acodec="libopus")
    clips, report = segment(_truncate(mg.write(tmp_path / f"cut{suffix}", spec), 0.6))
    assert 2 <= len(clips) <= 4, report.summary()
    assert [clip.start for clip in clips] == [float(i) for i in range(len(clips))]


def test_truncated_faststart_mp4_keeps_the_clips_before_the_cut(tmp_path):
    path = tmp_path / "cut.mp4"
    mg.write(path, mg.Spec(duration=6.0, container_options={"movflags": "faststart"}))
    clips, report = segment(_truncate(path, 0.6))
    assert 2 <= len(clips) <= 4, report.summary()


def test_mp4_cut_before_its_index_is_one_clear_error(tmp_path):
    path = _truncate(mg.write(tmp_path / "cut.mp4", mg.Spec(duration=6.0)), 0.6)
    with pytest.raises(MediaError, match=r"cannot open .*cut\.mp4.*: ") as error:
        segment(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("suffix", [".mkv", ".ts", ".avi"])
def test_corrupt_tail_does_not_crash_and_keeps_the_good_clips(tmp_path, suffix):
    spec = mg.Spec(duration=6.0) if suffix != ".avi" else mg.Spec(duration=6.0, vcodec="mpeg4", acodec="libmp3lame")
    clips, report = segment(_corrupt_tail(mg.write(tmp_path / f"bad{suffix}", spec), 0.6))
    assert len(clips) >= 2, report.summary()
    assert clips[0].start == 0.0 and clips[1].start == 1.0


def test_corrupt_tail_of_a_real_recording(tmp_path):
    path = tmp_path / "street.avi"
    path.write_bytes((DATA / "street-msmpeg4-mp3.avi").read_bytes())
    clips, report = segment(_corrupt_tail(path, 0.5))
    assert 4 <= len(clips) <= 12, report.summary()


def _garbage(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.mp4"
    path.write_bytes(np.random.default_rng(3).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.mkv"
    path.write_bytes(b"")
    return path


def _text(tmp_path: Path) -> Path:
    path = tmp_path / "notes.avi"
    path.write_text("this is not a video\n" * 100)
    return path


def _audio_only(tmp_path: Path) -> Path:
    path = tmp_path / "sound.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=48_000)
        for index in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = 48_000, index * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


UNREADABLE = {
    "random bytes": (_garbage, "cannot open"),
    "empty file": (_empty, "cannot open"),
    "text file": (_text, "cannot open"),
    "missing file": (lambda tmp: tmp / "nope.mp4", "does not exist"),
    "directory": (lambda tmp: tmp, "is a directory"),
    "audio only": (_audio_only, "has no video stream"),
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_unreadable_input_is_one_clear_error(tmp_path, case, capsys):
    make, words = UNREADABLE[case]
    path = make(tmp_path)
    with pytest.raises(MediaError, match=words) as error:
        segment(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)
    assert main(["segment", "--no-progress", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("avsurv segment: error: ") and words in err and "\n" not in err


def test_cli_reports_a_bad_input_and_still_segments_the_good_one(tmp_path):
    good = mg.write(tmp_path / "good.mp4", mg.Spec())
    result = subprocess.run(
        [sys.executable, "-m", "avsurv.cli", "segment", "--no-progress", str(_garbage(tmp_path)), str(good)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert "good: 3 clips" in result.stdout

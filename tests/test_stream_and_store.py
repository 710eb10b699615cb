"""Network streams through the same code as files, the clip directory, and the segment command."""

import functools
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import mediagen as mg
import numpy as np
import pytest

from avsurv.cli import build_parser, main
from avsurv.errors import MediaError
from avsurv.media import Segmenter
from avsurv.media.clipstore import ClipStore, ClipWriter


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def http_root(tmp_path) -> Iterator[tuple[Path, str]]:
    """A real HTTP server on loopback serving ``tmp_path``."""
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_stream_gives_the_same_clips_as_the_file(http_root):
    root, url = http_root
    path = mg.write(root / "live.ts", mg.Spec(duration=4.0, clicks=(2.0,)))
    from_file = list(Segmenter(path, capture_start=0.0))
    streamed = Segmenter(f"{url}/live.ts", capture_start=0.0)
    from_stream = list(streamed)
    assert streamed.report.info.is_stream and streamed.camera_id == "live"
    # MPEG-TS delays the video to 0.08 s, so its last frame (4.04 s) completes a fourth second.
    assert [c.start for c in from_stream] == [c.start for c in from_file] == [0.0, 1.0, 2.0, 3.0]
    for a, b in zip(from_stream, from_file, strict=True):
        assert np.array_equal(a.frames, b.frames) and np.allclose(a.log_mel, b.log_mel)


def test_stream_max_seconds_stops_reading(http_root):
    root, url = http_root
    mg.write(root / "long.ts", mg.Spec(duration=6.0))
    clips = list(Segmenter(f"{url}/long.ts", max_seconds=2.0, capture_start=0.0))
    assert len(clips) == 2


def test_unreachable_stream_is_one_clear_error(http_root):
    _, url = http_root
    with pytest.raises(MediaError, match=r"cannot open 'http://127\.0\.0\.1:\d+/missing\.ts': .*404"):
        list(Segmenter(f"{url}/missing.ts", timeout_s=5))
    with pytest.raises(MediaError, match=re.escape("cannot open 'rtsp://127.0.0.1:9/cam'")):
        list(Segmenter("rtsp://127.0.0.1:9/cam", timeout_s=2))


def test_clip_directory_round_trip(tmp_path):
    clips = list(Segmenter(mg.write(tmp_path / "x.mp4", mg.Spec(duration=3.0, clicks=(1.2,)))))
    with ClipWriter(tmp_path / "clips") as writer:
        for clip in clips:
            writer.add(clip)
    store = ClipStore(tmp_path / "clips")
    assert len(store) == 3
    for original, stored in zip(clips, store, strict=True):
        assert stored.clip_id == original.clip_id and stored.has_audio == original.has_audio
        assert np.array_equal(stored.log_mel, original.log_mel)
        assert np.abs(stored.frames.astype(int) - original.frames.astype(int)).mean() < 2  # JPEG q90
    with pytest.raises(FileExistsError, match="already holds clips"):
        ClipWriter(tmp_path / "clips")


def test_segment_command_writes_a_clip_directory(tmp_path, capsys):
    video = mg.write(tmp_path / "cam7.mkv", mg.Spec(duration=3.0))
    assert main(["segment", str(video), "--out", str(tmp_path / "clips"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "cam7: 3 clips" in out and "wrote 3 clips" in out
    assert [r.camera_id for r in ClipStore(tmp_path / "clips").records] == ["cam7"] * 3
    assert (tmp_path / "clips" / "reports.jsonl").read_text().count("\n") == 1


def test_segment_help_explains_every_option():
    parser = build_parser()
    segment = parser._subparsers._group_actions[0].choices["segment"]
    for action in segment._actions:
        assert action.help, f"option {action.option_strings or action.dest} has no help"
    text = segment.format_help()
    for option in ("--out", "--camera-id", "--capture-start", "--max-seconds", "--timeout", "--threads", "--json"):
        assert option in text

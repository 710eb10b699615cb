"""Decoding a video with sound, from a file or a network stream, into timed frames and 44.1 kHz mono audio.

One code path serves files (mp4, mkv, webm, avi, ...) and streams (rtsp, http, ...): PyAV demuxes both.
Times are the media's own presentation times in seconds. Damage never raises past this module: a packet
that does not decode is counted and skipped, a demuxer error ends reading with the reason kept, and only
an input that cannot be opened at all raises :class:`MediaError` with a one-line message. Frames larger
than ``MAX_FRAME_PIXELS`` are refused before the decoder allocates them.
"""

from __future__ import annotations

import contextlib
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import av
import numpy as np

from avsurv.constants import SAMPLE_RATE
from avsurv.errors import MediaError

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
AUDIO_JUMP_TOLERANCE_S = 0.02
"""A jump in audio timestamps larger than this is a gap (or overlap): the resampler restarts there."""
MIN_AVERAGE_FPS = 1.0
"""An average frame rate below this comes from a timestamp jump in the file (frames over its whole duration),
not from the camera: the stream's base rate is taken instead, so frames are not held on screen for minutes."""
MAX_FRAME_PIXELS = 8192 * 4608
"""The largest video frame decoded (8K, above the 7680x4320 of the largest camera sensors). FFmpeg refuses a
frame that claims more before allocating it, and it counts as undecodable: one damaged header cannot make the
decoder allocate gigabytes per frame."""



@dataclass(frozen=True)
class MediaInfo:
    """What the demuxer says about an input."""

    source: str
    container: str
    is_stream: bool
    video_codec: str
    width: int
    height: int
    fps: float | None
    audio_codec: str | None
    audio_rate: int | None
    audio_channels: int | None
    duration_s: float | None
    capture_epoch: float | None
    """Epoch seconds at media time 0 (file creation_time, or the wall clock for live streams)."""


@dataclass(frozen=True)
class VideoSample:
    time: float
    frame: av.VideoFrame | np.ndarray
    """A decoded frame, or one already resized to RGB uint8 [224, 398, 3] (frames carried in chunks)."""
    jpeg: bytes = b""
    """The resized frame as ingest encoded it, for a frame that came in a chunk: clips keep these bytes rather
    than encoding the frame a second time."""


@dataclass(frozen=True)
class AudioChunk:
    time: float
    samples: np.ndarray
    """float32 mono samples at SAMPLE_RATE, starting at ``time``."""


def is_network_source(source: str) -> bool:
    return source.split("://", 1)[0].lower() in NETWORK_SCHEMES if "://" in source else False


def _reason(error: Exception) -> str:
    """The library's words without errno numbers or the repeated file name."""
    return str(getattr(error, "strerror", None) or error).strip()


def _open_options(source: str) -> dict[str, str]:
    # max_pixels also reaches the decoders that probe the streams while the input is opened (where the
    # container lists its streams before probing: MPEG-TS does not, and is capped from the first decode)
    options = {"max_pixels": str(MAX_FRAME_PIXELS)}
    if source.lower().startswith(("rtsp://", "rtsps://")):
        options["rtsp_transport"] = "tcp"  # UDP drops packets on busy networks; TCP is what cameras allow
    return options


def _not_a_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a media file, or None for a regular file. A fifo or a device would
    block the open until a writer appears, so only regular files are read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as error:
        return f"cannot be examined ({_reason(error)})"
    kinds = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a named pipe (fifo)", stat.S_ISSOCK: "a socket",
             stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device"}
    kind = next((name for test, name in kinds.items() if test(mode)), None)
    return f"is {kind}, not a regular file" if kind else None


def _creation_epoch(metadata: dict[str, str]) -> float | None:
    stamp = metadata.get("creation_time")
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class MediaReader(contextlib.AbstractContextManager):
    """Opens ``source`` and yields :class:`VideoSample` and :class:`AudioChunk` in demux order.

    ``threads`` is the decoder thread count (0: let FFmpeg choose). ``timeout_s`` bounds the wait for
    a network stream to open and for each read from it.
    """

    def __init__(self, source: str | Path, *, timeout_s: float = 10.0, threads: int = 0) -> None:
        self.source = str(source)
        self.decode_errors = 0
        self.first_error: str | None = None
        self.end_reason: str | None = None
        self.notes: list[str] = []
        """What was ignored while opening (an audio stream without a decoder) or reading."""
        network = is_network_source(self.source)
        problem = None if network else _not_a_file(Path(self.source))
        if problem:
            raise MediaError(f"cannot open {self.source!r}: the file {problem}")
        try:
            self._container = av.open(
                self.source, options=_open_options(self.source), timeout=timeout_s if network else None
            )
        except (av.FFmpegError, OSError, ValueError) as error:
            raise MediaError(f"cannot open {self.source!r}: {_reason(error)}") from None
        try:
            self._video, self._audio = self._pick_streams()
        except MediaError:
            self._container.close()
            raise
        self._video.codec_context.options = {"max_pixels": str(MAX_FRAME_PIXELS)}
        self._video.thread_type = "AUTO"
        self._video.thread_count = threads
        self.info = self._describe(network)

    def _pick_streams(self) -> tuple[av.VideoStream, av.AudioStream | None]:
        """The first video stream, and the first audio stream that has a decoder. A stream has no codec
        context when its header names no codec FFmpeg decodes (e.g. a damaged codec id)."""
        streams = self._container.streams
        if not streams.video:
            raise MediaError(f"cannot use {self.source!r}: it has no video stream")
        video = streams.video[0]
        if video.codec_context is None:
            raise MediaError(f"cannot use {self.source!r}: its video stream names no codec that can be decoded")
        audio = next((s for s in streams.audio if s.codec_context is not None), None)
        if streams.audio and audio is None:
            self.notes.append("the audio stream names no codec that can be decoded: it is ignored")
        return video, audio

    def _describe(self, network: bool) -> MediaInfo:
        container, video, audio = self._container, self._video, self._audio
        rate = video.average_rate
        if not rate or rate < MIN_AVERAGE_FPS:
            rate = video.guessed_rate or rate
        epoch = time.time() if network else _creation_epoch(dict(container.metadata))
        return MediaInfo(
            source=self.source,
            container=container.format.name,
            is_stream=network,
            video_codec=video.codec_context.name,
            width=video.codec_context.width,
            height=video.codec_context.height,
            fps=float(rate) if rate else None,
            audio_codec=audio.codec_context.name if audio else None,
            audio_rate=audio.codec_context.sample_rate if audio else None,
            audio_channels=audio.codec_context.channels if audio else None,
            duration_s=container.duration / av.time_base if container.duration else None,
            capture_epoch=epoch,
        )

    @property
    def has_audio(self) -> bool:
        return self._audio is not None

    def _packets(self) -> Iterator[av.Packet]:
        streams = [s for s in (self._video, self._audio) if s is not None]
        demuxer = self._container.demux(*streams)
        unknown = 0
        while True:
            try:
                packet = next(demuxer)
            except StopIteration:
                break
            except (av.FFmpegError, OSError) as error:
                self.end_reason = f"reading stopped early: {_reason(error)}"
                break
            except IndexError:
                # A packet of a stream that appeared after opening (a damaged MPEG-TS PID): PyAV's demuxer
                # fails on it and ends; a new one reads on from the next packet.
                unknown += 1
                demuxer = self._container.demux(*streams)
                continue
            yield packet
        if unknown:
            self.notes.append(f"{unknown} packets of streams that appeared mid-file were skipped")

    def _decode(self, packet: av.Packet) -> list[av.AudioFrame | av.VideoFrame]:
        try:
            return packet.decode()
        except (av.FFmpegError, ValueError) as error:
            self.decode_errors += 1
            self.first_error = self.first_error or _reason(error)
            return []

    def events(self) -> Iterator[VideoSample | AudioChunk]:
        """Decoded video frames and resampled audio, in the order the container stores them."""
        audio = _AudioTimeline()
        last_video_time: float | None = None
        frame_step = 1.0 / (self.info.fps or 25.0)
        for packet in self._packets():
            for frame in self._decode(packet):
                if isinstance(frame, av.VideoFrame):
                    t = frame.time if frame.time is not None else (last_video_time or 0.0) + frame_step
                    last_video_time = t
                    yield VideoSample(t, frame)
                else:
                    yield from audio.push(frame)
        yield from audio.flush()
        if audio.format_changes:
            self.notes.append(f"the audio format (rate, channels or sample format) changed {audio.format_changes}"
                              " times mid-stream; each part was resampled on its own")

    def close(self) -> None:
        self._container.close()

    def __exit__(self, *_: object) -> None:
        self.close()


class _AudioTimeline:
    """Resamples decoded audio to 44.1 kHz mono, restarting the resampler at every timestamp jump and
    every change of format (a damaged MP3 frame can carry another sample rate; a resampler takes one).

    Output chunk times are derived from the start of each continuous run plus the samples produced,
    so resampler latency never shifts audio against video.
    """

    def __init__(self) -> None:
        self._resampler: av.AudioResampler | None = None
        self._format: tuple[str, int, str] | None = None  # layout, rate and sample format of the run
        self._run_start = 0.0
        self._consumed_s = 0.0  # input seconds pushed into the current run
        self._produced = 0  # output samples emitted for the current run
        self.format_changes = 0

    def push(self, frame: av.AudioFrame) -> Iterator[AudioChunk]:
        expected = self._run_start + self._consumed_s
        t = frame.time if frame.time is not None else expected
        jumped = abs(t - expected) > AUDIO_JUMP_TOLERANCE_S
        audio_format = (frame.layout.name, frame.sample_rate, frame.format.name)
        changed = self._format is not None and audio_format != self._format
        if self._resampler is None or jumped or changed:
            yield from self.flush()
            self.format_changes += changed
            # packed output: PyAV finds planar planes by walking extended_data to a null pointer; with 8
            # planes (AV_NUM_DATA_POINTERS) there is none, it reads linesize as pointers and crashes
            self._resampler = av.AudioResampler(format="flt", layout=frame.layout.name, rate=SAMPLE_RATE)
            self._format, self._run_start, self._consumed_s, self._produced = audio_format, t, 0.0, 0
        self._consumed_s += frame.samples / frame.sample_rate
        frame.pts = None  # times are tracked here; the resampler must not reorder or pad by pts
        yield from self._emit(self._resampler.resample(frame))

    def flush(self) -> Iterator[AudioChunk]:
        if self._resampler is not None:
            yield from self._emit(self._resampler.resample(None))
            self._resampler = None

    def _emit(self, frames: list[av.AudioFrame]) -> Iterator[AudioChunk]:
        for out in frames:
            interleaved = out.to_ndarray().reshape(-1, out.layout.nb_channels)
            samples = interleaved.astype(np.float32).mean(axis=1)  # mean of channels, as librosa
            if samples.size:
                yield AudioChunk(self._run_start + self._produced / SAMPLE_RATE, samples)
                self._produced += samples.size

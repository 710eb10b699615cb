"""Cutting decoded media into the paper's 1-second clips (EPG section 4.1).

Clip boundaries lie on whole seconds of capture time when the capture time is known (so that cameras
filming the same scene cut the same seconds), otherwise on whole seconds of the media timeline. In each
clip, frames are sampled by timestamp at the middle of each 1/5 s slot (0.1, 0.3, ..., 0.9 s): the frame
on screen at that instant, which makes sampling independent of the source frame rate (25, 29.97, 30 fps or
variable). A clip needs all five frames; audio that covers less than ``MIN_AUDIO_COVERAGE`` of the second
gives a clip with ``has_audio = False``. Clips that cannot be made are reported with their reason; an input
that gives no clip at all is refused with :class:`~avsurv.errors.NoClipError`, whose kind says why.

Memory stays bounded whatever the timestamps say: a forward jump longer than ``MAX_GAP_S`` is not walked
second by second, audio far ahead of the video is dropped, and frames whose timestamps go back are dropped;
each is noted in the report. A frame after a gap is held until the next one: a lone frame ahead of the frames
on both sides of it (one damaged timestamp) is dropped rather than taken as a gap or a jump.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from avsurv.clipids import clip_id
from avsurv.constants import (
    CLIP_SECONDS,
    FRAME_HEIGHT,
    FRAME_WIDTH,
    FRAMES_PER_CLIP,
    SAMPLE_RATE,
    VIDEO_FPS,
)
from avsurv.errors import NoClipError
from avsurv.media.decode import AudioChunk, MediaInfo, MediaReader, VideoSample
from avsurv.media.logmel import log_mel
from avsurv.media.privacy import PrivacyFilter

GAP_MIN_S = 0.3
"""A sampled instant whose latest frame is older than max(GAP_MIN_S, 2 frame periods) lies in a video gap:
variable-frame-rate sources may hold a frame a little longer, a frozen picture for longer is not video."""

MIN_AUDIO_COVERAGE = 0.9
"""Share of a clip's second that decoded audio must cover for the clip to count as having audio."""

MIN_AUDIO_ONLY_COVERAGE = 0.1
"""A second with no video and less audio than this is codec padding, not a skipped second of recording."""

AUDIO_LAG_LIMIT_S = 5.0
"""How far video may run ahead of audio before clips are finished without waiting for their audio."""

MAX_GAP_S = 60.0
"""The longest gap in the video timestamps that is bridged second by second, each second skipped with its
reason. A longer forward jump (a camera that was off for a while, a damaged or wrapped timestamp) ends the
clips open before it as if the video had ended there and resumes cutting at the new time, with one note:
walking it would hold one open clip (about 220 kB) per second of the gap, gigabytes for an hour. For the same
reason audio more than this far ahead of the video is dropped, with a note."""

CLIP_SAMPLES = int(SAMPLE_RATE * CLIP_SECONDS)

NO_VIDEO_FRAME = "no decodable video frame"
TOO_SHORT = "shorter than one clip"
NO_WHOLE_SECOND = "no whole second of video"
STUCK_TIMESTAMPS = "timestamps do not advance"
NO_CLIP_KINDS = (NO_VIDEO_FRAME, TOO_SHORT, NO_WHOLE_SECOND, STUCK_TIMESTAMPS)
"""Why an input that was read gave no clip (:attr:`avsurv.errors.NoClipError.kind`)."""


@dataclass(frozen=True)
class Clip:
    """One second of synchronised video and audio from one camera."""

    camera_id: str
    start: float
    """Media time of the clip's first instant, in seconds."""
    capture_time: float | None
    """Epoch seconds of the clip's first instant, when the capture time is known."""
    source: str
    has_audio: bool
    frames: np.ndarray
    """uint8 [5, 224, 398, 3]: the sampled frames resized to 398x224, RGB."""
    log_mel: np.ndarray
    """float32 [1, 128, 64] log-mel in dB (silence where audio is missing)."""
    audio: np.ndarray | None = None
    """float32 [44100]: the second's mono samples at 44.1 kHz (zeros where none were decoded); None when the
    source has no audio track or the clip was stored without its samples (evidence export plays silence)."""
    frames_jpeg: tuple[bytes, ...] = ()
    """The frames as JPEG when every one came so (a chunk's frames, encoded once at ingest): stored and
    published as they are; empty when the frames were decoded here."""

    @property
    def clip_id(self) -> str:
        return clip_id(self.camera_id, self.capture_time if self.capture_time is not None else self.start)


@dataclass(frozen=True)
class SkippedClip:
    start: float
    reason: str


@dataclass
class SegmentReport:
    """What happened to every second of an input."""

    source: str
    camera_id: str
    info: MediaInfo | None = None
    clips: int = 0
    clips_without_audio: int = 0
    skipped: list[SkippedClip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"{self.camera_id}: {self.clips} clips from {self.source}"
            f" ({self.clips_without_audio} without audio, {len(self.skipped)} seconds skipped)"
        ]
        lines += [f"  skipped {s.start:.2f} s: {s.reason}" for s in self.skipped[:10]]
        if len(self.skipped) > 10:
            lines.append(f"  ... and {len(self.skipped) - 10} more skipped seconds")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _PendingClip:
    frames: list[np.ndarray | None] = field(default_factory=lambda: [None] * FRAMES_PER_CLIP)
    jpegs: list[bytes] = field(default_factory=lambda: [b""] * FRAMES_PER_CLIP)
    missing_reason: str | None = None
    audio: np.ndarray = field(default_factory=lambda: np.zeros(CLIP_SAMPLES, np.float32))
    covered: np.ndarray = field(default_factory=lambda: np.zeros(CLIP_SAMPLES, bool))


class FrameResizer:
    """Frames to 398x224 RGB via swscale (area averaging keeps small, far objects visible when downscaling); an
    array is taken as already resized. One per stream, used by one thread: it keeps swscale's context from frame
    to frame (``VideoFrame.reformat`` builds a new one for every frame, which cost as much as the resize itself:
    1.0 against 0.5 ms a 640x360 frame), and swscale makes a new one when the input's size or format changes."""

    def __init__(self) -> None:
        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame | np.ndarray) -> np.ndarray:
        if isinstance(frame, np.ndarray):
            return frame
        return self._reformatter.reformat(frame, width=FRAME_WIDTH, height=FRAME_HEIGHT, format="rgb24",
                                          interpolation="AREA").to_ndarray()


class Segmenter:
    """Iterates over the clips of one input, filling :attr:`report` as it goes.

    ``capture_start`` (epoch seconds at media time 0) overrides what the input says; ``max_seconds``
    stops a live stream after that much video; ``on_progress`` receives the media time reached;
    ``privacy`` masks and blurs every frame as the ingest service does (``avsurv.media.privacy``).
    """

    def __init__(
        self,
        source: str | Path,
        camera_id: str | None = None,
        *,
        capture_start: float | None = None,
        max_seconds: float | None = None,
        timeout_s: float = 10.0,
        threads: int = 0,
        on_progress: Callable[[float], None] | None = None,
        privacy: PrivacyFilter | None = None,
    ) -> None:
        self.source = str(source)
        self.camera_id = camera_id or Path(self.source.split("?", 1)[0]).stem or "camera"
        self.report = SegmentReport(self.source, self.camera_id)
        self._capture_start = capture_start
        self._max_seconds = max_seconds
        self._reader_args = {"timeout_s": timeout_s, "threads": threads}
        self._on_progress = on_progress
        self.privacy = privacy

    def __iter__(self) -> Iterator[Clip]:
        with MediaReader(self.source, **self._reader_args) as reader:
            self.report.info = reader.info
            epoch = self._capture_start if self._capture_start is not None else reader.info.capture_epoch
            state = _ClipAssembler(self, epoch, reader.has_audio, reader.info.fps, self.privacy)
            yield from state.run(reader)
            self._note_reader_problems(reader)
            state.note_dropped()
            if not self.report.clips:  # the report's skipped seconds alone would leave a caller with nothing
                raise self._no_clip(state, reader)

    def _no_clip(self, state: _ClipAssembler, reader: MediaReader) -> NoClipError:
        """Why no clip was made, with what the reader met on the way (damage it skipped, an early end)."""
        kind, reason = state.no_clip_reason()
        declared = reader.info.duration_s
        damaged = kind == TOO_SHORT and declared and declared >= CLIP_SECONDS  # not merely a short recording
        context = [f"the container declares {declared:.2f} s"] if damaged else []
        context += [f"first error: {reader.first_error}"] if reader.first_error else []
        context += [reader.end_reason] if reader.end_reason else []
        details = f" ({'; '.join(context)})" if context else ""
        return NoClipError(f"cannot use {self.source!r}: {reason}{details}", kind)

    def _note_reader_problems(self, reader: MediaReader) -> None:
        if reader.decode_errors:
            self.report.notes.append(
                f"{reader.decode_errors} packets could not be decoded and were skipped"
                f" (first: {reader.first_error})"
            )
        if reader.end_reason:
            self.report.notes.append(reader.end_reason)
        if not reader.has_audio:
            self.report.notes.append("the input has no audio track: every clip has has_audio = False")
        self.report.notes.extend(reader.notes)
        if self.privacy is not None:
            self.report.notes.append(self.privacy.summary())


class ClipFeed:
    """Segmentation of decoded events that arrive piece by piece (the segmentation service, fed by the
    ingest service's chunks): the same grid, sampling and checks as :class:`Segmenter`."""

    def __init__(self, camera_id: str, source: str, *, capture_epoch: float | None, fps: float | None,
                 has_audio: bool) -> None:
        self.camera_id, self.source = camera_id, source
        self.report = SegmentReport(source, camera_id)
        self._max_seconds: float | None = None
        self._on_progress: Callable[[float], None] | None = None
        self._state = _ClipAssembler(self, capture_epoch, has_audio, fps)

    def push(self, event: VideoSample | AudioChunk) -> list[Clip]:
        """Feeds one event (in decode order) and returns the clips it completed."""
        if isinstance(event, VideoSample):
            self._state.on_video(event)
        else:
            self._state.on_audio(event)
        return list(self._state.finish_ready(final=False))

    def open_since(self) -> float | None:
        """Media time of the oldest clip still waiting for data (None: no clip is open)."""
        return self._state.clip_start(min(self._state.pending)) if self._state.pending else None

    def end(self) -> list[Clip]:
        """The input ended: finishes every open clip."""
        self._state.on_video_end()
        self._state.note_dropped()
        return list(self._state.finish_ready(final=True))

    def no_clip_reason(self) -> tuple[str, str]:
        """For a feed that made no clip: its kind (one of NO_CLIP_KINDS) and why, in words for people."""
        return self._state.no_clip_reason()


def grid_phase(capture_epoch: float | None) -> float:
    """Offset of the clip grid from media time 0, so that clip boundaries fall on whole capture seconds."""
    return (-capture_epoch) % 1.0 if capture_epoch is not None else 0.0


def shown_at_a_sampling_instant(time: float, next_time: float, phase: float) -> bool:
    """Whether a frame on screen from ``time`` until ``next_time`` is the one some clip samples (the
    instants lie at phase + (k + 0.5) / VIDEO_FPS); ingest sends only those frames."""
    first_slot = math.ceil((time - phase) * VIDEO_FPS - 0.5)
    return phase + (first_slot + 0.5) / VIDEO_FPS < next_time


class _ClipAssembler:
    """The streaming state of one segmentation run: open clips, the frame on screen, audio written."""

    def __init__(self, owner: Segmenter | ClipFeed, epoch: float | None, has_audio_stream: bool,
                 fps: float | None, privacy: PrivacyFilter | None = None) -> None:
        self.owner, self.privacy = owner, privacy  # ClipFeed's frames come from ingest, already filtered
        self.epoch = epoch
        self.phase = grid_phase(epoch)
        self.has_audio_stream = has_audio_stream
        self.pending: dict[int, _PendingClip] = {}
        self.next_clip = -math.inf  # clips before this index are finished; late audio for them is dropped
        self.next_slot: int | None = None  # global index of the next frame slot to fill
        self.on_screen: VideoSample | None = None
        self.on_screen_rgb: np.ndarray | None = None
        self.resize = FrameResizer()
        self.max_frame_age = max(GAP_MIN_S, 2.0 / fps) if fps else GAP_MIN_S
        self.frame_period = 1.0 / fps if fps else 0.0
        self.video_time = -math.inf
        self.audio_time = -math.inf
        self.frames_back = 0  # video frames dropped because their timestamps went back or repeated
        self.first_back = ""
        self.early_audio_s = 0.0  # audio dropped for lying more than MAX_GAP_S ahead of the video
        self.held: VideoSample | None = None  # a frame after a gap, until the next one confirms the gap
        self.outliers = 0  # frames dropped for lying ahead of the frames before and after them
        self.first_outlier = ""
        self.frames_taken = 0
        self.video_seconds = 0.0  # time some frame was on screen, gaps left out

    # -- the grid -------------------------------------------------------------------------------
    def clip_index(self, t: float) -> int:
        return math.floor((t - self.phase) / CLIP_SECONDS)

    def clip_start(self, index: int) -> float:
        return self.phase + index * CLIP_SECONDS

    def slot_time(self, slot: int) -> float:
        return self.phase + (slot + 0.5) / VIDEO_FPS

    def clip(self, index: int) -> _PendingClip:
        if index not in self.pending:
            self.pending[index] = _PendingClip()
        return self.pending[index]

    # -- the run --------------------------------------------------------------------------------
    def run(self, reader: MediaReader) -> Iterator[Clip]:
        first_video: float | None = None
        for event in reader.events():
            if isinstance(event, VideoSample):
                first_video = event.time if first_video is None else first_video
                if self.owner._max_seconds is not None and event.time >= first_video + self.owner._max_seconds:
                    break
                self.on_video(event)
            else:
                self.on_audio(event)
            yield from self.finish_ready(final=False)
        self.on_video_end()
        yield from self.finish_ready(final=True)

    def on_video(self, sample: VideoSample) -> None:
        held, self.held = self.held, None
        if held is not None and sample.time > held.time:  # the video goes on after it: a real gap or jump
            self.take(held)
        elif held is not None:  # one damaged timestamp (a bit flip in a PTS): the video goes on from before it
            self.outliers += 1
            between = f"{held.time:.2f} s between {self.video_time:.2f} s and {sample.time:.2f} s"
            self.first_outlier = self.first_outlier or between
        if sample.time <= self.video_time:  # a repeated or backwards timestamp from a damaged stream
            self.frames_back += 1
            self.first_back = self.first_back or f"{sample.time:.2f} s after {self.video_time:.2f} s"
            return
        if self.next_slot is not None and sample.time - self.video_time > self.max_frame_age:
            self.held = sample
            return
        self.take(sample)

    def take(self, sample: VideoSample) -> None:
        """Puts ``sample`` on screen, filling the frame slots up to its time."""
        if self.next_slot is not None and sample.time - self.video_time > MAX_GAP_S:
            self.jump(sample.time)
        if self.on_screen is not None:
            step = sample.time - self.on_screen.time
            self.video_seconds += step if step <= self.max_frame_age else self.frame_period
        self.frames_taken += 1
        if self.next_slot is None:
            self.start_video(sample.time)
        assert self.next_slot is not None
        while self.slot_time(self.next_slot) < sample.time:
            self.fill_slot(self.next_slot, gap_until=sample.time)
            self.next_slot += 1
        self.on_screen, self.on_screen_rgb, self.video_time = sample, None, sample.time

    def jump(self, t: float) -> None:
        """Resumes cutting at ``t`` after a gap too long to walk: the clips before it end as at the end of
        the video, and the seconds between are neither clips nor skipped seconds."""
        self.owner.report.notes.append(
            f"video timestamps jump from {self.video_time:.2f} s to {t:.2f} s, more than {MAX_GAP_S:g} s:"
            " the seconds between have no video and are not listed one by one")
        self.on_video_end()
        self.next_slot, self.on_screen, self.on_screen_rgb = None, None, None

    def start_video(self, t: float) -> None:
        first_index = self.clip_index(t)
        self.next_slot = math.ceil((t - self.phase) * VIDEO_FPS - 0.5)
        if self.next_slot > first_index * FRAMES_PER_CLIP:
            self.clip(first_index).missing_reason = f"video starts at {t:.2f} s, inside this clip"

    def fill_slot(self, slot: int, gap_until: float | None) -> None:
        pending = self.clip(slot // FRAMES_PER_CLIP)
        shown = self.on_screen
        if shown is None or self.slot_time(slot) - shown.time > self.max_frame_age:
            if pending.missing_reason is None:
                after = f"{shown.time:.2f} s" if shown else "the start"
                until = f"{gap_until:.2f} s" if gap_until is not None else "the end"
                pending.missing_reason = f"video gap: no frame from {after} to {until}"
            return
        if self.on_screen_rgb is None:
            self.on_screen_rgb = self.resize(shown.frame)
            if self.privacy is not None:
                self.on_screen_rgb = self.privacy(self.on_screen_rgb)
        pending.frames[slot % FRAMES_PER_CLIP] = self.on_screen_rgb
        pending.jpegs[slot % FRAMES_PER_CLIP] = shown.jpeg if self.privacy is None else b""

    def on_video_end(self) -> None:
        if self.held is not None:  # nothing came after it to tell a gap from a damaged timestamp: a gap
            held, self.held = self.held, None
            self.take(held)
        if self.on_screen is None or self.next_slot is None:
            return
        self.video_seconds += self.frame_period
        shown_until = self.on_screen.time + self.frame_period  # the last frame stays on screen one period
        while self.slot_time(self.next_slot) < shown_until:
            self.fill_slot(self.next_slot, gap_until=None)
            self.next_slot += 1
        last_clip = self.next_slot // FRAMES_PER_CLIP
        if self.next_slot % FRAMES_PER_CLIP:
            self.clip(last_clip).missing_reason = f"video ends at {self.on_screen.time:.2f} s, inside this clip"

    def on_audio(self, chunk: AudioChunk) -> None:
        video_time = self.held.time if self.held is not None else self.video_time  # the held frame is the newest
        if chunk.time - video_time > MAX_GAP_S and self.next_slot is not None:
            self.early_audio_s += chunk.samples.size / SAMPLE_RATE  # its clips would wait for video for ever
            return
        first = round((chunk.time - self.phase) * SAMPLE_RATE)
        end = first + chunk.samples.size
        for index in range(first // CLIP_SAMPLES, (end - 1) // CLIP_SAMPLES + 1):
            if index < self.next_clip:
                continue
            base = index * CLIP_SAMPLES
            lo, hi = max(first, base), min(end, base + CLIP_SAMPLES)
            pending = self.clip(index)
            pending.audio[lo - base : hi - base] = chunk.samples[lo - first : hi - first]
            pending.covered[lo - base : hi - base] = True
        self.audio_time = max(self.audio_time, chunk.time + chunk.samples.size / SAMPLE_RATE)

    def note_dropped(self) -> None:
        """Notes the video frames and audio that were dropped for their timestamps."""
        notes = self.owner.report.notes
        if self.frames_back:
            notes.append(f"{self.frames_back} video frames were dropped because their timestamps went back or"
                         f" repeated (first: {self.first_back})")
        if self.outliers:
            notes.append(f"{self.outliers} video frames were dropped because their timestamps lay ahead of the"
                         f" frames before and after them (first: {self.first_outlier})")
        if self.early_audio_s:
            notes.append(f"{self.early_audio_s:.1f} s of audio was dropped: it lay more than {MAX_GAP_S:g} s"
                         " ahead of the video")

    def no_clip_reason(self) -> tuple[str, str]:
        """For a run that made no clip: its kind (one of NO_CLIP_KINDS) and why, in words for people."""
        if not self.frames_taken:
            return NO_VIDEO_FRAME, "no video frame could be decoded"
        dropped = self.frames_back + self.outliers
        if dropped >= self.frames_taken:
            return STUCK_TIMESTAMPS, (f"its video timestamps do not advance: {dropped} of {dropped + self.frames_taken}"
                                      " frames went back, repeated or lay ahead of their neighbours")
        if self.video_seconds < CLIP_SECONDS:
            return TOO_SHORT, f"its video lasts only {self.video_seconds:.2f} s, less than one {CLIP_SECONDS:g} s clip"
        skipped = self.owner.report.skipped
        first = f": {skipped[0].start:.2f} s, {skipped[0].reason}" if skipped else ""
        return NO_WHOLE_SECOND, (f"no second is covered by video throughout ({self.video_seconds:.2f} s of video"
                                 f" in pieces; {len(skipped)} seconds skipped{first})")

    # -- emitting -------------------------------------------------------------------------------
    def ready(self, index: int) -> bool:
        if self.next_slot is None or self.next_slot < (index + 1) * FRAMES_PER_CLIP:
            return False
        end = self.clip_start(index + 1)
        audio_done = not self.has_audio_stream or self.audio_time >= end
        return audio_done or self.video_time - self.audio_time > AUDIO_LAG_LIMIT_S

    def finish_ready(self, final: bool) -> Iterator[Clip]:
        for index in sorted(self.pending):
            if not final and not self.ready(index):
                return
            clip = self.finish(index, self.pending.pop(index))
            self.next_clip = index + 1
            if clip is not None:
                yield clip

    def finish(self, index: int, pending: _PendingClip) -> Clip | None:
        report, start = self.owner.report, self.clip_start(index)
        coverage = float(pending.covered.mean())
        if any(frame is None for frame in pending.frames):
            video_less = all(frame is None for frame in pending.frames)
            if self.next_slot is not None and not (video_less and coverage < MIN_AUDIO_ONLY_COVERAGE):
                reason = pending.missing_reason or "audio without video in this second"
                report.skipped.append(SkippedClip(start, reason))
            return None
        has_audio = self.has_audio_stream and coverage >= MIN_AUDIO_COVERAGE
        if self.has_audio_stream and not has_audio:
            report.notes.append(f"{start:.2f} s: audio covers only {coverage:.0%} of the second")
        report.clips += 1
        report.clips_without_audio += not has_audio
        if self.owner._on_progress is not None:
            self.owner._on_progress(start + CLIP_SECONDS)
        return Clip(
            camera_id=self.owner.camera_id,
            start=start,
            capture_time=self.epoch + start if self.epoch is not None else None,
            source=self.owner.source,
            has_audio=has_audio,
            frames=np.stack(pending.frames),
            log_mel=log_mel(pending.audio),
            audio=pending.audio if self.has_audio_stream else None,
            frames_jpeg=tuple(pending.jpegs) if all(pending.jpegs) else (),
        )

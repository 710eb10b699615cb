"""Ingest: one reader thread per camera decodes its source and publishes chunks (``avsurv.chunks.v1``).

A chunk holds ``chunk_seconds`` of media: the frames on screen at the clip sampling instants (5 per
second, resized to 398x224, the camera's privacy masks and blur applied, JPEG) and all the audio (44.1 kHz
mono float PCM). Network sources reconnect with exponential back-off after an error or a stall; every
connection is a new session, so the segmenter never joins the timelines of two connections. Files end as
"finished".
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import numpy as np

from avsurv.adapters.bus import Bus
from avsurv.constants import SAMPLE_RATE
from avsurv.errors import MediaError
from avsurv.media.clipstore import encode_jpeg
from avsurv.media.decode import AudioChunk, MediaReader, VideoSample, is_network_source
from avsurv.media.privacy import PrivacyFilter, parse_privacy, privacy_filter
from avsurv.media.segment import FrameResizer, grid_phase, shown_at_a_sampling_instant
from avsurv.platform.config import Settings, without_credentials
from avsurv.platform.messages import CHUNKS, header
from avsurv.platform.registry import CameraState, Registry
from avsurv.platform.runtime import Ports, ServiceParts
from avsurv.platform.worker import Worker, log
from avsurv.v1 import messages_pb2 as pb

AUDIO_JOIN_S = 0.5 / SAMPLE_RATE
"""Audio that starts within half a sample of where the previous piece ends continues it."""


class ChunkBuilder:
    """Collects one session's events into chunks, keeping only the frames the clip grid samples."""

    def __init__(self, site: str, camera_id: str, source: str, capture_epoch: float, fps: float | None,
                 has_audio: bool, chunk_seconds: float, privacy: PrivacyFilter | None = None) -> None:
        self.site, self.camera_id, self.source = site, camera_id, without_credentials(source)
        self.capture_epoch, self.fps, self.has_audio = capture_epoch, fps or 0.0, has_audio
        self.chunk_seconds, self.privacy = chunk_seconds, privacy
        self.resize = FrameResizer()
        self.session = uuid.uuid4().hex[:12]
        self.sequence = 0
        self.phase = grid_phase(capture_epoch)
        self._held: VideoSample | None = None  # the frame on screen, until the next one shows
        self._frames: list[pb.Frame] = []
        self._audio: list[tuple[float, list[np.ndarray]]] = []  # runs of contiguous audio: start, samples
        self._audio_end = -np.inf  # where the last run ends, media seconds
        self._first_time: float | None = None
        self.last_time = -np.inf

    def _mark(self, t: float) -> None:
        self._first_time = t if self._first_time is None else self._first_time
        self.last_time = max(self.last_time, t)

    def _keep(self, sample: VideoSample) -> None:
        frame = self.resize(sample.frame)
        if self.privacy is not None:  # the only place frames leave ingest: nothing unmasked is published
            frame = self.privacy(frame)
        self._frames.append(pb.Frame(media_time=sample.time, jpeg=encode_jpeg(frame)))

    def add(self, event: VideoSample | AudioChunk) -> None:
        self._mark(event.time)
        if isinstance(event, AudioChunk):
            # The decoder's ~47 pieces a second that follow each other become one piece: a chunk carries a
            # few pieces instead of dozens for segmentation to check and place one by one.
            if not self._audio or abs(event.time - self._audio_end) > AUDIO_JOIN_S:
                self._audio.append((event.time, []))
            self._audio[-1][1].append(event.samples)
            self._audio_end = event.time + event.samples.size / SAMPLE_RATE
            return
        held = self._held
        if held is not None and event.time > held.time and shown_at_a_sampling_instant(held.time, event.time,
                                                                                        self.phase):
            self._keep(held)
        if held is None or event.time > held.time:
            self._held = event

    def full(self) -> bool:
        return self._first_time is not None and self.last_time - self._first_time >= self.chunk_seconds

    def take(self, end_of_stream: bool = False) -> pb.Chunk:
        if end_of_stream and self._held is not None:
            self._keep(self._held)  # the last frame stays on screen one frame period
            self._held = None
        first = self._first_time if self._first_time is not None else 0.0
        chunk = pb.Chunk(
            header=header(self.site, self.camera_id, capture_time=self.capture_epoch + first),
            session=self.session, sequence=self.sequence, capture_epoch=self.capture_epoch, fps=self.fps,
            has_audio=self.has_audio, frames=self._frames, end_of_stream=end_of_stream, source=self.source,
            audio=[pb.AudioPiece(media_time=start, pcm_f32le=np.concatenate(run).astype("<f4", copy=False).tobytes())
                   for start, run in self._audio],
        )
        self.sequence += 1
        self._frames, self._audio, self._first_time = [], [], None
        return chunk


class CameraIngest(threading.Thread):
    """Reads one camera until stopped (or until its file ends), reporting its state."""

    def __init__(self, camera_id: str, source: str, bus: Bus, site: str, *, chunk_seconds: float,
                 stall_timeout_s: float, reconnect_max_s: float, realtime: bool,
                 report: Callable[[CameraState], None], privacy: PrivacyFilter | None = None) -> None:
        super().__init__(name=f"ingest-{camera_id}", daemon=True)
        self.camera_id, self.source, self.bus, self.site = camera_id, source, bus, site
        self.chunk_seconds, self.stall_timeout_s, self.reconnect_max_s = chunk_seconds, stall_timeout_s, reconnect_max_s
        self.realtime, self.privacy = realtime, privacy
        self.state = CameraState(camera_id, without_credentials(source))
        self._report = report
        self.stopping = threading.Event()
        self.chunks_published = 0

    def _set(self, status: str, detail: str = "") -> None:
        self.state.status, self.state.detail = status, detail
        self._report_state()

    def _report_state(self) -> None:
        """Reports the camera's state; a state store that is away costs a report, never the camera's reading
        (the next report carries the state whole)."""
        try:
            self._report(self.state)
        except Exception as error:  # redis-py's errors and any other store's
            log.warning("ingest %s: camera state not reported (%s); reading on", self.camera_id, error)

    def run(self) -> None:
        network = is_network_source(self.source)
        backoff = 1.0
        while not self.stopping.is_set():
            try:
                ended = self._session()
            except MediaError as error:
                ended = str(error)
                if not network:
                    self._set("failed", ended)
                    return
            if not network:
                if not self.stopping.is_set():
                    self._set("finished", ended or "end of file")
                return
            if self.stopping.is_set():
                break
            self._set("reconnecting", f"{ended or 'stream ended'}; retrying in {backoff:.0f} s")
            self.stopping.wait(backoff)
            backoff = min(2 * backoff, self.reconnect_max_s)
        self._set("stopped")

    def _session(self) -> str:
        """One connection: reads until the end, an error or a stop; returns why it ended."""
        with MediaReader(self.source, timeout_s=self.stall_timeout_s) as reader:
            realtime = self.realtime and not reader.info.is_stream
            epoch = time.time() if realtime or reader.info.capture_epoch is None else reader.info.capture_epoch
            builder = ChunkBuilder(self.site, self.camera_id, self.source, epoch, reader.info.fps,
                                   reader.has_audio, self.chunk_seconds, self.privacy)
            self._set("streaming")
            started = time.monotonic()
            for event in reader.events():
                if self.stopping.is_set():
                    break
                if realtime:  # pace a file like a live camera: media time t is sent at start + t
                    self.stopping.wait(max(0.0, event.time - (time.monotonic() - started)))
                builder.add(event)
                self.state.last_capture_time = epoch + builder.last_time
                if builder.full():
                    self._publish(builder.take())
            self._publish(builder.take(end_of_stream=True))
            return reader.end_reason or ""

    def _publish(self, chunk: pb.Chunk) -> None:
        self.bus.publish(CHUNKS, self.camera_id, chunk.SerializeToString())
        self.bus.flush()
        self.chunks_published += 1
        self._report_state()


class IngestService(Worker):
    """Keeps one :class:`CameraIngest` per wanted camera: the configured ones plus those added through the
    control API (the registry), started and stopped as that set changes."""

    name_ = "ingest"

    def __init__(self, bus: Bus, registry: Registry, settings: Settings) -> None:
        super().__init__()
        self.bus, self.registry, self.settings = bus, registry, settings
        self.readers: dict[str, CameraIngest] = {}
        self.privacy = parse_privacy(settings.privacy)
        for camera_id, source in settings.cameras.items():
            registry.want_camera(camera_id, source)

    def _start(self, camera_id: str, source: str) -> None:
        s = self.settings
        reader = CameraIngest(camera_id, source, self.bus, s.site, chunk_seconds=s.chunk_seconds,
                              stall_timeout_s=s.stall_timeout_s, reconnect_max_s=s.reconnect_max_s,
                              realtime=s.realtime_files, report=self.registry.report_camera,
                              privacy=privacy_filter(self.privacy, camera_id))
        self.readers[camera_id] = reader
        reader.start()
        log.info("ingest: camera %s started (%s)", camera_id, reader.state.source)

    def step(self) -> None:
        wanted = self.registry.wanted_cameras()
        for camera_id, reader in list(self.readers.items()):
            if wanted.get(camera_id) != reader.source:  # removed, or its source changed
                reader.stopping.set()
                reader.join(self.settings.stall_timeout_s + 5)
                del self.readers[camera_id]
                if camera_id not in wanted:
                    self.registry.forget_camera_status(camera_id)
                log.info("ingest: camera %s stopped", camera_id)
        for camera_id, source in wanted.items():
            if camera_id not in self.readers:
                self._start(camera_id, source)
        self.stopping.wait(1.0)

    def close(self) -> None:
        for reader in self.readers.values():
            reader.stopping.set()
        for reader in self.readers.values():
            reader.join(self.settings.stall_timeout_s + 5)

    def finished(self) -> bool:
        """Every camera read to its end (files only)."""
        return bool(self.readers) and all(r.state.status in ("finished", "failed") for r in self.readers.values())

    def drained(self) -> bool:
        return self.finished()


def build(ports: Ports, settings: Settings) -> ServiceParts:
    return ServiceParts(worker=IngestService(ports.bus, ports.registry, settings))

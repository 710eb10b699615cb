"""Segmentation: chunks in, 1-second clips out (``avsurv.clips.v1``), each stored in the clip archive first.

One :class:`ClipFeed` per camera session continues across chunks. A chunk's offset is committed only
once no clip that needs its data is still open, so a restart replays enough chunks to rebuild every
clip (replayed clips have the same id and overwrite nothing). A step that fails (the clip store or the
broker away) starts over the same way: the sessions are dropped and the group hands back every uncommitted
chunk, instead of the rest of the failed poll waiting for the next restart.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from avsurv.adapters.bus import Bus, CommitTracker, Message, Subscription, leave
from avsurv.media.clipstore import decode_jpeg
from avsurv.media.decode import AudioChunk, VideoSample
from avsurv.media.segment import ClipFeed
from avsurv.platform.archive import ClipArchive
from avsurv.platform.config import Settings
from avsurv.platform.messages import CHUNKS, CLIPS, InvalidMessage, clip_to_message, dead_letter, parse
from avsurv.platform.runtime import Ports, ServiceParts
from avsurv.platform.worker import DEAD_LETTERED, PROCESSED, Worker, log
from avsurv.v1 import messages_pb2 as pb


def chunk_events(chunk: pb.Chunk) -> list[VideoSample | AudioChunk]:
    """The chunk's frames and audio as decode events, in media-time order."""
    try:
        video = [VideoSample(f.media_time, decode_jpeg(f.jpeg), f.jpeg) for f in chunk.frames]
    except Exception as error:  # Pillow raises several types for damaged JPEG
        raise InvalidMessage(f"chunk {chunk.session}/{chunk.sequence} has a frame that is not a JPEG") from error
    audio = [AudioChunk(a.media_time, np.frombuffer(a.pcm_f32le, "<f4").astype(np.float32)) for a in chunk.audio]
    return sorted([*video, *audio], key=lambda e: e.time)


class _Session:
    def __init__(self, chunk: pb.Chunk) -> None:
        self.id = chunk.session
        self.feed = ClipFeed(chunk.header.camera_id, chunk.source, capture_epoch=chunk.capture_epoch,
                             fps=chunk.fps or None, has_audio=chunk.has_audio)
        self.unsafe: deque[tuple[Message, float]] = deque()  # processed chunks an open clip still needs


def _report_no_clip(camera: str, session: _Session) -> None:
    """A session that ended without one clip says why (a camera that connects and drops at once, say)."""
    if session.feed.report.clips == 0:
        kind, why = session.feed.no_clip_reason()
        log.warning("segmentation: %s session %s ended with no clip (%s): %s", camera, session.id, kind, why)


class SegmentationService(Worker):
    name_ = "segmentation"

    def __init__(self, bus: Bus, archive: ClipArchive, site: str) -> None:
        super().__init__()
        self.bus, self.archive, self.site = bus, archive, site
        self.subscription: Subscription | None = None  # None after a failed step, until the next one rejoins
        self.sessions: dict[str, _Session] = {}
        self._join()
        self.clips_published = 0

    def _join(self) -> None:
        self.subscription = self.bus.subscribe("segmentation", [CHUNKS])
        self.tracker = CommitTracker(self.subscription)

    def start_over(self) -> None:
        """Drops the open sessions (their clips are rebuilt from the chunks that come again) and leaves the
        group: the next step rejoins it and gets every uncommitted chunk again."""
        self.sessions.clear()
        leave(self.subscription)
        self.subscription = None

    def step(self) -> None:
        if self.subscription is None:
            self._join()
        messages = self.subscription.poll(timeout_s=0.5, max_messages=16)
        for message in messages:
            self.tracker.started(message)
        for message in messages:
            self._process(message)

    def _process(self, message: Message) -> None:
        try:
            chunk = parse(pb.Chunk, message.value)
            events = chunk_events(chunk)
        except InvalidMessage as error:
            dead_letter(self.bus, message, str(error), self.name_, self.site)
            DEAD_LETTERED.labels(self.name_).inc()
            self.tracker.done(message)
            return
        camera = chunk.header.camera_id
        session = self.sessions.get(camera)
        clips, ended = [], None
        if session is not None and session.id != chunk.session:  # the camera reconnected
            clips += session.feed.end()
            _report_no_clip(camera, session)
            ended, session = session, None
        if session is None:
            session = self.sessions[camera] = _Session(chunk)
        for event in events:
            clips += session.feed.push(event)
        if chunk.end_of_stream:
            clips += session.feed.end()
            _report_no_clip(camera, session)
        for clip in clips:
            clip_message = clip_to_message(clip, self.site)
            clip_message.media_uri = self.archive.put(clip_message)
            clip_message.ClearField("audio_pcm_s16le")  # for evidence only: the topic's consumers need the log-mel
            self.bus.publish(CLIPS, camera, clip_message.SerializeToString())
        self.bus.flush()  # the clips are durable: now their chunks may be committed
        if ended is not None:
            self._release(ended, everything=True)
        self.clips_published += len(clips)
        PROCESSED.labels(self.name_).inc()
        session.unsafe.append((message, events[-1].time if events else -np.inf))
        self._release(session, everything=chunk.end_of_stream)
        if chunk.end_of_stream:
            del self.sessions[camera]
            log.info("segmentation: %s session %s ended: %s", camera, chunk.session,
                     session.feed.report.summary().splitlines()[0])

    def _release(self, session: _Session, everything: bool) -> None:
        """Marks done the chunks whose data no open clip needs any more."""
        open_since = None if everything else session.feed.open_since()
        while session.unsafe and (open_since is None or session.unsafe[0][1] < open_since):
            self.tracker.done(session.unsafe.popleft()[0])

    def drained(self) -> bool:
        return self.subscription is not None and self.tracker.drained()

    def close(self) -> None:
        if self.subscription is not None:
            self.subscription.close()


def build(ports: Ports, settings: Settings) -> ServiceParts:
    return ServiceParts(worker=SegmentationService(ports.bus, ports.archive, settings.site))

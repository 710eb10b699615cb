"""A clip directory: clips written once by segmentation, read many times by training and embedding.

Every clip container, this one and the platform's clip store (``avsurv.platform.archive.ClipArchive``),
is read through one API, :class:`ClipSource`: its clip ids, and the clips of some ids.

Layout (no pickles anywhere):
- ``clips.jsonl``: one JSON object per clip (clip_id, camera_id, start, capture_time, source, has_audio,
  shard, row), in the order written;
- ``shard-NNNNN.npz``: ``frames_jpeg`` (uint8, the JPEG files of all frames back to back),
  ``frame_offsets`` (int64, [5 * rows + 1]), ``log_mel`` (float32, [rows, 1, 128, 64]) and ``audio_pcm``
  (int16, [rows, 44100]: each second's samples, for evidence; zeros in a row whose record says
  ``audio_samples`` false, and absent from shards written before it was kept);
- ``reports.jsonl``: one segmentation report per input.
Frames are stored as JPEG (quality 90), as on the clips topic: about 10x smaller than raw pixels. Audio is
16-bit PCM (88 kB per clip): enough for listening, while the log-mel, computed from the float samples, is
kept as it was.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from avsurv.constants import FRAMES_PER_CLIP
from avsurv.media.segment import CLIP_SAMPLES, Clip, SegmentReport

JPEG_QUALITY = 90
CLIPS_PER_SHARD = 256


class ClipSource(Protocol):
    """What a trainer, an embedder or retention reads from any clip container."""

    def clip_ids(self, camera_id: str | None = None) -> list[str]:
        """The stored clip ids of every camera or one, each camera's in capture order."""
        ...

    def clips(self, clip_ids: Iterable[str], skip_missing: bool = False) -> Iterator[Clip]:
        """The clips of ``clip_ids`` in that order, read one at a time; an id not stored raises
        :class:`KeyError`, or is left out with ``skip_missing`` (a clip deleted since it was listed)."""
        ...

    def __len__(self) -> int:
        ...


@dataclass(frozen=True)
class ClipRecord:
    clip_id: str
    camera_id: str
    start: float
    capture_time: float | None
    source: str
    has_audio: bool
    shard: int
    row: int
    audio_samples: bool = False
    """The shard keeps the clip's samples (False in directories written before they were kept)."""


def encode_jpeg(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def frames_as_jpeg(clip: Clip) -> list[bytes]:
    """The clip's frames as JPEG files: as ingest encoded them when it did (never twice), else encoded now."""
    return list(clip.frames_jpeg) or [encode_jpeg(frame) for frame in clip.frames]


def decode_jpeg(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] (clipped beyond) as int16."""
    return np.round(np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)


def from_pcm16(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32) / 32767


class ClipWriter(contextlib.AbstractContextManager):
    """Appends clips to a new clip directory; use as a context manager so the last shard is written."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if (self.root / "clips.jsonl").exists():
            raise FileExistsError(f"{self.root} already holds clips; choose an empty directory")
        self.root.mkdir(parents=True, exist_ok=True)
        self._index = (self.root / "clips.jsonl").open("w")
        self._shard = 0
        self._jpegs: list[bytes] = []
        self._mels: list[np.ndarray] = []
        self._audio: list[np.ndarray] = []
        self.count = 0

    def add(self, clip: Clip) -> None:
        record = ClipRecord(
            clip.clip_id, clip.camera_id, clip.start, clip.capture_time, clip.source, clip.has_audio,
            self._shard, len(self._mels), clip.audio is not None,
        )
        self._jpegs += frames_as_jpeg(clip)
        self._mels.append(clip.log_mel)
        self._audio.append(to_pcm16(clip.audio) if clip.audio is not None else np.zeros(CLIP_SAMPLES, np.int16))
        self._index.write(json.dumps(asdict(record)) + "\n")
        self.count += 1
        if len(self._mels) == CLIPS_PER_SHARD:
            self._write_shard()

    def add_report(self, report: SegmentReport) -> None:
        with (self.root / "reports.jsonl").open("a") as reports:
            reports.write(json.dumps(report.to_dict(), default=str) + "\n")

    def _write_shard(self) -> None:
        if not self._mels:
            return
        offsets = np.cumsum([0] + [len(j) for j in self._jpegs], dtype=np.int64)
        np.savez(
            self.root / f"shard-{self._shard:05d}.npz",
            frames_jpeg=np.frombuffer(b"".join(self._jpegs), dtype=np.uint8),
            frame_offsets=offsets,
            log_mel=np.stack(self._mels),
            audio_pcm=np.stack(self._audio),
        )
        self._shard += 1
        self._jpegs, self._mels, self._audio = [], [], []

    def close(self) -> None:
        self._write_shard()
        self._index.close()

    def __exit__(self, *_: object) -> None:
        self.close()


class ClipStore:
    """Reads a clip directory; clips come back as :class:`Clip` objects (frames decoded from JPEG). A
    :class:`ClipSource`; also a sequence of its clips in the order written (two inputs of one camera without
    capture times can give one clip id twice: by id, the first is read)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        index = self.root / "clips.jsonl"
        if not index.is_file():
            raise FileNotFoundError(f"{self.root} is not a clip directory (no clips.jsonl)")
        with index.open() as lines:
            self.records = [ClipRecord(**json.loads(line)) for line in lines if line.strip()]
        self._cached: tuple[int, dict[str, np.ndarray]] | None = None
        self._positions: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def clip_ids(self, camera_id: str | None = None) -> list[str]:
        records = (r for r in self.records if camera_id is None or r.camera_id == camera_id)
        return list(dict.fromkeys(record.clip_id for record in sorted(records, key=_capture_order)))

    def clips(self, clip_ids: Iterable[str], skip_missing: bool = False) -> Iterator[Clip]:
        if self._positions is None:
            self._positions = {}
            for position, record in enumerate(self.records):
                self._positions.setdefault(record.clip_id, position)
        for clip_id in clip_ids:
            position = self._positions.get(clip_id)
            if position is not None:
                yield self[position]
            elif not skip_missing:
                raise KeyError(f"clip {clip_id} is not in {self.root}")

    def _shard(self, shard: int) -> dict[str, np.ndarray]:
        if self._cached is None or self._cached[0] != shard:
            with np.load(self.root / f"shard-{shard:05d}.npz", allow_pickle=False) as data:
                self._cached = (shard, {key: data[key] for key in data.files})
        return self._cached[1]

    def __getitem__(self, position: int) -> Clip:
        record = self.records[position]
        data = self._shard(record.shard)
        offsets, jpeg = data["frame_offsets"], data["frames_jpeg"]
        first = record.row * FRAMES_PER_CLIP
        frames = [
            decode_jpeg(jpeg[offsets[i] : offsets[i + 1]].tobytes()) for i in range(first, first + FRAMES_PER_CLIP)
        ]
        return Clip(
            camera_id=record.camera_id,
            start=record.start,
            capture_time=record.capture_time,
            source=record.source,
            has_audio=record.has_audio,
            frames=np.stack(frames),
            log_mel=data["log_mel"][record.row],
            audio=from_pcm16(data["audio_pcm"][record.row]) if record.audio_samples else None,
        )

    def __iter__(self) -> Iterator[Clip]:
        for position in range(len(self)):
            yield self[position]


def _capture_order(record: ClipRecord) -> tuple[str, float]:
    return record.camera_id, record.start if record.capture_time is None else record.capture_time

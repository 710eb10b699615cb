"""The platform's clip store: one file per clip (its ``avsurv.v1.Clip`` message), written atomically and
named by clip id, so that a clip segmented twice (a replayed chunk) is stored once. The trainer reads it
to train and the embedder to re-embed clips into a new model version."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from avsurv.clipids import check_camera_id, parse_clip_id
from avsurv.clipids import clip_id as make_clip_id
from avsurv.media.segment import Clip
from avsurv.platform.messages import clip_from_message
from avsurv.v1 import messages_pb2 as pb


class ClipArchive:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, clip_id: str) -> Path:
        camera, stamp = parse_clip_id(clip_id)
        try:
            check_camera_id(camera)
        except ValueError as error:
            raise ValueError(f"not a clip id: {clip_id!r}: {error}") from None
        return self.root / camera / f"{stamp:015d}.pb"

    def put(self, message: pb.Clip) -> str:
        """Stores the clip (idempotent) and returns its URI."""
        path = self.path(message.header.clip_id)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = path.with_suffix(f".{os.getpid()}.tmp")
            staging.write_bytes(message.SerializeToString())
            os.replace(staging, path)
        return path.resolve().as_uri()

    def get(self, clip_id: str) -> pb.Clip:
        try:
            return pb.Clip.FromString(self.path(clip_id).read_bytes())
        except FileNotFoundError:
            raise KeyError(f"clip {clip_id} is not in the clip store") from None

    def clip_ids(self, camera_id: str | None = None) -> list[str]:
        """Stored clip ids in capture order (per camera), every camera or one."""
        cameras = [camera_id] if camera_id else sorted(p.name for p in self.root.iterdir() if p.is_dir())
        return [make_clip_id(camera, int(path.stem) / 1000) for camera in cameras
                for path in sorted((self.root / camera).glob("*.pb"))]

    def clips(self, clip_ids: list[str]) -> Iterator[Clip]:
        for clip_id in clip_ids:
            yield clip_from_message(self.get(clip_id))

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.pb"))

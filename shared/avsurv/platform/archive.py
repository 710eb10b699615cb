"""The platform's clip store: one object per clip (its ``avsurv.v1.Clip`` message), written atomically and
named by clip id (``CAMERA/START_MS.pb``), so that a clip segmented twice (a replayed chunk) is stored once.
The trainer reads it to train and the embedder to re-embed clips into a new model version.

Clips and model artifacts live in a directory (the embedded default; a shared volume) or in an
S3-compatible object store (``s3://bucket/prefix``, ``avsurv.adapters.objectstore``), as the settings
``clip_store`` and ``artifacts`` say."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from avsurv.adapters.artifacts import Artifacts, DirectoryArtifacts
from avsurv.adapters.objectstore import ObjectArtifacts, ObjectStore, is_object_store
from avsurv.clipids import check_camera_id, parse_clip_id
from avsurv.clipids import clip_id as make_clip_id
from avsurv.media.segment import Clip
from avsurv.platform.config import Settings
from avsurv.platform.messages import clip_from_message
from avsurv.v1 import messages_pb2 as pb

SUFFIX = ".pb"


def clip_key(clip_id: str) -> str:
    """``CAMERA/START_MS.pb``, the start zero-padded so that names sort in capture order."""
    camera, stamp = parse_clip_id(clip_id)
    try:
        check_camera_id(camera)
    except ValueError as error:
        raise ValueError(f"not a clip id: {clip_id!r}: {error}") from None
    return f"{camera}/{stamp:015d}{SUFFIX}"


class ClipFolder:
    """Clip files under a directory: the same calls as :class:`ObjectStore`'s that the archive makes."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def uri(self, name: str) -> str:
        return (self.root / name).resolve().as_uri()

    def put(self, name: str, data: bytes) -> None:
        path = self.root / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = path.with_suffix(f".{os.getpid()}.tmp")
            staging.write_bytes(data)
            os.replace(staging, path)

    def get(self, name: str) -> bytes:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            raise KeyError(f"no file {name!r}") from None

    def names(self, folder: str = "") -> Iterator[str]:
        yield from sorted(path.relative_to(self.root).as_posix() for path in (self.root / folder).rglob("*")
                          if path.is_file())

    def folders(self, folder: str = "") -> list[str]:
        return sorted(path.name for path in (self.root / folder).iterdir() if path.is_dir())

    def sizes(self, folder: str = "") -> dict[str, int]:
        """Bytes of each file under ``folder`` (every level), by name in name order."""
        found = {}
        for name in self.names(folder):
            with contextlib.suppress(FileNotFoundError):  # deleted since it was listed
                found[name] = (self.root / name).stat().st_size
        return found

    def delete(self, names: Iterable[str]) -> None:
        for name in names:
            (self.root / name).unlink(missing_ok=True)


class ClipArchive:
    """The clip store in a directory (a path or :class:`ClipFolder`) or an :class:`ObjectStore`; read as a
    :class:`~avsurv.media.clipstore.ClipSource`, as a clip directory is."""

    def __init__(self, root: str | Path | ClipFolder | ObjectStore) -> None:
        self.files = root if isinstance(root, ClipFolder | ObjectStore) else ClipFolder(root)

    def path(self, clip_id: str) -> Path:
        """The clip's file in a directory store."""
        if not isinstance(self.files, ClipFolder):
            raise TypeError("the clip store is not a directory")
        return self.files.root / clip_key(clip_id)

    def put(self, message: pb.Clip) -> str:
        """Stores the clip (idempotent) and returns its URI."""
        self.files.put(clip_key(message.header.clip_id), message.SerializeToString())
        return self.uri(message.header.clip_id)

    def uri(self, clip_id: str) -> str:
        """Where the clip is stored (whether or not it is yet)."""
        return self.files.uri(clip_key(clip_id))

    def get(self, clip_id: str) -> pb.Clip:
        try:
            return pb.Clip.FromString(self.files.get(clip_key(clip_id)))
        except KeyError:
            raise KeyError(f"clip {clip_id} is not in the clip store") from None

    def clip_ids(self, camera_id: str | None = None) -> list[str]:
        """Stored clip ids in capture order (per camera), every camera or one."""
        cameras = [camera_id] if camera_id else self.files.folders()
        return [make_clip_id(camera, int(Path(name).stem) / 1000) for camera in cameras
                for name in self.files.names(f"{camera}/") if name.endswith(SUFFIX)]

    def clips(self, clip_ids: Iterable[str], skip_missing: bool = False) -> Iterator[Clip]:
        """The clips, read one at a time; ``skip_missing``: leave out those deleted since they were listed
        (retention runs beside the trainer)."""
        for clip_id in clip_ids:
            try:
                message = self.get(clip_id)
            except KeyError:
                if skip_missing:
                    continue
                raise
            yield clip_from_message(message)

    def cameras(self) -> list[str]:
        return self.files.folders()

    def sizes(self, camera_id: str) -> list[tuple[str, int]]:
        """(clip id, bytes) of the camera's stored clips in capture order."""
        return [(make_clip_id(camera_id, int(Path(name).stem) / 1000), size)
                for name, size in self.files.sizes(f"{camera_id}/").items() if name.endswith(SUFFIX)]

    def delete(self, clip_ids: Iterable[str]) -> None:
        """Deletes the clips (retention); ids not stored are ignored."""
        self.files.delete([clip_key(clip_id) for clip_id in clip_ids])

    def __len__(self) -> int:
        return sum(1 for name in self.files.names() if name.endswith(SUFFIX))


def object_store(settings: Settings, location: str) -> ObjectStore:
    return ObjectStore(location, endpoint=settings.s3_endpoint, region=settings.s3_region,
                       access_key=settings.s3_access_key.get_secret_value(),
                       secret_key=settings.s3_secret_key.get_secret_value())


def open_archive(settings: Settings) -> ClipArchive:
    """The clip store the settings name."""
    if is_object_store(settings.clip_store):
        return ClipArchive(object_store(settings, settings.clip_store))
    return ClipArchive(settings.clip_store_dir)


def open_artifacts(settings: Settings) -> Artifacts:
    """The artifact store the settings name."""
    if is_object_store(settings.artifacts):
        return ObjectArtifacts(object_store(settings, settings.artifacts))
    return DirectoryArtifacts(settings.artifacts_dir)

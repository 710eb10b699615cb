"""The artifact store: model directories (safetensors, config, sha256) addressed by URI.

``DirectoryArtifacts`` keeps them under a root directory (a local disk or a shared volume), the embedded
default; ``avsurv.adapters.objectstore.ObjectArtifacts`` in an S3-compatible object store.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol


class Artifacts(Protocol):
    def put(self, local_dir: Path, name: str) -> str:
        """Stores a copy of ``local_dir`` as ``name`` and returns its URI; storing is atomic."""
        ...

    def fetch(self, uri: str, cache_dir: Path) -> Path:
        """A local directory holding the artifact (may be the stored one itself)."""
        ...

    def exists(self, uri: str) -> bool: ...


def check_artifact_name(name: str) -> str:
    """``name`` if it names one artifact in a store, else ValueError."""
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"artifact name must be a plain name, got {name!r}")
    return name


def place_directory(target: Path, fill: Callable[[Path], object]) -> Path:
    """``target``, filled by ``fill`` in a staging directory beside it and then renamed into place, so that
    a reader never sees a partial artifact. If another writer placed it meanwhile, theirs stays: same name,
    same content."""
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        fill(staging)
    except BaseException:
        shutil.rmtree(staging)
        raise
    try:
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging)
        if not target.is_dir():
            raise
    return target


class DirectoryArtifacts:
    SCHEME = "file://"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, uri: str) -> Path:
        if not uri.startswith(self.SCHEME):
            raise ValueError(f"not a {self.SCHEME} artifact URI: {uri!r}")
        path = Path(uri.removeprefix(self.SCHEME)).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"artifact {uri!r} is outside the store {self.root}")
        return path

    def put(self, local_dir: Path, name: str) -> str:
        target = self.root / check_artifact_name(name)
        if not target.exists():
            place_directory(target, lambda staging: shutil.copytree(local_dir, staging, dirs_exist_ok=True))
        return self.SCHEME + str(target)

    def fetch(self, uri: str, cache_dir: Path) -> Path:
        path = self._path(uri)
        if not path.is_dir():
            raise FileNotFoundError(f"artifact {uri} does not exist")
        return path

    def exists(self, uri: str) -> bool:
        return self._path(uri).is_dir()

"""An S3-compatible object store (AWS S3, MinIO, Ceph RGW, ...) for clips and model artifacts: the same
ports as the directory stores, chosen by a location ``s3://bucket/prefix`` (issue 15 item 4).

An artifact is its files under ``prefix/NAME/`` and, written last, ``prefix/NAME.manifest`` (JSON: each
file's relative path and size). A reader goes by the manifest only, so it never sees a half-stored
artifact: storing is atomic for readers, as the directory store's rename is."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from avsurv.adapters.artifacts import check_artifact_name, place_directory

SCHEME = "s3://"
MANIFEST = ".manifest"
RETRIES = 5
"""Attempts per request (botocore's standard mode: throttling and 5xx back off and retry)."""
MISSING = ("404", "NoSuchKey", "NotFound")


def is_object_store(location: str) -> bool:
    return location.startswith(SCHEME)


class ObjectStore:
    """Objects under one bucket and key prefix. ``endpoint``: the server's URL (empty: AWS S3); empty
    credentials: boto3's own chain (environment, a web identity or instance role)."""

    def __init__(self, url: str, endpoint: str = "", region: str = "", access_key: str = "",
                 secret_key: str = "") -> None:
        import boto3  # only in processes that use an object store
        from botocore.config import Config

        bucket, _, prefix = url.removeprefix(SCHEME).partition("/")
        if not is_object_store(url) or not bucket:
            raise ValueError(f"an object store location is s3://BUCKET[/PREFIX], got {url!r}")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        # Path-style addressing: S3-compatible servers on one host name seldom serve bucket subdomains.
        config = Config(retries={"max_attempts": RETRIES, "mode": "standard"},
                        s3={"addressing_style": "path" if endpoint else "auto"})
        self._client = boto3.client("s3", endpoint_url=endpoint or None, region_name=region or None,
                                    aws_access_key_id=access_key or None, aws_secret_access_key=secret_key or None,
                                    config=config)

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def uri(self, name: str) -> str:
        return f"{SCHEME}{self.bucket}/{self.key(name)}"

    def name(self, uri: str) -> str:
        """The name of ``uri`` in this store; ValueError for a URI outside it."""
        base = self.uri("")
        if not uri.startswith(base) or uri == base:
            raise ValueError(f"object {uri!r} is outside the store {base}")
        return uri.removeprefix(base)

    def put(self, name: str, data: bytes) -> None:
        self._client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data)

    def get(self, name: str) -> bytes:
        """The object's bytes; KeyError when there is none."""
        try:
            return self._client.get_object(Bucket=self.bucket, Key=self.key(name))["Body"].read()
        except self._client.exceptions.ClientError as error:
            raise _missing(error, name) from None

    def exists(self, name: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self.key(name))
        except self._client.exceptions.ClientError as error:
            _missing(error, name)
            return False
        return True

    def upload(self, path: Path, name: str) -> None:
        self._client.upload_file(str(path), self.bucket, self.key(name))

    def download(self, name: str, path: Path) -> None:
        self._client.download_file(self.bucket, self.key(name), str(path))

    def names(self, folder: str = "") -> Iterator[str]:
        """Names of the objects under ``folder`` (every level), in key order."""
        for page in self._pages(folder):
            for item in page.get("Contents", []):
                yield self._relative(item["Key"])

    def sizes(self, folder: str = "") -> dict[str, int]:
        """Bytes of each object under ``folder`` (every level), by name in key order."""
        return {self._relative(item["Key"]): int(item["Size"]) for page in self._pages(folder)
                for item in page.get("Contents", [])}

    def delete(self, names: Iterable[str]) -> None:
        """Deletes the objects (absent ones are ignored), a thousand per request (S3's limit)."""
        keys = [{"Key": self.key(name)} for name in names]
        for start in range(0, len(keys), 1000):
            response = self._client.delete_objects(Bucket=self.bucket,
                                                   Delete={"Objects": keys[start:start + 1000], "Quiet": True})
            if response.get("Errors"):
                raise OSError(f"cannot delete objects from {self.uri('')}: {response['Errors'][:3]}")

    def folders(self, folder: str = "") -> list[str]:
        """Names of the folders directly under ``folder``, in key order (without the trailing '/')."""
        return [self._relative(item["Prefix"]).rstrip("/") for page in self._pages(folder, Delimiter="/")
                for item in page.get("CommonPrefixes", [])]

    def _pages(self, folder: str, **options: Any) -> Iterator[dict[str, Any]]:
        prefix = self.key(folder) if folder else (f"{self.prefix}/" if self.prefix else "")
        paginator = self._client.get_paginator("list_objects_v2")
        yield from paginator.paginate(Bucket=self.bucket, Prefix=prefix, **options)

    def _relative(self, key: str) -> str:
        return key.removeprefix(f"{self.prefix}/") if self.prefix else key


def _missing(error: Exception, name: str) -> KeyError:
    """KeyError for a missing object; any other error (access denied, no bucket) is raised as it is."""
    if getattr(error, "response", {}).get("Error", {}).get("Code") not in MISSING:
        raise error
    return KeyError(f"no object {name!r}")


class ObjectArtifacts:
    """The artifact store (``avsurv.adapters.artifacts.Artifacts``) in an object store."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def put(self, local_dir: Path, name: str) -> str:
        check_artifact_name(name)
        if not self.store.exists(name + MANIFEST):  # same name, same content: stored once
            files = {path.relative_to(local_dir).as_posix(): path.stat().st_size
                     for path in sorted(local_dir.rglob("*")) if path.is_file()}
            for relative in files:
                self.store.upload(local_dir / relative, f"{name}/{relative}")
            self.store.put(name + MANIFEST, json.dumps(files, sort_keys=True).encode())
        return self.store.uri(name)

    def fetch(self, uri: str, cache_dir: Path) -> Path:
        """The artifact downloaded into ``cache_dir/NAME`` once; later calls find it there."""
        name = self._name(uri)
        target = cache_dir / name
        if target.is_dir():
            return target
        try:
            files: dict[str, int] = json.loads(self.store.get(name + MANIFEST))
        except KeyError:
            raise FileNotFoundError(f"artifact {uri} does not exist") from None
        cache_dir.mkdir(parents=True, exist_ok=True)
        return place_directory(target, lambda staging: self._download(name, files, staging))

    def exists(self, uri: str) -> bool:
        return self.store.exists(self._name(uri) + MANIFEST)

    def _download(self, name: str, files: dict[str, int], directory: Path) -> None:
        for relative, size in files.items():
            path = directory / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            self.store.download(f"{name}/{relative}", path)
            if (got := path.stat().st_size) != size:
                raise OSError(f"artifact {name}: {relative} has {got} bytes, its manifest says {size}")

    def _name(self, uri: str) -> str:
        name = self.store.name(uri)
        check_artifact_name(name)
        return name

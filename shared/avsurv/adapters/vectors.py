"""The vector store: a Qdrant server (the distributed deployment), an in-process HNSW engine on disk (the
embedded deployment, :mod:`avsurv.adapters.ann`), or qdrant-client's local mode shared on disk (tests and
small multi-process sites); one collection per (site, model version) with named vectors ``visual`` and
``audio``, queried through a per-site alias that is switched atomically when a new version is fully indexed.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from avsurv.adapters.ann import JOINT, AnnStore
from avsurv.constants import AUDIO, EMBEDDING_DIM, MODALITIES, VISUAL

MODE_VECTORS = {"av": MODALITIES, "visual": (VISUAL,), "audio": (AUDIO,)}
"""The named vectors a search mode compares (avsurv.tasks.search's modes)."""
_POINT_NAMESPACE = uuid.UUID("5b0b3a52-6f1e-4c65-9d0e-3f4a8a7c2e11")


SCROLL_PAGE = 512
"""Points per page when reading a camera's time window."""


def point_id(clip_id: str, model_version: str) -> str:
    """Deterministic point id: re-delivered or re-embedded clips overwrite their point (idempotent)."""
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{model_version}\x00{clip_id}"))


def collection_name(site: str, model_version: str) -> str:
    return f"avsurv_{site}_{model_version}"


def alias_name(site: str) -> str:
    return f"avsurv_{site}"


@dataclass(frozen=True)
class Point:
    clip_id: str
    z_v: np.ndarray
    z_a: np.ndarray
    payload: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    id: str
    payload: dict[str, Any]
    z_v: np.ndarray
    z_a: np.ndarray


def open_vectors(url: str, *, api_key: str = "", replication_factor: int = 1) -> QdrantVectors:
    """The vector store at ``url``: ``local:///path`` the embedded HNSW engine (:class:`EmbeddedVectors`,
    held open by this process: the embedded deployment), anything else a :class:`QdrantVectors` client.
    ``api_key`` and ``replication_factor`` (of the collections it creates) apply to a server."""
    if url.startswith("local://"):
        return EmbeddedVectors(url)
    return QdrantVectors(url, api_key=api_key, replication_factor=replication_factor)


class QdrantVectors:
    """``http(s)://host:port``: a Qdrant server. ``local-shared:///path``: qdrant-client's local mode shared by
    several processes on one host, opened for each operation under an exclusive file lock (local mode allows one
    client at a time, loads the whole store on opening and compares a query with every point: for tests and
    small sites, not production). Neither local store is thread-safe (a query during an upsert can read
    half-grown arrays), so this process's threads (live embedding, a backfill, gRPC searches) take turns."""

    candidates = 512
    """Points :meth:`nearest` is first asked for: per named vector, which holds the nearest by both deep down."""

    def __init__(self, url: str, *, api_key: str = "", replication_factor: int = 1) -> None:
        """``api_key`` and ``replication_factor`` (of the collections it creates) apply to a server."""
        self.url = url
        self.replication_factor = replication_factor
        self.local = url.startswith("local-shared://")
        self._turns = threading.RLock() if self.local else contextlib.nullcontext()
        self._shared_path: Path | None = None
        if url.startswith("local-shared://"):
            self._shared_path = Path(url.removeprefix("local-shared://"))
            self._shared_path.mkdir(parents=True, exist_ok=True)
            self._client: QdrantClient | None = None
        elif url.startswith(("http://", "https://")):
            self._client = QdrantClient(url=url, api_key=api_key or None)
        else:
            raise ValueError(f"a Qdrant client's URL starts with http://, https:// or local-shared://, got {url!r}"
                             " (open_vectors also opens local://)")

    @contextlib.contextmanager
    def _session(self) -> Iterator[QdrantClient]:
        with self._turns:
            if self._shared_path is None:
                assert self._client is not None
                yield self._client
            else:
                with self._shared_session(self._shared_path) as client:
                    yield client

    @staticmethod
    @contextlib.contextmanager
    def _shared_session(path: Path) -> Iterator[QdrantClient]:
        with open(path.parent / f".{path.name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            client = QdrantClient(path=str(path))
            try:
                yield client
            finally:
                client.close()
                fcntl.flock(lock, fcntl.LOCK_UN)

    def ensure_collection(self, name: str) -> None:
        with self._session() as client:
            if client.collection_exists(name):
                return
            params = models.VectorParams(size=EMBEDDING_DIM, distance=models.Distance.EUCLID)
            client.create_collection(name, vectors_config=dict.fromkeys(MODALITIES, params),
                                     replication_factor=None if self.local else self.replication_factor)
            if self.local:
                return  # local mode has no payload indexes (it filters by scanning)
            for field, schema in (("camera_id", models.PayloadSchemaType.KEYWORD),
                                  ("capture_time", models.PayloadSchemaType.FLOAT)):
                client.create_payload_index(name, field, field_schema=schema)

    def upsert(self, collection: str, model_version: str, points: Sequence[Point]) -> None:
        structs = [
            models.PointStruct(
                id=point_id(p.clip_id, model_version),
                vector={"visual": _floats(p.z_v), "audio": _floats(p.z_a)},
                payload={**p.payload, "clip_id": p.clip_id, "model_version": model_version},
            ) for p in points
        ]
        with self._session() as client:
            client.upsert(collection, points=structs, wait=True)

    def query(self, collection: str, vector: np.ndarray, using: str, limit: int,
              camera_ids: Sequence[str] = (), start_time: float | None = None,
              end_time: float | None = None) -> list[Hit]:
        """Nearest points by Euclidean distance on one named vector, with both vectors returned so that
        the caller can re-rank with Eq. 5."""
        with self._session() as client:
            response = client.query_points(
                collection, query=_floats(vector), using=using, limit=limit,
                query_filter=_filter(camera_ids, start_time, end_time), with_payload=True, with_vectors=True,
            )
        return [_hit(p) for p in response.points]

    def nearest(self, collection: str, z_v: np.ndarray, z_a: np.ndarray, mode: str, limit: int,
                camera_ids: Sequence[str] = (), start_time: float | None = None,
                end_time: float | None = None) -> list[Hit]:
        """Candidates for an Eq. 5 search in ``mode``: here the ``limit`` nearest points by each named vector
        the mode compares, merged."""
        hits: dict[str, Hit] = {}
        for using in MODE_VECTORS[mode]:
            for hit in self.query(collection, z_v if using == "visual" else z_a, using, limit, camera_ids,
                                  start_time, end_time):
                hits[hit.id] = hit
        return list(hits.values())

    def window(self, collection: str, camera_id: str, start_time: float, end_time: float) -> list[Hit]:
        """Every point of ``camera_id`` captured in [start_time, end_time], oldest first."""
        hits: list[Hit] = []
        offset = None
        with self._session() as client:
            while True:
                points, offset = client.scroll(collection, scroll_filter=_filter([camera_id], start_time, end_time),
                                               limit=SCROLL_PAGE, offset=offset, with_payload=True, with_vectors=True)
                hits += [_hit(p) for p in points]
                if offset is None:
                    break
        return sorted(hits, key=lambda h: float(h.payload["capture_time"]))

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        """Deletes the points ``ids`` (point_id values); unknown ids are ignored."""
        with self._session() as client:
            client.delete(collection, points_selector=models.PointIdsList(points=list(ids)), wait=True)

    def retrieve(self, collection: str, ids: Sequence[str]) -> list[Hit]:
        with self._session() as client:
            points = client.retrieve(collection, ids=list(ids), with_payload=True, with_vectors=True)
        return [_hit(p) for p in points]

    def count(self, collection: str) -> int:
        with self._session() as client:
            return client.count(collection, exact=True).count

    def set_alias(self, alias: str, collection: str) -> None:
        """Points ``alias`` at ``collection`` in one operation: queries see the old or the new one."""
        operations: list[Any] = []
        if self.alias_target(alias) is not None:
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        operations.append(models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name=collection, alias_name=alias)))
        with self._session() as client:
            client.update_collection_aliases(change_aliases_operations=operations)

    def alias_target(self, alias: str) -> str | None:
        with self._session() as client:
            aliases = client.get_aliases().aliases
        for entry in aliases:
            if entry.alias_name == alias:
                return entry.collection_name
        return None

    def delete_collection(self, name: str) -> None:
        with self._session() as client:
            client.delete_collection(name)

    def collections(self) -> list[str]:
        """Every collection's name (not the aliases), sorted."""
        with self._session() as client:
            return sorted(entry.name for entry in client.get_collections().collections)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class EmbeddedVectors(QdrantVectors):
    """``local:///path``: the same collections, aliases and point ids as on a Qdrant server, searched in this
    process through HNSW indexes (:class:`avsurv.adapters.ann.AnnStore`); this process's threads take turns."""

    candidates = 64
    """Nearest by both vectors at once: the exact scan's top 10 of 100,000 random clips were among the 12
    nearest so (20 queries of bench/search_speed.py)."""

    def __init__(self, url: str, **_: Any) -> None:
        self.url, self.local, self.replication_factor = url, True, 1
        self._client = None
        self._turns = threading.RLock()
        self._store = AnnStore(Path(url.removeprefix("local://")), MODALITIES)

    def ensure_collection(self, name: str) -> None:
        with self._turns:
            self._store.create_collection(name)

    def upsert(self, collection: str, model_version: str, points: Sequence[Point]) -> None:
        rows = [(point_id(p.clip_id, model_version), {"visual": p.z_v, "audio": p.z_a},
                 {**p.payload, "clip_id": p.clip_id, "model_version": model_version}) for p in points]
        with self._turns:
            self._store.upsert(collection, rows)

    def query(self, collection: str, vector: np.ndarray, using: str, limit: int,
              camera_ids: Sequence[str] = (), start_time: float | None = None,
              end_time: float | None = None) -> list[Hit]:
        with self._turns:
            found = self._store.query(collection, vector, using, limit, camera_ids, start_time, end_time)
        return [_embedded_hit(record) for record in found]

    def nearest(self, collection: str, z_v: np.ndarray, z_a: np.ndarray, mode: str, limit: int,
                camera_ids: Sequence[str] = (), start_time: float | None = None,
                end_time: float | None = None) -> list[Hit]:
        """The ``limit`` nearest points by both vectors at once (one walk of the joint index) in ``av`` mode."""
        if mode != "av":
            return super().nearest(collection, z_v, z_a, mode, limit, camera_ids, start_time, end_time)
        joint = np.concatenate([np.asarray(z_v, np.float32), np.asarray(z_a, np.float32)])
        return self.query(collection, joint, JOINT, limit, camera_ids, start_time, end_time)

    def window(self, collection: str, camera_id: str, start_time: float, end_time: float) -> list[Hit]:
        with self._turns:
            found = self._store.scan(collection, [camera_id], start_time, end_time)
        return sorted(map(_embedded_hit, found), key=lambda h: float(h.payload["capture_time"]))

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        with self._turns:
            self._store.delete(collection, ids)

    def retrieve(self, collection: str, ids: Sequence[str]) -> list[Hit]:
        with self._turns:
            return [_embedded_hit(record) for record in self._store.retrieve(collection, ids)]

    def count(self, collection: str) -> int:
        with self._turns:
            return self._store.count(collection)

    def set_alias(self, alias: str, collection: str) -> None:
        with self._turns:
            self._store.set_alias(alias, collection)

    def alias_target(self, alias: str) -> str | None:
        with self._turns:
            return self._store.alias_target(alias)

    def delete_collection(self, name: str) -> None:
        with self._turns:
            self._store.delete_collection(name)

    def collections(self) -> list[str]:
        with self._turns:
            return self._store.collections()

    def close(self) -> None:
        with self._turns:
            self._store.close()


def _embedded_hit(record: tuple[str, dict[str, Any], dict[str, np.ndarray]]) -> Hit:
    point, payload, vectors = record
    return Hit(point, payload, vectors["visual"], vectors["audio"])


def _hit(point: Any) -> Hit:
    return Hit(str(point.id), dict(point.payload or {}), np.asarray(point.vector["visual"], np.float32),
               np.asarray(point.vector["audio"], np.float32))


def _floats(vector: np.ndarray) -> list[float]:
    return np.asarray(vector, np.float32).tolist()


def _filter(camera_ids: Sequence[str], start_time: float | None, end_time: float | None) -> models.Filter | None:
    must: list[Any] = []
    if camera_ids:
        must.append(models.FieldCondition(key="camera_id", match=models.MatchAny(any=list(camera_ids))))
    if start_time is not None or end_time is not None:
        must.append(models.FieldCondition(key="capture_time", range=models.Range(gte=start_time, lte=end_time)))
    return models.Filter(must=must) if must else None

"""The vector store: Qdrant (a server URL, or qdrant-client's local mode on disk for the embedded
deployment), one collection per (site, model version) with named vectors ``visual`` and ``audio``, queried
through a per-site alias that is switched atomically when a new version is fully indexed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from avsurv.constants import EMBEDDING_DIM

VECTORS = ("visual", "audio")
_POINT_NAMESPACE = uuid.UUID("5b0b3a52-6f1e-4c65-9d0e-3f4a8a7c2e11")


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


class QdrantVectors:
    def __init__(self, url: str) -> None:
        """``http(s)://host:port`` for a server, or ``local:///path`` for local mode on disk."""
        self.local = url.startswith("local://")
        if self.local:
            self.client = QdrantClient(path=url.removeprefix("local://"))
        elif url.startswith(("http://", "https://")):
            self.client = QdrantClient(url=url)
        else:
            raise ValueError(f"vector store URL must start with http://, https:// or local://, got {url!r}")

    def ensure_collection(self, name: str) -> None:
        if self.client.collection_exists(name):
            return
        params = models.VectorParams(size=EMBEDDING_DIM, distance=models.Distance.EUCLID)
        self.client.create_collection(name, vectors_config=dict.fromkeys(VECTORS, params))
        if self.local:
            return  # local mode has no payload indexes (it filters by scanning)
        for field, schema in (("camera_id", models.PayloadSchemaType.KEYWORD),
                              ("capture_time", models.PayloadSchemaType.FLOAT)):
            self.client.create_payload_index(name, field, field_schema=schema)

    def upsert(self, collection: str, model_version: str, points: Sequence[Point]) -> None:
        self.client.upsert(collection, points=[
            models.PointStruct(
                id=point_id(p.clip_id, model_version),
                vector={"visual": _floats(p.z_v), "audio": _floats(p.z_a)},
                payload={**p.payload, "clip_id": p.clip_id, "model_version": model_version},
            ) for p in points
        ], wait=True)

    def query(self, collection: str, vector: np.ndarray, using: str, limit: int,
              camera_ids: Sequence[str] = (), start_time: float | None = None,
              end_time: float | None = None) -> list[Hit]:
        """Nearest points by Euclidean distance on one named vector, with both vectors returned so that
        the caller can re-rank with Eq. 5."""
        response = self.client.query_points(
            collection, query=_floats(vector), using=using, limit=limit,
            query_filter=_filter(camera_ids, start_time, end_time), with_payload=True, with_vectors=True,
        )
        return [Hit(str(p.id), dict(p.payload or {}), np.asarray(p.vector["visual"], np.float32),
                    np.asarray(p.vector["audio"], np.float32)) for p in response.points]

    def retrieve(self, collection: str, ids: Sequence[str]) -> list[Hit]:
        points = self.client.retrieve(collection, ids=list(ids), with_payload=True, with_vectors=True)
        return [Hit(str(p.id), dict(p.payload or {}), np.asarray(p.vector["visual"], np.float32),
                    np.asarray(p.vector["audio"], np.float32)) for p in points]

    def count(self, collection: str) -> int:
        return self.client.count(collection, exact=True).count

    def set_alias(self, alias: str, collection: str) -> None:
        """Points ``alias`` at ``collection`` in one operation: queries see the old or the new one."""
        operations: list[Any] = []
        if self.alias_target(alias) is not None:
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        operations.append(models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name=collection, alias_name=alias)))
        self.client.update_collection_aliases(change_aliases_operations=operations)

    def alias_target(self, alias: str) -> str | None:
        for entry in self.client.get_aliases().aliases:
            if entry.alias_name == alias:
                return entry.collection_name
        return None

    def delete_collection(self, name: str) -> None:
        self.client.delete_collection(name)

    def close(self) -> None:
        self.client.close()


def _floats(vector: np.ndarray) -> list[float]:
    return np.asarray(vector, np.float32).tolist()


def _filter(camera_ids: Sequence[str], start_time: float | None, end_time: float | None) -> models.Filter | None:
    must: list[Any] = []
    if camera_ids:
        must.append(models.FieldCondition(key="camera_id", match=models.MatchAny(any=list(camera_ids))))
    if start_time is not None or end_time is not None:
        must.append(models.FieldCondition(key="capture_time", range=models.Range(gte=start_time, lte=end_time)))
    return models.Filter(must=must) if must else None

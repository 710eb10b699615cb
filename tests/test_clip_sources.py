"""One clip container API (issue 13 item 4): a clip directory (``avsurv segment --out``) and the platform's clip
store are read alike, through :class:`avsurv.media.clipstore.ClipSource`, and either feeds the streaming
trainer's working sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_streaming_trainer import VISUAL, synthetic_clips

from avsurv.learning.data import WorkingSets
from avsurv.media.clipstore import ClipSource, ClipStore, ClipWriter, decode_jpeg, encode_jpeg
from avsurv.media.segment import Clip
from avsurv.platform.archive import ClipArchive
from avsurv.platform.messages import clip_to_message

CLIPS = synthetic_clips(cameras=2, per_camera=4)


def clip_directory(root: Path) -> ClipStore:
    with ClipWriter(root) as writer:
        for clip in reversed(CLIPS):  # written out of order: ids still come in capture order
            writer.add(clip)
    return ClipStore(root)


def platform_store(root: Path) -> ClipArchive:
    archive = ClipArchive(root)
    for clip in CLIPS:
        archive.put(clip_to_message(clip, "test"))
    return archive


@pytest.fixture(params=[clip_directory, platform_store], ids=["clip directory", "platform clip store"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> ClipSource:
    return request.param(tmp_path / "clips")


def test_ids_come_per_camera_in_capture_order(source: ClipSource) -> None:
    expected = [clip.clip_id for clip in CLIPS]
    assert source.clip_ids() == expected
    assert source.clip_ids("cam1") == [c for c in expected if c.startswith("cam1:")]
    assert source.clip_ids("cam9") == []
    assert len(source) == len(CLIPS)


def test_clips_come_in_the_order_asked_with_their_content(source: ClipSource) -> None:
    wanted = [CLIPS[5], CLIPS[0], CLIPS[6]]
    read = list(source.clips([clip.clip_id for clip in wanted]))
    assert [clip.clip_id for clip in read] == [clip.clip_id for clip in wanted]
    for got, made in zip(read, wanted, strict=True):
        assert (got.camera_id, got.capture_time, got.has_audio) == (made.camera_id, made.capture_time, True)
        assert np.array_equal(got.frames, [decode_jpeg(encode_jpeg(frame)) for frame in made.frames])
        np.testing.assert_allclose(got.log_mel, made.log_mel, atol=0.05)  # float16 on the clips topic


def test_a_missing_clip_raises_unless_skipped(source: ClipSource) -> None:
    ids = [CLIPS[0].clip_id, "cam0:1000", CLIPS[1].clip_id]
    with pytest.raises(KeyError, match="cam0:1000"):
        list(source.clips(ids))
    assert [clip.clip_id for clip in source.clips(ids, skip_missing=True)] == [ids[0], ids[2]]


def test_either_container_gives_the_same_working_sets(tmp_path: Path) -> None:
    tables = []
    for make in (clip_directory, platform_store):
        sets = WorkingSets(make(tmp_path / make.__name__), None, VISUAL, max_clips=3, seed=1)
        tables.append([sets.load(part) for part in sets.plan(0)])
    for directory, store in zip(*tables, strict=True):
        assert directory.clip_ids == store.clip_ids
        assert np.array_equal(directory.frames, store.frames)


def test_both_containers_store_the_jpeg_that_ingest_made(tmp_path: Path) -> None:
    marked = Clip(**{**vars(CLIPS[0]), "frames_jpeg": tuple(b"ingest-%d" % i for i in range(5))})
    with ClipWriter(tmp_path / "dir") as writer:
        writer.add(marked)
    with np.load(next((tmp_path / "dir").glob("shard-*.npz"))) as shard:
        assert shard["frames_jpeg"].tobytes() == b"".join(marked.frames_jpeg)
    assert list(clip_to_message(marked, "test").frames_jpeg) == list(marked.frames_jpeg)

"""Clip ids: one format, made and read by one helper."""

from pathlib import Path

import pytest

from avsurv.clipids import clip_id, parse_clip_id
from avsurv.platform.archive import ClipArchive
from avsurv.v1 import messages_pb2 as pb


def test_a_clip_id_is_the_camera_and_its_start_in_milliseconds() -> None:
    assert clip_id("cam0", 1767225688.0) == "cam0:1767225688000"
    assert clip_id("gate:north", 1700000000.25) == "gate:north:1700000000250"  # the last colon separates
    assert clip_id("cam0", 12.0004) == clip_id("cam0", 11.9996) == "cam0:12000"  # float noise rounds away
    assert parse_clip_id("gate:north:1700000000250") == ("gate:north", 1700000000250)
    assert parse_clip_id(clip_id("cam1", 3.5)) == ("cam1", 3500)


@pytest.mark.parametrize("bad", ["cam0", ":12", "cam0:", "cam0:12.5", "cam0:x1"])
def test_anything_else_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a clip id"):
        parse_clip_id(bad)


def test_the_clip_store_lists_the_ids_it_was_given(tmp_path: Path) -> None:
    archive = ClipArchive(tmp_path)
    ids = [clip_id("cam0", 1700000000.25 + s) for s in range(3)]
    for value in reversed(ids):
        archive.put(pb.Clip(header=pb.Header(camera_id="cam0", clip_id=value)))
    assert archive.clip_ids() == ids == archive.clip_ids("cam0")
    with pytest.raises(ValueError, match="not a clip id"):
        archive.path("../etc:1")

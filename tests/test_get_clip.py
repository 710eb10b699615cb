"""Pictures through the public API (issue 16 item 2): after a backfill every search result carries a
``media_uri`` that fetches its clip, and ``EventSearch.GetClip`` returns a stored clip's JPEG frames as
stored, its middle frame as the thumbnail, capture time, camera and has_audio; unknown clips are NOT_FOUND,
malformed ids INVALID_ARGUMENT."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import grpc
import numpy as np
import pytest
from platformkit import untrained_model, wait_for

from avsurv.clipids import clip_id
from avsurv.constants import FRAME_HEIGHT, FRAME_WIDTH, FRAMES_PER_CLIP, MEL_FRAMES, N_MELS
from avsurv.media.clipstore import encode_jpeg
from avsurv.platform.config import load_settings
from avsurv.platform.messages import header
from avsurv.platform.runtime import Runtime
from avsurv.v1 import api_pb2, api_pb2_grpc
from avsurv.v1 import messages_pb2 as pb

START = 1.7e9
CLIPS = 12


def _clip(second: int, rng: np.random.Generator) -> pb.Clip:
    """A clip as segmentation stores it: its URI is not in the stored message. Frames differ by brightness."""
    frames = [encode_jpeg(np.full((FRAME_HEIGHT, FRAME_WIDTH, 3), 20 * i + second, np.uint8))
              for i in range(FRAMES_PER_CLIP)]
    log_mel = rng.normal(-4, 2, (N_MELS, MEL_FRAMES)).astype("<f2").tobytes()
    capture = START + second
    return pb.Clip(header=header("default", "cam0", clip_id("cam0", capture), capture), frames_jpeg=frames,
                   log_mel_f16=log_mel, has_audio=second % 2 == 0)


def test_search_after_a_backfill_gives_media_uris_and_get_clip_gives_the_pictures(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    settings = load_settings(environ={}, data_dir=tmp_path / "data", grpc_port=0,
                             model=str(untrained_model(tmp_path / "model", seed=3)))
    runtime = Runtime(["embedding", "search"], settings, embedded=True)
    stored = [_clip(second, rng) for second in range(CLIPS)]
    for clip in stored:
        runtime.ports.archive.put(clip)
    runtime.start()
    try:
        wait_for(lambda: runtime.ports.registry.active_version() is not None, 120, "the backfill and the flip")
        with grpc.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            stub = api_pb2_grpc.EventSearchStub(channel)
            query = stored[0].header.clip_id
            results = stub.Search(api_pb2.SearchRequest(clip_id=query, top_k=5, exclusion_s=0.0, separation_s=0.0),
                                  timeout=30).results
            assert len(results) == 5
            for result in results:  # each URI is the stored clip's file
                path = Path(url2pathname(urlsplit(result.media_uri).path))
                assert pb.Clip.FromString(path.read_bytes()).header.clip_id == result.clip_id

            clip = stored[7]
            media = stub.GetClip(api_pb2.GetClipRequest(clip_id=clip.header.clip_id), timeout=10)
            assert list(media.frames_jpeg) == list(clip.frames_jpeg)
            assert media.thumbnail_jpeg == clip.frames_jpeg[FRAMES_PER_CLIP // 2]
            assert (media.clip_id, media.camera_id, media.has_audio) == (clip.header.clip_id, "cam0", False)
            assert media.capture_time == pytest.approx(START + 7)
            refused = grpc.StatusCode.INVALID_ARGUMENT
            for bad, code in (("cam0:999", grpc.StatusCode.NOT_FOUND), ("cam0:" + "1" * 200, refused),
                              ("../etc:1", refused), ("cam0:x", refused), ("", refused)):
                with pytest.raises(grpc.RpcError) as error:
                    stub.GetClip(api_pb2.GetClipRequest(clip_id=bad), timeout=10)
                assert error.value.code() == code, bad
    finally:
        runtime.stop()

"""The trainer streams its clips from the store in bounded working sets (issue 17 item 5): the same run as in
memory when every clip fits, and never more than ``train_max_clips`` clips held at once when they do not."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from avsurv.constants import DEFAULT_PROFILE, FRAME_HEIGHT, FRAME_WIDTH, FRAMES_PER_CLIP, MEL_FRAMES, N_MELS
from avsurv.learning.data import WorkingSets, table_from_clips
from avsurv.learning.train import TrainConfig, Trainer
from avsurv.media.segment import Clip
from avsurv.models.profiles import PROFILES
from avsurv.platform.archive import ClipArchive
from avsurv.platform.messages import clip_to_message

VISUAL = PROFILES[DEFAULT_PROFILE].input
START = 1_767_225_600.0


def synthetic_clips(cameras: int, per_camera: int, seed: int = 0) -> list[Clip]:
    """Clips of a bright square moving over a noisy street, with a tone whose pitch follows it."""
    rng = np.random.default_rng(seed)
    clips = []
    for camera in range(cameras):
        street = rng.integers(0, 120, (FRAME_HEIGHT, FRAME_WIDTH, 3), np.uint8)
        for second in range(per_camera):
            frames = np.repeat(street[None], FRAMES_PER_CLIP, axis=0)
            x = (second * 37) % (FRAME_WIDTH - 60)
            frames[:, 80:140, x:x + 60] = 255
            log_mel = rng.normal(-40, 5, (1, N_MELS, MEL_FRAMES)).astype(np.float32)
            log_mel[0, (x * N_MELS) // FRAME_WIDTH] += 30
            clips.append(Clip(f"cam{camera}", float(second), START + second, "synthetic", True, frames, log_mel))
    return sorted(clips, key=lambda c: (c.camera_id, c.start))


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> ClipArchive:
    store = ClipArchive(tmp_path_factory.mktemp("clips"))
    for clip in synthetic_clips(cameras=2, per_camera=8):
        store.put(clip_to_message(clip, "test"))
    return store


def quiet(_: str) -> None:
    pass


class CountingReader:
    """The archive as a clip source that counts the clips read."""

    def __init__(self, archive: ClipArchive) -> None:
        self.archive, self.read = archive, 0

    def clip_ids(self, camera_id: str | None = None) -> list[str]:
        return self.archive.clip_ids(camera_id)

    def clips(self, clip_ids: Iterable[str], skip_missing: bool = False) -> Iterator[Clip]:
        for clip in self.archive.clips(clip_ids, skip_missing):
            self.read += 1
            yield clip

    def __len__(self) -> int:
        return len(self.archive)


def test_working_sets_cover_every_clip_once_per_epoch_in_bounded_capture_ordered_sets(archive: ClipArchive) -> None:
    sets = WorkingSets(archive, None, VISUAL, max_clips=5, seed=3)
    plans = [sets.plan(epoch) for epoch in (0, 1)]
    for plan in plans:
        assert len(plan) == 4 and all(len(part) <= 5 for part in plan)
        assert sorted(np.concatenate(plan).tolist()) == list(range(16))
        assert all(np.all(np.diff(part) > 0) for part in plan)  # capture order: causal backgrounds
        assert {archive.clip_ids()[p][:4] for p in plan[0]} == {"cam0", "cam1"}  # drawn across the stream
    assert not np.array_equal(plans[0][0], plans[1][0])  # reshuffled every epoch
    assert [part.tolist() for part in sets.plan(None)] == [list(range(i, i + 4)) for i in range(0, 16, 4)]
    assert WorkingSets(archive, None, VISUAL, max_clips=16).plan(0)[0].tolist() == list(range(16))


def test_when_every_clip_fits_streaming_trains_the_same_model_as_a_table_in_memory(
        archive: ClipArchive, tmp_path: Path) -> None:
    ids = archive.clip_ids()[::2]  # both cameras
    config = TrainConfig(profile=DEFAULT_PROFILE, method="tpg", epochs=2, batch_size=4, precise_bn_clips=8)
    in_memory = Trainer(table_from_clips(archive.clips(ids), VISUAL), tmp_path / "a", config, progress=False,
                        log=quiet)
    reader = CountingReader(archive)
    streamed = Trainer(WorkingSets(reader, ids, VISUAL, max_clips=len(ids)), tmp_path / "b", config,
                       progress=False, log=quiet)
    runs = [in_memory.run(), streamed.run()]
    assert reader.read == len(ids)  # read once, kept for every epoch
    assert [h.loss for h in runs[0].history] == [h.loss for h in runs[1].history]
    weights = [trainer.model.state_dict() for trainer in (in_memory, streamed)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert runs[0].sha256 == runs[1].sha256


def test_a_store_larger_than_the_bound_is_trained_on_holding_at_most_the_bound(
        archive: ClipArchive, tmp_path: Path) -> None:
    # The tiny profile keeps whole frames (1.3 MB a clip, as the paper's does), the bulk of a working set.
    ids, most, batch, visual = archive.clip_ids(), 4, 4, PROFILES["tiny"].input
    per_clip = FRAMES_PER_CLIP * FRAME_HEIGHT * FRAME_WIDTH * 3 + N_MELS * MEL_FRAMES * 4
    reader = CountingReader(archive)
    config = TrainConfig(profile="tiny", method="tpg", epochs=1, batch_size=batch, precise_bn_clips=8)
    # A first small run imports and builds what any run does (Python objects tracemalloc would count).
    Trainer(WorkingSets(archive, ids[:2], visual, max_clips=2), tmp_path / "warm", config, progress=False,
            log=quiet).run()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        trainer = Trainer(WorkingSets(reader, ids, visual, max_clips=most), tmp_path / "m", config,
                          progress=False, log=quiet)
        result = trainer.run()
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert reader.read == 2 * len(ids)  # one epoch, then the calibration's pass: every clip twice
    assert result.history[0].batches == 2 * sum((len(p) - 1) // batch + 1 for p in trainer.source.plan(0))
    held = peak / per_clip
    # The whole store would be 16 clips' worth. A working set is 4; a batch's copy of its frames is at most 4
    # more (training batches of 4, calibration batches of up to 32); a clip being decoded the rest (the
    # model's tensors are torch's, not traced).
    assert held < most + min(most, 32) + 2, f"{peak / 1e6:.1f} MB traced: {held:.1f} clips' worth"
    assert len(trainer.table) <= most
    calibration = (tmp_path / "m" / "camera_stats.json").read_text()
    assert '"cam0"' in calibration and '"cam1"' in calibration  # every working set embedded

"""The faster CPU embedding path (issue 17 item 3) computes what the old one did."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from unittest import mock

import numpy as np
import torch

from avsurv.constants import AUDIO_TENSOR_SHAPE, CROP_OFFSETS, CROP_SIZE, FRAME_HEIGHT, FRAME_WIDTH, FRAMES_PER_CLIP
from avsurv.learning import encode
from avsurv.media import background
from avsurv.media.segment import Clip
from avsurv.models import build_model
from avsurv.models.inputs import CropInput, ForegroundInput
from avsurv.models.model import ConvReLU
from avsurv.models.profiles import PROFILES
from avsurv.platform.model_versions import LoadedModel


def reference_crops(frames: np.ndarray, view: np.ndarray) -> torch.Tensor:
    """Each clip's crop sliced on its own, in float64: the definition the fast path must match."""
    crops = [frames[i, :, :, CROP_OFFSETS[v] : CROP_OFFSETS[v] + CROP_SIZE] for i, v in enumerate(view)]
    return torch.from_numpy(np.stack(crops).astype(np.float64) / 255.0).permute(0, 4, 1, 2, 3)


def clips_of(frames: np.ndarray) -> list[Clip]:
    silence = np.full(AUDIO_TENSOR_SHAPE, -80.0, dtype=np.float32)
    return [Clip(camera_id="c", start=float(i), capture_time=None, source="test", has_audio=False, frames=clip,
                 log_mel=silence) for i, clip in enumerate(frames)]


def test_crop_tensor_matches_the_reference_for_mixed_views() -> None:
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (6, FRAMES_PER_CLIP, FRAME_HEIGHT, FRAME_WIDTH, 3), dtype=np.uint8)
    view = np.array([0, 1, 1, 0, 1, 0])
    out = CropInput().tensor(frames, view)
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert out.shape == (6, 3, FRAMES_PER_CLIP, FRAME_HEIGHT, CROP_SIZE)
    assert torch.allclose(out.double(), reference_crops(frames, view), atol=1e-7, rtol=0)


def test_crop_tensor_accepts_a_non_contiguous_batch() -> None:
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, (4, FRAMES_PER_CLIP, FRAME_HEIGHT, FRAME_WIDTH, 3), dtype=np.uint8)[::2]
    view = np.array([1, 0])
    assert torch.allclose(CropInput().tensor(frames, view).double(), reference_crops(frames, view), atol=1e-7, rtol=0)


def test_embed_matches_the_model_on_reference_crops() -> None:
    """``LoadedModel.embed`` (the service's path) against the encoders fed the reference crops directly."""
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (3, FRAMES_PER_CLIP, FRAME_HEIGHT, FRAME_WIDTH, 3), dtype=np.uint8)
    z_v, _ = LoadedModel("test", model, {"profile": "tiny", "method": "test"}, precision="fp32").embed(clips_of(frames))
    with torch.no_grad():
        views = [model.encoders["visual"](reference_crops(frames, np.full(3, v)).float())["visual"] for v in (0, 1)]
    expected = torch.stack(views).mean(0).numpy()
    assert np.allclose(z_v, expected, atol=1e-5)


def _bench() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "bench" / "embed_speed.py"
    spec = importlib.util.spec_from_file_location("embed_speed_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fg_fast_path_embeds_what_the_old_one_did() -> None:
    """The fused convolutions, the integer shrink, the bit-by-bit median and the CPU micro-batches, against the
    old ways as ``bench/embed_speed.py`` keeps them for its same-run baseline (float32: rounding only)."""
    bench = _bench()
    torch.manual_seed(5)
    model, config = build_model("fg").eval(), {"profile": "fg", "method": "t"}
    frames = np.random.default_rng(5).integers(0, 256, (40, FRAMES_PER_CLIP, FRAME_HEIGHT, FRAME_WIDTH, 3),
                                               dtype=np.uint8)
    clips = clips_of(frames)  # 40 clips of one camera: a background ring of 10 samples, batches over the cap of 16
    fast = LoadedModel("v", model, config, precision="fp32").embed(clips)
    uncapped = {name: replace(each, cpu_embed_batch=None) for name, each in PROFILES.items()}
    with (mock.patch.object(ForegroundInput, "store", bench.legacy_store),
          mock.patch.object(background, "_median", bench.legacy_median),
          mock.patch.object(ConvReLU, "forward", bench.unfused), mock.patch.object(encode, "PROFILES", uncapped)):
        old = LoadedModel("v", model, config, precision="fp32").embed(clips)
    for a, b in zip(fast, old, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

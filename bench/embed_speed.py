"""CPU embedding speed (issue 17 item 3): clips/s through ``LoadedModel.embed``, before and after, in one run.

    python bench/embed_speed.py [--profile tiny] [--batch 8] [--clips 64] [--rounds 5] [--threads 1]
                                [--decode-threads 2]

Rows, each the median over ``--rounds`` rounds that time every row once in turn (so a change in the
machine's load hits all rows alike; the load average is printed before and after):
- ``before``: ``LoadedModel.embed`` as it was: the crop input's ``np.take_along_axis`` gather then a strided
  float copy (kept here only), and ``embed_table`` under ``no_grad`` alone (without its ``inference_mode``);
- ``after``: ``LoadedModel.embed`` as it is, in float32; ``after, bf16``: the same under bf16 autocast (what the
  ``auto`` precision chooses on a CPU with Intel AMX, :mod:`avsurv.models.device`);
- ``after, bf16, as at 18cbfd6`` (profiles that need a background, e.g. ``fg``): ``after, bf16`` as it was before
  each convolution's ReLU ran inside it (:class:`avsurv.models.model.ConvReLU`), the frames were shrunk in
  integers (``ForegroundInput.store``), the background median was found bit by bit and the CPU forward was
  capped at the profile's ``cpu_embed_batch``: the old ways kept here only, for a same-run ratio;
- ``ceiling: encoders' forward``: both encoders alone on inputs already made (float crops, or for ``fg`` the
  shrunk frames minus a background, and log-mels): what the model costs whatever is done around it (and
  ``, bf16``: under bf16 autocast);
- ``ceiling: forward on pooled input`` (profiles whose X3D pools its input, e.g. ``tiny``'s 4x4): the same
  with the pooling done before the float conversion, i.e. the visual encoder fed [B, 3, 5, 56, 56];
- ``JPEG decode``: Pillow decoding a clip's 5 frames (what the embedding service does to a clips-topic
  message before ``LoadedModel.embed``), at full size, at full size on ``--decode-threads`` threads (as the
  service's ``decode_threads`` does), and with ``draft()`` DCT scaling to 1/4, for scale;
- ``service, embed_prefetch off`` / ``on`` (issue 17 item 2): the embedding service's live loop
  (``EmbeddingService.step``) on clips-topic messages of these clips (JPEG frames) waiting on an in-process
  bus, with the model above and ``--decode-threads`` decoder threads, vectors and registry stubbed: decode then
  model in turn, or the next batch decoded while the model embeds this one (and ``on, bf16``: with the model under
  bf16 autocast). The ratio of the first two is printed last.
"""

from __future__ import annotations

import argparse
import copy
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoder_speed import random_clips

from avsurv.adapters.bus import InProcessBus
from avsurv.clipids import clip_id
from avsurv.constants import CROP_OFFSETS, CROP_SIZE
from avsurv.learning import embed, encode
from avsurv.media import background as media_background
from avsurv.media.background import Backgrounds
from avsurv.media.clipstore import decode_jpeg, encode_jpeg
from avsurv.models import build_model
from avsurv.models.device import autocast
from avsurv.models.inputs import VIEWS, CropInput, ForegroundInput
from avsurv.models.model import ConvReLU
from avsurv.models.profiles import PROFILES
from avsurv.platform.config import load_settings
from avsurv.platform.messages import CLIPS, header
from avsurv.platform.model_versions import LoadedModel
from avsurv.services.embedding import EmbeddingService
from avsurv.v1 import messages_pb2 as pb

AS_BEFORE = "after, bf16, as at 18cbfd6"
DRAFT_SCALE = 4
"""JPEG DCT scaling factor tried for the decode row (Pillow's draft() offers 1/2, 1/4 and 1/8)."""


def legacy_crop_tensor(self: CropInput, frames: np.ndarray, view: np.ndarray,
                       background: np.ndarray | None = None) -> torch.Tensor:
    """``CropInput.tensor`` before issue 17 item 3, for the ``before`` row."""
    offsets = np.asarray(CROP_OFFSETS)[view]
    columns = offsets[:, None] + np.arange(CROP_SIZE)[None, :]
    cropped = np.take_along_axis(frames, columns[:, None, None, :, None], axis=3)
    return torch.from_numpy(cropped).permute(0, 4, 1, 2, 3).float().div_(255.0)


def legacy_store(self: ForegroundInput, frames: np.ndarray) -> np.ndarray:
    """``ForegroundInput.store`` before the integer sums: the frames converted to float, then area-interpolated."""
    lead = frames.shape[:-3]
    flat = torch.from_numpy(np.ascontiguousarray(frames)).reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2)
    small = F.interpolate(flat.float(), size=(self.height, self.width), mode="area")
    small = small.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return small.reshape(*lead, self.height, self.width, 3).numpy()


def legacy_median(frames: np.ndarray) -> np.ndarray:
    """The background median before it was found bit by bit."""
    return np.partition(frames, (len(frames) - 1) // 2, axis=0)[(len(frames) - 1) // 2]


def unfused(self: ConvReLU, x: torch.Tensor) -> torch.Tensor:
    """A convolution, then its ReLU in a second pass."""
    return torch.relu_(self.conv(x))


def decode_drafted(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (image.width // DRAFT_SCALE, image.height // DRAFT_SCALE))
    return np.asarray(image.convert("RGB"))


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


class _Vectors:
    """The vector store stubbed: the service's own work is timed, not Qdrant's."""

    def ensure_collection(self, name: str) -> None:
        pass

    def upsert(self, collection: str, version: str, points: object) -> None:
        pass


def service_run(model: LoadedModel, jpegs: list[list[bytes]], log_mel: bytes, batch: int, decode_threads: int,
                prefetch: bool) -> Callable[[], None]:
    """One round: the clips published to the service's bus, then its loop stepped until all are embedded
    (each round's clips later in time than the last's, for the fg backgrounds)."""
    settings = load_settings(environ={}, data_dir=Path("/nonexistent"), batch_size=batch, batch_wait_s=0.05,
                             decode_threads=decode_threads, embed_prefetch=prefetch)
    registry = SimpleNamespace(active_version=lambda: None, target_version=lambda: None,
                               set_camera_stats=lambda *a: None)
    bus = InProcessBus(partitions=1)
    service = EmbeddingService(bus, _Vectors(), registry, None, None, settings)  # type: ignore[arg-type]
    service.serving = model
    rounds = iter(range(1_000_000))

    def run() -> None:
        offset = next(rounds) * len(jpegs)
        for i, frames in enumerate(jpegs):
            capture = 1.7e9 + offset + i
            message = pb.Clip(header=header("default", "bench", clip_id("bench", capture), capture),
                              frames_jpeg=frames, log_mel_f16=log_mel, has_audio=True)
            bus.publish(CLIPS, "bench", message.SerializeToString())
        target = service.clips_embedded + len(jpegs)
        while service.clips_embedded < target:
            service.step()
    return run


def rows(profile: str, batch: int, clip_count: int, decode_threads: int) -> dict[str, Callable[[], object]]:
    """Each row's work on ``clip_count`` clips, in batches of ``batch``."""
    torch.manual_seed(0)
    model = LoadedModel("bench", build_model(profile).eval(), {"profile": profile, "method": "bench"},
                        precision="fp32")
    clips = random_clips(clip_count)
    batches = [clips[i : i + batch] for i in range(0, clip_count, batch)]
    visual, audio = model.model.encoders["visual"], model.model.encoders["audio"]
    frames = np.stack([clip.frames for clip in batches[0]])
    log_mel = torch.from_numpy(np.stack([clip.log_mel for clip in batches[0]]))
    view_input = model.model.visual_input
    if getattr(view_input, "needs_background", False):  # fg: shrunk whole frames minus a background
        frames = view_input.store(frames)
        background = frames[:, 0]
        crops = [view_input.tensor(frames, np.full(len(frames), view), background) for view in range(VIEWS)]
    else:
        crops = [view_input.tensor(frames, np.full(len(frames), view)) for view in range(VIEWS)]

    def before() -> None:
        with (mock.patch.object(CropInput, "tensor", legacy_crop_tensor),
              mock.patch.object(embed, "embed_table", embed.embed_table.__wrapped__)):
            for part in batches:
                model.embed(part)

    def after(loaded: LoadedModel) -> Callable[[], None]:
        def run() -> None:
            for part in batches:
                loaded.embed(part)
        return run

    def forward(encoder: torch.nn.Module, inputs: list[torch.Tensor], bf16: bool = False) -> Callable[[], None]:
        @torch.inference_mode()
        def run() -> None:
            with autocast(torch.device("cpu"), bf16):
                for _ in batches:
                    for tensor in inputs:
                        encoder(tensor)
                    audio(log_mel)
        return run

    uncapped = {name: replace(each, cpu_embed_batch=None) for name, each in PROFILES.items()}

    def as_before(loaded: LoadedModel) -> Callable[[], None]:
        def run() -> None:
            with (mock.patch.object(ForegroundInput, "store", legacy_store),
                  mock.patch.object(media_background, "_median", legacy_median),
                  mock.patch.object(ConvReLU, "forward", unfused),
                  mock.patch.object(encode, "PROFILES", uncapped)):
                after(loaded)()
        return run

    bf16_model = replace(model, precision="bf16", backgrounds=Backgrounds())
    table: dict[str, Callable[[], object]] = {"before": before, "after": after(model), "after, bf16": after(bf16_model)}
    if getattr(view_input, "needs_background", False):
        table[AS_BEFORE] = as_before(replace(model, precision="bf16", backgrounds=Backgrounds()))
    table |= {
        "ceiling: encoders' forward": forward(visual, crops),
        "ceiling: encoders' forward, bf16": forward(visual, crops, bf16=True)}
    pool = getattr(visual, "input_pool", None)
    if isinstance(pool, torch.nn.AvgPool3d):
        unpooled = copy.deepcopy(visual)
        unpooled.input_pool = torch.nn.Identity()
        table["ceiling: forward on pooled input"] = forward(unpooled, [pool(x) for x in crops])
    jpegs = [[encode_jpeg(frame) for frame in clip.frames] for clip in clips]
    table["JPEG decode, full size"] = lambda: [[decode_jpeg(j) for j in clip] for clip in jpegs]
    pool = ThreadPoolExecutor(decode_threads)  # as the embedding service decodes a batch (decode_threads)
    table[f"JPEG decode, full size, {decode_threads} threads"] = lambda: list(
        pool.map(lambda clip: [decode_jpeg(j) for j in clip], jpegs))
    table[f"JPEG decode, draft 1/{DRAFT_SCALE}"] = lambda: [[decode_drafted(j) for j in clip] for clip in jpegs]
    log_mel_f16 = clips[0].log_mel.astype("<f2").tobytes()
    for prefetch, bf16 in ((False, False), (True, False), (True, True)):
        served = LoadedModel("bench", build_model(profile).eval(), {"profile": profile, "method": "bench",
                                                                    "hyperparameters": {"w": 0.5}},
                             precision="bf16" if bf16 else "fp32")
        served.model.load_state_dict(model.model.state_dict())
        table[f"service, embed_prefetch {'on' if prefetch else 'off'}{', bf16' if bf16 else ''}"] = service_run(
            served, jpegs, log_mel_f16, batch, decode_threads, prefetch)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--decode-threads", type=int, default=2, help="threads of the threaded JPEG decode row")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, {os.cpu_count()} CPUs, "
          f"load average {load_average()}")
    table = rows(args.profile, args.batch, args.clips, args.decode_threads)
    timings: dict[str, list[float]] = {name: [] for name in table}
    for run in table.values():
        run()  # warm-up: oneDNN primitives, allocator
    for _ in range(args.rounds):
        for name, run in table.items():
            started = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - started)
    rates = {name: args.clips / statistics.median(seconds) for name, seconds in timings.items()}
    print(f"{args.profile}, batch {args.batch}, {args.clips} clips per round, median of {args.rounds} rounds; "
          f"load average now {load_average()}")
    for name, rate in rates.items():
        print(f"  {name:<36} {rate:8.1f} clips/s  x{rate / rates['before']:.2f} before")
    on, off = rates["service, embed_prefetch on"], rates["service, embed_prefetch off"]
    print(f"  service: embed_prefetch on / off x{on / off:.2f}")
    if AS_BEFORE in rates:
        print(f"  after, bf16 / {AS_BEFORE} x{rates['after, bf16'] / rates[AS_BEFORE]:.2f}")


if __name__ == "__main__":
    main()

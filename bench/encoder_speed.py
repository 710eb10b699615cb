"""Encoder speed on CPU: F_v (X3D, Feichtenhofer 2020) and F_a (ResNet-style) of EPG, both profiles.

    python bench/encoder_speed.py [--threads 2] [--profiles paper tiny] [--batches 1 16] [--repeats 3] [--embedder]

For each profile, encoder and batch size B, in the same run:
- batched: one call on B clips;
- loop baseline: B calls on one clip each (what a naive per-clip pipeline does);
as ms per clip and clips/s, for inference (eval, no grad) and a training step (train mode, forward +
backward). Each figure is the median of ``--repeats`` timings after one warm-up. Then the tiny profile's
training-step target: both encoders forward + backward on a batch of 32 clips.

``--embedder`` measures instead the platform's inference path, ``LoadedModel.embed`` (what the embedding
service calls): whole clips (5 frames of 398x224, cut into two 224x224 crops, and a [1, 128, 64] log-mel)
in, ``z_v`` and ``z_a`` out, in clips/s per batch size, against the same call on one clip at a time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from avsurv.constants import AUDIO_TENSOR_SHAPE, FRAME_HEIGHT, FRAME_WIDTH, FRAMES_PER_CLIP, VIDEO_TENSOR_SHAPE
from avsurv.media.segment import Clip
from avsurv.models import PROFILES, build_model, count_parameters
from avsurv.platform.model_versions import LoadedModel

Step = Callable[[torch.nn.Module, torch.Tensor], None]


def clips(modality: str, batch: int) -> torch.Tensor:
    if modality == "visual":
        return torch.rand(batch, *VIDEO_TENSOR_SHAPE[1:])
    return torch.randn(batch, *AUDIO_TENSOR_SHAPE) * 20 - 40  # dB-like values


def infer(encoder: torch.nn.Module, batch: torch.Tensor) -> None:
    with torch.no_grad():
        encoder(batch)


def train_step(encoder: torch.nn.Module, batch: torch.Tensor) -> None:
    encoder.zero_grad(set_to_none=True)
    (z,) = encoder(batch).values()
    z.pow(2).mean().backward()


def median_seconds(run: Callable[[], object], repeats: int, warm_up: Callable[[], object] | None = None) -> float:
    (warm_up or run)()  # allocator and oneDNN primitive caches (per input shape)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def compare(encoder: torch.nn.Module, step: Step, batch: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Seconds per clip, batched and one clip at a time."""
    n = len(batch)
    batched = median_seconds(lambda: step(encoder, batch), repeats) / n
    looped = median_seconds(lambda: [step(encoder, clip) for clip in batch.split(1)], repeats) / n
    return batched, looped


def report_profile(profile: str, batches: list[int], repeats: int) -> None:
    model = build_model(profile)
    for modality, encoder in model.encoders.items():
        print(f"{profile} {modality}: {count_parameters(encoder):,} parameters")
        for mode, step, training in (("inference", infer, False), ("train step", train_step, True)):
            if training and getattr(PROFILES[profile], modality).standardize:
                print(f"  {mode:<10} skipped: a standardised embedding (BatchNorm over the batch) cannot train on "
                      "one clip at a time, so there is no loop baseline")
                continue
            encoder.train(training)
            for n in batches:
                batched, looped = compare(encoder, step, clips(modality, n), repeats)
                print(
                    f"  {mode:<10} B={n:<3} batched {batched * 1e3:8.1f} ms/clip ({1 / batched:7.1f} clips/s)"
                    f" | loop {looped * 1e3:8.1f} ms/clip ({1 / looped:7.1f} clips/s)"
                    f" | batched/loop x{looped / batched:.2f}"
                )


def tiny_training_target(repeats: int, batch: int = 32) -> None:
    model = build_model("tiny").train()
    inputs = {"visual": clips("visual", batch), "audio": clips("audio", batch)}

    def step() -> None:
        model.zero_grad(set_to_none=True)
        out = model(inputs)
        (out["visual"].pow(2).mean() + out["audio"].pow(2).mean()).backward()

    seconds = median_seconds(step, repeats)
    print(f"tiny training step, both encoders, batch {batch}: {seconds * 1e3:.0f} ms forward+backward")


def random_clips(count: int, seed: int = 0) -> list[Clip]:
    """Clips of random pixels and dB-like log-mels: inference speed does not depend on the content."""
    rng = np.random.default_rng(seed)
    return [Clip(camera_id="bench", start=float(i), capture_time=None, source="random", has_audio=True,
                 frames=rng.integers(0, 256, (FRAMES_PER_CLIP, FRAME_HEIGHT, FRAME_WIDTH, 3), dtype=np.uint8),
                 log_mel=(rng.standard_normal(AUDIO_TENSOR_SHAPE) * 20 - 40).astype(np.float32))
            for i in range(count)]


def embedder_speed(profile: str, batches: Sequence[int], repeats: int, clips_per_run: int) -> dict[str, Any]:
    """Clips/s of ``LoadedModel.embed`` called on batches of each size, and of the baseline: one call per
    clip. Each timing embeds ``clips_per_run`` clips (at least one batch), so B=1 repeats the baseline and
    their ratio shows the timing noise."""
    torch.manual_seed(0)
    model = LoadedModel("bench", build_model(profile).eval(), {"profile": profile, "method": "bench"})
    clips = random_clips(max(*batches, clips_per_run))

    def timed(n: int) -> int:
        return max(n, clips_per_run // n * n)

    def clips_per_s(n: int) -> float:
        seconds = median_seconds(lambda: [model.embed(clips[i : i + n]) for i in range(0, timed(n), n)], repeats,
                                 warm_up=lambda: model.embed(clips[:n]))
        return timed(n) / seconds

    loop = clips_per_s(1)
    batched = {str(n): clips_per_s(n) for n in batches}
    return {"profile": profile, "repeats": repeats, "clips_per_run": clips_per_run, "loop_clips_per_s": loop,
            "batched_clips_per_s": batched, "speedup": {n: rate / loop for n, rate in batched.items()},
            "clips_timed": {str(n): timed(n) for n in batches}}


def report_embedder(profile: str, batches: list[int], repeats: int) -> None:
    result = embedder_speed(profile, batches, repeats, clips_per_run=max(batches))
    print(f"{profile} embedder (LoadedModel.embed), one clip per call: {result['loop_clips_per_s']:.2f} clips/s")
    for n, rate in result["batched_clips_per_s"].items():
        print(f"  B={n:<3} {rate:8.2f} clips/s, x{result['speedup'][n]:.2f} the one-clip loop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=list(PROFILES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--embedder", action="store_true", help="time LoadedModel.embed on whole clips instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, CPU")
    for profile in args.profiles:
        if args.embedder:
            report_embedder(profile, args.batches, args.repeats)
        else:
            report_profile(profile, args.batches, args.repeats)
    if "tiny" in args.profiles and not args.embedder:
        tiny_training_target(args.repeats)


if __name__ == "__main__":
    main()

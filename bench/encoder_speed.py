"""Encoder speed on CPU: F_v (X3D, Feichtenhofer 2020) and F_a (ResNet-style) of EPG, both profiles.

    python bench/encoder_speed.py [--threads 2] [--profiles paper tiny] [--batches 1 16] [--repeats 3]

For each profile, encoder and batch size B, in the same run:
- batched: one call on B clips;
- loop baseline: B calls on one clip each (what a naive per-clip pipeline does);
as ms per clip and clips/s, for inference (eval, no grad) and a training step (train mode, forward +
backward). Each figure is the median of ``--repeats`` timings after one warm-up. Then the tiny profile's
training-step target: both encoders forward + backward on a batch of 32 clips.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from avsurv.constants import AUDIO_TENSOR_SHAPE, VIDEO_TENSOR_SHAPE
from avsurv.models import PROFILES, build_model, count_parameters

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


def median_seconds(run: Callable[[], None], repeats: int) -> float:
    run()  # warm-up: allocator and oneDNN primitive caches
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=list(PROFILES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, CPU")
    for profile in args.profiles:
        report_profile(profile, args.batches, args.repeats)
    if "tiny" in args.profiles:
        tiny_training_target(args.repeats)


if __name__ == "__main__":
    main()

"""Training speed: seconds per epoch per hour of video, per profile and method, and what caching saves.

    python bench/train_speed.py [--seconds 120] [--profiles tiny paper] [--methods epg tpg avbt infonce]

Renders a scene (one camera), then for each profile and method times a layer-wise epoch that trains the
visual encoder (the audio encoder frozen) and three audio-only epochs in a row (the visual encoder
frozen, as in the first phase with --audio-epochs 3), and reports seconds per epoch scaled to one hour of
video. In the same run it times those audio-only epochs with the frozen visual encoder's outputs
recomputed in every batch instead of cached once: the ratio is what caching saves. A cache lives while
its encoder stays frozen, so in alternating epochs (rebuilt every epoch) it saves nothing.
Uses the machine's cores unless --threads is given.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from avsurv.learning.data import load_clips
from avsurv.learning.train import METHODS, TrainConfig, Trainer
from avsurv.models import PROFILES
from avsurv.synth import SceneConfig, generate_scene

AUDIO_EPOCHS = 3
"""Audio-only epochs timed in a row: the frozen visual encoder's cache is built once and reused by all."""


def timed_epochs(table, config: TrainConfig, epochs: tuple[int, ...]) -> float:
    """Mean seconds per epoch over ``epochs`` run in order by one trainer."""
    trainer = Trainer(table, Path(tempfile.mkdtemp()), config, progress=False, log=lambda _: None)
    started = time.perf_counter()
    for epoch in epochs:
        trainer.run_epoch(epoch)
    return (time.perf_counter() - started) / len(epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=120, help="scene length in seconds (default 120)")
    parser.add_argument("--profiles", nargs="+", default=["tiny"], choices=sorted(PROFILES),
                        help="profiles to time (default: tiny; paper takes minutes per epoch on CPU)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods to time")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads, 0 = all cores (default 0)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        generate_scene(SceneConfig(seed=0, duration_s=args.seconds, cameras=1), Path(scratch), progress=False)
        table = load_clips([Path(scratch) / "cam0.mp4"], progress=False)
    hours = len(table) / 3600.0
    threads = torch.get_num_threads()
    print(f"{len(table)} clips ({args.seconds} s of video), batch {args.batch_size}, {threads} threads")
    print(f"{'profile':>8} {'method':>8} {'visual epoch':>14} {'audio epochs':>13} "
          f"{'audio, no cache':>16} {'cache x':>8}")
    for profile in args.profiles:
        for method in args.methods:
            config = TrainConfig(profile=profile, method=method, batch_size=args.batch_size, schedule="layerwise",
                                 audio_epochs=AUDIO_EPOCHS)
            visual = timed_epochs(table, config, (AUDIO_EPOCHS,)) / hours
            audio = timed_epochs(table, config, tuple(range(AUDIO_EPOCHS))) / hours
            uncached = timed_epochs(table, replace(config, cache_frozen=False), tuple(range(AUDIO_EPOCHS))) / hours
            print(f"{profile:>8} {method:>8} {visual:>12.0f} s {audio:>11.0f} s {uncached:>14.0f} s "
                  f"{uncached / audio:>7.2f}x")
    print("(seconds per epoch per hour of video)")


if __name__ == "__main__":
    main()

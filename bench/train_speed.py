"""Training speed: seconds per epoch per hour of video, per profile and method, and what caching saves.

    python bench/train_speed.py [--seconds 120] [--profiles tiny paper] [--methods epg tpg avbt infonce]

Renders a scene (one camera), then for each profile and method times a layer-wise epoch that trains the
visual encoder (the audio encoder frozen) and three audio-only epochs in a row (the visual encoder
frozen, as in the first phase with --audio-epochs 3), and reports seconds per epoch scaled to one hour of
video. In the same run it times the same epochs with the frozen encoder's outputs recomputed in every
batch instead of cached: the ratio is what caching saves. A cache lives while its encoder stays frozen,
so in alternating epochs (rebuilt every epoch) it saves little: each clip's frozen output is still
computed once per epoch instead of once per crop pass.
Uses the machine's cores unless --threads is given.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from avsurv.learning.data import ClipTable, load_clips
from avsurv.learning.train import METHODS, TrainConfig, Trainer
from avsurv.models import PROFILES
from avsurv.synth import SceneConfig, generate_scene

AUDIO_EPOCHS = 3
"""Audio-only epochs timed in a row: the frozen visual encoder's cache is built once and reused by all."""
WARM_UP_CLIPS = 4


def timed_epochs(table: ClipTable, config: TrainConfig, epochs: tuple[int, ...]) -> float:
    """Mean seconds per epoch over ``epochs`` run in order by one trainer."""
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(table, Path(out), config, progress=False, log=lambda _: None)
        started = time.perf_counter()
        for epoch in epochs:
            trainer.run_epoch(epoch)
        return (time.perf_counter() - started) / len(epochs)


def scene_clips(seconds: float) -> ClipTable:
    """The clips of a generated one-camera scene."""
    with tempfile.TemporaryDirectory() as scratch:
        generate_scene(SceneConfig(seed=0, duration_s=seconds, cameras=1), Path(scratch), progress=False)
        return load_clips([Path(scratch) / "cam0.mp4"], progress=False)


def measure(table: ClipTable, profile: str, method: str, batch_size: int = 32) -> dict[str, float | str]:
    """Seconds per epoch per hour of video of the visual epoch and of the audio-only epochs, each next to
    the same epochs with the frozen encoder's outputs recomputed in every batch (the baseline), and the
    ratio: what caching saves."""
    hours = len(table) / 3600.0
    config = TrainConfig(profile=profile, method=method, batch_size=batch_size, schedule="layerwise",
                         audio_epochs=AUDIO_EPOCHS)
    uncached = replace(config, cache_frozen=False)
    # Untimed, on a few clips (TPG: AV-BT needs whole windows): lazy initialisation and the allocator would
    # otherwise be charged to the first timing.
    timed_epochs(table.subset(np.arange(len(table)) < WARM_UP_CLIPS), replace(config, method="tpg"), (AUDIO_EPOCHS,))
    result: dict[str, float | str] = {"profile": profile, "method": method}
    for phase, epochs in (("visual", (AUDIO_EPOCHS,)), ("audio", tuple(range(AUDIO_EPOCHS)))):
        cached_s = timed_epochs(table, config, epochs) / hours
        uncached_s = timed_epochs(table, uncached, epochs) / hours
        result |= {f"{phase}_epoch_s_per_hour": cached_s, f"{phase}_epoch_uncached_s_per_hour": uncached_s,
                   f"{phase}_cache_speedup": uncached_s / cached_s}
    return result


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
    table = scene_clips(args.seconds)
    print(f"{len(table)} clips ({args.seconds} s of video), batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"{'profile':>8} {'method':>8} {'visual epoch':>13} {'no cache':>10} {'cache x':>8} "
          f"{'audio epochs':>13} {'no cache':>10} {'cache x':>8}")
    for profile in args.profiles:
        for method in args.methods:
            r = measure(table, profile, method, args.batch_size)
            print(f"{profile:>8} {method:>8}" + "".join(
                f" {r[f'{phase}_epoch_s_per_hour']:>11.0f} s {r[f'{phase}_epoch_uncached_s_per_hour']:>8.0f} s"
                f" {r[f'{phase}_cache_speedup']:>7.2f}x" for phase in ("visual", "audio")))
    print("(seconds per epoch per hour of video)")


if __name__ == "__main__":
    main()

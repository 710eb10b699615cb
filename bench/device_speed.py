"""Training and embedding speed of each profile on a device, fp32 against bf16 autocast, in one run.

    python bench/device_speed.py [--device auto] [--clips 512] [--profiles fg tiny paper] [--epochs 2]

Synthetic clips (random frames and log-mels: speed does not depend on content) go through the real
``Trainer`` (TPG, the default batch size) and the real embedding path (``encode_table``: both views,
then audio). Prints clips/s of the second training epoch (the first pays for CUDA start-up and
autotuning) and of embedding, with bf16 on and off, so the ratio is measured on the same machine (on a CPU,
``--device cpu``: whether it has Intel AMX decides the ``auto`` precision, and is printed). Made first
for the lent GPU machines, which have no PyAV: nothing here decodes media, so a missing ``av`` module is
replaced by an empty one before avsurv is imported.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
import types
from pathlib import Path

if importlib.util.find_spec("av") is None:
    sys.modules["av"] = types.ModuleType("av")  # avsurv.media imports PyAV; this script never decodes

import numpy as np
import torch

from avsurv.constants import AUDIO_TENSOR_SHAPE, CLIP_FRAMES_SHAPE
from avsurv.learning.data import ClipTable
from avsurv.learning.encode import encode_table
from avsurv.learning.train import TrainConfig, Trainer
from avsurv.media.background import Backgrounds
from avsurv.models.device import cpu_has_amx, resolve_device
from avsurv.models.profiles import PROFILES


def synthetic_table(profile: str, clips: int, seed: int = 0) -> ClipTable:
    rng = np.random.default_rng(seed)
    visual = PROFILES[profile].input
    frames = visual.store(rng.integers(0, 256, (clips, *CLIP_FRAMES_SHAPE), dtype=np.uint8))
    backgrounds = Backgrounds()
    background = np.stack([backgrounds.observe("cam0", f) for f in frames]) if visual.needs_background else None
    times = np.arange(clips, dtype=np.float64)
    return ClipTable(frames=frames, log_mel=rng.normal(-40, 20, (clips, *AUDIO_TENSOR_SHAPE)).astype(np.float32),
                     times=times, starts=times, capture_times=times, source_index=np.zeros(clips, np.int64),
                     has_audio=np.ones(clips, bool), clip_ids=[f"cam0:{i}" for i in range(clips)],
                     camera_ids=["cam0"] * clips, sources=["synthetic"] * clips, background=background)


def measure(profile: str, table: ClipTable, device: str, precision: str, epochs: int) -> dict[str, float]:
    config = TrainConfig(profile=profile, method="tpg", epochs=epochs, device=device, precision=precision,
                         precise_bn_clips=0)
    bf16 = precision == "bf16"
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(table, Path(scratch) / "m", config, progress=False, log=lambda _: None)
        seconds = [trainer.run_epoch(epoch).seconds for epoch in range(epochs)]
    model = trainer.model
    encode_table(model, table.subset(np.arange(min(64, len(table)))), bf16=bf16)  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    encode_table(model, table, batch_size=128, bf16=bf16)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    embed_s = time.perf_counter() - started
    return {"train_clips_per_s": len(table) / seconds[-1], "embed_clips_per_s": len(table) / embed_s,
            "epoch_s": seconds[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--clips", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--profiles", nargs="+", default=["fg", "tiny", "paper"], choices=sorted(PROFILES))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, AMX {cpu_has_amx()}"
    print(f"device: {name}; torch {torch.__version__}, {torch.get_num_threads()} threads; {args.clips} synthetic "
          "clips; TPG, batch 32", flush=True)
    results = {}
    for profile in args.profiles:
        table = synthetic_table(profile, args.clips)
        for precision in ("fp32", "bf16"):
            figures = measure(profile, table, device.type, precision, args.epochs)
            results[f"{profile}-{precision}"] = figures
            print(f"{profile:6s} {precision}: training {figures['train_clips_per_s']:8.1f} clips/s "
                  f"(epoch {figures['epoch_s']:.2f} s), embedding {figures['embed_clips_per_s']:8.1f} clips/s",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": name, "clips": args.clips, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Retention and bounded memory (issue 17 item 5): a fast-forwarded day of 8 cameras against the same day with
retention off, and the trainer's memory streaming the store against loading it whole.

    python bench/retention.py [--cameras 8] [--hours 24] [--clip-every-s 60] [--train-clips 160]

Scaled down, the same rules: each camera's generated clips (real ``avsurv.v1.Clip`` messages: five JPEG
frames, log-mel and PCM audio) are replayed into a clip store with capture times advancing ``--clip-every-s``
seconds per clip, not paced, and each clip's vectors go into two model versions' collections of the embedded
HNSW store. Every camera has a 5-clip anomaly event every two hours, recorded in the registry. Retention
(:mod:`avsurv.platform.retention`: 6 hours, 12 for events' clips, ``--gb-per-camera``) runs every 10 minutes
of capture time, as ``retention_every_s`` would; the store's size is measured just before each pass (its
peak) and after. The baseline replays the same clips with retention off. Then the trainer trains one epoch
(``tiny`` profile, whose working set keeps whole frames, 1.3 MB a clip) on ``--train-clips`` of the kept
clips streamed in working sets of ``--train-max-clips``, against the same clips in one working set (all in
memory, as before streaming); the peak is what tracemalloc traced (numpy's frames; torch's tensors are not
traced), after a warm-up run.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from avsurv.adapters.state import close_state, connect_state
from avsurv.adapters.vectors import Point, collection_name, open_vectors
from avsurv.clipids import clip_id
from avsurv.constants import EMBEDDING_DIM, FRAME_HEIGHT, FRAME_WIDTH, FRAMES_PER_CLIP, MEL_FRAMES, N_MELS
from avsurv.learning.data import WorkingSets
from avsurv.learning.train import TrainConfig, Trainer
from avsurv.media.segment import CLIP_SAMPLES, Clip
from avsurv.models.profiles import PROFILES
from avsurv.platform.archive import ClipArchive
from avsurv.platform.config import Settings
from avsurv.platform.messages import clip_to_message, header
from avsurv.platform.registry import Registry
from avsurv.platform.retention import GB, Retention
from avsurv.v1 import messages_pb2 as pb

START = 1_767_225_600.0
SITE = "bench"
VERSIONS = ("v1", "v2")
PASS_EVERY_S = 600.0
EVENT_EVERY_S = 7200.0
EVENT_CLIPS = 5
RETENTION_DAYS, EVENT_RETENTION_DAYS = 0.25, 0.5


def template(camera: int, rng: np.random.Generator) -> pb.Clip:
    """A camera's clip: a street (gradient and fine noise) with a bright vehicle, a tone and some noise."""
    rows = np.linspace(40, 200, FRAME_HEIGHT)[:, None, None]
    street = np.clip(rows + rng.normal(0, 6, (FRAME_HEIGHT, FRAME_WIDTH, 3)), 0, 255).astype(np.uint8)
    frames = np.repeat(street[None], FRAMES_PER_CLIP, axis=0)
    for t in range(FRAMES_PER_CLIP):
        frames[t, 100:150, 40 * t + 20 * camera:40 * t + 20 * camera + 90] = 230
    audio = (0.1 * np.sin(np.arange(CLIP_SAMPLES) * 0.05 * (camera + 1)) + rng.normal(0, 0.02, CLIP_SAMPLES))
    log_mel = rng.normal(-40, 5, (1, N_MELS, MEL_FRAMES)).astype(np.float32)
    clip = Clip(f"cam{camera}", 0.0, START, "bench", True, frames, log_mel, audio.astype(np.float32))
    return clip_to_message(clip, SITE)


def store_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*.pb"))


def replay(root: Path, args: argparse.Namespace, retain: bool) -> dict[str, float]:
    """One fast-forwarded run; returns its measurements."""
    rng = np.random.default_rng(0)
    templates = [template(camera, rng) for camera in range(args.cameras)]
    archive = ClipArchive(root / "clips")
    vectors = open_vectors(f"local://{root / 'vectors'}")
    state = connect_state(f"embedded://{root / 'state.db'}")
    registry = Registry(state, SITE)
    settings = Settings(data_dir=root, site=SITE, retention_days=RETENTION_DAYS if retain else 0,
                        event_retention_days=EVENT_RETENTION_DAYS if retain else 0,
                        retention_gb_per_camera=args.gb_per_camera if retain else 0)
    retention = Retention(archive, vectors, registry, settings)
    for version in VERSIONS:
        vectors.ensure_collection(collection_name(SITE, version))
    clips_per_pass = round(PASS_EVERY_S / args.clip_every_s)
    total = round(args.hours * 3600 / args.clip_every_s)
    peak, passes, seconds_in_passes, events = 0, 0, 0.0, 0
    started = time.perf_counter()
    for first in range(0, total, clips_per_pass):
        points = []
        for n in range(first, min(first + clips_per_pass, total)):
            captured = START + n * args.clip_every_s
            for camera, message in enumerate(templates):
                name = f"cam{camera}"
                message.header.CopyFrom(header(SITE, name, clip_id(name, captured), captured))
                archive.put(message)
                points.append(Point(message.header.clip_id, rng.normal(size=EMBEDDING_DIM).astype(np.float32),
                                    rng.normal(size=EMBEDDING_DIM).astype(np.float32),
                                    {"camera_id": name, "capture_time": captured}))
                if (n * args.clip_every_s) % EVENT_EVERY_S == 0 and n >= EVENT_CLIPS:
                    span = [clip_id(name, captured - k * args.clip_every_s) for k in range(EVENT_CLIPS, 0, -1)]
                    begins = captured - EVENT_CLIPS * args.clip_every_s
                    event = pb.AnomalyEvent(header=header(SITE, name, span[0], begins), event_id=f"{name}-{n}",
                                            clip_ids=span, start_time=begins,
                                            end_time=captured - args.clip_every_s + 1)
                    registry.record_event(event.event_id, event.start_time, event.SerializeToString())
                    events += 1
        for version in VERSIONS:
            vectors.upsert(collection_name(SITE, version), version, points)
        peak = max(peak, store_bytes(archive.files.root))
        if retain:
            begun = time.perf_counter()
            retention.run()
            seconds_in_passes += time.perf_counter() - begun
            passes += 1
    stored = set(archive.clip_ids())
    indexed = [{hit.payload["clip_id"] for camera in range(args.cameras)
                for hit in vectors.window(collection_name(SITE, version), f"cam{camera}", 0.0, 2 * START)}
               for version in VERSIONS]
    held = {c for payload in registry.events_since(0.0) for c in pb.AnomalyEvent.FromString(payload).clip_ids}
    newest = START + (total - 1) * args.clip_every_s
    old = {c for c in stored if newest - int(c.rpartition(":")[2]) / 1000 > RETENTION_DAYS * 86_400}
    result = {
        "clips_written": total * args.cameras, "events": events, "clips_kept": len(stored),
        "peak_gb": peak / GB, "final_gb": store_bytes(archive.files.root) / GB,
        "vectors_kept": sum(map(len, indexed)), "vectors_without_clip": sum(len(i - stored) for i in indexed),
        "clips_older_than_6h_kept": len(old), "of_them_event_clips": len(old & held),
        "passes": passes, "ms_per_pass": 1000 * seconds_in_passes / max(passes, 1),
        "seconds": time.perf_counter() - started,
    }
    vectors.close()
    close_state(state)
    return result


def trainer_peak(archive: ClipArchive, clip_ids: list[str], most: int, out: Path) -> tuple[float, float]:
    """(MB traced at the peak of one epoch and its calibration pass, seconds)."""
    config = TrainConfig(profile="tiny", method="tpg", epochs=1, batch_size=32, precise_bn_clips=64)
    visual = PROFILES["tiny"].input
    tracemalloc.start()
    started = time.perf_counter()
    Trainer(WorkingSets(archive, clip_ids, visual, max_clips=most), out, config, progress=False,
            log=lambda _: None).run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1e6, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--clip-every-s", type=float, default=60.0, help="capture seconds between two clips")
    parser.add_argument("--gb-per-camera", type=float, default=0.06)
    parser.add_argument("--train-clips", type=int, default=96)
    parser.add_argument("--train-max-clips", type=int, default=24)
    args = parser.parse_args()
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"revision {revision}, {time.strftime('%Y-%m-%d', time.gmtime())}; {args.cameras} cameras, "
          f"{args.hours:g} h of capture time, a clip every {args.clip_every_s:g} s; "
          f"retention {RETENTION_DAYS * 24:g} h, "
          f"events' clips {EVENT_RETENTION_DAYS * 24:g} h, {args.gb_per_camera:g} GB per camera "
          f"(bound {args.cameras * args.gb_per_camera:.3f} GB), a pass every {PASS_EVERY_S:g} s of capture time")
    with tempfile.TemporaryDirectory(prefix="avsurv-retention-") as scratch:
        runs = {}
        for name, retain in (("retention off (baseline)", False), ("retention on", True)):
            runs[name] = replay(Path(scratch) / name.split()[1], args, retain)
        bound = args.cameras * args.gb_per_camera
        within = {name: run["peak_gb"] <= bound for name, run in runs.items()}
        print(f"peak within the bound ({bound:.3f} GB): {within}")
        keys = list(next(iter(runs.values())))
        print("\n| measure | " + " | ".join(runs) + " |\n|---|" + "---:|" * len(runs))
        for key in keys:
            cells = [f"{r[key]:.3f}" if isinstance(r[key], float) else str(r[key]) for r in runs.values()]
            print(f"| {key} | " + " | ".join(cells) + " |")
        archive = ClipArchive(Path(scratch) / "on" / "clips")
        ids = [c for camera in range(args.cameras) for c in archive.clip_ids(f"cam{camera}")[-(args.train_clips
                                                                                             // args.cameras):]]
        per_clip = (FRAMES_PER_CLIP * FRAME_HEIGHT * FRAME_WIDTH * 3 + N_MELS * MEL_FRAMES * 4) / 1e6
        trainer_peak(archive, ids[:8], 8, Path(scratch) / "warm")  # imports and builds what any run does
        print(f"\ntrainer, one epoch on {len(ids)} kept clips ({per_clip:.2f} MB of frames and log-mel each):")
        print("| working sets | peak traced MB | clips' worth | seconds |\n|---|---:|---:|---:|")
        for label, most in (("all in memory (baseline)", len(ids)), (f"streamed, {args.train_max_clips} a set",
                                                                      args.train_max_clips)):
            peak, seconds = trainer_peak(archive, ids, most, Path(scratch) / f"model-{most}")
            print(f"| {label} | {peak:.0f} | {peak / per_clip:.1f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()

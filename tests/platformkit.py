"""Helpers for the platform tests: a small generated scene, models to serve, service processes, and
waiting on conditions."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from avsurv.learning.modeldir import MODEL_FORMAT, save_model
from avsurv.models import build_model
from avsurv.synth import SceneConfig, generate_scene


def small_scene(out: Path, duration_s: float = 20, cameras: int = 2, seed: int = 5) -> Path:
    generate_scene(SceneConfig(seed=seed, duration_s=duration_s, cameras=cameras, width=320, height=180,
                               weather="clear"), out, progress=False)
    return out


def untrained_model(out: Path, seed: int, w: float = 0.5, profile: str = "tiny") -> Path:
    """A model (``tiny`` by default: the quickest) with seeded random weights, as if trained with the Eq. 5
    weight ``w``: the pipeline's mechanics do not depend on training."""
    torch.manual_seed(seed)
    save_model(build_model(profile).eval(), out, {"format": MODEL_FORMAT, "profile": profile, "method": "epg",
                                                  "hyperparameters": {"w": w}, "seed": seed})
    return out


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


class Service:
    """One platform service as its own process (``avsurv serve NAME``), logging to ``logs/NAME.START.log``."""

    def __init__(self, name: str, env: dict[str, str], logs: Path) -> None:
        self.name, self.env, self.logs = name, env, logs
        self.port = int(env["AVSURV_GRPC_PORT"])
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.logs / f"{self.name}.{self.starts}.log", "w")  # noqa: SIM115 (closed with the process)
        self.process = subprocess.Popen([sys.executable, "-m", "avsurv.cli", "serve", self.name], env=self.env,
                                        stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return None

    def serving(self) -> bool:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
            return reply.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False


def start_services(services: dict[str, Service]) -> None:
    """The embedder first (it creates the topics and publishes the model), ingest last, so that the cameras'
    seconds go by while everything runs."""
    services["embedding"].start()
    wait_for(services["embedding"].serving, 90, "the embedding service to serve")
    for service in services.values():
        if service.name not in ("embedding", "ingest"):
            service.start()
    wait_for(lambda: all(s.serving() for s in services.values() if s.name != "ingest"), 120, "the services to serve")
    services["ingest"].start()

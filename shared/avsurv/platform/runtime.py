"""Wiring: the ports chosen by configuration, the services by name, and the process that runs them
(``avsurv serve NAME`` for one service, ``avsurv run`` for all six in one process)."""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import start_http_server

from avsurv.adapters.artifacts import DirectoryArtifacts
from avsurv.adapters.bus import Bus, InProcessBus, InProcessSubscription
from avsurv.adapters.kafka_bus import KafkaBus
from avsurv.adapters.state import close_state, connect_state
from avsurv.adapters.vectors import QdrantVectors
from avsurv.platform.anomaly import AnomalyService
from avsurv.platform.api import AnomaliesServicer, ControlServicer, SearchServicer, serve_grpc
from avsurv.platform.archive import ClipArchive
from avsurv.platform.config import Settings
from avsurv.platform.embedding import EmbeddingService
from avsurv.platform.heads import attach_head
from avsurv.platform.ingest import IngestService
from avsurv.platform.messages import TOPICS
from avsurv.platform.models import publish_model
from avsurv.platform.registry import Registry
from avsurv.platform.segmentation import SegmentationService
from avsurv.platform.trainer import TrainerService
from avsurv.platform.worker import Worker

SERVICES = ("ingest", "segmentation", "embedding", "trainer", "anomaly-detector", "search")
log = logging.getLogger("avsurv")


@dataclass
class Ports:
    bus: Bus
    registry: Registry
    artifacts: DirectoryArtifacts
    archive: ClipArchive
    vectors: QdrantVectors | None = None

    def close(self) -> None:
        self.bus.close()
        if self.vectors is not None:
            self.vectors.close()
        close_state(self.registry.state)


def open_bus(settings: Settings, embedded: bool) -> Bus:
    if settings.bus.startswith("inprocess://"):
        if not embedded:
            raise ValueError("the in-process bus only joins services of one process: use avsurv run, "
                             "or set AVSURV_BUS=kafka://HOST:PORT")
        return InProcessBus(settings.partitions)
    if settings.bus.startswith("kafka://"):
        bus = KafkaBus(settings.bus.removeprefix("kafka://"), partitions=settings.partitions,
                       max_poll_interval_ms=settings.kafka_max_poll_interval_ms)
        bus.ensure_topics(TOPICS)
        return bus
    raise ValueError(f"bus must be inprocess:// or kafka://HOST:PORT, got {settings.bus!r}")


def open_ports(settings: Settings, services: Sequence[str], embedded: bool) -> Ports:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    needs_vectors = {"embedding", "search"} & set(services)
    ports = Ports(
        bus=open_bus(settings, embedded),
        registry=Registry(connect_state(settings.state_url), settings.site),
        artifacts=DirectoryArtifacts(settings.artifacts_dir),
        archive=ClipArchive(settings.clip_store_dir),
        vectors=QdrantVectors(settings.vectors_url) if needs_vectors else None,
    )
    if settings.model and not ports.registry.models():
        record = publish_model(Path(settings.model), ports.registry, ports.artifacts, ports.bus)
        log.info("published %s as the first model version %s", settings.model, record.version)
    for camera_id, directories in settings.heads.items():
        for directory in directories:
            head = attach_head(Path(directory), camera_id, ports.registry, ports.artifacts)
            log.info("attached head %s (%s) to %s", head.name, directory, camera_id)
    return ports


def build_workers(names: Sequence[str], ports: Ports, settings: Settings) -> dict[str, Worker]:
    cache = settings.data_dir / "model-cache"
    makers: dict[str, Callable[[], Worker]] = {
        "ingest": lambda: IngestService(ports.bus, ports.registry, settings),
        "segmentation": lambda: SegmentationService(ports.bus, ports.archive, settings.site),
        "embedding": lambda: EmbeddingService(ports.bus, ports.vectors, ports.registry, ports.artifacts,
                                              ports.archive, settings),
        "trainer": lambda: TrainerService(ports.bus, ports.registry, ports.artifacts, ports.archive, settings),
        "anomaly-detector": lambda: AnomalyService(ports.bus, ports.registry, ports.artifacts, cache,
                                                   settings.anomaly_run_idle_s, settings.anomaly_stds),
    }
    return {name: makers[name]() for name in names if name in makers}


class Runtime:
    """Runs services in this process: their loops, one gRPC server (the API when ``search`` is among
    them; health checking and reflection always) and optionally a Prometheus endpoint."""

    def __init__(self, names: Sequence[str], settings: Settings, embedded: bool) -> None:
        unknown = sorted(set(names) - set(SERVICES))
        if unknown:
            raise ValueError(f"unknown services {unknown}; the services are {', '.join(SERVICES)}")
        self.names, self.settings = list(names), settings
        # Before the bus and the stores are opened: an unreachable Kafka would otherwise hide what it was told.
        log.info("avsurv %s: configuration %s", "+".join(self.names), json.dumps(settings.printable()))
        self.ports = open_ports(settings, names, embedded)
        self.workers = build_workers(names, self.ports, settings)
        self.stopped = threading.Event()
        servicers: dict[str, object] = {}
        if "search" in names:
            assert self.ports.vectors is not None
            servicers = {
                "EventSearch": SearchServicer(self.ports.vectors, self.ports.registry, self.ports.artifacts,
                                              settings.data_dir / "model-cache", settings.device),
                "Anomalies": AnomaliesServicer(self.ports.registry),
                "Control": ControlServicer(self.ports.registry),
            }
        checks = {f"avsurv.{name}": worker.healthy for name, worker in self.workers.items()}
        if "search" in names:
            checks["avsurv.search"] = lambda: not self.stopped.is_set()
        self.server, self.port, self._refresh_health = serve_grpc(settings.grpc_port, servicers, checks)
        if settings.metrics_port:
            start_http_server(settings.metrics_port)

    def start(self) -> None:
        for worker in self.workers.values():
            worker.start()
        self._refresh_health()
        threading.Thread(target=self._watch_health, name="health", daemon=True).start()
        log.info("gRPC (health, reflection%s) on port %d", ", API" if "search" in self.names else "", self.port)

    def drained(self) -> bool:
        """Every camera's file is read and every message on the in-process bus is handled (an embedder
        without a model yet is not waited for)."""
        if "ingest" in self.workers and not self.workers["ingest"].finished():
            return False
        for worker in self.workers.values():
            subscription, tracker = getattr(worker, "subscription", None), getattr(worker, "tracker", None)
            if isinstance(worker, EmbeddingService) and worker.serving is None and worker.swap is None:
                continue
            if isinstance(subscription, InProcessSubscription) and (subscription.waiting() or tracker.pending()):
                return False
            if isinstance(worker, AnomalyService) and worker.runs:
                return False
        return True

    def _watch_health(self) -> None:
        while not self.stopped.wait(1.0):
            self._refresh_health()

    def wait(self, until: Callable[[], bool] | None = None, poll_s: float = 1.0) -> None:
        """Blocks until :meth:`stop`, SIGINT/SIGTERM, or ``until()`` holds."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: self.stopped.set())
        try:
            while not self.stopped.wait(poll_s):
                if until is not None and until():
                    break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop(self) -> None:
        """Graceful: the loops stop between messages (uncommitted work is redelivered), then the server."""
        self.stopped.set()
        self._refresh_health()
        for worker in self.workers.values():
            worker.stopping.set()
        for worker in self.workers.values():
            worker.stop()
        self.server.stop(grace=5).wait()
        self.ports.close()

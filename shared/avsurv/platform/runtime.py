"""Wiring: the ports chosen by configuration, the services by name, and the process that runs them
(``avsurv serve NAME`` for one service, ``avsurv run`` for all six in one process).

A service is the package ``avsurv.services.<name>`` (``services/<name>/``), imported by name only when
this process runs it: ``avsurv serve ingest`` loads neither torch nor qdrant-client. Its
``build(ports, settings)`` returns its :class:`ServiceParts`."""

from __future__ import annotations

import importlib
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from kafka.errors import KafkaError
from prometheus_client import start_http_server

from avsurv.adapters.artifacts import Artifacts
from avsurv.adapters.bus import Bus, InProcessBus
from avsurv.adapters.kafka_bus import KafkaBus
from avsurv.adapters.state import close_state, connect_state
from avsurv.platform.archive import ClipArchive, open_archive, open_artifacts
from avsurv.platform.auth import TokenInterceptor, configured_tokens
from avsurv.platform.config import ConfigError, Settings
from avsurv.platform.grpc_server import serve_grpc
from avsurv.platform.messages import TOPICS
from avsurv.platform.registry import Registry
from avsurv.platform.worker import Worker

if TYPE_CHECKING:
    import redis

    from avsurv.adapters.vectors import QdrantVectors

SERVICES = ("ingest", "segmentation", "embedding", "trainer", "anomaly-detector", "search")
LIVENESS = "avsurv.liveness"
"""Health service name that is SERVING while the process serves and its loops run, whatever its
dependencies do: the liveness probe's (readiness asks the overall status, which a failing dependency
turns NOT_SERVING, and an outage of Redis must not restart every pod)."""
VECTOR_SERVICES = ("embedding", "search")
KAFKA_START_WAIT_S = 240.0
"""How long a service keeps trying Kafka at start before it exits: a broker that comes up after the services,
or restarts, delays them instead of crash-looping them. Under the startup probe's 300 s (k8s/base/services.yaml)."""
KAFKA_RETRY_S = 5.0
log = logging.getLogger("avsurv")


@dataclass
class Ports:
    bus: Bus
    registry: Registry
    artifacts: Artifacts
    archive: ClipArchive
    vectors: QdrantVectors | None = None
    """Opened by the first service that uses it (embedding, search): one client per process, since Qdrant's
    local mode locks its directory."""

    def close(self) -> None:
        self.bus.close()
        if self.vectors is not None:
            self.vectors.close()
        close_state(self.registry.state)


@dataclass(frozen=True)
class ServiceParts:
    """What a service adds to the process: a loop, gRPC API servicers (by service name in api.proto), or
    both."""

    worker: Worker | None = None
    servicers: dict[str, object] = field(default_factory=dict)


def open_bus(settings: Settings, embedded: bool) -> Bus:
    if settings.bus.startswith("inprocess://"):
        if not embedded:
            raise ValueError("the in-process bus only joins services of one process: use avsurv run, "
                             "or set AVSURV_BUS=kafka://HOST:PORT")
        return InProcessBus(settings.partitions)
    if settings.bus.startswith("kafka://"):
        bus = KafkaBus(settings.bus.removeprefix("kafka://"), partitions=settings.partitions,
                       replication_factor=settings.kafka_replication_factor,
                       max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
                       security=settings.kafka_client_options())
        ensure_topics_when_up(bus)
        return bus
    raise ValueError(f"bus must be inprocess:// or kafka://HOST:PORT, got {settings.bus!r}")


def ensure_topics_when_up(bus: KafkaBus, wait_s: float = KAFKA_START_WAIT_S, retry_s: float = KAFKA_RETRY_S) -> None:
    """Creates the topics once Kafka answers, trying for ``wait_s`` (each try waits for the client's bootstrap)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            bus.ensure_topics(TOPICS)
            return
        except KafkaError as error:
            hint = bus.login_hint()
            if time.monotonic() + retry_s > deadline:
                raise type(error)(f"{error}; {hint}" if hint else str(error)) from error
            log.warning("kafka at %s: %s%s; trying again in %.0f s", bus.bootstrap_servers, error,
                        f" ({hint})" if hint else "", retry_s)
            time.sleep(retry_s)


def open_state(settings: Settings) -> redis.Redis:
    """The state store with the configured password and TLS CA."""
    return connect_state(settings.state_url, password=settings.state_password.get_secret_value(),
                         tls_cafile=settings.state_tls_cafile)


def open_server_vectors(settings: Settings) -> QdrantVectors | None:
    """A Qdrant server's client with the configured API key and replication; None for local mode, which the
    first service using it opens (it locks its directory)."""
    if not settings.vectors.startswith(("http://", "https://")):
        return None
    from avsurv.adapters.vectors import open_vectors  # qdrant-client only where a service uses it

    return open_vectors(settings.vectors, api_key=settings.vectors_api_key.get_secret_value(),
                         replication_factor=settings.vectors_replication_factor)


def open_ports(settings: Settings, embedded: bool) -> Ports:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ports = Ports(
        bus=open_bus(settings, embedded),
        registry=Registry(open_state(settings), settings.site),
        artifacts=open_artifacts(settings),
        archive=open_archive(settings),
    )
    # Imported here: reading a model or head directory loads torch, which only a process told to
    # publish one needs.
    if settings.model and not ports.registry.models():
        from avsurv.platform.model_versions import publish_model

        record = publish_model(Path(settings.model), ports.registry, ports.artifacts, ports.bus)
        log.info("published %s as the first model version %s", settings.model, record.version)
    if settings.heads:
        from avsurv.platform.head_attachments import attach_head

        for camera_id, directories in settings.heads.items():
            for directory in directories:
                head = attach_head(Path(directory), camera_id, ports.registry, ports.artifacts)
                log.info("attached head %s (%s) to %s", head.name, directory, camera_id)
    return ports


def build_service(name: str, ports: Ports, settings: Settings) -> ServiceParts:
    """Imports the service's package (``anomaly-detector``: ``avsurv.services.anomaly_detector``) and builds it."""
    module = importlib.import_module(f"avsurv.services.{name.replace('-', '_')}")
    return module.build(ports, settings)


def bind_address(settings: Settings, embedded: bool) -> str:
    """``grpc_host`` if set; else loopback for one machine's process (``avsurv run``, the demo) and every
    interface for ``avsurv serve`` (a container, reached over its network)."""
    return settings.grpc_host or ("127.0.0.1" if embedded else "[::]")


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS from the configured certificate chain and key files, None without them."""
    if not settings.grpc_tls_cert:
        return None
    try:
        pair = (Path(settings.grpc_tls_key).read_bytes(), Path(settings.grpc_tls_cert).read_bytes())
    except OSError as error:
        raise ConfigError(f"cannot read the gRPC TLS files: {error}") from None
    return grpc.ssl_server_credentials([pair])


def start_dashboard(settings: Settings, host: str, grpc_port: int) -> Any | None:
    """The web dashboard (``services/dashboard``, loaded by name like a service) as a client of the API on
    ``grpc_port``; None when ``dashboard_port`` is 0 or taken: the platform runs on without it."""
    if not settings.dashboard_port:
        return None
    dashboard = importlib.import_module("avsurv.services.dashboard")
    try:
        return dashboard.serve_embedded(host, grpc_port, settings.dashboard_port, settings.grpc_tls_cert,
                                        settings.dashboard_hosts)
    except OSError as error:
        log.warning("no dashboard: cannot listen on %s port %d: %s", host, settings.dashboard_port, error.strerror)
        return None


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
        self.ports = open_ports(settings, embedded)
        if set(VECTOR_SERVICES) & set(self.names):
            self.ports.vectors = open_server_vectors(settings)
        parts = {name: build_service(name, self.ports, settings) for name in self.names}
        self.workers: dict[str, Worker] = {name: p.worker for name, p in parts.items() if p.worker is not None}
        self.stopped = threading.Event()
        servicers = {key: servicer for p in parts.values() for key, servicer in p.servicers.items()}
        # A service without a loop (search) is healthy while the process serves.
        checks = {f"avsurv.{name}": p.worker.healthy if p.worker is not None else self._serving
                  for name, p in parts.items()}
        checks[LIVENESS] = self._alive
        tokens, self.host = configured_tokens(settings), bind_address(settings, embedded)
        self.server, self.port, self._refresh_health = serve_grpc(
            settings.grpc_port, servicers, checks, self.host, server_credentials(settings),
            [TokenInterceptor(tokens)] if tokens else [])
        self.secured = f"{'TLS' if settings.grpc_tls_cert else 'no TLS'}, {'tokens' if tokens else 'no tokens'}"
        self.serves_api = bool(servicers)
        self.dashboard = start_dashboard(settings, self.host, self.port) if embedded and self.serves_api else None
        if settings.metrics_port:
            start_http_server(settings.metrics_port)

    def _serving(self) -> bool:
        return not self.stopped.is_set()

    def _alive(self) -> bool:
        """Serving, with every loop running (a loop whose steps fail is alive: it retries)."""
        return self._serving() and all(worker.is_alive() for worker in self.workers.values())

    def start(self) -> None:
        for worker in self.workers.values():
            worker.start()
        self._refresh_health()
        threading.Thread(target=self._watch_health, name="health", daemon=True).start()
        log.info("gRPC (health, reflection%s; %s) on %s port %d", ", API" if self.serves_api else "", self.secured,
                 self.host, self.port)
        if self.dashboard is not None:
            log.info("dashboard on %s", self.dashboard.url)

    def drained(self) -> bool:
        """Every worker has done what it was given (see :meth:`Worker.drained`)."""
        return all(worker.drained() for worker in self.workers.values())

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
        if self.dashboard is not None:
            self.dashboard.stop()
        self.server.stop(grace=5).wait()
        self.ports.close()

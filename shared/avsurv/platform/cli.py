"""``avsurv serve NAME`` (one service per process, the distributed deployment) and ``avsurv run`` (all six
services in one process: in-process bus, Qdrant local mode, embedded Redis)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import redis

from avsurv.adapters.artifacts import Artifacts
from avsurv.adapters.state import close_shared_state
from avsurv.clisupport import reports_errors
from avsurv.errors import TaskError
from avsurv.heads.training import TrainedHead
from avsurv.platform.archive import open_artifacts
from avsurv.platform.auth import operator_channel
from avsurv.platform.config import ConfigError, Settings, group_heads, load_settings
from avsurv.platform.head_attachments import HEADS_REFRESH_S, NAME_PATTERN, attach_head, event_labels
from avsurv.platform.registry import Registry
from avsurv.platform.runtime import SERVICES, Runtime, open_state
from avsurv.v1 import api_pb2, api_pb2_grpc


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s",
                        stream=sys.stderr)
    logging.getLogger("kafka").setLevel(logging.WARNING)  # kafka-python logs every connection at INFO


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    return load_settings(args.config, **overrides)


def run_serve(args: argparse.Namespace) -> int:
    _logging()
    try:
        settings = _settings(args)
    except ConfigError as error:
        print(f"avsurv serve: error: {error}", file=sys.stderr)
        return 2
    runtime = Runtime([args.service], settings, embedded=False)
    runtime.start()
    try:
        runtime.wait()
    finally:
        runtime.stop()
    return 0


def _pair(form: str) -> Callable[[str], tuple[str, str]]:
    """An argparse type for ``NAME=VALUE`` arguments, named ``form`` in its error."""

    def parse(text: str) -> tuple[str, str]:
        name, sep, value = text.partition("=")
        if not sep or not name or not value:
            raise argparse.ArgumentTypeError(f"expected {form}, got {text!r}")
        return name, value

    return parse


def run_embedded(args: argparse.Namespace) -> int:
    _logging()
    try:
        settings = _settings(args, cameras=dict(args.camera) or None, model=str(args.model) if args.model else None,
                             heads=group_heads(args.head) or None,
                             data_dir=args.data_dir, grpc_port=args.grpc_port, dashboard_port=args.dashboard_port,
                             bus="inprocess://",
                             realtime_files=args.realtime or None)
    except ConfigError as error:
        print(f"avsurv run: error: {error}", file=sys.stderr)
        return 2
    runtime = Runtime(SERVICES, settings, embedded=True)
    runtime.start()
    try:
        runtime.wait(until=runtime.drained if args.exit_when_done else None)
    finally:
        runtime.stop()
    return 0


def run_dashboard(args: argparse.Namespace) -> int:
    """The dashboard's gateway as its own process, a client of the API at ``--api`` (a Deployment beside
    the search service); loaded by name, like a service."""
    _logging()
    try:
        settings = _settings(args, dashboard_port=args.port)
    except ConfigError as error:
        print(f"avsurv dashboard: error: {error}", file=sys.stderr)
        return 2
    gateway = importlib.import_module("avsurv.services.dashboard")
    dashboard = gateway.serve(args.api, args.host, settings.dashboard_port, settings.grpc_tls_cert,
                              settings.dashboard_hosts)
    logging.getLogger("avsurv").info("dashboard on %s for the API at %s", dashboard.url, args.api)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        dashboard.stop()
    return 0


def run_health(args: argparse.Namespace) -> int:
    """Exit 0 when the service on ``--port`` reports SERVING (compose health checks)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(f"{args.host}:{args.port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=args.service),
                                                              timeout=args.timeout)
    except grpc.RpcError as error:
        print(f"avsurv health: {args.host}:{args.port}: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    print(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


@reports_errors("export")
def run_export(args: argparse.Namespace) -> int:
    """An event's evidence through the API (``Anomalies.Export``), written atomically to ``--out``."""
    host, _, port = args.api.rpartition(":")
    if not host or not port.isdigit():
        raise TaskError(f"--api is HOST:PORT, got {args.api!r}")
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        raise TaskError(str(error)) from None
    request = api_pb2.ExportEvidenceRequest(event_id=args.event_id, margin_s=args.margin_s)
    try:
        with operator_channel(settings, int(port), host.strip("[]")) as channel:
            evidence = api_pb2_grpc.AnomaliesStub(channel).Export(request, timeout=args.timeout)
    except grpc.RpcError as error:
        raise TaskError(f"{args.api}: {error.code().name}: {error.details()}") from None
    staging = args.out.with_name(f".{args.out.name}.{os.getpid()}.tmp")  # same directory: replace is atomic
    staging.write_bytes(evidence.mp4)
    os.replace(staging, args.out)
    silent = f", {len(evidence.silent_clip_ids)} of them without stored sound" if evidence.silent_clip_ids else ""
    print(f"wrote {args.out}: {evidence.camera_id}, {evidence.end_time - evidence.start_time:g} s from capture time "
          f"{evidence.start_time:.3f} ({len(evidence.clip_ids)} clips{silent}), {len(evidence.mp4)} bytes")
    return 0


def _head_stores(args: argparse.Namespace) -> tuple[Registry, Artifacts]:
    """The platform's state and artifact stores, as its configuration names them."""
    try:
        settings = load_settings(args.config, data_dir=args.data_dir)
        registry = Registry(open_state(settings), settings.site)
        registry.state.ping()
    except (ConfigError, redis.RedisError) as error:
        raise TaskError(f"cannot open the platform's state store: {error}") from None
    return registry, open_artifacts(settings)


@reports_errors("heads attach")
def run_attach(args: argparse.Namespace) -> int:
    # Check the head first: opening an embedded state store creates --data-dir.
    if args.name and not re.match(NAME_PATTERN, args.name):
        raise TaskError(f"a head's name is letters, digits, '_', '.' and '-', got {args.name!r}")
    event_labels(TrainedHead.load(args.head), args.labels)
    registry, artifacts = _head_stores(args)
    try:
        record = attach_head(args.head, args.camera, registry, artifacts, name=args.name, labels=args.labels)
        trained_on = [m.version for m in registry.models() if m.sha256 == record.model_sha256]
    finally:
        close_shared_state(registry.state)
    print(f"attached {record.kind} head {record.name} to {record.camera_id}: events for {', '.join(record.labels)} "
          f"go to the anomalies topic as detector {record.detector}")
    if not trained_on:
        print(f"warning: no model version of this platform has the weights the head was trained on "
              f"({record.model_sha256[:12]}...): it stays idle until one embeds the camera", file=sys.stderr)
    return 0


@reports_errors("heads detach")
def run_detach(args: argparse.Namespace) -> int:
    registry, _ = _head_stores(args)
    try:
        detached = registry.detach_head(args.camera, args.name)
    finally:
        close_shared_state(registry.state)
    if not detached:
        raise TaskError(f"{args.camera} has no head named {args.name!r} (see avsurv heads attached)")
    print(f"detached head {args.name} from {args.camera}")
    return 0


@reports_errors("heads attached")
def run_attached(args: argparse.Namespace) -> int:
    registry, _ = _head_stores(args)
    try:
        records = registry.heads()
    finally:
        close_shared_state(registry.state)
    for record in records:
        print(f"{record.camera_id}\t{record.name}\t{record.kind}\t{','.join(record.labels)}\t"
              f"model {record.model_sha256[:12]}...")
    if not records:
        print("no head is attached", file=sys.stderr)
    return 0


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML file of the platform's settings (its state, "
                        "artifacts and site settings; AVSURV_* variables apply too)")
    parser.add_argument("--data-dir", type=Path, help="the embedded platform's --data-dir (default: ./avsurv-data)")


def register_head_commands(heads: argparse._SubParsersAction) -> None:
    """``avsurv heads attach|detach|attached``: heads on the cameras of a platform (running or not)."""
    attach = heads.add_parser(
        "attach", help="attach a trained head to a camera of the platform",
        description="Store a head directory in the platform's artifact store and attach it to a camera: the "
        f"anomaly detector (within {HEADS_REFRESH_S:g} s when running) applies it to the camera's embeddings of the "
        "model the head was trained on, and publishes the clips it labels with one of --labels as events on the "
        "anomalies topic (detector head:KIND:NAME). Attaching again under the same name replaces the head.")
    attach.add_argument("camera", help="camera id")
    attach.add_argument("head", type=Path, metavar="DIR", help="head directory (avsurv heads train --out)")
    attach.add_argument("--name", default="", help="name of the attachment (default: KIND-<8 hex digits of its "
                        "sha256>)")
    attach.add_argument("--labels", nargs="+", metavar="LABEL",
                        help="the head's labels that make events (default: every class but the background for "
                        "tacma and ccln; anomaly for avaca, its only one)")
    _add_store_options(attach)
    attach.set_defaults(func=run_attach)
    detach = heads.add_parser("detach", help="detach a head from a camera",
                              description="Detach a head: the anomaly detector closes its open event and stops it.")
    detach.add_argument("camera", help="camera id")
    detach.add_argument("name", help="the attachment's name (avsurv heads attached)")
    _add_store_options(detach)
    detach.set_defaults(func=run_detach)
    attached = heads.add_parser("attached", help="list the heads attached to cameras",
                                description="One line per attached head: camera, name, kind, event labels, model.")
    _add_store_options(attached)
    attached.set_defaults(func=run_attached)


def register_cli(sub: argparse._SubParsersAction, heads: argparse._SubParsersAction) -> None:
    register_head_commands(heads)
    serve = sub.add_parser("serve", help="run one platform service (distributed deployment)",
                           description="Runs one service as its own process. Configuration: defaults, then "
                           "--config YAML, then AVSURV_* environment variables (e.g. AVSURV_BUS=kafka://kafka:9092).")
    serve.add_argument("service", choices=SERVICES)
    serve.add_argument("--config", type=Path, help="YAML file of settings")
    serve.set_defaults(func=run_serve)

    run = sub.add_parser("run", help="run the whole platform in one process (embedded default)",
                         description="All six services in one process, with an in-process bus, Qdrant local mode "
                         "and an embedded Redis under --data-dir; serves the gRPC API until interrupted.")
    run.add_argument("--camera", action="append", type=_pair("NAME=SOURCE"), default=[], metavar="NAME=SOURCE",
                     help="a camera: file, http(s):// or rtsp:// source (repeatable)")
    run.add_argument("--model", type=Path, help="model directory to start with (avsurv train --out)")
    run.add_argument("--head", action="append", type=_pair("CAMERA=DIR"), default=[], metavar="CAMERA=DIR",
                     help="attach a trained head to a camera (avsurv heads train --out; repeatable)")
    run.add_argument("--data-dir", type=Path, help="where the stores live (default: ./avsurv-data)")
    run.add_argument("--grpc-port", type=int, help="gRPC API port (default: 50051)")
    run.add_argument("--dashboard-port", type=int, help="web dashboard port (default: 8080; 0: none)")
    run.add_argument("--config", type=Path, help="YAML file of settings")
    run.add_argument("--realtime", action="store_true", help="read files at their own pace, like live cameras")
    run.add_argument("--exit-when-done", action="store_true",
                     help="stop once every camera's file is read and every clip is handled (open anomaly events "
                     "close after anomaly_run_idle_s)")
    run.set_defaults(func=run_embedded)

    dashboard = sub.add_parser("dashboard", help="serve the web dashboard for a running platform's API",
                               description="The dashboard's gateway alone (avsurv run and the demo start one "
                               "themselves): a gRPC client of the API at --api, TLS trusting grpc_tls_cert when set; "
                               "each user's token goes to the API with their calls.")
    dashboard.add_argument("--api", default="127.0.0.1:50051", help="the API's HOST:PORT (default: 127.0.0.1:50051)")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; [::]: all)")
    dashboard.add_argument("--port", type=int, help="port (default: dashboard_port, 8080)")
    dashboard.add_argument("--config", type=Path, help="YAML file of settings")
    dashboard.set_defaults(func=run_dashboard)

    export = sub.add_parser("export", help="write an anomaly event's evidence as an mp4 with sound",
                            description="Asks the API (Anomalies.Export) for the event's stored seconds and a "
                            "margin before and after them, as H.264 video at 5 frames per second with AAC sound, and "
                            "writes the file atomically. TLS and tokens as configured (grpc_tls_cert; the control "
                            "token, else a read token).")
    export.add_argument("event_id", metavar="EVENT_ID_OR_URI",
                        help="the event's id (AnomalyEvent.event_id, as Anomalies.List gives it) or its evidence URI "
                        "(AnomalyEvent.evidence_uri, avsurv://SITE/events/ID/evidence.mp4)")
    export.add_argument("--out", type=Path, required=True, metavar="FILE.mp4", help="the file to write")
    export.add_argument("--margin-s", type=float, default=2.0, help="seconds before and after the event (default 2, "
                        "at most 60)")
    export.add_argument("--api", default="127.0.0.1:50051", help="the API's HOST:PORT (default: 127.0.0.1:50051)")
    export.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    export.add_argument("--config", type=Path, help="YAML file of settings (TLS certificate, tokens)")
    export.set_defaults(func=run_export)

    check = sub.add_parser("health", help="ask a service's gRPC health endpoint (exit 0 when SERVING)")
    check.add_argument("--host", default="127.0.0.1")
    check.add_argument("--port", type=int, default=50051)
    check.add_argument("--service", default="", help="a service name such as avsurv.embedding (default: overall)")
    check.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    check.set_defaults(func=run_health)

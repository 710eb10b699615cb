"""``avsurv serve NAME`` (one service per process, the distributed deployment) and ``avsurv run`` (all six
services in one process: in-process bus, Qdrant local mode, embedded Redis)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from avsurv.platform.config import ConfigError, Settings, load_settings
from avsurv.platform.runtime import SERVICES, Runtime


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


def parse_camera(text: str) -> tuple[str, str]:
    name, sep, source = text.partition("=")
    if not sep or not name or not source:
        raise argparse.ArgumentTypeError(f"a camera is NAME=SOURCE, got {text!r}")
    return name, source


def run_embedded(args: argparse.Namespace) -> int:
    _logging()
    try:
        settings = _settings(args, cameras=dict(args.camera) or None, model=str(args.model) if args.model else None,
                             data_dir=args.data_dir, grpc_port=args.grpc_port, bus="inprocess://",
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


def register_cli(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="run one platform service (distributed deployment)",
                           description="Runs one service as its own process. Configuration: defaults, then "
                           "--config YAML, then AVSURV_* environment variables (e.g. AVSURV_BUS=kafka://kafka:9092).")
    serve.add_argument("service", choices=SERVICES)
    serve.add_argument("--config", type=Path, help="YAML file of settings")
    serve.set_defaults(func=run_serve)

    run = sub.add_parser("run", help="run the whole platform in one process (embedded default)",
                         description="All six services in one process, with an in-process bus, Qdrant local mode "
                         "and an embedded Redis under --data-dir; serves the gRPC API until interrupted.")
    run.add_argument("--camera", action="append", type=parse_camera, default=[], metavar="NAME=SOURCE",
                     help="a camera: file, http(s):// or rtsp:// source (repeatable)")
    run.add_argument("--model", type=Path, help="model directory to start with (avsurv train --out)")
    run.add_argument("--data-dir", type=Path, help="where the stores live (default: ./avsurv-data)")
    run.add_argument("--grpc-port", type=int, help="gRPC API port (default: 50051)")
    run.add_argument("--config", type=Path, help="YAML file of settings")
    run.add_argument("--realtime", action="store_true", help="read files at their own pace, like live cameras")
    run.add_argument("--exit-when-done", action="store_true",
                     help="stop once every camera's file is read and every clip is handled (open anomaly events "
                     "close after anomaly_run_idle_s)")
    run.set_defaults(func=run_embedded)

    check = sub.add_parser("health", help="ask a service's gRPC health endpoint (exit 0 when SERVING)")
    check.add_argument("--host", default="127.0.0.1")
    check.add_argument("--port", type=int, default=50051)
    check.add_argument("--service", default="", help="a service name such as avsurv.embedding (default: overall)")
    check.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    check.set_defaults(func=run_health)

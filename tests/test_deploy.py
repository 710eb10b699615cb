"""The deployment files, checked offline (Docker cannot run here): Kubernetes manifests against the API
schemas with kubernetes-validate, compose.yaml and the Dockerfile for the wiring the services need."""

from __future__ import annotations

import copy
from pathlib import Path

import grpc
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from avsurv.platform.config import Settings, load_settings
from avsurv.platform.runtime import LIVENESS, SERVICES, Runtime
from tests.platformkit import wait_for
from tests.realparts import redis_server_process

ROOT = Path(__file__).resolve().parents[1]
K8S_VERSION = "1.30"


def manifests() -> list[dict]:
    return [doc for path in sorted((ROOT / "k8s").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())]


def test_every_manifest_is_valid_for_the_kubernetes_api() -> None:
    docs = manifests()
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_would_catch_a_broken_manifest() -> None:
    deployment = next(d for d in manifests() if d["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grcp"] = {"port": 50051}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_each_service_is_a_probed_deployment_with_resources_and_separate_config() -> None:
    docs = manifests()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == set(SERVICES)
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"avsurv"}
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["serve", name]
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == 50051  # the standard gRPC health service
        assert set(container["resources"]) == {"requests", "limits"}
        refs = {next(iter(ref)): next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        assert refs == {"configMapRef": "avsurv-config", "secretRef": "avsurv-secrets"}
    scaled = {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    assert scaled == {"embedding", "segmentation"}
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "StatefulSet"} == {"kafka", "qdrant", "redis"}
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert not set(config["data"]) & set(secret["stringData"])
    for key in {**config["data"], **secret["stringData"]}:
        if key.startswith("AVSURV_"):
            assert key.removeprefix("AVSURV_").lower() in Settings.model_fields, key


def test_compose_runs_the_six_services_beside_kafka_qdrant_and_redis() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {*SERVICES, "kafka", "qdrant", "redis"}
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    for name in SERVICES:
        service = services[name]
        assert service["command"] == ["serve", name]
        assert service["healthcheck"]["test"][:3] == ["CMD", "avsurv", "health"]
        env = service["environment"]
        assert env["AVSURV_BUS"] == "kafka://kafka:9092" and env["AVSURV_VECTORS"].startswith("http://qdrant")
        assert all(key.removeprefix("AVSURV_").lower() in Settings.model_fields for key in env)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "torch==2.13.0" in dockerfile and 'ENTRYPOINT ["avsurv"]' in dockerfile


def _health(port: int, service: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service)).status


def test_liveness_stays_serving_while_a_dependency_is_down(tmp_path: Path) -> None:
    """A Redis outage makes the service unready but not dead: liveness must not restart every pod."""
    with redis_server_process(tmp_path, password="pw") as (url, redis_process):
        settings = load_settings(environ={"AVSURV_STATE": url, "AVSURV_STATE_PASSWORD": "pw", "AVSURV_GRPC_PORT": "0",
                                          "AVSURV_DATA_DIR": str(tmp_path / "data")})
        runtime = Runtime(["ingest"], settings, embedded=True)
        runtime.start()
        try:
            serving = health_pb2.HealthCheckResponse.SERVING
            assert _health(runtime.port, "") == serving and _health(runtime.port, LIVENESS) == serving
            redis_process.kill()
            redis_process.wait()
            wait_for(lambda: _health(runtime.port, "") != serving, 15, "readiness to fail with Redis down")
            assert _health(runtime.port, LIVENESS) == serving
        finally:
            runtime.stop()
        assert _health_after_stop(runtime.port) != serving


def _health_after_stop(port: int) -> int:
    try:
        return _health(port, LIVENESS)
    except grpc.RpcError:
        return health_pb2.HealthCheckResponse.NOT_SERVING

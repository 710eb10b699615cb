"""The deployment files, checked offline (they are not applied to a cluster here): Kubernetes manifests against
the API schemas with kubernetes-validate, then one check per defect class a platform engineer would find
(issue 15), each shown to catch a manifest with that defect; compose.yaml and the Dockerfile for the wiring the
services need; and the liveness health name under a real dependency outage."""

from __future__ import annotations

import copy
import functools
import os
import re
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import jsonpatch
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kafka.errors import KafkaTimeoutError
from platformkit import small_scene, untrained_model, wait_for
from realparts import redis_server_process

from avsurv.platform.config import Settings, load_settings
from avsurv.platform.runtime import LIVENESS, SERVICES, Runtime, ensure_topics_when_up

ROOT = Path(__file__).resolve().parents[1]
K8S_VERSION = "1.30"
CRD_GROUPS = ("keda.sh/",)
"""Custom resources kubernetes-validate has no schema for; their fields are checked below."""
SINGLETONS = {"ingest", "trainer", "anomaly-detector"}
WORKLOADS = ("Deployment", "StatefulSet")
BACKING = ("kafka", "qdrant", "redis")
DASHBOARD = "dashboard"
"""The web dashboard's Deployment: a client of the search service's API (services/dashboard), no store."""
API = ("search", 50051)
SECRET_KEYS = {"AVSURV_STATE_PASSWORD", "AVSURV_KAFKA_SASL_USERNAME", "AVSURV_KAFKA_SASL_PASSWORD",
               "AVSURV_VECTORS_API_KEY"}
GPU_SERVICES = {"embedding", "trainer"}
GPU = "nvidia.com/gpu"
Docs = list[dict[str, Any]]


def kustomize(directory: Path) -> Docs:
    """What ``kubectl kustomize DIRECTORY`` renders, for the features the manifests use: resources (files, or
    folders with their own kustomization) and JSON 6902 patches aimed at a kind and name (CI has no kubectl)."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: Docs = []
    for resource in spec.get("resources", []):
        path = directory / resource
        docs += kustomize(path) if path.is_dir() else [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for patch in spec.get("patches", []):
        target, operations = patch["target"], jsonpatch.JsonPatch(yaml.safe_load(patch["patch"]))
        aimed = [i for i, doc in enumerate(docs)
                 if doc["kind"] == target["kind"] and doc["metadata"]["name"] == target["name"]]
        assert aimed, f"patch aimed at nothing: {target}"
        for i in aimed:
            docs[i] = operations.apply(docs[i])
    return docs


@functools.cache
def _rendered(variant: str) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize(ROOT / "k8s" / variant))


def manifests(variant: str = "base") -> Docs:
    """The manifests of ``kubectl apply -k k8s/VARIANT``, a fresh copy for each caller (the defect tests change
    theirs)."""
    return copy.deepcopy(list(_rendered(variant)))


def secret_example() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "k8s" / "base" / "secrets.example").read_text())


def of_kind(docs: Docs, kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs: Docs) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def config_map(docs: Docs) -> dict[str, str]:
    return next(d for d in docs if d["kind"] == "ConfigMap")["data"]


# One check per defect class: each returns the problems it finds (none for the committed manifests).

def restricted_pods(docs: Docs) -> list[str]:
    """Pod Security Standards "restricted", plus a read-only root."""
    problems = []
    for name, pod in pod_specs(docs):
        pod_security = pod.get("securityContext", {})
        for container in containers(pod):
            security = {**pod_security, **container.get("securityContext", {})}
            where = f"{name}/{container['name']}"
            if security.get("runAsNonRoot") is not True or security.get("runAsUser") == 0:
                problems.append(f"{where}: may run as root")
            if security.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: privilege escalation allowed")
            if "ALL" not in security.get("capabilities", {}).get("drop", []):
                problems.append(f"{where}: capabilities not dropped")
            if security.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
                problems.append(f"{where}: no seccomp profile")
            if security.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: writable root filesystem")
        has_volume = any("persistentVolumeClaim" in v for v in pod.get("volumes", [])) or name in BACKING
        if has_volume and "fsGroup" not in pod_security:
            problems.append(f"{name}: no fsGroup for its volume")
    namespace = next(d for d in docs if d["kind"] == "Namespace")
    if namespace["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") != "restricted":
        problems.append("namespace: Pod Security admission does not enforce restricted")
    return problems


def _handler(probe: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in probe.items() if k in ("grpc", "httpGet", "tcpSocket", "exec")}


def separate_probes(docs: Docs) -> list[str]:
    """Startup, liveness and readiness on every container; liveness asks something else than readiness."""
    problems = []
    for name, pod in pod_specs(docs):
        for container in pod["containers"]:
            missing = {"startupProbe", "livenessProbe", "readinessProbe"} - set(container)
            if missing:
                problems.append(f"{name}: no {', '.join(sorted(missing))}")
            elif _handler(container["livenessProbe"]) == _handler(container["readinessProbe"]):
                problems.append(f"{name}: liveness is readiness (a dependency outage would restart it)")
    return problems


def claims_with_class(docs: Docs) -> list[str]:
    claims = [(d["metadata"]["name"], d["spec"]) for d in of_kind(docs, "PersistentVolumeClaim")]
    claims += [(f"{d['metadata']['name']}/{t['metadata']['name']}", t["spec"])
               for d in of_kind(docs, "StatefulSet") for t in d["spec"].get("volumeClaimTemplates", [])]
    return [f"{name}: no storage class" for name, spec in claims if not spec.get("storageClassName")]


def singletons_recreated(docs: Docs) -> list[str]:
    problems = []
    for deployment in of_kind(docs, "Deployment"):
        name, spec = deployment["metadata"]["name"], deployment["spec"]
        if name in SINGLETONS and (spec.get("replicas") != 1 or spec.get("strategy", {}).get("type") != "Recreate"):
            problems.append(f"{name}: a singleton without replicas 1 and Recreate")
    return problems


def lag_autoscaling(docs: Docs) -> list[str]:
    """KEDA's Kafka scaler on the service's own consumer group, owning the replica count, within partitions."""
    problems = [f"{hpa['metadata']['name']}: an HPA (KEDA owns scaling)"
                for hpa in of_kind(docs, "HorizontalPodAutoscaler")]
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    partitions = int(config_map(docs)["AVSURV_PARTITIONS"])
    scaled_objects = of_kind(docs, "ScaledObject")
    if not scaled_objects:
        problems.append("no ScaledObject")
    for scaled in scaled_objects:
        target = scaled["spec"]["scaleTargetRef"]["name"]
        if "replicas" in deployments[target]["spec"]:
            problems.append(f"{target}: replicas set under a ScaledObject (every apply resets the scale)")
        if scaled["spec"]["maxReplicaCount"] > partitions:
            problems.append(f"{target}: more replicas than partitions ({partitions})")
        for trigger in scaled["spec"]["triggers"]:
            meta = trigger["metadata"]
            if trigger["type"] != "kafka" or meta.get("consumerGroup") != target or not meta.get("lagThreshold"):
                problems.append(f"{target}: not scaled on its consumer group's Kafka lag")
    return problems


def disruption_and_spread(docs: Docs) -> list[str]:
    budgets = {d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
               for d in of_kind(docs, "PodDisruptionBudget")}
    problems = []
    for deployment in of_kind(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        if name in SINGLETONS:
            continue
        if name not in budgets:
            problems.append(f"{name}: no PodDisruptionBudget")
        if not deployment["spec"]["template"]["spec"].get("topologySpreadConstraints"):
            problems.append(f"{name}: no topology spread")
    return problems


def default_deny_and_flows(docs: Docs) -> list[str]:
    """A default deny per namespace with pods, and an allow rule for each backing service's port."""
    policies = of_kind(docs, "NetworkPolicy")
    problems = []
    namespaces = {d["metadata"]["namespace"] for d in docs if d["kind"] in WORKLOADS}
    for namespace in namespaces:
        if not any(p["metadata"]["namespace"] == namespace and p["spec"]["podSelector"] == {}
                   and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
                   and not p["spec"].get("ingress") and not p["spec"].get("egress") for p in policies):
            problems.append(f"{namespace}: no default-deny NetworkPolicy")
    for service in of_kind(docs, "Service"):
        name = service["metadata"]["name"]
        port = service["spec"]["ports"][0]["port"]
        allowed = [p for p in policies for rule in p["spec"].get("ingress", [])
                   if any(pp["port"] == port for pp in rule.get("ports", []))
                   and name in str(p["spec"]["podSelector"])]
        if not allowed:
            problems.append(f"{name}: no ingress rule for port {port}")
    return problems


def _selects(selector: dict[str, Any], name: str) -> bool:
    """Whether a podSelector picks the pods labelled ``app.kubernetes.io/name: name`` ({}: every pod)."""
    labels = {"app.kubernetes.io/name": name}
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    return all(e["operator"] == "In" and labels.get(e["key"]) in e["values"]
               for e in selector.get("matchExpressions", []))


def _flows(docs: Docs, name: str) -> list[dict[str, Any]]:
    """The allow policies (not the namespace-wide ones) that select ``name``'s pods."""
    return [p for p in of_kind(docs, "NetworkPolicy")
            if p["spec"]["podSelector"] and _selects(p["spec"]["podSelector"], name)]


def every_workload_has_its_flows(docs: Docs) -> list[str]:
    """Under default deny, a pod no allow rule names is cut off: every workload is reached (its clients, the
    metrics scraper), and each Deployment calls something (the backing StatefulSets only answer)."""
    problems = []
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            name = doc["metadata"]["name"]
            directions = {kind for p in _flows(docs, name) for kind in p["spec"]["policyTypes"]}
            needed = ("Ingress", "Egress") if doc["kind"] == "Deployment" else ("Ingress",)
            problems += [f"{name}: no {kind} NetworkPolicy" for kind in needed if kind not in directions]
    return problems


def _is_dns(rule: dict[str, Any]) -> bool:
    peers = rule.get("to", [])
    return bool(peers) and all(peer.get("podSelector", {}).get("matchLabels") == {"k8s-app": "kube-dns"}
                               for peer in peers)


def dashboard_reaches_only_the_api(docs: Docs) -> list[str]:
    """The dashboard's egress: the search API's port and DNS, nothing else (it reads no store)."""
    problems = []
    for policy in of_kind(docs, "NetworkPolicy"):
        if not _selects(policy["spec"]["podSelector"], DASHBOARD):
            continue
        for rule in policy["spec"].get("egress", []):
            peers = rule.get("to", [])
            to_api = bool(peers) and all(set(peer) == {"podSelector"} and peer["podSelector"]
                                         and _selects(peer["podSelector"], API[0]) for peer in peers)
            ports = {port["port"] for port in rule.get("ports", [])}
            if not _is_dns(rule) and not (to_api and ports == {API[1]}):
                problems.append(f"{policy['metadata']['name']}: dashboard egress beyond {API[0]}:{API[1]}")
    return problems


def pinned_images(docs: Docs) -> list[str]:
    problems = []
    for name, pod in pod_specs(docs):
        for container in containers(pod):
            image = container["image"]
            if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
                problems.append(f"{name}: image {image} not pinned")
            if name not in BACKING and "." not in image.split("/")[0]:
                problems.append(f"{name}: image {image} names no registry (Docker Hub)")
    return problems


def secrets_by_reference(docs: Docs) -> list[str]:
    """No Secret with values among the applied manifests; secrets reach containers by key, never inline."""
    problems = [f"Secret {d['metadata']['name']} committed among the manifests" for d in of_kind(docs, "Secret")]
    config = config_map(docs)
    problems += [f"ConfigMap holds secret {key}" for key in SECRET_KEYS & set(config)]
    for name, pod in pod_specs(docs):
        for container in containers(pod):
            text = " ".join(container.get("command", []) + container.get("args", []))
            if re.search(r"--requirepass|--password|://[^/\s]*:[^@\s]+@", text):
                problems.append(f"{name}: a password on the command line")
            for variable in container.get("env", []):
                if variable["name"] in SECRET_KEYS and "valueFrom" not in variable:
                    problems.append(f"{name}: {variable['name']} inline")
            if any("secretRef" in ref for ref in container.get("envFrom", [])):
                problems.append(f"{name}: the whole Secret as environment")
    return problems


def kafka_log_dir_below_volume(docs: Docs) -> list[str]:
    kafka = next(d for d in of_kind(docs, "StatefulSet") if d["metadata"]["name"] == "kafka")
    container = kafka["spec"]["template"]["spec"]["containers"][0]
    log_dir = next(e["value"] for e in container["env"] if e["name"] == "KAFKA_LOG_DIRS").rstrip("/")
    data = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "data").rstrip("/")
    return [] if log_dir.startswith(data + "/") else [f"kafka: log dir {log_dir} is not below its volume {data}"]


def gpu_placement(docs: Docs) -> list[str]:
    """The GPU variant: the embedding and trainer pods ask for one GPU, run models on it, land only on GPU nodes
    and tolerate their taint; no other pod holds a GPU."""
    problems = []
    for name, pod in pod_specs(docs):
        container = containers(pod)[0]
        limits = container["resources"].get("limits", {})
        if name not in GPU_SERVICES:
            problems += [f"{name}: holds a GPU"] if GPU in limits else []
            continue
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if limits.get(GPU) != "1":
            problems.append(f"{name}: no GPU limit")
        if env.get("AVSURV_DEVICE") != "cuda":
            problems.append(f"{name}: models not on the GPU (AVSURV_DEVICE {env.get('AVSURV_DEVICE')})")
        if pod.get("nodeSelector", {}).get(f"{GPU}.present") != "true":
            problems.append(f"{name}: not placed on GPU nodes")
        if not any(t.get("key") == GPU and t.get("effect") == "NoSchedule" for t in pod.get("tolerations", [])):
            problems.append(f"{name}: does not tolerate the GPU nodes' taint")
        if not container["image"].endswith("-cuda"):
            problems.append(f"{name}: image {container['image']} is not the CUDA build")
    return problems


CHECKS: list[Callable[[Docs], list[str]]] = [
    restricted_pods, separate_probes, claims_with_class, singletons_recreated, lag_autoscaling,
    disruption_and_spread, default_deny_and_flows, every_workload_has_its_flows, dashboard_reaches_only_the_api,
    pinned_images, secrets_by_reference, kafka_log_dir_below_volume]
VARIANTS = ("base", "gpu")


def test_the_base_kustomization_applies_every_manifest() -> None:
    base = ROOT / "k8s" / "base"
    listed = yaml.safe_load((base / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in base.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_manifest_is_valid_for_the_kubernetes_api(variant: str) -> None:
    docs = [*manifests(variant), secret_example()]
    assert docs
    for doc in docs:
        if not doc["apiVersion"].startswith(CRD_GROUPS):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_would_catch_a_broken_manifest() -> None:
    deployment = of_kind(manifests(), "Deployment")[0]
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grcp"] = {"port": 50051}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_the_manifests_pass_each_check(check: Callable[[Docs], list[str]], variant: str) -> None:
    assert check(manifests(variant)) == []


def test_the_gpu_variant_puts_embedding_and_trainer_on_gpus() -> None:
    gpu, base = manifests("gpu"), manifests()
    assert gpu_placement(gpu) == []
    assert set(gpu_placement(base)) == {
        f"{name}: {problem}" for name in GPU_SERVICES for problem in (
            "no GPU limit", "models not on the GPU (AVSURV_DEVICE None)", "not placed on GPU nodes",
            "does not tolerate the GPU nodes' taint", "image registry.example.com/avsurv/avsurv:0.1.0 is not the "
            "CUDA build")}
    for name in GPU_SERVICES:
        env = {e["name"] for e in _container(gpu, name)["env"]}
        assert {key.removeprefix("AVSURV_").lower() for key in env} <= set(Settings.model_fields)
    assert {d["metadata"]["name"] for d in gpu} == {d["metadata"]["name"] for d in base}


def _break_gpu_toleration(docs: Docs) -> None:
    del _deployment(docs, "trainer")["spec"]["template"]["spec"]["tolerations"]


def _break_gpu_elsewhere(docs: Docs) -> None:
    _container(docs, "search")["resources"]["limits"][GPU] = "1"


@pytest.mark.parametrize("defect", [_break_gpu_toleration, _break_gpu_elsewhere], ids=lambda f: f.__name__)
def test_the_gpu_check_catches_its_defects(defect: Callable[[Docs], None]) -> None:
    docs = manifests("gpu")
    defect(docs)
    assert gpu_placement(docs)


def _deployment(docs: Docs, name: str) -> dict[str, Any]:
    return next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == name)


def _container(docs: Docs, name: str) -> dict[str, Any]:
    return _deployment(docs, name)["spec"]["template"]["spec"]["containers"][0]


def _break_security(docs: Docs) -> None:
    del _container(docs, "search")["securityContext"]["capabilities"]


def _break_namespace(docs: Docs) -> None:
    del next(d for d in docs if d["kind"] == "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]


def _break_probes(docs: Docs) -> None:
    container = _container(docs, "embedding")
    container["livenessProbe"] = copy.deepcopy(container["readinessProbe"])


def _break_claim(docs: Docs) -> None:
    del of_kind(docs, "PersistentVolumeClaim")[0]["spec"]["storageClassName"]


def _break_singleton(docs: Docs) -> None:
    _deployment(docs, "trainer")["spec"]["strategy"] = {"type": "RollingUpdate"}


def _break_scaled_replicas(docs: Docs) -> None:
    _deployment(docs, "embedding")["spec"]["replicas"] = 2


def _break_partitions(docs: Docs) -> None:
    config_map(docs)["AVSURV_PARTITIONS"] = "4"


def _drop(docs: Docs, kind: str, name_prefix: str) -> None:
    docs[:] = [d for d in docs if not (d["kind"] == kind and d["metadata"]["name"].startswith(name_prefix))]


def _break_budget(docs: Docs) -> None:
    _drop(docs, "PodDisruptionBudget", "search")


def _break_default_deny(docs: Docs) -> None:
    _drop(docs, "NetworkPolicy", "default-deny")


def _break_flow(docs: Docs) -> None:
    _drop(docs, "NetworkPolicy", "services-to-redis")


def _break_dashboard_flows(docs: Docs) -> None:
    _drop(docs, "NetworkPolicy", "dashboard-to-search-egress")


def _break_dashboard_egress(docs: Docs) -> None:
    egress = next(p for p in of_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == "services-to-redis-egress")
    egress["spec"]["podSelector"]["matchExpressions"][0]["values"].append(DASHBOARD)


def _break_dashboard_open_egress(docs: Docs) -> None:
    egress = next(p for p in of_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == "dashboard-to-search-egress")
    del egress["spec"]["egress"][0]["to"]


def _break_image(docs: Docs) -> None:
    _container(docs, "ingest")["image"] = "avsurv:latest"


def _break_secret(docs: Docs) -> None:
    redis = next(d for d in of_kind(docs, "StatefulSet") if d["metadata"]["name"] == "redis")
    redis["spec"]["template"]["spec"]["containers"][0]["command"] = ["redis-server", "--requirepass", "change-me"]


def _break_log_dir(docs: Docs) -> None:
    kafka = next(d for d in of_kind(docs, "StatefulSet") if d["metadata"]["name"] == "kafka")
    env = kafka["spec"]["template"]["spec"]["containers"][0]["env"]
    next(e for e in env if e["name"] == "KAFKA_LOG_DIRS")["value"] = "/var/lib/kafka/data"


DEFECTS = [(restricted_pods, _break_security), (restricted_pods, _break_namespace), (separate_probes, _break_probes),
           (claims_with_class, _break_claim), (singletons_recreated, _break_singleton),
           (lag_autoscaling, _break_scaled_replicas), (lag_autoscaling, _break_partitions),
           (disruption_and_spread, _break_budget), (default_deny_and_flows, _break_default_deny),
           (default_deny_and_flows, _break_flow), (every_workload_has_its_flows, _break_dashboard_flows),
           (dashboard_reaches_only_the_api, _break_dashboard_egress),
           (dashboard_reaches_only_the_api, _break_dashboard_open_egress), (pinned_images, _break_image),
           (secrets_by_reference, _break_secret), (kafka_log_dir_below_volume, _break_log_dir)]


@pytest.mark.parametrize(("check", "defect"), DEFECTS, ids=lambda f: f.__name__)
def test_each_check_catches_its_defect(check: Callable[[Docs], list[str]], defect: Callable[[Docs], None]) -> None:
    docs = manifests()
    defect(docs)
    assert check(docs)


def test_each_service_is_a_deployment_with_resources_and_the_settings_it_reads() -> None:
    docs = manifests()
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    assert set(deployments) == {*SERVICES, DASHBOARD}
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"avsurv"}
    for name in SERVICES:
        deployment = deployments[name]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["serve", name]
        assert container["livenessProbe"]["grpc"] == {"port": 50051, "service": LIVENESS}
        assert set(container["resources"]) == {"requests", "limits"}
        assert {key for e in container["env"] for key in [e["name"]]} == SECRET_KEYS
    assert {d["spec"]["scaleTargetRef"]["name"] for d in of_kind(docs, "ScaledObject")} == {"embedding", "segmentation"}
    assert {d["metadata"]["name"] for d in of_kind(docs, "StatefulSet")} == {"kafka", "qdrant", "redis"}
    assert set(secret_example()["stringData"]) == SECRET_KEYS
    for key in {*config_map(docs), *SECRET_KEYS}:
        assert key.removeprefix("AVSURV_").lower() in Settings.model_fields, key


def test_the_dashboard_deployment_runs_the_gateway_against_the_api_with_http_probes() -> None:
    docs = manifests()
    pod = _deployment(docs, DASHBOARD)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    assert args[0] == DASHBOARD and args[args.index("--api") + 1].split(".")[0] + f":{API[1]}" == "search:50051"
    assert args[args.index("--port") + 1] == str(container["ports"][0]["containerPort"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert set(container["resources"]) == {"requests", "limits"}
    assert "envFrom" not in container and not any("persistentVolumeClaim" in v for v in pod["volumes"])  # no store
    assert {e["name"].removeprefix("AVSURV_").lower() for e in container["env"]} <= set(Settings.model_fields)
    service = next(s for s in of_kind(docs, "Service") if s["metadata"]["name"] == DASHBOARD)
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]


def test_kafka_retention_fits_its_volume() -> None:
    """The per-partition cap on the chunk topic's partitions fits the broker's volume (sizing in backing.yaml)."""
    docs = manifests()
    kafka = next(d for d in of_kind(docs, "StatefulSet") if d["metadata"]["name"] == "kafka")
    env = {e["name"]: e.get("value") for e in kafka["spec"]["template"]["spec"]["containers"][0]["env"]}
    volume = kafka["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    assert volume.endswith("Gi")
    chunk_partitions_bytes = int(env["KAFKA_LOG_RETENTION_BYTES"]) * int(config_map(docs)["AVSURV_PARTITIONS"])
    assert chunk_partitions_bytes < int(volume.removesuffix("Gi")) * 2**30
    assert int(env["KAFKA_LOG_RETENTION_HOURS"]) >= 1


def test_compose_runs_the_six_services_hardened_beside_kafka_qdrant_and_redis() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {*SERVICES, DASHBOARD, "kafka", "qdrant", "redis", "shared-init"}
    kafka = services["kafka"]
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    kafka_volume = next(v.split(":")[1] for v in kafka["volumes"] if isinstance(v, str) and v.startswith("kafka-data"))
    assert kafka["environment"]["KAFKA_LOG_DIRS"].startswith(kafka_volume + "/")
    for name, service in services.items():
        assert service.get("read_only") and service.get("cap_drop") == ["ALL"], name
        assert name == "shared-init" or not str(service.get("user", "0")).startswith("0"), name
        assert all(str(port).startswith("127.0.0.1:") for port in service.get("ports", [])), name
    assert services["shared-init"]["cap_add"] == ["CHOWN"]
    for name in SERVICES:
        service = services[name]
        assert service["command"] == ["serve", name]
        assert service["healthcheck"]["test"][:3] == ["CMD", "avsurv", "health"]
        env = service["environment"]
        assert env["AVSURV_BUS"] == "kafka://kafka:9092" and env["AVSURV_VECTORS"].startswith("http://qdrant")
        assert all(key.removeprefix("AVSURV_").lower() in Settings.model_fields for key in env)
        assert all(env[key].startswith("${") for key in SECRET_KEYS - {"AVSURV_KAFKA_SASL_USERNAME"})
    assert "--requirepass" not in str(services["redis"])
    dashboard = services[DASHBOARD]  # outside the internal network: it reaches search, not the stores
    assert dashboard["command"][:3] == [DASHBOARD, "--api", "search:50051"] and "avsurv" not in dashboard["networks"]
    assert "/readyz" in str(dashboard["healthcheck"]["test"])
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


class _LateKafka:
    """A bus whose broker answers from the third try on."""

    bootstrap_servers = "kafka:9092"

    def __init__(self, failures: int) -> None:
        self.tries, self.failures = 0, failures

    def ensure_topics(self, topics: Sequence[str]) -> None:
        self.tries += 1
        if self.tries <= self.failures:
            raise KafkaTimeoutError("Unable to bootstrap from kafka:9092")

    def login_hint(self) -> str:
        return ""  # its port is closed until it answers: down, not refusing


def test_a_service_waits_for_kafka_at_start_instead_of_exiting() -> None:
    late = _LateKafka(failures=2)
    ensure_topics_when_up(late, wait_s=1.0, retry_s=0.01)
    assert late.tries == 3
    with pytest.raises(KafkaTimeoutError):  # a broker that never comes exits the process in the end
        ensure_topics_when_up(_LateKafka(failures=1000), wait_s=0.05, retry_s=0.01)


READ_ONLY_RUN = """
set -eu
mount --bind "$WRITABLE" "$WRITABLE"
for mount in $(awk '{print $2}' /proc/self/mounts | grep -v '^/proc\\|^/sys\\|^/dev' | sort -u); do
  [ "$mount" = "$WRITABLE" ] || mount -o remount,bind,ro "$mount" 2>/dev/null || true
done
if touch "$INPUTS/probe" 2>/dev/null; then echo "the root is writable" >&2; exit 3; fi
exec avsurv run --camera cam0="$INPUTS/scene/cam0.mp4" --model "$INPUTS/model" --data-dir "$WRITABLE/data" \\
  --grpc-port 0 --dashboard-port 0 --exit-when-done
"""


@pytest.mark.skipif(os.environ.get("AVSURV_READ_ONLY_ROOT") != "1", reason="opt-in (AVSURV_READ_ONLY_ROOT=1, root): "
                    "about 45 s, longer than the CI budget allows")
def test_the_services_run_with_a_read_only_root(tmp_path: Path) -> None:
    """readOnlyRootFilesystem: the six services in one process, in a mount namespace where every file system is
    read-only but the data dir and TMPDIR (the emptyDirs of k8s/base/services.yaml), read a camera to its end."""
    inputs, writable = tmp_path / "inputs", tmp_path / "writable"
    small_scene(inputs / "scene", duration_s=6, cameras=1)
    untrained_model(inputs / "model", seed=1)
    (writable / "tmp").mkdir(parents=True)
    env = {**os.environ, "INPUTS": str(inputs), "WRITABLE": str(writable), "TMPDIR": str(writable / "tmp"),
           "HOME": str(inputs)}
    run = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", READ_ONLY_RUN],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Read-only file system" not in run.stderr

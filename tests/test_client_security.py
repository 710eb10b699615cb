"""The clients' security settings reach the clients (issue 14 item 4): a real Redis server that requires a
password, Qdrant's API key and collection replication as a server receives them over HTTP, Kafka's SASL/TLS
arguments and topic replication as kafka-python's clients receive them (``tests/test_kafka_sasl.py`` tries
SASL against a broker that requires it), and no secret in the printed configuration."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from realparts import redis_server

from avsurv.adapters import kafka_bus
from avsurv.platform.config import ConfigError, load_settings
from avsurv.platform.messages import TOPICS
from avsurv.platform.runtime import open_bus, open_server_vectors, open_state

SECRETS = {"AVSURV_KAFKA_SASL_PASSWORD": "kafka-secret-1", "AVSURV_STATE_PASSWORD": "redis-secret-2",
           "AVSURV_VECTORS_API_KEY": "qdrant-secret-3"}
SASL = {"AVSURV_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "AVSURV_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "AVSURV_KAFKA_SASL_USERNAME": "avsurv", "AVSURV_KAFKA_SSL_CAFILE": "/etc/avsurv/kafka-ca.pem"}


def test_the_platform_opens_a_password_protected_redis_only_with_its_password(tmp_path: Path) -> None:
    with redis_server(tmp_path, password="s3cret") as url:
        with pytest.raises(redis.AuthenticationError):
            open_state(load_settings(environ={"AVSURV_STATE": url})).ping()
        with pytest.raises(redis.AuthenticationError):
            open_state(load_settings(environ={"AVSURV_STATE": url, "AVSURV_STATE_PASSWORD": "wrong"})).ping()
        state = open_state(load_settings(environ={"AVSURV_STATE": url, "AVSURV_STATE_PASSWORD": "s3cret"}))
        assert state.ping() and state.set("k", "v") and state.get("k") == b"v"
        state.close()


def test_a_tls_ca_needs_a_tls_url() -> None:
    with pytest.raises(ValueError, match="rediss://"):
        open_state(load_settings(environ={"AVSURV_STATE": "redis://redis:6379/0", "AVSURV_STATE_TLS_CAFILE": "ca"}))


def test_secrets_are_never_printed() -> None:
    settings = load_settings(environ={**SECRETS, **SASL})
    shown = json.dumps(settings.printable()) + repr(settings) + str(settings)
    assert not [secret for secret in SECRETS.values() if secret in shown]


def test_sasl_needs_a_mechanism_a_user_and_a_password() -> None:
    with pytest.raises(ConfigError, match="kafka_sasl_password"):
        load_settings(environ={**SASL, "AVSURV_STATE_PASSWORD": "x"})


class _Recorder:
    """Stands in for a kafka-python client class: records its arguments, answers the admin calls."""

    def __init__(self, calls: list[tuple[str, dict[str, Any]]], name: str) -> None:
        self.calls, self.name = calls, name

    def __call__(self, *_: Any, **kwargs: Any) -> _Recorder:
        self.calls.append((self.name, kwargs))
        return self

    def list_topics(self) -> list[str]:
        return []

    def create_topics(self, topics: list[Any]) -> None:
        self.calls.append(("create_topics", {t.name: t.replication_factor for t in topics}))

    def close(self) -> None:
        pass


def test_kafka_security_and_replication_reach_every_client(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    for name in ("KafkaAdminClient", "KafkaProducer", "KafkaConsumer"):
        monkeypatch.setattr(kafka_bus, name, _Recorder(calls, name))
    settings = load_settings(environ={**SECRETS, **SASL, "AVSURV_BUS": "kafka://kafka:9093",
                                      "AVSURV_KAFKA_REPLICATION_FACTOR": "3"})
    bus = open_bus(settings, embedded=False)
    bus._producer_client()
    bus.subscribe("group", ["topic"])
    expected = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "avsurv",
                "sasl_plain_password": "kafka-secret-1", "ssl_cafile": "/etc/avsurv/kafka-ca.pem"}
    made = {name: kwargs for name, kwargs in calls if name.startswith("Kafka")}
    assert set(made) == {"KafkaAdminClient", "KafkaProducer", "KafkaConsumer"}
    real = {"KafkaAdminClient": KafkaAdminClient, "KafkaProducer": KafkaProducer, "KafkaConsumer": KafkaConsumer}
    for name, kwargs in made.items():
        assert {key: kwargs.get(key) for key in expected} == expected, name
        assert set(kwargs) <= set(real[name].DEFAULT_CONFIG), name  # arguments kafka-python knows
    topics = {topic: replicas for name, kwargs in calls if name == "create_topics"
              for topic, replicas in kwargs.items()}
    assert topics == dict.fromkeys(TOPICS, 3)


class _FakeQdrant(BaseHTTPRequestHandler):
    """Answers the calls creating a collection as a Qdrant server does, recording each request."""

    requests: ClassVar[list[tuple[str, str, dict[str, str], dict[str, Any]]]] = []

    def _answer(self, result: Any) -> None:
        self._send({"result": result, "status": "ok", "time": 0.0})

    def _send(self, answer: dict[str, Any]) -> None:
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else {}
        self.requests.append((self.command, self.path.split("?")[0], dict(self.headers), body))

    def do_GET(self) -> None:
        self._record()
        if self.path == "/":
            self._send({"title": "qdrant", "version": "1.12.4"})
        else:
            self._answer({"exists": False})

    def do_PUT(self) -> None:
        self._record()
        self._answer(True if self.path.split("?")[0].count("/") == 2 else {"operation_id": 0, "status": "completed"})

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def fake_qdrant() -> Iterator[str]:
    _FakeQdrant.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeQdrant)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
def test_qdrant_api_key_and_replication_reach_the_server(fake_qdrant: str) -> None:
    settings = load_settings(environ={**SECRETS, "AVSURV_VECTORS": fake_qdrant,
                                      "AVSURV_VECTORS_REPLICATION_FACTOR": "2"})
    vectors = open_server_vectors(settings)
    assert vectors is not None
    vectors.ensure_collection("avsurv_default_v1")
    requests = [r for r in _FakeQdrant.requests if r[1] != "/"]
    assert requests and all(headers.get("api-key") == "qdrant-secret-3" for _, _, headers, _ in requests)
    created = [body for method, path, _, body in requests
               if method == "PUT" and path == "/collections/avsurv_default_v1"]
    assert [body.get("replication_factor") for body in created] == [2]
    assert open_server_vectors(load_settings(environ={"AVSURV_VECTORS": "local:///tmp/x"})) is None

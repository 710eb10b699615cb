"""The platform's Kafka SASL settings against a real broker that requires SASL (issue 14 item 4): Tansu with
``--authentication`` (:func:`realparts.kafka_sasl_broker`).

What the test broker allows: Tansu 0.6.0 as shipped keeps no SCRAM credential in its memory:// or s3://
storage (an AlterUserScramCredentials answers success and stores nothing, also across a restart on S3) and
offers no PLAIN, so no user can log in and a correct password cannot be shown to be accepted. What is shown:
the platform's settings drive a SCRAM-SHA-256/512 exchange as the configured user (the broker's log names
both), and the platform stops at the broker's refusal: no topic is created with a password the broker does
not know, without credentials, or with a mechanism the broker does not offer. Each test fails if the broker
let the client in, or if the client went on after a refusal (Tansu 0.6.0 serves a SCRAM client that ignores
its final ``e=unknown-user``, so the client's check is what keeps it out)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError
from realparts import free_port, kafka_sasl_broker

from avsurv.adapters.kafka_bus import KafkaBus
from avsurv.platform.config import load_settings
from avsurv.platform.messages import TOPICS
from avsurv.platform.runtime import ensure_topics_when_up

BOOTSTRAP_TIMEOUT_MS = 4_000
"""How long the admin client tries to connect and log in before it gives up (the client's default: 30 s)."""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The broker's address and its log."""
    log = tmp_path_factory.mktemp("tansu") / "broker.log"
    with kafka_sasl_broker(log) as address:
        yield address, log


def _bus(address: str, **environ: str) -> KafkaBus:
    """The bus as the platform opens it from these settings (``runtime.open_bus``, less its 240 s of retries)."""
    settings = load_settings(environ={"AVSURV_BUS": f"kafka://{address}", **environ})
    security: dict[str, Any] = {**settings.kafka_client_options(), "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS}
    return KafkaBus(address, security=security)


def _refused(bus: KafkaBus, log: Path) -> str:
    """Asserts that the bus cannot create its topics; returns what the broker logged meanwhile."""
    start = log.stat().st_size
    with pytest.raises(KafkaTimeoutError, match="Unable to bootstrap"):  # kafka-python's error for every refusal
        bus.ensure_topics(TOPICS)
    with log.open("rb") as file:
        file.seek(start)
        return re.sub(r"\x1b\[[0-9;]*m", "", file.read().decode(errors="replace"))


def test_no_credentials_are_refused(broker: tuple[str, Path]) -> None:
    address, log = broker
    assert "NotAuthenticated" in _refused(_bus(address), log)  # a request sent before any SASL exchange


@pytest.mark.parametrize(("mechanism", "logged"), [("SCRAM-SHA-256", "Scram256"), ("SCRAM-SHA-512", "Scram512")])
def test_a_wrong_scram_password_is_refused(broker: tuple[str, Path], mechanism: str, logged: str) -> None:
    address, log = broker
    user = f"avsurv-{logged.lower()}"
    bus = _bus(address, AVSURV_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", AVSURV_KAFKA_SASL_MECHANISM=mechanism,
               AVSURV_KAFKA_SASL_USERNAME=user, AVSURV_KAFKA_SASL_PASSWORD="not-the-password")
    # The exchange reached the broker's SCRAM check as the configured user and mechanism.
    assert f'auth_id="{user}" mechanism={logged}' in _refused(bus, log)


def test_a_mechanism_the_broker_does_not_offer_is_refused(broker: tuple[str, Path]) -> None:
    address, log = broker
    bus = _bus(address, AVSURV_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", AVSURV_KAFKA_SASL_MECHANISM="PLAIN",
               AVSURV_KAFKA_SASL_USERNAME="avsurv", AVSURV_KAFKA_SASL_PASSWORD="any")
    assert "NoSharedMechanism" in _refused(bus, log)  # Tansu closes the connection instead of naming its mechanisms


def test_a_refused_login_is_told_apart_from_a_broker_that_is_down(broker: tuple[str, Path]) -> None:
    """kafka-python says "Unable to bootstrap" for both; the platform's start-up adds what to check."""
    address, _ = broker
    bus = _bus(address, AVSURV_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", AVSURV_KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
               AVSURV_KAFKA_SASL_USERNAME="avsurv", AVSURV_KAFKA_SASL_PASSWORD="not-the-password")
    with pytest.raises(KafkaTimeoutError, match=r"may be refusing this client \(SASL_PLAINTEXT, SCRAM-SHA-256 as "
                                                r"'avsurv'\): check AVSURV_KAFKA_SECURITY_PROTOCOL"):
        ensure_topics_when_up(bus, wait_s=0)
    assert _bus(f"127.0.0.1:{free_port()}").login_hint() == ""  # nothing listens: down, not refusing

"""The bus port over Apache Kafka (or any Kafka-protocol broker) with kafka-python.

Producers wait for every in-sync replica (``acks="all"``); consumers never auto-commit, so an offset is
committed only when the service says its work is durable (at-least-once).

**Decision**: ``flush`` returns only once every message published since the last flush is stored. A send
that the producer gave up on (its ``delivery_timeout_ms`` passed while the broker was stalled or away) is
sent again, in publishing order, until the broker takes it; an error no retry can fix (a message too
large, no authorization) raises :class:`DeliveryError`. Either way the caller's next step, committing its
input or recording what it published, only happens after its output is durable. A message the broker
stored but could not acknowledge in time is sent twice: consumers already take duplicates (at-least-once).

kafka-python checks every record batch, produced and fetched, with CRC-32C: in pure Python (about 7 MB/s)
unless the ``crc32c`` package is installed (the ``kafka-python[crc32c]`` dependency). On 100-300 kB chunks
and clips the pure-Python checksum cost some 0.5 CPU-seconds per second of 4 cameras' video and, under one
GIL, delayed every stage of an embedded platform (issue 16 item 1, issue 17 item 4); without the package
the bus logs a warning.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import CommitFailedError, TopicAlreadyExistsError
from kafka.producer.future import FutureRecordMetadata
from kafka.record.util import crc32c_c
from kafka.structs import OffsetAndMetadata

from avsurv.adapters.bus import Message

MAX_MESSAGE_BYTES = 1_000_000
"""Kafka's default message size limit; clip payloads stay far below it."""
DELIVERY_TIMEOUT_MS = 120_000
"""How long the producer tries one send before ``flush`` sends it again (the client's default)."""
RESEND_BACKOFF_S = (0.5, 5.0)
"""Wait before sending undelivered messages again: doubling from the first value up to the second."""
LOGIN_PROBE_S = 1.0
"""How long :meth:`KafkaBus.login_hint` waits for the broker's port."""
READ_BACK_TIMEOUT_S = 30.0
"""How long :meth:`KafkaBus.recent` may take to read a topic's tail before it gives up (raises)."""

log = logging.getLogger("avsurv")


class DeliveryError(RuntimeError):
    """A published message that no retry can deliver (e.g. too large, not authorized)."""


@dataclass(frozen=True)
class _Send:
    topic: str
    key: bytes
    value: bytes
    future: FutureRecordMetadata


class KafkaBus:
    def __init__(self, bootstrap_servers: str, *, partitions: int = 4, replication_factor: int = 1,
                 client_id: str = "avsurv", max_poll_interval_ms: int = 300_000,
                 delivery_timeout_ms: int = DELIVERY_TIMEOUT_MS, security: Mapping[str, Any] | None = None) -> None:
        """``security``: kafka-python's security arguments (``security_protocol``, ``sasl_*``, ``ssl_cafile``),
        given to every client."""
        self.bootstrap_servers = bootstrap_servers
        self.security = dict(security or {})
        self.partitions, self.replication_factor = partitions, replication_factor
        self.client_id, self.max_poll_interval_ms = client_id, max_poll_interval_ms
        self.delivery_timeout_ms = delivery_timeout_ms
        self._producer: KafkaProducer | None = None
        self._unflushed: list[_Send] = []
        # Services of one process share the bus: a flush delivers every message published before it, the
        # other threads' too, and a publish waits while a flush sends failed messages again.
        self._lock = threading.RLock()
        if crc32c_c is None:
            log.warning("kafka: the crc32c package is missing: kafka-python checksums every message in pure "
                        "Python, several times slower end to end")

    def ensure_topics(self, topics: Sequence[str]) -> None:
        """Creates the topics that do not exist yet (idempotent)."""
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id=self.client_id, **self.security)
        try:
            missing = sorted(set(topics) - set(admin.list_topics()))
            for topic in missing:
                with suppress(TopicAlreadyExistsError):  # created by another service meanwhile
                    admin.create_topics([NewTopic(topic, self.partitions, self.replication_factor)])
        finally:
            admin.close()

    def login_hint(self) -> str:
        """When the client cannot bootstrap but the broker's port takes connections: the client's security
        settings in words, since kafka-python reports a refused login as the same "Unable to bootstrap" as a
        broker that is down. Empty when the port is closed too (the broker is down or starting)."""
        host, _, port = self.bootstrap_servers.split(",")[0].strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=LOGIN_PROBE_S).close()
        except (OSError, ValueError):
            return ""
        protocol = self.security.get("security_protocol", "PLAINTEXT")
        login = f", {self.security['sasl_mechanism']} as {self.security.get('sasl_plain_username', '')!r}" \
            if "sasl_mechanism" in self.security else ""
        return (f"the broker at {host}:{port} takes connections, so it may be refusing this client ({protocol}"
                f"{login}): check AVSURV_KAFKA_SECURITY_PROTOCOL, AVSURV_KAFKA_SASL_* and AVSURV_KAFKA_SSL_CAFILE")

    def _producer_client(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(bootstrap_servers=self.bootstrap_servers, client_id=self.client_id,
                                           acks="all", linger_ms=5, max_request_size=MAX_MESSAGE_BYTES,
                                           delivery_timeout_ms=self.delivery_timeout_ms,
                                           request_timeout_ms=min(30_000, self.delivery_timeout_ms - 100),
                                           **self.security)
        return self._producer

    def _new_producer(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=0)
            self._producer = None

    def publish(self, topic: str, key: str, value: bytes) -> None:
        if len(value) > MAX_MESSAGE_BYTES:
            raise ValueError(f"message of {len(value)} bytes for {topic} exceeds {MAX_MESSAGE_BYTES}")
        with self._lock:
            self._send(topic, key.encode(), value)

    def _send(self, topic: str, key: bytes, value: bytes) -> None:
        self._unflushed.append(_Send(topic, key, value, self._producer_client().send(topic, key=key, value=value)))

    def flush(self) -> None:
        """Returns once every message published since the last flush is stored (see the module's decision)."""
        with self._lock:
            sends = list(self._unflushed)
            if not sends:
                return
            producer = self._producer_client()
        # The acknowledgements are awaited without the lock, so that the other services of the process go on
        # publishing and flushing meanwhile (under it, every flush stalled every publisher for a round trip).
        producer.flush()
        with self._lock:
            if all(send.future.succeeded() for send in sends):
                stored = {id(send) for send in sends}
                self._unflushed = [send for send in self._unflushed if id(send) not in stored]
            else:  # some failed (or were sent by a producer another flush replaced): deliver under the lock
                self._deliver()

    def _deliver(self) -> None:
        backoff = RESEND_BACKOFF_S[0]
        while self._unflushed:
            self._producer_client().flush()
            sends, self._unflushed = self._unflushed, []
            failed = [send for send in sends if send.future.failed()]
            fatal = [send for send in failed if not send.future.retriable()]
            if fatal:
                raise DeliveryError(f"{len(fatal)} message(s) to {fatal[0].topic} cannot be delivered: "
                                    f"{_reason(fatal[0].future.exception)}")
            if failed:
                log.warning("kafka: %d message(s) not delivered (%s); sending them again in %.1f s", len(failed),
                            _reason(failed[0].future.exception), backoff)
                time.sleep(backoff)
                backoff = min(2 * backoff, RESEND_BACKOFF_S[1])
                self._new_producer()  # an expired send leaves an idempotent producer's sequence out of step
                for send in failed:
                    self._send(send.topic, send.key, send.value)

    def subscribe(self, group: str, topics: Sequence[str]) -> KafkaSubscription:
        consumer = KafkaConsumer(
            *topics, bootstrap_servers=self.bootstrap_servers, client_id=self.client_id, group_id=group,
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_interval_ms=self.max_poll_interval_ms,
            session_timeout_ms=min(10_000, self.max_poll_interval_ms), heartbeat_interval_ms=1_000,
            fetch_max_bytes=8 * MAX_MESSAGE_BYTES, max_partition_fetch_bytes=2 * MAX_MESSAGE_BYTES,
            fetch_max_wait_ms=100,  # the default 500 ms idles every stage of the pipeline in turn
            **self.security,
        )
        return KafkaSubscription(consumer)

    def recent(self, topic: str, key: str, limit: int) -> list[bytes]:
        """The values published with ``key`` among the last ``limit`` messages of each partition of ``topic``
        (a consumer of no group reads them); raises :class:`DeliveryError` if the tail cannot be read."""
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap_servers, client_id=self.client_id,
                                 enable_auto_commit=False, fetch_max_wait_ms=100, **self.security)
        try:
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            consumer.assign(partitions)
            ends, starts = consumer.end_offsets(partitions), consumer.beginning_offsets(partitions)
            for partition in partitions:
                consumer.seek(partition, max(starts[partition], ends[partition] - limit))
            values: list[bytes] = []
            deadline = time.monotonic() + READ_BACK_TIMEOUT_S
            while any(consumer.position(p) < ends[p] for p in partitions):
                if time.monotonic() > deadline:
                    raise DeliveryError(f"could not read back the last {limit} messages of {topic}")
                for partition, records in consumer.poll(timeout_ms=500).items():
                    values += [r.value for r in records if r.offset < ends[partition] and r.key == key.encode()]
            return values
        finally:
            consumer.close(autocommit=False)

    def close(self) -> None:
        """Waits one delivery timeout at most: shutting down must not hang on a broker that is gone."""
        with self._lock:
            self._close_producer()

    def _close_producer(self) -> None:
        if self._producer is not None:
            self._producer.flush()
            lost = sum(not send.future.succeeded() for send in self._unflushed)
            if lost:  # every service flushes before it commits, so their inputs are redone after a restart
                log.error("kafka: closing with %d undelivered message(s); their inputs stay uncommitted", lost)
            self._unflushed = []
            self._producer.close()
            self._producer = None


def _reason(error: BaseException | None) -> str:
    return f"{type(error).__name__}: {error}"


class KafkaSubscription:
    def __init__(self, consumer: KafkaConsumer) -> None:
        self.consumer = consumer
        self._committed: dict[TopicPartition, int] = {}

    def poll(self, timeout_s: float = 1.0, max_messages: int = 100) -> list[Message]:
        records = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_messages)
        return [
            Message(r.topic, r.partition, r.offset, r.key.decode() if r.key else "", r.value)
            for batch in records.values() for r in batch
        ]

    def commit(self, message: Message) -> None:
        partition = TopicPartition(message.topic, message.partition)
        offset = message.offset + 1
        if offset <= self._committed.get(partition, -1):
            return  # never move a committed offset backwards
        try:
            self.consumer.commit({partition: OffsetAndMetadata(offset, "", -1)})
        except CommitFailedError as error:
            # The group took the partition back (this member was too slow or away): its next owner, maybe this
            # member after rejoining at its next poll, gets the uncommitted messages again (idempotent work).
            log.warning("kafka: commit of %s[%d] up to %d refused, the group rebalanced: %s", message.topic,
                        message.partition, offset, error)
            return
        self._committed[partition] = offset

    def close(self) -> None:
        self.consumer.close(autocommit=False)

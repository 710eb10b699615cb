"""The bus port over Apache Kafka (or any Kafka-protocol broker) with kafka-python.

Producers wait for every in-sync replica (``acks="all"``); consumers never auto-commit, so an offset is
committed only when the service says its work is durable (at-least-once).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from avsurv.adapters.bus import Message

MAX_MESSAGE_BYTES = 1_000_000
"""Kafka's default message size limit; clip payloads stay far below it."""


class KafkaBus:
    def __init__(self, bootstrap_servers: str, *, partitions: int = 4, replication_factor: int = 1,
                 client_id: str = "avsurv", max_poll_interval_ms: int = 300_000) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.partitions, self.replication_factor = partitions, replication_factor
        self.client_id, self.max_poll_interval_ms = client_id, max_poll_interval_ms
        self._producer: KafkaProducer | None = None

    def ensure_topics(self, topics: Sequence[str]) -> None:
        """Creates the topics that do not exist yet (idempotent)."""
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id=self.client_id)
        try:
            missing = sorted(set(topics) - set(admin.list_topics()))
            for topic in missing:
                with suppress(TopicAlreadyExistsError):  # created by another service meanwhile
                    admin.create_topics([NewTopic(topic, self.partitions, self.replication_factor)])
        finally:
            admin.close()

    def _producer_client(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(bootstrap_servers=self.bootstrap_servers, client_id=self.client_id,
                                           acks="all", linger_ms=5, max_request_size=MAX_MESSAGE_BYTES)
        return self._producer

    def publish(self, topic: str, key: str, value: bytes) -> None:
        if len(value) > MAX_MESSAGE_BYTES:
            raise ValueError(f"message of {len(value)} bytes for {topic} exceeds {MAX_MESSAGE_BYTES}")
        self._producer_client().send(topic, key=key.encode(), value=value)

    def flush(self) -> None:
        if self._producer is not None:
            self._producer.flush()

    def subscribe(self, group: str, topics: Sequence[str]) -> KafkaSubscription:
        consumer = KafkaConsumer(
            *topics, bootstrap_servers=self.bootstrap_servers, client_id=self.client_id, group_id=group,
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_interval_ms=self.max_poll_interval_ms,
            session_timeout_ms=min(10_000, self.max_poll_interval_ms), heartbeat_interval_ms=1_000,
            fetch_max_bytes=8 * MAX_MESSAGE_BYTES, max_partition_fetch_bytes=2 * MAX_MESSAGE_BYTES,
            fetch_max_wait_ms=100,  # the default 500 ms idles every stage of the pipeline in turn
        )
        return KafkaSubscription(consumer)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush()
            self._producer.close()
            self._producer = None


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
        self.consumer.commit({partition: OffsetAndMetadata(offset, "", -1)})
        self._committed[partition] = offset

    def close(self) -> None:
        self.consumer.close(autocommit=False)

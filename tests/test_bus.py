"""The bus port: the in-process bus and the Kafka adapter (against a real Kafka-protocol broker) obey the
same contract, and an independent Kafka client (librdkafka, via confluent-kafka) reads and writes the
same topics."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer
from kafka.record.util import crc32c_c
from realparts import kafka_broker, kafka_broker_process

from avsurv.adapters.bus import Bus, InProcessBus, Message, Subscription
from avsurv.adapters.kafka_bus import KafkaBus


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    with kafka_broker() as address:
        yield address


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A topic of this test's own (the broker is shared by the module's tests)."""
    return f"avsurv.test.{request.node.name.replace('[', '.').rstrip(']')}"


@pytest.fixture(params=["inprocess", "kafka"])
def bus(request: pytest.FixtureRequest, topic: str) -> Iterator[Bus]:
    if request.param == "inprocess":
        bus: Bus = InProcessBus(partitions=3)
    else:
        kafka = KafkaBus(request.getfixturevalue("broker"), partitions=3, max_poll_interval_ms=5_000)
        kafka.ensure_topics([topic])
        bus = kafka
    yield bus
    bus.close()


def drain(subscription: Subscription, expected: int, timeout_s: float = 30.0) -> list[Message]:
    """Polls until ``expected`` messages arrived, then once more to catch any extra."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expected and time.monotonic() < deadline:
        got += subscription.poll(timeout_s=0.5)
    got += subscription.poll(timeout_s=1.0)
    return got


def publish_all(bus: Bus, topic: str, count: int) -> None:
    for i in range(count):
        bus.publish(topic, f"cam{i % 4}", str(i).encode())
    bus.flush()


def test_every_message_is_delivered_once_in_per_key_order(bus: Bus, topic: str) -> None:
    publish_all(bus, topic, 40)
    subscription = bus.subscribe("g-order", [topic])
    got = drain(subscription, 40)
    subscription.close()
    assert sorted(int(m.value) for m in got) == list(range(40))
    for camera in range(4):
        values = [int(m.value) for m in got if m.key == f"cam{camera}"]
        assert values == sorted(values) and len(values) == 10


def test_uncommitted_messages_are_redelivered_to_the_group(bus: Bus, topic: str) -> None:
    publish_all(bus, topic, 30)
    first = bus.subscribe("g-redeliver", [topic])
    got = drain(first, 30)
    # Work done on the first half of each partition's messages only, as if the service died then.
    by_partition: dict[int, list[Message]] = {}
    for message in got:
        by_partition.setdefault(message.partition, []).append(message)
    done = [m for messages in by_partition.values() for m in messages[: len(messages) // 2]]
    for message in done:
        first.commit(message)
    first.close()

    second = bus.subscribe("g-redeliver", [topic])
    again = drain(second, 30 - len(done))
    second.close()
    assert sorted(m.value for m in again) == sorted(m.value for m in got if m not in done)


def test_another_group_reads_everything(bus: Bus, topic: str) -> None:
    publish_all(bus, topic, 12)
    a, b = bus.subscribe("g-a", [topic]), bus.subscribe("g-b", [topic])
    got_a, got_b = drain(a, 12), drain(b, 12)
    a.close()
    b.close()
    assert sorted(m.value for m in got_a) == sorted(m.value for m in got_b)
    assert len(got_a) == 12


def test_commit_never_moves_backwards(bus: Bus, topic: str) -> None:
    publish_all(bus, topic, 8)
    first = bus.subscribe("g-back", [topic])
    got = drain(first, 8)
    for message in reversed(got):  # newest first, then older ones: offsets must stay at the newest
        first.commit(message)
    first.close()
    second = bus.subscribe("g-back", [topic])
    assert second.poll(timeout_s=3.0) == []
    second.close()


def test_inprocess_bus_refuses_a_second_live_member_of_a_group(topic: str) -> None:
    bus = InProcessBus()
    bus.subscribe("g", [topic])
    with pytest.raises(RuntimeError, match="already has a live subscription"):
        bus.subscribe("g", [topic])


def test_inprocess_poll_wakes_when_a_message_arrives(topic: str) -> None:
    import threading

    bus = InProcessBus()
    subscription = bus.subscribe("g", [topic])
    threading.Timer(0.2, bus.publish, args=(topic, "k", b"v")).start()
    started = time.monotonic()
    got = subscription.poll(timeout_s=10.0)
    assert [m.value for m in got] == [b"v"] and time.monotonic() - started < 5.0


def test_an_independent_kafka_client_reads_and_writes_the_same_topics(broker: str) -> None:
    bus = KafkaBus(broker, partitions=2, max_poll_interval_ms=5_000)
    topic = "avsurv.interop.v1"
    bus.ensure_topics([topic])
    bus.publish(topic, "cam0", b"from kafka-python")
    bus.flush()

    consumer = Consumer({"bootstrap.servers": broker, "group.id": "librdkafka", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    received = None
    deadline = time.monotonic() + 30
    while received is None and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            received = message
    consumer.close()
    assert received is not None and received.value() == b"from kafka-python" and received.key() == b"cam0"

    producer = Producer({"bootstrap.servers": broker})
    producer.produce(topic, key=b"cam1", value=b"from librdkafka")
    assert producer.flush(10) == 0
    subscription = bus.subscribe("kafka-python", [topic])
    got = drain(subscription, 2)
    subscription.close()
    bus.close()
    assert {(m.key, m.value) for m in got} == {("cam0", b"from kafka-python"), ("cam1", b"from librdkafka")}


def test_flush_returns_only_once_a_message_sent_while_the_broker_stalled_is_stored() -> None:
    """Issue 14: with the broker paused past the producer's delivery timeout, flush used to return as if
    the send had succeeded, and the caller then committed its input: the message was lost."""
    with kafka_broker_process() as (address, process):
        bus = KafkaBus(address, partitions=1, max_poll_interval_ms=5_000, delivery_timeout_ms=2_000)
        topic = "avsurv.stall.v1"
        bus.ensure_topics([topic])
        bus.publish(topic, "cam0", b"before")
        bus.flush()
        process.send_signal(signal.SIGSTOP)
        bus.publish(topic, "cam0", b"during")
        flushed = threading.Event()
        flusher = threading.Thread(target=lambda: (bus.flush(), flushed.set()), daemon=True)
        flusher.start()
        flusher.join(6.0)  # three delivery timeouts
        stalled_flush_returned = flushed.is_set()
        process.send_signal(signal.SIGCONT)
        flusher.join(60.0)
        assert not stalled_flush_returned, "flush returned while the message was not stored"
        assert flushed.is_set()
        subscription = bus.subscribe("g-stall", [topic])
        got = {m.value for m in drain(subscription, 2)}
        subscription.close()
        bus.close()
        assert got == {b"before", b"during"}


def test_a_flush_waiting_for_the_broker_holds_up_no_other_publisher() -> None:
    """Services of one process share the bus (issue 17 item 4): while one thread's flush waits for a stalled
    broker, another thread still publishes at once, and each flush returns only once its messages are stored."""
    with kafka_broker_process() as (address, process):
        bus = KafkaBus(address, partitions=1, max_poll_interval_ms=5_000)
        topic = "avsurv.concurrent.v1"
        bus.ensure_topics([topic])
        bus.publish(topic, "cam0", b"before")
        bus.flush()
        process.send_signal(signal.SIGSTOP)
        bus.publish(topic, "cam0", b"first")
        flushed = threading.Event()
        flusher = threading.Thread(target=lambda: (bus.flush(), flushed.set()), daemon=True)
        flusher.start()
        time.sleep(0.5)  # the flusher now waits for the broker
        published = threading.Event()
        publisher = threading.Thread(target=lambda: (bus.publish(topic, "cam1", b"second"), published.set()),
                                     daemon=True)
        publisher.start()
        publisher.join(1.0)
        published_while_stalled, stalled_flush_returned = published.is_set(), flushed.is_set()
        process.send_signal(signal.SIGCONT)
        publisher.join(60.0)
        bus.flush()
        flusher.join(60.0)
        assert published_while_stalled, "a publish waited for another thread's flush"
        assert not stalled_flush_returned and flushed.is_set()
        subscription = bus.subscribe("g-concurrent", [topic])
        got = {m.value for m in drain(subscription, 3)}
        subscription.close()
        bus.close()
        assert got == {b"before", b"first", b"second"}

def test_kafka_client_checksums_in_native_code() -> None:
    """Issues 16 and 17: kafka-python's pure-Python CRC-32C (without the ``crc32c`` package) cost some 0.5
    CPU-seconds per second of 4 cameras' chunks and clips, and delayed every stage of the pipeline."""
    assert crc32c_c is not None, "install kafka-python[crc32c] (pyproject.toml)"

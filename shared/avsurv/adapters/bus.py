"""The bus port: keyed topics, consumer groups and explicit commits (Kafka's semantics), with an
in-process implementation for the embedded deployment.

Delivery is at-least-once: a consumer commits a message only after its work is durable, and a group that
restarts (a new subscription with the same group name) gets every uncommitted message again. Messages of
one key (a camera id) keep their order, since a key always lands in the same partition.
"""

from __future__ import annotations

import threading
import zlib
from collections import defaultdict
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes


class Subscription(Protocol):
    def poll(self, timeout_s: float = 1.0, max_messages: int = 100) -> list[Message]:
        """The next messages of the group's partitions, waiting up to ``timeout_s`` for the first."""
        ...

    def commit(self, message: Message) -> None:
        """Marks ``message`` and everything before it in its partition as done for the group."""
        ...

    def close(self) -> None: ...


def leave(subscription: Subscription | None) -> None:
    """Closes a consumer's subscription after a failed step, the broker perhaps away (the group then drops the
    member anyway): its uncommitted messages go to the group's next subscription."""
    if subscription is not None:
        with suppress(Exception):
            subscription.close()


class Bus(Protocol):
    def publish(self, topic: str, key: str, value: bytes) -> None: ...

    def flush(self) -> None:
        """Returns once every published message is stored by the bus."""
        ...

    def subscribe(self, group: str, topics: Sequence[str]) -> Subscription: ...

    def recent(self, topic: str, key: str, limit: int) -> list[bytes]:
        """The values published with ``key`` among the last ``limit`` messages of each of ``topic``'s
        partitions, oldest first: what a publisher that died reads back to learn whether its send landed."""
        ...

    def close(self) -> None: ...


def partition_for(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


class InProcessBus:
    """Topics as in-memory append-only partition logs shared by the services of one process.

    Same semantics as the Kafka adapter: per-key order, consumer groups with committed offsets, and
    redelivery of uncommitted messages to the group's next subscription. One live subscription per
    group (a second one is refused rather than silently splitting the partitions).
    """

    def __init__(self, partitions: int = 4) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        self.partitions = partitions
        self._logs: dict[str, list[list[Message]]] = {}
        self._committed: dict[tuple[str, str, int], int] = defaultdict(int)
        self._members: set[str] = set()
        self._changed = threading.Condition()

    def _log(self, topic: str) -> list[list[Message]]:
        return self._logs.setdefault(topic, [[] for _ in range(self.partitions)])

    def publish(self, topic: str, key: str, value: bytes) -> None:
        with self._changed:
            partition = partition_for(key, self.partitions)
            log = self._log(topic)[partition]
            log.append(Message(topic, partition, len(log), key, bytes(value)))
            self._changed.notify_all()

    def flush(self) -> None:
        """Nothing to wait for: publishing stores the message."""

    def subscribe(self, group: str, topics: Sequence[str]) -> InProcessSubscription:
        with self._changed:
            if group in self._members:
                raise RuntimeError(f"consumer group {group!r} already has a live subscription on this bus")
            self._members.add(group)
            for topic in topics:
                self._log(topic)
        return InProcessSubscription(self, group, list(topics))

    def recent(self, topic: str, key: str, limit: int) -> list[bytes]:
        with self._changed:
            return [m.value for log in self._log(topic) for m in log[-limit:] if m.key == key]

    def end_offsets(self, topic: str) -> list[int]:
        with self._changed:
            return [len(log) for log in self._log(topic)]

    def close(self) -> None:
        with self._changed:
            self._changed.notify_all()


class InProcessSubscription:
    def __init__(self, bus: InProcessBus, group: str, topics: list[str]) -> None:
        self.bus, self.group, self.topics = bus, group, topics
        # Start where the group committed: everything after that is (re)delivered.
        self._position = {(t, p): bus._committed[(group, t, p)] for t in topics for p in range(bus.partitions)}
        self._closed = False

    def _ready(self, max_messages: int) -> list[Message]:
        batch: list[Message] = []
        for (topic, partition), position in self._position.items():
            log = self.bus._logs[topic][partition]
            taken = log[position : position + max_messages - len(batch)]
            self._position[(topic, partition)] += len(taken)
            batch += taken
            if len(batch) >= max_messages:
                break
        return batch

    def poll(self, timeout_s: float = 1.0, max_messages: int = 100) -> list[Message]:
        with self.bus._changed:
            if self._closed:
                raise RuntimeError("subscription is closed")
            self.bus._changed.wait_for(lambda: bool(self._peek()) or self._closed, timeout=timeout_s)
            return [] if self._closed else self._ready(max_messages)

    def _peek(self) -> bool:
        return any(len(self.bus._logs[t][p]) > pos for (t, p), pos in self._position.items())

    def waiting(self) -> bool:
        """Whether messages are waiting to be polled."""
        with self.bus._changed:
            return self._peek()

    def commit(self, message: Message) -> None:
        with self.bus._changed:
            slot = (self.group, message.topic, message.partition)
            self.bus._committed[slot] = max(self.bus._committed[slot], message.offset + 1)

    def close(self) -> None:
        with self.bus._changed:
            if not self._closed:
                self._closed = True
                self.bus._members.discard(self.group)
                self.bus._changed.notify_all()


class CommitTracker:
    """Commits a partition's offset only up to the first message whose work is not done yet.

    Messages of several keys share a partition and finish out of order (a camera's chunk waits for the
    next one, a clip waits for its batch); committing a later offset would also commit the unfinished
    earlier ones, which a restart would then lose.
    """

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self._open: dict[tuple[str, int], set[int]] = defaultdict(set)
        self._highest_done: dict[tuple[str, int], int] = {}

    def started(self, message: Message) -> None:
        self._open[(message.topic, message.partition)].add(message.offset)

    def done(self, message: Message) -> None:
        slot = (message.topic, message.partition)
        self._open[slot].discard(message.offset)
        self._highest_done[slot] = max(self._highest_done.get(slot, -1), message.offset)
        limit = min(self._open[slot], default=self._highest_done[slot] + 1)
        safe = min(self._highest_done[slot], limit - 1)
        if safe >= 0:
            self.subscription.commit(Message(message.topic, message.partition, safe, message.key, b""))

    def pending(self) -> int:
        return sum(len(offsets) for offsets in self._open.values())

    def drained(self) -> bool:
        """Every message polled is done and, on the in-process bus, none waits to be polled (a Kafka
        consumer cannot see what it has not polled: it counts only what it has)."""
        waiting = isinstance(self.subscription, InProcessSubscription) and self.subscription.waiting()
        return not waiting and self.pending() == 0

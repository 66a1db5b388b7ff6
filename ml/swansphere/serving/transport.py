"""How stages hand messages on (DESIGN §2): a topic per stage, consumer groups, explicit acks.

Delivery is at-least-once: a message is redelivered until acked (Redis: XAUTOCLAIM of entries a dead
worker left; Kafka: uncommitted offsets after a rebalance), so stages are idempotent on
`Envelope.key`. `MemoryTransport` is the embedded mode's in-process queue: one process, acks are
immediate, nothing is lost because nothing can die apart.
"""

import threading
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from swansphere.serving.envelope import Envelope


@dataclass
class Delivery:
    """A received message and the transport's handle to ack it."""

    topic: str
    message: Envelope
    receipt: str = ""
    """Redis entry id or Kafka "partition:offset"; empty for in-process queues."""
    redelivered: bool = False
    """Possibly handled before by a worker that died before acking (Redis: claimed or pending entries;
    Kafka: the first records of a partition after it was assigned); see `Stage.replay`."""


class Transport(Protocol):
    def publish(self, topic: str, message: Envelope) -> None:
        """Append `message` to `topic`; returns once the transport holds it."""
        ...

    def publish_all(self, messages: Sequence[tuple[str, Envelope]]) -> None:
        """`publish` of each (topic, message), in order, in as few round trips as the server allows."""
        ...

    def receive(self, topic: str, group: str, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        """Up to `count` new messages for this consumer of `group`, after up to `count` of its own
        unacked ones (redeliveries), waiting at most `block_ms` for one to arrive."""
        ...

    def ack(self, deliveries: Sequence[Delivery], group: str) -> None:
        """Done with `deliveries`: they will not be delivered to `group` again."""
        ...

    def publish_and_ack(
        self, messages: Sequence[tuple[str, Envelope]], deliveries: Sequence[Delivery], group: str
    ) -> None:
        """`publish_all(messages)`, then `ack(deliveries, group)`: what a worker does after each batch,
        in one round trip where the server allows it."""
        ...

    def depth(self, topic: str, group: str) -> int:
        """Messages of `topic` not yet acked by `group` (queue depth, for metrics and autoscaling)."""
        ...

    def delete(self, topic: str) -> None:
        """Drop a finished stream's topic."""
        ...


class MemoryTransport:
    """In-process queues for embedded mode: one deque per (topic, group), FIFO.

    A receive that may block waits on a condition, not in a loop: a gateway serving an embedded pipeline
    polls its chunks with block_ms, and a loop would hold the GIL the pipeline's thread needs. The
    pipeline's own receives (block_ms=0) and publishes take no lock while nobody waits."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[Envelope]] = defaultdict(deque)
        self._published = threading.Condition()
        self._waiting = 0

    def publish(self, topic: str, message: Envelope) -> None:
        self._queues[topic].append(message)
        if self._waiting:
            with self._published:
                self._published.notify_all()

    def publish_all(self, messages: Sequence[tuple[str, Envelope]]) -> None:
        for topic, message in messages:
            self.publish(topic, message)

    def receive(self, topic: str, group: str, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        if block_ms > 0 and not self._queues.get(topic):
            with self._published:
                self._waiting += 1  # before the check in wait_for: a publish after it notifies
                try:
                    self._published.wait_for(lambda: self._queues.get(topic), timeout=block_ms / 1000)
                finally:
                    self._waiting -= 1
        queue = self._queues[topic]
        return [Delivery(topic, queue.popleft()) for _ in range(min(count, len(queue)))]

    def ack(self, deliveries: Sequence[Delivery], group: str) -> None:
        """Nothing to do: an in-process message is gone once received."""

    def publish_and_ack(
        self, messages: Sequence[tuple[str, Envelope]], deliveries: Sequence[Delivery], group: str
    ) -> None:
        self.publish_all(messages)
        self.ack(deliveries, group)

    def depth(self, topic: str, group: str) -> int:
        return len(self._queues[topic])

    def delete(self, topic: str) -> None:
        self._queues.pop(topic, None)

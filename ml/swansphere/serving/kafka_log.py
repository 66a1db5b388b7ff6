"""The durable event log (DESIGN §2, §7): Kafka topics of requests and finished chunks, written by the
gateway and read by whoever audits usage or assembles retraining data (ODPO samples have their own
topic, see `swansphere.feedback`).

`KafkaTransport` implements `Transport`, so the same stage classes can run behind Kafka, but Kafka hands
a dead consumer's partitions over only after `session_timeout_ms` (6 s at the least), which is why the
per-patch hot path runs on Redis. Records are keyed by stream id: one stream's messages share a
partition and stay in order. Values are encoded `Envelope`s. Every broker call has a bounded timeout;
an unreachable broker raises `TransportError`.
"""

import logging
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.producer.future import FutureRecordMetadata
from kafka.structs import OffsetAndMetadata

from swansphere.errors import InputError
from swansphere.serving.envelope import Envelope, decode, encode
from swansphere.serving.redis_streams import TransportError
from swansphere.serving.transport import Delivery

log = logging.getLogger(__name__)

EVENT_TOPICS = {"requests": "swansphere.requests", "chunks": "swansphere.chunks"}
"""The event log's topics, shared by all streams (never per-stream topics on Kafka)."""
CHUNK_FIELDS = ("first_sample", "samples", "seconds")
"""What a chunk event says about the chunk (its audio went to the client, not to the log)."""


class KafkaTransport:
    """`Transport` on Kafka: a topic is a Kafka topic, a group a consumer group, and each consumer name
    gets its own group member. Not thread-safe (KafkaConsumer is not): one per worker thread.

    An ack commits the message's offset + 1 on its partition and never moves a committed offset back.
    Kafka keeps one offset per partition, so acking a message also settles the earlier ones of its
    partition: ack in order (stages ack each batch after handling it). Messages not yet committed are
    redelivered after a rebalance or restart, not to the same consumer meanwhile.
    """

    def __init__(
        self,
        bootstrap: str,
        client_id: str = "swansphere",
        session_timeout_ms: int = 10_000,
        timeout_s: float = 10.0,
        linger_ms: int = 0,
    ):
        """`session_timeout_ms`: how long the group waits for a silent member (brokers allow 6 s and
        up); `timeout_s`: bound on every other broker call; `linger_ms`: how long the producer holds a
        record for others to share its request (`publish_later`; `publish_all` waits for each record,
        so it would only add this delay)."""
        self.bootstrap, self.client_id = bootstrap, client_id
        self.session_timeout_ms, self.timeout_s = session_timeout_ms, timeout_s
        timeout_ms = int(timeout_s * 1000)
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap,
                client_id=client_id,
                acks="all",
                bootstrap_timeout_ms=timeout_ms,
                max_block_ms=timeout_ms,
                request_timeout_ms=timeout_ms,
                delivery_timeout_ms=timeout_ms + linger_ms,
                linger_ms=linger_ms,
            )
        except KafkaError as err:
            raise TransportError(
                f"Kafka broker {bootstrap} unreachable within {timeout_s} s: {err}"
            ) from None
        self._consumers: dict[tuple[str, str, str], KafkaConsumer] = {}
        self._probes: dict[str, KafkaConsumer] = {}
        self._committed: dict[tuple[str, TopicPartition], int] = {}
        self._held: dict[tuple[str, str, str], set[TopicPartition]] = {}
        """Each consumer's partitions as of its last poll."""
        self._unread: dict[tuple[str, str, str], set[TopicPartition]] = {}
        """Partitions assigned to the consumer that have not yielded a record since."""

    def _consumer_config(self, group: str, client_id: str) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.bootstrap,
            "client_id": client_id,
            "group_id": group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "bootstrap_timeout_ms": int(self.timeout_s * 1000),
            "request_timeout_ms": self.session_timeout_ms + 5_000,
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": max(self.session_timeout_ms // 3, 100),
        }

    def publish(self, topic: str, message: Envelope) -> None:
        self.publish_all([(topic, message)])

    def publish_all(self, messages: Sequence[tuple[str, Envelope]]) -> None:
        """Sends each keyed by stream id and waits for all in-sync replicas (durability over latency).

        One at a time: the Tansu broker the tests run reports a high watermark one short for every
        extra record of a multi-record batch (its records are all there), which would make `depth`
        undercount. The per-patch traffic goes over Redis by default (redis_streams.py).
        """
        for topic, message in messages:
            future = self._send(topic, message)
            try:
                future.get(timeout=self.timeout_s)
            except KafkaError as err:
                raise TransportError(f"publishing to {topic} on {self.bootstrap} failed: {err}") from None

    def publish_later(self, topic: str, message: Envelope, on_lost: Callable[[Exception], None]) -> None:
        """Hands the record to the producer without waiting for the broker: records that come within
        `linger_ms` share one produce request. For the event log, whose records nobody waits for:
        waiting for each costs the gateway a request and a response per chunk, about 2.5 ms of its
        CPU and GIL. `on_lost(error)` is called (on the producer's thread) if the broker never takes it."""
        self._send(topic, message).add_errback(on_lost)

    def _send(self, topic: str, message: Envelope) -> FutureRecordMetadata:
        """The record handed to the producer, keyed by stream id; its future."""
        try:
            return self._producer.send(topic, key=message.stream_id.encode(), value=encode(message))
        except KafkaError as err:
            raise TransportError(f"publishing to {topic} on {self.bootstrap} failed: {err}") from None

    def receive(self, topic: str, group: str, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        """The first call per (topic, group, consumer) joins the group, which takes seconds."""
        if count < 1:
            raise InputError(f"count must be >= 1, got {count}")
        kafka = self._consumers.get((topic, group, consumer))
        try:
            if kafka is None:
                config = self._consumer_config(group, f"{self.client_id}-{consumer}")
                kafka = self._consumers[topic, group, consumer] = KafkaConsumer(topic, **config)
            batches = kafka.poll(timeout_ms=max(block_ms, 0), max_records=count)
        except KafkaError as err:
            raise TransportError(f"receiving from {topic} on {self.bootstrap} failed: {err}") from None
        # A newly assigned partition resumes from its last commit: its first records may have been
        # handled by the member that held it before.
        member = (topic, group, consumer)
        held = set(kafka.assignment())
        unread = (self._unread.get(member, set()) | (held - self._held.get(member, set()))) & held
        self._held[member], self._unread[member] = held, unread - set(batches)
        deliveries = []
        for tp, records in batches.items():
            for record in records:
                try:
                    message = decode(record.value)
                except InputError as err:
                    # Skipped, not committed: the next ack on its partition settles it.
                    log.warning("skipping %s[%d]@%d: %s", record.topic, record.partition, record.offset, err)
                    continue
                receipt = f"{record.partition}:{record.offset}"
                deliveries.append(Delivery(record.topic, message, receipt, tp in unread))
        return deliveries

    def publish_and_ack(
        self, messages: Sequence[tuple[str, Envelope]], deliveries: Sequence[Delivery], group: str
    ) -> None:
        """Publish, then commit the offsets: a worker that dies between the two has its batch
        redelivered, which the stages' idempotence absorbs."""
        self.publish_all(messages)
        self.ack(deliveries, group)

    def ack(self, deliveries: Sequence[Delivery], group: str) -> None:
        """Commits, per partition, the highest offset acked + 1, one commit per consumer that holds some."""
        highest: dict[TopicPartition, int] = {}
        for delivery in deliveries:
            try:
                partition, offset = (int(part) for part in delivery.receipt.split(":"))
            except ValueError:
                raise InputError(f"not a Kafka receipt (partition:offset): {delivery.receipt!r}") from None
            tp = TopicPartition(delivery.topic, partition)
            if self._committed.get((group, tp), -1) < offset + 1:
                highest[tp] = max(highest.get(tp, -1), offset + 1)
        owners: dict[int, tuple[KafkaConsumer, dict[TopicPartition, OffsetAndMetadata]]] = {}
        for tp, offset in highest.items():
            owner = next(
                (
                    kafka
                    for (topic, member_group, _), kafka in self._consumers.items()
                    if topic == tp.topic and member_group == group and tp in kafka.assignment()
                ),
                None,
            )
            if owner is None:
                log.warning("%s of group %s moved to another member; it will be redelivered there", tp, group)
                continue
            owners.setdefault(id(owner), (owner, {}))[1][tp] = OffsetAndMetadata(offset, "", -1)
        for owner, offsets in owners.values():
            try:
                owner.commit(offsets, timeout_ms=int(self.timeout_s * 1000))
            except CommitFailedError as err:
                log.warning("commit of %s for group %s lost to a rebalance: %s", sorted(offsets), group, err)
                continue
            except KafkaError as err:
                raise TransportError(
                    f"committing {sorted(offsets)} on {self.bootstrap} failed: {err}"
                ) from None
            for tp, offset in offsets.items():
                self._committed[group, tp] = offset.offset

    def depth(self, topic: str, group: str) -> int:
        """Sum over partitions of end offset minus the group's committed offset (or the first offset,
        before the group commits); 0 for a topic that does not exist."""
        try:
            probe = self._probes.get(group)
            if probe is None:
                config = self._consumer_config(group, f"{self.client_id}-depth")
                probe = self._probes[group] = KafkaConsumer(**config)
            partitions = [TopicPartition(topic, p) for p in probe.partitions_for_topic(topic) or ()]
            if not partitions:
                return 0
            timeout_ms = int(self.timeout_s * 1000)
            ends = probe.end_offsets(partitions, timeout_ms=timeout_ms)
            starts = probe.beginning_offsets(partitions, timeout_ms=timeout_ms)
            committed = {tp: probe.committed(tp, timeout_ms=timeout_ms) for tp in partitions}
        except KafkaError as err:
            raise TransportError(f"reading offsets of {topic} on {self.bootstrap} failed: {err}") from None
        return sum(
            ends[tp] - (committed[tp] if committed[tp] is not None else starts[tp]) for tp in partitions
        )

    def delete(self, topic: str) -> None:
        """Nothing to drop: Kafka topics here are shared, retained logs, not per-stream topics."""

    def close(self) -> None:
        """Leaves the groups (so partitions move on at once) and flushes the producer."""
        timeout_ms = int(self.timeout_s * 1000)
        for kafka in [*self._consumers.values(), *self._probes.values()]:
            kafka.close(autocommit=False, timeout_ms=timeout_ms)
        self._consumers.clear()
        self._probes.clear()
        self._producer.close(timeout=self.timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class EventLog:
    """The gateway's record of what it served: one small event per request and per finished chunk,
    published without waiting for the broker (`KafkaTransport.publish_later`); `lost` counts the
    events the broker never took, each also logged."""

    def __init__(self, transport: KafkaTransport):
        self.transport = transport
        self.lost = 0

    def request(self, stream_id: str, meta: dict[str, Any]) -> None:
        """A stream was admitted; `meta`: its settings (JSON values), whatever the gateway records."""
        self._publish(EVENT_TOPICS["requests"], Envelope(stream_id, "request", 0, dict(meta)))

    def chunk(self, stream_id: str, patch_index: int, meta: dict[str, Any]) -> None:
        """Chunk `patch_index` went out; `meta` holds at least first_sample, samples and seconds."""
        missing = [name for name in CHUNK_FIELDS if name not in meta]
        if missing:
            raise InputError(f"chunk event of {stream_id} #{patch_index} lacks {', '.join(missing)}")
        self._publish(EVENT_TOPICS["chunks"], Envelope(stream_id, "chunk", patch_index, dict(meta)))

    def _publish(self, topic: str, event: Envelope) -> None:
        def lost(error: Exception) -> None:
            self.lost += 1
            log.warning("event log: %s event of stream %s lost: %s", event.kind, event.stream_id, error)

        self.transport.publish_later(topic, event, lost)

    def close(self) -> None:
        """Sends what the producer still holds (its linger) and closes it."""
        self.transport.close()

"""Runs one stage over a transport: receive a batch, handle it, publish the results and ack.

Acking with publishing (Redis: one transaction) or after it (Kafka) gives at-least-once delivery;
stages are idempotent on a message's key, so a worker that dies before acking only causes a
redelivery, and a stateful stage first replays what the dead worker may have computed but not
published (`Stage.replay`). A message the stage rejects (InputError)
fails its own stream, not the worker: the stream gets an `error` message on its chunk topic, which
the gateway turns into INVALID_ARGUMENT. Anything else (Triton or Redis down) leaves the batch
unacked for redelivery and backs off.
"""

import logging
import threading
import time
from collections.abc import Callable

from swansphere.errors import InputError
from swansphere.serving.envelope import Envelope
from swansphere.serving.stages import Stage, out_topic
from swansphere.serving.transport import Delivery, Transport

log = logging.getLogger(__name__)


class StageWorker:
    def __init__(
        self,
        stage: Stage,
        transport: Transport,
        consumer: str,
        batch: int = 16,
        block_ms: int = 100,
        backoff_s: float = 0.5,
        on_batch: Callable[[int, float], None] | None = None,
    ):
        """`on_batch(messages, seconds)` is told about every handled batch (latency metrics)."""
        self.stage = stage
        self.transport = transport
        self.consumer = consumer
        self.batch = batch
        self.block_ms = block_ms
        self.backoff_s = backoff_s
        self.on_batch = on_batch
        self.failures = 0
        """Consecutive batches that failed for a reason other than bad input."""

    def run_once(self) -> int:
        """One receive-handle-publish-ack round; returns the number of messages handled."""
        name = self.stage.name
        deliveries = self.transport.receive(name, name, self.consumer, self.batch, self.block_ms)
        if not deliveries:
            return 0
        start = time.perf_counter()
        outputs = self.stage.replay([d.message for d in deliveries if d.redelivered])
        try:
            outputs += self.stage.handle([d.message for d in deliveries])
        except InputError:
            outputs += self._one_by_one(deliveries)
        self.transport.publish_and_ack(outputs, deliveries, name)
        if self.on_batch is not None:
            self.on_batch(len(deliveries), time.perf_counter() - start)
        return len(deliveries)

    def run(self, stop: threading.Event) -> None:
        """Until `stop` is set; transient failures back off and leave their messages for redelivery."""
        while not stop.is_set():
            try:
                self.run_once()
                self.failures = 0
            except Exception:
                self.failures += 1
                log.exception(
                    "stage %s: batch failed (attempt %d); will be redelivered", self.stage.name, self.failures
                )
                stop.wait(min(self.backoff_s * 2 ** min(self.failures, 6), 10.0))

    def _one_by_one(self, deliveries: list[Delivery]) -> list[tuple[str, Envelope]]:
        """Isolate the bad message(s) of a batch: each is handled alone, a rejected one fails its stream."""
        outputs = []
        for delivery in deliveries:
            message = delivery.message
            try:
                outputs += self.stage.handle([message])
            except InputError as err:
                log.warning("stage %s: stream %s rejected: %s", self.stage.name, message.stream_id, err)
                error = Envelope(
                    message.stream_id,
                    "error",
                    message.index,
                    {"code": "INVALID_ARGUMENT", "message": str(err)},
                )
                outputs.append((out_topic(message.stream_id), error))
        return outputs

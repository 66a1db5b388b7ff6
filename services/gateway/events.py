"""The gateway's Kafka event log, off the hot path: events queue here and one thread hands them to the
producer, so a slow broker delays the log, never a client's audio."""

import logging
import queue
import threading
from typing import Any

from swansphere.serving.kafka_log import EventLog

log = logging.getLogger(__name__)

EVENT_LINGER_MS = 100
"""How long an event waits for others to share its produce request: the log is read later, not live,
and one request per chunk cost the gateway about 2.5 ms of CPU and GIL a chunk."""
QUEUE_LIMIT = 10_000
"""Events held while the broker is slow; beyond this new events are dropped and counted."""


class BackgroundEvents:
    def __init__(self, events: EventLog):
        self.events = events
        self.dropped = 0
        self._queue: queue.Queue[tuple[str, tuple[Any, ...]] | None] = queue.Queue(QUEUE_LIMIT)
        self._thread = threading.Thread(target=self._publish, daemon=True, name="events")
        self._thread.start()

    def request(self, stream_id: str, meta: dict[str, Any]) -> None:
        self._put("request", (stream_id, meta))

    def chunk(self, stream_id: str, patch_index: int, first_sample: int, samples: int) -> None:
        meta = {"first_sample": first_sample, "samples": samples, "seconds": samples / 44100}
        self._put("chunk", (stream_id, patch_index, meta))

    def _put(self, kind: str, args: tuple[Any, ...]) -> None:
        try:
            self._queue.put_nowait((kind, args))
        except queue.Full:
            self.dropped += 1
            log.warning("event log queue full: event dropped", extra={"kind": kind, "dropped": self.dropped})

    def close(self, timeout_s: float = 10.0) -> None:
        """Hands on what is queued and flushes the producer: a gateway that drains its streams on
        SIGTERM keeps their last events, which would otherwise wait in the queue or in the producer's
        linger when the process ends."""
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            log.warning("event log queue full at shutdown: queued events dropped")
        self._thread.join(timeout_s)
        self.events.close()

    def _publish(self) -> None:
        while (item := self._queue.get()) is not None:
            kind, args = item
            try:
                getattr(self.events, kind)(*args)
            except Exception:
                log.exception("event log: publish failed", extra={"kind": kind})

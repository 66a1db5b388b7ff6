"""Service mode's hot path (DESIGN §2, §7): stage topics as Redis Streams, per-stream state in Redis.

`RedisTransport`: a topic is the stream `{prefix}{topic}`, each entry one encoded `Envelope` in field
b"m"; every stage is a consumer group. A worker that dies leaves its entries pending; any other
consumer of the group claims them once they sit idle `min_idle_ms` (XAUTOCLAIM), which is why Redis,
not Kafka (whose takeover waits out a session timeout), carries the per-patch traffic. The services
delete what they ack (`delete_acked`: each of their topics has one group); every topic is also capped
at about `maxlen` entries (XADD MAXLEN ~), and a topic nobody publishes to for `ttl_s` expires: a
chunk that comes late, after the gateway deleted its stream's topic, re-creates the topic, which then
does not linger. A batch's outputs (several topics) go in one MULTI/EXEC, so the transport needs one
Redis primary, not Redis Cluster.

`RedisStateStore`: a stream's small values in one hash, its lists beside it, a lease lock; every key
carries the stream id as a hash tag (`{stream}`) so one stream's keys share a Redis Cluster slot and
its MULTI blocks stay legal there. Keys expire `ttl_s` after the last write, so an abandoned stream
cleans itself up.

Every call has a bounded socket timeout; an unreachable server raises `TransportError`.
"""

import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

import redis
from redis.client import Pipeline

from swansphere.errors import InputError
from swansphere.serving.envelope import Envelope, decode, encode
from swansphere.serving.state import CLOSED, Section
from swansphere.serving.transport import Delivery

log = logging.getLogger(__name__)

FIELD = b"m"
"""The stream entry field that holds the encoded envelope."""

_DEPTH = """
local stream, groups = {}, redis.call("xinfo", "groups", KEYS[1])
local fields = redis.call("xinfo", "stream", KEYS[1])
for i = 1, #fields, 2 do stream[fields[i]] = fields[i + 1] end
for _, reply in ipairs(groups) do
  local group = {}
  for i = 1, #reply, 2 do group[reply[i]] = reply[i + 1] end
  if group["name"] == ARGV[1] then
    if group["last-delivered-id"] == stream["last-generated-id"] then
      if group["lag"] ~= 0 then
        redis.call("xgroup", "setid", KEYS[1], ARGV[1], group["last-delivered-id"],
                   "entriesread", stream["entries-added"])
      end
      return {group["pending"], 0}
    end
    return {group["pending"], group["lag"] or stream["length"]}
  end
end
return {0, stream["length"]}
"""
"""Pending plus lag of a group (the stream's length stands in before the group exists, or for a lag
Redis cannot tell), atomically repairing Redis's read counter when the group has read every entry.
Redis 7.0 can restart from its append-only file with a group's `entries-read` behind its last
delivered entry (seen after restarts of `make up`); the counter then only ever increments, so the lag
stays too high by that much forever and the gateway would refuse every stream as overloaded. Once
the group has read everything the true count is known (`entries-added`), and that is when the
script sets it."""

_RELEASE = """
if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end
"""
"""Delete the lock only if it still holds our token: a lease that expired may belong to another worker."""


class TransportError(RuntimeError):
    """The message server (Redis or Kafka) could not be reached or did not answer in time."""


def _connect(url: str, timeout_s: float) -> redis.Redis:
    try:
        return redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=30
        )
    except ValueError as err:
        raise InputError(f"not a Redis URL ({_where(url)}): {err}") from None


def _where(url: str) -> str:
    """The server in `url` without credentials, for messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"


@contextlib.contextmanager
def _reaching(url: str) -> Iterator[None]:
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as err:
        raise TransportError(f"Redis at {_where(url)} unreachable: {err}") from None


def _check_count(count: int) -> None:
    if count < 1:
        raise InputError(f"count must be >= 1, got {count}")


class RedisTransport:
    """Topics as Redis Streams with consumer groups; thread-safe (the client pools connections).

    A blocking receive waits at most half of `timeout_s`, inside the socket timeout, so a silent server
    is noticed instead of hanging a worker.
    """

    def __init__(
        self,
        url: str,
        min_idle_ms: int = 5000,
        maxlen: int | None = 100_000,
        prefix: str = "ss:",
        ttl_s: int | None = 86_400,
        timeout_s: float = 10.0,
        delete_acked: bool = False,
    ):
        """`min_idle_ms`: how long an entry stays with a silent consumer before another takes it over
        (longer than the slowest handling of one batch); `maxlen`: approximate cap per topic, None for
        none; `ttl_s`: a topic's lifetime after its last publish, None for ever; `delete_acked`: every
        topic is read by one group (the services' stage and chunk topics), so an entry is deleted
        when it is acked, in the same transaction. A topic then holds what waits or is in flight, not
        its last `maxlen` entries: the video encoder's topic kept 2 GB of 128x64 frames that way, and
        would keep about 120 GB at the paper's frame size."""
        if min_idle_ms < 1:
            raise InputError(f"min_idle_ms must be >= 1, got {min_idle_ms}")
        if maxlen is not None and maxlen < 1:
            raise InputError(f"maxlen must be >= 1 or None, got {maxlen}")
        if ttl_s is not None and ttl_s < 1:
            raise InputError(f"ttl_s must be >= 1 or None, got {ttl_s}")
        self.url, self.min_idle_ms, self.maxlen, self.prefix = url, min_idle_ms, maxlen, prefix
        self.ttl_s, self.delete_acked = ttl_s, delete_acked
        self.max_block_ms = int(timeout_s * 500)
        self._redis = _connect(url, timeout_s)
        self._depth = self._redis.register_script(_DEPTH)
        self._groups: set[tuple[str, str]] = set()

    def _key(self, topic: str) -> str:
        return f"{self.prefix}{topic}"

    def publish(self, topic: str, message: Envelope) -> None:
        self.publish_all([(topic, message)])

    def publish_all(self, messages: Sequence[tuple[str, Envelope]]) -> None:
        """One round trip for the lot, as one transaction: Redis wakes a reader blocked on a topic
        after each command otherwise, so a batch's outputs for the next stage (several streams'
        patches) would reach it one by one instead of as the batch it can compute at once."""
        self.publish_and_ack(messages, [], "")

    def publish_and_ack(
        self, messages: Sequence[tuple[str, Envelope]], deliveries: Sequence[Delivery], group: str
    ) -> None:
        """The outputs and the acks in the same transaction: one round trip, and a worker that loses
        Redis halfway has either handed a batch on and acked it, or done neither (redelivery)."""
        pipe = self._redis.pipeline(transaction=True)
        for topic, message in messages:
            key = self._key(topic)
            pipe.xadd(key, {FIELD: encode(message)}, maxlen=self.maxlen, approximate=True)
            if self.ttl_s is not None:
                pipe.expire(key, self.ttl_s)
        self._xack(pipe, deliveries, group)
        if len(pipe):
            with _reaching(self.url):
                pipe.execute()

    def receive(self, topic: str, group: str, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        """Entries other consumers left idle past `min_idle_ms` and this consumer's own pending ones
        first, then new ones; blocks only when there are none of the former."""
        _check_count(count)
        key = self._key(topic)
        with _reaching(self.url):
            self._ensure_group(key, group)
            try:
                entries = self._read(key, group, consumer, count, block_ms)
            except redis.ResponseError as err:
                if "NOGROUP" not in str(err):
                    raise
                # The topic was deleted (and with it the group) since we created it: start it again.
                self._groups.discard((key, group))
                self._ensure_group(key, group)
                entries = self._read(key, group, consumer, count, block_ms)
        deliveries = []
        for entry_id, fields, redelivered in entries:
            receipt = entry_id.decode()
            try:
                if not fields:
                    raise InputError("entry was trimmed (MAXLEN) before it was handled")
                if FIELD not in fields:
                    raise InputError(f"entry has no {FIELD!r} field")
                deliveries.append(Delivery(topic, decode(fields[FIELD]), receipt, redelivered))
            except InputError as err:
                log.warning("dropping %s entry %s for group %s: %s", key, receipt, group, err)
                with _reaching(self.url):
                    self._redis.xack(key, group, entry_id)
        return deliveries

    def _ensure_group(self, key: str, group: str) -> None:
        if (key, group) in self._groups:
            return
        try:
            self._redis.xgroup_create(key, group, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
        self._groups.add((key, group))

    def _read(self, key: str, group: str, consumer: str, count: int, block_ms: int) -> list:
        """(entry id, fields, redelivered) of pending entries, then of new ones.

        One round trip when work is waiting: claiming, this consumer's pending list and new entries
        go in one pipeline; only when all three come back empty does a blocking read follow.
        """
        # Claimed entries join this consumer's pending list, so reading that list ("0") returns both,
        # oldest first; new entries read after it join the list too but are not in this reply.
        pipe = self._redis.pipeline(transaction=False)
        pipe.xautoclaim(key, group, consumer, self.min_idle_ms, "0-0", count=count)
        pipe.xreadgroup(group, consumer, {key: "0"}, count=count)
        pipe.xreadgroup(group, consumer, {key: ">"}, count=count)
        claimed, pending, fresh = pipe.execute()
        if len(claimed) > 2 and claimed[2]:  # Redis 7 drops pending entries the MAXLEN cap trimmed away
            log.warning("%s: %d entries pending for %s were trimmed unhandled", key, len(claimed[2]), group)
        entries = [(entry_id, fields, True) for entry_id, fields in _entries(pending)]
        entries += [(entry_id, fields, False) for entry_id, fields in _entries(fresh)]
        if not entries and block_ms > 0:
            block = min(block_ms, self.max_block_ms)
            fresh = self._redis.xreadgroup(group, consumer, {key: ">"}, count=count, block=block)
            entries = [(entry_id, fields, False) for entry_id, fields in _entries(fresh)]
        return entries

    def ack(self, deliveries: Sequence[Delivery], group: str) -> None:
        """One XACK per topic, in one round trip."""
        self.publish_and_ack([], deliveries, group)

    def _xack(self, pipe: Pipeline, deliveries: Sequence[Delivery], group: str) -> None:
        """One XACK per topic (and one XDEL, with `delete_acked`)."""
        receipts: dict[str, list[str]] = {}
        for delivery in deliveries:
            receipts.setdefault(self._key(delivery.topic), []).append(delivery.receipt)
        for key, ids in receipts.items():
            pipe.xack(key, group, *ids)
            if self.delete_acked:
                pipe.xdel(key, *ids)

    def depth(self, topic: str, group: str) -> int:
        """Pending (delivered, unacked) plus lag (not yet delivered), by `_DEPTH`. Before the group
        exists, or when Redis cannot tell the lag (it lost count after a trim), the stream's length
        stands in."""
        key = self._key(topic)
        with _reaching(self.url):
            try:
                pending, lag = self._depth(keys=[key], args=[group])
            except redis.ResponseError as err:
                if "no such key" in str(err).lower():
                    return 0
                raise
            return int(pending) + int(lag)

    def delete(self, topic: str) -> None:
        key = self._key(topic)
        with _reaching(self.url):
            self._redis.delete(key)
        self._groups = {(k, g) for k, g in self._groups if k != key}

    def close(self) -> None:
        self._redis.close()


def _entries(reply: list) -> list:
    """The (id, fields) pairs of a one-stream XREADGROUP reply."""
    return list(reply[0][1]) if reply else []


class RedisStateStore:
    """`StateStore` in Redis: per-stream hash of values, lists, and a lease lock.

    The lock is a lease (`lock_lease_ms`) so a worker that dies inside it cannot stall the stream
    forever; the section it guards must finish well within the lease. Waiting for the lock gives up
    after `lock_timeout_s` with `TransportError` (the caller does not ack and the message comes back).
    """

    def __init__(
        self,
        url: str,
        ttl_s: int = 3600,
        prefix: str = "ss:state:",
        lock_lease_ms: int = 30_000,
        lock_timeout_s: float = 10.0,
        timeout_s: float = 10.0,
    ):
        if ttl_s < 1 or lock_lease_ms < 1 or lock_timeout_s <= 0:
            raise InputError("ttl_s, lock_lease_ms and lock_timeout_s must be positive")
        self.url, self.ttl_s, self.prefix = url, ttl_s, prefix
        self.lock_lease_ms, self.lock_timeout_s = lock_lease_ms, lock_timeout_s
        self._redis = _connect(url, timeout_s)

    def _base(self, stream_id: str) -> str:
        if "{" in stream_id or "}" in stream_id:
            raise InputError(f"stream id {stream_id!r} may not contain braces (they delimit Redis hash tags)")
        return f"{self.prefix}{{{stream_id}}}"

    def _list(self, stream_id: str, key: str) -> str:
        return f"{self._base(stream_id)}:list:{key}"

    def _write(self, streams: Iterable[str], build: Callable[[Pipeline], object], *written: str) -> list:
        """Runs `build`'s commands in one MULTI block that also refreshes the TTLs of each stream's
        hash and list index and of the keys `written`; returns the replies of `build`'s commands first."""
        pipe = self._redis.pipeline(transaction=True)
        build(pipe)
        for stream_id in dict.fromkeys(streams):
            base = self._base(stream_id)
            pipe.expire(base, self.ttl_s)
            pipe.expire(f"{base}:lists", self.ttl_s)
        for key in written:
            pipe.expire(key, self.ttl_s)
        with _reaching(self.url):
            return pipe.execute()

    def _read(self, build: Callable[[Pipeline], object]) -> list:
        """The replies of `build`'s commands, sent in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        build(pipe)
        with _reaching(self.url):
            return pipe.execute()

    def get(self, stream_id: str, key: str) -> bytes | None:
        return self.get_many(stream_id, [key])[0]

    def get_many(self, stream_id: str, keys: list[str]) -> list[bytes | None]:
        return self.get_each({stream_id: keys})[stream_id]

    def get_each(self, keys: Mapping[str, Sequence[str]]) -> dict[str, list[bytes | None]]:
        asked = {stream: list(names) for stream, names in keys.items() if names}
        bases = {stream: self._base(stream) for stream in keys}
        replies = self._read(lambda pipe: [pipe.hmget(bases[s], names) for s, names in asked.items()])
        got: dict[str, list[bytes | None]] = {stream: [] for stream in keys}
        got.update(zip(asked, replies, strict=True))
        return got

    def set(self, stream_id: str, values: Mapping[str, bytes]) -> None:
        self.set_each({stream_id: values})

    def set_each(self, values: Mapping[str, Mapping[str, bytes]]) -> None:
        values = {stream: dict(stream_values) for stream, stream_values in values.items() if stream_values}
        bases = {stream: self._base(stream) for stream in values}
        if values:
            self._write(values, lambda pipe: [pipe.hset(bases[s], mapping=v) for s, v in values.items()])

    def unset_each(self, keys: Mapping[str, Sequence[str]]) -> None:
        keys = {stream: list(names) for stream, names in keys.items() if names}
        bases = {stream: self._base(stream) for stream in keys}
        if keys:
            self._write(keys, lambda pipe: [pipe.hdel(bases[s], *names) for s, names in keys.items()])

    def set_once(self, stream_id: str, key: str, value: bytes) -> bool:
        return self.set_once_each([(stream_id, key, value)])[0]

    def set_once_each(self, items: Sequence[tuple[str, str, bytes]]) -> list[bool]:
        if not items:
            return []
        bases = {stream: self._base(stream) for stream, _, _ in items}
        replies = self._write(bases, lambda pipe: [pipe.hsetnx(bases[s], k, v) for s, k, v in items])
        return [bool(reply) for reply in replies[: len(items)]]

    def append(self, stream_id: str, key: str, value: bytes) -> int:
        return self.append_each(key, {stream_id: value})[stream_id]

    def append_each(self, key: str, values: Mapping[str, bytes]) -> dict[str, int]:
        if not values:
            return {}
        names = {stream: self._list(stream, key) for stream in values}

        def build(pipe: Pipeline) -> None:
            for stream, value in values.items():
                pipe.rpush(names[stream], value)
                pipe.sadd(f"{self._base(stream)}:lists", names[stream])

        replies = self._write(values, build, *names.values())
        return {
            stream: int(length) for stream, length in zip(values, replies[: 2 * len(values) : 2], strict=True)
        }

    def items(self, stream_id: str, key: str, start: int = 0) -> list[bytes]:
        return self.items_each(key, {stream_id: start})[stream_id]

    def items_each(self, key: str, starts: Mapping[str, int]) -> dict[str, list[bytes]]:
        if any(start < 0 for start in starts.values()):
            raise InputError(f"start must be >= 0, got {min(starts.values())}")
        names = {stream: self._list(stream, key) for stream in starts}
        replies = self._read(lambda pipe: [pipe.lrange(names[s], start, -1) for s, start in starts.items()])
        return dict(zip(starts, replies, strict=True))

    def lock(self, stream_id: str, stage: str) -> contextlib.AbstractContextManager[Section]:
        return self.lock_each([stream_id], stage)

    @contextlib.contextmanager
    def lock_each(
        self,
        streams: Sequence[str],
        stage: str,
        file: Sequence[tuple[str, str, bytes]] = (),
        read: Mapping[str, Sequence[str]] | None = None,
    ) -> Iterator[Section]:
        """All the streams' leases taken in one round trip, or none of them: a worker that finds one
        taken gives back the others before it waits, so two workers never hold what the other waits
        for. The filing, the leases and the read are one MULTI block, so the read sees the state as
        the leases were taken; the section's writes and the release are another."""
        names = [f"{self._base(stream)}:lock:{stage}" for stream in dict.fromkeys(streams)]
        asked = {stream: list(keys) for stream, keys in (read or {}).items() if keys}
        bases = {stream: self._base(stream) for stream in [*asked, *(s for s, _, _ in file)]}
        token = secrets.token_hex(16)
        deadline, pause = time.monotonic() + self.lock_timeout_s, 0.002

        def take(filing: Sequence[tuple[str, str, bytes]]) -> list:
            """The leases' replies, then the read's."""

            def build(pipe: Pipeline) -> None:
                for stream, key, value in filing:
                    pipe.hsetnx(bases[stream], key, value)
                for name in names:
                    pipe.set(name, token, nx=True, px=self.lock_lease_ms)
                for stream, keys in asked.items():
                    pipe.hmget(bases[stream], keys)

            return self._write([stream for stream, _, _ in filing], build)[len(filing) :]

        replies = take(file)
        while True:
            held = [name for name, ok in zip(names, replies[: len(names)], strict=True) if ok]
            if len(held) == len(names):
                break
            self._release(held, token, Section())
            if time.monotonic() > deadline:
                raise TransportError(
                    f"lock of stream {streams[0] if len(names) == 1 else list(streams)!r} not taken within "
                    f"{self.lock_timeout_s} s (another worker holds it)"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
            replies = take(())  # the filing is done: set-once values need no second try
        section = Section({stream: [] for stream in read or {}})
        section.values.update(zip(asked, replies[len(names) : len(names) + len(asked)], strict=True))
        completed = False
        try:
            yield section
            completed = True
        finally:
            released = self._release(names, token, section if completed else Section())
            if released < len(names):
                log.warning(
                    "lock of %d of streams %r outlived its %d ms lease; another worker may have entered",
                    len(names) - released,
                    list(streams),
                    self.lock_lease_ms,
                )

    def _release(self, names: Sequence[str], token: str, section: Section) -> int:
        """The section's writes, then the release of the leases `names` that still hold `token`, in one
        round trip; how many leases it released. EVAL, not the registered script: a pipeline of
        registered scripts first asks Redis whether it has them (SCRIPT EXISTS), a second round trip
        each time; Redis caches the compiled script either way."""
        writes = {stream: values for stream, values in section.writes.items() if values}
        removals = {stream: keys for stream, keys in section.removals.items() if keys}
        if not names and not writes and not removals:
            return 0

        def build(pipe: Pipeline) -> None:
            for stream, values in writes.items():
                pipe.hset(self._base(stream), mapping=values)
            for stream, keys in removals.items():
                pipe.hdel(self._base(stream), *keys)
            for name in names:
                pipe.eval(_RELEASE, 1, name, token)

        first = len(writes) + len(removals)
        if first == 0:
            return sum(self._read(build))
        return sum(self._write([*writes, *removals], build)[first : first + len(names)])

    def delete(self, stream_id: str) -> None:
        """Drops the values and lists but the `CLOSED` mark; a held lock is left to its lease."""
        base = self._base(stream_id)
        with _reaching(self.url):
            lists = self._redis.smembers(f"{base}:lists")
        self._write(
            [stream_id],
            lambda pipe: [pipe.delete(base, f"{base}:lists", *lists), pipe.hset(base, CLOSED, b"1")],
        )

    def close(self) -> None:
        self._redis.close()

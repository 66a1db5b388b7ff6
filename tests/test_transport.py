"""The network transports and the Redis state store against real servers: redis-server and the Tansu
Kafka-protocol broker (DESIGN §2, §7)."""

import itertools
import logging
import threading
import time

import numpy as np
import pytest
import redis
from kafka import KafkaConsumer, TopicPartition

from services.gateway.events import EVENT_LINGER_MS, BackgroundEvents
from swansphere.errors import InputError
from swansphere.serving.envelope import Envelope, decode
from swansphere.serving.kafka_log import EVENT_TOPICS, EventLog, KafkaTransport
from swansphere.serving.redis_streams import RedisStateStore, RedisTransport, TransportError
from swansphere.serving.state import CLOSED, MemoryStateStore
from swansphere.serving.transport import Delivery, MemoryTransport

pytestmark = pytest.mark.servers

SESSION_TIMEOUT_MS = 6_000
"""The broker floor: a short session keeps a test's group from lingering."""

_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def message(stream_id: str, index: int, seed: int = 0) -> Envelope:
    rng = np.random.default_rng(seed)
    tensors = {
        "audio": rng.standard_normal((4, 64)).astype(np.float32),
        "half": rng.standard_normal(5).astype(np.float16),
        "frames": rng.integers(0, 256, (2, 3, 4), dtype=np.uint8),
        "ids": rng.integers(-(2**40), 2**40, 3, dtype=np.int64),
        "empty": np.zeros((0, 4), dtype=np.int32),
    }
    meta = {"first_sample": index * 8192, "text": "a dog barks, left", "nested": {"a": [1, 2.5, None]}}
    return Envelope(stream_id, "chunk", index, meta, tensors)


def assert_same(got: Envelope, sent: Envelope) -> None:
    assert got.key == sent.key and got.meta == sent.meta
    assert list(got.tensors) == list(sent.tensors)
    for name, array in sent.tensors.items():
        assert got.tensors[name].dtype == array.dtype and got.tensors[name].shape == array.shape
        assert got.tensors[name].tobytes() == array.tobytes(), name  # bit-equal


def receive_all(
    transport, topic: str, group: str, consumer: str, n: int, timeout_s: float = 30.0
) -> list[Delivery]:
    """Receives until `n` messages came (a Kafka group join takes seconds) or the time is up."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        got += transport.receive(topic, group, consumer, count=n - len(got), block_ms=500)
    return got


@pytest.fixture
def redis_transport(redis_url):
    transport = RedisTransport(redis_url, min_idle_ms=200)
    yield transport
    transport.close()


@pytest.fixture
def store(redis_url):
    store = RedisStateStore(redis_url, ttl_s=60)
    yield store
    store.close()


@pytest.fixture
def kafka_transport(kafka_broker):
    transport = KafkaTransport(kafka_broker, session_timeout_ms=SESSION_TIMEOUT_MS)
    yield transport
    transport.close()


@pytest.fixture(params=["memory", "redis", "kafka"])
def any_transport(request):
    if request.param == "memory":
        yield MemoryTransport()
    else:
        yield request.getfixturevalue(f"{request.param}_transport")


def test_the_same_publish_receive_ack_contract_holds_behind_every_transport(any_transport):
    """What the stage classes rely on, whichever transport runs behind them."""
    topic, group = unique("stage"), "workers"
    sent = [message("stream-a", i, seed=i) for i in range(3)]
    any_transport.publish(topic, sent[0])
    any_transport.publish_all([(topic, item) for item in sent[1:]])
    assert any_transport.depth(topic, group) == 3

    got = receive_all(any_transport, topic, group, "w1", 3)
    assert len(got) == 3
    for delivery, item in zip(got, sent, strict=True):  # one stream: in order
        assert delivery.topic == topic
        assert_same(delivery.message, item)
    any_transport.ack(got[:1], group)
    any_transport.ack(got[1:], group)  # one call for several
    assert any_transport.depth(topic, group) == 0
    assert any_transport.receive(topic, group, "w1", count=10, block_ms=200) == []

    # A worker's end of a batch: its outputs published, its inputs acked (a group per topic: Kafka
    # rebalances a group whose members subscribe to different topics).
    inputs, outputs = unique("stage"), unique("stage")
    any_transport.publish_all([(inputs, item) for item in sent])
    got = receive_all(any_transport, inputs, inputs, "w1", 3)
    any_transport.publish_and_ack([(outputs, item) for item in sent[:2]], got, inputs)
    assert any_transport.depth(inputs, inputs) == 0
    assert any_transport.receive(inputs, inputs, "w1", count=10, block_ms=200) == []
    handed_on = receive_all(any_transport, outputs, outputs, "w1", 2)
    assert [d.message.key for d in handed_on] == [item.key for item in sent[:2]]
    for topic_ in (topic, inputs, outputs):
        any_transport.delete(topic_)


@pytest.fixture
def round_trips(monkeypatch) -> list[int]:
    """Counts Redis round trips (one send per command or pipeline) from here on."""
    count = [0]
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(self, command, check_health=True):
        count[0] += 1
        return send(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    return count


def test_redis_a_worker_hands_a_batch_on_and_locks_its_streams_in_one_round_trip_each(
    redis_transport, store, round_trips
):
    """Each round trip is paid on every stage call of every patch: outputs and acks go in one
    transaction, a lock of several streams is taken in one and given back in one."""
    inputs, outputs = unique("locdit"), unique("vae_decoder")
    redis_transport.publish_all([(inputs, message(f"s{i}", 0, seed=i)) for i in range(4)])
    got = redis_transport.receive(inputs, "stage", "w1", count=10, block_ms=100)
    with store.lock_each(["s0"], "spatial_lm"):  # both clients connected
        pass
    round_trips[0] = 0
    redis_transport.publish_and_ack([(outputs, d.message) for d in got], got, "stage")
    assert round_trips[0] == 1
    assert redis_transport.depth(inputs, "stage") == 0
    assert redis_transport.depth(outputs, "stage") == 4

    round_trips[0] = 0
    with store.lock_each(["s0", "s1", "s2"], "spatial_lm"):
        assert round_trips[0] == 1
    assert round_trips[0] == 2

    # A stage call's filing and first read go with the taking, its last writes with the giving back.
    round_trips[0] = 0
    filed = [("s0", "tokens@0", b"t"), ("s1", "tokens@0", b"u")]
    with store.lock_each(["s0", "s1"], "spatial_lm", file=filed, read={"s0": ["next"]}) as section:
        assert round_trips[0] == 1
        section.set_each({"s0": {"next": b"1"}})
        section.unset_each({"s1": ["tokens@0"]})
    assert round_trips[0] == 2


def test_redis_a_blocked_reader_gets_a_published_batch_at_once(redis_transport):
    """A stage's outputs for the next stage (say LocDiT's patches of 4 streams) reach a worker that
    waits on that topic as one batch, which it computes in one call, not one message at a time."""
    redis_transport.receive("vae_decoder", "stage", "w1", count=10, block_ms=1)  # the group exists
    got: list = []
    reader = threading.Thread(
        target=lambda: got.extend(redis_transport.receive("vae_decoder", "stage", "w1", 10, 5000))
    )
    reader.start()
    raw = redis.Redis.from_url(redis_transport.url)
    deadline = time.monotonic() + 5
    while not any("b" in client["flags"] for client in raw.client_list()) and time.monotonic() < deadline:
        time.sleep(0.01)  # until the reader blocks
    redis_transport.publish_all([("vae_decoder", message(f"s{i}", 0, seed=i)) for i in range(4)])
    reader.join(10)
    assert [d.message.stream_id for d in got] == ["s0", "s1", "s2", "s3"]


def test_redis_depth_repairs_a_read_counter_left_behind_by_a_restart(redis_transport):
    """Redis 7.0, restarted from its append-only file, can leave a group's `entries-read` behind its
    last delivered entry: its lag then stays too high forever and the gateway would refuse every
    stream. Once the group has read everything, depth is exact again and so is Redis's counter."""
    for i in range(5):
        redis_transport.publish("locdit", message("s", i, seed=i))
    got = redis_transport.receive("locdit", "stage", "w1", count=10, block_ms=100)
    redis_transport.ack(got, "stage")
    raw = redis.Redis.from_url(redis_transport.url)
    last = got[-1].receipt
    # where the counter stood after the restart
    raw.execute_command("XGROUP", "SETID", "ss:locdit", "stage", last, "ENTRIESREAD", 1)
    assert raw.xinfo_groups("ss:locdit")[0]["lag"] == 4
    assert redis_transport.depth("locdit", "stage") == 0
    assert raw.xinfo_groups("ss:locdit")[0]["lag"] == 0
    redis_transport.publish("locdit", message("s", 5, seed=5))
    assert redis_transport.depth("locdit", "stage") == 1  # counts on from the repaired counter


def test_redis_round_trip_is_bit_exact_and_depth_counts_until_the_ack(redis_transport):
    sent = message("s1", 7, seed=3)
    redis_transport.publish("video_encoder", sent)
    assert redis_transport.depth("video_encoder", "stage") == 1  # before the group exists: the length
    (delivery,) = redis_transport.receive("video_encoder", "stage", "w1", count=10, block_ms=100)
    assert_same(delivery.message, sent)
    assert delivery.receipt  # the entry id
    assert redis_transport.depth("video_encoder", "stage") == 1  # delivered, not acked
    redis_transport.ack([delivery], "stage")
    assert redis_transport.depth("video_encoder", "stage") == 0
    assert redis_transport.depth("nothing-here", "stage") == 0
    raw = redis.Redis.from_url(redis_transport.url)
    assert 0 < raw.ttl("ss:video_encoder") <= 86_400  # refreshed by every publish
    raw.close()


def test_a_consumer_group_splits_messages_and_each_group_gets_them_all(redis_transport):
    for i in range(6):
        redis_transport.publish("locdit", message("s", i))
    first = redis_transport.receive("locdit", "stage", "a", count=3, block_ms=100)
    second = redis_transport.receive("locdit", "stage", "b", count=10, block_ms=100)
    assert [d.message.index for d in first] == [0, 1, 2]
    assert [d.message.index for d in second] == [3, 4, 5]
    other = redis_transport.receive("locdit", "metrics", "a", count=10, block_ms=100)
    assert [d.message.index for d in other] == list(range(6))


def test_a_topic_read_by_one_group_keeps_only_what_waits_or_is_in_flight(redis_url):
    """The services' transport deletes what it acks: a stage topic does not keep its last `maxlen`
    entries (frames, at the video encoder), and its depth stays exact."""
    transport = RedisTransport(redis_url, min_idle_ms=200, delete_acked=True)
    raw = redis.Redis.from_url(redis_url)
    try:
        for i in range(3):
            transport.publish("vae_decoder", message("s", i))
        got = transport.receive("vae_decoder", "stage", "w", count=3, block_ms=100)
        transport.publish_and_ack([("out.s", message("s", 0))], got[:2], "stage")
        assert raw.xlen("ss:vae_decoder") == 1 and transport.depth("vae_decoder", "stage") == 1
        transport.publish("vae_decoder", message("s", 3))
        assert transport.depth("vae_decoder", "stage") == 2
        later = transport.receive("vae_decoder", "stage", "w", count=3, block_ms=100)
        assert [d.message.index for d in later] == [2, 3]  # the pending one first, then the new
        transport.ack(later, "stage")
        assert raw.xlen("ss:vae_decoder") == 0 and transport.depth("vae_decoder", "stage") == 0
        assert raw.xinfo_groups("ss:vae_decoder")[0]["lag"] == 0
    finally:
        raw.close()
        transport.close()


def test_a_blocking_receive_wakes_up_when_a_message_arrives(redis_transport, redis_url):
    redis_transport.receive("spatial_lm", "stage", "w", count=1, block_ms=0)  # creates the group
    publisher = RedisTransport(redis_url)
    timer = threading.Timer(0.2, publisher.publish, ("spatial_lm", message("s", 1)))
    timer.start()
    start = time.monotonic()
    (delivery,) = redis_transport.receive("spatial_lm", "stage", "w", count=5, block_ms=5000)
    timer.join()
    publisher.close()
    assert delivery.message.index == 1
    assert 0.1 < time.monotonic() - start < 2.0


def test_a_dead_consumers_messages_go_to_another_after_min_idle_and_an_ack_ends_it(redis_transport):
    for i in range(2):
        redis_transport.publish("vae_decoder", message("s", i))
    died = redis_transport.receive("vae_decoder", "stage", "dead", count=10, block_ms=100)
    assert len(died) == 2 and not any(d.redelivered for d in died)  # and it never acks
    # Its own unacked entries come back to the same consumer first (a restarted worker's leftovers).
    again = redis_transport.receive("vae_decoder", "stage", "dead", 10, 0)
    assert [d.receipt for d in again] == [d.receipt for d in died]
    assert all(d.redelivered for d in again)
    assert redis_transport.receive("vae_decoder", "stage", "live", count=10, block_ms=0) == []  # not idle yet

    time.sleep(0.3)  # > min_idle_ms = 200
    taken = redis_transport.receive("vae_decoder", "stage", "live", count=10, block_ms=0)
    assert [d.receipt for d in taken] == [d.receipt for d in died]
    assert [d.message.key for d in taken] == [d.message.key for d in died]  # what consumers dedupe on
    assert all(d.redelivered for d in taken)  # stateful stages replay what the dead one lost
    for delivery in taken:
        redis_transport.ack([delivery], "stage")
    assert redis_transport.depth("vae_decoder", "stage") == 0

    time.sleep(0.3)
    for consumer in ("dead", "live", "third"):
        assert redis_transport.receive("vae_decoder", "stage", consumer, count=10, block_ms=0) == []


def test_malformed_entries_are_acked_and_dropped_with_a_warning(redis_transport, redis_url, caplog):
    raw = redis.Redis.from_url(redis_url)
    raw.xadd("ss:topic", {b"m": b"not an envelope"})
    raw.xadd("ss:topic", {b"other": b"field"})
    raw.close()
    redis_transport.publish("topic", message("s", 4))
    with caplog.at_level(logging.WARNING, logger="swansphere.serving.redis_streams"):
        deliveries = redis_transport.receive("topic", "stage", "w", count=10, block_ms=100)
    assert [d.message.index for d in deliveries] == [4]
    assert "bad magic" in caplog.text and "no b'm' field" in caplog.text
    redis_transport.ack([deliveries[0]], "stage")
    assert redis_transport.depth("topic", "stage") == 0  # the dropped ones were acked too


def test_a_deleted_topic_comes_back_with_its_group_on_the_next_receive(redis_transport, redis_url):
    redis_transport.receive("out.s9", "gateway", "g", count=1, block_ms=0)  # group created and cached
    other = RedisTransport(redis_url)
    other.delete("out.s9")  # another process drops the topic and with it the group
    other.publish("out.s9", message("s9", 0))
    other.close()
    (delivery,) = redis_transport.receive("out.s9", "gateway", "g", count=1, block_ms=100)
    assert delivery.message.key == ("s9", "chunk", 0)


def test_streams_are_capped_at_about_maxlen_and_trimmed_pending_entries_are_dropped(redis_url, caplog):
    transport = RedisTransport(redis_url, maxlen=10)
    transport.publish("capped", Envelope("s", "tick", 0))
    (first,) = transport.receive("capped", "stage", "slow", count=1, block_ms=0)  # and not acked
    for i in range(1, 500):
        transport.publish("capped", Envelope("s", "tick", i))
    raw = redis.Redis.from_url(redis_url)
    assert raw.xlen("ss:capped") < 500
    raw.close()
    with caplog.at_level(logging.WARNING, logger="swansphere.serving.redis_streams"):
        again = transport.receive("capped", "stage", "slow", count=1, block_ms=0)
    assert "1 entries pending for stage were trimmed" in caplog.text  # lost to the cap, and said so
    assert [d.receipt for d in again] != [first.receipt]
    transport.close()


def test_redis_refuses_bad_arguments_and_reports_an_unreachable_server(redis_transport, closed_port):
    with pytest.raises(InputError, match="count"):
        redis_transport.receive("t", "g", "c", count=0, block_ms=0)
    with pytest.raises(InputError, match="min_idle_ms"):
        RedisTransport("redis://127.0.0.1:1/0", min_idle_ms=0)
    with pytest.raises(InputError, match="not a Redis URL"):
        RedisTransport("http://user:secret@127.0.0.1:1/0")
    down = RedisTransport(f"redis://127.0.0.1:{closed_port}/0", timeout_s=1)
    with pytest.raises(TransportError, match=f"127.0.0.1:{closed_port}/0 unreachable"):
        down.publish("t", message("s", 0))
    down_store = RedisStateStore(f"redis://:secret@127.0.0.1:{closed_port}/0", timeout_s=1)
    with pytest.raises(TransportError, match="unreachable") as caught:
        down_store.get("s", "k")
    assert "secret" not in str(caught.value)


def test_state_store_values_lists_and_delete(store, redis_url):
    assert store.get("s1", "next") is None
    store.set("s1", {"next": b"3"})
    store.set("s1", {"next": b"4"})
    assert store.get("s1", "next") == b"4"
    assert store.set_once("s1", "spec", b"{}") is True
    assert store.set_once("s1", "spec", b"other") is False
    assert store.get("s1", "spec") == b"{}"
    assert store.get_many("s1", ["spec", "absent", "next"]) == [b"{}", None, b"4"]
    assert store.get_many("s1", []) == []
    assert [store.append("s1", "frames", bytes([i])) for i in range(3)] == [1, 2, 3]
    store.append("s1", "z", b"\x00\xff")
    assert store.items("s1", "frames") == [b"\x00", b"\x01", b"\x02"]
    assert store.items("s1", "frames", start=2) == [b"\x02"]
    assert store.items("s1", "missing") == []
    store.set("s2", {"next": b"1"})  # another stream, untouched by s1's delete

    raw = redis.Redis.from_url(redis_url)
    keys = {key.decode() for key in raw.keys("ss:state:*")}
    assert all(0 < raw.ttl(key) <= 60 for key in keys)  # every write refreshes the TTL
    assert {"ss:state:{s1}", "ss:state:{s1}:lists", "ss:state:{s1}:list:frames"} <= keys

    store.delete("s1")
    assert store.get("s1", "next") is None and store.items("s1", "frames") == []
    assert {key.decode() for key in raw.keys("ss:state:*")} == {"ss:state:{s1}", "ss:state:{s2}"}
    assert raw.hgetall("ss:state:{s1}") == {CLOSED.encode(): b"1"} and 0 < raw.ttl("ss:state:{s1}") <= 60
    assert store.get("s2", "next") == b"1"
    raw.close()
    with pytest.raises(InputError, match="braces"):
        store.get("a}b", "k")
    with pytest.raises(InputError, match="start"):
        store.items("s1", "frames", start=-1)


def test_state_store_operations_on_several_streams_at_once(store, redis_url):
    """The `*_each` forms: what each stream gets is what the one-stream form gives it."""
    assert store.set_once_each([("a", "spec", b"1"), ("b", "spec", b"2"), ("a", "spec", b"3")]) == [
        True,
        True,
        False,
    ]
    store.set_each({"a": {"next": b"4"}, "b": {"next": b"5", "x": b"6"}, "c": {}})
    assert store.get_each({"a": ["spec", "next"], "b": ["x", "absent"], "c": []}) == {
        "a": [b"1", b"4"],
        "b": [b"6", None],
        "c": [],
    }
    assert store.append_each("tokens", {"a": b"t0", "b": b"u0"}) == {"a": 1, "b": 1}
    assert store.append_each("tokens", {"a": b"t1"}) == {"a": 2}
    assert store.items_each("tokens", {"a": 1, "b": 0, "c": 0}) == {"a": [b"t1"], "b": [b"u0"], "c": []}
    assert store.get("a", "spec") == b"1" and store.items("a", "tokens") == [b"t0", b"t1"]
    store.unset_each({"b": ["x", "absent"], "c": []})
    assert store.get_each({"a": ["next"], "b": ["next", "x"]}) == {"a": [b"4"], "b": [b"5", None]}
    raw = redis.Redis.from_url(redis_url)
    assert all(0 < raw.ttl(key) <= 60 for key in raw.keys("ss:state:*"))
    raw.close()
    with pytest.raises(InputError, match="start"):
        store.items_each("tokens", {"a": 0, "b": -1})


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_locked_section_files_and_reads_as_it_locks_and_writes_only_if_it_completes(kind, redis_url):
    """The filing is set-once, the read sees the state as the locks were taken, and a section that
    fails leaves the state as it found it (its message comes back and is handled again)."""
    store = MemoryStateStore() if kind == "memory" else RedisStateStore(redis_url, ttl_s=60)
    stream = unique("s")
    store.set(stream, {"next": b"3", "frame@0": b"f"})
    filed = [(stream, "tokens@0", b"new"), (stream, "next", b"9")]
    read = {stream: ["next", "tokens@0", "x"]}
    with store.lock_each([stream], "spatial_lm", file=filed, read=read) as section:
        assert section.values == {stream: [b"3", b"new", None]}
        section.set_each({stream: {"next": b"4"}})
        section.unset_each({stream: ["frame@0"]})
        assert store.get(stream, "next") == b"3"  # written with the release
    assert store.get_many(stream, ["next", "frame@0"]) == [b"4", None]

    with pytest.raises(RuntimeError, match="stage failed"), store.lock(stream, "spatial_lm") as section:
        section.set_each({stream: {"next": b"5"}})
        raise RuntimeError("stage failed")
    assert store.get(stream, "next") == b"4"
    with store.lock(stream, "spatial_lm") as section:  # given back despite the failure
        assert section.values == {}
    if isinstance(store, RedisStateStore):
        store.close()


def test_locking_several_streams_takes_all_or_none_and_never_deadlocks(redis_url):
    """Two workers lock overlapping sets of streams in opposite orders, 20 times each, and do
    read-modify-write on both under the locks; one that finds a stream taken holds none meanwhile."""
    stores = [RedisStateStore(redis_url) for _ in range(2)]
    counts = {"a": 0, "b": 0}

    def work(store: RedisStateStore, streams: list[str]) -> None:
        for _ in range(20):
            with store.lock_each(streams, "spatial_lm"):
                seen = dict(counts)
                time.sleep(0.001)
                for stream in streams:
                    counts[stream] = seen[stream] + 1

    threads = [
        threading.Thread(target=work, args=(store, streams))
        for store, streams in zip(stores, (["a", "b"], ["b", "a"]), strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert counts == {"a": 40, "b": 40}

    holder, waiter = RedisStateStore(redis_url), RedisStateStore(redis_url, lock_timeout_s=0.2)
    busy = pytest.raises(TransportError, match=r"\['a', 'b'\] not taken within 0\.2 s")
    with holder.lock("b", "spatial_lm"):
        with busy, waiter.lock_each(["a", "b"], "spatial_lm"):
            pass
        with waiter.lock("a", "spatial_lm"):  # not left held by the failed attempt
            pass
    for store in [*stores, holder, waiter]:
        store.close()


def test_the_stream_lock_excludes_another_worker(redis_url):
    """Two workers (threads, each with its own connection) do read-modify-write under the lock."""
    stores = [RedisStateStore(redis_url) for _ in range(2)]
    inside, overlaps = [0], []

    def work(store: RedisStateStore) -> None:
        for _ in range(20):
            with store.lock("s", "spatial_lm"):
                inside[0] += 1
                overlaps.append(inside[0] > 1)
                count = int(store.get("s", "count") or 0)
                time.sleep(0.001)
                store.set("s", {"count": str(count + 1).encode()})
                inside[0] -= 1

    threads = [threading.Thread(target=work, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stores[0].get("s", "count") == b"40" and not any(overlaps)
    for store in stores:
        store.close()


def test_the_stages_of_one_stream_do_not_wait_for_each_other(redis_url):
    """Stages keep disjoint keys: the LM plans a stream's patch while the video encoder holds the
    stream's section for its next frames."""
    fast = RedisStateStore(redis_url, lock_timeout_s=0.2)
    busy = pytest.raises(TransportError, match="not taken")
    with fast.lock("s", "video_encoder"), fast.lock("s", "spatial_lm"), busy, fast.lock("s", "video_encoder"):
        pass
    fast.close()


def test_a_dead_holders_lock_lapses_and_a_busy_one_times_out_clearly(redis_url, caplog):
    short = RedisStateStore(redis_url, lock_lease_ms=150, lock_timeout_s=2)
    dead_holder = short.lock("s", "spatial_lm")
    dead_holder.__enter__()  # and never leaves
    start = time.monotonic()
    with short.lock("s", "spatial_lm"):
        assert time.monotonic() - start >= 0.1
    with caplog.at_level(logging.WARNING, logger="swansphere.serving.redis_streams"):
        dead_holder.__exit__(None, None, None)  # came back after its lease: must not free another's lock
    assert "outlived" in caplog.text

    patient = RedisStateStore(redis_url, lock_lease_ms=10_000, lock_timeout_s=0.2)
    busy = pytest.raises(TransportError, match=r"not taken within 0\.2 s")
    with patient.lock("t", "spatial_lm"), busy, patient.lock("t", "spatial_lm"):
        pass
    with patient.lock("t", "spatial_lm"):  # released on the way out
        pass
    short.close()
    patient.close()


def test_kafka_round_trip_keeps_each_streams_order_and_acks_commit(kafka_transport):
    topic, group = unique("events"), unique("readers")
    sent = [message(stream, i, seed=i) for i in range(4) for stream in ("a", "b", "c")]
    for item in sent:
        kafka_transport.publish(topic, item)
    assert kafka_transport.depth(topic, group) == len(sent)

    got = receive_all(kafka_transport, topic, group, "w1", len(sent))
    assert len(got) == len(sent)
    # A partition's first records after its assignment (its first poll) may be another member's
    # leftovers: per partition, the flagged ones are a prefix.
    partitions = {d.receipt.split(":")[0] for d in got}
    for partition in partitions:
        mine = sorted(
            (d for d in got if d.receipt.split(":")[0] == partition),
            key=lambda d: int(d.receipt.split(":")[1]),
        )
        flags = [d.redelivered for d in mine]
        assert flags[0] and flags == sorted(flags, reverse=True)
    for stream in ("a", "b", "c"):
        mine = [d for d in got if d.message.stream_id == stream]
        assert [d.message.index for d in mine] == [0, 1, 2, 3]  # keyed: one partition, in order
        assert len({d.receipt.split(":")[0] for d in mine}) == 1
    by_key = {item.key: item for item in sent}
    for delivery in got:
        assert_same(delivery.message, by_key[delivery.message.key])

    kafka_transport.ack(got[:5], group)
    assert 0 < kafka_transport.depth(topic, group) < len(sent)
    kafka_transport.ack(got, group)  # the first five again: a committed offset never moves back
    assert kafka_transport.depth(topic, group) == 0
    kafka_transport.publish(topic, message("a", 4))
    (later,) = receive_all(kafka_transport, topic, group, "w1", 1)
    assert later.message.index == 4 and not later.redelivered
    kafka_transport.ack([later], group)
    with pytest.raises(InputError, match="receipt"):
        kafka_transport.ack([Delivery(topic, sent[0], "1-0")], group)


def read_events(
    kafka_broker: str, stream_id: str, chunks: int, within_s: float = 20
) -> dict[str, list[Envelope]]:
    """The stream's events on each event topic, waiting up to `within_s` for its request and `chunks`
    chunk events."""
    reader = KafkaConsumer(bootstrap_servers=kafka_broker, enable_auto_commit=False)
    try:
        read: dict[str, list[Envelope]] = {name: [] for name in EVENT_TOPICS.values()}
        for topic in EVENT_TOPICS.values():  # fetch by assignment: no group join to wait for
            partitions = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic)]
            reader.assign(partitions)
            reader.seek_to_beginning()
            deadline = time.monotonic() + within_s
            while not read[topic] or (topic == EVENT_TOPICS["chunks"] and len(read[topic]) < chunks):
                assert time.monotonic() < deadline, f"no events on {topic}"
                for records in reader.poll(timeout_ms=500).values():
                    read[topic] += [decode(r.value) for r in records if r.key == stream_id.encode()]
    finally:
        reader.close()
    return read


def test_event_log_records_requests_and_chunks_without_audio(kafka_broker):
    """As the gateway publishes them: without waiting for each, batched over a linger."""
    producer = KafkaTransport(kafka_broker, linger_ms=50)
    events = EventLog(producer)
    events.request("stream-1", {"text": "rain on a tin roof", "seed": 3, "has_video": True})
    for t in range(2):
        events.chunk("stream-1", t, {"first_sample": t * 8192, "samples": 8192, "seconds": 8192 / 44100})
    read = read_events(kafka_broker, "stream-1", chunks=2)
    producer.close()
    assert events.lost == 0
    (request,) = read[EVENT_TOPICS["requests"]]
    assert request.key == ("stream-1", "request", 0)
    assert request.meta == {"text": "rain on a tin roof", "seed": 3, "has_video": True}
    chunks = read[EVENT_TOPICS["chunks"]]
    assert [c.index for c in chunks] == [0, 1] and all(c.tensors == {} for c in chunks)
    assert chunks[1].meta == {"first_sample": 8192, "samples": 8192, "seconds": 8192 / 44100}


def test_the_gateways_events_are_all_on_the_broker_once_it_closes_its_log(kafka_broker):
    """A gateway that stops after its streams keeps their last events: `close` hands on the queue and
    flushes the producer's linger, so they are on the broker when it returns (its producer is closed
    then: an event still queued would be lost, not sent later)."""
    events = BackgroundEvents(EventLog(KafkaTransport(kafka_broker, linger_ms=EVENT_LINGER_MS)))
    stream = unique("stream")
    events.request(stream, {"seed": 1})
    for t in range(20):
        events.chunk(stream, t, t * 8192, 8192)
    events.close()
    assert not events._thread.is_alive()
    read = read_events(kafka_broker, stream, chunks=20, within_s=5)
    assert [c.index for c in read[EVENT_TOPICS["chunks"]]] == list(range(20))
    assert events.dropped == 0 and events.events.lost == 0


def test_event_log_refuses_a_chunk_event_without_its_fields(kafka_transport):
    with pytest.raises(InputError, match="lacks samples, seconds"):
        EventLog(kafka_transport).chunk("s", 0, {"first_sample": 0})


def test_an_unreachable_kafka_broker_raises_a_transport_error(closed_port):
    with pytest.raises(TransportError, match=f"127.0.0.1:{closed_port} unreachable"):
        KafkaTransport(f"127.0.0.1:{closed_port}", timeout_s=1)

"""The ODPO sample topic: records, and round trips through a real Kafka-protocol broker (Tansu)."""

import itertools
import logging

import numpy as np
import pytest

from swansphere.errors import InputError
from swansphere.feedback import (
    BrokerUnavailableError,
    RewardComponents,
    Sample,
    SampleConsumer,
    SampleProducer,
)

SESSION_TIMEOUT_MS = 6_000
"""The broker floor: a short session keeps a test's group from lingering."""

_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def rewards(total: float) -> RewardComponents:
    return RewardComponents(spatial=0.9, semantic=0.6, fidelity=0.3, total=total)


def make_sample(sample_id: str, input_id: str, n_samples: int = 1000, seed: int = 0) -> Sample:
    foa = np.random.default_rng(seed).uniform(-1, 1, (4, n_samples)).astype(np.float32)
    return Sample.from_foa(
        foa,
        sample_id=sample_id,
        input_id=input_id,
        input_name=f"{input_id}.mp4",
        round=1,
        seed=seed,
        caption="a dog barks on the left",
        rewards=rewards(0.66),
    )


def test_record_round_trip_keeps_every_field_and_the_audio_exactly():
    sample = make_sample("s-0", "clip-7", seed=3)
    data = sample.to_bytes()
    assert b'"audio":"' in data  # base64 inside JSON: the record is UTF-8 text, no pickle
    again = Sample.from_bytes(data)
    assert again == sample
    expected = np.random.default_rng(3).uniform(-1, 1, (4, 1000)).astype(np.float32)
    assert np.array_equal(again.foa(), expected)
    assert again.created.tzinfo is not None


def test_bad_records_are_refused_with_a_reason():
    sample = make_sample("s-1", "clip-1")
    with pytest.raises(ValueError, match="exactly one"):
        Sample(**{**sample.model_dump(), "audio": None})
    with pytest.raises(ValueError, match="expected 16000"):
        Sample(**{**sample.model_dump(), "audio": b"\0" * 12})
    with pytest.raises(ValueError, match="less than or equal to 1"):
        RewardComponents(spatial=1.5, semantic=0.0, fidelity=0.0, total=0.0)
    with pytest.raises(ValueError, match="pattern"):
        make_sample("../escape", "clip-1")
    with pytest.raises(InputError, match="not a sample record"):
        Sample.from_bytes(b'{"sample_id": "x"}')
    with pytest.raises(InputError, match="shape"):
        Sample.from_foa(np.zeros((2, 10)), sample_id="x", input_id="y", seed=0, rewards=rewards(0.1))


def test_samples_round_trip_through_the_topic_in_order_per_input(kafka_broker, tmp_path, caplog):
    topic = unique("odpo-samples")
    published = [make_sample(f"s{k}-{i}", f"input-{i}", seed=k) for i in range(2) for k in range(3)]
    large = make_sample("large-0", "input-9", n_samples=50_000, seed=9)  # 800 kB: over the inline limit
    with SampleProducer(kafka_broker, topic, audio_store=str(tmp_path / "audio"), timeout_s=10) as producer:
        for sample in [*published, large]:
            producer.publish(sample)
        producer._producer.send(topic, key=b"input-0", value=b"not json").get(timeout=10)

    with SampleConsumer(
        kafka_broker, topic, unique("group"), session_timeout_ms=SESSION_TIMEOUT_MS, timeout_s=10
    ) as consumer:
        with caplog.at_level(logging.WARNING, logger="swansphere.feedback"):
            received = consumer.poll(max_records=len(published) + 1, timeout_s=30)
            assert consumer.poll(max_records=1, timeout_s=2) == []  # nothing else; the bad record skipped
        consumer.commit()

    assert "skipping" in caplog.text and "not a sample record" in caplog.text
    by_id = {sample.sample_id: sample for sample in received}
    assert set(by_id) == {s.sample_id for s in [*published, large]}
    assert all(by_id[s.sample_id] == s for s in published)
    stored = by_id["large-0"]
    assert stored.audio is None and stored.audio_uri == str(tmp_path / "audio" / "large-0.f32")
    assert np.array_equal(stored.foa(), large.foa())
    for input_id in ("input-0", "input-1"):  # keyed by input: one partition, publication order
        order = [s.sample_id for s in received if s.input_id == input_id]
        assert order == [s.sample_id for s in published if s.input_id == input_id]


def test_a_committed_group_resumes_after_what_it_used(kafka_broker):
    topic, group = unique("odpo-samples"), unique("group")
    with SampleProducer(kafka_broker, topic, timeout_s=10) as producer:
        producer.publish(make_sample("first", "input-0"))
    settings = {"session_timeout_ms": SESSION_TIMEOUT_MS, "timeout_s": 10}
    with SampleConsumer(kafka_broker, topic, group, **settings) as consumer:
        assert [s.sample_id for s in consumer.poll(max_records=1, timeout_s=30)] == ["first"]
        consumer.commit()
    with SampleProducer(kafka_broker, topic, timeout_s=10) as producer:
        producer.publish(make_sample("second", "input-0"))
    with SampleConsumer(kafka_broker, topic, group, **settings) as consumer:
        assert [s.sample_id for s in consumer.poll(max_records=1, timeout_s=30)] == ["second"]


def test_large_audio_without_a_store_is_refused(kafka_broker):
    producer = SampleProducer(kafka_broker, unique("odpo-samples"), timeout_s=10)
    with producer, pytest.raises(InputError, match="audio_store"):
        producer.publish(make_sample("big", "input-0", n_samples=50_000))


def test_an_unreachable_broker_is_a_clear_error(closed_port):
    address = f"127.0.0.1:{closed_port}"
    with pytest.raises(BrokerUnavailableError, match=f"{address} unreachable"):
        SampleProducer(address, "odpo-samples", timeout_s=1)
    with pytest.raises(BrokerUnavailableError, match=f"{address} unreachable"):
        SampleConsumer(address, "odpo-samples", "group", timeout_s=1)

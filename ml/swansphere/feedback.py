"""The Kafka topic of generated samples and their rewards, so a live service's outputs feed the next ODPO
round (paper §3.4; DESIGN §2: Kafka is the durable event log).

One record per candidate: key = the input id (UTF-8), so all candidates of one input land on one
partition in order and a consumer sees an input's group together; value = `Sample` as UTF-8 JSON with
the FOA audio base64-encoded (pydantic's base64 bytes mode). The audio is little-endian float32,
channel-major (4, n_samples) AmbiX W, Y, Z, X. Audio above `max_inline_bytes` (default 700 kB, about
1 s of FOA; the JSON then stays under Kafka's default 1 MiB message limit) is written to a storage
prefix (local path or s3://) and the record carries its URI instead.

Every broker call has a bounded timeout; an unreachable broker raises `BrokerUnavailableError` instead of
hanging. Delivery is at-least-once: the consumer commits only when told (`commit`), after the caller
has used the samples, and consumers dedupe on `sample_id`.
"""

import logging
import time
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import numpy as np
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from swansphere import storage
from swansphere.conventions import SAMPLE_RATE
from swansphere.errors import InputError

log = logging.getLogger(__name__)

FOA_CHANNELS = 4
BYTES_PER_VALUE = 4
"""float32."""

MAX_INLINE_AUDIO_BYTES = 700_000
"""Larger audio goes to storage: base64 (4/3) plus the JSON fields stays under Kafka's 1 MiB default."""


class BrokerUnavailableError(ConnectionError):
    """The Kafka broker could not be reached, or did not answer within the timeout."""


class RewardComponents(BaseModel):
    """The rewards of eq. 4, each in [0, 1] (see `odpo.combine`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spatial: float = Field(ge=0.0, le=1.0)
    semantic: float = Field(ge=0.0, le=1.0)
    fidelity: float = Field(ge=0.0, le=1.0)
    total: float = Field(ge=0.0, le=1.0)


class Sample(BaseModel):
    """One generated candidate with its rewards; exactly one of `audio` (inline) and `audio_uri`."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    sample_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,200}$", description="unique; names the stored audio")
    input_id: str = Field(min_length=1, description="the video/text input; the record key")
    input_name: str | None = None
    round: int = Field(default=0, ge=0, description="ODPO round that generated the sample")
    seed: int
    caption: str | None = None
    rewards: RewardComponents
    sample_rate: int = Field(default=SAMPLE_RATE, gt=0)
    n_samples: int = Field(gt=0, description="audio length per channel")
    audio: bytes | None = Field(default=None, description="float32 LE, channel-major (4, n_samples)")
    audio_uri: str | None = Field(default=None, description="local path or s3:// of the same bytes")
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @model_validator(mode="after")
    def _one_audio(self) -> Self:
        if (self.audio is None) == (self.audio_uri is None):
            raise ValueError("give exactly one of audio and audio_uri")
        if self.audio is not None and len(self.audio) != self.audio_bytes:
            raise ValueError(f"audio holds {len(self.audio)} bytes, expected {self.audio_bytes}")
        return self

    @property
    def audio_bytes(self) -> int:
        return FOA_CHANNELS * self.n_samples * BYTES_PER_VALUE

    @classmethod
    def from_foa(cls, foa: np.ndarray, **fields: object) -> "Sample":
        """A sample with inline audio from FOA (4, N); the other fields as keywords."""
        foa = np.asarray(foa)
        if foa.ndim != 2 or foa.shape[0] != FOA_CHANNELS or foa.shape[1] == 0:
            raise InputError(f"FOA must have shape (4, N), got {foa.shape}")
        audio = np.ascontiguousarray(foa, dtype="<f4").tobytes()
        return cls.model_validate({**fields, "audio": audio, "n_samples": foa.shape[1]})

    def foa(self) -> np.ndarray:
        """The audio (4, n_samples) float32, read from `audio_uri` when not inline."""
        data = self.audio if self.audio is not None else storage.read_bytes(self.audio_uri)
        if len(data) != self.audio_bytes:
            raise InputError(f"{self.audio_uri}: {len(data)} bytes, expected {self.audio_bytes}")
        return np.frombuffer(data, dtype="<f4").reshape(FOA_CHANNELS, self.n_samples).astype(np.float32)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Sample":
        try:
            return cls.model_validate_json(data)
        except ValidationError as err:
            raise InputError(f"not a sample record: {err.errors()[0]['msg']}") from None


class SampleProducer:
    """Publishes samples to `topic`, keyed by input id; each publish waits for the broker's ack."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        audio_store: str | None = None,
        max_inline_bytes: int = MAX_INLINE_AUDIO_BYTES,
        timeout_s: float = 10.0,
    ):
        self.topic = topic
        self.audio_store = audio_store
        self.max_inline_bytes = max_inline_bytes
        self.timeout_s = timeout_s
        timeout_ms = int(timeout_s * 1000)
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap,
                bootstrap_timeout_ms=timeout_ms,
                max_block_ms=timeout_ms,
                request_timeout_ms=timeout_ms,
                delivery_timeout_ms=timeout_ms,
            )
        except KafkaError as err:
            raise BrokerUnavailableError(
                f"Kafka broker {bootstrap} unreachable within {timeout_s} s: {err}"
            ) from None

    def publish(self, sample: Sample) -> None:
        """Sends one sample (its audio offloaded to `audio_store` if too large) and waits for the ack."""
        sample = self._offload(sample)
        try:
            future = self._producer.send(self.topic, key=sample.input_id.encode(), value=sample.to_bytes())
            future.get(timeout=self.timeout_s)
        except KafkaError as err:
            raise BrokerUnavailableError(f"publishing to {self.topic} failed: {err}") from None

    def _offload(self, sample: Sample) -> Sample:
        if sample.audio is None or len(sample.audio) <= self.max_inline_bytes:
            return sample
        if self.audio_store is None:
            raise InputError(
                f"sample {sample.sample_id}: {len(sample.audio)} bytes of audio exceed the inline limit "
                f"{self.max_inline_bytes}; give an audio_store (local path or s3://)"
            )
        uri = storage.join(self.audio_store, f"{sample.sample_id}.f32")
        storage.write_bytes(uri, sample.audio)
        return sample.model_copy(update={"audio": None, "audio_uri": uri})

    def close(self) -> None:
        self._producer.close(timeout=self.timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class SampleConsumer:
    """Reads samples of `topic` as member of consumer group `group_id`; commits only on `commit()`."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group_id: str,
        *,
        timeout_s: float = 10.0,
        session_timeout_ms: int = 10_000,
        from_beginning: bool = True,
    ):
        """`session_timeout_ms`: how long the group waits for a dead member (Kafka brokers allow 6 s
        and up); `from_beginning`: where a new group starts, the earliest record or only new ones."""
        self.timeout_s = timeout_s
        try:
            self._consumer = KafkaConsumer(
                topic,
                bootstrap_servers=bootstrap,
                group_id=group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest" if from_beginning else "latest",
                bootstrap_timeout_ms=int(timeout_s * 1000),
                request_timeout_ms=session_timeout_ms + 5_000,
                session_timeout_ms=session_timeout_ms,
                heartbeat_interval_ms=max(session_timeout_ms // 3, 100),
            )
        except KafkaError as err:
            raise BrokerUnavailableError(
                f"Kafka broker {bootstrap} unreachable within {timeout_s} s: {err}"
            ) from None

    def poll(self, max_records: int = 100, timeout_s: float = 5.0) -> list[Sample]:
        """Collects up to `max_records` samples, waiting at most `timeout_s` (the first poll also joins
        the group). Records that are not samples are logged and skipped: one bad record must not
        block the partition."""
        if max_records < 1:
            raise InputError(f"max_records must be >= 1, got {max_records}")
        samples: list[Sample] = []
        deadline = time.monotonic() + timeout_s
        while len(samples) < max_records and (left := deadline - time.monotonic()) > 0:
            try:
                batches = self._consumer.poll(
                    timeout_ms=int(left * 1000), max_records=max_records - len(samples)
                )
            except KafkaError as err:
                raise BrokerUnavailableError(f"polling failed: {err}") from None
            for records in batches.values():
                for record in records:
                    try:
                        samples.append(Sample.from_bytes(record.value))
                    except InputError as err:
                        log.warning(
                            "skipping %s[%d]@%d: %s", record.topic, record.partition, record.offset, err
                        )
        return samples

    def commit(self) -> None:
        """Marks everything polled so far as done for the group (at-least-once: after using it)."""
        try:
            self._consumer.commit(timeout_ms=int(self.timeout_s * 1000))
        except KafkaError as err:
            raise BrokerUnavailableError(f"commit failed: {err}") from None

    def close(self) -> None:
        self._consumer.close(timeout_ms=int(self.timeout_s * 1000))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

"""Stage logic without servers (DESIGN §2): the same stages as embedded mode, driven through
transports that reorder and redeliver, with LM state lost, and with bad messages."""

import contextlib
import json
import logging
import random
import struct

import numpy as np
import pytest
from helpers_model import tiny_model

from swansphere.engine import GenerationSettings, generate
from swansphere.errors import InputError
from swansphere.serving import stages
from swansphere.serving.backend import TorchBackend
from swansphere.serving.embedded import EmbeddedPipeline
from swansphere.serving.envelope import Envelope, decode, encode
from swansphere.serving.session import StreamFailedError, StreamSession
from swansphere.serving.stages import MAX_VIDEO_FRAMES, STAGES, StreamSpec, build_stages
from swansphere.serving.state import CLOSED, MemoryStateStore
from swansphere.serving.transport import Delivery, MemoryTransport
from swansphere.serving.worker import StageWorker
from swansphere.video import model_frames, model_pixels

SETTINGS = GenerationSettings(seed=7, steps=4)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return (np.random.default_rng(1).random((6, 64, 128, 3)) * 255).astype(np.uint8)


class UnrulyTransport(MemoryTransport):
    """Delivers a random subset of each queue in random order, and redelivers some messages."""

    def __init__(self, seed: int):
        super().__init__()
        self.rng = random.Random(seed)

    def receive(self, topic, group, consumer, count, block_ms):
        queue = self._queues[topic]
        messages = list(queue)
        queue.clear()
        self.rng.shuffle(messages)
        keep = messages[: self.rng.randint(1, len(messages))] if messages else []
        queue.extend(messages[len(keep) :])
        queue.extend(m for m in keep if self.rng.random() < 0.3)  # redelivered later
        return [Delivery(topic, m) for m in keep]


def run_stream(model, frames, transport, store, backend, text=None, frames_per_message=2, spec=None):
    stages = build_stages(backend, store)
    workers = [StageWorker(stages[name], transport, "w", 8, 0) for name in STAGES]
    spec = spec or StreamSpec("s1", text=text, settings=SETTINGS)
    session = StreamSession(transport, store, spec, model.config.patch_samples)
    session.start()
    for start in range(0, len(frames), frames_per_message):
        session.send_frames(frames[start : start + frames_per_message])
    session.end()
    chunks = []
    for _ in range(10_000):
        for worker in workers:
            worker.run_once()
        chunks += session.take_chunks("gateway")
        if session.done:
            break
    session.close()
    return chunks


def test_out_of_order_and_redelivered_messages_give_the_embedded_audio_once_each(model, frames):
    expected = generate(model, frames, text="a dog", settings=SETTINGS)
    for seed in range(3):
        store = MemoryStateStore()
        chunks = run_stream(model, frames, UnrulyTransport(seed), store, TorchBackend(model), text="a dog")
        assert [c.patch_index for c in chunks] == list(range(len(chunks)))
        audio = np.concatenate([c.audio for c in chunks], axis=-1)
        assert audio.shape == expected.shape
        assert np.max(np.abs(audio - expected)) <= 1e-5


class RedeliveringTransport(MemoryTransport):
    """In-process queues that can hand a batch back, flagged as redelivered (a dead worker's)."""

    def __init__(self) -> None:
        super().__init__()
        self.returned: dict[str, list] = {}

    def give_back(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            self.returned.setdefault(delivery.topic, []).append(delivery.message)

    def receive(self, topic, group, consumer, count, block_ms):
        returned = self.returned.pop(topic, [])
        fresh = super().receive(topic, group, consumer, max(count - len(returned), 0), block_ms)
        return [Delivery(topic, m, redelivered=True) for m in returned] + fresh


@pytest.mark.parametrize("dying", ["video_encoder", "spatial_lm"])
def test_a_stateful_stage_that_dies_before_publishing_replays_what_it_lost(model, frames, dying):
    """The worker handles a batch (the stream's state moves on), dies before publishing, and its
    batch is redelivered: `Stage.replay` re-emits the lost outputs, so the stream still completes."""
    expected = generate(model, frames, settings=SETTINGS)
    transport, store = RedeliveringTransport(), MemoryStateStore()
    stages = build_stages(TorchBackend(model), store)
    workers = {name: StageWorker(stages[name], transport, "w", 8, 0) for name in STAGES}
    session = StreamSession(transport, store, StreamSpec("s1", settings=SETTINGS), model.config.patch_samples)
    session.start()
    for start in range(0, len(frames), 2):
        session.send_frames(frames[start : start + 2])
    session.end()
    chunks, deaths = [], 0
    for _ in range(10_000):
        for name, worker in workers.items():
            if name == dying and deaths < 3:
                deliveries = transport.receive(name, name, "w", 8, 0)
                if deliveries and stages[name].handle([d.message for d in deliveries]):
                    transport.give_back(deliveries)  # outputs computed, never published, never acked
                    deaths += 1
                    continue
                transport.give_back(deliveries)
            worker.run_once()
        chunks += session.take_chunks("gateway")
        if session.done:
            break
    session.close()
    assert deaths == 3
    assert [c.patch_index for c in chunks] == list(range(len(chunks)))
    audio = np.concatenate([c.audio for c in chunks], axis=-1)
    assert audio.shape == expected.shape
    assert np.max(np.abs(audio - expected)) <= 1e-5


class ForgetfulBackend(TorchBackend):
    """Drops every stream's LM state after each step."""

    def spatial_lm(self, steps):
        results = super().spatial_lm(steps)
        for step in steps:
            self.end_stream(step.stream_id)
        return results


def test_lost_lm_state_is_replayed_from_the_stored_inputs(model, frames, caplog):
    """A backend that keeps no LM state at all (a restarted or evicted worker every patch); each
    replay is logged (and counted by the service's metric, `Stage.on_states_lost`)."""
    expected = generate(model, frames, settings=SETTINGS)
    forgetful = ForgetfulBackend(model)
    with caplog.at_level(logging.INFO, logger="swansphere.serving.stages"):
        chunks = run_stream(model, frames, MemoryTransport(), MemoryStateStore(), forgetful)
    audio = np.concatenate([c.audio for c in chunks], axis=-1)
    assert np.max(np.abs(audio - expected)) <= 1e-5
    replays = [r for r in caplog.records if r.getMessage() == "backend state lost, rebuilding it"]
    assert replays and all(r.stage == "spatial_lm" and r.streams == 1 for r in replays)


class EndRecordingBackend(TorchBackend):
    def __init__(self, model):
        super().__init__(model)
        self.ended: list[str] = []

    def end_stream(self, stream_id: str) -> None:
        self.ended.append(stream_id)
        super().end_stream(stream_id)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_lm_frees_a_streams_state_once_its_last_patch_is_planned(model, frames, seed):
    """Whatever order the messages take, the LM's cache of a finished stream does not wait for the
    LRU to evict it."""
    backend = EndRecordingBackend(model)
    run_stream(model, frames, UnrulyTransport(seed), MemoryStateStore(), backend)
    assert "s1" in backend.ended


def test_a_closed_stream_is_not_started_again_by_its_messages_in_flight(model, frames):
    """The gateway refused or lost the stream while its start, frames and end were still queued: the
    stages drop them, generate nothing, and the store keeps only the stream's closed mark."""
    transport, store = MemoryTransport(), MemoryStateStore()
    stages = build_stages(TorchBackend(model), store)
    workers = [StageWorker(stages[name], transport, "w", 8, 0) for name in STAGES]
    session = StreamSession(
        transport, store, StreamSpec("gone", settings=SETTINGS), model.config.patch_samples
    )
    session.start()
    session.send_frames(frames[:4])
    session.end()
    session.close()
    while sum(worker.run_once() for worker in workers):
        pass
    assert stages["locdit"].seconds["locdit"] == 0 and stages["vae_decoder"].seconds["vae_decoder"] == 0
    assert store.get_many("gone", ["spec", "frame@0", CLOSED]) == [None, None, b"1"]


def test_text_only_stream_runs_for_its_duration(model):
    spec = StreamSpec("t", text="rain", settings=SETTINGS, duration_s=1.0)
    expected = generate(model, None, text="rain", settings=SETTINGS, duration_s=1.0)
    transport, store = MemoryTransport(), MemoryStateStore()
    chunks = run_stream(
        model, np.zeros((0, 64, 128, 3), np.uint8), transport, store, TorchBackend(model), spec=spec
    )
    audio = np.concatenate([c.audio for c in chunks], axis=-1)
    assert audio.shape == (4, 44100)
    assert np.max(np.abs(audio - expected)) <= 1e-5


def test_a_rejected_message_fails_its_stream_with_a_reason(model):
    transport, store = MemoryTransport(), MemoryStateStore()
    backend = TorchBackend(model)
    stages = build_stages(backend, store)
    session = StreamSession(
        transport, store, StreamSpec("bad", settings=SETTINGS), model.config.patch_samples
    )
    transport.publish("spatial_lm", Envelope("bad", "nonsense"))
    StageWorker(stages["spatial_lm"], transport, "w", 8, 0).run_once()
    with pytest.raises(StreamFailedError, match="unknown message kind"):
        session.take_chunks("gateway")


def test_envelope_round_trip_and_refusals():
    message = Envelope(
        "s",
        "chunk",
        3,
        {"first_sample": 5},
        {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.uint8)},
    )
    back = decode(encode(message))
    assert back.key == ("s", "chunk", 3) and back.meta == {"first_sample": 5}
    assert np.array_equal(back.tensors["a"], message.tensors["a"]) and back.tensors["b"].dtype == np.uint8
    data = encode(message)
    for bad, reason in [
        (b"XXXX" + data[4:], "bad magic"),
        (data[:-1], "runs past the end"),
        (data + b"\0", "trailing bytes"),
        (data[:8] + b"[" + data[9:], "header is not valid"),
    ]:
        with pytest.raises(InputError, match=reason):
            decode(bad)
    # 2^64 elements: a size computed in 64-bit integers would wrap to 0 and pass the length check.
    huge = {"stream_id": "s", "kind": "x", "index": 0, "meta": {}}
    huge["tensors"] = [{"name": "a", "dtype": "float32", "shape": [2**32, 2**32]}]
    header = json.dumps(huge).encode()
    with pytest.raises(InputError, match="runs past the end"):
        decode(b"SSE1" + struct.pack("<I", len(header)) + header)
    with pytest.raises(InputError, match="cannot travel"):
        encode(Envelope("s", "x", tensors={"o": np.array([object()])}))


def test_frames_are_checked_before_they_enter_the_pipeline(model):
    session = StreamSession(
        MemoryTransport(), MemoryStateStore(), StreamSpec("f"), model.config.patch_samples
    )
    with pytest.raises(InputError, match="equirectangular"):
        session.send_frames(np.zeros((1, 64, 100, 3), np.uint8))
    with pytest.raises(InputError, match="uint8"):
        session.send_frames(np.zeros((1, 64, 128, 3), np.float32))
    with pytest.raises(InputError, match="no video frames"):
        session.end()
    session.frames_sent = MAX_VIDEO_FRAMES - 1  # a stream at 10 minutes less one frame
    with pytest.raises(InputError, match="longer than 600 s"):
        session.send_frames(np.zeros((2, 32, 64, 3), np.uint8))
    session.send_frames(np.zeros((1, 32, 64, 3), np.uint8))
    assert session.frames_sent == MAX_VIDEO_FRAMES
    with pytest.raises(InputError, match="one sample"):
        StreamSpec("t", text="rain", duration_s=1e-6)


def test_streamed_video_tokens_equal_encoding_the_whole_clip(model):
    """New frames are encoded after a bounded context, yet the tokens are those of the whole clip."""
    frames = (np.random.default_rng(4).random((23, 64, 128, 3)) * 255).astype(np.uint8)
    store = MemoryStateStore()
    stage = build_stages(TorchBackend(model), store)["video_encoder"]
    tokens, start = [], 0
    for size in (1, 3, 1, 7, 2, 9):
        out = stage.handle([Envelope("v", "frames", start, tensors={"frames": frames[start : start + size]})])
        tokens += [message.tensors["tokens"] for _, message in out]
        start += size
    streamed = np.concatenate(tokens)
    whole = TorchBackend(model).video_encoder(model_pixels(frames, (64, 128))[None])[0]
    assert stage.context_frames < 23 and streamed.shape == whole.shape
    assert np.max(np.abs(streamed - whole)) <= 1e-5


class FrameCountingBackend(TorchBackend):
    def __init__(self, model):
        super().__init__(model)
        self.frames_sent: list[int] = []

    def video_encoder(self, pixels, windows=None):
        self.frames_sent.append(pixels.shape[1])
        return super().video_encoder(pixels, windows)


def test_the_stage_sends_each_frame_once_and_its_context_again_only_to_a_backend_that_lost_it(model):
    """While the backend keeps a stream's encoder state the stage sends only new frames; after a
    restart (`reset`) the resumed call comes back lost and the stage sends the window again with the
    context frames it reads from the store, which keeps no older frame. The tokens are those of the
    whole clip either way."""
    frames = (np.random.default_rng(8).random((14, 64, 128, 3)) * 255).astype(np.uint8)
    backend = FrameCountingBackend(model)
    store = MemoryStateStore()
    stage = build_stages(backend, store)["video_encoder"]
    lost: list[int] = []
    stage.on_states_lost = lost.append
    tokens, start = [], 0
    for size in (2, 3, 4, 2, 3):
        if start == 9:
            backend.reset()
        out = stage.handle([Envelope("v", "frames", start, tensors={"frames": frames[start : start + size]})])
        tokens += [message.tensors["tokens"] for _, message in out]
        start += size
    context = stage.context_frames
    assert backend.frames_sent == [2, 3, 4, 2, min(9, context) + 2, 3] and lost == [1]
    # The store keeps only the context of the next frames: all a fallback reads.
    kept = store.get_many("v", [f"frame@{i}" for i in range(14)])
    assert [i for i, blob in enumerate(kept) if blob is not None] == list(range(14 - context, 14))
    whole = TorchBackend(model).video_encoder(model_pixels(frames, (64, 128))[None])[0]
    assert np.max(np.abs(np.concatenate(tokens) - whole)) <= 1e-5


def test_a_long_burst_is_encoded_a_bounded_number_of_frames_per_call(model, monkeypatch):
    """A clip sent at once is encoded MAX_CALL_FRAMES at a time, each call nudging the next, and the
    tokens are still those of the whole clip."""
    monkeypatch.setattr(stages, "MAX_CALL_FRAMES", 4)
    clip = (np.random.default_rng(7).random((12, 64, 128, 3)) * 255).astype(np.uint8)
    stage = build_stages(TorchBackend(model), MemoryStateStore())["video_encoder"]
    pending, tokens = [Envelope("a", "frames", 0, tensors={"frames": clip})], []
    while pending:
        out = stage.handle(pending)
        tokens += [m for topic, m in out if topic == "spatial_lm"]
        pending = [m for topic, m in out if topic == "video_encoder"]
    assert [(m.index, len(m.tensors["tokens"])) for m in tokens] == [(0, 2), (2, 4), (6, 4), (10, 2)]
    whole = TorchBackend(model).video_encoder(model_pixels(clip, (64, 128))[None])[0]
    assert np.max(np.abs(np.concatenate([m.tensors["tokens"] for m in tokens]) - whole)) <= 1e-5


def test_the_video_encoder_reads_8_bit_pixels(model):
    """Frames stay uint8 from the message to the model (a quarter of the bytes of float32); the
    modules see exactly what training's `model_frames` gives them."""
    frames = (np.random.default_rng(3).random((3, 96, 192, 3)) * 255).astype(np.uint8)
    pixels = model_pixels(frames, (64, 128))
    assert pixels.dtype == np.uint8 and pixels.shape == (3, 3, 64, 128)
    assert np.array_equal(model_frames(frames, (64, 128)).numpy(), pixels.astype(np.float32) / 255)
    assert np.array_equal(model_pixels(pixels.transpose(0, 2, 3, 1), (64, 128)), pixels)
    with pytest.raises(InputError, match="pixels must be uint8"):
        TorchBackend(model).video_encoder(pixels[None].astype(np.float32) / 255)


def test_a_burst_of_frames_yields_every_streams_first_tokens_before_the_rest(model):
    """Two streams send 12 frames at once: the first pass encodes each stream's first frames only,
    the rest follow from the stage's own `encode` message, and the tokens are still the whole clip's."""
    clips = {
        name: (np.random.default_rng(seed).random((12, 64, 128, 3)) * 255).astype(np.uint8)
        for name, seed in (("a", 5), ("b", 6))
    }
    stage = build_stages(TorchBackend(model), MemoryStateStore())["video_encoder"]
    first = stage.handle(
        [Envelope(name, "frames", 0, tensors={"frames": clip}) for name, clip in clips.items()]
    )
    tokens = [m for topic, m in first if topic == "spatial_lm"]
    nudges = [m for topic, m in first if topic == "video_encoder"]
    assert [(m.stream_id, m.index, len(m.tensors["tokens"])) for m in tokens] == [("a", 0, 2), ("b", 0, 2)]
    assert [(m.stream_id, m.kind, m.index) for m in nudges] == [("a", "encode", 2), ("b", "encode", 2)]
    rest = stage.handle(nudges)
    assert [(m.stream_id, m.index, len(m.tensors["tokens"])) for _, m in rest] == [("a", 2, 10), ("b", 2, 10)]
    assert stage.handle(nudges) == []  # a redelivered nudge finds nothing new ...
    replayed = stage.replay(nudges[:1])  # ... and replay re-sends what it may have lost
    assert [(m.stream_id, m.index) for _, m in replayed] == [("a", 2)]
    # A new stream's first call goes alone: a's backlog waits for the next call.
    c = (np.random.default_rng(7).random((3, 64, 128, 3)) * 255).astype(np.uint8)
    more = Envelope("a", "frames", 12, tensors={"frames": c})
    mixed = stage.handle([more, Envelope("c", "frames", 0, tensors={"frames": c[:1]})])
    assert [(topic, m.stream_id, m.kind, m.index) for topic, m in mixed] == [
        ("spatial_lm", "c", "tokens", 0),
        ("video_encoder", "a", "encode", 12),
    ]
    later = stage.handle([m for topic, m in mixed if topic == "video_encoder"])
    assert [(m.stream_id, m.index, len(m.tensors["tokens"])) for _, m in later] == [("a", 12, 3)]
    clips["a"] = np.concatenate([clips["a"], c])
    for name, clip in clips.items():
        streamed = np.concatenate(
            [m.tensors["tokens"] for m in tokens + [m for _, m in rest + later] if m.stream_id == name]
        )
        whole = TorchBackend(model).video_encoder(model_pixels(clip, (64, 128))[None])[0]
        assert np.max(np.abs(streamed - whole)) <= 1e-5


class CountingBackend(TorchBackend):
    def __init__(self, model):
        super().__init__(model)
        self.lm_calls: list[int] = []

    def spatial_lm(self, steps):
        self.lm_calls.append(len(steps))
        return super().spatial_lm(steps)


def test_the_lm_plans_a_patch_of_every_ready_stream_in_one_call(model, frames):
    """Three streams that run together cost one LM call per patch, not three, and each stream's audio
    is what it gets alone."""
    backend = CountingBackend(model)
    pipeline = EmbeddedPipeline(backend)
    sessions = []
    for seed, text in ((1, None), (2, "rain"), (3, "a dog barks")):
        spec = StreamSpec(f"s{seed}", text=text, settings=GenerationSettings(seed=seed, steps=4))
        session = StreamSession(pipeline.transport, pipeline.store, spec, model.config.patch_samples)
        session.start()
        session.send_frames(frames)
        session.end()
        sessions.append(session)
    pipeline.pump()
    for session in sessions:
        spec = session.spec
        audio = np.concatenate([chunk.audio for chunk in session.take_chunks(spec.stream_id)], axis=-1)
        assert np.max(np.abs(audio - generate(model, frames, spec.text, spec.settings))) <= 1e-4
    patches = sessions[0].next_patch
    print(f"LM calls for 3 streams of {patches} patches: {backend.lm_calls}")
    assert sum(backend.lm_calls) == 3 * patches
    assert len(backend.lm_calls) == patches and set(backend.lm_calls) == {3}


class CountingStore(MemoryStateStore):
    """Records how many token chunks each read of a stream's token list returns."""

    def __init__(self):
        super().__init__()
        self.token_reads: list[int] = []

    def items_each(self, key, starts):
        found = super().items_each(key, starts)
        if key == "tokens":
            self.token_reads += [len(items) for items in found.values()]
        return found


class RoundTripStore(MemoryStateStore):
    """Counts round trips as `RedisStateStore` makes them: one per call from a stage that has
    something to do (an empty batch makes none), two per locked section (taking the locks with the
    filing and the first read, giving them back with the section's writes)."""

    def __init__(self):
        super().__init__()
        self.round_trips = 0
        self._inside = False  # the memory store's one-stream forms call its batch forms


def _counted(name: str):
    plain = getattr(MemoryStateStore, name)

    def counted(self, *args, **kwargs):
        batch = args[-1] if args else None
        if not self._inside and batch != {} and batch != []:
            self.round_trips += 1
        inside, self._inside = self._inside, True
        try:
            return plain(self, *args, **kwargs)
        finally:
            self._inside = inside

    return counted


def _counted_section(name: str):
    plain = getattr(MemoryStateStore, name)

    @contextlib.contextmanager
    def counted(self, *args, **kwargs):
        """Two round trips; what taking and giving back do is theirs, what the section does is counted."""
        inside = self._inside
        self.round_trips += 0 if inside else 2
        self._inside = True
        with contextlib.ExitStack() as stack:
            try:
                section = stack.enter_context(plain(self, *args, **kwargs))
            finally:
                self._inside = inside
            yield section
            self._inside = True
        self._inside = inside

    return counted


for _name in [
    *("get", "get_many", "get_each", "set", "set_each", "set_once", "set_once_each", "unset_each"),
    *("append", "append_each", "items", "items_each"),
]:
    setattr(RoundTripStore, _name, _counted(_name))
for _name in ("lock", "lock_each"):
    setattr(RoundTripStore, _name, _counted_section(_name))


@pytest.mark.parametrize("stage", [stages.VIDEO_ENCODER, stages.SPATIAL_LM])
def test_a_stage_calls_round_trips_do_not_grow_with_its_streams(model, stage):
    """On a busy server each round trip to the store waits to be scheduled: a call that handles 4
    streams makes as many as a call that handles one."""
    P, D = model.config.patch_frames, model.config.vae.latent_dim
    round_trips = []
    for n in (1, 4):
        store = RoundTripStore()
        handler = build_stages(TorchBackend(model), store)[stage]
        names = [f"s{i}" for i in range(n)]
        if stage == stages.SPATIAL_LM:  # text-only streams: patch 0 is planned at their start
            specs = [StreamSpec(name, text="rain", settings=SETTINGS, duration_s=2.0) for name in names]
            handler.handle([Envelope(spec.stream_id, "start", 0, {"spec": spec.to_json()}) for spec in specs])
            z = np.zeros((D, P), np.float32)
            call = [Envelope(name, "latents", 0, tensors={"z": z}) for name in names]
        else:
            frames = np.zeros((2, 64, 128, 3), np.uint8)
            call = [Envelope(name, "frames", 0, tensors={"frames": frames}) for name in names]
        store.round_trips = 0
        assert len(handler.handle(call)) == n
        round_trips.append(store.round_trips)
    print(f"{stage}: {round_trips} round trips for 1 and 4 streams")
    assert round_trips[0] == round_trips[1] <= 5


def test_a_patch_reads_the_tokens_it_needs_not_the_whole_stream(model):
    """A 10 s video sent live, a frame at a time, so the token list grows a chunk per frame: the LM's
    reads of it stay a few chunks long, not the 40 the stream ends with, and the audio is the
    offline generation's."""
    clip = (np.random.default_rng(3).random((40, 64, 128, 3)) * 255).astype(np.uint8)
    store = CountingStore()
    pipeline_stages = build_stages(TorchBackend(model), store)
    transport = MemoryTransport()
    workers = [StageWorker(pipeline_stages[name], transport, "w", 8, 0) for name in STAGES]
    session = StreamSession(
        transport, store, StreamSpec("live", settings=SETTINGS), model.config.patch_samples
    )
    session.start()
    chunks = []
    for i in range(len(clip) + 1):
        if i < len(clip):
            session.send_frames(clip[i : i + 1])
        else:
            session.end()
        while sum(worker.run_once() for worker in workers):
            pass
        chunks += session.take_chunks("gateway")
    assert session.done
    audio = np.concatenate([c.audio for c in chunks], axis=-1)
    assert np.max(np.abs(audio - generate(model, clip, settings=SETTINGS))) <= 1e-5
    print(f"token chunks per read: {store.token_reads}")
    assert len(store.token_reads) >= 40 and max(store.token_reads) <= 3

"""The gateway's logic over real gRPC on loopback, with the stages in-process (memory transport, torch
backend) so no other server is involved; the local cluster test repeats this over Redis and Triton."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from helpers_model import tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.server import server_options
from services.gateway.server import PipelineHealth
from services.gateway.servicer import GatewayServicer
from swansphere.client import MAX_MESSAGE_BYTES, SwanSphereClient, generate_requests
from swansphere.engine import GenerationSettings, generate
from swansphere.models.sampler import Guidance
from swansphere.serving.backend import TorchBackend
from swansphere.serving.embedded import EmbeddedPipeline
from swansphere.serving.envelope import Envelope
from swansphere.serving.session import MAX_FRAMES_AHEAD
from swansphere.serving.state import MemoryStateStore
from swansphere.serving.transport import MemoryTransport
from swansphere.v1 import swansphere_pb2 as pb
from swansphere.v1 import swansphere_pb2_grpc as pb_grpc

STEPS = 4


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def gateway(model):
    """A gateway on a free port whose pipeline runs on a background thread of this process."""
    pipeline = EmbeddedPipeline(TorchBackend(model))
    stop, paused = threading.Event(), threading.Event()

    def pump() -> None:
        while not stop.is_set():
            if paused.is_set() or not sum(worker.run_once() for worker in pipeline.workers):
                stop.wait(0.002)

    servicer = GatewayServicer(
        pipeline.transport,
        pipeline.store,
        model.config.patch_samples,
        model="tiny test",
        max_streams=2,
        stall_timeout_s=30.0,
        ready=lambda: None,
    )
    server = grpc.server(ThreadPoolExecutor(8), options=server_options())  # the services' message limits
    pb_grpc.add_SwanSphereServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    servicer.pipeline = pipeline  # for tests that look at the stages' work
    servicer.paused = paused  # set: the stages do nothing
    yield f"127.0.0.1:{port}", servicer
    stop.set()
    server.stop(0).wait()
    thread.join()


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return (np.random.default_rng(2).random((6, 32, 64, 3)) * 255).astype(np.uint8)


def test_stream_equals_embedded_and_chunks_arrive_in_order(gateway, model, frames):
    address, _ = gateway
    expected = generate(model, frames, text="a bell", settings=GenerationSettings(seed=3, steps=STEPS))
    with SwanSphereClient(address, timeout_s=60) as client:
        generation = client.generate(frames, text="a bell", seed=3, steps=STEPS, frames_per_message=1)
        chunks = list(generation)
    assert [c.patch_index for c in chunks] == list(range(len(chunks)))
    audio = np.concatenate([c.audio for c in chunks], axis=-1)
    assert audio.shape == expected.shape
    assert np.max(np.abs(audio - expected)) <= 1e-4
    assert generation.summary.chunks == len(chunks) and generation.summary.samples == expected.shape[1]


def test_a_live_source_gets_the_same_audio_and_its_first_chunk_before_it_ends(gateway, model, frames):
    """Frames given one at a time at 4 fps, as a camera does: the first chunk comes while the camera
    still films, and the audio is what the whole clip gives."""
    address, _ = gateway
    expected = generate(model, frames, text="a bell", settings=GenerationSettings(seed=3, steps=STEPS))
    filmed: list[float] = []

    def camera():
        for frame in frames:
            yield frame
            time.sleep(0.25)
        filmed.append(time.monotonic())

    with SwanSphereClient(address, timeout_s=60) as client:
        chunks, first = [], None
        for chunk in client.generate(camera(), text="a bell", seed=3, steps=STEPS):
            first = first or time.monotonic()
            chunks.append(chunk)
    assert first < filmed[0]
    audio = np.concatenate([c.audio for c in chunks], axis=-1)
    assert audio.shape == expected.shape and np.max(np.abs(audio - expected)) <= 1e-4


def test_clip_call_pcm16_and_text_only(gateway, model):
    address, _ = gateway
    settings = GenerationSettings(seed=1, steps=STEPS, guidance=Guidance(1.0, 1.0))
    expected = generate(model, None, text="rain", settings=settings, duration_s=0.5)
    with SwanSphereClient(address, timeout_s=60) as client:
        audio, summary = client.generate_clip(
            text="rain", seed=1, steps=STEPS, guidance=(1.0, 1.0), duration_s=0.5, output_format="pcm16"
        )
    assert audio.shape == expected.shape == (4, 22050)
    assert np.max(np.abs(audio - np.clip(expected, -1, 1))) <= 1.0 / 32767
    assert summary.samples == 22050


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (pb.GenerateConfig(steps=500), "config.steps"),
        (pb.GenerateConfig(h_guidance=-1.0), "config.h_guidance"),
        (pb.GenerateConfig(duration_s=-2.0), "config.duration_s"),
        (pb.GenerateConfig(duration_s=1e-6), "one sample"),
        (pb.GenerateConfig(frame_rate=30), "config.frame_rate"),
        (pb.GenerateConfig(text="x" * 1001), "config.text"),
    ],
)
def test_bad_config_is_invalid_argument_with_the_field(gateway, config, reason):
    address, _ = gateway
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.SwanSphereStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Generate(iter([pb.GenerateRequest(config=config)]), timeout=10))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason in caught.value.details()


def test_bad_frames_are_invalid_argument(gateway, frames):
    address, _ = gateway
    config = pb.GenerateConfig(steps=STEPS)
    requests = list(generate_requests(config, frames[:2], 1))
    requests[2].video.frames[0].timestamp_s = 7.0  # frame 1 stamped at 7 s
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.SwanSphereStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Generate(iter(requests), timeout=30))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "timestamp" in caught.value.details()
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Generate(iter([pb.GenerateRequest(video=requests[1].video)]), timeout=10))
        assert "first message must be a config" in caught.value.details()


def test_a_client_that_sends_frames_faster_than_they_are_encoded_is_held_back(gateway):
    """A long clip or a flood keeps at most MAX_FRAMES_AHEAD of its frames waiting for the video
    encoder (whose queue depth gates every new stream), and still gets all of its audio."""
    address, servicer = gateway
    frames = (np.random.default_rng(4).random((2 * MAX_FRAMES_AHEAD, 32, 64, 3)) * 255).astype(np.uint8)
    queued = lambda: servicer.pipeline.transport.depth("video_encoder", "video_encoder")  # noqa: E731
    generations = []

    def send() -> None:
        with SwanSphereClient(address, timeout_s=120) as client:
            generation = client.generate(frames, steps=STEPS, frames_per_message=1)
            list(generation)
            generations.append(generation)

    servicer.paused.set()
    thread = threading.Thread(target=send)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while queued() < MAX_FRAMES_AHEAD and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # enough to send the other half, were it not held back
        assert queued() == MAX_FRAMES_AHEAD
    finally:
        servicer.paused.clear()
    thread.join(120)
    assert generations[0].summary.samples == len(frames) // 4 * 44100


def test_a_stalled_pipeline_is_unavailable_and_an_idle_client_deadline_exceeded(gateway, frames):
    """Retryable only when the pipeline is at fault: a client that sends nothing more is told so."""
    address, servicer = gateway
    servicer.stall_timeout_s = 0.5
    release = threading.Event()

    def idle():  # the config and two frames, then nothing, the call left open
        yield from generate_requests(pb.GenerateConfig(steps=STEPS), frames[:2], 1)
        release.wait(30)

    try:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.SwanSphereStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.Generate(r for r in idle() if r.WhichOneof("kind") != "end"))
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "no input for 0.5 s" in caught.value.details()
            release.set()
            servicer.paused.set()
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.Generate(generate_requests(pb.GenerateConfig(steps=STEPS), frames[:2], 1)))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "pipeline stalled" in caught.value.details()
            # A client held back (MAX_FRAMES_AHEAD) has input the stalled pipeline did not take.
            many = np.repeat(frames[:1], MAX_FRAMES_AHEAD + 8, axis=0)
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.Generate(generate_requests(pb.GenerateConfig(steps=STEPS), many, 1)))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        release.set()
        servicer.paused.clear()
        servicer.stall_timeout_s = 30.0


def test_a_message_without_video_or_end_is_invalid_argument(gateway):
    with grpc.insecure_channel(gateway[0]) as channel, pytest.raises(grpc.RpcError) as caught:
        requests = [pb.GenerateRequest(config=pb.GenerateConfig(steps=STEPS)), pb.GenerateRequest()]
        list(pb_grpc.SwanSphereStub(channel).Generate(iter(requests), timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "neither video nor end" in caught.value.details()


def test_a_clip_whose_answer_exceeds_the_message_limit_is_refused_before_any_work(gateway):
    """About 94 s of float32 FOA fill the 64 MiB answer; a longer clip would be generated, then lost."""
    address, servicer = gateway
    patches = servicer.pipeline.stages["locdit"].seconds["locdit"]
    with SwanSphereClient(address, timeout_s=10, retries=0) as client:
        with pytest.raises(grpc.RpcError) as caught:
            client.generate_clip(text="rain", steps=STEPS, duration_s=100.0)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at most 94 s of float32" in caught.value.details() and "Generate" in caught.value.details()
        with pytest.raises(grpc.RpcError, match="at most 187 s of pcm16"):
            client.generate_clip(text="rain", steps=STEPS, duration_s=200.0, output_format="pcm16")
    assert servicer.pipeline.stages["locdit"].seconds["locdit"] == patches


def test_a_message_over_the_size_limit_is_refused_with_resource_exhausted(gateway, frames):
    address, _ = gateway
    requests = list(generate_requests(pb.GenerateConfig(steps=STEPS), frames[:1], 1))
    requests[1].video.frames[0].data = bytes(MAX_MESSAGE_BYTES + 1)
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as caught:
        list(pb_grpc.SwanSphereStub(channel).Generate(iter(requests), timeout=60))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in caught.value.details()


def test_streams_beyond_the_limit_are_resource_exhausted(gateway, frames):
    address, servicer = gateway
    for _ in range(servicer.max_streams):
        assert servicer._slots.acquire(blocking=False)
    try:
        with (
            SwanSphereClient(address, timeout_s=10, retries=0) as client,
            pytest.raises(grpc.RpcError) as caught,
        ):
            list(client.generate(frames[:1], steps=STEPS))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        for _ in range(servicer.max_streams):
            servicer._slots.release()


def test_a_cancelled_stream_stops_using_compute_within_a_patch(gateway, model):
    address, servicer = gateway
    frames = (np.random.default_rng(3).random((40, 32, 64, 3)) * 255).astype(np.uint8)
    locdit = servicer.pipeline.stages["locdit"]
    with SwanSphereClient(address, timeout_s=60) as client:
        iterator = iter(client.generate(frames, steps=STEPS, frames_per_message=40))
        next(iterator)
        iterator.close()  # cancels the call
    for _ in range(100):
        if servicer.active_streams == 0:
            break
        threading.Event().wait(0.05)
    assert servicer.active_streams == 0
    threading.Event().wait(0.2)  # the patch in flight, if any, finishes
    spent = locdit.seconds["locdit"]
    threading.Event().wait(0.5)
    assert locdit.seconds["locdit"] == spent, "LocDiT kept working on a cancelled stream"


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


frame_messages = st.builds(
    lambda w, h, n, size, stamp, fmt: pb.VideoFrames(
        width=w,
        height=h,
        pixel_format=fmt,
        frames=[pb.Frame(timestamp_s=stamp + i / 4, data=bytes(size)) for i in range(n)],
    ),
    st.sampled_from([0, 1, 31, 32, 64, 100, 9000]),
    st.sampled_from([0, 16, 32, 50]),
    st.integers(0, 3),
    st.sampled_from([0, 10, 32 * 64 * 3, 16 * 32 * 3]),
    st.sampled_from([0.0, 0.25, -1.0, float("nan"), 1e9]),
    st.sampled_from([0, 1, 7]),
)
configs = st.builds(
    pb.GenerateConfig,
    text=st.text(max_size=1100),
    seed=st.integers(0, 2**64 - 1),
    steps=st.sampled_from([0, 1, 2, 201, 2**32 - 1]),
    output_format=st.sampled_from([0, 1, 2, 9]),
    duration_s=st.sampled_from([0.0, 0.2, -1.0, float("inf"), float("nan"), 601.0]),
    frame_rate=st.sampled_from([0, 4, 30]),
)
requests = st.lists(
    st.one_of(
        configs.map(lambda c: pb.GenerateRequest(config=c)),
        frame_messages.map(lambda v: pb.GenerateRequest(video=v)),
        st.just(pb.GenerateRequest(end=pb.End())),
        st.just(pb.GenerateRequest()),
    ),
    max_size=5,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=requests)
def test_random_and_malformed_messages_never_crash_the_gateway(gateway, messages):
    address, _ = gateway
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.SwanSphereStub(channel)
        try:
            list(stub.Generate(iter(messages), timeout=30))
        except grpc.RpcError as err:
            assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), (
                err.code(),
                err.details(),
            )
            assert err.details()


def test_fuzzing_leaves_memory_and_streams_where_they_were(gateway):
    """Run the fuzz test's strategy again in bulk and compare memory before and after."""
    _, servicer = gateway
    before = _rss_mb()
    test_random_and_malformed_messages_never_crash_the_gateway(gateway)
    grown = _rss_mb() - before
    print(f"\nRSS growth after the fuzz run: {grown:.1f} MB")
    assert grown < 200
    assert servicer.active_streams == 0


def test_a_full_stage_backlog_refuses_new_streams_with_resource_exhausted(frames):
    """PipelineHealth reads each stage's backlog; the servicer refuses streams while one is too deep."""
    transport = MemoryTransport()
    health = PipelineHealth(transport, [], max_queue_depth=3)
    for i in range(4):
        transport.publish("locdit", Envelope("s", "patch", i))
    health.check()
    assert health.why_not() is None and "locdit" in health.overloaded()
    servicer = GatewayServicer(
        transport, MemoryStateStore(), 8192, "m", 2, 5.0, ready=health.why_not, overloaded=health.overloaded
    )
    server = grpc.server(ThreadPoolExecutor(4))
    pb_grpc.add_SwanSphereServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with (
            SwanSphereClient(f"127.0.0.1:{port}", timeout_s=10, retries=0) as client,
            pytest.raises(grpc.RpcError) as caught,
        ):
            list(client.generate(frames[:1], steps=STEPS))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "backlog" in caught.value.details()
    finally:
        server.stop(0).wait()

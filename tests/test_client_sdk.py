"""The Python SDK and `swansphere client` against a fake SwanSphere gateway: a real gRPC server on loopback
(built with services.common) that answers with deterministic chunks."""

import asyncio
import io
import json
import math
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import soundfile as sf
from helpers_tls import write_certificate

from services.common.server import build_server
from services.common.settings import load_settings
from swansphere.cli import main
from swansphere.client import (
    AsyncSwanSphereClient,
    SwanSphereClient,
    pack_audio,
    unpack_audio,
    unpack_frames,
)
from swansphere.errors import InputError
from swansphere.v1 import swansphere_pb2 as pb
from swansphere.v1 import swansphere_pb2_grpc as pb_grpc
from swansphere.video import write_video

PATCH = 8192
RATE = 44100


def expected_audio(seed: int, patch_index: int, samples: int) -> np.ndarray:
    return np.random.default_rng([seed, patch_index]).uniform(-1, 1, (4, samples)).astype(np.float32)


def expected_clip(seed: int, total: int) -> np.ndarray:
    patches = math.ceil(total / PATCH)
    return np.concatenate(
        [expected_audio(seed, t, min(PATCH, total - t * PATCH)) for t in range(patches)], -1
    )


class FakeGateway(pb_grpc.SwanSphereServicer):
    """Collects the frames (checking their 4 fps timestamps), then sends one chunk per patch of the video's
    (or duration_s's) length, audio drawn from (seed, patch index). config.text steers misbehaviour:
    "slow" waits 2 s first, "drop-after-first" fails UNAVAILABLE after one chunk, "refuse" is bad input,
    "drop-after-2-frames" fails the first call UNAVAILABLE once two video messages have come.
    The first `fail_first` calls fail UNAVAILABLE before anything is sent."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = 0
        self.fail_first = 0
        self.frames: list[np.ndarray] = []
        self.arrivals: list[float] = []
        """time.monotonic() at which each video message arrived."""

    def _count_call(self, context: grpc.ServicerContext) -> None:
        with self.lock:
            self.calls += 1
            if self.calls <= self.fail_first:
                context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")

    def _read(self, config: pb.GenerateConfig, videos: list[pb.VideoFrames]) -> int:
        """Total samples of the stream; keeps the frames for the test to look at."""
        if config.text == "refuse":
            raise InputError("text 'refuse' is refused")
        if config.text == "slow":
            time.sleep(2.0)
        frames = []
        for video in videos:
            pixels, stamps = unpack_frames(video)
            expected = (len(frames) + np.arange(len(pixels))) / 4
            if not np.allclose(stamps, expected):
                raise InputError(f"timestamps {stamps} are not {expected}")
            frames += list(pixels)
        self.frames = frames
        return round(config.duration_s * RATE) if config.duration_s else len(frames) * RATE // 4

    def Generate(self, request_iterator, context):
        self._count_call(context)
        config, videos = None, []
        for request in request_iterator:
            kind = request.WhichOneof("kind")
            if kind == "config":
                config = request.config
            elif kind == "video":
                videos.append(request.video)
                self.arrivals.append(time.monotonic())
                if config.text == "drop-after-2-frames" and len(videos) == 2 and self.calls == 1:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
            else:
                break
        total = self._read(config, videos)
        patches = math.ceil(total / PATCH)
        for t in range(patches):
            if t == 1 and config.text == "drop-after-first":
                context.abort(grpc.StatusCode.UNAVAILABLE, "stage restarted")
            audio = expected_audio(config.seed, t, min(PATCH, total - t * PATCH))
            chunk = pb.Chunk(patch_index=t, first_sample=t * PATCH, sample_rate=RATE)
            chunk.MergeFrom(pb.Chunk(**pack_audio(audio, config.output_format)))
            yield pb.GenerateResponse(chunk=chunk)
        yield pb.GenerateResponse(summary=self._summary(patches, total))

    def GenerateClip(self, request, context):
        self._count_call(context)
        config = request.config
        total = self._read(config, [request.video] if request.HasField("video") else [])
        audio = expected_clip(config.seed, total)
        summary = self._summary(math.ceil(total / PATCH), total)
        return pb.GenerateClipResponse(
            sample_rate=RATE, summary=summary, **pack_audio(audio, config.output_format)
        )

    def _summary(self, chunks: int, samples: int) -> pb.Summary:
        return pb.Summary(
            chunks=chunks,
            samples=samples,
            time_to_first_chunk_s=0.01,
            real_time_factor=0.5,
            model="fake",
            stream_id=f"stream-{self.calls}",
        )


@pytest.fixture(scope="module")
def gateway():
    fake = FakeGateway()
    built = build_server(
        load_settings(port=0, max_streams=4),
        [(pb_grpc.add_SwanSphereServicer_to_server, fake)],
        ["swansphere.v1.SwanSphere"],
    )
    built.server.start()
    try:
        yield fake, f"127.0.0.1:{built.port}"
    finally:
        built.server.stop(None).wait()


@pytest.fixture
def fake(gateway):
    fake, _ = gateway
    fake.calls, fake.fail_first = 0, 0
    return fake


@pytest.fixture
def target(gateway):
    return gateway[1]


def video(frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, 8, 16, 3), dtype=np.uint8)


def test_generate_streams_chunks_in_order_and_the_frames_arrive_intact(fake, target):
    frames = video(10)
    with SwanSphereClient(target, timeout_s=10) as client:
        generation = client.generate(frames, text="a bell", seed=5, frames_per_message=3)
        chunks = list(generation)
    total = 10 * RATE // 4
    assert [c.patch_index for c in chunks] == list(range(math.ceil(total / PATCH)))
    assert [c.first_sample for c in chunks] == [t * PATCH for t in range(len(chunks))]
    assert all(
        c.audio.shape[0] == 4 and c.audio.dtype == np.float32 and c.sample_rate == RATE for c in chunks
    )
    np.testing.assert_array_equal(np.concatenate([c.audio for c in chunks], -1), expected_clip(5, total))
    np.testing.assert_array_equal(np.stack(fake.frames), frames)
    assert generation.summary.chunks == len(chunks) and generation.summary.samples == total
    assert generation.summary.model == "fake" and generation.summary.stream_id == "stream-1"


def test_cli_realtime_sends_the_frames_at_their_own_rate(fake, target, clip_file, tmp_path):
    """A live source's pacing: one frame per message, frame i no sooner than i / 4 s after the first."""
    arguments = ["client", "--target", target, "--video", clip_file, "--out", str(tmp_path / "live.wav")]
    fake.arrivals.clear()
    assert main([*arguments, "--seconds", "1", "--realtime"]) == 0
    assert len(fake.frames) == len(fake.arrivals) == 4
    assert np.all(np.diff(fake.arrivals) >= 0.25 - 0.01)


def live(frames: np.ndarray, gap_s: float = 0.0, given: list[float] | None = None):
    """A camera: each item as it is captured, one frame (H, W, 3) at a time but for a pair (2, H, W, 3)."""
    for item in [frames[0], frames[1], frames[2], frames[3:5], *frames[5:]]:
        time.sleep(gap_s)
        if given is not None:
            given.append(time.monotonic())
        yield item


def test_a_live_source_sends_each_item_as_it_comes(fake, target):
    frames, given = video(7), []
    fake.arrivals.clear()
    with SwanSphereClient(target, timeout_s=10) as client:
        generation = client.generate(live(frames, 0.05, given), seed=3)
        chunks = list(generation)
        with pytest.raises(InputError, match="read once"):
            list(generation)
    np.testing.assert_array_equal(np.stack(fake.frames), frames)  # the fake checks the 4 fps stamps
    assert len(fake.arrivals) == len(given) == 6, "one message per item"
    assert all(arrived >= at for arrived, at in zip(fake.arrivals, given, strict=True))
    assert np.all(np.diff(fake.arrivals) >= 0.04), "not held back to be sent together"
    total = 7 * RATE // 4
    np.testing.assert_array_equal(np.concatenate([c.audio for c in chunks], -1), expected_clip(3, total))


def test_a_live_stream_retried_before_its_first_chunk_sends_what_it_had_read_again(fake, target):
    frames, given = video(7), []
    with SwanSphereClient(target, timeout_s=10, retries=2, backoff_s=0.01) as client:
        chunks = list(client.generate(live(frames, 0.02, given), text="drop-after-2-frames", seed=1))
    assert fake.calls == 2 and len(given) == 6, "the source was read once"
    np.testing.assert_array_equal(np.stack(fake.frames), frames)
    np.testing.assert_array_equal(
        np.concatenate([c.audio for c in chunks], -1), expected_clip(1, 7 * RATE // 4)
    )


def test_a_live_source_that_fails_or_gives_a_bad_frame_is_raised_at_once(fake, target):
    def failing():
        yield from video(2)
        raise OSError("camera unplugged")

    frames = video(3)
    wrong_size = [frames[0], np.zeros((16, 32, 3), np.uint8)]
    started = time.monotonic()
    with SwanSphereClient(target, timeout_s=10) as client:
        with pytest.raises(OSError, match="camera unplugged"):
            list(client.generate(failing()))
        with pytest.raises(InputError, match="frame 1 is 32x16, the stream's are 16x8"):
            list(client.generate(wrong_size))
        with pytest.raises(InputError, match="ended before its first frame"):
            list(client.generate(iter([])))
        with pytest.raises(InputError, match="not equirectangular"):
            list(client.generate([np.zeros((8, 8, 3), np.uint8)]))
        with pytest.raises(InputError, match="an iterable of frames, got int"):
            client.generate(7)
        with pytest.raises(InputError, match="realtime paces a clip"):
            client.generate(live(frames), realtime=True)
    assert time.monotonic() - started < 5, "cancelled, not left to the deadline"


def test_pcm16_output_decodes_to_the_quantised_float_audio(fake, target):
    with SwanSphereClient(target, timeout_s=10) as client:
        chunks = list(client.generate(text="rain", seed=2, duration_s=0.5, output_format="pcm16"))
    audio = np.concatenate([c.audio for c in chunks], -1)
    reference = expected_clip(2, RATE // 2)
    assert audio.dtype == np.float32 and audio.shape == reference.shape
    np.testing.assert_allclose(audio, np.round(reference * 32767) / 32767, atol=1e-7)
    assert np.abs(audio - reference).max() <= 0.5 / 32767 + 1e-7


def test_audio_codec_round_trips_and_rejects_wrong_sizes():
    audio = expected_audio(0, 0, 100)
    for output_format in (pb.OUTPUT_FORMAT_FLOAT32, pb.OUTPUT_FORMAT_UNSPECIFIED):
        np.testing.assert_array_equal(unpack_audio(pb.Chunk(**pack_audio(audio, output_format))), audio)
    fields = pack_audio(audio, pb.OUTPUT_FORMAT_FLOAT32)
    interleaved = np.frombuffer(fields["float32_le"], "<f4")
    np.testing.assert_array_equal(interleaved[:4], audio[:, 0])  # sample-major: W Y Z X of sample 0 first
    with pytest.raises(RuntimeError, match="bytes for 4 channels x 101 samples"):
        unpack_audio(pb.Chunk(**{**fields, "samples": 101}))


def test_generate_clip_returns_the_whole_clip(fake, target):
    with SwanSphereClient(target, timeout_s=10) as client:
        audio, summary = client.generate_clip(video(6), seed=9)
    np.testing.assert_array_equal(audio, expected_clip(9, 6 * RATE // 4))
    assert summary.samples == 6 * RATE // 4 and summary.chunks == math.ceil(summary.samples / PATCH)


def test_deadline_exceeded_is_raised_when_the_server_is_too_slow(fake, target):
    started = time.monotonic()
    with SwanSphereClient(target, timeout_s=0.3) as client, pytest.raises(grpc.RpcError) as err:
        list(client.generate(video(4), text="slow"))
    assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.5


def test_unary_call_is_retried_while_the_server_is_unavailable(fake, target):
    fake.fail_first = 2
    with SwanSphereClient(target, timeout_s=10, retries=3, backoff_s=0.01) as client:
        audio, _ = client.generate_clip(text="wind", duration_s=0.25, seed=1)
    assert fake.calls == 3 and audio.shape == (4, RATE // 4)


def test_retries_give_up_after_the_last_one(fake, target):
    fake.fail_first = 5
    client = SwanSphereClient(target, timeout_s=10, retries=1, backoff_s=0.01)
    with client, pytest.raises(grpc.RpcError) as err:
        client.generate_clip(text="wind", duration_s=0.25)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE and fake.calls == 2


def test_a_stream_is_retried_only_before_its_first_chunk(fake, target):
    fake.fail_first = 1
    with SwanSphereClient(target, timeout_s=10, retries=2, backoff_s=0.01) as client:
        assert len(list(client.generate(video(4)))) == math.ceil(RATE / PATCH)
        assert fake.calls == 2
        received = []
        with pytest.raises(grpc.RpcError) as err:
            for chunk in client.generate(video(4), text="drop-after-first"):
                received.append(chunk.patch_index)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert received == [0] and fake.calls == 3


def test_bad_input_is_refused_before_sending(target):
    with SwanSphereClient(target) as client:
        with pytest.raises(InputError, match="not equirectangular"):
            client.generate(np.zeros((2, 8, 8, 3), np.uint8))
        with pytest.raises(InputError, match="not both or neither"):
            client.generate(text="a dog")
        with pytest.raises(InputError, match="output_format"):
            client.generate_clip(text="a dog", duration_s=1.0, output_format="mp3")


def test_async_client_streams_and_fetches_clips(fake, target):
    async def run() -> tuple[list, object, np.ndarray]:
        async with AsyncSwanSphereClient(target, timeout_s=10, backoff_s=0.01) as client:
            generation = client.generate(video(8), seed=4, output_format="pcm16")
            chunks = [chunk async for chunk in generation]
            fake.fail_first = fake.calls + 1
            audio, _ = await client.generate_clip(text="a bell", duration_s=0.25, seed=4)
            return chunks, generation.summary, audio

    chunks, summary, audio = asyncio.run(run())
    assert [c.patch_index for c in chunks] == list(range(summary.chunks))
    total = 8 * RATE // 4
    np.testing.assert_allclose(
        np.concatenate([c.audio for c in chunks], -1), expected_clip(4, total), atol=1e-4
    )
    np.testing.assert_array_equal(audio, expected_clip(4, RATE // 4))
    assert fake.calls == 3, "the clip call was retried once"


def test_async_client_takes_live_sources_and_paces_clips(fake, target):
    async def camera(frames: np.ndarray):
        for frame in frames:
            await asyncio.sleep(0.02)
            yield frame

    async def failing():
        yield video(1)[0]
        raise OSError("camera unplugged")

    async def run() -> tuple[list, list, list[float]]:
        async with AsyncSwanSphereClient(target, timeout_s=10, retries=2, backoff_s=0.01) as client:
            fake.calls = 0
            live_chunks = [c async for c in client.generate(camera(video(6, 1)), text="drop-after-2-frames")]
            assert fake.calls == 2, "retried before the first chunk, with the frames read so far"
            fake.arrivals.clear()
            paced_chunks = [
                c async for c in client.generate(video(4, 2), seed=2, realtime=True, frames_per_message=1)
            ]
            arrivals = list(fake.arrivals)
            with pytest.raises(OSError, match="camera unplugged"):
                [c async for c in client.generate(failing())]
            return live_chunks, paced_chunks, arrivals

    live_chunks, paced_chunks, arrivals = asyncio.run(run())
    np.testing.assert_array_equal(
        np.concatenate([c.audio for c in live_chunks], -1), expected_clip(0, 6 * RATE // 4)
    )
    np.testing.assert_array_equal(np.concatenate([c.audio for c in paced_chunks], -1), expected_clip(2, RATE))
    assert len(arrivals) == 4 and np.all(np.diff(arrivals) >= 0.25 - 0.01)


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_video(path, video(8))
    return str(path)


def test_cli_writes_the_streamed_foa_wav(fake, target, clip_file, tmp_path, capsys):
    out = tmp_path / "out.wav"
    assert main(["client", "--target", target, "--video", clip_file, "--out", str(out), "--seed", "3"]) == 0
    audio, rate = sf.read(str(out), dtype="float32", always_2d=True)
    assert rate == RATE and sf.info(str(out)).subtype == "FLOAT"
    np.testing.assert_array_equal(audio.T, expected_clip(3, 2 * RATE))
    assert capsys.readouterr().out.startswith(
        f"wrote {out}: 2.00 s of 4-channel AmbiX at 44100 Hz (11 chunks"
    )


def test_cli_pcm16_cut_video_and_json_summary(fake, target, clip_file, tmp_path, capsys):
    out = tmp_path / "out16.wav"
    arguments = ["client", "--target", target, "--video", clip_file, "--out", str(out), "--pcm16"]
    assert main([*arguments, "--seconds", "1", "--json"]) == 0
    pcm, _ = sf.read(str(out), dtype="int16", always_2d=True)
    assert sf.info(str(out)).subtype == "PCM_16"
    np.testing.assert_array_equal(pcm.T, np.round(expected_clip(0, RATE) * 32767).astype(np.int16))
    summary = json.loads(capsys.readouterr().out)
    assert summary["seconds"] == 1.0 and summary["chunks"] == 6 and summary["target"] == target


def test_cli_streams_raw_frames_on_stdin_as_a_live_source(fake, target, tmp_path, capsys, monkeypatch):
    """`ffmpeg ... -f rawvideo -pix_fmt rgb24 - | swansphere client --video - --frame-size WxH ...`"""
    frames = video(6)
    arguments = ["client", "--target", target, "--video", "-", "--frame-size", "16x8"]

    def run(data: bytes, *extra: str) -> int:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        return main([*arguments, *extra])

    out = tmp_path / "live.wav"
    assert run(frames.tobytes(), "--out", str(out), "--seed", "4", "--seconds", "1.25") == 0
    np.testing.assert_array_equal(np.stack(fake.frames), frames[:5])
    audio, rate = sf.read(str(out), dtype="float32", always_2d=True)
    assert rate == RATE
    np.testing.assert_array_equal(audio.T, expected_clip(4, 5 * RATE // 4))
    capsys.readouterr()
    cut = tmp_path / "cut.wav"
    assert run(frames.tobytes()[:-5], "--out", str(cut)) == 2
    assert "the raw video ended inside a frame (379 of 384 bytes)" in capsys.readouterr().err
    assert not cut.exists()
    assert run(b"", "--out", str(cut), "--realtime") == 2
    assert "--realtime paces a video file" in capsys.readouterr().err
    assert main(["client", "--target", target, "--video", "-", "--out", str(cut)]) == 2
    assert "--video - needs --frame-size WxH" in capsys.readouterr().err
    deadlines = []
    monkeypatch.setattr(SwanSphereClient, "__init__", _recording(SwanSphereClient.__init__, deadlines))
    assert run(frames.tobytes()[:384], "--out", str(cut)) == 0
    assert run(frames.tobytes()[:384], "--out", str(cut), "--timeout", "30") == 0
    assert deadlines == [None, 30.0], "a live source has no deadline unless given one"
    closed = ["client", "--target", "127.0.0.1:9", "--video", "-", "--frame-size", "16x16", "--out", str(cut)]
    assert main(closed) == 2, "refused before connecting"
    assert "frames are not equirectangular: 16x16" in capsys.readouterr().err


def _recording(init, deadlines: list):
    def recording_init(self, target, timeout_s=60.0, **kwargs):
        deadlines.append(timeout_s)
        init(self, target, timeout_s=timeout_s, **kwargs)

    return recording_init


def test_cli_text_only_needs_seconds_and_gets_exit_code_2(capsys, tmp_path):
    assert (
        main(["client", "--target", "127.0.0.1:1", "--text", "a dog", "--out", str(tmp_path / "o.wav")]) == 2
    )
    assert capsys.readouterr().err == (
        "swansphere client: error: give --video, or --text with --seconds for text-only generation\n"
    )


def test_cli_invalid_argument_from_the_gateway_is_exit_code_2(fake, target, tmp_path, capsys):
    out = tmp_path / "refused.wav"
    code = main(["client", "--target", target, "--text", "refuse", "--seconds", "1", "--out", str(out)])
    assert code == 2 and not out.exists()
    assert capsys.readouterr().err == "swansphere client: error: INVALID_ARGUMENT: text 'refuse' is refused\n"


def test_cli_unreachable_gateway_is_exit_code_1(closed_port, tmp_path, capsys):
    arguments = ["client", "--target", f"127.0.0.1:{closed_port}", "--text", "x", "--seconds", "1"]
    assert main([*arguments, "--retries", "0", "--out", str(tmp_path / "o.wav")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("swansphere client: error: UNAVAILABLE: ") and error.count("\n") == 1


def test_mutual_tls_between_the_sdk_and_a_service(tmp_path):
    ca = write_certificate(tmp_path, "ca")
    write_certificate(tmp_path, "server", ca)
    write_certificate(tmp_path, "client", ca)
    settings = load_settings(
        port=0, tls_cert=tmp_path / "server.pem", tls_key=tmp_path / "server.key", tls_ca=tmp_path / "ca.pem"
    )
    built = build_server(settings, [(pb_grpc.add_SwanSphereServicer_to_server, FakeGateway())], [])
    built.server.start()
    target = f"127.0.0.1:{built.port}"
    try:
        certificates = {"tls_cert": tmp_path / "client.pem", "tls_key": tmp_path / "client.key"}
        with SwanSphereClient(target, timeout_s=10, tls_ca=tmp_path / "ca.pem", **certificates) as client:
            audio, _ = client.generate_clip(text="a bell", duration_s=0.25)
        assert audio.shape == (4, RATE // 4)
        anonymous = SwanSphereClient(target, timeout_s=5, retries=0, tls_ca=tmp_path / "ca.pem")
        with anonymous, pytest.raises(grpc.RpcError) as refused:
            anonymous.generate_clip(text="a bell", duration_s=0.25)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        built.server.stop(None).wait()

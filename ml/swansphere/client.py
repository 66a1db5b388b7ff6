"""Python SDK for a SwanSphere gateway (protos/swansphere/v1/swansphere.proto), sync and asyncio.

    with SwanSphereClient("127.0.0.1:50051", timeout_s=120) as client:
        generation = client.generate(frames, text="a dog barks on the left", seed=1)
        for chunk in generation:          # in patch order, as soon as each exists
            play(chunk.audio)             # (4, n) float32 AmbiX: W, Y, Z, X
        print(generation.summary)

`frames` is a clip (T, H, W, 3) uint8, or a live source: an iterable (for the asyncio client, also an
async iterable) giving frames as a camera captures them, each sent at once; the chunks come while
the camera still films.

Also the wire codec both sides use: `pack_frames`/`unpack_frames` for video, `pack_audio`/`unpack_audio`
for audio (interleaved little-endian float32 or PCM16).
"""

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np

from swansphere.conventions import VIDEO_FPS
from swansphere.equirect import check_equirect_size
from swansphere.errors import InputError
from swansphere.v1 import swansphere_pb2 as pb
from swansphere.v1 import swansphere_pb2_grpc as pb_grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Message size limit on both sides: a clip response of 64 MiB holds about 95 s of float32 FOA."""
FRAMES_PER_MESSAGE = 4
"""Video frames per request message by default: one second at 4 fps."""
PCM16_SCALE = 32767.0
"""pcm16 = round(clip(x, -1, 1) * 32767); x = pcm16 / 32767."""
OUTPUT_FORMATS = {"float32": pb.OUTPUT_FORMAT_FLOAT32, "pcm16": pb.OUTPUT_FORMAT_PCM16}
RETRY_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})
"""Statuses worth another try: the gateway was not reachable or is restarting."""


class ProtocolError(RuntimeError):
    """The server sent something the API does not allow (wrong sizes, chunks out of order)."""


@dataclass(frozen=True)
class Chunk:
    """One patch of FOA: (4, n) float32 AmbiX, n = 8192 except the last chunk."""

    patch_index: int
    first_sample: int
    audio: np.ndarray
    sample_rate: int


@dataclass(frozen=True)
class Summary:
    """What the server reports at the end of a stream (see `Summary` in the proto)."""

    chunks: int
    samples: int
    time_to_first_chunk_s: float
    real_time_factor: float
    model: str
    stream_id: str

    @classmethod
    def from_proto(cls, message: pb.Summary) -> "Summary":
        return cls(
            chunks=message.chunks,
            samples=message.samples,
            time_to_first_chunk_s=message.time_to_first_chunk_s,
            real_time_factor=message.real_time_factor,
            model=message.model,
            stream_id=message.stream_id,
        )


def pack_audio(audio: np.ndarray, output_format: int) -> dict[str, Any]:
    """(channels, n) float audio -> Chunk / GenerateClipResponse fields: channels, samples and the
    `audio` oneof, interleaved little-endian (OUTPUT_FORMAT_UNSPECIFIED means float32)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2:
        raise InputError(f"audio must be (channels, samples), got shape {audio.shape}")
    interleaved = audio.T
    if output_format == pb.OUTPUT_FORMAT_PCM16:
        pcm = np.round(np.clip(interleaved, -1.0, 1.0) * PCM16_SCALE).astype("<i2")
        payload = {"pcm16_le": pcm.tobytes()}
    else:
        payload = {"float32_le": interleaved.astype("<f4").tobytes()}
    return {"channels": audio.shape[0], "samples": audio.shape[1], **payload}


def unpack_audio(message: pb.Chunk | pb.GenerateClipResponse) -> np.ndarray:
    """The message's audio as (channels, samples) float32; ProtocolError if the sizes disagree."""
    kind = message.WhichOneof("audio")
    if kind is None:
        raise ProtocolError("the server sent no audio")
    dtype = np.dtype("<f4" if kind == "float32_le" else "<i2")
    data = getattr(message, kind)
    if len(data) != message.channels * message.samples * dtype.itemsize:
        raise ProtocolError(
            f"{kind}: {len(data)} bytes for {message.channels} channels x {message.samples} samples"
        )
    values = np.frombuffer(data, dtype).reshape(message.samples, message.channels).T
    audio = values.astype(np.float32) if kind == "float32_le" else values / np.float32(PCM16_SCALE)
    return np.ascontiguousarray(audio, dtype=np.float32)


def check_frames(frames: np.ndarray) -> np.ndarray:
    """Equirectangular RGB frames (T, H, W, 3) uint8 with W = 2 H and T >= 1, else InputError."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"frames must be (T, H, W, 3) uint8 RGB, got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        raise InputError("frames: the video holds no frames")
    check_equirect_size(frames.shape[2], frames.shape[1])
    return frames


def pack_frames(frames: np.ndarray, first_index: int) -> pb.VideoFrames:
    """Frames first_index, first_index + 1, ... of a stream, stamped at VIDEO_FPS (i / 4 s)."""
    frames = check_frames(frames)
    return pb.VideoFrames(
        width=frames.shape[2],
        height=frames.shape[1],
        pixel_format=pb.PIXEL_FORMAT_RGB24,
        frames=[
            pb.Frame(timestamp_s=(first_index + i) / VIDEO_FPS, data=np.ascontiguousarray(frame).tobytes())
            for i, frame in enumerate(frames)
        ],
    )


def unpack_frames(video: pb.VideoFrames) -> tuple[np.ndarray, np.ndarray]:
    """(frames (T, H, W, 3) uint8, timestamps (T,) s) of a VideoFrames message; InputError if malformed."""
    if video.pixel_format not in (pb.PIXEL_FORMAT_UNSPECIFIED, pb.PIXEL_FORMAT_RGB24):
        raise InputError(f"pixel_format {video.pixel_format}: only RGB24 is supported")
    height, width = video.height, video.width
    check_equirect_size(width, height)
    size = height * width * 3
    for frame in video.frames:
        if len(frame.data) != size:
            raise InputError(f"frame at {frame.timestamp_s} s holds {len(frame.data)} bytes, not {size}")
    data = b"".join(frame.data for frame in video.frames)
    frames = np.frombuffer(data, np.uint8).reshape(len(video.frames), height, width, 3)
    return frames, np.array([frame.timestamp_s for frame in video.frames], dtype=np.float64)


def generate_config(
    video: bool,
    text: str,
    seed: int,
    steps: int,
    guidance: tuple[float, float] | None,
    output_format: str,
    duration_s: float | None,
) -> pb.GenerateConfig:
    """The stream's config; InputError for combinations the API refuses anyway."""
    if video == (duration_s is not None):
        raise InputError("give frames (video stream) or duration_s (text-only stream), not both or neither")
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
        raise InputError(f"duration_s must be > 0, got {duration_s}")
    if not 0 <= seed < 2**64:
        raise InputError(f"seed must be in 0 .. 2**64 - 1, got {seed}")
    if steps < 0:
        raise InputError(f"steps must be >= 0 (0 = server default), got {steps}")
    if output_format not in OUTPUT_FORMATS:
        raise InputError(f"output_format must be one of {sorted(OUTPUT_FORMATS)}, got {output_format!r}")
    config = pb.GenerateConfig(
        text=text,
        seed=seed,
        steps=steps,
        output_format=OUTPUT_FORMATS[output_format],
        duration_s=duration_s or 0.0,
        frame_rate=VIDEO_FPS,
    )
    if guidance is not None:
        config.h_guidance, config.context_guidance = guidance
    return config


def generate_requests(
    config: pb.GenerateConfig, frames: np.ndarray | None, frames_per_message: int
) -> Iterator[pb.GenerateRequest]:
    """config, then the frames in messages of `frames_per_message`, then end; built lazily, so a long
    video is not copied into messages all at once."""
    yield pb.GenerateRequest(config=config)
    if frames is not None:
        for first in range(0, len(frames), frames_per_message):
            yield pb.GenerateRequest(video=pack_frames(frames[first : first + frames_per_message], first))
    yield pb.GenerateRequest(end=pb.End())


def paced(frames: np.ndarray, frames_per_message: int) -> Iterator[np.ndarray]:
    """A clip as a live source: its frames in groups of `frames_per_message`, each group held back
    until its first frame's time (4 fps from the first), as a camera delivers them."""
    start = time.monotonic()
    for first in range(0, len(frames), frames_per_message):
        time.sleep(max(0.0, start + first / VIDEO_FPS - time.monotonic()))
        yield frames[first : first + frames_per_message]


async def paced_async(frames: np.ndarray, frames_per_message: int) -> AsyncIterator[np.ndarray]:
    """`paced` for asyncio: waits without blocking the event loop."""
    start = time.monotonic()
    for first in range(0, len(frames), frames_per_message):
        await asyncio.sleep(max(0.0, start + first / VIDEO_FPS - time.monotonic()))
        yield frames[first : first + frames_per_message]


class _Requests:
    """A stream's request messages for each of its tries: config, video, end. A clip's (or a text-only
    stream's) are built again for every try, lazily."""

    error: BaseException | None = None
    """Why the requests stopped before `end` (a live source's failure or bad frame): the caller's."""

    def __init__(self, config: pb.GenerateConfig, frames: np.ndarray | None, frames_per_message: int):
        self._config, self._frames, self._frames_per_message = config, frames, frames_per_message

    def __call__(self) -> Iterator[pb.GenerateRequest] | AsyncIterator[pb.GenerateRequest]:
        return generate_requests(self._config, self._frames, self._frames_per_message)

    def started(self, call: Any) -> None:
        """Each try's call, as soon as it is made."""

    def first_chunk(self) -> None:
        """The stream's first chunk has come: no try follows."""

    def close(self) -> None:
        """The stream is over, whichever way."""


@dataclass(frozen=True)
class _Failed:
    """What a live source raised, carried as an item from the thread or task that read it."""

    error: Exception


_END = object()
"""The live source has no more frames."""


class _LiveRequests(_Requests):
    """A live source's request messages, for every try of one stream. Each item of the source (one
    frame (H, W, 3) or several (n, H, W, 3)) is one message, sent as soon as the source gives it.

    A source can be read only once, so its messages are kept until the stream's first chunk comes: a
    try that fails before it (the only kind that is retried) sends them again, then reads on. After the
    first chunk each message is dropped once sent. A frame the API refuses, or an exception of the
    source, ends the requests without `end` and cancels the call; the caller's iteration raises it."""

    def __init__(self, config: pb.GenerateConfig, source: Iterable[np.ndarray]):
        if not isinstance(source, Iterable):
            raise InputError(f"frames must be a clip or an iterable of frames, got {type(source).__name__}")
        self._source = iter(source)
        self._kept: list[pb.GenerateRequest | None] = [pb.GenerateRequest(config=config)]
        self._keep, self._ended, self._frames_sent = True, False, 0
        self._size: tuple[int, ...] | None = None
        self._try, self._call, self._closed = 0, None, False
        self._read_lock, self._call_lock = threading.Lock(), threading.Lock()

    def __call__(self) -> Iterator[pb.GenerateRequest]:
        self._next_try()
        return self._requests(self._try)

    def _next_try(self) -> None:
        if self._closed:
            raise InputError("a live source is read once: its generation cannot run again")
        self._try += 1

    def _requests(self, attempt: int) -> Iterator[pb.GenerateRequest]:
        index = 0
        while True:
            with self._read_lock:  # a try's request thread may outlive the try by one source read
                while index == len(self._kept) and not self._ended and attempt == self._try:
                    self._add(_next_item(self._source))
                message = self._message(attempt, index)
            if message is None:
                return
            index += 1
            yield message

    def _message(self, attempt: int, index: int) -> pb.GenerateRequest | None:
        """The try's message at `index`, None when the try is over (a newer one runs, or all is sent)."""
        if attempt != self._try or index == len(self._kept):
            return None
        message = self._kept[index]
        if not self._keep:
            self._kept[index] = None
        return message

    def _add(self, item: object) -> None:
        """Files the message of one source item, or ends the requests (`end`, or an error)."""
        if item is _END:
            if self._frames_sent:
                self._kept.append(pb.GenerateRequest(end=pb.End()))
                self._ended = True
                return
            item = _Failed(InputError("the live source ended before its first frame"))
        if not isinstance(item, _Failed):
            try:
                frames = self._checked(item)
            except InputError as err:
                item = _Failed(err)
        if isinstance(item, _Failed):
            self._ended = True
            with self._call_lock:
                self.error, call = item.error, self._call
            if call is not None:
                call.cancel()
            return
        self._kept.append(pb.GenerateRequest(video=pack_frames(frames, self._frames_sent)))
        self._frames_sent += len(frames)

    def _checked(self, item: object) -> np.ndarray:
        frames = np.asarray(item)
        frames = check_frames(frames[None] if frames.ndim == 3 else frames)
        if self._size is None:
            self._size = frames.shape[1:]
        elif frames.shape[1:] != self._size:
            raise InputError(
                f"live source: frame {self._frames_sent} is {frames.shape[2]}x{frames.shape[1]}, the "
                f"stream's are {self._size[1]}x{self._size[0]}"
            )
        return frames

    def started(self, call: Any) -> None:
        with self._call_lock:
            self._call, failed = call, self.error is not None
        if failed:
            call.cancel()

    def first_chunk(self) -> None:
        self._keep = False

    def close(self) -> None:
        self._closed = True


def _next_item(source: Iterator[np.ndarray]) -> object:
    try:
        return next(source, _END)
    except Exception as err:  # the source's own failure: the caller's to see
        return _Failed(err)


class _AsyncLiveRequests(_LiveRequests):
    """`_LiveRequests` for asyncio. One task reads the source into a short queue, so that a try that is
    cancelled while it waits for a frame does not cancel the source's own generator. A plain iterable
    is read in the event loop and must not block; a camera that does should be an async iterable."""

    def __init__(self, config: pb.GenerateConfig, source: AsyncIterable[np.ndarray] | Iterable[np.ndarray]):
        if not isinstance(source, AsyncIterable | Iterable):
            raise InputError(f"frames must be a clip or an iterable of frames, got {type(source).__name__}")
        super().__init__(config, ())
        self._async_source = source
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=4)
        self._reader: asyncio.Task[None] | None = None
        self._async_lock = asyncio.Lock()

    def __call__(self) -> AsyncIterator[pb.GenerateRequest]:
        self._next_try()
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._read())
        return self._async_requests(self._try)

    async def _read(self) -> None:
        item: object = _END
        try:
            if isinstance(self._async_source, AsyncIterable):
                async for frames in self._async_source:
                    await self._queue.put(frames)
            else:
                for frames in self._async_source:
                    await self._queue.put(frames)
        except Exception as err:  # the source's own failure: the caller's to see
            item = _Failed(err)
        await self._queue.put(item)

    async def _async_requests(self, attempt: int) -> AsyncIterator[pb.GenerateRequest]:
        index = 0
        while True:
            async with self._async_lock:
                while index == len(self._kept) and not self._ended and attempt == self._try:
                    self._add(await self._queue.get())
                message = self._message(attempt, index)
            if message is None:
                return
            index += 1
            yield message

    def close(self) -> None:
        super().close()
        if self._reader is not None:
            self._reader.cancel()


def _channel_options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]


def _credentials(
    tls: bool, tls_ca: Path | None, tls_cert: Path | None, tls_key: Path | None
) -> grpc.ChannelCredentials | None:
    """TLS when asked for or when any certificate is given (system roots unless tls_ca); mutual TLS
    with tls_cert and tls_key."""
    if (tls_cert is None) != (tls_key is None):
        raise InputError("tls_cert and tls_key go together: give both or neither")
    if not (tls or tls_ca or tls_cert):
        return None
    pem = {}
    for name, path, marker, what in (
        ("tls_ca", tls_ca, b"-----BEGIN CERTIFICATE-----", "certificate"),
        ("tls_cert", tls_cert, b"-----BEGIN CERTIFICATE-----", "certificate"),
        ("tls_key", tls_key, b"PRIVATE KEY-----", "private key"),
    ):
        if path is None:
            continue
        if not Path(path).is_file():
            raise InputError(f"{path}: no such certificate or key file")
        pem[name] = Path(path).read_bytes()
        # gRPC reads the files only when it connects, and answers one that is not PEM with C-core log
        # lines and "connection refused".
        if marker not in pem[name]:
            raise InputError(f"{name}: {path} is not a PEM {what} (no {marker.decode()!r} line)")
    return grpc.ssl_channel_credentials(
        root_certificates=pem.get("tls_ca"),
        private_key=pem.get("tls_key"),
        certificate_chain=pem.get("tls_cert"),
    )


class _Attempts:
    """One deadline over all tries of a call, and exponential backoff between tries."""

    def __init__(self, timeout_s: float | None, retries: int, backoff_s: float):
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.retries, self.backoff_s, self.tried = retries, backoff_s, 0

    def timeout(self) -> float | None:
        """Seconds left for the next try."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def next_wait(self, error: grpc.RpcError) -> float | None:
        """Seconds to wait before trying again, or None to give up and raise `error`."""
        self.tried += 1
        wait = self.backoff_s * 2 ** (self.tried - 1)
        left = self.timeout()
        if (
            error.code() not in RETRY_CODES
            or self.tried > self.retries
            or (left is not None and left <= wait)
        ):
            return None
        return wait


def _check_order(chunk: pb.Chunk, expected: int) -> None:
    if chunk.patch_index != expected:
        raise ProtocolError(f"chunk {chunk.patch_index} arrived where chunk {expected} was due")


def _chunk(message: pb.Chunk) -> Chunk:
    return Chunk(message.patch_index, message.first_sample, unpack_audio(message), message.sample_rate)


@dataclass(frozen=True)
class _Settings:
    timeout_s: float | None
    retries: int
    backoff_s: float
    metadata: tuple[tuple[str, str], ...] = ()
    """Sent with every call: the gateway's bearer token, when one is given."""


class _Generation:
    """What the blocking and the asyncio generation share: the settings, and what a response means."""

    def __init__(self, stub: pb_grpc.SwanSphereStub, requests: _Requests, settings: _Settings):
        self._stub, self._requests, self._settings = stub, requests, settings
        self.summary: Summary | None = None

    def _take(self, response: pb.GenerateResponse, received: int) -> Chunk | None:
        """The response's chunk, checked to be the next; None for anything else (the summary is kept)."""
        kind = response.WhichOneof("kind")
        if kind == "summary":
            self.summary = Summary.from_proto(response.summary)
        if kind != "chunk":
            return None
        _check_order(response.chunk, received)
        if not received:
            self._requests.first_chunk()
        return _chunk(response.chunk)

    def _check_summary(self) -> None:
        if self.summary is None:
            raise ProtocolError("the stream ended without a summary")


class Generation(_Generation):
    """A streaming generation: iterate for chunks in patch order; `summary` is set once all have come.

    UNAVAILABLE before the first chunk restarts the stream (up to `retries` times); after a chunk, an
    error is raised as it is, since the audio so far cannot be taken back. Iterating again runs the
    generation again, for a clip or a text: a live source's frames are gone once sent."""

    def __iter__(self) -> Iterator[Chunk]:
        attempts = _Attempts(self._settings.timeout_s, self._settings.retries, self._settings.backoff_s)
        try:
            while True:
                call = self._stub.Generate(
                    self._requests(), timeout=attempts.timeout(), metadata=self._settings.metadata
                )
                self._requests.started(call)
                received = 0
                try:
                    for response in call:
                        if (chunk := self._take(response, received)) is not None:
                            received += 1
                            yield chunk
                    self._check_summary()
                    return
                except grpc.RpcError as err:
                    if self._requests.error is None:
                        wait = None if received else attempts.next_wait(err)
                        if wait is None:
                            raise
                        time.sleep(wait)
                        continue
                finally:
                    call.cancel()
                raise self._requests.error  # the live source's, in place of the call it cancelled
        finally:
            self._requests.close()


class AsyncGeneration(_Generation):
    """`Generation` for asyncio: `async for chunk in generation`, then `generation.summary`."""

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        attempts = _Attempts(self._settings.timeout_s, self._settings.retries, self._settings.backoff_s)
        try:
            while True:
                call = self._stub.Generate(
                    self._requests(), timeout=attempts.timeout(), metadata=self._settings.metadata
                )
                self._requests.started(call)
                received = 0
                try:
                    async for response in call:
                        if (chunk := self._take(response, received)) is not None:
                            received += 1
                            yield chunk
                    self._check_summary()
                    return
                except asyncio.CancelledError:  # what grpc.aio raises for a call cancelled here
                    task = asyncio.current_task()
                    if self._requests.error is None or (task is not None and task.cancelling()):
                        raise
                except grpc.RpcError as err:
                    if self._requests.error is None:
                        wait = None if received else attempts.next_wait(err)
                        if wait is None:
                            raise
                        await asyncio.sleep(wait)
                        continue
                finally:
                    call.cancel()
                raise self._requests.error  # the live source's, in place of the call it cancelled
        finally:
            self._requests.close()


class _ClientBase:
    grpc_module: Any = grpc
    """grpc (blocking) or grpc.aio: where the channel comes from; the rest is shared."""

    def __init__(
        self,
        target: str,
        timeout_s: float | None = 60.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        tls: bool = False,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        token: str | None = None,
    ):
        """`token`: the gateway's bearer token, if it wants one (its SWANSPHERE_AUTH_TOKENS_FILE)."""
        if timeout_s is not None and timeout_s <= 0:
            raise InputError(f"timeout_s must be > 0, got {timeout_s}")
        if retries < 0 or backoff_s < 0:
            raise InputError(f"retries and backoff_s must be >= 0, got {retries} and {backoff_s}")
        self.target = target
        if token is not None and (not token or any(c.isspace() for c in token)):
            raise InputError("token must be a non-empty string without whitespace")
        metadata = () if token is None else (("authorization", f"Bearer {token}"),)
        self.settings = _Settings(timeout_s, retries, backoff_s, metadata)
        self.credentials = _credentials(tls, tls_ca, tls_cert, tls_key)
        options = _channel_options()
        self.channel = (
            self.grpc_module.secure_channel(target, self.credentials, options=options)
            if self.credentials is not None
            else self.grpc_module.insecure_channel(target, options=options)
        )
        self.stub = pb_grpc.SwanSphereStub(self.channel)

    def _requests(
        self,
        frames: np.ndarray | Iterable[np.ndarray] | AsyncIterable[np.ndarray] | None,
        text: str,
        seed: int,
        steps: int,
        guidance: tuple[float, float] | None,
        output_format: str,
        duration_s: float | None,
        frames_per_message: int,
        realtime: bool,
    ) -> _Requests:
        """The stream's requests for each try; InputError for what the API would refuse anyway."""
        if frames_per_message < 1:
            raise InputError(f"frames_per_message must be >= 1, got {frames_per_message}")
        config = generate_config(frames is not None, text, seed, steps, guidance, output_format, duration_s)
        if frames is None:
            return _Requests(config, None, frames_per_message)
        if isinstance(frames, np.ndarray):
            frames = check_frames(frames)
            if realtime:
                return self.live_requests(config, self.paced(frames, frames_per_message))
            return _Requests(config, frames, frames_per_message)
        if realtime:
            raise InputError("realtime paces a clip's frames; a live source sends them as it gives them")
        return self.live_requests(config, frames)

    @staticmethod
    def _clip_request(
        frames: np.ndarray | None,
        text: str,
        seed: int,
        steps: int,
        guidance: tuple[float, float] | None,
        output_format: str,
        duration_s: float | None,
    ) -> pb.GenerateClipRequest:
        if frames is not None:
            frames = check_frames(frames)
        config = generate_config(frames is not None, text, seed, steps, guidance, output_format, duration_s)
        video = None if frames is None else pack_frames(frames, 0)
        return pb.GenerateClipRequest(config=config, video=video)


class SwanSphereClient(_ClientBase):
    """Blocking client. `timeout_s` bounds each call including its retries (None = no deadline);
    UNAVAILABLE is retried `retries` times with exponential backoff from `backoff_s`."""

    grpc_module = grpc
    live_requests = _LiveRequests
    paced = staticmethod(paced)

    def generate(
        self,
        frames: np.ndarray | Iterable[np.ndarray] | None = None,
        *,
        text: str = "",
        seed: int = 0,
        steps: int = 20,
        guidance: tuple[float, float] | None = None,
        output_format: str = "float32",
        duration_s: float | None = None,
        frames_per_message: int = FRAMES_PER_MESSAGE,
        realtime: bool = False,
    ) -> Generation:
        """Stream a video, or a text-only stream of `duration_s`. `frames` is a clip (T, H, W, 3) uint8
        equirect at 4 fps, sent `frames_per_message` at a time, or a live source: any iterable giving
        one frame (H, W, 3) or several (n, H, W, 3) at a time, each sent as soon as it is given (a camera;
        the stream ends when the source does, so give the client a `timeout_s` that long, or None).
        guidance = (h_weight, context_weight), None for the server's defaults. `realtime` sends a
        clip's frames at their own rate, as a camera would."""
        requests = self._requests(
            frames, text, seed, steps, guidance, output_format, duration_s, frames_per_message, realtime
        )
        return Generation(self.stub, requests, self.settings)

    def generate_clip(
        self,
        frames: np.ndarray | None = None,
        *,
        text: str = "",
        seed: int = 0,
        steps: int = 20,
        guidance: tuple[float, float] | None = None,
        output_format: str = "float32",
        duration_s: float | None = None,
    ) -> tuple[np.ndarray, Summary]:
        """The whole clip in one call: (4, n) float32 AmbiX and the summary."""
        request = self._clip_request(frames, text, seed, steps, guidance, output_format, duration_s)
        attempts = _Attempts(self.settings.timeout_s, self.settings.retries, self.settings.backoff_s)
        while True:
            try:
                response = self.stub.GenerateClip(
                    request, timeout=attempts.timeout(), metadata=self.settings.metadata
                )
                return unpack_audio(response), Summary.from_proto(response.summary)
            except grpc.RpcError as err:
                wait = attempts.next_wait(err)
                if wait is None:
                    raise
                time.sleep(wait)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "SwanSphereClient":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class AsyncSwanSphereClient(_ClientBase):
    """`SwanSphereClient` for asyncio (grpc.aio); create it inside the running event loop."""

    grpc_module = grpc.aio
    live_requests = _AsyncLiveRequests
    paced = staticmethod(paced_async)

    def generate(
        self,
        frames: np.ndarray | AsyncIterable[np.ndarray] | Iterable[np.ndarray] | None = None,
        *,
        text: str = "",
        seed: int = 0,
        steps: int = 20,
        guidance: tuple[float, float] | None = None,
        output_format: str = "float32",
        duration_s: float | None = None,
        frames_per_message: int = FRAMES_PER_MESSAGE,
        realtime: bool = False,
    ) -> AsyncGeneration:
        """As `SwanSphereClient.generate`; iterate with `async for`. A live source is best an async
        iterable: a plain one is read in the event loop, so it must not block."""
        requests = self._requests(
            frames, text, seed, steps, guidance, output_format, duration_s, frames_per_message, realtime
        )
        return AsyncGeneration(self.stub, requests, self.settings)

    async def generate_clip(
        self,
        frames: np.ndarray | None = None,
        *,
        text: str = "",
        seed: int = 0,
        steps: int = 20,
        guidance: tuple[float, float] | None = None,
        output_format: str = "float32",
        duration_s: float | None = None,
    ) -> tuple[np.ndarray, Summary]:
        """As `SwanSphereClient.generate_clip`."""
        request = self._clip_request(frames, text, seed, steps, guidance, output_format, duration_s)
        attempts = _Attempts(self.settings.timeout_s, self.settings.retries, self.settings.backoff_s)
        while True:
            try:
                response = await self.stub.GenerateClip(
                    request, timeout=attempts.timeout(), metadata=self.settings.metadata
                )
                return unpack_audio(response), Summary.from_proto(response.summary)
            except grpc.RpcError as err:
                wait = attempts.next_wait(err)
                if wait is None:
                    raise
                await asyncio.sleep(wait)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> "AsyncSwanSphereClient":
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

"""The public `SwanSphere` gRPC service: sessions, admission, ordering, deadlines (DESIGN §2).

The gateway computes nothing itself: a stream's frames go to the video encoder's topic, its chunks
come back on the stream's own topic (`StreamSession`), and each is sent as soon as it is next in
order. Frames are read on a second thread so a client that streams live video gets chunks while it
is still sending.
"""

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import grpc
import numpy as np

from services.common.metrics import ACTIVE_STREAMS, STAGE_LATENCY
from services.gateway import convert
from swansphere.client import pack_audio, unpack_audio
from swansphere.conventions import SAMPLE_RATE
from swansphere.errors import InputError
from swansphere.serving.redis_streams import TransportError
from swansphere.serving.session import MAX_FRAMES_AHEAD, StreamFailedError, StreamSession
from swansphere.serving.stages import StreamSpec
from swansphere.serving.state import StateStore
from swansphere.serving.transport import Transport
from swansphere.v1 import swansphere_pb2 as pb
from swansphere.v1 import swansphere_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

POLL_MS = 50
"""How long one read of the chunk topic blocks; also how often cancellation is noticed."""


class GatewayServicer(pb_grpc.SwanSphereServicer):
    def __init__(
        self,
        transport: Transport,
        store: StateStore,
        patch_samples: int,
        model: str,
        max_streams: int,
        stall_timeout_s: float,
        ready: Callable[[], str | None],
        on_chunk: Callable[[str, int, int, int], None] | None = None,
        on_request: Callable[[str, dict], None] | None = None,
        overloaded: Callable[[], str | None] = lambda: None,
    ):
        """`ready()` returns None when the pipeline can take a stream, else why not (UNAVAILABLE);
        `overloaded()` returns None unless the stages' backlog is full (RESOURCE_EXHAUSTED);
        `on_request(stream_id, spec)` and `on_chunk(stream_id, patch_index, first_sample, samples)`
        feed the event log."""
        self.transport = transport
        self.store = store
        self.patch_samples = patch_samples
        self.model = model
        self.stall_timeout_s = stall_timeout_s
        self.ready = ready
        self.on_chunk = on_chunk
        self.on_request = on_request
        self.overloaded = overloaded
        self.consumer = f"gateway-{uuid.uuid4().hex[:8]}"
        self._slots = threading.BoundedSemaphore(max_streams)
        self.max_streams = max_streams
        self.active_streams = 0
        """Streams being served now (Admin.Status)."""

    def Generate(
        self, request_iterator: Iterator[pb.GenerateRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.GenerateResponse]:
        try:
            first = next(request_iterator)
        except StopIteration:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty stream: send a config message first")
        except grpc.RpcError:
            context.abort(grpc.StatusCode.CANCELLED, "the client went away before its config")
        if first.WhichOneof("kind") != "config":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a config")
        yield from self._serve(first.config, request_iterator, context)

    def GenerateClip(
        self, request: pb.GenerateClipRequest, context: grpc.ServicerContext
    ) -> pb.GenerateClipResponse:
        try:
            convert.check_clip_size(request)
        except InputError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        following = [] if not request.HasField("video") else [pb.GenerateRequest(video=request.video)]
        responses = list(self._serve(request.config, iter(following), context))
        if not context.is_active():  # cancelled or past its deadline: nobody to answer
            return pb.GenerateClipResponse()
        audio = [unpack_audio(r.chunk) for r in responses if r.HasField("chunk")]
        return pb.GenerateClipResponse(
            sample_rate=SAMPLE_RATE,
            summary=responses[-1].summary,
            **pack_audio(np.concatenate(audio, axis=-1), request.config.output_format),
        )

    def _serve(
        self, config: pb.GenerateConfig, requests: Iterator[pb.GenerateRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.GenerateResponse]:
        stream_id = uuid.uuid4().hex
        try:
            spec, output_format = convert.stream_spec(config, stream_id)
        except InputError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        if (why := self.ready()) is not None:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"not ready: {why}")
        if (why := self.overloaded()) is not None:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"overloaded: {why}; retry later")
        if not self._slots.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"all {self.max_streams} stream slots are busy")
        ACTIVE_STREAMS.inc()
        self.active_streams += 1
        if self.on_request is not None:
            self.on_request(stream_id, json.loads(spec.to_json()))
        session = StreamSession(self.transport, self.store, spec, self.patch_samples)
        reader = _FrameReader(session, spec, requests)
        try:
            yield from self._stream(session, spec, output_format, reader, context)
        finally:
            reader.stopped.set()
            try:
                session.close()
            except TransportError as err:  # Redis down: the stream's keys expire on their own
                log.warning("could not forget the stream: %s", err, extra={"stream_id": stream_id})
            ACTIVE_STREAMS.dec()
            self.active_streams -= 1
            self._slots.release()

    def _stream(
        self,
        session: StreamSession,
        spec: StreamSpec,
        output_format: int,
        reader: "_FrameReader",
        context: grpc.ServicerContext,
    ) -> Iterator[pb.GenerateResponse]:
        log.info(
            "stream started", extra={"stream_id": spec.stream_id, "text_only": spec.duration_s is not None}
        )
        start = last_activity = time.monotonic()
        try:
            session.start()
        except TransportError as err:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{err}; retry")
        reader.start()
        first_chunk_s, chunks, samples = None, 0, 0
        while not session.done:
            if reader.error is not None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(reader.error))
            if reader.unavailable is not None:
                context.abort(grpc.StatusCode.UNAVAILABLE, f"{reader.unavailable}; retry")
            if not context.is_active():
                log.info("stream cancelled by the client", extra={"stream_id": spec.stream_id})
                return
            try:
                ready = session.take_chunks(self.consumer, block_ms=POLL_MS)
            except StreamFailedError as err:
                context.abort(getattr(grpc.StatusCode, err.code, grpc.StatusCode.INTERNAL), str(err))
            except TransportError as err:
                # Redis restarting: wait for it; the stall timeout below bounds the wait.
                log.warning("chunks unreachable: %s", err, extra={"stream_id": spec.stream_id})
                time.sleep(POLL_MS / 1000)
                ready = []
            now = time.monotonic()
            if ready or reader.last_frame_at > last_activity:
                last_activity = max(now if ready else 0.0, reader.last_frame_at)
            elif now - last_activity > self.stall_timeout_s:
                idle = not reader.waiting_for_room and now - reader.last_frame_at > self.stall_timeout_s
                if not session.ended and idle:
                    context.abort(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"no input for {self.stall_timeout_s:g} s: a video stream needs its next frames or "
                        "its end",
                    )
                context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"pipeline stalled: no chunk for {self.stall_timeout_s:g} s "
                    f"at patch {session.next_patch}; retry",
                )
            for chunk in ready:
                if first_chunk_s is None:
                    first_chunk_s = now - start
                    STAGE_LATENCY.labels("gateway_first_chunk").observe(first_chunk_s)
                chunks += 1
                samples += chunk.audio.shape[1]
                if self.on_chunk is not None:
                    self.on_chunk(spec.stream_id, chunk.patch_index, chunk.first_sample, chunk.audio.shape[1])
                yield convert.chunk_response(chunk, output_format)
        elapsed = time.monotonic() - start
        log.info("stream finished", extra={"stream_id": spec.stream_id, "chunks": chunks, "seconds": elapsed})
        yield pb.GenerateResponse(
            summary=pb.Summary(
                chunks=chunks,
                samples=samples,
                time_to_first_chunk_s=first_chunk_s or 0.0,
                real_time_factor=elapsed / max(samples / SAMPLE_RATE, 1e-9),
                model=self.model,
                stream_id=spec.stream_id,
            )
        )


PUBLISH_RETRY_S = 10.0
"""How long the gateway retries handing a client's message on while the message server restarts."""
ROOM_POLL_S = 0.02
"""How often a stream whose frames are `MAX_FRAMES_AHEAD` ahead of the video encoder looks again."""


class _FrameReader(threading.Thread):
    """Reads the client's messages after the config: frames into the pipeline, then the end. It reads
    the next message only once the stream has room (`MAX_FRAMES_AHEAD`): gRPC's flow control then
    holds the client back, as a slow network would."""

    def __init__(self, session: StreamSession, spec: StreamSpec, requests: Iterator[pb.GenerateRequest]):
        super().__init__(daemon=True, name=f"frames-{spec.stream_id[:8]}")
        self.session = session
        self.spec = spec
        self.requests = requests
        self.error: InputError | None = None
        self.unavailable: TransportError | None = None
        """Set when the message server stayed unreachable for PUBLISH_RETRY_S."""
        self.last_frame_at = time.monotonic()
        self.stopped = threading.Event()
        """Set when the stream is over: a reader waiting for room stops."""
        self.waiting_for_room = False
        """Holding a frames message back: the client has input, the pipeline has not taken it."""

    def run(self) -> None:
        try:
            for request in self.requests:
                kind = request.WhichOneof("kind")
                if kind == "end":
                    break
                if kind is None:
                    raise InputError("a message with neither video nor end after the config")
                if kind != "video":
                    raise InputError(f"unexpected {kind} message after the config")
                if self.spec.duration_s is not None:
                    raise InputError("a text-only stream (config.duration_s > 0) takes no video")
                frames: np.ndarray = convert.frames(request.video, self.session.frames_sent)
                self.waiting_for_room = True
                while self.session.frames_ahead() >= MAX_FRAMES_AHEAD:
                    if self.stopped.wait(ROOM_POLL_S):
                        return
                self.waiting_for_room = False
                self._publish(self.session.send_frames, frames)
                self.last_frame_at = time.monotonic()
            self._publish(self.session.end)
        except InputError as err:
            self.error = err
        except TransportError as err:
            self.unavailable = err
        except grpc.RpcError:
            log.info("client went away while sending frames", extra={"stream_id": self.spec.stream_id})

    def _publish(self, send: Callable[..., None], *args: object) -> None:
        """`send(*args)`, retried while the message server restarts (a message sent twice is harmless:
        consumers are idempotent on its key)."""
        deadline = time.monotonic() + PUBLISH_RETRY_S
        while True:
            try:
                send(*args)
                return
            except TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

"""The gateway's side of one stream: start, frames and end go into the pipeline; FOA chunks come back
in patch order, each exactly once, however the transport reorders or redelivers them."""

import math
from dataclasses import dataclass

import numpy as np

from swansphere.conventions import SAMPLE_RATE, VIDEO_FPS
from swansphere.errors import InputError
from swansphere.serving.envelope import Envelope
from swansphere.serving.stages import (
    FRAMES_ENCODED,
    MAX_DURATION_S,
    MAX_VIDEO_FRAMES,
    SPATIAL_LM,
    VIDEO_ENCODER,
    StreamSpec,
    out_topic,
)
from swansphere.serving.state import StateStore
from swansphere.serving.transport import Transport

OUT_GROUP = "gateway"
"""Consumer group that reads a stream's chunks."""
MAX_FRAMES_AHEAD = 64
"""Frames a stream may have in the pipeline that the video encoder has not encoded yet (16 s of
video, far more than the LM needs ahead). The gateway reads a client's next frames only when there
is room, so a client that sends a long clip or floods frames fills neither the encoder's queue
(whose depth gates every new stream) nor Redis, and other streams' frames do not wait behind it."""


class StreamFailedError(InputError):
    """A stage rejected the stream; `code` is the gRPC status name the gateway answers with."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Chunk:
    """One patch of FOA: (4, n) float32 AmbiX, n = 8192 except the last chunk, cut to the clip."""

    patch_index: int
    first_sample: int
    audio: np.ndarray


class StreamSession:
    def __init__(self, transport: Transport, store: StateStore, spec: StreamSpec, patch_samples: int):
        self.transport = transport
        self.store = store
        self.spec = spec
        self.patch_samples = patch_samples
        self.frames_sent = 0
        self.total_samples: int | None = (
            None if spec.duration_s is None else round(spec.duration_s * SAMPLE_RATE)
        )
        """Length of the whole stream once known (end of video or the given duration)."""
        self.next_patch = 0
        self._encoded = 0
        """Frames the video encoder had encoded when last read (`frames_ahead`)."""
        self._pending: dict[int, Chunk] = {}
        self._topic = out_topic(spec.stream_id)

    @property
    def ended(self) -> bool:
        return self.total_samples is not None

    @property
    def total_patches(self) -> int | None:
        return None if self.total_samples is None else math.ceil(self.total_samples / self.patch_samples)

    @property
    def done(self) -> bool:
        """Every chunk of the stream has been handed out."""
        return self.total_patches is not None and self.next_patch >= self.total_patches

    def start(self) -> None:
        self.transport.publish(
            SPATIAL_LM, Envelope(self.spec.stream_id, "start", meta={"spec": self.spec.to_json()})
        )

    def send_frames(self, frames: np.ndarray) -> None:
        """Equirectangular frames (T, H, 2H, 3) uint8 at 4 fps, in order."""
        if self.ended:
            raise InputError("stream already finished: no more frames accepted")
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[2] != 2 * frames.shape[1]:
            raise InputError(f"frames must be equirectangular (T, H, 2H, 3) RGB, got {frames.shape}")
        if frames.dtype != np.uint8:
            raise InputError(f"frames must be uint8 RGB, got {frames.dtype}")
        if frames.shape[0] == 0:
            return
        if self.frames_sent + frames.shape[0] > MAX_VIDEO_FRAMES:
            raise InputError(
                f"video longer than {MAX_DURATION_S:g} s: a stream takes at most {MAX_VIDEO_FRAMES} frames "
                f"at {VIDEO_FPS} fps"
            )
        message = Envelope(self.spec.stream_id, "frames", self.frames_sent, tensors={"frames": frames})
        self.transport.publish(VIDEO_ENCODER, message)
        self.frames_sent += frames.shape[0]

    def frames_ahead(self) -> int:
        """Frames sent that the video encoder has not encoded, or a bound on them: the store is read
        only when the last count read leaves `MAX_FRAMES_AHEAD` or more."""
        if self.frames_sent - self._encoded >= MAX_FRAMES_AHEAD:
            self._encoded = int(self.store.get(self.spec.stream_id, FRAMES_ENCODED) or 0)
        return self.frames_sent - self._encoded

    def end(self) -> None:
        """End of the video: the stop condition (DESIGN §1). A no-op for text-only streams."""
        if self.ended:
            return
        if self.frames_sent == 0:
            raise InputError("no video frames were given and no duration was set")
        self.transport.publish(
            VIDEO_ENCODER, Envelope(self.spec.stream_id, "end", meta={"frames": self.frames_sent})
        )
        self.total_samples = round(self.frames_sent / VIDEO_FPS * SAMPLE_RATE)

    def take_chunks(self, consumer: str, block_ms: int = 0) -> list[Chunk]:
        """The chunks now deliverable in order; duplicates dropped, early ones held back."""
        deliveries = self.transport.receive(self._topic, OUT_GROUP, consumer, count=64, block_ms=block_ms)
        for delivery in deliveries:
            message = delivery.message
            if message.kind == "error":
                self.transport.ack(deliveries, OUT_GROUP)
                raise StreamFailedError(str(message.meta["code"]), str(message.meta["message"]))
            if message.kind == "chunk" and message.index >= self.next_patch:
                self._pending[message.index] = Chunk(
                    message.index, int(message.meta["first_sample"]), message.tensors["audio"]
                )
        self.transport.ack(deliveries, OUT_GROUP)
        ready = []
        while self.next_patch in self._pending:
            ready.append(self._pending.pop(self.next_patch))
            self.next_patch += 1
        return ready

    def close(self) -> None:
        """Forget the stream: its chunk topic and its state."""
        self.transport.delete(self._topic)
        self.store.delete(self.spec.stream_id)

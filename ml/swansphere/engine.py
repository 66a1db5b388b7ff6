"""Streaming engine (DESIGN §1): video frames (and/or text) in, FOA chunks out, patch by patch.

One `StreamingGenerator` per stream: the embedded pipeline (`serving/embedded.py`), i.e. the same
stage objects the services run, wired with in-process queues and the torch backend. Frames arrive at
4 fps; as soon as every latent frame of patch t has its video frame (causal nearest rule, no
look-ahead) the patch is planned by the spatial LM, denoised by LocDiT and decoded by the VAE
decoder. The end of the video is the stop condition; a text-only stream takes a duration instead.
`generate()` (offline) feeds everything at once to the same pipeline, so streaming and offline give
the same audio for the same seed; `generate_many()` runs several inputs as concurrent streams of one
pipeline, so LocDiT and the decoder batch across them.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from swansphere.errors import InputError
from swansphere.models.swansphere import SwanSphere
from swansphere.serving.backend import TorchBackend
from swansphere.serving.embedded import EmbeddedPipeline
from swansphere.serving.session import Chunk, StreamSession
from swansphere.serving.stages import GenerationSettings, StreamSpec

__all__ = [
    "Chunk",
    "GenerationInput",
    "GenerationSettings",
    "StreamingGenerator",
    "generate",
    "generate_many",
]

STREAM_ID = "embedded"
STREAMS_AT_ONCE = 32
"""Inputs `generate_many` runs as one group of streams: within the backend's per-stream LM and
decoder state capacity (256), and enough to fill a GPU's batches."""


class StreamingGenerator:
    """Generates one stream; feed frames with `push_frames`, end with `finish`."""

    def __init__(
        self,
        model: SwanSphere,
        text: str | None = None,
        settings: GenerationSettings | None = None,
        duration_s: float | None = None,
    ):
        self.model = model.eval()
        self.settings = settings or GenerationSettings()
        self._pipeline = EmbeddedPipeline(TorchBackend(self.model))
        spec = StreamSpec(STREAM_ID, text=text, settings=self.settings, duration_s=duration_s)
        self._session = StreamSession(
            self._pipeline.transport, self._pipeline.store, spec, model.config.patch_samples
        )
        self._session.start()

    @property
    def stage_seconds(self) -> dict[str, float]:
        """Wall time spent per stage (video_encoder, spatial_lm, locdit, vae_decoder)."""
        return self._pipeline.stage_seconds()

    @property
    def total_samples(self) -> int | None:
        """Length of the whole stream once known (end of video or the given duration)."""
        return self._session.total_samples

    def push_frames(self, frames: np.ndarray) -> list[Chunk]:
        """Add equirectangular frames (T, H, W, 3) uint8 at 4 fps; returns the chunks now computable."""
        self._session.send_frames(frames)
        return self._run()

    def finish(self) -> list[Chunk]:
        """End of the video (the stop condition): generates the remaining patches."""
        self._session.end()
        chunks = self._run()
        if not self._session.done:
            raise RuntimeError(f"embedded pipeline stopped at patch {self._session.next_patch}")
        return chunks

    def _run(self) -> list[Chunk]:
        self._pipeline.pump()
        return _take_all(self._session)


@dataclass(frozen=True)
class GenerationInput:
    """One offline generation: video frames (T, H, 2H, 3) uint8 and/or text; a text-only input
    takes a duration instead of frames."""

    frames: np.ndarray | None
    text: str | None = None
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if self.frames is None and self.duration_s is None:
            raise InputError("give video frames, or a duration for text-only generation")
        if self.frames is not None and self.duration_s is not None:
            raise InputError("a video sets the duration itself: give frames or a duration, not both")


def generate(
    model: SwanSphere,
    frames: np.ndarray | None,
    text: str | None = None,
    settings: GenerationSettings | None = None,
    duration_s: float | None = None,
) -> np.ndarray:
    """Offline generation (4, N) built on the streaming engine: video-only, text-only or both."""
    request = GenerationInput(frames, text, settings or GenerationSettings(), duration_s)
    return generate_many(model, [request])[0]


def generate_many(model: SwanSphere, inputs: Sequence[GenerationInput]) -> list[np.ndarray]:
    """`generate` of each input, run `STREAMS_AT_ONCE` at a time as concurrent streams of one embedded
    pipeline: LocDiT and the decoder then denoise and decode a patch of every stream in one call,
    which on a GPU costs about what one stream's does. Each output is its input's own stream (its
    seed, its noise), equal to `generate` of it alone up to the rounding of batched arithmetic."""
    outputs: list[np.ndarray] = []
    for first in range(0, len(inputs), STREAMS_AT_ONCE):
        pipeline = EmbeddedPipeline(TorchBackend(model.eval()))
        sessions = []
        for i, item in enumerate(inputs[first : first + STREAMS_AT_ONCE]):
            spec = StreamSpec(
                f"{STREAM_ID}-{i}", text=item.text, settings=item.settings, duration_s=item.duration_s
            )
            session = StreamSession(pipeline.transport, pipeline.store, spec, model.config.patch_samples)
            session.start()
            if item.frames is not None:
                session.send_frames(item.frames)
            session.end()
            sessions.append(session)
        pipeline.pump()
        for session in sessions:
            chunks = _take_all(session)
            if not session.done:
                raise RuntimeError(f"embedded pipeline stopped at patch {session.next_patch}")
            outputs.append(np.concatenate([chunk.audio for chunk in chunks], axis=-1))
    return outputs


def _take_all(session: StreamSession) -> list[Chunk]:
    """Every chunk now deliverable: one `take_chunks` hands out at most 64."""
    chunks: list[Chunk] = []
    while batch := session.take_chunks(STREAM_ID):
        chunks += batch
    return chunks

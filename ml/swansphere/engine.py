"""Streaming engine (DESIGN §1): video frames (and/or text) in, FOA chunks out, patch by patch.

One `StreamingGenerator` per stream: the embedded pipeline (`serving/embedded.py`), i.e. the same
stage objects the services run, wired with in-process queues and the torch backend. Frames arrive at
4 fps; as soon as every latent frame of patch t has its video frame (causal nearest rule, no
look-ahead) the patch is planned by the spatial LM, denoised by LocDiT and decoded by the VAE
decoder. The end of the video is the stop condition; a text-only stream takes a duration instead.
`generate()` (offline) is the same object fed everything at once, so streaming and offline give the
same audio for the same seed.
"""

import numpy as np

from swansphere.errors import InputError
from swansphere.models.swansphere import SwanSphere
from swansphere.serving.backend import TorchBackend
from swansphere.serving.embedded import EmbeddedPipeline
from swansphere.serving.session import Chunk, StreamSession
from swansphere.serving.stages import GenerationSettings, StreamSpec

__all__ = ["Chunk", "GenerationSettings", "StreamingGenerator", "generate"]

STREAM_ID = "embedded"


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
        return self._session.take_chunks(STREAM_ID)


def generate(
    model: SwanSphere,
    frames: np.ndarray | None,
    text: str | None = None,
    settings: GenerationSettings | None = None,
    duration_s: float | None = None,
) -> np.ndarray:
    """Offline generation (4, N) built on the streaming engine: video-only, text-only or both."""
    if frames is None and duration_s is None:
        raise InputError("give video frames, or a duration for text-only generation")
    if frames is not None and duration_s is not None:
        raise InputError("a video sets the duration itself: give frames or a duration, not both")
    stream = StreamingGenerator(model, text=text, settings=settings, duration_s=duration_s)
    chunks = [] if frames is None else stream.push_frames(frames)
    chunks += stream.finish()
    return np.concatenate([chunk.audio for chunk in chunks], axis=-1)

"""Streaming engine (DESIGN §1): video frames (and/or text) in, FOA chunks out, patch by patch.

One `StreamingGenerator` per stream. Frames arrive at 4 fps; as soon as every latent frame of patch t
has its video frame (causal nearest rule, no look-ahead) the patch is planned by the spatial LM,
denoised by LocDiT and decoded by the streaming VAE decoder. The end of the video is the stop
condition; a text-only stream takes a duration instead. `generate()` (offline) is the same object
fed everything at once, so streaming and offline give the same audio for the same seed.
"""

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from swansphere.conventions import SAMPLE_RATE, VIDEO_FPS
from swansphere.errors import InputError
from swansphere.models.sampler import DEFAULT_GUIDANCE, Guidance, patch_noise, sample_patch
from swansphere.models.svac import align_nearest
from swansphere.models.swansphere import SwanSphere
from swansphere.models.vae import StreamingDecoder
from swansphere.video import model_frames

MAX_STEPS = 200
"""Upper bound on solver steps per patch; more buys nothing and would stall a stream."""


@dataclass(frozen=True)
class GenerationSettings:
    """What a caller may choose per stream."""

    seed: int = 0
    """Same seed, same audio, however the stream is chunked."""
    steps: int = 20
    """Euler steps per patch (paper §4.2: 20)."""
    guidance: Guidance = field(default_factory=lambda: DEFAULT_GUIDANCE)

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= MAX_STEPS:
            raise InputError(f"steps must be in 1..{MAX_STEPS}, got {self.steps}")


@dataclass(frozen=True)
class Chunk:
    """One patch of FOA: (4, n) float32 AmbiX, n = 8192 except the last chunk, cut to the clip."""

    patch_index: int
    first_sample: int
    audio: np.ndarray


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
        self.config = model.config
        self._device = model.latent_mean.device
        self.stage_seconds: dict[str, float] = defaultdict(float)
        """Wall time spent per stage (video_encoder, spatial_lm, locdit, vae_decoder)."""
        self._frames: list[Tensor] = []  # each (3, H, W) in [0, 1] at the model's resolution
        self._video_tokens: Tensor | None = None  # (1, T_video, Dv)
        self._finished = False
        self._next_patch = 0
        self._recent: list[Tensor] = []  # normalised latents of the last patches, each (1, D, P)
        self._decoder = StreamingDecoder(model.vae)
        with torch.no_grad():
            states, mask = model.text_encoder.encode([text])
            self._cache = model.lm.new_cache(1, states.to(self._device), mask.to(self._device))
        self._total_samples: int | None = None
        if duration_s is not None:
            if not 0 < duration_s <= 600:
                raise InputError(f"duration must be in (0, 600] seconds, got {duration_s}")
            self._total_samples = round(duration_s * SAMPLE_RATE)
            self._finished = True

    @property
    def total_samples(self) -> int | None:
        """Length of the whole stream once known (end of video or the given duration)."""
        return self._total_samples

    def push_frames(self, frames: np.ndarray) -> list[Chunk]:
        """Add equirectangular frames (T, H, W, 3) uint8 at 4 fps; returns the chunks now computable."""
        if self._finished:
            raise InputError("stream already finished: no more frames accepted")
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[2] != 2 * frames.shape[1]:
            raise InputError(f"frames must be equirectangular (T, H, 2H, 3) RGB, got {frames.shape}")
        if frames.shape[0] == 0:
            return []
        start = time.perf_counter()
        self._frames.extend(model_frames(frames, self.config.svac.video.frame_size))
        with torch.no_grad():
            # Block-causal in time: re-encoding the prefix leaves earlier tokens unchanged.
            clip = torch.stack(self._frames)[None].to(self._device)  # (1, T, 3, h, w)
            self._video_tokens = self.model.svac.video_embeddings(clip)  # (1, T, Dv)
        self.stage_seconds["video_encoder"] += time.perf_counter() - start
        return self._run(self._ready_patches())

    def finish(self) -> list[Chunk]:
        """End of the video (the stop condition): generates the remaining patches."""
        if not self._finished:
            if not self._frames:
                raise InputError("no video frames were given and no duration was set")
            self._total_samples = round(len(self._frames) / VIDEO_FPS * SAMPLE_RATE)
            self._finished = True
        return self._run(self._patch_count())

    def _patch_count(self) -> int:
        assert self._total_samples is not None
        return math.ceil(self._total_samples / self.config.patch_samples)

    def _ready_patches(self) -> int:
        """Patches computable now: the video frame of their last latent frame exists (no look-ahead),
        and they end within the video received so far, so no later `finish` has to cut them."""
        P, hop = self.config.patch_frames, self.config.vae.hop_length
        received = len(self._frames)
        t = self._next_patch
        while (
            math.floor((t * P + P - 1) * hop / SAMPLE_RATE * VIDEO_FPS) < received
            and (t + 1) * self.config.patch_samples <= received / VIDEO_FPS * SAMPLE_RATE
        ):
            t += 1
        return t

    def _run(self, until: int) -> list[Chunk]:
        chunks = []
        while self._next_patch < until:
            chunks.append(self._generate_patch(self._next_patch))
            self._next_patch += 1
        return chunks

    @torch.no_grad()
    def _generate_patch(self, t: int) -> Chunk:
        model, P = self.model, self.config.patch_frames
        start = time.perf_counter()
        previous = self._recent[-1] if self._recent else None
        h = model.lm.step(self._patch_video_tokens(t), model.history(previous, 1), self._cache)  # (1, C)
        lap = time.perf_counter()
        self.stage_seconds["spatial_lm"] += lap - start
        noise = patch_noise(self.settings.seed, t, (self.config.vae.latent_dim, P))[None].to(self._device)
        z = sample_patch(model.locdit, h, self._context(), noise, self.settings.steps, self.settings.guidance)
        self._recent = [*self._recent, z][-self.config.locdit.context_patches :]
        self.stage_seconds["locdit"] += time.perf_counter() - lap
        lap = time.perf_counter()
        audio = self._decoder.push(model.denormalize_latents(z))[0].float().cpu().numpy()  # (4, P·hop)
        self.stage_seconds["vae_decoder"] += time.perf_counter() - lap
        first = t * self.config.patch_samples
        assert self._total_samples is None or first < self._total_samples
        end = (
            audio.shape[-1]
            if self._total_samples is None
            else min(audio.shape[-1], self._total_samples - first)
        )
        return Chunk(patch_index=t, first_sample=first, audio=audio[:, :end])

    def _patch_video_tokens(self, t: int) -> Tensor | None:
        """The patch's 4 video tokens (1, P, Dv), or None for a text-only stream (null video)."""
        if self._video_tokens is None:
            return None
        P = self.config.patch_frames
        frame_rate = SAMPLE_RATE / self.config.vae.hop_length
        aligned = align_nearest(self._video_tokens, (t + 1) * P, VIDEO_FPS, frame_rate)  # (1, (t+1)·P, Dv)
        return aligned[:, -P:]

    def _context(self) -> Tensor:
        """Clean latents of patches t-2, t-1 (1, D, 8), zeros before the start of the stream."""
        C = self.config.locdit.context_frames
        recent = (
            torch.cat(self._recent, dim=-1) if self._recent else self.model.latent_mean.new_zeros(1, 0, 0)
        )
        D = self.config.vae.latent_dim
        recent = recent.reshape(1, D, -1)
        return F.pad(recent, (C - recent.shape[-1], 0))


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

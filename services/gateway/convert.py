"""Public API messages <-> pipeline values, with every field checked (plain Python, no server).

A bad field raises InputError naming the field and the accepted range; the server answers it with
INVALID_ARGUMENT.
"""

import math

import numpy as np

from swansphere.client import MAX_MESSAGE_BYTES, pack_audio, unpack_frames
from swansphere.conventions import FOA_CHANNELS, SAMPLE_RATE, VIDEO_FPS
from swansphere.errors import InputError
from swansphere.models.sampler import DEFAULT_GUIDANCE, MAX_GUIDANCE, Guidance
from swansphere.serving.session import Chunk
from swansphere.serving.stages import (
    MAX_DURATION_S,
    MAX_STEPS,
    MIN_DURATION_S,
    GenerationSettings,
    StreamSpec,
)
from swansphere.v1 import swansphere_pb2 as pb
from swansphere.video import MAX_FRAME_WIDTH

MAX_TEXT_CHARS = 1000
"""Longest caption accepted; the text encoder truncates at its token limit anyway."""
MIN_FRAME_WIDTH = 16
TIMESTAMP_TOLERANCE_S = 0.05
"""Frame i must carry timestamp i / 4 s within this much (the model reads video at 4 fps)."""


def stream_spec(config: pb.GenerateConfig, stream_id: str) -> tuple[StreamSpec, int]:
    """The stream's spec and its output format, from the client's first message."""
    if len(config.text) > MAX_TEXT_CHARS:
        raise InputError(f"config.text: {len(config.text)} characters, at most {MAX_TEXT_CHARS}")
    if config.steps > MAX_STEPS:
        raise InputError(f"config.steps: {config.steps}, must be 0 (default 20) or 1..{MAX_STEPS}")
    weights = []
    for name, default in (
        ("h_guidance", DEFAULT_GUIDANCE.h_weight),
        ("context_guidance", DEFAULT_GUIDANCE.context_weight),
    ):
        value = getattr(config, name) if config.HasField(name) else default
        if not (math.isfinite(value) and 0.0 <= value <= MAX_GUIDANCE):
            raise InputError(f"config.{name}: {value}, must be in [0, {MAX_GUIDANCE:g}]")
        weights.append(float(value))
    if config.frame_rate not in (0, VIDEO_FPS):
        raise InputError(f"config.frame_rate: {config.frame_rate}, the model reads video at {VIDEO_FPS} fps")
    duration = config.duration_s
    if duration != 0 and not (math.isfinite(duration) and MIN_DURATION_S <= duration <= MAX_DURATION_S):
        raise InputError(
            f"config.duration_s: {duration}, must be 0 (video) or in "
            f"[{MIN_DURATION_S:.3g}, {MAX_DURATION_S:g}] (one sample to 10 minutes)"
        )
    if config.output_format not in pb.OutputFormat.values():
        raise InputError(f"config.output_format: unknown value {config.output_format}")
    settings = GenerationSettings(
        seed=config.seed % 2**63, steps=config.steps or 20, guidance=Guidance(*weights)
    )
    spec = StreamSpec(stream_id, text=config.text or None, settings=settings, duration_s=duration or None)
    return spec, config.output_format


CLIP_AUDIO_BYTES = MAX_MESSAGE_BYTES - (1 << 20)
"""Most audio one GenerateClip answer carries: the message limit, less room for the rest of it."""


def check_clip_size(request: pb.GenerateClipRequest) -> None:
    """Refuse a GenerateClip whose answer would exceed the message limit, before any work is done
    (about 94 s of float32 FOA, 187 s of pcm16); Generate streams longer clips chunk by chunk."""
    config = request.config
    seconds = config.duration_s or len(request.video.frames) / VIDEO_FPS
    pcm16 = config.output_format == pb.OUTPUT_FORMAT_PCM16
    width = 2 if pcm16 else 4
    if round(seconds * SAMPLE_RATE) * len(FOA_CHANNELS) * width > CLIP_AUDIO_BYTES:
        longest = CLIP_AUDIO_BYTES / (SAMPLE_RATE * len(FOA_CHANNELS) * width)
        raise InputError(
            f"GenerateClip answers at most {longest:.0f} s of {'pcm16' if pcm16 else 'float32'} audio in one "
            f"message, this clip is {seconds:g} s: stream it with Generate"
        )


def frames(video: pb.VideoFrames, first_index: int) -> np.ndarray:
    """(T, H, W, 3) uint8 from a VideoFrames message whose first frame is frame `first_index`."""
    if not MIN_FRAME_WIDTH <= video.width <= MAX_FRAME_WIDTH:
        raise InputError(f"video.width: {video.width}, must be in {MIN_FRAME_WIDTH}..{MAX_FRAME_WIDTH}")
    out, timestamps = unpack_frames(video)
    expected = (first_index + np.arange(len(out))) / VIDEO_FPS
    wrong = np.flatnonzero(~(np.abs(timestamps - expected) <= TIMESTAMP_TOLERANCE_S))
    if wrong.size:
        i = int(wrong[0])
        raise InputError(
            f"video frame {first_index + i}: timestamp {timestamps[i]} s, expected {expected[i]:g} s "
            f"(consecutive frames at {VIDEO_FPS} fps)"
        )
    return out


def chunk_response(chunk: Chunk, output_format: int) -> pb.GenerateResponse:
    message = pb.Chunk(
        patch_index=chunk.patch_index,
        first_sample=chunk.first_sample,
        sample_rate=SAMPLE_RATE,
        **pack_audio(chunk.audio, output_format),
    )
    return pb.GenerateResponse(chunk=message)

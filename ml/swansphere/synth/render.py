"""Rendering one SynthSphere clip: FOA audio and equirectangular frames from one sampled scene.

Clip k of a dataset with seed s draws everything from SeedSequence([s, k]), split into independent
streams (scene, sounds, room, ambience, picture), so clip k is the same whatever the number of clips
and switching reverb or ambience off leaves everything else unchanged.
"""

from dataclasses import dataclass

import numpy as np

from swansphere import foa
from swansphere.captioning import RuleCaptioner
from swansphere.conventions import W
from swansphere.synth.backdrop import backdrop
from swansphere.synth.config import SynthConfig
from swansphere.synth.looks import LOOKS, apparent_radius_deg, draw, pixel_directions
from swansphere.synth.room import diffuse_ambience, reverberation, sample_room
from swansphere.synth.scenes import PlannedSource, sample_sources
from swansphere.synth.sounds import synthesize
from swansphere.trajectory import Scene

PEAK = 0.9
"""Mixes louder than this are scaled down (all channels alike) to this peak."""

REFERENCE_RMS = 0.1
"""RMS of a 0 dB source at 1 m before the mix is normalised."""


@dataclass(frozen=True)
class Clip:
    name: str
    index: int
    seed: int
    """Dataset seed; with `index` it regenerates the clip."""
    scene: Scene
    """Ground truth (trajectory JSON), caption included."""
    motions: tuple[str, ...]
    """Motion of each source, in `scene.sources` order."""
    foa: np.ndarray
    """(4, N) float32 AmbiX."""
    frames: np.ndarray
    """(T, H, W, 3) uint8 RGB equirectangular frames."""


def clip_name(index: int) -> str:
    return f"clip_{index:05d}"


def generate_clip(config: SynthConfig, index: int, seed: int) -> Clip:
    """Clip `index` of the dataset with `seed`; same arguments, same arrays."""
    if index < 0 or seed < 0:
        raise ValueError(f"index and seed must be >= 0, got {index} and {seed}")
    scene_rng, sound_rng, room_rng, ambience_rng, picture_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(5)
    )
    planned = sample_sources(scene_rng, config.seconds, config.max_sources, config.classes, config.motions)
    dry = [
        synthesize(p.source.sound_class, sound_rng, config.n_samples, config.sample_rate)
        * (REFERENCE_RMS * 10.0 ** (p.level_db / 20.0))
        for p in planned
    ]
    audio = render_audio(config, planned, dry, room_rng, ambience_rng)
    frames = render_frames(config, planned, dry, picture_rng)
    scene = Scene(
        sample_rate=config.sample_rate, duration=config.seconds, sources=[p.source for p in planned]
    )
    scene.caption = RuleCaptioner().caption(scene)
    motions = tuple(p.motion for p in planned)
    return Clip(clip_name(index), index, seed, scene, motions, audio.astype(np.float32), frames)


def render_audio(
    config: SynthConfig,
    planned: list[PlannedSource],
    dry: list[np.ndarray],
    room_rng: np.random.Generator,
    ambience_rng: np.random.Generator,
) -> np.ndarray:
    """Direct sound + optional reverberation and ambience, peak-limited: (4, N) float64."""
    sources = [p.source for p in planned]
    mix = sum(
        foa.encode_source(signal, s, config.sample_rate) for signal, s in zip(dry, sources, strict=True)
    )
    direct_rms = float(np.sqrt(np.mean(mix[W] ** 2)))
    if config.reverb:
        mix += reverberation(
            dry, sources, sample_room(room_rng, config.rt60_s, sources), room_rng, config.sample_rate
        )
    if config.ambience_db is not None:
        rms = direct_rms * 10.0 ** (config.ambience_db / 20.0)
        mix += diffuse_ambience(ambience_rng, config.n_samples, rms, config.sample_rate)
    return mix * min(1.0, PEAK / max(float(np.max(np.abs(mix))), 1e-12))


def render_frames(
    config: SynthConfig, planned: list[PlannedSource], dry: list[np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """(T, H, W, 3) uint8: a backdrop with each source's look at its position at each frame time.

    Sizes pulse with each source's loudness in the frame's time window; nearer sources are drawn
    over farther ones.
    """
    background = backdrop(rng, config.width, config.height)
    directions = pixel_directions(config.width, config.height)  # (H, W, 3)
    times = np.arange(config.n_frames) / config.fps  # (T,)
    hop = config.sample_rate // config.fps
    loudness = np.array(
        [[np.sqrt(np.mean(s[k * hop : (k + 1) * hop] ** 2)) for k in range(len(times))] for s in dry]
    )
    activity = loudness / np.maximum(loudness.max(axis=1, keepdims=True), 1e-12)  # (S, T)
    positions = [p.source.at(times) for p in planned]  # each (azimuth, elevation, distance), (T,)
    frames = np.repeat(background[None], len(times), axis=0)
    for k, t in enumerate(times):
        for s in sorted(range(len(planned)), key=lambda s: -positions[s][2][k]):
            azimuth, elevation, distance = (float(x[k]) for x in positions[s])
            look = LOOKS[planned[s].source.sound_class]
            radius = apparent_radius_deg(look, distance, float(activity[s, k]), config.width)
            draw(frames[k], directions, look, azimuth, elevation, radius, float(t))
    return frames

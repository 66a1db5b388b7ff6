"""Room acoustics in FOA: image-source early reflections, a diffuse reverberant tail, ambience.

A shoebox room around the listener. Absorption follows Sabine (RT60 = 0.161·V / (S·α)); the six
first-order image sources are encoded from their own directions and distances with wall gain
sqrt(1 − α); the diffuse tail is decaying noise, independent per FOA channel (directional channels
at 1/sqrt(3) of W, as in an isotropic field with SN3D), carrying the reverberant energy 16π/R
relative to a source at 1 m (R = S·α / (1 − α), the room constant). Ambience is independent pink
noise from many directions.
"""

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve, lfilter

from swansphere import foa
from swansphere.conventions import W, direction_to_vector, vector_to_direction
from swansphere.trajectory import Source, TrajectoryPoint

SPEED_OF_SOUND = 343.0
"""m/s"""

# (b, a) of a 3-pole filter that turns white noise pink (-3 dB/octave within ±0.05 dB above ~10 Hz
# at 44.1 kHz; J. O. Smith, "Spectral Audio Signal Processing", pink noise example).
_PINK_FILTER = (
    [0.049922035, -0.095993537, 0.050612699, -0.004408786],
    [1.0, -2.494956002, 2.017265875, -0.522189400],
)

WALL_CLEARANCE_M = 0.5
"""Every source stays at least this far inside the walls."""


@dataclass(frozen=True)
class Room:
    size: tuple[float, float, float]
    """(length x, width y, height z) in metres."""
    listener: tuple[float, float, float]
    """Listener position in room coordinates (m); the room's axes are the listener's x, y, z."""
    rt60_s: float
    """Reverberation time (s)."""

    @property
    def absorption(self) -> float:
        """Mean absorption coefficient from Sabine's formula, kept physical (< 1)."""
        lx, ly, lz = self.size
        volume, surface = lx * ly * lz, 2.0 * (lx * ly + lx * lz + ly * lz)
        return float(np.clip(0.161 * volume / (surface * self.rt60_s), 0.01, 0.95))

    @property
    def room_constant(self) -> float:
        lx, ly, lz = self.size
        surface = 2.0 * (lx * ly + lx * lz + ly * lz)
        return surface * self.absorption / (1.0 - self.absorption)


def sample_room(rng: np.random.Generator, rt60_s: float, sources: list[Source]) -> Room:
    """A shoebox around the listener, at least WALL_CLEARANCE_M beyond every source position.

    Walls are drawn at living-room to hall distances (2.5-6 m sideways, floor 1.2-1.8 m below the
    ears, ceiling 1.5-3 m above) and pushed out where a source would be outside.
    """
    positions = np.concatenate([_positions(source) for source in sources])  # (P, 3) from the listener
    near = np.maximum(rng.uniform((2.5, 2.5, 1.2), (6.0, 5.0, 1.8)), WALL_CLEARANCE_M - positions.min(axis=0))
    far = np.maximum(rng.uniform((2.5, 2.5, 1.5), (6.0, 5.0, 3.0)), WALL_CLEARANCE_M + positions.max(axis=0))
    return Room(tuple(float(x) for x in near + far), tuple(float(x) for x in near), rt60_s)


def reverberation(
    dry: list[np.ndarray], sources: list[Source], room: Room, rng: np.random.Generator, sample_rate: int
) -> np.ndarray:
    """Reverberant part (4, N) for dry signals (N,) (at their 1 m level) moving along `sources`."""
    out = np.zeros((4, len(dry[0])))
    last_delay = 0
    for signal, source in zip(dry, sources, strict=True):
        for image, delay in _image_sources(source, room, sample_rate):
            gain = np.sqrt(1.0 - room.absorption)
            out += gain * foa.encode_source(_delayed(signal, delay), image, sample_rate)
            last_delay = max(last_delay, delay)
    tail = _diffuse_tail(rng, room, sample_rate)  # (4, L)
    out += _delayed(fftconvolve(np.sum(dry, axis=0)[None, :], tail, axes=-1)[:, : out.shape[1]], last_delay)
    return out


def diffuse_ambience(
    rng: np.random.Generator, n_samples: int, rms: float, sample_rate: int, n_directions: int = 16
) -> np.ndarray:
    """Independent pink noises from `n_directions` spread over the sphere; W has RMS `rms`. (4, N)"""
    index = np.arange(n_directions) + 0.5
    elevation = np.degrees(np.arcsin(1.0 - 2.0 * index / n_directions))  # Fibonacci sphere
    azimuth = np.degrees(np.pi * (1.0 + 5.0**0.5) * index)
    noise = lfilter(*_PINK_FILTER, rng.standard_normal((n_directions, n_samples)), axis=-1)  # (D, N)
    gains = foa.encoding_gains(azimuth, elevation)  # (4, D)
    out = sum(gains[:, d, None] * noise[d] for d in range(n_directions))  # elementwise: no BLAS, same bytes
    return out * rms / max(float(np.sqrt(np.mean(out[W] ** 2))), 1e-12)


def _image_sources(source: Source, room: Room, sample_rate: int) -> list[tuple[Source, int]]:
    """The six first-order images of a (moving) source: trajectory and delay (samples) after the direct."""
    size, listener = np.array(room.size), np.array(room.listener)
    points = source.trajectory
    position = listener + _positions(source)  # (P, 3) in room coordinates
    direct_distance = np.mean([p.distance for p in points])
    images = []
    for axis in range(3):
        for wall in (0.0, size[axis]):
            mirrored = position.copy()
            mirrored[:, axis] = 2.0 * wall - position[:, axis]
            relative = mirrored - listener  # (P, 3)
            azimuth, elevation = vector_to_direction(relative)
            distance = np.linalg.norm(relative, axis=-1)
            trajectory = [
                TrajectoryPoint(t=p.t, azimuth=float(a), elevation=float(e), distance=float(d))
                for p, a, e, d in zip(points, azimuth, elevation, distance, strict=True)
            ]
            delay = (distance.mean() - direct_distance) / SPEED_OF_SOUND * sample_rate
            images.append((Source(sound_class=source.sound_class, trajectory=trajectory), round(delay)))
    return images


def _positions(source: Source) -> np.ndarray:
    """Trajectory points as (P, 3) positions relative to the listener (m)."""
    points = source.trajectory
    direction = direction_to_vector([p.azimuth for p in points], [p.elevation for p in points])  # (P, 3)
    return direction * np.array([p.distance for p in points])[:, None]


def _diffuse_tail(rng: np.random.Generator, room: Room, sample_rate: int) -> np.ndarray:
    """Impulse response (4, L) of the late reverberation: −60 dB after rt60_s, 5 ms fade-in."""
    t = np.arange(int(room.rt60_s * sample_rate)) / sample_rate
    envelope = np.exp(-3.0 * np.log(10.0) * t / room.rt60_s) * np.minimum(t / 0.005, 1.0)
    tail = rng.standard_normal((4, len(t))) * envelope
    tail[1:] /= np.sqrt(3.0)
    return tail * np.sqrt(16.0 * np.pi / room.room_constant / np.sum(tail[W] ** 2))


def _delayed(signal: np.ndarray, delay: int) -> np.ndarray:
    """Shift right by `delay` samples along the last axis, keeping the length."""
    if delay <= 0:
        return signal
    shifted = np.zeros_like(signal)
    shifted[..., delay:] = signal[..., :-delay]
    return shifted

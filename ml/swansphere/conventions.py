"""Project-wide conventions (DESIGN §4): axes, angles, FOA channel order, rates.

Axes: x front, y left, z up (right-handed). Azimuth 0° = front, +90° = left, counter-clockwise seen
from above; elevation +90° = up. Degrees at the edges; radians only in names ending `_rad`.
"""

import numpy as np

SAMPLE_RATE = 44100
"""Audio sample rate inside the system (Hz)."""

VIDEO_FPS = 4
"""Frame rate of the equirectangular video fed to the model."""

FOA_CHANNELS = ("W", "Y", "Z", "X")
"""AmbiX: ACN channel order, SN3D normalisation."""

W, Y, Z, X = range(4)
"""Channel indices in AmbiX order."""


def wrap_degrees(angle: np.ndarray | float) -> np.ndarray:
    """Wrap to (-180, 180]."""
    wrapped = np.mod(np.asarray(angle, dtype=np.float64) + 180.0, 360.0) - 180.0
    return np.where(wrapped == -180.0, 180.0, wrapped)


def direction_to_vector(azimuth: np.ndarray | float, elevation: np.ndarray | float) -> np.ndarray:
    """Unit vectors (..., 3) as (x, y, z) for directions in degrees."""
    az_rad = np.radians(np.asarray(azimuth, dtype=np.float64))
    el_rad = np.radians(np.asarray(elevation, dtype=np.float64))
    return np.stack(
        [np.cos(az_rad) * np.cos(el_rad), np.sin(az_rad) * np.cos(el_rad), np.sin(el_rad)], axis=-1
    )


def vector_to_direction(vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(azimuth, elevation) in degrees of vectors (..., 3); the length does not matter."""
    vector = np.asarray(vector, dtype=np.float64)
    x, y, z = vector[..., 0], vector[..., 1], vector[..., 2]
    azimuth = np.degrees(np.arctan2(y, x))
    elevation = np.degrees(np.arctan2(z, np.hypot(x, y)))
    return azimuth, elevation

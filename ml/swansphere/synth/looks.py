"""How each sound class looks in the equirectangular frames (DESIGN §4 mapping).

A class is a saturated colour (no background pixel can have it) and a flat shape, drawn in the
source's own tangent plane: pixel directions are projected onto the plane that faces the source,
so the shape sits at the true direction, wraps across the ±180° seam, and keeps its form near the
poles. Apparent size is the angular size at 1 m divided by the distance; it pulses with loudness.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from swansphere import equirect
from swansphere.conventions import direction_to_vector

# A shape maps tangent-plane coordinates (u right, v up; 1 = the apparent radius) and the time in
# seconds to a boolean mask.
Shape = Callable[[np.ndarray, np.ndarray, float], np.ndarray]

MIN_RADIUS_PX = 2.0
"""Far sources are drawn at least this big (pixels) so they stay visible in small frames."""


@dataclass(frozen=True)
class Look:
    colour: tuple[int, int, int]
    """RGB; saturated or very dark, so no backdrop pixel matches it."""
    radius_deg: float
    """Apparent radius at 1 m distance (degrees)."""
    shape: Shape


def _disc(u: np.ndarray, v: np.ndarray, t: float) -> np.ndarray:
    return u**2 + v**2 <= 1.0


def _triangle(u: np.ndarray, v: np.ndarray, t: float) -> np.ndarray:
    return (v >= -0.5) & (np.abs(u) <= (1.0 - v) / 1.5)


def _blob(u: np.ndarray, v: np.ndarray, t: float) -> np.ndarray:
    return u**2 + (v / 0.65) ** 2 <= 1.0


def _box(u: np.ndarray, v: np.ndarray, t: float) -> np.ndarray:
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.55)


def _figure(u: np.ndarray, v: np.ndarray, t: float) -> np.ndarray:
    head = u**2 + (v - 0.7) ** 2 <= 0.3**2
    return head | ((u / 0.45) ** 2 + ((v + 0.2) / 0.65) ** 2 <= 1.0)


def _ring(u: np.ndarray, v: np.ndarray, t: float) -> np.ndarray:
    return (u**2 + v**2 <= 1.0) & (u**2 + v**2 >= 0.55**2)


def _square(u: np.ndarray, v: np.ndarray, t: float) -> np.ndarray:
    return (np.abs(u) <= 0.75) & (np.abs(v) <= 0.75)


def _waves(u: np.ndarray, v: np.ndarray, t: float) -> np.ndarray:
    """Wavy stripes that flow sideways over time."""
    crest = np.cos(2.0 * np.pi * (2.5 * v + 0.35 * np.sin(2.0 * np.pi * (u - 0.5 * t))))
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.6) & (crest > 0.0)


def _keys(u: np.ndarray, v: np.ndarray, t: float) -> np.ndarray:
    """Eight keys side by side."""
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.5) & (np.mod(4.0 * (u + 1.0), 1.0) < 0.75)


LOOKS: dict[str, Look] = {
    "siren": Look((225, 25, 25), 18.0, _disc),
    "bird": Look((250, 215, 0), 12.0, _triangle),
    "dog": Look((135, 75, 25), 20.0, _blob),
    "engine": Look((40, 40, 48), 26.0, _box),
    "speech": Look((235, 160, 110), 20.0, _figure),
    "bell": Look((240, 130, 0), 18.0, _ring),
    "drum": Look((30, 60, 220), 18.0, _square),
    "water": Look((0, 210, 220), 26.0, _waves),
    "piano": Look((200, 40, 200), 24.0, _keys),
}
"""Class name -> look; the keys match `sounds.SOUND_CLASSES`."""


def pixel_directions(width: int, height: int) -> np.ndarray:
    """Unit vectors (H, W, 3) that each pixel centre looks at."""
    azimuth = equirect.column_azimuth(np.arange(width), width)  # (W,)
    elevation = equirect.row_elevation(np.arange(height), height)  # (H,)
    return direction_to_vector(*np.broadcast_arrays(azimuth[None, :], elevation[:, None]))


def apparent_radius_deg(look: Look, distance: float, activity: float, width: int) -> float:
    """Radius in degrees: 1/distance perspective, +-15 % pulse with loudness (activity in [0, 1])."""
    radius = look.radius_deg / distance * (0.85 + 0.3 * activity)
    return max(radius, MIN_RADIUS_PX * 360.0 / width)


def draw(
    frame: np.ndarray,
    directions: np.ndarray,
    look: Look,
    azimuth: float,
    elevation: float,
    radius_deg: float,
    t: float,
) -> None:
    """Paint `look` centred on (azimuth, elevation) into `frame` (H, W, 3) in place."""
    az_rad, el_rad = np.radians(azimuth), np.radians(elevation)
    front = direction_to_vector(azimuth, elevation)  # (3,)
    right = np.array([np.sin(az_rad), -np.cos(az_rad), 0.0])  # towards decreasing azimuth
    up = np.array([-np.cos(az_rad) * np.sin(el_rad), -np.sin(az_rad) * np.sin(el_rad), np.cos(el_rad)])
    depth = np.sum(directions * front, axis=-1)  # (H, W); elementwise sums, no BLAS, same bytes
    u = np.degrees(np.arctan2(np.sum(directions * right, axis=-1), depth)) / radius_deg
    v = np.degrees(np.arctan2(np.sum(directions * up, axis=-1), depth)) / radius_deg
    frame[(depth > 0.0) & look.shape(u, v, t)] = look.colour

"""Equirectangular video geometry (DESIGN §4).

Column u (0..W-1) looks at az = 180° − 360°·(u + 0.5)/W: the centre column is the front and the
image's left half is the listener's left. Row v looks at el = 90° − 180°·(v + 0.5)/H; H = W / 2.
"""

import numpy as np

from swansphere.errors import InputError


def check_equirect_size(width: int, height: int) -> None:
    """InputError unless a frame of `width` x `height` is equirectangular: W = 2·H, H >= 1."""
    if height < 1 or width != 2 * height:
        raise InputError(f"frames are not equirectangular: {width}x{height} (width must be 2 x height)")


def column_azimuth(u: np.ndarray | float, width: int) -> np.ndarray:
    return 180.0 - 360.0 * (np.asarray(u, dtype=np.float64) + 0.5) / width


def row_elevation(v: np.ndarray | float, height: int) -> np.ndarray:
    return 90.0 - 180.0 * (np.asarray(v, dtype=np.float64) + 0.5) / height


def azimuth_column(azimuth: np.ndarray | float, width: int) -> np.ndarray:
    """Fractional column in [-0.5, W - 0.5) that looks at `azimuth` (degrees)."""
    u = (180.0 - np.asarray(azimuth, dtype=np.float64)) / 360.0 * width - 0.5
    return np.mod(u + 0.5, width) - 0.5


def elevation_row(elevation: np.ndarray | float, height: int) -> np.ndarray:
    return (90.0 - np.asarray(elevation, dtype=np.float64)) / 180.0 * height - 0.5


def yaw_shift_columns(yaw: float, width: int) -> int:
    """Columns to roll a frame by so it matches an FOA yaw of `yaw` degrees: −Δ/360·W, rounded."""
    return round(-yaw / 360.0 * width)


def roll_yaw(frames: np.ndarray, yaw: float) -> np.ndarray:
    """Rotate equirectangular frames (..., H, W, C) by `yaw` degrees, as `foa.rotate(yaw=...)` does."""
    width = frames.shape[-2]
    return np.roll(frames, yaw_shift_columns(yaw, width), axis=-2)

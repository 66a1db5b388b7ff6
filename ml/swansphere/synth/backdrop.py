"""Backdrops for SynthSphere frames: a scene to look at that says nothing about where sounds are.

Sky and ground in random muted colours split at the horizon (elevation 0, the same at every
azimuth), a smooth random texture that wraps around the ±180° seam, and a few grey-ish distractor
shapes. Everything stays desaturated and mid-bright, so the class colours of `looks` never occur.
"""

import colorsys

import numpy as np

from swansphere import equirect

MAX_SATURATION = 0.1
"""HSV saturation bound of every backdrop colour; class colours are far more saturated (or dark)."""


def backdrop(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A (H, W, 3) uint8 frame, different for every generator state."""
    elevation = equirect.row_elevation(np.arange(height), height)[:, None]  # (H, 1)
    sky, ground = _muted_colour(rng, 0.6, 0.85), _muted_colour(rng, 0.4, 0.65)
    ground_weight = np.clip(0.5 - elevation / 4.0, 0.0, 1.0)[..., None]  # soft 4° horizon, (H, 1, 1)
    frame = sky * (1.0 - ground_weight) + ground * ground_weight  # (H, 1, 3)
    frame = frame * (1.0 + _smooth_texture(rng, width, height)[..., None])  # (H, W, 3)
    _add_distractors(rng, frame)
    return np.clip(frame * 255.0, 0, 255).round().astype(np.uint8)


def _muted_colour(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """RGB in [0, 1] with random hue, low saturation and value in [low, high]."""
    hue, saturation = rng.uniform(), rng.uniform(0.0, MAX_SATURATION)
    return np.array(colorsys.hsv_to_rgb(hue, saturation, rng.uniform(low, high)))


def _smooth_texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Relative brightness changes (H, W) within ±8 %, bilinear from a coarse grid wrapped in azimuth."""
    coarse = rng.uniform(-0.08, 0.08, size=(5, 9))  # (rows, columns); column 8 wraps to column 0
    rows = np.linspace(0, 4, height)
    cols = np.arange(width) / width * 8
    r0, c0 = np.minimum(rows.astype(int), 3), cols.astype(int)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
    coarse[:, 8] = coarse[:, 0]
    top = coarse[r0][:, c0] * (1 - fc) + coarse[r0][:, c0 + 1] * fc
    bottom = coarse[r0 + 1][:, c0] * (1 - fc) + coarse[r0 + 1][:, c0 + 1] * fc
    return top * (1 - fr) + bottom * fr


def _add_distractors(rng: np.random.Generator, frame: np.ndarray) -> None:
    """0-4 muted ellipses (rocks, bushes) at random places, in place on (H, W, 3)."""
    height, width = frame.shape[:2]
    rows, cols = np.mgrid[0:height, 0:width]
    for _ in range(int(rng.integers(0, 5))):
        centre_row, centre_col = rng.uniform(0.45, 0.8) * height, rng.uniform(0, width)
        half_h, half_w = rng.uniform(0.02, 0.08) * height, rng.uniform(0.02, 0.06) * width
        d_col = np.mod(cols - centre_col + width / 2, width) - width / 2  # wraps at the seam
        inside = ((rows - centre_row) / half_h) ** 2 + (d_col / half_w) ** 2 <= 1.0
        frame[inside] = _muted_colour(rng, 0.4, 0.8)

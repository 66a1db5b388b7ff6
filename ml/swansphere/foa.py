"""First-Order Ambisonics in AmbiX (ACN W, Y, Z, X; SN3D), paper §3.1 and DESIGN §4.

A plane wave s from (az, el): W = s, Y = s·sin(az)·cos(el), Z = s·sin(el), X = s·cos(az)·cos(el).
Arrays are (4, N) float, channels in ACN order. FuMa enters and leaves only through the converters.
"""

import numpy as np

from swansphere.conventions import SAMPLE_RATE, W, X, Y, Z, direction_to_vector
from swansphere.errors import InputError
from swansphere.trajectory import Source

REFERENCE_DISTANCE_M = 1.0
"""Distance at which a source has unit gain (inverse-distance law beyond it)."""

MIN_DISTANCE_M = 0.25
"""Closer sources are clamped here so the gain stays bounded."""


def encoding_gains(azimuth: np.ndarray | float, elevation: np.ndarray | float) -> np.ndarray:
    """SN3D gains (4, ...) in ACN order for directions in degrees."""
    x, y, z = np.moveaxis(direction_to_vector(azimuth, elevation), -1, 0)
    return np.stack([np.ones_like(x), y, z, x])


def distance_gain(distance: np.ndarray | float) -> np.ndarray:
    """Pressure gain of a point source: 1/r relative to REFERENCE_DISTANCE_M."""
    return REFERENCE_DISTANCE_M / np.maximum(np.asarray(distance, dtype=np.float64), MIN_DISTANCE_M)


def encode(signal: np.ndarray, azimuth: np.ndarray | float, elevation: np.ndarray | float) -> np.ndarray:
    """Encode a mono signal (N,) from a direction, fixed or one per sample."""
    gains = encoding_gains(azimuth, elevation).reshape(4, -1)  # (4, 1) fixed or (4, N) per sample
    return gains * np.asarray(signal, dtype=np.float64)


def encode_source(signal: np.ndarray, source: Source, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Encode along a trajectory, sample-accurate: each sample gets its own interpolated direction."""
    times = np.arange(len(signal)) / sample_rate
    azimuth, elevation, distance = source.at(times)
    return encode(signal * distance_gain(distance), azimuth, elevation)


# --- FuMa <-> AmbiX (first order: W differs by sqrt(2), the rest by order only) ---------------


def fuma_to_ambix(fuma: np.ndarray) -> np.ndarray:
    """FuMa (W, X, Y, Z; W at -3 dB) to AmbiX (W, Y, Z, X; SN3D)."""
    w, x, y, z = _four_channels(fuma)
    return np.stack([w * np.sqrt(2.0), y, z, x])


def ambix_to_fuma(ambix: np.ndarray) -> np.ndarray:
    """AmbiX (W, Y, Z, X; SN3D) to FuMa (W, X, Y, Z; W at -3 dB)."""
    w, y, z, x = _four_channels(ambix)
    return np.stack([w / np.sqrt(2.0), x, y, z])


def _four_channels(foa: np.ndarray) -> np.ndarray:
    foa = np.asarray(foa)
    if foa.ndim != 2 or foa.shape[0] != 4:
        raise InputError(f"FOA must have shape (4, N), got {foa.shape}")
    return foa


# --- Rotation --------------------------------------------------------------------------------


def rotation_matrix(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """3x3 scene rotation (degrees): R = Rz(yaw) · Ry(pitch) · Rx(roll), applied to (x, y, z).

    yaw +Δ moves a source from azimuth a to a + Δ (counter-clockwise from above);
    pitch +Δ raises a frontal source by Δ; roll +Δ raises a source on the left by Δ.
    """
    cy, sy = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
    cp, sp = np.cos(np.radians(pitch)), np.sin(np.radians(pitch))
    cr, sr = np.cos(np.radians(roll)), np.sin(np.radians(roll))
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, -sp], [0.0, 1.0, 0.0], [sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return rz @ ry @ rx


def foa_rotation(rotation: np.ndarray) -> np.ndarray:
    """4x4 matrix M (ACN order) with foa' = M @ foa for a 3x3 scene rotation.

    First-order components transform like the direction vector; W is invariant.
    """
    acn_to_xyz = [X, Y, Z]
    m = np.zeros((4, 4))
    m[W, W] = 1.0
    m[np.ix_(acn_to_xyz, acn_to_xyz)] = rotation
    return m


def rotate(foa: np.ndarray, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Rotate an FOA scene (4, N); see `rotation_matrix` for the angle conventions."""
    return foa_rotation(rotation_matrix(yaw, pitch, roll)) @ _four_channels(foa)


# --- Pseudo-FOA for curriculum pre-training (paper App. B.3) ------------------------------------


def pseudo_foa(audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Non-spatial audio to pseudo-FOA: W = L + R, one random directional channel = L − R, others 0.

    `audio` is stereo (2, N) or mono (N,). Mono is read as L = R = s/2, so W = s and every
    directional channel is zero. Returns the (4, N) array and the name of the channel chosen.
    """
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim == 1:
        left = right = audio / 2.0
    elif audio.ndim == 2 and audio.shape[0] == 2:
        left, right = audio
    else:
        raise InputError(f"pseudo-FOA takes mono (N,) or stereo (2, N) audio, got {audio.shape}")
    name = ("X", "Y", "Z")[int(rng.integers(3))]
    foa = np.zeros((4, audio.shape[-1]))
    foa[W] = left + right
    foa[{"X": X, "Y": Y, "Z": Z}[name]] = left - right
    return foa, name

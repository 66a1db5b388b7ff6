"""Hear FOA on speakers or headphones: a virtual-cardioid stereo decode and a binaural render.

No HRTF set can be shipped, so the binaural render uses a spherical head:
  C. P. Brown and R. O. Duda, "A structural model for binaural sound synthesis", IEEE Trans.
  Speech and Audio Processing 6(5), 1998: head-shadow one-pole/one-zero filter per ear plus
  Woodworth's interaural delay, head radius 8.75 cm.
FOA is decoded to a virtual 8-speaker cube (a spherical 3-design) with a max-rE decoder, and each
virtual speaker reaches each ear through that model, as FIR filters. First order spreads a source over
several virtual speakers, so a source at 90° gets about half the head's ITD (0.3 ms instead of 0.66 ms)
but a strong ILD (about 15 dB above 4 kHz).
"""

import numpy as np
from scipy.signal import bilinear, fftconvolve, lfilter

from swansphere.conventions import SAMPLE_RATE, W, X, Y, Z, direction_to_vector
from swansphere.errors import InputError

HEAD_RADIUS_M = 0.0875
"""Brown–Duda's average head radius."""

SPEED_OF_SOUND_M_S = 343.0
"""Air at 20 °C."""

ALPHA_MIN = 0.1
"""Head-shadow high-frequency gain at the darkest angle (Brown–Duda: −20 dB)."""

THETA_MIN_DEG = 150.0
"""Angle from the ear axis where the shadow is darkest (Brown–Duda)."""

EAR_AXES = np.array([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]])
"""Left and right ear directions (x front, y left): the ears sit on the y axis."""

_CUBE_ELEVATION_DEG = float(np.degrees(np.arctan(1 / np.sqrt(2))))  # 35.26°: a cube's corners
CUBE_LAYOUT = direction_to_vector(
    [45.0, 135.0, -135.0, -45.0] * 2, [_CUBE_ELEVATION_DEG] * 4 + [-_CUBE_ELEVATION_DEG] * 4
)
"""Virtual speakers (8, 3) on the corners of a cube: symmetric left/right, front/back, up/down."""

SHADOW_TAPS = 128
"""Length of the head-shadow impulse response (its pole at 2c/a decays below 1e-9 by then)."""

SINC_HALF_TAPS = 16
"""Half-width of the windowed-sinc fractional delay; also the bulk latency removed at the end."""


def to_stereo(foa: np.ndarray, angle_deg: float = 90.0) -> np.ndarray:
    """Two virtual cardioids at azimuth ±angle_deg (left, right): (2, N).

    A cardioid looking at unit vector d picks 0.5·(W + d·[X, Y, Z]) from SN3D FOA: a plane wave from
    u gives 0.5·(1 + d·u)·s, full gain on axis and a null behind.
    """
    foa = _check_foa(foa)
    looks = direction_to_vector([angle_deg, -angle_deg], [0.0, 0.0])  # (2, 3)
    return 0.5 * (foa[W] + looks @ foa[[X, Y, Z]])


def to_binaural(foa: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Binaural (left, right) of AmbiX FOA (4, N) for headphones: (2, N), same length as the input."""
    foa = _check_foa(foa)
    if sample_rate <= 0:
        raise InputError(f"sample rate must be positive, got {sample_rate}")
    decoder = max_re_decoder(CUBE_LAYOUT)  # (L, 4)
    speaker_ears = np.stack([ear_filters(d, sample_rate) for d in CUBE_LAYOUT])  # (L, 2, taps)
    channel_ears = np.einsum("lc,let->cet", decoder, speaker_ears)  # (4, 2, taps)
    n = foa.shape[1]
    return np.stack(
        [
            fftconvolve(foa, channel_ears[:, ear], axes=-1).sum(axis=0)[SINC_HALF_TAPS : SINC_HALF_TAPS + n]
            for ear in range(2)
        ]
    )


def max_re_decoder(layout: np.ndarray) -> np.ndarray:
    """(L, 4) matrix from SN3D FOA (ACN) to the speakers of a spherical 2-design (or better).

    Sampling decoder in N3D, g = (1/L)·(W + 3·a1·d·[X, Y, Z]) (SN3D→N3D scales the first order by √3
    on the signal and on the speaker's harmonic), with the max-rE weight a1 = 1/√3 (largest root of
    P2). A plane wave from u gives (1/L)·(1 + √3·d·u): the speaker gains sum to W.
    """
    gains = np.zeros((len(layout), 4))
    gains[:, W] = 1.0
    gains[:, [X, Y, Z]] = np.sqrt(3.0) * layout
    return gains / len(layout)


def ear_filters(direction: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """FIR pair (2, taps), left and right ear, for a source in unit `direction` (3,), Brown–Duda.

    Each ear: head shadow of the angle θ between source and ear axis, then Woodworth's delay plus
    a/c, so that every delay is causal (a source at the ear arrives first, at 0 delay).
    """
    a_over_c = HEAD_RADIUS_M / SPEED_OF_SOUND_M_S
    # Same length for every direction so that filters add up: room for the largest delay, (a/c)(1 + π/2).
    delay_taps = 2 * SINC_HALF_TAPS + int(np.ceil(a_over_c * (1 + np.pi / 2) * sample_rate)) + 1
    taps = []
    for axis in EAR_AXES:
        theta = float(np.arccos(np.clip(direction @ axis, -1.0, 1.0)))
        delay = (woodworth_delay(theta) + a_over_c) * sample_rate
        taps.append(np.convolve(_head_shadow(theta, sample_rate), _fractional_delay(delay, delay_taps)))
    return np.array(taps)


def woodworth_delay(theta_rad: float) -> float:
    """Woodworth arrival time (s) at an ear relative to the head centre, θ from the ear axis.

    −(a/c)·cos θ on the lit side, (a/c)·(θ − π/2) around the head: ITD = (a/c)·(1 + π/2) ≈ 0.66 ms
    for a source on the ear axis.
    """
    a_over_c = HEAD_RADIUS_M / SPEED_OF_SOUND_M_S
    if theta_rad < np.pi / 2:
        return -a_over_c * np.cos(theta_rad)
    return a_over_c * (theta_rad - np.pi / 2)


def _head_shadow(theta_rad: float, sample_rate: int) -> np.ndarray:
    """Impulse response (SHADOW_TAPS,) of H(s) = (1 + α·s/(2ω0)) / (1 + s/(2ω0)), ω0 = c/a.

    α(θ) = (1 + α_min/2) + (1 − α_min/2)·cos(θ/θ_min·180°): +6 dB at high frequencies facing the ear,
    −20 dB at θ_min. Digitised by the bilinear transform.
    """
    omega0 = SPEED_OF_SOUND_M_S / HEAD_RADIUS_M
    alpha = (1 + ALPHA_MIN / 2) + (1 - ALPHA_MIN / 2) * np.cos(theta_rad / np.radians(THETA_MIN_DEG) * np.pi)
    b, a = bilinear([alpha / (2 * omega0), 1.0], [1 / (2 * omega0), 1.0], fs=sample_rate)
    impulse = np.zeros(SHADOW_TAPS)
    impulse[0] = 1.0
    return lfilter(b, a, impulse)


def _fractional_delay(delay_samples: float, length: int) -> np.ndarray:
    """Hann-windowed sinc (length,) delaying by `delay_samples` + SINC_HALF_TAPS."""
    offset = np.arange(length) - SINC_HALF_TAPS - delay_samples
    window = np.where(
        np.abs(offset) < SINC_HALF_TAPS, 0.5 + 0.5 * np.cos(np.pi * offset / SINC_HALF_TAPS), 0.0
    )
    return np.sinc(offset) * window


def _check_foa(foa: np.ndarray) -> np.ndarray:
    foa = np.asarray(foa, dtype=np.float64)
    if foa.ndim != 2 or foa.shape[0] != 4:
        raise InputError(f"FOA must have shape (4, N), got {foa.shape}")
    return foa

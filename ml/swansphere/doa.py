"""Direction of arrival of FOA audio: the two protocols of DESIGN §5b, never mixed up.

Segment protocol (paper App. A.2, degrees): STFT intensity over 500-8000 Hz, energy-weighted per
segment, unit-vector smoothing; plus energy, diffuseness, distance and proximity per segment. It is
our diagnostic and the captioning input.
Paper protocol (clip level, radians): one broadband time-domain intensity vector per clip, as the
SwanSphere/OmniAudio evaluators compute it.
"""

from dataclasses import asdict, dataclass

import numpy as np
from scipy.signal import stft

from swansphere.conventions import SAMPLE_RATE, W, X, Y, Z
from swansphere.errors import InputError
from swansphere.foa import MIN_DISTANCE_M

N_FFT = 1024
"""STFT frame (23 ms at 44.1 kHz): 43 Hz bins resolve the 500 Hz band edge."""

HOP = 512
"""STFT hop: half a frame, so every Hann-windowed sample is seen twice."""

BAND_HZ = (500.0, 8000.0)
"""Frequencies the segment protocol reads the direction from (App. A.2)."""

MAX_DISTANCE_M = 100.0
"""Distance reported for segments 40 dB or more below the reference (and for silence)."""


@dataclass(frozen=True)
class SegmentDoA:
    """One segment of the segment protocol: times in s, angles in degrees, distance in m."""

    t0: float
    t1: float
    azimuth: float
    elevation: float
    energy: float
    diffuseness: float
    distance: float
    proximity: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def segment_doa(
    foa: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    segment_s: float = 1.0,
    band_hz: tuple[float, float] = BAND_HZ,
    smooth_window: int = 3,
    *,
    reference_energy: float | None = None,
    reference_distance: float = 1.0,
) -> list[SegmentDoA]:
    """Segment protocol (paper App. A.2) on AmbiX FOA (4, N).

    The distance reference is `reference_energy` at `reference_distance`; without it, the clip's
    loudest segment is placed at `reference_distance`.
    """
    foa = _check_foa(foa, min_samples=N_FFT)
    bounds = _segment_bounds(foa.shape[1], sample_rate, segment_s)
    _check_settings(sample_rate, band_hz, smooth_window, reference_energy, reference_distance)

    directions, diffuseness = [], []
    for start, stop in bounds:  # one STFT per segment: memory stays bounded on long files
        direction, psi = _aggregate(*_band_intensity(foa[:, start:stop], sample_rate, band_hz))
        directions.append(direction)
        diffuseness.append(psi)
    # Paper App. A.2: smooth unit vectors (no jump at ±180°), then eq. 6 on the smoothed vectors.
    smoothed = smooth_unit_vectors(np.array(directions), smooth_window)  # (S, 3)
    azimuth = np.degrees(np.arctan2(smoothed[:, 1], smoothed[:, 0]))
    elevation = np.degrees(np.arcsin(np.clip(smoothed[:, 2], -1.0, 1.0)))

    energy = np.array([np.mean(foa[W, start:stop] ** 2) for start, stop in bounds])
    if reference_energy is None:
        reference_energy = float(energy.max())
    distance = distance_from_energy(energy, reference_energy, reference_distance)
    near = proximity(distance, np.array(diffuseness), reference_distance)
    return [
        SegmentDoA(
            t0=start / sample_rate,
            t1=stop / sample_rate,
            azimuth=float(azimuth[i]),
            elevation=float(elevation[i]),
            energy=float(energy[i]),
            diffuseness=float(diffuseness[i]),
            distance=float(distance[i]),
            proximity=float(near[i]),
        )
        for i, (start, stop) in enumerate(bounds)
    ]


def _band_intensity(
    foa: np.ndarray, sample_rate: int, band_hz: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Active intensity (3, F, T) and energy density (F, T) of the band's STFT bins.

    Eq. 5: I = Re{conj(W)·[X, Y, Z]}. Energy density in SN3D units: E = ½(|W|² + |X|² + |Y|² + |Z|²).
    For a plane wave |[X, Y, Z]| = |W|, so |I| = E exactly (diffuseness 0); in an isotropic diffuse
    field each directional channel carries a third of |W|² and ⟨I⟩ → 0 (diffuseness 1).
    """
    frequencies, _, spectra = stft(foa, fs=sample_rate, window="hann", nperseg=N_FFT, noverlap=N_FFT - HOP)
    in_band = (frequencies >= band_hz[0]) & (frequencies <= band_hz[1])
    spectra = spectra[:, in_band]  # (4, F, T)
    pressure = spectra[W]  # (F, T)
    velocity = spectra[[X, Y, Z]]  # (3, F, T)
    intensity = np.real(np.conj(pressure) * velocity)
    energy_density = 0.5 * (np.abs(pressure) ** 2 + np.sum(np.abs(velocity) ** 2, axis=0))
    return intensity, energy_density


def _aggregate(intensity: np.ndarray, energy_density: np.ndarray) -> tuple[np.ndarray, float]:
    """Unit direction (3,) and diffuseness of one segment's bins: intensity (3, F, T), energy (F, T).

    Direction: V = Σ E·I/|I| / Σ E, the energy-weighted average of the bins' intensity directions
    (App. A.2), normalised. Diffuseness (DirAC): ψ = 1 − |⟨I⟩| / ⟨E⟩ over the segment's bins; ψ = 1
    for silence, which has no direct sound.
    """
    total_energy = energy_density.sum()
    if total_energy <= 0.0:
        return np.zeros(3), 1.0
    length = np.linalg.norm(intensity, axis=0)  # (F, T)
    unit = np.divide(intensity, length, out=np.zeros_like(intensity), where=length > 0.0)
    v = (unit * energy_density).sum(axis=(1, 2)) / total_energy  # (3,)
    v_length = np.linalg.norm(v)
    direction = v / v_length if v_length > 0.0 else np.zeros(3)
    psi = 1.0 - np.linalg.norm(intensity.sum(axis=(1, 2))) / total_energy
    return direction, float(np.clip(psi, 0.0, 1.0))


def smooth_unit_vectors(vectors: np.ndarray, window: int = 3) -> np.ndarray:
    """Centred moving average of unit vectors (S, 3), window shrinking at the ends, renormalised.

    Zero vectors (silent segments) pull on no neighbour and take their neighbours' direction.
    """
    half = window // 2
    smoothed = np.array([vectors[max(0, i - half) : i + half + 1].mean(axis=0) for i in range(len(vectors))])
    length = np.linalg.norm(smoothed, axis=-1, keepdims=True)
    return np.divide(smoothed, length, out=np.zeros_like(smoothed), where=length > 0.0)


def distance_from_energy(
    energy: np.ndarray, reference_energy: float, reference_distance: float = 1.0
) -> np.ndarray:
    """Inverse-square law: distance = reference_distance · sqrt(reference_energy / energy).

    Clamped to [foa.MIN_DISTANCE_M, MAX_DISTANCE_M]; silence is MAX_DISTANCE_M.
    """
    energy = np.asarray(energy, dtype=np.float64)
    ratio = np.divide(reference_energy, energy, out=np.full_like(energy, np.inf), where=energy > 0.0)
    return np.clip(reference_distance * np.sqrt(ratio), MIN_DISTANCE_M, MAX_DISTANCE_M)


def proximity(distance: np.ndarray, diffuseness: np.ndarray, reference_distance: float = 1.0) -> np.ndarray:
    """Proximity in [0, 1]: (1 − ψ) · min(1, reference_distance / distance).

    App. A.2 combines the inverse-square law with diffuseness: the level term halves with every
    doubling of distance, and the direct fraction (1 − ψ) falls as a source recedes into a room's
    reverberation. 1 = as loud as the reference and fully direct.
    """
    level = np.minimum(1.0, reference_distance / np.asarray(distance, dtype=np.float64))
    return (1.0 - np.asarray(diffuseness, dtype=np.float64)) * level


def clip_doa_rad(foa: np.ndarray) -> tuple[float, float]:
    """Paper protocol: (azimuth_rad, elevation_rad) of a whole clip (4, N).

    I = mean over samples of (W·X, W·Y, W·Z); az = atan2(Iy, Ix), el = atan2(Iz, hypot(Ix, Iy)).
    """
    foa = _check_foa(foa, min_samples=1)
    ix, iy, iz = (foa[W] * foa[[X, Y, Z]]).mean(axis=1)
    return float(np.arctan2(iy, ix)), float(np.arctan2(iz, np.hypot(ix, iy)))


def _check_foa(foa: np.ndarray, min_samples: int) -> np.ndarray:
    foa = np.asarray(foa, dtype=np.float64)
    if foa.ndim != 2 or foa.shape[0] != 4:
        raise InputError(f"FOA must have shape (4, N), got {foa.shape}")
    if foa.shape[1] < min_samples:
        raise InputError(f"FOA too short for DoA: {foa.shape[1]} samples, need at least {min_samples}")
    check_finite(foa, "FOA")
    return foa


def check_finite(samples: np.ndarray, what: str) -> None:
    """InputError if audio holds NaN or infinite samples: they spread through every computation on it
    and end in a NaN result (or file) instead of an error."""
    if not np.all(np.isfinite(samples)):
        raise InputError(f"{what} holds NaN or infinite samples")


def _segment_bounds(n_samples: int, sample_rate: int, segment_s: float) -> list[tuple[int, int]]:
    """(start, stop) samples of each segment; a last partial segment stays if it is at least half a
    segment and one STFT frame long (a clip shorter than a segment is one segment)."""
    if sample_rate <= 0:
        raise InputError(f"sample rate must be positive, got {sample_rate}")
    if not (np.isfinite(segment_s) and round(segment_s * sample_rate) >= N_FFT):
        raise InputError(f"segment must be at least {N_FFT / sample_rate:.3f} s, got {segment_s} s")
    length = round(segment_s * sample_rate)
    bounds = [(start, start + length) for start in range(0, n_samples - length + 1, length)]
    rest_start = len(bounds) * length
    if not bounds or n_samples - rest_start >= max(length / 2, N_FFT):
        bounds.append((rest_start, n_samples))
    return bounds


def _check_settings(
    sample_rate: int,
    band_hz: tuple[float, float],
    smooth_window: int,
    reference_energy: float | None,
    reference_distance: float,
) -> None:
    low, high = band_hz
    if not 0.0 <= low < high <= sample_rate / 2:
        raise InputError(f"band must satisfy 0 <= low < high <= {sample_rate / 2:g} Hz, got {band_hz}")
    if high - low < sample_rate / N_FFT:
        raise InputError(f"band {band_hz} Hz is narrower than one STFT bin ({sample_rate / N_FFT:.1f} Hz)")
    if smooth_window < 1 or smooth_window % 2 == 0:
        raise InputError(f"smoothing window must be a positive odd number, got {smooth_window}")
    if not reference_distance > 0.0:
        raise InputError(f"reference distance must be positive, got {reference_distance}")
    if reference_energy is not None and not reference_energy > 0.0:
        raise InputError(f"reference energy must be positive, got {reference_energy}")

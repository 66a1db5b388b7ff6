"""DoA of both protocols (DESIGN §5b), diffuseness, distance, and the error metrics."""

import numpy as np
import pytest
from scipy.signal import butter, sosfiltfilt

from swansphere import foa
from swansphere.conventions import SAMPLE_RATE, wrap_degrees
from swansphere.doa import (
    MAX_DISTANCE_M,
    clip_doa_rad,
    distance_from_energy,
    segment_doa,
    smooth_unit_vectors,
)
from swansphere.errors import InputError
from swansphere.metrics import (
    angular_error_deg,
    azimuth_error_deg,
    elevation_error_deg,
    paper_doa_errors,
    trajectory_errors,
)
from swansphere.trajectory import Source


def band_noise(seconds: float, seed: int = 0) -> np.ndarray:
    sos = butter(4, [200.0, 12000.0], btype="band", fs=SAMPLE_RATE, output="sos")
    return sosfiltfilt(sos, np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE)))


def fibonacci_sphere(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n nearly uniform directions (azimuth, elevation) in degrees."""
    i = np.arange(n) + 0.5
    elevation = np.degrees(np.arcsin(1.0 - 2.0 * i / n))
    azimuth = wrap_degrees(np.degrees(np.pi * (1.0 + np.sqrt(5.0)) * i))
    return azimuth, elevation


def panning_source(start_azimuth: float, degrees_per_s: float, seconds: float, elevation: float) -> Source:
    times = np.arange(0.0, seconds + 1e-9, 0.25)
    points = [
        {"t": t, "azimuth": float(wrap_degrees(start_azimuth + degrees_per_s * t)), "elevation": elevation}
        for t in times
    ]
    return Source.model_validate({"class": "noise", "trajectory": points})


def test_plane_wave_is_not_diffuse():
    segments = segment_doa(foa.encode(band_noise(2.0), -60.0, 25.0))
    assert [s.diffuseness for s in segments] == pytest.approx([0.0, 0.0], abs=1e-9)
    assert all(s.proximity > 0.99 for s in segments)


def test_isotropic_noise_is_diffuse():
    azimuth, elevation = fibonacci_sphere(64)
    sources = np.random.default_rng(1).standard_normal((64, 2 * SAMPLE_RATE))  # uncorrelated
    diffuse = foa.encoding_gains(azimuth, elevation) @ sources  # (4, N)
    psi = [s.diffuseness for s in segment_doa(diffuse)]
    print("isotropic noise diffuseness per segment:", psi)
    assert min(psi) > 0.97


def test_moving_source_is_tracked():
    """90°/s pan through ±180°. Unsmoothed 1 s segments land on the segment's mean direction; with the
    paper's window-3 smoothing, 0.25 s segments track inside, and the two end segments (window shrunk
    to 2) lag by half a step, 11.25°."""
    source = panning_source(-135.0, 90.0, 4.0, elevation=10.0)
    scene = foa.encode_source(band_noise(4.0), source)

    unsmoothed = trajectory_errors(segment_doa(scene, smooth_window=1), source)
    print("1 s segments, no smoothing:", unsmoothed)
    assert max(unsmoothed["angular_deg"]) < 2.0

    smoothed = trajectory_errors(segment_doa(scene, segment_s=0.25), source)
    print("0.25 s segments, window 3:", smoothed["angular_deg_median"], smoothed["angular_deg"])
    assert max(smoothed["angular_deg"][1:-1]) < 2.0
    assert smoothed["angular_deg_median"] < 2.0
    assert max(smoothed["angular_deg"][0], smoothed["angular_deg"][-1]) < 13.0


def test_smoothing_does_not_average_across_the_wrap_to_zero():
    signal = band_noise(1.0)
    scene = np.concatenate([foa.encode(signal, az, 0.0) for az in (179.0, -179.0, 179.0, -179.0)], axis=1)
    azimuths = [s.azimuth for s in segment_doa(scene)]
    assert all(abs(az) > 178.0 for az in azimuths), azimuths


def test_silence_has_no_direction_and_pulls_on_no_neighbour():
    vectors = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    smoothed = smooth_unit_vectors(vectors, window=3)
    np.testing.assert_allclose(smoothed[1], [np.sqrt(0.5), np.sqrt(0.5), 0.0])  # neighbours only
    np.testing.assert_allclose(smoothed[3], [0.0, 1.0, 0.0])  # its neighbour, at full length
    np.testing.assert_allclose(smoothed[0], [1.0, 0.0, 0.0])
    loud, silent = segment_doa(
        np.concatenate([foa.encode(band_noise(1.0), 40.0, 0.0), np.zeros((4, SAMPLE_RATE))], 1)
    )
    assert silent.azimuth == pytest.approx(40.0)
    assert (silent.distance, silent.diffuseness, silent.proximity) == (MAX_DISTANCE_M, 1.0, 0.0)
    assert loud.distance == 1.0
    (silent,) = segment_doa(np.zeros((4, SAMPLE_RATE)))
    assert (silent.azimuth, silent.elevation, silent.energy, silent.diffuseness) == (0.0, 0.0, 0.0, 1.0)
    assert (silent.distance, silent.proximity) == (MAX_DISTANCE_M, 0.0)


def test_distance_follows_the_inverse_square_law():
    signal = band_noise(1.0)
    scene = foa.encode(np.concatenate([signal, signal / np.sqrt(2.0)]), 0.0, 0.0)  # energy halves
    first, second = segment_doa(scene)
    assert first.distance == pytest.approx(1.0)
    assert second.distance / first.distance == pytest.approx(np.sqrt(2.0), rel=1e-12)
    assert second.proximity == pytest.approx(1.0 / np.sqrt(2.0), rel=1e-9)
    np.testing.assert_allclose(distance_from_energy(np.array([4.0, 1.0]), 4.0, 2.0), [2.0, 4.0])


def test_last_partial_segment_kept_only_from_half_a_segment():
    assert len(segment_doa(foa.encode(band_noise(2.5), 0.0, 0.0))) == 3
    assert len(segment_doa(foa.encode(band_noise(2.4), 0.0, 0.0))) == 2
    segments = segment_doa(foa.encode(band_noise(2.6), 0.0, 0.0))
    assert (segments[-1].t0, segments[-1].t1) == pytest.approx((2.0, 2.6))


def test_bad_input_raises_input_error():
    signal = band_noise(1.0)
    with pytest.raises(InputError, match="shape"):
        segment_doa(np.zeros((2, SAMPLE_RATE)))
    with pytest.raises(InputError, match="too short"):
        segment_doa(np.zeros((4, 100)))
    with pytest.raises(InputError, match="segment"):
        segment_doa(foa.encode(signal, 0.0, 0.0), segment_s=0.0)
    with pytest.raises(InputError, match="band"):
        segment_doa(foa.encode(signal, 0.0, 0.0), band_hz=(500.0, 30000.0))
    with pytest.raises(InputError, match="window"):
        segment_doa(foa.encode(signal, 0.0, 0.0), smooth_window=2)


def test_paper_protocol_recovers_direction_in_radians():
    signal = band_noise(1.0)
    for azimuth, elevation in [(0.0, 0.0), (90.0, 0.0), (-135.0, 30.0), (60.0, -75.0)]:
        azimuth_rad, elevation_rad = clip_doa_rad(foa.encode(signal, azimuth, elevation))
        np.testing.assert_allclose([azimuth_rad, elevation_rad], np.radians([azimuth, elevation]), atol=1e-12)


def test_angle_metrics():
    assert azimuth_error_deg(350.0, 10.0) == pytest.approx(20.0)
    assert azimuth_error_deg(-179.0, 179.0) == pytest.approx(2.0)
    assert azimuth_error_deg(0.0, 180.0) == pytest.approx(180.0)
    assert elevation_error_deg(-30.0, 45.0) == pytest.approx(75.0)
    assert angular_error_deg(0.0, 0.0, 90.0, 0.0) == pytest.approx(90.0)
    assert angular_error_deg(0.0, 0.0, 180.0, 0.0) == pytest.approx(180.0)
    assert angular_error_deg(12.0, 90.0, -100.0, 90.0) == pytest.approx(0.0, abs=1e-6)
    assert angular_error_deg(0.0, 0.0, 0.0, -45.0) == pytest.approx(45.0)
    assert angular_error_deg(30.0, 1e-7, 30.0, 0.0) == pytest.approx(1e-7, rel=1e-6)
    # Spherical law of cosines on a generic pair.
    a1, e1, a2, e2 = np.radians([10.0, 20.0, 40.0, -30.0])
    expected = np.degrees(np.arccos(np.sin(e1) * np.sin(e2) + np.cos(e1) * np.cos(e2) * np.cos(a1 - a2)))
    assert angular_error_deg(10.0, 20.0, 40.0, -30.0) == pytest.approx(expected)


def test_paper_doa_errors_are_means_over_clips_in_radians():
    signal = band_noise(0.5)
    generated = [foa.encode(signal, 90.0, 0.0), foa.encode(signal, 0.0, 30.0)]
    reference = [foa.encode(signal, 0.0, 0.0), foa.encode(signal, 0.0, 0.0)]
    errors = paper_doa_errors(generated, reference)
    assert errors["delta_azimuth_rad"] == pytest.approx(np.pi / 4)  # (π/2 + 0) / 2
    assert errors["delta_elevation_rad"] == pytest.approx(np.radians(15.0))  # (0 + 30°) / 2
    assert errors["delta_angular_rad"] == pytest.approx(np.radians(60.0))  # (90° + 30°) / 2
    with pytest.raises(InputError):
        paper_doa_errors(generated, reference[:1])

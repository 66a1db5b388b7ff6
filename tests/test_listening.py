"""Stereo and binaural renders of FOA: levels and timing at the two ears point to the source."""

import numpy as np
import pytest
from scipy.signal import butter, correlate, sosfilt, sosfiltfilt

from swansphere import foa
from swansphere.conventions import SAMPLE_RATE, direction_to_vector
from swansphere.errors import InputError
from swansphere.listening import (
    CUBE_LAYOUT,
    HEAD_RADIUS_M,
    SPEED_OF_SOUND_M_S,
    ear_filters,
    max_re_decoder,
    to_binaural,
    to_stereo,
)

NOISE = sosfiltfilt(
    butter(4, [100.0, 16000.0], btype="band", fs=SAMPLE_RATE, output="sos"),
    np.random.default_rng(5).standard_normal(SAMPLE_RATE),
)


def ild_db(left: np.ndarray, right: np.ndarray, above_hz: float = 4000.0) -> float:
    """Left-over-right level difference above `above_hz`."""
    sos = butter(4, above_hz, btype="high", fs=SAMPLE_RATE, output="sos")
    return float(10 * np.log10(np.mean(sosfilt(sos, left) ** 2) / np.mean(sosfilt(sos, right) ** 2)))


def itd_ms(left: np.ndarray, right: np.ndarray) -> float:
    """Lag of the right ear behind the left at the cross-correlation peak (+ = left leads), within ±1.5 ms."""
    correlation = correlate(right, left, mode="full", method="fft")
    lags = np.arange(-len(left) + 1, len(right))
    near = np.abs(lags) <= 1.5e-3 * SAMPLE_RATE
    return float(lags[near][np.argmax(correlation[near])] / SAMPLE_RATE * 1000.0)


def test_stereo_cardioids_pick_left_and_right():
    left, right = to_stereo(foa.encode(NOISE, 90.0, 0.0))
    np.testing.assert_allclose(left, NOISE, atol=1e-12)  # on axis: full gain
    np.testing.assert_allclose(right, 0.0, atol=1e-12)  # behind the right cardioid: null
    left, right = to_stereo(foa.encode(NOISE, 0.0, 0.0))
    np.testing.assert_allclose(left, right, atol=1e-12)
    np.testing.assert_allclose(left, 0.5 * NOISE, atol=1e-12)  # 0.5·(1 + cos 90°)
    left, right = to_stereo(foa.encode(NOISE, -30.0, 0.0), angle_deg=30.0)
    np.testing.assert_allclose(right, NOISE, atol=1e-12)
    np.testing.assert_allclose(left, 0.5 * (1 + np.cos(np.radians(60.0))) * NOISE, atol=1e-12)


def test_max_re_decoder_keeps_pressure_and_points_energy_at_the_source():
    decoder = max_re_decoder(CUBE_LAYOUT)
    for azimuth, elevation in [(0.0, 0.0), (90.0, 0.0), (-150.0, 40.0)]:
        gains = decoder @ foa.encoding_gains(azimuth, elevation)  # (L,)
        assert gains.sum() == pytest.approx(1.0)
        energy_vector = (gains**2) @ CUBE_LAYOUT / np.sum(gains**2)
        cosine = energy_vector @ direction_to_vector(azimuth, elevation) / np.linalg.norm(energy_vector)
        assert cosine > 0.99


def test_head_model_alone_gives_woodworth_itd_and_head_shadow():
    """One source on the left ear axis through the Brown–Duda filters: ITD (a/c)(1 + π/2) = 0.66 ms."""
    left_filter, right_filter = ear_filters(direction_to_vector(90.0, 0.0))
    left, right = np.convolve(NOISE, left_filter), np.convolve(NOISE, right_filter)
    itd, ild = itd_ms(left, right), ild_db(left, right)
    print(f"head model, source at +90°: ITD {itd:.3f} ms, ILD above 4 kHz {ild:.1f} dB")
    assert 0.6 <= itd <= 0.7
    assert HEAD_RADIUS_M / SPEED_OF_SOUND_M_S * (1 + np.pi / 2) * 1000 == pytest.approx(0.656, abs=1e-3)
    assert ild > 10.0


def test_binaural_left_source_is_louder_and_earlier_on_the_left():
    """Through the first-order cube decode, a source at +90° reaches the ears through the four left
    speakers only, 54.7° off the ear axis: ITD = (a/c)·(cos 54.7° + (125.3° − 90°) in rad) = 0.30 ms."""
    binaural = to_binaural(foa.encode(NOISE, 90.0, 0.0))
    assert binaural.shape == (2, len(NOISE))
    itd, ild = itd_ms(*binaural), ild_db(*binaural)
    off_axis = np.arccos(1 / np.sqrt(3))
    expected_ms = (
        HEAD_RADIUS_M / SPEED_OF_SOUND_M_S * (np.cos(off_axis) + (np.pi - off_axis) - np.pi / 2) * 1000
    )
    print(
        f"binaural, source at +90°: ITD {itd:.3f} ms (model {expected_ms:.3f} ms), "
        f"ILD above 4 kHz {ild:.1f} dB"
    )
    assert ild > 3.0
    assert itd > 0.0
    assert itd == pytest.approx(expected_ms, abs=1.5 / SAMPLE_RATE * 1000)
    mirrored = to_binaural(foa.encode(NOISE, -90.0, 0.0))
    np.testing.assert_allclose(mirrored[::-1], binaural, atol=1e-9)


def test_binaural_front_source_gives_equal_ears():
    left, right = to_binaural(foa.encode(NOISE, 0.0, 0.0))
    np.testing.assert_allclose(left, right, atol=1e-9)
    assert np.std(left) > 0.1 * np.std(NOISE)


def test_renders_reject_non_foa():
    with pytest.raises(InputError):
        to_binaural(np.zeros((2, 100)))
    with pytest.raises(InputError):
        to_stereo(np.zeros(100))

"""FOA core properties: encode/decode round trip, rotations, FuMa, pseudo-FOA, audio-video yaw consistency."""

from functools import lru_cache

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import butter, sosfiltfilt

from swansphere import equirect, foa
from swansphere.conventions import SAMPLE_RATE, W, X, Y, Z, direction_to_vector, vector_to_direction
from swansphere.doa import segment_doa
from swansphere.metrics import angular_error_deg, azimuth_error_deg
from swansphere.trajectory import Source

AZIMUTH = st.floats(-180.0, 180.0)
ELEVATION = st.floats(-89.0, 89.0)
ANGLE = st.floats(-360.0, 360.0)


@lru_cache(maxsize=1)
def band_noise() -> np.ndarray:
    """2 s of seeded noise, 200-12000 Hz."""
    sos = butter(4, [200.0, 12000.0], btype="band", fs=SAMPLE_RATE, output="sos")
    return sosfiltfilt(sos, np.random.default_rng(7).standard_normal(2 * SAMPLE_RATE))


@settings(max_examples=50, deadline=None)
@given(azimuth=AZIMUTH, elevation=ELEVATION)
def test_static_source_decodes_to_its_direction(azimuth, elevation):
    segments = segment_doa(foa.encode(band_noise(), azimuth, elevation))
    errors = [angular_error_deg(s.azimuth, s.elevation, azimuth, elevation) for s in segments]
    assert max(errors) < 1.0


@settings(max_examples=50, deadline=None)
@given(a=st.tuples(ANGLE, ANGLE, ANGLE), b=st.tuples(ANGLE, ANGLE, ANGLE))
def test_rotations_compose_like_their_matrices(a, b):
    ra, rb = foa.rotation_matrix(*a), foa.rotation_matrix(*b)
    np.testing.assert_allclose(
        foa.foa_rotation(ra) @ foa.foa_rotation(rb), foa.foa_rotation(ra @ rb), atol=1e-12
    )


@settings(max_examples=50, deadline=None)
@given(a=ANGLE, b=ANGLE)
def test_yaw_a_then_yaw_b_is_yaw_a_plus_b(a, b):
    signal = band_noise()[:256]
    scene = foa.encode(signal, 30.0, 20.0)
    np.testing.assert_allclose(
        foa.rotate(foa.rotate(scene, yaw=a), yaw=b), foa.rotate(scene, yaw=a + b), atol=1e-12
    )


@settings(max_examples=50, deadline=None)
@given(angles=st.tuples(ANGLE, ANGLE, ANGLE))
def test_rotation_inverts_with_its_transpose(angles):
    rotation = foa.rotation_matrix(*angles)
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)
    scene = np.random.default_rng(0).uniform(-1.0, 1.0, size=(4, 256))
    back = foa.foa_rotation(rotation.T) @ foa.rotate(scene, *angles)
    assert np.max(np.abs(back - scene)) < 1e-12


@settings(max_examples=50, deadline=None)
@given(azimuth=AZIMUTH, elevation=ELEVATION, angles=st.tuples(ANGLE, ANGLE, ANGLE))
def test_rotating_an_encoded_source_encodes_the_rotated_direction(azimuth, elevation, angles):
    signal = band_noise()[:256]
    rotated_direction = foa.rotation_matrix(*angles) @ direction_to_vector(azimuth, elevation)
    expected = foa.encode(signal, *vector_to_direction(rotated_direction))
    np.testing.assert_allclose(
        foa.rotate(foa.encode(signal, azimuth, elevation), *angles), expected, atol=1e-12
    )


def test_yaw_convention_matches_design():
    """DESIGN §4: X' = X·cosΔ − Y·sinΔ, Y' = X·sinΔ + Y·cosΔ; a source at 10° moves to 10° + Δ."""
    scene = np.random.default_rng(1).uniform(-1.0, 1.0, size=(4, 64))
    delta = np.radians(35.0)
    rotated = foa.rotate(scene, yaw=35.0)
    np.testing.assert_allclose(rotated[X], scene[X] * np.cos(delta) - scene[Y] * np.sin(delta), atol=1e-15)
    np.testing.assert_allclose(rotated[Y], scene[X] * np.sin(delta) + scene[Y] * np.cos(delta), atol=1e-15)
    np.testing.assert_array_equal(rotated[[W, Z]], scene[[W, Z]])
    (segment,) = segment_doa(foa.rotate(foa.encode(band_noise()[:SAMPLE_RATE], 10.0, 0.0), yaw=35.0))
    assert abs(segment.azimuth - 45.0) < 0.01


def test_fuma_round_trip_and_w_convention():
    """Y, Z, X are only reordered, so they must come back bit-exact (assert_array_equal); W is scaled by
    1/√2 and back by √2, two roundings of at most half an ulp each, so |error| <= 2 ulp < 1e-15 on [-1, 1]."""
    fuma = np.random.default_rng(2).uniform(-1.0, 1.0, size=(4, 4096))
    ambix = foa.fuma_to_ambix(fuma)
    back = foa.ambix_to_fuma(ambix)
    np.testing.assert_array_equal(back[1:], fuma[1:])
    assert np.max(np.abs(back[0] - fuma[0])) < 1e-15
    np.testing.assert_allclose(foa.ambix_to_fuma(ambix)[0], ambix[W] / np.sqrt(2.0), rtol=1e-15)
    np.testing.assert_array_equal(ambix[[X, Y, Z]], fuma[1:])  # FuMa W, X, Y, Z -> AmbiX W, Y, Z, X


def test_pseudo_foa_matches_appendix_b3():
    rng = np.random.default_rng(3)
    stereo = rng.uniform(-0.5, 0.5, size=(2, 1000))
    left, right = stereo
    chosen = set()
    for seed in range(30):
        pseudo, name = foa.pseudo_foa(stereo, np.random.default_rng(seed))
        np.testing.assert_array_equal(pseudo[W], left + right)
        directional = {"X": X, "Y": Y, "Z": Z}
        for channel_name, channel in directional.items():
            expected = left - right if channel_name == name else np.zeros_like(left)
            np.testing.assert_array_equal(pseudo[channel], expected)
        again, name_again = foa.pseudo_foa(stereo, np.random.default_rng(seed))
        assert name_again == name
        np.testing.assert_array_equal(again, pseudo)
        chosen.add(name)
    assert chosen == {"X", "Y", "Z"}
    mono = stereo[0]
    pseudo_mono, _ = foa.pseudo_foa(mono, np.random.default_rng(0))
    np.testing.assert_array_equal(pseudo_mono[W], mono)
    np.testing.assert_array_equal(pseudo_mono[[X, Y, Z]], 0.0)


def _blob_frame(azimuth: float, elevation: float, width: int = 256) -> np.ndarray:
    """Equirect RGB frame (H, W, 3), dark, with a bright Gaussian blob looking at the direction."""
    height = width // 2
    column = equirect.azimuth_column(azimuth, width)
    row = equirect.elevation_row(elevation, height)
    u = np.arange(width)
    du = np.minimum(np.abs(u - column), width - np.abs(u - column))  # columns wrap around
    dv = np.arange(height)[:, None] - row
    brightness = np.exp(-(du[None, :] ** 2 + dv**2) / (2 * 2.0**2))
    return np.repeat((255 * brightness)[..., None], 3, axis=-1).astype(np.uint8)


def test_rotated_audio_doa_and_video_blob_move_together():
    width = 256
    azimuth, elevation = 30.0, 15.0
    frame = _blob_frame(azimuth, elevation, width)
    scene = foa.encode(band_noise()[:SAMPLE_RATE], azimuth, elevation)
    for delta in (-170.0, -90.0, -33.0, 0.0, 45.0, 120.0, 179.0):
        (segment,) = segment_doa(foa.rotate(scene, yaw=delta))
        rolled = equirect.roll_yaw(frame, delta)
        blob_column = int(np.argmax(rolled[..., 0].sum(axis=0)))
        video_azimuth = float(equirect.column_azimuth(blob_column, width))
        assert azimuth_error_deg(segment.azimuth, video_azimuth) <= 360.0 / width + 1.0, delta
        assert azimuth_error_deg(segment.azimuth, azimuth + delta) < 0.01
        assert abs(segment.elevation - elevation) < 0.01


def test_source_at_interpolates_azimuth_on_the_shortest_arc():
    source = Source.model_validate(
        {
            "class": "x",
            "trajectory": [
                {"t": 0.0, "azimuth": 170.0, "elevation": 0.0},
                {"t": 1.0, "azimuth": -170.0, "elevation": 0.0},
            ],
        }
    )
    azimuth, _, _ = source.at(np.linspace(0.0, 1.0, 21))
    assert np.all(np.abs(azimuth) >= 170.0 - 1e-9)
    assert source.at(np.array([0.5]))[0][0] == 180.0
    np.testing.assert_allclose(source.at(np.array([0.25, 0.75]))[0], [175.0, -175.0])

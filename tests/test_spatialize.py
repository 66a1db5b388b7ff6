"""`swansphere spatialize`: mono/stereo audio rendered along a trajectory into AmbiX FOA."""

import json

import numpy as np
import pytest
import soundfile as sf

from swansphere.cli import main
from swansphere.doa import segment_doa
from swansphere.metrics import trajectory_errors
from swansphere.trajectory import POINT_INTERVAL_S, Scene, Source, TrajectoryPoint, load_scene

SECONDS = 6.0


def _noise(seconds: float, sample_rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """(N, channels) band-limited-enough noise at a moderate level."""
    return 0.1 * np.random.default_rng(seed).standard_normal((int(seconds * sample_rate), channels))


@pytest.fixture
def trajectory(tmp_path):
    """A source panning from 60° to -60° over 6 s at 1.5 m, 20° up, points every 0.25 s."""
    times = np.arange(int(SECONDS / POINT_INTERVAL_S) + 1) * POINT_INTERVAL_S
    points = [
        TrajectoryPoint(t=t, azimuth=60.0 - 20.0 * t, elevation=20.0, distance=1.5) for t in times.tolist()
    ]
    scene = Scene(duration=SECONDS, sources=[Source(sound_class="speech", trajectory=points)], caption="x")
    path = tmp_path / "t.json"
    path.write_text(scene.to_json())
    return path


def _spatialize(capsys, wav, trajectory, out) -> dict:
    code = main(["spatialize", str(wav), "--trajectory", str(trajectory), "--out", str(out), "--json"])
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_mono_follows_the_trajectory(capsys, tmp_path, trajectory):
    sf.write(tmp_path / "in.wav", _noise(SECONDS, 44100), 44100, subtype="FLOAT")
    summary = _spatialize(capsys, tmp_path / "in.wav", trajectory, tmp_path / "out.wav")
    foa, _ = sf.read(tmp_path / "out.wav", always_2d=True)
    info = sf.info(str(tmp_path / "out.wav"))
    assert (info.channels, info.samplerate, info.subtype, foa.shape[0]) == (4, 44100, "FLOAT", 6 * 44100)
    assert summary["class"] == "speech" and summary["input_channels"] == 1
    errors = trajectory_errors(segment_doa(foa.T), load_scene(trajectory).sources[0])
    print(f"spatialize: segment DoA errors along a 120° pan (deg): {np.round(errors['angular_deg'], 2)}")
    assert errors["angular_deg_median"] < 2.0
    # Encoding W = s·(1/r): the omni channel is the input at the 1.5 m distance gain.
    np.testing.assert_allclose(foa[:, 0], _noise(SECONDS, 44100)[:, 0] / 1.5, atol=1e-6)


def test_stereo_is_downmixed(capsys, tmp_path, trajectory):
    stereo = _noise(SECONDS, 44100, channels=2, seed=3)
    sf.write(tmp_path / "stereo.wav", stereo, 44100, subtype="FLOAT")
    sf.write(tmp_path / "mono.wav", stereo.mean(axis=1), 44100, subtype="FLOAT")
    _spatialize(capsys, tmp_path / "stereo.wav", trajectory, tmp_path / "a.wav")
    _spatialize(capsys, tmp_path / "mono.wav", trajectory, tmp_path / "b.wav")
    np.testing.assert_allclose(sf.read(tmp_path / "a.wav")[0], sf.read(tmp_path / "b.wav")[0], atol=1e-7)


def test_other_rates_are_resampled(capsys, tmp_path, trajectory):
    sf.write(tmp_path / "slow.wav", _noise(2.0, 22050), 22050)
    summary = _spatialize(capsys, tmp_path / "slow.wav", trajectory, tmp_path / "out.wav")
    info = sf.info(str(tmp_path / "out.wav"))
    assert (info.samplerate, info.frames, info.channels) == (44100, 2 * 44100, 4)
    assert summary["input_sample_rate"] == 22050


@pytest.mark.parametrize(
    "case", ["missing", "not_audio", "malformed_json", "no_sources", "missing_json", "flac"]
)
def test_bad_inputs_exit_2_with_one_line(capsys, tmp_path, trajectory, case):
    wav, out = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(wav, _noise(1.0, 44100), 44100)
    if case == "missing":
        wav = tmp_path / "nope.wav"
    elif case == "not_audio":
        wav.write_text("this is not audio")
    elif case == "malformed_json":
        trajectory.write_text('{"duration": 1, "sources": [{"class": "dog", "trajectory": [{"t": 0}]}]')
    elif case == "no_sources":
        trajectory.write_text(Scene(duration=1.0).to_json())
    elif case == "missing_json":
        trajectory = tmp_path / "none.json"
    elif case == "flac":
        out = tmp_path / "out.flac"
    code = main(["spatialize", str(wav), "--trajectory", str(trajectory), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("swansphere spatialize: error:") and err.count("\n") == 1
    assert not out.exists()

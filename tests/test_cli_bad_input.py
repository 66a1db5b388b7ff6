"""Bad input to `spatialize`, `client` and `bench`: exit code 2 (1 for a missing gateway) and one line
on stderr, found before any work is done."""

import numpy as np
import pytest
import soundfile as sf

from swansphere.cli import bench as bench_command
from swansphere.cli import main
from swansphere.trajectory import Scene, Source, TrajectoryPoint


def _one_line(capsys, argv: list[str], reason: str, code: int = 2) -> None:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and reason in err and "Traceback" not in err, err


@pytest.fixture
def spatialize_inputs(tmp_path) -> tuple[str, str]:
    """A 0.5 s mono WAV and a one-point trajectory JSON."""
    wav, trajectory = tmp_path / "in.wav", tmp_path / "t.json"
    sf.write(wav, np.zeros(22050), 44100, subtype="FLOAT")
    point = TrajectoryPoint(t=0.0, azimuth=30.0, elevation=0.0)
    source = Source(sound_class="dog", trajectory=[point])
    trajectory.write_text(Scene(duration=0.5, sources=[source]).to_json())
    return str(wav), str(trajectory)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unwritable", "/proc/x.wav: cannot write"),
        ("folder", "got the folder"),
        ("mp3", "--out must be a .wav file"),
        ("nan_sample", "in.wav: the input audio holds NaN or infinite samples"),
        ("not_utf8", "t.json: trajectory JSON is not UTF-8 text"),
    ],
)
def test_spatialize_bad_input(case, reason, spatialize_inputs, tmp_path, capsys):
    wav, trajectory = spatialize_inputs
    out = str(tmp_path / "out.wav")
    if case == "unwritable":
        out = "/proc/x.wav"
    elif case == "folder":
        out = str(tmp_path / "folder.wav")
        (tmp_path / "folder.wav").mkdir()
    elif case == "mp3":
        out = str(tmp_path / "out.mp3")
    elif case == "nan_sample":
        samples = np.zeros(22050)
        samples[100] = np.nan
        sf.write(wav, samples, 44100, subtype="FLOAT")
    elif case == "not_utf8":
        (tmp_path / "t.json").write_bytes(b'{"duration": 1, "caption": "\xff\xfe"}')
    _one_line(capsys, ["spatialize", wav, "--trajectory", trajectory, "--out", out], reason)
    assert not (tmp_path / "out.wav").exists() and not (tmp_path / "out.mp3").exists()


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (["--text", "x", "--seconds", "nan"], "--seconds must be > 0 and finite, got nan"),
        (["--text", "x", "--seconds", "inf"], "--seconds must be > 0 and finite, got inf"),
        (["--seconds", "1", "--out", "/proc/x.wav"], "/proc/x.wav: cannot write"),
        (["--seconds", "1", "--out", "{tmp}/x.mp3"], "--out must be a .wav file"),
        (["--video", "-", "--frame-size", "1000000000x500000000"], "width must be at most 7680"),
        (["--seconds", "1", "--tls-ca", "{tmp}/ca.pem"], "tls_ca: {tmp}/ca.pem is not a PEM certificate"),
        (
            ["--seconds", "1", "--tls-ca", "{tmp}/missing.pem"],
            "{tmp}/missing.pem: no such certificate or key file",
        ),
    ],
)
def test_client_bad_input_is_refused_before_connecting(arguments, reason, closed_port, tmp_path, capsys):
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    argv = ["client", "--target", f"127.0.0.1:{closed_port}", "--out", str(tmp_path / "out.wav")]
    _one_line(capsys, [*argv, *(a.format(tmp=tmp_path) for a in arguments)], reason.format(tmp=tmp_path))
    assert not (tmp_path / "out.wav").exists()


def test_bench_without_a_gateway_is_one_line_before_the_embedded_work(closed_port, capsys, monkeypatch):
    def no_work(*_args: object) -> None:
        raise AssertionError("the bench ran without a gateway")

    monkeypatch.setattr(bench_command, "READY_TIMEOUT_S", 0.5)
    monkeypatch.setattr(bench_command, "run_service_bench", no_work)
    argv = ["bench", "--target", f"127.0.0.1:{closed_port}", "--json"]
    _one_line(capsys, argv, f"UNAVAILABLE: no gateway accepted a connection at 127.0.0.1:{closed_port}", 1)

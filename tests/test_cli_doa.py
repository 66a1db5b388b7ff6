"""`swansphere doa`: JSON and human output, both protocols, and one-line errors for bad files."""

import json
import subprocess
import sys

import numpy as np
import pytest

from swansphere import foa
from swansphere.audio import write_audio
from swansphere.cli import main
from swansphere.conventions import SAMPLE_RATE

SEGMENT_KEYS = {"t0", "t1", "azimuth", "elevation", "energy", "diffuseness", "distance", "proximity"}


@pytest.fixture
def foa_wav(tmp_path):
    """2.5 s of noise from azimuth 60°, elevation 20°, as a 4-channel AmbiX WAV."""
    signal = 0.3 * np.random.default_rng(4).standard_normal(int(2.5 * SAMPLE_RATE))
    path = tmp_path / "scene.wav"
    write_audio(path, foa.encode(signal, 60.0, 20.0), SAMPLE_RATE)
    return path


def test_segment_protocol_json(foa_wav, capsys):
    assert main(["doa", str(foa_wav), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["protocol"], result["unit"]) == ("segment", "degree")
    assert len(result["segments"]) == 3  # 1 s, 1 s and the 0.5 s remainder
    for segment in result["segments"]:
        assert set(segment) == SEGMENT_KEYS
        assert segment["azimuth"] == pytest.approx(60.0, abs=0.5)
        assert segment["elevation"] == pytest.approx(20.0, abs=0.5)


def test_segment_length_and_human_output(foa_wav, capsys):
    assert main(["doa", str(foa_wav), "--segment", "0.5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5
    assert all("azimuth" in line and "+60.0°" in line for line in lines)


def test_paper_protocol_json_in_radians(foa_wav, capsys):
    assert main(["doa", str(foa_wav), "--protocol", "paper", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"protocol", "unit", "azimuth_rad", "elevation_rad"}
    assert (result["protocol"], result["unit"]) == ("paper", "radian")
    np.testing.assert_allclose(
        [result["azimuth_rad"], result["elevation_rad"]], np.radians([60.0, 20.0]), atol=1e-4
    )


def test_real_subprocess(foa_wav):
    done = subprocess.run(
        [sys.executable, "-m", "swansphere", "doa", str(foa_wav), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    segments = json.loads(done.stdout)["segments"]
    assert segments[0]["azimuth"] == pytest.approx(60.0, abs=0.5)


@pytest.mark.parametrize("kind", ["missing", "text", "stereo", "bad_segment"])
def test_bad_input_exits_2_with_one_line(kind, tmp_path, foa_wav, capsys):
    path, extra = tmp_path / f"{kind}.wav", []
    if kind == "text":
        path.write_text("not audio\n")
    elif kind == "stereo":
        write_audio(path, np.zeros((2, SAMPLE_RATE)), SAMPLE_RATE)
    elif kind == "bad_segment":
        path, extra = foa_wav, ["--segment", "0"]
    assert main(["doa", str(path), *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert "Traceback" not in captured.err
    assert captured.err.startswith("swansphere doa: error:")

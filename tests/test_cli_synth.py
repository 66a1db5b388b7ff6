"""`swansphere synth`: files, manifest, determinism by hash, S3 destination, bad arguments."""

import hashlib
import json

import numpy as np
import pytest
import soundfile as sf

from swansphere import equirect, storage
from swansphere.cli import main
from swansphere.synth.looks import LOOKS
from swansphere.trajectory import load_scene
from swansphere.video import read_video

SMALL = ["--seconds", "2", "--width", "64"]


def _synth(capsys, out, *extra) -> list[dict]:
    assert main(["synth", "--out", str(out), *SMALL, "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def _hashes(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def three_clips(tmp_path_factory):
    """Seed 4, 3 clips; shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("three")
    assert main(["synth", "--out", str(out), *SMALL, "--clips", "3", "--seed", "4"]) == 0
    return out


def test_layout_and_manifest(three_clips):
    names = [f"clip_{i:05d}" for i in range(3)]
    expected = {f"{n}.{ext}" for n in names for ext in ("mp4", "wav", "json")} | {"manifest.jsonl"}
    assert {p.name for p in three_clips.iterdir()} == expected
    rows = [json.loads(line) for line in (three_clips / "manifest.jsonl").read_text().splitlines()]
    assert [row["name"] for row in rows] == names
    for row in rows:
        scene = load_scene(three_clips / row["trajectory"])
        assert (row["video"], row["audio"]) == (f"{row['name']}.mp4", f"{row['name']}.wav")
        assert (row["duration"], row["sample_rate"], row["fps"]) == (2.0, 44100, 4)
        assert (row["width"], row["height"]) == (64, 32)
        assert row["n_sources"] == len(scene.sources) == len(row["classes"]) == len(row["motions"])
        assert row["classes"] == [s.sound_class for s in scene.sources]
        assert row["caption"] == scene.caption != ""
        assert (row["reverb"], row["rt60_s"], row["ambience_db"], row["seed"]) == (True, 0.4, -30.0, 4)


def test_audio_and_video_formats(three_clips):
    for index in range(3):
        name = f"clip_{index:05d}"
        info = sf.info(str(three_clips / f"{name}.wav"))
        assert (info.channels, info.samplerate, info.frames, info.subtype) == (4, 44100, 2 * 44100, "FLOAT")
        frames, duration = read_video(three_clips / f"{name}.mp4")
        assert frames.shape == (8, 32, 64, 3) and duration == pytest.approx(2.0)
        assert load_scene(three_clips / f"{name}.json").duration == 2.0


def test_objects_in_the_decoded_video_sit_at_the_true_direction(three_clips):
    """After H.264 round trip, each class's colour centres on its true column (sources may overlap)."""
    checked = 0
    for index in range(3):
        scene = load_scene(three_clips / f"clip_{index:05d}.json")
        frames, _ = read_video(three_clips / f"clip_{index:05d}.mp4")
        for source in scene.sources:
            azimuth, _, _ = source.at(np.arange(len(frames)) / 4.0)
            colour = np.array(LOOKS[source.sound_class].colour, dtype=float)
            for k, frame in enumerate(frames):
                columns = np.nonzero(np.linalg.norm(frame - colour, axis=-1) < 30.0)[1]
                if len(columns) < 4:  # hidden behind a nearer source
                    continue
                angle = 2 * np.pi * (columns + 0.5) / 64
                centre = np.angle(np.exp(1j * angle).mean()) * 64 / (2 * np.pi) - 0.5
                error = (centre - equirect.azimuth_column(azimuth[k], 64) + 32) % 64 - 32
                assert abs(error) < 1.5
                checked += 1
    assert checked >= 20


def test_same_seed_same_bytes_and_clip_k_independent_of_count(capsys, tmp_path, three_clips):
    rows = _synth(capsys, tmp_path / "two", "--clips", "2", "--seed", "4")
    assert [row["name"] for row in rows] == ["clip_00000", "clip_00001"]
    two, three = _hashes(tmp_path / "two"), _hashes(three_clips)
    for name, digest in two.items():
        if name != "manifest.jsonl":
            assert three[name] == digest, f"{name} differs between --clips 2 and --clips 3"
    manifest_three = (three_clips / "manifest.jsonl").read_text().splitlines()
    assert (tmp_path / "two" / "manifest.jsonl").read_text().splitlines() == manifest_three[:2]


def test_worker_processes_write_the_same_bytes(capsys, tmp_path, three_clips):
    rows = _synth(capsys, tmp_path / "parallel", "--clips", "3", "--seed", "4", "--workers", "2")
    assert [row["index"] for row in rows] == [0, 1, 2]
    assert _hashes(tmp_path / "parallel") == _hashes(three_clips)


def test_different_seed_different_clips(capsys, tmp_path, three_clips):
    _synth(capsys, tmp_path / "other", "--clips", "1", "--seed", "5")
    other, base = _hashes(tmp_path / "other"), _hashes(three_clips)
    for ext in ("mp4", "wav"):
        assert other[f"clip_00000.{ext}"] != base[f"clip_00000.{ext}"]


def test_options_reach_the_manifest(capsys, tmp_path):
    rows = _synth(
        capsys, tmp_path, "--clips", "1", "--no-reverb", "--no-ambience", "--max-sources", "1", "--seed", "2"
    )
    row = rows[0]
    assert (row["reverb"], row["rt60_s"], row["ambience_db"], row["n_sources"]) == (False, None, None, 1)
    rows = _synth(capsys, tmp_path / "b", "--clips", "1", "--ambience", "-20", "--seconds", "1")
    assert (rows[0]["ambience_db"], rows[0]["duration"]) == (-20.0, 1.0)


@pytest.mark.servers
def test_s3_destination_matches_local_run(capsys, tmp_path, s3_bucket):
    local = tmp_path / "local"
    rows_local = _synth(capsys, local, "--clips", "2", "--seed", "6")
    rows_s3 = _synth(capsys, f"s3://{s3_bucket}/synth/v1", "--clips", "2", "--seed", "6")
    assert rows_s3 == rows_local
    for path in sorted(local.iterdir()):
        uri = storage.join(f"s3://{s3_bucket}/synth/v1", path.name)
        assert storage.exists(uri)
        assert storage.read_bytes(uri) == path.read_bytes(), f"{path.name} differs on S3"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--clips", "0"], "--clips must be at least 1"),
        (["--clips", "1", "--seconds", "0"], "--seconds must be > 0"),
        (["--clips", "1", "--seconds", "-2"], "--seconds must be > 0"),
        (["--clips", "1", "--seconds", "nan"], "--seconds must be > 0 and finite, got nan"),
        (["--clips", "1", "--seconds", "inf"], "--seconds must be > 0 and finite, got inf"),
        (["--clips", "1", "--seconds", "1e9"], "seconds must be a positive multiple of 0.25 up to 600"),
        (["--clips", "1", "--seconds", "0.3"], "seconds must be a positive multiple of 0.25"),
        (["--clips", "1", "--width", "100000"], "width must be at most 7680"),
        (["--clips", "1", "--width", "63"], "width must be even"),
        (["--clips", "1", "--width", "16"], "at least 32"),
        (["--clips", "1", "--max-sources", "0"], "max_sources"),
        (["--clips", "1", "--seed", "-1"], "--seed must be >= 0"),
        (["--clips", "1", "--ambience", "3"], "ambience_db"),
        (["--clips", "x"], "invalid int value"),
        (["--clips", "1", "--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, tmp_path, args, fragment):
    assert _exit_code(["synth", "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists(), "nothing written on bad input"


def _exit_code(argv: list[str]) -> int:
    """The CLI's exit code, whether argparse exits or `main` returns."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code

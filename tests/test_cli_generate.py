"""`swansphere generate`, `info` and `demo` through the CLI (embedded mode, tiny preset)."""

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load, save

from swansphere.checkpoint import SHIPPED_TINY, read_metadata
from swansphere.cli import generate as generate_command
from swansphere.cli import main
from swansphere.models.swansphere import preset
from swansphere.video import write_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    """A 2 s equirectangular clip at 4 fps."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    frames = (np.random.default_rng(1).random((8, 64, 128, 3)) * 255).astype(np.uint8)
    write_video(path, frames)
    return str(path)


def test_random_init_generate_writes_foa_of_the_video_duration(clip, tmp_path, capsys):
    out = tmp_path / "out.wav"
    code = main(["generate", "--random-init", "--video", clip, "--out", str(out), "--steps", "4", "--json"])
    summary = json.loads(capsys.readouterr().out)
    info = sf.info(str(out))
    assert code == 0
    assert (info.channels, info.samplerate, info.frames) == (4, 44100, 2 * 44100)
    assert summary["patches"] == 11 and summary["seconds"] == pytest.approx(2.0)
    assert "random-init" in summary["weights"] and "not meaningful" in summary["weights"]


def test_text_only_generation_with_binaural_output(tmp_path, capsys):
    out, binaural = tmp_path / "text.wav", tmp_path / "text_binaural.wav"
    arguments = ["generate", "--random-init", "--text", "a bell rings above", "--seconds", "1.0"]
    code = main([*arguments, "--out", str(out), "--binaural", str(binaural), "--steps", "2"])
    assert code == 0
    assert sf.info(str(out)).frames == 44100 and sf.info(str(out)).channels == 4
    assert sf.info(str(binaural)).channels == 2
    assert "weights: tiny random-init" in capsys.readouterr().out


def test_paper_preset_generator_has_about_1_09_billion_parameters(capsys):
    assert main(["info", "--preset", "paper", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    print(f"paper generator: {report['generator_params'] / 1e9:.3f} B parameters")
    assert abs(report["generator_params"] - 1.09e9) <= 0.1 * 1.09e9
    assert set(report["components"]) == {"spatial_lm", "locdit", "history"}
    assert report["generator_params"] == sum(report["components"].values())


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (["--random-init", "--video", "missing.mp4"], "no such video file"),
        (["--random-init", "--text", "a dog"], "--seconds"),
        (["--random-init", "--seconds", "-1", "--text", "x"], "--seconds must be > 0"),
        (["--random-init", "--seconds", "1", "--steps", "0"], "steps must be in"),
        (["--checkpoint", "missing.safetensors", "--seconds", "1"], "no such file"),
        (["--seconds", "1"], "one of the arguments --checkpoint --random-init is required"),
        (["--random-init", "--text", "x", "--seconds", "nan"], "--seconds must be > 0 and finite, got nan"),
        (["--random-init", "--text", "x", "--seconds", "inf"], "--seconds must be > 0 and finite, got inf"),
        (["--random-init", "--seconds", "1", "--seed", "99999999999999999999"], "--seed must be in 0 .."),
        (["--random-init", "--seconds", "1", "--seed", "-1"], "--seed must be in 0 .."),
        (["--random-init", "--seconds", "1", "--context-guidance", "1e308"], "--context-guidance must be in"),
        (["--random-init", "--seconds", "1", "--h-guidance", "nan"], "--h-guidance must be in [0, 20]"),
    ],
)
def test_bad_generate_input_exits_2_with_one_line(arguments, reason, tmp_path, capsys):
    try:
        code = main(["generate", *arguments, "--out", str(tmp_path / "x.wav")])
    except SystemExit as exit_info:  # argparse's own usage errors
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and reason in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("flag", "path", "reason"),
    [
        ("--out", "/proc/x.wav", "/proc/x.wav: cannot write"),
        ("--out", "{tmp}/x.mp3", "--out must be a .wav file"),
        ("--out", "{tmp}/x.txt", "--out must be a .wav file"),
        ("--out", "{tmp}/folder.wav", "got the folder"),
        ("--binaural", "/proc/missing/b.wav", "cannot write"),
        ("--binaural", "{tmp}/b.mp3", "--binaural must be a .wav file"),
        ("--plot", "{tmp}/p.wav", "--plot must be a .png file"),
    ],
)
def test_unwritable_outputs_are_refused_before_the_model_runs(
    flag, path, reason, tmp_path, capsys, monkeypatch
):
    (tmp_path / "folder.wav").mkdir()
    monkeypatch.setattr(generate_command, "_load_model", _no_model)
    outputs = {"--out": str(tmp_path / "ok.wav"), flag: path.format(tmp=tmp_path)}
    argv = ["generate", "--random-init", "--text", "x", "--seconds", "1", "--steps", "1"]
    code = main([*argv, *(item for pair in outputs.items() for item in pair)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and reason in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.wav"], "no file left behind"


def _no_model(*_args: object) -> None:
    raise AssertionError("the model was loaded before the output paths were checked")


def test_unreadable_trajectory_and_mismatched_checkpoint_are_one_line(tmp_path, capsys):
    trajectory = tmp_path / "t.json"
    trajectory.write_bytes(np.random.default_rng(0).bytes(300) + b"\xff")
    plot = ["--plot", str(tmp_path / "p.png"), "--reference-trajectory", str(trajectory)]
    checkpoint = tmp_path / "wrong.safetensors"
    data = SHIPPED_TINY.read_bytes()
    state = load(data)
    name = next(name for name, tensor in sorted(state.items()) if tensor.ndim)
    state[name] = torch.zeros(state[name].shape[0] + 1, *state[name].shape[1:])
    checkpoint.write_bytes(save(state, metadata=read_metadata(data, SHIPPED_TINY)))
    for arguments, reason in (
        (["--random-init", "--seconds", "1", *plot], "t.json: trajectory JSON is not UTF-8 text"),
        (["--checkpoint", str(checkpoint), "--seconds", "1"], f"tensor {name} has shape"),
    ):
        code = main(["generate", *arguments, "--steps", "1", "--out", str(tmp_path / "x.wav")])
        err = capsys.readouterr().err
        assert code == 2
        assert err.count("\n") == 1 and reason in err and "Traceback" not in err


def test_random_init_builds_the_paper_preset_with_a_stand_in_text_encoder():
    """--help offers every preset; the paper one's text encoder is FLAN-T5-large wide. Built on the meta
    device: no memory, no time."""
    args = argparse.Namespace(checkpoint=None, preset="paper", seed=0)
    with torch.device("meta"):
        model, weights = generate_command._load_model(args, torch.device("meta"))
    assert model.config == preset("paper") and weights.startswith("paper random-init")


def test_demo_refuses_non_finite_seconds(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--seconds", "nan"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--seconds must be > 0 and finite" in err
    assert not (tmp_path / "demo").exists()


def test_argparse_errors_also_exit_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--out", "x.wav", "--seconds", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "required" in err


def test_non_equirect_video_is_refused_in_a_real_subprocess(tmp_path):
    video = tmp_path / "square.mp4"
    write_video(video, np.zeros((4, 64, 64, 3), np.uint8))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "swansphere",
            "generate",
            "--random-init",
            "--video",
            str(video),
            "--out",
            "x.wav",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "equirectangular" in result.stderr


def test_demo_runs_the_whole_embedded_pipeline(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seconds", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    files = (
        "generated.wav",
        "generated_binaural.wav",
        "reference_binaural.wav",
        "generated_doa.png",
        "manifest.jsonl",
    )
    for name in files:
        assert (out / name).is_file()
    assert sf.info(str(out / "generated.wav")).frames == 2 * 44100
    assert summary["reference_doa_error_deg_median"] < 10
    assert summary["pipeline_caption"] and summary["ground_truth_caption"]
    assert summary["time_to_first_chunk_s"] > 0

"""`swansphere caption`: human and JSON output, video context, a real chat server, and one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers_captioning import noise_bursts

from swansphere.audio import write_audio
from swansphere.cli import main
from swansphere.conventions import SAMPLE_RATE
from swansphere.foa import encode
from swansphere.trajectory import parse_scene
from swansphere.video import write_video

SECONDS = 4.0


@pytest.fixture
def clip(tmp_path):
    """4 s of noise bursts from the front-left (45°) as AmbiX WAV, and a matching 64x32 equirect MP4
    with a red block in the front-left sector (columns 20..27 look at 45° ± 22.5°)."""
    wav = tmp_path / "clip.wav"
    write_audio(wav, encode(noise_bursts(SECONDS, seed=3), 45.0, 0.0), SAMPLE_RATE)
    frames = np.full((int(SECONDS * 4), 32, 64, 3), 128, dtype=np.uint8)  # (T, H, W, 3)
    frames[:, 10:22, 21:27] = (220, 20, 20)
    video = tmp_path / "clip.mp4"
    write_video(video, frames)
    return wav, video


def test_human_output_is_the_caption(clip, capsys):
    wav, _ = clip
    assert main(["caption", str(wav), "--label", "dog"]) == 0
    assert capsys.readouterr().out == "A dog barks to the front-left, at ear level.\n"


def test_json_through_a_real_subprocess_with_video(clip):
    wav, video = clip
    done = subprocess.run(
        [sys.executable, "-m", "swansphere", "caption", str(wav), "--video", str(video), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == {"caption", "captioner", "trajectory", "segments"}
    assert result["captioner"] == "rule"
    assert result["caption"] == "A sound stays to the front-left, at ear level."
    scene = parse_scene(json.dumps(result["trajectory"]))
    assert scene.caption == result["caption"] and scene.duration == pytest.approx(SECONDS)
    assert scene.sources[0].sound_class == "unknown"
    assert [p.t for p in scene.sources[0].trajectory] == [0.5, 1.5, 2.5, 3.5]
    assert all(abs(p.azimuth - 45.0) < 1.0 for p in scene.sources[0].trajectory)
    assert [s["t0"] for s in result["segments"]] == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.servers
def test_chat_captioner_gets_trajectory_and_video_summary(clip, chat_server, capsys):
    wav, video = clip
    argv = ["caption", str(wav), "--video", str(video), "--label", "dog", "--segment", "2", "--json"]
    argv += ["--llm-url", chat_server.base_url + "/v1", "--llm-model", "test-model", "--llm-timeout", "5"]
    assert main(argv) == 0

    result = json.loads(capsys.readouterr().out)
    assert result["captioner"] == "chat"
    assert result["caption"] == "A dog at azimuth 45, 2 points." == result["trajectory"]["caption"]
    user = chat_server.requests[0]["body"]["messages"][1]["content"]
    assert chat_server.trajectory_in(user)["sources"][0]["class"] == "dog"
    assert "Rule-based draft caption: A dog barks to the front-left, at ear level." in user
    assert "Video: 4.0 s equirectangular video, 16 frames at 4 fps, 64x32" in user
    assert "front-left red" in user and "front grey" in user


BAD_INPUTS = ["missing", "text", "stereo", "not_equirect", "short_video", "segment", "llm_500", "llm_closed",
              "llm_no_model"]  # fmt: skip


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_exits_2_with_one_stderr_line(kind, clip, chat_server, closed_port, tmp_path, capsys):
    wav, _ = clip
    argv = ["caption", str(wav)]
    if kind == "missing":
        argv = ["caption", str(tmp_path / "nowhere.wav")]
    elif kind == "text":
        (tmp_path / "notes.wav").write_text("not audio\n")
        argv = ["caption", str(tmp_path / "notes.wav")]
    elif kind == "stereo":
        write_audio(tmp_path / "stereo.wav", np.zeros((2, SAMPLE_RATE)), SAMPLE_RATE)
        argv = ["caption", str(tmp_path / "stereo.wav")]
    elif kind == "not_equirect":
        write_video(tmp_path / "square.mp4", np.zeros((16, 32, 32, 3), dtype=np.uint8))
        argv += ["--video", str(tmp_path / "square.mp4")]
    elif kind == "short_video":
        write_video(tmp_path / "short.mp4", np.zeros((8, 32, 64, 3), dtype=np.uint8))  # 2 s against 4 s
        argv += ["--video", str(tmp_path / "short.mp4")]
    elif kind == "segment":
        argv += ["--segment", "0"]
    elif kind == "llm_500":
        argv += ["--llm-url", chat_server.base_url, "--llm-model", "broken"]
    elif kind == "llm_closed":
        argv += ["--llm-url", f"http://127.0.0.1:{closed_port}", "--llm-model", "m", "--llm-timeout", "2"]
    elif kind == "llm_no_model":
        argv += ["--llm-url", chat_server.base_url]

    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert captured.err.startswith("swansphere caption: error: ")
    assert "Traceback" not in captured.err
    print(f"{kind}: {captured.err.strip()}")


def test_unreachable_llm_in_a_real_subprocess_is_one_line(clip, closed_port):
    wav, _ = clip
    url = f"http://127.0.0.1:{closed_port}"
    done = subprocess.run(
        [sys.executable, "-m", "swansphere", "caption", str(wav), "--llm-url", url, "--llm-model", "m"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"swansphere caption: error: {url}/v1/chat/completions: cannot connect (Connection refused)"
    ]

"""`swansphere eval` (DESIGN §5, §5b): both DoA protocols on rotated SynthSphere copies, the Fréchet
distance, the aiSFX stand-in embedding, the OpenL3/PaSST loaders, the CLI, and the DoA plot."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.linalg import sqrtm

from swansphere import embeddings, evaluation, foa, storage
from swansphere.audio import read_foa, write_audio
from swansphere.cli import build_parser, main
from swansphere.cli import generate as generate_cli
from swansphere.conventions import SAMPLE_RATE
from swansphere.doa import segment_doa
from swansphere.errors import InputError
from swansphere.metrics import angular_error_deg
from swansphere.plots import plot_doa
from swansphere.synth import SynthConfig, write_dataset
from swansphere.trajectory import load_scene

YAW = 30.0
"""Azimuth offset of the 'generated' copies."""

CLEAN = SynthConfig(seconds=2.0, width=32, max_sources=1, reverb=False, ambience_db=None, motions=("static",))
"""Plane-wave clips: the segment DoA of the reference equals its ground truth."""


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    """reference: 3 clean static clips; generated: the same scenes turned by YAW; other: new scenes."""
    root = tmp_path_factory.mktemp("eval")
    reference, generated, other = root / "reference", root / "generated", root / "other"
    write_dataset(str(reference), CLEAN, clips=3, seed=3)
    write_dataset(str(other), SynthConfig(seconds=2.0, width=32), clips=3, seed=11)
    for path in sorted(reference.glob("*.wav")):
        audio, sample_rate = read_foa(path)
        write_audio(generated / path.name, foa.rotate(audio, yaw=YAW), sample_rate)
    return {"reference": str(reference), "generated": str(generated), "other": str(other)}


@pytest.fixture(scope="module")
def aisfx() -> embeddings.AisfxEmbedding:
    return embeddings.aisfx_embedding()


def _eval_cli(capsys, *arguments: str) -> tuple[int, str, str]:
    try:
        code = main(["eval", *arguments])
    except SystemExit as exit_info:  # argparse's own usage errors
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- Both DoA protocols ---------------------------------------------------------------------------


def test_both_protocols_report_the_rotation_in_their_own_units(folders):
    result = evaluation.evaluate(folders["generated"], folders["reference"], trajectory=True)
    segment, paper = result["segment_protocol"], result["paper_protocol"]
    print("segment protocol:", segment, "\npaper protocol:", paper)
    assert result["clips"] == 3 and result["distribution"] is None
    assert (segment["unit"], paper["unit"]) == ("degree", "radian")
    assert segment["delta_azimuth_deg"]["count"] == 6  # 3 clips x 2 one-second segments
    for clip in result["per_clip"]:
        assert clip["segment"]["delta_azimuth_deg"]["mean"] == pytest.approx(YAW, abs=1e-6)
        assert clip["segment"]["delta_elevation_deg"]["mean"] == pytest.approx(0.0, abs=1e-6)
        assert clip["paper"]["delta_azimuth_rad"] == pytest.approx(np.radians(YAW), abs=1e-8)
        assert clip["paper"]["delta_elevation_rad"] == pytest.approx(0.0, abs=1e-8)
    assert paper["delta_azimuth_rad"]["mean"] == pytest.approx(np.radians(YAW), abs=1e-8)
    # A yaw moves a source at elevation e by less than YAW on the sphere, and never more.
    assert 0.0 < paper["delta_angular_rad"]["mean"] <= np.radians(YAW) + 1e-9


def test_trajectory_scores_the_generated_audio_against_ground_truth(folders):
    result = evaluation.evaluate(folders["generated"], folders["reference"], trajectory=True)
    for clip in result["per_clip"]:
        point = load_scene(f"{folders['reference']}/{clip['name']}.json").sources[0].trajectory[0]
        expected = float(
            angular_error_deg(point.azimuth + YAW, point.elevation, point.azimuth, point.elevation)
        )
        assert clip["trajectory"]["reference_vs_truth_deg"]["mean"] == pytest.approx(0.0, abs=1e-3)
        assert clip["trajectory"]["generated_vs_truth_deg"]["mean"] == pytest.approx(expected, abs=1e-3)
    assert result["trajectory"]["protocol"] == "segment" and result["trajectory"]["unit"] == "degree"


def test_identical_folders_score_zero_and_unpaired_files_are_listed(folders, tmp_path):
    for path in sorted(storage.join(folders["reference"], f"clip_0000{i}.wav") for i in range(2)):
        audio, sample_rate = read_foa(path)
        write_audio(tmp_path / path.rsplit("/", 1)[-1], audio, sample_rate)
    write_audio(tmp_path / "extra.wav", np.zeros((4, SAMPLE_RATE)), SAMPLE_RATE)
    result = evaluation.evaluate(tmp_path, folders["reference"])
    assert result["clips"] == 2
    assert result["unpaired"] == {"generated": ["extra"], "reference": ["clip_00002"]}
    assert result["segment_protocol"]["delta_angular_deg"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert result["paper_protocol"]["delta_angular_rad"]["mean"] == pytest.approx(0.0, abs=1e-6)


def test_reference_folder_on_s3(folders, s3_bucket):
    prefix = f"s3://{s3_bucket}/reference"
    for name in ("clip_00000.wav", "clip_00001.wav", "clip_00001.json"):
        storage.write_bytes(
            storage.join(prefix, name), storage.read_bytes(storage.join(folders["reference"], name))
        )
    result = evaluation.evaluate(folders["generated"], prefix)
    assert result["clips"] == 2 and result["unpaired"]["generated"] == ["clip_00002"]
    assert result["segment_protocol"]["delta_azimuth_deg"]["median"] == pytest.approx(YAW, abs=1e-6)


# --- Fréchet distance and the embeddings ----------------------------------------------------------


def test_frechet_distance_matches_the_sqrtm_formula_and_is_zero_on_itself():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((400, 6)), rng.standard_normal((300, 6)) * 1.5 + 0.5
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    direct = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(
        cov_a + cov_b - 2 * np.real(sqrtm(cov_a @ cov_b))
    )
    assert evaluation.frechet_distance(a, b) == pytest.approx(direct, rel=1e-9)
    few = rng.standard_normal((3, 512))  # rank-deficient covariance, as three short clips give
    assert evaluation.frechet_distance(few, few) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(InputError):
        evaluation.frechet_distance(few[:1], few)


def test_aisfx_embedding_is_deterministic_512_d_per_block(aisfx):
    rng = np.random.default_rng(5)
    seconds = 3.5  # 151 frames at hop 1024: full 100-frame blocks every 50 frames -> 2 embeddings
    times = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    signal = np.sin(2 * np.pi * 440 * times) + 0.1 * rng.standard_normal(times.size)
    first, second = aisfx.embed(signal, SAMPLE_RATE), aisfx.embed(signal, SAMPLE_RATE)
    assert first.shape == (2, 512) and np.array_equal(first, second)
    assert np.all(np.isfinite(first)) and np.all(first >= 0.0) and first.std() > 0.0  # ReLU, then max
    # Peak normalisation: the level of the input does not change the embedding, its content does.
    np.testing.assert_allclose(aisfx.embed(0.1 * signal, SAMPLE_RATE), first, rtol=1e-4, atol=1e-5)
    noise = aisfx.embed(rng.standard_normal(times.size), SAMPLE_RATE)
    assert np.linalg.norm(noise - first) > 0.1 * np.linalg.norm(first)


def test_fd_is_zero_for_a_set_with_itself_and_positive_for_other_scenes(folders, aisfx):
    def w_embeddings(folder: str) -> np.ndarray:
        files = sorted(evaluation.audio_files(folder).values())
        return np.concatenate([aisfx.embed(read_foa(path)[0][0], SAMPLE_RATE) for path in files])

    reference, other = w_embeddings(folders["reference"]), w_embeddings(folders["other"])
    fd_other = evaluation.frechet_distance(other, reference)
    print(f"aiSFX FD of other scenes vs reference: {fd_other:.3g}")
    assert reference.shape == (3, 512)  # one 2.3 s block per 2 s clip
    assert evaluation.frechet_distance(reference, reference) == pytest.approx(0.0, abs=1e-9)
    assert fd_other > 0.01


def test_mel_filters_are_unit_sum_triangles_on_the_htk_scale():
    filters = embeddings.htk_mel_filters(44100, 2048, 96, 0.0, 22050.0)
    assert filters.shape == (96, 1025)
    np.testing.assert_allclose(filters.sum(axis=1), 1.0, atol=1e-12)
    centres_hz = filters.argmax(axis=1) * 44100 / 2048
    mel = 2595 * np.log10(1 + centres_hz / 700)
    assert np.all(np.diff(centres_hz) >= 0)
    assert np.std(np.diff(mel[20:])) < 0.1 * np.mean(np.diff(mel[20:]))  # evenly spaced in mel


OPENL3_KEYS = {
    "speclayer.dft_real_kernels": (1025, 1, 2048),
    "speclayer.dft_imag_kernels": (1025, 1, 2048),
    "speclayer.mel_basis": (128, 1025),
    "batch_normalization_1.running_var": (1,),
    "conv2d_1.weight": (64, 1, 3, 3),
    "batch_normalization_8.weight": (512,),
    "conv2d_7.weight": (512, 256, 3, 3),
    "audio_embedding_layer.weight": (512, 512, 3, 3),
}
"""Names and shapes of a torchopenl3 `mel128` state dict (`PytorchOpenl3.state_dict()`)."""


def test_openl3_loads_a_torchopenl3_state_dict(tmp_path):
    torch.manual_seed(0)
    net = embeddings.OpenL3Net("mel128", 512).eval()
    state = net.state_dict()
    assert {key: tuple(state[key].shape) for key in OPENL3_KEYS} == OPENL3_KEYS
    assert len(state) == 8 * 5 + 8 * 2 + 3  # 8 BN (4 tensors + counter), 8 conv, 3 spectrogram buffers
    path = tmp_path / "torchopenl3_mel128_env_512.pth"
    torch.save(state, path)
    embedding = embeddings.openl3_from_path(path, hop_s=0.5)
    signal = np.random.default_rng(1).standard_normal(SAMPLE_RATE)  # 1 s: windows at 0 and 0.5 s
    frames = embeddings.openl3_frames(signal, SAMPLE_RATE, 0.5)
    assert frames.shape == (2, 1, 48000)
    out = embedding.embed(signal, SAMPLE_RATE)
    with torch.no_grad():
        expected = net(torch.from_numpy(np.array(frames, dtype=np.float32))).numpy()
    assert out.shape == (2, 512) and "mel128" in embedding.note
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    torch.save({"conv2d_1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(InputError, match="do not fit"):
        embeddings.openl3_from_path(tmp_path / "bad.pth")


def test_kapre_spectrogram_peaks_at_a_tone_and_floors_at_80_db():
    layer = embeddings.KapreSpectrogram("linear")
    bin_index = 40
    tone = np.cos(2 * np.pi * bin_index * np.arange(48000) / 512)
    decibel = layer(torch.as_tensor(tone, dtype=torch.float32)[None, None])[0, 0]  # (257, T)
    assert int(decibel.mean(dim=1).argmax()) == bin_index
    assert float(decibel.max()) == 0.0 and float(decibel.min()) >= -80.0


def test_passt_loads_a_hear21passt_wrapper_state_dict(tmp_path):
    config = embeddings.PasstConfig(dim=64, depth=2, heads=1, hidden=128, classes=10)
    torch.manual_seed(0)
    net = embeddings.PasstNet(config).eval()
    for parameter in (net.cls_token, net.dist_token, net.new_pos_embed, net.time_new_pos_embed):
        torch.nn.init.normal_(parameter, std=0.02)
    state = {f"net.{key}": value for key, value in net.state_dict().items()} | {
        "device_proxy": torch.zeros(1)
    }
    torch.save(state, tmp_path / "passt.pt")
    embedding = embeddings.passt_from_path(tmp_path / "passt.pt")
    assert embeddings.passt_config(net.state_dict()) == config
    signal = np.random.default_rng(2).standard_normal(3 * SAMPLE_RATE)
    out = embedding.embed(signal, SAMPLE_RATE)
    assert out.shape == (1, 64) and np.all(np.isfinite(out))
    np.testing.assert_allclose(embedding.embed(signal, SAMPLE_RATE), out)
    long = embedding.embed(np.tile(signal, 4), SAMPLE_RATE)  # 12 s: mean over 10 s windows
    assert long.shape == (1, 64) and not np.allclose(long, out)


def test_passt_mel_front_end_shape_and_range():
    mel = embeddings.PasstMel()
    spec = mel(torch.randn(2, 32000))
    assert spec.shape == (2, 128, 100)  # pre-emphasis drops a sample: 1 + 31999 // 320 frames
    banks = embeddings.kaldi_mel_banks(128, 1024, 32000, 0.0, 15000.0)
    assert banks.shape == (128, 513) and np.all(banks[:, -1] == 0.0)
    assert banks[:, : int(15000 / 31.25) + 1].sum(axis=0).max() <= 1.0 + 1e-9


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_json_with_the_default_aisfx_fd(folders, capsys):
    code, out, _ = _eval_cli(
        capsys, "--generated", folders["generated"], "--reference", folders["reference"], "--json"
    )
    result = json.loads(out)
    assert code == 0
    assert result["segment_protocol"]["delta_azimuth_deg"]["median"] == pytest.approx(YAW, abs=1e-6)
    assert result["paper_protocol"]["delta_azimuth_rad"]["mean"] == pytest.approx(np.radians(YAW), abs=1e-8)
    assert [clip["name"] for clip in result["per_clip"]] == ["clip_00000", "clip_00001", "clip_00002"]
    distribution = result["distribution"]
    assert distribution["embedding"] == "aisfx" and "stand in for OpenL3" in distribution["note"]
    assert (distribution["dim"], distribution["n_generated"], distribution["n_reference"]) == (512, 3, 3)
    assert distribution["value"] == pytest.approx(0.0, abs=1e-6)  # a yaw leaves the W channel untouched


def test_cli_human_table_names_protocol_and_unit(folders, capsys):
    code, out, _ = _eval_cli(
        capsys,
        "--generated",
        folders["generated"],
        "--reference",
        folders["reference"],
        "--embedding",
        "none",
        "--trajectory",
    )
    print(out)
    assert code == 0
    assert "Δazimuth                     segment   deg   30.0000" in out
    assert "Δazimuth                     paper     rad   0.5236" in out
    assert "Δangular generated vs truth" in out and "FD" not in out


def _bad_case(case: str, tmp_path) -> tuple[str, str, list[str]]:
    """(generated, reference, options) of one kind of bad input; one silent clip pair otherwise."""
    generated, reference = tmp_path / "generated", tmp_path / "reference"
    silence = np.zeros((4, SAMPLE_RATE))
    write_audio(reference / "clip_00000.wav", silence, SAMPLE_RATE)
    if case == "no_pairs":
        write_audio(generated / "unrelated.wav", silence, SAMPLE_RATE)
    elif case == "channels":
        generated.mkdir()
        sf.write(str(generated / "clip_00000.wav"), np.zeros((SAMPLE_RATE, 2), np.float32), SAMPLE_RATE)
    elif case != "missing":
        write_audio(generated / "clip_00000.wav", silence, SAMPLE_RATE)
    options = {
        "embedding": ["--embedding", "vggish"],
        "weights": ["--embedding", f"openl3:{tmp_path / 'missing.pth'}"],
        "trajectory": ["--trajectory"],
    }.get(case, [])
    if case not in ("embedding", "weights"):
        options.extend(["--embedding", "none"])
    return str(generated), str(reference), options


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing", "no such folder"),
        ("no_pairs", "no audio file names in common"),
        ("channels", "expected 4-channel AmbiX FOA, got 2 channel(s)"),
        ("embedding", "--embedding must be"),
        ("weights", "missing.pth: no such file"),
        ("trajectory", "clip_00000.json: no such file"),
    ],
)
def test_bad_input_exits_2_with_one_line(case, reason, tmp_path, capsys):
    generated, reference, options = _bad_case(case, tmp_path)
    code, _, err = _eval_cli(capsys, "--generated", generated, "--reference", reference, *options)
    assert code == 2
    assert err.count("\n") == 1 and reason in err and "Traceback" not in err


# --- Plots ----------------------------------------------------------------------------------------


def test_plot_doa_writes_a_png_with_and_without_trajectory(folders, tmp_path):
    audio, _ = read_foa(storage.join(folders["generated"], "clip_00000.wav"))
    segments = segment_doa(audio)
    trajectory = json.loads(storage.read_bytes(storage.join(folders["reference"], "clip_00000.json")))
    for name, reference in (("alone.png", None), ("with_truth.png", trajectory)):
        plot_doa(segments, tmp_path / name, trajectory=reference, title="rotated copy")
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert (tmp_path / "alone.png").read_bytes() != (tmp_path / "with_truth.png").read_bytes()
    with pytest.raises(InputError):
        plot_doa([], tmp_path / "empty.png")
    with pytest.raises(InputError, match="no sources"):
        plot_doa(segments, tmp_path / "none.png", trajectory={"duration": 2.0, "sources": []})


def test_generate_plot_flag_draws_the_reference_trajectory(folders, tmp_path, capsys):
    """The flags are wired (a trajectory without --plot is refused before any model is built), and
    after the audio is written its segment DoA is plotted against the trajectory."""
    out, png = storage.join(folders["generated"], "clip_00001.wav"), tmp_path / "doa.png"
    truth = storage.join(folders["reference"], "clip_00001.json")
    arguments = ["generate", "--random-init", "--seconds", "1", "--out", out, "--reference-trajectory", truth]
    assert main(arguments) == 2 and "--plot" in capsys.readouterr().err
    args = build_parser().parse_args([*arguments, "--plot", str(png)])
    generate_cli._write_extras(args, generate_cli._reference_trajectory(args))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

"""Training data: SynthSphere, Sphere360 and YT-Ambigen layouts, aligned seeded crops and batches,
WebDataset shards (local and S3), the pseudo-FOA curriculum and latent statistics."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from swansphere import datasets, storage
from swansphere.audio import read_audio, resample, write_audio
from swansphere.conventions import SAMPLE_RATE
from swansphere.datasets import (
    SAMPLES_PER_FRAME,
    Clip,
    collate,
    crop,
    latent_statistics,
    pseudo_foa_dataset,
    random_batches,
    sphere360,
    synthsphere,
    webdataset_shards,
    write_shards,
    yt_ambigen,
)
from swansphere.errors import InputError
from swansphere.foa import ambix_to_fuma, pseudo_foa
from swansphere.models.vae import FOAVAE, VAEConfig
from swansphere.synth import SynthConfig
from swansphere.synth.writer import write_dataset
from swansphere.video import write_video

FRAME_SIZE = (16, 32)
CONFIG = SynthConfig(seconds=2.0, width=64, max_sources=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def synth_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("synth")
    write_dataset(str(folder), CONFIG, clips=3, seed=7)
    return folder


@pytest.fixture(scope="module")
def synth(synth_folder: Path) -> datasets.ClipDataset:
    return synthsphere(str(synth_folder), FRAME_SIZE)


def _indexed_clip(seconds: float, n_frames: int) -> Clip:
    """Audio whose W channel is the sample index and frames filled with their frame index / 255."""
    n = round(seconds * SAMPLE_RATE)
    foa = torch.zeros(4, n)
    foa[0] = torch.arange(n, dtype=torch.float32)
    frames = (torch.arange(n_frames, dtype=torch.float32) / 255.0)[:, None, None, None].expand(-1, 3, 4, 8)
    return Clip(name="indexed", foa=foa, frames=frames.clone(), caption="", trajectory=None)


# --- SynthSphere ------------------------------------------------------------------------------


def test_synthsphere_reads_the_written_clips(synth_folder: Path, synth: datasets.ClipDataset) -> None:
    rows = [json.loads(line) for line in (synth_folder / "manifest.jsonl").read_text().splitlines()]
    assert synth.names == [row["name"] for row in rows]
    for i, row in enumerate(rows):
        clip = synth[i]
        assert clip.foa.dtype == torch.float32 and clip.foa.shape == (4, CONFIG.n_samples)
        assert clip.frames is not None and clip.frames.shape == (CONFIG.n_frames, 3, *FRAME_SIZE)
        assert float(clip.frames.min()) >= 0.0 and float(clip.frames.max()) <= 1.0
        assert clip.caption == row["caption"] != ""
        assert clip.trajectory == json.loads((synth_folder / row["trajectory"]).read_text())
    # the WAV holds exactly what the loader returns
    wav, _ = read_audio(synth_folder / rows[0]["audio"])
    np.testing.assert_array_equal(synth[0].foa.numpy(), wav.astype(np.float32))


def test_cached_clip_equals_fresh_decoding(synth_folder: Path, synth: datasets.ClipDataset) -> None:
    fresh = synthsphere(str(synth_folder / "manifest.jsonl"), FRAME_SIZE, cache=False)
    for _ in range(2):  # second pass comes from the cache
        torch.testing.assert_close(synth[1].frames, fresh[1].frames, rtol=0, atol=0)
        torch.testing.assert_close(synth[1].foa, fresh[1].foa, rtol=0, atol=0)
    synth[1].foa.zero_()  # callers cannot damage the cache
    assert float(synth[1].foa.abs().max()) > 0


def test_preloaded_windows_equal_crops_of_fresh_clips(synth_folder: Path) -> None:
    manifest = str(synth_folder / "manifest.jsonl")
    fresh = synthsphere(manifest, FRAME_SIZE, cache=False)
    preloaded = synthsphere(manifest, FRAME_SIZE)
    preloaded.preload(workers=3)
    for i in range(len(fresh)):
        window = preloaded.random_window(i, 1.0, torch.Generator().manual_seed(i))
        expected = datasets.crop(fresh[i], 1.0, torch.Generator().manual_seed(i))
        torch.testing.assert_close(window.foa, expected.foa, rtol=0, atol=0)
        torch.testing.assert_close(window.frames, expected.frames, rtol=0, atol=0)
        assert window.trajectory == expected.trajectory
    with pytest.raises(ValueError, match="cached"):
        fresh.preload(workers=2)


def test_synthsphere_bad_input(tmp_path: Path, synth_folder: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        synthsphere(str(tmp_path / "missing"), FRAME_SIZE)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('{"name": "a", "audio": "a.wav"}\n{"name": "b", \n')
    with pytest.raises(InputError, match=r"manifest.jsonl:2: malformed manifest line"):
        synthsphere(str(manifest), FRAME_SIZE)
    manifest.write_text('{"name": "a"}\n')
    with pytest.raises(InputError, match=r":1: manifest line lacks audio"):
        synthsphere(str(manifest), FRAME_SIZE)
    stereo = tmp_path / "stereo.wav"
    write_audio(stereo, np.zeros((2, 100)), SAMPLE_RATE)
    manifest.write_text('{"name": "s", "audio": "stereo.wav"}\n')
    with pytest.raises(InputError, match="expected 4-channel FOA, got 2"):
        synthsphere(str(manifest), FRAME_SIZE)[0]


# --- crops and batches ------------------------------------------------------------------------


def test_crop_starts_on_the_frame_grid_and_keeps_frames_aligned() -> None:
    clip = _indexed_clip(seconds=3.0, n_frames=12)
    generator = torch.Generator().manual_seed(3)
    starts = set()
    for _ in range(40):
        piece = crop(clip, 1.1, generator)
        start = int(piece.foa[0, 0])
        k = start // SAMPLES_PER_FRAME
        starts.add(k)
        assert start == SAMPLES_PER_FRAME * k
        assert piece.foa.shape == (4, round(1.1 * SAMPLE_RATE))
        torch.testing.assert_close(piece.foa[0], clip.foa[0, start : start + piece.foa.shape[-1]])
        assert piece.frames is not None and piece.frames.shape[0] == 5  # ceil(1.1 · 4)
        torch.testing.assert_close(piece.frames[:, 0, 0, 0] * 255.0, torch.arange(k, k + 5).float())
    assert starts == set(range(8))  # every start 0..(3.0 - 1.1) s on the grid is drawn


def test_crop_pads_short_clips() -> None:
    clip = _indexed_clip(seconds=0.5, n_frames=2)
    piece = crop(clip, 1.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(piece.foa[:, : clip.foa.shape[-1]], clip.foa)
    assert float(piece.foa[:, clip.foa.shape[-1] :].abs().max()) == 0.0
    assert piece.frames is not None
    torch.testing.assert_close(piece.frames[:, 0, 0, 0] * 255.0, torch.tensor([0.0, 1.0, 1.0, 1.0]))


def test_crop_of_a_real_clip_matches_its_trajectory(synth: datasets.ClipDataset) -> None:
    clip = synth[0]
    piece = crop(clip, 1.0, torch.Generator().manual_seed(5))
    matches = [
        k
        for k in range(5)
        if torch.equal(piece.foa, clip.foa[:, k * SAMPLES_PER_FRAME : k * SAMPLES_PER_FRAME + SAMPLE_RATE])
    ]
    assert len(matches) == 1
    k = matches[0]
    assert piece.frames is not None and clip.frames is not None
    torch.testing.assert_close(piece.frames, clip.frames[k : k + 4], rtol=0, atol=0)
    assert piece.trajectory is not None and clip.trajectory is not None
    assert piece.trajectory["duration"] == 1.0 and piece.trajectory["caption"] == clip.caption
    for cropped, full in zip(piece.trajectory["sources"], clip.trajectory["sources"], strict=True):
        assert cropped["class"] == full["class"]
        assert [p["t"] for p in cropped["trajectory"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
        for point, original in zip(cropped["trajectory"], full["trajectory"][k : k + 5], strict=True):
            assert point["azimuth"] == pytest.approx(original["azimuth"])
            assert point["elevation"] == pytest.approx(original["elevation"])


def test_random_batches_are_seeded_and_cover_the_shard(synth: datasets.ClipDataset) -> None:
    def take(seed: int, count: int, indices: list[int] | None = None) -> list[datasets.Batch]:
        stream = random_batches(synth, 2, 0.5, torch.Generator().manual_seed(seed), indices)
        return [next(stream) for _ in range(count)]

    first, again, other = take(11, 3), take(11, 3), take(12, 3)
    for a, b in zip(first, again, strict=True):
        assert a.names == b.names
        torch.testing.assert_close(a.foa, b.foa, rtol=0, atol=0)
        torch.testing.assert_close(a.frames, b.frames, rtol=0, atol=0)
    assert any(not torch.equal(a.foa, b.foa) for a, b in zip(first, other, strict=True))
    batch = first[0]
    assert batch.foa.shape == (2, 4, SAMPLE_RATE // 2) and batch.frames is not None
    assert batch.frames.shape == (2, 2, 3, *FRAME_SIZE)
    assert batch.captions == [synth[synth.names.index(name)].caption for name in batch.names]
    # one epoch over a shard visits each of its clips once
    shard = take(4, 1, indices=[0, 2])[0]
    assert sorted(shard.names) == [synth.names[0], synth.names[2]]


def test_collate_drops_frames_when_a_clip_has_none() -> None:
    with_video = _indexed_clip(1.0, 4)
    without = Clip(name="audio-only", foa=with_video.foa.clone(), frames=None, caption="x", trajectory=None)
    batch = collate([with_video, without])
    assert batch.frames is None and batch.foa.shape == (2, 4, SAMPLE_RATE)
    assert batch.names == ["indexed", "audio-only"] and batch.captions == ["", "x"]
    with pytest.raises(ValueError, match="differ in length"):
        collate([with_video, crop(with_video, 0.5, torch.Generator().manual_seed(0))])


def test_synthsphere_from_s3(synth_folder: Path, s3_bucket: str) -> None:
    prefix = f"s3://{s3_bucket}/synth"
    for path in synth_folder.iterdir():
        storage.write_bytes(f"{prefix}/{path.name}", path.read_bytes())
    remote = synthsphere(f"{prefix}/manifest.jsonl", FRAME_SIZE, cache=False)
    local = synthsphere(str(synth_folder), FRAME_SIZE, cache=False)
    assert remote.names == local.names
    a, b = remote[2], local[2]
    torch.testing.assert_close(a.foa, b.foa, rtol=0, atol=0)
    torch.testing.assert_close(a.frames, b.frames, rtol=0, atol=0)
    assert (a.caption, a.trajectory) == (b.caption, b.trajectory)


def test_synthsphere_shards_from_s3(synth: datasets.ClipDataset, s3_bucket: str) -> None:
    uris = write_shards(synth, f"s3://{s3_bucket}/shards", clips_per_shard=2)
    assert uris == [f"s3://{s3_bucket}/shards/shard-00000{n}.tar" for n in (0, 1)]
    remote = webdataset_shards(f"s3://{s3_bucket}/shards/shard-{{000000..000001}}.tar", FRAME_SIZE)
    assert remote.names == synth.names
    torch.testing.assert_close(remote[1].foa, synth[1].foa, rtol=0, atol=0)


# --- WebDataset shards ------------------------------------------------------------------------


def test_shard_round_trip_equals_the_folder_dataset(synth: datasets.ClipDataset, tmp_path: Path) -> None:
    uris = write_shards(synth, str(tmp_path / "shards"), clips_per_shard=2)
    assert len(uris) == 2
    with tarfile.open(uris[0]) as tar:
        assert tar.getnames() == [f"0000000{i}.{ext}" for i in (0, 1) for ext in ("json", "wav", "mp4")]
    shards = webdataset_shards(uris, FRAME_SIZE)
    assert shards.names == synth.names
    for i in range(len(synth)):
        a, b = shards[i], synth[i]
        torch.testing.assert_close(a.foa, b.foa, rtol=0, atol=0)
        assert a.frames is not None and b.frames is not None and a.frames.shape == b.frames.shape
        assert float((a.frames - b.frames).abs().max()) <= 2.0 / 255.0 + 1e-6  # x264 lossless YUV
        assert (a.caption, a.trajectory) == (b.caption, b.trajectory)
    # the same clips through seeded batches
    from_shards = next(random_batches(shards, 3, 1.0, torch.Generator().manual_seed(1)))
    from_folder = next(random_batches(synth, 3, 1.0, torch.Generator().manual_seed(1)))
    assert from_shards.names == from_folder.names
    torch.testing.assert_close(from_shards.foa, from_folder.foa, rtol=0, atol=0)


def test_expand_braces_and_bad_shards(tmp_path: Path) -> None:
    expanded = datasets.expand_braces("s3://b/x-{08..10}.tar")
    assert expanded == [f"s3://b/x-{n}.tar" for n in ("08", "09", "10")]
    assert datasets.expand_braces("a{0..1}{x,y}") == ["a0x", "a0y", "a1x", "a1y"]
    with pytest.raises(InputError, match="bad brace range"):
        datasets.expand_braces("x-{3..1}.tar")
    with pytest.raises(InputError, match="no such shard"):
        webdataset_shards(str(tmp_path / "missing.tar"), FRAME_SIZE)
    shard = tmp_path / "bad.tar"
    with tarfile.open(shard, "w") as tar:
        info = tarfile.TarInfo("clip.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(InputError, match=r"sample clip has no \.wav member"):
        webdataset_shards([str(shard)], FRAME_SIZE)


# --- Sphere360 and YT-Ambigen -----------------------------------------------------------------


def _write_pair(
    root: Path, clip_id: str, seconds: float, rate: int, audio_suffix: str, fuma: bool = False
) -> np.ndarray:
    """A paired clip: frame k is uniformly grey 6·k, audio four tones; returns the AmbiX audio."""
    frames = np.repeat((6 * np.arange(round(seconds * 4)))[:, None, None, None], 3, axis=-1)
    write_video(root / "video" / f"{clip_id}.mp4", np.broadcast_to(frames, (len(frames), 16, 32, 3)))
    t = np.arange(round(seconds * rate)) / rate
    ambix = np.stack([0.5 * np.sin(2 * np.pi * f * t) for f in (220.0, 330.0, 440.0, 550.0)])
    audio, path = ambix_to_fuma(ambix) if fuma else ambix, root / "audio" / f"{clip_id}{audio_suffix}"
    if audio_suffix == ".opus":  # YouTube's codec; write_audio picks formats by extension and has none for it
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio.T, rate, format="OGG", subtype="OPUS")
    else:
        write_audio(path, audio, rate)
    return ambix


def test_sphere360_layout_windows_and_fuma(tmp_path: Path) -> None:
    ambix = _write_pair(tmp_path, "vidA_120", 10.0, 48000, ".wav")
    _write_pair(tmp_path, "vidB_30", 10.0, 48000, ".flac")
    (tmp_path / "dataset" / "split").mkdir(parents=True)
    (tmp_path / "dataset" / "split" / "train.txt").write_text("vidA_120\nvidB_30\n")
    whole = sphere360(str(tmp_path), FRAME_SIZE)
    assert whole.names == ["vidA_120", "vidB_30"]
    clip = whole[0]
    expected = resample(ambix, 48000, SAMPLE_RATE).astype(np.float32)
    np.testing.assert_allclose(clip.foa.numpy(), expected, atol=1e-6)
    assert clip.frames is not None and clip.frames.shape == (40, 3, *FRAME_SIZE)

    halves = sphere360(str(tmp_path), FRAME_SIZE, clip_seconds=5.0)
    assert halves.names == ["vidA_120_w0", "vidA_120_w1", "vidB_30_w0", "vidB_30_w1"]
    second = halves[1]
    torch.testing.assert_close(second.foa, clip.foa[:, 5 * SAMPLE_RATE :], rtol=0, atol=0)
    assert second.frames is not None
    grey = second.frames.mean(dim=(1, 2, 3)) * 255.0  # frame k of the window is frame 20 + k
    torch.testing.assert_close(grey, 6.0 * torch.arange(20, 40).float(), rtol=0, atol=1.5)

    fuma_root = tmp_path / "fuma"
    ambix = _write_pair(fuma_root, "vidA_120", 10.0, SAMPLE_RATE, ".wav", fuma=True)
    (fuma_root / "dataset" / "split").mkdir(parents=True)
    (fuma_root / "dataset" / "split" / "train.txt").write_text("vidA_120\n")
    converted = sphere360(str(fuma_root), FRAME_SIZE, fuma=True)[0]
    np.testing.assert_allclose(converted.foa.numpy(), ambix, atol=1e-6)
    with pytest.raises(InputError, match="no such file"):
        sphere360(str(tmp_path), FRAME_SIZE, split="test")


def test_yt_ambigen_layout(tmp_path: Path) -> None:
    ambix = _write_pair(tmp_path, "b2VhNUmUV3k_52", 5.0, 48000, ".opus")
    _write_pair(tmp_path, "wmL6FiKKqvQ_96", 5.0, 48000, ".opus")
    (tmp_path / "train.csv").write_text("file_path\nb2VhNUmUV3k_52.npy\nwmL6FiKKqvQ_96.npy\nmissing_1.npy\n")
    data = yt_ambigen(str(tmp_path), FRAME_SIZE)
    assert data.names == ["b2VhNUmUV3k_52", "wmL6FiKKqvQ_96", "missing_1"]
    clip = data[0]
    assert clip.foa.shape == (4, 5 * SAMPLE_RATE) and clip.caption == "" and clip.trajectory is None
    assert clip.frames is not None and clip.frames.shape == (20, 3, *FRAME_SIZE)
    # Opus is lossy, but each channel keeps its tone at 44.1 kHz: correlation with the resampled source
    reference = resample(ambix, 48000, SAMPLE_RATE)
    for channel in range(4):
        correlation = np.corrcoef(clip.foa[channel].numpy(), reference[channel])[0, 1]
        assert correlation > 0.95, (channel, correlation)
    with pytest.raises(InputError, match=r"audio/missing_1\.\{wav\|flac\|opus\|ogg\}: no such file"):
        data[2]


# --- pseudo-FOA curriculum --------------------------------------------------------------------


def test_pseudo_foa_dataset_matches_foa_pseudo_foa(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    mono, stereo = rng.uniform(-0.5, 0.5, 22050), rng.uniform(-0.5, 0.5, (2, 24000))
    write_audio(tmp_path / "a_mono.wav", mono[None], SAMPLE_RATE)
    write_audio(tmp_path / "b_stereo.flac", stereo, 48000)
    data = pseudo_foa_dataset(str(tmp_path), seed=3)
    assert data.names == ["a_mono", "b_stereo"]
    loaded = [read_audio(tmp_path / name)[0] for name in ("a_mono.wav", "b_stereo.flac")]
    sources = [loaded[0][0], resample(loaded[1], 48000, SAMPLE_RATE)]
    for i, source in enumerate(sources):
        expected, _ = pseudo_foa(source, np.random.default_rng([3, i]))
        np.testing.assert_allclose(data[i].foa.numpy(), expected.astype(np.float32), rtol=0, atol=0)
        torch.testing.assert_close(data[i].foa, data[i].foa)  # read twice, same clip
        assert data[i].frames is None and data[i].trajectory is None
    assert float(data[0].foa[1:].abs().max()) == 0.0  # mono: W only
    used = [
        pseudo_foa_dataset(str(tmp_path), seed=s, cache=False)[1].foa[1:].abs().amax(1) > 0 for s in range(12)
    ]
    directional = {tuple(channels.tolist()) for channels in used}
    assert len(directional) == 3  # the L − R channel moves between Y, Z and X with the seed

    (tmp_path / "captions").mkdir()
    write_audio(tmp_path / "captions" / "x.wav", mono[None], SAMPLE_RATE)
    (tmp_path / "captions" / "manifest.jsonl").write_text('{"audio": "x.wav", "caption": "a dog barks"}\n')
    captioned = pseudo_foa_dataset(str(tmp_path / "captions"), seed=0)
    assert (captioned.names, captioned[0].caption) == (["x"], "a dog barks")

    write_audio(tmp_path / "four.wav", np.zeros((4, 100)), SAMPLE_RATE)
    with pytest.raises(InputError, match="expected mono or stereo audio, got 4 channels"):
        pseudo_foa_dataset([str(tmp_path / "four.wav")], seed=0)[0]


# --- latent statistics ------------------------------------------------------------------------


def test_latent_statistics_normalise_the_posterior_means(synth: datasets.ClipDataset) -> None:
    torch.manual_seed(0)
    vae = FOAVAE(VAEConfig.tiny())
    generator = torch.Generator().manual_seed(9)
    mean, std = latent_statistics(vae, synth, 0.5, max_clips=2, generator=generator, batch_size=1)
    assert mean.shape == std.shape == (16,) and mean.dtype == std.dtype == torch.float32
    assert bool((std > 0).all()) and vae.training  # mode restored
    # recompute the same clips and crops by hand: normalised latents have zero mean, unit std
    generator = torch.Generator().manual_seed(9)
    chosen = torch.randperm(len(synth), generator=generator)[:2].tolist()
    with torch.no_grad():
        vae.eval()
        crops = [vae.pad_to_hop(crop(synth[i], 0.5, generator).foa[None]) for i in chosen]
        z = torch.cat([vae.encode_posterior(audio)[0][0] for audio in crops], dim=1)  # (D, frames of both)
    normalised = (z - mean[:, None]) / std[:, None]
    torch.testing.assert_close(normalised.mean(dim=1), torch.zeros(16), rtol=0, atol=1e-4)
    torch.testing.assert_close(normalised.std(dim=1, unbiased=False), torch.ones(16), rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="max_clips"):
        latent_statistics(vae, synth, 0.5, max_clips=0, generator=generator)

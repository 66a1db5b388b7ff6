"""SVAC (paper §3.2, eqs. 1-3; App. B.2) on the tiny preset: encoders, alignment, negatives, loss, loading."""

import dataclasses
import math

import numpy as np
import pytest
import safetensors.torch
import torch
from transformers import VideoMAEConfig, VideoMAEModel

from swansphere import storage
from swansphere.conventions import SAMPLE_RATE, VIDEO_FPS, direction_to_vector
from swansphere.doa import clip_doa_rad
from swansphere.equirect import azimuth_column, column_azimuth, elevation_row, roll_yaw
from swansphere.errors import InputError
from swansphere.foa import encode, rotate
from swansphere.models.audio_encoder import AudioEncoder, AudioEncoderConfig, mel_filterbank
from swansphere.models.svac import (
    SVAC,
    Candidates,
    SVACConfig,
    align_nearest,
    contrastive_logits,
    info_nce,
    roll_video,
    rotate_foa,
    sample_negatives,
    similarity,
)
from swansphere.models.video_encoder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VideoEncoder,
    VideoEncoderConfig,
    VideoEncoderState,
)

HOP = 2048
LATENT_FPS = SAMPLE_RATE / HOP
MIN_LATENT = 44
"""Shortest clip for 1 s circular shifts either way: 2 · ceil(21.53)."""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_svac(seed: int = 0) -> SVAC:
    torch.manual_seed(seed)
    return SVAC(SVACConfig.tiny()).eval()


def scene(
    azimuth: float, elevation: float, pattern: list[int], seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright square at (az, el) in 4 fps equirect frames (T, 3, 64, 128) and noise from the same
    direction in FOA (4, 44·2048), both on/off per 0.25 s step as `pattern` says."""
    height, width = 64, 128
    frames = torch.zeros(len(pattern), 3, height, width)
    u, v = round(float(azimuth_column(azimuth, width))), round(float(elevation_row(elevation, height)))
    cols = np.arange(u - 5, u + 6) % width
    colour = torch.tensor([1.0, 0.8, 0.2])[:, None, None]
    for t, on in enumerate(pattern):
        frames[t, :, v - 5 : v + 6, cols] = colour * on
    n = MIN_LATENT * HOP
    step = np.minimum((np.arange(n) / SAMPLE_RATE * VIDEO_FPS).astype(int), len(pattern) - 1)
    noise = np.random.default_rng(seed).standard_normal(n) * 0.3 * np.asarray(pattern)[step]
    return frames, torch.from_numpy(encode(noise, azimuth, elevation)).float()


def batch(specs: list[tuple[float, float, list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    clips = [scene(az, el, pattern, seed) for seed, (az, el, pattern) in enumerate(specs)]
    return torch.stack([c[0] for c in clips]), torch.stack([c[1] for c in clips])


SPECS = [
    (40.0, 10.0, [1, 1, 0, 1, 0, 0, 0, 1, 1]),
    (-100.0, -20.0, [0, 1, 1, 1, 0, 1, 0, 0, 1]),
    (150.0, 25.0, [1, 0, 0, 1, 1, 0, 1, 1, 0]),
]


# --- shapes, configs -----------------------------------------------------------------------------


def test_shapes_and_one_output_per_latent_frame() -> None:
    svac = make_svac()
    frames, foa = torch.rand(2, 5, 3, 64, 128), torch.randn(2, 4, 10 * HOP + 7) * 0.1
    with torch.no_grad():
        tokens = svac.video_encoder(frames)
        assert tokens.shape == (2, 5, 4 * 8, 64)  # (B, T', S, C): spatial tokens kept
        assert svac.video_embeddings(frames).shape == (2, 5, 32)
        assert svac.audio_embeddings(foa).shape == (2, 11, 32)  # ceil(N / 2048) latent frames
        assert svac.video_tokens(frames, 11).shape == (2, 11, 32)
        assert svac.similarity(svac.video_tokens(frames, 11), svac.audio_embeddings(foa)).shape == (2,)
    with pytest.raises(ValueError):
        VideoEncoderConfig(frame_size=(64, 64))
    with pytest.raises(ValueError):
        AudioEncoderConfig(frames_per_latent=4, patch_time=2)
    with pytest.raises(ValueError):
        SVACConfig(temperature=0.0)


def test_every_mel_band_holds_frequency_bins() -> None:
    for config in (AudioEncoderConfig.tiny(), AudioEncoderConfig.paper()):
        bank = mel_filterbank(SAMPLE_RATE, config.n_fft, config.mel_bins)
        assert bank.shape == (config.mel_bins, config.n_fft // 2 + 1)
        assert (bank.sum(dim=1) > 0).all()


def test_freeze_encoders_leaves_only_heads_and_temperature() -> None:
    svac = make_svac()
    svac.freeze_encoders()
    trainable = {name.split(".")[0] for name, p in svac.named_parameters() if p.requires_grad}
    assert trainable == {"video_pool", "video_head", "audio_head", "log_temperature"}


# --- streaming: block-causal video encoder -------------------------------------------------------


def test_video_encoding_of_a_prefix_equals_the_truncated_whole_clip() -> None:
    svac = make_svac()
    frames = torch.rand(2, 7, 3, 64, 128)  # 7 steps > the window of 4: the window slides
    with torch.no_grad():
        whole = svac.video_embeddings(frames)
        worst = max(
            (svac.video_embeddings(frames[:, :k]) - whole[:, :k]).abs().max().item() for k in range(1, 8)
        )
        changed = frames.clone()
        changed[:, 5:] = torch.rand(2, 2, 3, 64, 128)
        past = (svac.video_embeddings(changed)[:, :5] - whole[:, :5]).abs().max().item()
    print(f"prefix vs whole: max |diff| {worst:.2e}; past after changing the future: {past:.2e}")
    assert worst <= 1e-6 and past <= 1e-6


def test_streaming_video_encoding_equals_the_whole_clip_and_batches_across_streams() -> None:
    """`video_embeddings_stream`: chunk by chunk, each call encoding only its own frames with the keys
    and values the earlier ones left, gives the tokens of the whole clip; two streams at different
    points step together once their states hold as many steps."""
    svac = make_svac()
    frames = torch.rand(2, 12, 3, 64, 128)
    with torch.no_grad():
        whole = svac.video_embeddings(frames)
        state, got, start = None, [], 0
        for n in [1, 2, 1, 3, 4, 1]:
            tokens, state = svac.video_embeddings_stream(frames[:, start : start + n], state)
            got.append(tokens)
            start += n
        assert state.steps == svac.config.video.max_frames - 1
        streamed = (torch.cat(got, dim=1) - whole).abs().max().item()
        # Stream 0 at frame 5, stream 1 at frame 9: one batched call for frame 5 and frame 9.
        states = [svac.video_embeddings_stream(frames[i : i + 1, :k], None)[1] for i, k in ((0, 5), (1, 9))]
        both, after = svac.video_embeddings_stream(
            torch.cat([frames[:1, 5:6], frames[1:, 9:10]]), VideoEncoderState.cat(states)
        )
        batched = max(
            (both[0, 0] - whole[0, 5]).abs().max().item(), (both[1, 0] - whole[1, 9]).abs().max().item()
        )
        alone, _ = svac.video_embeddings_stream(frames[1:, 10:11], after.row(1))
        row = (alone[0, 0] - whole[1, 10]).abs().max().item()
    print(f"streamed vs whole: {streamed:.2e}; batched: {batched:.2e}; a row of a batch's state: {row:.2e}")
    assert max(streamed, batched, row) <= 1e-5


# --- align_nearest ---------------------------------------------------------------------------------


def test_align_nearest_takes_the_latest_frame_never_a_future_one() -> None:
    features = torch.arange(3.0)[None, :, None]  # step k holds the value k
    # 2 fps source, 5 fps target: target j starts at j/5 s and takes floor(j/5 · 2), clipped to 2.
    got = align_nearest(features, 8, source_fps=2.0, target_fps=5.0)[0, :, 0].tolist()
    assert got == [0, 0, 0, 1, 1, 2, 2, 2]
    latent = align_nearest(torch.arange(3000.0)[None, :, None], 11026, VIDEO_FPS, LATENT_FPS)[0, :, 0]
    assert latent[:7].tolist() == [0, 0, 0, 0, 0, 0, 1]  # frame 6 starts at 0.279 s >= 0.25 s
    assert latent[11025].item() == 2048  # 11025·2048/44100·4 = 2048 exactly: no float slip to 2047
    start_s = torch.arange(11026, dtype=torch.float64) / LATENT_FPS
    assert (latent.double() / VIDEO_FPS <= start_s).all()  # never a frame that starts later
    assert ((latent.double() + 1) / VIDEO_FPS > start_s).all()  # and always the latest one
    with pytest.raises(ValueError):
        align_nearest(torch.zeros(1, 0, 4), 3, 4.0, 21.5)


# --- eqs. 1-3: which column holds which candidate --------------------------------------------------


def test_logit_matrices_put_each_candidate_in_its_column() -> None:
    N, L = 3, 5
    e = torch.eye(5 * N)  # one basis vector per candidate, constant over time

    def seq(vectors: torch.Tensor) -> torch.Tensor:
        return vectors[:, None, :].expand(-1, L, -1)  # (N, L, D)

    audio = seq(e[:N])  # a_j = e_j
    shifted, rotated = seq(e[N : 2 * N]), seq(e[2 * N : 3 * N])
    video = seq(
        torch.stack([e[i] + 2 * e[N + i] + 3 * e[2 * N + i] + 0.5 * (e[:N].sum(0) - e[i]) for i in range(N)])
    )
    rolled = seq(torch.stack([0.25 * e[i] + e[3 * N + i] for i in range(N)]))
    c = Candidates(
        video=video, audio=audio, audio_shifted=shifted, audio_rotated=rotated, video_rolled=rolled
    )
    video_logits, audio_logits = contrastive_logits(c)
    assert video_logits.shape == (N, N + 2) and audio_logits.shape == (N, N + 1)
    v_norm = math.sqrt(1 + 4 + 9 + 0.25 * (N - 1))
    for i in range(N):
        # video query v_i: column i = a_i (1), other j = a_j (0.5), N = ã_i^time (2), N+1 = ã_i^spat (3)
        expected = [1.0 if j == i else 0.5 for j in range(N)] + [2.0, 3.0]
        assert torch.allclose(video_logits[i] * v_norm, torch.tensor(expected), atol=1e-6)
        # audio query a_i: column j = v_j (component of v_j on e_i), N = ṽ_i^spat (0.25)
        expected = [(1.0 if j == i else 0.5) / v_norm for j in range(N)] + [0.25 / math.sqrt(1 + 0.0625)]
        assert torch.allclose(audio_logits[i], torch.tensor(expected), atol=1e-6)


def test_info_nce_matches_eq_2_written_out() -> None:
    g = torch.Generator().manual_seed(3)
    N, L, D = 4, 6, 8
    c = Candidates(*(torch.randn(N, L, D, generator=g) for _ in range(5)))
    tau = torch.tensor(0.1)
    video_loss, audio_loss = info_nce(*contrastive_logits(c), tau)

    def nce(q: torch.Tensor, positive: torch.Tensor, negatives: list[torch.Tensor]) -> float:
        s = lambda k: similarity(q[None], k[None]).item() / tau.item()  # noqa: E731
        return -s(positive) + math.log(math.exp(s(positive)) + sum(math.exp(s(m)) for m in negatives))

    for i in range(N):
        negatives_a = [c.audio[j] for j in range(N) if j != i] + [c.audio_shifted[i], c.audio_rotated[i]]
        negatives_v = [c.video[j] for j in range(N) if j != i] + [c.video_rolled[i]]
        assert video_loss[i].item() == pytest.approx(nce(c.video[i], c.audio[i], negatives_a), rel=1e-5)
        assert audio_loss[i].item() == pytest.approx(nce(c.audio[i], c.video[i], negatives_v), rel=1e-5)


def test_negatives_are_the_own_clip_shifted_rotated_and_rolled() -> None:
    svac = make_svac()
    frames, foa = batch(SPECS)
    negatives = sample_negatives(3, MIN_LATENT, svac.config, torch.Generator().manual_seed(5))
    with torch.no_grad():
        c = svac.candidates(frames, foa, negatives)
        for i in range(3):
            shift = int(negatives.shift_frames[i])
            a_time = svac.audio_embeddings(torch.roll(foa[i : i + 1], shift * HOP, dims=-1))
            rotated = rotate(foa[i].double().numpy(), *negatives.rotation_deg[i].tolist())
            a_spat = svac.audio_embeddings(torch.from_numpy(rotated).float()[None])
            rolled = roll_yaw(frames[i].permute(0, 2, 3, 1).numpy(), float(negatives.video_yaw_deg[i]))
            v_spat = svac.video_tokens(torch.from_numpy(rolled).permute(0, 3, 1, 2)[None], MIN_LATENT)
            assert torch.allclose(c.audio[i], svac.audio_embeddings(foa[i : i + 1])[0], atol=1e-5)
            assert torch.allclose(c.audio_shifted[i], a_time[0], atol=1e-5)
            assert torch.allclose(c.audio_rotated[i], a_spat[0], atol=1e-5)
            assert torch.allclose(c.video[i], svac.video_tokens(frames[i : i + 1], MIN_LATENT)[0], atol=1e-5)
            assert torch.allclose(c.video_rolled[i], v_spat[0], atol=1e-5)
            assert not torch.allclose(c.audio_rotated[i], c.audio[i], atol=1e-3)
    many = sample_negatives(2000, 60, svac.config, torch.Generator().manual_seed(0))
    shift = many.shift_frames
    assert shift.min() >= 22 and (60 - shift).min() >= 22  # >= 1 s either way round the circle
    assert many.rotation_deg[:, 0].abs().min() >= 30 and many.video_yaw_deg.abs().min() >= 30
    assert many.rotation_deg[:, 1:].abs().max() <= 30
    assert (many.video_yaw_deg > 0).any() and (many.video_yaw_deg < 0).any()
    with pytest.raises(ValueError):
        sample_negatives(2, MIN_LATENT - 1, svac.config, torch.Generator())


def test_loss_is_eq_1_and_reproducible() -> None:
    svac = make_svac()
    frames, foa = batch(SPECS)
    with torch.no_grad():
        loss, stats = svac.loss(frames, foa, torch.Generator().manual_seed(1))
        again, _ = svac.loss(frames, foa, torch.Generator().manual_seed(1))
        negatives = sample_negatives(3, MIN_LATENT, svac.config, torch.Generator().manual_seed(1))
        video_loss, audio_loss = info_nce(*contrastive_logits(svac.candidates(frames, foa, negatives)), 0.07)
    assert loss.item() == again.item()
    assert loss.item() == pytest.approx((video_loss.sum() + audio_loss.sum()).item() / 6, rel=1e-5)
    assert stats["temperature"] == pytest.approx(0.07)


# --- DESIGN §4: the FOA rotation and the video roll describe the same scene rotation --------------


def test_foa_yaw_and_video_roll_together_keep_the_geometry() -> None:
    frames, foa = scene(40.0, 10.0, [1] * 9, seed=0)
    for yaw in (70.0, -135.0):
        turned = rotate_foa(foa[None], torch.tensor([[yaw, 0.0, 0.0]]))[0]
        rolled = roll_video(frames[None], torch.tensor([yaw]))[0]
        az_audio = math.degrees(clip_doa_rad(turned.double().numpy())[0])
        lit = rolled[0, 0].sum(dim=0).nonzero().flatten().numpy()  # columns of the square
        az_video = float(np.degrees(np.angle(np.exp(1j * np.radians(column_azimuth(lit, 128))).mean())))
        gap = (az_audio - az_video + 180) % 360 - 180
        print(f"yaw {yaw:+.0f}: FOA DoA {az_audio:.1f}°, square in the rolled video at {az_video:.1f}°")
        assert abs((az_audio - (40.0 + yaw) + 180) % 360 - 180) < 0.5
        assert abs(gap) <= 360 / 128  # within one column: a positive-consistent pair
    # The audio encoder's intensity planes read the direction vector of the rotated wave (y, z, x).
    turned = rotate_foa(foa[None], torch.tensor([[70.0, 20.0, -10.0]]))
    cues = AudioEncoder(AudioEncoderConfig.tiny()).features(turned)[0, 4:]  # (3, mel, k·L)
    measured = cues[:, 1:, 8:-8].reshape(3, -1).median(dim=1).values  # skip the lowest band and the edges
    direction = rotate(
        np.concatenate([[1.0], direction_to_vector(40.0, 10.0)[[1, 2, 0]]])[:, None], 70, 20, -10
    )
    assert torch.allclose(measured, torch.from_numpy(direction[1:, 0]).float(), atol=1e-3)


# --- overfit with frozen encoders (App. B.2) -------------------------------------------------------


def test_heads_overfit_a_tiny_batch_with_frozen_encoders() -> None:
    svac = make_svac()
    svac.freeze_encoders()
    svac.train()
    frames, foa = batch(SPECS)
    params = [p for p in svac.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    chance = 0.5 * (math.log(len(SPECS) + 2) + math.log(len(SPECS) + 1))
    losses = []
    for _ in range(80):
        loss, stats = svac.loss(frames, foa, torch.Generator().manual_seed(0))  # the same negatives each step
        losses.append(loss.item())
        if losses[0] / losses[-1] >= 20:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(
        f"chance {chance:.3f}, first {losses[0]:.3f}, last {losses[-1]:.4f}, "
        f"ratio {losses[0] / losses[-1]:.1f}, steps {len(losses)}, τ {stats['temperature']:.3f}"
    )
    assert losses[0] / losses[-1] >= 10
    assert stats["accuracy_video_query"] == 1.0 and stats["accuracy_audio_query"] == 1.0


# --- loading VideoMAE (Hugging Face) and AudioMAE (timm names) -------------------------------------


def tiny_videomae(folder, image_size, seed: int = 0) -> VideoMAEModel:
    torch.manual_seed(seed)
    config = VideoMAEConfig(
        image_size=image_size,
        patch_size=16,
        num_frames=2,
        tubelet_size=2,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        use_mean_pooling=False,
        layer_norm_eps=1e-6,
    )
    model = VideoMAEModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # q_bias, v_bias and the norms start at constants: make them count
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("tubelet", [1, 2])
def test_videomae_checkpoint_reproduces_hugging_face_hidden_states(tmp_path, tubelet: int) -> None:
    theirs = tiny_videomae(tmp_path, [64, 128])
    config = dataclasses.replace(VideoEncoderConfig.tiny(), tubelet_frames=tubelet)
    ours = VideoEncoder.from_videomae(tmp_path, config).eval()
    g = torch.Generator().manual_seed(0)
    if tubelet == 1:  # folded kernel: our frame = VideoMAE's static tubelet of that frame
        frame = torch.rand(2, 1, 3, 64, 128, generator=g)
        clip, ours_input = frame.expand(-1, 2, -1, -1, -1), frame
    else:
        clip = ours_input = torch.rand(2, 2, 3, 64, 128, generator=g)
    normalised = (clip - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[
        :, None, None
    ]
    with torch.no_grad():
        expected = theirs(pixel_values=normalised).last_hidden_state  # (B, S, C): one time step
        got = ours(ours_input)[:, 0]
    error = (got - expected).abs().max().item()
    print(f"tubelet {tubelet}: max |ours - Hugging Face| = {error:.2e}")
    assert error < 1e-4


def test_videomae_loads_from_s3_and_resizes_positions(tmp_path, s3_bucket: str) -> None:
    tiny_videomae(tmp_path, 64)  # square 64x64 checkpoint: positions resized to our 4 x 8 grid
    prefix = f"s3://{s3_bucket}/videomae"
    for name in ("config.json", "model.safetensors"):
        storage.write_bytes(storage.join(prefix, name), (tmp_path / name).read_bytes())
    local = VideoEncoder.from_videomae(tmp_path, VideoEncoderConfig.tiny())
    remote = VideoEncoder.from_videomae(prefix, VideoEncoderConfig.tiny())
    assert local.pos_embed.shape == (32, 64)
    for key, value in local.state_dict().items():
        assert torch.equal(value, remote.state_dict()[key]), key
    with pytest.raises(InputError):
        VideoEncoder.from_videomae(tmp_path, dataclasses.replace(VideoEncoderConfig.tiny(), depth=3))
    with pytest.raises(InputError):
        VideoEncoder.from_videomae(tmp_path / "missing", VideoEncoderConfig.tiny())


def audiomae_state(encoder: AudioEncoder) -> dict[str, torch.Tensor]:
    """Our tiny encoder's weights under AudioMAE's (timm ViT) names, with its layouts."""
    ours = encoder.state_dict()
    state = {key: value for key, value in ours.items() if key.startswith("blocks.")}
    state["patch_embed.proj.weight"] = ours["patch_embed.weight"][:, :1].transpose(2, 3).contiguous()
    state["patch_embed.proj.bias"] = ours["patch_embed.bias"]
    cls = torch.zeros(1, 64)
    state["pos_embed"] = torch.cat([cls, ours["pos_embed"].flatten(0, 1)])[None]  # (1, 1 + T·F, C)
    state["cls_token"] = cls[None]
    state["norm.weight"], state["norm.bias"] = ours["norm.weight"], ours["norm.bias"]
    state["decoder_embed.weight"] = torch.zeros(8, 64)  # pretraining decoder: ignored
    return state


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_audiomae_state_dict_loads_into_the_w_plane(tmp_path, suffix: str) -> None:
    torch.manual_seed(0)
    source = AudioEncoder(AudioEncoderConfig.tiny()).eval()
    with torch.no_grad():
        source.patch_embed.weight[:, 1:] = 0  # what a mono AudioMAE sees: W only
        for p in source.blocks.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path / f"audiomae{suffix}"
    if suffix == ".safetensors":
        safetensors.torch.save_file(audiomae_state(source), path)
    else:
        torch.save({"model": audiomae_state(source)}, path)  # AudioMAE's own checkpoint layout
    loaded = AudioEncoder.from_audiomae(path, AudioEncoderConfig.tiny(), seed=1).eval()
    again = AudioEncoder.from_audiomae(path, AudioEncoderConfig.tiny(), seed=1)
    w_plane = loaded.patch_embed.weight[:, :1]
    assert torch.equal(w_plane, source.patch_embed.weight[:, :1])
    assert torch.equal(loaded.patch_embed.weight, again.patch_embed.weight)  # seeded new planes
    new_planes = loaded.patch_embed.weight[:, 1:]
    ratio = (new_planes.square().sum() / w_plane.square().sum()).item()
    print(f"energy of the 6 new planes / W plane: {ratio:.2f}")
    assert 0.5 < ratio < 2.0
    with torch.no_grad():
        loaded.patch_embed.weight[:, 1:] = 0
        foa = torch.randn(2, 4, 20 * HOP) * 0.1
        assert torch.allclose(loaded(foa), source(foa), atol=1e-5)
    broken = audiomae_state(source)
    del broken["blocks.1.mlp.fc2.weight"]
    safetensors.torch.save_file(broken, tmp_path / "broken.safetensors")
    with pytest.raises(InputError, match=r"blocks\.1\.mlp\.fc2\.weight"):
        AudioEncoder.from_audiomae(tmp_path / "broken.safetensors", AudioEncoderConfig.tiny())


# --- paper sizes (App. B.2) ------------------------------------------------------------------------


def test_paper_heads_are_near_the_papers_sizes() -> None:
    with torch.device("meta"):
        svac = SVAC(SVACConfig.paper())

    def count(*modules: torch.nn.Module) -> int:
        return sum(p.numel() for m in modules for p in m.parameters())

    audio_head, video_head = count(svac.audio_head), count(svac.video_pool, svac.video_head)
    print(
        f"paper preset: video encoder {count(svac.video_encoder) / 1e6:.2f} M, "
        f"audio encoder {count(svac.audio_encoder) / 1e6:.2f} M, "
        f"audio head {audio_head / 1e6:.3f} M (paper 6.13), video head {video_head / 1e6:.3f} M (paper 6.82)"
    )
    assert abs(audio_head / 6.13e6 - 1) < 0.02 and abs(video_head / 6.82e6 - 1) < 0.02

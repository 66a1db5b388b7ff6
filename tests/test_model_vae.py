"""FOA VAE (paper §3.1, App. B.1): shapes, causal + streaming decode, overfit, Stable Audio weights."""

import time
from dataclasses import replace

import numpy as np
import pytest
import safetensors.torch
import torch

from swansphere import foa, storage
from swansphere.conventions import SAMPLE_RATE, W, X, Y, Z
from swansphere.errors import InputError
from swansphere.models import vae as vae_module
from swansphere.models.vae import (
    FOAVAE,
    Snake,
    STFTLossConfig,
    StreamingDecoder,
    VAEConfig,
    load_stable_audio_weights,
    multi_resolution_stft_loss,
)

HOP = 2048


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_vae() -> FOAVAE:
    torch.manual_seed(0)
    return FOAVAE(VAEConfig.tiny()).eval()


def test_config_validation_and_presets():
    for bad in (
        {"audio_channels": 3},
        {"strides": (2, 1)},
        {"c_mults": (1, 2)},
        {"latent_dim": 0},
        {"channels": 0},
    ):
        with pytest.raises(ValueError):
            VAEConfig(**bad)
    paper = VAEConfig.paper()
    assert paper.hop_length == HOP and paper.latent_dim == 128 and paper.audio_channels == 4
    assert VAEConfig.tiny().hop_length == HOP, "every preset has the paper's 21.53 latent frames/s"
    assert SAMPLE_RATE / paper.hop_length == pytest.approx(21.53, abs=0.01)


def test_paper_parameter_count_on_meta_device():
    with torch.device("meta"):
        vae = FOAVAE(VAEConfig.paper())
    encoder = sum(p.numel() for p in vae.encoder.parameters())
    decoder = sum(p.numel() for p in vae.decoder.parameters())
    print(f"\npaper VAE: {encoder + decoder:,} parameters (encoder {encoder:,}, decoder {decoder:,})")
    print(f"paper VAE: decoder_context_frames = {vae.decoder_context_frames}")
    assert 150e6 < encoder + decoder < 165e6, "Stable Audio Open's VAE is about 157M parameters"
    assert vae.hop_length == HOP and vae.decoder_context_frames == 19


@torch.no_grad()
def test_tiny_shapes_sampling_and_validation(tiny_vae):
    audio = torch.randn(2, 4, 3 * HOP)
    start = time.perf_counter()
    mean, scale = tiny_vae.encode_posterior(audio)
    encoded = time.perf_counter()
    decoded = tiny_vae.decode(mean)
    print(
        f"\ntiny VAE, 2 x {3 * HOP} samples: encode {1e3 * (encoded - start):.0f} ms, "
        f"decode {1e3 * (time.perf_counter() - encoded):.0f} ms"
    )
    assert mean.shape == scale.shape == (2, 16, 3)
    assert decoded.shape == audio.shape
    assert bool((scale > 0).all())
    z1 = tiny_vae.encode(audio, torch.Generator().manual_seed(1))
    z2 = tiny_vae.encode(audio, torch.Generator().manual_seed(1))
    assert torch.equal(z1, z2) and not torch.equal(z1, mean), "seeded sampling is reproducible"
    assert torch.equal(tiny_vae.encode(audio, sample=False), mean)
    assert float(tiny_vae.kl(mean, scale)) > 0
    assert float(tiny_vae.kl(torch.zeros(1, 3, 2), torch.ones(1, 3, 2))) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="Generator"):
        tiny_vae.encode(audio)
    with pytest.raises(ValueError, match="multiple of hop"):
        tiny_vae.encode_posterior(audio[..., :-1])
    assert tiny_vae.pad_to_hop(audio[..., :-1]).shape[-1] == 3 * HOP
    with pytest.raises(ValueError, match="audio must be"):
        tiny_vae.encode_posterior(audio[:, :2])
    with pytest.raises(ValueError, match="z must be"):
        tiny_vae.decode(mean[:, :3])


@torch.no_grad()
def test_decoder_is_causal_and_its_context_is_exact(tiny_vae):
    """Frame k moves nothing before sample k·hop; the first sample of frame k reaches back exactly
    decoder_context_frames frames and no further."""
    context = tiny_vae.decoder_context_frames
    k = context + 2
    z = torch.randn(1, 16, k + 3, generator=torch.Generator().manual_seed(0))
    reference = tiny_vae.decode(z)

    def decode_with_frame_moved(frame: int) -> torch.Tensor:
        moved = z.clone()
        moved[..., frame] += 1.0
        return tiny_vae.decode(moved)

    moved = decode_with_frame_moved(k)
    assert torch.equal(moved[..., : k * HOP], reference[..., : k * HOP]), "the past must not move"
    assert not torch.equal(moved[..., k * HOP], reference[..., k * HOP]), "no extra delay"
    oldest = decode_with_frame_moved(k - context)
    assert not torch.equal(oldest[..., k * HOP], reference[..., k * HOP])
    too_old = decode_with_frame_moved(k - context - 1)
    assert torch.equal(too_old[..., k * HOP :], reference[..., k * HOP :])


@torch.no_grad()
@pytest.mark.parametrize("patch", [1, 4, 7])
def test_streaming_decode_equals_offline_decode(tiny_vae, patch):
    frames = tiny_vae.decoder_context_frames + 6  # longer than the context
    z = torch.randn(2, 16, frames, generator=torch.Generator().manual_seed(patch))
    offline = tiny_vae.decode(z)
    stream, errors = StreamingDecoder(tiny_vae), []
    for _ in range(2):  # a second stream after reset() starts from the same zero padding
        stream.reset()
        chunks = [stream.push(z[..., start : start + patch]) for start in range(0, frames, patch)]
        assert all(chunk.shape[-1] == min(patch, frames - i * patch) * HOP for i, chunk in enumerate(chunks))
        errors.append((torch.cat(chunks, dim=-1) - offline).abs().max().item())
    print(f"\nstreaming decode, P={patch}, {frames} frames: max |stream - offline| = {max(errors):.2e}")
    assert max(errors) <= 1e-4
    with pytest.raises(ValueError, match="batch size changed"):
        stream.push(z[:1, :, :patch])


@torch.no_grad()
def test_the_folded_decoder_decodes_the_same_audio_and_leaves_the_model_trainable():
    torch.manual_seed(1)
    vae = FOAVAE(VAEConfig.tiny())
    for name, param in vae.decoder.named_parameters():  # g away from ‖v‖, Snakes' α and β away
        if name.endswith("original0"):  # from 1: folding is not a no-op
            param.mul_(1.5)
        elif name.endswith(("alpha", "beta")):
            param.normal_(0.0, 0.5)
    folded = vae.folded_decoder()
    assert not any(name.endswith(("original0", "original1")) for name, _ in folded.named_parameters())
    assert not any(isinstance(m, Snake) and m.logscale for m in folded.modules())
    assert all(m.logscale for m in vae.decoder.modules() if isinstance(m, Snake))
    assert not any(param.requires_grad for param in folded.parameters())
    z = torch.randn(2, 16, 9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(folded(z), vae.decode(z))
    (audio, state), (reference, reference_state) = folded.stream(z, None), vae.decode_stream(z, None)
    assert torch.equal(audio, reference)
    assert all(torch.equal(a, b) for a, b in zip(state, reference_state, strict=True))
    assert any(name.endswith("original1") for name, _ in vae.decoder.named_parameters())
    assert all(param.requires_grad for param in vae.decoder.parameters())


def test_snake_computes_the_same_without_autograd_and_still_trains(monkeypatch):
    """Without autograd on one torch thread (this module's fixture), Snake's sin runs in numpy, in
    place: the same values as torch's, the input untouched; with autograd the gradients still flow."""
    numpy_sins, numpy_sin = [], np.sin
    monkeypatch.setattr(vae_module.np, "sin", lambda *a, **k: numpy_sins.append(1) or numpy_sin(*a, **k))
    torch.manual_seed(0)
    snake = Snake(8, logscale=True)
    with torch.no_grad():
        snake.alpha.normal_()
        snake.beta.normal_()
    x = (torch.randn(3, 300, 8) * 4).transpose(1, 2)  # not contiguous, as a strided view can be
    original = x.clone()
    alpha, beta = snake.alpha.detach().exp()[:, None], snake.beta.detach().exp()[:, None]
    with torch.inference_mode():
        fast = snake(x)
    assert numpy_sins == [1]
    torch.testing.assert_close(fast, x + torch.sin(alpha * x).pow(2) / (beta + 1e-9), rtol=1e-6, atol=1e-6)
    assert torch.equal(x, original)

    x.requires_grad_(True)
    snake(x).sum().backward()
    assert numpy_sins == [1]
    assert snake.alpha.grad is not None and snake.alpha.grad.abs().sum() > 0
    x_grad = 1 + alpha * torch.sin(2 * alpha * x.detach()) / (beta + 1e-9)  # d/dx of x + sin²(αx)/β
    torch.testing.assert_close(x.grad, x_grad)


def test_mr_stft_loss_weights_each_channel_one_quarter():
    target = torch.randn(2, 4, 4096, generator=torch.Generator().manual_seed(0))
    assert float(multi_resolution_stft_loss(target, target)) == pytest.approx(0.0, abs=1e-6)
    off_all = multi_resolution_stft_loss(0.5 * target, target)
    off_one = target.clone()
    off_one[:, Z] *= 0.5
    assert float(multi_resolution_stft_loss(off_one, target)) == pytest.approx(float(off_all) / 4, rel=1e-3)


def _fixed_foa_clips() -> torch.Tensor:
    """Two 8192-sample plane waves of one bright periodic tone (period 16 samples, 8 harmonics),
    from two directions that give Y, Z and X equal weight (|gain| = 1/sqrt(3))."""
    rng = np.random.default_rng(0)
    n = np.arange(4 * HOP)
    tone = sum(np.sin(2 * np.pi * k * n / 16 + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 9))
    tone = 0.3 * tone / np.abs(tone).max()
    clips = [foa.encode(tone, azimuth, elevation) for azimuth, elevation in ((45, 35.26), (-135, -35.26))]
    return torch.tensor(np.stack(clips), dtype=torch.float32)  # (2, 4, 8192)


def test_overfit_tiny_batch():
    """The training pass (sampled z, App. B.1's MR-STFT + 1e-5 KL) fits a fixed batch.

    The clean synthetic tone has no noise floor, so the loss counts magnitudes below 1e-2
    (about 75 dB under the tone's peak bin at 2048 points) as silence; the default 1e-4 floor
    suits recordings, whose own noise sits above it.
    """
    torch.manual_seed(0)
    vae = FOAVAE(VAEConfig.tiny())
    audio = _fixed_foa_clips()
    loss_config = STFTLossConfig(eps=1e-2)
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    losses, start = [], time.perf_counter()
    for _ in range(50):
        reconstruction, kl = vae(audio, generator)
        loss = multi_resolution_stft_loss(reconstruction, audio, loss_config)
        (loss + 1e-5 * kl).backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    ratio = losses[0] / min(losses[-5:])
    print(
        f"\noverfit: MR-STFT {losses[0]:.3f} -> {min(losses[-5:]):.3f} ({ratio:.1f}x) "
        f"in {len(losses)} Adam steps, {time.perf_counter() - start:.1f} s"
    )
    assert ratio >= 10


# --- Stable Audio Open weights ------------------------------------------------------------------

_G, _V = ".parametrizations.weight.original0", ".parametrizations.weight.original1"


def _stereo_sao_model() -> FOAVAE:
    """Our code in Stable Audio Open's layout: 2 channels, latent 64 (tiny widths)."""
    torch.manual_seed(1)
    return FOAVAE(replace(VAEConfig.tiny(), audio_channels=2, latent_dim=64))


def _sao_style_state(model: FOAVAE) -> dict[str, torch.Tensor]:
    """The model's tensors under SAO's names: `pretransform.model.` prefix, weight_g / weight_v."""
    state = {}
    for key, tensor in model.state_dict().items():
        key = key.replace(_G, ".weight_g").replace(_V, ".weight_v")
        state[f"pretransform.model.{key}"] = tensor.clone()
    state["model.model.transformer.layers.0.linear.weight"] = torch.zeros(3, 3)  # the DiT: ignored
    return state


def _foa_model(dtype: torch.dtype = torch.float64) -> FOAVAE:
    torch.manual_seed(2)
    return FOAVAE(replace(VAEConfig.tiny(), latent_dim=128)).to(dtype)


def _effective(state: dict[str, torch.Tensor], layer: str) -> torch.Tensor:
    g, v = state[layer + _G].double(), state[layer + _V].double()
    return g * v / v.norm(dim=(1, 2), keepdim=True)


def test_load_stable_audio_weights_copies_and_adapts(tmp_path):
    stereo = _stereo_sao_model()
    path = tmp_path / "sao_vae.safetensors"
    safetensors.torch.save_file(_sao_style_state(stereo), path)
    model = _foa_model()
    before = {key: tensor.clone() for key, tensor in model.state_dict().items()}
    report = load_stable_audio_weights(model, str(path))
    print("\n" + "\n".join(report))
    assert len(report) == 4
    source, after = stereo.state_dict(), model.state_dict()
    enc_in, enc_out = "encoder.layers.0", f"encoder.layers.{len(model.encoder.layers) - 1}"
    dec_in, dec_out = "decoder.layers.0", f"decoder.layers.{len(model.decoder.layers) - 1}"
    adapted = (enc_in, enc_out, dec_in, dec_out)
    copied = [key for key in after if not key.startswith(tuple(layer + "." for layer in adapted))]
    assert len(copied) > 100
    assert all(torch.equal(after[key], source[key].double()) for key in copied), "copied exactly"
    # Encoder input: W = mean of the L/R weights, Y = half their difference, Z = X = 0.
    stereo_in, foa_in = _effective(source, enc_in), _effective(after, enc_in)
    torch.testing.assert_close(foa_in[:, W], (stereo_in[:, 0] + stereo_in[:, 1]) / 2)
    torch.testing.assert_close(foa_in[:, Y], (stereo_in[:, 0] - stereo_in[:, 1]) / 2)
    assert not foa_in[:, Z].any() and not foa_in[:, X].any()
    # Decoder output: W = L + R, Y = L − R, Z and X rows exactly zero.
    stereo_out, foa_out = _effective(source, dec_out), _effective(after, dec_out)
    torch.testing.assert_close(foa_out[W], stereo_out[0] + stereo_out[1])
    torch.testing.assert_close(foa_out[Y], stereo_out[0] - stereo_out[1])
    assert not foa_out[Z].any() and not foa_out[X].any()
    # Bottleneck 64 -> 128: SAO's mean rows and scale rows first, the new rows untouched.
    for suffix in (_G, _V, ".bias"):
        key = enc_out + suffix
        assert torch.equal(after[key][:64], source[key][:64].double())
        assert torch.equal(after[key][128:192], source[key][64:].double())
        assert torch.equal(after[key][64:128], before[key][64:128])
        assert torch.equal(after[key][192:], before[key][192:])
    # Decoder input 64 -> 128 latent columns: SAO's copied, the new ones zero.
    assert torch.equal(after[dec_in + _G], source[dec_in + _G].double())
    assert torch.equal(after[dec_in + _V][:, :64], source[dec_in + _V].double())
    assert not after[dec_in + _V][:, 64:].any()


@torch.no_grad()
def test_loaded_model_reproduces_the_stereo_model_on_pseudo_foa(tmp_path):
    """Right after loading, the FOA model is SAO seen through pseudo-FOA (W = L + R, Y = L − R).

    Both models run in float64, so the only differences are rounding (~1e-16 per operation);
    1e-9 leaves a wide margin while any wrong mapping would be off by O(1).
    """
    stereo = _stereo_sao_model()
    path = tmp_path / "vae.ckpt"  # a Lightning-style torch file, weight norm removed, another prefix
    plain = {}
    for key, tensor in stereo.state_dict().items():
        if key.endswith(_V):
            layer = key[: -len(_V)]
            plain[f"autoencoder.{layer}.weight"] = _effective(stereo.state_dict(), layer)
        elif not key.endswith(_G):
            plain[f"autoencoder.{key}"] = tensor
    torch.save({"state_dict": plain, "global_step": torch.tensor(7)}, path)
    model = _foa_model()
    load_stable_audio_weights(model, str(path))
    stereo = stereo.double()

    generator = torch.Generator().manual_seed(3)
    left_right = torch.randn(2, 2, 2 * HOP, generator=generator, dtype=torch.float64)
    audio = torch.zeros(2, 4, 2 * HOP, dtype=torch.float64)
    audio[:, W] = left_right[:, 0] + left_right[:, 1]
    audio[:, Y] = left_right[:, 0] - left_right[:, 1]
    audio[:, [Z, X]] = torch.randn(2, 2, 2 * HOP, generator=generator, dtype=torch.float64)  # ignored
    mean, scale = model.encode_posterior(audio)
    stereo_mean, stereo_scale = stereo.encode_posterior(left_right)
    errors = [(mean[:, :64] - stereo_mean).abs().max(), (scale[:, :64] - stereo_scale).abs().max()]

    z = torch.randn(2, 128, 3, generator=generator, dtype=torch.float64)
    decoded, stereo_decoded = model.decode(z), stereo.decode(z[:, :64])
    errors.append((decoded[:, W] - stereo_decoded.sum(dim=1)).abs().max())
    errors.append((decoded[:, Y] - (stereo_decoded[:, 0] - stereo_decoded[:, 1])).abs().max())
    print(f"\nloaded vs stereo model (float64): max errors {[f'{float(e):.1e}' for e in errors]}")
    assert max(float(e) for e in errors) < 1e-9
    assert not decoded[:, [Z, X]].any()


@pytest.mark.servers
def test_load_stable_audio_weights_from_s3(s3_bucket):
    stereo = _stereo_sao_model()
    uri = f"s3://{s3_bucket}/sao/vae.safetensors"
    storage.write_bytes(uri, safetensors.torch.save(_sao_style_state(stereo)))
    model = _foa_model(torch.float32)
    assert len(load_stable_audio_weights(model, uri)) == 4
    key = "decoder.layers.1.layers.1" + _V
    assert torch.equal(model.state_dict()[key], stereo.state_dict()[key])


def test_load_stable_audio_weights_rejects_bad_checkpoints(tmp_path):
    model = _foa_model(torch.float32)
    with pytest.raises(InputError, match="no such file"):
        load_stable_audio_weights(model, str(tmp_path / "missing.safetensors"))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable checkpoint"):
        load_stable_audio_weights(model, str(garbage))
    other = tmp_path / "other.safetensors"
    safetensors.torch.save_file({"model.transformer.layers.0.weight": torch.zeros(2)}, other)
    with pytest.raises(InputError, match="expected one autoencoder"):
        load_stable_audio_weights(model, str(other))
    torch.manual_seed(3)
    wider = FOAVAE(replace(VAEConfig.tiny(), channels=16, audio_channels=2, latent_dim=64))
    mismatched = tmp_path / "wider.safetensors"
    safetensors.torch.save_file(_sao_style_state(wider), mismatched)
    with pytest.raises(InputError, match=r"model needs|cannot adapt"):
        load_stable_audio_weights(model, str(mismatched))

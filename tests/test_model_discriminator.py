"""MS-STFT discriminator (EnCodec §3.4, paper App. B.1): config, shapes, spectrogram, losses, updates."""

import json
import math

import numpy as np
import pytest
import torch

from swansphere import foa
from swansphere.conventions import SAMPLE_RATE, W, X, Y, Z
from swansphere.models.config_io import config_from_dict, config_to_dict
from swansphere.models.discriminator import (
    DiscriminatorConfig,
    MultiScaleSTFTDiscriminator,
    ScaleOutput,
    STFTDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)

N = 4096
"""Samples per test clip: a few frames at the tiny preset's largest FFT (512)."""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_config() -> DiscriminatorConfig:
    return DiscriminatorConfig.tiny()


def _discriminator(config: DiscriminatorConfig, seed: int = 0) -> MultiScaleSTFTDiscriminator:
    torch.manual_seed(seed)
    return MultiScaleSTFTDiscriminator(config)


def _real_fake_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """A 'real' FOA clip (two harmonic tones encoded at fixed directions) and a 'fake' (white noise)."""
    t = np.arange(N) / SAMPLE_RATE
    tone_a = 0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.2 * np.sin(2 * np.pi * 880.0 * t)
    tone_b = 0.3 * np.sin(2 * np.pi * 1300.0 * t)
    real = foa.encode(tone_a, 30.0, 0.0) + foa.encode(tone_b, -120.0, 20.0)  # (4, N)
    rng = np.random.default_rng(1)
    fake = 0.3 * rng.standard_normal((4, N))
    real_batch, fake_batch = (np.stack([clip, 0.8 * clip]) for clip in (real, fake))  # (2, 4, N) each
    return torch.tensor(real_batch, dtype=torch.float32), torch.tensor(fake_batch, dtype=torch.float32)


Values = list  # nested lists of floats, as torch.tensor takes them


def _outputs(logits: list[Values], features: list[list[Values]] | None = None) -> list[ScaleOutput]:
    """Hand-built per-scale discriminator outputs."""
    features = features or [[] for _ in logits]
    return [
        (torch.tensor(values), [torch.tensor(f) for f in maps])
        for values, maps in zip(logits, features, strict=True)
    ]


# --- config --------------------------------------------------------------------------------------


def test_config_validation_presets_and_json_round_trip():
    for bad in (
        {"channels": 0},
        {"filters": 0},
        {"n_ffts": (), "hop_lengths": (), "win_lengths": ()},
        {"n_ffts": (512, 256)},
        {"win_lengths": (4096, 1024, 512, 256, 128)},
        {"hop_lengths": (512, 256, 0, 64, 32)},
    ):
        with pytest.raises(ValueError):
            DiscriminatorConfig(**bad)
    paper = DiscriminatorConfig.paper()
    assert paper.channels == 4 and paper.filters == 64
    assert paper.n_ffts == (2048, 1024, 512, 256, 128)
    assert all(hop * 4 == n_fft for hop, n_fft in zip(paper.hop_lengths, paper.n_ffts, strict=True))
    for config in (
        paper,
        DiscriminatorConfig.tiny(),
        DiscriminatorConfig(filters=16, n_ffts=(64,), hop_lengths=(16,), win_lengths=(48,)),
    ):
        restored = config_from_dict(DiscriminatorConfig, json.loads(json.dumps(config_to_dict(config))))
        assert restored == config and isinstance(restored.n_ffts, tuple)
    with pytest.raises(ValueError, match="unknown config keys"):
        config_from_dict(DiscriminatorConfig, {**config_to_dict(paper), "growth": 2})
    with torch.device("meta"):
        model = MultiScaleSTFTDiscriminator(paper)
    assert len(model.scales) == 5
    assert model.scales[0].convs[0].parametrizations.weight.original1.shape == (64, 8, 3, 9)


# --- shapes and spectrogram ----------------------------------------------------------------------


def _frequency_after_strides(bins: int, layer: int) -> int:
    """Frequency bins out of conv `layer`: convs 1..3 halve them (kernel 9, padding 4, stride 2)."""
    for _ in range(min(layer, 3)):
        bins = (bins - 1) // 2 + 1
    return bins


def test_shapes_per_scale(tiny_config):
    model = _discriminator(tiny_config)
    audio = torch.randn(3, 4, N)
    outputs = model(audio)
    assert len(outputs) == len(tiny_config.n_ffts)
    for (logits, features), n_fft, hop in zip(
        outputs, tiny_config.n_ffts, tiny_config.hop_lengths, strict=True
    ):
        frames = 1 + (N - n_fft) // hop  # not centred
        bins = n_fft // 2 + 1
        assert len(features) == 5
        for layer, feature in enumerate(features):
            assert feature.shape == (3, tiny_config.filters, frames, _frequency_after_strides(bins, layer))
        assert logits.shape == (3, 1, frames, _frequency_after_strides(bins, 3))
    half = model(audio.bfloat16())  # a decoder's output under bf16 autocast: the STFT runs in float32
    rounded = model(audio.bfloat16().float())
    assert half[0][0].dtype == torch.float32 and torch.equal(half[0][0], rounded[0][0])
    for bad in (torch.randn(2, 2, N), torch.randn(4, N), torch.randn(1, 4, max(tiny_config.n_ffts) - 1)):
        with pytest.raises(ValueError):
            model(bad)


def test_spectrogram_is_the_normalised_hann_stft_of_each_channel():
    """A sinusoid centred on bin k in channel Y only: Y's real/imag planes peak at k with the
    analytic magnitude (A/2)·Σw / sqrt(Σw²); the other channels' planes are zero."""
    n_fft, hop, k, amplitude = 256, 64, 10, 0.7
    scale = STFTDiscriminator(channels=4, filters=4, n_fft=n_fft, hop_length=hop, win_length=n_fft)
    audio = torch.zeros(1, 4, 1024, dtype=torch.float64)
    audio[0, Y] = amplitude * torch.cos(2 * math.pi * k * torch.arange(1024, dtype=torch.float64) / n_fft)
    spec = scale.spectrogram(audio)  # (1, 8, T, F)
    assert spec.shape == (1, 8, 1 + (1024 - n_fft) // hop, n_fft // 2 + 1)
    magnitude = torch.hypot(spec[0, Y], spec[0, 4 + Y])  # (T, F)
    window = np.hanning(n_fft + 1)[:-1]  # periodic Hann, as torch.hann_window
    expected = amplitude / 2 * window.sum() / np.sqrt((window**2).sum())
    np.testing.assert_allclose(magnitude[:, k].numpy(), expected, rtol=1e-9)
    assert (magnitude.argmax(dim=-1) == k).all()
    for channel in (W, Z, X):
        assert spec[0, [channel, 4 + channel]].abs().max() == 0


# --- losses on hand-built logits -----------------------------------------------------------------


def test_hinge_losses_match_the_encodec_formulas():
    real = _outputs([[[0.5, 2.0, -1.0]], [[1.5, 0.0]]])
    fake = _outputs([[[-2.0, 0.5, -0.5]], [[3.0, -1.0]]])
    # l_d, scale 1: mean(0.5, 0, 2) + mean(0, 1.5, 0.5) = 5/6 + 2/3; scale 2: mean(0, 1) + mean(4, 0) = 2.5
    expected_d = ((5 / 6 + 2 / 3) + 2.5) / 2
    assert discriminator_loss(real, fake).item() == pytest.approx(expected_d)
    # l_g, scale 1: mean(3, 0.5, 1.5) = 5/3; scale 2: mean(0, 2) = 1
    assert generator_adversarial_loss(fake).item() == pytest.approx((5 / 3 + 1) / 2)
    # a discriminator beyond the margins has zero loss, and so does a generator that fools it
    assert discriminator_loss(_outputs([[1.0, 4.0]]), _outputs([[-1.0, -3.0]])).item() == 0
    assert generator_adversarial_loss(_outputs([[1.0, 2.5]])).item() == 0
    with pytest.raises(ValueError):
        discriminator_loss(real, fake[:1])


def test_feature_matching_matches_the_relative_l1_formula():
    real = _outputs([[0.0], [0.0]], [[[1.0, -1.0, 2.0, 0.0], [2.0, 2.0]], [[-4.0, 0.0], [0.5, 0.5]]])
    fake = _outputs([[0.0], [0.0]], [[[0.0, -1.0, 1.0, 1.0], [1.0, 3.0]], [[-4.0, 2.0], [0.5, 0.5]]])
    # per map: 0.75 / 1 ; 1 / 2 ; 1 / 2 ; 0 / 0.5  -> mean over the 4 (K = 2 scales × L = 2 maps)
    expected = (0.75 + 0.5 + 0.5 + 0.0) / 4
    assert feature_matching_loss(real, fake).item() == pytest.approx(expected)
    swapped = _outputs([[0.0], [0.0]], [[[1.0]], [[2.0]]])
    with pytest.raises(ValueError):
        feature_matching_loss(real, swapped)


def test_feature_matching_is_zero_for_identical_inputs(tiny_config):
    model = _discriminator(tiny_config)
    real, fake = _real_fake_pair()
    assert feature_matching_loss(model(real), model(real.clone())).item() == 0
    assert feature_matching_loss(model(real), model(fake)).item() > 0.1


# --- training behaviour --------------------------------------------------------------------------


def test_two_discriminator_steps_lower_its_loss_on_a_fixed_pair(tiny_config):
    model = _discriminator(tiny_config)
    real, fake = _real_fake_pair()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.9))

    def loss_and_margin() -> tuple[torch.Tensor, float]:
        real_out, fake_out = model(real), model(fake)
        margin = sum((r.mean() - f.mean()).item() for (r, _), (f, _) in zip(real_out, fake_out, strict=True))
        return discriminator_loss(real_out, fake_out), margin

    before, margin_before = loss_and_margin()
    for _ in range(2):
        optimizer.zero_grad()
        loss, _ = loss_and_margin()
        loss.backward()
        optimizer.step()
    after, margin_after = loss_and_margin()
    assert after.item() < before.item() - 1e-3
    assert margin_after > margin_before, "D scores the real clip higher relative to the fake one"


def test_generator_gradients_reach_the_audio_and_a_step_fools_d_more(tiny_config):
    model = _discriminator(tiny_config)
    real, fake = _real_fake_pair()
    fake = fake.requires_grad_(True)

    def generator_loss(audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fake_out = model(audio)
        return generator_adversarial_loss(fake_out), feature_matching_loss(model(real), fake_out)

    adversarial, feature = generator_loss(fake)
    (adversarial + feature).backward()
    grad = fake.grad
    assert grad is not None and torch.isfinite(grad).all()
    for channel in range(4):
        assert grad[:, channel].abs().max() > 0, f"channel {channel} gets a gradient"
    with torch.no_grad():
        stepped = fake - 1e-3 * grad / grad.norm()
        adversarial_after, feature_after = generator_loss(stepped)
    assert (adversarial_after + feature_after).item() < (adversarial + feature).item()
    real_only = feature_matching_loss(model(real.requires_grad_(True)), model(fake.detach()))
    real_only.backward()
    assert real.grad is None, "real features are targets: no gradient flows back through them"

"""The VAE's adversary (paper App. B.1): EnCodec's multi-scale STFT discriminator (MS-STFTD) for FOA.

Défossez et al. 2022 (EnCodec) §3.4, as Stable Audio Open trains its VAE with it: K sub-discriminators,
one per STFT resolution, each a small 2D CNN over the complex spectrogram (real and imaginary parts
of every channel as input planes), time × frequency. Here the input has the 4 AmbiX channels
(W, Y, Z, X), so every sub-discriminator sees 8 planes and judges the channels jointly: inter-channel
phase and level, i.e. the direction, is part of what it can tell apart.

Losses, as EnCodec §3.4 writes them (D_k: logits of scale k, D_k^l: its l-th feature map):
    l_d    = 1/K Σ_k [ mean max(0, 1 − D_k(x)) + mean max(0, 1 + D_k(x̂)) ]      (hinge, discriminator)
    l_g    = 1/K Σ_k mean max(0, 1 − D_k(x̂))                                    (hinge, generator)
    l_feat = 1/(KL) Σ_k Σ_l mean|D_k^l(x) − D_k^l(x̂)| / mean|D_k^l(x)|          (relative L1)
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

KERNEL = (3, 9)
"""Kernel of the inner convolutions, (time, frequency) (EnCodec)."""

FREQ_STRIDE = 2
"""The dilated convolutions halve the frequency axis (EnCodec stride (1, 2))."""

TIME_DILATIONS = (1, 2, 4)
"""Dilations along time of the three strided convolutions (EnCodec)."""

LEAKY_SLOPE = 0.2
"""LeakyReLU negative slope after every convolution but the last (EnCodec)."""

FEATURE_EPS = 1e-8
"""Floor of l_feat's denominator mean|D_k^l(x)|, which is zero only for an all-zero feature map."""

ScaleOutput = tuple[torch.Tensor, list[torch.Tensor]]
"""One scale's (logits (B, 1, T_k, F_k), feature maps [(B, filters, T_k, F_k^l)])."""


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Sizes of the MS-STFTD. `paper()` is Stable Audio Open's (its VAE config); `tiny()` runs on a CPU."""

    channels: int = 4
    """Audio channels in: 4 = AmbiX FOA (2 would be SAO's stereo discriminator)."""
    filters: int = 64
    """Width of every convolution. EnCodec uses 32; Stable Audio Open's VAE config uses 64."""
    n_ffts: tuple[int, ...] = (2048, 1024, 512, 256, 128)
    """FFT size per scale; one sub-discriminator each (EnCodec and SAO: five, 2048 down to 128)."""
    hop_lengths: tuple[int, ...] = (512, 256, 128, 64, 32)
    """STFT hop per scale (SAO: a quarter of the FFT size)."""
    win_lengths: tuple[int, ...] = (2048, 1024, 512, 256, 128)
    """Hann window length per scale, at most its FFT size (SAO: the FFT size)."""

    def __post_init__(self) -> None:
        if self.channels < 1 or self.filters < 1:
            raise ValueError(f"channels and filters must be >= 1, got {self.channels}, {self.filters}")
        if not self.n_ffts or not len(self.n_ffts) == len(self.hop_lengths) == len(self.win_lengths):
            raise ValueError(
                f"n_ffts {self.n_ffts}, hop_lengths {self.hop_lengths} and win_lengths {self.win_lengths} "
                "must be non-empty and of equal length (one entry per scale)"
            )
        for n_fft, hop, win in zip(self.n_ffts, self.hop_lengths, self.win_lengths, strict=True):
            if n_fft < 2 or hop < 1 or not 1 <= win <= n_fft:
                raise ValueError(
                    f"scale n_fft={n_fft}, hop={hop}, win={win}: need n_fft >= 2, hop >= 1, 1 <= win <= n_fft"
                )

    @classmethod
    def tiny(cls) -> "DiscriminatorConfig":
        """Three small scales and 8 filters: a step on a few thousand samples takes milliseconds."""
        return cls(filters=8, n_ffts=(512, 256, 128), hop_lengths=(128, 64, 32), win_lengths=(512, 256, 128))

    @classmethod
    def paper(cls) -> "DiscriminatorConfig":
        """Stable Audio Open's VAE discriminator (filters 64, FFTs 2048..128, hop n_fft/4) with 4 channels."""
        return cls()

    @property
    def min_samples(self) -> int:
        """Shortest input every scale can frame: the STFT is not centred, so one frame needs n_fft samples."""
        return max(self.n_ffts)


def _padding(kernel: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    """'Same' padding of a 2D convolution (EnCodec's get_2d_padding)."""
    return (kernel[0] - 1) * dilation[0] // 2, (kernel[1] - 1) * dilation[1] // 2


def _conv(
    in_channels: int,
    out_channels: int,
    kernel: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    dilation: tuple[int, int] = (1, 1),
) -> nn.Module:
    """A weight-normed, 'same'-padded Conv2d (EnCodec's NormConv2d with weight_norm)."""
    conv = nn.Conv2d(
        in_channels,
        out_channels,
        kernel,
        stride=stride,
        dilation=dilation,
        padding=_padding(kernel, dilation),
    )
    return weight_norm(conv)


class STFTDiscriminator(nn.Module):
    """One scale: complex STFT -> conv (3×9) -> 3 dilated convs (3×9, freq stride 2) -> conv 3×3 -> logits.

    Every convolution but the last is followed by LeakyReLU(0.2) and its output is a feature map.
    """

    def __init__(self, channels: int, filters: int, n_fft: int, hop_length: int, win_length: int):
        super().__init__()
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        square = (KERNEL[0], KERNEL[0])
        self.convs = nn.ModuleList(
            [
                _conv(2 * channels, filters, KERNEL),
                *(
                    _conv(filters, filters, KERNEL, stride=(1, FREQ_STRIDE), dilation=(dilation, 1))
                    for dilation in TIME_DILATIONS
                ),
                _conv(filters, filters, square),
            ]
        )
        self.conv_post = _conv(filters, 1, square)

    def spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, C, N) -> (B, 2C, T, F): real parts of all channels, then imaginary parts (EnCodec's order).

        Hann window, not centred, divided by sqrt(Σ w²) (torchaudio's normalized=True), so a
        spectrogram's scale does not depend on the window length. Half-precision audio (a decoder
        under bf16 autocast) is transformed in float32: the FFT has no bf16 kernels.
        """
        audio = audio.to(torch.promote_types(audio.dtype, torch.float32))
        batch, channels, length = audio.shape
        window = torch.hann_window(self.win_length, device=audio.device, dtype=audio.dtype)
        spec = torch.stft(
            audio.reshape(batch * channels, length),
            self.n_fft,
            self.hop_length,
            self.win_length,
            window=window,
            center=False,
            return_complex=True,
        )  # (B·C, F, T)
        spec = spec / window.pow(2).sum().sqrt()
        spec = spec.reshape(batch, channels, *spec.shape[-2:])  # (B, C, F, T)
        return torch.cat([spec.real, spec.imag], dim=1).transpose(-1, -2)  # (B, 2C, T, F)

    def forward(self, audio: torch.Tensor) -> ScaleOutput:
        """Logits (B, 1, T, F') and the 5 feature maps of audio (B, C, N)."""
        x = self.spectrogram(audio)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LEAKY_SLOPE)
            features.append(x)
        return self.conv_post(x), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """K STFT sub-discriminators, one per resolution of the config (EnCodec MS-STFTD)."""

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = config
        self.scales = nn.ModuleList(
            STFTDiscriminator(config.channels, config.filters, n_fft, hop, win)
            for n_fft, hop, win in zip(config.n_ffts, config.hop_lengths, config.win_lengths, strict=True)
        )

    def forward(self, audio: torch.Tensor) -> list[ScaleOutput]:
        """Per scale, (logits, feature maps) of audio (B, C, N), N >= the largest n_fft."""
        channels, shortest = self.config.channels, self.config.min_samples
        if audio.ndim != 3 or audio.shape[1] != channels:
            raise ValueError(f"audio must be (B, {channels}, N), got {tuple(audio.shape)}")
        if audio.shape[-1] < shortest:
            raise ValueError(f"audio has {audio.shape[-1]} samples; the largest STFT needs {shortest}")
        return [scale(audio) for scale in self.scales]


# --- losses (EnCodec §3.4) -----------------------------------------------------------------------


def discriminator_loss(real: list[ScaleOutput], fake: list[ScaleOutput]) -> torch.Tensor:
    """l_d = 1/K Σ_k [mean max(0, 1 − D_k(x)) + mean max(0, 1 + D_k(x̂))] (hinge).

    `fake` should come from detached generator output, so that only D learns from this loss.
    """
    _check_scales(real, fake)
    terms = [
        F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
        for (real_logits, _), (fake_logits, _) in zip(real, fake, strict=True)
    ]
    return torch.stack(terms).mean()


def generator_adversarial_loss(fake: list[ScaleOutput]) -> torch.Tensor:
    """l_g = 1/K Σ_k mean max(0, 1 − D_k(x̂)) (hinge, EnCodec eq. for l_g).

    Stable Audio Open's code uses −mean D_k(x̂) instead; both push D_k(x̂) up, the hinge stops at 1.
    """
    if not fake:
        raise ValueError("no discriminator scales given")
    return torch.stack([F.relu(1 - logits).mean() for logits, _ in fake]).mean()


def feature_matching_loss(real: list[ScaleOutput], fake: list[ScaleOutput]) -> torch.Tensor:
    """l_feat = 1/(KL) Σ_k Σ_l mean|D_k^l(x) − D_k^l(x̂)| / mean|D_k^l(x)| (relative L1).

    The real features are targets: detached, so the loss trains the generator only.
    """
    _check_scales(real, fake)
    terms = []
    for (_, real_features), (_, fake_features) in zip(real, fake, strict=True):
        if len(real_features) != len(fake_features):
            raise ValueError(f"{len(real_features)} real feature maps but {len(fake_features)} fake ones")
        for target, estimate in zip(real_features, fake_features, strict=True):
            target = target.detach()
            scale = target.abs().mean().clamp_min(FEATURE_EPS)
            terms.append((target - estimate).abs().mean() / scale)
    return torch.stack(terms).mean()


def _check_scales(real: list[ScaleOutput], fake: list[ScaleOutput]) -> None:
    if not real or len(real) != len(fake):
        raise ValueError(
            f"real and fake need the same non-zero number of scales, got {len(real)}, {len(fake)}"
        )

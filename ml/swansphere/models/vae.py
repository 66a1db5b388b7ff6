"""The 4-channel FOA VAE (paper §3.1, App. B.1): z = E(a), a ≈ D(z), z ∈ R^{d×l} at 21.53 frames/s.

Stable Audio Open's Oobleck autoencoder (Snake activations, residual units with dilations 1, 3, 9,
weight-normed convolutions, strides 2·4·4·8·8 = 2048 samples per latent frame) with 4 AmbiX channels
(W, Y, Z, X) in and out, and SAO's VAE bottleneck (the encoder emits mean and scale, 2·d channels).

One change for streaming (DESIGN §1, decoding runs one patch behind the generator): the decoder is
causal. Every decoder convolution is padded on the left only and every upsampling keeps only the
samples its past inputs produce, so output sample n depends on latent frames ≤ n // hop and nothing
later. So a window of `decoder_context_frames` of left context plus a patch decodes that patch
exactly (the stateless form the decoder stage's messages use), and `Decoder.stream` /
`StreamingDecoder` decode patch by patch from each causal layer's kept inputs, computing every
sample once; both equal the offline `decode` (which pads with zeros at the very start in the same
way). The encoder stays non-causal (centred kernels, as in SAO): it only runs offline, on training
data.

`load_stable_audio_weights` initialises the model from a Stable Audio Open VAE (paper App. B.1):
stereo layers become FOA layers through the pseudo-FOA map of `swansphere.foa.pseudo_foa`
(W = L + R, Y = L − R) and the 64-wide SAO latent grows to the paper's d = 128. SAO's decoder
kernels were trained centred; in this causal decoder they see only the past, so decoder
fine-tuning (App. B.1's second stage) is what makes them good again.
"""

import math
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from swansphere.conventions import W, Y
from swansphere.errors import InputError
from swansphere.weights import read_tensors

RESIDUAL_KERNEL = 7
"""Kernel of the dilated convolution in every residual unit (SAO)."""

RESIDUAL_DILATIONS = (1, 3, 9)
"""Dilations of the three residual units of each block (SAO)."""

EDGE_KERNEL = 7
"""Kernel of the convolutions next to the audio and of the decoder's first convolution (SAO)."""

LATENT_KERNEL = 3
"""Kernel of the encoder's last convolution, the one that emits mean and scale (SAO)."""

MIN_SCALE = 1e-4
"""Floor of the posterior's standard deviation: scale = softplus(raw) + 1e-4 (SAO)."""


@dataclass(frozen=True)
class VAEConfig:
    """Sizes of the VAE. `paper()` is Stable Audio Open's VAE with d = 128; `tiny()` runs on a CPU."""

    audio_channels: int = 4
    """4 = AmbiX FOA; 2 only builds Stable Audio Open's stereo layout (weight conversion tests)."""
    channels: int = 128
    """Base width: block i works at channels · c_mults[i] (SAO: 128)."""
    c_mults: tuple[int, ...] = (1, 2, 4, 8, 16)
    """Width multiplier per encoder block, mirrored by the decoder (SAO: 1, 2, 4, 8, 16)."""
    strides: tuple[int, ...] = (2, 4, 4, 8, 8)
    """Down/upsampling per block; their product is the hop (2048 -> 21.53 latent frames/s)."""
    latent_dim: int = 128
    """d of §3.1. The paper says 128; SAO's own latent is 64, so loading SAO weights grows the
    bottleneck's mean/scale rows and the decoder's first convolution (see load_stable_audio_weights)."""
    snake_logscale: bool = True
    """Snake's alpha and beta are stored as logarithms (SAO's choice; needed to load its weights)."""

    def __post_init__(self) -> None:
        if self.audio_channels not in (2, 4):
            raise ValueError(f"audio_channels must be 4 (FOA) or 2 (SAO stereo), got {self.audio_channels}")
        if self.channels < 1 or self.latent_dim < 1:
            raise ValueError(f"channels and latent_dim must be >= 1, got {self.channels}, {self.latent_dim}")
        if not self.strides or any(stride < 2 for stride in self.strides):
            raise ValueError(f"strides must be a non-empty tuple of integers >= 2, got {self.strides}")
        if len(self.c_mults) != len(self.strides) or any(mult < 1 for mult in self.c_mults):
            raise ValueError(f"c_mults {self.c_mults} must hold one integer >= 1 per stride {self.strides}")

    @classmethod
    def tiny(cls) -> "VAEConfig":
        """Same hop (2048) as the paper, narrow layers: a second of audio trains in milliseconds."""
        return cls(channels=8, c_mults=(1, 2, 4, 8, 8), latent_dim=16)

    @classmethod
    def paper(cls) -> "VAEConfig":
        """Stable Audio Open's VAE with 4 channels and d = 128 (paper §3.1)."""
        return cls()

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame."""
        return math.prod(self.strides)

    @property
    def widths(self) -> list[int]:
        """Channel width at each resolution, audio rate first (SAO prepends a 1 to c_mults)."""
        return [self.channels * mult for mult in (1, *self.c_mults)]


# --- layers --------------------------------------------------------------------------------------


class Snake(nn.Module):
    """SnakeBeta (SAO): x + sin²(αx)/β, a periodic activation that suits waveforms."""

    def __init__(self, channels: int, logscale: bool):
        super().__init__()
        self.logscale = logscale
        start = torch.zeros(channels) if logscale else torch.ones(channels)
        self.alpha = nn.Parameter(start.clone())  # (C,)
        self.beta = nn.Parameter(start.clone())  # (C,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        alpha, beta = self.alpha[:, None], self.beta[:, None]  # (C, 1)
        if self.logscale:
            alpha, beta = alpha.exp(), beta.exp()
        return x + _sin(alpha * x).pow(2) / (beta + 1e-9)

    @torch.no_grad()
    def exponentiate(self) -> None:
        """Keeps α and β themselves instead of their logarithms: the same activation, bit for bit,
        without two `exp` a call (for an inference copy; SAO's weights and training use the logs)."""
        if self.logscale:
            self.alpha.exp_()
            self.beta.exp_()
            self.logscale = False


def _sin(y: torch.Tensor) -> torch.Tensor:
    """sin(y), in place where numpy can do it. Snake's sin is about a third of the CPU decoder's time,
    and numpy's float32 sin (AVX-512/AVX2, ≤ 1.5 ulp) costs 0.54 ns an element against torch's 1.24
    on our CPU (docs/benchmarks.md, "Snake's sin"). Only without autograd, and only where torch runs
    one thread, since numpy's sin does not split across threads as torch's does."""
    if y.requires_grad or y.device.type != "cpu" or y.dtype != torch.float32 or torch.get_num_threads() != 1:
        return torch.sin(y)
    y = y.contiguous()
    array = y.numpy()
    np.sin(array, out=array)
    return y


class CausalConv1d(nn.Conv1d):
    """Conv1d padded on the left only: output t sees inputs <= t."""

    @property
    def left_context(self) -> int:
        """Past inputs each output reads: dilation · (kernel − 1)."""
        return self.dilation[0] * (self.kernel_size[0] - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T) -> (B, C', T)
        return super().forward(F.pad(x, (self.left_context, 0)))

    def stream(self, x: torch.Tensor, past: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Next T outputs given the last `left_context` (> 0) inputs before x (None: the stream's zero
        start); returns them and the inputs to keep for the next call."""
        left = self.left_context
        x = F.pad(x, (left, 0)) if past is None else torch.cat([past, x], dim=-1)
        return F.conv1d(x, self.weight, self.bias, dilation=self.dilation), x[..., -left:]


class CausalConvTranspose1d(nn.ConvTranspose1d):
    """Upsampling by `stride` with kernel 2·stride, keeping only the first T·stride outputs.

    Output n gets contributions from inputs n // stride and n // stride − 1 only; the dropped tail
    is what a not-yet-known next input would complete.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T) -> (B, C', T·stride)
        return super().forward(x)[..., : x.shape[-1] * self.stride[0]]

    def stream(self, x: torch.Tensor, past: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Next T·stride outputs given the input just before x (None: the stream's zero start);
        returns them and the input to keep (x's last)."""
        stride, T = self.stride[0], x.shape[-1]
        x = F.pad(x, (1, 0)) if past is None else torch.cat([past, x], dim=-1)
        return super().forward(x)[..., stride : stride + T * stride], x[..., -1:]


def _conv(in_channels: int, out_channels: int, kernel: int, causal: bool, **kwargs: int) -> nn.Module:
    """A weight-normed stride-1 convolution: causal (decoder) or centred (encoder, as SAO)."""
    if causal:
        return weight_norm(CausalConv1d(in_channels, out_channels, kernel, **kwargs))
    padding = kwargs.get("dilation", 1) * (kernel - 1) // 2
    return weight_norm(nn.Conv1d(in_channels, out_channels, kernel, padding=padding, **kwargs))


class ResidualUnit(nn.Module):
    """x + conv1x1(snake(conv7_dilated(snake(x)))); the SAO module layout, so its keys map 1:1."""

    def __init__(self, channels: int, dilation: int, causal: bool, logscale: bool):
        super().__init__()
        self.layers = nn.Sequential(
            Snake(channels, logscale),
            _conv(channels, channels, RESIDUAL_KERNEL, causal, dilation=dilation),
            Snake(channels, logscale),
            _conv(channels, channels, 1, causal),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        return x + self.layers(x)


class EncoderBlock(nn.Module):
    """Three residual units, then a strided convolution: T -> T / stride, width in -> out."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, logscale: bool):
        super().__init__()
        down = nn.Conv1d(in_channels, out_channels, 2 * stride, stride=stride, padding=math.ceil(stride / 2))
        self.layers = nn.Sequential(
            *(ResidualUnit(in_channels, dilation, False, logscale) for dilation in RESIDUAL_DILATIONS),
            Snake(in_channels, logscale),
            weight_norm(down),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, T) -> (B, C_out, T / stride)
        return self.layers(x)


class DecoderBlock(nn.Module):
    """Causal transposed-convolution upsampling, then three causal residual units: T -> T · stride."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, logscale: bool):
        super().__init__()
        self.layers = nn.Sequential(
            Snake(in_channels, logscale),
            weight_norm(CausalConvTranspose1d(in_channels, out_channels, 2 * stride, stride=stride)),
            *(ResidualUnit(out_channels, dilation, True, logscale) for dilation in RESIDUAL_DILATIONS),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, T) -> (B, C_out, T · stride)
        return self.layers(x)


DecoderState = list[torch.Tensor]
"""Per causal decoder layer, the past inputs it still needs (B, C, left context); see Decoder.stream."""


class Encoder(nn.Module):
    """Audio (B, A, N) -> mean and raw scale stacked, (B, 2·d, N / hop). Non-causal (offline only)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        widths, logscale = config.widths, config.snake_logscale
        self.layers = nn.Sequential(
            _conv(config.audio_channels, widths[0], EDGE_KERNEL, False),
            *(
                EncoderBlock(widths[i], widths[i + 1], stride, logscale)
                for i, stride in enumerate(config.strides)
            ),
            Snake(widths[-1], logscale),
            _conv(widths[-1], 2 * config.latent_dim, LATENT_KERNEL, False),
        )

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.layers(audio)


class Decoder(nn.Module):
    """Latents (B, d, L) -> audio (B, A, L · hop); causal. No final tanh (SAO 1.0: final_tanh off)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        widths, logscale = config.widths, config.snake_logscale
        depth = len(config.strides)
        self.layers = nn.Sequential(
            _conv(config.latent_dim, widths[-1], EDGE_KERNEL, True),
            *(
                DecoderBlock(widths[i + 1], widths[i], config.strides[i], logscale)
                for i in reversed(range(depth))
            ),
            Snake(widths[0], logscale),
            _conv(widths[0], config.audio_channels, EDGE_KERNEL, True, bias=False),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)

    def stream(self, z: torch.Tensor, state: DecoderState | None) -> tuple[torch.Tensor, DecoderState]:
        """Audio (B, A, L · hop) of the next L frames z (B, d, L) of a stream and the state after them.

        `state` holds, per causal layer in order, the past inputs that layer still reads (None: the
        stream starts, zeros before it as in `forward`). Decoding a stream call by call this way
        computes each sample once and equals `forward` of the whole sequence.
        """
        past = iter(state) if state is not None else None
        kept: DecoderState = []

        def take() -> torch.Tensor | None:
            if past is None:
                return None
            tensor = next(past, None)
            if tensor is None:
                raise ValueError("decoder state has fewer tensors than the decoder has causal layers")
            return tensor

        def run(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
            if isinstance(module, CausalConv1d) and module.left_context == 0:
                return module(x)
            if isinstance(module, CausalConv1d | CausalConvTranspose1d):
                y, keep = module.stream(x, take())
                kept.append(keep)
                return y
            if isinstance(module, ResidualUnit):
                return x + run(module.layers, x)
            if isinstance(module, DecoderBlock):
                return run(module.layers, x)
            if isinstance(module, nn.Sequential):
                for layer in module:
                    x = run(layer, x)
                return x
            return module(x)  # Snake: pointwise

        audio = run(self.layers, z)
        if past is not None and next(past, None) is not None:
            raise ValueError("decoder state has more tensors than the decoder has causal layers")
        return audio, kept


def decoder_context_frames(config: VAEConfig) -> int:
    """Latent frames left of a frame boundary that the decoder's first sample there depends on.

    Walks the causal decoder backwards from its output, in samples of each layer's own rate:
    a causal conv adds dilation·(kernel − 1); a causal transposed conv (kernel 2·stride) maps a
    reach of r outputs back from a frame boundary to ceil(r / stride) + 1 inputs.
    """
    residual_reach = sum((RESIDUAL_KERNEL - 1) * dilation for dilation in RESIDUAL_DILATIONS)
    reach = EDGE_KERNEL - 1  # the last conv, at the audio rate
    for stride in config.strides:  # the decoder's last block upsamples by strides[0]
        reach = math.ceil((reach + residual_reach) / stride) + 1
    return reach + EDGE_KERNEL - 1  # the first conv, at the latent rate


# --- the model -----------------------------------------------------------------------------------


class FOAVAE(nn.Module):
    """Encoder, VAE bottleneck (SAO's VAEBottleneck) and causal decoder."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def decoder_context_frames(self) -> int:
        return decoder_context_frames(self.config)

    def pad_to_hop(self, audio: torch.Tensor) -> torch.Tensor:
        """Right-pad (B, A, N) with zeros to a whole number of latent frames."""
        return F.pad(audio, (0, -audio.shape[-1] % self.hop_length))

    def encode_posterior(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | a): mean and scale (standard deviation), each (B, d, N / hop)."""
        self._check_audio(audio)
        mean, raw_scale = self.encoder(audio).chunk(2, dim=1)  # (B, d, L) each
        return mean, F.softplus(raw_scale) + MIN_SCALE

    def encode(
        self, audio: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True
    ) -> torch.Tensor:
        """z (B, d, N / hop): a reparameterised sample (needs `generator`) or, sample=False, the mean."""
        mean, scale = self.encode_posterior(audio)
        if not sample:
            return mean
        if generator is None:
            raise ValueError("sampling latents needs a torch.Generator (or sample=False for the mean)")
        return _sample(mean, scale, generator)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Audio (B, A, L · hop) from z (B, d, L); causal, zero-padded before frame 0."""
        if z.ndim != 3 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"z must be (B, {self.config.latent_dim}, L), got {tuple(z.shape)}")
        return self.decoder(z)

    def folded_decoder(self) -> Decoder:
        """A copy of the decoder for inference, each weight-normed convolution's weight g·v/‖v‖ computed
        once and stored plainly (up to a sixth of the tiny decoder's time per patch on a CPU), and each
        Snake's α and β exponentiated once (5% of a one-row call): the same audio, without recomputing
        them at every call. A copy, so this model stays trainable; it does not follow later changes to
        the model's weights."""
        reference = next(self.decoder.parameters())
        with torch.device(reference.device):
            decoder = Decoder(self.config).to(reference.dtype)
        decoder.load_state_dict(self.decoder.state_dict())
        for module in decoder.modules():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            if isinstance(module, Snake):
                module.exponentiate()
        return decoder.eval().requires_grad_(False)

    def decode_stream(self, z: torch.Tensor, state: DecoderState | None) -> tuple[torch.Tensor, DecoderState]:
        """Audio (B, A, L · hop) of the next frames z (B, d, L) of a stream, and the state after them
        (None: the stream starts); call by call this equals `decode` of the whole sequence."""
        if z.ndim != 3 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"z must be (B, {self.config.latent_dim}, L), got {tuple(z.shape)}")
        return self.decoder.stream(z, state)

    def forward(self, audio: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: reconstruction (B, A, N) of a sampled z, and the KL term (App. B.1)."""
        mean, scale = self.encode_posterior(audio)
        return self.decode(_sample(mean, scale, generator)), self.kl(mean, scale)

    @staticmethod
    def kl(mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """KL(q || N(0, I)) as SAO computes it (twice the textbook value; App. B.1 weights it 1e-5):
        sum over d of μ² + σ² − log σ² − 1, averaged over batch and frames."""
        var = scale.pow(2)
        return (mean.pow(2) + var - var.log() - 1).sum(dim=1).mean()

    def _check_audio(self, audio: torch.Tensor) -> None:
        channels, hop = self.config.audio_channels, self.hop_length
        if audio.ndim != 3 or audio.shape[1] != channels:
            raise ValueError(f"audio must be (B, {channels}, N), got {tuple(audio.shape)}")
        if audio.shape[-1] == 0 or audio.shape[-1] % hop:
            raise ValueError(
                f"audio length {audio.shape[-1]} is not a positive multiple of hop {hop} (use pad_to_hop)"
            )


def _sample(mean: torch.Tensor, scale: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Reparameterisation: z = μ + σ·ε, ε ~ N(0, I) drawn from `generator`."""
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + scale * noise


class StreamingDecoder:
    """Decodes latents patch by patch, equal to `vae.decode` of the whole sequence (DESIGN §1).

    Keeps each causal layer's past inputs (`Decoder.stream`), so every sample is computed once: the
    stateless alternative, decoding `decoder_context_frames` of left context again with each patch,
    costs about (context + patch) / patch times more.
    """

    def __init__(self, vae: FOAVAE):
        self.vae = vae
        self.state: DecoderState | None = None

    def reset(self) -> None:
        """Start a new stream."""
        self.state = None

    @torch.no_grad()
    def push(self, z_patch: torch.Tensor) -> torch.Tensor:
        """Audio (B, A, P · hop) for the next P latent frames z_patch (B, d, P)."""
        if self.state is not None and z_patch.shape[0] != self.state[0].shape[0]:
            raise ValueError(f"batch size changed mid-stream: {self.state[0].shape[0]} -> {z_patch.shape[0]}")
        audio, self.state = self.vae.decode_stream(z_patch, self.state)
        return audio


# --- reconstruction loss -------------------------------------------------------------------------


@dataclass(frozen=True)
class STFTLossConfig:
    """Resolutions of the multi-resolution STFT loss (SAO's mrstft: windows 2048 down to 32)."""

    fft_sizes: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64, 32)
    """FFT and Hann-window lengths; the hop is a quarter of each."""
    eps: float = 1e-4
    """Magnitude floor inside the logarithm, so silent bins do not dominate (auraloss, as used by
    SAO, clamps the power at 1e-8: the same 1e-4 floor)."""

    def __post_init__(self) -> None:
        if not self.fft_sizes or any(size < 4 for size in self.fft_sizes):
            raise ValueError(f"fft_sizes must be non-empty, each >= 4, got {self.fft_sizes}")
        if self.eps <= 0:
            raise ValueError(f"eps must be positive, got {self.eps}")


def multi_resolution_stft_loss(
    estimate: torch.Tensor, target: torch.Tensor, config: STFTLossConfig | None = None
) -> torch.Tensor:
    """App. B.1's four-channel MR-STFT loss: every channel weighted 1/4 (1/A), no mid/side STFT.

    Per resolution and channel: spectral convergence ‖|S|−|Ŝ|‖_F / ‖|S|‖_F plus the mean
    |log|S| − log|Ŝ||; averaged over resolutions and the batch. SAO's perceptual (A-)weighting is
    left out. estimate and target are (B, A, N).
    """
    config = config or STFTLossConfig()
    channels = target.shape[1]
    total = target.new_zeros(())
    for n_fft in config.fft_sizes:
        reference = _stft_magnitude(target, n_fft, config.eps)  # (B, A, F·T)
        estimated = _stft_magnitude(estimate, n_fft, config.eps)
        convergence = (reference - estimated).norm(dim=-1) / reference.norm(dim=-1)  # (B, A)
        log_distance = (reference.log() - estimated.log()).abs().mean(dim=-1)  # (B, A)
        total = total + ((convergence + log_distance) / channels).sum(dim=1).mean()
    return total / len(config.fft_sizes)


def _stft_magnitude(audio: torch.Tensor, n_fft: int, eps: float) -> torch.Tensor:
    """|STFT| with a Hann window and hop n_fft / 4, floored smoothly at eps: (B, A, N) -> (B, A, F·T)."""
    batch, channels, length = audio.shape
    window = torch.hann_window(n_fft, device=audio.device, dtype=audio.dtype)
    spec = torch.stft(
        audio.reshape(batch * channels, length), n_fft, n_fft // 4, window=window, return_complex=True
    )
    power = spec.real.pow(2) + spec.imag.pow(2)  # (B·A, F, T)
    return (power + eps**2).sqrt().reshape(batch, channels, -1)


# --- Stable Audio Open weights -------------------------------------------------------------------

_AUTOENCODER_KEY = re.compile(r"^((?:\w+\.)*?)(?:encoder|decoder)\.layers\.")
_G, _V = ".parametrizations.weight.original0", ".parametrizations.weight.original1"
_WEIGHT_NORM_NAMES = {".weight_g": _G, ".weight_v": _V}  # torch.nn.utils.weight_norm's names -> ours
Tensors = dict[str, torch.Tensor]


def load_stable_audio_weights(vae: FOAVAE, uri: str) -> list[str]:
    """Initialise `vae` from a Stable Audio Open VAE checkpoint (paper App. B.1); returns what was adapted.

    `uri` is a local path or s3:// URI to safetensors, or a torch file read with weights_only=True
    (a Lightning `state_dict` inside is accepted). Keys may carry a prefix (`pretransform.model.`,
    `autoencoder.`) and old-style (`weight_g`/`weight_v`), parametrized or removed weight norm.
    Every tensor is copied as is, except the four layers that touch the audio channels or the latent:
    - encoder input conv, stereo -> FOA: the FOA input is seen as the stereo pair whose pseudo-FOA
      (foa.pseudo_foa: W = L + R, Y = L − R) it is, i.e. L = (W + Y)/2, R = (W − Y)/2. So the
      W weights are the mean of the L and R weights, Y's are half their difference (Y is the
      left-right axis, stereo's side), Z's and X's start at zero (stereo carries no front/up).
    - decoder output conv, stereo -> FOA: the pseudo-FOA of the stereo output, W = L + R, Y = L − R;
      the Z and X rows start at zero (weight-norm magnitude 0, our random direction kept).
    - bottleneck (encoder output conv), d_SAO = 64 -> d = 128: SAO's 64 mean rows and 64 scale rows
      fill our first 64 of each; the others keep their fresh initialisation.
    - decoder input conv: SAO's 64 latent columns are copied, the new ones start at zero, so at load
      the decoder ignores the new latent channels and the model decodes exactly like SAO.
    Hence, right after loading, encoding a pseudo-FOA clip gives SAO's latents of the stereo clip in
    the first 64 channels, and decoding gives the pseudo-FOA of SAO's stereo output.
    """
    if not vae.config.snake_logscale:
        raise ValueError("Stable Audio stores Snake alpha/beta as logarithms: use snake_logscale=True")
    ours = vae.state_dict()
    theirs = _our_names(read_tensors(uri, "state_dict"), ours, uri)
    enc, dec = vae.encoder.layers, vae.decoder.layers
    adapters = {
        "encoder.layers.0": _adapt_input_conv,
        f"encoder.layers.{len(enc) - 1}": _adapt_bottleneck,
        "decoder.layers.0": _adapt_latent_conv,
        f"decoder.layers.{len(dec) - 1}": _adapt_output_conv,
    }
    loaded, report = {}, []
    for layer, adapt in adapters.items():
        mine = {key: ours[key] for key in ours if key.startswith(layer + ".")}
        given = {key: theirs.pop(key) for key in mine if key in theirs}
        if mine.keys() != given.keys():
            raise InputError(f"{uri}: checkpoint lacks {sorted(mine.keys() - given.keys())[0]}")
        if all(given[key].shape == mine[key].shape for key in mine):
            loaded.update(given)
            continue
        try:
            loaded.update(adapt(layer, mine, given, report))
        except (ValueError, RuntimeError) as err:
            raise InputError(f"{uri}: cannot adapt {layer}: {err}") from None
    for key, tensor in ours.items():
        if key in loaded:
            continue
        if key not in theirs:
            raise InputError(f"{uri}: checkpoint lacks {key}; is it a Stable Audio (Oobleck) VAE?")
        if theirs[key].shape != tensor.shape:
            raise InputError(f"{uri}: {key} is {tuple(theirs[key].shape)}, model needs {tuple(tensor.shape)}")
        loaded[key] = theirs.pop(key)
    if theirs:
        raise InputError(f"{uri}: checkpoint has tensors this VAE lacks, e.g. {sorted(theirs)[0]}")
    vae.load_state_dict({key: value.to(ours[key].dtype) for key, value in loaded.items()})
    return report


def _our_names(state: Tensors, ours: Tensors, uri: str) -> Tensors:
    """SAO keys -> ours: drop the prefix, rename or rebuild weight norm; non-VAE keys are ignored."""
    prefixes = {match.group(1) for key in state if (match := _AUTOENCODER_KEY.match(key))}
    if len(prefixes) != 1:
        found = "none" if not prefixes else ", ".join(sorted(repr(prefix) for prefix in prefixes))
        raise InputError(
            f"{uri}: expected one autoencoder (encoder.layers.*) in the checkpoint, found {found}"
        )
    prefix = prefixes.pop()
    renamed = {}
    for key, tensor in state.items():
        name = key[len(prefix) :]
        if not key.startswith(prefix) or not name.startswith(("encoder.layers.", "decoder.layers.")):
            continue
        for old, new in _WEIGHT_NORM_NAMES.items():
            if name.endswith(old):
                name = name[: -len(old)] + new
        layer = name.removesuffix(".weight")
        if name.endswith(".weight") and layer + _G in ours:  # weight norm was removed before saving
            renamed[layer + _G], renamed[layer + _V] = _norm(tensor), tensor
        else:
            renamed[name] = tensor
    return renamed


def _norm(weight: torch.Tensor) -> torch.Tensor:
    """Weight-norm magnitude g: the norm of each slice along dim 0, shaped (C, 1, 1)."""
    return weight.norm(dim=(1, 2), keepdim=True)


def _effective(given: Tensors, layer: str) -> torch.Tensor:
    """The weight a weight-normed layer computes: g · v / ‖v‖."""
    v = given[layer + _V].double()
    return given[layer + _G].double() * v / _norm(v)


def _weight_normed(weight: torch.Tensor, fallback_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(g, v) with g · v / ‖v‖ = weight; all-zero slices get g = 0 and keep `fallback_v` (v = 0 is NaN)."""
    g = _norm(weight)
    return g, torch.where(g > 0, weight, fallback_v.to(weight.dtype))


def _adapt_input_conv(layer: str, mine: Tensors, given: Tensors, report: list[str]) -> Tensors:
    """Encoder input conv (C, 2, k) -> (C, 4, k): L = (W + Y)/2, R = (W − Y)/2 (see the loader)."""
    stereo = _effective(given, layer)  # (C, 2, k)
    if stereo.shape[1] != 2 or mine[layer + _V].shape[1] != 4:
        raise ValueError(
            f"expects 2 -> 4 input channels, got {stereo.shape[1]} -> {mine[layer + _V].shape[1]}"
        )
    foa = stereo.new_zeros(mine[layer + _V].shape)  # (C, 4, k); Z and X stay zero
    foa[:, W] = (stereo[:, 0] + stereo[:, 1]) / 2
    foa[:, Y] = (stereo[:, 0] - stereo[:, 1]) / 2
    g, v = _weight_normed(foa, mine[layer + _V])
    report.append(
        f"{layer}: stereo input -> FOA (W = mean of L/R weights, Y = half their difference, Z = X = 0)"
    )
    return {layer + _G: g, layer + _V: v, layer + ".bias": given[layer + ".bias"]}


def _adapt_output_conv(layer: str, mine: Tensors, given: Tensors, report: list[str]) -> Tensors:
    """Decoder output conv (2, C, k) -> (4, C, k): W = L + R, Y = L − R, Z = X = 0 (pseudo-FOA)."""
    stereo = _effective(given, layer)  # (2, C, k)
    if stereo.shape[0] != 2 or mine[layer + _V].shape[0] != 4:
        raise ValueError(
            f"expects 2 -> 4 output channels, got {stereo.shape[0]} -> {mine[layer + _V].shape[0]}"
        )
    foa = stereo.new_zeros(mine[layer + _V].shape)  # (4, C, k)
    foa[W] = stereo[0] + stereo[1]
    foa[Y] = stereo[0] - stereo[1]
    g, v = _weight_normed(foa, mine[layer + _V])
    report.append(f"{layer}: stereo output -> FOA (W = L + R, Y = L − R, Z and X rows start at zero)")
    return {layer + _G: g, layer + _V: v}


def _adapt_bottleneck(layer: str, mine: Tensors, given: Tensors, report: list[str]) -> Tensors:
    """Encoder output conv (2·d_SAO, C, k) -> (2·d, C, k): SAO's mean and scale rows fill the first ones."""
    theirs, ours = given[layer + _V].shape[0] // 2, mine[layer + _V].shape[0] // 2
    if theirs > ours:
        raise ValueError(f"checkpoint latent width {theirs} is wider than the model's {ours}")
    adapted = {key: tensor.clone() for key, tensor in mine.items()}
    for key, tensor in adapted.items():
        tensor[:theirs] = given[key][:theirs]  # mean rows
        tensor[ours : ours + theirs] = given[key][theirs:]  # scale rows
    report.append(f"{layer}: latent {theirs} -> {ours}: SAO mean/scale rows copied, {ours - theirs} new each")
    return adapted


def _adapt_latent_conv(layer: str, mine: Tensors, given: Tensors, report: list[str]) -> Tensors:
    """Decoder input conv (C, d_SAO, k) -> (C, d, k): SAO's columns copied, new columns zero."""
    v = given[layer + _V]  # (C, d_SAO, k)
    theirs, ours = v.shape[1], mine[layer + _V].shape[1]
    if theirs > ours:
        raise ValueError(f"checkpoint latent width {theirs} is wider than the model's {ours}")
    grown = F.pad(v, (0, 0, 0, ours - theirs))  # (C, d, k); zeros leave ‖v‖ and so g unchanged
    report.append(f"{layer}: latent {theirs} -> {ours}: SAO columns copied, {ours - theirs} new columns zero")
    return {layer + _G: given[layer + _G], layer + _V: grown, layer + ".bias": given[layer + ".bias"]}

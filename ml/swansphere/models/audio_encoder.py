"""SVAC's audio encoder (paper §3.2): an AudioMAE-style ViT over FOA, one output per latent frame.

FOA (B, 4, N) at 44.1 kHz -> (B, L, C), L = ceil(N / 2048): one output per VAE latent frame, so audio
and video compare frame by frame. The STFT hop is 2048 / k (k = `frames_per_latent`), so STFT
frames k·j .. k·j+k-1 lie inside latent frame j. Input planes (B, 7, mel, k·L):
- 4 log-mel planes, one per AmbiX channel W, Y, Z, X (AudioMAE is mono: it sees W, the omni channel);
- 3 spatial-cue planes, the normalised active intensity per mel band (DESIGN §4's DoA cue):
  I_c = mel(Re{W*·C}) / mel(½(|W|² + |Y|² + |Z|² + |X|²)) for C = Y, Z, X (ACN order). For one plane
  wave from the unit direction u this is exactly u_c; it lies in [-1, 1] and carries the signed
  direction that log-mel magnitudes lose.
Patches are (patch_freq × patch_time) with stride (patch_freq, k) in (freq, time): one column of
patches per latent frame, each patch centred on its latent frame (patch_time >= k; AudioMAE's 16 × 16
at k = 4, hop 512 = 11.6 ms ≈ AudioMAE's 10 ms, so its kernels keep their time scale). Attention is
full over all (time, freq) patches: this encoder only runs offline on training clips, like AudioMAE.
The output is the mean over frequency patches.

AudioMAE-init (`AudioEncoder.from_audiomae`): AudioMAE weights are single-channel. Its patch kernel
(C, 1, time, freq) is transposed to our (freq, time) layout and becomes the W plane's kernel. The six
planes AudioMAE never saw start as seeded Gaussian kernels scaled so that together they add about
the W kernel's variance: with the encoders frozen (paper App. B.2) zero kernels would make the
encoder direction-blind and the spatial negatives unsolvable, while a fixed random projection keeps
the direction cues for the trainable heads. Blocks and norms map one to one (timm names); the
learned (time, freq) position table, minus the class token, is resized over time to our grid (the
frequency grids must agree: 128 mel / 16 = 8 for AudioMAE).
"""

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from swansphere.conventions import SAMPLE_RATE
from swansphere.errors import InputError
from swansphere.models.video_encoder import Block, resize_grid, sinusoid_table
from swansphere.weights import read_tensors

PLANES = 7
"""Input planes: log-mel W, Y, Z, X, then intensity I_y, I_z, I_x."""

LOG_MEL_MEAN = -4.2677393
LOG_MEL_SCALE = 2 * 4.5689974
"""AudioMAE's fbank normalisation (AudioSet mean, twice the std); our log-mel is on a similar scale."""

POWER_FLOOR = 1e-10
"""Added to mel energies before the log and the intensity division (silence stays finite)."""


@dataclass(frozen=True)
class AudioEncoderConfig:
    """Sizes of the audio encoder and its spectrogram; `paper()` is AudioMAE ViT-B at 44.1 kHz."""

    latent_hop: int = 2048
    """Samples per VAE latent frame; one output per latent frame (must equal VAEConfig.hop_length)."""
    frames_per_latent: int = 4
    """k: STFT frames per latent frame, hop = latent_hop / k (4 -> 11.6 ms, AudioMAE's 10 ms)."""
    n_fft: int = 1024
    """STFT size; wide enough that every mel band holds a frequency bin (paper: 2048 for 128 bands)."""
    mel_bins: int = 32
    """Mel bands per plane (AudioMAE: 128)."""
    patch_freq: int = 8
    """Mel bands per patch (AudioMAE: 16)."""
    patch_time: int = 8
    """STFT frames per patch, >= k; patches overlap when larger (AudioMAE: 16)."""
    dim: int = 64
    """C, token width (ViT-B: 768)."""
    depth: int = 2
    """Transformer blocks (ViT-B: 12)."""
    heads: int = 4
    """Attention heads (ViT-B: 12)."""
    mlp_ratio: int = 4
    """MLP hidden width / C."""
    max_latent_frames: int = 128
    """Length of the learned time positions: the longest clip in latent frames (256 = 11.9 s)."""
    layer_norm_eps: float = 1e-6
    """LayerNorm epsilon (timm/AudioMAE: 1e-6)."""

    def __post_init__(self) -> None:
        for name in (
            "frames_per_latent",
            "mel_bins",
            "patch_freq",
            "dim",
            "depth",
            "heads",
            "max_latent_frames",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"AudioEncoderConfig: {name} must be >= 1, got {getattr(self, name)}")
        if self.latent_hop % self.frames_per_latent:
            raise ValueError(f"latent_hop {self.latent_hop} must be a multiple of k {self.frames_per_latent}")
        if self.mel_bins % self.patch_freq or self.dim % self.heads:
            raise ValueError("mel_bins must be a multiple of patch_freq, and dim of heads")
        if self.patch_time < self.frames_per_latent or (self.patch_time - self.frames_per_latent) % 2:
            raise ValueError(
                f"patch_time {self.patch_time} must be k + an even number (k = {self.frames_per_latent})"
            )

    @property
    def hop(self) -> int:
        return self.latent_hop // self.frames_per_latent

    @property
    def freq_patches(self) -> int:
        return self.mel_bins // self.patch_freq

    @property
    def latent_fps(self) -> float:
        """Latent frames (and outputs) per second: 44100 / 2048 = 21.53."""
        return SAMPLE_RATE / self.latent_hop

    @classmethod
    def tiny(cls) -> "AudioEncoderConfig":
        return cls()

    @classmethod
    def paper(cls) -> "AudioEncoderConfig":
        """AudioMAE ViT-B: 128 mel, 16 × 16 patches, hop 512 (k = 4)."""
        return cls(
            n_fft=2048,
            mel_bins=128,
            patch_freq=16,
            patch_time=16,
            dim=768,
            depth=12,
            heads=12,
            max_latent_frames=256,
        )


def mel_filterbank(sample_rate: int, n_fft: int, mel_bins: int) -> Tensor:
    """(mel_bins, n_fft // 2 + 1) HTK triangles from 0 Hz to Nyquist, peak 1."""
    top = 2595.0 * math.log10(1.0 + sample_rate / 2 / 700.0)
    edges = 700.0 * (10.0 ** (torch.linspace(0.0, top, mel_bins + 2, dtype=torch.float64) / 2595.0) - 1.0)
    freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising, falling = (freqs - lower) / (centre - lower), (upper - freqs) / (upper - centre)
    return torch.minimum(rising, falling).clamp(min=0.0).float()


class AudioEncoder(nn.Module):
    """FOA (B, 4, N) -> (B, L, C), one vector per latent frame (L = ceil(N / latent_hop))."""

    def __init__(self, config: AudioEncoderConfig):
        super().__init__()
        self.config = config
        k = config.frames_per_latent
        self.patch_embed = nn.Conv2d(
            PLANES, config.dim, (config.patch_freq, config.patch_time), (config.patch_freq, k)
        )
        table = sinusoid_table(config.max_latent_frames * config.freq_patches, config.dim)
        self.pos_embed = nn.Parameter(table.view(config.max_latent_frames, config.freq_patches, config.dim))
        self.blocks = nn.ModuleList(
            Block(config.dim, config.heads, config.mlp_ratio, config.layer_norm_eps, window=None)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)
        self.register_buffer(
            "mel", mel_filterbank(SAMPLE_RATE, config.n_fft, config.mel_bins), persistent=False
        )

    def features(self, foa: Tensor) -> Tensor:
        """FOA (B, 4, N) -> input planes (B, 7, mel, k·L): 4 normalised log-mels and 3 intensity cues."""
        B, channels, N = foa.shape
        if channels != 4 or N == 0:
            raise ValueError(f"AudioEncoder: FOA must be (B, 4, N > 0), got {tuple(foa.shape)}")
        cfg = self.config
        L = math.ceil(N / cfg.latent_hop)
        if cfg.max_latent_frames < L:
            raise ValueError(
                f"AudioEncoder: {L} latent frames exceed max_latent_frames {cfg.max_latent_frames}"
            )
        audio = F.pad(foa, (0, L * cfg.latent_hop - N)).reshape(B * 4, -1)
        spec = torch.stft(
            audio, cfg.n_fft, cfg.hop, window=self.window, pad_mode="constant", return_complex=True
        )
        spec = spec.view(B, 4, spec.shape[-2], -1)[..., : cfg.frames_per_latent * L]  # (B, 4, bins, k·L)
        re, im = spec.real / self.window.norm(), spec.imag / self.window.norm()  # power per sample
        power = re.square() + im.square()  # (B, 4, bins, k·L)
        log_mel = (
            torch.log(self.mel @ power + POWER_FLOOR) - LOG_MEL_MEAN
        ) / LOG_MEL_SCALE  # (B, 4, mel, k·L)
        active = re[:, :1] * re[:, 1:] + im[:, :1] * im[:, 1:]  # (B, 3, bins, k·L): Re{W*·C}
        energy = 0.5 * power.sum(dim=1, keepdim=True)  # (B, 1, bins, k·L)
        intensity = (self.mel @ active) / (self.mel @ energy + POWER_FLOOR)  # (B, 3, mel, k·L)
        return torch.cat([log_mel, intensity], dim=1)

    def forward(self, foa: Tensor) -> Tensor:
        cfg = self.config
        x = self.features(foa)  # (B, 7, mel, k·L)
        extra = cfg.patch_time - cfg.frames_per_latent
        x = F.pad(x, (extra // 2, extra // 2))  # patch j centred on latent frame j
        x = self.patch_embed(x)  # (B, C, F, L)
        x = x.permute(0, 3, 2, 1) + self.pos_embed[: x.shape[-1]]  # (B, L, F, C)
        for block in self.blocks:
            x = block(x)
        return self.norm(x).mean(dim=2)  # (B, L, C)

    @classmethod
    def from_audiomae(cls, uri: str | Path, config: AudioEncoderConfig, seed: int = 0) -> "AudioEncoder":
        """Our encoder from an AudioMAE (timm ViT) state dict: safetensors or torch weights_only, local or s3://."""
        theirs = read_tensors(uri, "model")
        encoder = cls(config)
        state = encoder.state_dict()
        for key in [key for key in state if key.startswith("blocks.")]:  # same timm names
            state[key] = _take(theirs, key, state[key].shape, uri)
        prefix = "norm." if "norm.weight" in theirs else "fc_norm."
        for kind in ("weight", "bias"):
            state[f"norm.{kind}"] = _take(theirs, prefix + kind, (config.dim,), uri)
        kernel = _take(
            theirs, "patch_embed.proj.weight", (config.dim, 1, config.patch_time, config.patch_freq), uri
        )
        new_planes = torch.randn(
            (config.dim, PLANES - 1, config.patch_freq, config.patch_time),
            generator=torch.Generator().manual_seed(seed),
        )
        scale = kernel.std() / math.sqrt(PLANES - 1)
        state["patch_embed.weight"] = torch.cat([kernel.transpose(2, 3), new_planes * scale], dim=1)
        state["patch_embed.bias"] = _take(theirs, "patch_embed.proj.bias", (config.dim,), uri)
        state["pos_embed"] = _audiomae_positions(theirs, config, uri)
        encoder.load_state_dict(state)
        return encoder


def _audiomae_positions(theirs: dict[str, Tensor], config: AudioEncoderConfig, uri: str | Path) -> Tensor:
    """AudioMAE's (1, [cls +] T0·F, C) table as our (max_latent_frames, F, C), resized over time."""
    freq = config.freq_patches
    if "pos_embed" not in theirs:
        raise InputError(f"{uri}: checkpoint lacks pos_embed; is it an AudioMAE (timm ViT) state dict?")
    table = theirs["pos_embed"].reshape(-1, config.dim)
    table = table[table.shape[0] % freq :]  # drop the class token's position
    if table.shape[0] == 0 or table.shape[0] % freq:
        raise InputError(
            f"{uri}: pos_embed of {theirs['pos_embed'].shape[1]} positions is not a grid of {freq} columns"
        )
    grid = table.view(-1, freq, config.dim)  # (T0, F, C): AudioMAE flattens time-major
    return resize_grid(grid, (config.max_latent_frames, freq))


def _take(theirs: dict[str, Tensor], key: str, shape: tuple[int, ...], uri: str | Path) -> Tensor:
    if key not in theirs:
        raise InputError(f"{uri}: checkpoint lacks {key}; is it an AudioMAE (timm ViT) state dict?")
    if tuple(theirs[key].shape) != tuple(shape):
        raise InputError(
            f"{uri}: {key} is {tuple(theirs[key].shape)}, the encoder config needs {tuple(shape)}"
        )
    return theirs[key]

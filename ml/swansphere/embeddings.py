"""Audio embeddings for the distribution metrics of `swansphere eval` (evaluation.py).

The paper embeds with OpenL3, whose weights cannot be fetched on these machines, so the offline
default is aiSFX (Ma & Lerch, ISMIR 2022), whose weights ship inside its wheel: it *stands in* for
OpenL3, and its Fréchet distances are not comparable with the paper's. Users with local weights load
the real models: `openl3_from_path` (torchopenl3 state dict) or `passt_from_path` (hear21passt /
PaSST state dict). No weights are downloaded.
"""

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn

from swansphere import storage
from swansphere.audio import resample
from swansphere.errors import InputError


class Embedding(Protocol):
    """An audio embedding for distribution metrics: mono audio in, one embedding per frame out."""

    name: str
    note: str

    def embed(self, mono: np.ndarray, sample_rate: int) -> np.ndarray:
        """(N,) samples at `sample_rate` -> (K, D) float64 embeddings."""
        ...


# --- Embedding models --------------------------------------------------------------------------


def embedding_from_spec(spec: str) -> Embedding | None:
    """`aisfx`, `openl3:PATH`, `passt:PATH` or `none` (the CLI's --embedding)."""
    kind, _, path = spec.partition(":")
    if kind == "none" and not path:
        return None
    if kind == "aisfx" and not path:
        return aisfx_embedding()
    if kind in ("openl3", "passt") and path:
        return openl3_from_path(path) if kind == "openl3" else passt_from_path(path)
    raise InputError(f"--embedding must be aisfx, openl3:PATH, passt:PATH or none, got {spec!r}")


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _torch_load(path: str | Path, safe_globals: list | None = None) -> Any:
    """A checkpoint from a local path or `s3://`, unpickled with `weights_only=True` (no code runs)."""
    with storage.local_copy(path) as local, torch.serialization.safe_globals(safe_globals or []):
        try:
            return torch.load(local, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for a file that is not a checkpoint
            raise InputError(f"{path}: not a loadable PyTorch state dict ({type(err).__name__})") from None


def _state_dict(loaded: Any, path: str | Path) -> dict[str, torch.Tensor]:
    if not isinstance(loaded, dict) or not loaded:
        raise InputError(f"{path}: expected a state dict (a mapping of names to tensors)")
    return loaded


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], origin: str | Path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        reason = " ".join(str(err).split("\n")[1:2]).strip() or str(err)
        raise InputError(f"{origin}: weights do not fit the architecture ({reason[:200]})") from None


def htk_mel_filters(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """(n_mels, n_fft/2 + 1) triangles on the HTK mel scale (m = 2595·log10(1 + f/700)), each row
    normalised to unit sum: librosa's `filters.mel(htk=True, norm=1)`, which aiSFX and OpenL3 use."""
    fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    mel_edges = np.linspace(
        2595.0 * np.log10(1 + f_min / 700), 2595.0 * np.log10(1 + f_max / 700), n_mels + 2
    )
    edges_hz = 700.0 * (10.0 ** (mel_edges / 2595.0) - 1.0)
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]  # (n_mels + 2, F)
    rising, falling = -ramps[:-2] / widths[:-1, None], ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    sums = weights.sum(axis=1, keepdims=True)
    return np.divide(weights, sums, out=weights.copy(), where=sums > np.finfo(np.float64).tiny)


@torch.no_grad()
def _batched(model: nn.Module, inputs: np.ndarray, batch: int = 32) -> np.ndarray:
    device = next(model.parameters()).device
    outputs = [
        model(torch.from_numpy(np.array(inputs[i : i + batch], dtype=np.float32)).to(device)).double().cpu()
        for i in range(0, len(inputs), batch)
    ]
    return torch.cat(outputs).numpy()


# --- aiSFX: the offline stand-in for OpenL3 ------------------------------------------------------

AISFX_SAMPLE_RATE = 44100
AISFX_N_FFT, AISFX_HOP, AISFX_MELS = 2048, 1024, 96
"""aiSFX `inference.py`: 2048-sample Hann frames, hop 1024, 96 HTK mel bands over 0-22050 Hz."""
AISFX_SPEC_MAX = 9.457798957824707
"""aiSFX `spectrogram_normalize('original')`: min-max scaling with min 0 and this max."""
AISFX_BLOCK, AISFX_BLOCK_HOP = 100, 50
"""Frames per embedding (2.3 s) and hop between embeddings (aiSFX `emb_hop_size=0.5`)."""


class _AisfxConvBlock(nn.Module):
    """Two 3x3 conv + BN + ReLU, then a max pool (aiSFX `ConvBlock`, DCASE cross-task baseline)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(out_channels), nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.max_pool2d(x, kernel_size=pool)


class AisfxNet(nn.Module):
    """aiSFX `EmbeddingNet('max', 3, 1, 64)`: four conv blocks (64..512 channels), mean over
    frequency, max over time. (B, T, 96) log-mel blocks -> (B, 512)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        channels = (1, width, 2 * width, 4 * width, 8 * width)
        for i in range(4):
            self.add_module(f"conv_block{i + 1}", _AisfxConvBlock(channels[i], channels[i + 1]))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        x = spec.unsqueeze(1)  # (B, 1, T, F)
        for i, pool in enumerate((2, 2, 2, 1)):
            x = getattr(self, f"conv_block{i + 1}")(x, pool)
        return x.mean(dim=3).amax(dim=2)  # (B, C)


def aisfx_log_mel(mono: np.ndarray) -> np.ndarray:
    """aiSFX's librosa front end at 44.1 kHz: peak-normalised audio, centred STFT (zero padding),
    power HTK mel, log10(10⁴·mel + 1), scaled by the 'original' max. (N,) -> (T, 96).

    Frames come first, as the net expects (`(batch, time_steps, freq_bins)`) and as the Essentia
    front end it was trained with returns them; aiSFX's own librosa helper returns (96, T).
    """
    peak = float(np.max(np.abs(mono))) if mono.size else 0.0
    audio = torch.as_tensor(mono / (peak if peak > 0 else 1.0), dtype=torch.float64)
    window = torch.hann_window(AISFX_N_FFT, periodic=True, dtype=torch.float64)
    spectrum = torch.stft(
        audio, AISFX_N_FFT, AISFX_HOP, window=window, center=True, pad_mode="constant", return_complex=True
    )  # (F, T)
    filters = torch.as_tensor(htk_mel_filters(AISFX_SAMPLE_RATE, AISFX_N_FFT, AISFX_MELS, 0.0, 22050.0))
    mel = filters @ spectrum.abs() ** 2  # (96, T)
    return (torch.log10(mel * 1e4 + 1.0) / AISFX_SPEC_MAX).T.numpy()


def aisfx_blocks(spec: np.ndarray) -> np.ndarray:
    """aiSFX `blocking` with `drop_partial_block`: full 100-frame blocks every 50 frames; a clip
    shorter than one block gives one zero-padded block. (T, F) -> (K, 100, F)."""
    count = max(1, (len(spec) - AISFX_BLOCK) // AISFX_BLOCK_HOP + 1)
    padded = np.concatenate([spec, np.zeros((AISFX_BLOCK, spec.shape[1]))])
    return np.stack([padded[i * AISFX_BLOCK_HOP : i * AISFX_BLOCK_HOP + AISFX_BLOCK] for i in range(count)])


@dataclass
class AisfxEmbedding:
    """aiSFX 512-d embeddings, one per 2.3 s block: the offline stand-in for OpenL3."""

    model: AisfxNet
    name: str = "aisfx"
    note: str = (
        "aiSFX embeddings (ISMIR 2022, weights shipped in its wheel) stand in for OpenL3, whose weights "
        "cannot be fetched here: FD values are not comparable with the paper's"
    )

    def embed(self, mono: np.ndarray, sample_rate: int) -> np.ndarray:
        mono = resample(np.asarray(mono, dtype=np.float64), sample_rate, AISFX_SAMPLE_RATE)
        return _batched(self.model, aisfx_blocks(aisfx_log_mel(mono)))


def aisfx_checkpoint_path() -> Path:
    """`aisfx/models/checkpoint.pth` of the installed package, found without importing it (its own
    imports pin librosa and an old numpy)."""
    spec = importlib.util.find_spec("aisfx")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("aisfx is not installed: use --embedding openl3:PATH, passt:PATH or none")
    return Path(next(iter(spec.submodule_search_locations)), "models", "checkpoint.pth")


def aisfx_embedding(path: str | Path | None = None) -> AisfxEmbedding:
    """The aiSFX X-Sequential-CE embedding net from the installed package (or `path`)."""
    path = path or aisfx_checkpoint_path()
    # The checkpoint is (state dict, {dataset: (index, classes)}); the dataset ids are numpy ints.
    numpy_ints = [np.core.multiarray.scalar, np.dtype, type(np.dtype(np.int64))]
    loaded = _torch_load(path, safe_globals=numpy_ints)
    state = _state_dict(loaded[0] if isinstance(loaded, tuple) else loaded, path)
    prefix = "embedding_net."
    model = AisfxNet()
    _load_into(model, {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, path)
    return AisfxEmbedding(model.to(_device()).eval())


# --- OpenL3 (torchopenl3 state dicts) ----------------------------------------------------------

OPENL3_SAMPLE_RATE = 48000
"""OpenL3 embeds 1 s windows of 48 kHz audio."""
OPENL3_N_DFT, OPENL3_HOP = {"linear": 512, "mel128": 2048, "mel256": 2048}, 242
"""kapre STFT of each input representation: DFT size per representation, hop 242 (~5 ms)."""
OPENL3_CHANNELS = (64, 64, 128, 128, 256, 256, 512, 512)
"""Output channels of the eight conv layers (the last is `audio_embedding_layer`)."""
OPENL3_POOL = {
    ("linear", 512): (32, 24),
    ("linear", 6144): (8, 8),
    ("mel128", 512): (16, 24),
    ("mel128", 6144): (4, 8),
    ("mel256", 512): (32, 24),
    ("mel256", 6144): (8, 8),
}
"""Final max pool per (input representation, embedding size): the only difference between sizes."""


class KapreSpectrogram(nn.Module):
    """torchopenl3's `speclayer`: kapre 0.1.4's STFT as a conv1d with windowed DFT kernels, amplitude
    (mel or linear) in dB relative to each window's maximum, floored at −80 dB. (B, 1, S) -> (B, 1, F, T).

    The kernels and mel basis are buffers of the state dict (loading replaces these defaults).
    """

    def __init__(self, input_repr: str) -> None:
        super().__init__()
        n_dft = OPENL3_N_DFT[input_repr]
        self.n_dft, self.same_padding = n_dft, input_repr != "linear"
        bins, samples = np.arange(n_dft // 2 + 1)[:, None], np.arange(n_dft)[None, :]
        window = 0.5 - 0.5 * np.cos(2 * np.pi * samples / n_dft)  # periodic Hann
        angle = 2 * np.pi * bins * samples / n_dft
        real, imag = np.cos(angle) * window, -np.sin(angle) * window  # (F, n_dft)
        self.register_buffer("dft_real_kernels", torch.tensor(real[:, None, :], dtype=torch.float32))
        self.register_buffer("dft_imag_kernels", torch.tensor(imag[:, None, :], dtype=torch.float32))
        if self.same_padding:
            n_mels = int(input_repr.removeprefix("mel"))
            mel = htk_mel_filters(OPENL3_SAMPLE_RATE, n_dft, n_mels, 0.0, OPENL3_SAMPLE_RATE // 2)
            self.register_buffer("mel_basis", torch.tensor(mel, dtype=torch.float32))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if self.same_padding:  # Keras "same" padding for a 1 s window, as kapre's mel layer
            remainder = OPENL3_SAMPLE_RATE % OPENL3_HOP
            total = max(self.n_dft - (remainder or OPENL3_HOP), 0)
            frames = F.pad(frames, (total // 2, total - total // 2))
        real = F.conv1d(frames, self.dft_real_kernels, stride=OPENL3_HOP)
        imag = F.conv1d(frames, self.dft_imag_kernels, stride=OPENL3_HOP)
        power = real**2 + imag**2  # (B, F, T)
        if self.same_padding:
            power = self.mel_basis @ power
        decibel = 10.0 * torch.log10(torch.sqrt(power).clamp(min=1e-10))
        decibel = decibel - decibel.amax(dim=(1, 2), keepdim=True)
        return decibel.clamp(min=-80.0).unsqueeze(1)


class OpenL3Net(nn.Module):
    """torchopenl3's `PytorchOpenl3` (Cramer et al. 2019 audio subnetwork): input BN, eight 3x3 conv
    layers each preceded by BN (ReLU after all but the input BN), 2x2 max pools after conv 2, 4 and
    6, and a final max pool that sets the embedding size. (B, 1, 48000) -> (B, embedding_size)."""

    def __init__(self, input_repr: str = "mel256", embedding_size: int = 512) -> None:
        super().__init__()
        if (input_repr, embedding_size) not in OPENL3_POOL:
            raise InputError(f"OpenL3 has no {input_repr}/{embedding_size} model")
        self.pool = OPENL3_POOL[input_repr, embedding_size]
        self.speclayer = KapreSpectrogram(input_repr)
        inputs = (1, *OPENL3_CHANNELS[:-1])
        for i, (cin, cout) in enumerate(zip(inputs, OPENL3_CHANNELS, strict=True), start=1):
            self.add_module(f"batch_normalization_{i}", nn.BatchNorm2d(cin, eps=1e-3))
            self.add_module(self._conv_name(i), nn.Conv2d(cin, cout, 3, padding=1))

    @staticmethod
    def _conv_name(i: int) -> str:
        return "audio_embedding_layer" if i == len(OPENL3_CHANNELS) else f"conv2d_{i}"

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.speclayer(frames)  # (B, 1, F, T)
        for i in range(1, len(OPENL3_CHANNELS) + 1):
            x = getattr(self, f"batch_normalization_{i}")(x)
            if i > 1:
                x = F.relu(x)
            if i in (3, 5, 7):
                x = F.max_pool2d(x, 2)
            x = getattr(self, self._conv_name(i))(x)
        x = F.max_pool2d(x, self.pool)  # (B, C, f, t)
        return x.permute(0, 2, 3, 1).reshape(len(x), -1)  # channels last, as Keras flattens


def openl3_frames(mono: np.ndarray, sample_rate: int, hop_s: float) -> np.ndarray:
    """torchopenl3 framing: 48 kHz, half a window of zeros in front (centred timestamps), zeros at
    the end to fill the last hop, 1 s windows every `hop_s`. (N,) -> (K, 1, 48000)."""
    audio = resample(np.asarray(mono, dtype=np.float64), sample_rate, OPENL3_SAMPLE_RATE)
    audio = np.concatenate([np.zeros(OPENL3_SAMPLE_RATE // 2), audio])
    hop = int(hop_s * OPENL3_SAMPLE_RATE)
    missing = -(len(audio) - OPENL3_SAMPLE_RATE) % hop if len(audio) >= OPENL3_SAMPLE_RATE else 0
    audio = np.pad(audio, (0, max(missing, OPENL3_SAMPLE_RATE - len(audio))))
    return sliding_window_view(audio, OPENL3_SAMPLE_RATE)[::hop][:, None, :]


@dataclass
class OpenL3Embedding:
    model: OpenL3Net
    hop_s: float = 0.1
    name: str = "openl3"
    note: str = "OpenL3 embeddings of 1 s windows (the paper's FD embedding)"

    def embed(self, mono: np.ndarray, sample_rate: int) -> np.ndarray:
        return _batched(self.model, openl3_frames(mono, sample_rate, self.hop_s))


def openl3_from_path(path: str | Path, embedding_size: int = 512, hop_s: float = 0.1) -> OpenL3Embedding:
    """OpenL3 from a torchopenl3 state dict (`torchopenl3_{repr}_{content}_{size}.pth`, local or
    s3://). The input representation follows from the weights: a 128- or 256-row `speclayer.mel_basis`
    or none (linear). The 512 and 6144 models share weights; `embedding_size` picks the pooling."""
    state = _state_dict(_torch_load(path), path)
    mel_basis = state.get("speclayer.mel_basis")
    input_repr = "linear" if mel_basis is None else f"mel{mel_basis.shape[0]}"
    model = OpenL3Net(input_repr, embedding_size)
    _load_into(model, state, path)
    embedding = OpenL3Embedding(model.to(_device()).eval(), hop_s=hop_s)
    embedding.note = f"OpenL3 {input_repr} {embedding_size}-d embeddings of 1 s windows every {hop_s} s"
    return embedding


# --- PaSST (hear21passt state dicts) -----------------------------------------------------------

PASST_SAMPLE_RATE = 32000
PASST_N_FFT, PASST_WINDOW, PASST_HOP, PASST_MELS, PASST_F_MAX = 1024, 800, 320, 128, 15000.0
"""hear21passt `AugmentMelSTFT` in eval mode: 25 ms window, 10 ms hop, 128 Kaldi mel bands to 15 kHz."""
PASST_MAX_S, PASST_SCENE_HOP_S = 10.0, 2.5
"""Longest window the model takes, and the hop between windows of longer clips (averaged)."""


def kaldi_mel_banks(n_mels: int, n_fft: int, sample_rate: int, f_min: float, f_max: float) -> np.ndarray:
    """Kaldi's mel triangles (m = 1127·ln(1 + f/700)) over the n_fft/2 bins below Nyquist, plus a
    zero column for the Nyquist bin, as hear21passt pads them. (n_mels, n_fft/2 + 1)."""

    def mel(f: np.ndarray | float) -> np.ndarray:
        return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)

    delta = (mel(f_max) - mel(f_min)) / (n_mels + 1)
    left = mel(f_min) + np.arange(n_mels)[:, None] * delta  # (n_mels, 1)
    bins = mel(sample_rate / n_fft * np.arange(n_fft // 2))[None, :]  # (1, n_fft/2)
    rising, falling = (bins - left) / delta, (left + 2 * delta - bins) / delta
    return np.pad(np.maximum(0.0, np.minimum(rising, falling)), ((0, 0), (0, 1)))


class PasstMel(nn.Module):
    """Pre-emphasis (y[n] = x[n+1] − 0.97·x[n]), centred STFT (reflect padding, symmetric 800-sample
    Hann), Kaldi mel power, log(· + 1e-5), then (x + 4.5)/5. (B, N) at 32 kHz -> (B, 128, T)."""

    def __init__(self) -> None:
        super().__init__()
        mel = kaldi_mel_banks(PASST_MELS, PASST_N_FFT, PASST_SAMPLE_RATE, 0.0, PASST_F_MAX)
        self.register_buffer("window", torch.hann_window(PASST_WINDOW, periodic=False), persistent=False)
        self.register_buffer("mel", torch.tensor(mel, dtype=torch.float32), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        audio = audio[:, 1:] - 0.97 * audio[:, :-1]
        spectrum = torch.stft(
            audio, PASST_N_FFT, PASST_HOP, PASST_WINDOW, self.window, center=True, return_complex=True
        )
        return (torch.log(self.mel @ spectrum.abs() ** 2 + 1e-5) + 4.5) / 5.0


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=stride)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, dim))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    """Pre-norm ViT block (LayerNorm eps 1e-6, as timm's ViT that PaSST adapts)."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn, self.mlp = _Attention(dim, heads), _Mlp(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@dataclass(frozen=True)
class PasstConfig:
    dim: int = 768
    """Token width (ViT/DeiT-B)."""
    depth: int = 12
    """Transformer blocks."""
    heads: int = 12
    """Attention heads (64 channels each)."""
    hidden: int = 3072
    """MLP width."""
    patch: int = 16
    """Square patches of the mel spectrogram."""
    stride: int = 10
    """Patch stride in both axes (PaSST-S 'S10'); not stored in the weights."""
    grid: tuple[int, int] = (12, 99)
    """(frequency, time) patches of a 128 x 998 input: the positional embeddings' sizes."""
    classes: int = 527
    """AudioSet classes of the heads."""
    distilled: bool = True
    """DeiT-style distillation token and head."""


class PasstNet(nn.Module):
    """PaSST (Koutini et al. 2022) at inference: conv patches, separate frequency and time positional
    embeddings, class (+ distillation) token, ViT blocks. Patchout only drops tokens in training, so
    it has no place here. (B, 1, 128, T) -> (logits (B, classes), features (B, dim))."""

    def __init__(self, config: PasstConfig) -> None:
        super().__init__()
        tokens = 2 if config.distilled else 1
        self.patch_embed = _PatchEmbed(config.dim, config.patch, config.stride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, config.dim)) if config.distilled else None
        self.new_pos_embed = nn.Parameter(torch.zeros(1, tokens, config.dim))
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, config.dim, config.grid[0], 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, config.dim, 1, config.grid[1]))
        self.blocks = nn.Sequential(
            *(_Block(config.dim, config.heads, config.hidden) for _ in range(config.depth))
        )
        self.norm = nn.LayerNorm(config.dim, eps=1e-6)
        self.head = nn.Sequential(nn.LayerNorm(config.dim), nn.Linear(config.dim, config.classes))
        self.head_dist = nn.Linear(config.dim, config.classes) if config.distilled else None

    def forward(self, spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.patch_embed.proj(spec)  # (B, E, f, t)
        x = x + self.time_new_pos_embed[..., : x.shape[-1]] + self.freq_new_pos_embed
        x = x.flatten(2).transpose(1, 2)  # (B, f·t, E)
        special = [self.cls_token + self.new_pos_embed[:, :1]]
        if self.dist_token is not None:
            special.append(self.dist_token + self.new_pos_embed[:, 1:])
        x = torch.cat([token.expand(len(x), -1, -1) for token in special] + [x], dim=1)
        x = self.norm(self.blocks(x))
        features = x[:, : len(special)].mean(dim=1)  # (class + distillation token) / 2
        return self.head(features), features


class _PasstFeatures(nn.Module):
    """Mel front end + PaSST, returning the features only. (B, N) at 32 kHz -> (B, dim)."""

    def __init__(self, net: PasstNet) -> None:
        super().__init__()
        self.mel, self.net = PasstMel(), net

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.net(self.mel(audio).unsqueeze(1))[1]


@dataclass
class PasstEmbedding:
    model: _PasstFeatures
    name: str = "passt"
    note: str = "PaSST features (mean of class and distillation tokens), one per clip of at most 10 s"

    def embed(self, mono: np.ndarray, sample_rate: int) -> np.ndarray:
        """One scene embedding per clip, as hear21passt: the whole clip when it fits in 10 s, else the
        mean over 10 s windows every 2.5 s (the last one aligned with the end)."""
        audio = resample(np.asarray(mono, dtype=np.float64), sample_rate, PASST_SAMPLE_RATE)
        window = int(PASST_MAX_S * PASST_SAMPLE_RATE)
        if len(audio) <= window:
            return _batched(self.model, audio[None])
        hop = int(PASST_SCENE_HOP_S * PASST_SAMPLE_RATE)
        starts = sorted({*range(0, len(audio) - window, hop), len(audio) - window})
        windows = np.stack([audio[start : start + window] for start in starts])
        return _batched(self.model, windows, batch=4).mean(axis=0, keepdims=True)


def passt_config(state: dict[str, torch.Tensor], stride: int = 10) -> PasstConfig:
    """The architecture a PaSST state dict was saved from (the stride is not stored: 10 for PaSST-S)."""
    dim = state["cls_token"].shape[-1]
    blocks = {int(m.group(1)) for key in state if (m := re.match(r"blocks\.(\d+)\.", key))}
    return PasstConfig(
        dim=dim,
        depth=max(blocks) + 1,
        heads=dim // 64,
        hidden=state["blocks.0.mlp.fc1.weight"].shape[0],
        patch=state["patch_embed.proj.weight"].shape[-1],
        stride=stride,
        grid=(state["freq_new_pos_embed"].shape[2], state["time_new_pos_embed"].shape[3]),
        classes=state["head.1.weight"].shape[0],
        distilled="dist_token" in state,
    )


def passt_from_path(path: str | Path, stride: int = 10) -> PasstEmbedding:
    """PaSST from a state dict (local or s3://): the PaSST release checkpoints that hear21passt loads
    (`passt-s-f128-p16-s10-ap.476-swa.pt`), optionally under "model", or a saved hear21passt wrapper
    (`net.` prefix; its mel front end has no weights)."""
    state = _state_dict(_torch_load(path), path)
    state = _state_dict(state.get("model", state), path)
    if any(key.startswith("net.") for key in state):
        state = {key[4:]: value for key, value in state.items() if key.startswith("net.")}
    try:
        config = passt_config(state, stride)
    except (KeyError, IndexError, ValueError) as err:
        raise InputError(f"{path}: not a PaSST state dict (missing {err})") from None
    net = PasstNet(config)
    _load_into(net, state, path)
    return PasstEmbedding(_PasstFeatures(net).to(_device()).eval())

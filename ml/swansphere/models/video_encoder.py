"""SVAC's video encoder (paper §3.2): a VideoMAE-V2 style tubelet ViT that keeps its spatial tokens.

Equirectangular frames (B, T, 3, H, W) in [0, 1] -> tokens (B, T', S, C), T' = T // tubelet_frames,
S = (H/p)·(W/p) patches per step: the direction of what is seen survives (SVAC's heads pool it).

Streaming (DESIGN §1): attention is block-causal in time. Every token of step τ attends to all tokens
of steps τ-W+1..τ (W = `max_frames`, a sliding window) and to nothing later, so encoding a prefix
gives exactly the first steps of encoding the whole clip, and the cost per step is bounded.

Positions: a learnable (row, col) table, initialised with VideoMAE's fixed sinusoids over the
flattened patch index (what VideoMAE adds at its first time step). Time enters without absolute
positions, which would drift away from what a pretrained model saw as a stream grows: through the
window and a learned per-head bias on the age of a key (τ - τ_key), zero at start.

Tubelet: VideoMAE embeds 2 frames per token; at 4 fps that is 250 ms of look-ahead before the first
token, so the presets embed 1 frame. A 2-frame VideoMAE kernel (k0, k1) is folded by summing,
k = k0 + k1: our token of a frame equals VideoMAE's token of a static tubelet of that frame.

`VideoEncoder.from_videomae` loads a Hugging Face VideoMAE checkpoint (local folder or s3:// prefix):
query/key/value become our fused qkv (VideoMAE's q_bias and v_bias; its key has no bias), the other
layers map one to one (`_LAYER_NAMES`), the sinusoid table of its first time step is resized to our
(row, col) grid. A checkpoint without a final layernorm (use_mean_pooling: VideoMAE-V2 normalises
after pooling) leaves our final norm at the identity affine.
"""

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import VideoMAEConfig, VideoMAEModel

from swansphere import storage
from swansphere.conventions import VIDEO_FPS
from swansphere.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""VideoMAE's input normalisation (frames arrive in [0, 1])."""

_LAYER_NAMES = {
    "layernorm_before": "norm1",
    "attention.output.dense": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
"""Hugging Face VideoMAE layer names -> ours (timm ViT names, shared with AudioMAE)."""

_CHECKPOINT_FILES = ("config.json", "model.safetensors")


@dataclass(frozen=True)
class VideoEncoderConfig:
    """Sizes of the video encoder; `paper()` is VideoMAE-V2 ViT-B on 224x448 frames."""

    frame_size: tuple[int, int] = (64, 128)
    """(H, W) of the equirectangular frames the encoder takes; W = 2H."""
    patch_size: int = 16
    """Pixels per patch side (VideoMAE: 16)."""
    tubelet_frames: int = 1
    """Frames per token in time; 1 = no look-ahead (VideoMAE: 2, folded when loading)."""
    dim: int = 64
    """C, token width (ViT-B: 768)."""
    depth: int = 2
    """Transformer blocks (ViT-B: 12)."""
    heads: int = 4
    """Attention heads (ViT-B: 12)."""
    mlp_ratio: int = 4
    """MLP hidden width / C (ViT: 4)."""
    max_frames: int = 4
    """Sliding attention window in token steps: how far back a step looks (8 steps = 2 s at 4 fps)."""
    layer_norm_eps: float = 1e-6
    """LayerNorm epsilon (VideoMAE-V2: 1e-6)."""

    def __post_init__(self) -> None:
        height, width = self.frame_size
        if width != 2 * height or height % self.patch_size or self.patch_size < 1:
            raise ValueError(f"frame_size {self.frame_size} must be (H, 2H) with H a multiple of patch_size")
        for name in ("tubelet_frames", "dim", "depth", "heads", "mlp_ratio", "max_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"VideoEncoderConfig: {name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be a multiple of heads {self.heads}")

    @property
    def token_fps(self) -> float:
        """Token steps per second: 4 fps video / tubelet_frames."""
        return VIDEO_FPS / self.tubelet_frames

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of patches per step."""
        return self.frame_size[0] // self.patch_size, self.frame_size[1] // self.patch_size

    @classmethod
    def tiny(cls) -> "VideoEncoderConfig":
        return cls()

    @classmethod
    def paper(cls) -> "VideoEncoderConfig":
        """VideoMAE-V2 ViT-B on 224x448 equirect frames, 1-frame tubelets, a 2 s window."""
        return cls(frame_size=(224, 448), dim=768, depth=12, heads=12, max_frames=8)


@dataclass
class VideoEncoderState:
    """What `VideoEncoder.stream` keeps of a stream between calls: per block, the attention keys and
    values (B, H, L, S, hd) of its last L <= max_frames - 1 steps."""

    layers: list[tuple[Tensor, Tensor]]

    @property
    def steps(self) -> int:
        return self.layers[0][0].shape[2]

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.layers)

    @staticmethod
    def cat(states: "list[VideoEncoderState]") -> "VideoEncoderState":
        """Several streams' states (same number of steps) as one batch."""
        return VideoEncoderState(
            [
                tuple(torch.cat(parts) for parts in zip(*layer, strict=True))
                for layer in zip(*(s.layers for s in states), strict=True)
            ]
        )

    def row(self, i: int) -> "VideoEncoderState":
        """Stream i of a batch, in its own memory."""
        return VideoEncoderState([(k[i : i + 1].clone(), v[i : i + 1].clone()) for k, v in self.layers])


def sinusoid_table(positions: int, dim: int) -> Tensor:
    """(positions, dim) VideoMAE/Transformer sinusoids: sin on even dims, cos on odd, float64 then cast."""
    pos = torch.arange(positions, dtype=torch.float64)[:, None]
    rates = 10000.0 ** (-2.0 * (torch.arange(dim) // 2).double() / dim)
    angles = pos * rates  # (positions, dim)
    return torch.where(torch.arange(dim) % 2 == 0, angles.sin(), angles.cos()).float()


def window_attention(q: Tensor, k: Tensor, v: Tensor, age_bias: Tensor, past: int = 0) -> Tensor:
    """Block-causal sliding-window attention; q (B, H, T, S, hd), k, v (B, H, past + T, S, hd), age_bias
    (H, W) -> (B, H, T, S, hd). The first `past` steps of k, v (a stream's cached steps) are keys only.

    Step τ attends to all tokens of steps τ-W+1..τ: keys are gathered per step into (W·S) windows.
    """
    B, H, T, S, hd = q.shape
    W = age_bias.shape[1]
    # (B, H, T, S, hd, W): the windows of q's steps
    k, v = (F.pad(t, (0, 0, 0, 0, W - 1, 0)).unfold(2, W, 1)[:, :, past:] for t in (k, v))
    k, v = (t.permute(0, 1, 2, 5, 3, 4).reshape(B, H * T, W * S, hd) for t in (k, v))
    age = torch.arange(W - 1, -1, -1, device=q.device)  # (W,) steps back, per window slot
    before_start = (past + torch.arange(T, device=q.device)[:, None] - age) < 0  # (T, W)
    bias = age_bias[:, None, age].masked_fill(before_start, float("-inf"))  # (H, T, W)
    mask = bias.repeat_interleave(S, dim=-1).view(1, H * T, 1, W * S).to(q.dtype)
    y = F.scaled_dot_product_attention(
        q.reshape(B, H * T, S, hd), k, v, attn_mask=mask
    )  # 4-D for every kernel
    return y.view(B, H, T, S, hd)


class Attention(nn.Module):
    """Multi-head self-attention over (B, T, S, C) tokens: full, or block-causal in T over `window` steps."""

    def __init__(self, dim: int, heads: int, window: int | None):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.age_bias = None if window is None else nn.Parameter(torch.zeros(heads, window))  # (H, W)

    def forward(self, x: Tensor) -> Tensor:
        B, T, S, C = x.shape
        q, k, v = self._qkv(x)
        if self.age_bias is None:
            y = F.scaled_dot_product_attention(*(t.flatten(2, 3) for t in (q, k, v))).unflatten(2, (T, S))
        else:
            y = window_attention(q, k, v, self.age_bias)  # (B, H, T, S, hd)
        return self.proj(y.permute(0, 2, 3, 1, 4).reshape(B, T, S, C))

    def stream(self, x: Tensor, past: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """The next steps x (B, T, S, C) of a stream whose earlier steps' keys and values are `past`
        ((B, H, L, S, hd), L <= W - 1; None at the start) -> (output, the keys and values of the last
        W - 1 steps): what `forward` gives these steps after the whole prefix, for T steps' work."""
        B, T, S, C = x.shape
        q, k, v = self._qkv(x)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        if self.age_bias is None:
            raise ValueError("Attention.stream: only a windowed (block-causal) attention streams")
        y = window_attention(q, k, v, self.age_bias, past=k.shape[2] - T)
        keep = self.age_bias.shape[1] - 1
        return self.proj(y.permute(0, 2, 3, 1, 4).reshape(B, T, S, C)), (k[:, :, -keep:], v[:, :, -keep:])

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v (B, H, T, S, hd) of tokens (B, T, S, C)."""
        B, T, S, C = x.shape
        return self.qkv(x).view(B, T, S, 3, self.heads, C // self.heads).permute(3, 0, 4, 1, 2, 5).unbind(0)


class MLP(nn.Module):
    """Linear-GELU-Linear: a block's MLP (out_dim = dim) or a projection head (out_dim = Dv)."""

    def __init__(self, dim: int, hidden: int, out_dim: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim if out_dim is None else out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm ViT block (timm names, so VideoMAE and AudioMAE weights map one to one)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, eps: float, window: int | None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, mlp_ratio * dim)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, S, C)
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def stream(self, x: Tensor, past: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """`forward` of a stream's next steps, given its attention's `past` (`Attention.stream`)."""
        y, state = self.attn.stream(self.norm1(x), past)
        x = x + y
        return x + self.mlp(self.norm2(x)), state


class VideoEncoder(nn.Module):
    """Frames (B, T, 3, H, W) in [0, 1] -> spatial tokens (B, T // tubelet_frames, S, C)."""

    def __init__(self, config: VideoEncoderConfig):
        super().__init__()
        self.config = config
        p, t = config.patch_size, config.tubelet_frames
        self.patch_embed = nn.Conv3d(3, config.dim, kernel_size=(t, p, p), stride=(t, p, p))
        rows, cols = config.grid
        self.pos_embed = nn.Parameter(sinusoid_table(rows * cols, config.dim))  # (S, C)
        self.blocks = nn.ModuleList(
            Block(config.dim, config.heads, config.mlp_ratio, config.layer_norm_eps, config.max_frames)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD)[:, None, None], persistent=False)

    def forward(self, frames: Tensor) -> Tensor:
        x = self._embed(frames)  # (B, T', S, C)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def stream(self, frames: Tensor, state: VideoEncoderState | None) -> tuple[Tensor, VideoEncoderState]:
        """A stream's next frames (B, T, 3, H, W) after the frames `state` was left by (None: the
        stream's first) -> (their tokens (B, T', S, C), the state after them). Call by call this equals
        `forward` of the whole prefix, but each call costs its own frames, not the depth·(W - 1) frames
        of context that re-encoding a window would (84 frames of 392 tokens in the paper preset)."""
        x = self._embed(frames)
        layers = []
        for i, block in enumerate(self.blocks):
            x, kv = block.stream(x, None if state is None else state.layers[i])
            layers.append(kv)
        return self.norm(x), VideoEncoderState(layers)

    def _embed(self, frames: Tensor) -> Tensor:
        """Frames (B, T, 3, H, W) in [0, 1] -> tokens (B, T', S, C) with their spatial positions."""
        T, channels, H, W = frames.shape[1:]
        steps = T // self.config.tubelet_frames
        if channels != 3 or self.config.frame_size != (H, W) or steps == 0:
            raise ValueError(
                f"VideoEncoder: frames must be (B, T >= {self.config.tubelet_frames}, 3, "
                f"{self.config.frame_size[0]}, {self.config.frame_size[1]}), got {tuple(frames.shape)}"
            )
        x = (frames[:, : steps * self.config.tubelet_frames] - self.mean) / self.std  # (B, T, 3, H, W)
        x = self.patch_embed(x.transpose(1, 2))  # (B, C, T', rows, cols)
        return x.flatten(3).permute(0, 2, 3, 1) + self.pos_embed  # (B, T', S, C)

    @classmethod
    def from_videomae(cls, uri: str | Path, config: VideoEncoderConfig) -> "VideoEncoder":
        """Our encoder with the weights of a Hugging Face VideoMAE checkpoint (folder or s3:// prefix)."""
        theirs = _load_videomae(uri)
        _check_compatible(theirs.config, config, str(uri))
        encoder = cls(config)
        encoder.load_state_dict(_convert_videomae(theirs, encoder.state_dict(), config))
        return encoder


def _load_videomae(uri: str | Path) -> VideoMAEModel:
    """The checkpoint as a VideoMAEModel, read locally only (never from a hub)."""
    if not storage.is_s3(uri):
        with storage.local_copy(uri) as folder:
            return _from_folder(folder, str(uri))
    with tempfile.TemporaryDirectory(prefix="swansphere-videomae-") as folder:
        for name in _CHECKPOINT_FILES:
            Path(folder, name).write_bytes(storage.read_bytes(storage.join(uri, name)))
        return _from_folder(Path(folder), str(uri))


def _from_folder(folder: Path, uri: str) -> VideoMAEModel:
    try:
        return VideoMAEModel.from_pretrained(folder, local_files_only=True).eval()
    except (OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{uri}: not a VideoMAE checkpoint folder ({reason})") from None


def _check_compatible(theirs: VideoMAEConfig, ours: VideoEncoderConfig, uri: str) -> None:
    pairs = {
        "hidden_size / dim": (theirs.hidden_size, ours.dim),
        "num_hidden_layers / depth": (theirs.num_hidden_layers, ours.depth),
        "num_attention_heads / heads": (theirs.num_attention_heads, ours.heads),
        "intermediate_size / mlp_ratio·dim": (theirs.intermediate_size, ours.mlp_ratio * ours.dim),
        "patch_size": (theirs.patch_size, ours.patch_size),
        "num_channels": (theirs.num_channels, 3),
        "hidden_act": (theirs.hidden_act, "gelu"),
    }
    for name, (a, b) in pairs.items():
        if a != b:
            raise InputError(f"{uri}: VideoMAE {name} is {a}, the encoder config needs {b}")
    if ours.tubelet_frames not in (1, theirs.tubelet_size):
        raise InputError(
            f"{uri}: tubelet of {theirs.tubelet_size} frames cannot become {ours.tubelet_frames}"
        )


def _convert_videomae(model: VideoMAEModel, ours: dict[str, Tensor], config: VideoEncoderConfig) -> dict:
    """Our state dict filled from VideoMAE's tensors (see the module docstring for the mapping)."""
    theirs, state, C = model.state_dict(), dict(ours), config.dim
    kernel = theirs["embeddings.patch_embeddings.projection.weight"]  # (C, 3, t, p, p)
    if kernel.shape[2] != config.tubelet_frames:
        kernel = kernel.sum(dim=2, keepdim=True)  # fold time: k0 + k1 sees a static tubelet
    state["patch_embed.weight"] = kernel
    state["patch_embed.bias"] = theirs["embeddings.patch_embeddings.projection.bias"]
    image = model.config.image_size
    height, width = (image, image) if isinstance(image, int) else image
    rows, cols = height // config.patch_size, width // config.patch_size
    first_step = model.embeddings.position_embeddings[0, : rows * cols].view(rows, cols, C)
    state["pos_embed"] = resize_grid(first_step, config.grid).flatten(0, 1)  # (S, C)
    zeros = torch.zeros(C)
    for i in range(config.depth):
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        attn = src + "attention.attention."
        state[dst + "attn.qkv.weight"] = torch.cat(
            [theirs[f"{attn}{n}.weight"] for n in ("query", "key", "value")]
        )
        q_bias = theirs.get(attn + "q_bias", theirs.get(attn + "query.bias", zeros))
        k_bias = theirs.get(attn + "key.bias", zeros)
        v_bias = theirs.get(attn + "v_bias", theirs.get(attn + "value.bias", zeros))
        state[dst + "attn.qkv.bias"] = torch.cat([q_bias, k_bias, v_bias])
        for name, mine in _LAYER_NAMES.items():
            for kind in ("weight", "bias"):
                state[f"{dst}{mine}.{kind}"] = theirs[f"{src}{name}.{kind}"]
    state["norm.weight"] = theirs.get("layernorm.weight", torch.ones(C))
    state["norm.bias"] = theirs.get("layernorm.bias", zeros)
    return state


def resize_grid(table: Tensor, size: tuple[int, int]) -> Tensor:
    """(rows, cols, C) position table resized bicubically to `size` (timm's resample_abs_pos_embed)."""
    if tuple(table.shape[:2]) == size:
        return table
    grid = table.permute(2, 0, 1)[None]  # (1, C, rows, cols)
    return F.interpolate(grid, size=size, mode="bicubic", align_corners=False)[0].permute(1, 2, 0)

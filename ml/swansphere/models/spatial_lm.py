"""Spatial LM of paper §3.3: the causal transformer over patches that plans the semantic condition h_t.

At patch t (4 latent frames = 185.8 ms) the input is the patch's 4 aligned video tokens C_v, projected
to d_model, plus the history embedding of patch t-1 ("this representation is added to the aligned
video tokens"). Captions enter through cross-attention to FLAN-T5 states. Learned null embeddings
stand in for a missing modality, per sample, so one batch can mix video-only, text-only and both.
The output h_t (B, d_model) is LocDiT's condition for patch t.

Attention looks back over a sliding window of `max_patches` patches (the current one included), the
same in `forward` (teacher forcing) and `step` (streaming with a KV cache), so the two agree. RoPE on
the absolute patch index makes scores depend only on the distance between patches, so a window that
slides does not shift what a position means. The default of 64 patches (11.9 s) covers a whole 10 s
training clip, so training never sees the window cut, while streaming memory stays bounded.

Streaming keeps each row's window in a ring buffer of `max_patches` slots (patch p in slot p mod W):
keys carry their position in their RoPE rotation, so their order in the buffer does not matter to
attention, and every row has the same shape whatever its position. That is what lets one `step` serve
rows (streams) that are at different patches: the serving backend keeps all its streams in one cache
and steps any subset of them together, one batched matrix product per layer instead of one per stream.
"""

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from swansphere.models.cuda_graphs import capture


@dataclass(frozen=True)
class SpatialLMConfig:
    d_model: int = 64
    """Width of the residual stream and of h_t, the condition LocDiT receives."""
    n_layers: int = 2
    """Transformer blocks (self-attention, text cross-attention, MLP)."""
    n_heads: int = 4
    """Attention heads; d_model / n_heads must be even for RoPE."""
    video_dim: int = 32
    """Dv, width of one SVAC video token (one token per latent frame)."""
    text_dim: int = 32
    """Dt, width of the T5 encoder states (1024 for FLAN-T5-large)."""
    patch_frames: int = 4
    """Latent frames per patch (paper §4.2: patch size 4); one LM position per patch."""
    max_patches: int = 64
    """Sliding attention window in patches, current one included; bounds the KV cache."""
    mlp_ratio: int = 4
    """Hidden width of the MLP as a multiple of d_model."""
    dropout: float = 0.0
    """Dropout on attention weights and residual branches, active only in training."""
    rope_base: float = 10000.0
    """Base of the RoPE frequencies."""

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "n_heads", "video_dim", "text_dim", "patch_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"SpatialLMConfig: {name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"SpatialLMConfig: d_model {self.d_model} must split into {self.n_heads} heads of even width"
            )
        if self.max_patches < 1 or self.mlp_ratio < 1:
            raise ValueError(
                f"SpatialLMConfig: max_patches and mlp_ratio must be >= 1, "
                f"got {self.max_patches}, {self.mlp_ratio}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SpatialLMConfig: dropout must be in [0, 1), got {self.dropout}")
        if self.rope_base <= 1.0:
            raise ValueError(f"SpatialLMConfig: rope_base must be > 1, got {self.rope_base}")

    @classmethod
    def tiny(cls) -> "SpatialLMConfig":
        """Trains on 2 CPU cores in minutes; used by tests and the demo checkpoint."""
        return cls(d_model=64, n_layers=2, n_heads=4, video_dim=32, text_dim=32)

    @classmethod
    def paper(cls) -> "SpatialLMConfig":
        """About 0.80 B parameters, the LM's share of the paper's 1.09 B; FLAN-T5-large text (1024)."""
        return cls(d_model=1536, n_layers=22, n_heads=16, video_dim=768, text_dim=1024, dropout=0.1)


@dataclass
class KVCache:
    """State of `SpatialLM.step` for R rows (streams), each at its own patch: what the LM remembers."""

    self_kv: list[tuple[Tensor, Tensor]]
    """Per layer, RoPE'd keys and values (R, H, W, hd) of the last W = max_patches patches, patch p in
    slot p mod W; slots a row has not written yet are masked out."""
    text_kv: list[tuple[Tensor, Tensor]]
    """Per layer, cross-attention keys and values (R, H, S, hd) of the text memory, computed once."""
    text_mask: Tensor
    """(R, S) bool, True = attended; rows without text attend only to the null text token; padding
    (`pad_text`) is never attended."""
    positions: Tensor
    """(R,) long: absolute index of each row's next patch, the RoPE position of its next step."""

    @property
    def rows(self) -> int:
        return len(self.positions)

    @staticmethod
    def cat(caches: "list[KVCache]") -> "KVCache":
        """The rows of several caches (same model and text slots) as one cache."""
        return KVCache(
            self_kv=[_cat_pairs(layer) for layer in zip(*(c.self_kv for c in caches), strict=True)],
            text_kv=[_cat_pairs(layer) for layer in zip(*(c.text_kv for c in caches), strict=True)],
            text_mask=torch.cat([c.text_mask for c in caches]),
            positions=torch.cat([c.positions for c in caches]),
        )

    def pad_text(self, slots: int) -> None:
        """Text memory padded to `slots` positions, never attended: caches of streams with texts of
        different lengths then join (`cat`, `write`)."""
        extra = slots - self.text_mask.shape[1]
        if extra > 0:
            self.text_kv = [(F.pad(k, (0, 0, 0, extra)), F.pad(v, (0, 0, 0, extra))) for k, v in self.text_kv]
            self.text_mask = F.pad(self.text_mask, (0, extra))

    def write(self, rows: Tensor, other: "KVCache") -> None:
        """Replace rows (k,) of this cache by the k rows of `other` (e.g. streams just started)."""
        for (k, v), (k_new, v_new) in zip(
            self.self_kv + self.text_kv, other.self_kv + other.text_kv, strict=True
        ):
            k[rows], v[rows] = k_new.to(k.dtype), v_new.to(v.dtype)
        self.text_mask[rows] = other.text_mask
        self.positions[rows] = other.positions


def _rows(tensor: Tensor, rows: Tensor | None) -> Tensor:
    """The rows of a cache tensor a step reads; all of them (no copy) for None."""
    return tensor if rows is None else tensor[rows]


def _own(pair: tuple[Tensor, Tensor], dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Keys and values in their own memory, not views of one projection: rows are written in place."""
    return pair[0].contiguous().to(dtype), pair[1].contiguous().to(dtype)


def _cat_pairs(pairs: tuple[tuple[Tensor, Tensor], ...]) -> tuple[Tensor, Tensor]:
    return torch.cat([k for k, _ in pairs]), torch.cat([v for _, v in pairs])


def rope_angles(positions: Tensor, head_dim: int, base: float) -> tuple[Tensor, Tensor]:
    """cos, sin (T, head_dim/2) for absolute positions (T,)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim)
    angles = positions.float()[:, None] * inv_freq[None, :]  # (T, hd/2)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the two halves of each head (B, H, T, hd) by the position's angles."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def window_mask(length: int, window: int, device: torch.device) -> Tensor:
    """(T, T) bool: query i sees keys j with i - window < j <= i (causal sliding window)."""
    i = torch.arange(length, device=device)[:, None]
    j = torch.arange(length, device=device)[None, :]
    return (j <= i) & (j > i - window)


class CausalSelfAttention(nn.Module):
    """Self-attention over patches with RoPE; the window comes as a mask or as a trimmed cache."""

    def __init__(self, config: SpatialLMConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.window = config.max_patches
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor) -> Tensor:
        """Teacher forcing: x (B, T, C) -> (B, T, C) under the (T, T) causal window mask."""
        q, k, v = self._qkv(x, cos, sin)
        return self._attend(q, k, v, mask)

    def step(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        past: tuple[Tensor, Tensor],
        rows: Tensor | None,
        slot: Tensor,
        written: Tensor,
    ) -> Tensor:
        """One patch of `rows` (B,) of a ring-buffer cache `past` (R, H, W, hd), None = all R rows in
        order: x (B, 1, C) -> (B, 1, C). Writes the patch's key and value into each row's `slot` (B,)
        first, then attends over the slots `written` (B, 1, 1, W) holds True."""
        q, k, v = self._qkv(x, cos, sin)
        index = torch.arange(len(x), device=x.device) if rows is None else rows
        for buffer, new in zip(past, (k, v), strict=True):
            buffer[index, :, slot] = new[:, :, 0].to(buffer.dtype)
        keys, values = (_rows(buffer, rows).to(q.dtype) for buffer in past)  # (B, H, W, hd)
        return self._attend(q, keys, values, written)

    def _qkv(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v  # (B, H, T, hd)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        B, _, T, _ = q.shape
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(B, T, -1)))


class TextCrossAttention(nn.Module):
    """Patches attend to the caption's T5 states (paper §3.3: "injected into the LM via cross-attention")."""

    def __init__(self, config: SpatialLMConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        self.q = nn.Linear(config.d_model, config.d_model)
        self.kv = nn.Linear(config.text_dim, 2 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.resid_dropout = nn.Dropout(config.dropout)

    def memory(self, text: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values (B, H, S, hd) of the text memory (B, S, Dt); once per stream when streaming."""
        B, S, _ = text.shape
        k, v = self.kv(text).chunk(2, dim=2)
        return tuple(t.view(B, S, self.n_heads, t.shape[-1] // self.n_heads).transpose(1, 2) for t in (k, v))

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor], mask: Tensor) -> Tensor:
        """x (B, T, C), mask (B, S) -> (B, T, C)."""
        B, T, C = x.shape
        q = self.q(x).view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, H, T, hd)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, *kv, attn_mask=mask[:, None, None, :], dropout_p=dropout)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(B, T, C)))


class MLP(nn.Module):
    def __init__(self, config: SpatialLMConfig):
        super().__init__()
        hidden = config.mlp_ratio * config.d_model
        self.net = nn.Sequential(
            nn.Linear(config.d_model, hidden),
            nn.GELU(),
            nn.Linear(hidden, config.d_model),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Block(nn.Module):
    """Pre-norm block: causal self-attention, text cross-attention, MLP, each on a residual branch."""

    def __init__(self, config: SpatialLMConfig):
        super().__init__()
        self.ln_self = nn.LayerNorm(config.d_model)
        self.self_attn = CausalSelfAttention(config)
        self.ln_cross = nn.LayerNorm(config.d_model)
        self.cross_attn = TextCrossAttention(config)
        self.ln_mlp = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor],
        mask: Tensor,
        text_kv: tuple[Tensor, Tensor],
        text_mask: Tensor,
    ) -> Tensor:
        x = x + self.self_attn(self.ln_self(x), *rope, mask)
        return self._text_and_mlp(x, text_kv, text_mask)

    def step(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor],
        past: tuple[Tensor, Tensor],
        rows: Tensor | None,
        slot: Tensor,
        written: Tensor,
        text_kv: tuple[Tensor, Tensor],
        text_mask: Tensor,
    ) -> Tensor:
        x = x + self.self_attn.step(self.ln_self(x), *rope, past, rows, slot, written)
        return self._text_and_mlp(x, text_kv, text_mask)

    def _text_and_mlp(self, x: Tensor, text_kv: tuple[Tensor, Tensor], text_mask: Tensor) -> Tensor:
        x = x + self.cross_attn(self.ln_cross(x), text_kv, text_mask)
        return x + self.mlp(self.ln_mlp(x))


class SpatialLM(nn.Module):
    """Causal LM over patches: video tokens + history + text -> semantic condition h_t (paper §3.3)."""

    def __init__(self, config: SpatialLMConfig):
        super().__init__()
        self.config = config
        self.null_video = nn.Parameter(torch.randn(config.patch_frames, config.video_dim) * 0.02)  # (P, Dv)
        self.null_text = nn.Parameter(torch.randn(1, config.text_dim) * 0.02)  # (1, Dt)
        self.video_proj = nn.Linear(config.patch_frames * config.video_dim, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.cache_dtype: torch.dtype | None = None
        """dtype of `new_cache`'s keys and values (None: the weights'); `autocast_copy` sets its own."""
        self.apply(self._init_weights)
        for name, param in self.named_parameters():
            if name.endswith("proj.weight") and name != "video_proj.weight":
                nn.init.normal_(param, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """nanoGPT init: N(0, 0.02) weights, zero biases; residual projections scaled by depth above."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def forward(
        self,
        video: Tensor | None,
        history: Tensor,
        text: Tensor | None = None,
        text_mask: Tensor | None = None,
        video_present: Tensor | None = None,
        text_present: Tensor | None = None,
    ) -> Tensor:
        """Teacher forcing over all patches: history (B, T, d_model) -> h (B, T, d_model).

        video (B, T, P, Dv) or None (all null), text (B, S, Dt) with text_mask (B, S) or None (all null);
        video_present / text_present (B,) bool mark samples whose modality is missing.
        """
        B, T, _ = history.shape
        x = self._inputs(video, history, video_present)  # (B, T, C)
        memory, memory_mask = self._text_memory(text, text_mask, text_present, B)
        rope = rope_angles(torch.arange(T, device=x.device), self._head_dim, self.config.rope_base)
        mask = window_mask(T, self.config.max_patches, x.device)  # (T, T)
        for block in self.blocks:
            x = block(x, rope, mask, block.cross_attn.memory(memory), memory_mask)
        return self.ln_f(x)

    def autocast_copy(self, dtype: torch.dtype) -> "SpatialLM":
        """A copy for `step` under autocast to `dtype` whose linear layers hold their weights and biases
        in `dtype` already, as autocast would cast them at every step (inside a CUDA graph without its
        cache: 0.8 B fp32 weights read and written again as bf16 for each patch of the paper preset).
        The text memory's key/value projections stay: `new_cache` runs them once per stream, outside
        autocast. Its caches hold keys and values in `dtype` too: autocast makes them in `dtype` and
        casts them to it for attention, so a float32 cache only cost a cast of every row's window and
        text memory in every layer at every step. Under autocast `step` computes what this model does,
        bit for bit. A copy, so this model stays trainable; it does not follow later changes to its
        weights."""
        inference = copy.deepcopy(self).eval().requires_grad_(False)
        inference.cache_dtype = dtype
        memory = {block.cross_attn.kv for block in inference.blocks}
        for module in inference.modules():
            if isinstance(module, nn.Linear) and module not in memory:
                module.weight = nn.Parameter(module.weight.to(dtype), requires_grad=False)
                module.bias = nn.Parameter(module.bias.to(dtype), requires_grad=False)
        return inference

    def new_cache(
        self,
        batch_size: int,
        text: Tensor | None = None,
        text_mask: Tensor | None = None,
        text_present: Tensor | None = None,
    ) -> KVCache:
        """Rows starting at patch 0; the text (fixed for a stream) is encoded into cross-attention K/V
        here, once."""
        memory, memory_mask = self._text_memory(text, text_mask, text_present, batch_size)
        H, W, hd = self.config.n_heads, self.config.max_patches, self._head_dim
        dtype = self.cache_dtype or self.null_video.dtype
        empty = self.null_video.new_zeros(batch_size, H, W, hd, dtype=dtype)
        return KVCache(
            self_kv=[(empty.clone(), empty.clone()) for _ in self.blocks],
            text_kv=[_own(block.cross_attn.memory(memory), dtype) for block in self.blocks],
            text_mask=memory_mask,
            positions=torch.zeros(batch_size, dtype=torch.long, device=empty.device),
        )

    def step(
        self,
        video_t: Tensor | None,
        history_t: Tensor,
        cache: KVCache,
        video_present: Tensor | None = None,
        rows: Tensor | None = None,
    ) -> Tensor:
        """One streaming patch of the cache's `rows` (B,) (None: all of them, in order), each at its
        own position: video_t (B, P, Dv) or None, history_t (B, d_model) -> h_t (B, d_model).

        Updates `cache` in place: the rows' keys/values of this patch written, their positions + 1.
        """
        stepped = cache.rows if rows is None else len(rows)
        if history_t.shape[0] != stepped:
            raise ValueError(f"SpatialLM.step: {stepped} cache rows but a batch of {history_t.shape[0]}")
        video = None if video_t is None else video_t.unsqueeze(1)  # (B, 1, P, Dv)
        x = self._inputs(video, history_t.unsqueeze(1), video_present)  # (B, 1, C)
        positions = _rows(cache.positions, rows)
        cos, sin = rope_angles(positions, self._head_dim, self.config.rope_base)  # (B, hd/2)
        rope = (cos[:, None, None, :], sin[:, None, None, :])  # broadcast over heads and the one patch
        W = self.config.max_patches
        slot = positions % W  # ring buffer: patch p in slot p mod W
        written = (torch.arange(W, device=x.device) <= positions[:, None])[:, None, None, :]  # (B, 1, 1, W)
        text_mask = _rows(cache.text_mask, rows)
        for block, past, (text_k, text_v) in zip(self.blocks, cache.self_kv, cache.text_kv, strict=True):
            text_kv = (_rows(text_k, rows), _rows(text_v, rows))
            x = block.step(x, rope, past, rows, slot, written, text_kv, text_mask)
        if rows is None:
            cache.positions += 1
        else:
            cache.positions[rows] = positions + 1
        return self.ln_f(x)[:, 0]

    @property
    def _head_dim(self) -> int:
        return self.config.d_model // self.config.n_heads

    def _inputs(self, video: Tensor | None, history: Tensor, video_present: Tensor | None) -> Tensor:
        """Projected video tokens (null where missing) + history: (B, T, C) (paper §3.3)."""
        B, T, _ = history.shape
        P, Dv = self.config.patch_frames, self.config.video_dim
        if history.shape[2] != self.config.d_model:
            raise ValueError(
                f"SpatialLM: history must be (B, T, {self.config.d_model}), got {tuple(history.shape)}"
            )
        tokens = self.null_video.expand(B, T, P, Dv)
        if video is not None:
            if video.shape != (B, T, P, Dv):
                raise ValueError(f"SpatialLM: video must be {(B, T, P, Dv)}, got {tuple(video.shape)}")
            if video_present is None:
                tokens = video
            else:
                tokens = torch.where(video_present.view(B, 1, 1, 1), video, tokens)
        return self.drop(self.video_proj(tokens.flatten(2)) + history)

    def _text_memory(
        self, text: Tensor | None, text_mask: Tensor | None, text_present: Tensor | None, batch_size: int
    ) -> tuple[Tensor, Tensor]:
        """Memory (B, 1+S, Dt) and mask (B, 1+S): the null text token alone where text is missing."""
        null = self.null_text.expand(batch_size, 1, self.config.text_dim)  # (B, 1, Dt)
        if text is None:
            return null, torch.ones(batch_size, 1, dtype=torch.bool, device=null.device)
        B, S, Dt = text.shape
        if batch_size != B or Dt != self.config.text_dim:
            raise ValueError(
                f"SpatialLM: text must be ({batch_size}, S, {self.config.text_dim}), got {(B, S, Dt)}"
            )
        if text_mask is None:
            text_mask = torch.ones(B, S, dtype=torch.bool, device=text.device)
        present = text_mask.any(dim=1)  # (B,)
        if text_present is not None:
            present = present & text_present
        memory = torch.cat([null, text], dim=1)
        mask = torch.cat([~present[:, None], text_mask & present[:, None]], dim=1)
        return memory, mask


class GraphedStep:
    """`SpatialLM.step` on a GPU, replayed as CUDA graphs: one launch per patch instead of the several
    hundred kernels of a step (22 layers of self-attention, text cross-attention and MLP in the paper
    preset), which at a few streams take longer to launch than to run. Optionally under autocast
    (bf16), with the autocast weight cache off as graph capture requires.

    One graph per batch rounded up to a power of two. Padding rows repeat the batch's first row: they
    compute what it computes and write the same keys, values and position into its cache row, so
    the padding changes nothing and its outputs are dropped. A graph reads and writes the cache's
    tensors where they were at capture; the cache keeps them while it only has rows overwritten
    (`KVCache.write`, a step), and replaces them when it grows (`KVCache.cat`) or pads its text slots
    (`pad_text`), and then every graph is captured again on first use.
    """

    def __init__(self, model: SpatialLM, autocast: torch.dtype | None = None):
        self.model = model
        self.autocast = autocast
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, dict[str, Tensor], Tensor]] = {}
        self._cache_tensors: list[Tensor] = []
        """The cache tensors the graphs address, compared by identity."""
        self._pool: tuple | None = None

    def __call__(
        self, video_t: Tensor, history_t: Tensor, cache: KVCache, video_present: Tensor, rows: Tensor
    ) -> Tensor:
        """`step` with every argument given (zero video where `video_present` is False); returns h_t
        (B, d_model) float32, valid until the next call."""
        tensors = _cache_tensors(cache)
        if len(tensors) != len(self._cache_tensors) or any(
            a is not b for a, b in zip(tensors, self._cache_tensors, strict=False)
        ):
            self._graphs.clear()
            self._cache_tensors = tensors
        batch = len(rows)
        size = 1 << (batch - 1).bit_length()
        given = {"video": video_t, "history": history_t, "present": video_present, "rows": rows}
        captured = self._graphs.get(size)
        if captured is None:
            inputs = {name: value.new_zeros(size, *value.shape[1:]) for name, value in given.items()}
            _fill(inputs, given)
            captured = self._graphs[size] = self._capture(cache, inputs)
        else:
            _fill(captured[1], given)
        graph, _, output = captured
        graph.replay()
        return output[:batch]

    def _capture(
        self, cache: KVCache, inputs: dict[str, Tensor]
    ) -> tuple[torch.cuda.CUDAGraph, dict[str, Tensor], Tensor]:
        @torch.no_grad()
        def run() -> Tensor:
            dtype, enabled = self.autocast or torch.bfloat16, self.autocast is not None
            with torch.autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=False):
                h = self.model.step(
                    inputs["video"], inputs["history"], cache, inputs["present"], inputs["rows"]
                )
            return h.float()

        positions = cache.positions.clone()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        # The warm-up stepped the rows (the keys and values it wrote, the replay writes again).
        graph, output = capture(run, self._pool, lambda: cache.positions.copy_(positions))
        return graph, inputs, output


def _cache_tensors(cache: KVCache) -> list[Tensor]:
    pairs = cache.self_kv + cache.text_kv
    return [tensor for pair in pairs for tensor in pair] + [cache.text_mask, cache.positions]


def _fill(inputs: dict[str, Tensor], given: dict[str, Tensor]) -> None:
    """Static inputs (size, ...) <- the given batch (B, ...), rows B.. repeating row 0."""
    for name, value in given.items():
        static = inputs[name]
        static[: len(value)].copy_(value)
        static[len(value) :].copy_(value[:1].expand_as(static[len(value) :]))

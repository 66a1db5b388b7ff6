"""Local Diffusion Transformer (LocDiT) of paper §3.3: the second stage, one patch at a time.

"Conditioned on the LM output h_t, LocDiT utilizes a flow matching objective to learn the
reconstruction of spatial audio latents from Gaussian noise", and it "receives the two preceding
patches as boundary context to improve local continuity". Attention is bidirectional (non-causal)
over one short sequence per patch, as in DiTAR's LocDiT:

    [h_t token | 8 clean context frames (patches t-2, t-1) | 4 noisy frames of patch t]

(13 tokens with the paper's patch of 4 and context of 2 patches). Every latent frame is one token.
The flow time enters every block through adaLN-Zero (DiT, Peebles & Xie 2023), and only the 4
noisy frames are read out as a velocity.

Flow matching (rectified flow / conditional OT path, Liu et al. 2022, Lipman et al. 2022), with
t = 0 the noise end and t = 1 the data end:

    x_t = (1 - t)·x0 + t·x1,   x0 ~ N(0, I),   u = dx_t/dt = x1 - x0,
    loss = E_{t, x0} || v(x_t, t | h, context) - u ||²   (on the 4 noisy frames only).

Guidance: h and the context are dropped independently in training (p_drop_h, p_drop_context) and
replaced by learned null embeddings, so the sampler can mix conditional and unconditional velocities
(`sampler.guided_velocity`). A dropped context is a learned null, not zeros, because zeros already
mean "start of the stream: no preceding patch yet", a real condition that must stay distinct from
"context withheld".
"""

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TOKEN_CONDITION, TOKEN_CONTEXT, TOKEN_NOISY = 0, 1, 2
"""Token types: the h_t token, the clean context frames, the noisy frames of the current patch."""


@dataclass(frozen=True)
class LocDiTConfig:
    """Sizes of LocDiT; `tiny()` for tests and CPU training, `paper()` for the paper's scale."""

    d_model: int
    """Transformer width; the cost of the 20 solver steps per patch grows with its square."""
    n_layers: int
    """DiT blocks; depth, not width, is what the 20 serial steps per patch pay for in latency."""
    n_heads: int
    """Attention heads; must divide d_model."""
    latent_dim: int
    """D of the VAE latents (tiny 16, paper 128): one latent frame is one token."""
    cond_dim: int
    """Width of h_t, i.e. the Spatial LM's d_model."""
    patch_frames: int = 4
    """Latent frames generated per patch (paper §4.2: patch size 4 = 185.8 ms)."""
    context_patches: int = 2
    """Preceding patches given as clean boundary context (paper §3.3, §4.2: 2 patches = 8 frames)."""
    p_drop_h: float = 0.1
    """Training probability of replacing h_t by the null token, so h-guidance has an unconditional."""
    p_drop_context: float = 0.1
    """Training probability of replacing the context by the null context, for context guidance."""
    mlp_ratio: float = 4.0
    """Hidden width of the block MLPs relative to d_model (DiT's 4)."""

    def __post_init__(self) -> None:
        sizes = {
            "d_model": self.d_model,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "latent_dim": self.latent_dim,
            "cond_dim": self.cond_dim,
            "patch_frames": self.patch_frames,
        }
        for name, value in sizes.items():
            if value < 1:
                raise ValueError(f"LocDiTConfig: {name} must be >= 1, got {value}")
        if self.context_patches < 0:
            raise ValueError(f"LocDiTConfig: context_patches must be >= 0, got {self.context_patches}")
        if self.d_model % self.n_heads:
            raise ValueError(f"LocDiTConfig: n_heads {self.n_heads} must divide d_model {self.d_model}")
        for name, p in (("p_drop_h", self.p_drop_h), ("p_drop_context", self.p_drop_context)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"LocDiTConfig: {name} must be in [0, 1), got {p}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"LocDiTConfig: mlp_ratio must be > 0, got {self.mlp_ratio}")

    @property
    def context_frames(self) -> int:
        """Latent frames of boundary context (8 in the paper)."""
        return self.context_patches * self.patch_frames

    @property
    def seq_len(self) -> int:
        """Tokens per sequence: h_t, the context frames, the noisy frames."""
        return 1 + self.context_frames + self.patch_frames

    @classmethod
    def tiny(cls) -> "LocDiTConfig":
        """Trains on 2 CPU cores in minutes; used by tests and the demo checkpoint."""
        return cls(d_model=64, n_layers=2, n_heads=4, latent_dim=16, cond_dim=64)

    @classmethod
    def paper(cls) -> "LocDiTConfig":
        """0.29 B parameters: with the paper-preset Spatial LM (0.80 B) and history encoder the
        generator totals the paper's 1.09 B (15 layers, not 16, which would give 1.11 B)."""
        return cls(d_model=1024, n_layers=15, n_heads=16, latent_dim=128, cond_dim=1536)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal features of flow time t in [0, 1] (B,) -> (B, dim).

    t is scaled by 1000 so that [0, 1] spans the frequencies DiT spreads over its 1000 integer steps.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)


class TimestepEmbedder(nn.Module):
    """t (B,) -> conditioning vector c (B, d_model): sinusoidal features, then an MLP (DiT)."""

    def __init__(self, d_model: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, d_model), nn.SiLU(), nn.Linear(d_model, d_model))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype))


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: x (B, T, C) normalised elsewhere, shift/scale (B, C) from the time embedding."""
    return x * (1 + scale[:, None]) + shift[:, None]


class SelfAttention(nn.Module):
    """Bidirectional multi-head self-attention: every token sees every other token of the patch."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (y.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for y in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=False)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class DiTBlock(nn.Module):
    """Pre-norm transformer block with adaLN-Zero: the time embedding sets shift, scale and a gate
    per branch, and the gates start at zero so every block starts as the identity (DiT §3.2)."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(d_model * mlp_ratio)
        self.norm1 = nn.LayerNorm(d_model, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(d_model, n_heads)
        self.norm2 = nn.LayerNorm(d_model, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d_model)
        )
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d_model, 6 * d_model))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """x (B, T, C), c (B, C) -> (B, T, C)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=1)  # 6 x (B, C)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """adaLN-modulated norm, then a zero-initialised projection to a velocity per latent frame."""

    def __init__(self, d_model: int, latent_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d_model, 2 * d_model))
        self.out = nn.Linear(d_model, latent_dim)
        for layer in (self.ada[1], self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """x (B, P, C), c (B, C) -> (B, P, D)."""
        shift, scale = self.ada(c).chunk(2, dim=1)
        return self.out(modulate(self.norm(x), shift, scale))


class LocDiT(nn.Module):
    """Velocity v(x_t, t | h_t, context) for the noisy frames of one patch (paper §3.3)."""

    def __init__(self, config: LocDiTConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.h_in = nn.Linear(config.cond_dim, d)
        self.frame_in = nn.Linear(config.latent_dim, d)
        """One projection for clean context and noisy frames; the token type tells them apart."""
        self.null_h = nn.Parameter(torch.randn(d) * 0.02)
        """Replaces the h_t token when h is dropped (guidance's unconditional branch)."""
        self.null_context = nn.Parameter(torch.randn(config.context_frames, d) * 0.02)
        """Replaces the context tokens when the context is dropped; a learned vector per frame, distinct
        from projected zeros, which mean "start of the stream"."""
        self.pos = nn.Parameter(torch.randn(config.seq_len, d) * 0.02)
        self.token_type = nn.Embedding(3, d)
        types = (
            [TOKEN_CONDITION] + [TOKEN_CONTEXT] * config.context_frames + [TOKEN_NOISY] * config.patch_frames
        )
        self.register_buffer("type_ids", torch.tensor(types), persistent=False)
        self.time = TimestepEmbedder(d)
        self.blocks = nn.ModuleList(
            DiTBlock(d, config.n_heads, config.mlp_ratio) for _ in range(config.n_layers)
        )
        self.final = FinalLayer(d, config.latent_dim)

    def forward(
        self,
        x_t: Tensor,
        t: Tensor,
        h: Tensor,
        context: Tensor,
        drop_h: Tensor | None = None,
        drop_context: Tensor | None = None,
    ) -> Tensor:
        """x_t (B, D, P) noisy frames at flow time t (B,), h (B, cond_dim), context (B, D, 8) clean
        latents of patches t-2, t-1 (zeros where the stream has not produced them yet); drop_h and
        drop_context (B,) bool swap in the null embeddings per example. Returns v (B, D, P)."""
        self._check_inputs(x_t, t, h, context, drop_h, drop_context)
        c = self.time(t)  # (B, C)
        h_token = self.h_in(h)[:, None]  # (B, 1, C)
        context_tokens = self.frame_in(context.transpose(1, 2))  # (B, 8, C)
        noisy_tokens = self.frame_in(x_t.transpose(1, 2))  # (B, P, C)
        if drop_h is not None:
            h_token = torch.where(drop_h[:, None, None], self.null_h, h_token)
        if drop_context is not None:
            context_tokens = torch.where(drop_context[:, None, None], self.null_context, context_tokens)
        x = torch.cat([h_token, context_tokens, noisy_tokens], dim=1)  # (B, T, C)
        x = x + self.pos + self.token_type(self.type_ids)
        for block in self.blocks:
            x = block(x, c)
        v = self.final(x[:, -self.config.patch_frames :], c)  # (B, P, D): noisy frames only
        return v.transpose(1, 2)  # (B, D, P)

    def autocast_copy(self, dtype: torch.dtype) -> "LocDiT":
        """A copy for inference under autocast to `dtype` whose linear layers hold in `dtype` already
        what autocast would cast them to at every call: every weight, and the biases of the layers each
        solver step runs (blocks, final layer; `frame_in`'s bias stays, `PatchVelocity` adds it outside
        a linear). Inside a CUDA graph autocast may not cache its casts, so each of a patch's 20 steps
        would otherwise read every fp32 weight and write a bf16 copy of it first: one extra kernel per
        weight and bias per step. Under autocast the copy computes what this model does, bit for bit.
        A copy, so this model stays trainable; it does not follow later changes to its weights."""
        inference = copy.deepcopy(self).eval().requires_grad_(False)
        every_step = {*inference.blocks.modules(), *inference.final.modules()}
        for module in inference.modules():
            if isinstance(module, nn.Linear):
                module.weight = nn.Parameter(module.weight.to(dtype), requires_grad=False)
                if module in every_step and module.bias is not None:
                    module.bias = nn.Parameter(module.bias.to(dtype), requires_grad=False)
        return inference

    def guidance_dropout(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Independent per-example drop masks (drop_h, drop_context), each (B,) bool."""
        drop_h = torch.rand(batch_size, generator=generator, device=generator.device) < self.config.p_drop_h
        drop_context = (
            torch.rand(batch_size, generator=generator, device=generator.device) < self.config.p_drop_context
        )
        device = self.pos.device
        return drop_h.to(device), drop_context.to(device)

    def loss(self, x1: Tensor, h: Tensor, context: Tensor, generator: torch.Generator) -> Tensor:
        """Flow-matching loss on one batch of patches x1 (B, D, P): E || v(x_t, t) - (x1 - x0) ||²."""
        x0, t = flow_matching_noise(x1, generator)
        drop_h, drop_context = self.guidance_dropout(x1.shape[0], generator)
        return self.flow_matching_errors(x1, x0, t, h, context, drop_h, drop_context).mean()

    def flow_matching_errors(
        self,
        x1: Tensor,
        x0: Tensor,
        t: Tensor,
        h: Tensor,
        context: Tensor,
        drop_h: Tensor | None = None,
        drop_context: Tensor | None = None,
    ) -> Tensor:
        """Per-example error || v(x_t, t) - (x1 - x0) ||² / (D·P) (B,) at given noise x0 (B, D, P) and
        time t (B,): Diffusion-DPO compares policy and reference, winner and loser at the same (x0, t)."""
        x_t, u = flow_path(x1, x0, t)
        v = self(x_t, t, h, context, drop_h, drop_context)  # (B, D, P)
        return (v - u).pow(2).mean(dim=(1, 2))

    def _check_inputs(
        self,
        x_t: Tensor,
        t: Tensor,
        h: Tensor,
        context: Tensor,
        drop_h: Tensor | None,
        drop_context: Tensor | None,
    ) -> None:
        cfg = self.config
        B = x_t.shape[0]
        expected = {
            "x_t": (x_t, (B, cfg.latent_dim, cfg.patch_frames)),
            "t": (t, (B,)),
            "h": (h, (B, cfg.cond_dim)),
            "context": (context, (B, cfg.latent_dim, cfg.context_frames)),
        }
        for name, mask in (("drop_h", drop_h), ("drop_context", drop_context)):
            if mask is not None:
                if mask.dtype != torch.bool:
                    raise ValueError(f"LocDiT: {name} must be a bool mask, got {mask.dtype}")
                expected[name] = (mask, (B,))
        for name, (tensor, shape) in expected.items():
            if tuple(tensor.shape) != shape:
                raise ValueError(f"LocDiT: expected {name} of shape {shape}, got {tuple(tensor.shape)}")


class PatchVelocity:
    """LocDiT's velocity for one batch of patches at fixed conditions, along a fixed time grid: what an
    ODE solver calls `steps` times per patch (`sampler.sample_patch`).

    Equal to `LocDiT.forward` (up to float rounding), but what does not change from step to step is
    computed once: the h and context tokens (null embeddings swapped in), positions and token types,
    and every block's adaLN shift/scale/gate at each grid time (the flow time is shared by the batch).
    A step then runs only the transformer over the sequence with the new noisy frames, in fewer,
    fused operations, and its last block only for the noisy frames, whose velocity is all it returns.
    At the tiny preset this is what the per-patch cost is made of: 20 steps of a two-layer model
    whose operations are too small for anything but their count to matter.
    """

    def __init__(
        self,
        model: LocDiT,
        h: Tensor,
        context: Tensor,
        drop_h: Tensor,
        drop_context: Tensor,
        times: Tensor,
    ):
        """h (B, cond_dim), context (B, D, context_frames), drop_h / drop_context (B,) bool, times (S,)."""
        B = h.shape[0]
        x_t = context.new_zeros(B, model.config.latent_dim, model.config.patch_frames)
        model._check_inputs(x_t, times.new_zeros(B), h, context, drop_h, drop_context)
        self.model = model
        P = model.config.patch_frames
        embed = model.pos + model.token_type(model.type_ids)  # (T, C)
        h_token = torch.where(drop_h[:, None, None], model.null_h, model.h_in(h)[:, None])
        context_tokens = torch.where(
            drop_context[:, None, None], model.null_context, model.frame_in(context.transpose(1, 2))
        )
        self.prefix = torch.cat([h_token, context_tokens], dim=1) + embed[:-P]  # (B, 1 + context, C)
        self.noisy_embed = embed[-P:] + model.frame_in.bias  # (P, C)
        c = model.time(times)  # (S, C)
        per_block = []
        for block in model.blocks:
            shift1, scale1, gate1, shift2, scale2, gate2 = block.ada(c).chunk(6, dim=1)  # 6 x (S, C)
            rows = (shift1, 1 + scale1, gate1, shift2, 1 + scale2, gate2)
            per_block.append(list(zip(*(row.float().unbind(0) for row in rows), strict=True)))
        self.block_modulation = [list(step) for step in zip(*per_block, strict=True)]
        """Per step, per block: shift, 1 + scale and gate of both branches, each (C,), float32: under
        autocast they come out of `ada` in bf16, and `addcmul` (autocast's "promote" list) would cast
        them to float32 again at every step."""
        shift, scale = model.final.ada(c).chunk(2, dim=1)
        self.final_modulation = list(zip(shift.float().unbind(0), (1 + scale).float().unbind(0), strict=True))

    def __call__(self, step: int, x_t: Tensor) -> Tensor:
        """v (B, D, P) for the noisy frames x_t (B, D, P) at times[step]."""
        model, P = self.model, self.model.config.patch_frames
        noisy = F.linear(x_t.transpose(1, 2), model.frame_in.weight) + self.noisy_embed  # (B, P, C)
        x = torch.cat([self.prefix, noisy], dim=1)  # (B, T, C)
        B, T, C = x.shape
        last = len(model.blocks) - 1
        for i, (block, (shift1, scale1, gate1, shift2, scale2, gate2)) in enumerate(
            zip(model.blocks, self.block_modulation[step], strict=True)
        ):
            attn, mlp = block.attn, block.mlp
            y = torch.addcmul(shift1, F.layer_norm(x, (C,), eps=1e-6), scale1)
            qkv = F.linear(y, attn.qkv.weight, attn.qkv.bias).view(B, T, 3, attn.n_heads, -1)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, nh, T, hs)
            if i == last:
                # Only the noisy frames' outputs are read (the final layer's velocity), and past the
                # attention every operation is per token: the last block's queries, projection and
                # MLP run on those P tokens alone, while its keys and values still cover all T.
                x, q = x[:, -P:], q[:, :, -P:]
            y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, x.shape[1], C)
            x = torch.addcmul(x, gate1, F.linear(y, attn.proj.weight, attn.proj.bias))
            y = torch.addcmul(shift2, F.layer_norm(x, (C,), eps=1e-6), scale2)
            hidden = F.gelu(F.linear(y, mlp[0].weight, mlp[0].bias), approximate="tanh")
            x = torch.addcmul(x, gate2, F.linear(hidden, mlp[2].weight, mlp[2].bias))
        shift, scale = self.final_modulation[step]
        y = torch.addcmul(shift, F.layer_norm(x, (C,), eps=1e-6), scale)
        return F.linear(y, model.final.out.weight, model.final.out.bias).transpose(1, 2)  # (B, D, P)


def flow_matching_sample(x1: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """One point of the conditional OT path per example: (x_t (B, D, P), t (B,), u (B, D, P)).

    x_t = (1 - t)·x0 + t·x1 and u = x1 - x0 with x0, t from `flow_matching_noise`.
    """
    x0, t = flow_matching_noise(x1, generator)
    x_t, u = flow_path(x1, x0, t)
    return x_t, t, u


def flow_matching_noise(x1: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Noise x0 ~ N(0, I) shaped like x1 (B, D, P) and a flow time t (B,), as x1's dtype and device.

    t is logit-normal, t = sigmoid(n), n ~ N(0, 1) (SD3, Esser et al. 2024 §3.1): it trains the middle
    of the path most, where the velocity is hardest to predict, instead of the ends, where it is nearly
    x1 - x_t or E[x1] - x0. Draws come from `generator` (on its own device) in the order x0, n.
    """
    B = x1.shape[0]
    x0 = torch.randn(x1.shape, generator=generator, device=generator.device).to(x1)
    t = torch.sigmoid(torch.randn(B, generator=generator, device=generator.device)).to(x1)
    return x0, t


def flow_path(x1: Tensor, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """The conditional OT path at t (B,): x_t = (1 - t)·x0 + t·x1 and its velocity u = x1 - x0."""
    x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * x1
    return x_t, x1 - x0

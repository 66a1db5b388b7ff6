"""ODE sampling of LocDiT's flow, one patch at a time (paper §3.3; §4.2: 20 steps per patch).

The solver knows only fn(t, x) -> velocity (MMAudio style); two-weight guidance is mixed in one
place, `guided_velocity`; the starting noise is drawn per (seed, patch index), so a stream gives the
same audio however it is chunked or batched with other streams. Time runs from t = 0 (noise) to
t = 1 (data), the convention of `locdit`.
"""

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from swansphere.models.cuda_graphs import capture
from swansphere.models.locdit import LocDiT, PatchVelocity


class ConditionalVelocity(Protocol):
    """What guidance needs of a model: LocDiT's forward (null embeddings switched by the masks)."""

    def __call__(
        self,
        x_t: Tensor,
        t: Tensor,
        h: Tensor,
        context: Tensor,
        drop_h: Tensor | None = None,
        drop_context: Tensor | None = None,
    ) -> Tensor: ...


def cosine_time_grid(steps: int) -> Tensor:
    """Flow times t_k = 1 - cos(π/2 · k/steps), k = 0..steps: (steps + 1,) float32 from 0 to 1.

    The steps are smallest at the noise end (t = 0, first step ≈ (π/4/steps)², 0.003 at 20 steps)
    and largest at the data end (≈ π/2/steps, 0.078 at 20 steps). Near the noise end the velocity
    turns from "towards the mean of all patches that fit h" to "towards one of them", and guidance
    with weights above 1 bends the path most there; a wrong turn early is carried through every later
    step. Near the data end the path of a sample that has committed is nearly straight, so long steps
    cost little.
    """
    if steps < 1:
        raise ValueError(f"cosine_time_grid: steps must be >= 1, got {steps}")
    k = torch.arange(steps + 1, dtype=torch.float64)
    grid = 1.0 - torch.cos(0.5 * math.pi * k / steps)
    grid[-1] = 1.0  # cos(π/2) is 6e-17 in float64, not 0
    return grid.float()


def euler(fn: Callable[[Tensor, Tensor], Tensor], x0: Tensor, grid: Tensor) -> Tensor:
    """Integrate dx/dt = fn(t, x) from grid[0] to grid[-1] with explicit Euler steps; t is 0-d."""
    if grid.ndim != 1 or len(grid) < 2:
        raise ValueError(f"euler: grid must be 1-D with >= 2 times, got shape {tuple(grid.shape)}")
    grid = grid.to(device=x0.device, dtype=x0.dtype)
    x = x0
    for t, t_next in itertools.pairwise(grid):
        x = x + (t_next - t) * fn(t, x)
    return x


@dataclass(frozen=True)
class Guidance:
    """Weights of two-weight classifier-free guidance (see `guided_velocity`).

    Defaults: h_weight 2.0, a moderate push towards h_t, which carries what the video and text say
    (content and direction); context_weight 1.0, the plain boundary context, because pushing harder
    towards the preceding patches makes the patch copy them. 1.0 and 1.0 is plain conditional
    sampling with one model evaluation per step.
    """

    h_weight: float = 2.0
    """w_h: strength of h_t against the same context without h_t; 0 ignores h_t."""
    context_weight: float = 1.0
    """w_c: strength of the boundary context against neither condition; 0 ignores the context."""

    def __post_init__(self) -> None:
        for name, weight in (("h_weight", self.h_weight), ("context_weight", self.context_weight)):
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"Guidance: {name} must be a finite number >= 0, got {weight}")


DEFAULT_GUIDANCE = Guidance()
MAX_GUIDANCE = 20.0
"""Guidance weights above this only produce noise (or overflow: 1e308 gives NaN audio)."""


def guidance_terms(guidance: Guidance) -> list[tuple[float, bool, bool]]:
    """(coefficient, drop_h, drop_context) of each velocity `guided_velocity` mixes; zero ones left out
    (never all: the coefficients sum to 1)."""
    w_h, w_c = guidance.h_weight, guidance.context_weight
    terms = [(1.0 - w_c, True, True), (w_c - w_h, True, False), (w_h, False, False)]
    return [term for term in terms if term[0] != 0.0]


def guided_velocity(
    model: ConditionalVelocity, x: Tensor, t: Tensor, h: Tensor, context: Tensor, guidance: Guidance
) -> Tensor:
    """Two-weight guided velocity for x (B, D, P) at times t (B,):

        v = v(∅h, ∅c) + w_c·(v(∅h, c) − v(∅h, ∅c)) + w_h·(v(h, c) − v(∅h, c))
          = (1 − w_c)·v(∅h, ∅c) + (w_c − w_h)·v(∅h, c) + w_h·v(h, c),

    with ∅ the learned null embedding. Only the terms with a non-zero coefficient are evaluated, all
    in ONE batched forward: w_h = w_c = 1 is exactly the conditional velocity v(h, c) in one
    evaluation; the defaults (2, 1) need two.
    """
    terms = guidance_terms(guidance)
    n, B = len(terms), x.shape[0]
    drop_h = torch.tensor([d for _, d, _ in terms], device=x.device).repeat_interleave(B)  # (n·B,)
    drop_context = torch.tensor([d for _, _, d in terms], device=x.device).repeat_interleave(B)
    v = model(x.repeat(n, 1, 1), t.repeat(n), h.repeat(n, 1), context.repeat(n, 1, 1), drop_h, drop_context)
    return sum(coef * v_i for (coef, _, _), v_i in zip(terms, v.chunk(n), strict=True))


def noise_seed(seed: int, patch_index: int) -> int:
    """Seed of patch `patch_index` of stream `seed`: (seed · 1_000_003 + patch_index) mod 2**63.

    1_000_003 is prime; two (seed, index) pairs collide only when a stream has over a million patches
    (51 hours of audio). Python integers do not overflow, and the modulus keeps the value a valid
    torch seed for any int seed, negative included.
    """
    return (seed * 1_000_003 + patch_index) % 2**63


def patch_noise(
    seed: int, patch_index: int, shape: Sequence[int], dtype: torch.dtype = torch.float32
) -> Tensor:
    """Starting noise of one patch of one stream, e.g. shape (D, P), on the CPU.

    A fresh CPU generator per (seed, patch_index), drawn in float32 then cast, so the values depend on
    nothing else: not on earlier patches, the batch, the device or the dtype. Move it to the model.
    """
    if patch_index < 0:
        raise ValueError(f"patch_noise: patch_index must be >= 0, got {patch_index}")
    generator = torch.Generator().manual_seed(noise_seed(seed, patch_index))
    return torch.randn(tuple(shape), generator=generator).to(dtype)


def batch_patch_noise(
    seeds: Sequence[int],
    patch_index: int | Sequence[int],
    shape: Sequence[int],
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Noise for a batch of streams (B, *shape); patch_index is shared or one per stream, because
    streams batched together in a server are usually at different patches."""
    indices = [patch_index] * len(seeds) if isinstance(patch_index, int) else list(patch_index)
    if len(indices) != len(seeds):
        raise ValueError(f"batch_patch_noise: {len(seeds)} seeds but {len(indices)} patch indices")
    return torch.stack([patch_noise(s, i, shape, dtype) for s, i in zip(seeds, indices, strict=True)])


@dataclass(frozen=True)
class SamplingPlan:
    """What `sample_patch` needs besides the inputs, as device tensors made before the loop: building
    them copies from the host, which a CUDA graph cannot capture (see `GraphedSampler`)."""

    n_terms: int
    """Guidance terms stacked into one batch."""
    drop_h: Tensor
    """(n·B,) bool: which rows get the null h."""
    drop_context: Tensor
    """(n·B,) bool: which rows get the null context."""
    weights: Tensor
    """(n, 1, 1, 1) guidance coefficients."""
    times: Tensor
    """(steps,) flow time at the start of each step."""
    step_sizes: tuple[float, ...]
    """Euler step sizes, as Python numbers so the loop never reads a device value."""

    @classmethod
    def build(
        cls, batch: int, steps: int, guidance: Guidance, device: torch.device, dtype: torch.dtype
    ) -> "SamplingPlan":
        terms = guidance_terms(guidance)
        grid = cosine_time_grid(steps)
        return cls(
            n_terms=len(terms),
            drop_h=torch.tensor([d for _, d, _ in terms], device=device).repeat_interleave(batch),
            drop_context=torch.tensor([d for _, _, d in terms], device=device).repeat_interleave(batch),
            weights=torch.tensor([c for c, _, _ in terms], device=device, dtype=dtype).view(-1, 1, 1, 1),
            times=grid[:-1].to(device),
            step_sizes=tuple((grid[1:] - grid[:-1]).tolist()),
        )


@torch.no_grad()
def sample_patch(
    model: LocDiT,
    h: Tensor,
    context: Tensor,
    noise: Tensor,
    steps: int = 20,
    guidance: Guidance = DEFAULT_GUIDANCE,
) -> Tensor:
    """Latents of one patch z (B, D, P) from noise (B, D, P) at t = 0, given h_t (B, cond_dim) and the
    boundary context (B, D, 8): `steps` Euler steps on the cosine grid with guided velocities.

    The same integration as `euler` over `guided_velocity`, with the work that is equal at every step
    done once (`locdit.PatchVelocity`) and the guidance terms stacked into one batch once. No value
    goes back to the host inside the loop, so on a GPU the steps queue without waiting.
    """
    plan = SamplingPlan.build(noise.shape[0], steps, guidance, noise.device, noise.dtype)
    return integrate_patch(model, h, context, noise, plan)


def integrate_patch(model: LocDiT, h: Tensor, context: Tensor, noise: Tensor, plan: SamplingPlan) -> Tensor:
    """The Euler loop of `sample_patch`: device operations only (capturable in a CUDA graph)."""
    n = plan.n_terms
    velocity = PatchVelocity(
        model, h.repeat(n, 1), context.repeat(n, 1, 1), plan.drop_h, plan.drop_context, plan.times
    )
    x = noise
    for step, dt in enumerate(plan.step_sizes):
        v = velocity(step, x.repeat(n, 1, 1)).view(n, *x.shape)  # (n, B, D, P)
        x = torch.add(x, (plan.weights * v).sum(dim=0), alpha=dt)
    return x


class GraphedSampler:
    """`sample_patch` on a GPU, replayed as CUDA graphs: one launch per patch instead of thousands of
    kernels (20 steps of a 15-layer DiT), which at batch sizes of a few streams take longer to launch
    than to run. One graph per (batch rounded up to a power of two, steps, guidance); padding
    rows compute on stale inputs and are dropped. Optionally under autocast (bf16), with the
    autocast weight cache off as graph capture requires."""

    def __init__(self, model: LocDiT, autocast: torch.dtype | None = None):
        self.model = model
        self.autocast = autocast
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, dict[str, Tensor], Tensor]] = {}
        self._pool: tuple | None = None

    def __call__(self, h: Tensor, context: Tensor, noise: Tensor, steps: int, guidance: Guidance) -> Tensor:
        """Same arguments as `sample_patch`; returns z (B, D, P) float32, valid until the next call."""
        batch = noise.shape[0]
        size = 1 << (batch - 1).bit_length()
        key = (size, steps, guidance)
        if key not in self._graphs:
            self._graphs[key] = self._capture(size, steps, guidance, h, context, noise)
        graph, inputs, output = self._graphs[key]
        for name, value in (("h", h), ("context", context), ("noise", noise)):
            inputs[name][:batch].copy_(value)
        graph.replay()
        return output[:batch]

    def _capture(
        self, size: int, steps: int, guidance: Guidance, h: Tensor, context: Tensor, noise: Tensor
    ) -> tuple[torch.cuda.CUDAGraph, dict[str, Tensor], Tensor]:
        inputs = {
            name: value.new_zeros(size, *value.shape[1:])
            for name, value in (("h", h), ("context", context), ("noise", noise))
        }
        plan = SamplingPlan.build(size, steps, guidance, noise.device, noise.dtype)

        @torch.no_grad()
        def run() -> Tensor:
            dtype, enabled = self.autocast or torch.bfloat16, self.autocast is not None
            with torch.autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=False):
                z = integrate_patch(self.model, inputs["h"], inputs["context"], inputs["noise"], plan)
            return z.float()

        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph, output = capture(run, self._pool)
        return graph, inputs, output

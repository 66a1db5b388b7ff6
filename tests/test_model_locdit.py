"""LocDiT (paper §3.3) and its sampler (§4.2: 20 flow-matching steps per patch), tiny preset on CPU."""

import itertools
import math

import pytest
import torch
from helpers_model import random_locdit

from swansphere.models.locdit import LocDiT, LocDiTConfig, flow_matching_sample
from swansphere.models.sampler import (
    Guidance,
    batch_patch_noise,
    cosine_time_grid,
    euler,
    guided_velocity,
    patch_noise,
    sample_patch,
)

CFG = LocDiTConfig.tiny()
D, P, K = CFG.latent_dim, CFG.patch_frames, CFG.context_frames


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: one thread is faster than two fighting over busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def inputs(B: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, P, generator=g)
    t = torch.rand(B, generator=g)
    h = torch.randn(B, CFG.cond_dim, generator=g)
    context = torch.randn(B, D, K, generator=g)
    return x, t, h, context


def test_config_validation_and_shapes():
    with pytest.raises(ValueError, match="divide"):
        LocDiTConfig(d_model=64, n_layers=2, n_heads=5, latent_dim=16, cond_dim=64)
    with pytest.raises(ValueError, match="p_drop_h"):
        LocDiTConfig(d_model=64, n_layers=2, n_heads=4, latent_dim=16, cond_dim=64, p_drop_h=1.0)
    with pytest.raises(ValueError, match="h_weight"):
        Guidance(h_weight=-1.0)
    model = random_locdit()
    x, t, h, context = inputs(3)
    assert CFG.seq_len == 1 + 8 + 4
    assert model(x, t, h, context).shape == (3, D, P)
    with pytest.raises(ValueError, match="context"):
        model(x, t, h, context[..., :4])


def test_loss_is_mse_of_the_velocity_on_the_noisy_frames_only():
    model = random_locdit()
    x1, _, h, context = inputs(5)
    loss = model.loss(x1, h, context, torch.Generator().manual_seed(7))
    # Same draws again, in the documented order: the OT path point, then the dropout masks.
    g = torch.Generator().manual_seed(7)
    x_t, t, u = flow_matching_sample(x1, g)
    drop_h, drop_context = model.guidance_dropout(5, g)
    v = model(x_t, t, h, context, drop_h, drop_context)
    assert v.shape == (5, D, P)  # 4 velocity frames: the context slots have no output at all
    x0 = torch.randn(x1.shape, generator=torch.Generator().manual_seed(7))  # the first draw
    assert torch.equal(u, x1 - x0)
    assert torch.allclose(x_t, (1 - t[:, None, None]) * x0 + t[:, None, None] * x1)
    assert torch.allclose(loss, ((v - u) ** 2).mean(), atol=1e-6)


def test_attention_is_bidirectional_inside_the_patch_and_sees_the_context():
    model = random_locdit()
    x, t, h, context = inputs(1)
    base = model(x, t, h, context)
    late = x.clone()
    late[..., -1] += 1.0  # the last frame of the patch
    assert (model(late, t, h, context)[..., 0] - base[..., 0]).abs().max() > 1e-3  # reaches frame 0
    early = x.clone()
    early[..., 0] += 1.0
    assert (model(early, t, h, context)[..., -1] - base[..., -1]).abs().max() > 1e-3  # and back
    assert (model(x, t, h, context + 1.0) - base).abs().max() > 1e-3


def test_dropout_masks_swap_in_the_null_embeddings():
    model = random_locdit()
    x, t, h, context = inputs(2)
    h2, context2 = torch.randn_like(h), torch.randn_like(context)
    yes, no = torch.ones(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool)
    assert torch.equal(model(x, t, h, context, drop_h=yes), model(x, t, h2, context, drop_h=yes))
    assert not torch.allclose(model(x, t, h, context), model(x, t, h2, context))
    dropped = model(x, t, h, context, drop_context=yes)
    assert torch.equal(dropped, model(x, t, h, context2, drop_context=yes))
    assert torch.equal(model(x, t, h, context, drop_h=no, drop_context=no), model(x, t, h, context))
    # "Context dropped" is the learned null, not the zeros that mean "start of the stream".
    assert not torch.allclose(dropped, model(x, t, h, torch.zeros_like(context)))
    # Masks act per example: dropping h of example 0 leaves example 1 alone.
    mixed = model(x, t, h, context, drop_h=torch.tensor([True, False]))
    assert torch.equal(mixed[0], model(x, t, h2, context, drop_h=yes)[0])
    assert torch.allclose(mixed[1], model(x, t, h, context)[1], atol=1e-6)


def test_guidance_one_one_is_the_conditional_velocity_and_the_formula_holds():
    model = random_locdit()
    x, t, h, context = inputs(3)
    assert torch.equal(guided_velocity(model, x, t, h, context, Guidance(1.0, 1.0)), model(x, t, h, context))

    calls = []

    def fake(x_t, t, h, context, drop_h=None, drop_context=None):
        """v(h, c) = 3, v(∅h, c) = 5, v(∅h, ∅c) = 11, whatever x is."""
        calls.append(len(x_t))
        value = torch.where(drop_h, torch.where(drop_context, 11.0, 5.0), 3.0)  # (n·B,)
        return value[:, None, None].expand_as(x_t)

    for w_h, w_c in [(2.0, 1.0), (3.0, 0.5), (0.0, 2.0), (1.0, 1.0)]:
        calls.clear()
        v = guided_velocity(fake, x, t, h, context, Guidance(w_h, w_c))
        expected = 11.0 + w_c * (5.0 - 11.0) + w_h * (3.0 - 5.0)
        assert torch.allclose(v, torch.full_like(x, expected)), (w_h, w_c)
        n_terms = sum(coef != 0 for coef in (1 - w_c, w_c - w_h, w_h))
        assert calls == [n_terms * len(x)]  # one batched forward with only the terms needed


def test_guided_batch_matches_separate_evaluations():
    model = random_locdit()
    x, t, h, context = inputs(2)
    w_h, w_c = 2.5, 1.5
    yes = torch.ones(2, dtype=torch.bool)
    v_full = model(x, t, h, context)
    v_ctx = model(x, t, h, context, drop_h=yes)
    v_none = model(x, t, h, context, drop_h=yes, drop_context=yes)
    expected = v_none + w_c * (v_ctx - v_none) + w_h * (v_full - v_ctx)
    assert torch.allclose(
        guided_velocity(model, x, t, h, context, Guidance(w_h, w_c)), expected, rtol=1e-5, atol=1e-4
    )


def test_an_autocast_copy_samples_what_autocast_does_bit_for_bit():
    """`LocDiT.autocast_copy`: the GPU path's weights cast once instead of at every step, same latents."""
    model = random_locdit()
    _, _, h, context = inputs(3)
    noise = batch_patch_noise([1, 2, 3], [0, 5, 9], (D, P))
    copy = model.autocast_copy(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = sample_patch(model, h, context, noise, steps=4)
        got = sample_patch(copy, h, context, noise, steps=4)
    assert torch.equal(got, expected)
    assert copy.blocks[0].attn.qkv.weight.dtype == copy.blocks[0].attn.qkv.bias.dtype == torch.bfloat16
    assert copy.frame_in.bias.dtype == torch.float32
    assert model.blocks[0].attn.qkv.weight.dtype == torch.float32, "the model itself stays as it was"


def test_cosine_grid_endpoints_and_density():
    grid = cosine_time_grid(20)
    assert grid.shape == (21,) and grid.dtype == torch.float32
    assert grid[0].item() == 0.0 and grid[-1].item() == 1.0
    steps = grid.diff()
    assert (steps > 0).all() and (steps.diff() > 0).all()  # strictly rising, denser at the noise end
    assert math.isclose(grid[10].item(), 1 - math.cos(math.pi / 4), rel_tol=1e-6)
    with pytest.raises(ValueError):
        cosine_time_grid(0)


def test_euler_converges_on_a_linear_ode():
    a = torch.tensor([-1.5, 0.7, 2.0])
    x0 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    exact = x0 * torch.exp(a.double())
    errors = [
        (euler(lambda t, x: a * x, x0, cosine_time_grid(n)) - exact).abs().max().item()
        for n in (5, 10, 20, 40)
    ]
    print("euler max error at 5/10/20/40 steps:", [f"{e:.2e}" for e in errors])
    assert all(e1 < e0 for e0, e1 in itertools.pairwise(errors))
    assert errors[-1] < errors[0] / 5  # first order: about half per doubling


def test_patch_noise_is_seeded_per_patch_whatever_the_chunking():
    shape = (D, P)
    assert torch.equal(patch_noise(42, 3, shape), patch_noise(42, 3, shape))
    assert not torch.allclose(patch_noise(42, 3, shape), patch_noise(42, 4, shape))
    assert not torch.allclose(patch_noise(42, 3, shape), patch_noise(43, 3, shape))
    in_one_go = torch.stack([patch_noise(42, k, shape) for k in range(10)])
    in_chunks = torch.cat(
        [
            torch.stack([patch_noise(42, k, shape) for k in chunk])
            for chunk in ([7, 8, 9], [0, 1, 2, 3, 4, 5, 6])
        ]
    )
    assert torch.equal(in_one_go, torch.cat([in_chunks[3:], in_chunks[:3]]))
    batched = torch.stack([batch_patch_noise([7, 42, 1_000_003], k, shape)[1] for k in range(10)])
    assert torch.equal(in_one_go, batched)  # other streams in the batch change nothing
    per_stream = batch_patch_noise([42, 7], [5, 0], shape)  # streams at different patches
    assert torch.equal(per_stream[0], in_one_go[5]) and torch.equal(per_stream[1], patch_noise(7, 0, shape))
    assert torch.equal(patch_noise(42, 3, shape, torch.bfloat16), in_one_go[3].bfloat16())


def test_locdit_overfits_a_tiny_batch_and_samples_back_to_it():
    torch.manual_seed(0)
    model = LocDiT(CFG)
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(4, D, P, generator=g)  # 4 fixed patches, each with its own h and context
    h = torch.randn(4, CFG.cond_dim, generator=g)
    context = torch.randn(4, D, K, generator=g)

    def held_out_loss() -> float:
        with torch.no_grad():
            return model.loss(
                x1.repeat(64, 1, 1),
                h.repeat(64, 1),
                context.repeat(64, 1, 1),
                torch.Generator().manual_seed(123),
            ).item()

    before = held_out_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    train = torch.Generator().manual_seed(2)
    for _ in range(300):
        loss = model.loss(x1.repeat(8, 1, 1), h.repeat(8, 1), context.repeat(8, 1, 1), train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_out_loss()
    print(f"flow-matching loss {before:.3f} -> {after:.4f}: {before / after:.1f}x lower")
    assert before / after >= 10

    noise = batch_patch_noise([0, 1, 2, 3], 0, (D, P))
    z = sample_patch(model, h, context, noise, steps=20, guidance=Guidance(1.0, 1.0))
    error = ((z - x1).norm() / x1.norm()).item()
    start = ((noise - x1).norm() / x1.norm()).item()
    print(f"20-step sample relative L2 error {error:.3f} (noise itself: {start:.3f})")
    assert error < 0.25
    nearest = torch.cdist(z.flatten(1), x1.flatten(1)).argmin(dim=1)
    assert torch.equal(nearest, torch.arange(4))  # each h/context lands on its own patch


def test_paper_preset_size():
    with torch.device("meta"):
        model = LocDiT(LocDiTConfig.paper())
    n = sum(p.numel() for p in model.parameters())
    print(f"LocDiT paper preset: {n / 1e6:.1f} M parameters")
    assert 0.25e9 < n < 0.30e9

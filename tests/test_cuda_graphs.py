"""The GPU path (issue 7): LocDiT's 20-step loop and the LM step replayed as CUDA graphs
(`models/cuda_graphs.py`) give what the eager code gives, a patch's replays never wait on the host,
and the video encoder's stream states on the device give the whole clip's tokens.
Every test needs a CUDA device: CI skips them, a lent GPU runs them first in `ml/bench_gpu_lease.sh`.
They use only torch and the model code (no servers, no conftest), so that script runs them with
`pytest --noconftest` on a bare GPU image."""

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from helpers_model import random_locdit, tiny_model

from swansphere.models.locdit import LocDiT
from swansphere.models.sampler import (
    DEFAULT_GUIDANCE,
    GraphedSampler,
    SamplingPlan,
    integrate_patch,
    sample_patch,
)
from swansphere.models.spatial_lm import GraphedStep, KVCache, SpatialLM, SpatialLMConfig
from swansphere.serving.backend import FrameWindow, LMStep, TorchBackend

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")

STEPS = 8


@contextmanager
def no_host_sync() -> Iterator[None]:
    """Any CUDA call in the block that makes the host wait for the device raises."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def locdit_inputs(model: LocDiT, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """h (B, cond_dim), boundary context (B, D, K), noise (B, D, P) on the GPU."""
    c = model.config
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(batch, c.cond_dim, generator=g)
    context = torch.randn(batch, c.latent_dim, c.context_frames, generator=g)
    noise = torch.randn(batch, c.latent_dim, c.patch_frames, generator=g)
    return h.cuda(), context.cuda(), noise.cuda()


def random_lm(seed: int = 0) -> SpatialLM:
    torch.manual_seed(seed)
    return SpatialLM(dataclasses.replace(SpatialLMConfig.tiny(), max_patches=4)).cuda().eval()


def lm_inputs(batch: int, patches: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c = SpatialLMConfig.tiny()
    text_mask = torch.ones(batch, 5, dtype=torch.bool)
    text_mask[0, 3:] = False
    x = {
        "video": torch.randn(batch, patches, c.patch_frames, c.video_dim, generator=g),
        "history": torch.randn(batch, patches, c.d_model, generator=g),
        "text": torch.randn(batch, 5, c.text_dim, generator=g),
        "text_mask": text_mask,
    }
    return {name: value.cuda() for name, value in x.items()}


def test_graphed_sampler_matches_sample_patch_as_the_batch_changes():
    model = random_locdit().cuda().eval()
    graphed = GraphedSampler(model)
    for call, batch in enumerate([1, 3, 2, 4, 1, 3]):
        h, context, noise = locdit_inputs(model, batch, seed=call)
        expected = sample_patch(model, h, context, noise, STEPS, DEFAULT_GUIDANCE)
        got = graphed(h, context, noise, STEPS, DEFAULT_GUIDANCE)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert sorted(key[0] for key in graphed._graphs) == [1, 2, 4]  # batches 3 and 4 share a graph


def test_graphed_steps_match_eager_steps_as_batches_change_and_the_cache_grows():
    lm = random_lm()
    x = lm_inputs(3, 6)
    eager, graphed_cache = (lm.new_cache(2, x["text"][:2], x["text_mask"][:2]) for _ in range(2))
    graphed = GraphedStep(lm)
    present = torch.tensor([True, False, True], device="cuda")
    for t, rows in enumerate([[0], [0, 1], [1, 0], [0, 1, 2], [2], [1, 2, 0]]):
        if t == 3:  # a third stream joins: the cache is replaced, the graphs are captured again
            extra = [lm.new_cache(1, x["text"][2:], x["text_mask"][2:]) for _ in range(2)]
            eager, graphed_cache = KVCache.cat([eager, extra[0]]), KVCache.cat([graphed_cache, extra[1]])
        index = torch.tensor(rows, device="cuda")
        video, history = x["video"][index, t], x["history"][index, t]
        expected = lm.step(video, history, eager, present[index], index)
        got = graphed(video, history, graphed_cache, present[index], index)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert graphed_cache.positions.tolist() == eager.positions.tolist()


def test_a_patch_never_waits_on_the_host():
    """Issue 7's "no host synchronisation inside a patch": the LM step and LocDiT's whole loop, graphed
    (what `make bench-gpu` runs) and eager given a plan made beforehand, queue on the device alone."""
    lm, model = random_lm(), random_locdit().cuda().eval()
    x = lm_inputs(2, 3)
    cache = lm.new_cache(2, x["text"], x["text_mask"])
    present, rows = torch.tensor([True, False], device="cuda"), torch.tensor([1, 0], device="cuda")
    step, sampler = GraphedStep(lm), GraphedSampler(model)
    h, context, noise = locdit_inputs(model, 2, seed=0)
    plan = SamplingPlan.build(2, STEPS, DEFAULT_GUIDANCE, noise.device, noise.dtype)
    step(x["video"][rows, 0], x["history"][rows, 0], cache, present, rows)  # captures
    sampler(h, context, noise, STEPS, DEFAULT_GUIDANCE)
    with no_host_sync():
        step(x["video"][rows, 1], x["history"][rows, 1], cache, present, rows)
        sampler(h, context, noise, STEPS, DEFAULT_GUIDANCE)
        lm.step(x["video"][rows, 2], x["history"][rows, 2], cache, present, rows)
        integrate_patch(model, h, context, noise, plan)


@pytest.mark.parametrize("autocast", [None, torch.bfloat16], ids=["float32", "bfloat16"])
def test_a_backend_with_cuda_graphs_generates_what_the_eager_backend_does(autocast):
    """`TorchBackend(cuda_graphs=True)` as the GPU bench runs it: streams joining and leaving, LM rows
    stepped together, LocDiT batched; bf16 compared with bf16 eager."""
    model = tiny_model().cuda()
    eager = TorchBackend(model, autocast=autocast)
    graphed = TorchBackend(model, autocast=autocast, cuda_graphs=True)
    c = model.config
    P, D, Dv, K = c.patch_frames, c.vae.latent_dim, c.lm.video_dim, c.locdit.context_frames
    rng = np.random.default_rng(0)
    video = rng.standard_normal((3, 6, P, Dv)).astype(np.float32)
    latents = rng.standard_normal((3, 6, D, P)).astype(np.float32)
    texts = ["rain on a tin roof", None, "a dog barks to the left"]
    tolerance = 1e-4 if autocast is None else 3e-2
    for call in range(6):
        streams = [i for i in range(3) if call >= i]  # stream i joins at call i
        steps = [
            LMStep(f"s{i}", t, video[i, t : t + 1], latents[i, max(0, t - 1) : t], texts[i])
            for i, t in ((i, call - i) for i in streams)
        ]
        h_eager, h_graphed = eager.spatial_lm(steps), graphed.spatial_lm(steps)
        for a, b in zip(h_eager, h_graphed, strict=True):
            assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
            np.testing.assert_allclose(b, a, atol=tolerance, rtol=tolerance)
        h = np.concatenate(h_eager)
        context = rng.standard_normal((len(streams), D, K)).astype(np.float32)
        args = (h, context, [7 + i for i in streams], [call - i for i in streams], STEPS, DEFAULT_GUIDANCE)
        np.testing.assert_allclose(graphed.locdit(*args), eager.locdit(*args), atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("autocast", [None, torch.bfloat16], ids=["float32", "bfloat16"])
def test_the_video_encoder_goes_on_from_its_gpu_state_as_the_whole_clip_does(autocast):
    """The GPU backend's video-encoder states (`FrameWindow.resume`, kept in the autocast dtype on
    the device): two streams' new frames alone, batched, give the tokens of their whole clips."""
    model = tiny_model().cuda()
    backend = TorchBackend(model, autocast=autocast)
    video = model.config.svac.video
    clips = np.random.default_rng(2).integers(0, 256, (2, 12, 3, *video.frame_size), np.uint8)
    whole = np.stack(TorchBackend(model, autocast=autocast).video_encoder(clips))
    tokens, done = [], 0
    for n in (2, 3, 1, 6):
        windows = [FrameWindow(name, done, resume=done > 0) for name in ("a", "b")]
        out = backend.video_encoder(clips[:, done : done + n], windows)
        assert all(isinstance(t, np.ndarray) for t in out)
        tokens.append(np.stack(out))
        done += n
    tolerance = 1e-4 if autocast is None else 3e-2
    np.testing.assert_allclose(np.concatenate(tokens, axis=1), whole, atol=tolerance, rtol=tolerance)

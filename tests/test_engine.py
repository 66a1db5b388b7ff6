"""The composed model and the streaming engine on the tiny preset (issue: the SwanSphere network)."""

import numpy as np
import pytest
import torch

from swansphere.checkpoint import load_checkpoint, save_checkpoint
from swansphere.engine import GenerationInput, GenerationSettings, StreamingGenerator, generate, generate_many
from swansphere.errors import InputError
from swansphere.models.swansphere import SwanSphere, SwanSphereConfig

PATCH = 8192


FAST = {"steps": 5}
"""Few solver steps: these tests are about the engine's bookkeeping, not sample quality."""


@pytest.fixture(scope="module")
def model() -> SwanSphere:
    """Tiny model with its zero-initialised layers (DiT's adaLN-Zero) randomised, so that untrained
    outputs still depend on video, text and seed and the tests below can see a difference."""
    torch.manual_seed(0)
    model = SwanSphere(SwanSphereConfig.tiny()).eval()
    with torch.no_grad():
        for parameter in model.locdit.parameters():
            if not parameter.any():
                parameter.normal_(std=0.05)
    return model


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """2 s of random equirectangular video at 4 fps, already at the tiny model's 64x128."""
    return (np.random.default_rng(0).random((8, 64, 128, 3)) * 255).astype(np.uint8)


def stream(model: SwanSphere, frames: np.ndarray, sizes: list[int], **kwargs) -> list:
    generator = StreamingGenerator(model, **kwargs)
    chunks, start = [], 0
    for size in sizes:
        chunks += generator.push_frames(frames[start : start + size])
        start += size
    return chunks + generator.finish()


def test_streaming_equals_offline_however_the_video_is_chunked(model, frames):
    settings = GenerationSettings(seed=3, **FAST)
    offline = generate(model, frames, text="a bell on the left", settings=settings)
    for sizes in ([1] * 8, [5, 3]):
        chunks = stream(model, frames, sizes, text="a bell on the left", settings=settings)
        online = np.concatenate([c.audio for c in chunks], axis=-1)
        assert online.shape == offline.shape == (4, 2 * 44100)
        assert np.max(np.abs(online - offline)) <= 1e-5


def test_chunks_come_in_order_without_gaps_and_the_last_is_cut_to_the_video(model, frames):
    chunks = stream(model, frames, [1] * 8, settings=GenerationSettings(**FAST))
    assert [c.patch_index for c in chunks] == list(range(11))  # ceil(2 s · 44100 / 8192)
    assert [c.first_sample for c in chunks] == [i * PATCH for i in range(11)]
    assert all(c.audio.shape == (4, PATCH) and c.audio.dtype == np.float32 for c in chunks[:-1])
    assert chunks[-1].audio.shape == (4, 2 * 44100 - 10 * PATCH)


def test_a_patch_is_emitted_as_soon_as_its_video_frames_exist(model, frames):
    generator = StreamingGenerator(model, settings=GenerationSettings(**FAST))
    # Patch 0 covers 0-186 ms: frame 0 (t = 0) is its last needed frame, no look-ahead.
    assert [c.patch_index for c in generator.push_frames(frames[:1])] == [0]
    # Frame 1 (t = 0.25 s) completes patch 1 (latent frames 4-7 start at 186-325 ms; frame 1 for >= 250 ms).
    assert [c.patch_index for c in generator.push_frames(frames[1:2])] == [1]


def test_causality_later_video_leaves_earlier_chunks_bit_for_bit(model, frames):
    changed = frames.copy()
    changed[6:] = 255 - changed[6:]  # video from t = 1.5 s on differs
    first = stream(model, frames, [1] * 8, settings=GenerationSettings(seed=1, **FAST))
    second = stream(model, changed, [1] * 8, settings=GenerationSettings(seed=1, **FAST))
    # Patch t's last latent frame starts at (4t + 3)·2048/44100 s; it sees frames before 1.5 s for t <= 7.
    for a, b in zip(first[:8], second[:8], strict=True):
        assert np.array_equal(a.audio, b.audio), a.patch_index
    assert not np.array_equal(first[9].audio, second[9].audio)


def test_same_seed_same_audio_other_seed_other_audio(model, frames):
    a = generate(model, frames[:4], settings=GenerationSettings(seed=5, **FAST))
    b = generate(model, frames[:4], settings=GenerationSettings(seed=5, **FAST))
    c = generate(model, frames[:4], settings=GenerationSettings(seed=6, **FAST))
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_text_only_generation_takes_a_duration_and_the_text_matters(model):
    settings = GenerationSettings(**FAST)
    with_text = generate(model, None, text="a siren circles the listener", settings=settings, duration_s=1.5)
    without_text = generate(model, None, settings=settings, duration_s=1.5)
    assert with_text.shape == without_text.shape == (4, round(1.5 * 44100))
    assert not np.allclose(with_text, without_text)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frames": None}, "give video frames"),
        ({"duration_s": 2.0}, "not both"),
        ({"frames": np.zeros((2, 64, 100, 3), np.uint8)}, "equirectangular"),
    ],
)
def test_bad_generation_requests_are_input_errors(model, frames, kwargs, message):
    arguments = {"frames": frames, **kwargs}
    with pytest.raises(InputError, match=message):
        generate(model, **arguments)


def test_bad_settings_and_finished_streams_are_input_errors(model, frames):
    with pytest.raises(InputError, match="steps"):
        GenerationSettings(steps=0)
    generator = StreamingGenerator(model)
    generator.push_frames(frames[:2])
    generator.finish()
    with pytest.raises(InputError, match="finished"):
        generator.push_frames(frames[2:3])


def test_boundary_context_holds_the_two_previous_patches(model):
    z = torch.arange(2 * 16 * 12, dtype=torch.float32).reshape(2, 16, 12)  # (B, D, 3 patches)
    context = model.boundary_context(z).reshape(2, 3, 16, 8)  # (B, T, D, 8)
    assert torch.equal(context[:, 0], torch.zeros(2, 16, 8))
    assert torch.equal(context[:, 1], torch.cat([torch.zeros(2, 16, 4), z[..., 0:4]], dim=-1))
    assert torch.equal(context[:, 2], z[..., 0:8])


def test_the_composed_generator_overfits_a_tiny_batch():
    """LM + history + LocDiT trained end to end by teacher forcing on 2 clips of 4 patches."""
    torch.manual_seed(0)
    model = SwanSphere(SwanSphereConfig.tiny())
    z = torch.randn(2, 16, 16).repeat(8, 1, 1)  # (B, D, 4 patches): 2 clips, 8 copies for less noisy steps
    video = torch.randn(2, 16, 32).repeat(8, 1, 1)  # (B, L, Dv)
    params = [p for m in model.generator_modules().values() for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=3e-3)

    def evaluate() -> float:
        with torch.no_grad():
            return model.training_loss(z, video, None, None, torch.Generator().manual_seed(123)).item()

    before = evaluate()
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        optimizer.zero_grad()
        model.training_loss(z, video, None, None, generator).backward()
        optimizer.step()
    after = evaluate()
    print(f"composed generator flow-matching loss {before:.3f} -> {after:.4f} ({before / after:.1f}x)")
    assert before / after >= 10


def test_checkpoint_round_trip_gives_the_same_audio(model, frames, tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(model, path)
    loaded = load_checkpoint(path)
    assert loaded.config == model.config
    settings = GenerationSettings(**FAST)
    assert np.array_equal(
        generate(model, frames[:3], settings=settings), generate(loaded, frames[:3], settings=settings)
    )


@pytest.mark.servers
def test_checkpoint_loads_from_s3(model, frames, s3_bucket):
    uri = f"s3://{s3_bucket}/models/tiny.safetensors"
    save_checkpoint(model, uri)
    settings = GenerationSettings(**FAST)
    assert np.array_equal(
        generate(model, frames[:2], settings=settings),
        generate(load_checkpoint(uri), frames[:2], settings=settings),
    )


def test_a_file_that_is_not_a_checkpoint_is_an_input_error(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(InputError, match="not a safetensors file"):
        load_checkpoint(junk)
    with pytest.raises(InputError, match="no such file"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_many_inputs_run_as_concurrent_streams_and_each_equals_its_own_generation(model, frames):
    """`generate_many` batches streams in LocDiT and the decoder; each output stays its input's (its
    seed, its condition), up to the rounding of batched arithmetic."""
    inputs = [GenerationInput(frames[:6], settings=GenerationSettings(seed=s, **FAST)) for s in (1, 2)]
    inputs.append(
        GenerationInput(None, text="rain", settings=GenerationSettings(seed=3, **FAST), duration_s=1.0)
    )
    together = generate_many(model, inputs)
    for item, audio in zip(inputs, together, strict=True):
        alone = generate(model, item.frames, item.text, item.settings, item.duration_s)
        assert audio.shape == alone.shape
        assert np.max(np.abs(audio - alone)) <= 1e-4
    assert not np.allclose(together[0], together[1]), "different seeds, different audio"


def test_an_offline_clip_of_more_than_128_patches_comes_out_whole(model):
    """A session hands out at most 64 chunks per take; the engine takes until none is left."""
    video = np.zeros((100, 64, 128, 3), np.uint8)  # 25 s: 135 patches
    audio = generate(model, video, settings=GenerationSettings(steps=1))
    assert audio.shape == (4, 25 * 44100)


def test_an_input_needs_frames_or_a_duration_but_not_both(frames):
    with pytest.raises(InputError, match="give video frames, or a duration"):
        GenerationInput(None)
    with pytest.raises(InputError, match="not both"):
        GenerationInput(frames, duration_s=1.0)

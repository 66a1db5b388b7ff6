"""Spatial LM, history encoder and text encoder (paper §3.3) on the tiny preset."""

import dataclasses
import logging
import socket
import time

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

from swansphere import storage
from swansphere.errors import InputError
from swansphere.models.history import HistoryEncoder
from swansphere.models.spatial_lm import KVCache, SpatialLM, SpatialLMConfig
from swansphere.models.text_encoder import ByteTokenizer, TextEncoder

torch.set_num_threads(2)
LATENT_DIM = 16


def make_lm(seed: int = 0, **overrides) -> SpatialLM:
    torch.manual_seed(seed)
    return SpatialLM(dataclasses.replace(SpatialLMConfig.tiny(), **overrides)).eval()


def inputs(batch: int, patches: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    config = SpatialLMConfig.tiny()
    text_mask = torch.ones(batch, 5, dtype=torch.bool)
    text_mask[0, 3:] = False
    return {
        "video": torch.randn(batch, patches, config.patch_frames, config.video_dim, generator=g),
        "history": torch.randn(batch, patches, config.d_model, generator=g),
        "text": torch.randn(batch, 5, config.text_dim, generator=g),
        "text_mask": text_mask,
    }


# --- history encoder ---------------------------------------------------------------------------


def test_history_sequence_shifts_by_one_patch_and_starts_with_the_start_token():
    torch.manual_seed(0)
    encoder = HistoryEncoder(latent_dim=LATENT_DIM, d_model=64)
    z = torch.randn(2, LATENT_DIM, 5 * 4)
    history = encoder.sequence(z)
    assert history.shape == (2, 5, 64)
    assert torch.equal(history[:, 0], encoder(None, batch_size=2))
    for t in range(1, 5):
        previous = z[:, :, 4 * (t - 1) : 4 * t]  # (B, D, 4)
        torch.testing.assert_close(history[:, t], encoder(previous, batch_size=2))
    with pytest.raises(ValueError):
        encoder.sequence(torch.randn(2, LATENT_DIM, 6))


def test_zero_history_flag_ignores_the_latents():
    torch.manual_seed(0)
    encoder = HistoryEncoder(latent_dim=LATENT_DIM, d_model=64)
    a, b = torch.randn(2, 2, LATENT_DIM, 4)
    assert not torch.allclose(encoder(a, batch_size=2), encoder(b, batch_size=2))
    encoder.zero_history = True
    assert torch.equal(encoder(a, batch_size=2), encoder(b, batch_size=2))
    assert torch.equal(encoder(a, batch_size=2), encoder(torch.zeros_like(a), batch_size=2))
    z = torch.randn(2, LATENT_DIM, 12)
    assert torch.equal(encoder.sequence(z)[:, 1], encoder.sequence(-z)[:, 2])


# --- spatial LM ---------------------------------------------------------------------------------


def test_config_validation():
    with pytest.raises(ValueError):
        SpatialLMConfig(d_model=64, n_heads=5)
    with pytest.raises(ValueError):
        SpatialLMConfig(max_patches=0)
    with pytest.raises(ValueError):
        SpatialLMConfig(dropout=1.0)


def test_forward_shapes():
    lm = make_lm()
    x = inputs(3, 7)
    assert lm(**x).shape == (3, 7, 64)
    assert lm(None, x["history"]).shape == (3, 7, 64)


def test_forward_is_causal_bit_for_bit():
    lm = make_lm()
    x = inputs(2, 10)
    h = lm(**x)
    for t in (0, 4, 8):
        changed = dict(x, video=x["video"].clone(), history=x["history"].clone())
        changed["video"][:, t + 1 :] += 3.0
        changed["history"][:, t + 1 :] -= 2.0
        h_changed = lm(**changed)
        assert torch.equal(h[:, : t + 1], h_changed[:, : t + 1])
        assert not torch.allclose(h[:, t + 1 :], h_changed[:, t + 1 :])


def test_sliding_window_bounds_the_lookback():
    """2 layers, window 6: patch 0 reaches h_t for t <= 2·5 and no further."""
    lm = make_lm(max_patches=6)
    x = inputs(2, 14)
    changed = dict(x, video=x["video"].clone())
    changed["video"][:, 0] += 3.0
    h, h_changed = lm(**x), lm(**changed)
    assert not torch.allclose(h[:, 10], h_changed[:, 10])
    assert torch.equal(h[:, 11:], h_changed[:, 11:])


def test_streaming_steps_match_the_full_forward_past_the_window():
    lm = make_lm(max_patches=6, dropout=0.2)
    x = inputs(3, 15)
    video_present = torch.tensor([True, False, True])
    text_present = torch.tensor([True, True, False])
    h = lm(**x, video_present=video_present, text_present=text_present)
    cache = lm.new_cache(3, x["text"], x["text_mask"], text_present)
    steps = [lm.step(x["video"][:, t], x["history"][:, t], cache, video_present) for t in range(15)]
    error = (torch.stack(steps, dim=1) - h).abs().max().item()
    print(f"max |step - forward| over 15 patches, window 6: {error:.2e}")
    assert error < 1e-5
    assert cache.positions.tolist() == [15, 15, 15]
    assert all(k.shape[2] == 6 and v.shape[2] == 6 for k, v in cache.self_kv)


def test_rows_at_different_patches_step_together_as_they_step_alone():
    """The serving backend's case: streams that started at different times, with texts of different
    lengths (row 1 none), share one cache and one batched step; each row's h equals its stream
    stepped on its own, past the window too."""
    lm = make_lm(max_patches=6)
    x = inputs(3, 15)

    def cache_of(row: int) -> KVCache:
        if row == 1:
            return lm.new_cache(1)
        return lm.new_cache(1, x["text"][row : row + 1], x["text_mask"][row : row + 1])

    alone = []
    for row in range(3):
        cache = cache_of(row)
        alone.append(
            [lm.step(x["video"][row : row + 1, t], x["history"][row : row + 1, t], cache) for t in range(15)]
        )
    caches = [cache_of(row) for row in range(3)]
    for cache in caches:
        cache.pad_text(8)
    joined = KVCache.cat(caches)
    starts = [0, 4, 9]  # row r begins at step starts[r]
    for step in range(9 + 15):
        rows = [r for r in range(3) if 0 <= step - starts[r] < 15]
        if not rows:
            continue
        t = [step - starts[r] for r in rows]
        h = lm.step(
            torch.stack([x["video"][r, i] for r, i in zip(rows, t, strict=True)]),
            torch.stack([x["history"][r, i] for r, i in zip(rows, t, strict=True)]),
            joined,
            rows=torch.tensor(rows),
        )
        for j, (r, i) in enumerate(zip(rows, t, strict=True)):
            torch.testing.assert_close(h[j : j + 1], alone[r][i], atol=1e-5, rtol=1e-5)
    assert joined.positions.tolist() == [15, 15, 15]


def test_a_row_repeated_in_one_step_changes_nothing():
    """What `GraphedStep` pads a batch with: repeats of its first row compute and write exactly what
    that row does, so the padded step leaves the cache as the plain one and its first rows agree."""
    lm = make_lm(max_patches=4)
    x = inputs(3, 6)
    plain, padded = (lm.new_cache(3, x["text"], x["text_mask"]) for _ in range(2))
    for t in range(6):  # past the window: the ring buffer wraps
        rows = torch.tensor([2, 0])
        h = lm.step(x["video"][[2, 0], t], x["history"][[2, 0], t], plain, rows=rows)
        repeat = [2, 0, 2, 2]
        h_padded = lm.step(x["video"][repeat, t], x["history"][repeat, t], padded, rows=torch.tensor(repeat))
        torch.testing.assert_close(h_padded[:2], h, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(h_padded[2:], h[:1].expand(2, -1), atol=1e-6, rtol=1e-6)
    for (k, v), (k_padded, v_padded) in zip(plain.self_kv, padded.self_kv, strict=True):
        torch.testing.assert_close(k_padded, k, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(v_padded, v, atol=1e-6, rtol=1e-6)
    assert padded.positions.tolist() == plain.positions.tolist() == [6, 0, 6]


def test_an_autocast_copy_steps_as_autocast_does_bit_for_bit():
    """`SpatialLM.autocast_copy`: the GPU path's weights cast once instead of at every step, and its
    cache kept in bf16 instead of cast at every step."""
    lm = make_lm(max_patches=4)
    copy = lm.autocast_copy(torch.bfloat16)
    x = inputs(3, 6)
    caches = [model.new_cache(3, x["text"], x["text_mask"]) for model in (lm, copy)]
    present = torch.tensor([True, False, True])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for t in range(6):
            rows = torch.tensor([2, 0, 1] if t % 2 else [0, 2])
            expected, got = (
                model.step(x["video"][rows, t], x["history"][rows, t], cache, present[rows], rows)
                for model, cache in zip((lm, copy), caches, strict=True)
            )
            assert torch.equal(got, expected)
    # The copy's cache holds bf16: the float32 cache's values, which autocast made in bf16.
    for (k, v), (k_copy, v_copy) in zip(caches[0].self_kv, caches[1].self_kv, strict=True):
        assert k_copy.dtype == v_copy.dtype == torch.bfloat16 and k.dtype == torch.float32
        assert torch.equal(k_copy.float(), k) and torch.equal(v_copy.float(), v)
    assert caches[1].text_kv[0][0].dtype == torch.bfloat16
    assert copy.blocks[0].mlp.net[0].weight.dtype == torch.bfloat16
    assert copy.blocks[0].cross_attn.kv.weight.dtype == lm.video_proj.weight.dtype == torch.float32


def test_cache_rows_are_replaced_by_a_new_stream():
    lm = make_lm()
    x = inputs(2, 3)
    cache = lm.new_cache(2, x["text"], x["text_mask"])
    for t in range(3):
        lm.step(x["video"][:, t], x["history"][:, t], cache)
    replacement = lm.new_cache(1)  # no text: 1 position, padded to the cache's 6
    replacement.pad_text(cache.text_mask.shape[1])
    cache.write(torch.tensor([1]), replacement)
    assert cache.positions.tolist() == [3, 0]
    h = lm.step(x["video"][:, 0], x["history"][:, 0], cache)
    torch.testing.assert_close(h[1:], lm.step(x["video"][1:, 0], x["history"][1:, 0], lm.new_cache(1)))


def test_missing_video_uses_the_null_embedding_per_sample():
    lm = make_lm()
    x = inputs(3, 6)
    absent = torch.zeros(3, dtype=torch.bool)
    assert torch.equal(lm(None, x["history"]), lm(x["video"], x["history"], video_present=absent))
    mixed = torch.tensor([True, False, True])
    h_mixed = lm(**x, video_present=mixed)
    h_video, h_null = lm(**x), lm(**dict(x, video=None))
    torch.testing.assert_close(h_mixed[mixed], h_video[mixed])
    torch.testing.assert_close(h_mixed[~mixed], h_null[~mixed])
    assert not torch.allclose(h_video[1], h_null[1])


def test_text_cross_attention_and_null_text():
    lm = make_lm()
    x = inputs(3, 6)
    h_text = lm(**x)
    h_none = lm(x["video"], x["history"])
    assert (h_text - h_none).abs().amax(dim=(1, 2)).min() > 1e-3
    absent = torch.zeros(3, dtype=torch.bool)
    torch.testing.assert_close(lm(**x, text_present=absent), h_none)
    empty_mask = x["text_mask"].clone()
    empty_mask[2] = False
    h_empty = lm(**dict(x, text_mask=empty_mask))
    torch.testing.assert_close(h_empty[2], h_none[2])
    torch.testing.assert_close(h_empty[:2], h_text[:2])


def test_dropout_only_in_training():
    lm = make_lm(dropout=0.5)
    x = inputs(2, 5)
    assert torch.equal(lm(**x), lm(**x))
    lm.train()
    assert not torch.equal(lm(**x), lm(**x))


def test_lm_and_history_overfit_a_tiny_regression_target():
    """h_t -> a fixed random target per patch through a linear head (as LocDiT reads h_t)."""
    torch.manual_seed(0)
    lm = SpatialLM(SpatialLMConfig.tiny())
    history = HistoryEncoder(latent_dim=LATENT_DIM, d_model=64)
    head = torch.nn.Linear(64, 64)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(2, LATENT_DIM, 8 * 4, generator=g)
    video = torch.randn(2, 8, 4, 32, generator=g)
    target = torch.randn(2, 8, 64, generator=g)
    params = [*lm.parameters(), *history.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    losses = []
    start = time.perf_counter()
    for _ in range(40):
        loss = torch.nn.functional.mse_loss(head(lm(video, history.sequence(z))), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    ratio, seconds = losses[0] / losses[-1], time.perf_counter() - start
    print(
        f"overfit: loss {losses[0]:.4f} -> {losses[-1]:.2e}, ratio {ratio:.0f}x in 40 steps, {seconds:.1f} s"
    )
    assert ratio >= 10


def test_paper_preset_parameter_counts():
    with torch.device("meta"):
        lm = SpatialLM(SpatialLMConfig.paper())
        history = HistoryEncoder(latent_dim=128, d_model=SpatialLMConfig.paper().d_model)
    n_lm = sum(p.numel() for p in lm.parameters())
    n_history = sum(p.numel() for p in history.parameters())
    print(f"paper preset: SpatialLM {n_lm / 1e6:.1f} M parameters, HistoryEncoder {n_history / 1e6:.2f} M")
    assert 0.75e9 < n_lm < 0.85e9
    assert 2e6 < n_history < 5e6


# --- text encoder -------------------------------------------------------------------------------


def save_tiny_t5_folder(folder) -> T5EncoderModel:
    """A random T5 encoder and a word-level tokenizer, written as a `save_pretrained` folder."""
    words = ["a", "dog", "barks", "on", "the", "left", "car", "passes", "right"]
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    model = T5EncoderModel(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return model


def test_t5_loads_from_a_local_folder(tmp_path, caplog):
    model = save_tiny_t5_folder(tmp_path)
    encoder = TextEncoder.from_pretrained(tmp_path, max_length=4)
    assert encoder.dim == 32
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.model.training
    with caplog.at_level(logging.WARNING):
        states, mask = encoder.encode(["a dog barks", None, "a car passes on the right"])
    assert "1 of 2 texts truncated to 4 tokens" in caplog.text
    assert states.shape == (3, 4, 32)
    assert mask.tolist() == [[True] * 4, [False] * 4, [True] * 4]
    assert torch.equal(states[1], torch.zeros(4, 32))
    ids = torch.tensor([[3, 4, 5, 1], [3, 9, 10, 1]])  # "a dog barks </s>", "a car passes </s>" (truncated)
    expected = model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(states[[0, 2]], expected)


def test_missing_t5_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError):
        TextEncoder.from_pretrained(tmp_path / "absent")
    with pytest.raises(InputError, match="not a T5 encoder folder"):
        TextEncoder.from_pretrained(tmp_path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_server(monkeypatch):
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    monkeypatch.setenv("S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    yield
    server.stop()


@pytest.mark.servers
def test_t5_loads_from_s3(tmp_path, s3_server):
    save_tiny_t5_folder(tmp_path)
    for path in tmp_path.iterdir():
        storage.write_bytes(f"s3://models/flan-t5/{path.name}", path.read_bytes())
    local = TextEncoder.from_pretrained(tmp_path)
    remote = TextEncoder.from_pretrained("s3://models/flan-t5")
    texts = ["the dog barks on the left", None]
    for a, b in zip(local.encode(texts), remote.encode(texts), strict=True):
        assert torch.equal(a, b)


def test_byte_tokenizer_and_tiny_encoder_are_deterministic():
    tokenizer = ByteTokenizer()
    assert tokenizer.encode("Aé") == [65 + 3, 0xC3 + 3, 0xA9 + 3, 1]
    texts = ["a dog barks on the left", None, ""]
    states_a, mask_a = TextEncoder.tiny(seed=3).encode(texts)
    states_b, mask_b = TextEncoder.tiny(seed=3).encode(texts)
    assert torch.equal(states_a, states_b) and torch.equal(mask_a, mask_b)
    assert mask_a.sum(dim=1).tolist() == [24, 0, 1]
    assert not torch.equal(states_a, TextEncoder.tiny(seed=4).encode(texts)[0])


def test_tiny_text_encoder_feeds_the_lm_and_all_missing_text_is_null():
    encoder = TextEncoder.tiny()
    lm = make_lm()
    x = inputs(2, 3)
    text, text_mask = encoder.encode(["a car passes on the right", None])
    h = lm(x["video"], x["history"], text, text_mask)
    h_none = lm(x["video"], x["history"])
    torch.testing.assert_close(h[1], h_none[1])
    assert not torch.allclose(h[0], h_none[0])
    text, text_mask = encoder.encode([None, None])
    assert text.shape == (2, 1, 32) and not text_mask.any()
    torch.testing.assert_close(lm(x["video"], x["history"], text, text_mask), h_none)

"""`swansphere bench` (issue 7) and the fast paths it measures.

The report is checked for its keys, types and signs only: timings on shared cores are noise, so no
test here asserts a speed. The fast paths (LocDiT's precomputed sampling loop, the stateful VAE
decoder behind `TorchBackend.vae_decoder`) are checked against the reference computations instead.
"""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers_model import step_one, tiny_model

from swansphere.bench import StreamRun
from swansphere.cli import main
from swansphere.models.locdit import LocDiT, LocDiTConfig
from swansphere.models.sampler import Guidance, cosine_time_grid, euler, guided_velocity, sample_patch
from swansphere.serving.backend import LMStateLostError, TorchBackend

STAGE_KEYS = {"spatial_lm_s", "locdit_s", "video_encoder_s", "vae_decoder_s"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def run_json(capsys, *arguments: str) -> dict:
    code = main(["bench", "--preset", "tiny", *arguments, "--json"])
    assert code == 0
    return json.loads(capsys.readouterr().out)


def positive(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_bench_reports_first_chunk_stages_and_both_baselines(capsys):
    report = run_json(capsys, "--seconds", "2", "--steps", "2", "--rounds", "3")
    for key in (
        "time_to_first_chunk_s",
        "real_time_factor",
        "full_sequence_time_to_first_chunk_s",
        "full_sequence_ratio",
        "global_dit_time_to_first_chunk_s",
        "global_dit_ratio",
    ):
        assert positive(report[key]), key
    assert report["preset"] == "tiny" and report["device"] == "cpu" and report["steps"] == 2
    assert report["seconds"] == pytest.approx(2.0) and report["patches"] == 11
    assert report["stages"].keys() >= STAGE_KEYS and report["first_chunk_stages"].keys() == STAGE_KEYS
    assert all(positive(report["stages"][key]) for key in STAGE_KEYS)
    assert all(isinstance(value, float) and value >= 0 for value in report["stages"].values())
    live = report["live"]
    assert positive(live["time_to_first_chunk_s"]) and live["stages"].keys() == STAGE_KEYS
    assert all(positive(value) for value in live["stages"].values())
    concurrency = report["concurrency"]
    assert concurrency["streams"] == 1 and report["rounds"] == 3
    assert concurrency["time_to_first_chunk_p50_s"] == pytest.approx(report["time_to_first_chunk_s"])
    params = report["params"]
    assert params["generator"] == params["spatial_lm"] + params["locdit"] + params["history"]
    assert 0.5 < params["global_dit"] / params["generator"] < 2.0, "a global DiT of similar size"
    machine = report["machine"]
    assert machine["nproc"] >= 1 and machine["torch_threads"] == 1 and machine["device_name"]
    assert report["backend"] == {"autocast": None, "cuda_graphs": False}


def test_concurrent_streams_share_one_pipeline(capsys):
    report = run_json(
        capsys, "--seconds", "1", "--steps", "1", "--streams", "3", "--threads", "1", "--rounds", "2"
    )
    concurrency = report["concurrency"]
    assert concurrency["streams"] == 3
    p50, p99 = concurrency["time_to_first_chunk_p50_s"], concurrency["time_to_first_chunk_p99_s"]
    assert positive(p50) and positive(p99) and p50 <= p99
    assert positive(concurrency["aggregate_real_time_factor"]) and positive(concurrency["p99_over_single"])
    assert concurrency["stages"].keys() >= STAGE_KEYS


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--streams", "0"], "streams must be"),
        (["--seconds", "0"], "seconds must be"),
        (["--steps", "0"], "steps must be"),
        (["--threads", "0"], "threads must be"),
        (["--rounds", "0"], "rounds must be"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_code_2(capsys, arguments, message):
    assert main(["bench", *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_device_is_an_input_error(capsys):
    assert main(["bench", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    with pytest.raises(ValueError, match="CUDA device"):
        TorchBackend(tiny_model(), cuda_graphs=True)


@pytest.mark.parametrize(
    "guidance, layers",
    [(Guidance(), 2), (Guidance(1.0, 1.0), 2), (Guidance(3.0, 0.5), 1), (Guidance(0.0, 2.0), 3)],
)
def test_fast_sampler_equals_euler_over_guided_velocities(guidance, layers):
    """Also at depths 1 and 3: the fast path's last block runs on the noisy frames alone."""
    torch.manual_seed(0)
    locdit = LocDiT(replace(LocDiTConfig.tiny(), n_layers=layers)).eval()
    with torch.no_grad():
        for parameter in locdit.parameters():
            if not parameter.any():
                parameter.normal_(std=0.05)
    g = torch.Generator().manual_seed(1)
    h, context, noise = (
        torch.randn(3, 64, generator=g),
        torch.randn(3, 16, 8, generator=g),
        torch.randn(3, 16, 4, generator=g),
    )
    with torch.no_grad():
        reference = euler(
            lambda t, x: guided_velocity(locdit, x, t.expand(3), h, context, guidance),
            noise,
            cosine_time_grid(20),
        )
    fast = sample_patch(locdit, h, context, noise, 20, guidance)
    assert (fast - reference).abs().max().item() <= 1e-5
    assert not torch.allclose(fast, noise), "the randomised model moves the sample"


def decoder_window(model, latents: np.ndarray, t: int) -> np.ndarray:
    """The decoder stage's window of patch t of a stream's latents (D, T): its context, then the patch."""
    P, context = model.config.patch_frames, model.vae.decoder_context_frames
    end = (t + 1) * P
    return latents[:, max(0, end - P - context) : end]


def test_decoder_states_give_the_stateless_windows_audio(model):
    """Windows decoded in stream order hit the stored states; a backend that stores none decodes
    every window whole. Same audio, also with two streams batched and one of them restarted."""
    rng = np.random.default_rng(0)
    P = model.config.patch_frames
    streams = [rng.standard_normal((16, 8 * P)).astype(np.float32) for _ in range(2)]

    cached, stateless = TorchBackend(model), TorchBackend(model, decoder_capacity=0)
    for t in range(8):  # windows grow to their full context + patch by t = 5
        batch = np.stack([decoder_window(model, latents, t) for latents in streams])
        assert np.max(np.abs(cached.vae_decoder(batch) - stateless.vae_decoder(batch))) <= 1e-5
    assert len(cached.decoder_states._states) == 2, "one state per stream: each hit replaced its entry"
    restarted = TorchBackend(model)  # another worker: patch 6 misses, patch 7 hits what 6 filed
    for t in (6, 7):
        batch = np.stack([decoder_window(model, streams[0], t)])
        assert np.max(np.abs(restarted.vae_decoder(batch) - stateless.vae_decoder(batch))) <= 1e-5


def test_a_streams_consecutive_patches_in_one_batch_go_on_from_each_others_state(model, monkeypatch):
    """A burst puts a stream's patches 5, 6 and 7 in one decoder call (in any order): only patch 5's
    window, whose context no state follows, is decoded whole; 6 and 7 go on, in later rounds of the
    call, from the state the patch before left. Same audio as decoding every window whole."""
    latents = np.random.default_rng(1).standard_normal((16, 8 * model.config.patch_frames)).astype(np.float32)
    batch = np.stack([decoder_window(model, latents, t) for t in (7, 5, 6)])
    cached, stateless = TorchBackend(model), TorchBackend(model, decoder_capacity=0)
    calls = []
    stream = cached.decoder.stream

    def counted(frames, state):
        calls.append((len(frames), frames.shape[-1], state is None))
        return stream(frames, state)

    monkeypatch.setattr(cached.decoder, "stream", counted)
    assert np.max(np.abs(cached.vae_decoder(batch) - stateless.vae_decoder(batch))) <= 1e-5
    P = model.config.patch_frames
    assert calls == [(1, batch.shape[-1], True), (1, P, False), (1, P, False)]


def test_bf16_autocast_backend_runs_on_cpu(model):
    """The precision switch the GPU path uses, exercised where CI can run it."""
    backend = TorchBackend(model, autocast=torch.bfloat16)
    h = step_one(backend, "s", 0, np.zeros((1, 4, 32), np.float32), np.zeros((0, 16, 4), np.float32), None)
    z = backend.locdit(h, np.zeros((1, 16, 8), np.float32), [0], [0], 2, Guidance())
    audio = backend.vae_decoder(z)
    assert h.dtype == z.dtype == audio.dtype == np.float32
    assert audio.shape == (1, 4, model.config.patch_samples) and np.isfinite(audio).all()


def test_reset_forgets_every_stream(model):
    """The bench's measured runs reuse one backend (and its CUDA graphs) after `reset`: no stream's LM
    cache or decoder state may survive it, or a run would skip work the previous run did."""
    backend = TorchBackend(model)
    video, history = np.zeros((1, 4, 32), np.float32), np.zeros((0, 16, 4), np.float32)
    h = step_one(backend, "s", 0, video, history, None)
    z = backend.locdit(h, np.zeros((1, 16, 8), np.float32), [0], [0], 2, Guidance())
    backend.vae_decoder(z)
    assert len(backend.decoder_states._states) == 1
    backend.reset()
    assert len(backend.decoder_states._states) == 0
    with pytest.raises(LMStateLostError, match="stream s has no state"):
        step_one(backend, "s", 1, video, z, None)


def test_rounds_pool_every_first_chunk_and_add_up_times():
    """Rounds of a measurement: every stream's first chunk kept, times and audio added up (so the real-
    time factor and the seconds per patch are means), the first chunk's stage costs averaged."""
    rounds = [([0.1, 0.3], 2.0, 1.0, 0.02), ([0.2, 0.4], 1.0, 0.5, 0.04)]
    runs = [
        StreamRun(firsts, wall, audio_s=4.0, patches=22, stage_s={"a": s}, first_chunk_stage_s={"a": first})
        for firsts, wall, s, first in rounds
    ]
    pooled = StreamRun.pooled(runs)
    assert pooled.first_chunk_s == [0.1, 0.3, 0.2, 0.4] and pooled.patches == 22
    assert pooled.wall_s / pooled.audio_s == pytest.approx(3.0 / 8.0)
    assert pooled.stage_s == {"a": 1.5} and pooled.first_chunk_stage_s == {"a": pytest.approx(0.03)}

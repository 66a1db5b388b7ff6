"""Multi-objective ODPO (paper §3.4): rewards, preference pairs, the DPO loss for flow matching."""

import copy
import logging
import math

import numpy as np
import pytest
import torch
from helpers_model import random_locdit

from swansphere import foa, storage
from swansphere.errors import InputError
from swansphere.models.locdit import flow_matching_noise, flow_path
from swansphere.models.svac import SVAC, SVACConfig
from swansphere.odpo import (
    LogMelFidelity,
    PreferencePair,
    RewardModel,
    RewardWeights,
    SVACSemanticScorer,
    TorchScriptScorer,
    combine,
    flow_dpo_loss,
    pair_flow_errors,
    preference_pairs,
    spatial_reward,
)
from swansphere.video import model_frames

SR = 44100


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: one thread is faster than two fighting over busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def noise_foa(azimuth: float, elevation: float, seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    signal = 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))
    return foa.encode(signal, azimuth, elevation)


# --- rewards -------------------------------------------------------------------------------------


def test_spatial_reward_falls_as_the_direction_error_grows():
    reference = noise_foa(40.0, 10.0)
    score, details = spatial_reward(reference, reference)
    assert score == 1.0 and details["angular_error_deg"] == 0.0 and details["protocol"] == "segment"
    scores = []
    for yaw in (10.0, 30.0, 90.0, 180.0):
        score, details = spatial_reward(foa.rotate(reference, yaw=yaw), reference)
        assert details["azimuth_error_deg"] == pytest.approx(yaw, abs=0.5)
        scores.append(score)
    assert 1.0 > scores[0] > scores[1] > scores[2] > scores[3] >= 0.0
    tilted, _ = spatial_reward(noise_foa(40.0, 50.0), reference)
    assert tilted < 1.0
    # The mapping: mean of 1 - err/180 over azimuth, elevation and great-circle errors.
    score, details = spatial_reward(foa.rotate(reference, yaw=90.0), reference)
    errors = [details[k] for k in ("azimuth_error_deg", "elevation_error_deg", "angular_error_deg")]
    assert score == pytest.approx(np.mean([1 - e / 180 for e in errors]))


def test_spatial_reward_needs_a_reference_with_sound():
    with pytest.raises(InputError, match="silent"):
        spatial_reward(noise_foa(0.0, 0.0), np.zeros((4, SR)))


def test_weights_and_combine():
    weights = RewardWeights()
    assert (weights.spatial, weights.semantic, weights.fidelity) == (0.4, 0.4, 0.2)
    assert combine(1.0, 0.0, 0.0) == pytest.approx(0.4)
    assert combine(0.0, 1.0, 0.0) == pytest.approx(0.4)
    assert combine(0.0, 0.0, 1.0) == pytest.approx(0.2)
    total = combine(torch.tensor([1.0, 0.5]), torch.tensor([0.0, 0.5]), torch.tensor([1.0, 0.5]))
    assert torch.allclose(total, torch.tensor([0.6, 0.5]))
    assert combine(1.0, 1.0, 0.0, RewardWeights(spatial=0.5, semantic=0.5, fidelity=0.0)) == pytest.approx(
        1.0
    )
    with pytest.raises(ValueError, match="sum to 1"):
        RewardWeights(spatial=0.5, semantic=0.5, fidelity=0.5)
    with pytest.raises(ValueError, match=">= 0"):
        RewardWeights(spatial=1.2, semantic=-0.2, fidelity=0.0)
    with pytest.raises(ValueError, match="spatial reward must lie in"):
        combine(np.array([1.5]), np.array([0.0]), np.array([0.0]))


def test_log_mel_fidelity_ignores_direction_and_penalises_spectral_change():
    rng = np.random.default_rng(1)
    reference = noise_foa(40.0, 10.0, seconds=1.0)
    candidates = np.stack(
        [
            reference,
            foa.rotate(reference, yaw=120.0),  # same W: fidelity is orthogonal to direction
            reference + 0.02 * rng.standard_normal(reference.shape),
            0.5 * reference,  # 6 dB quieter
            1e-4 * rng.standard_normal(reference.shape),  # near silence
        ]
    )
    scores = LogMelFidelity().fidelity(
        torch.from_numpy(candidates).float(), torch.from_numpy(reference).float()
    )
    assert scores[0] == pytest.approx(1.0) and scores[1] == pytest.approx(1.0)
    assert 1.0 > scores[2] > scores[4] and 1.0 > scores[3] > scores[4]
    assert scores[3] == pytest.approx(
        math.exp(-20 * math.log10(2) / 10), rel=0.01
    )  # |ΔL| = 6.02 dB everywhere


def tiny_svac() -> SVAC:
    torch.manual_seed(0)
    return SVAC(SVACConfig.tiny()).eval()


def frames_clip(seconds: float = 1.0, seed: int = 2) -> np.ndarray:
    """Equirectangular uint8 frames (T, H, 2H, 3) at 4 fps, larger than SVAC's input (resized)."""
    return np.random.default_rng(seed).integers(0, 256, (int(4 * seconds), 96, 192, 3), dtype=np.uint8)


def test_svac_semantic_score_is_the_mapped_aligned_cosine():
    svac = tiny_svac()
    candidates = torch.from_numpy(np.stack([noise_foa(az, 0.0, 1.0, seed=s) for s, az in enumerate((0, 90))]))
    frames = frames_clip()
    scores = SVACSemanticScorer(svac).semantic(candidates.float(), frames, None)
    with torch.no_grad():
        audio = svac.audio_embeddings(candidates.float())
        clip = model_frames(frames, (64, 128))
        video = svac.video_tokens(clip[None], audio.shape[1]).expand_as(audio)
        expected = (1 + svac.similarity(video, audio)) / 2
    assert torch.allclose(scores, expected, atol=1e-6)
    assert ((scores >= 0) & (scores <= 1)).all() and scores[0] != scores[1]
    with pytest.raises(InputError, match="text-only"):
        SVACSemanticScorer(svac).semantic(candidates.float(), None, "a dog barks")


class ToyEmbedder(torch.nn.Module):
    """A stand-in for an ImageBind / Audiobox-Aesthetics export with the documented contract:
    audio -> (RMS, 0.1), video -> (mean brightness, 0.1), text -> (length / 100, 0.1)."""

    sample_rate: int

    def __init__(self):
        super().__init__()
        self.sample_rate = 16000

    @torch.jit.export
    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        rms = audio.pow(2).mean(dim=-1).sqrt()
        return torch.stack([rms, torch.full_like(rms, 0.1)], dim=-1)

    @torch.jit.export
    def embed_video(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[float(frames.mean()), 0.1]])

    @torch.jit.export
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([[len(t) / 100.0, 0.1] for t in texts])

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.embed_audio(audio)


def tone_foa(rms: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return foa.encode(rms * np.sqrt(2) * np.sin(2 * np.pi * 440 * t), 30.0, 0.0)


def test_torchscript_scorer_loads_an_export_from_disk_and_s3(tmp_path, s3_bucket):
    path = tmp_path / "toy.ts"
    torch.jit.script(ToyEmbedder()).save(str(path))
    uri = f"s3://{s3_bucket}/scorers/toy.ts"
    storage.write_bytes(uri, path.read_bytes())
    candidates = torch.from_numpy(np.stack([tone_foa(0.5), tone_foa(0.05)])).float()
    frames = np.full((4, 8, 16, 3), 128, dtype=np.uint8)  # brightness 0.5 -> (0.5, 0.1)
    for source in (str(path), uri):
        scorer = TorchScriptScorer.from_path(source, name="ImageBind")
        semantic = scorer.semantic(candidates, frames, None)
        # cos((0.5, 0.1), (0.502, 0.1)) ≈ 1; cos((0.05, 0.1), (0.502, 0.1)) ≈ 0.63
        expected_quiet = (1 + (0.05 * 0.502 + 0.01) / (math.hypot(0.05, 0.1) * math.hypot(0.502, 0.1))) / 2
        assert semantic[0] == pytest.approx(1.0, abs=1e-3) and semantic[1] == pytest.approx(
            expected_quiet, abs=1e-3
        )
        both = scorer.semantic(candidates, frames, "x" * 50)  # text (0.5, 0.1) agrees with the video here
        assert torch.allclose(both, semantic, atol=1e-3)
        fidelity = scorer.fidelity(candidates, torch.from_numpy(tone_foa(0.5)).float())
        # RMS over the 2 features of (Δrms, 0) = 0.45 / sqrt(2), scale 1
        assert fidelity[0] == pytest.approx(1.0, abs=1e-3)
        assert fidelity[1] == pytest.approx(math.exp(-0.45 / math.sqrt(2)), abs=1e-3)


def test_torchscript_scorer_refuses_what_is_not_an_export(tmp_path):
    path = tmp_path / "not.ts"
    path.write_bytes(b"not a model")
    with pytest.raises(InputError, match="not a TorchScript module"):
        TorchScriptScorer.from_path(str(path))
    with pytest.raises(InputError, match="no such file"):
        TorchScriptScorer.from_path(str(tmp_path / "missing.ts"))


def test_reward_model_logs_its_scorers_and_sums_eq_4(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="swansphere.odpo"):
        model = RewardModel.build(svac=tiny_svac())
    assert "semantic reward: SVAC video-audio similarity (no ImageBind weights given)" in caplog.text
    assert "fidelity reward: log-mel distance of the W channel (no Audiobox-Aesthetics" in caplog.text
    reference = noise_foa(40.0, 10.0, seconds=1.0)
    candidates = np.stack([reference, foa.rotate(reference, yaw=150.0), 0.3 * reference])
    rewards = model.score(candidates, reference, frames=frames_clip())
    assert rewards.spatial[0] == pytest.approx(1.0) and rewards.spatial[1] < rewards.spatial[0]
    assert rewards.fidelity[0] == pytest.approx(1.0) and rewards.fidelity[2] < 1.0
    assert np.allclose(rewards.total, 0.4 * rewards.spatial + 0.4 * rewards.semantic + 0.2 * rewards.fidelity)
    assert len(rewards.spatial_details) == 3

    path = tmp_path / "toy.ts"
    torch.jit.script(ToyEmbedder()).save(str(path))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="swansphere.odpo"):
        RewardModel.build(imagebind=str(path), aesthetics=str(path))
    assert f"semantic reward: ImageBind ({path})" in caplog.text
    assert f"fidelity reward: Audiobox-Aesthetics ({path})" in caplog.text
    with pytest.raises(InputError, match="ImageBind weights or an SVAC"):
        RewardModel.build()


# --- preference pairs ----------------------------------------------------------------------------


def test_pairs_are_the_best_against_each_of_the_bottom_half():
    rewards = torch.tensor(
        [
            [0.50, 0.90, 0.10, 0.30, 0.70, 0.20, 0.60, 0.40],
            [0.30, 0.30, 0.30, 0.30, 0.30, 0.30, 0.30, 0.30],  # all tied: no preference at all
        ]
    )
    pairs = preference_pairs(rewards)
    assert pairs == [PreferencePair(0, 1, 2), PreferencePair(0, 1, 5), PreferencePair(0, 1, 3), (0, 1, 7)]
    assert preference_pairs(rewards, n_losers=1) == [(0, 1, 2)]  # best vs worst


def test_near_ties_are_not_pairs_and_equal_bests_rank_by_index():
    rewards = torch.tensor([[0.800, 0.800, 0.795, 0.300]])
    assert preference_pairs(rewards, margin=0.01) == [(0, 0, 3)]  # 0.800 vs 0.795 is within the margin
    assert preference_pairs(rewards, n_losers=3, margin=0.001) == [(0, 0, 3), (0, 0, 2)]
    with pytest.raises(ValueError, match="n_losers"):
        preference_pairs(rewards, n_losers=4)
    with pytest.raises(ValueError, match="finite"):
        preference_pairs(torch.tensor([[0.1, float("nan")]]))


# --- DPO loss ------------------------------------------------------------------------------------


def test_flow_dpo_loss_is_the_formula_and_log_2_at_the_reference():
    g = torch.Generator().manual_seed(0)
    e_w, e_l, r_w, r_l = torch.rand(4, 6, generator=g)
    loss, stats = flow_dpo_loss(e_w, e_l, r_w, r_l, beta=3.0)
    expected = -torch.log(torch.sigmoid(-3.0 * ((e_w - r_w) - (e_l - r_l)))).mean()
    assert torch.allclose(loss, expected) and stats["loss"] == pytest.approx(expected.item())
    same, stats = flow_dpo_loss(e_w, e_l, e_w.clone(), e_l.clone())
    assert same.item() == pytest.approx(math.log(2)) and stats["margin"] == 0.0
    with pytest.raises(ValueError, match="shapes"):
        flow_dpo_loss(e_w, e_l[:3], r_w, r_l)


def test_flow_dpo_gradient_lowers_the_winner_error_and_raises_the_loser_error():
    e_w, e_l = torch.tensor([0.8, 0.5], requires_grad=True), torch.tensor([0.6, 0.7], requires_grad=True)
    loss, _ = flow_dpo_loss(e_w, e_l, torch.tensor([0.7, 0.6]), torch.tensor([0.6, 0.6]), beta=10.0)
    loss.backward()
    assert (e_w.grad > 0).all() and (e_l.grad < 0).all()  # descent: e_w down, e_l up


def test_pair_errors_share_noise_and_dpo_steps_prefer_the_winner():
    reference = random_locdit()
    policy = copy.deepcopy(reference).requires_grad_(True)
    reference.requires_grad_(False)
    cfg = reference.config
    g = torch.Generator().manual_seed(1)
    N = 4
    winner, loser = torch.randn(2, N, cfg.latent_dim, cfg.patch_frames, generator=g)
    h = (torch.randn(N, cfg.cond_dim, generator=g), torch.randn(N, cfg.cond_dim, generator=g))
    context = tuple(torch.randn(2, N, cfg.latent_dim, cfg.context_frames, generator=g))
    x0, t = flow_matching_noise(winner, g)

    e_w, e_l = pair_flow_errors(policy, winner, loser, h, context, x0, t)
    x_t, u = flow_path(winner, x0, t)  # the winner's error by hand, at the shared (x0, t)
    assert torch.allclose(e_w, ((policy(x_t, t, h[0], context[0]) - u) ** 2).mean(dim=(1, 2)), atol=1e-6)
    with torch.no_grad():
        r_w, r_l = pair_flow_errors(reference, winner, loser, h, context, x0, t)
    loss, _ = flow_dpo_loss(e_w, e_l, r_w, r_l)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)  # policy == reference

    optimizer = torch.optim.SGD(policy.parameters(), lr=1e-6)  # β = 500 on errors ~20: small steps
    for _ in range(5):
        optimizer.zero_grad()
        e_w, e_l = pair_flow_errors(policy, winner, loser, h, context, x0, t)
        flow_dpo_loss(e_w, e_l, r_w, r_l)[0].backward()
        optimizer.step()
    with torch.no_grad():
        e_w, e_l = pair_flow_errors(policy, winner, loser, h, context, x0, t)
        loss, stats = flow_dpo_loss(e_w, e_l, r_w, r_l)
    assert (e_w - r_w).mean() < 0 < (e_l - r_l).mean()
    assert loss.item() < math.log(2) and stats["implicit_accuracy"] > 0.5

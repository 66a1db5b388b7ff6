"""Multi-objective online DPO (paper §3.4): rewards, preference pairs and the DPO loss for flow matching.

Per input the model generates K = 8 candidates; each gets three rewards in [0, 1] and the weighted sum
of eq. 4, R = 0.4·R_spatial + 0.4·R_semantic + 0.2·R_fidelity:
- spatial: segment-protocol DoA (`doa.segment_doa`) of candidate and reference, azimuth, elevation and
  great-circle errors (`metrics`), each mapped by 1 - err/180°, averaged (`spatial_reward`);
- semantic: ImageBind audio-video/text similarity when its TorchScript export is given
  (`TorchScriptScorer`), otherwise SVAC's temporally aligned video-audio cosine (`SVACSemanticScorer`),
  both mapped by (1 + cos)/2; which one runs is logged;
- fidelity: distance to the reference audio in Audiobox-Aesthetics' feature space when its export is
  given, otherwise a multi-resolution log-mel distance of the W channel (`LogMelFidelity`).
The ranking gives preference pairs (`preference_pairs`: best vs each of the bottom half), trained with
Diffusion-DPO adapted to flow matching (`flow_dpo_loss`) against a frozen reference model; the paper
runs three online rounds of generate -> score -> pair -> fine-tune (App. B.2).
"""

import io
import logging
import math
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from swansphere import storage
from swansphere.audio import resample
from swansphere.conventions import SAMPLE_RATE, W
from swansphere.doa import segment_doa
from swansphere.errors import InputError
from swansphere.metrics import angular_error_deg, azimuth_error_deg, elevation_error_deg
from swansphere.models.audio_encoder import mel_filterbank
from swansphere.models.locdit import LocDiT
from swansphere.models.svac import SVAC
from swansphere.video import model_frames

log = logging.getLogger(__name__)

CANDIDATES_PER_INPUT = 8
"""Paper §3.4: "for each video or text input, the model first generates 8 candidate audio samples"."""

ONLINE_ROUNDS = 3
"""App. B.2: "we conduct three rounds of online fine-tuning"."""

DPO_BETA = 500.0
"""Default β of `flow_dpo_loss`; the reasoning is in its docstring."""

Reward = TypeVar("Reward", float, np.ndarray, Tensor)


@dataclass(frozen=True)
class RewardWeights:
    """λ of eq. 4: 0.4 spatial, 0.4 semantic, 0.2 fidelity (paper §3.4); non-negative, summing to 1."""

    spatial: float = 0.4
    semantic: float = 0.4
    fidelity: float = 0.2

    def __post_init__(self) -> None:
        values = (self.spatial, self.semantic, self.fidelity)
        if any(not (math.isfinite(v) and v >= 0.0) for v in values):
            raise ValueError(f"reward weights must be finite and >= 0, got {values}")
        if abs(sum(values) - 1.0) > 1e-6:
            raise ValueError(f"reward weights must sum to 1 (rewards stay in [0, 1]), got {sum(values)}")


def combine(
    spatial: Reward, semantic: Reward, fidelity: Reward, weights: RewardWeights | None = None
) -> Reward:
    """Eq. 4, R = λ_spat·R_spat + λ_sem·R_sem + λ_fid·R_fid, elementwise; each term must be in [0, 1]."""
    weights = weights or RewardWeights()
    for name, value in (("spatial", spatial), ("semantic", semantic), ("fidelity", fidelity)):
        array = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
        if not np.all((array >= 0.0) & (array <= 1.0)):
            raise ValueError(f"{name} reward must lie in [0, 1], got {array}")
    return weights.spatial * spatial + weights.semantic * semantic + weights.fidelity * fidelity


# --- spatial -------------------------------------------------------------------------------------


def spatial_reward(
    generated_foa: np.ndarray,
    reference_foa: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    segment_s: float = 1.0,
) -> tuple[float, dict[str, float | int | str]]:
    """R_spatial in [0, 1] of one candidate (4, N) against the reference (4, N'), segment protocol.

    Errors per segment (degrees): circular Δazimuth, |Δelevation| and the great-circle angle; each is
    averaged over segments weighted by the reference's segment energy (a silent reference segment has
    no direction to match), then mapped linearly, 1 - err/180° (all three lie in [0°, 180°]):
    R_spatial = mean(1 - Δaz/180, 1 - Δel/180, 1 - Δang/180). Identical directions score 1, opposite
    ones 0. Only the segments both clips have are compared.
    """
    reference = segment_doa(reference_foa, sample_rate, segment_s)
    generated = segment_doa(generated_foa, sample_rate, segment_s)
    n = min(len(reference), len(generated))
    reference, generated = reference[:n], generated[:n]
    weights = np.array([s.energy for s in reference])
    if not weights.sum() > 0.0:
        raise InputError("the reference FOA is silent: it has no direction to reward")
    ref_az, ref_el = np.array([[s.azimuth, s.elevation] for s in reference]).T
    gen_az, gen_el = np.array([[s.azimuth, s.elevation] for s in generated]).T
    errors = {
        "azimuth_error_deg": azimuth_error_deg(gen_az, ref_az),
        "elevation_error_deg": elevation_error_deg(gen_el, ref_el),
        "angular_error_deg": angular_error_deg(gen_az, gen_el, ref_az, ref_el),
    }
    means = {name: float(np.average(error, weights=weights)) for name, error in errors.items()}
    score = float(np.mean([1.0 - err / 180.0 for err in means.values()]))
    return float(np.clip(score, 0.0, 1.0)), {"protocol": "segment", "segments": n, **means}


# --- semantic and fidelity scorers -----------------------------------------------------------------


class SemanticScorer(Protocol):
    name: str

    def semantic(self, candidates: Tensor, frames: np.ndarray | None, text: str | None) -> Tensor:
        """Candidates (K, 4, N) at 44.1 kHz of one input, its frames (T, H, W, 3) uint8 at 4 fps and/or
        caption -> R_semantic (K,) in [0, 1]."""
        ...


class FidelityScorer(Protocol):
    name: str

    def fidelity(self, candidates: Tensor, reference: Tensor) -> Tensor:
        """Candidates (K, 4, N) and the reference (4, N') at 44.1 kHz -> R_fidelity (K,) in [0, 1]."""
        ...


def cosine_to_unit(cosine: Tensor) -> Tensor:
    """Cosine similarity in [-1, 1] -> reward (1 + cos) / 2 in [0, 1]."""
    return ((1.0 + cosine) / 2.0).clamp(0.0, 1.0)


class SVACSemanticScorer:
    """Fallback R_semantic without ImageBind: SVAC's temporally aligned video-audio cosine (eq. 2's s),
    mean over latent frames of cos(v_t, a_t), mapped by (1 + cos)/2.

    SVAC embeds video and audio only: a text-only input has no semantic score here (InputError).
    """

    name = "SVAC video-audio similarity"

    def __init__(self, svac: SVAC):
        self.svac = svac

    @torch.no_grad()
    def semantic(self, candidates: Tensor, frames: np.ndarray | None, text: str | None) -> Tensor:
        if frames is None:
            raise InputError("the SVAC semantic reward needs video frames; text-only inputs need ImageBind")
        device = next(self.svac.parameters()).device
        audio = self.svac.audio_embeddings(candidates.to(device))  # (K, L, Dv)
        clip = model_frames(frames, self.svac.config.video.frame_size)[None].to(device)  # (1, T, 3, h, w)
        video = self.svac.video_tokens(clip, audio.shape[1]).expand_as(audio)  # (K, L, Dv)
        return cosine_to_unit(self.svac.similarity(video, audio)).cpu()


class TorchScriptScorer:
    """ImageBind (semantic) or Audiobox-Aesthetics (fidelity) exported as TorchScript, loaded from a
    local path or s3:// with `from_path`; nothing is downloaded.

    Contract of the exported module:
    - `sample_rate: int` attribute, the rate its audio input expects (ImageBind and Audiobox: 16000);
    - `embed_audio(audio: Tensor) -> Tensor`: mono (B, S) float32 in [-1, 1] -> (B, E). The scorer feeds
      the W channel (the omni signal a mono model hears), resampled from 44.1 kHz;
    - optional `embed_video(frames: Tensor) -> Tensor`: one clip (1, T, 3, H, W) float in [0, 1],
      equirectangular at 4 fps -> (1, E);
    - optional `embed_text(texts: List[str]) -> Tensor` -> (len(texts), E).
    Model-specific preprocessing (ImageBind's 2 s mel clips and frame sampling, its BPE tokenizer) lives
    inside the export. Recipe, on a machine with the weights and the model's own package:

        class ImageBindExport(torch.nn.Module):
            sample_rate: int = 16000
            def __init__(self, model): super().__init__(); self.model = model.eval()
            @torch.jit.export
            def embed_audio(self, audio): return self.model.embed_audio(imagebind_mel(audio))
            @torch.jit.export
            def embed_video(self, frames): return self.model.embed_vision(imagebind_frames(frames))
        torch.jit.script(ImageBindExport(imagebind_huge(pretrained=True))).save("imagebind.ts")

    (`torch.jit.trace_module` with one example input per method works where scripting does not.)
    Audiobox-Aesthetics exports `embed_audio` only, returning its four axes (CE, CU, PC, PQ, 1-10 scale).

    Semantic: (1 + cos(audio, condition))/2, averaged over the conditions given (video, text).
    Fidelity (paper: "the distance between generated audio and real reference audio in the perceptual
    feature space"): d = RMS over the E features of f(candidate) - f(reference), R = exp(-d / scale);
    with Audiobox's axes and scale 1, one point of difference on every axis gives e⁻¹ ≈ 0.37.
    """

    def __init__(self, module: torch.jit.ScriptModule, name: str, fidelity_scale: float = 1.0):
        if not isinstance(getattr(module, "sample_rate", None), int) or not hasattr(module, "embed_audio"):
            raise InputError(f"{name}: the TorchScript module needs an int `sample_rate` and `embed_audio`")
        if not fidelity_scale > 0.0:
            raise InputError(f"fidelity scale must be positive, got {fidelity_scale}")
        self.module = module.eval()
        self.name = name
        self.fidelity_scale = fidelity_scale

    @classmethod
    def from_path(
        cls, path: str, name: str | None = None, fidelity_scale: float = 1.0
    ) -> "TorchScriptScorer":
        """Loads the export from a local file or s3:// on CPU; `name` (default: the path) goes in the logs."""
        data = storage.read_bytes(path)
        try:
            module = torch.jit.load(io.BytesIO(data), map_location="cpu")
        except RuntimeError as err:
            raise InputError(f"{path}: not a TorchScript module ({str(err).splitlines()[0]})") from None
        return cls(module, name or f"TorchScript {path}", fidelity_scale)

    def _embed_audio(self, foa: Tensor) -> Tensor:
        """(K, 4, N) at 44.1 kHz -> (K, E) from the W channel at the module's rate."""
        mono = resample(foa[:, W].double().cpu().numpy(), SAMPLE_RATE, self.module.sample_rate)
        return self.module.embed_audio(torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32)))

    @torch.no_grad()
    def semantic(self, candidates: Tensor, frames: np.ndarray | None, text: str | None) -> Tensor:
        conditions = []
        if frames is not None and hasattr(self.module, "embed_video"):
            conditions.append(self.module.embed_video(model_frames(frames)[None]))  # (1, E)
        if text is not None and hasattr(self.module, "embed_text"):
            conditions.append(self.module.embed_text([text]))  # (1, E)
        if not conditions:
            raise InputError(f"{self.name}: no embed_video/embed_text for the video or caption given")
        audio = self._embed_audio(candidates)  # (K, E)
        scores = [cosine_to_unit(F.cosine_similarity(audio, c.expand_as(audio), dim=-1)) for c in conditions]
        return torch.stack(scores).mean(dim=0).float()

    @torch.no_grad()
    def fidelity(self, candidates: Tensor, reference: Tensor) -> Tensor:
        features = self._embed_audio(torch.cat([candidates, _match_length(reference, candidates)[None]]))
        distance = (features[:-1] - features[-1:]).pow(2).mean(dim=-1).sqrt()  # (K,)
        return torch.exp(-distance / self.fidelity_scale).float()


def _match_length(reference: Tensor, candidates: Tensor) -> Tensor:
    """The reference (4, N') cut or zero-padded to the candidates' length N."""
    n = candidates.shape[-1]
    return F.pad(reference[..., :n], (0, max(0, n - reference.shape[-1])))


@dataclass(frozen=True)
class LogMelFidelity:
    """Fallback R_fidelity without Audiobox-Aesthetics: multi-resolution log-mel distance of the W
    (omni) channel to the reference, in dB.

    Per resolution (FFT n with Hann window, hop n/4, n/16 HTK mel bands): P = mel power of |STFT|²,
    L = 10·log10(P + floor), floor = the reference's peak mel power - `dynamic_range_db` (quieter bins
    count as silence on both sides); d = mean over resolutions, bands and frames of |L_gen - L_ref|;
    R_fidelity = exp(-d / scale_db): 3 dB off on average -> 0.74, 10 dB -> 0.37. W carries timbre and
    artifacts but no direction, so a rotated copy keeps R_fidelity = 1 and the objectives stay
    orthogonal as §3.4 asks. Short FFTs see transient artifacts, long ones tonal colouring.
    """

    fft_sizes: tuple[int, ...] = (512, 1024, 2048)
    scale_db: float = 10.0
    dynamic_range_db: float = 80.0
    name: str = "log-mel distance of the W channel"

    def __post_init__(self) -> None:
        if not self.fft_sizes or any(n < 64 for n in self.fft_sizes):
            raise ValueError(f"fft_sizes must be non-empty, each >= 64, got {self.fft_sizes}")
        if not (self.scale_db > 0.0 and self.dynamic_range_db > 0.0):
            raise ValueError("scale_db and dynamic_range_db must be positive")

    @torch.no_grad()
    def fidelity(self, candidates: Tensor, reference: Tensor) -> Tensor:
        reference = _match_length(reference, candidates)
        signals = torch.cat([candidates[:, W], reference[None, W]]).float()  # (K+1, N): reference last
        distance = torch.zeros(len(candidates))
        for n_fft in self.fft_sizes:
            window = torch.hann_window(n_fft, device=signals.device)
            spec = torch.stft(signals, n_fft, n_fft // 4, window=window, return_complex=True).abs().pow(2)
            mel = torch.einsum("mf,bft->bmt", mel_filterbank(SAMPLE_RATE, n_fft, n_fft // 16).to(spec), spec)
            floor = mel[-1].max().clamp(min=1e-12) * 10.0 ** (-self.dynamic_range_db / 10.0)
            level = 10.0 * torch.log10(mel + floor)  # (K+1, M, T) dB
            distance += (level[:-1] - level[-1:]).abs().mean(dim=(1, 2)).cpu()
        return torch.exp(-distance / len(self.fft_sizes) / self.scale_db)


# --- the reward model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateRewards:
    """Rewards (K,) of one input's candidates, each in [0, 1], and the spatial details per candidate."""

    spatial: np.ndarray
    semantic: np.ndarray
    fidelity: np.ndarray
    total: np.ndarray
    spatial_details: list[dict[str, float | int | str]]


class RewardModel:
    """Eq. 4 over one input's K candidates: spatial from DoA errors, semantic and fidelity scorers."""

    def __init__(
        self, semantic: SemanticScorer, fidelity: FidelityScorer, weights: RewardWeights | None = None
    ):
        self.semantic = semantic
        self.fidelity = fidelity
        self.weights = weights or RewardWeights()

    @classmethod
    def build(
        cls,
        *,
        svac: SVAC | None = None,
        imagebind: str | None = None,
        aesthetics: str | None = None,
        weights: RewardWeights | None = None,
    ) -> "RewardModel":
        """ImageBind / Audiobox-Aesthetics from their TorchScript exports when paths are given, otherwise
        the SVAC and log-mel fallbacks; logs which scorer computes each reward."""
        if imagebind is not None:
            semantic: SemanticScorer = TorchScriptScorer.from_path(imagebind, name=f"ImageBind ({imagebind})")
            log.info("semantic reward: %s", semantic.name)
        elif svac is not None:
            semantic = SVACSemanticScorer(svac)
            log.info("semantic reward: %s (no ImageBind weights given)", semantic.name)
        else:
            raise InputError("the semantic reward needs ImageBind weights or an SVAC model")
        if aesthetics is not None:
            fidelity: FidelityScorer = TorchScriptScorer.from_path(
                aesthetics, name=f"Audiobox-Aesthetics ({aesthetics})"
            )
            log.info("fidelity reward: %s", fidelity.name)
        else:
            fidelity = LogMelFidelity()
            log.info("fidelity reward: %s (no Audiobox-Aesthetics weights given)", fidelity.name)
        return cls(semantic, fidelity, weights)

    def score(
        self,
        candidates: np.ndarray,
        reference: np.ndarray,
        frames: np.ndarray | None = None,
        text: str | None = None,
    ) -> CandidateRewards:
        """Candidates (K, 4, N) and reference (4, N') AmbiX at 44.1 kHz, the input's frames (T, H, W, 3)
        uint8 and/or caption -> every reward of every candidate."""
        candidates = np.asarray(candidates, dtype=np.float32)
        if candidates.ndim != 3 or candidates.shape[1] != 4:
            raise InputError(f"candidates must be (K, 4, N) FOA, got {candidates.shape}")
        spatial, details = zip(*(spatial_reward(c, reference) for c in candidates), strict=True)
        audio = torch.from_numpy(candidates)
        semantic = self.semantic.semantic(audio, frames, text).numpy().astype(np.float64)
        fidelity = self.fidelity.fidelity(audio, torch.from_numpy(np.asarray(reference, np.float32)))
        spatial_array, fidelity_array = np.array(spatial), fidelity.numpy().astype(np.float64)
        total = combine(spatial_array, semantic, fidelity_array, self.weights)
        return CandidateRewards(spatial_array, semantic, fidelity_array, total, list(details))


# --- preference pairs ----------------------------------------------------------------------------


class PreferencePair(NamedTuple):
    """Candidate `winner` of input `input` is preferred to candidate `loser` (indices into K)."""

    input: int
    winner: int
    loser: int


def preference_pairs(
    rewards: Tensor, n_losers: int | None = None, margin: float = 0.01
) -> list[PreferencePair]:
    """Pairs (y_w, y_l) from rewards (B, K): per input, the best candidate against each of the
    `n_losers` worst (default K // 2, the bottom half; 1 gives best vs worst).

    §3.4 says only that the ranking constructs the pairs. Best vs bottom half uses K = 8 generations for
    4 pairs instead of 1, and every pair is a clear preference. A pair is kept only if
    R_w - R_l > `margin`: near-ties carry no preference, only reward noise. Equal rewards rank by index.
    """
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be (B, K) with K >= 2, got {tuple(rewards.shape)}")
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards must be finite")
    K = rewards.shape[1]
    n_losers = K // 2 if n_losers is None else n_losers
    if not 1 <= n_losers <= K - 1:
        raise ValueError(f"n_losers must be in [1, {K - 1}], got {n_losers}")
    order = torch.sort(rewards.detach().cpu(), dim=1, descending=True, stable=True).indices  # (B, K)
    pairs = []
    for b, ranked in enumerate(order.tolist()):
        winner = ranked[0]
        for loser in reversed(ranked[K - n_losers :]):  # worst first
            if float(rewards[b, winner] - rewards[b, loser]) > margin:
                pairs.append(PreferencePair(b, winner, loser))
    return pairs


# --- DPO for flow matching -----------------------------------------------------------------------


def pair_flow_errors(
    locdit: LocDiT,
    winner: Tensor,
    loser: Tensor,
    h: tuple[Tensor, Tensor],
    context: tuple[Tensor, Tensor],
    x0: Tensor,
    t: Tensor,
) -> tuple[Tensor, Tensor]:
    """Per-pair flow-matching errors (e_w, e_l), each (N,), of winner and loser patches (N, D, P) at the
    SAME noise x0 (N, D, P) and time t (N,) (draw them once with `models.locdit.flow_matching_noise` and
    reuse them for the policy and the frozen reference). h = (h_w, h_l) (N, cond_dim) and context =
    (context_w, context_l) (N, D, C) are each side's own conditions; no guidance dropout: DPO tunes the
    conditional velocity. One forward pass of 2N examples."""
    errors = locdit.flow_matching_errors(
        torch.cat([winner, loser]),
        torch.cat([x0, x0]),
        torch.cat([t, t]),
        torch.cat(h),
        torch.cat(context),
    )  # (2N,)
    return errors.chunk(2)


def flow_dpo_loss(
    err_w: Tensor, err_l: Tensor, ref_err_w: Tensor, ref_err_l: Tensor, beta: float = DPO_BETA
) -> tuple[Tensor, dict[str, float]]:
    """Diffusion-DPO (Wallace et al. 2023, eq. 14) for flow matching, over N pairs.

    e = ||v(x_t, t) - (x1 - x0)||² / (D·P), the per-example flow-matching error, computed for winner and
    loser at the same (x0, t) by the policy (e_w, e_l) and the frozen reference (e_ref_w, e_ref_l):

        Δ = (e_w - e_ref_w) - (e_l - e_ref_l),     L = -mean log σ(-β·Δ).

    L falls as the policy lowers its error on the winner and raises it on the loser, relative to the
    reference; at policy = reference, L = log 2. The reference errors are treated as constants.

    β (default 500): Diffusion-DPO's code writes -0.5·β_dpo·Δ on per-element ε-prediction MSEs, so our β
    is β_dpo/2: 2500 for SD 1.5 (β_dpo = 5000), 1000 for Tango 2's audio latents (β_dpo = 2000). On the
    path x_t = x0 + t·(x1 - x0), an ε (= x0) estimate errs by t times the velocity error, so ε-MSEs are
    t² times velocity MSEs, E[t²] ≈ 0.29 under our logit-normal t: the same model change moves our errors
    ~3.4x more, giving β ≈ 290-730. We take 500: β·Δ = 1 when the margin moves by 0.002 per latent
    element, about 0.1 % of the ~2 per element that ||x1 - x0||² is on normalised latents.
    """
    shapes = {tuple(e.shape) for e in (err_w, err_l, ref_err_w, ref_err_l)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"errors must all be (N,), got shapes {shapes}")
    if not beta > 0.0:
        raise ValueError(f"beta must be positive, got {beta}")
    delta = (err_w - ref_err_w.detach()) - (err_l - ref_err_l.detach())  # (N,)
    loss = -F.logsigmoid(-beta * delta).mean()
    stats = {
        "loss": loss.item(),
        "implicit_accuracy": (delta < 0).float().mean().item(),
        "margin": (-beta * delta).mean().item(),
        "policy_error_w": err_w.mean().item(),
        "policy_error_l": err_l.mean().item(),
        "reference_error_w": ref_err_w.mean().item(),
        "reference_error_l": ref_err_l.mean().item(),
    }
    return loss, stats

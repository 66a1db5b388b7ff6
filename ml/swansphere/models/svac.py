"""Spatial Video-Audio Contrastive learning, SVAC (paper §3.2, eqs. 1-3; App. B.2).

A video encoder (`video_encoder.py`, VideoMAE-V2 family) and an audio encoder (`audio_encoder.py`,
AudioMAE family) are projected by heads into one Dv space. Video embeddings come one per video step
(4 fps) and are aligned to the audio's latent frames by the causal nearest rule (`align_nearest`);
s(·) is the temporally aligned cosine similarity, the mean over latent frames t of cos(v_t, a_t).

Loss (eq. 1): L = 1/(2N) Σ_i [L_NCE(v_i, a_i, N_i^a) + L_NCE(a_i, v_i, N_i^v)], L_NCE of eq. 2 with
the negatives of eq. 3, as explicit logit matrices whose row i has its positive in column i:
- video queries (N, N+2): columns 0..N-1 = a_j, column N = ã_i^time, column N+1 = ã_i^spat;
- audio queries (N, N+1): columns 0..N-1 = v_j, column N = ṽ_i^spat.
ã^time: the waveform circularly shifted by whole latent frames, at least `min_shift_s` either way
round (a shift of L-1 frames would be a 1-frame shift backwards). The shifted waveform is encoded
again: the audio encoder attends over the whole clip with absolute positions, so shifting its output
sequence would not be what it makes of desynchronised audio.
ã^spat: the FOA rotated with |yaw| in [min_yaw, 180]° and pitch, roll within ±max_tilt°
(`swansphere.foa.rotation_matrix` / `foa_rotation`): sources near the horizon move by >= ~min_yaw.
ṽ^spat: the frames rolled by a yaw |Δ| in [min_yaw, 180]° (`swansphere.equirect.yaw_shift_columns`).
DESIGN §4: an FOA yaw of Δ matches a roll of −Δ/360·W columns, so rotating BOTH modalities together
keeps a positive; each negative here changes one modality only.
Temperature: a learned log τ (as CLIP), starting at `temperature`, τ clamped to [0.01, 1]; fixed if
`learn_temperature` is False. It stays trainable after `freeze_encoders()`: it belongs to the loss.

Heads (App. B.2: 6.13 M audio, 6.82 M video parameters): audio Linear-GELU-Linear per latent frame;
video an attention pooling of each step's spatial tokens (a learned query per head scores keyed
tokens, so the direction attended to survives in the pooled vector), then the same MLP.
"""

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from swansphere.equirect import yaw_shift_columns
from swansphere.foa import foa_rotation, rotation_matrix
from swansphere.models.audio_encoder import AudioEncoder, AudioEncoderConfig
from swansphere.models.video_encoder import MLP, VideoEncoder, VideoEncoderConfig, VideoEncoderState

MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 1.0
"""Bounds of τ (CLIP caps its logit scale at 100)."""


@dataclass(frozen=True)
class SVACConfig:
    """Encoders, heads and the negatives of eq. 3; `paper()` matches App. B.2."""

    video: VideoEncoderConfig = field(default_factory=VideoEncoderConfig.tiny)
    """The VideoMAE-V2 style encoder (its `frame_size` is what the engine resizes frames to)."""
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig.tiny)
    """The AudioMAE style encoder (its `latent_hop` must equal the VAE's hop)."""
    proj_dim: int = 32
    """Dv, the shared space and the width of the LM's video tokens (= SpatialLMConfig.video_dim)."""
    head_hidden: int = 128
    """Hidden width of both projection MLPs (paper preset: sized to App. B.2's 6.13 M / 6.82 M)."""
    temperature: float = 0.07
    """τ of eq. 2 at the start (CLIP's 0.07)."""
    learn_temperature: bool = True
    """Learn log τ with the heads, or keep τ fixed."""
    min_shift_s: float = 1.0
    """Smallest circular shift of ã^time, either way round (4 video frames at 4 fps)."""
    min_yaw_deg: float = 30.0
    """Smallest |yaw| of the FOA rotation (ã^spat) and of the video roll (ṽ^spat)."""
    max_tilt_deg: float = 30.0
    """Pitch and roll of ã^spat are uniform in ±max_tilt_deg."""

    def __post_init__(self) -> None:
        if self.proj_dim < 1 or self.head_hidden < 1:
            raise ValueError(
                f"proj_dim and head_hidden must be >= 1, got {self.proj_dim}, {self.head_hidden}"
            )
        if not MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE:
            raise ValueError(
                f"temperature must be in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}], got {self.temperature}"
            )
        if self.min_shift_s <= 0 or not 0 < self.min_yaw_deg <= 180 or not 0 <= self.max_tilt_deg <= 90:
            raise ValueError("need min_shift_s > 0, 0 < min_yaw_deg <= 180 and 0 <= max_tilt_deg <= 90")

    @classmethod
    def tiny(cls) -> "SVACConfig":
        return cls()

    @classmethod
    def paper(cls) -> "SVACConfig":
        """ViT-B encoders (VideoMAE-V2, AudioMAE), Dv = 768, heads of ~6.15 M (audio) and ~6.74 M (video)."""
        return cls(
            video=VideoEncoderConfig.paper(), audio=AudioEncoderConfig.paper(), proj_dim=768, head_hidden=4000
        )


def align_nearest(features: Tensor, n_target: int, source_fps: float, target_fps: float) -> Tensor:
    """(B, Tv, C) -> (B, n_target, C), the causal nearest rule: target frame j (starting at j / target_fps s)
    takes source step floor(j / target_fps · source_fps), clipped to the last step; never a future one."""
    if features.shape[1] == 0 or n_target < 0 or source_fps <= 0 or target_fps <= 0:
        raise ValueError(
            f"align_nearest: need Tv >= 1, n_target >= 0 and positive rates, got {features.shape}"
        )
    index = nearest_steps(n_target, source_fps, target_fps).clamp(max=features.shape[1] - 1)
    return features[:, index.to(features.device)]


def nearest_steps(n_target: int, source_fps: float, target_fps: float) -> Tensor:
    """(n_target,) the source step of each target frame by the causal nearest rule, before clipping to
    the source's length: floor(j / target_fps · source_fps)."""
    start_s = torch.arange(n_target, dtype=torch.float64) / target_fps
    return torch.floor(start_s * source_fps).long()


def similarity(v: Tensor, a: Tensor) -> Tensor:
    """s(v_i, a_i) of eq. 2 for paired (B, L, D) sequences: mean over t of cos(v_t, a_t) -> (B,)."""
    return (F.normalize(v, dim=-1) * F.normalize(a, dim=-1)).sum(dim=-1).mean(dim=-1)


def similarity_matrix(q: Tensor, k: Tensor) -> Tensor:
    """s(q_i, k_j) for every pair of (N, L, D) and (M, L, D) sequences -> (N, M)."""
    return torch.einsum("itd,jtd->ij", F.normalize(q, dim=-1), F.normalize(k, dim=-1)) / q.shape[1]


@dataclass(frozen=True)
class Negatives:
    """The augmentations behind one batch's hard negatives (eq. 3), one entry per clip."""

    shift_frames: Tensor
    """(N,) int64: circular shift of ã^time in latent frames."""
    rotation_deg: Tensor
    """(N, 3): yaw, pitch, roll of ã^spat (swansphere.foa.rotation_matrix conventions)."""
    video_yaw_deg: Tensor
    """(N,): yaw of ṽ^spat; the frames roll by yaw_shift_columns(yaw, W)."""


def sample_negatives(
    batch: int, latent_frames: int, config: SVACConfig, generator: torch.Generator
) -> Negatives:
    """Draws the hard negatives of eq. 3 for a batch of clips `latent_frames` long, from `generator` only
    (on its device)."""
    device = generator.device
    min_shift = math.ceil(config.min_shift_s * config.audio.latent_fps)
    if latent_frames < 2 * min_shift:
        raise ValueError(
            f"SVAC: clips need >= {2 * min_shift} latent frames for a {config.min_shift_s} s circular shift, "
            f"got {latent_frames}"
        )

    def yaw() -> Tensor:  # (N,) |yaw| uniform in [min_yaw, 180], random sign
        sign = torch.randint(0, 2, (batch,), generator=generator, device=device) * 2 - 1
        return sign * (
            config.min_yaw_deg
            + (180 - config.min_yaw_deg) * torch.rand(batch, generator=generator, device=device)
        )

    shift = torch.randint(
        min_shift, latent_frames - min_shift + 1, (batch,), generator=generator, device=device
    )
    tilt = (
        2 * torch.rand(batch, 2, generator=generator, device=device) - 1
    ) * config.max_tilt_deg  # (N, 2) pitch, roll
    return Negatives(shift, torch.cat([yaw()[:, None], tilt], dim=1), yaw())


def shift_audio(foa: Tensor, shift_frames: Tensor, hop: int) -> Tensor:
    """ã^time: each clip (N, 4, L·hop) rolled circularly by its shift in latent frames."""
    return torch.stack(
        [torch.roll(clip, int(s) * hop, dims=-1) for clip, s in zip(foa, shift_frames, strict=True)]
    )


def rotate_foa(foa: Tensor, rotation_deg: Tensor) -> Tensor:
    """ã^spat: each clip (N, 4, S) rotated by its (yaw, pitch, roll) in degrees (DESIGN §4)."""
    matrices = np.stack([foa_rotation(rotation_matrix(*angles.tolist())) for angles in rotation_deg])
    m = torch.from_numpy(matrices).to(foa)  # (N, 4, 4)
    return torch.einsum("nij,njs->nis", m, foa)


def roll_video(frames: Tensor, yaw_deg: Tensor) -> Tensor:
    """ṽ^spat: each clip (N, T, 3, H, W) rolled in yaw as an FOA yaw rotation would move the scene."""
    width = frames.shape[-1]
    return torch.stack(
        [
            torch.roll(c, yaw_shift_columns(float(y), width), dims=-1)
            for c, y in zip(frames, yaw_deg, strict=True)
        ]
    )


@dataclass(frozen=True)
class Candidates:
    """Embeddings (N, L, Dv) of one batch's queries, positives and hard negatives."""

    video: Tensor
    """v_i, aligned to the latent frames."""
    audio: Tensor
    """a_i."""
    audio_shifted: Tensor
    """ã_i^time."""
    audio_rotated: Tensor
    """ã_i^spat."""
    video_rolled: Tensor
    """ṽ_i^spat, aligned."""


def contrastive_logits(c: Candidates) -> tuple[Tensor, Tensor]:
    """Similarities before 1/τ: video queries (N, N+2), audio queries (N, N+1); positives in column i."""
    video = torch.cat(
        [
            similarity_matrix(c.video, c.audio),  # a_j: positive j = i, semantic negatives j ≠ i
            similarity(c.video, c.audio_shifted)[:, None],  # ã_i^time
            similarity(c.video, c.audio_rotated)[:, None],  # ã_i^spat
        ],
        dim=1,
    )
    audio = torch.cat(
        [similarity_matrix(c.audio, c.video), similarity(c.audio, c.video_rolled)[:, None]], dim=1
    )
    return video, audio


def info_nce(video_logits: Tensor, audio_logits: Tensor, temperature: Tensor) -> tuple[Tensor, Tensor]:
    """Eq. 2 per row (cross-entropy with the positive in column i): per-query losses (N,) for each side."""
    target = torch.arange(video_logits.shape[0], device=video_logits.device)
    video = F.cross_entropy(video_logits / temperature, target, reduction="none")
    return video, F.cross_entropy(audio_logits / temperature, target, reduction="none")


class AttentionPool(nn.Module):
    """Pools the S spatial tokens of each step with a learned query per head: (B, T, S, C) -> (B, T, C)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.key = nn.Linear(dim, dim)
        self.query = nn.Parameter(torch.randn(heads, dim // heads) * 0.02)  # (H, hd): near-uniform at start

    def forward(self, x: Tensor) -> Tensor:
        B, T, S, C = x.shape
        keys = self.key(x).view(B, T, S, self.heads, -1)  # (B, T, S, H, hd)
        weights = torch.einsum("btshd,hd->bths", keys, self.query).mul(keys.shape[-1] ** -0.5).softmax(dim=-1)
        return torch.einsum("bths,btshd->bthd", weights, x.view(B, T, S, self.heads, -1)).reshape(B, T, C)


class SVAC(nn.Module):
    """Encoders + heads of §3.2; `video_tokens` is what the spatial LM consumes."""

    def __init__(self, config: SVACConfig):
        super().__init__()
        self.config = config
        video, audio = config.video, config.audio
        self.video_encoder = VideoEncoder(video)
        self.audio_encoder = AudioEncoder(audio)
        self.video_pool = AttentionPool(video.dim, video.heads)
        self.video_head = MLP(video.dim, config.head_hidden, config.proj_dim)
        self.audio_head = MLP(audio.dim, config.head_hidden, config.proj_dim)
        log_tau = torch.tensor(math.log(config.temperature))
        self.log_temperature = nn.Parameter(log_tau, requires_grad=config.learn_temperature)

    @property
    def temperature(self) -> Tensor:
        return self.log_temperature.exp().clamp(MIN_TEMPERATURE, MAX_TEMPERATURE)

    def video_embeddings(self, frames: Tensor) -> Tensor:
        """Frames (B, T, 3, H, W) in [0, 1] -> (B, Tv, Dv), one per video step; block-causal in time."""
        return self.video_head(self.video_pool(self.video_encoder(frames)))

    def video_embeddings_stream(
        self, frames: Tensor, state: VideoEncoderState | None
    ) -> tuple[Tensor, VideoEncoderState]:
        """`video_embeddings` of a stream's next frames (B, T, 3, H, W), given the encoder state its
        earlier frames left (None: its first frames): each call costs only its own frames."""
        tokens, state = self.video_encoder.stream(frames, state)
        return self.video_head(self.video_pool(tokens)), state

    def audio_embeddings(self, foa: Tensor) -> Tensor:
        """FOA (B, 4, N) -> (B, L, Dv), one per latent frame."""
        return self.audio_head(self.audio_encoder(foa))

    def video_tokens(self, frames: Tensor, n_latent_frames: int) -> Tensor:
        """(B, L, Dv) projected video embeddings aligned to L latent frames (causal nearest rule)."""
        fps = (self.config.video.token_fps, self.config.audio.latent_fps)
        return align_nearest(self.video_embeddings(frames), n_latent_frames, *fps)

    def similarity(self, v: Tensor, a: Tensor) -> Tensor:
        """Temporally aligned cosine similarity of paired (B, L, D) sequences -> (B,)."""
        return similarity(v, a)

    def freeze_encoders(self) -> None:
        """App. B.2: both pretrained encoders frozen; only the heads (and log τ) train."""
        self.video_encoder.requires_grad_(False)
        self.audio_encoder.requires_grad_(False)

    def candidates(self, frames: Tensor, foa: Tensor, negatives: Negatives) -> Candidates:
        """Embeds the batch and its hard negatives: 3 audio and 2 video passes, batched."""
        N, hop = frames.shape[0], self.config.audio.latent_hop
        if foa.shape[0] != N:
            raise ValueError(f"SVAC: {N} videos but {foa.shape[0]} audio clips")
        L = math.ceil(foa.shape[-1] / hop)
        foa = F.pad(foa, (0, L * hop - foa.shape[-1]))  # (N, 4, L·hop)
        variants = [
            foa,
            shift_audio(foa, negatives.shift_frames, hop),
            rotate_foa(foa, negatives.rotation_deg),
        ]
        audio, audio_shifted, audio_rotated = self.audio_embeddings(torch.cat(variants)).split(N)
        clips = torch.cat([frames, roll_video(frames, negatives.video_yaw_deg)])
        video, video_rolled = self.video_tokens(clips, L).split(N)
        return Candidates(video, audio, audio_shifted, audio_rotated, video_rolled)

    def loss(
        self, frames: Tensor, foa: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, float]]:
        """Eq. 1 for N pairs, frames (N, T, 3, H, W) and FOA (N, 4, S); negatives drawn from `generator`."""
        L = math.ceil(foa.shape[-1] / self.config.audio.latent_hop)
        negatives = sample_negatives(frames.shape[0], L, self.config, generator)
        video_logits, audio_logits = contrastive_logits(self.candidates(frames, foa, negatives))
        video_loss, audio_loss = info_nce(video_logits, audio_logits, self.temperature)
        loss = (video_loss.sum() + audio_loss.sum()) / (2 * len(video_loss))  # eq. 1
        target = torch.arange(len(video_loss), device=video_logits.device)
        stats = {
            "loss": loss.item(),
            "loss_video_query": video_loss.mean().item(),
            "loss_audio_query": audio_loss.mean().item(),
            "accuracy_video_query": (video_logits.argmax(dim=1) == target).float().mean().item(),
            "accuracy_audio_query": (audio_logits.argmax(dim=1) == target).float().mean().item(),
            "temperature": self.temperature.item(),
        }
        return loss, stats

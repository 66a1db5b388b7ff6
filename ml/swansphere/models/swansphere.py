"""SwanSphere: the composed generator of paper §3.3 (Fig. 2) and its presets.

Per patch t (4 latent frames = 185.8 ms):
    history_t = HistoryEncoder(z_{t-1})                    (learned start token at t = 0)
    h_t       = SpatialLM(video tokens of patch t + history_t, FLAN-T5 text via cross-attention)
    z_t       = LocDiT flow matching from noise, given h_t and the clean context z_{t-2}, z_{t-1}
The SVAC video encoder gives the video tokens; the VAE decodes z to FOA. Training (teacher
forcing) uses the ground-truth previous patches; generation feeds its own (see `engine.py`).
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from swansphere.models.history import HistoryEncoder
from swansphere.models.locdit import LocDiT, LocDiTConfig
from swansphere.models.spatial_lm import SpatialLM, SpatialLMConfig
from swansphere.models.svac import SVAC, SVACConfig
from swansphere.models.text_encoder import TextEncoder
from swansphere.models.vae import FOAVAE, VAEConfig


@dataclass(frozen=True)
class TextConfig:
    """Where the frozen FLAN-T5 encoder comes from."""

    pretrained: str | None = None
    """Local folder or s3:// prefix of a FLAN-T5 checkpoint; None = the tiny random T5 (byte tokenizer),
    whose weights then live in our checkpoint."""
    dim: int = 32
    """Dt, the width of the encoder states (FLAN-T5-large: 1024); checked against the loaded model."""
    max_length: int = 64
    """Longest caption in tokens; longer ones are truncated."""
    seed: int = 0
    """Seed of the tiny random T5."""

    def __post_init__(self) -> None:
        if self.dim < 1 or self.max_length < 2:
            raise ValueError(f"TextConfig: dim >= 1 and max_length >= 2, got {self.dim}, {self.max_length}")


@dataclass(frozen=True)
class SwanSphereConfig:
    """One typed source of truth for every component; shared sizes are checked here."""

    vae: VAEConfig = field(default_factory=VAEConfig.tiny)
    svac: SVACConfig = field(default_factory=SVACConfig.tiny)
    text: TextConfig = field(default_factory=TextConfig)
    lm: SpatialLMConfig = field(default_factory=SpatialLMConfig.tiny)
    locdit: LocDiTConfig = field(default_factory=LocDiTConfig.tiny)

    def __post_init__(self) -> None:
        shared = {
            "latent width (vae.latent_dim = locdit.latent_dim)": (
                self.vae.latent_dim,
                self.locdit.latent_dim,
            ),
            "condition width (lm.d_model = locdit.cond_dim)": (self.lm.d_model, self.locdit.cond_dim),
            "video token width (svac.proj_dim = lm.video_dim)": (self.svac.proj_dim, self.lm.video_dim),
            "text width (text.dim = lm.text_dim)": (self.text.dim, self.lm.text_dim),
            "patch size (lm.patch_frames = locdit.patch_frames)": (
                self.lm.patch_frames,
                self.locdit.patch_frames,
            ),
        }
        for name, (a, b) in shared.items():
            if a != b:
                raise ValueError(f"SwanSphereConfig: {name} differ: {a} != {b}")

    @property
    def patch_frames(self) -> int:
        return self.lm.patch_frames

    @property
    def patch_samples(self) -> int:
        """Audio samples per patch: 4 · 2048 = 8192 (185.8 ms at 44.1 kHz)."""
        return self.patch_frames * self.vae.hop_length

    @classmethod
    def tiny(cls) -> "SwanSphereConfig":
        """Trains on 2 CPU cores in minutes; tests, CI and the shipped demo checkpoint."""
        return cls()

    @classmethod
    def paper(cls) -> "SwanSphereConfig":
        """The paper's scale: a ~1.09 B generator (LM + LocDiT + history + projections), FLAN-T5-large."""
        return cls(
            vae=VAEConfig.paper(),
            svac=SVACConfig.paper(),
            text=TextConfig(dim=1024, max_length=128),
            lm=SpatialLMConfig.paper(),
            locdit=LocDiTConfig.paper(),
        )


PRESETS = {"tiny": SwanSphereConfig.tiny, "paper": SwanSphereConfig.paper}


def preset(name: str) -> SwanSphereConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]()


def build_text_encoder(config: TextConfig) -> TextEncoder:
    """The frozen text encoder: FLAN-T5 from `pretrained`, else the tiny random one."""
    if config.pretrained is None:
        encoder = TextEncoder.tiny(seed=config.seed, max_length=config.max_length)
    else:
        encoder = TextEncoder.from_pretrained(config.pretrained, max_length=config.max_length)
    if encoder.dim != config.dim:
        raise ValueError(f"text encoder width {encoder.dim} != TextConfig.dim {config.dim}")
    return encoder


class SwanSphere(nn.Module):
    """All components of the paper's model; `generator_modules` are what §4.3 counts as 1.09 B."""

    def __init__(self, config: SwanSphereConfig, text_encoder: TextEncoder | None = None):
        super().__init__()
        self.config = config
        self.vae = FOAVAE(config.vae)
        self.svac = SVAC(config.svac)
        self.text_encoder = text_encoder if text_encoder is not None else build_text_encoder(config.text)
        self.history = HistoryEncoder(
            latent_dim=config.vae.latent_dim, d_model=config.lm.d_model, patch_frames=config.patch_frames
        )
        self.lm = SpatialLM(config.lm)
        self.locdit = LocDiT(config.locdit)
        # Latent normalisation: LocDiT works on (z - mean) / std, statistics of the training data.
        self.register_buffer("latent_mean", torch.zeros(config.vae.latent_dim))
        self.register_buffer("latent_std", torch.ones(config.vae.latent_dim))

    def generator_modules(self) -> dict[str, nn.Module]:
        return {"spatial_lm": self.lm, "locdit": self.locdit, "history": self.history}

    def train_generator_only(self) -> None:
        """§3.3 training and ODPO: the VAE, SVAC and text encoder stay frozen; the generator learns."""
        self.requires_grad_(False)
        for module in self.generator_modules().values():
            module.requires_grad_(True)

    def encoder_modules(self) -> dict[str, nn.Module]:
        return {"vae": self.vae, "svac": self.svac, "text_encoder": self.text_encoder}

    def normalize_latents(self, z: Tensor) -> Tensor:
        return (z - self.latent_mean[:, None]) / self.latent_std[:, None]

    def denormalize_latents(self, z: Tensor) -> Tensor:
        return z * self.latent_std[:, None] + self.latent_mean[:, None]

    def training_loss(
        self,
        z: Tensor,
        video_tokens: Tensor | None,
        text: Tensor | None,
        text_mask: Tensor | None,
        generator: torch.Generator,
        video_present: Tensor | None = None,
        text_present: Tensor | None = None,
    ) -> Tensor:
        """Teacher-forced flow-matching loss over every patch of normalised latents z (B, D, T·P).

        video_tokens (B, T·P, Dv) aligned to latent frames; text (B, S, Dt) with text_mask (B, S).
        """
        patches, h, context = self.patch_conditions(
            z, video_tokens, text, text_mask, video_present, text_present
        )
        return self.locdit.loss(patches, h, context, generator)

    def patch_conditions(
        self,
        z: Tensor,
        video_tokens: Tensor | None,
        text: Tensor | None,
        text_mask: Tensor | None,
        video_present: Tensor | None = None,
        text_present: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Teacher forcing: every patch's clean latents (B·T, D, P), its LM output h_t (B·T, C) from the
        ground-truth history, and its LocDiT context (B·T, D, context_frames). ODPO scores winner and
        loser with these (odpo.pair_flow_errors)."""
        B, D, L = z.shape
        P = self.config.patch_frames
        T = L // P
        if L % P or T == 0:
            raise ValueError(f"latent length {L} is not a positive multiple of the patch size {P}")
        video = None if video_tokens is None else video_tokens.reshape(B, T, P, -1)  # (B, T, P, Dv)
        h = self.lm(
            video, self.history.sequence(z), text, text_mask, video_present, text_present
        )  # (B, T, C)
        patches = z.reshape(B, D, T, P).permute(0, 2, 1, 3).reshape(B * T, D, P)  # (B·T, D, P)
        return patches, h.reshape(B * T, -1), self.boundary_context(z)

    def boundary_context(self, z: Tensor) -> Tensor:
        """LocDiT's clean context for every patch of z (B, D, T·P): (B·T, D, context_frames),
        the latents of patches t-2 and t-1, zeros before the start of the clip."""
        B, D, L = z.shape
        P, C = self.config.patch_frames, self.config.locdit.context_frames
        T = L // P
        windows = F.pad(z, (C, 0)).unfold(dimension=2, size=C, step=P)[:, :, :T]  # (B, D, T, C)
        return windows.permute(0, 2, 1, 3).reshape(B * T, D, C)

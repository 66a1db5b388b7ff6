"""SwanSphere training (§3.3): teacher forcing over every patch, the VAE, SVAC and T5 frozen.

The frozen encoders run once per clip, not once per step: `encode_clips` turns each clip into its
normalised VAE posterior means (statistics of the training data stored in the model as
`latent_mean`, `latent_std`) and its SVAC video tokens, and training draws random patch-aligned
windows of those. Each sample drops its video and its text independently (null embeddings, so
generation can run with either missing); LocDiT drops h_t and the context itself for two-weight
guidance. The curriculum stage (App. B.3) feeds pseudo-FOA clips, which have no video.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from swansphere.conventions import SAMPLE_RATE
from swansphere.models.swansphere import SwanSphere
from swansphere.train.config import GeneratorJobConfig
from swansphere.train.trainer import Objective


@dataclass
class EncodedClip:
    z: Tensor  # (D, L) normalised latents
    video: Tensor | None  # (L, Dv) SVAC video tokens aligned to the latent frames
    caption: str


@dataclass
class LatentBatch:
    z: Tensor  # (B, D, T·P)
    video: Tensor | None  # (B, T·P, Dv), None when a clip of the batch has no video
    captions: list[str]


@torch.no_grad()
def encode_clips(model: SwanSphere, dataset: Dataset) -> list[EncodedClip]:
    """Every clip through the frozen VAE encoder and SVAC video encoder, once."""
    device = model.latent_mean.device
    encoded = []
    for i in range(len(dataset)):
        clip = dataset[i]
        audio = model.vae.pad_to_hop(clip.foa[None].to(device))
        z = model.normalize_latents(model.vae.encode(audio, sample=False))[0]  # (D, L)
        video = None
        if clip.frames is not None:
            video = model.svac.video_tokens(clip.frames[None].to(device), z.shape[-1])[0]  # (L, Dv)
        encoded.append(EncodedClip(z.cpu(), None if video is None else video.cpu(), clip.caption))
    return encoded


def latent_batches(
    clips: list[EncodedClip], batch_size: int, seconds: float, model: SwanSphere, seed: int, rank: int
) -> Callable[[int, int], LatentBatch]:
    """`batch_at(step, micro)`: windows of whole patches (about `seconds` long) from clips drawn with
    replacement, seeded by (seed, rank, step, micro) alone, so resumes are exact."""
    patch_frames = model.config.patch_frames
    length = max(1, round(seconds * SAMPLE_RATE / model.vae.hop_length / patch_frames)) * patch_frames
    shortest = min(clip.z.shape[-1] for clip in clips)
    length = min(length, shortest // patch_frames * patch_frames)
    if length == 0:
        raise ValueError(f"clips of {shortest} latent frames are shorter than one patch ({patch_frames})")

    def batch_at(step: int, micro: int) -> LatentBatch:
        state = np.random.SeedSequence([seed, rank, step, micro]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(state))
        chosen = torch.randint(len(clips), (batch_size,), generator=generator).tolist()
        starts = [
            int(torch.randint(clips[i].z.shape[-1] - length + 1, (1,), generator=generator)) for i in chosen
        ]
        z = torch.stack([clips[i].z[:, s : s + length] for i, s in zip(chosen, starts, strict=True)])
        videos = [clips[i].video for i in chosen]
        video = None
        if all(v is not None for v in videos):
            video = torch.stack([v[s : s + length] for v, s in zip(videos, starts, strict=True)])
        return LatentBatch(z, video, [clips[i].caption for i in chosen])

    return batch_at


class GeneratorObjective(Objective):
    def __init__(self, model: SwanSphere, config: GeneratorJobConfig):
        super().__init__()
        self.model = model
        self.config = config
        model.train_generator_only()

    def forward(
        self, batch: LatentBatch, generator: torch.Generator, step: int
    ) -> tuple[Tensor, dict[str, float]]:
        device = generator.device
        z = batch.z.to(device)
        video = None if batch.video is None else batch.video.to(device)
        with torch.no_grad():
            text, mask = self.model.text_encoder.encode([caption or None for caption in batch.captions])
        B = z.shape[0]
        video_present = torch.rand(B, generator=generator, device=device) >= self.config.video_dropout
        text_present = torch.rand(B, generator=generator, device=device) >= self.config.text_dropout
        loss = self.model.training_loss(z, video, text, mask, generator, video_present, text_present)
        return loss, {"loss": loss.item()}

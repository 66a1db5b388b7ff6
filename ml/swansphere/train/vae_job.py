"""VAE training (App. B.1): 4-channel MR-STFT (1/4 per channel) + KL + EnCodec MS-STFT discriminator
with feature matching, L1 weight 0; then a frozen-encoder decoder phase (`vae.phase: decoder`).

Both players share one scalar (see trainer.py):
    L = L_rec + λ_sp·L_spatial + λ_kl·KL + λ_wav·L1_rel
        + λ_adv·l_g(D_sg(x̂)) + λ_feat·l_feat(D_sg; x, x̂) + l_d(D; x, sg(x̂))
where D_sg runs the discriminator with detached weights (its gradient reaches only the VAE) and sg(x̂)
detaches the reconstruction (the hinge loss l_d reaches only D).
"""

from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from swansphere.datasets import Batch
from swansphere.models.discriminator import (
    DiscriminatorConfig,
    MultiScaleSTFTDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from swansphere.models.swansphere import SwanSphere
from swansphere.models.vae import STFTLossConfig, multi_resolution_stft_loss
from swansphere.train.config import VAEJobConfig
from swansphere.train.trainer import Objective


def sum_and_difference(foa: Tensor) -> Tensor:
    """(B, 4, N) AmbiX -> (B, 6, N): W±Y, W±Z, W±X. Their magnitudes carry each axis's sign relative
    to W, which per-channel magnitudes cannot: the FOA analogue of SAO's mid/side STFT loss."""
    w, directional = foa[:, :1], foa[:, 1:]
    return torch.cat([w + directional, w - directional], dim=1) / 2


def clip_spread(mean: Tensor) -> float:
    """How much the latent tells clips apart: the spread across the batch of each clip's time-averaged
    posterior mean, over the spread in time within a clip. Near 0 is a collapsed encoder."""
    mean = mean.detach()
    between = mean.mean(dim=-1).std(dim=0).mean()
    within = mean.std(dim=-1).mean()
    return float(between / within.clamp_min(1e-12))


class VAEObjective(Objective):
    def __init__(self, model: SwanSphere, config: VAEJobConfig, discriminator: DiscriminatorConfig):
        super().__init__()
        self.model = model
        self.config = config
        self.stft = STFTLossConfig(fft_sizes=config.stft_fft_sizes)
        model.requires_grad_(False)
        trained = model.vae.decoder if config.phase == "decoder" else model.vae
        trained.requires_grad_(True)
        adversarial = config.adversarial_weight > 0 or config.feature_weight > 0
        self.discriminator = MultiScaleSTFTDiscriminator(discriminator) if adversarial else None

    def param_groups(self) -> list[dict[str, Any]]:
        groups = [
            {
                "name": "vae",
                "params": [p for p in self.model.vae.parameters() if p.requires_grad],
                "lr_scale": 1.0,
            }
        ]
        if self.discriminator is not None:
            groups.append(
                {"name": "discriminator", "params": list(self.discriminator.parameters()), "lr_scale": 1.0}
            )
        return groups

    def forward(self, batch: Batch, generator: torch.Generator, step: int) -> tuple[Tensor, dict[str, float]]:
        vae = self.model.vae
        audio = vae.pad_to_hop(batch.foa.to(generator.device))
        if self.config.phase == "decoder":
            with torch.no_grad():
                mean, scale = vae.encode_posterior(audio)
        else:
            mean, scale = vae.encode_posterior(audio)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device)
        sampling = step >= self.config.deterministic_steps
        recon = vae.decode(mean + scale * noise if sampling else mean)  # z = μ + σ·ε
        rec = multi_resolution_stft_loss(recon, audio, self.stft)
        spatial = multi_resolution_stft_loss(sum_and_difference(recon), sum_and_difference(audio), self.stft)
        kl = vae.kl(mean, scale)
        waveform = ((recon - audio).abs().sum(-1) / audio.abs().sum(-1).clamp_min(1e-8)).mean()
        loss = (
            rec
            + self.config.spatial_weight * spatial
            + self.config.kl_weight * kl
            + self.config.waveform_weight * waveform
        )
        stats = {
            "loss/reconstruction": rec.item(),
            "loss/spatial": spatial.item(),
            "loss/kl": kl.item(),
            "loss/waveform": waveform.item(),
            "posterior/clip_spread": clip_spread(mean),
        }
        if self.discriminator is not None:
            d_loss = discriminator_loss(self.discriminator(audio), self.discriminator(recon.detach()))
            loss = loss + d_loss
            stats["loss/discriminator"] = d_loss.item()
            if step >= self.config.discriminator_start:
                frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
                fake = functional_call(self.discriminator, frozen, (recon,))
                with torch.no_grad():
                    real = self.discriminator(audio)
                adversarial = generator_adversarial_loss(fake)
                features = feature_matching_loss(real, fake)
                loss = (
                    loss
                    + self.config.adversarial_weight * adversarial
                    + self.config.feature_weight * features
                )
                stats |= {"loss/adversarial": adversarial.item(), "loss/feature_matching": features.item()}
        stats["loss"] = loss.item()
        return loss, stats

"""VAE training (App. B.1): 4-channel MR-STFT (1/4 per channel) + KL + EnCodec MS-STFT discriminator
with feature matching, L1 weight 0; then a frozen-encoder decoder phase (`vae.phase: decoder`).

Both players share one scalar (see trainer.py):
    L = L_rec + λ_sp·L_spatial + λ_doa·L_doa + λ_kl·KL + λ_wav·L1_rel
        + λ_adv·l_g(D_sg(x̂)) + λ_feat·l_feat(D_sg; x, x̂) + l_d(D; x, sg(x̂))
where D_sg runs the discriminator with detached weights (its gradient reaches only the VAE) and sg(x̂)
detaches the reconstruction (the hinge loss l_d reaches only D).
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from swansphere.conventions import SAMPLE_RATE, W, X, Y, Z
from swansphere.datasets import Batch
from swansphere.doa import BAND_HZ as DOA_BAND_HZ
from swansphere.doa import HOP as DOA_HOP
from swansphere.doa import N_FFT as DOA_N_FFT
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


def intensity_direction_loss(
    estimate: Tensor, target: Tensor, band_hz: tuple[float, float] = DOA_BAND_HZ
) -> Tensor:
    """Mean over frames of 1 − cos(I_est, I_ref), weighted by |I_ref|, on (B, 4, N) AmbiX.

    I = Σ_f Re{conj(W)·[X, Y, Z]} over the DoA protocol's band and STFT (doa.py, eq. 5), one vector
    per frame. Each frame counts by how directional the input is there, so reverberant tails and
    silence ask for nothing.
    """
    window = torch.hann_window(DOA_N_FFT, device=target.device, dtype=target.dtype)
    frequencies = torch.fft.rfftfreq(DOA_N_FFT, 1 / SAMPLE_RATE)
    band = ((frequencies >= band_hz[0]) & (frequencies <= band_hz[1])).to(target.device)

    def intensity(foa: Tensor) -> Tensor:  # (B, 4, N) -> (B, 3, T)
        batch, channels, length = foa.shape
        spec = torch.stft(foa.reshape(-1, length), DOA_N_FFT, DOA_HOP, window=window, return_complex=True)
        spec = spec.reshape(batch, channels, -1, spec.shape[-1])[:, :, band]  # (B, 4, F, T)
        return (spec[:, W : W + 1].conj() * spec[:, [X, Y, Z]]).real.sum(dim=2)

    reference, estimated = intensity(target), intensity(estimate)
    weight = reference.norm(dim=1)  # (B, T)
    cosine = F.cosine_similarity(estimated, reference, dim=1, eps=1e-12)  # (B, T)
    return ((1 - cosine) * weight).sum() / weight.sum().clamp_min(1e-12)


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
        doa = intensity_direction_loss(recon, audio)
        kl = vae.kl(mean, scale)
        waveform = ((recon - audio).abs().sum(-1) / audio.abs().sum(-1).clamp_min(1e-8)).mean()
        loss = (
            rec
            + self.config.spatial_weight * spatial
            + self.config.doa_weight * doa
            + self.config.kl_weight * kl
            + self.config.waveform_weight * waveform
        )
        stats = {
            "loss/reconstruction": rec.item(),
            "loss/spatial": spatial.item(),
            "loss/doa": doa.item(),
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

"""SVAC training (App. B.2): projection heads (and log τ) on frozen encoders, eq. 1's symmetric
InfoNCE with the four negative kinds. The tiny preset has no pretrained encoders to freeze, so its
config (`svac.freeze_encoders: false`) trains them too."""

import torch
from torch import Tensor

from swansphere.datasets import Batch
from swansphere.errors import InputError
from swansphere.models.swansphere import SwanSphere
from swansphere.train.config import SVACJobConfig
from swansphere.train.trainer import Objective


class SVACObjective(Objective):
    def __init__(self, model: SwanSphere, config: SVACJobConfig, seconds: float):
        super().__init__()
        shortest = 2 * model.config.svac.min_shift_s
        if seconds < shortest:
            raise InputError(
                f"data.seconds {seconds} is too short for SVAC's circular-shift negatives (>= {shortest})"
            )
        self.model = model
        model.requires_grad_(False)
        model.svac.requires_grad_(True)
        if config.freeze_encoders:
            model.svac.freeze_encoders()

    def forward(self, batch: Batch, generator: torch.Generator, step: int) -> tuple[Tensor, dict[str, float]]:
        if batch.frames is None:
            raise InputError("SVAC training needs video: every clip of the manifest must have one")
        device = generator.device
        loss, stats = self.model.svac.loss(batch.frames.to(device), batch.foa.to(device), generator)
        return loss, {f"svac/{k}" if k != "loss" else k: v for k, v in stats.items()}

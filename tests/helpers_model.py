"""A tiny SwanSphere whose untrained outputs still depend on video, text and seed."""

import torch

from swansphere.models.swansphere import SwanSphere, SwanSphereConfig


def tiny_model(seed: int = 0) -> SwanSphere:
    """Tiny preset with LocDiT's zero-initialised layers (adaLN-Zero) randomised."""
    torch.manual_seed(seed)
    model = SwanSphere(SwanSphereConfig.tiny()).eval()
    with torch.no_grad():
        for parameter in model.locdit.parameters():
            if not parameter.any():
                parameter.normal_(std=0.05)
    return model

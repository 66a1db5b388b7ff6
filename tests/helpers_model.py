"""A tiny SwanSphere whose untrained outputs still depend on video, text and seed; a tiny LocDiT with
random weights; one LM step."""

import numpy as np
import torch

from swansphere.models.locdit import LocDiT, LocDiTConfig
from swansphere.models.swansphere import SwanSphere, SwanSphereConfig
from swansphere.serving.backend import Backend, LMStateLostError, LMStep


def tiny_model(seed: int = 0) -> SwanSphere:
    """Tiny preset with LocDiT's zero-initialised layers (adaLN-Zero) randomised."""
    torch.manual_seed(seed)
    model = SwanSphere(SwanSphereConfig.tiny()).eval()
    with torch.no_grad():
        for parameter in model.locdit.parameters():
            if not parameter.any():
                parameter.normal_(std=0.05)
    return model


def random_locdit(seed: int = 0) -> LocDiT:
    """adaLN-Zero makes a fresh LocDiT output exactly zero; random weights make every path visible."""
    torch.manual_seed(seed)
    model = LocDiT(LocDiTConfig.tiny())
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def step_one(
    backend: Backend,
    stream_id: str,
    first_patch: int,
    video: np.ndarray | None,
    previous: np.ndarray,
    text: str | None,
) -> np.ndarray:
    """`Backend.spatial_lm` of one stream; its lost state raised."""
    (result,) = backend.spatial_lm([LMStep(stream_id, first_patch, video, previous, text)])
    if isinstance(result, LMStateLostError):
        raise result
    return result

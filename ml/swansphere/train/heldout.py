"""Held-out scoring of a generator: does it put the sound where the video shows it?

For each clip the model generates FOA twice from the same seed: from the video, and with the video
replaced by the null embedding (same duration, no text). Both are scored against the ground-truth
trajectory of the clip's first source by the segment protocol (degrees, all segments pooled) and
against the clip's reference FOA by the paper protocol (radians, DESIGN §5b). A model that is
*looking* scores far better with the video than without.

The VAE job scores its reconstructions the same way (`evaluate_reconstruction`): no generator can
place a sound more precisely than the decoder reproduces one, so this is the first number to watch.
"""

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from swansphere.conventions import SAMPLE_RATE
from swansphere.datasets import Clip
from swansphere.doa import segment_doa
from swansphere.engine import GenerationInput, GenerationSettings, generate_many
from swansphere.errors import InputError
from swansphere.metrics import paper_doa_errors, trajectory_errors
from swansphere.models.swansphere import SwanSphere
from swansphere.trajectory import Scene, Source

CONDITIONS = ("video", "null_video")
"""Generated with the clip's video / with the null video embedding."""


def pair_inputs(clip: Clip, settings: GenerationSettings) -> list[GenerationInput]:
    """The clip's two generations, in `CONDITIONS` order: from its video, and from the null video."""
    if clip.frames is None:
        raise InputError(f"{clip.name}: held-out clips need video")
    duration_s = clip.foa.shape[-1] / SAMPLE_RATE
    return [
        GenerationInput(clip.pixels(), settings=settings),
        GenerationInput(None, settings=settings, duration_s=duration_s),
    ]


def generate_pair(model: SwanSphere, clip: Clip, settings: GenerationSettings) -> dict[str, np.ndarray]:
    """FOA (4, N) generated from the clip's video and from the null video."""
    return dict(zip(CONDITIONS, generate_many(model, pair_inputs(clip, settings)), strict=True))


@torch.no_grad()
def reconstruct(model: SwanSphere, foa: Tensor) -> np.ndarray:
    """The VAE's reconstruction (4, N) of FOA (4, N), through the posterior mean."""
    audio = model.vae.pad_to_hop(foa[None].to(model.latent_mean.device))
    return model.vae.decode(model.vae.encode(audio, sample=False))[0, :, : foa.shape[-1]].cpu().numpy()


def evaluate_reconstruction(
    model: SwanSphere, dataset: Dataset, clips: int
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Per-clip rows and the summary of the VAE's reconstructions over the first `clips` clips."""
    model.eval()
    rows: list[dict[str, Any]] = []
    pooled: list[float] = []
    floors: list[float] = []
    for i in range(min(clips, len(dataset))):
        clip = dataset[i]
        source = _first_source(clip)
        floor = trajectory_errors(segment_doa(clip.foa.numpy()), source)
        errors = trajectory_errors(segment_doa(reconstruct(model, clip.foa)), source)
        floors += floor["angular_deg"]
        pooled += errors["angular_deg"]
        rows.append(
            {
                "clip": clip.name,
                "reference_angular_deg_median": round(floor["angular_deg_median"], 2),
                "reconstruction_angular_deg_median": round(errors["angular_deg_median"], 2),
            }
        )
    return rows, {
        "clips": float(len(rows)),
        "reference_segment_angular_deg_median": float(np.median(floors)),
        "reconstruction_segment_angular_deg_median": float(np.median(pooled)),
        "reconstruction_segment_angular_deg_mean": float(np.mean(pooled)),
    }


def evaluate(
    model: SwanSphere, dataset: Dataset, clips: int, settings: GenerationSettings
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Per-clip rows and the summary {condition}_{metric} over the first `clips` clips."""
    model.eval()
    rows: list[dict[str, Any]] = []
    pooled: dict[str, list[float]] = {c: [] for c in CONDITIONS}
    generated: dict[str, list[np.ndarray]] = {c: [] for c in CONDITIONS}
    references = []
    floors: list[float] = []
    chosen = [dataset[i] for i in range(min(clips, len(dataset)))]
    sources = [_first_source(clip) for clip in chosen]
    # Every clip's two generations at once: concurrent streams batch in LocDiT and the decoder.
    outputs = generate_many(model, [item for clip in chosen for item in pair_inputs(clip, settings)])
    for i, (clip, source) in enumerate(zip(chosen, sources, strict=True)):
        reference = clip.foa.numpy()
        references.append(reference)
        floor = trajectory_errors(segment_doa(reference), source)
        floors += floor["angular_deg"]
        row: dict[str, Any] = {
            "clip": clip.name,
            "reference_angular_deg_median": round(floor["angular_deg_median"], 2),
        }
        for condition, foa in zip(CONDITIONS, outputs[2 * i : 2 * i + 2], strict=True):
            n = min(foa.shape[-1], reference.shape[-1])
            generated[condition].append(foa[:, :n])
            errors = trajectory_errors(segment_doa(foa[:, :n]), source)
            pooled[condition] += errors["angular_deg"]
            row[f"{condition}_angular_deg_median"] = round(errors["angular_deg_median"], 2)
        rows.append(row)
    # The estimator's own floor: the reference audio scored against the same trajectories.
    summary: dict[str, float] = {
        "clips": float(len(rows)),
        "reference_segment_angular_deg_median": float(np.median(floors)),
    }
    for condition in CONDITIONS:
        summary[f"{condition}_segment_angular_deg_median"] = float(np.median(pooled[condition]))
        summary[f"{condition}_segment_angular_deg_mean"] = float(np.mean(pooled[condition]))
        paper = paper_doa_errors(
            generated[condition],
            [r[:, : g.shape[-1]] for r, g in zip(references, generated[condition], strict=True)],
        )
        summary |= {f"{condition}_paper_{key}": value for key, value in paper.items()}
    return rows, summary


def _first_source(clip: Clip) -> Source:
    if clip.trajectory is None:
        raise InputError(f"{clip.name}: held-out clips need a trajectory")
    return Scene.model_validate(clip.trajectory).sources[0]

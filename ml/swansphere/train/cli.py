"""`swansphere-train vae|svac|swansphere|odpo --config FILE [key=value ...]`, run under torchrun.

    torchrun --nproc-per-node 2 -m swansphere.train.cli swansphere --config ml/configs/tiny/swansphere.yaml

Each job loads its starting checkpoint (`init`), trains its part of the model with `Trainer`, then
writes `final.safetensors` and logs to MLflow: params, per-step losses, the checkpoint, a sample FOA
clip with its DoA plot and, with `data.eval_manifest`, the held-out table (the VAE's reconstructions,
or the generator's generations).
"""

import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from swansphere import storage
from swansphere.audio import write_audio
from swansphere.checkpoint import load_checkpoint, save_checkpoint
from swansphere.cli import OneLineParser
from swansphere.conventions import SAMPLE_RATE
from swansphere.datasets import Clip, ClipDataset, latent_statistics, pseudo_foa_dataset, synthsphere
from swansphere.doa import segment_doa
from swansphere.engine import GenerationSettings
from swansphere.errors import InputError
from swansphere.models.discriminator import DiscriminatorConfig
from swansphere.models.swansphere import SwanSphere, preset
from swansphere.plots import plot_doa
from swansphere.train import heldout
from swansphere.train.config import JOBS, TrainConfig, load_config
from swansphere.train.generator_job import GeneratorObjective, LatentBatch, encode_clips, latent_batches
from swansphere.train.odpo_job import ODPOObjective, odpo_batches
from swansphere.train.svac_job import SVACObjective
from swansphere.train.tracking import Tracker
from swansphere.train.trainer import (
    LATEST,
    Dist,
    Objective,
    Trainer,
    close_distributed,
    init_distributed,
    safetensors_metadata,
    seeded_batches,
)
from swansphere.train.vae_job import VAEObjective

log = logging.getLogger("swansphere.train")
FINAL = "final.safetensors"


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="swansphere-train", description=__doc__.splitlines()[0])
    parser.add_argument("job", choices=JOBS)
    parser.add_argument("--config", required=True, help="YAML/JSON job config (local path or s3://)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. steps=10")
    try:
        args = parser.parse_intermixed_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = load_config(args.config, args.overrides, job=args.job)
        dist = init_distributed()
        try:
            train(config, dist)
        finally:
            close_distributed()
    except InputError as err:
        print(f"swansphere-train {args.job}: error: {err}", file=sys.stderr)
        return 2
    return 0


def build_model(config: TrainConfig) -> SwanSphere:
    """The previous stage's checkpoint, or a fresh model of the preset (seeded)."""
    if config.init is not None:
        return load_checkpoint(config.init)
    torch.manual_seed(config.seed)
    return SwanSphere(preset(config.preset))


def build_objective(
    config: TrainConfig, model: SwanSphere, dataset: ClipDataset, resuming: bool
) -> Objective:
    if config.job == "vae":
        discriminator = (
            DiscriminatorConfig.paper() if config.preset == "paper" else DiscriminatorConfig.tiny()
        )
        return VAEObjective(model, config.vae, discriminator)
    if config.job == "svac":
        return SVACObjective(model, config.svac, config.data.seconds)
    if config.job == "swansphere":
        if not resuming:
            stats_generator = torch.Generator().manual_seed(config.seed)
            mean, std = latent_statistics(
                model.vae, dataset, config.data.seconds, config.generator.latent_stats_clips, stats_generator
            )
            model.latent_mean.copy_(mean)
            model.latent_std.copy_(std)
        return GeneratorObjective(model, config.generator)
    return ODPOObjective(model, load_checkpoint(config.init), config.odpo)


def train(config: TrainConfig, dist: Dist) -> None:
    model = build_model(config).to(dist.device)
    frame_size = model.config.svac.video.frame_size
    dataset = synthsphere(config.data.manifest, frame_size, cache=config.data.cache)
    if config.data.cache and config.job != "odpo":  # ODPO reads a few inputs per round
        dataset.preload(workers=os.cpu_count() or 1)
    resume_run = _resumed_run_id(config)
    objective = build_objective(config, model, dataset, resuming=resume_run is not None)
    tracker = Tracker(config.mlflow, active=dist.is_main)
    tracker.start(config.model_dump(), run_id=resume_run or None)
    try:
        trainer = Trainer(config, objective, dist, tracker)
        trainer.resume()  # before the batches: the latent cache needs the restored statistics
        # ODPO's batches come from generating with the model being trained: no prefetch there.
        trainer.run(_batches(config, dataset, objective, dist), prefetch=config.job != "odpo")
        if dist.is_main:
            with trainer.model_for_export() as exported:
                finish(config, exported, dataset, tracker, trainer.step)
    finally:
        tracker.finish()


def _batches(
    config: TrainConfig, dataset: ClipDataset, objective: Objective, dist: Dist
) -> Callable[[int, int], Any]:
    if config.job == "odpo":
        return odpo_batches(config, dataset, objective, dist)
    if config.job != "swansphere":
        data = config.data
        return seeded_batches(dataset, config.batch_size, data.seconds, config.seed, dist.rank, data.gain_db)
    model = objective.model
    spatial = latent_batches(
        encode_clips(model, dataset), config.batch_size, config.data.seconds, model, config.seed, dist.rank
    )
    if config.generator.curriculum_steps == 0:
        return spatial
    if config.data.curriculum_manifest is None:
        raise InputError("generator.curriculum_steps > 0 needs data.curriculum_manifest")
    pseudo = encode_clips(model, pseudo_foa_dataset(config.data.curriculum_manifest, config.seed))
    curriculum = latent_batches(pseudo, config.batch_size, config.data.seconds, model, config.seed, dist.rank)

    def staged(step: int, micro: int) -> LatentBatch:
        return curriculum(step, micro) if step < config.generator.curriculum_steps else spatial(step, micro)

    return staged


def finish(
    config: TrainConfig, model: SwanSphere, dataset: ClipDataset, tracker: Tracker, steps: int
) -> None:
    """Final checkpoint, sample, held-out table and registration (rank 0), after `steps` steps."""
    final_uri = storage.join(config.out, FINAL)
    save_checkpoint(model, final_uri, {"job": config.job, "steps": str(steps)})
    tracker.log_bytes(storage.read_bytes(final_uri), FINAL, folder="model")
    model.eval()
    clip = dataset[0]
    with tempfile.TemporaryDirectory(prefix="swansphere-sample-") as tmp:
        sample = _sample(config, model, clip)
        wav, png = Path(tmp) / f"sample_{clip.name}.wav", Path(tmp) / f"sample_{clip.name}_doa.png"
        write_audio(wav, sample, SAMPLE_RATE)
        plot_doa(segment_doa(sample), png, trajectory=clip.trajectory, title=f"{config.job}: {clip.name}")
        tracker.log_artifact(wav, "samples")
        tracker.log_artifact(png, "samples")
    if config.job != "svac" and config.data.eval_manifest:
        held_out = synthsphere(config.data.eval_manifest, model.config.svac.video.frame_size)
        if config.job == "vae":
            rows, summary = heldout.evaluate_reconstruction(model, held_out, config.data.eval_clips)
        else:
            rows, summary = heldout.evaluate(
                model, held_out, config.data.eval_clips, GenerationSettings(seed=config.seed)
            )
        tracker.log_table(rows, "eval/heldout.json")
        tracker.log_metrics({f"eval.{k}": v for k, v in summary.items()}, steps)
        log.info("held-out: %s", summary)
    if config.job in ("swansphere", "odpo"):
        tracker.register("model")


def _sample(config: TrainConfig, model: SwanSphere, clip: Clip) -> np.ndarray:
    """What the job's model makes of one clip: a VAE reconstruction, or a generation from its video."""
    if config.job in ("vae", "svac"):
        return heldout.reconstruct(model, clip.foa)
    return heldout.generate_pair(model, clip, GenerationSettings(seed=config.seed))["video"]


def _resumed_run_id(config: TrainConfig) -> str | None:
    """The MLflow run of the checkpoint a job resumes from ('' when it had none), else None."""
    latest = storage.join(config.out, LATEST)
    if not storage.exists(latest):
        return None
    folder = storage.join(config.out, storage.read_bytes(latest).decode().strip())
    data = storage.read_bytes(storage.join(folder, "trainer.safetensors"))
    return safetensors_metadata(data).get("mlflow_run_id", "")


if __name__ == "__main__":
    sys.exit(main())

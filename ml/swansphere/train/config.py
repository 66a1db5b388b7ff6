"""Job configs: one YAML/JSON file per run, validated by pydantic, overridable by `key=value`.

Every job trains a part of the one composed `SwanSphere` model and writes a full `swansphere-v1`
checkpoint, so stages chain: vae -> svac -> swansphere -> odpo, each starting from the last
(`init`). The sections a job does not use keep their defaults.
"""

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from swansphere import storage
from swansphere.errors import InputError
from swansphere.odpo import CANDIDATES_PER_INPUT, DPO_BETA, ONLINE_ROUNDS

JOBS = ("vae", "svac", "swansphere", "odpo")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    manifest: str
    """SynthSphere manifest.jsonl (local or s3://) of the training clips."""
    curriculum_manifest: str | None = None
    """Mono/stereo clips for the pseudo-FOA pre-training stage (App. B.3); None skips the stage."""
    eval_manifest: str | None = None
    """Held-out clips (a seed never used in training) scored when the job ends: the VAE job's
    reconstructions, the generator jobs' generations (`train/heldout.py`)."""
    eval_clips: int = Field(8, ge=1)
    seconds: float = Field(2.0, gt=0)
    """Length of the random training crops."""
    cache: bool = True
    """Keep decoded clips in memory (small datasets)."""
    gain_db: tuple[float, float] | None = None
    """Random gain per training crop, uniform in [low, high] dB (VAE and SVAC jobs): level augmentation,
    so a quiet dataset still drives the encoder."""

    @model_validator(mode="after")
    def _gain_range(self) -> "DataConfig":
        if self.gain_db is not None and not -40.0 <= self.gain_db[0] <= self.gain_db[1] <= 40.0:
            raise ValueError(f"gain_db must be [low, high] with -40 <= low <= high <= 40, got {self.gain_db}")
        return self


class MLflowConfig(_Section):
    tracking_uri: str | None = None
    """None: $MLFLOW_TRACKING_URI, else a sqlite store in `mlruns/` under the working directory."""
    experiment: str = "swansphere"
    run_name: str | None = None
    registered_model: str | None = None
    """Register the final checkpoint under this name (generator jobs)."""


class VAEJobConfig(_Section):
    """App. B.1: MR-STFT (1/4 per channel) + KL + MS-STFT discriminator with feature matching; L1 weight 0."""

    phase: Literal["full", "decoder"] = "full"
    """'decoder': the encoder is frozen and only the decoder trains (the paper's second phase)."""
    kl_weight: float = Field(1e-5, ge=0)
    waveform_weight: float = Field(0.0, ge=0)
    """Relative L1 on the waveform, ‖x̂ − x‖₁ / ‖x‖₁ per channel. App. B.1 uses none; a short CPU run
    needs it, or the decoder first learns the average spectrum and ignores the latent (and with it the
    direction)."""
    spatial_weight: float = Field(1.0, ge=0)
    """MR-STFT on W±X, W±Y, W±Z: the FOA analogue of Stable Audio's sum/difference stereo loss; it
    makes channel signs (the direction) part of a magnitude loss."""
    doa_weight: float = Field(0.0, ge=0)
    """1 − cosine between the reconstruction's and the input's STFT intensity direction per frame
    (eq. 5 of the DoA protocol), weighted by the input's intensity: the direction, trained directly.
    App. B.1 has no such term; the tiny VAE's magnitude losses alone left its directions wrong."""
    adversarial_weight: float = Field(0.1, ge=0)
    feature_weight: float = Field(5.0, ge=0)
    deterministic_steps: int = Field(0, ge=0)
    """Steps that decode the posterior mean (z = μ) before sampling starts: a plain autoencoder first,
    so the decoder learns to read the latent before the sampling noise teaches it to ignore it (the
    tiny VAE collapses otherwise; docs/training.md)."""
    discriminator_start: int = Field(0, ge=0)
    """Steps of reconstruction-only warm-up before the discriminator joins."""
    stft_fft_sizes: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64, 32)
    """MR-STFT resolutions (SAO's seven); fewer make a CPU step cheaper."""


class SVACJobConfig(_Section):
    """App. B.2: both encoders frozen, projection heads (and log τ) trained with the four negative kinds."""

    freeze_encoders: bool = True


class GeneratorJobConfig(_Section):
    """Teacher-forced spatial LM + history + LocDiT (§3.3) with guidance dropout and null conditions."""

    curriculum_steps: int = Field(0, ge=0)
    """Steps on pseudo-FOA (data.curriculum_manifest) before the spatial data."""
    text_dropout: float = Field(0.1, ge=0, le=1)
    video_dropout: float = Field(0.1, ge=0, le=1)
    latent_stats_clips: int = Field(32, ge=1)
    """Clips used to compute the latent normalisation stored with the model."""


class ODPOJobConfig(_Section):
    """§3.4: online rounds of K candidates per input, multi-objective reward, flow-matching DPO."""

    rounds: int = Field(ONLINE_ROUNDS, ge=1)
    candidates: int = Field(CANDIDATES_PER_INPUT, ge=2)
    inputs_per_round: int = Field(8, ge=1)
    steps_per_round: int = Field(50, ge=1)
    beta: float = Field(DPO_BETA, gt=0)
    pair_margin: float = Field(0.01, ge=0)
    """A pair needs R_w − R_l above this (odpo.preference_pairs)."""
    sample_steps: int = Field(10, ge=1)
    """Euler steps when sampling candidates (the paper samples with its default 20)."""
    spatial_weight: float = 0.4
    semantic_weight: float = 0.4
    fidelity_weight: float = 0.2
    imagebind: str | None = None
    """TorchScript ImageBind scorer (local path or s3://); None: SVAC similarity stands in."""
    aesthetics: str | None = None
    """TorchScript Audiobox-Aesthetics scorer; None: the reference-based perceptual distance."""
    kafka_bootstrap: str | None = None
    """Publish candidates and rewards to this broker (host:port) and read live samples back."""
    kafka_topic: str = "swansphere.odpo.samples"
    kafka_audio_store: str | None = None
    """Where audio too large for a Kafka record goes (local or s3://); None: `<out>/odpo_samples`."""


class TrainConfig(_Section):
    job: Literal["vae", "svac", "swansphere", "odpo"]
    preset: Literal["tiny", "paper"] = "tiny"
    init: str | None = None
    """Checkpoint (local or s3://) to start from: the previous stage's output."""
    out: str
    """Folder or s3:// prefix for checkpoints (step_XXXXXXX/, latest, final.safetensors)."""
    data: DataConfig
    steps: int = Field(ge=1)
    batch_size: int = Field(8, ge=1)
    """Per process, per micro-step."""
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    ema_decay: float | None = Field(None, gt=0, lt=1)
    """EMA of the trained weights (saved as the checkpoint's weights); the field uses it for the
    generator, not for the VAE or SVAC heads."""
    max_seconds: float | None = Field(None, gt=0)
    """Wall-clock budget of the loop: the job stops, checkpoints and finishes at the first step past
    it (a run on a time-limited lease). The learning-rate schedule still follows `steps`."""
    seed: int = 0
    checkpoint_every: int = Field(100, ge=1)
    log_every: int = Field(10, ge=1)
    bf16: bool = True
    """bf16 autocast on GPU; CPU runs stay fp32."""
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    """auto: FSDP for the paper preset, DDP for tiny."""
    mlflow: MLflowConfig = MLflowConfig()
    vae: VAEJobConfig = VAEJobConfig()
    svac: SVACJobConfig = SVACJobConfig()
    generator: GeneratorJobConfig = GeneratorJobConfig()
    odpo: ODPOJobConfig = ODPOJobConfig()

    @model_validator(mode="after")
    def _chain(self) -> "TrainConfig":
        if self.job in ("swansphere", "odpo") and self.init is None:
            raise ValueError(f"the {self.job} job starts from a trained checkpoint (VAE at least): set init")
        return self


def load_config(path: str | Path, overrides: list[str] | None = None, job: str | None = None) -> TrainConfig:
    """Read a YAML/JSON config (local or s3://), apply dotted `key=value` overrides, validate."""
    try:
        data = yaml.safe_load(storage.read_bytes(path).decode())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise InputError(f"{path}: cannot read config ({_first_line(err)})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a config is a mapping of keys to values")
    if job is not None and data.setdefault("job", job) != job:
        raise InputError(f"{path}: config is for the {data['job']!r} job, not {job!r}")
    for item in overrides or []:
        _apply_override(data, item)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        problem = err.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "config"
        raise InputError(f"{path}: {where}: {problem['msg']}") from None


def _apply_override(data: dict[str, Any], item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise InputError(f"override {item!r}: expected key=value")
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise InputError(f"override {item!r}: {part} is not a section")
    node[leaf] = yaml.safe_load(raw)


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__

"""Latency benchmark (issue 7): how soon the first FOA chunk comes out of the streaming pipeline, and
what the same model, or a global DiT of the same size, would take to return anything at all.

Everything is measured in one run, on one machine, with one random-init model of the preset:
- streaming: a synthetic equirectangular video is fed frame by frame at 4 fps as a live stream
  would, but without sleeping between frames, so what is measured is compute. Time to first chunk
  is from the first frame in to the first FOA chunk out; the real-time factor is the wall time of
  the whole clip over its duration; stages are the seconds each stage's backend calls took, per
  patch (the paper's breakdown: spatial LM, LocDiT, video encoder, VAE decoder).
- live: one stream whose frames arrive at 4 fps in real time, as a camera's do. Each patch's stages
  then start on a core that waited since the last one, and cost more than in the back-to-back
  streaming run: what a live stream pays, and the case of service mode's stage processes, each of
  which waits for its next request (docs/benchmarks.md, "Rounds, and what a live stream's stages
  cost").
- full sequence: the same model and pipeline given the whole clip at once, every patch generated
  before the first sample is returned (how a non-streaming system answers).
- global DiT: one DiT (our LocDiT class, its "patch" the whole clip, no boundary context) with
  about as many parameters as the streaming generator, denoising every latent frame of the clip
  at once for the same number of steps, then the VAE decoding the clip; its time to first chunk is
  that whole computation (its video and text encoding left out, which favours it).
- concurrency (`streams` > 1): that many streams through ONE embedded pipeline, fed in lockstep, so
  LocDiT and the decoder batch across streams; p50/p99 time to first chunk and the aggregate
  real-time factor.
Every measurement runs `rounds` times: first chunks are medians over the rounds (the concurrent
percentiles are over every round's streams), real-time factors and stage costs their means; the
single-stream and concurrent rounds alternate. On shared cores one run's first chunk is noise: the
4-stream ratio of single runs ranged 1.5-2.8x within minutes.
Each measured run starts from a backend with no stream state (`TorchBackend.reset`), which keeps
what the untimed warm-up runs on a short clip captured (the CUDA graphs of LocDiT and of the LM
step), as a started server does.
"""

import datetime
import math
import os
import platform
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
import torch
from transformers import T5Config, T5EncoderModel

from swansphere.conventions import SAMPLE_RATE, VIDEO_FPS
from swansphere.errors import InputError
from swansphere.models.locdit import LocDiT, LocDiTConfig
from swansphere.models.sampler import DEFAULT_GUIDANCE, sample_patch
from swansphere.models.swansphere import PRESETS, SwanSphere, SwanSphereConfig, preset
from swansphere.models.text_encoder import ByteTokenizer, TextEncoder
from swansphere.serving.backend import TorchBackend
from swansphere.serving.embedded import EmbeddedPipeline
from swansphere.serving.session import StreamSession
from swansphere.serving.stages import (
    LOCDIT,
    MAX_STEPS,
    SPATIAL_LM,
    STAGES,
    VAE_DECODER,
    VIDEO_ENCODER,
    GenerationSettings,
    StreamSpec,
)

DEVICES = ("cpu", "cuda")
MAX_STREAMS = 256
"""The torch backend keeps LM and decoder state for 256 streams; more would measure evictions."""
MAX_SECONDS = 60.0
MAX_ROUNDS = 20
WARMUP_SECONDS = 2.0
"""Clip length of the untimed warm-up: enough patches for the decoder's window to reach full size."""
STAGE_KEYS = {
    SPATIAL_LM: "spatial_lm_s",
    LOCDIT: "locdit_s",
    VIDEO_ENCODER: "video_encoder_s",
    VAE_DECODER: "vae_decoder_s",
}


@dataclass(frozen=True)
class BenchSettings:
    preset: str = "tiny"
    device: str = "cpu"
    streams: int = 1
    """Concurrent streams of the concurrency run (1: no extra run)."""
    seconds: float = 4.0
    """Length of the synthetic clip."""
    steps: int = 20
    """Flow-matching steps per patch (streaming) and per clip (global DiT)."""
    seed: int = 0
    """Model weights, video and sampling noise."""
    threads: int | None = None
    """torch threads; None: 1 for the tiny preset on CPU (its operations are too small to split, and
    a second thread only waits on cores that other work shares), torch's default otherwise."""
    rounds: int = 3
    """Repeats of each measurement (see the module docstring)."""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise InputError(f"unknown preset {self.preset!r}; choose from {sorted(PRESETS)}")
        if self.device not in DEVICES:
            raise InputError(f"device must be one of {DEVICES}, got {self.device!r}")
        if not 1 <= self.streams <= MAX_STREAMS:
            raise InputError(f"streams must be in 1..{MAX_STREAMS}, got {self.streams}")
        if not 1 / VIDEO_FPS <= self.seconds <= MAX_SECONDS:
            raise InputError(f"seconds must be in [{1 / VIDEO_FPS:g}, {MAX_SECONDS:g}], got {self.seconds}")
        if not 1 <= self.steps <= MAX_STEPS:
            raise InputError(f"steps must be in 1..{MAX_STEPS}, got {self.steps}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"threads must be >= 1, got {self.threads}")
        if not 1 <= self.rounds <= MAX_ROUNDS:
            raise InputError(f"rounds must be in 1..{MAX_ROUNDS}, got {self.rounds}")


@dataclass
class StreamRun:
    """What one pipeline run measured."""

    first_chunk_s: list[float]
    """Per stream: from its first frame in to its first chunk out."""
    wall_s: float
    """From the first frame of the first stream to the last chunk of the last."""
    audio_s: float
    """Audio per stream."""
    patches: int
    """Patches per stream."""
    stage_s: dict[str, float]
    """Backend seconds per stage, all streams together."""
    first_chunk_stage_s: dict[str, float]
    """Backend seconds per stage until the first chunk came out."""

    @classmethod
    def pooled(cls, runs: list["StreamRun"]) -> "StreamRun":
        """Rounds of one measurement as one run: every round's first chunks, and their times and audio
        added up, so ratios of sums (real-time factor, seconds per patch) are means over the rounds;
        `patches` stays per stream and round."""
        rounds = len(runs)
        return cls(
            first_chunk_s=[first for run in runs for first in run.first_chunk_s],
            wall_s=sum(run.wall_s for run in runs),
            audio_s=sum(run.audio_s for run in runs),
            patches=runs[0].patches,
            stage_s={name: sum(run.stage_s[name] for run in runs) for name in runs[0].stage_s},
            first_chunk_stage_s={
                name: sum(run.first_chunk_stage_s[name] for run in runs) / rounds
                for name in runs[0].first_chunk_stage_s
            },
        )


def run_bench(settings: BenchSettings) -> dict:
    """The whole benchmark; returns the JSON report (see the module docstring)."""
    device = _device(settings.device)
    previous_threads = torch.get_num_threads()
    threads = settings.threads or (1 if settings.preset == "tiny" and device.type == "cpu" else None)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(settings, device)
    finally:
        torch.set_num_threads(previous_threads)


def _run(settings: BenchSettings, device: torch.device) -> dict:
    model = build_model(preset(settings.preset), settings.seed, device)
    cuda = device.type == "cuda"
    frames = synthetic_video(model.config, settings.seconds, settings.seed)
    generation = GenerationSettings(seed=settings.seed, steps=settings.steps)

    shared = TorchBackend(model, autocast=torch.bfloat16 if cuda else None, cuda_graphs=cuda)

    def backend() -> TorchBackend:
        shared.reset()
        return shared

    warm = frames[: max(1, round(WARMUP_SECONDS * VIDEO_FPS))]
    warm_ups = [(1, False), (1, True)] + ([(settings.streams, False)] if settings.streams > 1 else [])
    for streams, at_once in warm_ups:
        run_streams(backend(), warm, streams, generation, at_once)
    dit = GlobalDiT(model, frames.shape[0], settings.seed)
    dit.time_to_first_chunk(1)  # warm-up

    def measure(streams: int, all_at_once: bool = False, live: bool = False) -> StreamRun:
        return StreamRun.pooled(
            [
                run_streams(backend(), frames, streams, generation, all_at_once, live)
                for _ in range(settings.rounds)
            ]
        )

    # The single-stream and concurrent rounds alternate: the 4-stream ratio divides the two, and the
    # shared host's speed drifts over the seconds that separate two blocks of rounds.
    singles, concurrents = [], []
    for _ in range(settings.rounds):
        singles.append(run_streams(backend(), frames, 1, generation))
        if settings.streams > 1:
            concurrents.append(run_streams(backend(), frames, settings.streams, generation))
    single = StreamRun.pooled(singles)
    concurrent = StreamRun.pooled(concurrents) if concurrents else single
    live = measure(1, live=True)
    full = measure(1, all_at_once=True)
    dit_s = _median([dit.time_to_first_chunk(settings.steps) for _ in range(settings.rounds)])

    ttfc = _median(single.first_chunk_s)
    full_s = _median(full.first_chunk_s)
    p99 = float(np.percentile(concurrent.first_chunk_s, 99))
    return {
        "preset": settings.preset,
        "device": device.type,
        "steps": settings.steps,
        "seed": settings.seed,
        "rounds": settings.rounds,
        "seconds": single.audio_s / settings.rounds,
        "patches": single.patches,
        "time_to_first_chunk_s": ttfc,
        "real_time_factor": single.wall_s / single.audio_s,
        "stages": _per_patch(single),
        "first_chunk_stages": {STAGE_KEYS[name]: s for name, s in single.first_chunk_stage_s.items()},
        "live": {"time_to_first_chunk_s": _median(live.first_chunk_s), "stages": _stage_per_patch(live)},
        "full_sequence_time_to_first_chunk_s": full_s,
        "full_sequence_ratio": full_s / ttfc,
        "global_dit_time_to_first_chunk_s": dit_s,
        "global_dit_ratio": dit_s / ttfc,
        "concurrency": {
            "streams": settings.streams,
            "time_to_first_chunk_p50_s": float(np.percentile(concurrent.first_chunk_s, 50)),
            "time_to_first_chunk_p99_s": p99,
            "p99_over_single": p99 / ttfc,
            "aggregate_real_time_factor": concurrent.wall_s / (settings.streams * concurrent.audio_s),
            "stages": _per_patch(concurrent),
        },
        "backend": {"autocast": "bfloat16" if cuda else None, "cuda_graphs": cuda},
        "params": _params(model, dit),
        "machine": machine_info(device),
    }


def build_model(config: SwanSphereConfig, seed: int, device: torch.device) -> SwanSphere:
    """Random-init model of the preset, the same weights for the same seed (drawn on the CPU).

    The tiny preset's text encoder is its own random T5; for wider presets (FLAN-T5-large, which is
    not available offline) a one-layer random T5 of the same width stands in: the benchmark's
    streams are video-only, so the LM reads only the null text and the encoder's width.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = None
        if config.text.pretrained is None and config.text.dim != TextEncoder.tiny().dim:
            text_encoder = _stand_in_text_encoder(config.text.dim, config.text.max_length)
        model = SwanSphere(config, text_encoder=text_encoder)
    return model.to(device).eval()


def _stand_in_text_encoder(dim: int, max_length: int) -> TextEncoder:
    t5 = T5Config(
        vocab_size=ByteTokenizer.vocab_size,
        d_model=dim,
        d_kv=64,
        d_ff=dim,
        num_layers=1,
        num_heads=max(1, dim // 64),
        pad_token_id=ByteTokenizer.pad_token_id,
        eos_token_id=ByteTokenizer.eos_token_id,
    )
    return TextEncoder(T5EncoderModel(t5), ByteTokenizer(), max_length)


def synthetic_video(config: SwanSphereConfig, seconds: float, seed: int) -> np.ndarray:
    """Random equirectangular frames (T, H, 2H, 3) uint8 at 4 fps at the model's frame size, so the
    figures are the model's compute, not resizing."""
    height, width = config.svac.video.frame_size
    count = max(1, round(seconds * VIDEO_FPS))
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def run_streams(
    backend: TorchBackend,
    frames: np.ndarray,
    streams: int,
    settings: GenerationSettings,
    all_at_once: bool = False,
    live: bool = False,
) -> StreamRun:
    """`streams` copies of the video through one embedded pipeline, frame by frame in lockstep (or
    all frames and the end at once), collecting chunks after every frame; `live`: each frame when it
    is due at 4 fps, not as soon as the last is done. Stream i samples with seed `settings.seed + i`,
    so the streams' latents differ as real streams' would."""
    pipeline = EmbeddedPipeline(backend)
    patch_samples = backend.config.patch_samples
    specs = [
        StreamSpec(f"bench-{i}", settings=replace(settings, seed=settings.seed + i)) for i in range(streams)
    ]
    sessions = [StreamSession(pipeline.transport, pipeline.store, spec, patch_samples) for spec in specs]
    feeds = [frames] if all_at_once else [frames[i : i + 1] for i in range(len(frames))]
    pushed: list[float] = [0.0] * streams
    first: list[float | None] = [None] * streams
    samples = [0] * streams
    first_stages: dict[str, float] = {}

    def collect() -> None:
        for i, session in enumerate(sessions):
            chunks = session.take_chunks("bench")
            if chunks and first[i] is None:
                first[i] = time.perf_counter() - pushed[i]
                if i == 0:
                    first_stages.update(pipeline.stage_seconds())
            samples[i] += sum(chunk.audio.shape[-1] for chunk in chunks)

    start = time.perf_counter()
    for session in sessions:
        session.start()
    for k, feed in enumerate(feeds):
        if live:
            time.sleep(max(0.0, start + k / VIDEO_FPS - time.perf_counter()))
        for i, session in enumerate(sessions):
            if k == 0:
                pushed[i] = time.perf_counter()
            session.send_frames(feed)
            if all_at_once:
                session.end()
        pipeline.pump()
        collect()
    for session in sessions:
        session.end()
    pipeline.pump()
    collect()
    wall = time.perf_counter() - start
    if not all(session.done for session in sessions) or any(f is None for f in first):
        raise RuntimeError("bench: the embedded pipeline stopped before every chunk came out")
    for session in sessions:
        session.close()
    audio_s = samples[0] / SAMPLE_RATE
    return StreamRun(
        first_chunk_s=[float(f) for f in first if f is not None],
        wall_s=wall,
        audio_s=audio_s,
        patches=math.ceil(samples[0] / patch_samples),
        stage_s=pipeline.stage_seconds(),
        first_chunk_stage_s=first_stages,
    )


def _per_patch(run: StreamRun) -> dict[str, float]:
    """Backend seconds per stage per patch of one stream, and the pipeline's own cost (transport,
    state, message encoding) as `overhead_s`."""
    stages = _stage_per_patch(run)
    wall_per_patch = run.wall_s / (run.patches * len(run.first_chunk_s))
    stages["overhead_s"] = max(0.0, wall_per_patch - sum(stages.values()))
    return stages


def _stage_per_patch(run: StreamRun) -> dict[str, float]:
    """Backend seconds per stage per patch of one stream."""
    patches = run.patches * len(run.first_chunk_s)
    return {STAGE_KEYS[name]: run.stage_s[name] / patches for name in STAGES}


class GlobalDiT:
    """The global-DiT baseline: one DiT over the whole clip's latent frames at once."""

    def __init__(self, model: SwanSphere, video_frames: int, seed: int):
        self.model = model
        config = model.config
        latent_frames = math.ceil(video_frames / VIDEO_FPS * SAMPLE_RATE / config.vae.hop_length)
        self.config = global_dit_config(config, latent_frames, _count(model.generator_modules().values()))
        device = model.latent_mean.device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.dit = LocDiT(self.config).eval()
            generator = torch.Generator().manual_seed(seed)
            self.noise = torch.randn(1, config.vae.latent_dim, latent_frames, generator=generator).to(device)
            self.h = torch.randn(1, config.lm.d_model, generator=generator).to(device)
        self.dit = self.dit.to(device)
        self.context = self.noise.new_zeros(1, config.vae.latent_dim, 0)
        self.autocast = torch.bfloat16 if device.type == "cuda" else None

    @torch.inference_mode()
    def time_to_first_chunk(self, steps: int) -> float:
        """Seconds to denoise the clip for `steps` steps and decode it: its first sample's latency."""
        start = time.perf_counter()
        with torch.autocast(self.noise.device.type, dtype=torch.bfloat16, enabled=self.autocast is not None):
            z = sample_patch(self.dit, self.h, self.context, self.noise, steps, DEFAULT_GUIDANCE)
        audio = self.model.vae.decode(self.model.denormalize_latents(z.float()))
        audio.cpu()
        return time.perf_counter() - start


def global_dit_config(config: SwanSphereConfig, latent_frames: int, target_params: int) -> LocDiTConfig:
    """A DiT whose one patch is the whole clip (no boundary context), with the LM's width and heads
    and the depth that brings its parameters closest to `target_params` (the streaming generator's)."""

    def at_depth(layers: int) -> LocDiTConfig:
        lm = config.lm
        return LocDiTConfig(
            d_model=lm.d_model,
            n_layers=layers,
            n_heads=lm.n_heads,
            latent_dim=config.vae.latent_dim,
            cond_dim=lm.d_model,
            patch_frames=latent_frames,
            context_patches=0,
        )

    with torch.device("meta"):
        one, two = _count([LocDiT(at_depth(1))]), _count([LocDiT(at_depth(2))])
    per_layer = two - one
    return at_depth(max(1, round((target_params - (one - per_layer)) / per_layer)))


def _count(modules: Iterable[torch.nn.Module]) -> int:
    return sum(p.numel() for module in modules for p in module.parameters())


def _params(model: SwanSphere, dit: GlobalDiT) -> dict[str, int]:
    parts = {name: _count([module]) for name, module in model.generator_modules().items()}
    return {
        "generator": sum(parts.values()),
        **parts,
        "global_dit": _count([dit.dit]),
        "global_dit_layers": dit.config.n_layers,
    }


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: torch sees no CUDA device here (use --device cpu)")
    return torch.device(name)


def machine_info(device: torch.device) -> dict:
    """Where the figures come from: they mean little without it."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _median(values: list[float]) -> float:
    return float(np.median(values))


def run_service_bench(target: str, settings: BenchSettings) -> dict:
    """Service mode (issue 7, part 2): the same synthetic clip streamed through a running gateway, once
    alone and as `settings.streams` concurrent streams, against the embedded pipeline with a model of
    the same preset in this process, in the same run. The gateway's model must be of that preset
    (`make up` serves tiny); weights do not matter for timing.

    Concurrency twice: streams that send their whole clip at once (a burst: each stream's later
    patches compete with the others' first), and live streams that send frames at 4 fps, as cameras
    do (`concurrency.live`), the case the embedded bench's lockstep streams stand for."""
    # Imported here: only the service bench speaks gRPC, so the embedded bench also runs on a machine
    # that has torch but not our generated gRPC code (a bare GPU box).
    from swansphere.client import SwanSphereClient

    config = preset(settings.preset)
    frames = synthetic_video(config, settings.seconds, settings.seed)
    generation = GenerationSettings(seed=settings.seed, steps=settings.steps)

    def stream(client: SwanSphereClient, seed: int, realtime: bool = False) -> tuple[float, float, int]:
        start = time.perf_counter()
        first, patches = None, 0
        chunks = client.generate(
            frames, seed=seed, steps=settings.steps, frames_per_message=1, realtime=realtime
        )
        for _ in chunks:
            first = first if first is not None else time.perf_counter() - start
            patches += 1
        assert first is not None
        return first, time.perf_counter() - start, patches

    def concurrently(client: SwanSphereClient, realtime: bool) -> tuple[list[float], float]:
        """First-chunk times of `settings.streams` streams started together, and their wall time."""
        results: list[tuple[float, float, int]] = []
        threads = [
            threading.Thread(target=lambda i=i: results.append(stream(client, settings.seed + i, realtime)))
            for i in range(settings.streams)
        ]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return [r[0] for r in results], time.perf_counter() - start

    torch.set_num_threads(settings.threads or 1)
    model = build_model(config, settings.seed, torch.device("cpu"))
    run_streams(TorchBackend(model), frames[:8], 1, generation)  # warm-up
    rounds = range(settings.rounds)
    singles, embedded_runs = [], []
    with SwanSphereClient(target, timeout_s=600) as client:
        stream(client, settings.seed)  # warm-up: models, connections, caches
        # A service round and an embedded round alternate: their difference is the figure, and the
        # shared host's speed drifts over the seconds that separate two blocks of rounds.
        for _ in rounds:
            singles.append(stream(client, settings.seed))
            embedded_runs.append(run_streams(TorchBackend(model), frames, 1, generation))
        bursts = [concurrently(client, realtime=False) for _ in rounds]
        live_first = _median([stream(client, settings.seed, realtime=True)[0] for _ in rounds])
        live_firsts = [f for _ in rounds for f in concurrently(client, realtime=True)[0]]
    first, wall = _median([s[0] for s in singles]), _median([s[1] for s in singles])
    patches = singles[0][2]
    firsts = [f for round_firsts, _ in bursts for f in round_firsts]
    concurrent_wall = _median([round_wall for _, round_wall in bursts])
    audio_s = frames.shape[0] / VIDEO_FPS
    embedded_first = _median([run.first_chunk_s[0] for run in embedded_runs])
    embedded_wall = _median([run.wall_s for run in embedded_runs])
    embedded_per_patch = embedded_wall / embedded_runs[0].patches
    return {
        "mode": "service",
        "target": target,
        "preset": settings.preset,
        "steps": settings.steps,
        "seconds": audio_s,
        "patches": patches,
        "rounds": settings.rounds,
        "service": {
            "time_to_first_chunk_s": first,
            "real_time_factor": wall / audio_s,
            "per_patch_s": wall / patches,
        },
        "embedded": {
            "time_to_first_chunk_s": embedded_first,
            "real_time_factor": embedded_wall / audio_s,
            "per_patch_s": embedded_per_patch,
        },
        "added_per_patch_s": wall / patches - embedded_per_patch,
        "concurrency": {
            "streams": settings.streams,
            "time_to_first_chunk_p50_s": float(np.percentile(firsts, 50)),
            "time_to_first_chunk_p99_s": float(np.percentile(firsts, 99)),
            "p99_over_single": float(np.percentile(firsts, 99)) / first,
            "aggregate_real_time_factor": concurrent_wall / (settings.streams * audio_s),
            "live": {
                "time_to_first_chunk_single_s": live_first,
                "time_to_first_chunk_p50_s": float(np.percentile(live_firsts, 50)),
                "time_to_first_chunk_p99_s": float(np.percentile(live_firsts, 99)),
                "p99_over_single": float(np.percentile(live_firsts, 99)) / live_first,
            },
        },
        "machine": machine_info(torch.device("cpu")),
    }

"""`swansphere generate`: embedded mode, one process, no servers (DESIGN §1, §5)."""

import argparse
import math
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from swansphere.audio import read_foa, write_audio
from swansphere.bench import build_model
from swansphere.checkpoint import load_checkpoint
from swansphere.cli.output import check_out_file, emit
from swansphere.cli.source import check_source
from swansphere.conventions import SAMPLE_RATE, VIDEO_FPS
from swansphere.doa import segment_doa
from swansphere.engine import GenerationSettings, StreamingGenerator
from swansphere.errors import InputError
from swansphere.listening import to_binaural
from swansphere.models.sampler import MAX_GUIDANCE, Guidance
from swansphere.models.swansphere import PRESETS, SwanSphere, preset
from swansphere.plots import plot_doa
from swansphere.trajectory import Scene, load_scene
from swansphere.video import read_video

RANDOM_INIT_LABEL = "random-init (untrained weights: smoke use only, the audio is not meaningful)"
SEED_LIMIT = 2**64
"""Seeds are 0 .. 2**64 - 1, as `swansphere client` takes them."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help="generate AmbiX FOA from a 360° video and/or text")
    parser.add_argument("--video", type=Path, help="equirectangular MP4")
    parser.add_argument("--text", help="caption (FLAN-T5 text condition)")
    parser.add_argument("--out", type=Path, required=True, help="output AmbiX WAV (W, Y, Z, X; SN3D)")
    parser.add_argument("--seconds", type=float, help="duration: text-only length, or cut the video to S s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20, help="flow-matching steps per patch")
    parser.add_argument("--h-guidance", type=float, default=Guidance.h_weight, help="guidance weight of h_t")
    parser.add_argument(
        "--context-guidance",
        type=float,
        default=Guidance.context_weight,
        help="guidance weight of the context",
    )
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="trained checkpoint: local path or s3:// URI")
    weights.add_argument("--random-init", action="store_true", help="untrained weights (smoke use)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="with --random-init")
    parser.add_argument("--binaural", type=Path, help="also write a binaural (headphone) WAV")
    parser.add_argument(
        "--plot", type=Path, metavar="OUT.png", help="also plot the output's segment DoA over time"
    )
    parser.add_argument(
        "--reference-trajectory",
        type=Path,
        metavar="T.json",
        help="with --plot: draw this trajectory JSON's first source (reference or visual source)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_source(args)
    check_out_file(args.out, "--out")
    check_out_file(args.binaural, "--binaural")
    check_out_file(args.plot, "--plot", suffix=".png")
    reference = _reference_trajectory(args)
    if not 0 <= args.seed < SEED_LIMIT:
        raise InputError(f"--seed must be in 0 .. 2**64 - 1, got {args.seed}")
    args.seed %= 2**63  # as the gateway reduces it: the same seed gives the same audio here and there
    for flag, weight in (("--h-guidance", args.h_guidance), ("--context-guidance", args.context_guidance)):
        if not (math.isfinite(weight) and 0.0 <= weight <= MAX_GUIDANCE):
            raise InputError(f"{flag} must be in [0, {MAX_GUIDANCE:g}], got {weight}")
    try:
        settings = GenerationSettings(
            seed=args.seed, steps=args.steps, guidance=Guidance(args.h_guidance, args.context_guidance)
        )
    except ValueError as err:
        raise InputError(str(err)) from None
    frames = None
    if args.video is not None:
        frames, _ = read_video(args.video)
        if args.seconds is not None:
            frames = frames[: max(1, round(args.seconds * VIDEO_FPS))]
    model, weights = _load_model(args, torch.device("cpu"))
    summary = _stream_to_file(model, frames, args, settings)
    _write_extras(args, reference)
    summary |= {
        "weights": weights,
        "out": str(args.out),
        "binaural": args.binaural and str(args.binaural),
        "plot": args.plot and str(args.plot),
    }
    human = (
        f"wrote {args.out}: {summary['seconds']:.2f} s of 4-channel AmbiX at {SAMPLE_RATE} Hz "
        f"({summary['patches']} patches, first chunk after {summary['time_to_first_chunk_s'] * 1e3:.0f} ms, "
        f"real-time factor {summary['real_time_factor']:.2f})\nweights: {weights}"
    ) + (f"\nDoA plot: {args.plot}" if args.plot is not None else "")
    emit(summary, args.json, human)
    return 0


def _write_extras(args: argparse.Namespace, reference: Scene | None) -> None:
    """The binaural render and the DoA plot, both from the FOA file just written."""
    if args.binaural is None and args.plot is None:
        return
    foa, _ = read_foa(args.out)
    if args.binaural is not None:
        write_audio(args.binaural, to_binaural(foa), SAMPLE_RATE)
    if args.plot is not None:
        plot_doa(segment_doa(foa), args.plot, trajectory=reference, title=f"{args.out.name}: segment DoA")


def _reference_trajectory(args: argparse.Namespace) -> Scene | None:
    """The --reference-trajectory scene, read before generating so a bad file fails fast."""
    if args.reference_trajectory is None:
        return None
    if args.plot is None:
        raise InputError("--reference-trajectory is drawn on the --plot; give --plot OUT.png too")
    scene = load_scene(args.reference_trajectory)
    if not scene.sources:
        raise InputError(f"{args.reference_trajectory}: trajectory JSON has no sources")
    return scene


def _load_model(args: argparse.Namespace, device: torch.device) -> tuple[SwanSphere, str]:
    """The checkpoint's model, or a random-init preset built as `swansphere bench` builds it (a
    stand-in text encoder where the preset's is wider than the tiny one), so every preset runs."""
    if args.checkpoint is not None:
        return load_checkpoint(args.checkpoint, device), str(args.checkpoint)
    return build_model(preset(args.preset), args.seed, device), f"{args.preset} {RANDOM_INIT_LABEL}"


def _stream_to_file(
    model: SwanSphere, frames: np.ndarray | None, args: argparse.Namespace, settings: GenerationSettings
) -> dict:
    """Feeds the engine frame by frame, as a live stream would, and writes each chunk as it comes."""
    duration = None if frames is not None else args.seconds
    stream = StreamingGenerator(model, text=args.text, settings=settings, duration_s=duration)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    first_chunk_s, patches, samples = None, 0, 0
    with sf.SoundFile(str(args.out), "w", SAMPLE_RATE, 4, subtype="FLOAT") as out:
        feeds = [] if frames is None else [frames[i : i + 1] for i in range(len(frames))]
        for chunks in [*(stream.push_frames(f) for f in feeds), stream.finish()]:
            for chunk in chunks:
                first_chunk_s = first_chunk_s or time.perf_counter() - start
                out.write(chunk.audio.T)
                patches, samples = patches + 1, samples + chunk.audio.shape[-1]
    elapsed = time.perf_counter() - start
    return {
        "seconds": samples / SAMPLE_RATE,
        "sample_rate": SAMPLE_RATE,
        "channels": 4,
        "patches": patches,
        "time_to_first_chunk_s": first_chunk_s or 0.0,
        "real_time_factor": elapsed / max(samples / SAMPLE_RATE, 1e-9),
        "stage_seconds": dict(stream.stage_seconds),
    }

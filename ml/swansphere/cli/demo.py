"""`swansphere demo` (`make demo`): the whole embedded pipeline on one SynthSphere clip, no servers.

1. SynthSphere makes a 360° clip with exact ground truth (video, AmbiX, trajectory JSON).
2. The captioning pipeline (DoA → trajectory → caption) reads the reference FOA back.
3. The streaming engine generates FOA from the clip's video, patch by patch, on the CPU, with the
   shipped tiny model (`checkpoint.SHIPPED_TINY`; the clip, seed 0, is not among its training clips).
4. Both are decoded binaurally for headphones, and the generated DoA is compared with the truth
   (generated_doa.png: the DoA over time against the visual source).
"""

import argparse
import time
from pathlib import Path

import numpy as np

from swansphere.audio import read_foa, write_audio
from swansphere.captioning import caption_file
from swansphere.checkpoint import SHIPPED_TINY, load_checkpoint
from swansphere.cli.output import emit
from swansphere.cli.source import check_seconds
from swansphere.conventions import SAMPLE_RATE
from swansphere.doa import segment_doa
from swansphere.engine import GenerationSettings, StreamingGenerator
from swansphere.errors import InputError
from swansphere.listening import to_binaural
from swansphere.metrics import trajectory_errors
from swansphere.models.swansphere import SwanSphere
from swansphere.plots import plot_doa
from swansphere.synth import SynthConfig, write_dataset
from swansphere.trajectory import load_scene
from swansphere.video import read_video


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the whole embedded pipeline on one SynthSphere clip")
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="folder for every output")
    parser.add_argument("--seconds", type=float, default=6.0, help="clip length (multiple of 0.25 s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--checkpoint",
        default=str(SHIPPED_TINY),
        help="trained checkpoint (local path or s3://); default: the shipped tiny model",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_seconds(args.seconds)
    try:
        synth_config = SynthConfig(seconds=args.seconds, max_sources=1)
    except ValueError as err:
        raise InputError(str(err)) from None
    (row,) = write_dataset(str(args.out), synth_config, clips=1, seed=args.seed)
    wav, video = args.out / row["audio"], args.out / row["video"]
    scene = load_scene(args.out / row["trajectory"])
    reference, _ = read_foa(wav)
    write_audio(args.out / "reference_binaural.wav", to_binaural(reference), SAMPLE_RATE)
    analysis = caption_file(wav, video, label=scene.sources[0].sound_class)
    reference_error = trajectory_errors(segment_doa(reference), scene.sources[0])

    model, weights = load_checkpoint(args.checkpoint), str(args.checkpoint)
    generated, timing = _generate(model, read_video(video)[0], args.seed)
    write_audio(args.out / "generated.wav", generated, SAMPLE_RATE)
    write_audio(args.out / "generated_binaural.wav", to_binaural(generated), SAMPLE_RATE)
    generated_doa = segment_doa(generated)
    generated_error = trajectory_errors(generated_doa, scene.sources[0])
    title = "generated DoA (bars) against the visual source (line)"
    plot_doa(generated_doa, args.out / "generated_doa.png", trajectory=scene, title=title)

    summary = {
        "clip": row["name"],
        "ground_truth_caption": scene.caption,
        "pipeline_caption": analysis["caption"],
        "reference_doa_error_deg_median": reference_error["angular_deg_median"],
        "generated_doa_error_deg_median": generated_error["angular_deg_median"],
        "weights": weights,
        **timing,
        "files": sorted(p.name for p in args.out.iterdir()),
    }
    emit(summary, args.json, _human(summary, args.out))
    return 0


def _generate(model: SwanSphere, frames: np.ndarray, seed: int) -> tuple[np.ndarray, dict]:
    """Streams the frames one at a time, as a live 4 fps source would deliver them."""
    stream = StreamingGenerator(model, settings=GenerationSettings(seed=seed))
    start, first_chunk_s, chunks = time.perf_counter(), None, []
    for i in range(len(frames)):
        chunks += stream.push_frames(frames[i : i + 1])
        if chunks and first_chunk_s is None:
            first_chunk_s = time.perf_counter() - start
    chunks += stream.finish()
    elapsed = time.perf_counter() - start
    audio = np.concatenate([chunk.audio for chunk in chunks], axis=-1)
    seconds = audio.shape[-1] / SAMPLE_RATE
    return audio, {
        "generated_seconds": seconds,
        "time_to_first_chunk_s": first_chunk_s,
        "real_time_factor": elapsed / seconds,
    }


def _human(summary: dict, out: Path) -> str:
    return "\n".join(
        [
            f"SynthSphere clip {summary['clip']} written to {out}/",
            f"  ground truth : {summary['ground_truth_caption']}",
            f"  pipeline     : {summary['pipeline_caption']}  (DoA → trajectory → caption)",
            "  reference DoA error (segment protocol): "
            f"{summary['reference_doa_error_deg_median']:.1f}° median",
            f"generated {summary['generated_seconds']:.2f} s of AmbiX FOA in embedded streaming mode",
            f"  weights      : {summary['weights']}",
            f"  first chunk  : {summary['time_to_first_chunk_s'] * 1e3:.0f} ms, "
            f"real-time factor {summary['real_time_factor']:.2f}",
            "  generated DoA error (segment protocol): "
            f"{summary['generated_doa_error_deg_median']:.1f}° median",
            "listen on headphones: reference_binaural.wav, generated_binaural.wav; "
            "DoA over time: generated_doa.png",
        ]
    )

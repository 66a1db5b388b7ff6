"""`swansphere spatialize IN.wav --trajectory T.json --out OUT.wav`: mono audio -> AmbiX FOA.

The "+AS" step of the paper's cascaded baselines: a non-spatial generator's output is placed on the
trajectory of the JSON's first source, sample by sample (`foa.encode_source`, 1/r distance gain).
Multichannel input is downmixed to mono and resampled to 44.1 kHz. The result is scaled down only
if its peak would reach 1. Paths may be local or `s3://`.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

from swansphere import storage
from swansphere.audio import read_audio, resample, to_mono, write_audio
from swansphere.cli.output import check_out_file, emit
from swansphere.conventions import SAMPLE_RATE
from swansphere.doa import check_finite
from swansphere.errors import InputError
from swansphere.foa import encode_source
from swansphere.trajectory import load_scene

PEAK = 0.99
"""Largest absolute sample written; louder renders are scaled down as a whole."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "spatialize",
        help="render mono audio into AmbiX FOA along a trajectory",
        description=(
            "Render mono (or downmixed) audio into AmbiX FOA along the trajectory of the JSON's first "
            "source: the '+AS' step of the paper's cascaded baselines."
        ),
    )
    parser.add_argument("input", metavar="IN.wav", help="mono or stereo audio (any rate)")
    parser.add_argument(
        "--trajectory", required=True, metavar="T.json", help="trajectory JSON (first source)"
    )
    parser.add_argument("--out", required=True, metavar="OUT.wav", help="4-channel AmbiX FOA at 44.1 kHz")
    parser.add_argument("--json", action="store_true", help="print a summary as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_out_file(args.out, "--out", s3=True)
    scene = load_scene(args.trajectory)
    if not scene.sources:
        raise InputError(f"{args.trajectory}: trajectory JSON has no sources")
    source = scene.sources[0]
    with storage.local_copy(args.input) as input_path:
        audio, sample_rate = read_audio(input_path)
    check_finite(audio, f"{args.input}: the input audio")
    mono = to_mono(resample(audio, sample_rate, SAMPLE_RATE))  # (N,)
    foa = encode_source(mono, source, SAMPLE_RATE)  # (4, N)
    foa *= min(1.0, PEAK / max(float(np.max(np.abs(foa))), 1e-12))
    _write(args.out, foa)
    result = {
        "out": str(args.out),
        "class": source.sound_class,
        "input_channels": int(audio.shape[0]),
        "input_sample_rate": sample_rate,
        "sample_rate": SAMPLE_RATE,
        "seconds": foa.shape[1] / SAMPLE_RATE,
    }
    emit(
        result,
        args.json,
        f"wrote {args.out}: {result['seconds']:.2f} s of AmbiX FOA along '{source.sound_class}'",
    )
    return 0


def _write(out: str, foa: np.ndarray) -> None:
    """Encode the WAV locally, then store it (local path or s3://)."""
    with tempfile.TemporaryDirectory(prefix="swansphere-spatialize-") as folder:
        path = Path(folder, "out.wav")
        write_audio(path, foa, SAMPLE_RATE)
        storage.write_bytes(out, path.read_bytes())

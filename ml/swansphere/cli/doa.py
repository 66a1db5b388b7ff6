"""`swansphere doa FILE.wav`: direction of arrival, per segment (degrees) or per clip (paper, radians)."""

import argparse
from pathlib import Path

from swansphere.audio import read_foa, resample
from swansphere.cli.output import emit
from swansphere.conventions import SAMPLE_RATE
from swansphere.doa import SegmentDoA, clip_doa_rad, segment_doa


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doa",
        help="direction of arrival of an AmbiX file",
        description=(
            "Segment protocol (default, degrees): per segment, STFT intensity over 500-8000 Hz, "
            "smoothed direction, energy, diffuseness, distance and proximity. Paper protocol "
            "(radians): one broadband intensity direction for the whole clip, as the paper's evaluators."
        ),
    )
    parser.add_argument("file", type=Path, metavar="FILE.wav", help="4-channel AmbiX FOA audio")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--segment", type=float, default=1.0, metavar="S", help="segment length in seconds")
    parser.add_argument(
        "--protocol",
        choices=("segment", "paper"),
        default="segment",
        help="segment (degrees) or paper (radians)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    foa, sample_rate = read_foa(args.file)
    foa = resample(foa, sample_rate, SAMPLE_RATE)
    if args.protocol == "paper":
        azimuth_rad, elevation_rad = clip_doa_rad(foa)
        result = {
            "protocol": "paper",
            "unit": "radian",
            "azimuth_rad": azimuth_rad,
            "elevation_rad": elevation_rad,
        }
        emit(
            result,
            args.json,
            f"paper protocol, whole clip: azimuth {azimuth_rad:+.4f} rad, elevation {elevation_rad:+.4f} rad",
        )
        return 0
    segments = segment_doa(foa, SAMPLE_RATE, segment_s=args.segment)
    result = {"protocol": "segment", "unit": "degree", "segments": [s.to_dict() for s in segments]}
    emit(result, args.json, "\n".join(_segment_line(s) for s in segments))
    return 0


def _segment_line(s: SegmentDoA) -> str:
    return (
        f"{s.t0:7.2f}-{s.t1:7.2f} s  azimuth {s.azimuth:+7.1f}°  elevation {s.elevation:+6.1f}°  "
        f"energy {s.energy:.3g}  diffuseness {s.diffuseness:.2f}  distance {s.distance:.2f} m  "
        f"proximity {s.proximity:.2f}"
    )

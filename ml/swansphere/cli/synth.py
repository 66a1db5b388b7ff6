"""`swansphere synth --out DIR|s3://... --clips N`: write SynthSphere clips and their manifest."""

import argparse

from swansphere.cli.output import emit
from swansphere.cli.source import check_seconds
from swansphere.errors import InputError
from swansphere.synth import MANIFEST, SynthConfig, write_dataset


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    defaults = SynthConfig.paper()
    parser = subparsers.add_parser(
        "synth",
        help="generate SynthSphere clips (360° video + AmbiX FOA + ground truth)",
        description=(
            "Procedural clips with exact ground truth: NAME.mp4 (equirectangular), NAME.wav (AmbiX FOA), "
            "NAME.json (trajectory JSON with caption) side by side, plus manifest.jsonl. "
            "Same seed, same bytes; clip k is the same whatever --clips."
        ),
    )
    parser.add_argument("--out", required=True, metavar="DIR|s3://BUCKET/PREFIX", help="destination")
    parser.add_argument("--clips", type=int, required=True, metavar="N", help="number of clips")
    parser.add_argument(
        "--seconds", type=float, default=defaults.seconds, help="clip length (multiple of 0.25)"
    )
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (>= 0)")
    parser.add_argument(
        "--max-sources", type=int, default=defaults.max_sources, metavar="K", help="1..K sources per clip"
    )
    parser.add_argument(
        "--reverb", action=argparse.BooleanOptionalAction, default=defaults.reverb, help="room reverberation"
    )
    parser.add_argument("--rt60", type=float, default=defaults.rt60_s, metavar="S", help="reverberation time")
    ambience = parser.add_mutually_exclusive_group()
    ambience.add_argument(
        "--ambience",
        type=float,
        default=defaults.ambience_db,
        metavar="DB",
        help="diffuse ambience level relative to the sources, dB (e.g. -30)",
    )
    ambience.add_argument(
        "--no-ambience", dest="ambience", action="store_const", const=None, help="no ambience"
    )
    parser.add_argument("--width", type=int, default=defaults.width, help="frame width (height = width / 2)")
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N", help="processes that render clips (same bytes as 1)"
    )
    parser.add_argument("--json", action="store_true", help="print the manifest rows as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.clips < 1:
        raise InputError(f"--clips must be at least 1, got {args.clips}")
    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    if args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}")
    check_seconds(args.seconds)
    try:
        config = SynthConfig(
            seconds=args.seconds,
            width=args.width,
            max_sources=args.max_sources,
            reverb=args.reverb,
            rt60_s=args.rt60,
            ambience_db=args.ambience,
        )
    except ValueError as err:
        raise InputError(str(err)) from None
    rows = write_dataset(args.out, config, args.clips, args.seed, args.workers)
    lines = [f"{row['name']}: {row['caption']}" for row in rows]
    emit(rows, args.json, f"wrote {len(rows)} clip(s) and {MANIFEST} to {args.out}\n" + "\n".join(lines))
    return 0

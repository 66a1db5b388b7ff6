"""What to generate from, as `generate` and `client` both take it: a video, or text for a duration."""

import argparse

from swansphere.errors import InputError


def check_source(args: argparse.Namespace) -> None:
    """--video, or --seconds > 0 for text-only generation; InputError otherwise."""
    if args.video is None and args.seconds is None:
        raise InputError("give --video, or --text with --seconds for text-only generation")
    if args.seconds is not None and args.seconds <= 0:
        raise InputError(f"--seconds must be > 0, got {args.seconds}")

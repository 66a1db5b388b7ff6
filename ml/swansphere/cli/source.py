"""What to generate from, as `generate` and `client` both take it: a video, or text for a duration."""

import argparse
import math

from swansphere.errors import InputError


def check_source(args: argparse.Namespace) -> None:
    """--video, or --seconds > 0 for text-only generation; InputError otherwise."""
    if args.video is None and args.seconds is None:
        raise InputError("give --video, or --text with --seconds for text-only generation")
    if args.seconds is not None:
        check_seconds(args.seconds)


def check_seconds(seconds: float) -> None:
    """--seconds must be a finite number > 0: float() takes "nan" and "inf", which would otherwise fail
    deep inside the work with a traceback or an unclear message."""
    if not (math.isfinite(seconds) and seconds > 0):
        raise InputError(f"--seconds must be > 0 and finite, got {seconds}")

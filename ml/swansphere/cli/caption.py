"""`swansphere caption FILE.wav`: DoA → per-second trajectory → spatial caption (paper App. A.2)."""

import argparse
from pathlib import Path

from swansphere.captioning import DEFAULT_SEGMENT_S, ChatCaptioner, RuleCaptioner, caption_file
from swansphere.cli.output import emit
from swansphere.errors import InputError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "caption",
        help="caption the spatial motion of the dominant sound in an AmbiX file",
        description=(
            "Estimate the direction of the dominant source per segment (intensity vectors, 500-8000 Hz), "
            "write its trajectory as JSON and caption it, with rules or with a chat model behind an "
            "OpenAI-compatible endpoint (API key, if needed, from SWANSPHERE_CAPTION_API_KEY)."
        ),
    )
    parser.add_argument("file", type=Path, metavar="FILE.wav", help="4-channel AmbiX FOA audio")
    parser.add_argument(
        "--video", type=Path, metavar="V.mp4", help="equirectangular video of the same clip (chat context)"
    )
    parser.add_argument(
        "--label", metavar="CLASS", help="sound class, e.g. dog (default: unknown, 'a sound')"
    )
    parser.add_argument(
        "--segment", type=float, default=DEFAULT_SEGMENT_S, metavar="S", help="DoA segment length in seconds"
    )
    parser.add_argument(
        "--llm-url", metavar="URL", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000 or .../v1"
    )
    parser.add_argument("--llm-model", metavar="NAME", help="model name to ask (needs --llm-url)")
    parser.add_argument(
        "--llm-timeout", type=float, default=60.0, metavar="S", help="seconds to wait for the model"
    )
    parser.add_argument("--json", action="store_true", help="print caption, trajectory and segments as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if (args.llm_url is None) != (args.llm_model is None):
        raise InputError("--llm-url and --llm-model go together")
    if args.llm_url is None:
        captioner = RuleCaptioner()
    else:
        captioner = ChatCaptioner(args.llm_url, args.llm_model, timeout_s=args.llm_timeout)
    result = caption_file(args.file, args.video, captioner, label=args.label, segment_s=args.segment)
    emit(result, args.json, result["caption"])
    return 0

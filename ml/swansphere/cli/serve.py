"""`swansphere serve STAGE`: run one service of the pipeline (configured by SWANSPHERE_* variables)."""

import argparse
import importlib

SERVICES = ("gateway", "video_encoder", "spatial_lm", "locdit", "vae_decoder")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run one pipeline service (gRPC; settings from SWANSPHERE_* environment variables)",
        description=__doc__,
    )
    parser.add_argument("stage", choices=SERVICES, help="which service")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    importlib.import_module(f"services.{args.stage}.server").main()
    return 0

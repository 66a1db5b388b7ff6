"""`swansphere export`: a checkpoint -> the Triton model repository the stage services call (DESIGN §2)."""

import argparse

from swansphere.cli.output import emit
from swansphere.serving.triton_export import KINDS, export_repository


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write the Triton model repository of a checkpoint",
        description=(
            "Writes video_encoder, spatial_lm, locdit and vae_decoder (python backend, config.pbtxt + "
            "1/model.py), the checkpoint once and its config (swansphere.json) into OUT."
        ),
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint: local path or s3:// URI")
    parser.add_argument(
        "--checkpoint-location",
        help="where the models load the checkpoint from when the repository is served from S3 "
        "(an s3:// URI or an absolute path in the Triton pod); default: the copy in OUT",
    )
    parser.add_argument("--out", required=True, help="repository folder, e.g. deploy/triton/models")
    parser.add_argument(
        "--max-batch", type=int, default=16, help="rows per dynamic batch of locdit and vae_decoder"
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="instances of locdit and vae_decoder (spatial_lm, video_encoder: one; they hold stream state)",
    )
    parser.add_argument("--kind", choices=sorted(KINDS), default="cpu", help="where the instances run")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    summary = export_repository(
        args.checkpoint, args.out, args.max_batch, args.instances, args.kind, args.checkpoint_location
    )
    human = (
        f"wrote Triton repository {summary['repository']}: {', '.join(summary['models'])} "
        f"({args.kind}, max batch {args.max_batch}, {args.instances} instance(s)); "
        f"checkpoint sha256 {summary['checkpoint_sha256']}"
    )
    emit(summary, args.json, human)
    return 0

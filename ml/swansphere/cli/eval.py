"""`swansphere eval --generated DIR --reference DIR`: the paper's metrics that run here (DESIGN §5, §5b)."""

import argparse
from typing import Any

from swansphere.cli.output import emit
from swansphere.embeddings import embedding_from_spec
from swansphere.errors import InputError
from swansphere.evaluation import evaluate

DELTAS = {"delta_azimuth": "Δazimuth", "delta_elevation": "Δelevation", "delta_angular": "Δangular"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="spatial accuracy (both DoA protocols) and FD of generated vs reference FOA",
        description=(
            "Pairs generated and reference AmbiX files by name. Segment protocol (degrees): per-segment "
            "STFT intensity DoA, compared segment by segment. Paper protocol (radians): one broadband "
            "intensity direction per clip, the paper's ΔAzimuth/ΔElevation/ΔAngular. FD: Fréchet distance "
            "between embeddings of the W channel. The default embedding, aisfx, runs offline and stands in "
            "for OpenL3 (whose weights cannot be fetched here): its FD is not comparable with the paper's."
        ),
    )
    parser.add_argument("--generated", required=True, metavar="DIR|s3://...", help="generated AmbiX files")
    parser.add_argument("--reference", required=True, metavar="DIR|s3://...", help="reference AmbiX files")
    parser.add_argument(
        "--embedding",
        default="aisfx",
        metavar="aisfx|openl3:PATH|passt:PATH|none",
        help="embedding for the FD: aisfx (offline stand-in for OpenL3), local/s3 torchopenl3 or "
        "hear21passt weights, or none",
    )
    parser.add_argument(
        "--trajectory",
        action="store_true",
        help="also score the generated audio against the reference folder's NAME.json ground truth",
    )
    parser.add_argument("--segment", type=float, default=1.0, metavar="S", help="segment length in seconds")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.segment > 0:
        raise InputError(f"--segment must be > 0, got {args.segment}")
    embedding = embedding_from_spec(args.embedding)
    result = evaluate(
        args.generated,
        args.reference,
        embedding=embedding,
        trajectory=args.trajectory,
        segment_s=args.segment,
    )
    emit(result, args.json, summary_text(result))
    return 0


def summary_text(result: dict[str, Any]) -> str:
    """The evaluation as a table for people: every figure names its protocol and unit."""
    rows = [("metric", "protocol", "unit", "mean", "median", "n")]
    for protocol, unit in (("segment", "deg"), ("paper", "rad")):
        for key, label in DELTAS.items():
            rows.append((label, protocol, unit, *_cells(result[f"{protocol}_protocol"][f"{key}_{unit}"])))
    if result["trajectory"] is not None:
        for key in ("generated_vs_truth_deg", "reference_vs_truth_deg"):
            label = "Δangular " + key.removesuffix("_deg").replace("_", " ")
            rows.append((label, "segment", "deg", *_cells(result["trajectory"][key])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"{result['clips']} clip pair(s): {result['generated']} vs reference {result['reference']}"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    distribution = result["distribution"]
    if distribution is not None:
        value = "n/a" if distribution["value"] is None else f"{distribution['value']:.4g}"
        lines.append(
            f"FD ({distribution['embedding']}, W channel, {distribution['n_generated']} vs "
            f"{distribution['n_reference']} embeddings): {value}"
        )
        lines.append(f"  note: {distribution['note']}")
    skipped = result["unpaired"]
    if skipped["generated"] or skipped["reference"]:
        lines.append(
            f"skipped without a partner: {len(skipped['generated'])} generated, "
            f"{len(skipped['reference'])} reference"
        )
    return "\n".join(lines)


def _cells(value: dict[str, float]) -> tuple[str, str, str]:
    return f"{value['mean']:.4f}", f"{value['median']:.4f}", str(value["count"])

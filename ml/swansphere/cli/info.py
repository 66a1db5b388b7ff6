"""`swansphere info`: parameter counts per component of a preset (built on the meta device)."""

import argparse

import torch
from transformers import T5Config, T5EncoderModel

from swansphere.cli.output import emit
from swansphere.models.swansphere import PRESETS, SwanSphere, preset
from swansphere.models.text_encoder import ByteTokenizer, TextEncoder

FLAN_T5_LARGE = T5Config(
    vocab_size=32128,
    d_model=1024,
    d_kv=64,
    d_ff=2816,
    num_layers=24,
    num_heads=16,
    feed_forward_proj="gated-gelu",
)
"""Architecture of the FLAN-T5-large encoder the paper preset loads, to count it without its weights."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="parameter counts of a model preset")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def parameter_report(name: str) -> dict:
    config = preset(name)
    with torch.device("meta"):
        text_encoder = None
        if name == "paper":
            text_encoder = TextEncoder(T5EncoderModel(FLAN_T5_LARGE), ByteTokenizer(), config.text.max_length)
        model = SwanSphere(config, text_encoder=text_encoder)
    generator = {key: _count(module) for key, module in model.generator_modules().items()}
    encoders = {key: _count(module) for key, module in model.encoder_modules().items()}
    return {
        "preset": name,
        "generator_params": sum(generator.values()),
        "components": generator,
        "encoders": encoders,
    }


def run(args: argparse.Namespace) -> int:
    report = parameter_report(args.preset)
    lines = [f"preset {report['preset']}: generator {report['generator_params'] / 1e6:.1f} M parameters"]
    lines += [f"  {key:<14} {count / 1e6:9.2f} M" for key, count in report["components"].items()]
    lines += ["encoders and VAE (not in the generator total):"]
    lines += [f"  {key:<14} {count / 1e6:9.2f} M" for key, count in report["encoders"].items()]
    emit(report, args.json, "\n".join(lines))
    return 0


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

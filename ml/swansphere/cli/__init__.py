"""`swansphere`: one CLI, one module per subcommand in this package.

Each subcommand module has `add_parser(subparsers)`, which registers its arguments and sets
`run=function(args) -> int`. Bad input raises `InputError`: exit code 2 and one line on stderr.
"""

import argparse
import importlib
import sys
from collections.abc import Sequence

from swansphere import __version__
from swansphere.errors import InputError

SUBCOMMANDS = (
    "demo",
    "generate",
    "synth",
    "doa",
    "caption",
    "spatialize",
    "eval",
    "bench",
    "info",
    "client",
    "serve",
    "export",
)
"""Modules of this package, in the order `--help` lists them."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand, or only `only`: each subcommand module imports what it runs
    (torch, transformers, grpc), so `swansphere client` need not load the model code."""
    parser = OneLineParser(prog="swansphere", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"swansphere {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for name in [only] if only in SUBCOMMANDS else SUBCOMMANDS:
        importlib.import_module(f"swansphere.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    return dispatch(build_parser(command).parse_args(argv), "swansphere")


def dispatch(args: argparse.Namespace, prog: str) -> int:
    """Run the parsed subcommand: bad input is exit code 2 and one line on stderr, never a traceback."""
    try:
        return int(args.run(args) or 0)
    except InputError as err:
        print(f"{prog} {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog} {args.command}: interrupted", file=sys.stderr)
        return 130

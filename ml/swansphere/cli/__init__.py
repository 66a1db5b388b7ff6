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


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="swansphere", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"swansphere {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for name in SUBCOMMANDS:
        importlib.import_module(f"swansphere.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(build_parser().parse_args(argv), "swansphere")


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

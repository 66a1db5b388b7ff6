"""How subcommands print results: JSON for machines, short lines for people."""

import json
import sys
from typing import Any


def emit(result: Any, as_json: bool, human: str) -> None:
    """Print `result` as one JSON document when `as_json`, else the human-readable text."""
    if as_json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(human.rstrip("\n") + "\n")

"""How subcommands print results (JSON for machines, short lines for people) and check where they
write files."""

import json
import sys
from pathlib import Path
from typing import Any

from swansphere import storage
from swansphere.errors import InputError


def emit(result: Any, as_json: bool, human: str) -> None:
    """Print `result` as one JSON document when `as_json`, else the human-readable text."""
    if as_json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(human.rstrip("\n") + "\n")


def check_out_file(path: str | Path | None, flag: str, suffix: str = ".wav", s3: bool = False) -> None:
    """Refuse an output file we could not write before any work is done, not after the model has run:
    a wrong suffix, a folder, s3:// where only local files are written, a place that refuses a new
    file. Missing parent folders are created, as writing the file would; no file is left behind."""
    if path is None:
        return
    name = str(path)
    if not name.lower().endswith(suffix):
        raise InputError(f"{flag} must be a {suffix} file, got {name}")
    if storage.is_s3(name):
        if not s3:
            raise InputError(f"{flag} must be a local file, got {name}: write it here and upload it")
        return
    target = Path(name)
    if target.is_dir():
        raise InputError(f"{flag} must be a {suffix} file, got the folder {name}")
    existed = target.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("ab"):
            pass
    except OSError as err:
        raise InputError(f"{target}: cannot write ({err.strerror})") from None
    if not existed:
        target.unlink()

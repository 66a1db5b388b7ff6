"""The binary message every stage passes (DESIGN §2): who it belongs to, what it is, and raw tensors.

Layout: b"SSE1" | header length (u32, little endian) | header JSON | tensor bytes, back to back.
Header: {"stream_id", "kind", "index", "meta", "tensors": [{"name", "dtype", "shape"}]}. Tensors are
C-ordered little-endian arrays of a short list of dtypes; nothing is pickled, so a message from the
network can only ever become numbers and JSON.
"""

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from swansphere.errors import InputError

MAGIC = b"SSE1"
DTYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "int64": np.int64,
    "int32": np.int32,
    "uint8": np.uint8,
}
"""The dtypes a message may carry, by name."""
WIRE_DTYPES = {name: np.dtype(dtype).newbyteorder("<") for name, dtype in DTYPES.items()}
"""Each dtype as it travels (here and in the stage APIs' tensors): little endian."""
MAX_HEADER_BYTES = 1 << 20


@dataclass
class Envelope:
    """One message: `index` is the patch index (or first frame index for frames and tokens)."""

    stream_id: str
    kind: str
    index: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, int]:
        """What consumers deduplicate on: a redelivered message has the same key."""
        return self.stream_id, self.kind, self.index


def encode(message: Envelope) -> bytes:
    specs, blobs = [], []
    for name, array in message.tensors.items():
        dtype = np.dtype(array.dtype).name
        if dtype not in DTYPES:
            raise InputError(f"tensor {name!r}: dtype {dtype} cannot travel (allowed: {sorted(DTYPES)})")
        specs.append({"name": name, "dtype": dtype, "shape": list(array.shape)})
        blobs.append(np.ascontiguousarray(array, dtype=WIRE_DTYPES[dtype]).tobytes())
    header = json.dumps(
        {
            "stream_id": message.stream_id,
            "kind": message.kind,
            "index": message.index,
            "meta": message.meta,
            "tensors": specs,
        },
        separators=(",", ":"),
    ).encode()
    return b"".join([MAGIC, struct.pack("<I", len(header)), header, *blobs])


def decode(data: bytes) -> Envelope:
    """The message in `data`; InputError for anything that is not a well-formed envelope."""
    if len(data) < 8 or data[:4] != MAGIC:
        raise InputError("not a SwanSphere envelope (bad magic)")
    (length,) = struct.unpack("<I", data[4:8])
    if length > MAX_HEADER_BYTES or 8 + length > len(data):
        raise InputError(f"envelope header length {length} does not fit the {len(data)}-byte message")
    try:
        header = json.loads(data[8 : 8 + length])
        stream_id, kind, index = str(header["stream_id"]), str(header["kind"]), int(header["index"])
        meta, specs = dict(header["meta"]), list(header["tensors"])
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"envelope header is not valid: {err}") from None
    offset, tensors = 8 + length, {}
    for spec in specs:
        try:
            name, dtype = str(spec["name"]), WIRE_DTYPES[spec["dtype"]]
            shape = tuple(int(n) for n in spec["shape"])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"envelope tensor spec is not valid: {spec!r}") from None
        if any(n < 0 for n in shape):
            raise InputError(f"tensor {name!r}: negative dimension in {shape}")
        # Python's integers: a header naming a huge shape cannot wrap around to a small size.
        size = math.prod(shape) * dtype.itemsize
        if offset + size > len(data):
            raise InputError(f"tensor {name!r} {shape} runs past the end of the message")
        tensors[name] = np.frombuffer(data, dtype=dtype, count=size // dtype.itemsize, offset=offset).reshape(
            shape
        )
        offset += size
    if offset != len(data):
        raise InputError(f"{len(data) - offset} trailing bytes after the envelope's tensors")
    return Envelope(stream_id=stream_id, kind=kind, index=index, meta=meta, tensors=tensors)

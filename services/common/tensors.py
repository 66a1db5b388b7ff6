"""`swansphere.v1.Tensor` <-> numpy, with the same dtype whitelist as the transport envelope."""

import math

import numpy as np

from swansphere.errors import InputError
from swansphere.serving.envelope import DTYPES, WIRE_DTYPES
from swansphere.v1 import stages_pb2 as pb

MAX_ELEMENTS = 1 << 26
"""64 M values: far above any real request, far below what would exhaust memory."""


def to_tensor(array: np.ndarray) -> pb.Tensor:
    dtype = np.dtype(array.dtype).name
    if dtype not in DTYPES:
        raise InputError(f"dtype {dtype} cannot travel (allowed: {sorted(DTYPES)})")
    data = np.ascontiguousarray(array, dtype=WIRE_DTYPES[dtype]).tobytes()
    return pb.Tensor(dtype=dtype, shape=list(array.shape), data=data)


def from_tensor(tensor: pb.Tensor, name: str, dtype: str, ndim: int) -> np.ndarray:
    """The array in `tensor`; InputError naming the field unless it is `dtype` with `ndim` dims and
    finite values (a NaN would come back as a NaN patch, not as an error)."""
    if tensor.dtype != dtype:
        raise InputError(f"{name}: dtype {tensor.dtype or '(unset)'}, expected {dtype}")
    shape = tuple(tensor.shape)
    if len(shape) != ndim or any(n < 0 for n in shape):
        raise InputError(f"{name}: shape {list(shape)}, expected {ndim} non-negative dimensions")
    count = math.prod(shape)  # Python's integers: a huge shape cannot wrap around to a small count
    if count > MAX_ELEMENTS:
        raise InputError(f"{name}: {count} values, at most {MAX_ELEMENTS}")
    wire = WIRE_DTYPES[dtype]
    expected = count * wire.itemsize
    if len(tensor.data) != expected:
        raise InputError(
            f"{name}: {len(tensor.data)} bytes for shape {list(shape)} {dtype}, expected {expected}"
        )
    array = np.frombuffer(tensor.data, wire).reshape(shape)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError(f"{name}: NaN or infinite values")
    return array

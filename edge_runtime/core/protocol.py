"""The typed dataplane's vocabulary: requests, responses, tensors, errors.

Transport-free: the REST codec (`codec`) and the gRPC codec (`grpc_codec`)
turn wire bytes into these objects and back; the dataplane only ever sees
these. Pure (numpy only), so each piece is unit-tested on its own.

Bounded work: every tensor is built by the helpers below, which check a
request's declared shapes against the bytes actually received *before*
anything is allocated. Every element of any datatype takes at least one byte
on any wire (JSON, the binary extension, protobuf), so a shape whose element
count (or any single dimension) exceeds the request's size cannot be honest
and is refused by name, whatever it claims.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

# v2 datatype name -> numpy dtype. BYTES is carried as an object array of
# `bytes`/`str`, which is what onnxruntime accepts for tensor(string).
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}

# onnxruntime's type strings -> v2 datatype names.
ONNX_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
    "tensor(bfloat16)": "BF16",
}

_NUMPY_TO_V2 = {dt: name for name, dt in DATATYPES.items() if name != "BYTES"}
LE: Literal["<"] = "<"
_U32 = struct.Struct("<I")


# --- errors: each maps to one status per transport -----------------------------------


class ProtocolError(ValueError):
    """The request is malformed or does not fit the model; the message names the problem.

    REST 400, gRPC INVALID_ARGUMENT. Never counts against readiness.
    """


class NotFound(Exception):
    """Unknown model or version. REST 404, gRPC NOT_FOUND."""


class InputRejected(Exception):
    """The model refused this particular input while running it (onnxruntime INVALID_ARGUMENT,
    e.g. an index out of range): the client's data is at fault, not the device.

    REST 400, gRPC INVALID_ARGUMENT. Never counts against readiness.
    """


class ModelError(Exception):
    """The model or the runtime failed on a request that passed validation.

    REST 500, gRPC INTERNAL. Counts against readiness.
    """


class TooLarge(Exception):
    """A request larger than the configured limit. REST 413, gRPC RESOURCE_EXHAUSTED."""


class Forbidden(Exception):
    """An API turned off or restricted for this client. REST 403, gRPC PERMISSION_DENIED."""


class LoadRefused(Exception):
    """A repository load was refused; the version already serving keeps serving (REST 400)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


# --- typed request and response --------------------------------------------------------


@dataclass(slots=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray  # already shaped; BYTES: object array of bytes


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool | None = None  # REST binary extension; None: follow the request-level setting


@dataclass(slots=True)
class InferenceRequest:
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None  # None: every output of the model
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    binary_output: bool = False  # REST binary extension, request level


@dataclass(slots=True)
class OutputTensor:
    name: str
    data: np.ndarray
    binary: bool = False  # REST: send as binary extension data


@dataclass(slots=True)
class InferenceResponse:
    model_name: str
    model_version: str | None
    outputs: list[OutputTensor]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    source: str = "edge"  # "edge" or "cloud"


# --- datatypes ---------------------------------------------------------------------------


def v2_datatype(dtype: np.dtype[Any]) -> str:
    name = _NUMPY_TO_V2.get(dtype)  # native byte order: one dict lookup (the hot path)
    if name is not None:
        return name
    if dtype.kind in ("O", "U", "S"):
        return "BYTES"
    try:
        return _NUMPY_TO_V2[dtype.newbyteorder("=")]
    except KeyError as e:
        raise ProtocolError(f"numpy dtype {dtype} has no Open Inference Protocol datatype") from e


def check_datatype(name: str, raw: Any) -> str:
    # isinstance first: an object or a list is unhashable and must be a 400, not a TypeError.
    if not isinstance(raw, str) or raw not in DATATYPES:
        raise ProtocolError(f"input '{name}': datatype must be one of {sorted(DATATYPES)}, got {raw!r}")
    return raw


# --- bounded shapes and tensors -----------------------------------------------------------


def check_shape(name: str, raw: Any, budget: int) -> tuple[tuple[int, ...], int]:
    """Validate a declared shape against `budget`, the bytes the whole request occupies.

    Returns (shape, element count). Refuses before any allocation: negative or
    non-integer dimensions, any dimension larger than the request, or an
    element count larger than the request (each element takes >= 1 byte on
    every wire), including products that would overflow int64.
    """
    if isinstance(raw, tuple):
        raw = list(raw)
    if not isinstance(raw, list):
        raise ProtocolError(f"input '{name}': shape must be a list of integers, got {_short(raw)}")
    if len(raw) > 64:
        raise ProtocolError(f"input '{name}': shape has {len(raw)} dimensions, more than the 64 allowed")
    count = 1
    for d in raw:
        if type(d) is not int:
            raise ProtocolError(f"input '{name}': shape must be a list of integers, got {_short(raw)}")
        if d < 0:
            raise ProtocolError(f"input '{name}': shape must not have negative dimensions, got {raw}")
        if d > budget:
            raise ProtocolError(
                f"input '{name}': dimension {d} of shape {_short(raw)} is larger than the whole request "
                f"({budget} bytes) could carry"
            )
        count *= d
    if count > budget:
        raise ProtocolError(
            f"input '{name}': shape {_short(raw)} declares {count} elements, more than the request "
            f"({budget} bytes) could carry"
        )
    return tuple(raw), count


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 120 else text[:117] + "..."


def tensor_from_buffer(name: str, datatype: str, shape: tuple[int, ...], count: int, buf: memoryview) -> np.ndarray:
    """Raw little-endian bytes (binary extension, gRPC raw contents) -> array; zero-copy for numbers."""
    if datatype == "BYTES":
        return bytes_elements(name, buf, count).reshape(shape)
    dtype = DATATYPES[datatype]
    if len(buf) != count * dtype.itemsize:
        raise ProtocolError(
            f"input '{name}': {len(buf)} bytes of data do not match shape {list(shape)} of {datatype} "
            f"({count * dtype.itemsize} bytes)"
        )
    return np.frombuffer(buf, dtype=dtype.newbyteorder(LE)).reshape(shape)


def bytes_elements(name: str, buf: memoryview, count: int) -> np.ndarray:
    """Length-prefixed BYTES elements: a 4-byte little-endian length, then the bytes, per element.

    Each element takes at least 4 bytes, so `count` is checked against the
    buffer before the result is allocated.
    """
    if count * 4 > len(buf):
        raise ProtocolError(
            f"input '{name}': {count} BYTES elements need at least {count * 4} bytes, the data has {len(buf)}"
        )
    out = np.empty(count, dtype=object)
    pos = 0
    size = len(buf)
    unpack = _U32.unpack_from
    for i in range(count):
        if pos + 4 > size:
            raise ProtocolError(f"input '{name}': BYTES data ends inside element {i}'s length")
        (n,) = unpack(buf, pos)
        pos += 4
        if pos + n > size:
            raise ProtocolError(f"input '{name}': BYTES element {i} runs past the data ({n} bytes)")
        out[i] = bytes(buf[pos : pos + n])
        pos += n
    if pos != size:
        raise ProtocolError(f"input '{name}': BYTES data has {size - pos} bytes after the last element")
    return out


def bytes_to_wire(arr: np.ndarray) -> bytes:
    parts: list[bytes] = []
    pack = _U32.pack
    for item in arr.reshape(-1):
        b = item if isinstance(item, bytes) else str(item).encode()
        parts.append(pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def numeric_to_wire(arr: np.ndarray) -> bytes:
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder(LE)).tobytes()


def tensor_from_list(name: str, datatype: str, shape: tuple[int, ...], count: int, data: Any) -> np.ndarray:
    """JSON `data` (flat or nested lists) -> array of `shape`; the list already exists, so no new bound is needed."""
    if datatype == "BYTES":
        flat = flatten(data if isinstance(data, list) else [data])
        if not all(isinstance(x, str | bytes) for x in flat):
            raise ProtocolError(f"input '{name}': BYTES data must be strings")
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
    else:
        try:
            # A number the datatype cannot hold (1e300 as FP32) is the client's mistake, not an inf to infer on.
            with np.errstate(over="raise", invalid="raise"):
                arr = np.asarray(data, dtype=DATATYPES[datatype])
        except FloatingPointError as e:
            raise ProtocolError(f"input '{name}': a value is out of range for {datatype}") from e
        except (ValueError, TypeError, OverflowError) as e:
            raise ProtocolError(f"input '{name}': data is not valid {datatype}: {_short(str(e))}") from e
    if arr.size != count:
        raise ProtocolError(f"input '{name}': shape {list(shape)} needs {count} elements, got {arr.size}")
    return arr.reshape(shape)


def flatten(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    stack = [data]
    # Iterative, so a deeply nested body cannot exhaust the recursion limit.
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def check_unique(names: Sequence[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ProtocolError(f"input '{n}' is given more than once")
        seen.add(n)

"""Open Inference Protocol (KServe v2) tensors: JSON and binary wire format <-> numpy.

Pure functions over bytes and arrays: no HTTP, no onnxruntime. The server
decodes with `decode_request`, runs the model, and encodes with
`encode_response`; the same code serves JSON bodies and the binary tensor data
extension (`Inference-Header-Content-Length` + raw little-endian tensors after
the JSON header), so both paths are tested through one set of functions.

JSON output goes through orjson's native numpy serialisation: no `.tolist()`,
which builds one Python object per element and dominates latency for large
tensors.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson

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
_LE: Literal["<"] = "<"
_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY
HEADER_LENGTH = "inference-header-content-length"


class ProtocolError(ValueError):
    """A request that does not follow the protocol; the message names the problem (HTTP 400)."""


@dataclass(slots=True)
class InputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: follow the request-level binary_data_output


@dataclass(slots=True)
class InferRequest:
    inputs: list[InputTensor]
    outputs: list[RequestedOutput] | None = None  # None: every output of the model
    id: str | None = None
    binary_output: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)


def v2_datatype(dtype: np.dtype[Any]) -> str:
    if dtype.kind in ("O", "U", "S"):
        return "BYTES"
    try:
        return _NUMPY_TO_V2[dtype.newbyteorder("=")]
    except KeyError as e:
        raise ProtocolError(f"numpy dtype {dtype} has no Open Inference Protocol datatype") from e


def _element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _parse_shape(name: str, raw: Any) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in raw):
        raise ProtocolError(f"input '{name}': shape must be a list of integers, got {raw!r}")
    if any(d < 0 for d in raw):
        raise ProtocolError(f"input '{name}': shape must not have negative dimensions, got {raw}")
    return tuple(raw)


def _flatten_bytes(data: Any) -> list[Any]:
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


def _json_array(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    if datatype == "BYTES":
        flat = _flatten_bytes(data if isinstance(data, list) else [data])
        if not all(isinstance(x, str) for x in flat):
            raise ProtocolError(f"input '{name}': BYTES data must be strings")
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
    else:
        try:
            arr = np.asarray(data, dtype=DATATYPES[datatype])
        except (ValueError, TypeError, OverflowError) as e:
            raise ProtocolError(f"input '{name}': data is not valid {datatype}: {e}") from e
        if arr.dtype == object:  # ragged nesting
            raise ProtocolError(f"input '{name}': data is not a regular (non-ragged) array")
    if arr.size != _element_count(shape):
        raise ProtocolError(
            f"input '{name}': shape {list(shape)} needs {_element_count(shape)} elements, got {arr.size}"
        )
    return arr.reshape(shape)


def _bytes_elements(name: str, buf: memoryview, count: int) -> np.ndarray:
    """Binary BYTES: each element is a 4-byte little-endian length then the bytes."""
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(buf):
            raise ProtocolError(f"input '{name}': binary BYTES data ends inside element {i}'s length")
        (n,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if pos + n > len(buf):
            raise ProtocolError(f"input '{name}': binary BYTES element {i} runs past the data ({n} bytes)")
        out[i] = bytes(buf[pos : pos + n])
        pos += n
    if pos != len(buf):
        raise ProtocolError(f"input '{name}': binary BYTES data has {len(buf) - pos} bytes after the last element")
    return out


def _binary_array(name: str, datatype: str, shape: tuple[int, ...], buf: memoryview) -> np.ndarray:
    count = _element_count(shape)
    if datatype == "BYTES":
        return _bytes_elements(name, buf, count).reshape(shape)
    dtype = DATATYPES[datatype]
    if len(buf) != count * dtype.itemsize:
        raise ProtocolError(
            f"input '{name}': binary_data_size {len(buf)} does not match shape {list(shape)} of {datatype} "
            f"({count * dtype.itemsize} bytes)"
        )
    # Zero-copy view of the request body; the wire format is little-endian.
    return np.frombuffer(buf, dtype=dtype.newbyteorder(_LE)).reshape(shape)


def _bool_param(params: Mapping[str, Any], key: str, where: str) -> bool | None:
    if key not in params:
        return None
    value = params[key]
    if not isinstance(value, bool):
        raise ProtocolError(f"{where}: parameter '{key}' must be true or false, got {value!r}")
    return value


def parse_header_length(raw: str | None, body_len: int) -> int | None:
    """Validate the Inference-Header-Content-Length header against the body length."""
    if raw is None:
        return None
    try:
        n = int(raw)
    except ValueError as e:
        raise ProtocolError(f"Inference-Header-Content-Length must be an integer, got {raw!r}") from e
    if n < 0 or n > body_len:
        raise ProtocolError(f"Inference-Header-Content-Length {n} is outside the body of {body_len} bytes")
    return n


def decode_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """Parse an infer request body (JSON, or JSON header + binary tensors)."""
    view = memoryview(body)
    json_part = view if header_length is None else view[:header_length]
    try:
        doc = orjson.loads(json_part)
    except orjson.JSONDecodeError as e:
        raise ProtocolError(f"request body is not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise ProtocolError("request body must be a JSON object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("request must have a non-empty 'inputs' list")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("'parameters' must be a JSON object")
    binary_pos = 0 if header_length is None else header_length
    inputs: list[InputTensor] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_inputs):
        if not isinstance(raw, dict):
            raise ProtocolError(f"inputs[{i}] must be a JSON object")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise ProtocolError(f"inputs[{i}] must have a 'name' string")
        if name in seen:
            raise ProtocolError(f"input '{name}' is given more than once")
        seen.add(name)
        datatype = raw.get("datatype")
        if datatype not in DATATYPES:
            raise ProtocolError(f"input '{name}': datatype must be one of {sorted(DATATYPES)}, got {datatype!r}")
        shape = _parse_shape(name, raw.get("shape"))
        in_params = raw.get("parameters") or {}
        if not isinstance(in_params, dict):
            raise ProtocolError(f"input '{name}': 'parameters' must be a JSON object")
        size = in_params.get("binary_data_size")
        if size is not None:
            if header_length is None:
                raise ProtocolError(
                    f"input '{name}' has binary_data_size but the request has no Inference-Header-Content-Length"
                )
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ProtocolError(f"input '{name}': binary_data_size must be a non-negative integer")
            if binary_pos + size > len(body):
                raise ProtocolError(
                    f"input '{name}': binary_data_size {size} runs past the end of the body "
                    f"({len(body) - binary_pos} bytes left)"
                )
            arr = _binary_array(name, datatype, shape, view[binary_pos : binary_pos + size])
            binary_pos += size
        else:
            if "data" not in raw:
                raise ProtocolError(f"input '{name}' has neither 'data' nor a binary_data_size parameter")
            arr = _json_array(name, datatype, shape, raw["data"])
        inputs.append(InputTensor(name, datatype, shape, arr))
    if header_length is not None and binary_pos != len(body):
        raise ProtocolError(
            f"body has {len(body) - binary_pos} bytes of binary data not claimed by any input's binary_data_size"
        )
    binary_output = _bool_param(params, "binary_data_output", "request") or False
    outputs: list[RequestedOutput] | None = None
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise ProtocolError("'outputs' must be a list")
        outputs = []
        for i, raw in enumerate(raw_outputs):
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise ProtocolError(f"outputs[{i}] must be an object with a 'name' string")
            o_params = raw.get("parameters") or {}
            if not isinstance(o_params, dict):
                raise ProtocolError(f"output '{raw['name']}': 'parameters' must be a JSON object")
            if "classification" in o_params:
                raise ProtocolError(f"output '{raw['name']}': the classification extension is not supported")
            outputs.append(RequestedOutput(raw["name"], _bool_param(o_params, "binary_data", f"output {raw['name']}")))
    req_id = doc.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise ProtocolError("'id' must be a string")
    return InferRequest(inputs, outputs, req_id, binary_output, params)


def _bytes_to_wire(arr: np.ndarray) -> bytes:
    parts: list[bytes] = []
    for item in arr.reshape(-1):
        b = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def _json_bytes_data(arr: np.ndarray) -> list[str]:
    out: list[str] = []
    for item in arr.reshape(-1):
        if isinstance(item, bytes):
            out.append(item.decode("utf-8", errors="replace"))
        else:
            out.append(str(item))
    return out


@dataclass(slots=True)
class EncodedResponse:
    body: bytes
    header_length: int | None  # set when binary tensors follow the JSON header


def encode_response(
    model_name: str,
    model_version: str | None,
    outputs: Sequence[tuple[str, np.ndarray, bool]],
    *,
    request_id: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> EncodedResponse:
    """Build the response body; `outputs` is (name, array, as_binary) per output."""
    doc_outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, arr, binary in outputs:
        datatype = v2_datatype(arr.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary:
            if datatype == "BYTES":
                raw = _bytes_to_wire(arr)
            else:
                raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder(_LE)).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        elif datatype == "BYTES":
            entry["data"] = _json_bytes_data(arr)
        else:
            # orjson serialises C-contiguous native-endian arrays directly.
            entry["data"] = np.ascontiguousarray(arr).reshape(-1)
        doc_outputs.append(entry)
    doc: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        doc["model_version"] = model_version
    if request_id is not None:
        doc["id"] = request_id
    if parameters:
        doc["parameters"] = dict(parameters)
    doc["outputs"] = doc_outputs
    header = orjson.dumps(doc, option=_JSON_OPTS)
    if not blobs:
        return EncodedResponse(header, None)
    return EncodedResponse(b"".join([header, *blobs]), len(header))


def dumps(doc: Any) -> bytes:
    return orjson.dumps(doc, option=_JSON_OPTS)


def encode_request(
    inputs: Sequence[tuple[str, np.ndarray]],
    *,
    binary: bool = False,
    binary_output: bool = False,
    outputs: Sequence[str] | None = None,
    request_id: str | None = None,
) -> tuple[bytes, int | None]:
    """Client side of the wire format (used by the fallback forwarder, tests and benchmarks)."""
    doc_inputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, arr in inputs:
        datatype = v2_datatype(arr.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary:
            raw = (
                _bytes_to_wire(arr)
                if datatype == "BYTES"
                else np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder(_LE)).tobytes()
            )
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        elif datatype == "BYTES":
            entry["data"] = _json_bytes_data(arr)
        else:
            entry["data"] = np.ascontiguousarray(arr).reshape(-1)
        doc_inputs.append(entry)
    doc: dict[str, Any] = {"inputs": doc_inputs}
    if request_id is not None:
        doc["id"] = request_id
    if binary_output:
        doc["parameters"] = {"binary_data_output": True}
    if outputs is not None:
        doc["outputs"] = [{"name": n} for n in outputs]
    header = orjson.dumps(doc, option=_JSON_OPTS)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def decode_response(body: bytes, header_length: int | None = None) -> dict[str, np.ndarray]:
    """Client side: response body -> {output name: array}."""
    view = memoryview(body)
    doc = orjson.loads(view if header_length is None else view[:header_length])
    pos = 0 if header_length is None else header_length
    out: dict[str, np.ndarray] = {}
    for o in doc["outputs"]:
        shape = tuple(o["shape"])
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            out[o["name"]] = _binary_array(o["name"], o["datatype"], shape, view[pos : pos + size]).copy()
            pos += size
        else:
            out[o["name"]] = _json_array(o["name"], o["datatype"], shape, o["data"])
    return out

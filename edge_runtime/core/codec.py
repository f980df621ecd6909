"""REST wire codec of the Open Inference Protocol: JSON bodies and the binary tensor data extension.

Bytes <-> the typed objects of `protocol`; no HTTP, no onnxruntime. The same
functions serve JSON bodies and the binary extension
(`Inference-Header-Content-Length` + raw little-endian tensors after the JSON
header). Every tensor is built by `protocol`'s bounded helpers, so a declared
shape is checked against the body's size before anything is allocated.

What the binary extension is for: JSON numbers cost 5-20 bytes each and a
parse of every one of them; binary tensors are read in place (zero-copy for
numbers). Any tensor of more than a few thousand elements should be sent
binary.

JSON output goes through orjson's native numpy serialisation: no `.tolist()`,
which builds one Python object per element.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from edge_runtime.core.protocol import (
    DATATYPES,
    ONNX_TO_V2,
    InferenceRequest,
    InferenceResponse,
    OutputTensor,
    ProtocolError,
    RequestedOutput,
    Tensor,
    bytes_to_wire,
    check_datatype,
    check_shape,
    numeric_to_wire,
    tensor_from_buffer,
    tensor_from_list,
    v2_datatype,
)

__all__ = [
    "DATATYPES",
    "HEADER_LENGTH",
    "ONNX_TO_V2",
    "EncodedResponse",
    "ProtocolError",
    "decode_request",
    "decode_response",
    "decode_response_typed",
    "dumps",
    "encode_request",
    "encode_request_typed",
    "encode_response",
    "parse_header_length",
]

_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY
HEADER_LENGTH = "inference-header-content-length"


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
        raise ProtocolError(f"Inference-Header-Content-Length must be an integer, got {raw[:40]!r}") from e
    if n < 0 or n > body_len:
        raise ProtocolError(f"Inference-Header-Content-Length {n} is outside the body of {body_len} bytes")
    return n


def _object(raw: Any, what: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    return raw


def decode_request(body: bytes | bytearray | bytearray, header_length: int | None = None) -> InferenceRequest:
    """Parse an infer request body (JSON, or JSON header + binary tensors) into a typed request."""
    return request_from_header(load_header(body, header_length), body, header_length)


def load_header(body: bytes | bytearray, header_length: int | None) -> dict[str, Any]:
    """The JSON document of a request: the whole body, or its first `header_length` bytes."""
    json_part = memoryview(body) if header_length is None else memoryview(body)[:header_length]
    try:
        doc = orjson.loads(json_part)
    except orjson.JSONDecodeError as e:
        raise ProtocolError(f"request body is not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise ProtocolError("request body must be a JSON object")
    return doc


def binary_numeric(doc: dict[str, Any]) -> bool:
    """Whether every input of a request's header is numbers in the binary extension: decoding it is then
    zero-copy (no per-element work, whatever its size). Only a routing hint: the decode checks everything."""
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        return False
    for raw in inputs:
        if not isinstance(raw, dict) or raw.get("datatype") == "BYTES":
            return False
        params = raw.get("parameters")
        if not isinstance(params, dict) or "binary_data_size" not in params:
            return False
    return True


def request_from_header(doc: dict[str, Any], body: bytes | bytearray, header_length: int | None) -> InferenceRequest:
    """A typed request from its parsed JSON document (`load_header`) and the body it came in."""
    view = memoryview(body)
    budget = len(body)
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("request must have a non-empty 'inputs' list")
    params = _object(doc.get("parameters"), "'parameters'")
    binary_pos = 0 if header_length is None else header_length
    inputs: list[Tensor] = []
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
        datatype = check_datatype(name, raw.get("datatype"))
        shape, count = check_shape(name, raw.get("shape"), budget)
        raw_params = raw.get("parameters")
        size = None if raw_params is None else _object(raw_params, f"input '{name}': 'parameters'").get(
            "binary_data_size"
        )
        if size is not None:
            if header_length is None:
                raise ProtocolError(
                    f"input '{name}' has binary_data_size but the request has no Inference-Header-Content-Length"
                )
            if type(size) is not int or size < 0:
                raise ProtocolError(f"input '{name}': binary_data_size must be a non-negative integer")
            if binary_pos + size > budget:
                raise ProtocolError(
                    f"input '{name}': binary_data_size {size} runs past the end of the body "
                    f"({budget - binary_pos} bytes left)"
                )
            arr = tensor_from_buffer(name, datatype, shape, count, view[binary_pos : binary_pos + size])
            binary_pos += size
        else:
            if "data" not in raw:
                raise ProtocolError(f"input '{name}' has neither 'data' nor a binary_data_size parameter")
            arr = tensor_from_list(name, datatype, shape, count, raw["data"])
        inputs.append(Tensor(name, datatype, shape, arr))
    if header_length is not None and binary_pos != budget:
        raise ProtocolError(
            f"body has {budget - binary_pos} bytes of binary data not claimed by any input's binary_data_size"
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
            o_name: str = raw["name"]
            o_params = _object(raw.get("parameters"), f"output '{o_name}': 'parameters'")
            if "classification" in o_params:
                raise ProtocolError(f"output '{o_name}': the classification extension is not supported")
            outputs.append(RequestedOutput(o_name, _bool_param(o_params, "binary_data", f"output '{o_name}'")))
    req_id = doc.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise ProtocolError("'id' must be a string")
    return InferenceRequest(inputs, outputs, req_id, params, binary_output)


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

    @property
    def content_type(self) -> str:
        return "application/json" if self.header_length is None else "application/octet-stream"


def _tensor_entry(name: str, arr: np.ndarray, binary: bool, blobs: list[bytes]) -> dict[str, Any]:
    datatype = v2_datatype(arr.dtype)
    entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
    if binary:
        raw = bytes_to_wire(arr) if datatype == "BYTES" else numeric_to_wire(arr)
        entry["parameters"] = {"binary_data_size": len(raw)}
        blobs.append(raw)
    elif datatype == "BYTES":
        entry["data"] = _json_bytes_data(arr)
    else:
        # orjson serialises C-contiguous native-endian arrays directly.
        entry["data"] = np.ascontiguousarray(arr).reshape(-1)
    return entry


def encode_response(resp: InferenceResponse) -> EncodedResponse:
    blobs: list[bytes] = []
    doc: dict[str, Any] = {"model_name": resp.model_name}
    if resp.model_version is not None:
        doc["model_version"] = resp.model_version
    if resp.id is not None:
        doc["id"] = resp.id
    if resp.parameters:
        doc["parameters"] = dict(resp.parameters)
    doc["outputs"] = [_tensor_entry(o.name, o.data, o.binary, blobs) for o in resp.outputs]
    header = orjson.dumps(doc, option=_JSON_OPTS)
    if not blobs:
        return EncodedResponse(header, None)
    return EncodedResponse(b"".join([header, *blobs]), len(header))


def dumps(doc: Any) -> bytes:
    return orjson.dumps(doc, option=_JSON_OPTS)


# --- client side (the fallback forwarder, tests and benchmarks) ---------------------------------


def encode_request(
    inputs: Sequence[tuple[str, np.ndarray]],
    *,
    binary: bool = False,
    binary_output: bool = False,
    outputs: Sequence[str] | None = None,
    request_id: str | None = None,
) -> tuple[bytes, int | None]:
    req = InferenceRequest(
        [Tensor(n, v2_datatype(a.dtype), tuple(a.shape), a) for n, a in inputs],
        [RequestedOutput(n) for n in outputs] if outputs is not None else None,
        request_id,
        {},
        binary_output,
    )
    return encode_request_typed(req, binary=binary)


def encode_request_typed(req: InferenceRequest, *, binary: bool = True) -> tuple[bytes, int | None]:
    blobs: list[bytes] = []
    doc: dict[str, Any] = {"inputs": [_tensor_entry(t.name, t.data, binary, blobs) for t in req.inputs]}
    if req.id is not None:
        doc["id"] = req.id
    params = dict(req.parameters)
    if req.binary_output:
        params["binary_data_output"] = True
    if params:
        doc["parameters"] = params
    if req.outputs is not None:
        doc["outputs"] = [
            {"name": o.name, **({"parameters": {"binary_data": o.binary}} if o.binary is not None else {})}
            for o in req.outputs
        ]
    header = orjson.dumps(doc, option=_JSON_OPTS)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def decode_response_typed(body: bytes, header_length: int | None = None) -> InferenceResponse:
    """Client side: a v2 response body (e.g. the cloud's) -> typed response; bounded like requests."""
    view = memoryview(body)
    try:
        doc = orjson.loads(view if header_length is None else view[:header_length])
    except orjson.JSONDecodeError as e:
        raise ProtocolError(f"response body is not valid JSON: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("outputs"), list):
        raise ProtocolError("response must be a JSON object with an 'outputs' list")
    pos = 0 if header_length is None else header_length
    outputs: list[OutputTensor] = []
    for i, o in enumerate(doc["outputs"]):
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise ProtocolError(f"outputs[{i}] must be an object with a 'name' string")
        name = o["name"]
        datatype = check_datatype(name, o.get("datatype"))
        shape, count = check_shape(name, o.get("shape"), len(body))
        size = _object(o.get("parameters"), "output parameters").get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0 or pos + size > len(body):
                raise ProtocolError(f"output '{name}': bad binary_data_size {size!r}")
            arr = tensor_from_buffer(name, datatype, shape, count, view[pos : pos + size])
            pos += size
        else:
            arr = tensor_from_list(name, datatype, shape, count, o.get("data"))
        outputs.append(OutputTensor(name, arr))
    version = doc.get("model_version")
    params = doc.get("parameters")
    return InferenceResponse(
        str(doc.get("model_name", "")),
        version if isinstance(version, str) else None,
        outputs,
        doc.get("id") if isinstance(doc.get("id"), str) else None,
        params if isinstance(params, dict) else None,
    )


def decode_response(body: bytes, header_length: int | None = None) -> dict[str, np.ndarray]:
    """Client side: response body -> {output name: array} (copies, so they outlive the body)."""
    return {o.name: o.data.copy() for o in decode_response_typed(body, header_length).outputs}

"""gRPC wire codec of the Open Inference Protocol: protobuf messages <-> the typed dataplane objects.

Pure (numpy and the message classes of `oip`); no gRPC server, no onnxruntime.
Inputs arrive either as typed `contents` or as `raw_input_contents` (one
little-endian buffer per input, zero-copy into numpy); every tensor is built by
`protocol`'s bounded helpers against the size of the message received.
Outputs go out as `raw_output_contents`, as Triton's server does, which every
standard client reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edge_runtime import oip
from edge_runtime.core.protocol import (
    DATATYPES,
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
    v2_datatype,
)

# datatype -> the typed contents field that carries it (FP16 has none: raw contents only)
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_CARRIER = {
    "bool_contents": np.bool_,
    "int_contents": np.int32,
    "int64_contents": np.int64,
    "uint_contents": np.uint32,
    "uint64_contents": np.uint64,
    "fp32_contents": np.float32,
    "fp64_contents": np.float64,
}


def parameters_to_dict(params: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, p in params.items():
        which = p.WhichOneof("parameter_choice")
        out[key] = getattr(p, which) if which is not None else None
    return out


def dict_to_parameters(target: Any, params: Mapping[str, Any]) -> None:
    for key, value in params.items():
        p = target[key]
        if isinstance(value, bool):
            p.bool_param = value
        elif isinstance(value, int):
            if value >= 1 << 63:
                p.uint64_param = value
            else:
                p.int64_param = value
        elif isinstance(value, float):
            p.double_param = value
        else:
            p.string_param = str(value)


def _from_contents(name: str, datatype: str, shape: tuple[int, ...], count: int, contents: Any) -> np.ndarray:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise ProtocolError(f"input '{name}': {datatype} has no typed contents field: send it in raw_input_contents")
    values = getattr(contents, field)
    if len(values) != count:
        raise ProtocolError(
            f"input '{name}': shape {list(shape)} needs {count} elements, {field} has {len(values)}"
        )
    if datatype == "BYTES":
        arr = np.empty(count, dtype=object)
        arr[:] = list(values)
        return arr.reshape(shape)
    carried: np.ndarray = np.fromiter(values, dtype=_CARRIER[field], count=count)
    want = DATATYPES[datatype]
    if carried.dtype != want:
        info = np.iinfo(want)
        if count and (int(carried.min()) < info.min or int(carried.max()) > info.max):
            raise ProtocolError(f"input '{name}': a value in {field} is out of range for {datatype}")
        carried = carried.astype(want)
    return carried.reshape(shape)


_RAW_INPUT_CONTENTS = 7  # ModelInferRequest.raw_input_contents (repeated bytes)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while shift < 70:
        if pos >= len(data):
            raise ProtocolError("request is not a valid ModelInferRequest message: truncated")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
    raise ProtocolError("request is not a valid ModelInferRequest message: a varint longer than 10 bytes")


def split_raw_input_contents(data: bytes) -> tuple[bytes, list[memoryview]]:
    """A serialized ModelInferRequest -> (the message without raw_input_contents, those buffers as views of
    `data`).

    protobuf's parser copies every bytes field into the message, and each read of a repeated bytes
    element copies it again: for a 600 KB image two fresh 600 KB buffers per request, page faults
    included ~0.2 ms of CPU in the server. Only the top level of the message is walked here (a handful
    of fields); the rest, without the tensors, goes to protobuf's parser as before."""
    view = memoryview(data)
    raws: list[memoryview] = []
    keep: list[memoryview] = []
    pos, n = 0, len(data)
    kept_from = 0  # start of the run of kept fields not yet in `keep`
    while pos < n:
        start = pos
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > n:
                raise ProtocolError("request is not a valid ModelInferRequest message: a field runs past its end")
            if key >> 3 == _RAW_INPUT_CONTENTS:
                if kept_from < start:
                    keep.append(view[kept_from:start])
                raws.append(view[pos : pos + length])
                kept_from = pos + length
            pos += length
        else:  # groups (3, 4) and the unused wire types: nothing in this message is one
            raise ProtocolError(f"request is not a valid ModelInferRequest message: wire type {wire}")
        if pos > n:
            raise ProtocolError("request is not a valid ModelInferRequest message: a field runs past its end")
    if not raws:
        return data, raws
    if kept_from < n:
        keep.append(view[kept_from:n])
    return b"".join(keep), raws


def raw_numeric(msg: Any, raw: Sequence[Any]) -> bool:
    """Whether every input comes in raw contents (`raw`) as numbers: decoding it is then zero-copy (no
    per-element work, whatever the size), so a transport need not hand it to a worker thread."""
    return len(raw) == len(msg.inputs) > 0 and all(t.datatype != "BYTES" for t in msg.inputs)


def decode_infer_request(msg: Any, budget: int, raw: Sequence[Any] | None = None) -> InferenceRequest:
    """ModelInferRequest -> typed request; `budget` is the size of the message as received. `raw`: the raw
    input contents when `split_raw_input_contents` took them out of the message (else the message's own)."""
    if not msg.inputs:
        raise ProtocolError("request must have at least one input")
    if raw is None:
        raw = msg.raw_input_contents
    if raw and len(raw) != len(msg.inputs):
        raise ProtocolError(
            f"raw_input_contents has {len(raw)} buffers for {len(msg.inputs)} inputs: give one per input, or none"
        )
    inputs: list[Tensor] = []
    seen: set[str] = set()
    for i, t in enumerate(msg.inputs):
        name = t.name
        if not name:
            raise ProtocolError(f"inputs[{i}] must have a name")
        if name in seen:
            raise ProtocolError(f"input '{name}' is given more than once")
        seen.add(name)
        datatype = check_datatype(name, t.datatype)
        shape, count = check_shape(name, list(t.shape), budget)
        if raw:
            arr = tensor_from_buffer(name, datatype, shape, count, memoryview(raw[i]))
        else:
            arr = _from_contents(name, datatype, shape, count, t.contents)
        inputs.append(Tensor(name, datatype, shape, arr))
    outputs: list[RequestedOutput] | None = None
    if msg.outputs:
        outputs = []
        for o in msg.outputs:
            if "classification" in o.parameters:
                raise ProtocolError(f"output '{o.name}': the classification extension is not supported")
            outputs.append(RequestedOutput(o.name))
    return InferenceRequest(inputs, outputs, msg.id or None, parameters_to_dict(msg.parameters))


def encode_infer_response(resp: InferenceResponse) -> Any:
    out = oip.ModelInferResponse(model_name=resp.model_name, model_version=resp.model_version or "", id=resp.id or "")
    if resp.parameters:
        dict_to_parameters(out.parameters, resp.parameters)
    raws = []
    for o in resp.outputs:
        datatype = v2_datatype(o.data.dtype)
        t = out.outputs.add(name=o.name, datatype=datatype)
        t.shape.extend(o.data.shape)
        raws.append(bytes_to_wire(o.data) if datatype == "BYTES" else numeric_to_wire(o.data))
    out.raw_output_contents.extend(raws)
    return out


# --- client side (the fallback forwarder to a gRPC cloud, tests) ------------------------------------------


def encode_infer_request(model: str, req: InferenceRequest, version: str = "") -> Any:
    msg = oip.ModelInferRequest(model_name=model, model_version=version, id=req.id or "")
    if req.parameters:
        dict_to_parameters(msg.parameters, {k: v for k, v in req.parameters.items() if k != "binary_data_output"})
    raws = []
    for t in req.inputs:
        datatype = v2_datatype(t.data.dtype)
        x = msg.inputs.add(name=t.name, datatype=datatype)
        x.shape.extend(t.data.shape)
        raws.append(bytes_to_wire(t.data) if datatype == "BYTES" else numeric_to_wire(t.data))
    msg.raw_input_contents.extend(raws)
    if req.outputs is not None:
        for o in req.outputs:
            msg.outputs.add(name=o.name)
    return msg


def decode_infer_response(msg: Any, budget: int) -> InferenceResponse:
    raw = msg.raw_output_contents
    if raw and len(raw) != len(msg.outputs):
        raise ProtocolError(f"raw_output_contents has {len(raw)} buffers for {len(msg.outputs)} outputs")
    outputs: list[OutputTensor] = []
    for i, t in enumerate(msg.outputs):
        datatype = check_datatype(t.name, t.datatype)
        shape, count = check_shape(t.name, list(t.shape), budget)
        if raw:
            arr = tensor_from_buffer(t.name, datatype, shape, count, memoryview(raw[i]))
        else:
            arr = _from_contents(t.name, datatype, shape, count, t.contents)
        outputs.append(OutputTensor(t.name, arr))
    return InferenceResponse(
        msg.model_name, msg.model_version or None, outputs, msg.id or None, parameters_to_dict(msg.parameters) or None
    )

"""The v2 codec: JSON and binary tensors, every datatype, and the errors that name the problem."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from edge_runtime import oip
from edge_runtime.core.codec import (
    DATATYPES,
    ProtocolError,
    binary_numeric,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    parse_header_length,
)
from edge_runtime.core.grpc_codec import decode_infer_request, raw_numeric, split_raw_input_contents
from edge_runtime.core.protocol import InferenceResponse, OutputTensor

NUMERIC = [k for k in DATATYPES if k != "BYTES"]


def _sample(datatype: str) -> np.ndarray:
    dt = DATATYPES[datatype]
    if dt == np.bool_:
        return np.array([[True, False, True], [False, False, True]])
    return (np.arange(6).reshape(2, 3) * 3 + 1).astype(dt)


@pytest.mark.parametrize("datatype", NUMERIC)
@pytest.mark.parametrize("binary", [False, True])
def test_request_round_trip(datatype: str, binary: bool) -> None:
    arr = _sample(datatype)
    body, hlen = encode_request([("x", arr)], binary=binary, request_id="r1")
    req = decode_request(body, hlen)
    (t,) = req.inputs
    assert (t.name, t.datatype, t.shape, req.id) == ("x", datatype, (2, 3), "r1")
    assert t.data.dtype == arr.dtype.newbyteorder("=") or t.data.dtype == arr.dtype
    np.testing.assert_array_equal(t.data, arr)


@pytest.mark.parametrize("datatype", NUMERIC)
@pytest.mark.parametrize("binary", [False, True])
def test_response_round_trip(datatype: str, binary: bool) -> None:
    arr = _sample(datatype)
    enc = encode_response(InferenceResponse("m", "1", [OutputTensor("y", arr, binary)], id="q"))
    assert (enc.header_length is not None) == binary
    head = json.loads(enc.body if enc.header_length is None else enc.body[: enc.header_length])
    assert head["model_name"] == "m" and head["model_version"] == "1" and head["id"] == "q"
    assert head["outputs"][0]["datatype"] == datatype and head["outputs"][0]["shape"] == [2, 3]
    if not binary:
        assert len(head["outputs"][0]["data"]) == 6  # flat, row-major
    np.testing.assert_array_equal(decode_response(enc.body, enc.header_length)["y"], arr)


def test_bytes_json_and_binary() -> None:
    arr = np.array([b"a", b"\xc3\xa9t\xc3\xa9", b""], dtype=object)
    body, hlen = encode_request([("s", arr)], binary=True)
    assert hlen is not None
    assert body[hlen:] == b"".join(struct.pack("<I", len(x)) + x for x in arr)
    np.testing.assert_array_equal(decode_request(body, hlen).inputs[0].data, arr)
    req = decode_request(
        json.dumps({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2, 1], "data": [["x"], ["y"]]}]}).encode()
    )
    assert req.inputs[0].data.tolist() == [["x"], ["y"]]
    enc = encode_response(InferenceResponse("m", None, [OutputTensor("s", arr, False)]))
    assert json.loads(enc.body)["outputs"][0]["data"] == ["a", "été", ""]


def test_nested_json_data_accepted() -> None:
    body = json.dumps({"inputs": [{"name": "x", "datatype": "INT32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]})
    assert decode_request(body.encode()).inputs[0].data.tolist() == [[1, 2], [3, 4]]


def test_output_selection_flags() -> None:
    body = json.dumps(
        {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
            "outputs": [{"name": "a", "parameters": {"binary_data": True}}, {"name": "b"}],
            "parameters": {"binary_data_output": False},
        }
    ).encode()
    req = decode_request(body)
    assert [(o.name, o.binary) for o in req.outputs or []] == [("a", True), ("b", None)]
    assert req.binary_output is False


BAD = [
    (b"[]", "must be a JSON object"),
    (b'{"inputs": {}}', "non-empty 'inputs'"),
    (b'{"inputs": [1]}', "inputs[0] must be a JSON object"),
    (b'{"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}', "must have a 'name'"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}', "negative"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": "1", "data": [1]}]}', "list of integers"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2]}]}', "neither 'data'"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [[1], [2, 3]]}]}', "x"),
    (b'{"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [1000]}]}', "not valid INT8"),
    # Finite in JSON, not in the datatype: refused, never served as inf.
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 1e300]}]}', "out of range for FP32"),
    (b'{"inputs": [{"name": "x", "datatype": "FP16", "shape": [1], "data": [70000]}]}', "out of range for FP16"),
    (b'{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": [1]}]}', "must be strings"),
    (
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]},'
        b' {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}',
        "more than once",
    ),
    (
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}], "outputs": [{"name": "y",'
        b' "parameters": {"binary_data": "yes"}}]}',
        "must be true or false",
    ),
    (
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}], "outputs": [{"name": "y",'
        b' "parameters": {"classification": 2}}]}',
        "classification extension",
    ),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}], "id": 5}', "'id' must be"),
    # A datatype that is not a string is the client's mistake, not a server error.
    (b'{"inputs": [{"name": "x", "datatype": {}, "shape": [1], "data": [1]}]}', "datatype must be one of"),
    (b'{"inputs": [{"name": "x", "datatype": ["FP32"], "shape": [1], "data": [1]}]}', "datatype must be one of"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [true], "data": [1]}]}', "list of integers"),
    # Shapes no body of this size could carry: refused by name before anything is allocated.
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [0, 9223372036854775807], "data": []}]}',
     "input 'x': dimension 9223372036854775807"),
    (b'{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1000000000], "data": ["a"]}]}',
     "input 'x': dimension 1000000000"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [40, 40], "data": [1]}]}', "declares 1600 elements"),
]


@pytest.mark.parametrize("body,message", BAD)
def test_bad_requests_name_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as e:
        decode_request(body)
    assert message in str(e.value)


def test_binary_bytes_element_errors() -> None:
    head = b'{"inputs":[{"name":"s","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":6}}]}'
    with pytest.raises(ProtocolError, match="runs past the data"):
        decode_request(head + struct.pack("<I", 50) + b"ab", len(head))
    with pytest.raises(ProtocolError, match="need at least 4 bytes"):
        decode_request(head.replace(b":6}", b":2}") + b"ab", len(head.replace(b":6}", b":2}")))


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_binary_shape_is_bounded_by_the_bytes_received(datatype: str) -> None:
    # ~200 bytes declaring hundreds of millions of elements: a 400 naming the input, no allocation.
    for shape in ([300_000_000], [20_000, 20_000], [0, 2**63 - 1], [2**40, 2**40]):
        head = json.dumps(
            {"inputs": [{"name": "big", "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": 8}}]}
        ).encode()
        with pytest.raises(ProtocolError, match="input 'big'"):
            decode_request(head + b"\0" * 8, len(head))


def test_binary_bytes_count_checked_before_allocation() -> None:
    # 40 declared elements need at least 160 bytes of length prefixes; 8 bytes cannot hold them.
    head = b'{"inputs":[{"name":"s","datatype":"BYTES","shape":[40],"parameters":{"binary_data_size":8}}]}'
    with pytest.raises(ProtocolError, match="at least 160 bytes"):
        decode_request(head + b"\0" * 200, len(head))


def test_header_length_validation() -> None:
    assert parse_header_length(None, 10) is None
    assert parse_header_length("4", 10) == 4
    for bad in ("-1", "11", "x"):
        with pytest.raises(ProtocolError):
            parse_header_length(bad, 10)


_BIN = {"binary_data_size": 8}


@pytest.mark.parametrize(
    ("doc", "zero_copy"),
    [
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "parameters": _BIN}]}, True),
        ({"inputs": [{"name": "x", "datatype": "FP32"}, {"name": "y", "datatype": "INT8", "parameters": _BIN}]}, False),
        ({"inputs": [{"name": "x", "datatype": "BYTES", "parameters": _BIN}]}, False),
        ({"inputs": [{"name": "x", "datatype": "FP32", "data": [1, 2]}]}, False),
        ({"inputs": [{"name": "x", "datatype": "FP32", "parameters": [1]}]}, False),
        ({"inputs": ["x"]}, False),
        ({"inputs": []}, False),
        ({"inputs": {"x": 1}}, False),
        ({}, False),
    ],
)
def test_binary_numeric_routes_only_zero_copy_requests(doc: dict[str, object], zero_copy: bool) -> None:
    """Whether a large REST request may be decoded on the event loop: only when every input is numbers in the
    binary extension (anything else, well-formed or not, goes to the thread, where the decode judges it)."""
    assert binary_numeric(doc) is zero_copy


def test_raw_numeric_routes_only_zero_copy_messages() -> None:
    msg = oip.ModelInferRequest(model_name="m")
    msg.inputs.add(name="x", datatype="FP32", shape=[2])
    assert not raw_numeric(msg, [])  # typed contents: converted element by element
    assert raw_numeric(msg, [memoryview(b"\0" * 8)])
    msg.inputs.add(name="s", datatype="BYTES", shape=[1])
    assert not raw_numeric(msg, [memoryview(b"\0" * 8)])  # a buffer short of the inputs: refused, in the thread
    assert not raw_numeric(msg, [memoryview(b"\0" * 8), memoryview(b"\1\0\0\0a")])  # BYTES: a Python loop
    assert not raw_numeric(oip.ModelInferRequest(model_name="m"), [])


def test_split_raw_input_contents_leaves_views_and_the_rest_of_the_message() -> None:
    x = np.arange(6, dtype="<f4")
    msg = oip.ModelInferRequest(model_name="m", id="r7")
    msg.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    msg.raw_input_contents.append(x.tobytes())
    msg.outputs.add(name="y")
    data = msg.SerializeToString()
    rest, raw = split_raw_input_contents(data)
    assert [bytes(r) for r in raw] == [x.tobytes()] and all(r.obj is data for r in raw)  # no copy
    parsed = oip.ModelInferRequest.FromString(rest)
    assert not parsed.raw_input_contents and parsed.model_name == "m" and parsed.outputs[0].name == "y"
    req = decode_infer_request(parsed, len(data), raw)
    np.testing.assert_array_equal(req.inputs[0].data, x.reshape(2, 3))
    plain = oip.ModelInferRequest(model_name="m").SerializeToString()
    assert split_raw_input_contents(plain) == (plain, [])
    for bad in (data[:-3], b"\x3a\x05ab", b"\x0b", b"\xff" * 11):  # truncated, past the end, group, varint
        with pytest.raises(ProtocolError, match="not a valid ModelInferRequest"):
            split_raw_input_contents(bad)

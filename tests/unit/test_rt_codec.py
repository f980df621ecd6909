"""The v2 codec: JSON and binary tensors, every datatype, and the errors that name the problem."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from edge_runtime.codec import (
    DATATYPES,
    ProtocolError,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    parse_header_length,
)

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
    assert t.array.dtype == arr.dtype.newbyteorder("=") or t.array.dtype == arr.dtype
    np.testing.assert_array_equal(t.array, arr)


@pytest.mark.parametrize("datatype", NUMERIC)
@pytest.mark.parametrize("binary", [False, True])
def test_response_round_trip(datatype: str, binary: bool) -> None:
    arr = _sample(datatype)
    enc = encode_response("m", "1", [("y", arr, binary)], request_id="q")
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
    np.testing.assert_array_equal(decode_request(body, hlen).inputs[0].array, arr)
    req = decode_request(
        json.dumps({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2, 1], "data": [["x"], ["y"]]}]}).encode()
    )
    assert req.inputs[0].array.tolist() == [["x"], ["y"]]
    enc = encode_response("m", None, [("s", arr, False)])
    assert json.loads(enc.body)["outputs"][0]["data"] == ["a", "été", ""]


def test_nested_json_data_accepted() -> None:
    body = json.dumps({"inputs": [{"name": "x", "datatype": "INT32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]})
    assert decode_request(body.encode()).inputs[0].array.tolist() == [[1, 2], [3, 4]]


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
    with pytest.raises(ProtocolError, match="inside element 0"):
        decode_request(head.replace(b":6}", b":2}") + b"ab", len(head.replace(b":6}", b":2}")))


def test_header_length_validation() -> None:
    assert parse_header_length(None, 10) is None
    assert parse_header_length("4", 10) == 4
    for bad in ("-1", "11", "x"):
        with pytest.raises(ProtocolError):
            parse_header_length(bad, 10)

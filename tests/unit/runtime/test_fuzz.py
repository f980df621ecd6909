"""Fuzzing the decoders and the whole REST adapter (hypothesis, a bounded number of examples).

Properties:
- `codec.decode_request` and `grpc_codec.decode_infer_request` either return a
  typed request or raise `ProtocolError`, never anything else, for any bytes;
- any body of at most 4 KiB sent to a real model through the in-process ASGI
  app (decode -> dataplane -> onnxruntime -> encode) is answered with 2xx or
  4xx, never 5xx, and never makes the runtime unready;
- every tensor a decoder returns holds no more elements than the body had bytes.
Run longer with HYPOTHESIS_PROFILE=fuzz (10x the examples).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edge_runtime import models_zoo, oip  # noqa: E402
from edge_runtime.core.codec import decode_request  # noqa: E402
from edge_runtime.core.grpc_codec import decode_infer_request, split_raw_input_contents  # noqa: E402
from edge_runtime.core.protocol import DATATYPES, ProtocolError  # noqa: E402
from edge_runtime.serving.dataplane import DataPlane  # noqa: E402
from edge_runtime.serving.repository import ModelSource, Settings  # noqa: E402
from edge_runtime.telemetry.metrics import RuntimeMetrics  # noqa: E402
from edge_runtime.transport.server import App  # noqa: E402

EXAMPLES = 300 * (10 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 1)
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
)
MAX_BODY = 4096

_dims = st.one_of(
    st.integers(0, 4), st.integers(-3, 40), st.sampled_from([2**31, 2**32, 2**62, 2**63 - 1, 2**64, 10**12])
)
_scalar = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.booleans(), st.text(max_size=5), st.none()
)
_json = st.recursive(
    _scalar,
    lambda c: st.one_of(st.lists(c, max_size=5), st.dictionaries(st.text(max_size=3), c, max_size=3)),
    max_leaves=20,
)
_datatype = st.one_of(st.sampled_from([*DATATYPES, "BF16", "FLOAT"]), _json)
_names = st.sampled_from(["features", "text", "data", "idx", "x", ""])


@st.composite
def infer_bodies(draw: Any) -> tuple[bytes, str | None]:
    """Structured near-valid requests (deep into the decoder), or raw junk."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=MAX_BODY)), draw(st.one_of(st.none(), st.integers(-5, 300).map(str)))
    inputs = []
    blobs = []
    for _ in range(draw(st.integers(0, 3))):
        entry: dict[str, Any] = {"name": draw(_names), "datatype": draw(_datatype),
                                 "shape": draw(st.one_of(st.lists(_dims, max_size=4), _json))}
        if draw(st.booleans()):
            blob = draw(st.binary(max_size=200))
            blobs.append(blob)
            entry["parameters"] = {"binary_data_size": draw(st.one_of(st.just(len(blob)), _json, st.integers(-2, 300)))}
        else:
            entry["data"] = draw(st.one_of(st.lists(_scalar, max_size=40), _json))
        inputs.append(entry)
    doc: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        doc["outputs"] = draw(st.one_of(st.lists(st.fixed_dictionaries({"name": st.text(max_size=12)}), max_size=2),
                                        _json))
    if draw(st.booleans()):
        doc["parameters"] = draw(st.one_of(st.just({"binary_data_output": True}), _json))
    if draw(st.booleans()):
        doc["id"] = draw(_json)
    head = json.dumps(doc).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), draw(st.one_of(st.just(str(len(head))), st.integers(-1, 400).map(str)))


@FUZZ
@given(infer_bodies())
def test_rest_decoder_only_ever_raises_protocol_error(case: tuple[bytes, str | None]) -> None:
    body, hl = case
    try:
        n = int(hl) if hl is not None else None
        if n is not None and not 0 <= n <= len(body):
            return
        req = decode_request(body, n)
    except ProtocolError:
        return
    for t in req.inputs:
        assert t.data.size <= max(len(body), 1)


@FUZZ
@given(st.binary(max_size=MAX_BODY), st.integers(0, 3))
def test_grpc_decoder_only_ever_raises_protocol_error(data: bytes, mode: int) -> None:
    msg = oip.ModelInferRequest()
    try:
        msg.ParseFromString(data)
    except Exception:
        return  # grpc_server answers INVALID_ARGUMENT for messages that do not parse
    try:
        req = decode_infer_request(msg, len(data))
    except ProtocolError:
        return
    for t in req.inputs:
        assert t.data.size <= max(len(data), 1)


def _decoded(data: bytes, split: bool) -> list[tuple[str, bytes]] | None:
    """What decoding `data` gives, as comparable values; None when it is refused."""
    try:
        if split:
            rest, raw = split_raw_input_contents(data)
            req = decode_infer_request(oip.ModelInferRequest.FromString(rest), len(data), raw)
        else:
            req = decode_infer_request(oip.ModelInferRequest.FromString(data), len(data))
    except ProtocolError:
        return None
    except Exception:  # protobuf's DecodeError (grpc_server answers INVALID_ARGUMENT)
        return None
    return [(f"{t.name}:{t.datatype}:{t.shape}", t.data.tobytes()) for t in req.inputs]


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=3), st.binary(max_size=64), st.integers(0, 2))
def test_split_raw_contents_decodes_as_protobuf_does(raws: list[bytes], junk: bytes, mode: int) -> None:
    """Taking raw_input_contents out of the wire bytes (zero-copy) decodes to what protobuf's own parse gives,
    wherever the buffers sit among the other fields; what it accepts, protobuf accepts alike."""
    head = oip.ModelInferRequest(model_name="m", id="r")
    for i, r in enumerate(raws):
        head.inputs.add(name=f"x{i}", datatype="UINT8", shape=[len(r)])
    tail = oip.ModelInferRequest()
    tail.raw_input_contents.extend(raws)
    # protobuf merges the fields of concatenated messages: buffers after, before, or after arbitrary bytes
    a, b = head.SerializeToString(), tail.SerializeToString()
    data = (a + b, b + a, a + junk + b)[mode]
    got = _decoded(data, split=True)
    if got is not None or mode < 2:  # well-formed messages are never refused; whatever is accepted is equal
        assert got == _decoded(data, split=False)


# --- the whole REST adapter, in process ---------------------------------------------------------------


def _strings_model(path: Path) -> Path:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["echo"])], "strings",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("echo", TensorProto.STRING, ["N"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def _gather_model(path: Path) -> Path:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Gather", ["data", "idx"], ["out"], axis=1)], "gather",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("idx", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


class _Harness:
    def __init__(self, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.dp = DataPlane(Settings(warmup_runs=1), RuntimeMetrics(process=False))
        for name, path in (
            ("tabular", models_zoo.build_tabular(tmp / "t.onnx")),
            ("text", _strings_model(tmp / "s.onnx")),
            ("gather", _gather_model(tmp / "g.onnx")),
        ):
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            self.dp.load_initial(name, ModelSource(str(path), sha, "1"))
        self.app = App(self.dp, max_body_bytes=MAX_BODY * 4)

    def call(self, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
        sent: list[dict[str, Any]] = []
        got = False

        async def receive() -> dict[str, Any]:
            nonlocal got
            if got:
                await asyncio.sleep(3600)
            got = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(msg: dict[str, Any]) -> None:
            sent.append(msg)

        scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "client": ("127.0.0.1", 1)}
        self.loop.run_until_complete(self.app(scope, receive, send))
        return int(sent[0]["status"]), sent[1]["body"]

    def close(self) -> None:
        # What the lifespan shutdown does in a served app.
        self.loop.run_until_complete(self.app._lifespan_shutdown())
        self.loop.close()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Harness]:
    h = _Harness(tmp_path_factory.mktemp("fuzz"))
    yield h
    h.close()


@FUZZ
@given(case=infer_bodies(), model=st.sampled_from(["tabular", "text", "gather"]))
def test_any_small_body_is_answered_2xx_or_4xx_never_5xx(
    harness: _Harness, case: tuple[bytes, str | None], model: str
) -> None:
    body, hl = case
    headers = [(b"content-length", str(len(body)).encode())]
    if hl is not None:
        headers.append((b"inference-header-content-length", hl.encode()))
    status, out = harness.call(f"/v2/models/{model}/infer", body, headers)
    assert 200 <= status < 500, (status, out[:300], body[:300])
    if status != 200:
        assert "error" in json.loads(out)
    assert harness.dp.readiness().ready

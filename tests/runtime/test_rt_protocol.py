"""Open Inference Protocol conformance of a real server: JSON, binary, a standard client, bad input."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from edge_runtime import models_zoo

from .conftest import Models, Server, free_port, json_infer_body, metric_value, request, sha256_of

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def main(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module: tabular at start, the others loaded through the repository API."""
    log = tmp_path_factory.mktemp("main") / "server.log"
    srv = Server(
        [
            "--model",
            str(models.tabular),
            "--sha256",
            sha256_of(models.tabular),
            "--name",
            "tabular",
            "--model-version",
            "1",
            "--max-body-bytes",
            str(4 << 20),
            "--body-timeout-s",
            "1.5",
            "--model-cache",
            str(models.cache),
            "--grpc-port",
            str(free_port()),
        ],
        log=log,
    ).start()
    for name, path in (
        ("cnn", models.cnn),
        ("gather", models.gather),
        ("strings", models.strings),
        ("fixed", models.fixed),
    ):
        r = srv.post(f"/v2/repository/models/{name}/load", {"parameters": {"sha256": sha256_of(path)}})
        assert r.status == 200, (name, r.body, srv.log_text())
    yield srv
    srv.stop()


def test_health_and_server_metadata(main: Server) -> None:
    assert main.get("/v2/health/live").status == 200
    assert main.get("/v2/health/ready").status == 200
    meta = main.get("/v2").json()
    assert meta["name"] == "edgeai-runtime"
    assert "binary_tensor_data" in meta["extensions"] and "model_repository" in meta["extensions"]


def test_model_metadata_from_graph_with_loaded_digest(main: Server, models: Models) -> None:
    meta = main.get("/v2/models/tabular").json()
    assert meta["name"] == "tabular"
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 16]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]
    assert meta["parameters"]["sha256"] == sha256_of(models.tabular)
    assert main.get("/v2/models/tabular/versions/1").json()["parameters"]["sha256"] == sha256_of(models.tabular)
    cnn = main.get("/v2/models/cnn").json()
    assert cnn["inputs"][0]["shape"] == [-1, 3, 32, 32]
    assert cnn["parameters"]["sha256"] == sha256_of(models.cnn)
    assert main.get("/v2/models/tabular/ready").status == 200
    assert main.get("/v2/models/tabular/versions/1/ready").status == 200
    assert main.get("/v2/models/tabular/versions/9/ready").status == 400
    assert main.get("/v2/models/nope/ready").status == 400


@pytest.mark.parametrize("kind,name,batch", [("tabular", "tabular", 1), ("tabular", "tabular", 5), ("cnn", "cnn", 3)])
def test_json_infer_equals_onnxruntime(main: Server, models: Models, kind: str, name: str, batch: int) -> None:
    x = models_zoo.sample_inputs(kind, batch, seed=batch)
    input_name = models_zoo.TABULAR_INPUT if kind == "tabular" else models_zoo.CNN_INPUT
    expected = models.session(getattr(models, kind)).run(None, {input_name: x})[0]
    r = main.post(f"/v2/models/{name}/infer", {**json_infer_body(input_name, x), "id": "req-7"})
    assert r.status == 200, r.body
    doc = r.json()
    assert doc["model_name"] == name and doc["id"] == "req-7"
    (out,) = doc["outputs"]
    assert out["name"] == models_zoo.OUTPUT and out["datatype"] == "FP32" and out["shape"] == list(expected.shape)
    np.testing.assert_allclose(np.array(out["data"], dtype=np.float32).reshape(expected.shape), expected, rtol=1e-6)


def _binary_request(name: str, arr: np.ndarray, binary_output: bool) -> tuple[bytes, int]:
    # Written from the protocol text, independently of the server's codec.
    header = {
        "inputs": [
            {"name": name, "datatype": "FP32", "shape": list(arr.shape), "parameters": {"binary_data_size": arr.nbytes}}
        ]
    }
    if binary_output:
        header["outputs"] = [{"name": models_zoo.OUTPUT, "parameters": {"binary_data": True}}]
    head = json.dumps(header).encode()
    return head + arr.astype("<f4").tobytes(), len(head)


@pytest.mark.parametrize("binary_output", [True, False])
def test_binary_infer_equals_onnxruntime(main: Server, models: Models, binary_output: bool) -> None:
    x = models_zoo.sample_inputs("cnn", 2, seed=11)
    expected = models.session(models.cnn).run(None, {models_zoo.CNN_INPUT: x})[0]
    body, hlen = _binary_request(models_zoo.CNN_INPUT, x, binary_output)
    r = main.post(
        "/v2/models/cnn/infer",
        body,
        {"Inference-Header-Content-Length": str(hlen), "Content-Type": "application/octet-stream"},
    )
    assert r.status == 200, r.body
    if binary_output:
        n = int(r.headers["inference-header-content-length"])
        doc = json.loads(r.body[:n])
        out = doc["outputs"][0]
        size = out["parameters"]["binary_data_size"]
        assert size == expected.nbytes
        got = np.frombuffer(r.body[n : n + size], dtype="<f4").reshape(out["shape"])
    else:
        assert "inference-header-content-length" not in r.headers
        out = r.json()["outputs"][0]
        got = np.array(out["data"], dtype=np.float32).reshape(out["shape"])
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_request_level_binary_data_output(main: Server, models: Models) -> None:
    x = models_zoo.sample_inputs("tabular", 2, seed=3)
    expected = models.session(models.tabular).run(None, {"features": x})[0]
    body = {**json_infer_body("features", x), "parameters": {"binary_data_output": True}}
    r = main.post("/v2/models/tabular/infer", body)
    n = int(r.headers["inference-header-content-length"])
    got = np.frombuffer(r.body[n:], dtype="<f4").reshape(expected.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_bytes_tensors_json_and_binary(main: Server) -> None:
    words = ["edge", "ünïcode", ""]
    r = main.post(
        "/v2/models/strings/infer", {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": words}]}
    )
    assert r.status == 200, r.body
    assert r.json()["outputs"][0] == {"name": "echo", "datatype": "BYTES", "shape": [3], "data": words}
    raw = b"".join(struct.pack("<I", len(w.encode())) + w.encode() for w in words)
    head = json.dumps(
        {
            "inputs": [
                {"name": "text", "datatype": "BYTES", "shape": [3], "parameters": {"binary_data_size": len(raw)}}
            ],
            "outputs": [{"name": "echo", "parameters": {"binary_data": True}}],
        }
    ).encode()
    r = main.post("/v2/models/strings/infer", head + raw, {"Inference-Header-Content-Length": str(len(head))})
    assert r.status == 200, r.body
    n = int(r.headers["inference-header-content-length"])
    assert r.body[n:] == raw


def test_large_binary_requests_answer_as_onnxruntime(main: Server, models: Models) -> None:
    """Bodies over the inline limit (64 KiB): numbers in the binary extension are decoded on the event loop
    (zero-copy), BYTES elements in a worker thread; both answer as a direct run does, and a large body whose
    data does not match its shape is a 400 naming the input, whichever way it was decoded."""
    x = np.random.default_rng(5).standard_normal((2048, 16)).astype(np.float32)  # 128 KiB
    expected = models.session(models.tabular).run(None, {"features": x})[0]
    body, hlen = _binary_request("features", x, True)
    r = main.post("/v2/models/tabular/infer", body, {"Inference-Header-Content-Length": str(hlen)})
    assert r.status == 200, r.body
    n = int(r.headers["inference-header-content-length"])
    got = np.frombuffer(r.body[n:], dtype="<f4").reshape(json.loads(r.body[:n])["outputs"][0]["shape"])
    np.testing.assert_allclose(got, expected, rtol=1e-6)

    short = body[: len(body) - 4]
    head = json.loads(body[:hlen])
    head["inputs"][0]["parameters"]["binary_data_size"] = x.nbytes - 4
    head_b = json.dumps(head).encode()
    r = main.post(
        "/v2/models/tabular/infer", head_b + short[hlen:], {"Inference-Header-Content-Length": str(len(head_b))}
    )
    assert r.status == 400 and "input 'features'" in r.json()["error"], r.body

    words = [f"word-{i}" for i in range(12000)]  # ~150 KiB of length-prefixed elements
    raw = b"".join(struct.pack("<I", len(w)) + w.encode() for w in words)
    text = {"name": "text", "datatype": "BYTES", "shape": [len(words)], "parameters": {"binary_data_size": len(raw)}}
    head_b = json.dumps({"inputs": [text], "outputs": [{"name": "echo", "parameters": {"binary_data": True}}]}).encode()
    r = main.post("/v2/models/strings/infer", head_b + raw, {"Inference-Header-Content-Length": str(len(head_b))})
    assert r.status == 200, r.body
    assert r.body[int(r.headers["inference-header-content-length"]) :] == raw
    assert main.get("/v2/health/ready").status == 200


def test_int64_input(main: Server) -> None:
    data = np.arange(8, dtype=np.float32).reshape(2, 4)
    r = main.post(
        "/v2/models/gather/infer",
        {
            "inputs": [
                {"name": "data", "datatype": "FP32", "shape": [2, 4], "data": data.reshape(-1).tolist()},
                {"name": "idx", "datatype": "INT64", "shape": [1], "data": [2]},
            ]
        },
    )
    assert r.status == 200, r.body
    assert r.json()["outputs"][0]["data"] == [2.0, 6.0]


def test_standard_v2_client_tritonclient(main: Server, models: Models) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{main.port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("cnn")
    meta = client.get_model_metadata("cnn")
    assert meta["parameters"]["sha256"] == sha256_of(models.cnn)
    x = models_zoo.sample_inputs("cnn", 4, seed=5)
    expected = models.session(models.cnn).run(None, {models_zoo.CNN_INPUT: x})[0]
    for binary in (True, False):
        inp = httpclient.InferInput(models_zoo.CNN_INPUT, list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = httpclient.InferRequestedOutput(models_zoo.OUTPUT, binary_data=binary)
        result = client.infer("cnn", [inp], outputs=[out])
        np.testing.assert_allclose(result.as_numpy(models_zoo.OUTPUT), expected, rtol=1e-6)
    # The client's defaults (binary input, binary output, no explicit outputs).
    inp = httpclient.InferInput(models_zoo.CNN_INPUT, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    np.testing.assert_allclose(client.infer("cnn", [inp]).as_numpy(models_zoo.OUTPUT), expected, rtol=1e-6)
    with pytest.raises(Exception, match="not loaded"):
        client.infer("missing", [inp])
    client.close()


_HEAD64 = b'{"inputs":[{"name":"features","datatype":"FP32","shape":[1,16],"parameters":{"binary_data_size":64}}]}'
_HEAD8 = b'{"inputs":[{"name":"features","datatype":"FP32","shape":[1,16],"parameters":{"binary_data_size":8}}]}'
BAD = [
    ("malformed JSON", b"{not json", {}, 400, "not valid JSON"),
    ("no inputs", {"inputs": []}, {}, 400, "non-empty 'inputs'"),
    (
        "missing input",
        {"inputs": [{"name": "other", "datatype": "FP32", "shape": [1], "data": [1]}]},
        {},
        400,
        "unexpected input 'other'",
    ),
    (
        "wrong dtype",
        {"inputs": [{"name": "features", "datatype": "FP64", "shape": [1, 16], "data": [0] * 16}]},
        {},
        400,
        "datatype FP64 given, model expects FP32",
    ),
    (
        "wrong shape",
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 15], "data": [0] * 15}]},
        {},
        400,
        "does not fit the model's [-1, 16]",
    ),
    (
        "count mismatch",
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 16], "data": [0] * 3}]},
        {},
        400,
        "needs 16 elements, got 3",
    ),
    (
        "unknown datatype",
        {"inputs": [{"name": "features", "datatype": "FLOAT", "shape": [1, 16], "data": [0]}]},
        {},
        400,
        "datatype must be one of",
    ),
    (
        "non-numeric data",
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 2], "data": ["a", {}]}]},
        {},
        400,
        "not valid FP32",
    ),
    ("header length not int", b"{}", {"Inference-Header-Content-Length": "abc"}, 400, "must be an integer"),
    ("header length past body", b"{}", {"Inference-Header-Content-Length": "99"}, 400, "outside the body"),
    (
        "binary size past body",
        _HEAD64 + b"\0" * 10,
        {"Inference-Header-Content-Length": str(len(_HEAD64))},
        400,
        "runs past the end",
    ),
    (
        "binary size wrong for shape",
        _HEAD8 + b"\0" * 8,
        {"Inference-Header-Content-Length": str(len(_HEAD8))},
        400,
        "do not match shape",
    ),
    (
        "binary bytes left over",
        _HEAD64 + b"\0" * 65,
        {"Inference-Header-Content-Length": str(len(_HEAD64))},
        400,
        "not claimed by any input",
    ),
    (
        "binary without header",
        {
            "inputs": [
                {"name": "features", "datatype": "FP32", "shape": [1, 16], "parameters": {"binary_data_size": 64}}
            ]
        },
        {},
        400,
        "no Inference-Header-Content-Length",
    ),
    (
        "unknown output",
        {**json_infer_body("features", np.zeros((1, 16), np.float32)), "outputs": [{"name": "zz"}]},
        {},
        400,
        "unknown output 'zz'",
    ),
]


@pytest.mark.parametrize("label,body,headers,status,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_4xx_json_error(
    main: Server, label: str, body: object, headers: dict[str, str], status: int, message: str
) -> None:
    r = main.post("/v2/models/tabular/infer", body, headers)  # type: ignore[arg-type]
    assert r.status == status, (label, r.body)
    assert r.headers["content-type"] == "application/json"
    assert message in r.json()["error"], r.json()


def test_unknown_model_path_and_method(main: Server) -> None:
    r = main.post("/v2/models/nope/infer", {"inputs": []})
    assert r.status == 404 and "model 'nope' is not loaded" in r.json()["error"]
    assert main.get("/v2/models/nope").status == 404
    assert main.get("/v2/models/tabular/versions/42").status == 404
    r = main.get("/v2/models/tabular/infer")
    assert r.status == 405 and "POST" in r.json()["error"]
    r = main.get("/v3/whatever")
    assert r.status == 404 and "no such endpoint" in r.json()["error"]


def test_input_the_model_refuses_is_400_and_server_survives(main: Server) -> None:
    # An index out of range: onnxruntime's INVALID_ARGUMENT, the client's data at fault, not the device.
    r = main.post(
        "/v2/models/gather/infer",
        {
            "inputs": [
                {"name": "data", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
                {"name": "idx", "datatype": "INT64", "shape": [1], "data": [99]},
            ]
        },
    )
    assert r.status == 400 and "model 'gather' rejected the input" in r.json()["error"], r.body
    assert "out of data bounds" in r.json()["error"]
    assert main.get("/v2/health/live").status == 200
    assert main.get("/v2/health/ready").status == 200


def _raw_exchange(port: int, data: bytes) -> bytes:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(10)
    sock.sendall(data)
    out = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        out += chunk
        head, sep, rest = out.partition(b"\r\n\r\n")
        if sep and b"content-length:" in head.lower():
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if len(rest) >= length:
                break
    sock.close()
    return out


def test_oversized_body_413_before_reading(main: Server) -> None:
    # Only the headers are sent: the server answers from Content-Length alone.
    out = _raw_exchange(
        main.port, b"POST /v2/models/tabular/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5242880\r\n\r\n"
    )
    assert out.startswith(b"HTTP/1.1 413"), out
    assert b"exceeds the limit of 4194304 bytes" in out
    # Chunked bodies have no Content-Length: the limit is enforced while reading.
    chunk = b"0" * (1 << 20)
    chunked = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(5)) + b"0\r\n\r\n"
    out = _raw_exchange(
        main.port, b"POST /v2/models/tabular/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
    )
    assert out.startswith(b"HTTP/1.1 413"), out[:200]
    assert main.get("/v2/health/live").status == 200


def test_slow_client_408_does_not_block_others(main: Server) -> None:
    sock = socket.create_connection(("127.0.0.1", main.port))
    sock.settimeout(10)
    sock.sendall(b'POST /v2/models/tabular/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"inp')
    # While that client dawdles, others are served.
    x = np.zeros((1, 16), np.float32)
    for _ in range(5):
        assert main.post("/v2/models/tabular/infer", json_infer_body("features", x)).status == 200
    data = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    sock.close()
    assert data.startswith(b"HTTP/1.1 408"), data
    assert b"slow client" in data


def test_many_concurrent_clients_with_garbage_in_between(main: Server, models: Models) -> None:
    x = models_zoo.sample_inputs("tabular", 1, seed=2)
    expected = models.session(models.tabular).run(None, {"features": x})[0]
    errors: list[str] = []

    def good() -> None:
        for _ in range(10):
            r = main.post("/v2/models/tabular/infer", json_infer_body("features", x))
            got = np.array(r.json()["outputs"][0]["data"], np.float32)
            if r.status != 200 or not np.allclose(got, expected.reshape(-1), rtol=1e-6):
                errors.append(str(r.body))

    def bad() -> None:
        for _ in range(10):
            if main.post("/v2/models/tabular/infer", b"\xff\xfe garbage").status != 400:
                errors.append("garbage not 400")

    threads = [threading.Thread(target=good) for _ in range(4)] + [threading.Thread(target=bad) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors


def test_metrics(main: Server, models: Models) -> None:
    main.post("/v2/models/tabular/infer", json_infer_body("features", np.zeros((1, 16), np.float32)))
    main.post("/v2/models/tabular/infer", b"{bad")
    text = main.metrics()
    assert metric_value(text, "edgeai_requests_total", {"model": "tabular", "version": "1", "outcome": "ok"}) >= 1
    assert metric_value(text, "edgeai_requests_total", {"model": "tabular", "outcome": "bad_request"}) >= 1
    assert metric_value(text, "edgeai_request_duration_seconds_count", {"model": "tabular", "outcome": "ok"}) >= 1
    assert metric_value(text, "edgeai_batch_size_count", {"model": "tabular"}) >= 1
    assert metric_value(text, "edgeai_model_info", {"model": "tabular", "sha256": sha256_of(models.tabular)}) == 1
    assert metric_value(text, "edgeai_verifications_total", {"outcome": "ok"}) >= 5
    assert metric_value(text, "edgeai_model_loads_total", {"model": "cnn", "outcome": "ok"}) == 1
    assert metric_value(text, "edgeai_ready") == 1
    assert "edgeai_device_memory_total_bytes" in text and "edgeai_device_cpu_count" in text
    assert "edgeai_queue_depth" in text


def test_fixed_shape_model_is_not_batched(main: Server) -> None:
    meta = main.get("/v2/models/fixed").json()
    assert meta["inputs"][0]["shape"] == [2, 3]
    assert meta["parameters"]["batching"] is False
    r = main.post(
        "/v2/models/fixed/infer",
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [-1, 2, -3, 4, -5, 6]}]},
    )
    assert r.json()["outputs"][0]["data"] == [0, 2, 0, 4, 0, 6]


def test_repository_index(main: Server) -> None:
    index = request(main.port, "POST", "/v2/repository/index").json()
    names = {e["name"] for e in index}
    assert {"tabular", "cnn", "gather", "strings", "fixed"} <= names
    assert all(e["state"] == "READY" for e in index)

"""Open Inference Protocol over gRPC, through standard v2 clients run unchanged, each in its own process.

Two generated copies of protobuf package `inference` clash when imported
into one process (kserve#3099), so every client runs in a subprocess of its
own; results are compared here with a direct onnxruntime run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sidevenv  # hack/ (tests/conftest.py puts it on the path)

from edge_runtime import models_zoo

from .conftest import ROOT, Models, Server, free_port, metric_value, sha256_of

pytestmark = pytest.mark.runtime

pytest.importorskip("tritonclient.grpc")


@pytest.fixture(scope="module", params=["native", "grpcio"])
def grpc_server(
    request: pytest.FixtureRequest, models: Models, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, int]]:
    """The runtime's own HTTP/2 (the default) and grpcio's server: every client test runs against both."""
    log = tmp_path_factory.mktemp("grpc") / "server.log"
    gport = free_port()
    entry, digest = models.cached(models.tabular)
    srv = Server(
        [
            "--model", str(entry), "--sha256", digest, "--name", "tabular",
            "--grpc-port", str(gport), "--max-body-bytes", str(1 << 20), "--grpc-server", request.param,
        ],
        log=log,
    ).start()
    for name, path in (("cnn", models.cnn), ("strings", models.strings), ("gather", models.gather)):
        assert srv.post(f"/v2/repository/models/{name}/load", {"parameters": {"sha256": sha256_of(path)}}).status == 200
    yield srv, gport
    srv.stop()


def run_client(code: str, *args: str, python: str = sys.executable, timeout: float = 120) -> Any:
    """Run a client script in its own process; it prints one JSON document last."""
    out = subprocess.run(
        [python, "-c", textwrap.dedent(code), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


TRITON_CLIENT = """
import json, sys
import numpy as np
import tritonclient.grpc as g

url, xfile = sys.argv[1], sys.argv[2]
c = g.InferenceServerClient(url)
res = {"live": c.is_server_live(), "ready": c.is_server_ready(), "model_ready": c.is_model_ready("cnn"),
       "missing_ready": c.is_model_ready("nope")}
meta = c.get_model_metadata("cnn", as_json=True)
res["meta"] = {"name": meta["name"], "inputs": meta["inputs"], "outputs": meta["outputs"]}
res["server"] = c.get_server_metadata(as_json=True)
x = np.load(xfile)
i = g.InferInput("input", list(x.shape), "FP32"); i.set_data_from_numpy(x)
r = c.infer("cnn", [i], outputs=[g.InferRequestedOutput("probabilities")], request_id="r-9")
res["cnn"] = r.as_numpy("probabilities").tolist()
res["id"] = r.get_response().id
x10 = np.concatenate([x] * 4)[:10]  # ~120 KB: parsed and decoded off the event loop
i10 = g.InferInput("input", list(x10.shape), "FP32"); i10.set_data_from_numpy(x10)
res["cnn10"] = c.infer("cnn", [i10]).as_numpy("probabilities").tolist()
words = np.array([b"edge", "\\u00fcn\\u00efcode".encode(), b""], dtype=object)
s = g.InferInput("text", [3], "BYTES"); s.set_data_from_numpy(words)
res["strings"] = [w.decode() for w in c.infer("strings", [s]).as_numpy("echo").tolist()]
errors = {}
def err(label, fn):
    try:
        fn()
        errors[label] = "no error"
    except g.InferenceServerException as e:
        errors[label] = [e.status(), e.message()]
bad = g.InferInput("input", [1, 3, 16, 16], "FP32"); bad.set_data_from_numpy(np.zeros((1, 3, 16, 16), np.float32))
err("shape", lambda: c.infer("cnn", [bad]))
wrong = g.InferInput("input", list(x.shape), "FP64"); wrong.set_data_from_numpy(x.astype(np.float64))
err("dtype", lambda: c.infer("cnn", [wrong]))
err("unknown", lambda: c.infer("nope", [i]))
big = g.InferInput("input", [100, 3, 32, 32], "FP32")  # 1.2 MB, over the server's 1 MiB limit
big.set_data_from_numpy(np.zeros((100, 3, 32, 32), np.float32))
err("huge_message", lambda: c.infer("cnn", [big]))
d = g.InferInput("data", [1, 4], "FP32"); d.set_data_from_numpy(np.ones((1, 4), np.float32))
k = g.InferInput("idx", [1], "INT64"); k.set_data_from_numpy(np.array([50], np.int64))
err("index_out_of_range", lambda: c.infer("gather", [d, k]))
res["errors"] = errors
res["index"] = [m["name"] for m in c.get_model_repository_index(as_json=True).get("models", [])]
res["still_ready"] = c.is_server_ready()
print(json.dumps(res))
"""


def test_tritonclient_grpc(grpc_server: tuple[Server, int], models: Models, tmp_path: Path) -> None:
    srv, gport = grpc_server
    x = models_zoo.sample_inputs("cnn", 3, seed=21)
    np.save(tmp_path / "x.npy", x)
    res = run_client(TRITON_CLIENT, f"127.0.0.1:{gport}", str(tmp_path / "x.npy"))
    assert res["live"] and res["ready"] and res["model_ready"] and not res["missing_ready"]
    assert res["meta"]["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "3", "32", "32"]}]
    assert res["server"]["name"] == "edgeai-runtime"
    expected = models.session(models.cnn).run(None, {models_zoo.CNN_INPUT: x})[0]
    np.testing.assert_allclose(np.array(res["cnn"], np.float32), expected, rtol=1e-5, atol=1e-6)
    assert res["id"] == "r-9"
    x10 = np.concatenate([x] * 4)[:10]
    expected10 = models.session(models.cnn).run(None, {models_zoo.CNN_INPUT: x10})[0]
    np.testing.assert_allclose(np.array(res["cnn10"], np.float32), expected10, rtol=1e-5, atol=1e-6)
    assert res["strings"] == ["edge", "ünïcode", ""]
    errs = res["errors"]
    assert errs["shape"][0] == "StatusCode.INVALID_ARGUMENT" and "does not fit the model's" in errs["shape"][1]
    assert errs["dtype"][0] == "StatusCode.INVALID_ARGUMENT" and "datatype FP64 given" in errs["dtype"][1]
    assert errs["unknown"][0] == "StatusCode.NOT_FOUND" and "'nope' is not loaded" in errs["unknown"][1]
    assert errs["huge_message"][0] == "StatusCode.RESOURCE_EXHAUSTED", errs["huge_message"]
    assert errs["index_out_of_range"][0] == "StatusCode.INVALID_ARGUMENT"
    assert "rejected the input" in errs["index_out_of_range"][1]
    assert {"tabular", "cnn", "strings", "gather"} <= set(res["index"])
    assert res["still_ready"]
    text = srv.metrics()
    assert metric_value(text, "edgeai_requests_total", {"model": "cnn", "outcome": "ok", "protocol": "grpc"}) >= 1
    bad = {"model": "cnn", "outcome": "bad_request", "protocol": "grpc"}
    assert metric_value(text, "edgeai_requests_total", bad) >= 2
    assert metric_value(text, "edgeai_requests_total", {"outcome": "error"}) == 0


TYPED_CONTENTS = """
import json, sys
import grpc
from tritonclient.grpc import service_pb2 as pb, service_pb2_grpc as rpc

url = sys.argv[1]
stub = rpc.GRPCInferenceServiceStub(grpc.insecure_channel(url))
req = pb.ModelInferRequest(model_name="tabular")
t = req.inputs.add(name="features", datatype="FP32", shape=[2, 16])
t.contents.fp32_contents.extend([float(i % 7) / 7 for i in range(32)])
r = stub.ModelInfer(req)
out = {"shape": list(r.outputs[0].shape), "raw": len(r.raw_output_contents), "bytes": r.raw_output_contents[0].hex()}
bad = pb.ModelInferRequest(model_name="tabular")
t = bad.inputs.add(name="features", datatype="FP32", shape=[2, 16])
t.contents.fp32_contents.extend([1.0] * 5)
try:
    stub.ModelInfer(bad)
except grpc.RpcError as e:
    out["count_error"] = [e.code().name, e.details()]
huge = pb.ModelInferRequest(model_name="tabular")
t = huge.inputs.add(name="features", datatype="BYTES", shape=[300000000])
huge.raw_input_contents.append(b"\\0" * 8)
try:
    stub.ModelInfer(huge)
except grpc.RpcError as e:
    out["huge_shape"] = [e.code().name, e.details()]
try:
    stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="x"))
except grpc.RpcError as e:
    out["load_unknown"] = [e.code().name, e.details()]
print(json.dumps(out))
"""


def test_typed_contents_and_bounded_shapes_over_grpc(grpc_server: tuple[Server, int], models: Models) -> None:
    srv, gport = grpc_server
    res = run_client(TYPED_CONTENTS, f"127.0.0.1:{gport}")
    x = (np.arange(32) % 7 / 7).astype(np.float32).reshape(2, 16)
    expected = models.session(models.tabular).run(None, {"features": x})[0]
    assert res["shape"] == [2, 3] and res["raw"] == 1
    got = np.frombuffer(bytes.fromhex(res["bytes"]), "<f4").reshape(2, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert res["count_error"][0] == "INVALID_ARGUMENT" and "needs 32 elements" in res["count_error"][1]
    assert res["huge_shape"][0] == "INVALID_ARGUMENT" and "input 'features'" in res["huge_shape"][1]
    assert res["load_unknown"][0] == "INVALID_ARGUMENT" and "never loaded" in res["load_unknown"][1]
    assert srv.get("/v2/health/ready").status == 200


LARGE_MESSAGES = """
import json, sys
import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb, service_pb2_grpc as rpc

url, xfile = sys.argv[1], sys.argv[2]
x = np.load(xfile)
opts = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
stub = rpc.GRPCInferenceServiceStub(grpc.insecure_channel(url, options=opts))
out = {}
raw = pb.ModelInferRequest(model_name="tabular")
raw.inputs.add(name="features", datatype="FP32", shape=list(x.shape))
raw.raw_input_contents.append(x.astype("<f4").tobytes())
typed = pb.ModelInferRequest(model_name="tabular")
t = typed.inputs.add(name="features", datatype="FP32", shape=list(x.shape))
t.contents.fp32_contents.extend(x.ravel().tolist())
for key, req in (("raw", raw), ("typed", typed)):
    r = stub.ModelInfer(req)
    out[key] = {"size": req.ByteSize(), "shape": list(r.outputs[0].shape), "hex": r.raw_output_contents[0].hex()}
bad = pb.ModelInferRequest(model_name="tabular")
bad.inputs.add(name="features", datatype="FP32", shape=list(x.shape))
bad.raw_input_contents.append(x.astype("<f4").tobytes()[:-4])
try:
    stub.ModelInfer(bad)
except grpc.RpcError as e:
    out["bad"] = [e.code().name, e.details()]
print(json.dumps(out))
"""


def test_large_messages_over_grpc(grpc_server: tuple[Server, int], models: Models, tmp_path: Path) -> None:
    """Messages over the inline limit (64 KiB): raw_input_contents is decoded on the event loop (zero-copy),
    typed contents in a worker thread; both answer as a direct run does, and a large message whose data does
    not match its shape is INVALID_ARGUMENT naming the input."""
    srv, gport = grpc_server
    x = np.random.default_rng(9).standard_normal((2048, 16)).astype(np.float32)  # 128 KiB
    np.save(tmp_path / "x.npy", x)
    res = run_client(LARGE_MESSAGES, f"127.0.0.1:{gport}", str(tmp_path / "x.npy"))
    expected = models.session(models.tabular).run(None, {"features": x})[0]
    for key in ("raw", "typed"):
        assert res[key]["size"] > 64 << 10 and res[key]["shape"] == list(expected.shape)
        got = np.frombuffer(bytes.fromhex(res[key]["hex"]), "<f4").reshape(expected.shape)
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert res["bad"][0] == "INVALID_ARGUMENT" and "input 'features'" in res["bad"][1]
    assert srv.get("/v2/health/ready").status == 200


KSERVE_VENV = sidevenv.CACHE / "client-venvs" / "kserve"


def kserve_python() -> str:
    """KServe's own client pins conflicting dependencies: it lives in a venv of its own, made on first use."""
    why = sidevenv.ensure(KSERVE_VENV, ["kserve"], "import kserve", timeout=420)
    if why is not None:
        pytest.skip(f"KServe's client could not be installed: {why}")
    return str(sidevenv.python(KSERVE_VENV))


KSERVE_CLIENT = """
import asyncio, json, sys
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

async def main():
    base, grpc_url, xfile = sys.argv[1], sys.argv[2], sys.argv[3]
    x = np.load(xfile)
    rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    res = {"live": await rest.is_server_live(base), "ready": await rest.is_server_ready(base),
           "model_ready": await rest.is_model_ready(base, "tabular")}
    for binary in (False, True):
        inp = InferInput(name="features", shape=list(x.shape), datatype="FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        r = await rest.infer(base, InferRequest(model_name="tabular", infer_inputs=[inp]), model_name="tabular")
        res[f"rest_{binary}"] = r.outputs[0].as_numpy().tolist()
    await rest.close()
    g = InferenceGRPCClient(url=grpc_url, timeout=60)
    res["grpc_live"] = await g.is_server_live()
    res["grpc_ready"] = await g.is_server_ready()
    res["grpc_model_ready"] = await g.is_model_ready("tabular")
    inp = InferInput(name="features", shape=list(x.shape), datatype="FP32")
    inp.set_data_from_numpy(x)
    r = await g.infer(InferRequest(model_name="tabular", infer_inputs=[inp]))
    res["grpc"] = r.outputs[0].as_numpy().tolist()
    await g.close()
    print(json.dumps(res))

asyncio.run(main())
"""


@pytest.mark.timeout(900)  # the first run installs KServe's client into its own venv
def test_kserve_clients_rest_and_grpc(grpc_server: tuple[Server, int], models: Models, tmp_path: Path) -> None:
    """KServe's InferenceRESTClient (which parses the health bodies) and InferenceGRPCClient, unchanged."""
    srv, gport = grpc_server
    py = kserve_python()
    x = models_zoo.sample_inputs("tabular", 3, seed=8)
    np.save(tmp_path / "x.npy", x)
    res = run_client(KSERVE_CLIENT, srv.url, f"127.0.0.1:{gport}", str(tmp_path / "x.npy"), python=py)
    assert res["live"] is True and res["ready"] is True and res["model_ready"] is True
    assert res["grpc_live"] is True and res["grpc_ready"] is True and res["grpc_model_ready"] is True
    expected = models.session(models.tabular).run(None, {"features": x})[0]
    for key in ("rest_False", "rest_True", "grpc"):
        np.testing.assert_allclose(np.array(res[key], np.float32), expected, rtol=1e-5, err_msg=key)


TRITON_REPOSITORY = """
import json, sys
import numpy as np
import tritonclient.grpc as g

url, digest = sys.argv[1], sys.argv[2]
c = g.InferenceServerClient(url)
res = {}
c.load_model("tab2", config=json.dumps({"sha256": digest, "version": "7"}))
res["ready"] = c.is_model_ready("tab2", "7")
x = np.ones((1, 16), np.float32)
i = g.InferInput("features", [1, 16], "FP32"); i.set_data_from_numpy(x)
res["out"] = c.infer("tab2", [i]).as_numpy("probabilities").tolist()
res["index"] = sorted(m["name"] for m in c.get_model_repository_index(as_json=True)["models"])
c.unload_model("tab2")
res["after_unload"] = c.is_model_ready("tab2")
print(json.dumps(res))
"""


def test_repository_over_grpc_with_tritonclient(grpc_server: tuple[Server, int], models: Models) -> None:
    """Hot load and unload through Triton's client (its load_model sends parameters as a JSON 'config')."""
    srv, gport = grpc_server
    _, digest = models.cached(models.tabular2)
    res = run_client(TRITON_REPOSITORY, f"127.0.0.1:{gport}", digest)
    assert res["ready"] is True and "tab2" in res["index"]
    expected = models.session(models.tabular2).run(None, {"features": np.ones((1, 16), np.float32)})[0]
    np.testing.assert_allclose(np.array(res["out"], np.float32), expected, rtol=1e-5)
    assert res["after_unload"] is False
    assert srv.get("/v2/health/ready").status == 200

"""Real edge-runtime servers on 127.0.0.1 for the runtime tests.

Each server is the real `edge-runtime serve` process (the command the Pod
spec runs), on a free port, with real ONNX models built here. Requests go
through `http.client`, independent of the server's own code.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edge_runtime import models_zoo

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        hdrs = {"Content-Type": "application/json"} if isinstance(body, dict) else {}
        hdrs.update(headers or {})
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def json_infer_body(name: str, arr: np.ndarray, datatype: str = "FP32") -> dict[str, Any]:
    return {
        "inputs": [{"name": name, "datatype": datatype, "shape": list(arr.shape), "data": arr.reshape(-1).tolist()}]
    }


class Server:
    """One `edge-runtime serve` process."""

    def __init__(self, args: list[str], port: int | None = None, log: Path | None = None,
                 python: str = sys.executable, env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.args = args
        self.log = log
        self.python = python  # another venv's interpreter runs the same sources (another onnxruntime build)
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> Server:
        cmd = [self.python, "-m", "edge_runtime.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        env = dict(os.environ, EDGEAI_LOG_LEVEL="warning", **self.env)
        self.proc = subprocess.Popen([*cmd, *self.args], stdout=out, stderr=out, cwd=ROOT, env=env)
        if wait:
            self.wait_live()
        return self

    def wait_live(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_text()}")
            try:
                if request(self.port, "GET", "/v2/health/live", timeout=1).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not live within {timeout}s: {self.log_text()}")

    def refused(self, timeout: float = 60.0) -> str:
        """Start a server that must refuse to serve: it exits non-zero within `timeout`; its log."""
        self.start(wait=False)
        assert self.proc is not None
        try:
            assert self.proc.wait(timeout) != 0
        except subprocess.TimeoutExpired:
            self.stop(kill=True)
            raise
        finally:
            self.stop()
        return self.log_text()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log and self.log.exists() else ""

    def stop(self, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def get(self, path: str) -> Response:
        return request(self.port, "GET", path)

    def post(
        self, path: str, body: bytes | dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        return request(self.port, "POST", path, body, headers)

    def metrics(self) -> str:
        return self.get("/metrics").body.decode()


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        if labels and not all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            continue
        total += float(value)
    return total


def cache_entry(cache: Path, model: Path) -> tuple[Path, str]:
    """Put `model` into the content-addressed cache (as `edge-runtime fetch` does); returns (entry, digest)."""
    digest = sha256_of(model)
    entry = cache / "sha256" / digest
    entry.parent.mkdir(parents=True, exist_ok=True)
    if not entry.exists():
        entry.write_bytes(model.read_bytes())
    return entry, digest


@dataclass
class Models:
    dir: Path
    cache: Path  # a content-addressed model cache holding every model below
    tabular: Path
    tabular2: Path
    cnn: Path
    fixed: Path  # no batch dimension
    gather: Path  # fails at run time for out-of-range indices
    strings: Path  # BYTES in and out
    warmup_fails: Path
    batch2_fails: Path  # passes warm-up, fails in the model itself on a batch of 2

    def cached(self, path: Path) -> tuple[Path, str]:
        return cache_entry(self.cache, path)

    def session(self, path: Path) -> ort.InferenceSession:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _fixed_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    return _save(graph, path)


def _gather_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Gather", ["data", "idx"], ["out"], axis=1)],
        "gather",
        [
            helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("idx", TensorProto.INT64, [1]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 1])],
    )
    return _save(graph, path)


def _strings_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["echo"])],
        "strings",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("echo", TensorProto.STRING, ["N"])],
    )
    return _save(graph, path)


def _warmup_fails_model(path: Path) -> Path:
    # Loads fine, but reshaping a batch of 1 x 16 into 2 x 16 fails on its first run.
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [2, 16])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["features", "shape"], ["r"]), helper.make_node("Relu", ["r"], ["probabilities"])],
        "warmup_fails",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 16])],
        initializer=[shape],
    )
    return _save(graph, path)


def _batch2_fails_model(path: Path) -> Path:
    # x [N, 3] gets one constant row appended, then is reshaped to [2, -1]: fine for N = 1 (6 values),
    # a FAIL status (not INVALID_ARGUMENT) inside the model for N = 2 (9 values): the model's own bug.
    row = helper.make_tensor("row", TensorProto.FLOAT, [1, 3], [1, 2, 3])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [2, -1])
    graph = helper.make_graph(
        [helper.make_node("Concat", ["x", "row"], ["c"], axis=0), helper.make_node("Reshape", ["c", "shape"], ["y"])],
        "batch2_fails",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, None])],
        initializer=[row, shape],
    )
    return _save(graph, path)


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    d = tmp_path_factory.mktemp("models")
    m = Models(
        dir=d,
        cache=d / "cache",
        tabular=models_zoo.build_tabular(d / "tabular.onnx"),
        tabular2=models_zoo.build_tabular(d / "tabular2.onnx", seed=7),
        cnn=models_zoo.build_cnn(d / "cnn.onnx"),
        fixed=_fixed_model(d / "fixed.onnx"),
        gather=_gather_model(d / "gather.onnx"),
        strings=_strings_model(d / "strings.onnx"),
        warmup_fails=_warmup_fails_model(d / "warmup_fails.onnx"),
        batch2_fails=_batch2_fails_model(d / "batch2_fails.onnx"),
    )
    for p in (m.tabular, m.tabular2, m.cnn, m.fixed, m.gather, m.strings, m.warmup_fails, m.batch2_fails):
        m.cached(p)
    return m


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """Start servers for one test; all are stopped at its end."""
    started: list[Server] = []

    def _serve(
        model: Path, name: str, *extra: str, port: int | None = None, wait: bool = True, sha256: str | None = None
    ) -> Server:
        args = ["--model", str(model), "--sha256", sha256 or sha256_of(model), "--name", name, *extra]
        s = Server(args, port=port, log=tmp_path / f"server-{len(started)}.log")
        started.append(s)
        return s.start(wait=wait)

    yield _serve
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def grpc_tabular(models: Models) -> Iterator[tuple[Server, int]]:
    """The tabular model served with the gRPC port on (its own HTTP/2) and a 1 MiB message limit: the
    server and its gRPC port, for a test module's raw-frame and load-generator clients."""
    gport = free_port()
    entry, digest = models.cached(models.tabular)
    srv = Server(["--model", str(entry), "--sha256", digest, "--name", "tabular", "--grpc-port", str(gport),
                  "--max-body-bytes", str(1 << 20)]).start()
    yield srv, gport
    srv.stop()

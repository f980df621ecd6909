"""Runtime hardening against a careless client and an attacker, each fault reproduced on a real server.

No assertion here depends on the machine's speed: states are awaited with
generous deadlines, and what is measured is memory and answers, not time.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime import models_zoo

from .conftest import Models, Server, cache_entry, json_infer_body, metric_value, request

pytestmark = pytest.mark.runtime

Serve = Callable[..., Server]


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _binary_post(srv: Server, head: dict[str, Any], data: bytes, model: str = "s") -> Any:
    h = json.dumps(head).encode()
    return srv.post(f"/v2/models/{model}/infer", h + data, {"Inference-Header-Content-Length": str(len(h))})


@pytest.fixture
def strings(serve: Serve, models: Models) -> Server:
    entry, _ = models.cached(models.strings)
    return serve(entry, "s", "--model-cache", str(models.cache))


def test_declared_shapes_are_bounded_by_the_bytes_received(strings: Server) -> None:
    """Fault 1: ~200-byte requests declaring hundreds of millions of elements allocate nothing."""
    assert strings.proc is not None
    before = _peak_rss_kib(strings.proc.pid)
    cases = [
        ("BYTES", [300_000_000]),
        ("BYTES", [1_000_000_000_000]),
        ("BYTES", [0, 2**63 - 1]),
        ("BYTES", [2**32, 2**32]),
        ("FP32", [300_000_000]),
        ("INT64", [0, 2**63 - 1]),
    ]
    for datatype, shape in cases:
        head = {"inputs": [{"name": "text", "datatype": datatype, "shape": shape,
                            "parameters": {"binary_data_size": 8}}]}
        r = _binary_post(strings, head, b"\0" * 8)
        assert r.status == 400, (shape, r.body)
        assert "input 'text'" in r.json()["error"], r.body
        r = strings.post("/v2/models/s/infer", {"inputs": [{"name": "text", "datatype": datatype, "shape": shape,
                                                           "data": ["a"]}]})
        assert r.status == 400 and "input 'text'" in r.json()["error"], (shape, r.body)
    # Peak memory did not move by more than noise (the fault allocated gigabytes).
    assert _peak_rss_kib(strings.proc.pid) - before < 64 << 10
    assert strings.get("/v2/health/ready").status == 200
    # A valid BYTES request still works, in both encodings.
    raw = b"".join(struct.pack("<I", len(w)) + w for w in (b"ab", b""))
    head = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2],
                        "parameters": {"binary_data_size": len(raw)}}]}
    assert _binary_post(strings, head, raw).status == 200


def test_client_mistakes_never_make_the_device_unready(serve: Serve, models: Models) -> None:
    """Fault 2: many 4xx of every kind leave readiness alone; the error window sees none of them."""
    entry, _ = models.cached(models.gather)
    srv = serve(entry, "g", "--error-window-s", "60", "--max-error-rate", "0.1")
    data = {"name": "data", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
    bad_bodies: list[Any] = [
        {"inputs": [data, {"name": "idx", "datatype": "INT64", "shape": [1], "data": [50]}]},  # index out of range
        {"inputs": [data, {"name": "idx", "datatype": {"x": 1}, "shape": [1], "data": [1]}]},  # datatype an object
        {"inputs": [data, {"name": "idx", "datatype": ["INT64"], "shape": [1], "data": [1]}]},  # datatype a list
        {"inputs": [data, {"name": "idx", "datatype": "INT32", "shape": [1], "data": [1]}]},  # wrong datatype
        {"inputs": [data, {"name": "idx", "datatype": "INT64", "shape": [2**62], "data": [1]}]},  # absurd shape
        {"inputs": [data]},  # missing input
        b"\xff\x00garbage",
    ]
    for _ in range(5):
        for body in bad_bodies:
            r = srv.post("/v2/models/g/infer", body)
            assert 400 <= r.status < 500, r.body
            assert "error" in r.json()
    ready = srv.get("/v2/health/ready")
    assert ready.status == 200, ready.headers
    text = srv.metrics()
    assert metric_value(text, "edgeai_requests_total", {"outcome": "error"}) == 0
    assert metric_value(text, "edgeai_requests_total", {"outcome": "input_rejected"}) == 5
    assert metric_value(text, "edgeai_requests_total", {"outcome": "bad_request"}) == 30


def _load(srv: Server, params: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return request(srv.port, "POST", "/v2/repository/models/x/load", json.dumps({"parameters": params}).encode(),
                   {"Content-Type": "application/json", **(headers or {})})


def test_repository_loads_read_only_the_cache(serve: Serve, models: Models, tmp_path: Path) -> None:
    """Fault 3: no file outside the cache, nothing but regular files, bounded bytes, no wedged loads."""
    cache = tmp_path / "cache"
    entry, _digest = cache_entry(cache, models.tabular)
    srv = serve(entry, "m")
    passwd = "/etc/passwd"
    for params in (
        {"path": passwd, "sha256": "a" * 64},
        {"path": "/dev/zero", "sha256": "a" * 64},
        {"path": str(cache / "sha256" / ".." / ".." / "etc"), "sha256": "a" * 64},
        {"uri": f"file://{passwd}", "sha256": "a" * 64},
    ):
        r = _load(srv, params)
        assert r.status == 400 and "OutsideCache" in r.json()["error"], (params, r.body)
        assert "sha256 is" not in r.json()["error"]  # nothing learned about the file
    # A FIFO, a symlink to a file outside and a directory, each placed in the cache under a digest.
    fifo_digest, link_digest, dir_digest = "1" * 64, "2" * 64, "3" * 64
    os.mkfifo(cache / "sha256" / fifo_digest)
    os.symlink(passwd, cache / "sha256" / link_digest)
    (cache / "sha256" / dir_digest).mkdir()
    for d, reason in ((fifo_digest, "NotRegularFile"), (link_digest, "NotRegularFile"), (dir_digest, "NotRegularFile")):
        r = _load(srv, {"sha256": d})
        assert r.status == 400 and reason in r.json()["error"], r.body
    # The declared size bounds the read: a bigger file is refused before it is read.
    entry2, digest2 = cache_entry(cache, models.tabular2)
    r = _load(srv, {"sha256": digest2, "size": 100})
    assert r.status == 400 and "TooLarge" in r.json()["error"], r.body
    # And later loads are not wedged by any of it.
    r = _load(srv, {"sha256": digest2, "path": str(entry2)})
    assert r.status == 200, r.body
    # Failed loads of new names leave nothing behind: no index entry, one metric series for all of them.
    for i in range(40):
        request(srv.port, "POST", f"/v2/repository/models/junk{i}/load",
                json.dumps({"parameters": {"sha256": "b" * 64}}).encode())
    index = request(srv.port, "POST", "/v2/repository/index").json()
    assert {e["name"] for e in index} == {"m", "x"}
    text = srv.metrics()
    assert "junk" not in text
    assert metric_value(text, "edgeai_model_loads_total", {"model": "_not_loaded", "outcome": "refused"}) >= 40


def test_repository_api_can_be_turned_off_or_need_a_token(serve: Serve, models: Models, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    entry, _digest = cache_entry(cache, models.tabular)
    off = serve(entry, "m", "--repository-api", "off")
    for path in ("/v2/repository/index", "/v2/repository/models/m/unload", "/v2/repository/models/m/load"):
        r = off.post(path)
        assert r.status == 403 and "turned off" in r.json()["error"]
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    guarded = serve(entry, "m", "--repository-api", "token", "--repository-token-file", str(token))
    assert guarded.post("/v2/repository/index").status == 403
    assert guarded.post("/v2/repository/index", headers={"Authorization": "Bearer wrong"}).status == 403
    r = guarded.post("/v2/repository/index", headers={"Authorization": "Bearer s3cret-token"})
    assert r.status == 200 and r.json()[0]["name"] == "m"
    assert guarded.post("/v2/models/m/infer", json_infer_body("features", np.zeros((1, 16), np.float32))).status == 200


def _recv_all(sock: socket.socket, deadline_s: float = 60.0) -> bytes:
    sock.settimeout(deadline_s)
    out = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            out += chunk
    except (ConnectionResetError, TimeoutError):
        return out


def test_connection_limits(serve: Serve, models: Models) -> None:
    """Fault 4: idle and half-sent connections are closed, heads are bounded, connections are capped."""
    entry, _ = models.cached(models.tabular)
    srv = serve(
        entry, "m", "--header-timeout-s", "2", "--max-header-bytes", "8192", "--max-connections", "8",
        "--keep-alive-timeout-s", "1",
    )
    # An idle connection and one that sends a partial head: both closed by the server.
    idle = socket.create_connection(("127.0.0.1", srv.port))
    partial = socket.create_connection(("127.0.0.1", srv.port))
    partial.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert _recv_all(idle) == b""
    assert _recv_all(partial) == b""
    # A head over the limit: 431, closed, before the server parses the rest.
    big = socket.create_connection(("127.0.0.1", srv.port))
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        big.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
    assert _recv_all(big).startswith(b"HTTP/1.1 431")
    # A normal head with a body larger than the head limit still works.
    x = np.zeros((600, 16), np.float32)
    assert srv.post("/v2/models/m/infer", json_infer_body("features", x)).status == 200
    # The connection cap: 8 held open, the 9th is closed at once, and it is counted.
    held = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(8)]
    extra = socket.create_connection(("127.0.0.1", srv.port))
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        extra.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _recv_all(extra) == b""
    for s in (idle, partial, big, extra, *held):
        s.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if srv.get("/v2/health/live").status == 200:
                break
        except OSError:
            time.sleep(0.2)
    text = srv.metrics()
    assert metric_value(text, "edgeai_connections_refused_total", {"reason": "max_connections"}) >= 1
    assert metric_value(text, "edgeai_connections_refused_total", {"reason": "header_timeout"}) >= 2
    assert metric_value(text, "edgeai_connections_refused_total", {"reason": "header_too_large"}) >= 1


def test_large_json_is_decoded_off_the_loop_and_answered(serve: Serve, models: Models) -> None:
    """Fault 5: a multi-megabyte JSON body goes through the decoder process and is answered right."""
    entry, _ = models.cached(models.tabular)
    srv = serve(entry, "m")
    x = models_zoo.sample_inputs("tabular", 20_000, seed=9)  # ~5 MB of JSON
    expected = models.session(models.tabular).run(None, {"features": x})[0]
    r = srv.post("/v2/models/m/infer", json_infer_body("features", x))
    assert r.status == 200, r.body[:300]
    got = np.array(r.json()["outputs"][0]["data"], np.float32).reshape(expected.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    r = srv.post("/v2/models/m/infer", b'{"inputs": [' + b" " * (2 << 20) + b"nope")
    assert r.status == 400 and "not valid JSON" in r.json()["error"]
    assert srv.get("/v2/health/ready").status == 200


class _Cloud(http.server.ThreadingHTTPServer):
    """A v2 cloud stand-in that answers 429 (Retry-After: 1) until told to accept."""

    def __init__(self) -> None:
        self.accept = False
        self.seen: list[int] = []
        super().__init__(("127.0.0.1", 0), _CloudHandler)


class _CloudHandler(http.server.BaseHTTPRequestHandler):
    server: _Cloud

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        status = 200 if self.server.accept else 429
        self.server.seen.append(status)
        body = json.dumps({"model_name": "c", "outputs": [
            {"name": models_zoo.OUTPUT, "datatype": "FP32", "shape": [1, 3], "data": [0.1, 0.2, 0.7]}]}).encode()
        if status != 200:
            body = b'{"error": "slow down"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status == 429:
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def cloud() -> Iterator[_Cloud]:
    srv = _Cloud()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()


def test_cloud_429_keeps_hard_examples_until_delivered(
    serve: Serve, models: Models, tmp_path: Path, cloud: _Cloud
) -> None:
    """Fault 6: 429 (and 408/425/5xx) are retried with backoff honouring Retry-After; nothing is lost."""
    entry, _ = models.cached(models.cnn)
    edge = serve(entry, "c", "--fallback-url", f"http://127.0.0.1:{cloud.server_address[1]}",
                 "--fallback-threshold", "1.0", "--fallback-queue", str(tmp_path / "q"))
    for i in range(6):
        r = edge.post("/v2/models/c/infer", json_infer_body(models_zoo.CNN_INPUT,
                                                            models_zoo.sample_inputs("cnn", 1, seed=i)))
        assert r.status == 200 and r.json()["parameters"]["edgeai_source"] == "edge"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and metric_value(edge.metrics(), "edgeai_hard_examples_queued") < 6:
        time.sleep(0.2)
    assert metric_value(edge.metrics(), "edgeai_hard_examples_queued") == 6
    cloud.accept = True
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and metric_value(edge.metrics(), "edgeai_hard_examples_queued") > 0:
        time.sleep(0.3)
    text = edge.metrics()
    assert metric_value(text, "edgeai_hard_examples_queued") == 0
    assert metric_value(text, "edgeai_hard_examples_drained_total") == 6
    assert metric_value(text, "edgeai_hard_examples_dropped_total") == 0
    assert 429 in cloud.seen and cloud.seen.count(200) >= 6

"""Pure pieces of the runtime's hardening: repository access, Retry-After, the OIP descriptor, load reads."""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.artifacts.integrity import IntegrityError
from edge_runtime.core.access import RepositoryAccess, grpc_peer_host, is_loopback
from edge_runtime.core.protocol import Forbidden
from edge_runtime.fallback.client import http_retryable, retry_after
from edge_runtime.serving.repository import cache_of, read_model_file

ROOT = Path(__file__).resolve().parents[3]


def test_repository_access_modes() -> None:
    loop = RepositoryAccess("loopback")
    loop.check("127.0.0.1", None)
    loop.check("::1", None)
    for host in ("10.0.0.7", "192.168.1.2", None, "", "not-an-ip"):
        with pytest.raises(Forbidden, match="loopback"):
            loop.check(host, None)
    with pytest.raises(Forbidden, match="turned off"):
        RepositoryAccess("off").check("127.0.0.1", "Bearer x")
    tok = RepositoryAccess("token", "t0k")
    tok.check("10.1.2.3", "Bearer t0k")
    tok.check("10.1.2.3", "bearer t0k")
    for auth in (None, "", "Bearer", "Bearer t0", "Basic t0k", "Bearer t0kk"):
        with pytest.raises(Forbidden, match="Bearer"):
            tok.check("127.0.0.1", auth)
    RepositoryAccess("any").check("203.0.113.9", None)
    with pytest.raises(ValueError):
        RepositoryAccess("token")
    with pytest.raises(ValueError):
        RepositoryAccess("everyone")


def test_grpc_peer_addresses() -> None:
    assert grpc_peer_host("ipv4:127.0.0.1:50051") == "127.0.0.1"
    assert grpc_peer_host("ipv6:[::1]:50051") == "::1"
    assert grpc_peer_host("unix:/tmp/sock") is None
    assert is_loopback("127.8.9.10") and not is_loopback("128.0.0.1")


def test_retry_after_and_retryable_statuses() -> None:
    assert retry_after("7") == 7.0
    assert retry_after(None) is None and retry_after("soon") is None
    when = email.utils.formatdate(1_000_060, usegmt=True)
    assert retry_after(when, now=1_000_000) == pytest.approx(60.0)
    assert retry_after(when, now=2_000_000) == 0.0
    assert all(http_retryable(s) for s in (408, 425, 429, 500, 502, 503, 504))
    assert not any(http_retryable(s) for s in (400, 401, 404, 413, 422))


def test_model_reads_are_regular_files_only_and_bounded(tmp_path: Path) -> None:
    f = tmp_path / "m"
    f.write_bytes(b"x" * 100)
    assert read_model_file(str(f), 100) == b"x" * 100
    with pytest.raises(IntegrityError) as e:
        read_model_file(str(f), 99)
    assert e.value.reason == "TooLarge"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(IntegrityError) as e:  # never blocks on open
        read_model_file(str(fifo), 100)
    assert e.value.reason == "NotRegularFile"
    link = tmp_path / "link"
    link.symlink_to(f)
    with pytest.raises(IntegrityError) as e:
        read_model_file(str(link), 100)
    assert e.value.reason == "NotRegularFile"
    with pytest.raises(IntegrityError) as e:
        read_model_file("/dev/zero", 100)
    assert e.value.reason == "NotRegularFile"
    with pytest.raises(IntegrityError) as e:
        read_model_file(str(tmp_path / "missing"), 100)
    assert e.value.reason == "NotFound"


def test_cache_is_found_from_the_pod_model_path() -> None:
    d = "a" * 64
    assert cache_of(f"/var/lib/edgeai/models/sha256/{d}", d) == Path("/var/lib/edgeai/models")
    assert cache_of(f"/var/lib/edgeai/models/sha256/{d}", "b" * 64) is None
    assert cache_of("/tmp/model.onnx", d) is None


def test_shipped_oip_descriptor_is_generated_from_the_proto() -> None:
    pytest.importorskip("grpc_tools")
    out = subprocess.run([sys.executable, "-m", "edge_runtime.oip.generate", "--check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_oip_messages_match_tritons_field_numbers_and_coexist_in_one_process() -> None:
    """Our private-pool messages and Triton's generated `inference` package load side by side (kserve#3099),
    and every field of ours that Triton also has carries the same number and type."""
    pytest.importorskip("tritonclient.grpc")
    code = textwrap.dedent(
        """
        import json
        from tritonclient.grpc import service_pb2 as triton
        from edge_runtime import oip
        diffs = []
        def walk(ours, theirs, path):
            for f in ours.fields:
                t = theirs.fields_by_name.get(f.name)
                if t is not None and (t.number, t.type) != (f.number, f.type):
                    diffs.append(f"{path}.{f.name}")
            for n in ours.nested_types:
                if n.name in theirs.nested_types_by_name:
                    walk(n, theirs.nested_types_by_name[n.name], f"{path}.{n.name}")
        names = [n for n in oip._CLASSES if "." not in n]
        for name in names:
            walk(oip.message(name).DESCRIPTOR, triton.DESCRIPTOR.message_types_by_name[name], name)
        req = oip.ModelInferRequest(model_name="m", id="7")
        req.inputs.add(name="x", datatype="FP32", shape=[1, 2])
        back = triton.ModelInferRequest.FromString(req.SerializeToString())
        back_fields = [back.model_name, back.id, list(back.inputs[0].shape)]
        print(json.dumps({"diffs": diffs, "n": len(names), "back": back_fields}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["diffs"] == [] and res["n"] >= 20
    assert res["back"] == ["m", "7", [1, 2]]


def test_fallback_asks_the_cloud_in_its_own_encoding(tmp_path: Path) -> None:
    import numpy as np

    from edge_runtime.core.codec import encode_request_typed
    from edge_runtime.core.protocol import InferenceRequest, RequestedOutput, Tensor
    from edge_runtime.fallback.client import Fallback
    from edge_runtime.fallback.hardqueue import HardExampleQueue
    from edge_runtime.telemetry.metrics import RuntimeMetrics

    x = np.ones((1, 4), np.float32)
    req = InferenceRequest([Tensor("x", "FP32", (1, 4), x)], [RequestedOutput("y", True)], "id-1",
                           {"binary_data_output": True, "k": 1}, binary_output=True)
    m = RuntimeMetrics(process=False)
    rest = Fallback("http://cloud:8080", 0.5, 1.0, HardExampleQueue(tmp_path / "a"), m)
    plain = rest._for_cloud(req)
    assert plain.binary_output is False and plain.outputs == [RequestedOutput("y", None)]
    assert plain.parameters == {"k": 1} and plain.id == "id-1"
    body, hl = encode_request_typed(plain, binary=rest.binary)
    assert hl is None and json.loads(body)["inputs"][0]["data"] == [1.0] * 4  # JSON: every v2 server takes it
    binary = Fallback("http://cloud:8080", 0.5, 1.0, HardExampleQueue(tmp_path / "b"), m, binary=True)
    assert binary._for_cloud(req).binary_output is True
    assert encode_request_typed(binary._for_cloud(req), binary=binary.binary)[1] is not None
    grpc_cloud = Fallback("cloud:8081", 0.5, 1.0, HardExampleQueue(tmp_path / "c"), m, protocol="grpc")
    assert grpc_cloud.binary is True
    with pytest.raises(ValueError):
        Fallback("http://cloud:8081", 0.5, 1.0, HardExampleQueue(tmp_path / "d"), m, protocol="grpc")


class _Transport:
    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []  # one entry per write/writelines: what one syscall carried
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        self.sent.append([data])

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        self.sent.append(list(parts))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1234) if name in ("peername", "sockname") else None

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class _Server:
    """What a connection of http_server uses of its server."""

    def __init__(self, app: Any, loop: asyncio.AbstractEventLoop) -> None:
        from edge_runtime.transport.busy_poll import BusyPoll
        from edge_runtime.transport.http_limits import Limits

        self.app = app
        self.limits = Limits(None)
        self.loop = loop
        self.date = b"date: now\r\n"
        self.keep_alive_s = 15.0
        self.body_timeout_s = 30.0
        self.connections: set[Any] = set()
        self.tasks: list[asyncio.Task[None]] = []
        self.direct_body_max = 64 << 20
        self.read_view = memoryview(bytearray(256 << 10))
        self.busy_poll = BusyPoll(0)

    def start(self, coro: Any) -> None:
        from edge_runtime.transport import eager

        task = eager.start(coro, self.loop)
        if task is not None:
            self.tasks.append(task)

    async def settle(self) -> None:
        await asyncio.gather(*self.tasks)
        self.tasks.clear()


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            return body


async def _echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = await _read_body(receive)
    out = b"%s %d" % (scope["path"].encode(), len(body))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(out))]})
    await send({"type": "http.response.body", "body": out})


def _counting(slices: list[int]) -> Any:
    """A connection class that notes the size of every body piece its parser hands on."""
    from edge_runtime.transport.http_server import _Connection

    class Counting(_Connection):
        def on_body(self, body: bytes) -> None:
            slices.append(len(body))
            super().on_body(body)

    return Counting


def test_a_large_body_is_parsed_a_read_at_a_time_whole_and_exact() -> None:
    """Bytes a transport hands over itself (data_received): the parser sees the first 16 KiB slice, which
    holds the head; the rest of the body, from that very read on, goes straight into the app's buffer. The
    app gets the bytes sent, and the request pipelined behind the body is still answered."""

    slices: list[int] = []
    got: list[bytes] = []
    Counting = _counting(slices)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        got.append(await _read_body(receive))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    body = os.urandom(600_000)
    head = b"POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
    wire = head + body + b"GET /after HTTP/1.1\r\n\r\n"

    async def main() -> None:
        srv = _Server(app, asyncio.get_running_loop())
        t = _Transport()
        conn = Counting(srv)  # type: ignore[arg-type]
        conn.connection_made(t)  # type: ignore[arg-type]
        for i in range(0, len(wire), 200_000):
            conn.data_received(wire[i : i + 200_000])
            await asyncio.sleep(0)  # the app takes what came
        await srv.settle()
        assert got == [body, b""], "the body whole, then the pipelined GET with none"
        assert slices == [(16 << 10) - len(head)], "the parser sees the head's 16 KiB slice, not the body's rest"
        assert len(t.sent) == 2 and not t.closed

    asyncio.run(main())


def _read(conn: Any, data: bytes) -> Any:
    """One read as a BufferedProtocol transport does it: into get_buffer's buffer, then buffer_updated.
    Returns the buffer the bytes went to."""
    buf = conn.get_buffer(-1)
    n = min(len(buf), len(data))
    buf[:n] = data[:n]
    conn.buffer_updated(n)
    assert n == len(data), "a read larger than the buffer offered"
    return buf.obj


def test_a_large_body_is_read_straight_into_the_buffer_the_app_gets() -> None:
    """After the 16 KiB slice that brings its head, a body of declared length is read into one buffer of its
    size, and that very buffer is what the app gets: the parser sees only that slice. The next request is
    parsed by a fresh parser; a body over the app's limit is not given a buffer of its declared size."""

    slices: list[int] = []
    got: list[Any] = []
    Counting = _counting(slices)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        msg = await receive()
        chunks = [msg["body"]]
        while msg.get("more_body"):
            msg = await receive()
            chunks.append(msg["body"])
        got.append(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    body = os.urandom(600_000)
    head = b"POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)

    async def main() -> None:
        srv = _Server(app, asyncio.get_running_loop())
        t = _Transport()
        conn = Counting(srv)  # type: ignore[arg-type]
        conn.connection_made(t)  # type: ignore[arg-type]
        wire = head + body
        first = _read(conn, wire[:100_000])
        assert first is srv.read_view.obj
        targets = [_read(conn, wire[i : i + 150_000]) for i in range(100_000, len(wire), 150_000)]
        await srv.settle()
        assert got == [body] and all(b is got[0] for b in targets), "read into the app's own buffer"
        assert slices == [(16 << 10) - len(head)], "the parser saw the head's 16 KiB slice of the body only"
        _read(conn, b"GET /after HTTP/1.1\r\n\r\n")
        await srv.settle()
        assert got[1] == b"" and len(t.sent) == 2 and not t.closed

        # Over the limit (the app answers 413 on the declared length alone): read through the parser.
        srv.direct_body_max = 500_000
        slices.clear()
        _read(conn, wire[:100_000])
        assert all(_read(conn, wire[i : i + 150_000]) is srv.read_view.obj for i in range(100_000, len(wire), 150_000))
        await srv.settle()
        assert got[2] == body and sum(slices) == len(body)

    asyncio.run(main())


def test_a_body_the_app_did_not_wait_for_is_read_and_dropped_not_kept() -> None:
    """The app answers before a large body is in (an unknown model): the rest of the body is still read, to find
    the request behind it, but into the server's read buffer, not kept in one of the body's size."""
    from edge_runtime.transport.http_server import _Connection

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        status = 404 if scope["method"] == "POST" else 200
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    body = os.urandom(600_000)
    wire = b"POST /v2/models/nope/infer HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body

    async def main() -> None:
        srv = _Server(app, asyncio.get_running_loop())
        t = _Transport()
        conn = _Connection(srv)  # type: ignore[arg-type]
        conn.connection_made(t)  # type: ignore[arg-type]
        _read(conn, wire[:100_000])
        await srv.settle()
        assert len(t.sent) == 1 and b" 404 " in b"".join(t.sent[0])
        into = [_read(conn, wire[i : i + 150_000]) for i in range(100_000, len(wire), 150_000)]
        assert all(b is srv.read_view.obj for b in into), "the dropped body was kept in a buffer of its size"
        _read(conn, b"GET /next HTTP/1.1\r\n\r\n")
        await srv.settle()
        assert len(t.sent) == 2 and b" 200 " in b"".join(t.sent[1]) and not t.closed

    asyncio.run(main())


def test_the_runtime_assembles_a_tensor_sent_in_pieces_exactly(tmp_path: Path) -> None:
    """App._body copies a body of declared length into one buffer as its pieces come: the answer equals a
    direct run, and a body that stops short of its declared length is not answered as if whole."""
    import hashlib

    import numpy as np
    import onnxruntime as ort

    from edge_runtime import models_zoo
    from edge_runtime.serving.dataplane import DataPlane
    from edge_runtime.serving.repository import ModelSource, Settings
    from edge_runtime.telemetry.metrics import RuntimeMetrics
    from edge_runtime.transport.server import App

    path = models_zoo.build_tabular(tmp_path / "t.onnx")
    dp = DataPlane(Settings(warmup_runs=1), RuntimeMetrics(process=False))
    dp.load_initial("t", ModelSource(str(path), hashlib.sha256(path.read_bytes()).hexdigest(), "1"))
    app = App(dp, max_body_bytes=1 << 22)
    x = np.random.default_rng(2).standard_normal((4096, 16)).astype(np.float32)  # 256 KiB
    head = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": list(x.shape),
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "outputs": [{"name": models_zoo.OUTPUT, "parameters": {"binary_data": True}}]}).encode()
    body = head + x.tobytes()
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"features": x})[0]

    def call(pieces: list[bytes], declared: int) -> tuple[int, bytes, dict[bytes, bytes]]:
        sent: list[dict[str, Any]] = []
        left = list(pieces)

        async def receive() -> dict[str, Any]:
            if not left:
                return {"type": "http.disconnect"}
            piece = left.pop(0)
            return {"type": "http.request", "body": piece, "more_body": bool(left) or declared > len(body)}

        async def send(msg: dict[str, Any]) -> None:
            sent.append(msg)

        headers = [(b"content-length", str(declared).encode()),
                   (b"inference-header-content-length", str(len(head)).encode())]
        scope = {"type": "http", "method": "POST", "path": "/v2/models/t/infer", "headers": headers,
                 "client": ("127.0.0.1", 1)}
        asyncio.run(app(scope, receive, send))
        if not sent:
            return 0, b"", {}
        return int(sent[0]["status"]), sent[1]["body"], dict(sent[0]["headers"])

    cuts = [0, 100, 70_000, 200_001, len(body)]
    status, out, headers = call([body[a:b] for a, b in itertools.pairwise(cuts)], len(body))
    assert status == 200, out[:300]
    n = int(headers[b"inference-header-content-length"])
    np.testing.assert_allclose(np.frombuffer(out[n:], dtype="<f4").reshape(expected.shape), expected, rtol=1e-6)
    # The client leaves before the declared length: nothing is answered, nothing half-read is run.
    assert call([body[:100], body[100:70_000]], len(body) + 10)[0] == 0
    asyncio.run(app._lifespan_shutdown())


def test_one_write_per_response_in_order_and_100_continue_at_once() -> None:
    from edge_runtime.transport.http_server import _Connection

    async def main() -> None:
        srv = _Server(_echo_app, asyncio.get_running_loop())
        t = _Transport()
        conn = _Connection(srv)  # type: ignore[arg-type]
        conn.connection_made(t)  # type: ignore[arg-type]
        conn.data_received(b"POST /a HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        await asyncio.sleep(0)  # the app asks for the body
        assert t.sent == [[b"HTTP/1.1 100 Continue\r\n\r\n"]]
        conn.data_received(b"hel")
        conn.data_received(b"lo")
        await srv.settle()
        assert t.sent[1:] == [[b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\ndate: now\r\n\r\n/a 5"]]
        # Two pipelined requests in one read: two writes, each a whole response, in order; HEAD has no body.
        t.sent.clear()
        # Both are answered in the callback that read them (eager.py), one after the other, without a task.
        conn.data_received(b"GET /bb HTTP/1.1\r\n\r\nHEAD /c HTTP/1.1\r\n\r\n")
        assert not srv.tasks
        assert t.sent == [
            [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: now\r\n\r\n/bb 0"],
            [b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\ndate: now\r\n\r\n"],
        ]
        assert not t.paused and not t.closed
        # Connection: close is answered, then the connection closed.
        t.sent.clear()
        conn.data_received(b"GET /d HTTP/1.1\r\nConnection: close\r\n\r\n")
        await srv.settle()
        assert t.sent == [[b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\ndate: now\r\n\r\n/d 0"]]
        assert t.closed

    asyncio.run(main())


def test_a_late_body_gets_408_from_the_server_sweep_and_the_next_request_its_own_clock() -> None:
    """The body deadline is the HTTP server's (no timer, and no task, per request): a request whose body has
    not come within body_timeout_s of its turn to run is answered 408 and closed, and the app waiting on
    receive() is told the client left. A request behind it gets its own clock, from its turn."""
    from edge_runtime.transport.http_server import _Connection

    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        msg = await receive()
        while msg.get("more_body"):
            msg = await receive()
        seen.append(msg["type"])
        if msg["type"] == "http.request":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})

    async def main() -> None:
        loop = asyncio.get_running_loop()
        srv = _Server(app, loop)
        t = _Transport()
        conn = _Connection(srv)  # type: ignore[arg-type]
        conn.connection_made(t)  # type: ignore[arg-type]
        conn.data_received(b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345")
        assert len(srv.tasks) == 1, "its body is not whole: it waits in a task"
        assert conn.current is not None
        began = conn.current.since
        conn.check_deadlines(began + 29)
        assert t.sent == [] and not t.closed
        conn.check_deadlines(began + 31)
        assert t.closed
        assert t.sent[0][0].startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b"connection: close" in t.sent[0][0] and b"slow client" in t.sent[0][0]
        await srv.settle()
        assert seen == ["http.disconnect"] and len(t.sent) == 1, "the app answers nothing more"
        assert srv.limits.open == 1  # counted until the transport reports it lost

        # A request queued behind a slow one: its clock starts when it runs, not when it came.
        srv2 = _Server(app, loop)
        t2 = _Transport()
        conn2 = _Connection(srv2)  # type: ignore[arg-type]
        conn2.connection_made(t2)  # type: ignore[arg-type]
        conn2.data_received(b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\n1")
        assert conn2.current is not None
        a_began = conn2.current.since
        conn2.check_deadlines(a_began + 20)
        conn2.data_received(b"2POST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\n")
        for _ in range(100):  # /a's task answers, then /b runs and waits for its body
            if conn2.current is not None and conn2.current.scope["path"] == "/b":
                break
            await asyncio.sleep(0)
        assert seen[-1] == "http.request" and len(t2.sent) == 1
        assert conn2.current is not None
        b_began = conn2.current.since
        assert b_began > a_began, "/b's clock starts at its turn, not /a's"
        conn2.check_deadlines(b_began + 29)
        assert not t2.closed
        conn2.check_deadlines(b_began + 31)
        assert t2.closed and t2.sent[-1][0].startswith(b"HTTP/1.1 408")
        await srv2.settle()
        assert seen[-1] == "http.disconnect"

    asyncio.run(main())

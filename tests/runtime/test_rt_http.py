"""The runtime's HTTP server (edge_runtime/transport/http_server.py) from real sockets.

A small app (tests/runtime/http_app.py) runs on the server in its own process;
requests are written byte by byte as a client would, so what is tested is the
wire: pipelining, chunked bodies, 100-continue, keep-alive, closes, malformed
requests, back-pressure, a client leaving mid-request and graceful shutdown.
States are awaited with generous deadlines; nothing depends on the machine's speed.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, free_port, request

pytestmark = pytest.mark.runtime

DEADLINE_S = 60.0


@dataclass
class AppServer:
    proc: subprocess.Popen[bytes]
    port: int
    marker: Path

    def stats(self) -> dict[str, int]:
        r = request(self.port, "GET", "/stats")
        assert r.status == 200
        out: dict[str, int] = r.json()
        return out

    def wait_for(self, what: Callable[[dict[str, int]], bool]) -> dict[str, int]:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            s = self.stats()
            if what(s) or time.monotonic() > deadline:
                return s
            time.sleep(0.05)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.settimeout(DEADLINE_S)
        return sock


@pytest.fixture
def app_server(tmp_path: Path) -> Iterator[Callable[..., AppServer]]:
    started: list[AppServer] = []

    def start(*args: str) -> AppServer:
        port = free_port()
        marker = tmp_path / f"shutdown-{port}.json"
        log = open(tmp_path / f"server-{port}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.runtime.http_app", str(port), str(marker), *args],
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )
        srv = AppServer(proc, port, marker)
        started.append(srv)
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert proc.poll() is None, (tmp_path / f"server-{port}.log").read_text()
            try:
                srv.stats()
                return srv
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    yield start
    for srv in started:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait(10)


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


class Reader:
    """HTTP/1.1 responses read off a socket, one at a time (each has a content-length)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _more(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def head_line(self) -> bytes:
        while b"\r\n\r\n" not in self.buf:
            assert self._more(), f"connection closed mid-head: {self.buf!r}"
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return head

    def reply(self) -> Reply:
        lines = self.head_line().split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower().decode()] = v.strip().decode()
        n = int(headers["content-length"])
        while len(self.buf) < n:
            assert self._more(), "connection closed mid-body"
        body, self.buf = self.buf[:n], self.buf[n:]
        return Reply(status, headers, body)

    def closed(self) -> bool:
        """True once the server closes the connection (with nothing more sent), within the deadline."""
        try:
            return not self._more() and not self.buf
        except ConnectionResetError:
            return not self.buf


def _echo(body: bytes, query: str = "", extra: bytes = b"") -> bytes:
    return b"POST /echo?%s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n%s" % (
        query.encode(),
        len(body),
        extra,
        body,
    )


def test_pipelined_requests_are_answered_in_order(app_server: Callable[..., AppServer]) -> None:
    srv = app_server()
    sock = srv.connect()
    # A slow one first: answering out of order would show.
    wire = b"GET /slow?ms=300 HTTP/1.1\r\nHost: t\r\n\r\n"
    wire += b"".join(_echo(b"x" * i, f"i={i}") for i in range(1, 12))
    wire += b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n"
    sock.sendall(wire)
    r = Reader(sock)
    assert r.reply().json() == {"slept": 300}
    for i in range(1, 12):
        got = r.reply()
        doc = got.json()
        assert got.status == 200 and (doc["n"], doc["path"], doc["query"]) == (i, "/echo", f"i={i}")
    assert r.reply().status == 404
    # The connection stays usable afterwards.
    sock.sendall(_echo(b"after"))
    assert r.reply().json()["n"] == 5


def test_chunked_bodies_small_and_past_the_read_pause(app_server: Callable[..., AppServer]) -> None:
    srv = app_server()
    sock = srv.connect()
    r = Reader(sock)
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    sock.sendall(b"4\r\ndefg\r\n")
    sock.sendall(b"0\r\n\r\n")
    assert r.reply().json()["n"] == 7
    # 4 MiB in 64 KiB chunks: more than the server holds unread, so reading pauses and resumes.
    chunk = b"z" * (64 << 10)
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(64):
        sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    sock.sendall(b"0\r\n\r\n")
    assert r.reply().json()["n"] == 4 << 20


def test_large_bodies_whole_in_pieces_after_100_continue_and_unread(app_server: Callable[..., AppServer]) -> None:
    """Bodies of 600 KB (read by the kernel straight into the app's buffer once their head is parsed) over a
    real socket and uvloop: whole with a request pipelined behind, in pieces with pauses, after 100-continue,
    and one the app answers without reading (its rest is read and dropped, the next request answered)."""
    srv = app_server()
    sock = srv.connect()
    r = Reader(sock)
    body = os.urandom(600_000)
    digest = hashlib.sha256(body).hexdigest()
    sock.sendall(_echo(body, "a") + _echo(b"tail", "b"))
    got = r.reply().json()
    assert got["n"] == len(body) and got["sha256"] == digest and got["query"] == "a"
    assert r.reply().json()["sha256"] == hashlib.sha256(b"tail").hexdigest()
    wire = _echo(body, "pieces")
    for i in range(0, len(wire), 150_001):
        sock.sendall(wire[i : i + 150_001])
        time.sleep(0.05)  # each piece its own read (or several): any split must give the same bytes
    assert r.reply().json()["sha256"] == digest
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body))
    assert r.head_line() == b"HTTP/1.1 100 Continue"
    sock.sendall(body)
    assert r.reply().json()["sha256"] == digest
    sock.sendall(b"POST /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert r.reply().status == 404
    sock.sendall(_echo(b"next"))
    assert r.reply().json()["sha256"] == hashlib.sha256(b"next").hexdigest()


def test_expect_100_continue(app_server: Callable[..., AppServer]) -> None:
    srv = app_server()
    sock = srv.connect()
    r = Reader(sock)
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert r.head_line() == b"HTTP/1.1 100 Continue"  # nothing else was sent before it
    sock.sendall(b"hello")
    got = r.reply()
    assert got.status == 200 and got.json()["n"] == 5
    # An answer that needs no body (404): the body that was never asked for is not awaited.
    sock.sendall(b"POST /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    got = r.reply()
    assert got.status == 404 and got.headers.get("connection") == "close"
    assert r.closed()


def test_a_client_leaving_mid_body_is_seen_by_the_app(app_server: Callable[..., AppServer]) -> None:
    srv = app_server()
    sock = srv.connect()
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
    # The request is in the app (the /stats request asking is the other one in flight).
    assert srv.wait_for(lambda s: s["in_flight"] == 2)["in_flight"] == 2
    sock.close()
    s = srv.wait_for(lambda s: s["disconnects"] == 1 and s["in_flight"] == 1)
    assert s["disconnects"] == 1 and s["in_flight"] == 1


def test_keep_alive_and_the_idle_timeout(app_server: Callable[..., AppServer]) -> None:
    srv = app_server("--keep-alive-timeout-s", "30")
    sock = srv.connect()
    r = Reader(sock)
    for i in range(3):  # one connection, several requests
        sock.sendall(_echo(b"a" * i))
        assert r.reply().json()["n"] == i
    short = app_server("--keep-alive-timeout-s", "1")
    sock = short.connect()
    r = Reader(sock)
    sock.sendall(_echo(b"abc"))
    assert r.reply().json()["n"] == 3
    assert r.closed(), "an idle keep-alive connection is closed by the server"


def test_http_1_0_and_connection_close_are_closed_after_the_answer(app_server: Callable[..., AppServer]) -> None:
    srv = app_server()
    for wire in (
        b"GET /stats HTTP/1.0\r\n\r\n",
        b"GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    ):
        sock = srv.connect()
        r = Reader(sock)
        sock.sendall(wire)
        got = r.reply()
        assert got.status == 200 and got.headers["connection"] == "close"
        assert r.closed()
    # HTTP/1.0 asking for keep-alive gets it.
    sock = srv.connect()
    r = Reader(sock)
    for _ in range(2):
        sock.sendall(b"GET /stats HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        got = r.reply()
        assert got.status == 200 and got.headers["connection"] == "keep-alive"


def test_a_malformed_request_gets_400_and_the_connection_closes(app_server: Callable[..., AppServer]) -> None:
    srv = app_server()
    both_lengths = b"GET / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    for garbage in (b"NOT HTTP AT ALL\r\n\r\n", both_lengths):
        sock = srv.connect()
        r = Reader(sock)
        sock.sendall(garbage)
        got = r.reply()
        assert got.status == 400 and "malformed request" in got.json()["error"], got
        assert r.closed()
    # Behind a good pipelined request: that one is answered first.
    sock = srv.connect()
    r = Reader(sock)
    sock.sendall(_echo(b"ok") + b"BAD\x01 / HTTP/1.1\r\n\r\n")
    assert r.reply().json()["n"] == 2
    assert r.reply().status == 400
    assert r.closed()
    assert srv.stats()["disconnects"] == 0


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_client_that_never_reads_cannot_grow_the_servers_memory(app_server: Callable[..., AppServer]) -> None:
    srv = app_server()
    before = _rss_kib(srv.proc.pid)
    sock = srv.connect()
    sock.settimeout(5)
    one = b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n"
    block = one * 20_000  # ~680 KB of pipelined requests, ~2.6 MB of answers, none read
    sent = 0
    try:
        while sent < 400 << 20:
            sock.sendall(block)
            sent += len(block)
    except TimeoutError:
        pass  # the server stopped reading: it is waiting for us to read its answers
    # Had the server kept reading, 400 MB of requests (and their answers) would be in its memory.
    assert sent < 200 << 20, f"the server read {sent >> 20} MiB from a client that reads nothing"
    assert _rss_kib(srv.proc.pid) - before < 64 << 10
    sock.close()
    # And it serves others (the stats request is the one in flight), once it has seen the client go.
    assert srv.wait_for(lambda s: s["in_flight"] == 1)["in_flight"] == 1


def test_graceful_shutdown_finishes_requests_in_flight(app_server: Callable[..., AppServer]) -> None:
    srv = app_server()
    busy = srv.connect()
    idle = srv.connect()
    # Long enough that it is surely still running when the signal lands, however busy the machine.
    busy.sendall(b"GET /slow?ms=5000 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert srv.wait_for(lambda s: s["in_flight"] == 2)["in_flight"] == 2
    srv.proc.send_signal(signal.SIGTERM)
    got = Reader(busy).reply()
    assert got.status == 200 and got.json() == {"slept": 5000}
    assert got.headers["connection"] == "close"
    assert Reader(idle).closed()
    assert srv.proc.wait(DEADLINE_S) == 0
    assert json.loads(srv.marker.read_text())["in_flight"] == 0  # the lifespan's shutdown ran, last
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=5)

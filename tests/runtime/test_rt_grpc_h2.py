"""The gRPC port's own HTTP/2 (edge_runtime/transport/grpc_h2.py) from raw frames, as a misbehaving client writes them.

Standard clients are tested in test_rt_grpc.py (against this server and grpcio's). Here the frames are
written by hand (HPACK by the `hpack` library) so that what a well-behaved client never does can be sent:
garbage instead of the preface, a wrong content-type, a malformed grpc-timeout, a compressed message, too
many streams, calls reset as fast as they are opened, an answer larger than the client's window. Every
wait is for a frame the server must send, with a generous deadline.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

import hpack
import numpy as np
import pytest

from edge_runtime import oip

from .conftest import Models, Server, free_port

pytestmark = pytest.mark.runtime

DEADLINE_S = 60.0
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
INFER = oip.method("ModelInfer")


@dataclass
class Frame:
    kind: int
    flags: int
    sid: int
    payload: bytes


class Client:
    """One HTTP/2 connection written frame by frame."""

    def __init__(self, port: int, *, window: int = 1 << 30, preface: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(DEADLINE_S)
        self.buf = b""
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        if preface:
            self.sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            self.send(SETTINGS, 0, 0, struct.pack(">HI", 0x4, min(window, (1 << 31) - 1)))

    def send(self, kind: int, flags: int, sid: int, payload: bytes = b"") -> None:
        self.sock.sendall(self.frame(kind, flags, sid, payload))

    @staticmethod
    def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
        return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + sid.to_bytes(4, "big") + payload

    def headers(self, sid: int, path: str = INFER, extra: list[tuple[str, str]] | None = None,
                content_type: str = "application/grpc") -> bytes:
        block = self.enc.encode([(":method", "POST"), (":scheme", "http"), (":path", path),
                                 (":authority", "x"), ("content-type", content_type), ("te", "trailers"),
                                 *(extra or [])])
        return self.frame(HEADERS, 0x4, sid, block)

    @staticmethod
    def message(body: bytes, compressed: bool = False) -> bytes:
        return bytes((1 if compressed else 0,)) + len(body).to_bytes(4, "big") + body

    def read(self) -> Frame | None:
        """The next frame, or None once the server closed the connection."""
        while True:
            if len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + n:
                    f = Frame(self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF,
                              self.buf[9 : 9 + n])
                    self.buf = self.buf[9 + n :]
                    return f
            try:
                chunk = self.sock.recv(1 << 16)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buf += chunk

    def until(self, want: type | None = None, **match: int) -> Frame:
        """Read until a frame with these fields comes (decoding every header block, to keep HPACK in step)."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            f = self.read()
            assert f is not None, f"connection closed while waiting for {match}"
            if f.kind == HEADERS:
                f.payload = repr(self.dec.decode(f.payload)).encode()
            if all(getattr(f, k) == v for k, v in match.items()):
                return f
        raise AssertionError(f"no frame {match} within {DEADLINE_S}s")

    def goaway(self) -> tuple[int, bytes]:
        """Read until GOAWAY: its error code and text."""
        f = self.until(kind=GOAWAY)
        return int.from_bytes(f.payload[4:8], "big"), f.payload[8:]

    def close(self) -> None:
        self.sock.close()


def _infer_body(rows: int = 1) -> bytes:
    req = oip.ModelInferRequest(model_name="tabular")
    req.inputs.add(name="features", datatype="FP32", shape=[rows, 16])
    req.raw_input_contents.append(b"\0" * (64 * rows))
    return req.SerializeToString()


def test_a_call_answers_headers_data_trailers(grpc_tabular: tuple[Server, int]) -> None:
    c = Client(grpc_tabular[1])
    c.sock.sendall(c.headers(1) + c.frame(DATA, 0x1, 1, c.message(_infer_body())))
    head = c.until(kind=HEADERS, sid=1)
    assert b"':status', '200'" in head.payload and b"application/grpc" in head.payload
    data = c.until(kind=DATA, sid=1)
    resp = oip.ModelInferResponse.FromString(data.payload[5:])
    assert resp.model_name == "tabular" and list(resp.outputs[0].shape) == [1, 3]
    trailers = c.until(kind=HEADERS, sid=1)
    assert trailers.flags & 0x1 and b"'grpc-status', '0'" in trailers.payload
    c.send(PING, 0, 0, b"12345678")
    assert c.until(kind=PING).payload == b"12345678"
    c.close()


@pytest.mark.parametrize(("extra", "content_type", "compressed", "want"), [
    ([("grpc-timeout", "soon")], "application/grpc", False, b"'grpc-status', '3'"),  # INVALID_ARGUMENT
    ([("grpc-encoding", "gzip")], "application/grpc", True, b"'grpc-status', '12'"),  # UNIMPLEMENTED
    ([], "application/json", False, b"':status', '415'"),
])
def test_what_grpc_does_not_allow_is_answered_on_its_stream(
    grpc_tabular: tuple[Server, int], extra: list[tuple[str, str]], content_type: str, compressed: bool, want: bytes
) -> None:
    c = Client(grpc_tabular[1])
    c.sock.sendall(c.headers(1, extra=extra, content_type=content_type)
                   + c.frame(DATA, 0x1, 1, c.message(_infer_body(), compressed)))
    assert want in c.until(kind=HEADERS, sid=1).payload
    # The connection serves on.
    c.sock.sendall(c.headers(3) + c.frame(DATA, 0x1, 3, c.message(_infer_body())))
    c.until(kind=DATA, sid=3)
    c.close()


def test_unknown_method_and_oversized_message(grpc_tabular: tuple[Server, int]) -> None:
    c = Client(grpc_tabular[1])
    c.sock.sendall(c.headers(1, path="/inference.GRPCInferenceService/Nope") + c.frame(DATA, 0x1, 1, c.message(b"")))
    assert b"'grpc-status', '12'" in c.until(kind=HEADERS, sid=1).payload
    # 2 MiB declared against a 1 MiB limit: refused on the message's first bytes, the rest dropped.
    c.send(HEADERS, 0x4, 3, c.enc.encode([(":method", "POST"), (":scheme", "http"), (":path", INFER),
                                          (":authority", "x"), ("content-type", "application/grpc")]))
    c.send(DATA, 0, 3, b"\0" + (2 << 20).to_bytes(4, "big") + b"\0" * 1000)
    answer = c.until(kind=HEADERS, sid=3).payload
    assert b"'grpc-status', '8'" in answer and b"exceeds the limit" in answer  # RESOURCE_EXHAUSTED
    c.send(DATA, 0x1, 3, b"\0" * 1000)  # late DATA of the refused call: dropped, the connection stays
    c.sock.sendall(c.headers(5) + c.frame(DATA, 0x1, 5, c.message(_infer_body())))
    c.until(kind=DATA, sid=5)
    c.close()


def test_not_http2_is_a_goaway_and_a_close(grpc_tabular: tuple[Server, int]) -> None:
    c = Client(grpc_tabular[1], preface=False)
    c.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.goaway()[0] == 0x1  # PROTOCOL_ERROR
    assert c.read() is None
    c.close()


def test_streams_past_the_limit_are_refused(grpc_tabular: tuple[Server, int]) -> None:
    c = Client(grpc_tabular[1])
    # 300 calls opened and never finished: the first 256 are held, the rest REFUSED_STREAM.
    c.sock.sendall(b"".join(c.headers(1 + 2 * i) for i in range(300)))
    refused = c.until(kind=RST_STREAM)
    assert refused.sid == 1 + 2 * 256 and int.from_bytes(refused.payload, "big") == 0x7
    c.close()


def test_calls_reset_as_fast_as_they_open_end_the_connection(grpc_tabular: tuple[Server, int]) -> None:
    """The "rapid reset" abuse: each call is opened and reset before its message ends, so no stream limit
    ever binds."""
    c = Client(grpc_tabular[1])
    half = c.message(_infer_body())[:20]
    burst = b"".join(c.headers(1 + 2 * i) + c.frame(DATA, 0, 1 + 2 * i, half)
                     + c.frame(RST_STREAM, 0, 1 + 2 * i, (8).to_bytes(4, "big")) for i in range(1100))
    c.sock.sendall(burst)
    code, why = c.goaway()
    assert code == 0xB and b"reset" in why  # ENHANCE_YOUR_CALM
    c.close()


def test_an_answer_larger_than_the_clients_window_waits_for_it(grpc_tabular: tuple[Server, int]) -> None:
    c = Client(grpc_tabular[1], window=1000)
    c.sock.sendall(c.headers(1) + c.frame(DATA, 0x1, 1, c.message(_infer_body(rows=500))))  # 6 KB of output
    got = b""
    first = c.until(kind=DATA, sid=1)
    got += first.payload
    assert len(got) <= 1000
    c.send(WINDOW_UPDATE, 0, 1, (1 << 20).to_bytes(4, "big"))
    while len(got) < 5 or len(got) < 5 + int.from_bytes(got[1:5], "big"):
        got += c.until(kind=DATA, sid=1).payload
    resp = oip.ModelInferResponse.FromString(got[5:])
    assert list(resp.outputs[0].shape) == [500, 3]
    assert b"'grpc-status', '0'" in c.until(kind=HEADERS, sid=1).payload
    c.close()


def test_request_bytes_held_for_a_connection_are_bounded_by_its_window(grpc_tabular: tuple[Server, int]) -> None:
    """Calls whose messages never end: the server stops giving the connection window back once the bodies
    it holds reach its bound (64 MiB here), and gives it back as they are let go."""
    c = Client(grpc_tabular[1])
    granted = 65_535
    while True:  # the server's SETTINGS and its first WINDOW_UPDATE
        f = c.until()
        if f.kind == WINDOW_UPDATE and f.sid == 0:
            granted += int.from_bytes(f.payload, "big")
            break
    assert granted == 64 << 20
    piece = 1_000_000
    sent, sid = 0, 1
    while sent + piece <= granted:
        c.sock.sendall(c.headers(sid) + c.frame(DATA, 0, sid, b"\0" + (piece + 10).to_bytes(4, "big")
                                                 + b"\0" * (piece - 5)))
        sent, sid = sent + piece, sid + 2
    c.send(PING, 0, 0, b"bounded!")
    more = 0
    while (f := c.until()).kind != PING:
        if f.kind == WINDOW_UPDATE and f.sid == 0:
            more += int.from_bytes(f.payload, "big")
    assert sent + more <= 64 << 20, "window given back while every byte is still held"
    # Two calls end (their messages cut short: an error each), and their bytes are let go.
    c.send(DATA, 0x1, 1)
    c.send(DATA, 0x1, 3)
    assert b"'grpc-status', '13'" in c.until(kind=HEADERS, sid=1).payload
    assert c.until(kind=WINDOW_UPDATE, sid=0)
    c.close()


def test_a_message_in_many_small_frames_is_assembled_exactly(grpc_tabular: tuple[Server, int]) -> None:
    """256 KB in 16 KiB DATA frames (what nghttp2 sends): one buffer of the message's size, filled in place."""
    c = Client(grpc_tabular[1])
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4000, 16)).astype(np.float32)
    req = oip.ModelInferRequest(model_name="tabular")
    req.inputs.add(name="features", datatype="FP32", shape=[4000, 16])
    req.raw_input_contents.append(x.tobytes())
    msg = c.message(req.SerializeToString())
    frames = [c.frame(DATA, 0x1 if i + 16384 >= len(msg) else 0, 1, msg[i : i + 16384])
              for i in range(0, len(msg), 16384)]
    c.sock.sendall(c.headers(1) + b"".join(frames))
    got = b""
    while len(got) < 5 or len(got) < 5 + int.from_bytes(got[1:5], "big"):
        got += c.until(kind=DATA, sid=1).payload
    resp = oip.ModelInferResponse.FromString(got[5:])
    out = np.frombuffer(resp.raw_output_contents[0], "<f4").reshape(4000, 3)
    direct = Client(grpc_tabular[1])  # the same rows as one frame: the same answer
    direct.sock.sendall(direct.headers(1) + direct.frame(DATA, 0x1, 1, msg))
    ref = b""
    while len(ref) < 5 or len(ref) < 5 + int.from_bytes(ref[1:5], "big"):
        ref += direct.until(kind=DATA, sid=1).payload
    assert got == ref and out.shape == (4000, 3) and np.isfinite(out).all()
    c.close()
    direct.close()


def test_shutdown_says_goaway_to_connected_clients_then_closes(models: Models) -> None:
    gport = free_port()
    entry, digest = models.cached(models.tabular)
    srv = Server(["--model", str(entry), "--sha256", digest, "--name", "tabular", "--grpc-port", str(gport)]).start()
    try:
        c = Client(gport)
        c.sock.sendall(c.headers(1) + c.frame(DATA, 0x1, 1, c.message(_infer_body())))
        c.until(kind=DATA, sid=1)
        srv.stop()
        code, _ = c.goaway()
        assert code == 0  # NO_ERROR: a graceful end, the client may reconnect elsewhere
        assert c.read() is None
        c.close()
    finally:
        srv.stop(kill=True)


def test_a_call_refused_on_its_headers_alone_gets_no_reset_after_its_answer(grpc_tabular: tuple[Server, int]) -> None:
    """HEADERS with END_STREAM answered at once (415, UNIMPLEMENTED): the stream is then closed both ways, and
    RFC 9113 section 5.1 allows no RST_STREAM on it; a call whose request is still open gets RST_STREAM
    NO_ERROR instead, so that the client stops sending."""
    c = Client(grpc_tabular[1])
    block = c.headers(1, content_type="application/json")
    c.sock.sendall(block[:4] + bytes((block[4] | 0x1,)) + block[5:]  # END_STREAM on the HEADERS frame
                   + c.headers(3, path="/inference.GRPCInferenceService/Nope"))  # this request stays open
    c.send(PING, 0, 0, b"resets?!")
    answers, resets = {}, []
    while (f := c.until()).kind != PING:  # everything the server wrote before its PING answer
        if f.kind == HEADERS:
            answers[f.sid] = f.payload
        elif f.kind == RST_STREAM:
            resets.append((f.sid, int.from_bytes(f.payload, "big")))
    assert b"':status', '415'" in answers[1] and b"'grpc-status', '12'" in answers[3]
    assert resets == [(3, 0)]
    c.close()


def _answer(c: Client, sid: int) -> tuple[bytes, bytes, list[Frame]]:
    """Every frame until `sid`'s trailers: (its message, its trailers' text, all frames read meanwhile)."""
    seen: list[Frame] = []
    body = b""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        f = c.read()
        assert f is not None, "connection closed before the answer"
        seen.append(f)
        if f.sid != sid:
            continue
        if f.kind == DATA:
            body += f.payload
        elif f.kind == HEADERS:
            text = repr(c.dec.decode(f.payload)).encode()
            if f.flags & 0x1:  # trailers (or a trailers-only answer)
                return body[5:], text, seen
    raise AssertionError(f"no answer on stream {sid} within {DEADLINE_S}s")


def test_a_message_whose_padding_takes_it_past_the_stream_window_gets_the_window_it_needs(
    grpc_tabular: tuple[Server, int],
) -> None:
    """1,024,000 bytes of message in 4 KiB frames padded by 255 bytes each: 1.09 MB of window, more than the
    stream's 1 MiB. The client sends only what its window allows, so a missing update leaves the call waiting.
    (Padding is why the stream window is given back by what was received, never by what the message still
    needs: the client may pad its last frames past any such estimate.)"""
    c = Client(grpc_tabular[1])
    c.send(WINDOW_UPDATE, 0, 0, (1 << 30).to_bytes(4, "big"))  # room for the answer (192 KB)
    msg = c.message(_infer_body(16_000))
    window, pos = 1 << 20, 0
    c.sock.sendall(c.headers(1))
    while pos < len(msg):
        piece = msg[pos : pos + 4096]
        cost = 1 + len(piece) + 255
        while window < cost:
            f = c.read()
            assert f is not None, "connection closed while the client waited for window"
            if f.kind == WINDOW_UPDATE and f.sid == 1:
                window += int.from_bytes(f.payload, "big")
        end = 0x1 if pos + len(piece) >= len(msg) else 0
        c.send(DATA, 0x8 | end, 1, bytes((255,)) + piece + b"\0" * 255)
        window -= cost
        pos += len(piece)
    body, trailers, _ = _answer(c, 1)
    assert b"'grpc-status', '0'" in trailers
    assert list(oip.ModelInferResponse.FromString(body).outputs[0].shape) == [16_000, 3]
    c.close()


def _literal(name: bytes, value: bytes, prefix: int = 0x00) -> bytes:
    """An HPACK literal with a new name: 0x40 adds it to the table, 0x00 does not."""
    return bytes((prefix, len(name))) + name + bytes((len(value),)) + value


def test_a_header_block_decoded_once_is_decoded_again_after_the_table_changes(grpc_tabular: tuple[Server, int]) -> None:
    """Blocks that leave the HPACK table as it was are decoded once per connection; a block that refers to the
    table must mean what the table says now, not what it said when the block was first seen."""
    c = Client(grpc_tabular[1])
    live = oip.method("ServerLive").encode()
    fixed = bytes((0x83, 0x86, 0x01, 0x01)) + b"x"  # POST, http, :authority "x" (not indexed)
    fixed += _literal(b"content-type", b"application/grpc") + _literal(b"te", b"trailers")

    def call(sid: int, block: bytes, message: bytes) -> tuple[bytes, bytes]:
        c.sock.sendall(c.frame(HEADERS, 0x4, sid, block) + c.frame(DATA, 0x1, sid, c.message(message)))
        body, trailers, _ = _answer(c, sid)
        return body, trailers

    def path(value: bytes) -> bytes:  # :path (static name 4) with its value added to the table as entry 62
        return bytes((0x44, len(value))) + value

    refer = bytes((0xBE,)) + fixed  # ":path is table entry 62", and nothing added
    assert b"'grpc-status', '0'" in call(1, path(INFER.encode()) + fixed, _infer_body())[1]
    for sid in (3, 5):  # the same block twice: the second from what the first decoded to
        body, trailers = call(sid, refer, _infer_body())
        assert b"'grpc-status', '0'" in trailers and oip.ModelInferResponse.FromString(body).model_name == "tabular"
    # Entry 62 becomes ServerLive's path: the same bytes now call ServerLive (with an empty request).
    assert b"'grpc-status', '0'" in call(7, path(live) + fixed, b"")[1]
    body, trailers = call(9, refer, b"")
    assert b"'grpc-status', '0'" in trailers, trailers
    assert oip.ServerLiveResponse.FromString(body).live
    c.close()

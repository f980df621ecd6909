"""Pure pieces of the gRPC port's own HTTP/2 (edge_runtime/transport/grpc_h2.py)."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import hpack
import pytest

from edge_runtime import cli
from edge_runtime.transport.grpc_h2 import (
    _MAX_WINDOW,
    _RESPONSE_HEAD,
    GrpcH2Server,
    _hpack_int,
    _trailers,
    grpc_timeout,
)


def test_hpack_integers_as_rfc_7541_c1_writes_them() -> None:
    assert _hpack_int(10, 5) == b"\x0a"
    assert _hpack_int(1337, 5) == b"\x1f\x9a\x0a"
    assert _hpack_int(42, 8) == b"\x2a"


def test_answers_decode_with_any_hpack_decoder_state() -> None:
    """Literals without indexing: what the answers say does not depend on the client's dynamic table."""
    dec = hpack.Decoder()
    for _ in range(3):
        assert dec.decode(_RESPONSE_HEAD) == [(":status", "200"), ("content-type", "application/grpc")]
    block = _trailers(grpc.StatusCode.INVALID_ARGUMENT, "input 'x': 100% wrong\nnew line é")
    got = dict(dec.decode(block))
    assert got["grpc-status"] == "3"
    # gRPC's percent-encoding: printable ASCII but '%' as is; the client decodes it back.
    assert got["grpc-message"] == "input 'x': 100%25 wrong%0Anew line %C3%A9"


@pytest.mark.parametrize(("value", "seconds"), [
    ("1S", 1.0), ("250m", 0.25), ("3M", 180.0), ("2H", 7200.0), ("100u", 1e-4), ("99999999n", 0.099999999),
    ("S", None), ("1s", None), ("123456789S", None), ("-1S", None), ("1.5S", None), ("", None),
])
def test_grpc_timeout_header(value: str, seconds: float | None) -> None:
    got = grpc_timeout(value)
    assert got == pytest.approx(seconds) if seconds is not None else got is None


def test_the_own_http2_is_the_default_and_grpcio_a_choice() -> None:
    base = ["serve", "--model", "m.onnx", "--sha256", "0" * 64, "--name", "m"]
    assert cli.build_parser().parse_args(base).grpc_server == "native"
    assert cli.build_parser().parse_args([*base, "--grpc-server", "grpcio"]).grpc_server == "grpcio"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([*base, "--grpc-server", "h2"])


def test_the_bytes_held_per_connection_fit_an_http2_window() -> None:
    """Two of the largest messages, at least 64 MiB, and never past 2^31-1: the window is what enforces it."""
    service = SimpleNamespace(methods=dict)
    assert GrpcH2Server(service, "x", 0, max_message_bytes=1 << 20).max_buffered == 64 << 20  # type: ignore[arg-type]
    assert GrpcH2Server(service, "x", 0, max_message_bytes=100 << 20).max_buffered == 2 * ((100 << 20) + 5)  # type: ignore[arg-type]
    assert GrpcH2Server(service, "x", 0, max_message_bytes=4 << 30).max_buffered == _MAX_WINDOW  # type: ignore[arg-type]


class _Transport:
    def __init__(self) -> None:
        self.sent = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sent += data

    def close(self) -> None:
        self.closed = True

    abort = close

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 1234) if name == "peername" else None

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + sid.to_bytes(4, "big") + payload


def _read(conn: object, data: bytes) -> object:
    """One read as a BufferedProtocol transport does it (get_buffer, then buffer_updated); the buffer used."""
    buf = conn.get_buffer(-1)  # type: ignore[attr-defined]
    assert len(buf) >= len(data), "a read larger than the buffer offered"
    buf[: len(data)] = data
    conn.buffer_updated(len(data))  # type: ignore[attr-defined]
    return buf.obj


def _frames_in(sent: bytes | bytearray) -> list[tuple[int, int, int, bytes]]:
    out, pos = [], 0
    while pos + 9 <= len(sent):
        n = int.from_bytes(sent[pos : pos + 3], "big")
        out.append((sent[pos + 3], sent[pos + 4], int.from_bytes(sent[pos + 5 : pos + 9], "big"),
                    bytes(sent[pos + 9 : pos + 9 + n])))
        pos += 9 + n
    return out


def test_a_large_data_frame_is_read_straight_into_the_message_buffer() -> None:
    """A DATA frame that goes on past a read is taken as it comes: once the message's prefix gave its size, the
    rest of the frame is read by the kernel into the message's own buffer, which is what the call gets. Cut
    anywhere (in the frame's header, in the prefix), the message is the bytes sent; a frame of a stream that is
    gone is read into the read buffer and dropped, and the connection serves on."""
    import asyncio
    import os

    got: list[memoryview] = []

    async def handler(request: memoryview, context: object) -> bytes:
        got.append(request)
        return bytes(request[:4])

    service = SimpleNamespace(methods=lambda: {"ModelInfer": (handler, bytes)})
    enc = hpack.Encoder()

    def headers(sid: int) -> bytes:
        block = enc.encode([(":method", "POST"), (":scheme", "http"), (":path", "/inference.GRPCInferenceService/"
                            "ModelInfer"), (":authority", "x"), ("content-type", "application/grpc")])
        return _frame(1, 0x4, sid, block)

    async def main() -> None:
        from edge_runtime.transport.grpc_h2 import _Connection

        srv = GrpcH2Server(service, "127.0.0.1", 0, max_message_bytes=1 << 20)  # type: ignore[arg-type]
        t = _Transport()
        conn = _Connection(srv)
        conn.connection_made(t)  # type: ignore[arg-type]
        msg = os.urandom(700_000)
        wire = b"\0" + len(msg).to_bytes(4, "big") + msg
        data = _frame(0, 0x1, 1, wire)  # the whole message in one 700 KB frame
        assert _read(conn, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + headers(1) + data[:3]) is srv.read_view.obj
        # The frame's header completed, and the message's prefix cut: the read buffer until the size is known.
        assert _read(conn, data[3:12]) is srv.read_view.obj
        targets = [_read(conn, data[i : i + 200_000]) for i in range(12, len(data), 200_000)]
        await asyncio.sleep(0)
        assert len(got) == 1 and bytes(got[0]) == msg
        # The read that completes the prefix goes through the read buffer; every one after it, not.
        assert targets[0] is srv.read_view.obj
        assert all(b is got[0].obj for b in targets[1:]), "read into the message's own buffer"

        # A second call on the connection: header and prefix whole in the first read.
        msg2 = os.urandom(300_000)
        data2 = _frame(0, 0x1, 3, b"\0" + len(msg2).to_bytes(4, "big") + msg2)
        assert _read(conn, headers(3) + data2[:1000]) is srv.read_view.obj
        targets = [_read(conn, data2[i : i + 100_000]) for i in range(1000, len(data2), 100_000)]
        await asyncio.sleep(0)
        assert len(got) == 2 and bytes(got[1]) == msg2 and all(b is got[1].obj for b in targets)

        # DATA of a stream already done: read into the read buffer, dropped, RST_STREAM STREAM_CLOSED.
        late = _frame(0, 0x1, 3, os.urandom(400_000))
        assert all(_read(conn, late[i : i + 150_000]) is srv.read_view.obj for i in range(0, len(late), 150_000))
        kinds = [(k, sid, p) for k, _, sid, p in _frames_in(t.sent)]
        assert (3, 3, (5).to_bytes(4, "big")) in kinds  # RST_STREAM(3) STREAM_CLOSED
        # ... and the connection serves on: a third call, in frames of 16 KiB, each whole.
        msg3 = os.urandom(100_000)
        wire3 = b"\0" + len(msg3).to_bytes(4, "big") + msg3
        frames3 = b"".join(_frame(0, 0x1 if i + 16384 >= len(wire3) else 0, 5, wire3[i : i + 16384])
                           for i in range(0, len(wire3), 16384))
        _read(conn, headers(5) + frames3)
        await asyncio.sleep(0)
        assert len(got) == 3 and bytes(got[2]) == msg3 and not t.closed
        answers = [p for k, f, sid, p in _frames_in(t.sent) if k == 0]
        assert answers == [b"\0\0\0\0\x04" + m[:4] for m in (msg, msg2, msg3)]
        assert srv.read_view.obj is not got[0].obj and conn.held == 0

        # Two messages in one call's first frame: refused, not run, nothing left held.
        two = b"\0\0\0\0\x03abc" * 2
        _read(conn, headers(7) + _frame(0, 0x1, 7, two))
        await asyncio.sleep(0)
        refused = [p for k, f, sid, p in _frames_in(t.sent) if k == 1 and sid == 7][-1]
        assert len(got) == 3 and dict(hpack.Decoder().decode(refused))["grpc-status"] == "13"
        assert conn.held == 0 and not t.closed

    asyncio.run(main())

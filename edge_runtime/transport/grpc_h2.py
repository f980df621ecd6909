"""gRPC's port on the runtime's own HTTP/2: frames read and written here, HPACK by python-hyper's `hpack`.

Why not grpcio's server: on a 2-core device it takes 0.40 ms to answer a call
that does no work at all (docs/benchmarks.md, "gRPC's floor"), above the whole
budget of a small model's call; frames handled here take 0.19 ms and serve 2.5x
the calls at 32 in flight. The service itself (grpc_server.GrpcService: decoding,
the dataplane, status codes) is the same for both; `serve --grpc-server
grpcio` keeps grpcio's.

Only what unary gRPC needs of HTTP/2 (RFC 9113) is spoken, and it is spoken
strictly:
- the client preface, SETTINGS both ways (ours: at most `max_concurrent_streams`
  streams, 1 MiB frames, a 1 MiB stream window), PING answered, GOAWAY both
  ways, PRIORITY ignored, PUSH_PROMISE refused, unknown frame types skipped;
- HEADERS with CONTINUATION, padding and priority; the header block is
  bounded (`max_header_bytes`) before it is decoded; HPACK errors end the
  connection (its table would be out of step);
- flow control both ways: the connection's receive window is given back only
  while the bodies held for this connection stay under `max_buffered_bytes`,
  so a client cannot grow the server's memory past it whatever it sends; an
  answer larger than the client's windows waits for its WINDOW_UPDATEs;
- streams: odd, increasing ids; past the limit REFUSED_STREAM; a reset stream's
  call is cancelled; a client resetting more than `max_resets` calls before
  their answer in 10 s gets GOAWAY ENHANCE_YOUR_CALM (the "rapid reset" abuse);
- a call runs as soon as its message is whole, in the same turn of the loop; a
  small model's call is answered before the next frame is read, without a task;
- a client that stops reading stops being read (no unbounded answers queued);
  idle connections close after `idle_timeout_s`.

And of gRPC: `application/grpc` only (else HTTP 415), one uncompressed message
per call (a compressed one: UNIMPLEMENTED), a message over `max_message_bytes`:
RESOURCE_EXHAUSTED before the rest of it is kept, `grpc-timeout` honoured
(DEADLINE_EXCEEDED), an unknown method UNIMPLEMENTED, errors as trailers-only
answers with `grpc-message` percent-encoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import quote

import grpc
import hpack

from edge_runtime import oip
from edge_runtime.transport import eager
from edge_runtime.transport.busy_poll import BusyPoll
from edge_runtime.transport.grpc_server import GrpcService, Handler

log = logging.getLogger("edge_runtime.grpc")

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types and flags (RFC 9113 section 6).
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = (
    range(10)
)
_END_STREAM = 0x1
_ACK = 0x1
_END_HEADERS = 0x4
_PADDED = 0x8
_PRIORITY_FLAG = 0x20

# Error codes (section 7).
_NO_ERROR, _PROTOCOL_ERROR, _FLOW_CONTROL_ERROR = 0x0, 0x1, 0x3
_STREAM_CLOSED, _FRAME_SIZE_ERROR, _REFUSED_STREAM = 0x5, 0x6, 0x7
_COMPRESSION_ERROR, _ENHANCE_YOUR_CALM = 0x9, 0xB

_DEFAULT_FRAME = 16_384  # what a peer accepts until its SETTINGS say otherwise
_OUR_FRAME = 1 << 20  # what we accept: a large tensor comes in 1 MiB frames, not 16 KiB ones
_STREAM_WINDOW = 1 << 20
_READ_BUFFER = 256 << 10  # what one read takes at most (a cut DATA frame's rest may go straight to its message)
_MAX_WINDOW = (1 << 31) - 1
_RESET_WINDOW_S = 10.0

_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def _frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + sid.to_bytes(4, "big") + payload


def _hpack_int(n: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 section 5.1) with `first` in the bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if n < limit:
        return bytes((first | n,))
    out = bytearray((first | limit,))
    n -= limit
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """A header as an HPACK literal without indexing, new name, no Huffman: valid whatever the peer's table."""
    return b"\x00" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value


_STATUS_200 = b"\x88"  # ":status: 200", static table entry 8
_GRPC_TYPE = _literal(b"content-type", b"application/grpc")
_RESPONSE_HEAD = _STATUS_200 + _GRPC_TYPE


def _trailers(code: grpc.StatusCode, message: str) -> bytes:
    block = _literal(b"grpc-status", str(code.value[0]).encode())
    if message:
        # The gRPC spec's percent-encoding: printable ASCII but '%' as is, the rest as UTF-8 octets.
        text = quote(message[:4096], safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")
        block += _literal(b"grpc-message", text.encode("ascii"))
    return block


_TRAILER_OK = _trailers(grpc.StatusCode.OK, "")


def grpc_timeout(value: str) -> float | None:
    """`grpc-timeout` (at most 8 digits and a unit) in seconds; None when it is malformed."""
    if not 2 <= len(value) <= 9 or not value[:-1].isdigit() or value[-1] not in _TIMEOUT_UNITS:
        return None
    return int(value[:-1]) * _TIMEOUT_UNITS[value[-1]]


class _Abort(grpc.aio.AbortError):  # type: ignore[misc]
    """A call ended with a status (what grpc.aio's context.abort raises; GrpcService re-raises it as is)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Context:
    """What GrpcService uses of grpc.aio.ServicerContext."""

    __slots__ = ("_metadata", "_peer")

    def __init__(self, metadata: tuple[tuple[str, str], ...], peer: str) -> None:
        self._metadata = metadata
        self._peer = peer

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise _Abort(code, details)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer


class _Stream:
    __slots__ = (
        "body",
        "counted",
        "discard",
        "done",
        "ended",
        "got",
        "id",
        "metadata",
        "method",
        "need",
        "out",
        "ready",
        "recv_window",
        "send_window",
        "sized",
        "task",
        "timeout",
    )

    def __init__(self, sid: int, send_window: int) -> None:
        self.id = sid
        self.method: tuple[Handler, Callable[[Any], bytes]] | None = None
        self.metadata: tuple[tuple[str, str], ...] = ()
        self.timeout: float | None = None
        self.body = bytearray()
        self.got = 0  # message bytes received (the 5-byte prefix included)
        self.need = -1  # the whole message's bytes, once its prefix came
        self.sized = False  # `body` was made the message's size at once (else it grows piece by piece)
        self.counted = 0  # bytes of this stream counted in the connection's `held`
        self.discard = False  # answered already (an error): the rest of its DATA is dropped
        self.ended = False  # the client sent END_STREAM
        self.recv_window = _STREAM_WINDOW
        self.send_window = send_window
        self.out = bytearray()  # an answer's DATA waiting for window, then its trailers
        self.ready = False  # the answer is in `out`
        self.task: asyncio.Task[None] | None = None
        self.done = False  # the answer went out whole (trailers included)


class _Partial:
    __slots__ = ("flags", "left", "sid", "stream", "view")

    def __init__(self, stream: _Stream | None, left: int, flags: int, sid: int) -> None:
        self.stream = stream
        self.left = left
        self.flags = flags
        self.sid = sid
        self.view: memoryview | None = None  # of the stream's sized buffer, while the kernel reads into it


class _ConnectionError(Exception):
    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


def _length(head: bytes | bytearray | memoryview) -> int:
    """A frame's payload length, from its header's first 3 bytes; more than we accept ends the connection."""
    length = int.from_bytes(head[:3], "big")
    if length > _OUR_FRAME:
        raise _ConnectionError(_FRAME_SIZE_ERROR, f"a frame of {length} bytes (at most {_OUR_FRAME})")
    return length


class GrpcH2Server:
    """gRPC (unary calls of `service`) on host:port over the HTTP/2 framed here; see the module's text."""

    def __init__(
        self,
        service: GrpcService,
        host: str,
        port: int,
        *,
        max_message_bytes: int,
        max_concurrent_streams: int = 256,
        max_connections: int = 512,
        max_header_bytes: int = 16 << 10,
        max_buffered_bytes: int | None = None,
        max_resets: int = 1000,
        idle_timeout_s: float = 300.0,
        busy_poll: BusyPoll | None = None,
    ) -> None:
        self.busy_poll = busy_poll or BusyPoll(0)
        self.methods = {oip.method(name): m for name, m in service.methods().items()}
        self.host = host
        self.port = port
        self.max_message = max_message_bytes
        self.max_streams = max_concurrent_streams
        self.max_connections = max_connections
        self.max_header_bytes = max_header_bytes
        # Request bodies held per connection: room for two of the largest messages, and never less than 64 MiB;
        # never more than HTTP/2's largest window (2^31-1), which is what bounds it on the wire.
        self.max_buffered = min(max_buffered_bytes or max(2 * (max_message_bytes + 5), 64 << 20), _MAX_WINDOW)
        self.max_resets = max_resets
        # Connection window goes back in steps of an eighth of the bound (by default one WINDOW_UPDATE, a write,
        # per 16 MiB of requests, not per MiB), or of as little as `window_min` once the client has less
        # than a step left: calls waiting on window must not wait for a whole step to be let go.
        mb = self.max_buffered
        self.window_min = min(1 << 20, mb // 4)
        self.window_step = max(self.window_min, mb // 8)
        self.idle_timeout = idle_timeout_s
        self.connections: set[_Connection] = set()
        # Every connection's reads land here: each read is handled, and what is kept of it copied, before
        # the next (no bytes object per read).
        self.read_view = memoryview(bytearray(_READ_BUFFER))
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Listen; returns the bound port (for port 0: the one the system chose)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self.host, self.port, reuse_port=False)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._sweeper = loop.create_task(self._sweep())
        return self.port

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.idle_timeout / 4))
            now = time.monotonic()
            for conn in list(self.connections):
                if not conn.streams and now - conn.last_active > self.idle_timeout:
                    conn.goaway(_NO_ERROR, "idle")

    async def stop(self, grace_s: float) -> None:
        """Stop accepting; GOAWAY to every client; calls in flight get `grace_s`, then connections close."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            conn.goaway(_NO_ERROR, "shutting down", close=False)
        deadline = time.monotonic() + grace_s
        while any(c.streams for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)


class _Connection(asyncio.BufferedProtocol):
    def __init__(self, server: GrpcH2Server) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()  # made by the server's create_server, in its loop
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.buf = bytearray()
        self.preface = False
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = server.max_header_bytes
        # A block that left the HPACK table as it was (indexed fields, literals not indexed: a client's
        # repeated calls) means the same headers until a block changes the table: decoded once. Whether it
        # changed is seen on the table itself (an entry added is a new first entry; a size update).
        self.decoded: dict[bytes, list[tuple[bytes, bytes]]] = {}
        self.streams: dict[int, _Stream] = {}
        self.last_id = 0
        self.block: bytearray | None = None  # a header block awaiting CONTINUATION
        self.block_sid = 0
        # A DATA frame cut by the end of a read: its stream (None: dropped), bytes still to come, flags, id.
        # They are taken as they come, not kept in `buf` until the frame is whole; where the stream's
        # message buffer is sized, the kernel reads them straight into it (get_buffer).
        self.partial: _Partial | None = None
        self.block_end_stream = False
        self.send_window = 65_535
        self.initial_send_window = 65_535
        self.peer_frame = _DEFAULT_FRAME
        self.recv_credit = 65_535  # what the client may still send on the connection
        self.held = 0  # request bytes held for calls not yet answered
        self.resets: deque[float] = deque()
        self.reset_ids: set[int] = set()  # streams we ended early: their late DATA is dropped quietly
        self.going_away = False
        self.closed = False
        self.last_active = time.monotonic()

    # --- transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        self.transport = transport
        if len(self.server.connections) >= self.server.max_connections:
            log.warning("gRPC connection refused: the connection limit is reached")
            self.closed = True
            transport.abort()
            return
        self.server.connections.add(self)
        name = transport.get_extra_info("peername")
        if isinstance(name, tuple) and len(name) >= 2:
            self.peer = f"ipv6:[{name[0]}]:{name[1]}" if ":" in str(name[0]) else f"ipv4:{name[0]}:{name[1]}"
        settings = b"".join(
            k.to_bytes(2, "big") + v.to_bytes(4, "big")
            for k, v in ((0x2, 0), (0x3, self.server.max_streams), (0x4, _STREAM_WINDOW), (0x5, _OUR_FRAME),
                         (0x6, self.server.max_header_bytes))
        )
        grant = self.server.max_buffered - 65_535
        transport.write(_frame(_SETTINGS, 0, 0, settings) + _frame(_WINDOW_UPDATE, 0, 0, grant.to_bytes(4, "big")))
        self.recv_credit += grant

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for s in list(self.streams.values()):
            if s.task is not None:
                s.task.cancel()
        self.streams.clear()

    def pause_writing(self) -> None:
        # A client that does not read its answers is not read either: nothing more queues up for it.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def goaway(self, code: int, why: str, close: bool = True) -> None:
        if self.closed:
            return
        self.going_away = True
        self.write(_frame(_GOAWAY, 0, 0, self.last_id.to_bytes(4, "big") + code.to_bytes(4, "big")
                          + why.encode()[:200]))
        if close or not self.streams:
            self.close()

    # --- reading

    def get_buffer(self, sizehint: int) -> memoryview:
        p = self.partial
        if p is not None:
            s = p.stream
            if s is not None and s.sized and not s.discard and s.got + p.left <= s.need:
                if p.view is None:
                    p.view = memoryview(s.body)
                return p.view[s.got : s.got + p.left]
            if p.view is not None:
                p.view.release()
                p.view = None
        return self.server.read_view

    def buffer_updated(self, nbytes: int) -> None:
        p = self.partial
        if p is not None and p.view is not None:  # read into the stream's own buffer
            assert p.stream is not None
            self.last_active = time.monotonic()
            p.stream.got += nbytes
            p.left -= nbytes
            if p.left == 0:
                self._partial_done(p)
            return
        self.data_received(self.server.read_view[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        """Bytes read: into the server's read buffer (buffer_updated), or a transport's own. Whole frames are
        handled as views of them. A DATA frame cut by the end of a read is taken as it comes (`partial`); any
        other cut frame is copied into `buf`, and the next read completes it from its first bytes (the rest of
        that read is not copied with it)."""
        if self.closed:  # nothing more is read once the connection is going (and `buf` may hold whole frames)
            return
        self.last_active = time.monotonic()
        view = memoryview(data)
        try:
            if not self.preface:
                self.buf += view
                if len(self.buf) < len(_PREFACE):
                    if not _PREFACE.startswith(bytes(self.buf)):
                        raise _ConnectionError(_PROTOCOL_ERROR, "not an HTTP/2 client preface")
                    return
                if self.buf[: len(_PREFACE)] != _PREFACE:
                    raise _ConnectionError(_PROTOCOL_ERROR, "not an HTTP/2 client preface")
                self.preface = True
                view = memoryview(bytes(self.buf[len(_PREFACE) :]))
                self.buf = bytearray()
            if self.partial is not None:
                view = self._feed_partial(view)
            if self.buf:
                view = self._complete(view)
            used = self._frames(view)
            if used < len(view) and not self.closed:
                self.buf += view[used:]
        except _ConnectionError as e:
            log.info("gRPC connection error", extra={"peer": self.peer, "reason": str(e)})
            self.goaway(e.code, str(e))

    def _complete(self, view: memoryview) -> memoryview:
        """Finish the frame begun in `buf` from the first bytes of `view` (and handle it once whole); returns
        the rest of `view`."""
        buf = self.buf
        if len(buf) < 9:
            take = 9 - len(buf)
            buf += view[:take]
            view = view[take:]
            if len(buf) < 9:
                return view
        length = _length(buf)
        if len(buf) == 9 and length > len(view) and self._begin_partial(buf, length, view):
            self.buf = bytearray()
            return view[len(view) :]  # all of it taken by the frame begun
        take = 9 + length - len(buf)
        buf += view[:take]
        view = view[take:]
        if len(buf) == 9 + length:
            self.buf = bytearray()
            with memoryview(buf) as whole:
                self._frames(whole)
        return view

    def _frames(self, view: memoryview) -> int:
        """Handle the whole frames at the start of `view`; returns how many bytes they took. A payload is
        handed on as a view of `view`: what keeps its bytes copies them."""
        pos, end = 0, len(view)
        while end - pos >= 9 and not self.closed:
            length = _length(view[pos : pos + 3])
            if end - pos - 9 < length:
                if self._begin_partial(view[pos : pos + 9], length, view[pos + 9 :]):
                    return end
                break
            kind, flags = view[pos + 3], view[pos + 4]
            sid = int.from_bytes(view[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
            self._frame(kind, flags, sid, view[pos + 9 : pos + 9 + length])
            pos += 9 + length
        return pos

    def _frame(self, kind: int, flags: int, sid: int, payload: memoryview) -> None:
        if self.block is not None and (kind != _CONTINUATION or sid != self.block_sid):
            raise _ConnectionError(_PROTOCOL_ERROR, "a header block was interrupted")
        if kind == _DATA:
            self._data(flags, sid, payload)
        elif kind == _HEADERS:
            self._headers(flags, sid, payload)
        elif kind == _CONTINUATION:
            if self.block is None:
                raise _ConnectionError(_PROTOCOL_ERROR, "CONTINUATION without HEADERS")
            self._more_block(payload, flags)
        elif kind == _SETTINGS:
            self._settings(flags, sid, payload)
        elif kind == _WINDOW_UPDATE:
            self._window_update(sid, payload)
        elif kind == _PING:
            if sid != 0 or len(payload) != 8:
                raise _ConnectionError(_PROTOCOL_ERROR, "a malformed PING")
            if not flags & _ACK:
                self.write(_frame(_PING, _ACK, 0, bytes(payload)))
        elif kind == _RST_STREAM:
            self._reset(sid, payload)
        elif kind == _GOAWAY:
            self.going_away = True
            if not self.streams:
                self.close()
        elif kind == _PUSH_PROMISE:
            raise _ConnectionError(_PROTOCOL_ERROR, "a client may not push")
        elif kind == _PRIORITY and sid == 0:
            raise _ConnectionError(_PROTOCOL_ERROR, "PRIORITY on stream 0")
        # PRIORITY and unknown frame types are ignored (section 5.5).

    def _settings(self, flags: int, sid: int, payload: memoryview) -> None:
        if sid != 0 or len(payload) % 6:
            raise _ConnectionError(_PROTOCOL_ERROR, "a malformed SETTINGS frame")
        if flags & _ACK:
            return
        for i in range(0, len(payload), 6):
            key, value = int.from_bytes(payload[i : i + 2], "big"), int.from_bytes(payload[i + 2 : i + 6], "big")
            if key == 0x4:
                if value > _MAX_WINDOW:
                    raise _ConnectionError(_FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")
                delta = value - self.initial_send_window
                self.initial_send_window = value
                for s in self.streams.values():
                    s.send_window += delta
            elif key == 0x5:
                if not _DEFAULT_FRAME <= value <= 16_777_215:
                    raise _ConnectionError(_PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self.peer_frame = value
            # Header table size: our answers use no dynamic table, so any size fits. Others don't concern us.
        self.write(_frame(_SETTINGS, _ACK, 0))
        self._flush_all()

    def _window_update(self, sid: int, payload: memoryview) -> None:
        if len(payload) != 4:
            raise _ConnectionError(_FRAME_SIZE_ERROR, "a WINDOW_UPDATE is 4 bytes")
        inc = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if sid == 0:
            if inc == 0:
                raise _ConnectionError(_PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
            self.send_window += inc
            if self.send_window > _MAX_WINDOW:
                raise _ConnectionError(_FLOW_CONTROL_ERROR, "the connection's window passed 2^31-1")
            self._flush_all()
            return
        s = self.streams.get(sid)
        if s is None:
            return  # a stream already answered and gone
        s.send_window += inc
        if inc == 0 or s.send_window > _MAX_WINDOW:
            self._finish(s, reset=_PROTOCOL_ERROR if inc == 0 else _FLOW_CONTROL_ERROR)
            return
        self._flush(s)

    def _reset(self, sid: int, payload: memoryview) -> None:
        if sid == 0 or len(payload) != 4:
            raise _ConnectionError(_PROTOCOL_ERROR, "a malformed RST_STREAM")
        s = self.streams.get(sid)
        if s is None:
            if sid > self.last_id:
                raise _ConnectionError(_PROTOCOL_ERROR, "RST_STREAM on an idle stream")
            return
        # A call reset before it was answered (its message still coming, or its work running): opening and
        # resetting calls at once is the "rapid reset" abuse, which no stream limit ever binds.
        now = time.monotonic()
        resets = self.resets
        while resets and now - resets[0] >= _RESET_WINDOW_S:
            resets.popleft()
        resets.append(now)
        self._finish(s, reset=None)
        if len(resets) > self.server.max_resets:
            raise _ConnectionError(_ENHANCE_YOUR_CALM, "too many calls reset before their answer")

    def _headers(self, flags: int, sid: int, payload: memoryview) -> None:
        if sid == 0:
            raise _ConnectionError(_PROTOCOL_ERROR, "HEADERS on stream 0")
        body = payload
        if flags & _PADDED:
            if not body:
                raise _ConnectionError(_PROTOCOL_ERROR, "a padded HEADERS frame without its pad length")
            pad = body[0]
            body = body[1:]
            if pad > len(body):
                raise _ConnectionError(_PROTOCOL_ERROR, "padding longer than the frame")
            body = body[: len(body) - pad]
        if flags & _PRIORITY_FLAG:
            if len(body) < 5:
                raise _ConnectionError(_PROTOCOL_ERROR, "a HEADERS frame too short for its priority")
            body = body[5:]
        self.block = bytearray(body)
        self.block_sid = sid
        self.block_end_stream = bool(flags & _END_STREAM)
        self._more_block(b"", flags)

    def _more_block(self, payload: bytes | memoryview, flags: int) -> None:
        assert self.block is not None
        self.block += payload
        if len(self.block) > 2 * self.server.max_header_bytes:
            raise _ConnectionError(_ENHANCE_YOUR_CALM, "a header block over the limit")
        if not flags & _END_HEADERS:
            return
        block, self.block = bytes(self.block), None
        headers = self.decoded.get(block)
        if headers is not None:
            self._open(self.block_sid, headers, self.block_end_stream)
            return
        table = self.decoder.header_table
        entries = table.dynamic_entries
        before = (len(entries), entries[0] if entries else None, table.maxsize)
        try:
            headers = [(bytes(k), bytes(v)) for k, v in self.decoder.decode(block, raw=True)]
        except hpack.OversizedHeaderListError as e:
            # hpack stops mid-block: the table may be out of step with the client's, so the connection goes.
            too_big = f"request headers over {self.server.max_header_bytes} bytes"
            raise _ConnectionError(_ENHANCE_YOUR_CALM, too_big) from e
        except hpack.HPACKError as e:
            raise _ConnectionError(_COMPRESSION_ERROR, f"a header block that does not decode: {e}") from e
        first = entries[0] if entries else None
        if len(entries) != before[0] or first is not before[1] or table.maxsize != before[2]:
            self.decoded.clear()  # the table changed: a block decoded before may mean other headers now
        elif len(block) <= 1024 and len(self.decoded) < 16:  # bounded: a few small blocks per connection
            self.decoded[block] = headers
        self._open(self.block_sid, headers, self.block_end_stream)

    def _open(self, sid: int, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        known = self.streams.get(sid)
        if known is not None:  # trailers from the client: only their END_STREAM matters
            if not end_stream or known.ended:
                raise _ConnectionError(_PROTOCOL_ERROR, "HEADERS in the middle of a request")
            self._ended(known)
            return
        if sid % 2 == 0 or sid <= self.last_id:
            raise _ConnectionError(_PROTOCOL_ERROR, f"stream {sid} was not a new client stream")
        self.last_id = sid
        if self.going_away or len(self.streams) >= self.server.max_streams:
            self.write(_frame(_RST_STREAM, 0, sid, _REFUSED_STREAM.to_bytes(4, "big")))
            return
        s = _Stream(sid, self.initial_send_window)
        s.ended = end_stream  # known before an answer from _start: a stream closed both ways takes no RST_STREAM
        self.streams[sid] = s
        self._start(s, headers)
        if end_stream:
            self._ended(s)

    def _start(self, s: _Stream, headers: list[tuple[bytes, bytes]]) -> None:
        path = method = ctype = b""
        metadata: list[tuple[str, str]] = []
        for name, value in headers:
            if name == b":path":
                path = value
            elif name == b":method":
                method = value
            elif name == b"content-type":
                ctype = value
            elif name == b"grpc-timeout":
                s.timeout = grpc_timeout(value.decode("latin-1"))
                if s.timeout is None:
                    self._answer_error(s, grpc.StatusCode.INVALID_ARGUMENT, "malformed grpc-timeout header")
                    return
            elif not name.startswith((b":", b"grpc-")):  # gRPC's own headers are not the call's metadata
                metadata.append((name.decode("latin-1"), value.decode("latin-1")))
        if method != b"POST" or not (ctype == b"application/grpc" or ctype.startswith((b"application/grpc+",
                                                                                       b"application/grpc;"))):
            # Not gRPC: an HTTP answer (gRPC's HTTP/2 mapping asks for 415 on a wrong content-type).
            status = b"415" if method == b"POST" else b"405"
            self.write(_frame(_HEADERS, _END_HEADERS | _END_STREAM, s.id, _literal(b":status", status)))
            s.discard = s.done = True
            self._finish(s, reset=None if s.ended else _NO_ERROR)
            return
        target = self.server.methods.get(path.decode("latin-1"))
        if target is None:
            self._answer_error(s, grpc.StatusCode.UNIMPLEMENTED, f"unknown method {path[:200]!r}")
            return
        s.method = target
        s.metadata = tuple(metadata)

    def _begin_partial(self, head: bytes | bytearray | memoryview, length: int, have: memoryview) -> bool:
        """A frame whose header is in `head` and whose payload begins with `have` but goes on past this read:
        if it is unpadded DATA, it is taken as it comes (True); anything else waits in `buf` until whole."""
        if head[3] != _DATA or head[4] & _PADDED:
            return False
        if self.block is not None:
            raise _ConnectionError(_PROTOCOL_ERROR, "a header block was interrupted")
        flags, sid = head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        s = self._data_begin(sid, length)
        self.partial = _Partial(s, length, flags, sid)
        self._feed_partial(have)
        return True

    def _feed_partial(self, view: memoryview) -> memoryview:
        """The first bytes of `view` that belong to the frame in `partial`; returns the rest."""
        p = self.partial
        assert p is not None
        n = min(p.left, len(view))
        s = p.stream
        if s is not None and not s.discard and n:
            self._take(s, view[:n])
        p.left -= n
        if p.left == 0:
            self._partial_done(p)
        return view[n:]

    def _partial_done(self, p: _Partial) -> None:
        self.partial = None
        if p.view is not None:
            p.view.release()
        if p.stream is not None and self.streams.get(p.sid) is p.stream:
            self._data_end(p.stream, p.flags)
        else:  # dropped, or its stream ended while the frame came (the connection's window still goes back)
            self._replenish()

    def _data(self, flags: int, sid: int, payload: memoryview) -> None:
        s = self._data_begin(sid, len(payload))
        if s is None:
            return
        data = payload
        if flags & _PADDED:
            if not data or data[0] >= len(data):
                raise _ConnectionError(_PROTOCOL_ERROR, "padding longer than the frame")
            data = data[1 : len(data) - data[0]]
        if not s.discard:
            self._take(s, data)
        self._data_end(s, flags)

    def _data_begin(self, sid: int, size: int) -> _Stream | None:
        """A DATA frame of `size` bytes (padding included) counted against the windows; its stream, or None
        if its bytes are dropped."""
        if sid == 0:
            raise _ConnectionError(_PROTOCOL_ERROR, "DATA on stream 0")
        self.recv_credit -= size
        if self.recv_credit < 0:
            raise _ConnectionError(_FLOW_CONTROL_ERROR, "more DATA than the connection's window")
        s = self.streams.get(sid)
        if s is None:
            if sid > self.last_id:
                raise _ConnectionError(_PROTOCOL_ERROR, "DATA on an idle stream")
            if sid not in self.reset_ids:  # frames in flight when we ended it early are expected, and dropped
                self.write(_frame(_RST_STREAM, 0, sid, _STREAM_CLOSED.to_bytes(4, "big")))
            self._replenish()
            return None
        if s.ended:
            self._finish(s, reset=_STREAM_CLOSED)
            return None
        s.recv_window -= size
        if s.recv_window < 0:
            self._finish(s, reset=_FLOW_CONTROL_ERROR)
            self._replenish()
            return None
        return s

    def _data_end(self, s: _Stream, flags: int) -> None:
        """After a DATA frame's bytes were taken: windows given back, and the call run if the stream ended."""
        if s.recv_window < _STREAM_WINDOW // 2 and not flags & _END_STREAM:
            self.write(_frame(_WINDOW_UPDATE, 0, s.id, (_STREAM_WINDOW - s.recv_window).to_bytes(4, "big")))
            s.recv_window = _STREAM_WINDOW
        self._replenish()
        if flags & _END_STREAM:
            self._ended(s)

    def _take(self, s: _Stream, data: memoryview) -> None:
        """Keep a DATA frame's bytes for `s`'s message. Once its prefix tells the size, the message gets one
        buffer of that size (if the connection's bound has room for all of it), filled in place: growing a
        buffer 16 KiB at a time copied a 600 KB message over and over."""
        n = len(data)
        if s.sized:
            end = s.got + n
            if end > s.need:
                self._more_than_one(s)
                return
            s.body[s.got : end] = data
            s.got = end
            return
        if s.got == 0 and n >= 5:  # the message's first bytes, its size with them: copied once, into its buffer
            if not self._size(s, int.from_bytes(data[1:5], "big"), n):
                return
            if s.sized:
                s.body[:n] = data
                s.got = n
                return
        s.body += data
        s.got += n
        s.counted += n
        self.held += n
        if s.need < 0 and s.got >= 5:
            body = s.body
            if not self._size(s, int.from_bytes(body[1:5], "big"), s.got):
                return
            if s.sized:
                s.body[: s.got] = body
        if 0 <= s.need < s.got:
            self._more_than_one(s)

    def _size(self, s: _Stream, declared: int, have: int) -> bool:
        """The message's size is known (`have` of its bytes came, none kept yet beyond `s.counted`): refused if
        over the limit (False); else, if more is to come and the connection's bound has room for all of it,
        `s.body` becomes one buffer of its size (`s.sized`)."""
        if declared > self.server.max_message:
            self._answer_error(s, grpc.StatusCode.RESOURCE_EXHAUSTED, f"request message of {declared} bytes "
                               f"exceeds the limit of {self.server.max_message} bytes")
            return False
        s.need = 5 + declared
        extra = s.need - s.counted
        if have < s.need and self.held + extra <= self.server.max_buffered:  # more to come, and room for it
            s.body = bytearray(s.need)
            s.sized = True
            s.counted += extra
            self.held += extra
        return True

    def _more_than_one(self, s: _Stream) -> None:
        # Not held: a stream carries no more than its one message.
        one = "a unary call takes one request message, this had more than one"
        self._answer_error(s, grpc.StatusCode.INTERNAL, one)

    def _replenish(self) -> None:
        """Give the client back connection window, as far as the bodies held stay under the limit."""
        room = self.server.max_buffered - self.held - self.recv_credit
        srv = self.server
        if room >= srv.window_step or (room >= srv.window_min and self.recv_credit < srv.window_step):
            self.write(_frame(_WINDOW_UPDATE, 0, 0, room.to_bytes(4, "big")))
            self.recv_credit += room

    def _release(self, s: _Stream) -> None:
        self.held -= s.counted
        s.counted = 0
        s.body = bytearray()

    # --- calls

    def _ended(self, s: _Stream) -> None:
        s.ended = True
        if s.discard or s.method is None:
            if s.done:
                self._finish(s, reset=None)
            return
        if s.need < 0 or s.got != s.need:
            n = "no" if s.got < 5 else "a cut"
            self._answer_error(s, grpc.StatusCode.INTERNAL, f"a unary call takes one request message, this had {n}")
            return
        if s.body[0] != 0:
            self._answer_error(s, grpc.StatusCode.UNIMPLEMENTED, "compressed messages are not supported")
            return
        # Run the call at once: a small model's call finishes without waiting on anything, and then needs
        # no task and no turn of the loop; one that waits goes on in a task from where it stopped.
        s.task = eager.start(self._call(s), self.loop)
        if s.task is not None:
            self.server.busy_poll.track(s.task)

    async def _call(self, s: _Stream) -> None:
        assert s.method is not None
        handler, serialize = s.method
        # A view, not a copy: the body stays held (and counted against the connection's window) until answered.
        request = memoryview(s.body)[5:]
        try:
            context = _Context(s.metadata, self.peer)
            if s.timeout is not None:
                response = await asyncio.wait_for(handler(request, context), s.timeout)
            else:
                response = await handler(request, context)
            message = serialize(response)
        except asyncio.CancelledError:
            return
        except Exception as e:
            s.task = None  # as below: the answer ends the stream, not this task
            if isinstance(e, _Abort):
                self._answer_error(s, e.code, e.message)
            elif isinstance(e, TimeoutError):
                self._answer_error(s, grpc.StatusCode.DEADLINE_EXCEEDED, "the call's deadline passed")
            else:
                log.exception("unhandled error in a gRPC call")
                self._answer_error(s, grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}")
            return
        if len(message) > (1 << 32) - 1:
            self._answer_error(s, grpc.StatusCode.RESOURCE_EXHAUSTED, "response message over 4 GiB")
            return
        if s.id not in self.streams:
            return  # reset by the client meanwhile
        s.task = None  # the call is over: finishing the stream below must not cancel this very task
        self._release(s)
        s.out = bytearray(b"\x00" + len(message).to_bytes(4, "big"))
        s.out += message
        s.ready = True
        self._flush(s, _frame(_HEADERS, _END_HEADERS, s.id, _RESPONSE_HEAD))

    def _answer_error(self, s: _Stream, code: grpc.StatusCode, message: str) -> None:
        """A trailers-only answer; the rest of the request, if any, is dropped."""
        if s.done:
            return
        self.write(_frame(_HEADERS, _END_HEADERS | _END_STREAM, s.id, _RESPONSE_HEAD + _trailers(code, message)))
        s.discard = True
        s.done = True
        self._release(s)
        if s.ended:
            self._finish(s, reset=None)
        else:
            # The answer is complete; the client need not send the rest (RFC 9113 section 8.1).
            self._finish(s, reset=_NO_ERROR)

    def _flush(self, s: _Stream, head: bytes = b"") -> None:
        """Send what window allows of `s`'s answer (after `head`, its HEADERS, in the same write); its trailers
        once all of it went."""
        if not s.ready or s.done:
            return
        out = s.out
        frames: list[bytes] = [head]
        sent = 0
        while sent < len(out):
            n = min(len(out) - sent, s.send_window, self.send_window, self.peer_frame)
            if n <= 0:
                break
            frames.append(_frame(_DATA, 0, s.id, bytes(memoryview(out)[sent : sent + n])))
            sent += n
            s.send_window -= n
            self.send_window -= n
        del out[:sent]
        if not out:
            frames.append(_frame(_HEADERS, _END_HEADERS | _END_STREAM, s.id, _TRAILER_OK))
            s.done = True
        if frames:
            self.write(b"".join(frames))
        if s.done:
            self._finish(s, reset=None if s.ended else _NO_ERROR)

    def _flush_all(self) -> None:
        for s in list(self.streams.values()):
            if s.ready and self.send_window > 0:
                self._flush(s)

    def _finish(self, s: _Stream, reset: int | None) -> None:
        """The stream is over: forget it, cancel its call if it still runs, tell the client when `reset` says."""
        if self.streams.pop(s.id, None) is None:
            return
        self.server.busy_poll.answered(self.loop, self)
        if s.task is not None and not s.task.done():
            s.task.cancel()
        self._release(s)
        if reset is not None:
            self.write(_frame(_RST_STREAM, 0, s.id, reset.to_bytes(4, "big")))
            if not s.ended:
                self.reset_ids.add(s.id)
                if len(self.reset_ids) > 1024:  # only the latest matter: frames in flight, not history
                    self.reset_ids = set(sorted(self.reset_ids)[-512:])
        self._replenish()
        if self.going_away and not self.streams:
            self.close()

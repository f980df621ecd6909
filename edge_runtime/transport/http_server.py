"""The REST port's HTTP/1.1 server: an asyncio protocol on httptools' parser, serving one ASGI app.

Written for this job instead of running uvicorn: at the runtime's sizes (a few
hundred bytes in, a few hundred out) a general server's per-request machinery
(a cycle object, flow-control objects, default headers, message plumbing, a
future awaited for a body that is already in) cost about as much as the
inference. Here a request that arrives whole is handed to the app with its
body, `receive()` returns at once, and the response's head and body leave in
one write.

What the port guarantees:
- keep-alive, with idle connections closed after `keep_alive_timeout_s`;
  HTTP/1.0 and `Connection: close` answered then closed;
- pipelined requests answered one at a time, in order; reading pauses while
  a further request waits, and while a request's unread body passes
  `_HIGH_WATER` bytes, so a client cannot grow the server's memory by sending
  faster than it is answered; a response waits for the transport's write
  buffer to drain below its high mark before the next request runs;
- chunked request bodies; `Expect: 100-continue` answered when the app first
  asks for a body that has not come;
- a malformed request answered 400 and the connection closed; responses are
  JSON `{"error": ...}` like the rest of the runtime;
- the connection-level `Limits` (http_limits.py): a cap on open connections,
  a deadline for each request head, a size limit on it (431); a deadline for
  each request's body (`body_timeout_s`, 408), from when the request runs;
- a client that goes away: the app's `receive()` yields `http.disconnect`;
- the ASGI lifespan (startup before the port opens, shutdown after the last
  connection); on SIGTERM/SIGINT the port stops accepting, idle connections
  close, requests in flight get `shutdown_timeout_s` to finish.

Reads land in one buffer the server owns (asyncio.BufferedProtocol), not in
a new bytes object per read. A large body of declared length (a tensor) is
read by the kernel straight into the buffer the app gets: once its head is
parsed, the rest of it bypasses the parser, so its bytes are copied once, by
the kernel, instead of four times (into a read's bytes, the parser's chunk, the
app's buffer). The parser starts afresh for the next request.

Deadlines (head, body, idle) are checked by one sweep a few times per timeout,
not by a timer per request (a heap push and a cancel per request otherwise).

A request is run by hand in the callback that parsed it (eager.py): one that
needs nothing more (its body is in, a small model answers it) is answered
there, without a task; one that waits goes on in a task. After an answer the
loop polls for the next request for a moment instead of sleeping, while no
request waits on anything (busy_poll.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools
import orjson

from edge_runtime.transport import eager
from edge_runtime.transport.busy_poll import BusyPoll
from edge_runtime.transport.http_limits import Limits

log = logging.getLogger("edge_runtime.http")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_KEEP_ALIVE_S = 15.0
DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_SHUTDOWN_TIMEOUT_S = 20.0
# Unread request-body bytes held for the app before reading pauses (the app reads whole bodies).
_HIGH_WATER = 256 << 10
# Bytes parsed at a time when a read brings more (see _Connection._consume).
_FEED_STEP = 16 << 10
# A body with at least this much still to come is read straight into its final buffer (_Direct).
_DIRECT_MIN = 64 << 10
# The connection's reads land here (shared by the server's connections: each read is parsed, and what
# is kept of it copied, before the next one).
_READ_BUFFER = 256 << 10
DEFAULT_DIRECT_BODY_MAX = 64 << 20
# A response body up to this size is copied behind its head (one buffer); a larger one goes by writev.
_COPY_BODY = 64 << 10
_ASGI = {"version": "3.0", "spec_version": "2.3"}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_KEEP_ALIVE = b"connection: keep-alive\r\n"
_CLOSE = b"connection: close\r\n"
_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")}


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode("latin-1"))


_STATUS_LINES = {s.value: _status_line(s.value) for s in HTTPStatus}


def _date_header() -> bytes:
    return b"date: " + formatdate(usegmt=True).encode() + b"\r\n"


def error_response(status: int, message: str, date: bytes = b"") -> bytes:
    """A whole response with a JSON error body, for answers the server gives itself (then it closes)."""
    body = orjson.dumps({"error": message})
    head = (
        _STATUS_LINES.get(status) or _status_line(status),
        b"content-type: application/json\r\n",
        _CLOSE,
        b"content-length: %d\r\n" % len(body),
        date,
        b"\r\n",
    )
    return b"".join(head) + body


def _address(info: Any) -> tuple[str, int] | None:
    # An IPv6 peer is (host, port, flowinfo, scope_id); ASGI wants (host, port).
    if isinstance(info, tuple) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return None


class _Exchange:
    """One request and its response: the scope, the body as it arrives, and the ASGI receive/send."""

    __slots__ = (
        "body_left",
        "buffered",
        "chunks",
        "complete",
        "conn",
        "delivered",
        "discard",
        "disconnected",
        "expect_100",
        "head_only",
        "headers",
        "keep_alive",
        "responded",
        "scope",
        "since",
        "started",
        "status",
        "taken",
        "waiter",
    )

    def __init__(self, conn: _Connection, scope: Scope, keep_alive: bool, expect_100: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect_100 = expect_100
        self.head_only = scope["method"] == "HEAD"
        self.chunks: deque[bytes | bytearray] = deque()
        self.buffered = 0
        # Body bytes the parser has still to see, from Content-Length (None: chunked, or no length).
        self.body_left: int | None = None
        self.complete = False  # the whole body has been parsed
        self.delivered = False  # ... and handed to the app
        self.discard = False  # the app is done: the rest of the body is read and dropped
        self.disconnected = False
        self.started = False
        self.taken = False  # the app has had part of the body (then it is not read straight into a buffer)
        self.responded = False
        self.status = 0
        self.headers: Any = ()
        self.waiter: asyncio.Future[None] | None = None
        self.since = 0.0  # when it began to run: its body is due within the body timeout from then

    def wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def add_body(self, data: bytes) -> None:
        if self.body_left is not None:
            self.body_left -= len(data)
        if self.discard:
            return
        self.chunks.append(data)
        self.buffered += len(data)
        self.wake()

    async def receive(self) -> Message:
        while True:
            if self.disconnected or self.responded:
                return {"type": "http.disconnect"}
            if self.chunks or (self.complete and not self.delivered):
                return self._take()
            if not self.complete and self.expect_100 and not self.started:
                # The client holds its body until told to go on; it is asked for only now, by the app.
                self.expect_100 = False
                self.conn.write(_CONTINUE)
            await self._wait()

    def _take(self) -> Message:
        # One chunk at a time, never joined here: the app copies a large body once, into its final buffer
        # (App._body); a join here would be a second copy of every byte.
        chunks = self.chunks
        body = chunks.popleft() if chunks else b""
        self.taken = True
        paused = self.buffered > _HIGH_WATER
        self.buffered -= len(body)
        more = bool(chunks) or not self.complete
        self.delivered = not more
        if paused and self.buffered <= _HIGH_WATER:
            self.conn.update_reading()
        return {"type": "http.request", "body": body, "more_body": more}

    async def _wait(self) -> None:
        fut = self.conn.loop.create_future()
        self.waiter = fut
        try:
            await fut
        finally:
            self.waiter = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("the response has already started")
            self.started = True
            self.status = message["status"]
            self.headers = message.get("headers", ())
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if not self.started or self.responded:
            raise RuntimeError("http.response.body outside a response")
        body: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        head = None
        if self.status:
            head = self._head(None if more else len(body))
            self.status = 0
        if self.head_only:
            body = b""
        if not more:
            self.responded = True
            self.wake()
        conn = self.conn
        if conn.lost or conn.transport is None or conn.transport.is_closing():
            return  # the client left, or the connection was cut (shutdown): nobody to answer
        conn.write_response(head, body)
        if not more:
            conn.response_done(self)
        if conn.write_paused:
            await conn.drained()

    def _head(self, length: int | None) -> bytes:
        """Status line and headers; `length`, when the body is whole, sets content-length if the app did not."""
        lines = [_STATUS_LINES.get(self.status) or _status_line(self.status)]
        has_length = close = False
        for name, value in self.headers:
            if b"\n" in value or b"\r" in value or b"\n" in name or b"\r" in name or b":" in name:
                raise RuntimeError(f"invalid response header {name[:40]!r}")
            lname = name.lower()
            if lname == b"content-length":
                has_length = True
            elif lname == b"connection" and value.lower() == b"close":
                close = True
            lines.append(b"%s: %s\r\n" % (name, value))
        if not has_length:
            if length is None:
                self.keep_alive = False  # a streamed body without a length ends with the connection
            else:
                lines.append(b"content-length: %d\r\n" % length)
        if close or self.conn.stopping or (self.expect_100 and not self.complete):
            # Also when the client still holds back a body it was never asked for: it is not read.
            self.keep_alive = False
        if not self.keep_alive:
            if not close:
                lines.append(_CLOSE)
        elif self.scope["http_version"] == "1.0":
            lines.append(_KEEP_ALIVE)
        lines.append(self.conn.server.date)
        lines.append(b"\r\n")
        return b"".join(lines)


class _Direct:
    """A body being read straight into the buffer the app will get (see the module's docstring)."""

    __slots__ = ("buf", "exchange", "filled", "size", "view")

    def __init__(self, exchange: _Exchange, size: int) -> None:
        self.exchange = exchange
        self.size = size
        self.buf: bytearray | None = bytearray(size)
        self.view = memoryview(self.buf)
        self.filled = 0

    def put(self, data: bytes | bytearray | memoryview) -> int:
        """Keep what belongs to the body of `data` (bytes that did not come by get_buffer); returns how many."""
        n = min(len(data), self.size - self.filled)
        if self.buf is not None:
            self.view[self.filled : self.filled + n] = data[:n]
        return n

    def drop(self) -> None:
        """Let go of the buffer: the body is whole (the app has it now), or nobody wants it any more (the app
        answered without it, or the client left; its remaining bytes are still read, to find the next
        request, but into the server's read buffer, then dropped)."""
        if self.buf is not None:
            self.view.release()
            self.buf = None


class _Connection(asyncio.BufferedProtocol):
    """One TCP connection: parses requests, runs the app on them one at a time, writes the answers."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.app = server.app
        self.limits = server.limits
        self.loop = server.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.sockname: tuple[str, int] | None = None
        self.counted = False
        self.lost = False
        self.stopping = False  # server shutdown: close after the response in flight
        self.eof = False  # the client will send nothing more
        # Parsing state.
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect_100 = False
        self.content_length: int | None = None
        self.in_head = True  # a request head has begun (or the connection is new) and is not complete
        self.head_open = True  # between requests or in a head: incoming bytes count against the head limit
        self.head_bytes = 0
        self.heads_done = 0
        self.since = self.loop.time()  # start of the current head, or of idleness
        # Exchanges: the one the parser fills, the one the app runs, those waiting their turn.
        self.parsing: _Exchange | None = None
        self.current: _Exchange | None = None
        self.queue: deque[_Exchange] = deque()
        self.to_start: _Exchange | None = None
        self.failure: bytes | None = None  # written once the exchanges before it are answered, then close
        self.pending = b""  # read but not parsed yet: a request is waiting its turn
        self.direct: _Direct | None = None  # a body being read straight into its buffer
        self.reading_paused = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None

    # --- transport events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        lim = self.limits
        if lim.open >= lim.max_connections:
            lim.refused(
                "max_connections",
                "connection refused: the runtime's connection limit is reached (--max-connections)",
                limit=lim.max_connections,
                peer=str(transport.get_extra_info("peername")),
            )
            self.lost = True
            transport.abort()
            return
        lim.open += 1
        self.counted = True
        self.transport = transport
        self.client = _address(transport.get_extra_info("peername"))
        self.sockname = _address(transport.get_extra_info("sockname"))
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.counted:
            self.counted = False
            self.limits.open -= 1
        self.server.connections.discard(self)
        for ex in (self.current, self.parsing, *self.queue):
            if ex is not None:
                ex.disconnected = True
                ex.wake()
        self.queue.clear()
        self._wake_drain()

    def eof_received(self) -> bool | None:
        self.eof = True
        ex = self.parsing
        if ex is not None and not ex.complete:  # a body that can no longer come
            ex.disconnected = True
            ex.wake()
        if self.current is None:
            return None  # nothing to answer: the transport closes
        return True  # keep the write side open for the answers still owed

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain()

    def _wake_drain(self) -> None:
        w = self.drain_waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def drained(self) -> None:
        while self.write_paused and not self.lost:
            fut = self.loop.create_future()
            self.drain_waiter = fut
            try:
                await fut
            finally:
                self.drain_waiter = None

    def get_buffer(self, sizehint: int) -> memoryview:
        d = self.direct
        if d is not None:
            ex = d.exchange
            if ex.discard or ex.disconnected:
                d.drop()
            if d.buf is not None:
                return d.view[d.filled :]
            view: memoryview = self.server.read_view
            return view[: d.size - d.filled]
        return self.server.read_view

    def buffer_updated(self, nbytes: int) -> None:
        d = self.direct
        if d is not None:
            self._direct_in(d, nbytes)
        else:
            self.data_received(self.server.read_view[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        """Bytes read (from buffer_updated, or a transport that hands out its own)."""
        if self.direct is not None:  # a transport's own bytes: the body's share goes into its buffer
            n = self._direct_put(self.direct, data)
            if n == len(data):
                return
            data = data[n:]
        if self.pending:  # reading is paused; this came with the read that paused it
            self.pending += data
        else:
            self._consume(data)
        if self.parsing is not None:
            self._go_direct(self.parsing)
        ex = self.to_start
        if ex is not None:
            self.to_start = None
            self.server.start(self._serve(ex))

    def _consume(self, data: bytes | memoryview) -> None:
        """Parse `data`, a slice at a time once it is large: while a request waits its turn the rest stays
        unparsed, as bytes, so one read full of tiny pipelined requests is not a queue of thousands. The
        rest of a body of known length goes to the parser in one slice: it can hold no further request,
        and slicing a large tensor 16 KiB at a time cost a parser call and a copy per slice."""
        if len(data) <= _FEED_STEP:
            self._take_in(data)
            return
        view = memoryview(data)
        start, end = 0, len(data)
        while start < end:
            if self.failure is not None:
                return
            if self.queue:
                self.pending = bytes(view[start:])
                self.update_reading()
                return
            step = _FEED_STEP
            ex = self.parsing
            if ex is not None and not self.in_head and ex.body_left is not None and ex.body_left > step:
                step = ex.body_left
            self._take_in(view[start : start + step])
            start += step
            if start < end and self.parsing is not None:
                # Once the head is in, a large body of declared length goes on into its own buffer from here,
                # not through the parser (which copied this read's part of it into a bytes object first).
                self._go_direct(self.parsing)
                if self.direct is not None:
                    start += self._direct_put(self.direct, view[start:])

    def _take_in(self, data: bytes | memoryview) -> None:
        """Feed the parser, holding each request head to the size limit."""
        limit = self.limits.max_header_bytes
        while data and self.failure is None:
            if not self.head_open:
                self._feed(data)
                return
            room = limit - self.head_bytes
            if len(data) <= room:
                self.head_bytes += len(data)
                self._feed(data)
                return
            # Feed only what the limit allows; the rest goes on only if the head completed within it.
            heads = self.heads_done
            if room > 0:
                self.head_bytes += room
                self._feed(data[:room])
            if room <= 0 or self.heads_done == heads:
                self._too_large()
                return
            data = data[room:]

    def _feed(self, data: bytes | memoryview) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No protocol switch here: the request was answered as plain HTTP; nothing more is read.
            last = self.queue[-1] if self.queue else self.current
            if last is not None:
                last.keep_alive = False
            self._fail(b"")
        except httptools.HttpParserError as e:
            self._fail(error_response(400, f"malformed request: {e}", self.server.date))

    # --- parser callbacks

    def on_message_begin(self) -> None:
        self.in_head = True
        self.head_open = True
        self.since = self.loop.time()
        self.url = b""
        self.headers = []
        self.expect_100 = False
        self.content_length = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100 = True
        elif name == b"content-length" and value.isdigit() and len(value) < 19:
            # Only to size the parser's slices (_consume); the parser itself enforces the framing.
            self.content_length = int(value)
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_open = False
        self.heads_done += 1
        parser = self.parser
        keep_alive = parser.should_keep_alive() and not self.stopping
        ex = _Exchange(self, self._scope(parser), keep_alive, self.expect_100)
        if self.content_length is not None and not any(n == b"transfer-encoding" for n, _ in self.headers):
            ex.body_left = self.content_length
        self.parsing = ex
        if self.current is None:
            # It runs once the bytes at hand are parsed: a request that came whole is run with its body.
            self._make_current(ex)
            self.to_start = ex
        else:
            self.queue.append(ex)
            self.update_reading()

    def _scope(self, parser: httptools.HttpRequestParser) -> Scope:
        url = self.url
        if url[:1] == b"/":
            raw, _, query = url.partition(b"?")
        else:  # absolute-form (a proxy's request line) or garbage: the parser tells
            parsed = httptools.parse_url(url)
            raw, query = parsed.path or b"/", parsed.query or b""
        path = raw.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        method = parser.get_method()
        return {
            "type": "http",
            "asgi": _ASGI,
            "http_version": parser.get_http_version(),
            "method": _METHODS.get(method) or method.decode("latin-1"),
            "scheme": "http",
            "path": path,
            "raw_path": raw,
            "query_string": query,
            "root_path": "",
            "headers": self.headers,
            "client": self.client,
            "server": self.sockname,
        }

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        if ex is not None:
            ex.add_body(body)
            if ex.buffered > _HIGH_WATER and not self.reading_paused:
                self.update_reading()

    def _go_direct(self, ex: _Exchange) -> None:
        """Read the rest of `ex`'s body straight into the buffer the app will get, if it is large and of declared
        length, is the request being run, and the app has had none of it yet (it then gets the whole body at
        once). The bytes already parsed go first; the parser sees none of the rest."""
        left = ex.body_left
        if (
            self.direct is not None  # already on its way in
            or left is None
            or left < _DIRECT_MIN
            or ex is not self.current
            or ex.taken
            or ex.discard
            or ex.disconnected
            or self.failure is not None
            or self.pending
            or self.queue
        ):
            return
        size = ex.buffered + left
        if size > self.server.direct_body_max:
            return  # the app refuses it (413) before reading; no buffer of that size for it
        d = _Direct(ex, size)
        for chunk in ex.chunks:
            d.filled += d.put(chunk)
        ex.chunks.clear()
        ex.buffered = 0
        self.direct = d
        self.update_reading()  # the held part is no longer held against the high-water mark

    def _direct_put(self, d: _Direct, data: bytes | memoryview) -> int:
        """Bytes read elsewhere than into `d`'s buffer: its share of them goes there; returns how many."""
        n = d.put(data)
        self._direct_in(d, n)
        return n

    def _direct_in(self, d: _Direct, nbytes: int) -> None:
        d.filled += nbytes
        ex = d.exchange
        if ex.body_left is not None:
            ex.body_left -= nbytes
        if d.filled < d.size:
            return
        self.direct = None
        # The parser saw the head and the body's first bytes; the next request starts on a fresh one.
        self.parser = httptools.HttpRequestParser(self)
        buf = d.buf
        d.drop()
        if buf is not None and not ex.discard and not ex.disconnected:
            ex.chunks.append(buf)
            ex.buffered += d.size
        self.on_message_complete()

    def on_message_complete(self) -> None:
        ex = self.parsing
        self.parsing = None
        self.head_open = True
        self.head_bytes = 0
        if ex is None:
            return
        ex.complete = True
        ex.wake()
        if ex.discard and self.current is None:
            self.since = self.loop.time()  # the answered request's last bytes: idle from now
            self.update_reading()

    # --- flow

    def update_reading(self) -> None:
        """Read unless a further request waits its turn, or the app has not taken a large part of a body."""
        ex = self.parsing
        pause = (
            bool(self.queue)
            or bool(self.pending)
            or self.failure is not None
            or (ex is not None and not ex.discard and ex.buffered > _HIGH_WATER)
        )
        if pause == self.reading_paused or self.transport is None or self.lost:
            return
        self.reading_paused = pause
        if pause:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.lost:
            self.transport.write(data)

    def write_response(self, head: bytes | None, body: bytes) -> None:
        t = self.transport
        assert t is not None
        if head is None:
            if body:
                t.write(body)
        elif len(body) <= _COPY_BODY:
            t.write(head + body)
        else:
            t.writelines((head, body))

    def response_done(self, ex: _Exchange) -> None:
        self.server.busy_poll.answered(self.loop, self)
        if not ex.keep_alive or self.stopping or (self.eof and not self.queue):
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    async def _serve(self, ex: _Exchange | None) -> None:
        """Run the app on `ex`, then on each request that waited behind it."""
        while ex is not None:
            try:
                await self.app(ex.scope, ex.receive, ex.send)
            except asyncio.CancelledError:
                self.close()
                raise
            except Exception:
                log.exception("the application failed", extra={"path": ex.scope["path"]})
            ex = self._after(ex)

    def _make_current(self, ex: _Exchange) -> None:
        """`ex` is the request the app runs now: its body clock starts (check_deadlines)."""
        ex.since = self.loop.time()
        self.current = ex

    def _after(self, ex: _Exchange) -> _Exchange | None:
        """The app is done with `ex`: the next request to run, or None."""
        if self.lost:
            return None
        if not ex.responded:
            self._unanswered(ex)
            return None
        if not ex.keep_alive or self.stopping or self.transport is None or self.transport.is_closing():
            self.close()
            return None
        if not ex.complete:
            ex.discard = True
            ex.chunks.clear()
            ex.buffered = 0
        if self.queue:
            nxt = self.queue.popleft()
            self._make_current(nxt)
            if not self.queue and self.pending:
                data, self.pending = self.pending, b""
                self._consume(data)
            self.update_reading()
            return nxt
        self.current = None
        if self.failure is not None:
            self._write_failure()
            return None
        self.since = self.loop.time()
        self.update_reading()
        return None

    def _unanswered(self, ex: _Exchange) -> None:
        """The app returned (or failed) without finishing a response: answer for it if nothing went out."""
        if not ex.started:
            if self.failure is not None:
                self._write_failure()
                return
            if not ex.disconnected:
                self.write(error_response(500, "internal error: no response", self.server.date))
        self.close()

    def _fail(self, answer: bytes) -> None:
        """Nothing more is read: `answer` goes out after the answers owed, then the connection closes."""
        self.failure = answer
        self.pending = b""
        ex = self.parsing
        self.parsing = None
        if ex is not None and not ex.complete:  # a request cut short: never run, or told its client left
            ex.disconnected = True
            ex.wake()
            if ex in self.queue:
                self.queue.remove(ex)
            if ex is self.to_start:
                self.to_start = None
                self.current = None
        self.update_reading()
        if self.current is None:
            self._write_failure()

    def _write_failure(self) -> None:
        if self.failure:
            self.write(self.failure)
        self.close()

    def _too_large(self) -> None:
        lim = self.limits
        lim.refused(
            "header_too_large",
            "request refused: its head is larger than the limit (--max-header-bytes)",
            limit=lim.max_header_bytes,
            peer=str(self.client),
        )
        self._fail(
            error_response(431, f"request head exceeds the limit of {lim.max_header_bytes} bytes", self.server.date)
        )

    def check_deadlines(self, now: float) -> None:
        """Called by the server's sweep: answer 408 to a request whose body is late; close a connection whose
        head is late, or that idled too long.

        The head and idle clocks stop while the app runs a request (a head behind it may wait unread) and
        start again when it is done (`since`). The body clock runs from when the request began to run, until
        its body is whole (or the app answered without it): a request queued behind another is not read
        meanwhile, so it is not late either."""
        if self.lost or self.transport is None or self.transport.is_closing():
            return
        ex = self.current
        if ex is not None:
            if not ex.complete and not ex.responded and now - ex.since > self.server.body_timeout_s:
                self._body_late(ex)
            return
        if self.in_head:
            if now - self.since > self.limits.header_timeout_s:
                self.limits.refused(
                    "header_timeout",
                    "connection closed: no complete request head within the header timeout (--header-timeout-s)",
                    peer=str(self.client),
                )
                self.close()
        elif now - self.since > self.server.keep_alive_s:
            # Idle, or still reading the rest of a body its answer did not need: bounded the same way.
            self.close()

    def _body_late(self, ex: _Exchange) -> None:
        self.limits.refused(
            "body_timeout",
            "request answered 408: its body did not come within the body timeout (--body-timeout-s)",
            peer=str(self.client),
        )
        if not ex.started:
            message = f"request body not received within {self.server.body_timeout_s:g}s (slow client)"
            self.write(error_response(408, message, self.server.date))
            ex.started = True
        # The app, waiting on receive(), is told the client is gone; the connection closes now.
        ex.responded = True
        ex.disconnected = True
        ex.wake()
        self.close()

    def shutdown(self) -> None:
        """Server shutdown: no new request; an idle connection closes now, a busy one after its response."""
        self.stopping = True
        if self.current is None:
            self.close()


class _Lifespan:
    """The ASGI lifespan protocol, run as one task beside the server."""

    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.started: asyncio.Future[str | None] = loop.create_future()
        self.stopped: asyncio.Future[None] = loop.create_future()
        self.task = loop.create_task(self._main())

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": _ASGI, "state": {}}
        error = "the application's lifespan ended before startup completed"
        try:
            await self.app(scope, self.inbox.get, self._send)
            error = ""  # an app without a lifespan returns at once: nothing to start
        except Exception as e:
            log.exception("the application's lifespan failed")
            error = f"{type(e).__name__}: {e}"
        finally:
            if not self.started.done():
                self.started.set_result(error or None)
            if not self.stopped.done():
                self.stopped.set_result(None)

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete" and not self.started.done():
            self.started.set_result(None)
        elif kind == "lifespan.startup.failed" and not self.started.done():
            self.started.set_result(str(message.get("message") or "startup failed"))
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed") and not self.stopped.done():
            if kind.endswith("failed"):
                log.error("the application's shutdown failed", extra={"error": message.get("message")})
            self.stopped.set_result(None)

    async def startup(self) -> str | None:
        """None when the app started; otherwise why not."""
        self.inbox.put_nowait({"type": "lifespan.startup"})
        return await self.started

    async def shutdown(self) -> None:
        if not self.task.done():
            self.inbox.put_nowait({"type": "lifespan.shutdown"})
            await self.stopped
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await self.task


class HttpServer:
    """Serve `app` on host:port until SIGTERM or SIGINT (or `stop()`)."""

    def __init__(
        self,
        app: ASGIApp,
        limits: Limits,
        *,
        host: str,
        port: int,
        keep_alive_timeout_s: float = DEFAULT_KEEP_ALIVE_S,
        body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
        shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
        backlog: int = 2048,
        busy_poll: BusyPoll | None = None,
        direct_body_max: int = DEFAULT_DIRECT_BODY_MAX,
    ) -> None:
        self.app = app
        self.limits = limits
        self.host = host
        self.port = port
        self.keep_alive_s = keep_alive_timeout_s
        self.body_timeout_s = body_timeout_s
        self.busy_poll = busy_poll or BusyPoll(0)
        # Larger declared bodies are not read into a buffer of their size up front (the app's limit: 413).
        self.direct_body_max = direct_body_max
        self.read_view = memoryview(bytearray(_READ_BUFFER))
        self.shutdown_timeout_s = shutdown_timeout_s
        self.backlog = backlog
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.date = _date_header()
        self.bound_port = 0
        self._stop: asyncio.Event | None = None
        self._hurry = False
        self.loop: asyncio.AbstractEventLoop  # the running loop, set by serve()

    def run(self) -> bool:
        """Serve on a fresh event loop (uvloop's when installed); False when the app failed to start."""
        try:
            import uvloop

            factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
        except ImportError:
            factory = None
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(self.serve())

    async def serve(self) -> bool:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self._stop = asyncio.Event()
        lifespan = _Lifespan(self.app, loop)
        failed = await lifespan.startup()
        if failed is not None:
            log.error("startup failed: not serving", extra={"error": failed})
            await lifespan.shutdown()
            return False
        server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, backlog=self.backlog, reuse_address=True
        )
        bound = _address(server.sockets[0].getsockname()) if server.sockets else None
        self.bound_port = bound[1] if bound else 0
        signals = self._catch_signals(loop)
        sweeper = loop.create_task(self._sweep())
        try:
            await self._stop.wait()
        finally:
            server.close()
            await self._drain()
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            for s in signals:
                loop.remove_signal_handler(s)
            await lifespan.shutdown()
        return True

    def stop(self) -> None:
        """Begin a graceful shutdown; a second call cuts the wait for requests in flight short."""
        if self._stop is None:
            return
        if self._stop.is_set():
            self._hurry = True
        self._stop.set()

    def _catch_signals(self, loop: asyncio.AbstractEventLoop) -> list[signal.Signals]:
        caught: list[signal.Signals] = []
        for s in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(s, self.stop)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
                continue
            caught.append(s)
        return caught

    def start(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a connection's requests at once (eager.py); only what has to wait goes on in a task."""
        task = eager.start(coro, self.loop)
        if task is not None:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            self.busy_poll.track(task)

    async def _sweep(self) -> None:
        interval = min(1.0, max(0.05, min(self.limits.header_timeout_s, self.keep_alive_s, self.body_timeout_s) / 4))
        while True:
            await asyncio.sleep(interval)
            self.date = _date_header()
            now = self.loop.time()
            for conn in list(self.connections):
                conn.check_deadlines(now)

    async def _drain(self) -> None:
        """Close idle connections, give requests in flight `shutdown_timeout_s`, then cut what is left."""
        for conn in list(self.connections):
            conn.shutdown()
        deadline = self.loop.time() + self.shutdown_timeout_s
        while (self.connections or self.tasks) and self.loop.time() < deadline and not self._hurry:
            await asyncio.sleep(0.05)
        if self.connections or self.tasks:
            log.warning("shutdown: cutting requests still in flight", extra={"connections": len(self.connections)})
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

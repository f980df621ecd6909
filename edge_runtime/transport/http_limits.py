"""Connection-level limits for the REST port, enforced before a request exists.

uvicorn's httptools protocol, with what it lacks for a port anyone may reach:
- a cap on open connections: past it a new connection is closed at once, with
  a log line (at most one per 10 s) and `edgeai_connections_refused_total
  {reason="max_connections"}`, so the process never runs out of descriptors;
- a header-read deadline: a connection that has not sent a complete request
  head within `header_timeout_s` of connecting (or of starting a request) is
  closed (an idle new connection, a slowloris sending partial headers);
- a header size limit: a request head larger than `max_header_bytes` gets 431
  and the connection is closed, before the parser sees the rest (parse time
  otherwise grows with the square of the head's size);
- the idle keep-alive timeout between requests is uvicorn's own
  (`timeout_keep_alive`).

And one thing for speed: uvicorn writes a response's head and its body with
two `send()` calls. On a small answer each is most of the cost of serving it
(a syscall, a TCP segment, a wake-up of the client), so the head is held until
the body's first bytes and both go out in one `writev` (`_OneWrite`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from edge_runtime.telemetry.metrics import RuntimeMetrics

log = logging.getLogger("edge_runtime.http")

DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_MAX_HEADER_BYTES = 64 << 10
_LOG_EVERY_S = 10.0


class Limits:
    """Shared by every connection of one server."""

    def __init__(
        self,
        metrics: RuntimeMetrics | None,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    ) -> None:
        self.metrics = metrics
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.max_header_bytes = max_header_bytes
        self.open = 0
        self._last_log: dict[str, float] = {}

    def refused(self, reason: str, message: str, **extra: Any) -> None:
        if self.metrics is not None:
            self.metrics.connections_refused.labels(reason).inc()
        now = time.monotonic()
        if now - self._last_log.get(reason, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._last_log[reason] = now
            log.warning(message, extra={"reason": reason, "open_connections": self.open, **extra})


class _OneWrite:
    """One response's transport: its head is held until the first body bytes, then both go in one writev.

    Order is never changed, only the head delayed: it is written with the next write, when the response
    completes (a HEAD request, an empty body) or before the connection is closed, whichever comes first.
    A write before the response starts (`100 Continue`) goes out at once.
    """

    __slots__ = ("_armed", "_cycle", "_head", "_on_response", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: Any) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._armed = True
        self._on_response = cycle.on_response
        cycle.on_response = self._response_complete
        cycle.transport = self

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if data:
                self._transport.writelines((head, data))
            else:
                self._transport.write(head)
        elif self._armed and self._cycle.response_started:
            self._armed = False
            self._head = data
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)

    def _response_complete(self) -> None:
        self._flush()
        self._on_response()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


def protocol_class(limits: Limits) -> type[asyncio.Protocol]:
    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        _edge_limits = limits

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._in_head = True
            self._head_bytes = 0
            self._head_timer: asyncio.TimerHandle | None = None
            self._counted = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            lim = self._edge_limits
            if lim.open >= lim.max_connections:
                peer = transport.get_extra_info("peername")
                lim.refused(
                    "max_connections",
                    "connection refused: the runtime's connection limit is reached (--max-connections)",
                    limit=lim.max_connections,
                    peer=str(peer),
                )
                transport.abort()
                return
            lim.open += 1
            self._counted = True
            super().connection_made(transport)
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._counted:
                self._counted = False
                self._edge_limits.open -= 1
            self._cancel_head_timer()
            if self.transport is not None:
                super().connection_lost(exc)

        def _arm_head_timer(self) -> None:
            self._cancel_head_timer()
            self._head_timer = self.loop.call_later(self._edge_limits.header_timeout_s, self._head_timeout)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self._in_head and not self.transport.is_closing():
                self._edge_limits.refused(
                    "header_timeout",
                    "connection closed: no complete request head within the header timeout (--header-timeout-s)",
                    peer=str(self.client),
                )
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if not self._in_head:
                super().data_received(data)
                return
            room = self._edge_limits.max_header_bytes - self._head_bytes
            if len(data) <= room:
                self._head_bytes += len(data)
                super().data_received(data)
                return
            # Feed only what the limit allows; the rest goes on only if the head completed within it.
            self._head_bytes += room
            super().data_received(data[:room])
            if self._in_head:
                self._too_large()
                return
            if not self.transport.is_closing():
                super().data_received(data[room:])

        def _too_large(self) -> None:
            lim = self._edge_limits
            lim.refused(
                "header_too_large",
                "request refused: its head is larger than the limit (--max-header-bytes)",
                limit=lim.max_header_bytes,
                peer=str(self.client),
            )
            body = b'{"error":"request head exceeds the limit of %d bytes"}' % lim.max_header_bytes
            if not self.transport.is_closing():
                self.transport.write(_431 % (len(body), body))
                self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if not self._in_head:
                self._in_head = True
                self._head_bytes = 0
                self._arm_head_timer()

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._cancel_head_timer()
            super().on_headers_complete()
            cycle = self.cycle
            if cycle is not None and cycle.transport is self.transport:
                _OneWrite(self.transport, cycle)

    return LimitedHttpToolsProtocol

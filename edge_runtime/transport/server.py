"""REST adapter: a raw ASGI application over the typed dataplane, served by `http_server`.

Raw ASGI (httptools parser, uvloop) with orjson was the fastest of the options
measured for this job: a framework's routing and request objects cost more
than the small routing table below; the server under it is the runtime's own
(`http_server`), uvicorn's per-request work having been as large as the app's. Each endpoint
is decode (`codec`) -> dataplane -> encode; this module maps paths to
dataplane calls and the exceptions of `protocol` to status codes and JSON
error bodies (`{"error": "..."}`).

Abuse never reaches the model or blocks other clients: bodies over the limit
get 413 before they are read, a client that does not finish its body within
the timeout gets 408 (from `http_server`), large bodies are decoded off the event loop
(`offload`), and connection-level limits (idle, header size and time,
connection count) are enforced by `http_server` with `http_limits` before a
request exists.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edge_runtime.core.access import RepositoryAccess
from edge_runtime.core.codec import decode_request, encode_response, parse_header_length
from edge_runtime.core.protocol import (
    Forbidden,
    InputRejected,
    LoadRefused,
    ModelError,
    NotFound,
    ProtocolError,
    TooLarge,
)
from edge_runtime.serving.dataplane import DataPlane
from edge_runtime.serving.offload import Decoder

log = logging.getLogger("edge_runtime.server")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_MAX_BODY = 64 << 20

_JSON = (b"content-type", b"application/json")
_CLOSE = (b"connection", b"close")
_LIVE = b'{"live":true}'
_READY = b'{"ready":true}'


class HttpError(Exception):
    def __init__(self, status: int, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close


class _Disconnected(Exception):
    pass


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return str(v.decode("latin-1"))
    return None


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Send, status: int, message: str, close: bool = False) -> None:
    headers = [_JSON]
    if close:
        headers.append(_CLOSE)
    await _send(send, status, orjson.dumps({"error": message}), headers)


# exception -> HTTP status; order matters only for subclasses
_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (ProtocolError, 400),
    (InputRejected, 400),
    (LoadRefused, 400),
    (NotFound, 404),
    (Forbidden, 403),
    (TooLarge, 413),
    (ModelError, 500),
)


class App:
    def __init__(
        self,
        dataplane: DataPlane,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY,
        serve_metrics: bool = True,
        repository_access: RepositoryAccess | None = None,
        decoder: Decoder | None = None,
    ) -> None:
        self.dp = dataplane
        self.max_body = max_body_bytes
        self.serve_metrics = serve_metrics
        self.access = repository_access or RepositoryAccess()
        self.decoder = decoder or Decoder()
        self.on_startup: list[Callable[[], Awaitable[None]]] = []
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    if self.dp.fallback is not None:
                        await self.dp.fallback.start()
                    for hook in self.on_startup:
                        await hook()
                    self.dp.readiness()
                except Exception as e:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self._lifespan_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _lifespan_shutdown(self) -> None:
        for hook in self.on_shutdown:
            await hook()
        await self.dp.close()
        self.decoder.close()

    async def _body(self, scope: Scope, receive: Receive) -> bytes | bytearray:
        declared = _header(scope, b"content-length")
        n = -1
        if declared is not None:
            try:
                n = int(declared)
            except ValueError as e:
                raise HttpError(400, f"Content-Length is not an integer: {declared[:40]!r}", close=True) from e
            if n > self.max_body:
                raise HttpError(
                    413, f"request body of {n} bytes exceeds the limit of {self.max_body} bytes", close=True
                )
        chunks: list[bytes] = []
        # A body of declared length that comes in pieces is copied once, into a buffer of its size (a
        # tensor's bytes are then viewed in place, not joined again).
        buf: bytearray | None = None
        size = 0
        # A slow client's body is the server's to time out (http_server: 408, then receive() says
        # http.disconnect), so a request whose body is in needs no timer, nor a task, here.
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise _Disconnected()
            chunk = msg.get("body", b"")
            more = msg.get("more_body", False)
            if chunk:
                if buf is None and not chunks and more and 0 < n <= self.max_body:
                    buf = bytearray(n)
                end = size + len(chunk)
                if end > self.max_body:
                    raise HttpError(413, f"request body exceeds the limit of {self.max_body} bytes", close=True)
                if buf is not None and end <= n:
                    buf[size:end] = chunk
                else:
                    if buf is not None:  # more than declared: the parser forbids it; kept honest anyway
                        chunks.append(bytes(buf[:size]))
                        buf = None
                    chunks.append(chunk)
                size = end
            if not more:
                break
        if buf is not None:
            return buf if size == n else buf[:size]
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._route(scope, receive, send)
        except HttpError as e:
            await _send_error(send, e.status, e.message, e.close)
        except _Disconnected:
            return
        except Exception as e:
            for cls, status in _STATUS:
                if isinstance(e, cls):
                    await _send_error(send, status, str(e))
                    return
            # The server answers; it never dies on a request.
            log.exception("unhandled error", extra={"path": scope.get("path")})
            await _send_error(send, 500, f"internal error: {type(e).__name__}")

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        # The hot path first, without splitting anything else.
        if path.endswith("/infer") and path.startswith("/v2/models/"):
            parts = path[len("/v2/models/") : -len("/infer")].split("/")
            if len(parts) == 1 and parts[0]:
                if method != "POST":
                    raise HttpError(405, "infer takes POST")
                await self._infer(scope, receive, send, parts[0], None)
                return
            if len(parts) == 3 and parts[1] == "versions" and parts[0]:
                if method != "POST":
                    raise HttpError(405, "infer takes POST")
                await self._infer(scope, receive, send, parts[0], parts[2])
                return
        parts = path.strip("/").split("/")
        n = len(parts)
        if n >= 3 and parts[0] == "v2" and parts[1] == "models":
            name = parts[2]
            version: str | None = None
            rest = parts[3:]
            if len(rest) >= 2 and rest[0] == "versions":
                version = rest[1]
                rest = rest[2:]
            if rest == ["ready"]:
                self._only(method, "GET")
                ready = self.dp.model_ready(name, version)
                body = orjson.dumps({"name": name, "ready": ready})
                await _send(send, 200 if ready else 400, body, [_JSON])
                return
            if not rest:
                self._only(method, "GET")
                await _send(send, 200, orjson.dumps(self.dp.model_metadata(name, version)), [_JSON])
                return
        elif parts[:2] == ["v2", "health"] and n == 3:
            self._only(method, "GET")
            # JSON bodies as KServe's server gives them, so its client (which parses them) works too.
            if parts[2] == "live":
                await _send(send, 200, _LIVE, [_JSON])
                return
            if parts[2] == "ready":
                j = self.dp.readiness()
                if j.ready:
                    await _send(send, 200, _READY, [_JSON])
                else:
                    # The protocol wants a 4xx; the reason also goes in a header for people and probes' logs.
                    await _send(
                        send,
                        400,
                        orjson.dumps({"ready": False, "reason": j.reason}),
                        [_JSON, (b"x-edgeai-not-ready", j.reason.encode("utf-8", "replace"))],
                    )
                return
        elif parts == ["v2"]:
            self._only(method, "GET")
            await _send(send, 200, orjson.dumps(self.dp.server_metadata()), [_JSON])
            return
        elif parts[:2] == ["v2", "repository"]:
            await self._repository(scope, receive, send, parts[2:])
            return
        elif parts == ["metrics"] and self.serve_metrics:
            self._only(method, "GET")
            await _send(send, 200, self.metrics_text(), [(b"content-type", CONTENT_TYPE_LATEST.encode())])
            return
        raise HttpError(404, f"no such endpoint: {method} {path[:200]}")

    @staticmethod
    def _only(method: str, allowed: str) -> None:
        if method != allowed:
            raise HttpError(405, f"method {method} not allowed here, use {allowed}")

    async def _infer(self, scope: Scope, receive: Receive, send: Send, name: str, version: str | None) -> None:
        start = time.perf_counter()
        self.dp.served(name, version)  # unknown model: 404 before reading a body we would discard
        body = await self._body(scope, receive)
        try:
            header_length = parse_header_length(_header(scope, b"inference-header-content-length"), len(body))
            if len(body) <= self.decoder.inline_bytes:
                req = decode_request(body, header_length)
            else:
                req = await self.decoder.rest(body, header_length)
        except (ProtocolError, TooLarge):
            self.dp.client_error(name, version, "rest", time.perf_counter() - start)
            raise
        resp = await self.dp.infer(name, version, req, "rest", start)
        enc = encode_response(resp)
        if enc.header_length is None:
            headers = [_JSON]
        else:
            headers = [
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", str(enc.header_length).encode()),
            ]
        if resp.source != "edge":
            headers.append((b"x-edgeai-source", resp.source.encode()))
        await _send(send, 200, enc.body, headers)

    async def _repository(self, scope: Scope, receive: Receive, send: Send, rest: list[str]) -> None:
        client = scope.get("client")
        self.access.check(client[0] if client else None, _header(scope, b"authorization"))
        if rest == ["index"]:
            if scope["method"] not in ("POST", "GET"):
                raise HttpError(405, "repository index takes POST")
            await _send(send, 200, orjson.dumps(self.dp.repository_index()), [_JSON])
            return
        if len(rest) == 3 and rest[0] == "models" and rest[2] in ("load", "unload"):
            self._only(scope["method"], "POST")
            name, action = rest[1], rest[2]
            body = await self._body(scope, receive)
            params: dict[str, Any] = {}
            if body.strip():
                if len(body) > 1 << 20:
                    raise TooLarge("a repository request body is at most 1 MiB")
                try:
                    doc = orjson.loads(body)
                except orjson.JSONDecodeError as e:
                    raise ProtocolError(f"request body is not valid JSON: {e}") from e
                if not isinstance(doc, dict):
                    raise ProtocolError("request body must be a JSON object")
                params = doc.get("parameters") or {}
                if not isinstance(params, dict):
                    raise ProtocolError("'parameters' must be a JSON object")
            if action == "load":
                await self.dp.load(name, params)
            else:
                await self.dp.unload(name)
            await _send(send, 200, b"", [])
            return
        raise HttpError(404, f"no such repository endpoint: /v2/repository/{'/'.join(rest)[:200]}")

    def metrics_text(self) -> bytes:
        out: bytes = generate_latest(self.dp.metrics.registry)
        return out

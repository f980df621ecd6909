"""HTTP adapter: a raw ASGI application over the dataplane, served by uvicorn.

Raw ASGI on uvicorn (httptools parser, uvloop) with orjson was the fastest of
the well-kept options measured for this job (see the commit that introduced
it): a framework's routing and request objects cost more than the small
routing table below. HTTP parsing is uvicorn's; this module only maps paths
to dataplane calls and exceptions to the protocol's status codes and JSON
error bodies (`{"error": "..."}`).

Abuse never reaches the model or blocks other clients: bodies over the limit
get 413 before they are read, a client that does not finish its body within
the timeout gets 408, and each connection is its own coroutine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edge_runtime.codec import ProtocolError
from edge_runtime.dataplane import DataPlane, LoadRefused, NotFound
from edge_runtime.model import ModelError

log = logging.getLogger("edge_runtime.server")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_MAX_BODY = 64 << 20
DEFAULT_BODY_TIMEOUT = 30.0

_JSON = (b"content-type", b"application/json")
_OCTET = (b"content-type", b"application/octet-stream")
_CLOSE = (b"connection", b"close")


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


class App:
    def __init__(
        self,
        dataplane: DataPlane,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY,
        body_timeout_s: float = DEFAULT_BODY_TIMEOUT,
        serve_metrics: bool = True,
    ) -> None:
        self.dp = dataplane
        self.max_body = max_body_bytes
        self.body_timeout = body_timeout_s
        self.serve_metrics = serve_metrics

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
                    self.dp.readiness()
                except Exception as e:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.dp.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError as e:
                raise HttpError(400, f"Content-Length is not an integer: {declared!r}", close=True) from e
            if n > self.max_body:
                raise HttpError(
                    413, f"request body of {n} bytes exceeds the limit of {self.max_body} bytes", close=True
                )
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        raise _Disconnected()
                    chunk = msg.get("body", b"")
                    if chunk:
                        size += len(chunk)
                        if size > self.max_body:
                            raise HttpError(413, f"request body exceeds the limit of {self.max_body} bytes", close=True)
                        chunks.append(chunk)
                    if not msg.get("more_body", False):
                        break
        except TimeoutError as e:
            raise HttpError(
                408, f"request body not received within {self.body_timeout:g}s (slow client)", close=True
            ) from e
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._route(scope, receive, send)
        except HttpError as e:
            await _send_error(send, e.status, e.message, e.close)
        except _Disconnected:
            return
        except ProtocolError as e:
            await _send_error(send, 400, str(e))
        except NotFound as e:
            await _send_error(send, 404, str(e))
        except LoadRefused as e:
            await _send_error(send, 400, str(e))
        except ModelError as e:
            await _send_error(send, 500, str(e))
        except Exception as e:  # the server answers; it never dies on a request
            log.exception("unhandled error", extra={"path": scope.get("path")})
            await _send_error(send, 500, f"internal error: {type(e).__name__}: {e}")

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        parts = scope["path"].strip("/").split("/")
        n = len(parts)
        if n >= 4 and parts[0] == "v2" and parts[1] == "models":
            name = parts[2]
            version: str | None = None
            rest = parts[3:]
            if len(rest) >= 2 and rest[0] == "versions":
                version = rest[1]
                rest = rest[2:]
            if rest == ["infer"]:
                if method != "POST":
                    raise HttpError(405, "infer takes POST")
                await self._infer(scope, receive, send, name, version)
                return
            if rest == ["ready"]:
                self._only(method, "GET")
                await self._bool(send, self._model_ready(name, version))
                return
            if not rest:
                self._only(method, "GET")
                await _send(send, 200, orjson.dumps(self.dp.model_metadata(name, version)), [_JSON])
                return
        elif n == 3 and parts[0] == "v2" and parts[1] == "models":
            self._only(method, "GET")
            await _send(send, 200, orjson.dumps(self.dp.model_metadata(parts[2], None)), [_JSON])
            return
        elif parts[:2] == ["v2", "health"] and n == 3:
            self._only(method, "GET")
            if parts[2] == "live":
                await _send(send, 200, b"", [])
                return
            if parts[2] == "ready":
                j = self.dp.readiness()
                if j.ready:
                    await _send(send, 200, b"", [])
                else:
                    # The protocol says 4xx and an empty body; the reason goes in a header for people.
                    await _send(send, 400, b"", [(b"x-edgeai-not-ready", j.reason.encode("utf-8", "replace"))])
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
        raise HttpError(404, f"no such endpoint: {method} {scope['path']}")

    @staticmethod
    def _only(method: str, allowed: str) -> None:
        if method != allowed:
            raise HttpError(405, f"method {method} not allowed here, use {allowed}")

    def _model_ready(self, name: str, version: str | None) -> bool:
        try:
            self.dp.served(name, version)
        except NotFound:
            return False
        return True

    @staticmethod
    async def _bool(send: Send, ok: bool) -> None:
        await _send(send, 200 if ok else 400, b"", [])

    async def _infer(self, scope: Scope, receive: Receive, send: Send, name: str, version: str | None) -> None:
        self.dp.served(name, version)  # unknown model: 404 before reading a body we would discard
        body = await self._body(scope, receive)
        result = await self.dp.infer(name, version, body, _header(scope, b"inference-header-content-length"))
        if result.header_length is None:
            headers = [(b"content-type", result.content_type.encode())]
        else:
            headers = [
                (b"content-type", result.content_type.encode()),
                (b"inference-header-content-length", str(result.header_length).encode()),
            ]
        if result.source != "edge":
            headers.append((b"x-edgeai-source", result.source.encode()))
        await _send(send, 200, result.body, headers)

    async def _repository(self, scope: Scope, receive: Receive, send: Send, rest: list[str]) -> None:
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
        raise HttpError(404, f"no such repository endpoint: /v2/repository/{'/'.join(rest)}")

    def metrics_text(self) -> bytes:
        out: bytes = generate_latest(self.dp.metrics.registry)
        return out

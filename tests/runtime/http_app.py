"""A small ASGI app served by the runtime's HTTP server, to test the server itself from real sockets.

    python -m tests.runtime.http_app PORT SHUTDOWN_MARKER [--keep-alive-timeout-s S] [--max-connections N]

POST /echo        reads the body whole, answers {"n": its length, "sha256": its digest, "path": ..., "query": ...}
GET  /slow?ms=N   sleeps N ms, then answers {"slept": N}
GET  /stats       {"disconnects": ..., "in_flight": ..., "served": ...}
The lifespan's shutdown writes SHUTDOWN_MARKER (a test checks that it ran).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from edge_runtime.transport.http_limits import Limits
from edge_runtime.transport.http_server import HttpServer

STATS = {"disconnects": 0, "in_flight": 0, "served": 0}


async def _answer(send: Any, status: int, doc: Any) -> None:
    body = json.dumps(doc).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Any) -> bytes | None:
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            STATS["disconnects"] += 1
            return None
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            return b"".join(chunks)


def make_app(marker: Path) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    marker.write_text(json.dumps(STATS))
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        STATS["in_flight"] += 1
        try:
            await _http(scope, receive, send)
        finally:
            STATS["in_flight"] -= 1
            STATS["served"] += 1

    return app


async def _http(scope: dict[str, Any], receive: Any, send: Any) -> None:
    path = scope["path"]
    if path == "/echo":
        body = await _read_body(receive)
        if body is not None:
            digest = hashlib.sha256(body).hexdigest()
            await _answer(send, 200, {"n": len(body), "sha256": digest, "path": path,
                                      "query": scope["query_string"].decode()})
    elif path == "/slow":
        ms = int(scope["query_string"].decode().partition("=")[2] or 0)
        await asyncio.sleep(ms / 1000)
        await _answer(send, 200, {"slept": ms})
    elif path == "/stats":
        await _answer(send, 200, STATS)
    else:
        await _answer(send, 404, {"error": f"no such endpoint: {path}"})


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("marker", type=Path)
    p.add_argument("--keep-alive-timeout-s", type=float, default=15.0)
    p.add_argument("--max-connections", type=int, default=512)
    args = p.parse_args(argv)
    server = HttpServer(
        make_app(args.marker),
        Limits(None, max_connections=args.max_connections),
        host="127.0.0.1",
        port=args.port,
        keep_alive_timeout_s=args.keep_alive_timeout_s,
    )
    return 0 if server.run() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

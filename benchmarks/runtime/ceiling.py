"""The serving stack's own ceiling: the runtime's HTTP and gRPC servers answering a fixed response, no model work.

    python -m benchmarks.runtime.ceiling HTTP_PORT GRPC_PORT REST_ANSWER GRPC_ANSWER

Same stack as `edge-runtime serve` (the runtime's own HTTP/1.1 server,
edge_runtime/transport/http_server.py: httptools' parser on uvloop, with the
connection limits; its own HTTP/2 for gRPC, edge_runtime/transport/grpc_h2.py,
in the same event loop; polling after each answer as `serve` does by default;
`--grpc-server grpcio` as the fifth argument: grpcio's asyncio server); each
request's body is read whole, as the runtime reads it, and
answered with the bytes of a real answer precomputed from the model. The gap
between this row and the runtime's row is the runtime's own work (decode,
validation, the model run, encode, metrics).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def main(argv: list[str]) -> int:
    import grpc

    from edge_runtime import oip
    from edge_runtime.transport.busy_poll import DEFAULT_WINDOW_US, BusyPoll
    from edge_runtime.transport.grpc_h2 import GrpcH2Server
    from edge_runtime.transport.http_limits import Limits
    from edge_runtime.transport.http_server import HttpServer

    http_port, grpc_port = int(argv[0]), int(argv[1])
    grpcio = argv[4:] == ["--grpc-server", "grpcio"]
    rest_answer = Path(argv[2]).read_bytes()
    grpc_answer = Path(argv[3]).read_bytes()
    poll = BusyPoll(DEFAULT_WINDOW_US / 1e6)  # as `serve` polls by default (--busy-poll-us)
    ok_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(rest_answer)).encode())]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":

                    async def infer(data: bytes, context: Any) -> bytes:
                        return grpc_answer

                    if grpcio:
                        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
                        handler = grpc.method_handlers_generic_handler(
                            oip.SERVICE,
                            {"ModelInfer": grpc.unary_unary_rpc_method_handler(
                                infer, request_deserializer=lambda b: b, response_serializer=lambda b: b)},
                        )
                        server.add_generic_rpc_handlers((handler,))
                        server.add_insecure_port(f"127.0.0.1:{grpc_port}")
                        await server.start()
                    else:
                        fixed = SimpleNamespace(methods=lambda: {"ModelInfer": (infer, bytes)})
                        await GrpcH2Server(fixed, "127.0.0.1", grpc_port,  # type: ignore[arg-type]
                                           max_message_bytes=64 << 20, busy_poll=poll).start()
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        while True:  # read the whole body, as the runtime does
            msg = await receive()
            if not msg.get("more_body", False):
                break
        if scope["method"] == "GET":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": list(ok_headers)})
        await send({"type": "http.response.body", "body": rest_answer})

    server = HttpServer(app, Limits(None), host="127.0.0.1", port=http_port, busy_poll=poll)
    return 0 if server.run() else 1


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    sys.exit(main(sys.argv[1:]))

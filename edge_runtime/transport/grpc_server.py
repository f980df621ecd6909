"""gRPC adapter: `inference.GRPCInferenceService` on grpcio's asyncio server, over the typed dataplane.

Decode (`grpc_codec`) -> dataplane -> encode, like the REST adapter, with the
same guarantees: verified models only, batching, hot swap, fallback,
readiness judgement, metrics labelled `protocol="grpc"`. Errors map to gRPC
status codes with a message naming the problem: a request that does not fit
the model INVALID_ARGUMENT, an unknown model NOT_FOUND, a message over the
limit RESOURCE_EXHAUSTED (grpcio refuses it before it is read), a failure of
the model INTERNAL.

Handlers are registered through a generic handler with the message classes
of `oip` (a private descriptor pool): no generated stubs in this package.
Requests arrive as raw bytes and are parsed here, so a malformed message is
an INVALID_ARGUMENT answer; a large one is decoded off the event loop unless
its tensors are raw numeric bytes (zero-copy: the hand-over would cost more).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from edge_runtime import oip
from edge_runtime.core.access import RepositoryAccess, grpc_peer_host
from edge_runtime.core.grpc_codec import (
    decode_infer_request,
    dict_to_parameters,
    encode_infer_response,
    raw_numeric,
    split_raw_input_contents,
)
from edge_runtime.core.protocol import (
    Forbidden,
    InferenceRequest,
    InputRejected,
    LoadRefused,
    ModelError,
    NotFound,
    ProtocolError,
    TooLarge,
)
from edge_runtime.serving.dataplane import DataPlane
from edge_runtime.serving.offload import Decoder

log = logging.getLogger("edge_runtime.grpc")

_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (ProtocolError, grpc.StatusCode.INVALID_ARGUMENT),
    (InputRejected, grpc.StatusCode.INVALID_ARGUMENT),
    (LoadRefused, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Forbidden, grpc.StatusCode.PERMISSION_DENIED),
    (TooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ModelError, grpc.StatusCode.INTERNAL),
)

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _raw(data: bytes) -> bytes:
    return data


def _parse(cls: Any, data: bytes) -> Any:
    try:
        return cls.FromString(data)
    except Exception as e:  # google.protobuf.message.DecodeError and friends
        raise ProtocolError(f"request is not a valid {cls.DESCRIPTOR.name} message: {e}") from e


class GrpcService:
    def __init__(
        self,
        dataplane: DataPlane,
        *,
        repository_access: RepositoryAccess | None = None,
        decoder: Decoder | None = None,
    ) -> None:
        self.dp = dataplane
        self.access = repository_access or RepositoryAccess()
        self.decoder = decoder or Decoder()

    # --- plumbing ---------------------------------------------------------------------

    def _wrap(self, request_cls: Any, fn: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]) -> Handler:
        async def handler(data: bytes, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await fn(_parse(request_cls, data), context)
            except Exception as e:
                await self._abort(context, e)
                raise  # not reached: abort raises

        return handler

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext, e: Exception) -> None:
        if isinstance(e, asyncio.CancelledError | grpc.aio.AbortError):
            raise e
        for cls, code in _CODES:
            if isinstance(e, cls):
                await context.abort(code, str(e))
        log.exception("unhandled error in a gRPC call")
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}")

    def methods(self) -> dict[str, tuple[Handler, Callable[[Any], bytes]]]:
        """Each method of the service: its handler (raw request bytes and a context in, a message out) and
        the response's serializer. grpcio's server (`handler`) and the runtime's own HTTP/2 server
        (grpc_h2.py) serve the same table."""
        def unary(request_cls: Any, response_cls: Any, fn: Handler) -> tuple[Handler, Callable[[Any], bytes]]:
            return self._wrap(request_cls, fn), response_cls.SerializeToString

        return {
            "ServerLive": unary(oip.ServerLiveRequest, oip.ServerLiveResponse, self.server_live),
            "ServerReady": unary(oip.ServerReadyRequest, oip.ServerReadyResponse, self.server_ready),
            "ModelReady": unary(oip.ModelReadyRequest, oip.ModelReadyResponse, self.model_ready),
            "ServerMetadata": unary(oip.ServerMetadataRequest, oip.ServerMetadataResponse, self.server_metadata),
            "ModelMetadata": unary(oip.ModelMetadataRequest, oip.ModelMetadataResponse, self.model_metadata),
            "RepositoryIndex": unary(oip.RepositoryIndexRequest, oip.RepositoryIndexResponse, self.repository_index),
            "RepositoryModelLoad": unary(
                oip.RepositoryModelLoadRequest, oip.RepositoryModelLoadResponse, self.repository_load
            ),
            "RepositoryModelUnload": unary(
                oip.RepositoryModelUnloadRequest, oip.RepositoryModelUnloadResponse, self.repository_unload
            ),
            # ModelInfer parses its own bytes: large messages off the event loop.
            "ModelInfer": (self.model_infer, oip.ModelInferResponse.SerializeToString),
        }

    def handler(self) -> grpc.GenericRpcHandler:
        methods = {
            name: grpc.unary_unary_rpc_method_handler(fn, request_deserializer=_raw, response_serializer=out)
            for name, (fn, out) in self.methods().items()
        }
        return grpc.method_handlers_generic_handler(oip.SERVICE, methods)

    # --- health and metadata ------------------------------------------------------------------

    async def server_live(self, req: Any, context: grpc.aio.ServicerContext) -> Any:
        return oip.ServerLiveResponse(live=True)

    async def server_ready(self, req: Any, context: grpc.aio.ServicerContext) -> Any:
        return oip.ServerReadyResponse(ready=self.dp.readiness().ready)

    async def model_ready(self, req: Any, context: grpc.aio.ServicerContext) -> Any:
        return oip.ModelReadyResponse(ready=self.dp.model_ready(req.name, req.version or None))

    async def server_metadata(self, req: Any, context: grpc.aio.ServicerContext) -> Any:
        doc = self.dp.server_metadata()
        return oip.ServerMetadataResponse(name=doc["name"], version=doc["version"], extensions=doc["extensions"])

    async def model_metadata(self, req: Any, context: grpc.aio.ServicerContext) -> Any:
        doc = self.dp.model_metadata(req.name, req.version or None)
        out = oip.ModelMetadataResponse(name=doc["name"], versions=doc["versions"], platform=doc["platform"])
        for key in ("inputs", "outputs"):
            for t in doc[key]:
                getattr(out, key).add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        dict_to_parameters(out.parameters, doc["parameters"])
        return out

    # --- inference -------------------------------------------------------------------------------

    async def model_infer(self, data: bytes, context: grpc.aio.ServicerContext) -> Any:
        start = time.perf_counter()
        name = ""
        version: str | None = None
        try:
            size = len(data)
            msg: Any = None
            raw: list[memoryview] | None = None
            if size <= self.decoder.inline_bytes:
                msg = _parse(oip.ModelInferRequest, data)  # small: copying its bytes costs nothing
            elif size <= self.decoder.zero_copy_inline_bytes:
                rest, raw = split_raw_input_contents(data)  # large tensors stay views of `data`
                msg = _parse(oip.ModelInferRequest, rest)
            if msg is not None and (raw is None or raw_numeric(msg, raw)):
                name, version = msg.model_name, msg.model_version or None
                self.dp.served(name, version)
                req = decode_infer_request(msg, size, raw)
            else:
                name, version, req = await self._decode_large(data, None if msg is None else (msg, raw))
        except (ProtocolError, TooLarge, NotFound) as e:
            if not isinstance(e, NotFound) and name:
                self.dp.client_error(name, version, "grpc", time.perf_counter() - start)
            await self._abort(context, e)
            raise
        try:
            resp = await self.dp.infer(name, version, req, "grpc", start)
            return encode_infer_response(resp)
        except Exception as e:
            await self._abort(context, e)
            raise

    async def _decode_large(
        self, data: bytes, parsed: tuple[Any, list[memoryview] | None] | None
    ) -> tuple[str, str | None, InferenceRequest]:
        """Typed contents (a conversion per element) or BYTES, or a message too large to parse on the loop:
        in a worker thread (`parsed`: the message and its raw contents, when they were already split out)."""

        def work() -> tuple[str, str | None, InferenceRequest]:
            msg, raw = parsed if parsed is not None else (_parse(oip.ModelInferRequest, data), None)
            name, version = msg.model_name, msg.model_version or None
            self.dp.served(name, version)  # a dict lookup: safe from a worker thread
            return name, version, decode_infer_request(msg, len(data), raw)

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.decoder.threads, work)

    # --- repository ------------------------------------------------------------------------------

    def _check_access(self, context: grpc.aio.ServicerContext) -> None:
        auth = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                auth = value if isinstance(value, str) else value.decode("latin-1")
        self.access.check(grpc_peer_host(context.peer()), auth)

    async def repository_index(self, req: Any, context: grpc.aio.ServicerContext) -> Any:
        self._check_access(context)
        out = oip.RepositoryIndexResponse()
        for e in self.dp.repository_index():
            if req.ready and e["state"] != "READY":
                continue
            out.models.add(name=e["name"], version=e.get("version", ""), state=e["state"], reason=e["reason"])
        return out

    async def repository_load(self, req: Any, context: grpc.aio.ServicerContext) -> Any:
        self._check_access(context)
        params: dict[str, Any] = {}
        for key, p in req.parameters.items():
            which = p.WhichOneof("parameter_choice")
            if which == "bytes_param":
                raise ProtocolError(f"parameter '{key}': file contents cannot be loaded, only models in the cache")
            params[key] = getattr(p, which) if which is not None else None
        await self.dp.load(req.model_name, params)
        return oip.RepositoryModelLoadResponse()

    async def repository_unload(self, req: Any, context: grpc.aio.ServicerContext) -> Any:
        self._check_access(context)
        await self.dp.unload(req.model_name)
        return oip.RepositoryModelUnloadResponse()


def make_server(
    service: GrpcService,
    host: str,
    port: int,
    *,
    max_message_bytes: int,
    max_concurrent_streams: int = 256,
    max_concurrent_rpcs: int = 1024,
) -> tuple[grpc.aio.Server, int]:
    """An asyncio gRPC server on host:port (0: any free port); returns it and the bound port."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.max_concurrent_streams", max_concurrent_streams),
        # Never share the port with another process silently (grpcio sets SO_REUSEPORT by default).
        ("grpc.so_reuseport", 0),
        # Idle clients are let go; pings are allowed so that well-behaved clients keep their channel.
        ("grpc.max_connection_idle_ms", 300_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]
    # Calls past max_concurrent_rpcs are answered RESOURCE_EXHAUSTED at once instead of piling up;
    # grpcio bounds request metadata (headers) itself (8 KiB soft, 16 KiB hard by default).
    server = grpc.aio.server(options=options, maximum_concurrent_rpcs=max_concurrent_rpcs)
    server.add_generic_rpc_handlers((service.handler(),))
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(bind)
    if bound == 0:
        raise OSError(f"cannot bind the gRPC port {bind}")
    return server, bound

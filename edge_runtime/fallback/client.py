"""Edge-cloud fallback: low-confidence requests go to a cloud v2 endpoint, over REST or gRPC.

The dataplane hands over the typed request; it is re-encoded for the cloud's
protocol (`protocol="rest"`: JSON header + binary tensors; `"grpc"`:
ModelInfer with raw contents), so a cloud that speaks only gRPC works too.
When the cloud answers in time, its typed answer is returned (and the
client's transport encodes it). When it does not (down, slow, overloaded),
the edge answer is returned marked as such, the breaker counts the failure
(once open, later requests do not wait on the cloud at all), and the request
goes to the durable hard-example queue (stored as the REST body the cloud
gets: JSON, or the binary extension with `binary=True` or a gRPC cloud, which
gets it re-encoded to ModelInfer). A background task drains the queue
whenever the breaker lets a call through:
- delivered (200 / OK): removed;
- worth retrying (network errors, 408, 425, 429, 5xx; gRPC UNAVAILABLE,
  DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNKNOWN): kept,
  retried with exponential backoff, honouring `Retry-After`;
- refused for good (any other answer): dropped, counted by reason and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from edge_runtime.core.codec import decode_request, decode_response_typed, encode_request_typed, parse_header_length
from edge_runtime.core.fallback_policy import BREAKER_STATES_NUM, Breaker
from edge_runtime.core.protocol import InferenceRequest, InferenceResponse, ProtocolError, RequestedOutput
from edge_runtime.fallback.hardqueue import HardExampleQueue
from edge_runtime.telemetry.metrics import RuntimeMetrics

log = logging.getLogger("edge_runtime.fallback")

RETRY_HTTP = frozenset({408, 425, 429})
RETRY_GRPC = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "INTERNAL", "UNKNOWN"})
MAX_BACKOFF_S = 60.0
MAX_CLOUD_ANSWER_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class CloudAnswer:
    ok: bool
    retry: bool  # worth trying again later
    status: str  # "200", "429", "UNAVAILABLE", "network"...
    response: InferenceResponse | None = None
    retry_after_s: float | None = None


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def http_retryable(status: int) -> bool:
    return status in RETRY_HTTP or status >= 500


class _RestCloud:
    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def infer_url(self, model: str) -> str:
        # A full infer URL is used as is (the cloud may name the model differently); a base URL
        # gets the standard v2 path for this model.
        if self.url.endswith("/infer"):
            return self.url
        return f"{self.url}/v2/models/{model}/infer"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, model: str, body: bytes, header_length: int | None) -> CloudAnswer:
        assert self._session is not None
        headers = {"Content-Type": "application/octet-stream" if header_length is not None else "application/json"}
        if header_length is not None:
            headers["Inference-Header-Content-Length"] = str(header_length)
        try:
            async with self._session.post(
                self.infer_url(model), data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            ) as resp:
                if resp.status != 200:
                    return CloudAnswer(
                        False, http_retryable(resp.status), str(resp.status),
                        retry_after_s=retry_after(resp.headers.get("Retry-After")),
                    )
                data = await resp.content.read(MAX_CLOUD_ANSWER_BYTES + 1)
                if len(data) > MAX_CLOUD_ANSWER_BYTES:
                    return CloudAnswer(False, False, "answer_too_large")
                hl = parse_header_length(resp.headers.get("Inference-Header-Content-Length"), len(data))
                return CloudAnswer(True, False, "200", decode_response_typed(data, hl))
        except ProtocolError as e:
            log.warning("cloud answer is not a valid v2 response", extra={"error": str(e)})
            return CloudAnswer(False, False, "bad_answer")
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.warning("cloud fallback failed", extra={"model": model, "error": str(e) or type(e).__name__})
            return CloudAnswer(False, True, "network")


class _GrpcCloud:
    def __init__(self, target: str, timeout_s: float) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._channel: Any = None
        self._call: Any = None

    async def start(self) -> None:
        import grpc

        from edge_runtime import oip

        self._channel = grpc.aio.insecure_channel(
            self.target, options=[("grpc.max_receive_message_length", MAX_CLOUD_ANSWER_BYTES)]
        )
        self._call = self._channel.unary_unary(
            oip.method("ModelInfer"),
            request_serializer=oip.ModelInferRequest.SerializeToString,
            response_deserializer=_raw,
        )

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def send(self, model: str, body: bytes, header_length: int | None) -> CloudAnswer:
        import grpc

        from edge_runtime import oip
        from edge_runtime.core.grpc_codec import decode_infer_response, encode_infer_request

        req = decode_request(body, header_length)
        try:
            data = await self._call(encode_infer_request(model, req), timeout=self.timeout_s)
            msg = oip.ModelInferResponse.FromString(data)
            return CloudAnswer(True, False, "OK", decode_infer_response(msg, len(data)))
        except grpc.aio.AioRpcError as e:
            code = e.code().name
            if code != "DEADLINE_EXCEEDED" and code != "UNAVAILABLE":
                log.warning("cloud refused a fallback", extra={"model": model, "code": code, "error": e.details()})
            return CloudAnswer(False, code in RETRY_GRPC, code)
        except ProtocolError as e:
            log.warning("cloud answer is not a valid v2 response", extra={"error": str(e)})
            return CloudAnswer(False, False, "bad_answer")
        except Exception as e:  # a broken answer must not lose the example
            log.warning("cloud fallback failed", extra={"model": model, "error": str(e) or type(e).__name__})
            return CloudAnswer(False, True, "network")


def _raw(data: bytes) -> bytes:
    return data


class Fallback:
    def __init__(
        self,
        url: str,
        threshold: float,
        timeout_s: float,
        queue: HardExampleQueue,
        metrics: RuntimeMetrics,
        breaker: Breaker | None = None,
        drain_interval_s: float = 0.5,
        protocol: str = "rest",
        binary: bool = False,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"fallback threshold must be within 0..1, got {threshold}")
        if protocol == "rest":
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"fallback url must be http:// or https://, got {url!r}")
            self.cloud: _RestCloud | _GrpcCloud = _RestCloud(url, timeout_s)
        elif protocol == "grpc":
            target = url.removeprefix("grpc://")
            if "://" in target or not target:
                raise ValueError(f"a gRPC fallback url is host:port or grpc://host:port, got {url!r}")
            self.cloud = _GrpcCloud(target, timeout_s)
        else:
            raise ValueError(f"fallback protocol must be rest or grpc, got {protocol!r}")
        self.protocol = protocol
        # REST clouds get JSON unless told they take the binary tensor extension (not every v2 server
        # does: MLServer does not); a gRPC cloud always gets raw contents.
        self.binary = binary or protocol == "grpc"
        self.url = url
        self.threshold = threshold
        self.timeout_s = timeout_s
        self.queue = queue
        self.metrics = metrics
        self.breaker = breaker or Breaker()
        self.drain_interval_s = drain_interval_s
        self._drain_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._backoff = 0.0
        self._not_before = 0.0

    async def start(self) -> None:
        await self.cloud.start()
        self._drain_task = asyncio.get_running_loop().create_task(self._drain_loop())
        self._update_gauges(await asyncio.to_thread(self.queue.depth))

    async def close(self) -> None:
        if self._drain_task is not None:
            self._drain_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain_task
        await self.cloud.close()
        await asyncio.to_thread(self.queue.close)

    def _update_gauges(self, depth: int | None = None) -> None:
        self.metrics.breaker_state.set(BREAKER_STATES_NUM[self.breaker.state])
        if depth is not None:
            self.metrics.hard_queue_depth.set(depth)

    async def forward(self, model: str, req: InferenceRequest) -> tuple[InferenceResponse | None, str, int]:
        """Try the cloud for one hard request: (answer or None, outcome, hard examples dropped to queue it)."""
        if asyncio.current_task() is None:
            # A call the transport started by hand (transport/eager.py) runs in no task until it first waits;
            # aiohttp's and grpcio's timeouts need one. One bare yield moves the call into its task.
            await asyncio.sleep(0)
        body, header_length = encode_request_typed(self._for_cloud(req), binary=self.binary)
        if not self.breaker.allow(time.monotonic()):
            dropped = await self._enqueue(model, body, header_length)
            self._count(model, "breaker_open")
            return None, "breaker_open", dropped
        answer = await self.cloud.send(model, body, header_length)
        if answer.ok:
            self.breaker.success()
            self._update_gauges()
            self._count(model, "cloud")
            return answer.response, "cloud", 0
        if not answer.retry:
            # The cloud is up but refuses this request for good: retrying it later will not help, and
            # the cloud being reachable is not a breaker failure.
            self.breaker.success()
            self._update_gauges()
            self._count(model, "cloud_rejected")
            return None, "cloud_rejected", 0
        self.breaker.failure(time.monotonic())
        self._update_gauges()
        dropped = await self._enqueue(model, body, header_length)
        self._count(model, "cloud_unreachable")
        return None, "cloud_unreachable", dropped

    def _for_cloud(self, req: InferenceRequest) -> InferenceRequest:
        """The request as the cloud gets it: the same tensors and outputs, answers asked in the cloud's
        own encoding (the edge re-encodes the answer for its client, whatever the client asked)."""
        outputs = [RequestedOutput(o.name, True if self.binary else None) for o in req.outputs] if req.outputs else None
        params = {k: v for k, v in req.parameters.items() if k != "binary_data_output"}
        return InferenceRequest(req.inputs, outputs, req.id, params, binary_output=self.binary)

    def _count(self, model: str, outcome: str) -> None:
        self.metrics.fallbacks.labels(model, outcome).inc()

    async def _enqueue(self, model: str, body: bytes, header_length: int | None) -> int:
        try:
            _, dropped = await asyncio.to_thread(self.queue.put, model, body, header_length)
        except ValueError as e:
            self.metrics.hard_dropped.labels("too_large").inc()
            log.warning("hard example not queued", extra={"model": model, "error": str(e)})
            return 0
        if dropped:
            self.metrics.hard_dropped.labels("queue_full").inc(len(dropped))
        self._update_gauges(await asyncio.to_thread(self.queue.depth))
        self._wake.set()
        return len(dropped)

    async def drain_once(self) -> bool:
        """Deliver (or drop for good) the oldest queued example if allowed now; True if it left the queue."""
        now = time.monotonic()
        if now < self._not_before:
            return False
        items = await asyncio.to_thread(self.queue.peek, 1)
        if not items or not self.breaker.allow(now):
            return False
        item = items[0]
        try:
            answer = await self.cloud.send(item.model, item.body, item.header_length)
        except ProtocolError as e:  # the stored body no longer decodes (a gRPC cloud): it never will
            answer = CloudAnswer(False, False, f"undecodable: {e}")
        if answer.retry:
            self.breaker.failure(time.monotonic())
            self._backoff = min(MAX_BACKOFF_S, max(self.drain_interval_s, self._backoff * 2))
            wait = max(self._backoff, answer.retry_after_s or 0.0)
            self._not_before = time.monotonic() + wait
            log.info(
                "cloud not taking hard examples now; will retry",
                extra={"status": answer.status, "retry_in_s": round(wait, 2), "id": item.id},
            )
            self._update_gauges()
            return False
        self.breaker.success()
        self._backoff = 0.0
        self._not_before = 0.0
        await asyncio.to_thread(self.queue.ack, item.id, delivered=answer.ok)
        if answer.ok:
            self.metrics.hard_drained.inc()
        else:
            self.metrics.hard_dropped.labels("cloud_rejected").inc()
            log.warning(
                "cloud refused a queued hard example for good; dropped it",
                extra={"id": item.id, "model": item.model, "status": answer.status},
            )
        self._update_gauges(await asyncio.to_thread(self.queue.depth))
        return True

    async def _drain_loop(self) -> None:
        while True:
            try:
                while await self.drain_once():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the drainer die silently
                log.exception("hard-example drain failed")
            self._wake.clear()
            wait = max(self.drain_interval_s, self._not_before - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

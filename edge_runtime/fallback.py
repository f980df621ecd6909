"""Edge-cloud fallback: low-confidence requests go to a cloud v2 endpoint.

When the cloud answers in time, its answer is returned. When it does not
(down, slow, 5xx), the edge answer is returned marked as such, the breaker
counts the failure (once open, later requests do not wait on the cloud at
all), and the request body is stored in the durable hard-example queue. A
background task drains that queue to the cloud whenever the breaker lets a
call through, so examples gathered offline reach the cloud once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import aiohttp

from edge_runtime.fallback_policy import BREAKER_STATES_NUM, Breaker
from edge_runtime.hardqueue import HardExampleQueue
from edge_runtime.metrics import RuntimeMetrics

log = logging.getLogger("edge_runtime.fallback")


@dataclass(frozen=True, slots=True)
class CloudAnswer:
    status: int
    body: bytes
    header_length: str | None
    content_type: str


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
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"fallback threshold must be within 0..1, got {threshold}")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"fallback url must be http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.threshold = threshold
        self.timeout_s = timeout_s
        self.queue = queue
        self.metrics = metrics
        self.breaker = breaker or Breaker()
        self.drain_interval_s = drain_interval_s
        self._session: aiohttp.ClientSession | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def infer_url(self, model: str) -> str:
        # A full infer URL is used as is (the cloud may name the model
        # differently); a base URL gets the standard v2 path for this model.
        if self.url.endswith("/infer"):
            return self.url
        return f"{self.url}/v2/models/{model}/infer"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._drain_task = asyncio.get_running_loop().create_task(self._drain_loop())
        self._update_gauges(await asyncio.to_thread(self.queue.depth))

    async def close(self) -> None:
        if self._drain_task is not None:
            self._drain_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain_task
        if self._session is not None:
            await self._session.close()
        await asyncio.to_thread(self.queue.close)

    def _update_gauges(self, depth: int | None = None) -> None:
        self.metrics.breaker_state.set(BREAKER_STATES_NUM[self.breaker.state])
        if depth is not None:
            self.metrics.hard_queue_depth.set(depth)

    async def _post(self, model: str, body: bytes, header_length: int | None) -> CloudAnswer:
        assert self._session is not None
        headers = {"Content-Type": "application/octet-stream" if header_length is not None else "application/json"}
        if header_length is not None:
            headers["Inference-Header-Content-Length"] = str(header_length)
        async with self._session.post(
            self.infer_url(model), data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
        ) as resp:
            data = await resp.read()
            return CloudAnswer(
                resp.status,
                data,
                resp.headers.get("Inference-Header-Content-Length"),
                resp.headers.get("Content-Type", "application/json"),
            )

    async def forward(self, model: str, body: bytes, header_length: int | None) -> tuple[CloudAnswer | None, str]:
        """Try the cloud for one hard request: (answer or None, outcome)."""
        now = time.monotonic()
        if not self.breaker.allow(now):
            await self._enqueue(model, body, header_length)
            self._count(model, "breaker_open")
            return None, "breaker_open"
        try:
            answer = await self._post(model, body, header_length)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.warning("cloud fallback failed", extra={"model": model, "error": str(e) or type(e).__name__})
            answer = None
        if answer is not None and answer.status == 200:
            self.breaker.success()
            self._update_gauges()
            self._count(model, "cloud")
            return answer, "cloud"
        if answer is not None and 400 <= answer.status < 500:
            # The cloud is up but refuses this request: retrying it later will
            # not help, and the cloud being reachable is not a breaker failure.
            self.breaker.success()
            self._update_gauges()
            self._count(model, "cloud_rejected")
            return None, "cloud_rejected"
        self.breaker.failure(time.monotonic())
        self._update_gauges()
        await self._enqueue(model, body, header_length)
        self._count(model, "cloud_unreachable")
        return None, "cloud_unreachable"

    def _count(self, model: str, outcome: str) -> None:
        self.metrics.fallbacks.labels(model, outcome).inc()

    async def _enqueue(self, model: str, body: bytes, header_length: int | None) -> None:
        try:
            _, dropped = await asyncio.to_thread(self.queue.put, model, body, header_length)
        except ValueError as e:
            self.metrics.hard_dropped.labels("too_large").inc()
            log.warning("hard example not queued", extra={"model": model, "error": str(e)})
            return
        if dropped:
            self.metrics.hard_dropped.labels("queue_full").inc(len(dropped))
        self._update_gauges(await asyncio.to_thread(self.queue.depth))
        self._wake.set()

    async def drain_once(self) -> bool:
        """Deliver the oldest queued example if the breaker allows; True if one was delivered."""
        items = await asyncio.to_thread(self.queue.peek, 1)
        if not items or not self.breaker.allow(time.monotonic()):
            return False
        item = items[0]
        try:
            answer = await self._post(item.model, item.body, item.header_length)
        except (aiohttp.ClientError, TimeoutError, OSError):
            answer = None
        if answer is None or answer.status >= 500:
            self.breaker.failure(time.monotonic())
            self._update_gauges()
            return False
        self.breaker.success()
        delivered = answer.status == 200
        await asyncio.to_thread(self.queue.ack, item.id, delivered=delivered)
        if delivered:
            self.metrics.hard_drained.inc()
        else:
            self.metrics.hard_dropped.labels("cloud_rejected").inc()
            log.warning(
                "cloud refused a queued hard example; dropped it",
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.drain_interval_s)

"""Dynamic batching: concurrent requests to one model are run as one batch.

Policy (pure functions below, tested on their own):
- only requests whose inputs agree on names, dtypes and every dimension but
  the first (the batch dimension) are combined, in arrival order;
- a batch grows up to `max_batch_size` rows; a request larger than that runs
  alone;
- the batcher never waits while the model is busy: requests that arrive while
  a batch runs form the next batch (with `parallel` runs, the next batch
  forms as soon as one of them is free). With `max_delay` > 0 it additionally waits
  up to that long for a batch to fill once the model is free; with 0 it runs
  whatever is queued at once, so a lone request pays no added latency.

A model that runs on the event loop itself (`run_inline`, a run shorter than
a thread hand-over) with no added delay is batched without a queue or a task:
the first request of a loop iteration schedules one callback, every request
that reaches the runner before it runs joins, and the callback runs them as
batches. The batch is the same (what arrived before the model could run); the
cost per request is a future instead of a queue hand-off and two task
switches, which for such a model is most of its serving cost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.serving.model import LoadedModel

BatchKey = tuple[tuple[str, str, tuple[int, ...]], ...]


def batch_key(feeds: dict[str, np.ndarray]) -> BatchKey:
    if len(feeds) == 1:  # the common case, without a sort
        for n, a in feeds.items():
            return ((n, a.dtype.str, a.shape[1:]),)
    return tuple(sorted((n, a.dtype.str, tuple(a.shape[1:])) for n, a in feeds.items()))


def batch_rows(feeds: dict[str, np.ndarray]) -> int:
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def fits(rows: int, add: int, max_batch_size: int) -> bool:
    return rows + add <= max_batch_size


def concat_feeds(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]}


def split_outputs(outputs: Sequence[np.ndarray], rows: Sequence[int]) -> list[list[np.ndarray]]:
    """Cut each batched output back into per-request slices (views, no copy)."""
    if len(rows) == 1:
        return [list(outputs)]
    result: list[list[np.ndarray]] = [[] for _ in rows]
    for out in outputs:
        start = 0
        for i, n in enumerate(rows):
            result[i].append(out[start : start + n])
            start += n
    return result


@dataclass(slots=True)
class _Job:
    feeds: dict[str, np.ndarray]
    rows: int
    key: BatchKey
    future: asyncio.Future[list[np.ndarray]]


def _fail(jobs: Sequence[_Job], e: Exception) -> None:
    for j in jobs:
        if not j.future.done():
            j.future.set_exception(e)


def _deliver(jobs: Sequence[_Job], outputs: Sequence[np.ndarray]) -> None:
    for j, part in zip(jobs, split_outputs(outputs, [j.rows for j in jobs]), strict=True):
        if not j.future.done():
            j.future.set_result(part)


class Runner:
    """Runs one model, inline or in a worker thread, with or without batching."""

    def __init__(
        self,
        model: LoadedModel,
        executor: Executor,
        *,
        max_batch_size: int = 0,
        max_delay: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
        parallel: int = 1,
    ) -> None:
        self.model = model
        self._executor = executor
        # Batches run at once (the executor has as many threads): see Settings.parallel_runs.
        self.parallel = max(1, parallel)
        self._slots = asyncio.Semaphore(self.parallel) if self.parallel > 1 else None
        self._running: set[asyncio.Task[None]] = set()
        self.max_batch_size = max_batch_size if model.batchable else 0
        self.max_delay = max(0.0, max_delay)
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Job | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._inline = self.max_batch_size > 1 and model.run_inline and self.max_delay <= 0
        self._pending: list[_Job] = []
        self.in_flight = 0

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1

    def queue_depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else len(self._pending)

    async def _run_direct(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.model.run_inline:
            return self.model.run(feeds)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.model.run, feeds)

    async def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.in_flight += 1
        try:
            if not self.batching:
                if self._on_batch is not None:
                    self._on_batch(batch_rows(feeds))
                return await self._run_direct(feeds)
            if self._inline:
                return await self._join_inline(feeds)
            if self._task is None:
                self._queue = asyncio.Queue()
                self._task = asyncio.get_running_loop().create_task(self._loop())
            assert self._queue is not None
            fut: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
            self._queue.put_nowait(_Job(feeds, batch_rows(feeds), batch_key(feeds), fut))
            return await fut
        finally:
            self.in_flight -= 1

    def _join_inline(self, feeds: dict[str, np.ndarray]) -> asyncio.Future[list[np.ndarray]]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[np.ndarray]] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._run_pending)
        self._pending.append(_Job(feeds, batch_rows(feeds), batch_key(feeds), fut))
        return fut

    def _run_pending(self) -> None:
        """Run what joined since the callback was scheduled: in arrival order, as few batches as the policy allows."""
        jobs, self._pending = self._pending, []
        start = 0
        while start < len(jobs):
            first = jobs[start]
            rows = first.rows
            end = start + 1
            while end < len(jobs) and jobs[end].key == first.key and fits(rows, jobs[end].rows, self.max_batch_size):
                rows += jobs[end].rows
                end += 1
            self._run_batch(jobs[start:end], rows)
            start = end

    def _run_batch(self, jobs: list[_Job], rows: int) -> None:
        """Run one batch of an inline model on the loop and settle its futures."""
        if self._on_batch is not None:
            self._on_batch(rows)
        try:
            outputs = self.model.run(concat_feeds([j.feeds for j in jobs]))
        except Exception as e:
            _fail(jobs, e)
            return
        _deliver(jobs, outputs)

    async def _loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        pending: _Job | None = None
        stopping = False
        while not stopping:
            first = pending if pending is not None else await queue.get()
            pending = None
            if first is None:
                break
            if self._slots is not None:
                # Wait for a free run before forming the batch: what queues meanwhile joins it.
                await self._slots.acquire()
            jobs = [first]
            rows = first.rows
            deadline: float | None = None
            while rows < self.max_batch_size:
                nxt: _Job | None
                if queue.empty():
                    if self.max_delay <= 0:
                        break
                    if deadline is None:
                        deadline = loop.time() + self.max_delay
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                else:
                    nxt = queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                if nxt.key != first.key or not fits(rows, nxt.rows, self.max_batch_size):
                    pending = nxt
                    break
                jobs.append(nxt)
                rows += nxt.rows
            if self._slots is None:
                await self._execute(jobs, rows)
            else:
                task = loop.create_task(self._execute_in_slot(jobs, rows))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _execute_in_slot(self, jobs: list[_Job], rows: int) -> None:
        assert self._slots is not None
        try:
            await self._execute(jobs, rows)
        finally:
            self._slots.release()

    def _run_joined(self, parts: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        # In the worker thread: joining a batch copies every request's tensors (32 images of 600 KB: a few
        # ms), which on the event loop would hold up every other client's parsing and answers meanwhile.
        return self.model.run(concat_feeds(parts))

    async def _execute(self, jobs: list[_Job], rows: int) -> None:
        if self.model.run_inline:
            self._run_batch(jobs, rows)
            return
        if self._on_batch is not None:
            self._on_batch(rows)
        try:
            loop = asyncio.get_running_loop()
            outputs = await loop.run_in_executor(self._executor, self._run_joined, [j.feeds for j in jobs])
        except Exception as e:
            _fail(jobs, e)
            return
        _deliver(jobs, outputs)

    async def close(self) -> None:
        """Finish queued requests, then stop the batch loop (inline batches finish within the loop iteration)."""
        if self._queue is not None and self._task is not None:
            self._queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def describe(self) -> dict[str, Any]:
        return {
            "batching": self.batching,
            "max_batch_size": self.max_batch_size,
            "max_batch_delay_ms": self.max_delay * 1000,
            "run_inline": self.model.run_inline,
            "parallel_runs": self.parallel,
        }

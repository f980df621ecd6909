"""Polling instead of sleeping for a moment after each answer (`serve --busy-poll-us`).

Why: on the machines measured, a CPU that goes idle between requests serves the
next one much slower. The same tabular request (decode, run, encode) took 31 us
in a loop, 55-61 us after sleeping 50-100 us, and 184 us after sleeping 1 ms.
Polling instead of sleeping for those 1 ms brought it back to 57 us (a 2-vCPU
VM, 2026-11-29; a halted vCPU is woken by the hypervisor and finds its caches
cold, and a bare-metal core in a deep C-state is similar). At one request in
flight, the gap between an answer and the client's next request is exactly
such a sleep, and the REST server's own time per request went from 150 us to
81 us p50 with polling (docs/benchmarks.md).

What it costs: after each answer the event loop keeps polling its sockets
(epoll with a zero timeout, then this callback, about 1-3 us a turn) instead
of sleeping, for at most the window. It never polls while a request waits on
something else (a model run or decode in a worker thread, the cloud): those
threads get the cores. Nor while answers go to several clients within a
window: the loop then has work coming from them anyway, and polling only took
a share of the cores from them (and from a load generator on the same 2 vCPUs:
-10% requests at 8 clients); it is for a client waiting on one answer at a
time, which is where the sleep between requests costs. So the CPU spent is
bounded by window x answers per second, and is zero on an idle device or one
busy with requests; the most it can take is one core, at about one answer per
window.

One per event loop, shared by the REST and the gRPC servers on it.
"""

from __future__ import annotations

import asyncio
import time

DEFAULT_WINDOW_US = 500


class BusyPoll:
    def __init__(self, window_s: float) -> None:
        self.window_s = max(0.0, window_s)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._until = 0.0
        self._polling = False
        self._since = 0.0
        self._client = 0  # id() of the connection last answered
        self._shared_until = 0.0  # answers to several clients came within a window: no polling until then
        self.waiting = 0  # requests in a task: waiting on something else, so no polling meanwhile
        self.polled_s = 0.0  # time spent polling in stretches that ended (see seconds())

    def seconds(self) -> float:
        """Time spent polling so far, the stretch in progress included."""
        if self._polling:
            return self.polled_s + time.monotonic() - self._since
        return self.polled_s

    def track(self, task: asyncio.Task[None]) -> None:
        """A request that went on in a task: no polling until it is done."""
        if self.window_s <= 0:
            return
        self.waiting += 1
        task.add_done_callback(self._done)

    def _done(self, _task: asyncio.Task[None]) -> None:
        self.waiting -= 1
        self._maybe_poll()

    def answered(self, loop: asyncio.AbstractEventLoop, client: object) -> None:
        """An answer went out to `client` (its connection): keep polling for its next request for the window,
        unless answers go to several clients at once."""
        if self.window_s <= 0:
            return
        self._loop = loop
        # Not loop.time(): uvloop's clock moves in whole milliseconds, twice the default window.
        now = time.monotonic()
        key = id(client)
        if key != self._client:
            if now < self._until or now < self._shared_until:
                # Another client was answered within the window: requests come from several, so the loop has
                # work coming anyway, and polling would only take a core's share from them (measured: -10%
                # tabular req/s at 8 clients, where the load generator shared the 2 vCPUs).
                self._shared_until = now + self.window_s
            self._client = key
        if now < self._shared_until:
            self._until = 0.0
            return
        self._until = now + self.window_s
        self._maybe_poll()

    def _maybe_poll(self) -> None:
        loop = self._loop
        if self._polling or self.waiting or loop is None or time.monotonic() >= self._until:
            return
        self._polling = True
        self._since = time.monotonic()
        loop.call_soon(self._poll)

    def _poll(self) -> None:
        # A callback that is ready makes the loop poll its sockets without blocking, then run it again.
        loop = self._loop
        assert loop is not None
        now = time.monotonic()
        if self.waiting or now >= self._until:
            self._polling = False
            self.polled_s += now - self._since
            return
        loop.call_soon(self._poll)

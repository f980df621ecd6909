"""The reconcile work queue: dedupe, no concurrent runs of a key, coalescing, backoff, gate."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Hashable

from edge_operator.controller.workqueue import Requeue, WorkQueue
from edge_operator.kube.errors import RetryableError


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_keys_are_deduplicated_and_a_key_never_runs_twice_at_once() -> None:
    async def main() -> None:
        seen: list[Hashable] = []
        running: set[Hashable] = set()
        overlap = False
        a_started, release, three = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def handler(key: Hashable) -> None:
            nonlocal overlap
            overlap |= key in running
            running.add(key)
            seen.append(key)
            if key == "a" and not release.is_set():
                a_started.set()
                await release.wait()  # "a" runs until the test lets it go
            running.discard(key)
            if len(seen) == 3:
                three.set()

        q = WorkQueue("t", handler, workers=4)
        q.gate.set()
        for _ in range(5):
            q.add("a")
        q.add("b")
        q.start()
        await asyncio.wait_for(a_started.wait(), 60)
        q.add("a")  # added while "a" runs: runs once more afterwards, never alongside
        q.add("a")
        release.set()
        await asyncio.wait_for(three.wait(), 60)

        async def settled() -> None:  # whatever else was queued has run before the count
            while q._processing or len(q):
                await asyncio.sleep(0.01)

        await asyncio.wait_for(settled(), 60)
        await q.stop()
        assert sorted(seen) == ["a", "a", "b"] and not overlap

    run(main())


def test_add_after_coalesces_and_keeps_the_earliest_time() -> None:
    async def main() -> None:
        ran = asyncio.Event()
        runs = 0

        async def handler(key: Hashable) -> None:
            nonlocal runs
            runs += 1
            ran.set()

        q = WorkQueue("t", handler, workers=2)
        q.gate.set()
        q.start()
        q.add_after("k", 300)
        q.add_after("k", 0.05)  # the earliest wins: it runs long before the test's 60 s deadline
        q.add_after("k", 600)
        await asyncio.wait_for(ran.wait(), 60)
        assert len(q) == 0  # the later times were coalesced into that one run, nothing left scheduled
        await q.stop()
        assert runs == 1

    run(main())


def test_failures_back_off_exponentially_and_success_resets() -> None:
    async def main() -> None:
        calls: list[float] = []
        loop = asyncio.get_running_loop()
        succeeded = asyncio.Event()

        async def handler(key: Hashable) -> None:
            calls.append(loop.time())
            if len(calls) < 3:
                raise RetryableError("not yet")
            succeeded.set()

        q = WorkQueue("t", handler, workers=1, base_delay=0.05, max_delay=1.0)
        q.gate.set()
        q.start()
        q.add("k")
        await asyncio.wait_for(succeeded.wait(), 60)
        await q.stop()
        assert len(calls) == 3
        gaps = [b - a for a, b in itertools.pairwise(calls)]
        assert gaps[0] >= 0.045 and gaps[1] >= 0.095  # 0.05 then 0.1: doubling, not a hot loop
        assert q.backoff("k") == 0.05  # success forgot the failures

    run(main())


def test_requeue_after_and_closed_gate_holds_work() -> None:
    async def main() -> None:
        calls = 0
        twice = asyncio.Event()

        async def handler(key: Hashable) -> Requeue | None:
            nonlocal calls
            calls += 1
            if calls == 2:
                twice.set()
            return Requeue(0.05) if calls == 1 else None

        q = WorkQueue("t", handler, workers=1)
        q.start()
        q.add("k")
        await asyncio.sleep(0.1)
        assert calls == 0  # not leader: nothing runs (however long the test waited)
        q.gate.set()
        await asyncio.wait_for(twice.wait(), 60)
        await q.stop()
        assert calls == 2

    run(main())


def test_a_key_wakes_one_idle_worker_not_all_of_them() -> None:
    async def main() -> None:
        done = 0
        all_done = asyncio.Event()

        async def handler(key: Hashable) -> None:
            nonlocal done
            done += 1
            if done == 200:
                all_done.set()

        q = WorkQueue("t", handler, workers=32)
        q.gate.set()
        q.start()
        for i in range(200):
            q.add(i)
            await asyncio.sleep(0)  # one at a time, as watch events come
        await asyncio.wait_for(all_done.wait(), 60)
        await q.stop()
        # With one wake-up for all idle workers, each key woke the other 31 for nothing (~6,000).
        assert q.empty_wakeups < 200

    run(main())


def test_a_delayed_key_runs_once_due_whatever_the_idle_workers_do() -> None:
    async def main() -> None:
        ran = asyncio.Event()

        async def handler(key: Hashable) -> None:
            ran.set()

        q = WorkQueue("t", handler, workers=3)
        q.add_after("k", 0.05)  # before the workers start
        q.gate.set()
        q.start()
        await asyncio.wait_for(ran.wait(), 60)
        await q.stop()

    run(main())

"""Running a request's coroutine at once, in the callback that completed the request.

A request served by a small model finishes without waiting on anything: run by
hand (`coro.send(None)`) from the protocol callback that parsed it, it is
answered there, with no task and no further turn of the loop (a task costs its
creation, a scheduled step and a done-callback: 4-6 us here, a tenth of such a
request's serving cost). One that does wait goes on in a task, from where it
stopped. Python 3.12's eager task factory does this for every task; 3.11 has
none, and only these call sites know their coroutines are safe to start early.

What a coroutine started this way must not do before its first wait: rely on
`asyncio.current_task()` (there is none yet), or on code that needs it
(`asyncio.timeout()`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any


class _Resumed:
    """Awaiting it drives coroutine `call` on from where it yielded `first`: what it yields goes to the task
    running this, what the task sends or throws in (a result, a cancellation) goes back to it."""

    __slots__ = ("call", "first")

    def __init__(self, call: Coroutine[Any, Any, None], first: Any) -> None:
        self.call = call
        self.first = first

    def __await__(self) -> Generator[Any, Any, None]:
        call, value = self.call, self.first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                call.close()
                raise
            except BaseException as e:  # a cancellation (or any exception) the task throws goes to the call
                try:
                    value = call.throw(e)
                except StopIteration:
                    return
                continue
            try:
                value = call.send(sent)
            except StopIteration:
                return


async def _resume(call: Coroutine[Any, Any, None], first: Any) -> None:
    await _Resumed(call, first)


def start(call: Coroutine[Any, Any, None], loop: asyncio.AbstractEventLoop) -> asyncio.Task[None] | None:
    """Run `call` until it first waits; None if it finished, else the task that carries it on.

    An exception it raises before waiting propagates to the caller, as it would not from a task: the
    coroutines started here catch their own."""
    try:
        waiting_on = call.send(None)
    except StopIteration:
        return None
    return loop.create_task(_resume(call, waiting_on))

"""Two of kopf 1.45's behaviours that fail at 10,000 edge nodes, replaced at start (`install`).

1. Toggle sets, woken only when their state flips: what makes startup linear in the objects watched.

kopf holds every object's handlers until every index handler of every object has run: one toggle
per object in one `ToggleSet(all)`, and each object's worker waits on the set. kopf 1.45's set wakes
every waiter each time a toggle is made, turned or dropped, so a start with n objects costs about n²
wake-ups (kopf#1243 is a neighbour of this). At 10,000 edge nodes (and their 10,000 EdgeDevices) the
operator spent its first minutes of CPU in `Condition.notify_all` and had not synced after 5 (py-spy,
docs/scale.md). This set counts its toggles that are on and notifies its waiters only when the set's
own state (all / any) changes, which is the only moment a waiter's predicate can change; the
toggles it makes keep their own condition for anyone waiting on one toggle.

kopf builds its sets from `aiotoggles.ToggleSet` at run time. Only `any` and `all` sets (the only
kinds kopf makes) are counted; any other function falls back to kopf's own evaluation.

2. A watch that the API server ends with a transient error is watched again, not fatal. kopf restarts
a watch only on 410 Gone and treats every other ERROR event as fatal: the operator exits. A busy API
server answers a watch from a resourceVersion its watch cache has not reached yet with a 504
(Timeout, ResourceVersionTooLarge): at 10,000 nodes this ended the operator mid-run. client-go
waits and watches again from the same resourceVersion; so does this: such an event ends the stream
after a pause, and kopf's own loop opens the next one from the last resourceVersion it saw.

3. Every watched object loses `metadata.managedFields` as it is decoded. Nothing in the operator or
in kopf reads them, and they are 40-50% of each body (a kwok Node 1.9 of 4.3 KB, a Pod 5.5 of 12.7).
A body lives on after it is read: in kopf's per-object queue until its worker runs, which, in the
flood of a start at 10,000 Nodes and EdgeDevices, is every body at once.

4. Watch lines are decoded with orjson instead of the standard library's json: 1.9x faster on a Pod
event, where decoding was a fifth of the operator's CPU at 10,000 devices (py-spy). orjson reads an
integer past 64 bits as a float, silently; JSON allows any integer, so a line with a run of 19 or
more digits anywhere is decoded by json, exactly, as before. Invalid JSON raises json's error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import types
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import orjson
from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.clients import api, watching

log = logging.getLogger("edge_operator.kube")

# Watch ERROR events that say "not yet", not "never": a timeout or a resourceVersion ahead of the cache.
TRANSIENT_WATCH_CODES = frozenset({429, 500, 503, 504})
REWATCH_PAUSE_SECONDS = 1.0


class CountedToggle(aiotoggles.Toggle):
    """A toggle made by a CountingToggleSet: tells its set when it turns."""

    def __init__(self, state: bool, *, name: str | None, owner: CountingToggleSet) -> None:
        super().__init__(state, name=name)  # its own condition: waking its waiters wakes no one else
        self._owner = owner

    async def turn_to(self, __state: bool) -> None:
        await super().turn_to(__state)
        await self._owner._turned(self)


class CountingToggleSet(aiotoggles.ToggleSet):
    def __init__(self, fn: Callable[[Iterable[bool]], bool]) -> None:
        super().__init__(fn)
        self._on: set[aiotoggles.Toggle] = set()  # the toggles of the set that are on

    def is_on(self) -> bool:
        if self._fn is all:
            return len(self._on) == len(self._toggles)
        if self._fn is any:
            return bool(self._on)
        return super().is_on()

    async def make_toggle(self, __val: bool = False, *, name: str | None = None) -> aiotoggles.Toggle:
        toggle = CountedToggle(__val, name=name, owner=self)
        async with self._condition:
            before = self.is_on()
            self._toggles.add(toggle)
            if toggle.is_on():
                self._on.add(toggle)
            self._notify_if_flipped(before)
        return toggle

    async def drop_toggle(self, toggle: aiotoggles.Toggle) -> None:
        await self.drop_toggles([toggle])

    async def drop_toggles(self, toggles: Iterable[aiotoggles.Toggle]) -> None:
        async with self._condition:
            before = self.is_on()
            gone = set(toggles)
            self._toggles.difference_update(gone)
            self._on.difference_update(gone)
            self._notify_if_flipped(before)

    async def _turned(self, toggle: CountedToggle) -> None:
        async with self._condition:
            if toggle not in self._toggles:
                return
            before = self.is_on()
            if toggle.is_on():
                self._on.add(toggle)
            else:
                self._on.discard(toggle)
            self._notify_if_flipped(before)

    def _notify_if_flipped(self, before: bool) -> None:
        if self.is_on() != before:
            self._condition.notify_all()


def transient_watch_error(event: Mapping[str, Any]) -> bool:
    """An ERROR event after which watching again from the same resourceVersion can work."""
    if event.get("type") != "ERROR":
        return False
    obj = event.get("object")
    return isinstance(obj, Mapping) and obj.get("code") in TRANSIENT_WATCH_CODES


def drop_managed_fields(event: Any) -> None:
    """Remove `metadata.managedFields` from a watch event's object, in place (see 3. above)."""
    obj = event.get("object") if isinstance(event, dict) else None
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if isinstance(meta, dict):
        meta.pop("managedFields", None)


def rewatching(watch_objs: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """`watch_objs` whose streams end (after a pause) at a transient error event instead of passing it on,
    and whose objects come without managedFields."""
    if getattr(watch_objs, "edgeai_rewatching", False):
        return watch_objs

    async def watch(**kwargs: Any) -> AsyncIterator[Any]:
        async for event in watch_objs(**kwargs):
            drop_managed_fields(event)
            if isinstance(event, Mapping) and transient_watch_error(event):
                obj = event["object"]
                log.warning("watch ended by the API server; watching again", extra={
                    "resource": str(kwargs.get("resource")), "code": obj.get("code"),
                    "reason": obj.get("reason"), "detail": str(obj.get("message", ""))[:300]})
                await asyncio.sleep(REWATCH_PAUSE_SECONDS)
                return
            yield event

    watch.edgeai_rewatching = True  # type: ignore[attr-defined]
    return watch


_LONG_DIGITS = re.compile(r"[0-9]{19}")  # 2**63 has 19 digits


def decode_line(line: str) -> Any:
    """One watch line as JSON (see 4. above)."""
    if _LONG_DIGITS.search(line) is not None:
        return json.loads(line)
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)  # raises json's own error, with its message


# What kopf's api module calls `json`: it uses only `json.loads`, on each watch line.
FAST_JSON = types.SimpleNamespace(loads=decode_line, dumps=json.dumps, JSONDecodeError=json.JSONDecodeError)


def install() -> None:
    """Make kopf build its toggle sets from CountingToggleSet, watch again after transient errors,
    drop managedFields and decode watch lines with orjson (idempotent)."""
    aiotoggles.ToggleSet = CountingToggleSet  # type: ignore[misc]
    watching.watch_objs = rewatching(watching.watch_objs)
    setattr(api, "json", FAST_JSON)  # noqa: B010 (kopf does not export its json module)

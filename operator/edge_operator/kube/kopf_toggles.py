"""kopf's toggle sets, woken only when their state flips: what makes startup linear in the objects watched.

kopf holds every object's handlers until every index handler of every object has run: one toggle
per object in one `ToggleSet(all)`, and each object's worker waits on the set. kopf 1.45's set wakes
every waiter each time a toggle is made, turned or dropped, so a start with n objects costs about n²
wake-ups (kopf#1243 is a neighbour of this). At 10,000 edge nodes (and their 10,000 EdgeDevices) the
operator spent its first minutes of CPU in `Condition.notify_all` and had not synced after 5 (py-spy,
docs/scale.md). This set counts its toggles that are on and notifies its waiters only when the set's
own state (all / any) changes, which is the only moment a waiter's predicate can change; the
toggles it makes keep their own condition for anyone waiting on one toggle.

Installed once, before kopf starts (`install`); kopf builds its sets from `aiotoggles.ToggleSet` at
run time. Only `any` and `all` sets (the only kinds kopf makes) are counted; any other function falls
back to kopf's own evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from kopf._cogs.aiokits import aiotoggles


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


def install() -> None:
    """Make kopf build its toggle sets from CountingToggleSet (idempotent)."""
    aiotoggles.ToggleSet = CountingToggleSet  # type: ignore[misc]

"""kopf, patched for fleets: toggle sets woken only when they flip; watches that survive a transient error."""

from __future__ import annotations

import asyncio
from typing import Any

from edge_operator.kube.kopf_patches import CountingToggleSet


class Counted(CountingToggleSet):
    """Counts how often a waiter's predicate (is_on) is evaluated: each wake-up evaluates it once."""

    evaluations = 0

    def is_on(self) -> bool:
        Counted.evaluations += 1
        return super().is_on()


def test_all_and_any_follow_kopfs_rules() -> None:
    async def main() -> None:
        s_all, s_any = CountingToggleSet(all), CountingToggleSet(any)
        assert s_all.is_on() and not s_any.is_on()  # empty: all is on, any is off
        a, b = await s_all.make_toggle(name="a"), await s_all.make_toggle(True, name="b")
        x = await s_any.make_toggle(name="x")
        assert not s_all.is_on() and not s_any.is_on()
        await a.turn_to(True)
        await x.turn_to(True)
        assert s_all.is_on() and s_any.is_on() and len(s_all) == 2 and a in s_all
        await b.turn_to(False)
        assert not s_all.is_on()
        await s_all.drop_toggle(b)
        await s_any.drop_toggles([x])
        assert s_all.is_on() and not s_any.is_on()
        await x.turn_to(True)  # dropped: the set no longer counts it
        assert not s_any.is_on()

    asyncio.run(main())


def test_waiters_wake_only_when_the_set_flips_not_once_per_toggle() -> None:
    n = 300

    async def main() -> None:
        s = Counted(all)
        blocker = await s.make_toggle(name="blocker")
        toggles = [await s.make_toggle(name=f"object {i}") for i in range(n)]
        done = 0

        async def waiter() -> None:
            nonlocal done
            await s.wait_for(True)
            done += 1

        tasks = [asyncio.create_task(waiter()) for _ in range(n)]
        await asyncio.sleep(0)
        Counted.evaluations = 0
        for t in toggles:  # as kopf does: each object's toggle dropped once it is indexed
            await s.drop_toggle(t)
            await asyncio.sleep(0)
        assert done == 0
        await s.drop_toggle(blocker)
        await asyncio.gather(*tasks)
        assert done == n
        # One evaluation per drop and one per waiter woken at the end; kopf's own set evaluated
        # every waiter's predicate on every drop (n * n here).
        assert Counted.evaluations <= 4 * n, Counted.evaluations

    asyncio.run(main())


def test_a_transient_watch_error_ends_the_stream_to_be_watched_again_and_others_pass() -> None:

    import pytest

    from edge_operator.kube import kopf_patches

    too_new = {"type": "ERROR", "object": {"kind": "Status", "code": 504, "reason": "Timeout",
                                            "message": "Too large resource version: 401928, current: 401305"}}
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
    forbidden = {"type": "ERROR", "object": {"kind": "Status", "code": 403, "reason": "Forbidden"}}
    added = {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "5"}}}
    later = {"type": "MODIFIED", "object": {"metadata": {"name": "a", "resourceVersion": "6"}}}
    calls: list[dict[str, Any]] = []

    def fake(events: list[dict[str, Any]]) -> Any:
        async def watch_objs(**kwargs: Any) -> Any:
            calls.append(kwargs)
            for e in events:
                yield e
        return watch_objs

    async def collect(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e async for e in kopf_patches.rewatching(fake(events))(since="5")]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kopf_patches, "REWATCH_PAUSE_SECONDS", 0.0)
        assert asyncio.run(collect([added, too_new, later])) == [added]  # kopf watches again from "5"
        assert asyncio.run(collect([added, gone, later])) == [added, gone, later]  # kopf's own restart
        assert asyncio.run(collect([forbidden])) == [forbidden]  # still fatal, as kopf has it
    assert calls[0] == {"since": "5"}
    wrapped = kopf_patches.rewatching(fake([]))
    assert kopf_patches.rewatching(wrapped) is wrapped


def test_watched_objects_come_without_managed_fields() -> None:

    from edge_operator.kube import kopf_patches

    managed = [{"manager": "kwok", "operation": "Update", "fieldsV1": {"f:status": {"f:conditions": {}}}}]
    events: list[Any] = [
        {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "5", "managedFields": managed},
                                     "status": {"phase": "Running"}}},
        {"type": "MODIFIED", "object": {"metadata": {"name": "a", "resourceVersion": "6"}}},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}},
        {"type": "ADDED", "object": {"kind": "Odd"}},  # no metadata: passed on as it is
        "not an event",
    ]

    async def watch_objs(**kwargs: Any) -> Any:
        for e in events:
            yield e

    async def collect() -> list[Any]:
        return [e async for e in kopf_patches.rewatching(watch_objs)()]

    out = asyncio.run(collect())
    assert out[0] == {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "5"},
                                                  "status": {"phase": "Running"}}}
    assert out[1:] == events[1:]


def test_install_makes_kopf_build_counting_sets_and_rewatch() -> None:
    from kopf._cogs.aiokits import aiotoggles
    from kopf._cogs.clients import api, watching

    from edge_operator.kube import kopf_patches

    original_set, original_watch, original_json = aiotoggles.ToggleSet, watching.watch_objs, getattr(api, "json")  # noqa: B009
    try:
        kopf_patches.install()
        kopf_patches.install()
        fast: Any = getattr(api, "json")  # noqa: B009 (kopf does not export it)
        assert fast is kopf_patches.FAST_JSON and fast.loads('{"type": "ADDED"}') == {"type": "ADDED"}
        assert isinstance(aiotoggles.ToggleSet(all), CountingToggleSet)
        assert getattr(watching.watch_objs, "edgeai_rewatching", False)
        assert watching.watch_objs is kopf_patches.rewatching(watching.watch_objs)  # installed once
    finally:
        aiotoggles.ToggleSet = original_set  # type: ignore[misc]
        watching.watch_objs = original_watch
        setattr(api, "json", original_json)  # noqa: B010


def test_watch_lines_decode_as_json_does_also_past_64_bit_integers() -> None:
    import json

    import pytest

    from edge_operator.kube.kopf_patches import decode_line

    line = '{"type": "MODIFIED", "object": {"metadata": {"name": "a"}, "spec": {"n": 1.5, "u": "\\u00e9"}}}'
    assert decode_line(line) == json.loads(line)
    big = '{"object": {"spec": {"size": 123456789012345678901234567890, "neg": -9223372036854775809}}}'
    spec = decode_line(big)["object"]["spec"]
    assert spec == {"size": 123456789012345678901234567890, "neg": -9223372036854775809}
    assert type(spec["size"]) is int
    with pytest.raises(json.JSONDecodeError):
        decode_line('{"type": "ADDED", ')

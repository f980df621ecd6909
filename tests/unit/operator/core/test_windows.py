"""Maintenance windows: cron schedules in a time zone, and a rollout that only touches a device inside its window."""

from __future__ import annotations

import datetime as dt

import pytest

from edge_operator.core import rollout as ro
from edge_operator.core import windows as win
from edge_operator.core.rollout import DeviceRollout, RolloutSpecError, parse_policy

BERLIN = dt.timezone(dt.timedelta(hours=2))  # CEST, what Europe/Berlin is in June


def at(y: int, mo: int, d: int, h: int, mi: int = 0, tz: dt.tzinfo = BERLIN) -> float:
    return dt.datetime(y, mo, d, h, mi, tzinfo=tz).timestamp()


NIGHTLY = {"label": "edgeai.io/site", "windows": {
    "berlin": {"schedule": "0 2 * * *", "durationMinutes": 120, "timeZone": "Europe/Berlin"},
    "*": {"schedule": "0 0 1 1 *", "durationMinutes": 1},  # once a year, UTC: effectively closed
}}


def test_a_window_opens_on_its_schedule_in_its_time_zone_for_its_duration() -> None:
    ws = parse_policy({"maintenanceWindows": NIGHTLY}).windows
    assert ws is not None
    w = ws.window_of({"edgeai.io/site": "berlin"})
    assert w is not None and ws.window_of({"edgeai.io/site": "paris"}) is ws.by_value["*"]
    assert not w.is_open(at(2026, 6, 1, 1, 59))
    assert w.is_open(at(2026, 6, 1, 2, 0)) and w.is_open(at(2026, 6, 1, 3, 59))
    assert not w.is_open(at(2026, 6, 1, 4, 0))
    assert w.next_open(at(2026, 6, 1, 4, 0)) == at(2026, 6, 2, 2, 0)
    # In winter the same schedule is an hour later in UTC: the zone, not a fixed offset.
    assert w.is_open(dt.datetime(2026, 1, 10, 1, 30, tzinfo=dt.UTC).timestamp())  # 02:30 CET


@pytest.mark.parametrize(("window", "message"), [
    ({"schedule": "every night", "durationMinutes": 60}, "schedule must be a 5-field cron schedule"),
    ({"schedule": "0 2 * * * *", "durationMinutes": 60}, "schedule must be a 5-field cron schedule"),
    ({"schedule": "0 2 30 2 *", "durationMinutes": 60}, "schedule never opens"),
    ({"schedule": "0 2 * * *", "durationMinutes": 0}, "durationMinutes must be from 1 to 10080"),
    ({"schedule": "0 2 * * *", "durationMinutes": 60, "timeZone": "Mars/Olympus"}, "timeZone must be an IANA"),
])
def test_a_bad_window_is_named(window: dict[str, object], message: str) -> None:
    with pytest.raises(RolloutSpecError) as e:
        parse_policy({"maintenanceWindows": {"windows": {"site-a": window}}})
    assert "spec.rollout.maintenanceWindows.windows['site-a']" in str(e.value) and message in str(e.value)


def test_closed_to_names_the_devices_outside_their_window_and_when_the_first_opens() -> None:
    ws = parse_policy({"maintenanceWindows": {"windows": {
        "a": {"schedule": "0 2 * * *", "durationMinutes": 60, "timeZone": "UTC"}}}}).windows
    labels = {"d1": {"edgeai.io/site": "a"}, "d2": {"edgeai.io/site": "b"}, "d3": {}}
    now = dt.datetime(2026, 6, 1, 0, 30, tzinfo=dt.UTC).timestamp()
    closed, opens_in = win.closed_to(ws, labels, now)
    assert closed == {"d1"} and opens_in == 90 * 60  # devices with no window are never held
    assert win.closed_to(ws, labels, now + 2 * 3600) == (frozenset(), None)
    assert win.closed_to(None, labels, now) == (frozenset(), None)


POLICY = parse_policy({"canary": 1, "waves": ["50%"], "healthGate": {"readySeconds": 1}})


def _turns(closed: frozenset[str], devices: dict[str, DeviceRollout], target: int, stable: int | None,
           state: ro.RolloutState | None, failed: bool = False, turns: int = 40) -> tuple[ro.Step, ro.RolloutState]:
    order = sorted(devices)
    bounds = ro.wave_bounds(POLICY, order, {d: {} for d in order})
    now = 1000.0
    step = None
    for _ in range(turns):
        step = ro.step(POLICY, state, target, stable, failed, order, bounds, devices,
                       frozenset({1, 2}) - ({target} if failed else set()), now, closed)
        for d, r in step.targets.items():
            cur = devices.get(d)
            devices[d] = DeviceRollout(r, cur is not None and cur.revision == r)
        state = ro.RolloutState.from_dict(step.state.to_dict())
        if step.succeeded:
            stable = target
        now += 1
    assert step is not None and state is not None
    return step, state


def test_a_device_outside_its_window_keeps_serving_and_does_not_hold_the_wave() -> None:
    devices = {f"d{i}": DeviceRollout(1, True) for i in range(6)}
    closed = frozenset({"d0", "d4"})
    _, state = _turns(closed, devices, target=2, stable=1, state=None)
    assert state.phase == ro.COMPLETE
    assert {d: s.revision for d, s in devices.items()} == {"d0": 1, "d1": 2, "d2": 2, "d3": 2, "d4": 1, "d5": 2}
    # Its window opens: it moves then, without a new rollout.
    _turns(frozenset(), devices, target=2, stable=2, state=state, turns=3)
    assert all(s.revision == 2 for s in devices.values())


def test_a_waiting_device_is_named_in_the_rollout_message() -> None:
    devices = {f"d{i}": DeviceRollout(1, True) for i in range(4)}
    order = sorted(devices)
    bounds = ro.wave_bounds(POLICY, order, {d: {} for d in order})
    s = ro.step(POLICY, None, 2, 1, False, order, bounds, devices, frozenset({1, 2}), 0.0, frozenset({"d0"}))
    assert s.targets["d0"] == 1 and "1 device(s) wait for their maintenance window" in s.state.message


def test_a_rollback_is_never_held_by_a_window() -> None:
    devices = {"d0": DeviceRollout(2, False), "d1": DeviceRollout(1, True)}
    order = sorted(devices)
    bounds = ro.wave_bounds(POLICY, order, {d: {} for d in order})
    s = ro.step(POLICY, None, 2, 1, True, order, bounds, devices, frozenset({1}), 0.0, frozenset({"d0", "d1"}))
    assert s.targets == {"d0": 1, "d1": 1}


def test_a_new_device_gets_a_workload_even_outside_its_window() -> None:
    devices = {"d1": DeviceRollout(1, True)}
    order = ["d0", "d1"]
    bounds = ro.wave_bounds(POLICY, order, {d: {} for d in order})
    s = ro.step(POLICY, None, 2, 1, False, order, bounds, devices, frozenset({1, 2}), 0.0, frozenset({"d0", "d1"}))
    assert s.targets.get("d0") == 2 and s.targets["d1"] == 1

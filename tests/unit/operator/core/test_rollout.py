"""The wave planner and the health-gate state machine, as pure functions.

The tests drive `rollout.step` against a small simulated fleet (`World`): a device takes the
revision it is told after one turn and becomes Ready (or not, for a bad revision) — the same
loop the controller runs against the API server, minus the API server."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from edge_operator.core import rollout as ro
from edge_operator.core.rollout import DeviceRollout, Policy, RolloutSpecError, RolloutState, parse_policy

# --------------------------------------------------------------------------- policy


@pytest.mark.parametrize(("spec", "field_named"), [
    ({"waves": ["50%", "20%"]}, "spec.rollout.waves must grow"),
    ({"waves": ["150%"]}, "spec.rollout.waves[0]"),
    ({"waves": [0]}, "spec.rollout.waves[0]"),
    ({"canary": -1}, "spec.rollout.canary"),
    ({"maxUnavailable": "0%"}, "spec.rollout.maxUnavailable"),
    ({"onFailure": "Explode"}, "spec.rollout.onFailure must be one of Rollback, Pause"),
    ({"offlineDevices": "skip"}, "spec.rollout.offlineDevices"),
    ({"orderBy": "not a label!"}, "spec.rollout.orderBy"),
    ({"healthGate": {"readySeconds": "10"}}, "spec.rollout.healthGate.readySeconds"),
    ({"rollbackTo": {"revision": 0}}, "spec.rollout.rollbackTo.revision"),
    ({"paused": "yes"}, "spec.rollout.paused"),
    ({"waves": [2], "ramp": {}}, "spec.rollout.waves and spec.rollout.ramp are two ways"),
    ({"ramp": {"factor": 1}}, "spec.rollout.ramp.factor must be an integer from 2 to 10"),
    ({"ramp": {"initial": "0%"}}, "spec.rollout.ramp.initial"),
    ({"healthGate": {"maxFailures": -1}}, "spec.rollout.healthGate.maxFailures must be a device count >= 0"),
    ({"healthGate": {"maxFailures": "101%"}}, "spec.rollout.healthGate.maxFailures"),
])
def test_bad_rollout_fields_are_named(spec: dict[str, object], field_named: str) -> None:
    with pytest.raises(RolloutSpecError) as e:
        parse_policy(spec)
    assert field_named in str(e.value)


def test_steering_fields_alone_do_not_gate() -> None:
    assert not parse_policy({}).gated
    assert not parse_policy({"paused": True, "rollbackTo": {"revision": 2}}).gated
    assert parse_policy({"canary": 1}).gated


# --------------------------------------------------------------------------- waves


def test_wave_bounds_canary_then_percentages() -> None:
    order = [f"d{i:02d}" for i in range(10)]
    labels: dict[str, dict[str, str]] = {d: {} for d in order}
    pol = parse_policy({"canary": 1, "waves": ["50%", "100%"]})
    assert ro.wave_bounds(pol, order, labels) == [1, 5, 10]
    # Rounding up, duplicates dropped, the last wave always reaches everyone.
    assert ro.wave_bounds(parse_policy({"canary": 3, "waves": [2, "30%"]}), order, labels) == [3, 10]
    assert ro.wave_bounds(parse_policy({}), order, labels) == [10]


def test_a_ramp_grows_each_wave_by_its_factor_until_the_fleet_is_covered() -> None:
    order = [f"d{i:03d}" for i in range(100)]
    labels: dict[str, dict[str, str]] = {d: {} for d in order}
    assert ro.wave_bounds(parse_policy({"ramp": {}}), order[:20], labels) == [1, 2, 4, 8, 16, 20]
    assert ro.wave_bounds(parse_policy({"canary": 1, "ramp": {"initial": "10%", "factor": 3}}), order, labels) == [
        1, 10, 30, 90, 100]
    # The canary already covers the first ramp waves: they are dropped, never repeated.
    assert ro.wave_bounds(parse_policy({"canary": 5, "ramp": {"initial": 2}}), order[:40], labels) == [5, 8, 16, 32,
                                                                                                      40]
    # A ramp over a huge fleet stays a bounded number of waves.
    big = [f"d{i}" for i in range(10_000)]
    bounds = ro.wave_bounds(parse_policy({"ramp": {}}), big, {d: {} for d in big})
    assert bounds[-1] == 10_000 and len(bounds) == 15


def test_order_by_site_makes_one_wave_per_site_after_the_canary() -> None:
    labels = {"a1": {"site": "a"}, "b1": {"site": "b"}, "a2": {"site": "a"}, "c1": {"site": "c"},
              "x": {}, "b2": {"site": "b"}}
    order = ro.order_devices(labels, "site")
    assert order == ["a1", "a2", "b1", "b2", "c1", "x"]  # unlabelled last
    pol = parse_policy({"orderBy": "site", "canary": 1})
    assert ro.wave_bounds(pol, order, labels) == [1, 2, 4, 5, 6]


# --------------------------------------------------------------------------- the state machine


@dataclass
class World:
    """A fleet: per device the revision it runs and whether it is Ready; `bad` revisions never get Ready."""

    devices: dict[str, DeviceRollout]
    bad: set[int] = field(default_factory=set)
    crash: set[int] = field(default_factory=set)
    crash_on: dict[str, int] = field(default_factory=dict)  # device -> the revision it alone crashes on
    ever: dict[int, set[str]] = field(default_factory=dict)

    def apply(self, targets: dict[str, int]) -> None:
        for d, rev in targets.items():
            cur = self.devices.get(d)
            if cur is not None and cur.revision == rev:
                # Already there: a good revision becomes Ready one turn after it was applied.
                if (not cur.ready and rev not in self.bad and rev not in self.crash and cur.online
                        and self.crash_on.get(d) != rev):
                    self.devices[d] = DeviceRollout(rev, True, cur.online)
                continue
            self.ever.setdefault(rev, set()).add(d)
            online = cur.online if cur else True
            crashes = rev in self.crash or self.crash_on.get(d) == rev
            # Per-device surge: a Ready server keeps answering beside the new one until that is Ready.
            older = cur is not None and cur.ready and cur.online
            self.devices[d] = DeviceRollout(rev, False, online, restarts=3 if crashes else 0, serving_older=older)


def fleet(n: int, rev: int = 1) -> World:
    return World({f"d{i:02d}": DeviceRollout(rev, True) for i in range(n)})


def drive(pol: Policy, world: World, target: int, stable: int | None, turns: int = 200, dt: float = 1.0,
          state: RolloutState | None = None, failed: bool = False) -> tuple[list[ro.Step], RolloutState]:
    order = sorted(world.devices)
    labels: dict[str, dict[str, str]] = {d: {} for d in order}
    bounds = ro.wave_bounds(pol, order, labels)
    now = 1000.0
    steps = []
    assert state is None or isinstance(state, RolloutState)
    for _ in range(turns):
        s = ro.step(pol, state, target, stable, failed, order, bounds, world.devices,
                    frozenset({stable} if stable else set()) | ({target} if not failed else set()), now)
        steps.append(s)
        if s.failure:
            failed = True
        world.apply(s.targets)
        # Persisted and read back, as status is: nothing may depend on memory.
        state = RolloutState.from_dict(s.state.to_dict())
        assert state is not None
        if s.succeeded or s.rolled_back:
            break
        now += dt
    assert state is not None
    return steps, state


POLICY = parse_policy({"canary": 1, "waves": ["30%", "100%"], "healthGate": {"readySeconds": 3,
                                                                             "progressDeadlineSeconds": 20}})


def test_good_rollout_goes_wave_by_wave_and_becomes_stable() -> None:
    world = fleet(10)
    steps, final = drive(POLICY, world, target=2, stable=1)
    assert steps[-1].succeeded and final.phase == ro.COMPLETE
    assert all(d.revision == 2 and d.ready for d in world.devices.values())
    # The canary alone first: while wave 0 ran, exactly one device was on revision 2.
    on2_per_wave: dict[int, int] = {}
    for s in steps:
        on2_per_wave[s.state.wave] = max(on2_per_wave.get(s.state.wave, 0),
                                         sum(1 for r in s.targets.values() if r == 2))
    assert on2_per_wave[0] == 1 and on2_per_wave[1] == 3 and on2_per_wave[2] == 10
    # The gate held each wave at least readySeconds after it was all Ready.
    assert len(steps) >= 3 * 3


def test_bad_canary_is_rolled_back_and_never_reaches_the_fleet() -> None:
    world = fleet(10)
    world.bad.add(2)
    steps, final = drive(POLICY, world, target=2, stable=1)
    failing = [s for s in steps if s.failure]
    assert len(failing) == 1 and "made no progress for 20s" in failing[0].failure
    assert final.phase == ro.ROLLED_BACK and steps[-1].rolled_back
    assert world.ever[2] == {"d00"}  # the canary only
    assert all(d.revision == 1 and d.ready for d in world.devices.values())


def test_restarts_above_the_gate_fail_at_once() -> None:
    world = fleet(5)
    world.crash.add(2)
    steps, final = drive(POLICY, world, target=2, stable=1)
    failure = next(s.failure for s in steps if s.failure)
    assert "3 container restarts" in failure and "maxRestarts 0" in failure
    assert len(steps) < 10  # no waiting for the deadline
    assert final.phase == ro.ROLLED_BACK


def test_on_failure_pause_halts_and_freezes_the_fleet() -> None:
    pol = parse_policy({"canary": 2, "onFailure": "Pause", "healthGate": {"progressDeadlineSeconds": 5}})
    world = fleet(6)
    world.bad.add(2)
    _steps, final = drive(pol, world, target=2, stable=1, turns=30)
    assert final.phase == ro.HALTED
    assert world.ever[2] == {"d00", "d01"}
    assert sum(1 for d in world.devices.values() if d.revision == 2) == 2  # left as they were


def test_first_revision_failing_has_nothing_to_roll_back_to() -> None:
    world = World({f"d{i}": DeviceRollout(None, False) for i in range(4)})
    del world.devices["d3"]  # a device with no workload yet
    world.devices = {}
    world.bad.add(1)
    pol = parse_policy({"canary": 1, "healthGate": {"progressDeadlineSeconds": 3}})
    order = ["d0", "d1", "d2"]
    bounds = ro.wave_bounds(pol, order, {d: {} for d in order})
    s = ro.step(pol, None, 1, None, False, order, bounds, {}, frozenset({1}), 0.0)
    assert s.targets == {"d0": 1}  # the others get nothing until their wave
    state = s.state
    s = ro.step(pol, state, 1, None, False, order, bounds, {"d0": DeviceRollout(1, False)}, frozenset({1}), 10.0)
    assert s.failure and s.state.phase == ro.HALTED and "no earlier good revision" in s.state.message


def test_max_unavailable_limits_devices_updating_at_once() -> None:
    pol = parse_policy({"waves": ["100%"], "maxUnavailable": 2})
    world = fleet(8)
    steps, _ = drive(pol, world, target=2, stable=1)
    # Each turn admits at most 2 devices that were not on revision 2 before.
    seen: set[str] = set()
    for s in steps:
        new = {d for d, r in s.targets.items() if r == 2} - seen
        assert len(new) <= 2
        seen |= new
    assert steps[-1].succeeded


def test_max_unavailable_holds_back_only_devices_with_something_to_keep_serving() -> None:
    pol = parse_policy({"waves": ["100%"], "maxUnavailable": 2})
    world = fleet(8)
    for d in ("d05", "d06", "d07"):
        del world.devices[d]  # new devices: no workload yet
    world.devices["d04"] = DeviceRollout(1, False)  # its server is not Ready: nothing to keep serving
    order = [f"d{i:02d}" for i in range(8)]
    bounds = ro.wave_bounds(pol, order, {d: {} for d in order})
    s = ro.step(pol, None, 2, 1, False, order, bounds, world.devices, frozenset({1, 2}), 1000.0)
    # Two of the serving devices, and every device with nothing serving, at once.
    assert {d for d, r in s.targets.items() if r == 2} == {"d00", "d01", "d04", "d05", "d06", "d07"}
    world.apply(s.targets)  # the two serving ones surge; the others start from nothing
    s = ro.step(pol, s.state, 2, 1, False, order, bounds, world.devices, frozenset({1, 2}), 1001.0)
    assert s.targets["d02"] == 1 and s.targets["d03"] == 1  # the budget is spent by d00 and d01 alone
    # The first rollout of a fleet: nothing serves yet, so maxUnavailable holds nothing back.
    s = ro.step(pol, None, 1, None, False, order, bounds, {}, frozenset({1}), 1000.0)
    assert s.targets == dict.fromkeys(order, 1)


def test_paused_rollout_finishes_the_wave_but_starts_no_new_one() -> None:
    pol = parse_policy({"canary": 2, "paused": True})
    world = fleet(6)
    _, final = drive(pol, world, target=2, stable=1, turns=20)
    assert final.phase == ro.PAUSED and final.wave == 0
    assert sum(1 for d in world.devices.values() if d.revision == 2) == 2
    # Resumed: carries on from the same wave, from the persisted state.
    _steps, final = drive(parse_policy({"canary": 2}), world, target=2, stable=1, state=final)
    assert final.phase == ro.COMPLETE


def test_offline_devices_skip_or_wait() -> None:
    pol_skip = parse_policy({"canary": 2, "healthGate": {"progressDeadlineSeconds": 5}})
    world = fleet(4)
    world.devices["d01"] = DeviceRollout(1, False, online=False)
    steps, final = drive(pol_skip, world, target=2, stable=1)
    assert final.phase == ro.COMPLETE  # not gated on the offline one
    assert steps[-1].targets["d01"] == 2  # but told to update: it catches up when it is back

    pol_wait = parse_policy({"canary": 2, "offlineDevices": "Wait", "healthGate": {"progressDeadlineSeconds": 5}})
    world = fleet(4)
    world.devices["d01"] = DeviceRollout(1, False, online=False)
    steps, final = drive(pol_wait, world, target=2, stable=1, turns=30)
    assert final.phase == ro.PROGRESSING and final.wave == 0  # waits; an offline device is no failure
    assert not any(s.failure for s in steps) and "offline" in final.message


def test_reverse_waves_roll_back_the_last_wave_first() -> None:
    pol = parse_policy({"canary": 1, "waves": ["50%"], "rollbackStrategy": "ReverseWaves",
                        "healthGate": {"progressDeadlineSeconds": 5}})
    world = fleet(6)
    # Revision 2 is good on the first wave, bad from then on: the failure comes in wave 2.
    order = sorted(world.devices)
    bounds = ro.wave_bounds(pol, order, {d: {} for d in order})
    assert bounds == [1, 3, 6]
    state = None
    now = 0.0
    failed = False
    back_order: list[set[str]] = []
    for _ in range(100):
        s = ro.step(pol, state, 2, 1, failed, order, bounds, world.devices, frozenset({1}) | (
            frozenset() if failed else frozenset({2})), now)
        failed = failed or bool(s.failure)
        if failed:
            back_order.append({d for d, r in s.targets.items() if r == 1 and world.devices[d].revision == 2})
        for d, r in s.targets.items():
            cur = world.devices[d]
            if cur.revision != r:
                world.devices[d] = DeviceRollout(r, False)
            elif not cur.ready and (r == 1 or d in order[:1]):  # revision 2 only ever works on the canary
                world.devices[d] = DeviceRollout(r, True)
        state = s.state
        if s.rolled_back:
            break
        now += 1
    assert state is not None and state.phase == ro.ROLLED_BACK
    moved = [x for x in back_order if x]
    assert moved[0] <= set(order[1:3]) and order[0] not in moved[0]  # wave 2 first, the canary after
    assert any(order[0] in x for x in moved[1:])


def test_state_survives_a_restart_in_the_middle() -> None:
    world = fleet(10)
    _steps, mid = drive(POLICY, world, target=2, stable=1, turns=6)
    assert mid.phase == ro.PROGRESSING
    before = {d: s.revision for d, s in world.devices.items()}
    # A new operator reads the same status and the same children: same decision, nothing rolled twice.
    order = sorted(world.devices)
    bounds = ro.wave_bounds(POLICY, order, {d: {} for d in order})
    s1 = ro.step(POLICY, mid, 2, 1, False, order, bounds, world.devices, frozenset({1, 2}), 1006.0)
    s2 = ro.step(POLICY, RolloutState.from_dict(mid.to_dict()), 2, 1, False, order, bounds, world.devices,
                 frozenset({1, 2}), 1006.0)
    assert s1.targets == s2.targets
    assert all(s1.targets[d] == 2 for d, r in before.items() if r == 2)


def test_a_long_wave_that_keeps_progressing_is_not_failed_by_the_deadline() -> None:
    # 20 devices one at a time take ~40 s; the deadline (5 s) is on progress, as a Deployment's is.
    pol = parse_policy({"waves": ["100%"], "maxUnavailable": 1, "healthGate": {"progressDeadlineSeconds": 5}})
    world = fleet(20)
    steps, final = drive(pol, world, target=2, stable=1, turns=200)
    assert not any(s.failure for s in steps) and final.phase == ro.COMPLETE
    assert len(steps) > 20


# --------------------------------------------------------------------------- tolerated failures

TOLERANT = parse_policy({"canary": 1, "waves": ["50%"], "healthGate": {"maxFailures": 1, "readySeconds": 1}})


def test_a_failure_within_max_failures_rolls_back_that_device_alone_and_the_rest_go_on() -> None:
    world = fleet(10)
    world.crash_on["d03"] = 2  # in the second wave
    steps, final = drive(TOLERANT, world, target=2, stable=1)
    assert steps[-1].succeeded and not any(s.failure for s in steps)
    assert final.phase == ro.COMPLETE and final.failed == ("d03",)
    assert world.devices["d03"].revision == 1
    assert all(d.revision == 2 and d.ready for name, d in world.devices.items() if name != "d03")
    assert any("1 device(s) failed the gate and were rolled back on their own" in s.state.message for s in steps)
    # Once revision 2 is the stable one, the device that failed on it is still not sent it again.
    order = sorted(world.devices)
    bounds = ro.wave_bounds(TOLERANT, order, {d: {} for d in order})
    after = ro.step(TOLERANT, final, 2, 2, False, order, bounds, world.devices, frozenset({1, 2}), 5000.0)
    assert after.targets["d03"] == 1 and after.state.failed == ("d03",)
    # A new revision gives it another chance.
    nxt = ro.step(TOLERANT, final, 3, 2, False, order, bounds, world.devices, frozenset({1, 2, 3}), 5001.0)
    assert nxt.state.failed == ()


def test_more_failures_than_tolerated_in_one_wave_fail_the_rollout() -> None:
    world = fleet(10)
    world.crash_on.update({"d02": 2, "d04": 2})  # both in the second wave (devices 1-4)
    steps, final = drive(TOLERANT, world, target=2, stable=1)
    failure = next(s.failure for s in steps if s.failure)
    assert "2 of the 4 device(s) of wave 2 failed; healthGate.maxFailures 1 tolerates 1" in failure
    assert final.phase == ro.ROLLED_BACK
    assert all(d.revision == 1 for d in world.devices.values())


def test_a_percentage_of_a_small_wave_rounds_down() -> None:
    pol = parse_policy({"waves": ["100%"], "healthGate": {"maxFailures": "10%"}})
    assert ro.tolerated(pol.max_failures, 5) == 0 and ro.tolerated(pol.max_failures, 20) == 2
    world = fleet(5)
    world.crash_on["d01"] = 2
    steps, final = drive(pol, world, target=2, stable=1)
    assert any(s.failure for s in steps) and final.phase == ro.ROLLED_BACK

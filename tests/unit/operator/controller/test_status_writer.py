"""Status-write coalescing and the not-yet-echoed overlay, on a fake clock and an in-memory API."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from edge_operator.controller.keys import DeploymentKey, DeviceKey
from edge_operator.controller.reconcilers.deployment import PROGRESS_IDEP_FIELDS, URGENT_IDEP_KEYS
from edge_operator.controller.status_writer import StatusPolicy, StatusWriter, Write
from edge_operator.controller.workqueue import Requeue
from edge_operator.core import patches
from edge_operator.kube.errors import ApiError
from edge_operator.kube.kubeapi import Ref
from tests.unit.operator.controller.fakes import Clock, FakeApi

POLICY = StatusPolicy(patches.status_patch, ("placed",), interval=5.0)
READY = [{"type": "Ready", "status": "True", "reason": "DevicesReady"}]
NOT_READY = [{"type": "Ready", "status": "False", "reason": "DeviceFailed"}]


def run(coro: Coroutine[Any, Any, Write]) -> Write:
    return asyncio.run(coro)


def ref(name: str) -> Ref:
    return Ref("edgeai.io/v1alpha1", "inferencedeployments", name, "ns")


def setup(rate: float = 20.0) -> tuple[FakeApi, Clock, StatusWriter]:
    api, clock = FakeApi(), Clock()
    return api, clock, StatusWriter(api, rate, clock=clock)


def progress(ready: int) -> dict[str, Any]:
    return {"observedGeneration": 1, "placed": 2, "ready": ready, "conditions": READY}


def test_progress_is_held_for_the_interval_from_first_sight_then_written_once() -> None:
    api, clock, w = setup()
    k = DeploymentKey("ns", "d")
    assert run(w.write(k, ref("d"), "1", progress(0), progress(1), POLICY)) == Write(held=Requeue(5.0))
    clock.now += 3
    # A later reconcile with more progress does not restart the wait.
    assert run(w.write(k, ref("d"), "1", progress(0), progress(2), POLICY)) == Write(held=Requeue(2.0))
    assert api.status_writes == 0
    clock.now += 2
    done = run(w.write(k, ref("d"), "1", progress(0), progress(2), POLICY))
    assert done.patch == {"ready": 2} and not done.gone
    assert api.status[("inferencedeployments", "ns", "d")] == {"ready": 2}
    # The next progress waits a whole interval again.
    assert run(w.write(k, ref("d"), "2", progress(2), progress(1), POLICY)).held == Requeue(5.0)


def test_urgent_changes_are_written_at_once_even_while_much_is_held() -> None:
    api, _, w = setup()
    for i in range(50):
        run(w.write(DeploymentKey("ns", f"d{i}"), ref(f"d{i}"), "1", progress(0), progress(1), POLICY))
    assert w.holding == 50 and api.status_writes == 0
    k = DeploymentKey("ns", "d0")
    failed = {**progress(1), "conditions": NOT_READY}
    assert run(w.write(k, ref("d0"), "1", progress(0), failed, POLICY)).patch is not None
    # A policy key (placed) is urgent too; so is a new generation.
    placed = {**progress(0), "placed": 3}
    assert run(w.write(DeploymentKey("ns", "d1"), ref("d1"), "1", progress(0), placed, POLICY)).patch == {"placed": 3}
    newgen = {**progress(0), "observedGeneration": 2}
    assert run(w.write(DeploymentKey("ns", "d2"), ref("d2"), "1", progress(0), newgen, POLICY)).patch == {
        "observedGeneration": 2}
    assert api.status_writes == 3 and w.holding == 47


def test_the_hold_stretches_with_the_number_of_objects_holding_progress() -> None:
    _, _, w = setup(rate=2.0)
    held = [run(w.write(DeploymentKey("ns", f"d{i}"), ref(f"d{i}"), "1", progress(0), progress(1), POLICY)).held
            for i in range(20)]
    # 20 objects at 2 writes a second: the later ones wait 10 s rather than 5.
    assert held[0] == Requeue(5.0) and held[-1] == Requeue(10.0)


def test_a_deployments_progress_is_not_held_behind_its_devices() -> None:
    _, _, w = setup(rate=2.0)
    for i in range(100):  # a rollout's devices, all holding progress: 50 s each at 2 writes a second
        dev = w.write(DeviceKey(f"edge-{i}"), ref(f"edge-{i}"), "1", progress(0), progress(1), POLICY)
        assert run(dev).held == Requeue(max(5.0, (i + 1) / 2.0))
    # The deployment that rolls them out counts only deployments: its own interval.
    k = DeploymentKey("ns", "d")
    assert run(w.write(k, ref("d"), "1", progress(0), progress(1), POLICY)).held == Requeue(5.0)
    assert w.holding == 101
    # Written or forgotten, an object no longer counts towards its kind's stretch.
    for i in range(100):
        w.forget(DeviceKey(f"edge-{i}"))
    assert run(w.write(DeviceKey("edge-x"), ref("edge-x"), "1", progress(0), progress(1), POLICY)).held == Requeue(5.0)


def test_what_was_written_stands_in_for_the_cache_until_the_watch_brings_it_back() -> None:
    api, _, w = setup()
    k = DeploymentKey("ns", "d")
    old = {"observedGeneration": 1, "placed": 1, "conditions": NOT_READY}
    new = {**old, "placed": 2, "conditions": READY}
    run(w.write(k, ref("d"), "7", old, new, POLICY))
    # The cache still shows resourceVersion 7 and the old status: compare against what we wrote.
    assert w.effective(k, "7", old) == new
    assert run(w.write(k, ref("d"), "7", w.effective(k, "7", old), new, POLICY)) == Write()
    assert api.status_writes == 1
    # The cache moved on (our write, or someone else's): it is the truth again.
    theirs = {**new, "placed": 5}
    assert w.effective(k, "8", theirs) == theirs
    assert w.effective(k, "7", old) == old


def test_the_watch_moving_past_a_write_drops_it_without_a_reconcile() -> None:
    _api, _, w = setup()
    k = DeploymentKey("ns", "d")
    old = {"observedGeneration": 1, "placed": 1, "conditions": NOT_READY}
    new = {**old, "placed": 2, "conditions": READY}
    run(w.write(k, ref("d"), "7", old, new, POLICY))
    w.observed(k, "7")  # an event at the version we wrote against: still needed
    assert w.remembered == 1 and w.effective(k, "7", old) == new
    w.observed(k, "8")  # our write came back: nothing kept for a settled object
    assert w.remembered == 0
    assert w.effective(k, "7", old) == old


def test_a_status_write_to_a_deleted_object_remembers_nothing_and_other_errors_propagate() -> None:
    api, _, w = setup()
    k = DeploymentKey("ns", "d")
    old, new = progress(0), {**progress(0), "placed": 3}
    api.fail_status = 404
    gone = run(w.write(k, ref("d"), "1", old, new, POLICY))
    assert gone.gone and gone.patch == {"placed": 3}
    assert w.effective(k, "1", old) == old
    api.fail_status = 500
    with pytest.raises(ApiError):
        run(w.write(k, ref("d"), "1", old, new, POLICY))


def test_forget_drops_what_is_held_and_remembered() -> None:
    _, _, w = setup()
    held, written = DeploymentKey("ns", "h"), DeploymentKey("ns", "w")
    run(w.write(held, ref("h"), "1", progress(0), progress(1), POLICY))
    run(w.write(written, ref("w"), "1", progress(0), {**progress(0), "placed": 3}, POLICY))
    w.forget(held)
    w.forget(written)
    assert w.holding == 0
    assert w.effective(written, "1", progress(0)) == progress(0)


def test_a_rollouts_progress_counters_are_held_but_its_transitions_are_not() -> None:
    """A gated wave's count of healthy devices moves at every device that gets Ready: held with the rows.
    A new phase, wave or failed device is written at once."""
    policy = StatusPolicy(patches.status_patch, URGENT_IDEP_KEYS, 5.0, PROGRESS_IDEP_FIELDS)
    api, _, w = setup()
    k = DeploymentKey("ns", "d")

    def status(wave: int, healthy: int, **more: object) -> dict[str, Any]:
        rollout = {"revision": 2, "phase": "Progressing", "wave": wave, "waves": 3, "healthy": healthy,
                   "progressAt": f"2026-11-29T10:00:{healthy:02d}Z", **more}
        return {**progress(healthy), "rollout": rollout}

    assert run(w.write(k, ref("d"), "1", status(1, 10), status(1, 40), policy)).held == Requeue(5.0)
    assert api.status_writes == 0
    assert run(w.write(k, ref("d"), "1", status(1, 10), status(2, 40), policy)).patch is not None
    assert run(w.write(k, ref("d"), "2", status(2, 40), status(2, 41, failedDevices=["edge-3"]),
                       policy)).patch is not None
    assert api.status_writes == 2
    # Without the progress fields named, the same count is urgent (as it was).
    assert patches.urgent_change(status(1, 10), status(1, 40), URGENT_IDEP_KEYS)
    assert not patches.urgent_change(status(1, 10), status(1, 40), URGENT_IDEP_KEYS, PROGRESS_IDEP_FIELDS)

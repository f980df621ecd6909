"""Revisions and waves through the whole planner: spec in, child workloads and status out."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from edge_operator.core import planner
from edge_operator.core import pod_workloads as pw
from edge_operator.core.capabilities import Capabilities
from edge_operator.core.placement import DeviceView, Placement
from edge_operator.core.plan_memo import PlanMemo
from edge_operator.core.runtime_images import RuntimeImages
from edge_operator.core.views import ChildInfo, idep_info, model_info
from edgeai_api import constants as c
from tests.unit.operator.core.podsim import Pods
from tests.unit.operator.core.test_planner import SRC, model_body

NEW = "c" * 64
T0 = 1_800_000_000.0
FLEET = [DeviceView(f"edge-{i}", f"edge-{i}", {"edgeai.io/site": "a" if i < 3 else "b"},
                    Capabilities(arch="amd64", memory="8Gi")) for i in range(6)]


def model(sha: str = SRC) -> dict[str, Any]:
    m = model_body()
    m["spec"]["source"]["sha256"] = sha
    m["spec"]["variants"] = []
    m["status"]["sha256"] = sha
    m["status"]["variants"] = []
    return m


def idep(status: dict[str, Any], rollout: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "d", "namespace": "ns", "uid": "du", "generation": 3},
            "spec": {"model": "m", "rollout": rollout or {}, "runtime": {}}, "status": status}


class Cluster:
    """Carries out what the planner says, the way the API server and the devices would.

    Every turn is planned twice: afresh, and with the memo the controller keeps per deployment
    (core/plan_memo.py) and the placement it caches. The two plans must be equal, so every rollout
    test here is also a test that what the memo reuses never changes a decision."""

    def __init__(self, bad: str | None = None) -> None:
        self.pods_made = Pods()
        self.status: dict[str, Any] = {}
        self.bad = bad  # a digest whose pods never become Ready
        self.now = T0
        self.ever: dict[int, set[str]] = {}
        self.pods: dict[str, list[Any]] = {}  # device -> other PodInfo, for tests that show pod states
        self.memo = PlanMemo()
        self.hits = 0
        self._placements: dict[str, Placement] = {}

    @property
    def children(self) -> dict[str, ChildInfo]:
        return self.pods_made.children("du", self.now)

    def turn(self, m: dict[str, Any], rollout: dict[str, Any] | None = None) -> planner.IdepPlan:
        # Pods created last turn become Ready now (unless their build is bad).
        self.pods_made.ready(self.bad)
        every = self.pods_made.by_device()
        for dev, ps in self.pods.items():
            every.setdefault(dev, []).extend(ps)
        info, mi, devices, images = idep_info(idep(self.status, rollout)), model_info(m), {d.name: d for d in FLEET}, \
            RuntimeImages("img")
        p = planner.plan(info, mi, devices, self.children, every, images=images, now=_iso(self.now),
                         now_ts=self.now)
        placement = None
        if mi.verified and info.spec is not None:
            placement = self._placements.setdefault(json.dumps([m, rollout], sort_keys=True),
                                                     planner.compute_placement(info, mi, devices,
                                                                               families=images.available))
        children = pw.workloads([q for ps in every.values() for q in ps], [], "du", self.now, self.memo)
        memoised = planner.plan(info, mi, devices, children, every, images=images, now=_iso(self.now),
                                now_ts=self.now, placement=placement, memo=self.memo)
        self.hits += self.memo.done()[0]
        assert memoised == replace(p, placement=memoised.placement)
        for man in p.apply:
            dev = man["metadata"]["annotations"][c.A_DEVICE]
            rev = int(man["metadata"]["annotations"][c.A_REVISION])
            self.ever.setdefault(rev, set()).add(dev)
        self.pods_made.apply(p, created=_iso(self.now))
        self.status = {**self.status, **p.status}
        self.now += 1
        return p

    def until(self, m: dict[str, Any], rollout: dict[str, Any] | None, done: str, turns: int = 100) -> None:
        for _ in range(turns):
            self.turn(m, rollout)
            if self.status["rollout"]["phase"] == done:
                return
        raise AssertionError(f"rollout not {done}: {self.status['rollout']}")


def _iso(t: float) -> str:
    import datetime as dt
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


ROLLOUT = {"canary": 1, "waves": ["50%"], "healthGate": {"readySeconds": 2, "progressDeadlineSeconds": 10}}


def test_first_revision_then_a_model_update_rolls_out_in_waves() -> None:
    k = Cluster()
    k.until(model(), ROLLOUT, "Complete")
    assert k.status["revision"] == 1 and k.status["currentRevision"] == 1
    assert [r["outcome"] for r in k.status["revisions"]] == ["Succeeded"]
    p = k.turn(model(NEW), ROLLOUT)
    assert k.status["revision"] == 2 and k.status["currentRevision"] == 1
    assert len(p.apply) == 1  # the canary alone
    assert "model builds changed" in k.status["revisions"][-1]["reason"]
    k.until(model(NEW), ROLLOUT, "Complete")
    assert k.status["currentRevision"] == 2 and k.status["updated"] == 6
    assert all(ch.revision == 2 and ch.sha256 == NEW for ch in k.children.values())
    assert k.status["revisions"][-1]["digests"] == {"default": NEW}
    assert k.hits > 0  # devices that did not move were not derived again (and gave the same plan)


def test_bad_model_is_rolled_back_after_the_canary_with_the_reason_in_status() -> None:
    k = Cluster(bad=NEW)
    k.until(model(), ROLLOUT, "Complete")
    k.until(model(NEW), ROLLOUT, "RolledBack")
    assert k.ever[2] == {"edge-0"}
    assert all(ch.revision == 1 and ch.sha256 == SRC for ch in k.children.values())
    assert k.status["revision"] == 2 and k.status["currentRevision"] == 1
    assert k.status["revisions"][-1]["outcome"] == "Failed"
    degraded = next(x for x in k.status["conditions"] if x["type"] == "Degraded")
    assert degraded["reason"] == "RolloutFailed" and "edge-0" in degraded["message"]
    # The spec still names the bad build: it stays rolled back, nothing is retried.
    for _ in range(20):
        p = k.turn(model(NEW), ROLLOUT)
        assert p.apply == ()


def test_undo_by_spec_and_a_later_spec_change_wins_over_a_stale_undo() -> None:
    k = Cluster()
    k.until(model(), {}, "Complete")
    k.until(model(NEW), {}, "Complete")
    assert k.status["currentRevision"] == 2
    undo = {"rollbackTo": {"revision": 1}}
    k.until(model(NEW), undo, "Complete")
    assert k.status["revision"] == 3 and "rollback to revision 1" in k.status["revisions"][-1]["reason"]
    assert all(ch.sha256 == SRC and ch.revision == 3 for ch in k.children.values())
    # rollbackTo left in spec (as Git would): a new model still rolls out.
    third = "d" * 64
    k.until(model(third), undo, "Complete")
    assert k.status["revision"] == 4 and all(ch.sha256 == third for ch in k.children.values())


def test_unknown_undo_revision_is_refused_and_nothing_changes() -> None:
    k = Cluster()
    k.until(model(), {}, "Complete")
    p = k.turn(model(), {"rollbackTo": {"revision": 9}})
    ready = next(x for x in p.status["conditions"] if x["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec" and "revision 9 is not in the revision history" in ready["message"]
    assert p.apply == () and p.delete == ()


def test_invalid_rollout_spec_is_named_and_keeps_what_runs() -> None:
    k = Cluster()
    k.until(model(), {}, "Complete")
    p = k.turn(model(NEW), {"waves": ["90%", "10%"]})
    ready = next(x for x in p.status["conditions"] if x["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec" and "spec.rollout.waves must grow" in ready["message"]
    assert p.apply == () and p.delete == ()


def test_devices_waiting_for_their_wave_are_placed_and_listed() -> None:
    k = Cluster()
    p = k.turn(model(), ROLLOUT)
    assert len(p.apply) == 1 and p.status["placed"] == 6
    waiting = [r for r in p.status["devices"] if r["phase"] == "Waiting"]
    assert len(waiting) == 5 and all("wave" in r["message"] for r in waiting)


def test_max_unavailable_spends_on_serving_devices_only() -> None:
    """A first rollout starts every admitted device at once (nothing serves yet to keep); an update
    moves at most maxUnavailable serving devices at a time, each new Pod beside its Ready old one."""
    one = {"waves": ["100%"], "maxUnavailable": 1}
    k = Cluster()
    p = k.turn(model(), one)
    assert len(p.apply) == len(FLEET)
    k.until(model(), one, "Complete")
    p = k.turn(model(NEW), one)
    assert len(p.apply) == 1 and not p.delete_pods  # a surge: the old Pod stays until the new one is Ready
    k.until(model(NEW), one, "Complete")
    assert all(ch.revision == 2 and ch.sha256 == NEW for ch in k.children.values())


def test_a_serving_device_whose_new_pod_never_gets_ready_keeps_holding_the_budget() -> None:
    """The one device moving keeps its old Pod serving beside a new one that is never Ready: that
    spends maxUnavailable for as long, so no second serving device is moved."""
    one = {"waves": ["100%"], "maxUnavailable": 1, "healthGate": {"progressDeadlineSeconds": 600}}
    k = Cluster(bad=NEW)
    k.until(model(), one, "Complete")
    for _ in range(5):
        k.turn(model(NEW), one)
    assert len(k.ever[2]) == 1

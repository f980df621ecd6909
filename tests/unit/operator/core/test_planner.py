"""The InferenceDeployment reconcile as data: actions and status folding."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from edge_operator.core import deployment_status, patches, planner
from edge_operator.core.capabilities import Capabilities
from edge_operator.core.placement import DeviceView
from edge_operator.core.rollout import parse_time
from edge_operator.core.runtime_images import RuntimeImages
from edge_operator.core.views import PodInfo, idep_info, model_info, pod_info
from edgeai_api import constants as c
from tests.unit.operator.core.podsim import pod_of, workloads

SRC = "a" * 64
INT8 = "b" * 64
NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"


def model_body(state: str = "True", reason: str = "Verified", generation: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": "m", "namespace": "ns", "uid": "mu", "generation": generation},
        "spec": {"version": "1.0", "source": {"uri": "https://x/m.onnx", "sha256": SRC},
                 "variants": [{"name": "int8", "precision": "int8", "uri": "https://x/i.onnx", "sha256": INT8,
                               "accelerators": ["npu"]}]},
        "status": {"observedGeneration": 1, "sha256": SRC,
                   "conditions": [{"type": "Verified", "status": state, "reason": reason, "message": "msg"}],
                   "variants": [{"name": "int8", "verified": True, "sha256": INT8}]},
    }


def idep_body(selector: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "d", "namespace": "ns", "uid": "du", "generation": 2},
            "spec": {"model": "m", "deviceSelector": selector}, "status": status or {}}


FLEET = [
    DeviceView("edge-0", "edge-0", {"edgeai.io/site": "a"}, Capabilities(arch="amd64", memory="8Gi")),
    DeviceView("edge-1", "edge-1", {"edgeai.io/site": "a"},
               Capabilities(arch="arm64", memory="4Gi", accelerators=("cpu", "npu"))),
]


def as_child(manifest: dict[str, Any], ready: bool = True) -> PodInfo:
    return pod_of(manifest, ready)


def run(idep: dict[str, Any], model: dict[str, Any] | None, devices: list[DeviceView] = FLEET,
        children: dict[str, PodInfo] | None = None, pods: dict[str, list[PodInfo]] | None = None,
        now: str = NOW) -> planner.IdepPlan:
    """A plan over the devices' model server Pods: `children` (one per device) and any other `pods`."""
    every = {d: [p] for d, p in (children or {}).items()}
    for d, ps in (pods or {}).items():
        every.setdefault(d, []).extend(ps)
    info = idep_info(idep)
    return planner.plan(info, model_info(model) if model else None, {d.name: d for d in devices},
                        workloads(every, info.uid, parse_time(now) or 0.0), every, images=RuntimeImages("img"),
                        now=now)


def cond(status: dict[str, Any], t: str) -> dict[str, Any]:
    return next(x for x in status["conditions"] if x["type"] == t)


def test_first_reconcile_creates_one_child_per_device_with_the_right_build() -> None:
    p = run(idep_body(), model_body())
    assert [m["metadata"]["annotations"][c.A_DEVICE] for m in p.apply] == ["edge-0", "edge-1"]
    assert [m["metadata"]["annotations"][c.A_VARIANT] for m in p.apply] == ["default", "int8"]
    st = p.status
    assert st["placed"] == 2 and st["ready"] == 0 and st["selected"] == 2
    assert cond(st, "Ready")["status"] == "False" and cond(st, "Progressing")["status"] == "True"
    assert all(x["observedGeneration"] == 2 for x in st["conditions"])


def test_converged_state_plans_nothing_and_is_ready_and_stable() -> None:
    first = run(idep_body(), model_body())
    children = {m["metadata"]["annotations"][c.A_DEVICE]: as_child(m) for m in first.apply}
    p = run(idep_body(status=first.status), model_body(), children=children)
    assert p.apply == () and p.delete == ()
    assert cond(p.status, "Ready")["status"] == "True" and p.status["ready"] == 2
    assert cond(p.status, "Progressing")["reason"] == "Complete"
    # Twice, later: same status, lastTransitionTime kept, so no write is needed.
    again = run(idep_body(status=p.status), model_body(), children=children, now=LATER)
    assert again.status == p.status
    assert patches.status_patch(p.status, again.status) is None


def test_model_not_verified_places_nothing_and_keeps_what_runs() -> None:
    first = run(idep_body(), model_body())
    children = {m["metadata"]["annotations"][c.A_DEVICE]: as_child(m) for m in first.apply}
    p = run(idep_body(), model_body("False", "DigestMismatch"), children=children)
    assert p.apply == () and p.delete == ()
    r = cond(p.status, "Ready")
    assert r["reason"] == "ModelNotVerified" and "DigestMismatch" in r["message"]
    assert "existing workloads are kept" in r["message"]
    assert cond(p.status, "Degraded")["status"] == "True"
    pending = run(idep_body(), model_body(generation=2))  # spec changed, not verified yet
    assert cond(pending.status, "Progressing")["status"] == "True"
    assert cond(pending.status, "Ready")["reason"] == "ModelVerifying"


def test_missing_model_is_reported() -> None:
    p = run(idep_body(), None)
    assert p.apply == () and cond(p.status, "Ready")["reason"] == "ModelNotFound"
    assert "'m'" in cond(p.status, "Ready")["message"]


def test_device_leaving_the_selection_loses_its_child() -> None:
    first = run(idep_body(), model_body())
    children = {m["metadata"]["annotations"][c.A_DEVICE]: as_child(m) for m in first.apply}
    p = run(idep_body({"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "DoesNotExist"}]}),
            model_body(), devices=FLEET[:1], children=children)
    assert [x.device for x in p.delete_pods] == ["edge-1"] and p.apply == () and p.delete == ()


def test_no_matching_devices_and_none_suitable() -> None:
    p = run(idep_body({"matchLabels": {"edgeai.io/site": "nowhere"}}), model_body())
    assert cond(p.status, "Ready")["reason"] == "NoMatchingDevices"
    assert "edgeai.io/site=nowhere" in cond(p.status, "Ready")["message"]
    assert p.status["unplaced"] == [] and p.status["notSelected"] == 2
    m = model_body()
    m["spec"]["requirements"] = {"arch": ["arm"]}
    p = run(idep_body(), m)
    assert cond(p.status, "Ready")["reason"] == "NoSuitableDevices"
    assert "2 ArchMismatch" in cond(p.status, "Ready")["message"]


def test_offline_device_keeps_workload_and_does_not_block_ready() -> None:
    first = run(idep_body(), model_body())
    children = {m["metadata"]["annotations"][c.A_DEVICE]: as_child(m) for m in first.apply}
    children["edge-1"] = as_child(next(m for m in first.apply if "edge-1" in m["metadata"]["name"]), ready=False)
    fleet = [FLEET[0], DeviceView("edge-1", "edge-1", {}, FLEET[1].capabilities, online=False)]
    p = run(idep_body(), model_body(), devices=fleet, children=children)
    assert p.apply == () and p.delete == ()
    assert p.status["offline"] == 1 and cond(p.status, "Ready")["status"] == "True"
    assert cond(p.status, "Degraded")["reason"] == "DevicesOffline"
    row = next(r for r in p.status["devices"] if r["device"] == "edge-1")
    assert row["phase"] == "Offline"


def test_fetch_failure_on_the_node_is_named() -> None:
    first = run(idep_body(), model_body())
    children = {m["metadata"]["annotations"][c.A_DEVICE]: as_child(m, ready=False) for m in first.apply}
    bad_pod = pod_info({
        "metadata": {"name": "p", "namespace": "ns", "creationTimestamp": NOW,
                     "labels": {c.L_IDEP: "d", c.L_DEVICE: "edge-0"}, "annotations": {c.A_SHA256: SRC}},
        "spec": {"nodeName": "edge-0"},
        "status": {"phase": "Pending", "initContainerStatuses": [
            {"name": "fetch", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 3, "reason": "Error", "message": "sha256 is x"}}}]},
    })
    p = run(idep_body(), model_body(), children=children, pods={"edge-0": [bad_pod]})
    row = next(r for r in p.status["devices"] if r["device"] == "edge-0")
    assert row["phase"] == "FetchFailed" and row["message"].startswith("DigestMismatch")
    assert cond(p.status, "Degraded")["reason"] == "DevicesFailing"
    assert cond(p.status, "Ready")["status"] == "False"


def test_a_crash_looping_server_shows_why_it_last_exited() -> None:
    first = run(idep_body(), model_body())
    children = {m["metadata"]["annotations"][c.A_DEVICE]: as_child(m, ready=False) for m in first.apply}
    why = "IntegrityError(NoAccelerator): no execution provider but the CPU started"
    bad_pod = pod_info({
        "metadata": {"name": "p", "namespace": "ns", "creationTimestamp": NOW,
                     "labels": {c.L_IDEP: "d", c.L_DEVICE: "edge-0"}, "annotations": {c.A_SHA256: SRC}},
        "spec": {"nodeName": "edge-0"},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "server", "restartCount": 4, "state": {"waiting": {
                "reason": "CrashLoopBackOff", "message": "back-off 1m20s restarting failed container=server"}},
             "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": why}}}]},
    })
    assert (bad_pod.reason, bad_pod.message) == ("CrashLoopBackOff", why)
    p = run(idep_body(), model_body(), children=children, pods={"edge-0": [bad_pod]})
    row = next(r for r in p.status["devices"] if r["device"] == "edge-0")
    assert why in row["message"], row


def test_status_patch_removes_only_owned_keys() -> None:
    old = {"placed": 1, "unplacedNotListed": 5, "revisions": [1]}
    assert patches.status_patch(old, {"placed": 1}) == {"unplacedNotListed": None}


def test_unplaced_list_is_capped_with_a_count_and_unselected_are_counted() -> None:
    fleet = [DeviceView(f"n-{i:04}", f"n-{i:04}", {"x": "1"}, Capabilities(arch="arm")) for i in range(150)]
    fleet += [DeviceView(f"o-{i:04}", f"o-{i:04}", {"x": "2"}, Capabilities(arch="arm")) for i in range(30)]
    m = model_body()
    m["spec"]["requirements"] = {"arch": ["amd64"]}
    p = run(idep_body({"matchLabels": {"x": "1"}}), m, devices=fleet)
    assert len(p.status["unplaced"]) == deployment_status.MAX_LISTED_UNPLACED
    assert {u["reason"] for u in p.status["unplaced"]} == {"ArchMismatch"}
    assert p.status["unplacedNotListed"] == 50 and p.status["notSelected"] == 30


def test_device_rows_are_capped_with_a_count_and_the_ones_needing_a_look_first() -> None:
    # 10,000 rows would not fit in one etcd write: the status lists at most MAX_LISTED_DEVICES.
    cap = deployment_status.MAX_LISTED_DEVICES
    fleet = [DeviceView(f"n-{i:05}", f"n-{i:05}", {"x": "1"}, Capabilities(arch="amd64")) for i in range(cap + 5)]
    p = run(idep_body({"matchLabels": {"x": "1"}}), model_body(), devices=fleet)
    assert p.status["placed"] == cap + 5 and len(p.status["devices"]) == cap
    assert p.status["devicesNotListed"] == 5
    rows = [{"device": f"d{i}", "phase": "Ready", "ready": True} for i in range(cap)]
    rows += [{"device": "late", "phase": "Starting", "ready": False},
             {"device": "bad", "phase": "Failed", "ready": False}]
    listed, more = deployment_status._listed_devices(rows)
    assert more == 2 and [r["device"] for r in listed[:3]] == ["bad", "late", "d0"]
    assert deployment_status._listed_devices(rows[:cap]) == (rows[:cap], 0)
    # Once the fleet shrinks under the cap, the count goes away.
    assert patches.status_patch({"devicesNotListed": 5}, {}) == {"devicesNotListed": None}


def test_progress_is_not_urgent_but_condition_and_generation_changes_are() -> None:
    first = run(idep_body(), model_body()).status
    children = {m["metadata"]["annotations"][c.A_DEVICE]: as_child(m, ready=False)
                for m in run(idep_body(), model_body()).apply}
    progress = run(idep_body(status=first), model_body(), children=children).status
    assert patches.status_patch(first, progress) is not None  # device phases moved on...
    assert not patches.urgent_change(first, progress)  # ...but nothing a waiter acts on
    ready = run(idep_body(status=first), model_body(),
                children={d: replace(ch, ready=True) for d, ch in children.items()}).status
    assert patches.urgent_change(first, ready)  # Ready flipped
    assert not patches.urgent_change({}, first)  # a brand-new rollout in progress may wait...
    assert patches.urgent_change({}, dict(first, conditions=[{"type": "Ready", "status": "False",
                                                               "reason": "ModelNotFound"}]))  # ...a problem not
    assert patches.urgent_change(first, dict(first, observedGeneration=3))  # a spec change is acknowledged
    assert patches.urgent_change(first, dict(first, placed=5), ("placed",))


def test_status_patch_nulls_keys_dropped_from_nested_objects() -> None:
    old = {"rollout": {"revision": 1, "phase": "Complete", "waveReadyAt": "t0"}, "placed": 3, "other": 1}
    new = {"rollout": {"revision": 2, "phase": "Progressing"}, "placed": 3}
    patch = patches.status_patch(old, new)
    assert patch == {"rollout": {"revision": 2, "phase": "Progressing", "waveReadyAt": None}}
    # What the server stores after the patch is exactly `new` (plus keys other writers own).
    assert patches.merge_apply(old, patch) == {**new, "other": 1}

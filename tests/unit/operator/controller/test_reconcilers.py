"""Each reconciler on a fake cluster: what it applies, deletes, writes and announces, and when it runs again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

import pytest

from edge_operator.controller.api import EventRecorder
from edge_operator.controller.keys import DeploymentKey, DeviceKey, ModelKey, NodeKey
from edge_operator.controller.reconcilers.deployment import DeploymentReconciler
from edge_operator.controller.reconcilers.device import DeviceReconciler
from edge_operator.controller.reconcilers.model import ModelReconciler
from edge_operator.controller.reconcilers.node import NodeReconciler
from edge_operator.controller.status_writer import StatusWriter
from edge_operator.controller.workqueue import Requeue
from edge_operator.core.runtime_images import RuntimeImages
from edge_operator.core.site_cache import site_cache_info
from edge_operator.core.status import ArtifactCheck, ModelCheck
from edge_operator.core.views import ModelInfo, pod_info
from edge_operator.kube.errors import RetryableError
from edge_operator.kube.kubeapi import Ref
from edgeai_api import constants as c
from tests.unit.operator.controller.fakes import (
    SRC,
    Clock,
    FakeApi,
    FakeCluster,
    device_body,
    idep_body,
    model_body,
    node_body,
    running_pod,
    workload_body,
)

SITE_A = {"matchLabels": {"site": "a"}}
KEY = DeploymentKey("ns", "d")


class World:
    def __init__(self) -> None:
        self.k = FakeCluster()
        self.api = FakeApi()
        self.clock = Clock()
        self.recorder = EventRecorder(self.api)
        self.writer = StatusWriter(self.api, 20.0, clock=self.clock)
        for n in ("edge-0", "edge-1"):
            self.k.put("nodes", node_body(n, {"site": "a"}))
            self.k.put("edgedevices", device_body(n))

    def deployments(self) -> DeploymentReconciler:
        return DeploymentReconciler(self.api, self.k.cache, self.k.catalog, self.writer, self.recorder,
                                    RuntimeImages("img"), 5.0)

    def devices(self) -> DeviceReconciler:
        return DeviceReconciler(self.k.cache, self.writer, self.recorder, 10.0, 300.0)

    async def events(self) -> list[tuple[str, str, str]]:
        await self.recorder.drain()
        return self.api.events


def run(main: Callable[[World], Awaitable[None]]) -> None:
    asyncio.run(main(World()))


def test_a_new_deployment_creates_one_pod_per_device_and_writes_status_once_ready() -> None:
    async def main(w: World) -> None:
        w.k.put("edgemodels", model_body())
        w.k.put("inferencedeployments", idep_body("d", SITE_A))
        r = w.deployments()
        # The first status of a rollout that simply started waits, to be written with what follows.
        assert await r.reconcile(KEY) == Requeue(5.0)
        assert sorted(m["metadata"]["annotations"][c.A_DEVICE] for m in w.api.pods.values()) == ["edge-0", "edge-1"]
        assert w.api.status_writes == 0
        # Again before the watch brought the Pods back: nothing is created twice.
        await r.reconcile(KEY)
        assert len(w.api.created) == 2
        for m in w.api.pods.values():
            w.k.put("pods", running_pod(m, ready=True))
        w.clock.now += 5
        assert await r.reconcile(KEY) is None
        st = w.api.status[("inferencedeployments", "ns", "d")]
        assert st["ready"] == 2 and st["placed"] == 2
        assert {x["type"]: x["status"] for x in st["conditions"]}["Ready"] == "True"
        assert ("d", "Normal", "RolloutComplete") in await w.events()
        assert r.counts[KEY] == (2, 2, 0)
        # Converged, and the cache still shows the old status (our write not echoed): nothing to write.
        await r.reconcile(KEY)
        assert w.api.status_writes == 1 and len(w.api.created) == 2 and w.api.deleted == []

    run(main)


def test_a_deployments_pace_follows_its_last_reconcile_and_goes_with_it() -> None:
    async def main(w: World) -> None:
        w.k.put("edgemodels", model_body())
        w.k.put("inferencedeployments", idep_body("d", SITE_A))
        r = w.deployments()
        assert r.pace(KEY) == 0.0  # never reconciled: nothing to wait for
        await r.reconcile(KEY)
        assert r.pace(KEY) > 0.0
        assert not r._memos  # two devices: planned without a memo (MEMO_MIN_PODS)
        w.k.delete("inferencedeployments", "d", "ns")
        r.forget(KEY)
        await r.reconcile(KEY)
        assert r.pace(KEY) == 0.0

    run(main)


async def _surged(w: World, r: DeploymentReconciler) -> dict[str, Mapping[str, Any]]:
    """Every device served, then a new template whose new Pods are Ready beside the old ones: the old
    Pods (returned, by device) are the operator's to delete now."""
    w.k.put("edgemodels", model_body())
    w.k.put("inferencedeployments", idep_body("d", SITE_A))
    await r.reconcile(KEY)
    first = {m["metadata"]["annotations"][c.A_DEVICE]: m for m in w.api.pods.values()}
    for m in first.values():
        w.k.put("pods", running_pod(m, ready=True))
    body = idep_body("d", SITE_A, generation=2)
    body["spec"]["runtime"] = {"podAnnotations": {"x": "2"}}
    w.k.put("inferencedeployments", body)
    await r.reconcile(KEY)
    for m in w.api.pods.values():
        if m is not first[m["metadata"]["annotations"][c.A_DEVICE]]:
            w.k.put("pods", running_pod(m, ready=True))
    return first


def test_only_the_end_of_a_pod_this_operator_deleted_is_taken_as_expected() -> None:
    async def main(w: World) -> None:
        r = w.deployments()
        first = await _surged(w, r)
        await r.reconcile(KEY)
        old = pod_info(running_pod(first["edge-0"], ready=True))
        assert ("pods", old.name, old.uid) in w.api.deleted
        assert r.saw_pod(replace(old, deleting=True), deleted=False) is False  # terminating: not gone yet
        assert r.saw_pod(replace(old, deleting=True), deleted=True) is True  # gone, as the operator asked
        # The same, when the watch's first word of the Pod after the delete is that it is gone.
        old1 = pod_info(running_pod(first["edge-1"], ready=True))
        assert ("pods", old1.name, old1.uid) in w.api.deleted
        assert r.saw_pod(old1, deleted=True) is True
        # A Pod the operator never deleted, gone: by hand or evicted, to be made again at once.
        kept = next(m for m in w.api.pods.values() if m["metadata"]["annotations"][c.A_DEVICE] == "edge-1"
                    and m is not first["edge-1"])
        assert r.saw_pod(pod_info(running_pod(kept, ready=True)), deleted=True) is False

    run(main)


def _legacy(name: str, device: str, owner_uid: str = "uid-d", ready: bool = True) -> dict[str, object]:
    """A Deployment an operator of 0.1 made for one device, ready or not."""
    n = int(ready)
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": 1,
                         "labels": {c.L_MANAGED_BY: c.OPERATOR_NAME},
                         "annotations": {c.A_DEVICE: device, c.A_SHA256: SRC, c.A_SPEC_HASH: "old", c.A_REVISION: "1"},
                         "ownerReferences": [{"apiVersion": c.API_VERSION, "kind": c.KIND_IDEP, "name": "d",
                                              "uid": owner_uid, "controller": True}]},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": n,
                       "availableReplicas": n}}


def test_a_0_1_deployment_is_replaced_by_a_pod_and_deleted_only_once_the_pod_is_ready() -> None:
    async def main(w: World) -> None:
        w.k.put("edgemodels", model_body())
        w.k.put("inferencedeployments", idep_body("d", SITE_A))
        for dev in ("edge-0", "edge-1"):
            w.k.put("deployments", _legacy(f"d-{dev}", dev))
        # A predecessor's (another InferenceDeployment of the same name) is the garbage collector's.
        w.k.put("deployments", _legacy("d-edge-1-old", "edge-1", owner_uid="uid-gone"))
        r = w.deployments()
        await r.reconcile(KEY)
        # The new Pods come up beside the old servers, which keep serving: nothing deleted yet.
        assert len(w.api.pods) == 2 and w.api.deleted == []
        w.clock.now += 5
        pods = {m["metadata"]["annotations"][c.A_DEVICE]: m for m in w.api.pods.values()}
        w.k.put("pods", running_pod(pods["edge-0"], ready=True))
        w.k.put("pods", running_pod(pods["edge-1"], ready=False))
        await r.reconcile(KEY)
        # edge-0's Pod is Ready: its old Deployment goes (the GC takes its ReplicaSet and Pod); edge-1's stays.
        assert w.api.deleted == [("deployments", "d-edge-0", "uid-d-edge-0")]
        assert len(w.api.created) == 2  # no Pod made twice

    run(main)


def test_failed_workload_writes_are_retried_and_not_taken_as_applied() -> None:
    async def main(w: World) -> None:
        w.k.put("edgemodels", model_body())
        w.k.put("inferencedeployments", idep_body("d", SITE_A))
        r = w.deployments()
        w.api.fail_apply = 500
        with pytest.raises(RetryableError):
            await r.reconcile(KEY)
        w.api.fail_apply = None
        await r.reconcile(KEY)
        assert len(w.api.pods) == 2

    run(main)


def _fleet(w: World, n: int) -> None:
    for i in range(2, n):
        w.k.put("nodes", node_body(f"edge-{i}", {"site": "a"}))
        w.k.put("edgedevices", device_body(f"edge-{i}"))


def test_pods_refused_by_the_server_cost_one_request_per_retry_not_one_per_device() -> None:
    async def main(w: World) -> None:
        _fleet(w, 40)
        w.k.put("edgemodels", model_body())
        w.k.put("inferencedeployments", idep_body("d", SITE_A))
        r = w.deployments()
        w.api.fail_apply = 403  # e.g. a quota or an admission webhook refusing every Pod
        for _ in range(3):
            with pytest.raises(RetryableError):
                await r.reconcile(KEY)
        assert w.api.create_requests == 3
        w.api.fail_apply = None
        await r.reconcile(KEY)
        assert len(w.api.pods) == 40 and w.api.create_requests == 43

    run(main)


def test_a_refused_create_does_not_hold_back_the_deletes_that_end_surges() -> None:
    async def main(w: World) -> None:
        r = w.deployments()
        first = (await _surged(w, r)).values()
        # A new device joins (a create) while both surges can end (two deletes); the server refuses Pods.
        w.k.put("nodes", node_body("edge-2", {"site": "a"}))
        w.k.put("edgedevices", device_body("edge-2"))
        w.k.catalog.refresh("edge-2")
        w.k.catalog.changed()
        w.api.fail_apply = 403
        with pytest.raises(RetryableError):
            await r.reconcile(KEY)
        assert sorted(name for plural, name, _ in w.api.deleted if plural == "pods") == sorted(
            m["metadata"]["name"] for m in first)

    run(main)


class _UndoDuringCreates(FakeApi):
    """The API server, while the user changes the deployment's spec after the third Pod is made."""

    def __init__(self, k: FakeCluster) -> None:
        super().__init__()
        self.k = k

    async def create(self, obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
        out = await super().create(obj)
        if len(self.pods) == 3:
            self.k.put("inferencedeployments", idep_body("d", SITE_A, generation=2))
        return out


def test_a_spec_change_stops_the_pod_writes_of_the_plan_it_made_stale() -> None:
    async def main(w: World) -> None:
        _fleet(w, 40)
        w.api = _UndoDuringCreates(w.k)
        w.writer = StatusWriter(w.api, 20.0, clock=w.clock)
        w.k.put("edgemodels", model_body())
        w.k.put("inferencedeployments", idep_body("d", SITE_A))
        r = w.deployments()
        # Batches of 1 and 2, then the change is seen: the other 37 Pods of the old plan are not made.
        assert await r.reconcile(KEY) == Requeue(0.0)
        assert len(w.api.pods) == 3
        await r.reconcile(KEY)  # planned again, on generation 2
        assert len(w.api.pods) == 40

    run(main)


class _StatusFirst(FakeApi):
    """Holds every Pod create until a status write reached the server (never: the reconcile hangs)."""

    def __init__(self) -> None:
        super().__init__()
        self.status_seen = asyncio.Event()

    async def patch_status(self, ref: Ref, status_patch: Mapping[str, Any]) -> Mapping[str, Any]:
        out = await super().patch_status(ref, status_patch)
        self.status_seen.set()
        return out

    async def create(self, obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
        await self.status_seen.wait()
        return await super().create(obj)


def test_status_is_written_while_the_pods_are_made_not_after() -> None:
    async def main(w: World) -> None:
        w.api = _StatusFirst()
        w.writer = StatusWriter(w.api, 20.0, clock=w.clock)
        w.k.put("edgemodels", model_body())
        # A spec change on a deployment with status: acknowledged at once.
        w.k.put("inferencedeployments", idep_body("d", SITE_A, generation=2, status={
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "False", "reason": "ModelNotFound", "message": "-"}]}))
        await asyncio.wait_for(w.deployments().reconcile(KEY), 60)
        assert w.api.status[("inferencedeployments", "ns", "d")]["observedGeneration"] == 2
        assert len(w.api.pods) == 2

    run(main)


def test_a_deployment_being_deleted_is_left_to_the_garbage_collector() -> None:
    async def main(w: World) -> None:
        w.k.put("edgemodels", model_body())
        w.k.put("inferencedeployments", idep_body("d", SITE_A, deleting=True))
        assert await w.deployments().reconcile(KEY) is None
        assert w.api.apply_calls == 0 and w.api.status_writes == 0

    run(main)


def test_device_status_follows_its_node_and_says_when_it_goes_offline() -> None:
    async def main(w: World) -> None:
        r = w.devices()
        key = DeviceKey("edge-0")
        assert await r.reconcile(key) is None
        st = w.api.status[("edgedevices", None, "edge-0")]
        assert st["online"] is True and st["capabilities"]["arch"] == "amd64"
        await r.reconcile(key)  # our write is not in the cache yet: nothing written again
        w.k.put("edgedevices", device_body("edge-0", status=st, rv="2"))
        await r.reconcile(key)
        assert w.api.status_writes == 1
        w.k.put("nodes", node_body("edge-0", {"site": "a"}, ready=False))
        assert await r.reconcile(key) is None
        assert w.api.status[("edgedevices", None, "edge-0")]["online"] is False
        assert await w.events() == [("edge-0", "Warning", "DeviceOffline")]

    run(main)


def test_what_a_device_serves_is_held_with_progress() -> None:
    async def main(w: World) -> None:
        r = w.devices()
        key = DeviceKey("edge-0")
        await r.reconcile(key)
        w.k.put("edgedevices", device_body("edge-0", status=w.api.status[("edgedevices", None, "edge-0")], rv="2"))
        w.k.put("edgemodels", model_body())
        w.k.put("inferencedeployments", idep_body("d", SITE_A))
        await w.deployments().reconcile(KEY)
        for m in w.api.pods.values():
            w.k.put("pods", running_pod(m, ready=True))
        writes = w.api.status_writes
        assert await r.reconcile(key) == Requeue(10.0)
        assert w.api.status_writes == writes
        w.clock.now += 10
        assert await r.reconcile(key) is None
        assert w.api.status[("edgedevices", None, "edge-0")]["servingCount"] == 1

    run(main)


def test_edge_nodes_get_a_device_and_lose_the_discovered_one_when_no_longer_edge() -> None:
    async def main(w: World) -> None:
        r = NodeReconciler(w.api, w.k.cache)
        w.k.put("nodes", node_body("edge-2"))
        await r.reconcile(NodeKey("edge-2"))
        assert [(o["metadata"]["name"], o["metadata"]["labels"][c.L_DISCOVERED]) for o in w.api.created] == [
            ("edge-2", "true")]
        await r.reconcile(NodeKey("edge-0"))  # has its device
        assert len(w.api.created) == 1
        plain = node_body("edge-0")
        del plain["metadata"]["labels"][c.EDGE_NODE_LABEL]
        w.k.put("nodes", plain)
        await r.reconcile(NodeKey("edge-0"))
        assert w.api.deleted == [("edgedevices", "edge-0", "dev-edge-0")]
        w.k.put("edgedevices", device_body("edge-0", discovered=False))  # made by hand: kept
        await r.reconcile(NodeKey("edge-0"))
        assert len(w.api.deleted) == 1

    run(main)


class Checker:
    def __init__(self, result: ModelCheck, during: Callable[[], None] = lambda: None) -> None:
        self.result = result
        self.during = during

    async def check(self, m: ModelInfo) -> ModelCheck:
        self.during()
        return self.result


OK = ModelCheck(ArtifactCheck("default", True, sha256=SRC, size=10))


def models(w: World, checker: Checker) -> ModelReconciler:
    return ModelReconciler(w.api, w.k.cache, checker, w.recorder)


def test_a_model_is_marked_verifying_then_verified_once() -> None:
    async def main(w: World) -> None:
        w.k.put("edgemodels", model_body(verified=False))
        assert await models(w, Checker(OK)).reconcile(ModelKey("ns", "m")) is None
        first, second = w.api.status_patches
        assert first["phase"] == "Verifying"
        verified = {x["type"]: x for x in second["conditions"]}["Verified"]
        assert verified["status"] == "True" and second["sha256"] == SRC
        assert await w.events() == [("m", "Normal", "Verified")]

    run(main)


def test_an_unreachable_source_is_retried_with_backoff() -> None:
    async def main(w: World) -> None:
        w.k.put("edgemodels", model_body(verified=False))
        down = ModelCheck(ArtifactCheck("default", False, reason="Unreachable", message="connection refused"))
        assert await models(w, Checker(down)).reconcile(ModelKey("ns", "m")) == Requeue(None)
        assert await w.events() == [("m", "Warning", "Unreachable")]

    run(main)


def test_a_spec_changed_during_the_check_is_checked_again_at_once() -> None:
    async def main(w: World) -> None:
        w.k.put("edgemodels", model_body(verified=False))

        def edit() -> None:
            w.k.put("edgemodels", model_body(verified=False, generation=2))

        assert await models(w, Checker(OK, during=edit)).reconcile(ModelKey("ns", "m")) == Requeue(0.0)
        assert [p.get("phase") for p in w.api.status_patches] == ["Verifying"]

    run(main)




def test_site_cache_runs_on_the_gateway_lists_it_once_ready_writes_nothing_twice_and_goes_when_off() -> None:
    async def main(w: World) -> None:
        gw = node_body("gw-a", {c.SITE_LABEL: "a", c.SITE_GATEWAY_LABEL: "true"})
        gw["status"]["addresses"] = [{"type": "InternalIP", "address": "10.1.2.3"}]
        w.k.put("nodes", gw)
        for n in ("edge-0", "edge-1"):
            w.k.put("nodes", node_body(n, {"site": "a", c.SITE_LABEL: "a"}))
        w.k.catalog.changed()
        w.k.put("edgemodels", model_body())
        body = idep_body("d", SITE_A)
        body["spec"]["siteCache"] = {}
        w.k.put("inferencedeployments", body)
        r = w.deployments()
        await r.reconcile(KEY)
        caches = [m for m in w.api.applied.values() if m["kind"] == "Deployment"
                  and m["metadata"]["labels"].get(c.L_SITE_CACHE)]
        assert [m["metadata"]["annotations"][c.A_NODE] for m in caches] == ["gw-a"]
        assert w.api.applied[("ns", "d-site-cache")]["data"] == {}  # not Ready yet: not listed
        calls = w.api.apply_calls
        await r.reconcile(KEY)
        assert w.api.apply_calls == calls  # nothing changed: nothing written again

        # The cache comes back Ready through the watch: the ConfigMap lists the gateway's address.
        (cache,) = caches
        w.k.put("deployments", workload_body(cache, ready=True))
        info = site_cache_info(workload_body(cache, ready=True))
        assert info is not None
        r.saw_site_cache(info, deleted=False)  # what the manager does with the watch event
        await r.reconcile(KEY)
        assert w.api.applied[("ns", "d-site-cache")]["data"] == {"a": "http://10.1.2.3:8090"}
        w.clock.now += 60
        await r.reconcile(KEY)
        st = w.api.status[("inferencedeployments", "ns", "d")]
        assert st["siteCaches"] == [{"site": "a", "node": "gw-a", "endpoint": "http://10.1.2.3:8090", "ready": True}]

        # Deleted by hand: it comes back.
        w.k.delete("deployments", cache["metadata"]["name"], "ns")
        r.saw_site_cache(info, deleted=True)
        calls = w.api.apply_calls
        await r.reconcile(KEY)
        # Applied again (and, gone meanwhile, no longer listed to the devices until Ready again).
        assert w.api.apply_calls == calls + 2 and w.api.applied[("ns", cache["metadata"]["name"])] == cache
        assert w.api.applied[("ns", "d-site-cache")]["data"] == {}
        w.k.put("deployments", workload_body(cache, ready=True))
        r.saw_site_cache(info, deleted=False)

        # Off: the cache goes first, then (once it is gone) the ConfigMap and the status rows.
        off = idep_body("d", SITE_A, generation=2, status=st)
        w.k.put("inferencedeployments", off)
        await r.reconcile(KEY)
        assert ("deployments", cache["metadata"]["name"], f"uid-{cache['metadata']['name']}") in w.api.deleted
        assert ("configmaps", "d-site-cache", None) not in w.api.deleted
        w.k.delete("deployments", cache["metadata"]["name"], "ns")
        w.k.put("inferencedeployments", idep_body("d", SITE_A, generation=2,
                                                  status=w.api.status[("inferencedeployments", "ns", "d")]))
        await r.reconcile(KEY)
        assert ("configmaps", "d-site-cache", None) in w.api.deleted
        w.clock.now += 60
        await r.reconcile(KEY)
        assert "siteCaches" not in w.api.status[("inferencedeployments", "ns", "d")]

    run(main)

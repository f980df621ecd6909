"""Which keys a watch event queues: pure, on a fake cluster's indexes, no queues."""

from __future__ import annotations

from edge_operator.controller.events import EventMapper, Work
from edge_operator.controller.keys import DeploymentKey, DeviceKey, ModelKey, NodeKey
from edge_operator.core.views import child_info, pod_info
from tests.unit.operator.controller.fakes import (
    FakeCluster,
    device_body,
    idep_body,
    model_body,
    node_body,
    pod_body,
)

FANOUT, STATUS = 0.5, 0.3
SITE_A = {"matchLabels": {"site": "a"}}
SITE_B = {"matchLabels": {"site": "b"}}


def fleet() -> tuple[FakeCluster, EventMapper]:
    """Two nodes with their discovered devices, two deployments selecting one site each; every
    object already seen once (as after the initial lists)."""
    k = FakeCluster()
    ev = EventMapper(k.cache, k.catalog, fanout_delay=FANOUT, status_delay=STATUS)
    for name, site in (("edge-0", "a"), ("edge-1", "b")):
        k.put("nodes", node_body(name, {"site": site}))
        k.put("edgedevices", device_body(name))
    k.put("inferencedeployments", idep_body("da", SITE_A))
    k.put("inferencedeployments", idep_body("db", SITE_B))
    for name in ("edge-0", "edge-1"):
        ev.node(name)
        ev.device(name)
    ev.deployment(DeploymentKey("ns", "da"))
    ev.deployment(DeploymentKey("ns", "db"))
    return k, ev


def delays(work: Work) -> dict[object, float]:
    return dict(work.reconcile)


def test_a_heartbeat_only_refreshes_the_device_status_later() -> None:
    k, ev = fleet()
    version = k.catalog.version
    k.put("nodes", node_body("edge-0", {"site": "a"}, heartbeat="2026-01-01T00:01:00Z"))
    work = ev.node("edge-0")
    assert delays(work) == {DeviceKey("edge-0"): STATUS}
    assert k.catalog.version == version  # placements computed before stay valid


def test_a_node_relabelled_to_another_site_concerns_the_deployments_of_both_sites() -> None:
    k, ev = fleet()
    k.put("nodes", node_body("edge-0", {"site": "b"}))
    work = ev.node("edge-0")
    assert delays(work) == {NodeKey("edge-0"): 0.0, DeploymentKey("ns", "da"): FANOUT,
                            DeploymentKey("ns", "db"): FANOUT, DeviceKey("edge-0"): STATUS}
    assert k.catalog.get()["edge-0"].labels["site"] == "b"
    # The other node's change later concerns only its own site's deployment.
    k.put("nodes", node_body("edge-1", {"site": "b", "zone": "z"}))
    assert DeploymentKey("ns", "da") not in ev.node("edge-1").queued()


def test_a_node_going_offline_reaches_the_deployments_running_on_it() -> None:
    k, ev = fleet()
    k.put("inferencedeployments", idep_body("other", {"matchLabels": {"site": "c"}}))
    ev.deployment(DeploymentKey("ns", "other"))
    k.put("deployments", {"metadata": {"name": "other-edge-0", "namespace": "ns",
                                       "ownerReferences": [{"kind": "InferenceDeployment", "name": "other",
                                                            "uid": "uid-d", "controller": True}],
                                       "annotations": {"edgeai.io/device": "edge-0"}}})
    k.put("nodes", node_body("edge-0", {"site": "a"}, ready=False))
    work = ev.node("edge-0")
    assert DeploymentKey("ns", "other") in work.queued() and DeploymentKey("ns", "da") in work.queued()
    assert not k.catalog.get()["edge-0"].online


def test_the_echo_of_a_device_status_write_reconciles_only_that_device() -> None:
    k, ev = fleet()
    k.put("edgedevices", device_body("edge-0", status={"online": True}, rv="2"))
    assert delays(ev.device("edge-0")) == {DeviceKey("edge-0"): 0.0}


def test_a_device_deleted_by_hand_is_rediscovered_and_its_deployments_told() -> None:
    k, ev = fleet()
    k.delete("edgedevices", "edge-0")
    work = ev.device("edge-0")
    assert delays(work) == {DeploymentKey("ns", "da"): FANOUT, NodeKey("edge-0"): 0.0}
    assert "edge-0" not in k.catalog.get()


def test_a_deployment_is_queued_on_spec_changes_only_and_forgotten_when_gone() -> None:
    k, ev = fleet()
    key = DeploymentKey("ns", "da")
    k.put("inferencedeployments", idep_body("da", SITE_A, status={"placed": 1}, rv="2"))
    assert ev.deployment(key).queued() == set()  # our own status write came back
    k.put("inferencedeployments", idep_body("da", SITE_B, generation=2, rv="3"))
    assert ev.deployment(key).queued() == {key}
    # Its selector moved to site b: a site-a device change no longer concerns it.
    k.put("nodes", node_body("edge-0", {"site": "a", "zone": "z"}))
    assert key not in ev.node("edge-0").queued()
    k.delete("inferencedeployments", "da", "ns")
    work = ev.deployment(key)
    assert work.gone == key and work.queued() == set()
    k.put("nodes", node_body("edge-1", {"site": "b", "zone": "z"}))
    assert key not in ev.node("edge-1").queued()


def test_a_model_is_checked_once_per_generation_not_on_its_own_status_echo() -> None:
    k, ev = fleet()
    key = ModelKey("ns", "m")
    k.put("edgemodels", model_body(verified=False))
    first = ev.model(key)
    assert first.verify == [key]
    assert first.queued() == {DeploymentKey("ns", "da"), DeploymentKey("ns", "db")}
    # Our "Verifying" status comes back: still unverified, same generation, nothing new to check.
    k.put("edgemodels", model_body(status={"observedGeneration": 1, "phase": "Verifying"}))
    assert ev.model(key).verify == []
    # Verified: the deployments using it can place now.
    k.put("edgemodels", model_body())
    verified = ev.model(key)
    assert verified.verify == [] and verified.queued() == {DeploymentKey("ns", "da"), DeploymentKey("ns", "db")}
    k.put("edgemodels", model_body(reverify="r1"))
    assert ev.model(key).verify == [key]  # a person asked for a fresh check
    k.put("edgemodels", model_body(generation=2, status=model_body()["status"]))  # a new spec, not checked
    assert ev.model(key).verify == [key]


def test_pod_events_queue_the_deployment_only_when_something_it_reads_changed() -> None:
    _, ev = fleet()
    pod = pod_info(pod_body("p", "da", "edge-0", ready=False))
    assert delays(ev.pod("ADDED", pod)) == {DeploymentKey("ns", "da"): STATUS}
    assert ev.pod("MODIFIED", pod).queued() == set()
    ready = pod_info(pod_body("p", "da", "edge-0", ready=True))
    assert ev.pod("MODIFIED", ready).queued() == {DeploymentKey("ns", "da")}
    assert ev.pod("DELETED", ready).queued() == {DeploymentKey("ns", "da")}
    # Gone by hand: looked at now, to be made again. The surge's old Pod we deleted: coalesced.
    assert delays(ev.pod("DELETED", ready))[DeploymentKey("ns", "da")] == 0.0
    assert delays(ev.pod("DELETED", ready, deleted_by_us=True))[DeploymentKey("ns", "da")] == STATUS
    # A quality gate's exit (code 10, a restarted container) is read by the rollout: it queues the deployment.
    from dataclasses import replace

    assert ev.pod("ADDED", pod).queued() == {DeploymentKey("ns", "da")}
    assert ev.pod("MODIFIED", replace(pod, server_exit_code=10)).queued() == {DeploymentKey("ns", "da")}


def test_a_workload_deleted_by_hand_is_brought_back_at_once() -> None:
    _, ev = fleet()
    ch = child_info({"metadata": {"name": "da-edge-0", "namespace": "ns",
                                  "ownerReferences": [{"kind": "InferenceDeployment", "name": "da",
                                                       "uid": "uid-d", "controller": True}],
                                  "annotations": {"edgeai.io/device": "edge-0"}}})
    assert ch is not None
    assert delays(ev.child("MODIFIED", ch)) == {DeploymentKey("ns", "da"): STATUS, DeviceKey("edge-0"): STATUS}
    assert delays(ev.child("DELETED", ch)) == {DeploymentKey("ns", "da"): 0.0, DeviceKey("edge-0"): STATUS}

"""The pod lifecycle of the local plane's simulated edge nodes (hack/kwok-stages.yaml) behaves as
the tests and benchmarks that rely on it assume: ordinary pods run, get Ready, complete and go
away as with kwok's own stages; a pod annotated sim.edgeai.io/ready=false runs but never gets
Ready; one annotated sim.edgeai.io/crash=true keeps restarting; and pods marked not Ready while
their node was offline are Ready again once it is back. Each test uses a node of its own, so
the plane's shared nodes never go offline. On a real cluster these are skipped."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import KubeHandle
from tests.integration.test_plane_smoke import wait_for

pytestmark = pytest.mark.integration

READY_FALSE = {"sim.edgeai.io/ready": "false"}
CRASH = {"sim.edgeai.io/crash": "true"}


def pod_spec(node: str) -> dict[str, Any]:
    """Pinned to one kwok edge node the way the operator pins a device's workload."""
    return {
        "nodeSelector": {"node-role.kubernetes.io/edge": "", "kubernetes.io/hostname": node},
        "tolerations": [{"key": "node-role.kubernetes.io/edge", "operator": "Exists", "effect": "NoSchedule"},
                        # stay bound to the node while it is offline, as the operator's workloads do
                        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
                        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}],
        "initContainers": [{"name": "fetch", "image": "registry.invalid/edgeai-runtime:1"}],
        "containers": [{"name": "server", "image": "registry.invalid/edgeai-runtime:1"}],
    }


def deployment(kube: KubeHandle, ns: str, name: str, node: str, annotations: dict[str, str] | None = None) -> None:
    dep = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}, "annotations": annotations or {}},
                              "spec": pod_spec(node)}},
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(dep))


def pods(kube: KubeHandle, ns: str, app: str) -> list[dict[str, Any]]:
    out = kube.kubectl("get", "pods", "-n", ns, "-l", f"app={app}", "-o", "json").stdout
    return list(json.loads(out)["items"])


def the_pod(kube: KubeHandle, ns: str, app: str) -> dict[str, Any]:
    """The Deployment's one pod, once it runs (kwok gave it an IP)."""
    def running() -> dict[str, Any] | None:
        ps = [p for p in pods(kube, ns, app) if p["status"].get("phase") == "Running" and p["status"].get("podIP")]
        return ps[0] if len(ps) == 1 else None
    return wait_for(f"{app}'s pod Running", running, 60)  # type: ignore[no-any-return]


def cond(p: dict[str, Any], kind: str) -> str | None:
    return next((c["status"] for c in p["status"].get("conditions") or [] if c["type"] == kind), None)


def container(p: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in p["status"].get("containerStatuses") or [] if c["name"] == "server")


@pytest.fixture
def node(kube: KubeHandle) -> Iterator[str]:
    name = f"edge-s{uuid.uuid4().hex[:5]}"
    kube.add_edge_nodes([name])
    wait_for("node Ready", lambda: kube.ready_nodes([name]) == 1, 60)
    yield name
    kube.set_node_online(name, True)
    kube.delete_node(name)


def test_plain_pods_run_get_ready_complete_and_go_away(kube: KubeHandle, namespace: str, node: str) -> None:
    deployment(kube, namespace, "plain", node)
    kube.kubectl("rollout", "status", "deployment/plain", "-n", namespace, "--timeout=60s")
    p = the_pod(kube, namespace, "plain")
    assert p["spec"]["nodeName"] == node and cond(p, "Ready") == "True" and cond(p, "ContainersReady") == "True"
    assert container(p)["ready"] and container(p)["restartCount"] == 0 and "running" in container(p)["state"]
    assert p["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    # A Job's pod completes (kwok's pod-complete), a scaled-down pod is deleted (pod-delete).
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once", "namespace": namespace},
           "spec": {"backoffLimit": 0, "template": {"spec": {**pod_spec(node), "restartPolicy": "Never"}}}}
    kube.kubectl("apply", "-f", "-", input=json.dumps(job))
    kube.kubectl("wait", "--for=condition=Complete", "job/once", "-n", namespace, "--timeout=60s")
    kube.kubectl("scale", "deployment/plain", "-n", namespace, "--replicas=0")
    wait_for("the scaled-down pod gone", lambda: not pods(kube, namespace, "plain"), 60)


def test_fault_annotations(kube: KubeHandle, namespace: str, node: str) -> None:
    deployment(kube, namespace, "good", node)
    deployment(kube, namespace, "bad", node, READY_FALSE)
    deployment(kube, namespace, "crash", node, CRASH)
    kube.kubectl("rollout", "status", "deployment/good", "-n", namespace, "--timeout=60s")
    bad = the_pod(kube, namespace, "bad")
    assert container(bad)["started"] and "running" in container(bad)["state"]
    crash = the_pod(kube, namespace, "crash")
    # Watch both for 20 s: the bad one never gets Ready, the crashing one keeps restarting.
    first = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        b, c = the_pod(kube, namespace, "bad"), the_pod(kube, namespace, "crash")
        assert b["metadata"]["uid"] == bad["metadata"]["uid"] and c["metadata"]["uid"] == crash["metadata"]["uid"]
        assert cond(b, "Ready") == "False" and cond(b, "ContainersReady") == "False" and not container(b)["ready"]
        assert cond(c, "Ready") != "True" and not container(c).get("ready")
        if first is None and "containerStatuses" in c["status"]:
            first = container(c)["restartCount"]
        time.sleep(1)
    c = container(the_pod(kube, namespace, "crash"))
    assert first is not None and c["restartCount"] >= first + 3, (first, c)
    assert c["state"]["waiting"]["reason"] == "CrashLoopBackOff" and c["lastState"]["terminated"]["exitCode"] != 0
    # The Deployment controller sees the same: neither counts as ready.
    for name in ("bad", "crash"):
        dep = json.loads(kube.kubectl("get", "deployment", name, "-n", namespace, "-o", "json").stdout)
        assert dep["status"].get("readyReplicas", 0) == 0 and dep["status"]["replicas"] == 1


def test_pods_come_back_ready_with_their_node(kube: KubeHandle, namespace: str, node: str) -> None:
    deployment(kube, namespace, "p", node)
    deployment(kube, namespace, "bad", node, READY_FALSE)
    kube.kubectl("rollout", "status", "deployment/p", "-n", namespace, "--timeout=60s")
    before = the_pod(kube, namespace, "p")
    the_pod(kube, namespace, "bad")
    kube.set_node_online(node, False)
    try:
        # the node-lifecycle controller (grace 15 s) marks the offline node's pod not Ready
        wait_for("the pod marked not Ready", lambda: cond(the_pod(kube, namespace, "p"), "Ready") == "False", 45)
    finally:
        kube.set_node_online(node, True)
    after = wait_for("the pod Ready again", lambda: (lambda p: p if cond(p, "Ready") == "True" else None)(
        the_pod(kube, namespace, "p")), 30)
    # The same pod, its container kept running all along: only its readiness was re-reported.
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert container(after)["state"] == container(before)["state"] and container(after)["restartCount"] == 0
    # A pod that was never Ready is not made Ready by the node coming back.
    time.sleep(3)
    assert cond(the_pod(kube, namespace, "bad"), "Ready") == "False"

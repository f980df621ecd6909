"""The simulated faults of the local plane (hack/kwok-stages.yaml) behave as the tests that use
them assume: a pod that never gets Ready, a container that keeps restarting, and pods that come
back Ready when their offline node returns. On a real cluster these are skipped."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.conftest import KubeHandle
from tests.integration.test_plane_smoke import wait_for

pytestmark = pytest.mark.integration


def pod(kube: KubeHandle, ns: str, name: str, node: str, annotations: dict[str, str] | None = None) -> None:
    body = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
            "spec": {"nodeName": node, "tolerations": [{"operator": "Exists"}],
                     "initContainers": [{"name": "fetch", "image": "edgeai/runtime"}],
                     "containers": [{"name": "server", "image": "edgeai/runtime"}]}}
    kube.kubectl("apply", "-f", "-", input=json.dumps(body))


def get(kube: KubeHandle, ns: str, name: str) -> dict[str, Any]:
    return json.loads(kube.kubectl("get", "pod", name, "-n", ns, "-o", "json").stdout)  # type: ignore[no-any-return]


def ready(p: dict[str, Any]) -> str | None:
    return next((c["status"] for c in p.get("status", {}).get("conditions") or [] if c["type"] == "Ready"), None)


@pytest.fixture
def node(kube: KubeHandle) -> Any:
    name = f"edge-s{uuid.uuid4().hex[:5]}"
    kube.add_edge_nodes([name])
    wait_for("node Ready", lambda: kube.ready_nodes([name]) == 1, 60)
    yield name
    kube.delete_node(name)


def test_fault_annotations(kube: KubeHandle, namespace: str, node: str) -> None:
    pod(kube, namespace, "good", node)
    pod(kube, namespace, "bad", node, {"sim.edgeai.io/ready": "false"})
    pod(kube, namespace, "crash", node, {"sim.edgeai.io/crash": "true"})
    wait_for("the plain pod Ready", lambda: ready(get(kube, namespace, "good")) == "True", 30)
    wait_for("the crashing pod restarting", lambda: (get(kube, namespace, "crash")["status"].get(
        "containerStatuses") or [{}])[0].get("restartCount", 0) >= 2, 30)
    bad = get(kube, namespace, "bad")
    assert bad["status"]["phase"] == "Running" and bad["status"].get("podIP") and ready(bad) == "False"
    crash = get(kube, namespace, "crash")["status"]["containerStatuses"][0]
    assert crash["state"]["waiting"]["reason"] == "CrashLoopBackOff" and not crash["ready"]
    kube.kubectl("delete", "pod", "good", "bad", "crash", "-n", namespace, "--wait=true", "--timeout=30s")


def test_pods_come_back_ready_with_their_node(kube: KubeHandle, namespace: str, node: str) -> None:
    pod(kube, namespace, "p", node)
    wait_for("pod Ready", lambda: ready(get(kube, namespace, "p")) == "True", 30)
    kube.set_node_online(node, False)
    try:
        wait_for("the node-lifecycle controller marks the pod not Ready", lambda: ready(
            get(kube, namespace, "p")) == "False", 60)
    finally:
        kube.set_node_online(node, True)
    wait_for("pod Ready again", lambda: ready(get(kube, namespace, "p")) == "True", 30)

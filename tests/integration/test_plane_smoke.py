"""The local plane is a real Kubernetes: scheduling, CRDs, RBAC and garbage collection work."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from typing import Any

import pytest

from tests.conftest import KubeHandle

pytestmark = pytest.mark.integration


def wait_for(what: str, pred: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def test_edge_deployment_is_scheduled_onto_an_edge_node_and_runs(kube: KubeHandle, namespace: str) -> None:
    dep = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "edge-smoke", "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "edge-smoke"}},
            "template": {
                "metadata": {"labels": {"app": "edge-smoke"}},
                "spec": {
                    "nodeSelector": {"node-role.kubernetes.io/edge": ""},
                    "tolerations": [{"key": "node-role.kubernetes.io/edge", "operator": "Exists",
                                     "effect": "NoSchedule"}],
                    "containers": [{"name": "c", "image": "registry.invalid/edge-smoke:1"}],
                },
            },
        },
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(dep))

    def running() -> list[dict[str, Any]]:
        pods = json.loads(kube.kubectl("get", "pods", "-n", namespace, "-l", "app=edge-smoke",
                                       "-o", "json").stdout)["items"]
        ok = [p for p in pods if p["status"].get("phase") == "Running"]
        return ok if len(ok) == 2 else []

    pods = wait_for("2 Running pods", running, 90)
    nodes = json.loads(kube.kubectl("get", "nodes", "-l", "node-role.kubernetes.io/edge", "-o", "json").stdout)
    edge = {n["metadata"]["name"] for n in nodes["items"]}
    for p in pods:
        # placed by kube-scheduler (nodeName was not set by us) onto an edge node
        assert p["spec"]["nodeName"] in edge
    kube.kubectl("rollout", "status", "deployment/edge-smoke", "-n", namespace, "--timeout=60s")


def test_pod_without_toleration_stays_off_tainted_edge_nodes(kube: KubeHandle, namespace: str) -> None:
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "no-toleration", "namespace": namespace},
        "spec": {"nodeSelector": {"node-role.kubernetes.io/edge": ""},
                 "containers": [{"name": "c", "image": "registry.invalid/x:1"}]},
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(pod))

    def unschedulable() -> str:
        p = json.loads(kube.kubectl("get", "pod", "no-toleration", "-n", namespace, "-o", "json").stdout)
        for c in p["status"].get("conditions", []):
            if c["type"] == "PodScheduled" and c["status"] == "False":
                return str(c.get("message", ""))
        return ""

    msg = wait_for("the scheduler to refuse the pod", unschedulable, 60)
    assert "taint" in msg


def test_crd_applied_with_kubectl_is_served(kube: KubeHandle) -> None:
    group = f"smoke{uuid.uuid4().hex[:6]}.edgeai.io"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"gadgets.{group}"},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                "type": "object", "properties": {"spec": {"type": "object", "properties": {
                    "size": {"type": "integer", "minimum": 1}}}}}}}],
        },
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(crd))
    try:
        kube.kubectl("wait", "--for=condition=Established", f"crd/gadgets.{group}", "--timeout=30s")
        obj = {"apiVersion": f"{group}/v1", "kind": "Gadget", "metadata": {"name": "g1", "namespace": "default"},
               "spec": {"size": 3}}
        wait_for("the new kind to be served",
                 lambda: kube.kubectl("apply", "-f", "-", input=json.dumps(obj), check=False).returncode == 0, 30)
        got = json.loads(kube.kubectl("get", f"gadgets.{group}", "g1", "-n", "default", "-o", "json").stdout)
        assert got["spec"]["size"] == 3
        # the schema is enforced by the real server
        bad = dict(obj, metadata={"name": "g2", "namespace": "default"}, spec={"size": 0})
        p = kube.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
        assert p.returncode != 0 and "spec.size" in p.stderr
    finally:
        kube.kubectl("delete", "crd", f"gadgets.{group}", "--wait=false", check=False)


def test_rbac_denies_a_service_account_what_it_was_not_granted(kube: KubeHandle, namespace: str) -> None:
    kube.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    kube.kubectl("create", "role", "cm-reader", "-n", namespace, "--verb=get,list", "--resource=configmaps")
    kube.kubectl("create", "rolebinding", "cm-reader", "-n", namespace, "--role=cm-reader",
                 f"--serviceaccount={namespace}:reader")
    token = kube.kubectl("create", "token", "reader", "-n", namespace).stdout.strip()
    server = kube.kubectl("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}").stdout
    ca = kube.kubectl("config", "view", "--minify", "--raw",
                      "-o", "jsonpath={.clusters[0].cluster.certificate-authority}").stdout
    # A real bearer token, authenticated by the apiserver and authorized by RBAC: no impersonation,
    # and no admin client certificate beside it (x509 would win over the token).
    as_sa = ["--server", server, "--certificate-authority", ca, "--token", token]

    def sa(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kube.kubectl_bin, *args, "-n", namespace, *as_sa], capture_output=True, text=True,
                              env={**{k: v for k, v in kube.env.items() if k != "KUBECONFIG"},
                                   "KUBECONFIG": "/dev/null"})

    allowed = wait_for("the role binding to take effect", lambda: sa("get", "configmaps").returncode == 0, 30)
    assert allowed
    denied = sa("get", "secrets")
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    assert f"system:serviceaccount:{namespace}:reader" in denied.stderr
    created = sa("create", "configmap", "nope")
    assert created.returncode != 0 and "forbidden" in created.stderr.lower()


def test_deleting_an_owner_garbage_collects_its_dependents(kube: KubeHandle, namespace: str) -> None:
    kube.kubectl("create", "configmap", "owner", "-n", namespace)
    owner = json.loads(kube.kubectl("get", "configmap", "owner", "-n", namespace, "-o", "json").stdout)
    dep = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "dependent", "namespace": namespace, "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}]},
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(dep))
    kube.kubectl("delete", "configmap", "owner", "-n", namespace)
    wait_for("the garbage collector to delete the dependent",
             lambda: not kube.ok("get", "configmap", "dependent", "-n", namespace), 60)

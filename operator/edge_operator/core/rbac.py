"""Every API verb and resource the operator uses, as data.

The chart's ClusterRole/Role are generated from (and checked against) this,
and the operator's API layer records each call so an integration test can
prove that nothing outside this list is ever requested. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edgeai_api import constants as c


@dataclass(frozen=True)
class Rule:
    api_group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str

    def to_k8s(self) -> dict[str, Any]:
        return {"apiGroups": [self.api_group], "resources": list(self.resources), "verbs": list(self.verbs)}


WATCH = ("get", "list", "watch")

# Cluster-wide: the three kinds live in any namespace (devices are cluster-scoped), and so do
# the workloads, pods and nodes the operator reads.
CLUSTER_RULES: tuple[Rule, ...] = (
    Rule(c.GROUP, (c.PLURAL_MODEL, c.PLURAL_IDEP), WATCH, "read the desired state"),
    Rule(c.GROUP, (c.PLURAL_DEVICE,), (*WATCH, "create", "patch", "delete"),
         "discover one EdgeDevice per edge Node, and remove it when the Node loses the edge label"),
    Rule(c.GROUP, (f"{c.PLURAL_MODEL}/status", f"{c.PLURAL_DEVICE}/status", f"{c.PLURAL_IDEP}/status"),
         ("get", "patch"), "report verification, online state and placement"),
    Rule(c.GROUP, (f"{c.PLURAL_IDEP}/finalizers",), ("update",),
         "set blockOwnerDeletion on owned workloads (OwnerReferencesPermissionEnforcement)"),
    Rule("apps", ("deployments",), (*WATCH, "create", "patch", "delete"),
         "a cache per site (spec.siteCache); the per-device Deployments of operators of 0.1, deleted on upgrade"),
    # No get, list or watch: the operator only applies and deletes its own map, so it can read no
    # other ConfigMap in the cluster (server-side apply of a new object is authorized as create).
    Rule("", ("configmaps",), ("create", "patch", "delete"),
         "spec.siteCache: the site -> cache address map the devices' fetches read"),
    Rule("", ("pods",), (*WATCH, "create", "patch", "delete"),
         "one model server Pod per placed device and template; its phase: fetch failures, crash loops, readiness"),
    Rule("", ("nodes",), WATCH, "capabilities and online state of edge nodes"),
    Rule("", ("secrets",), ("get",), "public keys, decryption keys and registry pull secrets named by EdgeModels"),
    Rule("", ("events",), ("create", "patch"), "Kubernetes events on the objects it handles (kopf)"),
    Rule("events.k8s.io", ("events",), ("create", "patch"), "Kubernetes events, events.k8s.io API"),
    Rule("apiextensions.k8s.io", ("customresourcedefinitions",), WATCH,
         "kopf notices the CRDs being installed or removed at runtime"),
)

# Only in the operator's own namespace: leader election.
NAMESPACE_RULES: tuple[Rule, ...] = (
    Rule("coordination.k8s.io", ("leases",), ("get", "create", "update"),
         "leader election: one replica acts, the others stand by"),
)


def _labels() -> dict[str, str]:
    return {c.L_NAME: c.OPERATOR_NAME, c.L_PART_OF: "edgeai"}


def cluster_role(name: str = c.OPERATOR_NAME) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": _labels()},
            "rules": [r.to_k8s() for r in CLUSTER_RULES]}


def role(namespace: str, name: str = c.OPERATOR_NAME) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name, "namespace": namespace, "labels": _labels()},
            "rules": [r.to_k8s() for r in NAMESPACE_RULES]}


def allowed(verb: str, group: str, resource: str, namespaced_rules: bool = True) -> bool:
    """Whether the rules grant `verb` on `group`/`resource` (resource may be "x/status")."""
    rules: Iterable[Rule] = CLUSTER_RULES + (NAMESPACE_RULES if namespaced_rules else ())
    return any(r.api_group == group and resource in r.resources and verb in r.verbs for r in rules)

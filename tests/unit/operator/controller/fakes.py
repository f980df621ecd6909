"""A fake cluster for the controller's unit tests: realistic object bodies, kopf-like indexes filled
through the same entry functions kopf calls (cache.INDEX_ENTRIES), and an in-memory API that keeps what
was applied, created, deleted, status-patched and posted, as a server would."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from edge_operator.controller import cache as cache_mod
from edge_operator.controller.cache import Cache, Catalog
from edge_operator.core import patches
from edge_operator.kube.errors import ApiError
from edge_operator.kube.kubeapi import Ref
from edgeai_api import constants as c

SRC = "a" * 64
EDGE = {c.EDGE_NODE_LABEL: ""}

_INDEXES_OF = {
    "nodes": (cache_mod.IDX_NODES,),
    "edgedevices": (cache_mod.IDX_DEVICES, cache_mod.IDX_DEVICES_BY_NODE),
    "edgemodels": (cache_mod.IDX_MODELS,),
    "inferencedeployments": (cache_mod.IDX_IDEPS, cache_mod.IDX_IDEPS_BY_MODEL),
    "deployments": (cache_mod.IDX_CHILDREN, cache_mod.IDX_CHILDREN_BY_DEVICE, cache_mod.IDX_SITE_CACHES),
    "pods": (cache_mod.IDX_PODS, cache_mod.IDX_PODS_BY_DEVICE),
}


def node_body(name: str, labels: Mapping[str, str] | None = None, ready: bool = True,
              heartbeat: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": f"uid-{name}",
                         "labels": {**EDGE, "kubernetes.io/arch": "amd64", **(labels or {})}},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi"},
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                       "reason": "KubeletReady", "lastHeartbeatTime": heartbeat}]}}


def device_body(name: str, labels: Mapping[str, str] | None = None, status: Mapping[str, Any] | None = None,
                rv: str = "1", discovered: bool = True) -> dict[str, Any]:
    lab = {c.L_DISCOVERED: "true"} if discovered else {}
    return {"metadata": {"name": name, "uid": f"dev-{name}", "generation": 1, "resourceVersion": rv,
                         "labels": {**lab, **(labels or {})}},
            "spec": {"nodeName": name}, "status": dict(status or {})}


def model_body(name: str = "m", verified: bool = True, generation: int = 1, reverify: str | None = None,
               status: Mapping[str, Any] | None = None) -> dict[str, Any]:
    st: Mapping[str, Any] = status if status is not None else (
        {"observedGeneration": generation, "sha256": SRC,
         "conditions": [{"type": "Verified", "status": "True", "reason": "Verified", "message": "ok"}]}
        if verified else {})
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": generation}
    if reverify is not None:
        meta["annotations"] = {c.A_REVERIFY: reverify}
    return {"metadata": meta,
            "spec": {"version": "1", "source": {"uri": "https://models.example/m.onnx", "sha256": SRC}},
            "status": dict(st)}


def idep_body(name: str = "d", selector: Mapping[str, Any] | None = None, generation: int = 1,
              status: Mapping[str, Any] | None = None, rv: str = "1", uid: str = "uid-d",
              model: str = "m", deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": uid, "generation": generation,
                            "resourceVersion": rv}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"model": model, "deviceSelector": selector}, "status": dict(status or {})}


def workload_body(manifest: Mapping[str, Any], ready: bool = False) -> dict[str, Any]:
    """An applied workload as the watch brings it back."""
    n = int(ready)
    return {**manifest, "metadata": {**manifest["metadata"], "uid": f"uid-{manifest['metadata']['name']}",
                                     "generation": 1},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": n,
                       "availableReplicas": n}}


def running_pod(manifest: Mapping[str, Any], ready: bool = False,
                created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    """A model server Pod the operator created, as the watch brings it back once scheduled and running."""
    meta = manifest["metadata"]
    return {**manifest, "metadata": {**meta, "uid": f"uid-{meta['name']}", "creationTimestamp": created},
            "spec": {**manifest["spec"], "nodeName": meta["annotations"][c.A_DEVICE]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def pod_body(name: str, idep: str, device: str, ready: bool, restarts: int = 0) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "labels": {c.L_MANAGED_BY: c.OPERATOR_NAME},
                         "annotations": {c.A_IDEP: idep, c.A_DEVICE: device, c.A_SHA256: SRC}},
            "spec": {"nodeName": device},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [{"name": "runtime", "restartCount": restarts}]}}


class FakeCluster:
    """kopf's indexes as plain dicts, kept from the bodies put here, under the Cache the code reads."""

    def __init__(self) -> None:
        self.indexes: dict[str, dict[Hashable, list[Any]]] = {name: {} for name in cache_mod.ALL_INDEXES}
        self.cache = Cache(self.indexes)
        self.catalog = Catalog(self.cache)
        self._bodies: dict[tuple[str, str, str], Mapping[str, Any]] = {}

    def put(self, plural: str, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        self._bodies[(plural, meta.get("namespace", ""), meta["name"])] = body
        self._reindex(plural)

    def delete(self, plural: str, name: str, namespace: str = "") -> None:
        self._bodies.pop((plural, namespace, name), None)
        self._reindex(plural)

    def _reindex(self, plural: str) -> None:
        for idx in _INDEXES_OF[plural]:
            store: dict[Hashable, list[Any]] = {}
            for (p, _, _), body in self._bodies.items():
                if p == plural:
                    for k, v in cache_mod.INDEX_ENTRIES[idx](body).items():
                        store.setdefault(k, []).append(v)
            self.indexes[idx].clear()
            self.indexes[idx].update(store)


class FakeApi:
    """What the reconcilers send, kept as the server would: objects by (plural, namespace, name) and
    their status after each merge patch; `fail_status` answers status patches with that HTTP code."""

    def __init__(self) -> None:
        self.applied: dict[tuple[str, str], dict[str, Any]] = {}
        self.created: list[Mapping[str, Any]] = []
        self.create_requests = 0  # creates that reached the server, refused ones too
        self.pods: dict[tuple[str, str], Mapping[str, Any]] = {}  # created Pods, by (namespace, name)
        self.patched: list[tuple[str, str | None, Mapping[str, Any]]] = []  # (plural, name, merge patch)
        self.deleted: list[tuple[str, str | None, str | None]] = []  # (plural, name, uid precondition)
        self.status: dict[tuple[str, str | None, str | None], dict[str, Any]] = {}
        self.status_writes = 0
        self.status_patches: list[Mapping[str, Any]] = []
        self.apply_calls = 0
        self.events: list[tuple[str, str, str]] = []  # (involved name, type, reason)
        self.fail_status: int | None = None
        self.fail_apply: int | None = None

    async def patch_status(self, ref: Ref, status_patch: Mapping[str, Any]) -> Mapping[str, Any]:
        if self.fail_status is not None:
            raise ApiError(self.fail_status, "Err", "refused", "PATCH", ref.path())
        self.status_writes += 1
        self.status_patches.append(status_patch)
        key = (ref.plural, ref.namespace, ref.name)
        self.status[key] = patches.merge_apply(self.status.get(key, {}), status_patch)
        return {"status": self.status[key]}

    async def apply(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        meta = obj["metadata"]
        self.apply_calls += 1
        if self.fail_apply is not None:
            raise ApiError(self.fail_apply, "Err", "refused", "PATCH", meta["name"])
        self.applied[(meta["namespace"], meta["name"])] = dict(obj)
        return obj

    async def create(self, obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
        meta = obj["metadata"]
        self.create_requests += 1
        if self.fail_apply is not None:
            raise ApiError(self.fail_apply, "Err", "refused", "POST", meta["name"])
        self.created.append(obj)
        if obj.get("kind") == "Pod":
            if (meta["namespace"], meta["name"]) in self.pods:
                return None  # AlreadyExists
            self.pods[(meta["namespace"], meta["name"])] = obj
        return obj

    async def patch(self, ref: Ref, body: Mapping[str, Any]) -> Mapping[str, Any] | None:
        self.patched.append((ref.plural, ref.name, body))
        return body

    async def delete(self, ref: Ref, uid: str | None = None) -> bool:
        self.deleted.append((ref.plural, ref.name, uid))
        return True

    async def event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((str(involved["name"]), type_, reason))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

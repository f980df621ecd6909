"""What the operator knows of the cluster: kopf's indexes, read through typed accessors.

kopf keeps one small summary per object (core.views) in named indexes and hands them over as
untyped mappings; everything else reads them here, so a missing or mistyped entry is a None or an
empty list, never an `Any` travelling further. The index ids and what each stores are defined once,
here: `handlers.py` registers them, tests fill them from plain dicts.

The device catalogue (every device joined with its node) is derived from the indexes and kept
here too, one device at a time, by the event hooks.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from edge_operator.controller.keys import DeploymentKey, ModelKey
from edge_operator.core import pod_workloads
from edge_operator.core.catalog import DeviceCatalog
from edge_operator.core.placement import DeviceView
from edge_operator.core.site_cache import SiteCacheInfo, site_cache_info
from edge_operator.core.views import (
    ChildInfo,
    DeviceInfo,
    IdepInfo,
    ModelInfo,
    NodeInfo,
    PodInfo,
    child_info,
    device_info,
    device_view,
    idep_info,
    model_info,
    node_info,
    pod_info,
)

# kopf index ids (also the names of the kwargs kopf passes them to handlers under).
IDX_NODES = "edgeai_nodes"
IDX_DEVICES = "edgeai_devices"
IDX_DEVICES_BY_NODE = "edgeai_devices_by_node"
IDX_MODELS = "edgeai_models"
IDX_IDEPS = "edgeai_ideps"
IDX_IDEPS_BY_MODEL = "edgeai_ideps_by_model"
IDX_CHILDREN = "edgeai_children"
IDX_CHILDREN_BY_DEVICE = "edgeai_children_by_device"
IDX_PODS = "edgeai_pods"
IDX_PODS_BY_DEVICE = "edgeai_pods_by_device"
IDX_SITE_CACHES = "edgeai_site_caches"
ALL_INDEXES = (IDX_NODES, IDX_DEVICES, IDX_DEVICES_BY_NODE, IDX_MODELS, IDX_IDEPS, IDX_IDEPS_BY_MODEL,
               IDX_CHILDREN, IDX_CHILDREN_BY_DEVICE, IDX_PODS, IDX_PODS_BY_DEVICE, IDX_SITE_CACHES)

# One index as kopf hands it over: key -> the values stored under it (a kopf Store).
Index = Mapping[Hashable, Iterable[Any]]
Entries = dict[Hashable, Any]

T = TypeVar("T")


# --- what each index stores, per object body ----------------------------------------------------


def _spec(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("spec") or {}


def node_entries(body: Mapping[str, Any]) -> Entries:
    info = node_info(body)
    return {info.name: info}


def device_entries(body: Mapping[str, Any]) -> Entries:
    info = device_info(body)
    return {info.name: info}


def devices_by_node_entries(body: Mapping[str, Any]) -> Entries:
    name = body["metadata"]["name"]
    return {_spec(body).get("nodeName") or name: name}


def model_entries(body: Mapping[str, Any]) -> Entries:
    info = model_info(body)
    return {info.key: info}


def idep_entries(body: Mapping[str, Any]) -> Entries:
    info = idep_info(body)
    return {info.key: info}


def ideps_by_model_entries(body: Mapping[str, Any]) -> Entries:
    meta = body["metadata"]
    return {(meta.get("namespace") or "", _spec(body).get("model", "")): meta["name"]}


def children_entries(body: Mapping[str, Any]) -> Entries:
    ch = child_info(body)
    return {} if ch is None else {(ch.namespace, ch.owner): ch}


def children_by_device_entries(body: Mapping[str, Any]) -> Entries:
    ch = child_info(body)
    return {} if ch is None else {ch.device: ch}


def site_cache_entries(body: Mapping[str, Any]) -> Entries:
    info = site_cache_info(body)
    return {} if info is None else {(info.namespace, info.owner): info}


def pod_entries(body: Mapping[str, Any]) -> Entries:
    p = pod_info(body)
    return {(p.namespace, p.idep): p} if p.idep else {}


def pods_by_device_entries(body: Mapping[str, Any]) -> Entries:
    p = pod_info(body)
    return {p.device: p} if p.owned and p.device else {}  # the device's own model servers, not a ReplicaSet's


INDEX_ENTRIES = {
    IDX_NODES: node_entries,
    IDX_DEVICES: device_entries,
    IDX_DEVICES_BY_NODE: devices_by_node_entries,
    IDX_MODELS: model_entries,
    IDX_IDEPS: idep_entries,
    IDX_IDEPS_BY_MODEL: ideps_by_model_entries,
    IDX_CHILDREN: children_entries,
    IDX_CHILDREN_BY_DEVICE: children_by_device_entries,
    IDX_PODS: pod_entries,
    IDX_PODS_BY_DEVICE: pods_by_device_entries,
    IDX_SITE_CACHES: site_cache_entries,
}


# --- typed reads -----------------------------------------------------------------------------------


class Cache:
    def __init__(self, indexes: Mapping[str, Index] | None = None) -> None:
        self._indexes: Mapping[str, Index] = indexes or {}

    def bind(self, indexes: Mapping[str, Index]) -> None:
        self._indexes = indexes

    @property
    def bound(self) -> bool:
        return bool(self._indexes)

    def _all(self, index: str, key: Hashable, cls: type[T]) -> list[T]:
        store = self._indexes[index].get(key)
        return [v for v in store if isinstance(v, cls)] if store else []

    def _one(self, index: str, key: Hashable, cls: type[T]) -> T | None:
        found = self._all(index, key, cls)
        return found[0] if found else None

    def _values(self, index: str, cls: type[T]) -> Iterator[T]:
        idx = self._indexes[index]
        for key in list(idx):
            store = idx.get(key)
            if store:
                yield from (v for v in store if isinstance(v, cls))

    def _keys(self, index: str) -> list[Hashable]:
        return list(self._indexes[index])

    def sizes(self) -> dict[str, int]:
        return {"nodes": len(self._indexes[IDX_NODES]), "devices": len(self._indexes[IDX_DEVICES]),
                "models": len(self._indexes[IDX_MODELS]), "deployments": len(self._indexes[IDX_IDEPS])}

    # Nodes and devices.

    def node(self, name: str) -> NodeInfo | None:
        return self._one(IDX_NODES, name, NodeInfo)

    def node_names(self) -> list[str]:
        return [str(k) for k in self._keys(IDX_NODES)]

    def device(self, name: str) -> DeviceInfo | None:
        return self._one(IDX_DEVICES, name, DeviceInfo)

    def devices(self) -> Iterator[DeviceInfo]:
        return self._values(IDX_DEVICES, DeviceInfo)

    def device_names(self) -> list[str]:
        return [str(k) for k in self._keys(IDX_DEVICES)]

    def devices_on_node(self, node: str) -> list[str]:
        return self._all(IDX_DEVICES_BY_NODE, node, str)

    # Models and deployments.

    def model(self, key: ModelKey) -> ModelInfo | None:
        return self._one(IDX_MODELS, (key.namespace, key.name), ModelInfo)

    def models(self) -> Iterator[ModelInfo]:
        return self._values(IDX_MODELS, ModelInfo)

    def deployment(self, key: DeploymentKey) -> IdepInfo | None:
        return self._one(IDX_IDEPS, (key.namespace, key.name), IdepInfo)

    def deployment_keys(self) -> list[DeploymentKey]:
        return [DeploymentKey(*k) for k in self._keys(IDX_IDEPS) if isinstance(k, tuple)]

    def deployments_of_model(self, key: ModelKey) -> list[DeploymentKey]:
        return [DeploymentKey(key.namespace, n) for n in self._all(IDX_IDEPS_BY_MODEL, (key.namespace, key.name), str)]

    # What runs where: the workloads the operator made, and their pods.

    def children(self, key: DeploymentKey) -> list[ChildInfo]:
        return self._all(IDX_CHILDREN, (key.namespace, key.name), ChildInfo)

    def children_on_device(self, device: str, now_ts: float) -> list[ChildInfo]:
        """What each InferenceDeployment runs on the device: its Pods summed up, or a 0.1 Deployment."""
        by_owner: dict[str, list[PodInfo]] = {}
        for p in self._all(IDX_PODS_BY_DEVICE, device, PodInfo):
            by_owner.setdefault(p.owner_uid, []).append(p)
        out = [w for uid, ps in by_owner.items() if (w := pod_workloads.workload(ps, uid, now_ts)) is not None]
        running = {w.owner_uid for w in out}
        out += [ch for ch in self._all(IDX_CHILDREN_BY_DEVICE, device, ChildInfo) if ch.owner_uid not in running]
        return out

    def pods(self, key: DeploymentKey) -> list[PodInfo]:
        return self._all(IDX_PODS, (key.namespace, key.name), PodInfo)

    def site_caches(self, key: DeploymentKey) -> list[SiteCacheInfo]:
        return self._all(IDX_SITE_CACHES, (key.namespace, key.name), SiteCacheInfo)

    def nodes(self) -> Iterator[NodeInfo]:
        return self._values(IDX_NODES, NodeInfo)


class Catalog:
    """The device catalogue: built once from the cache, then kept one device at a time by the event
    hooks (never rebuilt per event: that would be O(fleet) per heartbeat). `version` changes whenever
    the catalogue may have, so placements computed from an older one are known to be stale."""

    def __init__(self, cache: Cache) -> None:
        self._cache = cache
        self._catalog: DeviceCatalog | None = None
        self.version = 0

    def changed(self) -> None:
        self.version += 1

    def get(self) -> DeviceCatalog:
        if self._catalog is None:
            self._catalog = DeviceCatalog({d.name: device_view(d, self._cache.node(d.node_name))
                                           for d in self._cache.devices()})
        return self._catalog

    def refresh(self, name: str) -> DeviceView | None:
        """Re-join one device with its node into the catalogue; its view, or None if it is gone."""
        dev = self._cache.device(name)
        cat = self.get()
        if dev is None:
            cat.remove(name)
            return None
        view = device_view(dev, self._cache.node(dev.node_name))
        cat.put(view)
        return view

"""Which keys a watch event queues: cheaply, without listing anything, and only on changes that matter.

No I/O and no queues: each method reads the cache (in memory), updates what it saw last, and returns
the `Work` the event asks for; the manager hands that to the work queues. Own status writes coming
back, heartbeats and pod churn that changes nothing a decision reads queue nothing, or only a
delayed, coalesced status reconcile.

Cost per event is bounded: a Node or EdgeDevice change is matched against the deployments' selectors
through a SelectorIndex (O(deployments it may concern)) rather than reconciling all of them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_operator.controller.cache import Cache, Catalog
from edge_operator.controller.keys import DeploymentKey, DeviceKey, ModelKey, NodeKey, ReconcileKey
from edge_operator.core.catalog import SelectorIndex
from edge_operator.core.selectors import matches
from edge_operator.core.site_cache import SiteCacheInfo
from edge_operator.core.status import needs_verification
from edge_operator.core.views import ChildInfo, PodInfo


@dataclass
class Work:
    """What one event asks for, in order: reconciles (each after a delay, 0 for now), model checks,
    and a deployment that is gone (its derived state can be dropped)."""

    reconcile: list[tuple[ReconcileKey, float]] = field(default_factory=list)
    verify: list[ModelKey] = field(default_factory=list)
    gone: DeploymentKey | None = None

    def add(self, key: ReconcileKey, delay: float = 0.0) -> None:
        self.reconcile.append((key, delay))

    def queued(self) -> set[ReconcileKey]:
        return {k for k, _ in self.reconcile}


class EventMapper:
    def __init__(self, cache: Cache, catalog: Catalog, fanout_delay: float, status_delay: float) -> None:
        self.cache = cache
        self.catalog = catalog
        self.fanout_delay = fanout_delay
        self.status_delay = status_delay
        # What the hooks saw last, to queue work only on changes that matter.
        self._node_seen: dict[str, tuple[Any, ...]] = {}
        self._device_seen: dict[str, tuple[Any, ...]] = {}
        self._device_labels: dict[str, Mapping[str, str]] = {}
        self._model_seen: dict[ModelKey, tuple[Any, ...]] = {}
        self._model_reverify: dict[ModelKey, str | None] = {}
        self._deployment_seen: dict[DeploymentKey, tuple[Any, ...]] = {}
        self._pod_seen: dict[tuple[str, str], tuple[Any, ...]] = {}
        # Deployments with spec.siteCache: a node's labels or address may move a site's gateway.
        self._site_cached: set[DeploymentKey] = set()
        # Deployments by the label terms that anchor their selectors: a device change concerns only
        # the deployments found here, not all of them.
        self.selectors = SelectorIndex()

    def node(self, name: str) -> Work:
        work = Work()
        info = self.cache.node(name)
        # A heartbeat alone changes none of these: it only refreshes the devices' status, later.
        cur = None if info is None else (info.placement_key(), info.health.online, info.edge, info.address)
        devices = self.cache.devices_on_node(name)
        if _update(self._node_seen, name, cur):
            self.catalog.changed()
            work.add(NodeKey(name))
            for d in devices:
                self._fan_out(d, work)
            # Any node may be (or stop being) a site's gateway; few deployments have a site cache.
            for key in self._site_cached:
                work.add(key, self.fanout_delay)
        for d in devices:
            work.add(DeviceKey(d), self.status_delay)
        return work

    def device(self, name: str) -> Work:
        work = Work()
        info = self.cache.device(name)
        cur = None if info is None else info.placement_key()
        if _update(self._device_seen, name, cur):
            self.catalog.changed()
            self._fan_out(name, work)
        if info is None:
            work.add(NodeKey(name))  # a discovered device deleted by hand comes back
        else:
            work.add(DeviceKey(name))
        return work

    def _fan_out(self, device: str, work: Work) -> None:
        """Queue the deployments a device change can matter to: those whose selector matches the
        device's labels before or after, and those running something on it."""
        view = self.catalog.refresh(device)
        old = self._device_labels.get(device)
        new = view.labels if view is not None else None
        _update(self._device_labels, device, new)
        keys: set[DeploymentKey] = set()
        for labels in (old, new):
            if labels is not None:
                keys |= {k for k in self.selectors.candidates(labels) if isinstance(k, DeploymentKey)}
        for key in keys:
            idep = self.cache.deployment(key)
            if idep is None:
                continue
            if (old is not None and matches(idep.selector, old)) or (new is not None and matches(idep.selector, new)):
                work.add(key, self.fanout_delay)
        for ch in self.cache.children_on_device(device, time.time()):
            work.add(DeploymentKey(ch.namespace, ch.owner), self.fanout_delay)

    def model(self, key: ModelKey) -> Work:
        work = Work()
        info = self.cache.model(key)
        prev = self._model_seen.get(key)
        cur = None if info is None else info.placement_key()
        new_request = info is not None and info.reverify != self._model_reverify.get(key)
        if info is None:
            self._model_reverify.pop(key, None)
        else:
            self._model_reverify[key] = info.reverify
        # Only a new generation (or first sight, or a new re-verify request) starts a check: retries
        # of a failed check are the verify queue's backoff, not the echo of our own status write.
        if info is not None and needs_verification(info) and (
                prev is None or prev[1] != info.generation or new_request):
            work.verify.append(key)
        if _update(self._model_seen, key, cur):
            for dep in self.cache.deployments_of_model(key):
                work.add(dep)
        return work

    def deployment(self, key: DeploymentKey) -> Work:
        work = Work()
        info = self.cache.deployment(key)
        cur = None if info is None else (info.uid, info.generation, info.deleting)
        if not _update(self._deployment_seen, key, cur):
            return work  # only our own status write came back
        if info is None:
            self.selectors.remove(key)
            self._site_cached.discard(key)
            work.gone = key
            return work
        self.selectors.put(key, info.selector)
        if info.spec is not None and info.spec.site_cache is not None:
            self._site_cached.add(key)
        else:
            self._site_cached.discard(key)
        work.add(key)
        return work

    def child(self, event_type: str | None, ch: ChildInfo) -> Work:
        work = Work()
        owner = DeploymentKey(ch.namespace, ch.owner)
        # Deleted by hand: bring it back now. Otherwise coalesce a rollout's burst of status events.
        work.add(owner, 0.0 if event_type == "DELETED" else self.status_delay)
        work.add(DeviceKey(ch.device), self.status_delay)
        return work

    def site_cache(self, event_type: str | None, sc: SiteCacheInfo) -> Work:
        """A site cache Deployment changed (Ready, deleted by hand): its deployment looks again."""
        work = Work()
        work.add(DeploymentKey(sc.namespace, sc.owner), 0.0 if event_type == "DELETED" else self.status_delay)
        return work

    def pod(self, event_type: str | None, p: PodInfo, deleted_by_us: bool = False) -> Work:
        work = Work()
        key = (p.namespace, p.name)
        cur = (p.phase, p.ready, p.reason, p.restarts, p.init_exit_code, p.init_running, p.deleting,
               p.server_exit_code,  # a quality gate's exit fails the device: the rollout must look again
               p.revision)  # the operator's own annotation echoed: the rollout counts the device on it
        if event_type == "DELETED":
            self._pod_seen.pop(key, None)
        elif self._pod_seen.get(key) == cur:
            return work
        else:
            self._pod_seen[key] = cur
        if p.idep:
            # Deleted by hand or evicted: look now, to make it again. A surge's old Pod that we deleted
            # ourselves leaves nothing missing: coalesced like any progress (1,000 of them in a rollout).
            now = event_type == "DELETED" and not deleted_by_us
            work.add(DeploymentKey(p.namespace, p.idep), 0.0 if now else self.status_delay)
        if p.owned and p.device:
            work.add(DeviceKey(p.device), self.status_delay)
        return work


def _update(seen: dict[Any, Any], key: Any, cur: Any) -> bool:
    """Record `cur` as what was seen last for `key` (None: forget it); whether it changed."""
    changed = bool(cur != seen.get(key))
    if cur is None:
        seen.pop(key, None)
    else:
        seen[key] = cur
    return changed

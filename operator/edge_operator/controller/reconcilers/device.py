"""EdgeDevice status: online or not, capabilities, what it serves; Events when it goes on or offline."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from edge_operator.controller.api import EventRecorder
from edge_operator.controller.cache import Cache
from edge_operator.controller.keys import DeviceKey
from edge_operator.controller.status_writer import StatusPolicy, StatusWriter
from edge_operator.controller.workqueue import Requeue
from edge_operator.core import conditions as cond
from edge_operator.core import patches
from edge_operator.core.status import device_status
from edge_operator.kube.kubeapi import Ref
from edge_operator.telemetry import metrics
from edgeai_api import constants as c

# What a device serves changes with every rollout step and is held with progress; these are not.
URGENT_DEVICE_KEYS = ("online", "capabilities", "nodeName")


def _device_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    return patches.merge_diff(old, new, removable=frozenset())


class DeviceReconciler:
    metrics_label = "device"

    def __init__(self, cache: Cache, writer: StatusWriter, events: EventRecorder, status_interval: float,
                 heartbeat_resolution: float) -> None:
        self.cache = cache
        self.writer = writer
        self.events = events
        self.heartbeat_resolution = heartbeat_resolution
        self.policy = StatusPolicy(_device_diff, URGENT_DEVICE_KEYS, status_interval)

    async def reconcile(self, key: DeviceKey) -> Requeue | None:
        name = key.name
        dev = self.cache.device(name)
        if dev is None or dev.deleting:
            self.writer.forget(key)
            return None
        dev = replace(dev, status=self.writer.effective(key, dev.resource_version, dev.status))
        node = self.cache.node(dev.node_name)
        children = self.cache.children_on_device(name, time.time())
        st = device_status(dev, node, children, cond.now_iso(), self.heartbeat_resolution)
        ref = Ref(c.API_VERSION, c.PLURAL_DEVICE, name)
        write = await self.writer.write(key, ref, dev.resource_version, dev.status, st, self.policy)
        if write.patch is None:
            if write.held is None:
                metrics.WRITES_SKIPPED.labels("EdgeDevice").inc()
            return write.held
        if write.gone:
            return None
        was = dev.status.get("online")
        if was is not None and was != st["online"]:
            involved = {"apiVersion": c.API_VERSION, "kind": c.KIND_DEVICE, "name": name, "uid": dev.uid}
            if st["online"]:
                self.events.post(involved, "Normal", "DeviceOnline", f"node {dev.node_name} is Ready again")
            else:
                self.events.post(involved, "Warning", "DeviceOffline",
                                 f"node {dev.node_name} is not Ready; its workloads are kept")
        return None

"""What an edge device can do, read from its Node, and whether it is online.

Pure. Capabilities come from KubeEdge/fleet labels and the Node's allocatable
resources; an EdgeDevice's `spec.capabilities` overrides them field by field
(for hardware the labels miss, e.g. an NPU without a device plugin).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_operator.core.quantity import QuantityError, quantity_bytes, quantity_millis
from edgeai_api import constants as c
from edgeai_api.edgedevice import CapabilityOverrides
from edgeai_api.enums import Accelerator, Arch, DeviceReason

ACCELERATORS: tuple[str, ...] = tuple(a.value for a in Accelerator)
ARCHES: tuple[str, ...] = tuple(a.value for a in Arch)

# Extended resources advertised by common device plugins, and the accelerator each means.
ACCELERATOR_RESOURCES: Mapping[str, str] = {
    "nvidia.com/gpu": "gpu",
    "amd.com/gpu": "gpu",
    "gpu.intel.com/i915": "gpu",
    "gpu.intel.com/xe": "gpu",
    "huawei.com/Ascend310": "npu",
    "huawei.com/Ascend310P": "npu",
    "huawei.com/Ascend910": "npu",
    "rockchip.com/npu": "npu",
    "google.com/tpu": "tpu",
    "coral.ai/tpu": "tpu",
    "intel.com/vpu": "vpu",
    "intel.com/myriad": "vpu",
    "qualcomm.com/npu": "npu",  # no upstream Qualcomm device plugin yet: the name a fleet's own plugin uses
}
# The vendor behind each of those resources: which execution provider can drive it (core/acceleration.py).
RESOURCE_VENDORS: Mapping[str, str] = {
    "nvidia.com/gpu": "nvidia",
    "amd.com/gpu": "amd",
    "gpu.intel.com/i915": "intel",
    "gpu.intel.com/xe": "intel",
    "huawei.com/Ascend310": "huawei",
    "huawei.com/Ascend310P": "huawei",
    "huawei.com/Ascend910": "huawei",
    "rockchip.com/npu": "rockchip",
    "google.com/tpu": "google",
    "coral.ai/tpu": "google",
    "intel.com/vpu": "intel",
    "intel.com/myriad": "intel",
    "qualcomm.com/npu": "qualcomm",
}


@dataclass(frozen=True)
class Capabilities:
    arch: str | None = None
    cpu: str | None = None  # quantity as the Node reports it, e.g. "4" or "3500m"
    memory: str | None = None  # quantity, e.g. "8Gi"
    accelerators: tuple[str, ...] = ("cpu",)
    site: str | None = None
    zone: str | None = None
    # The device-plugin resources of ACCELERATOR_RESOURCES the Node advertises (> 0), sorted: what a Pod asks for.
    resources: tuple[str, ...] = ()

    @property
    def memory_bytes(self) -> int | None:
        if self.memory is None:
            return None
        try:
            return quantity_bytes(self.memory)
        except QuantityError:
            return None

    @property
    def cpu_millis(self) -> int | None:
        if self.cpu is None:
            return None
        try:
            return quantity_millis(self.cpu)
        except QuantityError:
            return None

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"accelerators": list(self.accelerators)}
        for k in ("arch", "cpu", "memory", "site", "zone"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        return out


def _sort_accelerators(names: set[str]) -> tuple[str, ...]:
    return tuple(a for a in ACCELERATORS if a in names)


def accelerator_resources(allocatable: Mapping[str, Any]) -> tuple[str, ...]:
    out = []
    for resource, value in allocatable.items():
        if resource not in ACCELERATOR_RESOURCES:
            continue
        try:
            if quantity_millis(value) > 0:
                out.append(resource)
        except QuantityError:
            continue
    return tuple(sorted(out))


def accelerators_from(labels: Mapping[str, str], allocatable: Mapping[str, Any]) -> tuple[str, ...]:
    found = {"cpu"}
    for part in labels.get(c.ACCELERATOR_LABEL, "").split(","):
        part = part.strip().lower()
        if part in ACCELERATORS:
            found.add(part)
    found.update(ACCELERATOR_RESOURCES[r] for r in accelerator_resources(allocatable))
    return _sort_accelerators(found)


def from_node(node: Mapping[str, Any]) -> Capabilities:
    """Capabilities of a Node body (labels, allocatable, nodeInfo)."""
    meta = node.get("metadata") or {}
    status = node.get("status") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    alloc: Mapping[str, Any] = status.get("allocatable") or status.get("capacity") or {}
    arch = labels.get(c.ARCH_LABEL) or (status.get("nodeInfo") or {}).get("architecture") or None
    return Capabilities(
        arch=arch,
        cpu=str(alloc["cpu"]) if "cpu" in alloc else None,
        memory=str(alloc["memory"]) if "memory" in alloc else None,
        accelerators=accelerators_from(labels, alloc),
        site=labels.get(c.SITE_LABEL) or None,
        zone=labels.get(c.ZONE_LABEL) or None,
        resources=accelerator_resources(alloc),
    )


def with_overrides(caps: Capabilities, overrides: CapabilityOverrides | None) -> Capabilities:
    """Apply an EdgeDevice's `spec.capabilities`: each field given replaces the discovered one."""
    if overrides is None:
        return caps
    o = overrides
    return Capabilities(
        arch=str(o.arch) if o.arch is not None else caps.arch,
        cpu=str(o.cpu) if o.cpu is not None else caps.cpu,
        memory=str(o.memory) if o.memory is not None else caps.memory,
        # "cpu" is implied: every device can run a CPU build.
        accelerators=(_sort_accelerators({Accelerator.CPU, *o.accelerators}) if o.accelerators is not None
                      else caps.accelerators),
        site=o.site if o.site is not None else caps.site,
        zone=o.zone if o.zone is not None else caps.zone,
        resources=caps.resources,  # what the device plugins advertise stays what a Pod may ask for
    )


@dataclass(frozen=True)
class NodeHealth:
    online: bool
    reason: str  # the Ready condition's reason, or why we could not tell
    last_heartbeat: str | None = None
    message: str = field(default="")


def node_health(node: Mapping[str, Any]) -> NodeHealth:
    """Online iff the Node's Ready condition is True (KubeEdge keeps it from edgecore's heartbeats)."""
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return NodeHealth(
                online=cond.get("status") == "True",
                reason=cond.get("reason") or (DeviceReason.NODE_READY if cond.get("status") == "True"
                                              else DeviceReason.NODE_NOT_READY),
                last_heartbeat=cond.get("lastHeartbeatTime") or cond.get("lastTransitionTime"),
                message=cond.get("message") or "",
            )
    return NodeHealth(online=False, reason=DeviceReason.NO_READY_CONDITION,
                      message="the Node reports no Ready condition yet")


def is_edge_node(node: Mapping[str, Any]) -> bool:
    return c.EDGE_NODE_LABEL in ((node.get("metadata") or {}).get("labels") or {})

"""EdgeDevice (edgeai.io/v1alpha1, cluster-scoped): one edge node and what it can do;
crds/edgedevice.yaml is the schema these types are held to."""

from __future__ import annotations

from dataclasses import dataclass

from edgeai_api import constants as c
from edgeai_api.enums import Accelerator, Arch, ServingPhase
from edgeai_api.meta import Condition, ObjectMeta


@dataclass(frozen=True, kw_only=True)
class CapabilityOverrides:
    """spec.capabilities: each field given replaces what was discovered from the Node."""

    arch: Arch | None = None
    cpu: int | str | None = None  # a quantity
    memory: int | str | None = None  # a quantity
    accelerators: tuple[Accelerator, ...] | None = None
    site: str | None = None
    zone: str | None = None


@dataclass(frozen=True, kw_only=True)
class EdgeDeviceSpec:
    node_name: str
    capabilities: CapabilityOverrides | None = None


@dataclass(frozen=True, kw_only=True)
class CapabilitiesStatus:
    """The effective capabilities; free strings, as discovery may see values no enum lists."""

    arch: str | None = None
    cpu: str | None = None
    memory: str | None = None
    accelerators: tuple[str, ...] | None = None
    site: str | None = None
    zone: str | None = None


@dataclass(frozen=True, kw_only=True)
class ServingEntry:
    inference_deployment: str  # namespace/name
    deployment: str
    model: str | None = None
    variant: str | None = None
    sha256: str | None = None
    phase: ServingPhase | None = None


@dataclass(frozen=True, kw_only=True)
class EdgeDeviceStatus:
    observed_generation: int | None = None
    node_name: str | None = None
    online: bool | None = None
    last_heartbeat: str | None = None
    capabilities: CapabilitiesStatus | None = None
    serving_count: int | None = None
    serving: tuple[ServingEntry, ...] | None = None
    conditions: tuple[Condition, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class EdgeDevice:
    api_version: str = c.API_VERSION
    kind: str = c.KIND_DEVICE
    metadata: ObjectMeta
    spec: EdgeDeviceSpec
    status: EdgeDeviceStatus | None = None

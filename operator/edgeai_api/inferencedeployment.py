"""InferenceDeployment (edgeai.io/v1alpha1): run an EdgeModel on every matching EdgeDevice, rolled
out in waves; crds/inferencedeployment.yaml is the schema these types are held to.

`status.rollout` and `status.revisions[]` keep unknown fields (the schema preserves them): the
operator stores its own bookkeeping there (the rollout's progress and pin, each revision's whole
template), which stays a free-form `extra` map here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeai_api import constants as c
from edgeai_api.enums import (
    ExecutionProvider,
    FailurePolicy,
    InsufficientTrafficPolicy,
    OfflinePolicy,
    RevisionOutcome,
    RollbackStrategy,
    RolloutPhase,
    SelectorOperator,
)
from edgeai_api.meta import Condition, ObjectMeta

_COUNT_OR_PERCENT = "integer or percent string"


@dataclass(frozen=True, kw_only=True)
class SelectorRequirement:
    key: str
    operator: SelectorOperator
    values: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class LabelSelector:
    match_labels: Mapping[str, str] | None = None
    match_expressions: tuple[SelectorRequirement, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class ResourceRequirements:
    requests: Mapping[str, int | str] | None = None  # quantities
    limits: Mapping[str, int | str] | None = None


@dataclass(frozen=True, kw_only=True)
class ExecutionProviderSpec:
    name: ExecutionProvider
    options: Mapping[str, str] | None = None


@dataclass(frozen=True, kw_only=True)
class RuntimeSpec:
    threads: int | None = None
    parallel_runs: int | None = None
    max_batch_size: int | None = None
    max_batch_delay_ms: int | None = None
    max_latency_ms: int | None = None
    max_error_rate: float | None = None
    busy_poll_us: int | None = None
    grpc_port: int | None = None
    pod_annotations: Mapping[str, str] | None = None
    resources: ResourceRequirements | None = None
    execution_providers: tuple[ExecutionProviderSpec, ...] | None = None
    require_accelerator: bool | None = None


@dataclass(frozen=True, kw_only=True)
class RuntimeOverrideSettings:
    """What a group override may change: settings that do not decide placement (no providers,
    resources or ports, so a group's devices are placed as the rest are)."""

    threads: int | None = None
    parallel_runs: int | None = None
    max_batch_size: int | None = None
    max_batch_delay_ms: int | None = None
    max_latency_ms: int | None = None
    max_error_rate: float | None = None
    busy_poll_us: int | None = None
    pod_annotations: Mapping[str, str] | None = None


@dataclass(frozen=True, kw_only=True)
class RuntimeOverride:
    device_selector: LabelSelector
    runtime: RuntimeOverrideSettings


@dataclass(frozen=True, kw_only=True)
class FallbackSpec:
    url: str
    confidence_threshold: float
    timeout_ms: int | None = None


@dataclass(frozen=True, kw_only=True)
class QualityGate:
    """Judged by each new device's runtime during its gate (core/quality_gate.py in the runtime)."""

    max_psi: float | None = field(default=None, metadata={"json": "maxPSI"})
    min_mean_confidence: float | None = None
    min_requests: int | None = None
    on_insufficient_traffic: InsufficientTrafficPolicy | None = None
    # Against the previous revision's window on the same device (kept on the node's cache hostPath).
    max_psi_previous: float | None = field(default=None, metadata={"json": "maxPSIPrevious"})


@dataclass(frozen=True, kw_only=True)
class HealthGate:
    ready_seconds: int | None = None
    max_restarts: int | None = None
    progress_deadline_seconds: int | None = None
    max_failures: int | str | None = field(default=None, metadata={"what": _COUNT_OR_PERCENT})
    quality: QualityGate | None = None


@dataclass(frozen=True, kw_only=True)
class Ramp:
    initial: int | str | None = field(default=None, metadata={"what": _COUNT_OR_PERCENT})
    factor: int | None = None


@dataclass(frozen=True, kw_only=True)
class RollbackTo:
    revision: int
    requested_at: str | None = None


@dataclass(frozen=True, kw_only=True)
class MaintenanceWindow:
    schedule: str  # 5-field cron: when the window opens
    duration_minutes: int
    time_zone: str | None = None  # IANA name; default UTC


@dataclass(frozen=True, kw_only=True)
class MaintenanceWindows:
    label: str | None = None  # the device label whose value picks the window (default edgeai.io/site)
    windows: Mapping[str, MaintenanceWindow] | None = None  # by label value; "*": every other value


@dataclass(frozen=True, kw_only=True)
class RolloutSpec:
    canary: int | None = None
    waves: tuple[int | str, ...] | None = field(default=None, metadata={"what": _COUNT_OR_PERCENT})
    ramp: Ramp | None = None
    order_by: str | None = None
    pause_seconds: int | None = None
    max_unavailable: int | str | None = field(default=None, metadata={"what": _COUNT_OR_PERCENT})
    health_gate: HealthGate | None = None
    on_failure: FailurePolicy | None = None
    rollback_strategy: RollbackStrategy | None = None
    offline_devices: OfflinePolicy | None = None
    maintenance_windows: MaintenanceWindows | None = None
    paused: bool | None = None
    rollback_to: RollbackTo | None = None
    revision_history_limit: int | None = None


@dataclass(frozen=True, kw_only=True)
class SiteCacheSpec:
    """A caching server per site (issue 16): the operator runs one on the site's gateway node (or
    uses the endpoint named here) and every device of the site fetches through it."""

    site_label: str | None = None  # the device label whose value is the site (default edgeai.io/site)
    gateway_label: str | None = None  # the node label marking a site's gateway, value "true"
    port: int | None = None  # the gateway's host port (default 8090)
    max_bytes: int | str | None = field(default=None, metadata={"what": "quantity"})  # default 10Gi
    endpoints: Mapping[str, str] | None = None  # site -> URL of a cache the user runs instead


@dataclass(frozen=True, kw_only=True)
class InferenceDeploymentSpec:
    model: str
    device_selector: LabelSelector | None = None
    runtime: RuntimeSpec | None = None
    runtime_overrides: tuple[RuntimeOverride, ...] | None = None
    fallback: FallbackSpec | None = None
    rollout: RolloutSpec | None = None
    site_cache: SiteCacheSpec | None = None


@dataclass(frozen=True, kw_only=True)
class RolloutStatus:
    revision: int | None = None
    phase: RolloutPhase | None = None
    wave: int | None = None  # 0-based
    waves: int | None = None
    wave_started_at: str | None = None
    wave_ready_at: str | None = None
    message: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, metadata={"extra": True})


@dataclass(frozen=True, kw_only=True)
class RevisionRecord:
    revision: int
    hash: str | None = None
    digests: Mapping[str, str] | None = None
    model_version: str | None = None
    created_at: str | None = None
    reason: str | None = None
    outcome: RevisionOutcome | None = None
    message: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, metadata={"extra": True})


@dataclass(frozen=True, kw_only=True)
class DeviceRow:
    device: str
    node: str | None = None
    revision: int | None = None
    variant: str | None = None
    precision: str | None = None
    execution_provider: str | None = None
    acceleration: str | None = None
    sha256: str | None = None
    phase: str  # enums.WorkloadPhase's values; free text in the schema
    ready: bool | None = None
    message: str | None = None


@dataclass(frozen=True, kw_only=True)
class UnplacedDevice:
    device: str
    reason: str  # enums.UnplacedReason's values; free text in the schema
    message: str | None = None


@dataclass(frozen=True, kw_only=True)
class SiteCacheRow:
    site: str
    node: str | None = None
    endpoint: str | None = None
    ready: bool | None = None  # absent for a cache the user runs: the operator cannot see it
    message: str | None = None


@dataclass(frozen=True, kw_only=True)
class InferenceDeploymentStatus:
    observed_generation: int | None = None
    selected: int | None = None
    placed: int | None = None
    ready: int | None = None
    updated: int | None = None
    offline: int | None = None
    model_sha256: str | None = None
    short_digest: str | None = None
    revision: int | None = None
    current_revision: int | None = None
    rollout: RolloutStatus | None = None
    revisions: tuple[RevisionRecord, ...] | None = None
    devices: tuple[DeviceRow, ...] | None = None
    devices_not_listed: int | None = None
    unplaced: tuple[UnplacedDevice, ...] | None = None
    unplaced_not_listed: int | None = None
    not_selected: int | None = None
    site_caches: tuple[SiteCacheRow, ...] | None = None
    conditions: tuple[Condition, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class InferenceDeployment:
    api_version: str = c.API_VERSION
    kind: str = c.KIND_IDEP
    metadata: ObjectMeta
    spec: InferenceDeploymentSpec
    status: InferenceDeploymentStatus | None = None

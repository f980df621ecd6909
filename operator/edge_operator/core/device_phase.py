"""Where one device stands in a deployment, judged from what the cloud sees: its workload and pods.

Pure. The status rows, the counts and the rollout's health gates all read a device through
`device_phase`, so a device is never Ready in one place and failing in another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge_operator.core import rollout as ro
from edge_operator.core.views import ChildInfo, PodInfo
from edgeai_api.enums import WorkloadPhase
from edgeai_api.exit_codes import EXIT_QUALITY_GATE, EXIT_REASONS, QUALITY_GATE_FAILED

FAILED_PHASES = frozenset({WorkloadPhase.FAILED, WorkloadPhase.FETCH_FAILED})
# Container states that will not get better by waiting.
STUCK_REASONS = frozenset({
    "CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
})


@dataclass(frozen=True)
class DevicePhase:
    phase: WorkloadPhase
    ready: bool
    updated: bool
    message: str = ""


def newest_pod(pods: Sequence[PodInfo], sha256: str | None) -> PodInfo | None:
    live = [p for p in pods if not p.deleting and (sha256 is None or p.sha256 == sha256)]
    return max(live, key=lambda p: p.created) if live else None


def device_phase(
    child: ChildInfo | None,
    pods: Sequence[PodInfo],
    online: bool,
    desired_hash: str | None,
    desired_sha: str | None,
) -> DevicePhase:
    """Where one device stands, from what the cloud can see: Deployment and Pod status only."""
    if child is None:
        return DevicePhase(WorkloadPhase.PENDING, False, False, "creating the workload")
    updated = desired_hash is None or child.spec_hash == desired_hash
    if not online:
        return DevicePhase(WorkloadPhase.OFFLINE, False, updated, "node is not Ready; the workload stays and resumes")
    if not updated:
        return DevicePhase(WorkloadPhase.UPDATING, False, False, "applying the new workload spec")
    pod = newest_pod(pods, desired_sha)
    if pod is not None and pod.server_exit_code == EXIT_QUALITY_GATE:
        # Checked before readiness: a Pod whose build failed its quality gate is failed for good, even if an
        # older Pod still answers (the runtime only ever exits so during its gate, never outside a rollout).
        detail = f": {pod.server_message}" if pod.server_message else ""
        return DevicePhase(WorkloadPhase.FAILED, False, True, f"{QUALITY_GATE_FAILED}{detail}")
    if child.rolled_out and child.ready >= 1:
        return DevicePhase(WorkloadPhase.READY, True, True)
    if pod is not None and pod.init_exit_code is not None:
        # Exit codes name a reason only for fetch (the runtime's CLI contract); cache-dirs is coreutils.
        codes = EXIT_REASONS if pod.init_name in ("fetch", "fetch-profile") else {}
        why = codes.get(pod.init_exit_code, pod.reason or "Error")
        detail = f": {pod.message}" if pod.message else ""
        return DevicePhase(WorkloadPhase.FETCH_FAILED, False, True,
                           f"{why}: {pod.init_name} exited with code {pod.init_exit_code}{detail}")
    if pod is not None and pod.reason in STUCK_REASONS:
        return DevicePhase(WorkloadPhase.FAILED, False, True, f"{pod.reason}: {pod.message}".rstrip(": "))
    if child.progress_failed:
        return DevicePhase(WorkloadPhase.FAILED, False, True, child.message)
    if pod is None:
        return DevicePhase(WorkloadPhase.PENDING, False, True, "waiting for the pod to be created")
    if pod.reason == "Unschedulable":
        return DevicePhase(WorkloadPhase.SCHEDULING, False, True, pod.message)
    if pod.init_running:
        return DevicePhase(WorkloadPhase.FETCHING, False, True, "fetching and verifying the model into the node cache")
    if pod.phase == "Running":
        return DevicePhase(WorkloadPhase.STARTING, False, True, "loading the model; waiting for /v2/health/ready")
    return DevicePhase(WorkloadPhase.PENDING, False, True, pod.reason)


def device_rollout(ch: ChildInfo, pods: Sequence[PodInfo], online: bool) -> ro.DeviceRollout:
    """A device as the rollout sees it: judged against the template its workload has now."""
    ph = device_phase(ch, pods, online, ch.spec_hash, ch.sha256)
    pod = newest_pod(pods, ch.sha256)
    failed = (ph.message or ph.phase) if ph.phase in FAILED_PHASES else ""
    older = any(p.ready and not p.deleting and p.spec_hash != ch.spec_hash for p in pods)
    return ro.DeviceRollout(revision=ch.revision, ready=ph.ready, online=online, failed=failed,
                            restarts=pod.restarts if pod is not None else 0, serving_older=older)


def row(device: str, variant: str | None, sha256: str | None, ph: DevicePhase, *,
         precision: str | None = None, node: str | None = None, revision: int | None = None,
         provider: str | None = None, acceleration: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"device": device, "phase": ph.phase, "ready": ph.ready}
    if revision is not None:
        row["revision"] = revision
    if node:
        row["node"] = node
    if variant:
        row["variant"] = variant
    if precision:
        row["precision"] = precision
    if provider:
        row["executionProvider"] = provider
    if acceleration:
        row["acceleration"] = acceleration[:300]
    if sha256:
        row["sha256"] = sha256
    if ph.message:
        row["message"] = ph.message[:300]
    return row

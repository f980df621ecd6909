"""An InferenceDeployment's status, folded from where each device stands and where the rollout is.

Pure. Counts, per-device rows, unplaced reasons and the three conditions (Ready about the devices,
Progressing and Degraded about the rollout), in the Kubernetes API conventions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from edge_operator.core import conditions as cond
from edge_operator.core import rollout as ro
from edge_operator.core.device_phase import FAILED_PHASES, DevicePhase
from edge_operator.core.placement import Placement, Rejection
from edge_operator.core.selectors import describe
from edge_operator.core.views import IdepInfo, ModelInfo
from edgeai_api.enums import ConditionStatus, ConditionType, DeploymentReason, WorkloadPhase

R = DeploymentReason
C = ConditionType
MAX_LISTED_UNPLACED = 100
# Rows of status.devices. A row is 150-400 bytes: uncapped, one deployment over 10,000 devices would
# need a 2-4 MB status, over what etcd takes in one write (1.5 MiB by default), and every status
# write would carry all of it. Every device has its own full view in its EdgeDevice's status.
MAX_LISTED_DEVICES = 1000


def _unplaced(rejections: Sequence[Rejection]) -> tuple[list[dict[str, str]], int]:
    """Selected-but-rejected devices, listed with their reason (capped), and the count not listed.
    Devices outside the selector are only counted (`notSelected`, by `place`): in a fleet of
    thousands, one deployment's status must not name every other device."""
    listed = [{"device": r.device, "reason": r.reason, "message": r.message}
              for r in rejections[:MAX_LISTED_UNPLACED]]
    return listed, max(0, len(rejections) - MAX_LISTED_UNPLACED)


def _listed_devices(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Per-device rows, capped at MAX_LISTED_DEVICES, and the count not listed. When capped, the
    devices that need a look come first (failing, then every other not-ready one), each group in
    its given order, so what is listed is what someone reading the status is looking for."""
    if len(rows) <= MAX_LISTED_DEVICES:
        return list(rows), 0
    failing = {p.value for p in FAILED_PHASES}
    ordered = sorted(rows, key=lambda r: (r.get("ready") is True, r.get("phase") not in failing))
    return ordered[:MAX_LISTED_DEVICES], len(rows) - MAX_LISTED_DEVICES


def _reason_summary(rejections: Iterable[Rejection]) -> str:
    counts = Counter(r.reason for r in rejections)
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))


def fold_status(
    idep: IdepInfo,
    model: ModelInfo | None,
    placement: Placement | None,
    phases: Mapping[str, DevicePhase],
    device_rows: Sequence[dict[str, Any]],
    blocked: tuple[str, str, bool, bool] | None,
    now: str,
) -> dict[str, Any]:
    """The InferenceDeployment's status: counts, per-device rows, unplaced reasons, conditions.

    Every device gets accounted for: placed ones in `devices`, selected but unsuitable ones in
    `unplaced` with a reason, the rest in `notSelected` (the selector does not match them).

    `blocked` is (reason, message, progressing, degraded) when nothing new may be placed.
    """
    gen = idep.generation
    ready = sum(1 for p in phases.values() if p.ready)
    updated = sum(1 for p in phases.values() if p.updated)
    offline = sum(1 for p in phases.values() if p.phase == WorkloadPhase.OFFLINE)
    failing = sum(1 for p in phases.values() if p.phase in FAILED_PHASES)
    placed = len(phases)
    status: dict[str, Any] = {
        "observedGeneration": gen,
        "placed": placed,
        "ready": ready,
        "updated": updated,
        "offline": offline,
    }
    status["devices"], devices_more = _listed_devices(device_rows)
    if devices_more:
        status["devicesNotListed"] = devices_more
    if model is not None and model.verified:
        status["modelSha256"] = model.source.sha256
        status["shortDigest"] = model.source.sha256[:12]
    if placement is not None:
        unplaced, more = _unplaced(placement.rejections)
        status["selected"] = placement.selected
        status["notSelected"] = placement.not_selected
        status["unplaced"] = unplaced
        if more:
            status["unplacedNotListed"] = more
    else:
        prev_selected = idep.status.get("selected")
        status["selected"] = prev_selected if isinstance(prev_selected, int) else 0
        prev_ns = idep.status.get("notSelected")
        status["notSelected"] = prev_ns if isinstance(prev_ns, int) else 0
        status["unplaced"] = []

    def conds(r: tuple[bool, str, str], p: tuple[bool, str, str], d: tuple[bool, str, str]) -> list[Any]:
        return [cond.make(C.READY, r[0], r[1], r[2], gen), cond.make(C.PROGRESSING, p[0], p[1], p[2], gen),
                cond.make(C.DEGRADED, d[0], d[1], d[2], gen)]

    summary = f"{ready}/{placed} devices ready"
    if offline:
        summary += f", {offline} offline"
    if failing:
        summary += f", {failing} failing"
    if blocked is not None:
        reason, message, progressing, degraded = blocked
        if placed:
            message += f"; existing workloads are kept ({summary})"
        new = conds((False, reason, message), (progressing, reason, message), (degraded, reason, message))
    elif placement is not None and placement.selected == 0:
        msg = f"no EdgeDevice matches {describe(idep.selector)} ({placement.not_selected} devices known)"
        new = conds((False, R.NO_MATCHING_DEVICES, msg), (False, R.NO_MATCHING_DEVICES, msg),
                    (False, R.NO_MATCHING_DEVICES, msg))
    elif placed == 0:
        msg = f"{placement.selected if placement else 0} devices selected, none suitable: "
        msg += _reason_summary(placement.rejections if placement else ())
        new = conds((False, R.NO_SUITABLE_DEVICES, msg), (False, R.NO_SUITABLE_DEVICES, msg),
                    (True, R.NO_SUITABLE_DEVICES, msg))
    else:
        online = placed - offline
        pending = online - ready - failing
        if online == 0:
            r = (False, R.ALL_DEVICES_OFFLINE, summary)
        elif ready == online:
            r = (True, R.DEVICES_READY, summary)
        else:
            r = (False, R.DEVICES_NOT_READY, summary)
        p = (True, R.ROLLING_OUT, summary) if pending > 0 else (False, R.COMPLETE, summary)
        if failing:
            d = (True, R.DEVICES_FAILING, summary)
        elif offline:
            d = (True, R.DEVICES_OFFLINE, summary)
        else:
            d = (False, R.HEALTHY, summary)
        new = conds(r, p, d)
    status["conditions"] = cond.merge(idep.status.get("conditions"), new, now)
    return status


def rollout_conditions(idep: IdepInfo, status: dict[str, Any], st: ro.Step, target: int, stable: int | None,
                        now: str) -> None:
    """Progressing and Degraded say where the rollout stands; Ready stays about the devices."""
    phase = st.state.phase
    gen = idep.generation
    msg = st.state.message
    new: list[dict[str, Any]] = []
    if phase == ro.PAUSED:
        new.append(cond.make(C.PROGRESSING, False, R.ROLLOUT_PAUSED, msg, gen))
    elif phase == ro.ROLLING_BACK:
        new.append(cond.make(C.PROGRESSING, True, R.ROLLING_BACK, msg, gen))
        new.append(cond.make(C.DEGRADED, True, R.ROLLOUT_FAILED, msg, gen))
    elif phase == ro.ROLLED_BACK:
        text = msg or f"revision {target} failed; the fleet serves revision {stable}"
        new.append(cond.make(C.PROGRESSING, False, R.ROLLED_BACK, text, gen))
        new.append(cond.make(C.DEGRADED, True, R.ROLLOUT_FAILED, text, gen))
    elif phase == ro.HALTED:
        new.append(cond.make(C.PROGRESSING, False, R.ROLLOUT_HALTED, msg, gen))
        new.append(cond.make(C.DEGRADED, True, R.ROLLOUT_FAILED, msg, gen))
    elif phase == ro.PROGRESSING:
        current = cond.find(status.get("conditions"), C.PROGRESSING)
        if current is None or current.get("status") != ConditionStatus.TRUE:
            new.append(cond.make(C.PROGRESSING, True, R.ROLLING_OUT, msg, gen))
    if new:
        status["conditions"] = cond.merge(status.get("conditions"), new, now)


def rollout_events(st: ro.Step, target: int, stable: int | None) -> tuple[tuple[str, str, str], ...]:
    if st.failure:
        return (("Warning", R.ROLLOUT_FAILED, st.state.message),)
    if st.rolled_back:
        return (("Normal", R.ROLLED_BACK, f"the fleet serves revision {stable} again; revision {target} failed"),)
    if st.succeeded:
        return (("Normal", "RolloutComplete", f"revision {target} serves on every device it was placed on"),)
    return ()

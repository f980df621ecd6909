"""One InferenceDeployment's reconcile, as data: what to apply, what to delete, what status to write.

Pure. `plan()` reads immutable summaries and returns an `IdepPlan`; the
controller applies it and nothing else. Running it twice on the same inputs
gives the same plan, and a plan for a cluster already in the desired state is
empty, which is what makes the reconcile level-triggered and idempotent.

The steps are separate functions on purpose: `placement` says what each
device *should* serve, `targets` says what each device serves *now* (the
place where a wave-by-wave rollout decides which devices already get the new
revision), `manifests` turns targets into child workloads, `fold_status`
reports.

Longer than most modules: those steps, and the status they fold, are one
reconcile read top to bottom; each is a separate, separately tested function.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge_operator.core import conditions as cond
from edge_operator.core import revisions as rev
from edge_operator.core import rollout as ro
from edge_operator.core.catalog import DeviceCatalog
from edge_operator.core.manifests import Owner, WorkloadInputs, child_deployment
from edge_operator.core.placement import DeviceView, Placement, Rejection, place
from edge_operator.core.quantity import QuantityError, quantity_bytes
from edge_operator.core.selectors import SelectorError, describe, validate_selector
from edge_operator.core.views import ChildInfo, IdepInfo, ModelInfo, ModelState, PodInfo
from edgeai_api import constants as c
from edgeai_api.enums import ConditionStatus, ConditionType, DeploymentReason, UnplacedReason, WorkloadPhase
from edgeai_api.exit_codes import EXIT_REASONS
from edgeai_api.inferencedeployment import RuntimeSpec

MAX_LISTED_UNPLACED = 100
FAILED_PHASES = frozenset({WorkloadPhase.FAILED, WorkloadPhase.FETCH_FAILED})
R = DeploymentReason
C = ConditionType
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


@dataclass(frozen=True)
class IdepPlan:
    apply: tuple[dict[str, Any], ...]
    delete: tuple[ChildInfo, ...]
    status: dict[str, Any]
    placement: Placement | None = None
    requeue_after: float | None = None  # look again then, even if nothing else happens (gate timers)
    events: tuple[tuple[str, str, str], ...] = ()  # (type, reason, message) worth an Event


def memory_request(runtime: RuntimeSpec | None) -> int | None:
    res = runtime.resources if runtime is not None else None
    for part, vals in (("requests", res.requests if res else None), ("limits", res.limits if res else None)):
        mem = (vals or {}).get("memory")
        if mem is not None:
            try:
                return quantity_bytes(mem, f"spec.runtime.resources.{part}.memory")
            except QuantityError:
                return None
    return None


def workload_inputs(
    idep: IdepInfo, template: rev.Template, placement: Placement, revision: int | None = None
) -> dict[str, WorkloadInputs]:
    """What every placed device would serve under one revision."""
    owner = Owner(c.API_VERSION, c.KIND_IDEP, idep.name, idep.uid)
    return {
        a.device: WorkloadInputs(
            namespace=idep.namespace,
            owner=owner,
            model=template.model,
            model_version=template.model_version,
            device=a.device,
            node=a.node,
            artifact=a.artifact,
            image=template.image,
            runtime=template.runtime,
            fallback=template.fallback,
            public_key=template.public_key,
            decryption_key=template.decryption_key,
            revision=revision,
        )
        for a in placement.assignments
    }


def _newest_pod(pods: Sequence[PodInfo], sha256: str | None) -> PodInfo | None:
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
    if child.rolled_out and child.ready >= 1:
        return DevicePhase(WorkloadPhase.READY, True, True)
    pod = _newest_pod(pods, desired_sha)
    if pod is not None and pod.init_exit_code is not None:
        # Exit codes name a reason only for fetch (the runtime's CLI contract); cache-dirs is coreutils.
        codes = EXIT_REASONS if pod.init_name == "fetch" else {}
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


def _unplaced(rejections: Sequence[Rejection]) -> tuple[list[dict[str, str]], int]:
    """Selected-but-rejected devices, listed with their reason (capped), and the count not listed.
    Devices outside the selector are counted (`notSelected`), not listed: in a fleet of
    thousands, one deployment's status must not name every other device."""
    actionable = [r for r in rejections if r.reason != UnplacedReason.NOT_SELECTED]
    listed = [{"device": r.device, "reason": r.reason, "message": r.message}
              for r in actionable[:MAX_LISTED_UNPLACED]]
    return listed, max(0, len(actionable) - MAX_LISTED_UNPLACED)


def _reason_summary(rejections: Iterable[Rejection]) -> str:
    counts = Counter(r.reason for r in rejections if r.reason != UnplacedReason.NOT_SELECTED)
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
        "devices": list(device_rows),
    }
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


def _blocked_reason(idep: IdepInfo, model: ModelInfo | None) -> tuple[str, str, bool, bool] | None:
    try:
        validate_selector(idep.selector)
    except SelectorError as e:
        return (R.INVALID_SPEC, str(e), False, True)
    if model is None:
        return (R.MODEL_NOT_FOUND, f"EdgeModel {idep.model!r} does not exist in namespace {idep.namespace}",
                False, True)
    if model.deleting:
        return (R.MODEL_DELETING, f"EdgeModel {model.name!r} is being deleted", False, True)
    if model.state == ModelState.PENDING:
        return (R.MODEL_VERIFYING, f"EdgeModel {model.name!r} is being verified", True, False)
    if model.state == ModelState.FAILED:
        return (R.MODEL_NOT_VERIFIED, f"EdgeModel {model.name!r}: {model.reason}: {model.message}", False, True)
    if idep.spec is None:
        return (R.INVALID_SPEC, idep.spec_error, False, True)
    return None


def compute_placement(idep: IdepInfo, model: ModelInfo, devices: Mapping[str, DeviceView]) -> Placement:
    """Placement over the catalogue; with a DeviceCatalog only the devices its label index finds
    for the selector are looked at."""
    candidates = devices.candidates(idep.selector) if isinstance(devices, DeviceCatalog) else devices.values()
    return place(idep.selector, model.requirements, model.source, model.variants, candidates,
                 memory_request(idep.spec.runtime if idep.spec else None), fleet_size=len(devices))


def plan(
    idep: IdepInfo,
    model: ModelInfo | None,
    devices: Mapping[str, DeviceView],
    children: Mapping[str, ChildInfo],
    pods: Mapping[str, Sequence[PodInfo]],
    *,
    image: str,
    now: str,
    now_ts: float | None = None,
    placement: Placement | None = None,
    placement_for: Callable[[ModelInfo], Placement] | None = None,
) -> IdepPlan:
    """Decide everything for one InferenceDeployment.

    `devices` is the catalogue by name; `children` and `pods` are keyed by device. A caller
    that cached the placement for unchanged inputs passes it, and the cost is then
    proportional to the devices placed, not to the fleet. `placement_for` places another
    revision's builds (a rollback target); it defaults to computing it.
    """

    def online(dev: str) -> bool:
        d = devices.get(dev)
        return d is not None and d.online

    blocked = _blocked_reason(idep, model)
    pol: ro.Policy | None = None
    spec = idep.spec
    if blocked is None and spec is not None:
        try:
            pol = ro.parse_policy(spec.rollout)
        except ro.RolloutSpecError as e:
            blocked = (R.INVALID_SPEC, str(e), False, True)
    resolution: rev.Resolution | None = None
    if blocked is None and model is not None and pol is not None and spec is not None:
        spec_template = rev.template_for(model, spec.runtime, spec.fallback, image)
        resolution = rev.resolve(rev.history_from_status(idep.status), spec_template,
                                 _int(idep.status.get("revision")), _int(idep.status.get("currentRevision")),
                                 _rollout_get(idep, "pin"), pol.rollback_to, _rollout_get(idep, "observedRollbackTo"),
                                 now)
        if resolution.error:
            blocked = (R.INVALID_SPEC, resolution.error, False, True)
    if blocked is not None or model is None or pol is None or resolution is None or spec is None:
        # Never tear down a serving fleet because the model is missing or being re-verified:
        # keep what runs, place nothing new, and say why.
        phases = {}
        rows = []
        for dev, existing in sorted(children.items()):
            ph = device_phase(existing, pods.get(dev, ()), online(dev), None, existing.sha256)
            phases[dev] = ph
            rows.append(_row(dev, existing.variant, existing.sha256, ph, revision=existing.revision))
        return IdepPlan((), (), fold_status(idep, model, None, phases, rows, blocked, now))

    ts = now_ts if now_ts is not None else (ro.parse_time(now) or 0.0)
    history = resolution.history
    target = resolution.target
    target_rev = rev.find(history, target)
    assert target_rev is not None
    stable = _int(idep.status.get("currentRevision"))
    if rev.find(history, stable) is None:
        stable = None

    place_for = placement_for or (lambda m: compute_placement(idep, m, devices))
    if placement is None:
        placement = compute_placement(idep, model, devices)
    spec_hash = rev.template_for(model, spec.runtime, spec.fallback, image).hash()

    def placement_of(r: rev.Revision) -> Placement:
        assert model is not None and placement is not None
        return placement if r.hash == spec_hash else place_for(r.template.model_view(model))

    # Inputs per device for every revision a device may be asked to serve: the target, the
    # stable one, and whatever an unfinished earlier rollout left on some devices.
    wanted = {target} | ({stable} if stable is not None else set())
    wanted |= {ch.revision for ch in children.values() if ch.revision is not None}
    inputs: dict[int, dict[str, WorkloadInputs]] = {}
    for n in sorted(wanted):
        r = rev.find(history, n)
        if r is not None:
            inputs[n] = workload_inputs(idep, r.template, placement_of(r), n)
    target_placement = placement_of(target_rev)
    placed = {a.device: a for a in target_placement.assignments}
    labels = {d: (devices[d].labels if d in devices else {}) for d in placed}
    order = ro.order_devices(labels, pol.order_by)
    bounds = ro.wave_bounds(pol, order, labels)
    if target_rev.reason.startswith("rollback to"):
        bounds = [len(order)]  # an undo by hand goes everywhere at once, as a rollback does
    states = {d: _device_rollout(children[d], pods.get(d, ()), online(d)) for d in order if d in children}
    usable = frozenset(r.number for r in history if r.outcome not in rev.FINAL_BAD)
    prev = ro.RolloutState.from_dict(idep.status.get("rollout"))
    target_failed = target_rev.outcome in rev.FINAL_BAD
    st = ro.step(pol, prev, target, stable, target_failed, order, bounds, states, usable, ts)

    if st.failure:
        history = rev.with_outcome(history, target, rev.FAILED, st.failure)
    if st.succeeded:
        history = rev.with_outcome(history, target, rev.SUCCEEDED)
        stable = target

    apply: list[dict[str, Any]] = []
    phases = {}
    rows = []
    updated_to_target = 0
    for dev in sorted(placed):
        ch = children.get(dev)
        trev = st.targets.get(dev)
        inp = inputs.get(trev, {}).get(dev) if trev is not None else None
        if inp is None:
            # Not admitted yet and nothing older to serve (or its build does not fit here): a
            # workload already there is left as it is, never torn down for a wave to come.
            if ch is not None:
                ph = device_phase(ch, pods.get(dev, ()), online(dev), ch.spec_hash, ch.sha256)
                rows.append(_row(dev, ch.variant, ch.sha256, ph, node=placed[dev].node, revision=ch.revision))
            else:
                ph = DevicePhase(WorkloadPhase.WAITING, False, False, "waiting for its rollout wave")
                rows.append(_row(dev, None, None, ph, node=placed[dev].node))
            phases[dev] = ph
            continue
        manifest = child_deployment(inp)
        want_hash = manifest["metadata"]["annotations"][c.A_SPEC_HASH]
        if ch is None or (ch.spec_hash != want_hash and not ch.deleting):
            apply.append(manifest)
        ph = device_phase(ch, pods.get(dev, ()), online(dev), want_hash, inp.artifact.sha256)
        if trev == target and ch is not None and ch.spec_hash == want_hash:
            updated_to_target += 1
        phases[dev] = ph
        rows.append(_row(dev, inp.artifact.name, inp.artifact.sha256, ph,
                         precision=inp.artifact.precision, node=inp.node, revision=trev))
    delete = tuple(ch for dev, ch in sorted(children.items()) if dev not in placed and not ch.deleting)
    status = fold_status(idep, model, target_placement, phases, rows, None, now)
    status["updated"] = updated_to_target
    keep = {target} | ({stable} if stable is not None else set()) | {
        ch.revision for ch in children.values() if ch.revision is not None}
    history = rev.prune(history, keep, pol.history_limit)
    status["revision"] = target
    if stable is not None:
        status["currentRevision"] = stable
    rollout_status = st.state.to_dict()
    if resolution.pin:
        rollout_status["pin"] = resolution.pin
    if resolution.observed_rollback:
        rollout_status["observedRollbackTo"] = resolution.observed_rollback
    status["rollout"] = rollout_status
    status["revisions"] = [r.to_dict() for r in history]
    _rollout_conditions(idep, status, st, target, stable, now)
    events = _rollout_events(st, target, stable)
    return IdepPlan(tuple(apply), delete, status, target_placement, requeue_after=st.requeue_after, events=events)


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _rollout_get(idep: IdepInfo, key: str) -> Mapping[str, Any] | None:
    r = idep.status.get("rollout")
    v = r.get(key) if isinstance(r, Mapping) else None
    return v if isinstance(v, Mapping) else None


def _device_rollout(ch: ChildInfo, pods: Sequence[PodInfo], online: bool) -> ro.DeviceRollout:
    """A device as the rollout sees it: judged against the template its workload has now."""
    ph = device_phase(ch, pods, online, ch.spec_hash, ch.sha256)
    pod = _newest_pod(pods, ch.sha256)
    failed = (ph.message or ph.phase) if ph.phase in FAILED_PHASES else ""
    return ro.DeviceRollout(revision=ch.revision, ready=ph.ready, online=online, failed=failed,
                            restarts=pod.restarts if pod is not None else 0)


def _rollout_conditions(idep: IdepInfo, status: dict[str, Any], st: ro.Step, target: int, stable: int | None,
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


def _rollout_events(st: ro.Step, target: int, stable: int | None) -> tuple[tuple[str, str, str], ...]:
    if st.failure:
        return (("Warning", R.ROLLOUT_FAILED, st.state.message),)
    if st.rolled_back:
        return (("Normal", R.ROLLED_BACK, f"the fleet serves revision {stable} again; revision {target} failed"),)
    if st.succeeded:
        return (("Normal", "RolloutComplete", f"revision {target} serves on every device it was placed on"),)
    return ()


def _row(device: str, variant: str | None, sha256: str | None, ph: DevicePhase, *,
         precision: str | None = None, node: str | None = None, revision: int | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"device": device, "phase": ph.phase, "ready": ph.ready}
    if revision is not None:
        row["revision"] = revision
    if node:
        row["node"] = node
    if variant:
        row["variant"] = variant
    if precision:
        row["precision"] = precision
    if sha256:
        row["sha256"] = sha256
    if ph.message:
        row["message"] = ph.message[:300]
    return row

"""One InferenceDeployment's reconcile, as data: what to apply, what to delete, what status to write.

Pure. `plan()` reads immutable summaries and returns an `IdepPlan`; the
controller applies it and nothing else. Running it twice on the same inputs
gives the same plan, and a plan for a cluster already in the desired state is
empty, which is what makes the reconcile level-triggered and idempotent.

`plan` reads as its steps, each a function of its own: `_resolve` (the rollout policy and the
revision to roll out, or why nothing new may be placed), placement (what each device *should*
serve), `_step_rollout` (which revision each device serves *now*: the waves), `_workloads` (the
child workloads and each device's phase, from device_phase.py) and the status
(deployment_status.py folds it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from edge_operator.core import overrides as ov
from edge_operator.core import pod_workloads as pw
from edge_operator.core import revisions as rev
from edge_operator.core import rollout as ro
from edge_operator.core import site_cache, windows
from edge_operator.core.catalog import DeviceCatalog
from edge_operator.core.deployment_status import fold_status, rollout_conditions, rollout_events
from edge_operator.core.device_phase import DevicePhase, device_phase, device_rollout, row
from edge_operator.core.manifests import WORKLOAD_HASHES, Owner, WorkloadInputs, child_pod, surges
from edge_operator.core.placement import Assignment, DeviceView, Placement, place
from edge_operator.core.plan_memo import PlanMemo
from edge_operator.core.quantity import QuantityError, quantity_bytes
from edge_operator.core.runtime_images import RuntimeImages
from edge_operator.core.selectors import SelectorError, validate_selector
from edge_operator.core.views import ChildInfo, IdepInfo, ModelInfo, ModelState, PodInfo
from edgeai_api import constants as c
from edgeai_api.enums import DeploymentReason, WorkloadPhase
from edgeai_api.inferencedeployment import InferenceDeploymentSpec, RuntimeSpec

R = DeploymentReason
# Why nothing new may be placed: (reason, message, progressing, degraded).
Blocked = tuple[str, str, bool, bool]


@dataclass(frozen=True)
class IdepPlan:
    apply: tuple[dict[str, Any], ...]  # Pods to create
    delete: tuple[ChildInfo, ...]  # Deployments of an operator of 0.1 (core/pod_workloads.py)
    status: dict[str, Any]
    placement: Placement | None = None
    requeue_after: float | None = None  # look again then, even if nothing else happens (gate timers)
    events: tuple[tuple[str, str, str], ...] = ()  # (type, reason, message) worth an Event
    delete_pods: tuple[PodInfo, ...] = ()
    annotate: tuple[tuple[PodInfo, int], ...] = ()  # Pods to tell the revision they serve now


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
    idep: IdepInfo, template: rev.Template, placement: Placement, revision: int | None = None,
    labels_of: Callable[[str], Mapping[str, str]] = lambda _: {}, memo: PlanMemo | None = None,
) -> dict[str, WorkloadInputs]:
    """What every placed device would serve under one revision (`labels_of`: a device's labels,
    which the template's group overrides select on). With `memo`, a device whose assignment and
    labels are the objects of the last plan keeps its inputs."""
    owner = Owner(c.API_VERSION, c.KIND_IDEP, idep.name, idep.uid)
    if memo is None:
        return {a.device: _inputs(idep, owner, template, a, revision, labels_of(a.device))
                for a in placement.assignments}
    th = template.hash()
    labels = tuple(labels_of(a.device) for a in placement.assignments)
    whole = (th, placement, labels, idep.uid, idep.name, idep.namespace)
    kept: dict[str, WorkloadInputs] | None = memo.get(("inputs", revision), whole)
    if kept is not None:
        return kept  # nothing moved: one comparison, mostly of identical objects
    out: dict[str, WorkloadInputs] = {}
    for a, lab in zip(placement.assignments, labels, strict=True):
        key = (th, a, lab, idep.uid, idep.name, idep.namespace)
        out[a.device] = memo.cached(("inputs", revision, a.device), key,
                                    lambda: _inputs(idep, owner, template, a, revision, lab))  # noqa: B023
    return memo.keep(("inputs", revision), whole, out)


def _inputs(idep: IdepInfo, owner: Owner, template: rev.Template, a: Assignment, revision: int | None,
            labels: Mapping[str, str]) -> WorkloadInputs:
    return WorkloadInputs(
        namespace=idep.namespace,
        owner=owner,
        model=template.model,
        model_version=template.model_version,
        device=a.device,
        node=a.node,
        artifact=a.artifact,
        # The image of the family of the provider the device was placed for: the cpu image when the
        # device runs on the CPU (placement never picks a provider whose family has no image).
        image=template.runtime_images().for_provider(a.acceleration.provider),
        runtime=template.runtime_for(labels),
        fallback=template.fallback,
        public_key=template.public_key,
        decryption_key=template.decryption_key,
        revision=revision,
        acceleration=a.acceleration,
        quality_profile=template.quality_profile,
        quality_gate=template.quality_gate,
        quality_window_seconds=template.quality_window_seconds,
        template_hash=template.hash(),
        mirror=site_cache.mirror_ref(idep.name, template.site_cache_label, labels),
    )


def _blocked_reason(idep: IdepInfo, model: ModelInfo | None) -> Blocked | None:
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


def compute_placement(idep: IdepInfo, model: ModelInfo, devices: Mapping[str, DeviceView],
                      runtime: RuntimeSpec | None = None, families: frozenset[str] | None = None) -> Placement:
    """Placement over the catalogue; with a DeviceCatalog only the devices its label index finds
    for the selector are looked at. `runtime` is the revision's runtime settings (default: the
    spec's): its execution providers decide which accelerators a build may be chosen for, among those
    whose provider family has a runtime image (`families`, the revision's images; None: all)."""
    candidates = devices.candidates(idep.selector) if isinstance(devices, DeviceCatalog) else devices.values()
    rt = runtime if runtime is not None else (idep.spec.runtime if idep.spec else None)
    return place(idep.selector, model.requirements, model.source, model.variants, candidates,
                 memory_request(idep.spec.runtime if idep.spec else None), fleet_size=len(devices), runtime=rt,
                 families=families)


@dataclass(frozen=True)
class _Resolved:
    """A deployment whose spec, model and revisions all make sense: what a rollout starts from."""

    spec: InferenceDeploymentSpec
    model: ModelInfo
    policy: ro.Policy
    resolution: rev.Resolution
    spec_hash: str  # the template the spec asks for now


def _resolve(idep: IdepInfo, model: ModelInfo | None, images: RuntimeImages, now: str) -> _Resolved | Blocked:
    """The rollout policy and the revision to roll out, or why nothing new may be placed."""
    blocked = _blocked_reason(idep, model)
    if blocked is not None:
        return blocked
    assert model is not None and idep.spec is not None  # _blocked_reason said so
    try:
        pol = ro.parse_policy(idep.spec.rollout)
    except ro.RolloutSpecError as e:
        return (R.INVALID_SPEC, str(e), False, True)
    overrides = idep.spec.runtime_overrides or ()
    try:
        ov.compile_overrides(overrides)
    except ValueError as e:
        return (R.INVALID_SPEC, str(e), False, True)
    gate = idep.spec.rollout.health_gate if idep.spec.rollout else None
    qgate = gate.quality if gate else None
    for name, value in (("maxPSI", qgate.max_psi if qgate else None),
                        ("maxPSIPrevious", qgate.max_psi_previous if qgate else None)):
        # maxPSIPrevious too: a revision keeps its window on its reference's bins, so without one it keeps none.
        if value is not None and model.quality_profile is None:
            return (R.INVALID_SPEC, f"spec.rollout.healthGate.quality.{name} needs a reference profile: EdgeModel "
                    f"{model.name!r} has no spec.qualityProfile (pack --eval-data writes one)", False, True)
    if idep.spec.site_cache is not None:
        try:
            site_cache.settings(idep.spec.site_cache)
        except ValueError as e:
            return (R.INVALID_SPEC, str(e), False, True)
    template = rev.template_for(model, idep.spec.runtime, idep.spec.fallback, images, qgate, pol.ready_seconds,
                                overrides, site_cache.site_label(idep.spec.site_cache))
    resolution = rev.resolve(rev.history_from_status(idep.status), template,
                             _int(idep.status.get("revision")), _int(idep.status.get("currentRevision")),
                             _rollout_get(idep, "pin"), pol.rollback_to, _rollout_get(idep, "observedRollbackTo"),
                             now)
    if resolution.error:
        return (R.INVALID_SPEC, resolution.error, False, True)
    return _Resolved(idep.spec, model, pol, resolution, template.hash())


def _keep_what_runs(idep: IdepInfo, model: ModelInfo | None, children: Mapping[str, ChildInfo],
                    pods: Mapping[str, Sequence[PodInfo]], online: Callable[[str], bool], blocked: Blocked,
                    now: str) -> IdepPlan:
    """Never tear down a serving fleet because the model is missing or being re-verified: keep
    what runs, place nothing new, and say why."""
    phases = {}
    rows = []
    for dev, existing in sorted(children.items()):
        ph = device_phase(existing, pods.get(dev, ()), online(dev), None, existing.sha256)
        phases[dev] = ph
        rows.append(row(dev, existing.variant, existing.sha256, ph, revision=existing.revision))
    return IdepPlan((), (), fold_status(idep, model, None, phases, rows, blocked, now))


def plan(
    idep: IdepInfo,
    model: ModelInfo | None,
    devices: Mapping[str, DeviceView],
    children: Mapping[str, ChildInfo],
    pods: Mapping[str, Sequence[PodInfo]],
    *,
    images: RuntimeImages,
    now: str,
    now_ts: float | None = None,
    placement: Placement | None = None,
    placement_for: Callable[[ModelInfo, RuntimeSpec, frozenset[str]], Placement] | None = None,
    legacy: Mapping[str, Sequence[ChildInfo]] | None = None,
    memo: PlanMemo | None = None,
) -> IdepPlan:
    """Decide everything for one InferenceDeployment: resolve, place, step the rollout, build the
    workloads, fold the status.

    `devices` is the catalogue by name; `children` (each device's workload, pod_workloads.workloads),
    `pods` (all its Pods of this deployment) and `legacy` (its Deployments of 0.1) are keyed
    by device. A caller
    that cached the placement for unchanged inputs passes it, and the cost is then
    proportional to the devices placed, not to the fleet. `placement_for` places another
    revision's builds (a rollback target) under that revision's runtime settings; it defaults to
    computing it. `images` is the runtime image per provider family the operator has now (the
    spec's own placement, when passed, was made for its families). `memo` (the caller's, one per
    deployment) keeps what each device's unchanged inputs gave last time (core/plan_memo.py).
    """

    def online(dev: str) -> bool:
        d = devices.get(dev)
        return d is not None and d.online

    resolved = _resolve(idep, model, images, now)
    if not isinstance(resolved, _Resolved):
        return _keep_what_runs(idep, model, children, pods, online, resolved, now)
    model = resolved.model
    history = resolved.resolution.history
    target = resolved.resolution.target
    target_rev = rev.find(history, target)
    assert target_rev is not None
    stable = _int(idep.status.get("currentRevision"))
    if rev.find(history, stable) is None:
        stable = None

    # Placement per revision: the spec's own builds are placed once (and cached by the caller);
    # another revision's builds (a rollback target) are placed for that revision's model view.
    own = placement if placement is not None else compute_placement(idep, model, devices,
                                                                    families=images.available)
    place_for = placement_for or (lambda m, rt, fams: compute_placement(idep, m, devices, rt, fams))

    def placement_of(r: rev.Revision) -> Placement:
        return own if r.hash == resolved.spec_hash else place_for(r.template.model_view(resolved.model),
                                                                   r.template.runtime,
                                                                   r.template.runtime_images().available)

    target_placement = placement_of(target_rev)
    placed = {a.device: a for a in target_placement.assignments}
    def labels_of(dev: str) -> Mapping[str, str]:
        d = devices.get(dev)
        return d.labels if d is not None else {}

    inputs = _inputs_by_revision(idep, history, target, stable, children, placement_of, labels_of, memo)
    ts = now_ts if now_ts is not None else (ro.parse_time(now) or 0.0)
    st = _step_rollout(idep, resolved.policy, history, target_rev, stable, placed, devices, children, pods,
                       online, ts, memo)
    if st.failure:
        history = rev.with_outcome(history, target, rev.FAILED, st.failure)
    if st.succeeded:
        history = rev.with_outcome(history, target, rev.SUCCEEDED)
        stable = target

    old = legacy or {}
    w = _workloads(idep.uid, placed, children, pods, old, online, st.targets, inputs, target, ts, memo)
    phases, rows, updated_to_target = w.phases, w.rows, w.updated_to_target
    for dev in sorted(set(children) | set(old)):
        if dev not in placed:
            w.add(pw.remove(pods.get(dev, ()), old.get(dev, ()), idep.uid))

    status = fold_status(idep, model, target_placement, phases, rows, None, now)
    status["updated"] = updated_to_target
    keep = {target} | ({stable} if stable is not None else set()) | {
        ch.revision for ch in children.values() if ch.revision is not None}
    history = rev.prune(history, keep, resolved.policy.history_limit)
    status["revision"] = target
    if stable is not None:
        status["currentRevision"] = stable
    rollout_status = st.state.to_dict()
    if resolved.resolution.pin:
        rollout_status["pin"] = resolved.resolution.pin
    if resolved.resolution.observed_rollback:
        rollout_status["observedRollbackTo"] = resolved.resolution.observed_rollback
    status["rollout"] = rollout_status
    status["revisions"] = [r.to_dict() for r in history]
    rollout_conditions(idep, status, st, target, stable, now)
    requeue = min((t for t in (st.requeue_after, w.requeue_after) if t is not None), default=None)
    return IdepPlan(tuple(w.apply), tuple(w.delete_legacy), status, target_placement, requeue_after=requeue,
                    events=rollout_events(st, target, stable), delete_pods=tuple(w.delete_pods),
                    annotate=tuple(w.annotate))


def _inputs_by_revision(idep: IdepInfo, history: Sequence[rev.Revision], target: int, stable: int | None,
                        children: Mapping[str, ChildInfo], placement_of: Callable[[rev.Revision], Placement],
                        labels_of: Callable[[str], Mapping[str, str]],
                        memo: PlanMemo | None) -> dict[int, dict[str, WorkloadInputs]]:
    """Inputs per device for every revision a device may be asked to serve: the target, the
    stable one, and whatever an unfinished earlier rollout left on some devices."""
    wanted = {target} | ({stable} if stable is not None else set())
    wanted |= {ch.revision for ch in children.values() if ch.revision is not None}
    inputs: dict[int, dict[str, WorkloadInputs]] = {}
    for n in sorted(wanted):
        r = rev.find(history, n)
        if r is not None:
            inputs[n] = workload_inputs(idep, r.template, placement_of(r), n, labels_of, memo)
    return inputs


def _step_rollout(idep: IdepInfo, pol: ro.Policy, history: Sequence[rev.Revision], target_rev: rev.Revision,
                  stable: int | None, placed: Mapping[str, Any], devices: Mapping[str, DeviceView],
                  children: Mapping[str, ChildInfo], pods: Mapping[str, Sequence[PodInfo]],
                  online: Callable[[str], bool], ts: float, memo: PlanMemo | None) -> ro.Step:
    """One step of the wave-by-wave rollout: which revision each placed device serves now."""
    labels = {d: (devices[d].labels if d in devices else {}) for d in placed}
    closed, opens_in = windows.closed_to(pol.windows, labels, ts)
    order = ro.order_devices(labels, pol.order_by)
    bounds = ro.wave_bounds(pol, order, labels)
    if target_rev.reason.startswith("rollback to"):
        bounds = [len(order)]  # an undo by hand goes everywhere at once, as a rollback does
    def state(d: str) -> ro.DeviceRollout:
        ch, dev_pods, on = children[d], pods.get(d, ()), online(d)
        if memo is None:
            return device_rollout(ch, dev_pods, on)
        # Not a function of the clock: kept whatever the Pods' state.
        return memo.cached(("rollout", d), (ch, on, *dev_pods), lambda: device_rollout(ch, dev_pods, on))

    states = {d: state(d) for d in order if d in children}
    usable = frozenset(r.number for r in history if r.outcome not in rev.FINAL_BAD)
    prev = ro.RolloutState.from_dict(idep.status.get("rollout"))
    target_failed = target_rev.outcome in rev.FINAL_BAD
    st = ro.step(pol, prev, target_rev.number, stable, target_failed, order, bounds, states, usable, ts, closed)
    if opens_in is not None:
        # Nothing else wakes the rollout when a window opens: look again then.
        at = opens_in + 1.0
        st = replace(st, requeue_after=at if st.requeue_after is None else min(st.requeue_after, at))
    return st


@dataclass
class _Workloads:
    """What `_workloads` found: the Pods to create, delete and annotate, and each device's phase and row."""

    apply: list[dict[str, Any]] = field(default_factory=list)
    delete_pods: list[PodInfo] = field(default_factory=list)
    delete_legacy: list[ChildInfo] = field(default_factory=list)
    annotate: list[tuple[PodInfo, int]] = field(default_factory=list)
    phases: dict[str, DevicePhase] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    updated_to_target: int = 0
    requeue_after: float | None = None

    def add(self, step: pw.Step, manifest: dict[str, Any] | None = None, revision: int | None = None) -> None:
        if step.create and manifest is not None:
            self.apply.append(manifest)
        self.delete_pods.extend(step.delete_pods)
        self.delete_legacy.extend(step.delete_legacy)
        if step.annotate is not None and revision is not None:
            self.annotate.append((step.annotate, revision))
        if step.requeue_after is not None:
            self.requeue_after = (step.requeue_after if self.requeue_after is None
                                  else min(self.requeue_after, step.requeue_after))


def _workloads(uid: str, placed: Mapping[str, Any], children: Mapping[str, ChildInfo],
               pods: Mapping[str, Sequence[PodInfo]], legacy: Mapping[str, Sequence[ChildInfo]],
               online: Callable[[str], bool], targets: Mapping[str, int],
               inputs: Mapping[int, Mapping[str, WorkloadInputs]], target: int, ts: float,
               memo: PlanMemo | None = None) -> _Workloads:
    """Each placed device's next step towards its revision's Pod, its phase and status row, and how
    many devices already run the target."""
    w = _Workloads()
    for dev in sorted(placed):
        ch = children.get(dev)
        trev = targets.get(dev)
        inp = inputs.get(trev, {}).get(dev) if trev is not None else None
        dev_pods = pods.get(dev, ())
        old = legacy.get(dev, ())
        on = online(dev)
        # Pods first: what moves between two plans, so a changed device is told apart at once.
        key = (len(dev_pods), *dev_pods, trev, target, on, inp, ch, placed[dev], *old)
        d = memo.get(("workload", dev), key) if memo is not None else None
        if d is None:
            d = _device_workload(dev, uid, ch, trev, inp, dev_pods, old, on, placed[dev].node, target, ts)
            # Kept only when it cannot change with the clock and asks for nothing.
            if memo is not None and d.step == _NOTHING and pw.settled(dev_pods):
                memo.keep(("workload", dev), key, d)
        w.add(d.step, d.manifest, d.revision)
        w.updated_to_target += d.updated
        w.phases[dev] = d.phase
        w.rows.append(d.row)
    return w


_NOTHING = pw.Step()


@dataclass(frozen=True)
class _Device:
    """One device's part of `_workloads`."""

    step: pw.Step
    phase: DevicePhase
    row: dict[str, Any]
    manifest: dict[str, Any] | None = None
    revision: int | None = None
    updated: int = 0


def _device_workload(dev: str, uid: str, ch: ChildInfo | None, trev: int | None, inp: WorkloadInputs | None,
                     dev_pods: Sequence[PodInfo], legacy: Sequence[ChildInfo], online: bool, node: str | None,
                     target: int, ts: float) -> _Device:
    if inp is None:
        # Not admitted yet and nothing older to serve (or its build does not fit here): a
        # workload already there is left as it is, never torn down for a wave to come.
        if ch is not None:
            ph = device_phase(ch, dev_pods, online, ch.spec_hash, ch.sha256)
            return _Device(_NOTHING, ph, row(dev, ch.variant, ch.sha256, ph, node=node, revision=ch.revision))
        ph = DevicePhase(WorkloadPhase.WAITING, False, False, "waiting for its rollout wave")
        return _Device(_NOTHING, ph, row(dev, None, None, ph, node=node))
    want_hash = WORKLOAD_HASHES.get(inp)
    # The Pod of the wanted template when it runs, else what runs: a 0.1 Deployment counts
    # until a Pod of the device's own lives.
    ch = pw.workload(dev_pods, uid, ts, prefer=want_hash) or ch
    step = pw.converge(want_hash, inp.revision, surges(inp), dev_pods, legacy, uid, ts)
    ph = device_phase(ch, dev_pods, online, want_hash, inp.artifact.sha256)
    updated = int(trev == target and ch is not None and ch.spec_hash == want_hash)
    r = row(dev, inp.artifact.name, inp.artifact.sha256, ph, precision=inp.artifact.precision, node=inp.node,
            revision=trev, provider=inp.acceleration.provider, acceleration=inp.acceleration.reason)
    return _Device(step, ph, r, child_pod(inp) if step.create else None, inp.revision, updated)


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _rollout_get(idep: IdepInfo, key: str) -> Mapping[str, Any] | None:
    r = idep.status.get("rollout")
    v = r.get(key) if isinstance(r, Mapping) else None
    return v if isinstance(v, Mapping) else None



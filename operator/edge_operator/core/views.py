"""Small immutable summaries of API objects: what the operator keeps in memory.

Pure. The kopf index handlers call these on every event and store only the
result, never the full body: a fleet of 1,000 nodes, devices, workloads and
pods then fits in tens of MiB, and every decision reads the same summary.
Our CRDs' specs are read through edgeai_api's types; a spec that does not parse
leaves `spec` None and `spec_error` naming the field, for the reconcile to report.

Longer than most modules: one summary per kind the operator watches, kept
together because the controller's indexes import them as a set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar, cast

from edge_operator.core import conditions as cond
from edge_operator.core.capabilities import Capabilities, NodeHealth, from_node, node_health, with_overrides
from edge_operator.core.compact_json import interned, shared, shared_labels
from edge_operator.core.manifests import SecretRef
from edge_operator.core.parse_memo import ParseMemo
from edge_operator.core.placement import Artifact, DeviceView, Requirements
from edgeai_api import constants as c
from edgeai_api import edgemodel as em
from edgeai_api import oci
from edgeai_api.edgedevice import CapabilityOverrides, EdgeDeviceSpec
from edgeai_api.enums import ConditionStatus, ConditionType, ModelReason, Precision, SignatureFormat
from edgeai_api.inferencedeployment import InferenceDeploymentSpec
from edgeai_api.serde import ApiTypeError, parse

SpecT = TypeVar("SpecT")


def _meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("metadata") or {}


def _deleting(body: Mapping[str, Any]) -> bool:
    return bool(_meta(body).get("deletionTimestamp"))


# The last spec parsed per object (kind, uid): the spec changes only with the generation, while
# every event brings a new body.
_SPECS: ParseMemo[tuple[Any, str]] = ParseMemo()


def _parse_spec(cls: type[SpecT], raw: object) -> tuple[SpecT | None, str]:
    try:
        return parse(cls, raw, "spec"), ""
    except ApiTypeError as e:
        return None, str(e)


def _spec(cls: type[SpecT], body: Mapping[str, Any]) -> tuple[SpecT | None, str]:
    """The typed spec, or None and the error naming the bad field: a summary is made of any body
    the API server hands over, and the reconcile turns the error into a condition."""
    raw = body.get("spec") or {}
    uid = str(_meta(body).get("uid") or "")
    if not uid:
        return _parse_spec(cls, raw)
    return cast(tuple[SpecT | None, str], _SPECS.get((cls, uid), raw, lambda r: _parse_spec(cls, r)))


# --- Node ----------------------------------------------------------------------


@dataclass(frozen=True)
class NodeInfo:
    name: str
    uid: str
    edge: bool
    labels: Mapping[str, str]
    capabilities: Capabilities
    health: NodeHealth
    deleting: bool = False
    address: str = ""  # the InternalIP: where a site cache on this node is reached (spec.siteCache)

    def placement_key(self) -> tuple[Any, ...]:
        """What placement depends on; a heartbeat alone does not change it."""
        return (self.uid, tuple(sorted(self.labels.items())), self.capabilities, self.deleting)


def node_info(body: Mapping[str, Any]) -> NodeInfo:
    meta = _meta(body)
    labels = shared_labels(meta.get("labels"))
    return NodeInfo(
        name=meta["name"],
        uid=meta.get("uid", ""),
        edge=c.EDGE_NODE_LABEL in labels,
        labels=labels,
        capabilities=from_node(body),
        health=node_health(body),
        deleting=_deleting(body),
        address=_internal_ip(body),
    )


def _internal_ip(body: Mapping[str, Any]) -> str:
    for a in (body.get("status") or {}).get("addresses") or []:
        if a.get("type") == "InternalIP" and a.get("address"):
            return str(a["address"])
    return ""


# --- EdgeDevice ----------------------------------------------------------------


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    uid: str
    node_name: str
    labels: Mapping[str, str]
    overrides: CapabilityOverrides | None
    generation: int
    discovered: bool
    status: Mapping[str, Any] = field(default_factory=dict)
    deleting: bool = False
    resource_version: str = ""
    spec: EdgeDeviceSpec | None = None  # None when the spec does not parse: see spec_error
    spec_error: str = ""

    def placement_key(self) -> tuple[Any, ...]:
        return (self.node_name, tuple(sorted(self.labels.items())), self.overrides, self.deleting)


def device_info(body: Mapping[str, Any]) -> DeviceInfo:
    meta = _meta(body)
    spec, error = _spec(EdgeDeviceSpec, body)
    labels = shared_labels(meta.get("labels"))
    return DeviceInfo(
        name=meta["name"],
        uid=meta.get("uid", ""),
        # An unreadable spec still names its node when it can: the device stays tied to it.
        node_name=(spec.node_name if spec else str((body.get("spec") or {}).get("nodeName") or "")) or meta["name"],
        labels=labels,
        overrides=spec.capabilities if spec else None,
        generation=int(meta.get("generation") or 0),
        discovered=labels.get(c.L_DISCOVERED) == "true",
        status=shared(body.get("status") or {}),
        deleting=_deleting(body),
        resource_version=str(meta.get("resourceVersion", "")),
        spec=spec,
        spec_error=error,
    )


# Labels the operator itself puts on discovered devices; not meant for selectors.
_BOOKKEEPING_LABELS = frozenset({c.L_MANAGED_BY, c.L_PART_OF, c.L_DISCOVERED})


def device_view(dev: DeviceInfo, node: NodeInfo | None) -> DeviceView:
    """Join an EdgeDevice with its Node: Node labels, overlaid by the EdgeDevice's own labels."""
    labels: dict[str, str] = dict(node.labels) if node else {}
    labels.update({k: v for k, v in dev.labels.items() if k not in _BOOKKEEPING_LABELS})
    base = node.capabilities if node else Capabilities()
    return DeviceView(
        name=dev.name,
        node_name=dev.node_name,
        labels=labels,
        capabilities=with_overrides(base, dev.overrides),
        node_exists=node is not None and not node.deleting,
        online=node is not None and node.health.online,
        deleting=dev.deleting,
    )


# --- EdgeModel -----------------------------------------------------------------


class ModelState(StrEnum):
    """The Verified condition, judged for the current generation and source digest only."""

    VERIFIED = "Verified"
    FAILED = "Failed"
    PENDING = "Pending"


@dataclass(frozen=True)
class ModelInfo:
    namespace: str
    name: str
    uid: str
    generation: int
    version: str | None
    source: Artifact
    variants: tuple[Artifact, ...]
    requirements: Requirements
    public_key: SecretRef | None
    decryption_key: SecretRef | None
    spec: em.EdgeModelSpec | None  # None when the spec does not parse: see spec_error
    status: Mapping[str, Any]
    state: ModelState
    reason: str
    message: str
    deleting: bool = False
    reverify: str | None = None  # the pending or last re-verification request (annotation value)
    spec_error: str = ""
    # spec.qualityProfile as a build-like artifact: fetched, digest- and signature-checked on the device
    quality_profile: Artifact | None = None

    @property
    def verified(self) -> bool:
        return self.state == ModelState.VERIFIED

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def placement_key(self) -> tuple[Any, ...]:
        return (self.uid, self.generation, self.state, self.source, self.variants, self.requirements,
                self.public_key, self.decryption_key, self.version, self.deleting, self.quality_profile)


def _secret_ref(ref: em.SecretKeyRef | None, default_key: str) -> SecretRef | None:
    if ref is None or not ref.name:
        return None
    return SecretRef(ref.name, ref.key or default_key)


def model_info(body: Mapping[str, Any]) -> ModelInfo:
    meta = _meta(body)
    spec, error = _spec(em.EdgeModelSpec, body)
    status: Mapping[str, Any] = body.get("status") or {}
    generation = int(meta.get("generation") or 0)
    current = status.get("observedGeneration") == generation
    verified_cond = cond.find(status.get("conditions"), ConditionType.VERIFIED) if current else None

    seen_variants = {v.get("name"): v for v in status.get("variants") or []} if current else {}
    src = spec.source if spec else em.ModelSource(uri="", sha256="")
    sig = spec.signature if spec else None
    openssf = sig is not None and sig.format == SignatureFormat.OPENSSF
    bundle = sig.bundle if sig is not None and openssf else None
    source_ok = (
        spec is not None
        and verified_cond is not None
        and verified_cond.get("status") == ConditionStatus.TRUE
        and status.get("sha256") == src.sha256
    )
    reg = spec.registry if spec else None
    pull_secret = reg.pull_secret_ref.name if reg is not None and reg.pull_secret_ref is not None else None
    plain_http = bool(reg is not None and reg.plain_http)

    def access(uri: str) -> dict[str, Any]:
        # Only an oci:// build carries them: an https build's workload stays as it was.
        return {"pull_secret": pull_secret, "plain_http": plain_http} if oci.is_oci(uri) else {}

    source = Artifact(
        name=em.SOURCE_BUILD,
        precision=Precision.FP32.value,
        uri=src.uri,
        sha256=src.sha256,
        size=src.size,
        signature=sig.value if sig is not None and not openssf else None,
        bundle=bundle,
        accelerators=("cpu",),
        verified=source_ok,
        **access(src.uri),
    )
    variants = []
    for v in (spec.variants if spec else None) or ():
        seen = seen_variants.get(v.name) or {}
        ok = bool(seen.get("verified")) and seen.get("sha256") == v.sha256
        variants.append(
            Artifact(
                name=v.name,
                precision=v.precision.value,
                uri=v.uri,
                sha256=v.sha256,
                size=v.size,
                signature=None if openssf else v.signature,
                bundle=bundle,
                accelerators=tuple(a.value for a in v.accelerators),
                verified=ok,
                reason="" if ok else str(seen.get("reason") or "not verified yet"),
                **access(v.uri),
            )
        )
    qp = spec.quality_profile if spec else None
    quality_profile = None if qp is None else Artifact(
        name=em.QUALITY_PROFILE_BUILD, precision="", uri=qp.uri, sha256=qp.sha256, size=qp.size,
        signature=None if openssf else qp.signature, bundle=bundle,
    )
    state: ModelState
    reason: str
    if spec is None:
        # Never place builds read from a spec we cannot read, whatever an older status says.
        state, reason, message = ModelState.FAILED, ModelReason.INVALID_SPEC, error
    elif source_ok:
        state, reason, message = ModelState.VERIFIED, ModelReason.VERIFIED, (verified_cond or {}).get("message", "")
    elif verified_cond is not None and verified_cond.get("status") == ConditionStatus.FALSE:
        state = ModelState.FAILED
        reason = str(verified_cond.get("reason") or ModelReason.FAILED)
        message = str(verified_cond.get("message") or "")
    else:
        state, reason, message = (ModelState.PENDING, ModelReason.VERIFYING,
                                  "the operator has not verified this generation yet")
    enc = spec.encryption if spec else None
    # The Secret mounted for verification: a public key, or (openssf certificate mode) trust roots;
    # the runtime tells them apart by their PEM labels.
    key_ref = (_secret_ref(sig.public_key_secret_ref, em.DEFAULT_PUBLIC_KEY_KEY)
               or _secret_ref(sig.certificate_chain_secret_ref, em.DEFAULT_CERTIFICATE_CHAIN_KEY)) if sig else None
    return ModelInfo(
        namespace=meta.get("namespace", ""),
        name=meta["name"],
        uid=meta.get("uid", ""),
        generation=generation,
        version=spec.version if spec else None,
        source=source,
        variants=tuple(variants),
        requirements=Requirements.from_spec(spec.requirements if spec else None),
        public_key=key_ref,
        decryption_key=_secret_ref(enc.key_secret_ref if enc else None, em.DEFAULT_DECRYPTION_KEY_KEY),
        spec=spec,
        status=status,
        state=state,
        reason=reason,
        message=message,
        deleting=_deleting(body),
        reverify=(meta.get("annotations") or {}).get(c.A_REVERIFY) or None,
        spec_error=error,
        quality_profile=quality_profile,
    )


# --- InferenceDeployment ------------------------------------------------------------


@dataclass(frozen=True)
class IdepInfo:
    namespace: str
    name: str
    uid: str
    generation: int
    model: str
    # spec.deviceSelector as the API server has it: the controller's selector index and
    # selectors.validate_selector (whose messages name the field) read the mapping.
    selector: Mapping[str, Any] | None
    spec: InferenceDeploymentSpec | None  # None when the spec does not parse: see spec_error
    status: Mapping[str, Any]
    deleting: bool = False
    resource_version: str = ""
    spec_error: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


def idep_info(body: Mapping[str, Any]) -> IdepInfo:
    meta = _meta(body)
    raw = body.get("spec") or {}
    spec, error = _spec(InferenceDeploymentSpec, body)
    selector = raw.get("deviceSelector")
    return IdepInfo(
        namespace=meta.get("namespace", ""),
        name=meta["name"],
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation") or 0),
        model=spec.model if spec else str(raw.get("model", "")),
        selector=shared(selector) if isinstance(selector, Mapping) else None,
        spec=spec,
        status=shared(body.get("status") or {}),
        deleting=_deleting(body),
        resource_version=str(meta.get("resourceVersion", "")),
        spec_error=error,
    )


# --- children: Deployments and their Pods -------------------------------------------------


@dataclass(frozen=True)
class ChildInfo:
    namespace: str
    name: str
    uid: str
    owner: str  # InferenceDeployment name (from the controller ownerReference)
    owner_uid: str
    device: str
    model: str
    spec_hash: str | None
    sha256: str | None
    variant: str | None
    generation: int
    observed_generation: int
    replicas: int
    updated: int
    ready: int
    available: int
    progress_failed: bool
    message: str
    deleting: bool = False
    revision: int | None = None  # the InferenceDeployment revision it serves (edgeai.io/revision)

    @property
    def rolled_out(self) -> bool:
        """The current template runs, alone, and is available."""
        return (
            self.observed_generation >= self.generation
            and self.updated >= 1
            and self.replicas == self.updated
            and self.available >= 1
        )


def _controller_owner(meta: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == kind and ref.get("controller"):
            return ref  # type: ignore[no-any-return]
    return None


def child_info(body: Mapping[str, Any]) -> ChildInfo | None:
    """Summary of a Deployment the operator owns; None for one it does not."""
    meta = _meta(body)
    owner = _controller_owner(meta, c.KIND_IDEP)
    if owner is None:
        return None
    ann = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    if labels.get(c.L_SITE_CACHE):
        return None  # a site cache (core/site_cache.py), not a device's workload
    st = body.get("status") or {}
    failed, message = False, ""
    for cnd in st.get("conditions") or []:
        stalled = cnd.get("type") == "Progressing" and cnd.get("status") == "False"
        if stalled or (cnd.get("type") == "ReplicaFailure" and cnd.get("status") == "True"):
            failed, message = True, f"{cnd.get('reason')}: {cnd.get('message', '')}"
    return ChildInfo(
        namespace=meta.get("namespace", ""),
        name=meta["name"],
        uid=str(meta.get("uid", "")),
        owner=str(owner.get("name")),
        owner_uid=str(owner.get("uid")),
        device=str(ann.get(c.A_DEVICE) or labels.get(c.L_DEVICE, "")),
        model=str(ann.get(c.A_MODEL) or labels.get(c.L_MODEL, "")),
        spec_hash=ann.get(c.A_SPEC_HASH),
        sha256=ann.get(c.A_SHA256),
        variant=ann.get(c.A_VARIANT),
        generation=int(meta.get("generation") or 0),
        observed_generation=int(st.get("observedGeneration") or 0),
        replicas=int(st.get("replicas") or 0),
        updated=int(st.get("updatedReplicas") or 0),
        ready=int(st.get("readyReplicas") or 0),
        available=int(st.get("availableReplicas") or 0),
        progress_failed=failed,
        message=message,
        deleting=_deleting(body),
        revision=_revision(ann.get(c.A_REVISION)),
    )


def _revision(v: Any) -> int | None:
    try:
        n = int(v)
    except (TypeError, ValueError):
        return None
    return n if n >= 1 else None


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    idep: str
    device: str
    sha256: str | None
    node: str | None
    phase: str
    ready: bool
    restarts: int
    reason: str  # the most telling waiting/terminated reason, "" if none
    message: str
    init_exit_code: int | None
    init_running: bool
    created: str
    deleting: bool = False
    init_name: str = "fetch"  # the init container that failed, when one did
    server_exit_code: int | None = None  # the model server's last non-zero exit code, if any
    server_message: str = ""  # and its termination message
    uid: str = ""
    # The InferenceDeployment that owns it as controller: a device's model server the operator made. ""
    # for a pod of a ReplicaSet (a workload of an operator of 0.1, being replaced: core/pod_workloads).
    owner_uid: str = ""
    spec_hash: str | None = None  # edgeai.io/spec-hash of the template it was made from (owned pods)
    revision: int | None = None  # the InferenceDeployment revision it serves (owned pods)
    variant: str | None = None
    model: str = ""

    @property
    def owned(self) -> bool:
        return bool(self.owner_uid)

    @property
    def terminal(self) -> bool:
        """Failed or Succeeded: with restartPolicy Always, evicted or rejected by the kubelet; never runs again."""
        return self.phase in ("Failed", "Succeeded")


# The last few Pods summarised, by (uid, resourceVersion): one watch event is summarised by both pod
# indexes and the event hook, three times the same body (a resourceVersion names one content).
_RECENT_PODS: dict[tuple[str, str], PodInfo] = {}
_RECENT_PODS_LIMIT = 64


def pod_info(body: Mapping[str, Any]) -> PodInfo:
    meta = _meta(body)
    key = (str(meta.get("uid") or ""), str(meta.get("resourceVersion") or ""))
    if key[0] and key[1]:
        hit = _RECENT_PODS.get(key)
        if hit is None:
            hit = _pod_info(body, meta)
            if len(_RECENT_PODS) >= _RECENT_PODS_LIMIT:
                del _RECENT_PODS[next(iter(_RECENT_PODS))]
            _RECENT_PODS[key] = hit
        return hit
    return _pod_info(body, meta)


def _pod_info(body: Mapping[str, Any], meta: Mapping[str, Any]) -> PodInfo:
    labels = meta.get("labels") or {}
    ann = meta.get("annotations") or {}
    st = body.get("status") or {}
    ready = any(
        x.get("type") == "Ready" and x.get("status") == "True" for x in st.get("conditions") or []
    )
    reason, message = "", ""
    init_exit: int | None = None
    init_running = False
    init_name = "fetch"
    for cs in st.get("initContainerStatuses") or []:
        state = cs.get("state") or {}
        last = cs.get("lastState") or {}
        term = state.get("terminated") or last.get("terminated")
        if term and term.get("exitCode", 0) != 0 and init_exit is None:
            init_exit = int(term["exitCode"])
            init_name = str(cs.get("name") or init_name)
            reason, message = str(term.get("reason") or "Error"), str(term.get("message") or "")
        if state.get("running"):
            init_running = True
        if state.get("waiting") and not reason:
            w = state["waiting"]
            if w.get("reason") not in (None, "PodInitializing"):
                reason, message = str(w.get("reason")), str(w.get("message") or "")
    restarts = 0
    server_exit: int | None = None
    server_message = ""
    for cs in st.get("containerStatuses") or []:
        restarts += int(cs.get("restartCount") or 0)
        term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if term and term.get("exitCode", 0) != 0 and cs.get("name") == "server":
            server_exit, server_message = int(term["exitCode"]), str(term.get("message") or "")
        w = (cs.get("state") or {}).get("waiting")
        if w and w.get("reason") not in (None, "ContainerCreating", "PodInitializing") and not reason:
            # Why it last exited (its last log lines: FallbackToLogsOnError) says more than "back-off 10s".
            term = (cs.get("lastState") or {}).get("terminated") or {}
            reason, message = str(w.get("reason")), str(term.get("message") or w.get("message") or "")
    if not reason:
        for x in st.get("conditions") or []:
            if x.get("type") == "PodScheduled" and x.get("status") == "False":
                reason, message = str(x.get("reason") or "Unschedulable"), str(x.get("message") or "")
    # What every Pod of a deployment repeats (namespace, owner, build digest, phase) is one string per
    # process: 10,000 Pod summaries otherwise hold 10,000 copies of each.
    return PodInfo(
        namespace=interned(meta.get("namespace", "")),
        name=meta["name"],
        idep=interned(str(ann.get(c.A_IDEP) or labels.get(c.L_IDEP, ""))),
        device=str(ann.get(c.A_DEVICE) or labels.get(c.L_DEVICE, "")),
        sha256=interned(ann.get(c.A_SHA256)),
        node=(body.get("spec") or {}).get("nodeName"),
        phase=interned(str(st.get("phase") or "Pending")),
        ready=ready,
        restarts=restarts,
        reason=reason,
        message=message[:300],
        init_exit_code=init_exit,
        init_running=init_running,
        init_name=init_name,
        server_exit_code=server_exit,
        server_message=server_message.strip()[:300],
        created=str(meta.get("creationTimestamp") or ""),
        deleting=_deleting(body),
        uid=str(meta.get("uid", "")),
        owner_uid=str(owner.get("uid") or "") if (owner := _controller_owner(meta, c.KIND_IDEP)) else "",
        spec_hash=interned(ann.get(c.A_SPEC_HASH)),
        revision=_revision(ann.get(c.A_REVISION)),
        variant=interned(ann.get(c.A_VARIANT)),
        model=interned(str(ann.get(c.A_MODEL) or labels.get(c.L_MODEL, ""))),
    )

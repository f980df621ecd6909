"""Status of EdgeModels and EdgeDevices, folded from what was observed. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_operator.core import conditions as cond
from edge_operator.core.views import ChildInfo, DeviceInfo, ModelInfo, NodeInfo, device_view
from edgeai_api.edgemodel import SOURCE_BUILD
from edgeai_api.enums import (
    ConditionStatus,
    ConditionType,
    DeviceReason,
    ModelPhase,
    ModelReason,
    ServingPhase,
)

# Failures that may heal by themselves: the operator retries these with backoff.
TRANSIENT_REASONS = frozenset({ModelReason.UNREACHABLE, ModelReason.SECRET_NOT_FOUND, ModelReason.KEY_NOT_FOUND})


@dataclass(frozen=True)
class ArtifactCheck:
    """The outcome of streaming and checking one build."""

    name: str
    ok: bool
    sha256: str | None = None  # the digest actually seen, when the bytes were read to the end
    size: int | None = None
    reason: str = ModelReason.VERIFIED
    message: str = ""
    manifest: str | None = None  # oci:// builds: the manifest digest the check resolved

    @property
    def transient(self) -> bool:
        return not self.ok and self.reason in TRANSIENT_REASONS


@dataclass(frozen=True)
class ModelCheck:
    source: ArtifactCheck
    variants: tuple[ArtifactCheck, ...] = ()
    inputs: tuple[Mapping[str, Any], ...] | None = None
    outputs: tuple[Mapping[str, Any], ...] | None = None
    signed: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def transient(self) -> bool:
        return self.source.transient or any(v.transient for v in self.variants)


def needs_verification(m: ModelInfo) -> bool:
    """Whether the model's current generation still has to be (re)checked."""
    st = m.status
    if m.deleting:
        return False
    if st.get("observedGeneration") != m.generation:
        return True
    if reverify_requested(m):
        return True
    vc = cond.find(st.get("conditions"), ConditionType.VERIFIED)
    if vc is None or vc.get("status") not in (ConditionStatus.TRUE, ConditionStatus.FALSE):
        return True
    if m.spec_error:
        # Checked once per generation: the check reports the spec as it is, nothing to fetch.
        return vc.get("reason") != ModelReason.INVALID_SPEC
    if vc.get("status") == ConditionStatus.FALSE:
        return vc.get("reason") in TRANSIENT_REASONS
    return any(not v.get("verified") and v.get("reason") in TRANSIENT_REASONS for v in st.get("variants") or [])


def reverify_requested(m: ModelInfo) -> bool:
    """A person asked for a fresh check (annotation) that the operator has not answered yet."""
    return m.reverify is not None and m.status.get("observedReverify") != m.reverify


def previously_verified(m: ModelInfo) -> dict[str, str]:
    """Builds verified for this generation already: name -> sha256. A retry skips them; a
    requested re-verification checks everything again."""
    if m.status.get("observedGeneration") != m.generation or reverify_requested(m):
        return {}
    out = {}
    if m.source.verified:
        out[SOURCE_BUILD] = m.source.sha256
    for v in m.variants:
        if v.verified:
            out[v.name] = v.sha256
    return out


def invalid_spec_check(m: ModelInfo) -> ModelCheck | None:
    """The check's outcome for a spec that does not parse (nothing to fetch), else None."""
    if not m.spec_error:
        return None
    return ModelCheck(ArtifactCheck(SOURCE_BUILD, False, reason=ModelReason.INVALID_SPEC, message=m.spec_error))


def verifying_status(m: ModelInfo, now: str) -> dict[str, Any]:
    msg = f"streaming and hashing {m.source.uri}"
    conds = [cond.make(ConditionType.VERIFIED, ConditionStatus.UNKNOWN, ModelReason.VERIFYING, msg, m.generation),
             cond.make(ConditionType.READY, ConditionStatus.UNKNOWN, ModelReason.VERIFYING, msg, m.generation)]
    return {
        "observedGeneration": m.generation,
        "phase": ModelPhase.VERIFYING,
        "conditions": cond.merge(m.status.get("conditions"), conds, now),
    }


def model_status(m: ModelInfo, check: ModelCheck, now: str) -> dict[str, Any]:
    src = check.source
    gen = m.generation
    status: dict[str, Any] = {"observedGeneration": gen}
    if m.reverify is not None:
        status["observedReverify"] = m.reverify  # this check answers that request
    if src.sha256:
        status["sha256"] = src.sha256
        status["shortDigest"] = src.sha256[:12]
    if src.size is not None:
        status["size"] = src.size
    if src.manifest:
        status["manifestDigest"] = src.manifest
    if check.inputs is not None:
        status["inputs"] = [dict(x) for x in check.inputs]
    if check.outputs is not None:
        status["outputs"] = [dict(x) for x in check.outputs]
    status["variants"] = [
        {k: v for k, v in {
            "name": v.name, "verified": v.ok, "sha256": v.sha256, "size": v.size,
            "reason": v.reason, "message": v.message or None, "manifestDigest": v.manifest,
        }.items() if v is not None}
        for v in check.variants
    ]
    if src.ok:
        ok_variants = sum(1 for v in check.variants if v.ok)
        msg = f"sha256 {src.sha256} matches ({src.size} bytes)"
        if check.signed:
            msg += ", signature valid"
        if check.variants:
            msg += f"; {ok_variants}/{len(check.variants)} variants verified"
        for n in check.notes:
            msg += f"; {n}"
        status["phase"] = ModelPhase.VERIFIED
        status["verifiedAt"] = now
        conds = [cond.make(ConditionType.VERIFIED, True, ModelReason.VERIFIED, msg, gen),
                 cond.make(ConditionType.READY, True, ModelReason.VERIFIED, msg, gen)]
    else:
        status["phase"] = ModelPhase.RETRYING if src.transient else ModelPhase.FAILED
        conds = [cond.make(ConditionType.VERIFIED, False, src.reason, src.message, gen),
                 cond.make(ConditionType.READY, False, src.reason, src.message, gen)]
        prev_at = m.status.get("verifiedAt")
        if prev_at:
            status["verifiedAt"] = None  # a failed check voids the earlier verification
    status["conditions"] = cond.merge(m.status.get("conditions"), conds, now)
    return status


def serving_rows(children: Iterable[ChildInfo], online: bool) -> list[dict[str, Any]]:
    rows = []
    for ch in sorted(children, key=lambda x: (x.namespace, x.owner)):
        if ch.deleting:
            continue
        if not online:
            phase = ServingPhase.OFFLINE
        elif ch.rolled_out and ch.ready >= 1:
            phase = ServingPhase.READY
        elif ch.progress_failed:
            phase = ServingPhase.FAILED
        else:
            phase = ServingPhase.PROGRESSING
        row = {"inferenceDeployment": f"{ch.namespace}/{ch.owner}", "deployment": ch.name,
               "model": ch.model, "phase": phase}
        if ch.variant:
            row["variant"] = ch.variant
        if ch.sha256:
            row["sha256"] = ch.sha256
        rows.append(row)
    return rows


def device_status(
    dev: DeviceInfo,
    node: NodeInfo | None,
    children: Sequence[ChildInfo],
    now: str,
    heartbeat_resolution_s: float,
) -> dict[str, Any]:
    """EdgeDevice status: online from the Node's Ready condition, effective capabilities, serving."""
    view = device_view(dev, node)
    old = dev.status
    online = view.online
    hb = node.health.last_heartbeat if node else None
    old_hb = old.get("lastHeartbeat")
    # A heartbeat alone is written at most once per resolution: 1,000 nodes heartbeating every
    # 10 seconds must not turn into 100 status writes a second.
    if old.get("online") == online and old_hb and hb:
        t_new, t_old = cond.parse_time(hb), cond.parse_time(old_hb)
        if t_new and t_old and (t_new - t_old).total_seconds() < heartbeat_resolution_s:
            hb = old_hb
    if node is None:
        online_c = cond.make(ConditionType.ONLINE, False, DeviceReason.NODE_NOT_FOUND,
                             f"node {dev.node_name!r} does not exist", dev.generation)
    else:
        h = node.health
        online_c = cond.make(ConditionType.ONLINE, h.online, h.reason, h.message or ("node is Ready" if h.online else
                             "node is not Ready"), dev.generation)
    ready_c = dict(online_c, type=ConditionType.READY)
    if dev.spec_error:
        # The overrides were not applied: the device serves on what was discovered, but says why.
        ready_c = cond.make(ConditionType.READY, False, DeviceReason.INVALID_SPEC, dev.spec_error, dev.generation)
    serving = serving_rows(children, online)
    status: dict[str, Any] = {
        "observedGeneration": dev.generation,
        "nodeName": dev.node_name,
        "online": online,
        "capabilities": view.capabilities.to_status(),
        "serving": serving,
        "servingCount": len(serving),
        "conditions": cond.merge(old.get("conditions"), [online_c, ready_c], now),
    }
    if hb:
        status["lastHeartbeat"] = hb
    return status

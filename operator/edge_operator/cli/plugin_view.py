"""What `kubectl edgeai` shows, as pure functions over the objects' JSON.

No I/O and no Kubernetes client here: plugin.py reads the objects and prints
what these functions return, so every table and verdict is unit-tested on
plain dicts.

Longer than most modules: one section per command (fleet, rollout, model verify,
undo), each small, sharing the table and condition helpers at the top.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from edge_operator.core import rollout as ro
from edge_operator.core.conditions import parse_time
from edge_operator.core.selectors import describe
from edgeai_api.edgemodel import EdgeModelSpec
from edgeai_api.enums import (
    ConditionStatus,
    ConditionType,
    RevisionOutcome,
    RolloutPhase,
    ServingPhase,
    WorkloadPhase,
)
from edgeai_api.inferencedeployment import InferenceDeploymentSpec
from edgeai_api.serde import ApiTypeError, parse, serialize

Obj = Mapping[str, Any]
SpecT = TypeVar("SpecT")

DIGEST_PREFIX = 12  # like a short git hash: enough to tell builds apart in a table
NONE = "-"


# --------------------------------------------------------------------------- helpers


def get_path(obj: Any, *path: str) -> Any:
    """obj[path[0]][path[1]]..., or None where any step is missing or not a mapping."""
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _list(obj: Any, *path: str) -> list[Any]:
    got = get_path(obj, *path)
    return list(got) if isinstance(got, list) else []


def typed_spec(cls: type[SpecT], obj: Obj) -> tuple[SpecT | None, str]:
    """The object's spec through the CRD types, or None and what is wrong with it. Statuses stay
    read field by field: they may come from an older operator, and a table shows what it can."""
    try:
        return parse(cls, get_path(obj, "spec") or {}, "spec"), ""
    except ApiTypeError as e:
        return None, str(e)


def condition(obj: Obj, ctype: str) -> Mapping[str, Any] | None:
    for c in _list(obj, "status", "conditions"):
        if isinstance(c, Mapping) and c.get("type") == ctype:
            return c
    return None


def short_digest(sha256: Any) -> str:
    if not isinstance(sha256, str) or not sha256:
        return NONE
    return sha256.removeprefix("sha256:")[:DIGEST_PREFIX]


def _online(device: Obj) -> str:
    online = get_path(device, "status", "online")
    if online is True:
        return "yes"
    if online is False:
        return "no"
    return "unknown"


def _split_ref(ref: str, default_ns: str | None) -> tuple[str | None, str]:
    """A deployment reference in EdgeDevice.status.serving: "ns/name" or a bare name."""
    if "/" in ref:
        ns, name = ref.split("/", 1)
        return ns, name
    return default_ns, ref


# --------------------------------------------------------------------------- fleet


@dataclass(frozen=True)
class FleetRow:
    device: str
    online: str
    deployment: str  # "namespace/name", or "-" for an idle device
    model: str
    variant: str
    digest: str  # short prefix for the table; the full digest is in -o json
    phase: str
    site: str
    arch: str
    accelerators: str
    sha256: str


def fleet_rows(devices: Iterable[Obj], deployments: Iterable[Obj], namespace: str | None = None,
               show_idle: bool = True) -> list[FleetRow]:
    """One row per (device, deployment) the device serves or is placed for, plus idle devices.

    EdgeDevice.status.serving says what a device actually serves; an
    InferenceDeployment's status.devices fills in placements the device has not
    reported yet (e.g. still pulling). With `namespace`, only deployments in it.
    """
    idx: dict[tuple[str, str], dict[str, str]] = {}
    dev_by_name: dict[str, Obj] = {}
    for d in devices:
        name = str(get_path(d, "metadata", "name") or "")
        if name:
            dev_by_name[name] = d

    def keep(ns: str | None) -> bool:
        return namespace is None or ns == namespace

    for name, d in dev_by_name.items():
        for s in _list(d, "status", "serving"):
            if not isinstance(s, Mapping):
                continue
            # "inferenceDeployment" is "ns/name"; older reports had only "deployment"
            ns, dep = _split_ref(str(s.get("inferenceDeployment") or s.get("deployment") or NONE), None)
            if not keep(ns) and ns is not None:
                continue
            if namespace is not None and ns is None:
                continue  # cannot tell which namespace a bare name is in: the deployment's own entry will show it
            ref = f"{ns}/{dep}" if ns else dep
            idx[(name, ref)] = {
                "model": str(s.get("model") or NONE), "variant": str(s.get("variant") or NONE),
                "sha256": str(s.get("sha256") or ""), "phase": str(s.get("phase") or NONE),
            }

    for idep in deployments:
        ns = get_path(idep, "metadata", "namespace")
        if not keep(ns):
            continue
        ref = f"{ns}/{get_path(idep, 'metadata', 'name')}"
        spec, _ = typed_spec(InferenceDeploymentSpec, idep)
        model = spec.model if spec is not None else str(get_path(idep, "spec", "model") or NONE)
        for e in _list(idep, "status", "devices"):
            if not isinstance(e, Mapping) or not e.get("device"):
                continue
            key = (str(e["device"]), ref)
            bare = (str(e["device"]), str(get_path(idep, "metadata", "name")))
            if key in idx or bare in idx:
                row = idx.pop(bare, None) or idx[key]
                # the device's own report wins; the deployment only fills its gaps
                for k, v in (("model", model), ("variant", e.get("variant")), ("sha256", e.get("sha256"))):
                    if row.get(k) in (None, "", NONE) and v:
                        row[k] = str(v)
                idx[key] = row
            else:
                idx[key] = {"model": model, "variant": str(e.get("variant") or NONE),
                            "sha256": str(e.get("sha256") or ""), "phase": str(e.get("phase") or WorkloadPhase.PENDING)}

    rows: list[FleetRow] = []
    served = {dev for dev, _ in idx}
    for (dev, ref), r in idx.items():
        rows.append(_row(dev, dev_by_name.get(dev), ref, r))
    if show_idle:
        for dev, d in dev_by_name.items():
            if dev not in served:
                rows.append(_row(dev, d, NONE, {"model": NONE, "variant": NONE, "sha256": "", "phase": NONE}))
    rows.sort(key=lambda r: (r.device, r.deployment))
    return rows


def _row(dev: str, d: Obj | None, ref: str, r: Mapping[str, str]) -> FleetRow:
    caps: Any = get_path(d, "status", "capabilities") if d is not None else None
    accels = get_path(caps, "accelerators")
    return FleetRow(
        device=dev,
        online=_online(d) if d is not None else "unknown",
        deployment=ref, model=r["model"], variant=r["variant"], digest=short_digest(r["sha256"]),
        phase=r["phase"],
        site=str(get_path(caps, "site") or NONE), arch=str(get_path(caps, "arch") or NONE),
        accelerators=",".join(str(a) for a in accels) if isinstance(accels, list) and accels else NONE,
        sha256=r["sha256"] or "",
    )


FLEET_COLUMNS = ("DEVICE", "ONLINE", "DEPLOYMENT", "MODEL", "VARIANT", "DIGEST", "PHASE")
FLEET_WIDE = (*FLEET_COLUMNS, "SITE", "ARCH", "ACCELERATORS")


def fleet_table(rows: Sequence[FleetRow], wide: bool = False) -> str:
    cols = FLEET_WIDE if wide else FLEET_COLUMNS
    data = [[getattr(r, c.lower()) for c in cols] for r in rows]
    return table(cols, data)


def fleet_summary(rows: Sequence[FleetRow]) -> str:
    devices: dict[str, str] = {r.device: r.online for r in rows}
    online = sum(1 for v in devices.values() if v == "yes")
    serving = [r for r in rows if r.deployment != NONE]
    # Ready in either role (a device's serving row, a deployment's device row); the other two
    # are what earlier operators wrote.
    ready = sum(1 for r in serving if r.phase in (ServingPhase.READY, WorkloadPhase.READY, "Running", "Serving"))
    return (f"{len(devices)} device(s), {online} online, {len(serving)} placement(s), "
            f"{ready} serving")


def fleet_json(rows: Sequence[FleetRow]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """kubectl's plain table: left-aligned columns, three spaces apart."""
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


# --------------------------------------------------------------------------- rollout


@dataclass(frozen=True)
class RolloutVerdict:
    state: str  # "complete" | "progressing" | "paused" | "failed" | "pending"
    message: str

    @property
    def done(self) -> bool:
        return self.state in ("complete", "failed", "paused")


def rollout_verdict(idep: Obj) -> RolloutVerdict:
    """The one-line answer to "is my rollout done?", from status only (what the operator observed)."""
    name = get_path(idep, "metadata", "name")
    gen = get_path(idep, "metadata", "generation")
    observed = get_path(idep, "status", "observedGeneration")
    if isinstance(gen, int) and (not isinstance(observed, int) or observed < gen):
        return RolloutVerdict("pending", f"waiting for the operator to observe generation {gen} of {name!r} "
                                         f"(observed: {observed if observed is not None else 'none'})")
    degraded = condition(idep, ConditionType.DEGRADED) or {}
    ready = condition(idep, ConditionType.READY)
    progressing = condition(idep, ConditionType.PROGRESSING)
    is_ready = ready is not None and ready.get("status") == ConditionStatus.TRUE
    is_progressing = progressing is not None and progressing.get("status") == ConditionStatus.TRUE
    is_degraded = degraded.get("status") == ConditionStatus.TRUE
    counts = rollout_counts(idep)
    phase = get_path(idep, "status", "rollout", "phase")
    if phase in (RolloutPhase.ROLLED_BACK, RolloutPhase.HALTED):
        # The fleet may well be Ready, on the old revision: the rollout itself failed.
        why = get_path(idep, "status", "rollout", "message") or degraded.get("message") or ""
        verb = "rolled back" if phase == RolloutPhase.ROLLED_BACK else "halted"
        return RolloutVerdict("failed", f"rollout of {name!r} failed and was {verb}: {why}".rstrip(": "))
    if is_degraded and not is_ready and not is_progressing:
        # Nothing is moving and it is not healthy: waiting longer will not help.
        return RolloutVerdict("failed", f"rollout of {name!r} failed: {degraded.get('reason') or 'Degraded'}: "
                                        f"{degraded.get('message') or ''}".rstrip(": "))
    spec, _ = typed_spec(InferenceDeploymentSpec, idep)
    if spec is not None and spec.rollout is not None and spec.rollout.paused:
        return RolloutVerdict("paused", f"rollout of {name!r} is paused ({counts}); resume with "
                                        f"`kubectl edgeai rollout resume {name}`")
    if is_ready and not is_progressing:
        note = ""
        if is_degraded:  # e.g. some devices offline: rolled out everywhere it can be, but say so
            note = f"; degraded: {degraded.get('reason')}: {degraded.get('message') or ''}".rstrip(": ")
        return RolloutVerdict("complete", f"{name!r} successfully rolled out ({counts}){note}")
    why = ""
    for c in (progressing, ready):
        if c is not None and c.get("message"):
            why = f": {c.get('message')}"
            break
    return RolloutVerdict("progressing", f"waiting for {name!r} to roll out ({counts}){why}")


def rollout_counts(idep: Obj) -> str:
    st = get_path(idep, "status") or {}
    parts = []
    for key in ("selected", "placed", "updated", "ready"):
        v = get_path(st, key)
        if isinstance(v, int):
            parts.append(f"{v} {key}")
    unplaced = _list(st, "unplaced")
    if unplaced:
        parts.append(f"{len(unplaced)} unplaced")
    return ", ".join(parts) if parts else "no counts reported yet"


def rollout_policy(idep: Obj) -> list[str]:
    """The rollout policies the spec sets, one line each, as the operator reads them (defaults filled
    in): how the waves grow, what the gate judges, maintenance windows, per-group runtime overrides."""
    spec, _ = typed_spec(InferenceDeploymentSpec, idep)
    if spec is None:
        return []
    lines: list[str] = []
    try:
        pol = ro.parse_policy(spec.rollout)
    except ro.RolloutSpecError as e:
        return [f"policy: invalid: {e}"]
    if pol.ramp is not None:
        lines.append(f"waves: ramp from {pol.ramp[0]} device(s), x{pol.ramp[1]} per wave"
                     + (f", after a canary of {pol.canary}" if pol.canary else ""))
    elif pol.canary or pol.waves:
        parts = ([f"canary {pol.canary}"] if pol.canary else []) + [str(w) for w in pol.waves]
        lines.append("waves: " + ", ".join(parts))
    if pol.gated:
        gate = [f"readySeconds {pol.ready_seconds}", f"progressDeadlineSeconds {pol.deadline_seconds}"]
        if pol.max_restarts:
            gate.append(f"maxRestarts {pol.max_restarts}")
        if pol.max_failures:
            gate.append(f"maxFailures {pol.max_failures} per wave")
        q = spec.rollout.health_gate.quality if spec.rollout and spec.rollout.health_gate else None
        if q is not None:
            judged = [f"{k} {v}" for k, v in (("maxPSI", q.max_psi), ("minMeanConfidence", q.min_mean_confidence))
                      if v is not None]
            gate.append("quality " + ", ".join(judged) if judged else "quality")
        lines.append("health gate: " + ", ".join(gate) + f"; on failure {pol.on_failure}")
    if pol.windows is not None:
        raw = (spec.rollout.maintenance_windows.windows if spec.rollout and spec.rollout.maintenance_windows
               else None) or {}
        lines.append(f"maintenance windows by {pol.windows.label}: " + "; ".join(
            f"{value}: {w.schedule} {w.time_zone or 'UTC'} for {w.duration_minutes} min"
            for value, w in sorted(raw.items())) + " (rollbacks are never held)")
    raw_overrides = get_path(idep, "spec", "runtimeOverrides")
    for i, o in enumerate(spec.runtime_overrides or ()):
        raw_sel = raw_overrides[i].get("deviceSelector") if isinstance(raw_overrides, list) else None
        settings = {k: v for k, v in serialize(o.runtime).items() if v is not None}
        lines.append(f"override for {describe(raw_sel)}: " + ", ".join(f"{k} {v}" for k, v in settings.items()))
    return lines


def rollout_details(idep: Obj) -> str:
    """Policies, conditions, revision and per-device placement: what `rollout status` prints once."""
    lines: list[str] = rollout_policy(idep)
    st: Any = get_path(idep, "status") or {}
    for key in ("revision", "currentRevision", "updateRevision", "stableRevision", "lastGoodRevision"):
        v = get_path(st, key)
        if v is not None:
            lines.append(f"{key}: {v}")
    ro = get_path(st, "rollout")
    if isinstance(ro, Mapping) and ro.get("phase"):
        lines.append(f"rollout: revision {ro.get('revision')} {ro.get('phase')}, wave "
                     f"{int(ro.get('wave') or 0) + 1}/{ro.get('waves') or 1}")
        failed = ro.get("failedDevices")
        if isinstance(failed, list) and failed:
            lines.append(f"failed the gate alone, rolled back (healthGate.maxFailures): {', '.join(map(str, failed))}")
    conds = [c for c in _list(st, "conditions") if isinstance(c, Mapping)]
    if conds:
        lines.append(table(("CONDITION", "STATUS", "REASON", "MESSAGE"),
                           [(c.get("type", ""), c.get("status", ""), c.get("reason") or NONE,
                             c.get("message") or "") for c in conds]))
    devs = [e for e in _list(st, "devices") if isinstance(e, Mapping)]
    if devs:
        lines.append(table(("DEVICE", "VARIANT", "DIGEST", "PHASE"),
                           [(e.get("device", ""), e.get("variant") or NONE, short_digest(e.get("sha256")),
                             e.get("phase") or NONE) for e in devs]))
        more = get_path(st, "devicesNotListed")
        if isinstance(more, int) and more:
            lines.append(f"... and {more} more devices (the status lists those needing a look first; "
                         "kubectl edgeai fleet shows every device)")
    unplaced = [e for e in _list(st, "unplaced") if isinstance(e, Mapping)]
    if unplaced:
        lines.append(table(("UNPLACED", "REASON"), [(e.get("device", ""), e.get("reason") or "") for e in unplaced]))
    caches = [e for e in _list(st, "siteCaches") if isinstance(e, Mapping)]
    if caches:
        # One line per site (spec.siteCache). What a cache holds and its hit ratio are its own numbers
        # (its /v1/status and /metrics on the gateway): the operator never connects to an edge node, so
        # they are not in status; `cache status` reads them on demand.
        lines.append(table(("SITE", "CACHE NODE", "ENDPOINT", "READY", "MESSAGE"),
                           [(e.get("site", ""), e.get("node") or NONE, e.get("endpoint") or NONE,
                             _yes_no(e.get("ready")), e.get("message") or "") for e in caches]))
        name = get_path(idep, "metadata", "name")
        lines.append(f"(what each cache holds and serves: kubectl edgeai cache status {name})")
    return "\n".join(lines)


def _yes_no(v: Any) -> str:
    return NONE if v is None else ("yes" if v else "no")


def revision_history(idep: Obj) -> str:
    """`rollout history`: every remembered revision, oldest first, with its digests and outcome."""
    st: Any = get_path(idep, "status") or {}
    revs = [r for r in _list(st, "revisions") if isinstance(r, Mapping)]
    if not revs:
        return "no revisions recorded yet"
    current, stable = get_path(st, "revision"), get_path(st, "currentRevision")
    rows = []
    for r in revs:
        n = r.get("revision")
        mark = "*" if n == stable else ("+" if n == current else "")
        digests = ",".join(f"{k}={short_digest(v)}" for k, v in sorted((r.get("digests") or {}).items()))
        rows.append((f"{n}{mark}", r.get("outcome") or NONE, r.get("modelVersion") or NONE, digests or NONE,
                     r.get("createdAt") or NONE, r.get("reason") or ""))
    out = table(("REVISION", "OUTCOME", "VERSION", "DIGESTS", "CREATED", "REASON"), rows)
    return out + "\n(* serving: the last revision that passed every wave; + the rollout target)"


# --------------------------------------------------------------------------- cache status


@dataclass(frozen=True)
class CacheTarget:
    """One row of status.siteCaches: where a site's cache is, as the operator reported it."""

    site: str
    node: str  # the gateway; "" for a cache the user runs (spec.siteCache.endpoints) or a site without one
    endpoint: str  # "" when the site has no address to read
    ready: bool | None  # None: a cache the user runs, which the operator cannot see
    message: str  # the operator's note on the row


@dataclass(frozen=True)
class CacheReading:
    """What a cache answered on GET /v1/status, or why it could not be read."""

    target: CacheTarget
    via: str  # "direct" | "apiserver" | "" (not asked)
    status: Mapping[str, Any] | None
    error: str = ""


def cache_targets(idep: Obj) -> list[CacheTarget]:
    rows = []
    for e in _list(idep, "status", "siteCaches"):
        if not isinstance(e, Mapping) or not e.get("site"):
            continue
        ready = e.get("ready")
        rows.append(CacheTarget(site=str(e["site"]), node=str(e.get("node") or ""),
                                endpoint=str(e.get("endpoint") or ""), ready=ready if isinstance(ready, bool) else None,
                                message=str(e.get("message") or "")))
    return rows


def cache_pod(pods: Iterable[Obj]) -> tuple[str, int] | str:
    """The Pod of one site's cache to read through the API server's proxy, as (name, port); or why none.

    Of several (a Recreate in flight), a running one not being deleted, Ready first, then the newest."""
    live = [p for p in pods if get_path(p, "status", "phase") == "Running"
            and not get_path(p, "metadata", "deletionTimestamp")]
    if not live:
        return "no running cache Pod"

    def rank(p: Obj) -> tuple[bool, str]:
        ready = any(c.get("type") == "Ready" and c.get("status") == ConditionStatus.TRUE
                    for c in _list(p, "status", "conditions") if isinstance(c, Mapping))
        return ready, str(get_path(p, "metadata", "creationTimestamp") or "")

    pod = max(live, key=rank)
    for ctr in _list(pod, "spec", "containers"):
        for port in (ctr.get("ports") or []) if isinstance(ctr, Mapping) else []:
            if isinstance(port, Mapping) and isinstance(port.get("containerPort"), int):
                return str(get_path(pod, "metadata", "name")), int(port["containerPort"])
    return f"Pod {get_path(pod, 'metadata', 'name')} declares no port"


def human_bytes(n: Any) -> str:
    """1536 -> 1.5KiB, 10737418240 -> 10GiB: binary units, as Kubernetes quantities are written."""
    if not isinstance(n, int | float) or isinstance(n, bool):
        return NONE
    v, unit = float(n), "B"
    for u in ("KiB", "MiB", "GiB", "TiB"):
        if abs(v) < 1024:
            break
        v, unit = v / 1024, u
    return f"{v:.0f}B" if unit == "B" else f"{v:.1f}".removesuffix(".0") + unit


CACHE_COLUMNS = ("SITE", "NODE", "READY", "ENTRIES", "HELD/MAX", "HITS", "MISSES", "HIT-RATIO", "SERVED",
                 "FROM-ORIGIN", "ORIGIN-FAILURES", "NOTE")


def _num(st: Mapping[str, Any] | None, key: str) -> str:
    v = get_path(st, key)
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else NONE


def cache_row(r: CacheReading) -> list[str]:
    t, st = r.target, r.status
    if st is None:
        numbers = [NONE] * 8
    else:
        asked = sum(v for v in (get_path(st, "hits"), get_path(st, "misses")) if isinstance(v, int))
        ratio = get_path(st, "hitRatio")
        numbers = [
            _num(st, "entries"),
            f"{human_bytes(get_path(st, 'bytesHeld'))}/{human_bytes(get_path(st, 'maxBytes'))}",
            _num(st, "hits"), _num(st, "misses"),
            f"{ratio * 100:.1f}%" if isinstance(ratio, int | float) and asked else NONE,  # nothing asked: no ratio
            human_bytes(get_path(st, "bytesServed")), human_bytes(get_path(st, "bytesFromOrigin")),
            _num(st, "originFailures"),
        ]
    notes = []
    if r.error:
        notes.append(r.error)
    fetching = get_path(st, "fetching")
    if isinstance(fetching, list) and fetching:
        notes.append(f"fetching {len(fetching)} from the origin now")
    if t.message:
        notes.append(t.message)
    return [t.site, t.node or NONE, _yes_no(t.ready), *numbers, "; ".join(notes)]


def cache_table(readings: Sequence[CacheReading]) -> str:
    return table(CACHE_COLUMNS, [cache_row(r) for r in readings])


def cache_summary(readings: Sequence[CacheReading]) -> str:
    read = [r for r in readings if r.status is not None]
    asked = [r for r in readings if r.via]
    served = sum(int(get_path(r.status, "bytesServed") or 0) for r in read)
    origin = sum(int(get_path(r.status, "bytesFromOrigin") or 0) for r in read)
    out = f"{len(readings)} site(s), {len(read)} of {len(asked)} cache(s) read"
    if read:
        out += (f"; together they served {human_bytes(served)} to devices and took {human_bytes(origin)} "
                f"from the origin")
    return out


def cache_json(readings: Sequence[CacheReading]) -> str:
    return json.dumps([{**asdict(r.target), "via": r.via or None, "status": r.status, "error": r.error or None}
                       for r in readings], indent=2)


# --------------------------------------------------------------------------- model verify

REVERIFY_ANNOTATION = "edgeai.io/reverify"


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def model_summary(em: Obj) -> str:
    name = get_path(em, "metadata", "name")
    spec, error = typed_spec(EdgeModelSpec, em)
    seen = get_path(em, "status", "sha256")
    verified = condition(em, ConditionType.VERIFIED)
    rows: list[tuple[str, Any]] = [("model", name)]
    if spec is None:
        rows.append(("spec", f"invalid: {error}"))
    else:
        rows += [
            ("version", spec.version or NONE),
            ("source", spec.source.uri or NONE),
            ("expected sha256", spec.source.sha256 or NONE),
        ]
    rows += [
        ("seen sha256", seen or NONE),
        ("size", get_path(em, "status", "size") if get_path(em, "status", "size") is not None else NONE),
        ("verified at", get_path(em, "status", "verifiedAt") or NONE),
    ]
    if spec is not None:
        rows += [("signed", "yes" if spec.signature else "no"), ("encrypted", "yes" if spec.encryption else "no")]
    if verified is None:
        rows.append(("Verified", "not reported yet"))
    else:
        rows.append(("Verified", f"{verified.get('status')} ({verified.get('reason') or NONE})"))
        if verified.get("message"):
            rows.append(("message", verified.get("message")))
    width = max(len(k) for k, _ in rows)
    out = [f"{k.ljust(width)}  {v}" for k, v in rows]
    variants = [v for v in _list(em, "status", "variants") if isinstance(v, Mapping)]
    if variants:
        out.append("")
        out.append(table(("VARIANT", "VERIFIED", "DIGEST", "SIZE", "REASON"),
                         [(v.get("name", ""), v.get("verified", NONE), short_digest(v.get("sha256")),
                           v.get("size", NONE), v.get("reason") or NONE) for v in variants]))
    return "\n".join(out)


def model_verified(em: Obj) -> bool | None:
    """True/False once the operator judged the current generation; None while it has not."""
    c = condition(em, ConditionType.VERIFIED)
    if c is None or c.get("status") not in (ConditionStatus.TRUE, ConditionStatus.FALSE):
        return None
    gen = get_path(em, "metadata", "generation")
    og = c.get("observedGeneration", get_path(em, "status", "observedGeneration"))
    if isinstance(gen, int) and isinstance(og, int) and og < gen:
        return None
    return bool(c.get("status") == ConditionStatus.TRUE)


REVERIFY_STATUS = "observedReverify"  # status field the operator echoes the annotation's value into


def verified_since(em: Obj, since: dt.datetime, request: str | None = None) -> bool:
    """Has the operator finished a verification for the re-verify request made at `since`?

    Exact when the operator echoes the request (status.observedReverify == the
    annotation's value); otherwise judged from the verdict's timestamps, which a
    repeated failure with an unchanged condition does not move.
    """
    if request is not None and get_path(em, "status", REVERIFY_STATUS) == request:
        return model_verified(em) is not None
    times = [parse_time(get_path(em, "status", "verifiedAt"))]
    c = condition(em, ConditionType.VERIFIED)
    if c is not None:
        times.append(parse_time(c.get("lastTransitionTime")))
        times.append(parse_time(c.get("lastProbeTime")))
    # The request's timestamp has whole seconds: compare at that precision.
    floor = since.replace(microsecond=0)
    return any(t is not None and t >= floor for t in times) and model_verified(em) is not None


# --------------------------------------------------------------------------- undo


def undo_patch(idep: Obj, revision: int | None, requested_at: str | None = None) -> dict[str, Any]:
    """The spec change that asks the operator to roll back (a spec field, so Git can ask the same).

    revision None means "what the fleet ran before": the stable revision while a rollout is in
    flight or was rolled back, else the newest earlier revision that succeeded, else the one
    before the current. Resolved here from status so the request in spec names an explicit
    revision and replays the same way. `requested_at` makes a repeated request a new one.
    """
    if revision is None:
        revision = previous_revision(idep)
    target: dict[str, Any] = {"revision": revision}
    if requested_at:
        target["requestedAt"] = requested_at
    return {"spec": {"rollout": {"rollbackTo": target}}}


def previous_revision(idep: Obj) -> int:
    current = get_path(idep, "status", "revision")
    stable = get_path(idep, "status", "currentRevision")
    if isinstance(current, int) and isinstance(stable, int) and stable != current:
        return stable
    if not isinstance(current, int):
        current = stable
    name = get_path(idep, "metadata", "name")
    if not isinstance(current, int) or current < 2:
        raise ValueError(f"{name!r} has no earlier revision to roll back to (current: {current}); "
                         f"give --to-revision")
    good: list[int] = [int(r["revision"]) for r in _list(get_path(idep, "status") or {}, "revisions")
                       if isinstance(r, Mapping) and r.get("outcome") == RevisionOutcome.SUCCEEDED
                       and isinstance(r.get("revision"), int) and r["revision"] < current]
    return max(good) if good else current - 1

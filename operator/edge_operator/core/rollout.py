"""Rollout in waves, health gates and automatic rollback, as pure functions.

`parse_policy()` reads `spec.rollout` (naming the field a person got wrong), `wave_bounds()`
cuts the ordered fleet into waves, and `step()` is one turn of the state machine: from the
last persisted `RolloutState`, what every device serves now and the health the cloud can
see (Deployment and Pod status only; in KubeEdge the cloud usually cannot reach an edge
pod's port, so the runtime folds its own judgement into its readiness), it returns which
revision each device should serve, the next state, and when to look again.

Everything `step()` needs is in status and in the children's `edgeai.io/revision`
annotations, so an operator restarted mid-rollout continues from the same wave: a device
already on the new revision stays there (nothing is rolled twice), a device not yet
admitted keeps what it serves.

Longer than most modules: the policy, the waves and the state machine share
`Policy` and `RolloutState`, and the state machine reads best in one place.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from edge_operator.core import conditions as cond
from edge_operator.core.windows import WindowError, Windows, parse_windows
from edgeai_api.enums import FailurePolicy, InsufficientTrafficPolicy, OfflinePolicy, RollbackStrategy, RolloutPhase
from edgeai_api.inferencedeployment import HealthGate, RolloutSpec, RolloutStatus
from edgeai_api.serde import ApiTypeError, parse, serialize

# Phases of status.rollout.phase, by their short names here.
PROGRESSING = RolloutPhase.PROGRESSING
PAUSED = RolloutPhase.PAUSED
ROLLING_BACK = RolloutPhase.ROLLING_BACK
ROLLED_BACK = RolloutPhase.ROLLED_BACK
HALTED = RolloutPhase.HALTED
COMPLETE = RolloutPhase.COMPLETE

_PERCENT = re.compile(r"^(\d{1,3})%$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
# Fields of spec.rollout that only steer (pause, undo): with nothing else set there is no gate.
_STEERING = frozenset({"paused", "rollback_to", "revision_history_limit"})


class RolloutSpecError(ValueError):
    """spec.rollout is invalid; the message names the field."""


@dataclass(frozen=True)
class Policy:
    gated: bool = False  # spec.rollout describes waves or gates; without, one wave and no gate
    canary: int = 0
    waves: tuple[int | str, ...] = ()
    ramp: tuple[int | str, int] | None = None  # (initial, factor): waves that grow by a factor
    order_by: str | None = None
    pause_seconds: int = 0
    max_unavailable: int | str | None = None  # None: no limit
    ready_seconds: int = 0
    max_restarts: int = 0
    deadline_seconds: int = 600
    max_failures: int | str = 0  # devices of a wave (or a percentage of it) that may fail the gate alone
    on_failure: FailurePolicy = FailurePolicy.ROLLBACK
    rollback_strategy: RollbackStrategy = RollbackStrategy.ALL_AT_ONCE
    offline: OfflinePolicy = OfflinePolicy.SKIP
    windows: Windows | None = None  # maintenance windows by device label value
    paused: bool = False
    rollback_to: dict[str, Any] | None = None  # as JSON: compared with status.rollout.observedRollbackTo
    history_limit: int = 10
    quality_waits: bool = False  # healthGate.quality with onInsufficientTraffic Wait: a new Pod waits for traffic


def _int(v: int | None, key: str, path: str, lo: int, hi: int, default: int) -> int:
    v = default if v is None else v
    if not lo <= v <= hi:
        raise RolloutSpecError(f"{path}.{key} must be an integer from {lo} to {hi}, got {v!r}")
    return v


def _count_or_percent(v: int | str, path: str, lo: int = 1) -> int | str:
    if isinstance(v, int) and not isinstance(v, bool) and v >= lo:
        return v
    if isinstance(v, str):
        m = _PERCENT.match(v.strip())
        if m and lo <= int(m.group(1)) <= 100:
            return f"{int(m.group(1))}%"
    raise RolloutSpecError(f"{path} must be a device count >= {lo} or a percentage like \"25%\" ({lo}-100%), "
                           f"got {v!r}")


def _typed(spec: RolloutSpec | Mapping[str, Any] | None) -> RolloutSpec:
    if spec is None:
        return RolloutSpec()
    if isinstance(spec, RolloutSpec):
        return spec
    try:
        return parse(RolloutSpec, spec, "spec.rollout")
    except ApiTypeError as e:
        # This module's own phrasing, which people and tests already know.
        raise RolloutSpecError(f"{e.path} is required" if e.missing else
                               f"{e.path} must be {e.expected}, got {e.got!r}") from e


def parse_policy(spec: RolloutSpec | Mapping[str, Any] | None) -> Policy:
    """spec.rollout (typed, or its JSON) as a Policy; RolloutSpecError naming the first wrong field."""
    spec = _typed(spec)
    p = "spec.rollout"
    gate = spec.health_gate or HealthGate()
    if len(spec.waves or ()) > 20:
        raise RolloutSpecError(f"{p}.waves must be a list of at most 20 counts or percentages")
    waves = tuple(_count_or_percent(w, f"{p}.waves[{i}]") for i, w in enumerate(spec.waves or ()))
    for i in range(1, len(waves)):
        a, b = waves[i - 1], waves[i]
        if type(a) is type(b) and (_pct(a) if isinstance(a, str) else a) >= (_pct(b) if isinstance(b, str) else b):
            raise RolloutSpecError(f"{p}.waves must grow from one wave to the next: {a} then {b}")
    ramp = None
    if spec.ramp is not None:
        if spec.waves is not None:
            raise RolloutSpecError(f"{p}.waves and {p}.ramp are two ways to size the waves: set one of them")
        ramp = (_count_or_percent(1 if spec.ramp.initial is None else spec.ramp.initial, f"{p}.ramp.initial"),
                _int(spec.ramp.factor, "factor", f"{p}.ramp", 2, 10, 2))
    order_by = spec.order_by
    if order_by is not None and not _LABEL_KEY.match(order_by):
        raise RolloutSpecError(f"{p}.orderBy must be a label key like edgeai.io/site, got {order_by!r}")
    mu = spec.max_unavailable
    rb = spec.rollback_to
    if rb is not None and rb.revision < 1:
        raise RolloutSpecError(f"{p}.rollbackTo.revision must be a revision number >= 1, got {serialize(rb)!r}")
    _check_quality(gate, f"{p}.healthGate.quality")
    gated = any(getattr(spec, f.name) is not None for f in dataclasses.fields(spec) if f.name not in _STEERING)
    try:
        windows = parse_windows(spec.maintenance_windows, f"{p}.maintenanceWindows")
    except WindowError as e:
        raise RolloutSpecError(str(e)) from e
    if spec.maintenance_windows is not None and spec.maintenance_windows.label is not None \
            and not _LABEL_KEY.match(spec.maintenance_windows.label):
        raise RolloutSpecError(f"{p}.maintenanceWindows.label must be a label key like edgeai.io/site, "
                               f"got {spec.maintenance_windows.label!r}")
    return Policy(
        gated=gated,
        canary=_int(spec.canary, "canary", p, 0, 100_000, 0),
        waves=waves,
        ramp=ramp,
        order_by=order_by,
        pause_seconds=_int(spec.pause_seconds, "pauseSeconds", p, 0, 7 * 86400, 0),
        max_unavailable=None if mu is None else _count_or_percent(mu, f"{p}.maxUnavailable"),
        ready_seconds=_int(gate.ready_seconds, "readySeconds", f"{p}.healthGate", 0, 86400, 0),
        max_restarts=_int(gate.max_restarts, "maxRestarts", f"{p}.healthGate", 0, 1000, 0),
        deadline_seconds=_int(gate.progress_deadline_seconds, "progressDeadlineSeconds", f"{p}.healthGate", 1,
                              7 * 86400, 600),
        max_failures=0 if gate.max_failures is None else _count_or_percent(
            gate.max_failures, f"{p}.healthGate.maxFailures", lo=0),
        on_failure=spec.on_failure or FailurePolicy.ROLLBACK,
        rollback_strategy=spec.rollback_strategy or RollbackStrategy.ALL_AT_ONCE,
        offline=spec.offline_devices or OfflinePolicy.SKIP,
        windows=windows,
        paused=bool(spec.paused),
        rollback_to=dict(serialize(rb)) if rb is not None else None,
        history_limit=_int(spec.revision_history_limit, "revisionHistoryLimit", p, 1, 50, 10),
        quality_waits=gate.quality is not None
        and gate.quality.on_insufficient_traffic in (None, InsufficientTrafficPolicy.WAIT),
    )


def _check_quality(gate: HealthGate, path: str) -> None:
    """healthGate.quality's ranges (the schema's, for specs that did not come through it). The runtime
    judges it; the operator only passes it on (core/manifests.quality_gate_args)."""
    q = gate.quality
    if q is None:
        return
    if q.max_psi is None and q.min_mean_confidence is None and q.max_psi_previous is None:
        raise RolloutSpecError(f"{path} needs at least one threshold: maxPSI, minMeanConfidence or maxPSIPrevious")
    if q.max_psi is not None and not 0 < q.max_psi <= 10:
        raise RolloutSpecError(f"{path}.maxPSI must be a number above 0 and at most 10, got {q.max_psi!r}")
    if q.max_psi_previous is not None and not 0 < q.max_psi_previous <= 10:
        raise RolloutSpecError(f"{path}.maxPSIPrevious must be a number above 0 and at most 10, "
                               f"got {q.max_psi_previous!r}")
    if q.min_mean_confidence is not None and not 0 <= q.min_mean_confidence <= 1:
        raise RolloutSpecError(f"{path}.minMeanConfidence must be a number from 0 to 1, got {q.min_mean_confidence!r}")
    _int(q.min_requests, "minRequests", path, 1, 1_000_000, 1)


def _pct(v: str) -> int:
    return int(v.rstrip("%"))


def resolve_count(v: int | str, n: int) -> int:
    """A count or percentage of `n` devices, rounded up, at least 1 when n > 0."""
    if isinstance(v, str):
        return min(n, max(1, math.ceil(n * _pct(v) / 100))) if n else 0
    return min(n, v)


def tolerated(v: int | str, n: int) -> int:
    """Failures tolerated among `n` devices: a count, or a percentage of `n` rounded down (10% of
    5 devices tolerates none), so a percentage never lets a small wave fail more than it says."""
    if isinstance(v, str):
        return n * _pct(v) // 100
    return min(n, v)


# Waves of a ramp: enough to cover any fleet this operator is built for (2**30 devices at factor 2).
_MAX_RAMP_WAVES = 30


# --------------------------------------------------------------------------- waves


def order_devices(labels: Mapping[str, Mapping[str, str]], order_by: str | None) -> list[str]:
    """Devices in rollout order: by the `order_by` label's value (missing last), then by name."""
    if not order_by:
        return sorted(labels)
    return sorted(labels, key=lambda d: (order_by not in labels[d], labels[d].get(order_by, ""), d))


def wave_bounds(policy: Policy, order: Sequence[str], labels: Mapping[str, Mapping[str, str]]) -> list[int]:
    """Cumulative device counts at the end of each wave, strictly increasing, the last = all.

    Canary first; then `waves`; with `orderBy` and no `waves`, one wave per label value, so
    one site finishes before the next starts."""
    n = len(order)
    if n == 0:
        return [0]
    bounds: list[int] = []
    if policy.gated and policy.canary:
        bounds.append(min(policy.canary, n))
    if policy.gated and policy.waves:
        bounds.extend(resolve_count(w, n) for w in policy.waves)
    elif policy.gated and policy.ramp is not None:
        size, factor = resolve_count(policy.ramp[0], n), policy.ramp[1]
        for _ in range(_MAX_RAMP_WAVES):
            if size >= n:
                break
            bounds.append(size)
            size *= factor
    elif policy.gated and policy.order_by:
        key = policy.order_by
        for i in range(1, n):
            if labels[order[i]].get(key) != labels[order[i - 1]].get(key):
                bounds.append(i)
    bounds.append(n)
    out: list[int] = []
    for b in bounds:
        if b > (out[-1] if out else 0):
            out.append(b)
    return out


def wave_of(index: int, bounds: Sequence[int]) -> int:
    for k, b in enumerate(bounds):
        if index < b:
            return k
    return len(bounds) - 1


# --------------------------------------------------------------------------- state


def parse_time(v: Any) -> float | None:
    """A status timestamp as seconds since the epoch (the rollout's clock), or None."""
    t = cond.parse_time(v)
    return t.timestamp() if t is not None else None


def iso(t: float) -> str:
    """RFC 3339 with milliseconds: gates of a few seconds must not lose up to a second to rounding."""
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class RolloutState:
    """status.rollout: where the rollout of `revision` stands. Holds no counters on purpose:
    it changes only at transitions, so every change of it is written at once."""

    revision: int
    phase: RolloutPhase
    wave: int = 0
    waves: int = 1
    wave_started: float | None = None
    wave_ready: float | None = None
    message: str = ""
    # Progress of the wave, as a Deployment's progressDeadlineSeconds measures it: the most devices
    # seen healthy so far, and when that number last grew. Changes once per batch, not per event.
    healthy: int = 0
    progress_at: float | None = None
    # Devices that failed the gate within healthGate.maxFailures: rolled back on their own and left
    # there until the next revision, so the rollout never sends them the failed build again.
    failed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        # healthy/progressAt/failedDevices are the operator's own: the schema preserves unknown fields there.
        extra: dict[str, Any] = {}
        if self.progress_at is not None:
            extra = {"healthy": self.healthy, "progressAt": iso(self.progress_at)}
        if self.failed:
            extra["failedDevices"] = list(self.failed)
        return dict(serialize(RolloutStatus(
            revision=self.revision, phase=self.phase, wave=self.wave, waves=self.waves,
            wave_started_at=iso(self.wave_started) if self.wave_started is not None else None,
            wave_ready_at=iso(self.wave_ready) if self.wave_ready is not None else None,
            message=self.message[:500] or None, extra=extra)))

    @staticmethod
    def from_dict(d: Any) -> RolloutState | None:
        try:
            st = parse(RolloutStatus, d, "status.rollout")
        except ApiTypeError:
            return None  # a hand-edited state we cannot read: the rollout starts over from status
        if st.revision is None or st.phase is None:
            return None
        x = st.extra
        healthy = x.get("healthy")
        failed = x.get("failedDevices")
        return RolloutState(st.revision, st.phase, st.wave or 0, st.waves or 1, parse_time(st.wave_started_at),
                            parse_time(st.wave_ready_at), st.message or "",
                            healthy if isinstance(healthy, int) else 0, parse_time(x.get("progressAt")),
                            tuple(sorted(str(d) for d in failed)) if isinstance(failed, list) else ())


@dataclass(frozen=True)
class DeviceRollout:
    """One placed device as the cloud sees it."""

    revision: int | None  # the revision its workload is at; None: no workload yet
    ready: bool  # its workload's current template is rolled out and its pod Ready
    online: bool = True
    failed: str = ""  # why its current revision will not get better by waiting ("" if not failing)
    restarts: int = 0  # container restarts of its newest pod
    # A Pod of an earlier template still Ready beside the current one: the device is mid-surge, its old
    # server answering. Only such a device spends maxUnavailable (see _assign).
    serving_older: bool = False


@dataclass(frozen=True)
class Step:
    targets: dict[str, int]  # device -> revision it should serve (absent: no workload)
    state: RolloutState
    failure: str = ""  # non-empty: the target revision failed its gate now, and why
    succeeded: bool = False  # the target revision passed every wave: it is the stable one now
    rolled_back: bool = False  # the rollback after a failure just finished
    requeue_after: float | None = None
    notes: tuple[str, ...] = field(default=())


def step(
    policy: Policy,
    prev: RolloutState | None,
    target: int,
    stable: int | None,
    target_failed: bool,
    order: Sequence[str],
    bounds: Sequence[int],
    devices: Mapping[str, DeviceRollout],
    usable: frozenset[int],
    now: float,
    closed: frozenset[str] = frozenset(),
) -> Step:
    """One turn of the rollout of revision `target` over the stable revision `stable`.

    `order` is every placed device in rollout order, `bounds` its waves (`wave_bounds`),
    `usable` the revisions a device may keep serving (in the history and not failed), `closed`
    the devices whose maintenance window is closed now (`windows.closed_to`)."""
    last = len(bounds) - 1

    def keep(dev: str) -> int | None:
        cur = devices[dev].revision if dev in devices else None
        if cur is not None and ((cur == target and not target_failed) or cur in usable):
            return cur
        return stable

    def all_to(rev: int) -> dict[str, int]:
        return {d: rev for d in order}

    if stable == target:
        done = prev is not None and prev.revision == target and prev.phase == COMPLETE
        st = prev if done and prev is not None else RolloutState(target, COMPLETE, last, len(bounds))
        return Step(_in_windows(_except_failed(all_to(target), st.failed, devices, None), closed, devices, target),
                    st)

    if target_failed:
        if prev is not None and prev.revision == target and prev.phase == ROLLING_BACK and stable is not None:
            return _roll_back(policy, prev, target, stable, order, bounds, devices, keep, now)
        if stable is not None and (prev is None or prev.revision != target or prev.phase != HALTED):
            st = RolloutState(target, ROLLED_BACK, 0, len(bounds), message=prev.message if prev else "")
            return Step(all_to(stable), st)
        # Halted: frozen as it stood, the failed revision included, until a new revision or an undo.
        st = prev if prev is not None and prev.revision == target else RolloutState(target, HALTED, 0, len(bounds))
        frozen = {d: devices[d].revision if d in devices and devices[d].revision is not None else stable
                  for d in order}
        return Step(_drop_none(frozen), replace(st, phase=HALTED))

    if prev is None or prev.revision != target or prev.phase in (COMPLETE, ROLLED_BACK, HALTED, ROLLING_BACK):
        prev = RolloutState(target, PROGRESSING, 0, len(bounds), now, None)
    failed = set(prev.failed)
    w = min(prev.wave, last)
    started = prev.wave_started if prev.wave_started is not None else now
    index = {d: i for i, d in enumerate(order)}
    admitted = [d for d in order if wave_of(index[d], bounds) <= w]
    skip_offline = policy.offline == OfflinePolicy.SKIP
    notes: list[str] = []

    # The gate of wave w, on what the wave's devices show now.
    failure = ""
    if policy.gated:
        newly: list[tuple[str, str]] = []
        for d in admitted:
            s = devices.get(d)
            if s is None or s.revision != target or not s.online or d in failed:
                continue
            if s.failed:
                newly.append((d, f"device {d}: {s.failed}"))
            elif s.restarts > policy.max_restarts:
                newly.append((d, f"device {d}: {s.restarts} container restarts on revision {target} "
                                 f"(healthGate.maxRestarts {policy.max_restarts})"))
        if newly:
            over = _over_tolerance(policy, failed | {d for d, _ in newly}, index, bounds, w)
            if over:
                failure = newly[0][1] + over
            else:
                failed |= {d for d, _ in newly}
    if failed:
        names = sorted(failed)
        notes.append(f"{len(names)} device(s) failed the gate and were rolled back on their own "
                     f"(healthGate.maxFailures {policy.max_failures}): {', '.join(names[:5])}"
                     f"{' ...' if len(names) > 5 else ''}")
    waiting = {d for d in closed if d in devices and devices[d].revision is not None and devices[d].revision != target}
    if waiting & set(admitted):
        notes.append(f"{len(waiting & set(admitted))} device(s) wait for their maintenance window")
    gating = [d for d in admitted if d in devices and d not in failed and d not in waiting
              and (devices[d].online or not skip_offline)]
    gating += [d for d in admitted if d not in devices]  # no workload yet: not healthy
    unhealthy = [d for d in gating if not (devices.get(d) and devices[d].revision == target and devices[d].ready
                                           and devices[d].online)]
    healthy = not unhealthy
    # The deadline is on progress, not on the whole wave: a wave of 700 devices let through
    # maxUnavailable at a time may take many minutes, but it must keep getting devices Ready.
    count = len(gating) - len(unhealthy)
    progress_at = prev.progress_at if prev.progress_at is not None and prev.wave == w else started
    best = prev.healthy if prev.progress_at is not None and prev.wave == w else 0
    if count > best:
        best, progress_at = count, now
    if not failure and policy.gated and not healthy and now - progress_at > policy.deadline_seconds:
        online_bad = [d for d in unhealthy if d not in devices or devices[d].online]
        if online_bad:
            failure = (f"wave {w + 1}/{len(bounds)} made no progress for {policy.deadline_seconds}s "
                       f"(healthGate.progressDeadlineSeconds): {len(online_bad)} device(s) not Ready on revision "
                       f"{target}: {', '.join(online_bad[:5])}{' ...' if len(online_bad) > 5 else ''}")
            if policy.quality_waits:
                failure += ("; healthGate.quality (onInsufficientTraffic Wait) keeps a new Pod not Ready until it "
                            "answered minRequests: was traffic sent to the new Pods?")
        else:
            notes.append(f"waiting for {len(unhealthy)} offline device(s) (offlineDevices: Wait)")
    if failure:
        return _fail(policy, prev, target, stable, order, bounds, devices, keep, failure, w, now)
    held = tuple(sorted(failed))

    ready_at = (prev.wave_ready if prev.wave_ready is not None else now) if healthy else None
    requeue: float | None = None
    phase = PAUSED if policy.paused else PROGRESSING
    if ready_at is not None:
        passed_at = ready_at + policy.ready_seconds
        if now >= passed_at:
            if w == last:
                st = RolloutState(target, COMPLETE, w, len(bounds), started, ready_at, failed=held)
                return Step(_in_windows(_except_failed(all_to(target), held, devices, stable), closed, devices,
                                        target), st, succeeded=True)
            if not policy.paused:
                if now >= passed_at + policy.pause_seconds:
                    w, started, ready_at, progress_at = w + 1, now, None, now
                    admitted = [d for d in order if wave_of(index[d], bounds) <= w]
                    requeue = 1.0
                else:
                    requeue = passed_at + policy.pause_seconds - now
        else:
            requeue = passed_at - now
    elif policy.gated:
        requeue = max(1.0, progress_at + policy.deadline_seconds - now + 0.5)
    mu = None if policy.max_unavailable is None else resolve_count(policy.max_unavailable, len(order))
    targets = _in_windows(_assign(order, admitted, devices, target, keep, mu, failed, stable), closed, devices,
                          target)
    msg = f"wave {w + 1}/{len(bounds)}: {len(admitted)} of {len(order)} devices admitted to revision {target}"
    if policy.paused:
        msg += "; paused (spec.rollout.paused)"
    st = RolloutState(target, phase, w, len(bounds), started, ready_at, "; ".join([msg, *notes]), best, progress_at,
                      held)
    return Step(targets, st, requeue_after=requeue, notes=tuple(notes))


def _over_tolerance(policy: Policy, failed: set[str], index: Mapping[str, int], bounds: Sequence[int],
                    w: int) -> str:
    """Why the failures of some wave up to `w` are more than healthGate.maxFailures allows ("" if not)."""
    per_wave: dict[int, int] = {}
    for d in failed:
        if d in index:
            k = wave_of(index[d], bounds)
            per_wave[k] = per_wave.get(k, 0) + 1
    for k in range(w + 1):
        size = bounds[k] - (bounds[k - 1] if k else 0)
        allowed = tolerated(policy.max_failures, size)
        if per_wave.get(k, 0) > allowed:
            return (f" ({per_wave[k]} of the {size} device(s) of wave {k + 1} failed; healthGate.maxFailures "
                    f"{policy.max_failures} tolerates {allowed})")
    return ""


def _in_windows(targets: dict[str, int], closed: frozenset[str], devices: Mapping[str, DeviceRollout],
                target: int) -> dict[str, int]:
    """A device whose maintenance window is closed keeps serving what it has until it opens (one
    with no workload yet gets one: nothing running is disturbed)."""
    for d in closed:
        cur = devices[d].revision if d in devices else None
        if cur is not None and targets.get(d) == target and cur != target:
            targets[d] = cur
    return targets


def _except_failed(targets: dict[str, int], failed: Sequence[str], devices: Mapping[str, DeviceRollout],
                   back_to: int | None) -> dict[str, int]:
    """Devices that failed the gate alone go back to `back_to` (the stable revision the rollout
    started from) or, with None, keep what they were rolled back to: after the rollout too."""
    for d in failed:
        cur = devices[d].revision if d in devices else None
        rev = back_to if back_to is not None else cur
        if rev is not None:
            targets[d] = rev
    return targets


def _drop_none(d: Mapping[str, int | None]) -> dict[str, int]:
    return {k: v for k, v in d.items() if v is not None}


def _assign(order: Sequence[str], admitted: Sequence[str], devices: Mapping[str, DeviceRollout], target: int,
            keep: Any, max_unavailable: int | None, failed: set[str], stable: int | None) -> dict[str, int]:
    """Admitted devices move to `target`, at most `max_unavailable` of the serving ones in flight at
    once; the others keep what they serve. A device with nothing Ready to keep serving (no workload
    yet, or its server not Ready) moves at once and spends none of the budget, as a DaemonSet makes a
    missing Pod at once and replaces an unavailable one without counting it: holding it back keeps
    nothing serving, and a fleet's first rollout went at a tenth of its speed for it (10,000 devices,
    1,000 at a time, each batch waiting for its slowest device). The waves still bound who gets a
    revision. A device that failed the gate alone goes back to `stable` (with no stable revision, it
    keeps what it has)."""
    adm = set(admitted)
    busy = sum(1 for d in admitted if d in devices and devices[d].revision == target and not devices[d].ready
               and devices[d].online and devices[d].serving_older and d not in failed)
    out: dict[str, int | None] = {}
    for d in order:
        s = devices.get(d)
        cur = s.revision if s else None
        serving = s is not None and s.ready and s.online
        if d in failed:
            out[d] = stable if stable is not None else cur
        elif cur == target:
            out[d] = target  # never rolled twice: on the target it stays
        elif d in adm and (not serving or max_unavailable is None or busy < max_unavailable):
            out[d] = target
            if serving:
                busy += 1
        else:
            out[d] = keep(d)
    return _drop_none(out)


def _fail(policy: Policy, prev: RolloutState, target: int, stable: int | None, order: Sequence[str],
          bounds: Sequence[int], devices: Mapping[str, DeviceRollout], keep: Any, failure: str, w: int,
          now: float) -> Step:
    msg = f"revision {target} failed its health gate in wave {w + 1}/{len(bounds)}: {failure}"
    if policy.on_failure == FailurePolicy.ROLLBACK and stable is not None:
        st = RolloutState(target, ROLLING_BACK, w, len(bounds), prev.wave_started, None,
                          f"{msg}; rolling back to revision {stable}")
        s = _roll_back(policy, st, target, stable, order, bounds, devices, keep, now)
        return replace(s, failure=failure)
    why = (f"onFailure: {FailurePolicy.PAUSE}" if policy.on_failure == FailurePolicy.PAUSE
           else "no earlier good revision to roll back to")
    st = RolloutState(target, HALTED, w, len(bounds), prev.wave_started, None, f"{msg}; halted ({why})")
    frozen = {d: devices[d].revision if d in devices and devices[d].revision is not None else stable for d in order}
    return Step(_drop_none(frozen), st, failure=failure)


def _roll_back(policy: Policy, st: RolloutState, target: int, stable: int, order: Sequence[str],
               bounds: Sequence[int], devices: Mapping[str, DeviceRollout], keep: Any, now: float) -> Step:
    """Back to `stable`: all at once, or wave by wave from the last one reached."""
    index = {d: i for i, d in enumerate(order)}
    rbw = st.wave if policy.rollback_strategy == RollbackStrategy.REVERSE_WAVES else 0
    while True:
        back = [d for d in order if wave_of(index[d], bounds) >= rbw]
        done = all(devices[d].revision == stable and devices[d].ready for d in back
                   if d in devices and devices[d].online and devices[d].revision is not None)
        if not done or rbw == 0:
            break
        rbw -= 1  # this wave is back: the one before it goes next
    targets: dict[str, int] = {}
    back_set = set(back)
    for d in order:
        if d in back_set:
            targets[d] = stable
        elif d in devices and devices[d].revision == target:
            targets[d] = target  # an earlier wave: its turn to go back comes later
        else:
            k = keep(d)
            if k is not None:
                targets[d] = k
    if done and rbw == 0:
        fin = RolloutState(target, ROLLED_BACK, 0, len(bounds), None, None, st.message)
        return Step({d: stable for d in order}, fin, rolled_back=True)
    return Step(targets, replace(st, wave=rbw), requeue_after=None)

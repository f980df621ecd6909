"""Each device's model server as the operator owns it: Pods, one per template, and the next step.

Pure. The operator makes one Pod per device and template (core/manifests.child_pod) and does for it
what a Deployment's controllers did: a new template gets a new Pod beside the old one (surge), the
old one goes once the new one is Ready, a Pod deleted or evicted is made again, and one that is not
Ready within PROGRESS_DEADLINE_SECONDS fails the device. `workload` sums a device's Pods up as the
ChildInfo the rollout, the status and the device rows read; `converge` says what to create, delete
or annotate next. Both read only what the watch shows, so the same Pods give the same answer after
an operator restart, and a template already running is never made twice (its Pod's name is its
template's hash: a second create is refused as AlreadyExists).

Operators of 0.1 made a Deployment per device. Upgrading replaces each with a Pod the same way a
new template is rolled: the new Pod next to the Deployment's, the Deployment (and through the
garbage collector its ReplicaSet and Pod) deleted once the new one is Ready. So a serving model
server is replaced once, never left serving twice, and nothing is orphaned.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from edge_operator.core.plan_memo import PlanMemo
from edge_operator.core.rollout import parse_time
from edge_operator.core.views import ChildInfo, PodInfo

# What a Deployment's progressDeadlineSeconds was: a Pod that has not got Ready in this long (image
# pulls, a fetch over a slow link, a model that never loads) fails the device.
PROGRESS_DEADLINE_SECONDS = 600.0
# A Pod the kubelet evicted or refused (Failed) is replaced, but no sooner than this after it was made,
# so a node that keeps refusing it sees one attempt per this long, not one per reconcile.
REPLACE_AFTER_SECONDS = 10.0


@functools.lru_cache(maxsize=4096)
def _created(iso: str) -> float | None:
    return parse_time(iso)  # a fleet's Pods share few creation seconds; parsed once each


def _age(p: PodInfo, now_ts: float) -> float:
    t = _created(p.created)
    return 0.0 if t is None else max(0.0, now_ts - t)


def workload(pods: Sequence[PodInfo], owner_uid: str, now_ts: float, prefer: str | None = None) -> ChildInfo | None:
    """A device's Pods (of the InferenceDeployment `owner_uid`) summed up as one workload: the Pod of
    template `prefer` if it runs, else the newest (what the device was last told to run); None when
    no Pod of it lives."""
    live = [p for p in pods if p.owner_uid == owner_uid and not p.deleting]
    if not live:
        return None
    cur = next((p for p in live if prefer is not None and p.spec_hash == prefer), None)
    if cur is None:
        cur = max(live, key=lambda p: (p.created, p.name))
    ready = cur.ready and not cur.terminal
    failed, message = False, ""
    if not ready and not cur.terminal and _age(cur, now_ts) >= PROGRESS_DEADLINE_SECONDS:
        failed = True
        why = f" ({cur.reason}{': ' + cur.message if cur.message else ''})" if cur.reason else ""
        message = f"ProgressDeadlineExceeded: pod {cur.name} not Ready after {PROGRESS_DEADLINE_SECONDS:.0f}s{why}"
    n = 1 if ready else 0
    return ChildInfo(
        namespace=cur.namespace, name=cur.name, uid=cur.uid, owner=cur.idep, owner_uid=cur.owner_uid,
        device=cur.device, model=cur.model, spec_hash=cur.spec_hash, sha256=cur.sha256, variant=cur.variant,
        generation=1, observed_generation=1, replicas=1, updated=1, ready=n, available=n,
        progress_failed=failed, message=message, revision=cur.revision,
    )


def settled(pods: Iterable[PodInfo]) -> bool:
    """Every Pod Ready and running: nothing derived from them changes with the clock (a Pod not Ready has
    a deadline, a failed one a pause before it is replaced), so a plan memo may keep it."""
    return all(p.ready and not p.terminal for p in pods)


def workloads(pods: Iterable[PodInfo], legacy: Iterable[ChildInfo], owner_uid: str,
              now_ts: float, memo: PlanMemo | None = None) -> dict[str, ChildInfo]:
    """Each device's workload: its Pods, or where it has none yet, its Deployment of 0.1. With `memo`,
    a device whose Pods are unchanged since last time, all Ready, keeps its summary (the same object:
    what is derived from it is kept too, core/plan_memo.py)."""
    by_device: dict[str, list[PodInfo]] = {}
    for p in pods:
        if p.owner_uid == owner_uid:
            by_device.setdefault(p.device, []).append(p)
    out: dict[str, ChildInfo] = {}
    for dev, ps in by_device.items():
        key = (owner_uid, *ps)
        w = memo.get(("child", dev), key) if memo is not None else None
        if w is None:
            w = workload(ps, owner_uid, now_ts)
            if memo is not None and w is not None and settled(ps):
                memo.keep(("child", dev), key, w)
        if w is not None:
            out[dev] = w
    for ch in legacy:
        if ch.owner_uid == owner_uid and ch.device not in out and not ch.deleting:
            out[ch.device] = ch
    return out


@dataclass(frozen=True)
class Step:
    """What to do on one device next. Empty when it runs what it should, alone."""

    create: bool = False
    delete_pods: tuple[PodInfo, ...] = ()
    delete_legacy: tuple[ChildInfo, ...] = ()
    annotate: PodInfo | None = None  # runs the right template under an older revision number: rewrite it
    requeue_after: float | None = None  # nothing else wakes us then (a deadline, a replacement's pause)


def converge(want_hash: str, revision: int | None, surge: bool, pods: Sequence[PodInfo],
             legacy: Sequence[ChildInfo], owner_uid: str, now_ts: float) -> Step:
    """The next step for one device that should run template `want_hash` (as `revision`).

    `pods` are all the device's Pods of this InferenceDeployment (its own, and a 0.1
    Deployment's), `legacy` that Deployment. With `surge` the new Pod is made beside the old ones,
    which go once it is Ready; without (the Pod holds an accelerator unit) the old ones go first and
    the new one is made once none is left, terminating ones included (they still hold the unit)."""
    own = [p for p in pods if p.owner_uid == owner_uid]
    target = next((p for p in own if p.spec_hash == want_hash and not p.deleting), None)
    others = tuple(p for p in own if p is not target and not p.deleting)
    old_deployments = tuple(ch for ch in legacy if not ch.deleting)
    if target is not None and target.terminal:
        age = _age(target, now_ts)
        if age >= REPLACE_AFTER_SECONDS:
            return Step(delete_pods=(target,))
        return Step(requeue_after=REPLACE_AFTER_SECONDS - age)
    if target is None:
        if any(p.spec_hash == want_hash and p.deleting for p in own):
            return Step()  # its name is taken until it is gone (deleted by hand, evicted): its delete event wakes us
        if surge:
            return Step(create=True)
        if others or old_deployments:
            return Step(delete_pods=others, delete_legacy=old_deployments)
        if any(p for p in pods if p.owner_uid in ("", owner_uid)):
            return Step()  # the old ones are terminating; their delete events wake us
        return Step(create=True)
    annotate = target if target.revision != revision else None
    if target.ready:
        return Step(delete_pods=others, delete_legacy=old_deployments, annotate=annotate)
    left = PROGRESS_DEADLINE_SECONDS - _age(target, now_ts)
    return Step(annotate=annotate, requeue_after=left + 1.0 if left > 0 else None)


def remove(pods: Sequence[PodInfo], legacy: Sequence[ChildInfo], owner_uid: str) -> Step:
    """A device no longer placed: every Pod and Deployment of it goes."""
    return Step(delete_pods=tuple(p for p in pods if p.owner_uid == owner_uid and not p.deleting),
                delete_legacy=tuple(ch for ch in legacy if ch.owner_uid == owner_uid and not ch.deleting))


def legacy_by_device(children: Iterable[ChildInfo]) -> Mapping[str, list[ChildInfo]]:
    out: dict[str, list[ChildInfo]] = {}
    for ch in children:
        out.setdefault(ch.device, []).append(ch)
    return out

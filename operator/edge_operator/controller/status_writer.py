"""Status writes: when to write, what the object holds until our write comes back, and the write.

Two problems of writing status at fleet scale live here, apart from what the status says:

- Coalescing. A rollout changes per-device phases and counts many times a second; a progress-only
  change (core.patches.urgent_change says no) is held for up to an interval, so the changes of a
  rollout step go out in one write. The interval stretches with the number of objects of the
  same kind holding progress, so progress writes stay near `progress_writes_per_second` per kind
  however large the rollout: 1,000 devices starting at once must not turn into 1,000 status writes
  every few seconds while the API server is busiest. Per kind, because 10,000 EdgeDevices holding
  progress would otherwise hold the one InferenceDeployment that rolls them out for 500 s, its
  progress invisible for as long. Urgent changes (a condition, a new generation, the policy's
  keys) are never held.
- The not-yet-echoed overlay. Until the watch brings our write back, the cache is older than the
  truth; comparing against it would write the same status again. What we wrote is remembered with
  the resourceVersion the cache showed then, and stands in for the cached status until the cache
  moves past that version.

Deterministic: time comes from `clock`, so tests need no sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from edge_operator.controller.workqueue import Requeue
from edge_operator.core import patches
from edge_operator.kube.errors import ApiError
from edge_operator.kube.kubeapi import Ref


class StatusApi(Protocol):
    async def patch_status(self, ref: Ref, status_patch: Mapping[str, Any]) -> Mapping[str, Any]: ...


Diff = Callable[[Mapping[str, Any], Mapping[str, Any]], Mapping[str, Any] | None]


@dataclass(frozen=True)
class StatusPolicy:
    """How one kind's status is written: the merge patch, the keys whose change is urgent (besides
    conditions and observedGeneration), and how long progress may be held."""

    diff: Diff
    urgent_keys: tuple[str, ...]
    interval: float
    progress_fields: Mapping[str, frozenset[str]] | None = None  # of urgent keys, progress only


@dataclass(frozen=True)
class Write:
    """What `StatusWriter.write` did: sent `patch` (None: nothing), held the change until `held`,
    or found the object `gone` (the patch was sent and answered 404)."""

    patch: Mapping[str, Any] | None = None
    held: Requeue | None = None
    gone: bool = False


class StatusWriter:
    def __init__(self, api: StatusApi, progress_writes_per_second: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.progress_writes_per_second = progress_writes_per_second
        self.clock = clock
        # Status we wrote, by object, with the resourceVersion the cache showed when we wrote it.
        self._written: dict[Hashable, tuple[str, Mapping[str, Any]]] = {}
        # When a not-yet-written, non-urgent status change was first seen, per kind (the key's type) and object.
        self._pending_since: dict[type, dict[Hashable, float]] = {}

    def effective(self, key: Hashable, rv: str, cached: Mapping[str, Any]) -> Mapping[str, Any]:
        """The status to compare against: ours while the cache (at `rv`) has not seen our last write."""
        w = self._written.get(key)
        if w is not None:
            if w[0] == rv:
                return w[1]
            del self._written[key]
        return cached

    def observed(self, key: Hashable, rv: str) -> None:
        """The watch brought the object at `rv`. A write the cache has moved past is dropped now, not at
        the object's next reconcile: a settled fleet may not reconcile an object for hours, and each kept
        write is a full status (10,000 devices and deployments: tens of MiB held for nothing)."""
        w = self._written.get(key)
        if w is not None and w[0] != rv:
            del self._written[key]

    @property
    def remembered(self) -> int:
        return len(self._written)

    def forget(self, key: Hashable) -> None:
        """The object is gone or going: nothing of it is held or remembered."""
        self._written.pop(key, None)
        self._unpend(key)

    def _unpend(self, key: Hashable) -> None:
        self._pending_since.get(type(key), {}).pop(key, None)

    @property
    def holding(self) -> int:
        return sum(len(of_kind) for of_kind in self._pending_since.values())

    def _hold(self, key: Hashable, interval: float) -> Requeue | None:
        now = self.clock()
        of_kind = self._pending_since.setdefault(type(key), {})
        since = of_kind.setdefault(key, now)
        interval = max(interval, len(of_kind) / self.progress_writes_per_second)
        left = since + interval - now
        return Requeue(left) if left > 0 else None

    async def write(self, key: Hashable, ref: Ref, rv: str, old: Mapping[str, Any], new: Mapping[str, Any],
                    policy: StatusPolicy) -> Write:
        """Write what turns `old` (the effective status, at cache version `rv`) into `new`, now or,
        for progress only, once held long enough. API errors other than 404 propagate (retried)."""
        patch = policy.diff(old, new)
        if not patch:
            return Write()
        if not patches.urgent_change(old, new, policy.urgent_keys, policy.progress_fields):
            held = self._hold(key, policy.interval)
            if held is not None:
                return Write(held=held)
        self._unpend(key)
        try:
            await self.api.patch_status(ref, patch)
        except ApiError as e:
            if e.not_found:
                return Write(patch=patch, gone=True)
            raise
        self._written[key] = (rv, patches.merge_apply(old, patch))
        return Write(patch=patch)

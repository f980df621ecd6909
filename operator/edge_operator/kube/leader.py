"""Leader election on a coordination.k8s.io Lease, with client-go's semantics.

Two replicas never both act: only the holder of an unexpired lease runs the
work queues. Expiry is judged from when *this* replica last saw the lease
record change (not from the holder's clock), so clock skew between nodes
cannot make two leaders. The holder renews every `retry_period`; if it cannot
renew within `renew_deadline` it steps down before anyone may take over
(`lease_duration` > `renew_deadline`). On shutdown it releases the lease so a
standby takes over at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge_operator.kube.errors import ApiError
from edge_operator.kube.kubeapi import KubeApi, Ref
from edge_operator.telemetry import metrics

log = logging.getLogger("edge_operator.leader")


def _micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class LeaderElector:
    api: KubeApi
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    on_change: Callable[[bool], None] | None = None
    leading: asyncio.Event = field(default_factory=asyncio.Event)
    last_renew: float = 0.0  # monotonic time of the last successful acquire/renew
    _observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
    _observed_at: float = 0.0

    @property
    def ref(self) -> Ref:
        return Ref("coordination.k8s.io/v1", "leases", self.name, self.namespace)

    def _spec(self, transitions: int, acquire: str | None) -> dict[str, Any]:
        now = _micro_now()
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration),
            "acquireTime": acquire or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def _try(self) -> bool:
        """One acquire-or-renew attempt; True if we hold the lease afterwards."""
        try:
            lease = await self.api.get(self.ref)
        except ApiError as e:
            if not e.not_found:
                raise
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(0, None)}
            try:
                await self.api.request("POST", Ref("coordination.k8s.io/v1", "leases", None, self.namespace),
                                       body=body)
            except ApiError as e2:
                if e2.conflict:
                    return False
                raise
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, str(spec.get("renewTime")))
        now = time.monotonic()
        if record != self._observed:
            self._observed, self._observed_at = record, now
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and now < self._observed_at + duration:
            self._set(False)  # someone else holds an unexpired lease: never act alongside it
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder != self.identity:
            transitions += 1
            acquire = None
        else:
            acquire = spec.get("acquireTime")
        lease["spec"] = self._spec(transitions, acquire)
        try:
            # PUT with the resourceVersion we read: if another replica wrote in between, we get 409.
            await self.api.request("PUT", self.ref, body=lease)
        except ApiError as e:
            if e.conflict:
                return False
            raise
        return True

    def _set(self, leading: bool) -> None:
        if leading == self.leading.is_set():
            return
        if leading:
            self.leading.set()
            log.info("became leader", extra={"identity": self.identity, "lease": f"{self.namespace}/{self.name}"})
        else:
            self.leading.clear()
            log.warning("lost leadership", extra={"identity": self.identity})
        metrics.LEADER.set(1 if leading else 0)
        if self.on_change:
            self.on_change(leading)

    async def run(self) -> None:
        while True:
            try:
                ok = await self._try()
            except (ApiError, OSError) as e:
                log.warning("lease %s/%s: %s", self.namespace, self.name, e)
                ok = False
            now = time.monotonic()
            if ok:
                self.last_renew = now
                self._set(True)
            elif self.leading.is_set() and now - self.last_renew > self.renew_deadline:
                self._set(False)
            await asyncio.sleep(self.retry_period)

    async def release(self) -> None:
        """Give the lease up on shutdown so a standby can take over without waiting for expiry."""
        if not self.leading.is_set():
            return
        self._set(False)
        try:
            lease = await self.api.get(self.ref)
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = ""
                lease["spec"]["leaseDurationSeconds"] = 1
                await self.api.request("PUT", self.ref, body=lease)
        except (ApiError, OSError) as e:
            log.warning("could not release the lease: %s", e)

    def healthy(self) -> bool:
        """False if we think we lead but have not renewed for longer than the lease lasts."""
        return not self.leading.is_set() or time.monotonic() - self.last_renew < self.lease_duration

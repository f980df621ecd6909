"""The controller's wiring: caches, queues, reconcilers and the status writer, and their lifecycle.

kopf keeps the caches (cache.py); its event hooks call the `on_*` methods here, which ask the
event mapper (events.py) which keys to queue. Each reconciler has its own queue of its own typed
keys and its own workers, as controller-runtime gives each controller: a storm of device heartbeats
at fleet scale cannot starve the deployments' reconciles, and each queue's depth and retries are a
metric of their own (label `queue`). InferenceDeployments get `--workers`; EdgeDevice status, which
mostly holds and coalesces, a quarter of that; Node discovery two; model verification, which
downloads, `--verify-workers`. Nothing is reconciled before kopf has filled every index (kopf holds
the event handlers until then), so a reconcile never acts on a half-known fleet, and only while this
replica leads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, TypeVar

from edge_operator.controller.api import EventRecorder
from edge_operator.controller.cache import Cache, Catalog, Index
from edge_operator.controller.config import OperatorConfig
from edge_operator.controller.events import EventMapper, Work
from edge_operator.controller.keys import DeploymentKey, DeviceKey, ModelKey, NodeKey
from edge_operator.controller.reconcilers.deployment import DeploymentReconciler
from edge_operator.controller.reconcilers.device import DeviceReconciler
from edge_operator.controller.reconcilers.model import ModelReconciler
from edge_operator.controller.reconcilers.node import NodeReconciler
from edge_operator.controller.status_writer import StatusWriter
from edge_operator.controller.workqueue import Requeue, WorkQueue
from edge_operator.core.site_cache import site_cache_info
from edge_operator.core.status import needs_verification
from edge_operator.core.views import ModelState, child_info, pod_info
from edge_operator.kube.kubeapi import KubeApi
from edge_operator.kube.leader import LeaderElector
from edge_operator.kube.verify import Verifier
from edge_operator.telemetry import metrics

log = logging.getLogger("edge_operator.controller")

K = TypeVar("K", bound=Hashable)


class Manager:
    def __init__(self, api: KubeApi, cfg: OperatorConfig) -> None:
        self.api = api
        self.cfg = cfg
        self.cache = Cache()
        self.catalog = Catalog(self.cache)
        self.synced = asyncio.Event()
        # Its own connections: a renewal never waits behind a burst of creates (KubeApi.separate).
        self.lease_api = api.separate()
        self.elector = LeaderElector(self.lease_api, cfg.namespace, cfg.lease_name, cfg.identity,
                                     on_change=self._leadership_changed)
        gate = self.elector.leading
        self.verifier = Verifier(api, cfg.verify)
        self.events = EventMapper(self.cache, self.catalog, cfg.fanout_delay, cfg.status_delay)
        recorder = EventRecorder(api)
        self.writer = writer = StatusWriter(api, cfg.progress_writes_per_second)
        self.deployments = DeploymentReconciler(api, self.cache, self.catalog, writer, recorder, cfg.images,
                                                cfg.status_interval)
        self.devices = DeviceReconciler(self.cache, writer, recorder, cfg.device_status_interval,
                                        cfg.heartbeat_resolution)
        self.nodes = NodeReconciler(api, self.cache)
        self.models = ModelReconciler(api, self.cache, self.verifier, recorder)
        self.deployment_q: WorkQueue[DeploymentKey] = WorkQueue(
            "deployment", _timed(self.deployments.metrics_label, self.deployments.reconcile),
            workers=cfg.workers, base_delay=1.0, max_delay=300.0, gate=gate)
        self.device_q: WorkQueue[DeviceKey] = WorkQueue(
            "device", _timed(self.devices.metrics_label, self.devices.reconcile),
            workers=max(1, cfg.workers // 4), base_delay=1.0, max_delay=300.0, gate=gate)
        self.node_q: WorkQueue[NodeKey] = WorkQueue(
            "node", _timed(self.nodes.metrics_label, self.nodes.reconcile),
            workers=2, base_delay=1.0, max_delay=300.0, gate=gate)
        self.verify_q: WorkQueue[ModelKey] = WorkQueue(
            "verify", _timed(self.models.metrics_label, self.models.reconcile),
            workers=cfg.verify_workers, base_delay=5.0, max_delay=300.0, gate=gate)
        self._queues: tuple[WorkQueue[Any], ...] = (self.deployment_q, self.device_q, self.node_q, self.verify_q)
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifecycle

    def bind(self, indexes: Mapping[str, Index]) -> None:
        self.cache.bind(indexes)

    def start(self) -> None:
        for q in self._queues:
            q.start()
        if self.cfg.leader_election:
            self._tasks.append(asyncio.create_task(self.elector.run(), name="leader-election"))
        else:
            self.elector.last_renew = time.monotonic()
            self.elector._set(True)
        self._tasks.append(asyncio.create_task(self._resync_loop(), name="resync"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for q in self._queues:
            await q.stop()
        if self.cfg.leader_election:
            await self.elector.release()
        await self.lease_api.close()
        await self.verifier.close()

    def _leadership_changed(self, leading: bool) -> None:
        if leading and self.synced.is_set():
            self.enqueue_all()

    def mark_synced(self) -> None:
        if not self.synced.is_set():
            log.info("caches synced", extra=self.cache.sizes())
            self.synced.set()

    async def _resync_loop(self) -> None:
        await self.synced.wait()
        while True:
            await asyncio.sleep(self.cfg.resync_seconds)
            self.enqueue_all()

    def enqueue_all(self) -> None:
        """Level-triggered safety net: look at everything again (periodically, and on becoming leader)."""
        for key in self.cache.deployment_keys():
            self.deployment_q.add(key)
        for name in self.cache.device_names():
            self.device_q.add(DeviceKey(name))
        for name in self.cache.node_names():
            self.node_q.add(NodeKey(name))
        for m in self.cache.models():
            if needs_verification(m):
                self.verify_q.add(ModelKey(*m.key))

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        tasks_ok = all(not t.done() for t in self._tasks)
        detail = {
            "synced": self.synced.is_set(),
            "leader": self.elector.leading.is_set(),
            "reconcileWorkers": all(q.alive() for q in self._queues if q is not self.verify_q),
            "verifyWorkers": self.verify_q.alive(),
            "backgroundTasks": tasks_ok,
            "leaseFresh": self.elector.healthy(),
            "queued": {q.name: len(q) for q in self._queues},
        }
        ok = tasks_ok and all(q.alive() for q in self._queues) and self.elector.healthy()
        return ok, detail

    def snapshot(self) -> dict[str, dict[str, int]]:
        """For the fleet gauges, at scrape time."""
        if not self.cache.bound:
            return {}
        models: dict[str, int] = {str(state): 0 for state in ModelState}
        for m in self.cache.models():
            models[m.state] = models.get(m.state, 0) + 1
        devices = {"true": 0, "false": 0}
        for d in self.catalog.get().values():
            devices["true" if d.online else "false"] += 1
        counts = self.deployments.counts.values()
        return {"models": models, "devices": devices,
                "placements": {"placed": sum(x[0] for x in counts), "ready": sum(x[1] for x in counts),
                               "unplaced": sum(x[2] for x in counts)}}

    # ------------------------------------------------------------------ event hooks

    def _queue(self, work: Work) -> None:
        for key, delay in work.reconcile:
            if isinstance(key, DeploymentKey):
                # Coalesced events wait at least PACE_FACTOR times the deployment's last plan (pace).
                self.deployment_q.add_after(key, max(delay, self.deployments.pace(key)) if delay > 0 else 0.0)
            elif isinstance(key, DeviceKey):
                self.device_q.add_after(key, delay)
            else:
                self.node_q.add_after(key, delay)
        for model in work.verify:
            self.verify_q.add(model)
        if work.gone is not None:
            self.deployments.forget(work.gone)

    def on_node(self, name: str) -> None:
        metrics.WATCH_EVENTS.labels("Node").inc()
        self._queue(self.events.node(name))

    def on_device(self, name: str) -> None:
        metrics.WATCH_EVENTS.labels("EdgeDevice").inc()
        info = self.cache.device(name)
        if info is not None:
            self.writer.observed(DeviceKey(name), info.resource_version)
        self._queue(self.events.device(name))

    def on_model(self, namespace: str, name: str) -> None:
        metrics.WATCH_EVENTS.labels("EdgeModel").inc()
        self._queue(self.events.model(ModelKey(namespace, name)))

    def on_idep(self, namespace: str, name: str) -> None:
        metrics.WATCH_EVENTS.labels("InferenceDeployment").inc()
        key = DeploymentKey(namespace, name)
        info = self.cache.deployment(key)
        if info is not None:
            self.writer.observed(key, info.resource_version)
        self._queue(self.events.deployment(key))

    def on_child(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        metrics.WATCH_EVENTS.labels("Deployment").inc()
        sc = site_cache_info(body)
        if sc is not None:
            self.deployments.saw_site_cache(sc, deleted=event_type == "DELETED")
            self._queue(self.events.site_cache(event_type, sc))
            return
        ch = child_info(body)
        if ch is None:
            return
        self._queue(self.events.child(event_type, ch))

    def on_pod(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        metrics.WATCH_EVENTS.labels("Pod").inc()
        p = pod_info(body)
        ours = p.owned and self.deployments.saw_pod(p, deleted=event_type == "DELETED")
        self._queue(self.events.pod(event_type, p, deleted_by_us=ours))


def _timed(label: str, run: Callable[[K], Awaitable[Requeue | None]]) -> Callable[[K], Awaitable[Requeue | None]]:
    """`run`, counted and timed per kind (edgeai_operator_reconciles_total{kind}, ..._seconds{kind})."""

    async def timed(key: K) -> Requeue | None:
        start = time.monotonic()
        outcome = "success"
        try:
            return await run(key)
        except Exception:
            outcome = "error"
            raise
        finally:
            metrics.RECONCILES.labels(label, outcome).inc()
            metrics.RECONCILE_SECONDS.labels(label).observe(time.monotonic() - start)

    return timed

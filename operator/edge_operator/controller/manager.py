"""The controller's wiring: caches, queues, reconcilers and the status writer, and their lifecycle.

kopf keeps the caches (cache.py); its event hooks call the `on_*` methods here, which ask the
event mapper (events.py) which keys to queue. One queue runs the InferenceDeployment, EdgeDevice and
Node reconcilers on one pool of workers (their concurrency against the API server is one budget);
model verification, which downloads, has a queue and workers of its own. Nothing is reconciled
before kopf has filled every index (kopf holds the event handlers until then), so a reconcile never
acts on a half-known fleet, and only while this replica leads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Hashable, Mapping
from typing import Any

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
from edge_operator.core.status import needs_verification
from edge_operator.core.views import child_info, pod_info
from edge_operator.kube.kubeapi import KubeApi
from edge_operator.kube.leader import LeaderElector
from edge_operator.kube.verify import Verifier
from edge_operator.telemetry import metrics

log = logging.getLogger("edge_operator.controller")


class Manager:
    def __init__(self, api: KubeApi, cfg: OperatorConfig) -> None:
        self.api = api
        self.cfg = cfg
        self.cache = Cache()
        self.catalog = Catalog(self.cache)
        self.synced = asyncio.Event()
        self.elector = LeaderElector(api, cfg.namespace, cfg.lease_name, cfg.identity,
                                     on_change=self._leadership_changed)
        gate = self.elector.leading
        self.reconcile_q = WorkQueue("reconcile", self._reconcile, workers=cfg.workers, base_delay=1.0,
                                     max_delay=300.0, gate=gate)
        self.verify_q = WorkQueue("verify", self._verify, workers=cfg.verify_workers, base_delay=5.0,
                                  max_delay=300.0, gate=gate)
        self.verifier = Verifier(api, cfg.verify)
        self.events = EventMapper(self.cache, self.catalog, cfg.fanout_delay, cfg.status_delay)
        recorder = EventRecorder(api)
        writer = StatusWriter(api, cfg.progress_writes_per_second)
        self.deployments = DeploymentReconciler(api, self.cache, self.catalog, writer, recorder, cfg.image,
                                                cfg.status_interval)
        self.devices = DeviceReconciler(self.cache, writer, recorder, cfg.device_status_interval,
                                        cfg.heartbeat_resolution)
        self.nodes = NodeReconciler(api, self.cache)
        self.models = ModelReconciler(api, self.cache, self.verifier, recorder)
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifecycle

    def bind(self, indexes: Mapping[str, Index]) -> None:
        self.cache.bind(indexes)

    def start(self) -> None:
        self.reconcile_q.start()
        self.verify_q.start()
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
        await self.reconcile_q.stop()
        await self.verify_q.stop()
        if self.cfg.leader_election:
            await self.elector.release()
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
            self.reconcile_q.add(key)
        for name in self.cache.device_names():
            self.reconcile_q.add(DeviceKey(name))
        for name in self.cache.node_names():
            self.reconcile_q.add(NodeKey(name))
        for m in self.cache.models():
            if needs_verification(m):
                self.verify_q.add(ModelKey(*m.key))

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        tasks_ok = all(not t.done() for t in self._tasks)
        detail = {
            "synced": self.synced.is_set(),
            "leader": self.elector.leading.is_set(),
            "reconcileWorkers": self.reconcile_q.alive(),
            "verifyWorkers": self.verify_q.alive(),
            "backgroundTasks": tasks_ok,
            "leaseFresh": self.elector.healthy(),
            "queued": {"reconcile": len(self.reconcile_q), "verify": len(self.verify_q)},
        }
        ok = tasks_ok and self.reconcile_q.alive() and self.verify_q.alive() and self.elector.healthy()
        return ok, detail

    def snapshot(self) -> dict[str, dict[str, int]]:
        """For the fleet gauges, at scrape time."""
        if not self.cache.bound:
            return {}
        models: dict[str, int] = {"Verified": 0, "Failed": 0, "Pending": 0}
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
            self.reconcile_q.add_after(key, delay)
        for model in work.verify:
            self.verify_q.add(model)
        if work.gone is not None:
            self.deployments.forget(work.gone)

    def on_node(self, name: str) -> None:
        metrics.WATCH_EVENTS.labels("Node").inc()
        self._queue(self.events.node(name))

    def on_device(self, name: str) -> None:
        metrics.WATCH_EVENTS.labels("EdgeDevice").inc()
        self._queue(self.events.device(name))

    def on_model(self, namespace: str, name: str) -> None:
        metrics.WATCH_EVENTS.labels("EdgeModel").inc()
        self._queue(self.events.model(ModelKey(namespace, name)))

    def on_idep(self, namespace: str, name: str) -> None:
        metrics.WATCH_EVENTS.labels("InferenceDeployment").inc()
        self._queue(self.events.deployment(DeploymentKey(namespace, name)))

    def on_child(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        metrics.WATCH_EVENTS.labels("Deployment").inc()
        ch = child_info(body)
        if ch is None:
            return
        self.deployments.saw_workload(ch, deleted=event_type == "DELETED")
        self._queue(self.events.child(event_type, ch))

    def on_pod(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        metrics.WATCH_EVENTS.labels("Pod").inc()
        self._queue(self.events.pod(event_type, pod_info(body)))

    # ------------------------------------------------------------------ reconcile

    async def _reconcile(self, key: Hashable) -> Requeue | None:
        if isinstance(key, DeploymentKey):
            return await _timed(self.deployments.metrics_label, self.deployments.reconcile(key))
        if isinstance(key, DeviceKey):
            return await _timed(self.devices.metrics_label, self.devices.reconcile(key))
        if isinstance(key, NodeKey):
            return await _timed(self.nodes.metrics_label, self.nodes.reconcile(key))
        raise TypeError(f"not a reconcile key: {key!r}")

    async def _verify(self, key: Hashable) -> Requeue | None:
        if not isinstance(key, ModelKey):
            raise TypeError(f"not a model key: {key!r}")
        return await _timed(self.models.metrics_label, self.models.reconcile(key))


async def _timed(label: str, run: Awaitable[Requeue | None]) -> Requeue | None:
    start = time.monotonic()
    outcome = "success"
    try:
        return await run
    except Exception:
        outcome = "error"
        raise
    finally:
        metrics.RECONCILES.labels(label, outcome).inc()
        metrics.RECONCILE_SECONDS.labels(label).observe(time.monotonic() - start)

"""The controller: turns watch events into queued keys, and keys into reconciles.

kopf keeps the caches (its indexes hold one small summary per object, built by
`views.py`); the event hooks here only decide *which* keys to queue, cheaply
and without listing anything; the reconcile functions read the caches, call a
pure planner and apply what it returns through `kubeapi`. Nothing here runs
before kopf has filled every index (kopf holds the event handlers until then),
so a reconcile never acts on a half-known fleet.

Cost per event is bounded: a Node or EdgeDevice change is matched against the
deployments' selectors (O(deployments)) rather than reconciling all of them;
a deployment's placement is cached until the device catalogue, its model or
its spec changes, so a pod or workload event costs O(devices it placed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import kopf

from edge_operator.controller.config import OperatorConfig
from edge_operator.controller.workqueue import Requeue, WorkQueue
from edge_operator.core import conditions as cond
from edge_operator.core import patches, planner
from edge_operator.core.catalog import DeviceCatalog, SelectorIndex
from edge_operator.core.manifests import edge_device_for_node
from edge_operator.core.placement import DeviceView, Placement
from edge_operator.core.selectors import matches
from edge_operator.core.status import device_status, model_status, needs_verification, verifying_status
from edge_operator.core.views import (
    ChildInfo,
    DeviceInfo,
    IdepInfo,
    ModelInfo,
    NodeInfo,
    PodInfo,
    child_info,
    device_view,
    pod_info,
)
from edge_operator.kube.errors import ApiError, RetryableError
from edge_operator.kube.kubeapi import KubeApi, Ref
from edge_operator.kube.leader import LeaderElector
from edge_operator.kube.verify import Verifier
from edge_operator.telemetry import metrics
from edgeai_api import constants as c

log = logging.getLogger("edge_operator.controller")

# kopf index ids (also the names of the handler functions' kwargs).
IDX_NODES = "edgeai_nodes"
IDX_DEVICES = "edgeai_devices"
IDX_DEVICES_BY_NODE = "edgeai_devices_by_node"
IDX_MODELS = "edgeai_models"
IDX_IDEPS = "edgeai_ideps"
IDX_IDEPS_BY_MODEL = "edgeai_ideps_by_model"
IDX_CHILDREN = "edgeai_children"
IDX_CHILDREN_BY_DEVICE = "edgeai_children_by_device"
IDX_PODS = "edgeai_pods"
ALL_INDEXES = (IDX_NODES, IDX_DEVICES, IDX_DEVICES_BY_NODE, IDX_MODELS, IDX_IDEPS, IDX_IDEPS_BY_MODEL,
               IDX_CHILDREN, IDX_CHILDREN_BY_DEVICE, IDX_PODS)

APPLY_CONCURRENCY = 16
# Status keys whose change is written at once, not coalesced with progress: a rollout's state
# changes only at transitions, and an operator restarted mid-rollout resumes from what was written.
URGENT_IDEP_KEYS = ("placed", "selected", "revision", "currentRevision", "rollout", "revisions")


@dataclass
class _PlacementCache:
    key: tuple[Any, ...]
    placement: Placement


class Controller:
    def __init__(self, api: KubeApi, cfg: OperatorConfig) -> None:
        self.api = api
        self.cfg = cfg
        self.indices: Mapping[str, kopf.Index[Any, Any]] = {}
        self.synced = asyncio.Event()
        self.elector = LeaderElector(api, cfg.namespace, cfg.lease_name, cfg.identity,
                                     on_change=self._leadership_changed)
        gate = self.elector.leading
        self.reconcile_q = WorkQueue("reconcile", self._dispatch, workers=cfg.workers, base_delay=1.0,
                                     max_delay=300.0, gate=gate)
        self.verify_q = WorkQueue("verify", self._verify, workers=cfg.verify_workers, base_delay=5.0,
                                  max_delay=300.0, gate=gate)
        self.verifier = Verifier(api, cfg.verify)
        # What the event hooks saw last, to queue work only on changes that matter.
        self._node_seen: dict[str, tuple[Any, ...]] = {}
        self._device_seen: dict[str, tuple[Any, ...]] = {}
        self._device_labels: dict[str, Mapping[str, str]] = {}
        self._model_seen: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._model_reverify: dict[tuple[str, str], str | None] = {}
        self._idep_seen: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._pod_seen: dict[tuple[str, str], tuple[Any, ...]] = {}
        # Device catalogue, rebuilt lazily when a device or node changed.
        self._catalog_version = 0
        self._catalog_built = -1
        self._catalog = DeviceCatalog({})
        # Deployments by the label terms that anchor their selectors: a device change concerns
        # only the deployments found here, not all of them.
        self._selectors = SelectorIndex()
        self._placements: dict[tuple[str, ...], _PlacementCache] = {}
        # Children applied but not yet seen back through the watch: name -> spec hash.
        self._applied: dict[tuple[str, str], str] = {}
        self._counts: dict[tuple[str, str], tuple[int, int, int]] = {}
        # Status we wrote, keyed by object, with the resourceVersion the cache showed when we wrote
        # it: until the watch brings our write back, the cache is older than the truth, and
        # comparing against it would write the same status again.
        self._written: dict[Hashable, tuple[str, Mapping[str, Any]]] = {}
        # When a not-yet-written, non-urgent status change was first seen, per object.
        self._pending_since: dict[Hashable, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._event_tasks: set[asyncio.Task[None]] = set()
        self.started_at = time.monotonic()

    # ------------------------------------------------------------------ lifecycle

    def bind(self, indices: Mapping[str, kopf.Index[Any, Any]]) -> None:
        self.indices = indices

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
            log.info("caches synced", extra={
                "nodes": len(self._idx(IDX_NODES)), "devices": len(self._idx(IDX_DEVICES)),
                "models": len(self._idx(IDX_MODELS)), "deployments": len(self._idx(IDX_IDEPS))})
            self.synced.set()

    async def _resync_loop(self) -> None:
        await self.synced.wait()
        while True:
            await asyncio.sleep(self.cfg.resync_seconds)
            self.enqueue_all()

    def enqueue_all(self) -> None:
        """Level-triggered safety net: look at everything again (periodically, and on becoming leader)."""
        for key in self._idx(IDX_IDEPS):
            self.reconcile_q.add(("idep", *key))
        for name in self._idx(IDX_DEVICES):
            self.reconcile_q.add(("device", name))
        for name in self._idx(IDX_NODES):
            self.reconcile_q.add(("node", name))
        for key in self._idx(IDX_MODELS):
            m = self._one(IDX_MODELS, key)
            if m is not None and needs_verification(m):
                self.verify_q.add(key)

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

    # ------------------------------------------------------------------ index access

    def _idx(self, name: str) -> kopf.Index[Any, Any]:
        return self.indices[name]

    def _one(self, name: str, key: Hashable) -> Any:
        store = self._idx(name).get(key)
        if not store:
            return None
        return next(iter(store))

    def _all(self, name: str, key: Hashable) -> list[Any]:
        store = self._idx(name).get(key)
        return list(store) if store else []

    def _values(self, name: str) -> Iterator[Any]:
        idx = self._idx(name)
        for key in list(idx):
            store = idx.get(key)
            if store:
                yield from store

    def catalog(self) -> DeviceCatalog:
        """The device catalogue: built once from the caches, then kept by the event hooks one
        device at a time (never rebuilt per event: that would be O(fleet) per heartbeat)."""
        if self._catalog_built < 0:
            self._catalog = DeviceCatalog({d.name: device_view(d, self._one(IDX_NODES, d.node_name))
                                           for d in self._values(IDX_DEVICES)})
            self._catalog_built = self._catalog_version
        return self._catalog

    def _refresh_device(self, name: str) -> DeviceView | None:
        """Re-join one device with its node into the catalogue; its view, or None if it is gone."""
        dev: DeviceInfo | None = self._one(IDX_DEVICES, name)
        cat = self.catalog()
        if dev is None:
            cat.remove(name)
            return None
        view = device_view(dev, self._one(IDX_NODES, dev.node_name))
        cat.put(view)
        return view

    def snapshot(self) -> dict[str, dict[str, int]]:
        """For the fleet gauges, at scrape time."""
        models: dict[str, int] = {"Verified": 0, "Failed": 0, "Pending": 0}
        if not self.indices:
            return {}
        for m in self._values(IDX_MODELS):
            models[m.state] = models.get(m.state, 0) + 1
        devices = {"true": 0, "false": 0}
        for d in self.catalog().values():
            devices["true" if d.online else "false"] += 1
        placed = sum(x[0] for x in self._counts.values())
        ready = sum(x[1] for x in self._counts.values())
        unplaced = sum(x[2] for x in self._counts.values())
        return {"models": models, "devices": devices,
                "placements": {"placed": placed, "ready": ready, "unplaced": unplaced}}

    # ------------------------------------------------------------------ event hooks

    def on_node(self, name: str) -> None:
        metrics.WATCH_EVENTS.labels("Node").inc()
        info: NodeInfo | None = self._one(IDX_NODES, name)
        cur = None if info is None else (info.placement_key(), info.health.online, info.edge)
        dev_names = [str(d) for d in self._all(IDX_DEVICES_BY_NODE, name)]
        if cur != self._node_seen.get(name):
            if cur is None:
                self._node_seen.pop(name, None)
            else:
                self._node_seen[name] = cur
            self._catalog_version += 1
            self.reconcile_q.add(("node", name))
            for d in dev_names:
                self._fan_out(d)
        for d in dev_names:
            self.reconcile_q.add_after(("device", d), self.cfg.status_delay)

    def on_device(self, name: str) -> None:
        metrics.WATCH_EVENTS.labels("EdgeDevice").inc()
        info: DeviceInfo | None = self._one(IDX_DEVICES, name)
        cur = None if info is None else info.placement_key()
        if cur != self._device_seen.get(name):
            if cur is None:
                self._device_seen.pop(name, None)
            else:
                self._device_seen[name] = cur
            self._catalog_version += 1
            self._fan_out(name)
        if info is None:
            self.reconcile_q.add(("node", name))  # a discovered device deleted by hand comes back
        else:
            self.reconcile_q.add(("device", name))

    def _fan_out(self, device: str) -> None:
        """Queue the deployments a device change can matter to: those whose selector matches
        the device's labels before or after, and those running something on it."""
        view = self._refresh_device(device)
        old = self._device_labels.get(device)
        new = view.labels if view is not None else None
        if new is None:
            self._device_labels.pop(device, None)
        else:
            self._device_labels[device] = new
        delay = self.cfg.fanout_delay
        keys: set[Hashable] = set()
        for labels in (old, new):
            if labels is not None:
                keys |= self._selectors.candidates(labels)
        for key in keys:
            idep: IdepInfo | None = self._one(IDX_IDEPS, key)
            if idep is None:
                continue
            if (old is not None and matches(idep.selector, old)) or (new is not None and matches(idep.selector, new)):
                self.reconcile_q.add_after(("idep", idep.namespace, idep.name), delay)
        for ch in self._all(IDX_CHILDREN_BY_DEVICE, device):
            self.reconcile_q.add_after(("idep", ch.namespace, ch.owner), delay)

    def on_model(self, namespace: str, name: str) -> None:
        metrics.WATCH_EVENTS.labels("EdgeModel").inc()
        key = (namespace, name)
        info: ModelInfo | None = self._one(IDX_MODELS, key)
        prev = self._model_seen.get(key)
        cur = None if info is None else info.placement_key()
        # placement_key()[1] is the generation. A new re-verify request also starts a check.
        new_request = info is not None and info.reverify != self._model_reverify.get(key)
        if info is None:
            self._model_reverify.pop(key, None)
        else:
            self._model_reverify[key] = info.reverify
        if info is not None and needs_verification(info) and (
                prev is None or prev[1] != info.generation or new_request):
            # Only a new generation (or first sight) starts a check: retries of a failed
            # check are the verify queue's backoff, not the echo of our own status write.
            self.verify_q.add(key)
        if cur != prev:
            if cur is None:
                self._model_seen.pop(key, None)
            else:
                self._model_seen[key] = cur
            for idep in self._all(IDX_IDEPS_BY_MODEL, key):
                self.reconcile_q.add(("idep", namespace, str(idep)))

    def on_idep(self, namespace: str, name: str) -> None:
        metrics.WATCH_EVENTS.labels("InferenceDeployment").inc()
        key = (namespace, name)
        info: IdepInfo | None = self._one(IDX_IDEPS, key)
        cur = None if info is None else (info.uid, info.generation, info.deleting)
        if cur == self._idep_seen.get(key):
            return  # only our own status write came back
        if cur is None:
            self._idep_seen.pop(key, None)
            self._placements.pop(key, None)
            self._placements.pop((*key, "other"), None)
            self._counts.pop(key, None)
            self._selectors.remove(key)
            return
        self._idep_seen[key] = cur
        assert info is not None
        self._selectors.put(key, info.selector)
        self.reconcile_q.add(("idep", namespace, name))

    def on_child(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        metrics.WATCH_EVENTS.labels("Deployment").inc()
        ch = child_info(body)
        if ch is None:
            return
        akey = (ch.namespace, ch.name)
        if event_type == "DELETED" or self._applied.get(akey) == ch.spec_hash:
            self._applied.pop(akey, None)  # the cache caught up with what we applied, or it is gone
        if event_type == "DELETED":
            self.reconcile_q.add(("idep", ch.namespace, ch.owner))  # deleted by hand: bring it back now
        else:
            self.reconcile_q.add_after(("idep", ch.namespace, ch.owner), self.cfg.status_delay)
        self.reconcile_q.add_after(("device", ch.device), self.cfg.status_delay)

    def on_pod(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        metrics.WATCH_EVENTS.labels("Pod").inc()
        p = pod_info(body)
        key = (p.namespace, p.name)
        cur = (p.phase, p.ready, p.reason, p.restarts, p.init_exit_code, p.init_running, p.deleting)
        if event_type == "DELETED":
            self._pod_seen.pop(key, None)
        elif self._pod_seen.get(key) == cur:
            return
        else:
            self._pod_seen[key] = cur
        if p.idep:
            self.reconcile_q.add_after(("idep", p.namespace, p.idep), self.cfg.status_delay)

    # ------------------------------------------------------------------ reconcile

    def _effective_status(self, key: Hashable, rv: str, cached: Mapping[str, Any]) -> Mapping[str, Any]:
        w = self._written.get(key)
        if w is not None:
            if w[0] == rv:
                return w[1]  # the cache has not seen our last write yet
            del self._written[key]
        return cached

    def _hold(self, key: Hashable, interval: float) -> Requeue | None:
        """Hold a progress-only status change for up to `interval`, so the changes of a rollout
        step are written together; None once it has waited long enough.

        The interval stretches with the number of objects holding progress, so that progress
        writes stay near `progress_writes_per_second` however large the rollout: 1,000 devices
        starting at once must not turn into 1,000 status writes every few seconds while the API
        server is busiest. Condition changes (Ready, Degraded) are never held."""
        now = time.monotonic()
        since = self._pending_since.setdefault(key, now)
        interval = max(interval, len(self._pending_since) / self.cfg.progress_writes_per_second)
        left = since + interval - now
        return Requeue(left) if left > 0 else None

    def _remember(self, key: Hashable, rv: str, old: Mapping[str, Any], patch: Mapping[str, Any]) -> None:
        self._written[key] = (rv, patches.merge_apply(old, patch))

    async def _dispatch(self, key: Hashable) -> Requeue | None:
        assert isinstance(key, tuple)
        kind = key[0]
        start = time.monotonic()
        outcome = "success"
        try:
            if kind == "idep":
                return await self.reconcile_idep(key[1], key[2])
            if kind == "device":
                return await self.reconcile_device(key[1])
            if kind == "node":
                await self.reconcile_node(key[1])
            return None
        except Exception:
            outcome = "error"
            raise
        finally:
            metrics.RECONCILES.labels(kind, outcome).inc()
            metrics.RECONCILE_SECONDS.labels(kind).observe(time.monotonic() - start)

    def _placement(self, idep: IdepInfo, model: ModelInfo, catalog: DeviceCatalog, cache: bool = True) -> Placement:
        """Placement of `model`'s builds, cached per deployment; another revision's builds (a rollback
        target, `cache=False`) are kept in a second slot so the two do not evict each other."""
        key = (self._catalog_version, model.placement_key(), idep.uid, idep.generation)
        slot = idep.key if cache else (*idep.key, "other")
        cached = self._placements.get(slot)
        if cached is not None and cached.key == key:
            return cached.placement
        placement = planner.compute_placement(idep, model, catalog)
        self._placements[slot] = _PlacementCache(key, placement)
        return placement

    async def reconcile_idep(self, namespace: str, name: str) -> Requeue | None:
        idep: IdepInfo | None = self._one(IDX_IDEPS, (namespace, name))
        if idep is None or idep.deleting:
            self._written.pop(("idep", namespace, name), None)
            self._pending_since.pop(("idep", namespace, name), None)
            return None  # the garbage collector removes the children through their ownerReferences
        wkey = ("idep", namespace, name)
        idep = replace(idep, status=self._effective_status(wkey, idep.resource_version, idep.status))
        model: ModelInfo | None = self._one(IDX_MODELS, (namespace, idep.model))
        catalog = self.catalog()
        children: dict[str, ChildInfo] = {}
        extras: list[ChildInfo] = []
        for ch in self._all(IDX_CHILDREN, (namespace, name)):
            if ch.owner_uid != idep.uid:
                continue  # left by an earlier deployment of the same name; the GC takes it
            if ch.device in children:
                extras.append(ch)
            else:
                children[ch.device] = ch
        pods: dict[str, list[PodInfo]] = {}
        for p in self._all(IDX_PODS, (namespace, name)):
            pods.setdefault(p.device, []).append(p)
        placement = None
        if model is not None and model.verified and not model.deleting:
            placement = self._placement(idep, model, catalog)
        plan = planner.plan(idep, model, catalog, children, pods, image=self.cfg.image, now=cond.now_iso(),
                            now_ts=time.time(), placement=placement,
                            placement_for=lambda m: self._placement(idep, m, catalog, cache=False))

        errors: list[str] = []
        sem = asyncio.Semaphore(APPLY_CONCURRENCY)

        async def apply(manifest: dict[str, Any]) -> None:
            meta = manifest["metadata"]
            akey = (meta["namespace"], meta["name"])
            want = meta["annotations"][c.A_SPEC_HASH]
            if self._applied.get(akey) == want:
                return  # applied a moment ago; the watch has not brought it back yet
            async with sem:
                try:
                    # Server-side apply for create and update alike: the operator owns exactly the
                    # fields it sets, and a field it stops setting is removed, which a create
                    # followed by applies would not guarantee.
                    await self.api.apply(manifest)
                except ApiError as e:
                    if not e.namespace_terminating:
                        errors.append(str(e))
                    return
            self._applied[akey] = want
            log.info("applied workload", extra={"deployment": f"{namespace}/{name}", "workload": meta["name"],
                                                "device": meta["annotations"][c.A_DEVICE],
                                                "variant": meta["annotations"][c.A_VARIANT]})

        async def delete(ch: ChildInfo) -> None:
            async with sem:
                try:
                    await self.api.delete(Ref("apps/v1", "deployments", ch.name, ch.namespace), uid=ch.uid)
                except ApiError as e:
                    errors.append(str(e))
                    return
            log.info("deleted workload", extra={"deployment": f"{namespace}/{name}", "workload": ch.name,
                                                "device": ch.device})

        await asyncio.gather(*(apply(m) for m in plan.apply), *(delete(ch) for ch in (*plan.delete, *extras)))

        patch = patches.status_patch(idep.status, plan.status)
        ref = Ref(c.API_VERSION, c.PLURAL_IDEP, name, namespace)
        requeue: Requeue | None = None
        if patch and not patches.urgent_change(idep.status, plan.status, URGENT_IDEP_KEYS):
            requeue = self._hold(wkey, self.cfg.status_interval)  # progress only: written together with what follows
            if requeue is not None:
                patch = None
        if patch:
            self._pending_since.pop(wkey, None)
            try:
                await self.api.patch_status(ref, patch)
            except ApiError as e:
                if not e.not_found:
                    raise
            self._remember(wkey, idep.resource_version, idep.status, patch)
            self._announce_transition(idep, plan.status)
            involved = {"apiVersion": c.API_VERSION, "kind": c.KIND_IDEP, "name": idep.name,
                        "namespace": idep.namespace, "uid": idep.uid}
            for type_, reason, message in plan.events:
                metrics.ROLLOUT_EVENTS.labels(reason).inc()
                self._post_event(involved, type_, reason, message)
                log.info("rollout", extra={"deployment": f"{namespace}/{name}", "reason": reason, "detail": message})
        else:
            metrics.WRITES_SKIPPED.labels("InferenceDeployment").inc()
        st = plan.status
        self._counts[idep.key] = (int(st.get("placed", 0)), int(st.get("ready", 0)), len(st.get("unplaced", [])))
        if errors:
            raise RetryableError(f"{len(errors)} workload writes failed; first: {errors[0]}")
        if plan.requeue_after is not None:
            # A gate timer (ready for N seconds, a pause, a deadline) fires with no event to wake us.
            timer = Requeue(max(0.5, plan.requeue_after))
            if requeue is None or (requeue.after is not None and timer.after is not None
                                   and timer.after < requeue.after):
                requeue = timer
        return requeue

    # Ready reasons of a normal rollout in progress: not worth an Event (one per object each time).
    _QUIET_REASONS = frozenset({"DevicesNotReady", "ModelVerifying", "DevicesReady"})

    def _announce_transition(self, idep: IdepInfo, new_status: Mapping[str, Any]) -> None:
        """An Event when Ready changes to a reason a person must act on (the model failed, nothing
        suitable, all devices offline). Normal progress is in status only: one Event per object per
        rollout step is what floods clusters."""
        old = cond.find(idep.status.get("conditions"), "Ready")
        new = cond.find(new_status.get("conditions"), "Ready")
        if new is None or (old is not None and old.get("reason") == new.get("reason")):
            return
        if new.get("reason") in self._QUIET_REASONS:
            return
        involved = {"apiVersion": c.API_VERSION, "kind": c.KIND_IDEP, "name": idep.name,
                    "namespace": idep.namespace, "uid": idep.uid}
        kind = "Normal" if new.get("status") == "True" else "Warning"
        self._post_event(involved, kind, str(new.get("reason")), str(new.get("message", "")))

    def _post_event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        # Best effort and off the reconcile path: an Event must never slow or fail a reconcile.
        task = asyncio.create_task(self.api.event(involved, type_, reason, message))
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)

    async def reconcile_device(self, name: str) -> Requeue | None:
        dev: DeviceInfo | None = self._one(IDX_DEVICES, name)
        wkey = ("device", name)
        if dev is None or dev.deleting:
            self._written.pop(wkey, None)
            self._pending_since.pop(wkey, None)
            return None
        dev = replace(dev, status=self._effective_status(wkey, dev.resource_version, dev.status))
        node: NodeInfo | None = self._one(IDX_NODES, dev.node_name)
        children = self._all(IDX_CHILDREN_BY_DEVICE, name)
        st = device_status(dev, node, children, cond.now_iso(), self.cfg.heartbeat_resolution)
        patch = patches.merge_diff(dev.status, st, removable=frozenset())
        if not patch:
            metrics.WRITES_SKIPPED.labels("EdgeDevice").inc()
            return None
        if not patches.urgent_change(dev.status, st, ("online", "capabilities", "nodeName")):
            # What a device serves changes with every rollout step: coalesce those writes.
            wait = self._hold(wkey, self.cfg.device_status_interval)
            if wait is not None:
                return wait
        self._pending_since.pop(wkey, None)
        try:
            await self.api.patch_status(Ref(c.API_VERSION, c.PLURAL_DEVICE, name), patch)
        except ApiError as e:
            if e.not_found:
                return None
            raise
        self._remember(wkey, dev.resource_version, dev.status, patch)
        was = dev.status.get("online")
        if was is not None and was != st["online"]:
            involved = {"apiVersion": c.API_VERSION, "kind": c.KIND_DEVICE, "name": name, "uid": dev.uid}
            if st["online"]:
                self._post_event(involved, "Normal", "DeviceOnline", f"node {dev.node_name} is Ready again")
            else:
                self._post_event(involved, "Warning", "DeviceOffline",
                                 f"node {dev.node_name} is not Ready; its workloads are kept")
        return None

    async def reconcile_node(self, name: str) -> None:
        """Discovery: one EdgeDevice per edge Node; remove a discovered one whose Node is no longer edge."""
        node: NodeInfo | None = self._one(IDX_NODES, name)
        dev: DeviceInfo | None = self._one(IDX_DEVICES, name)
        if node is not None and node.edge and not node.deleting and dev is None:
            created = await self.api.create(edge_device_for_node(name, node.uid))
            if created is not None:
                log.info("discovered edge device", extra={"device": name})
        elif node is not None and not node.edge and dev is not None and dev.discovered and not dev.deleting:
            await self.api.delete(Ref(c.API_VERSION, c.PLURAL_DEVICE, name), uid=dev.uid)
            log.info("removed device: node is no longer labelled edge", extra={"device": name})

    # ------------------------------------------------------------------ verification

    async def _verify(self, key: Hashable) -> Requeue | None:
        assert isinstance(key, tuple)
        start = time.monotonic()
        outcome = "success"
        try:
            return await self.verify_model(key[0], key[1])
        except Exception:
            outcome = "error"
            raise
        finally:
            metrics.RECONCILES.labels("model", outcome).inc()
            metrics.RECONCILE_SECONDS.labels("model").observe(time.monotonic() - start)

    async def verify_model(self, namespace: str, name: str) -> Requeue | None:
        m: ModelInfo | None = self._one(IDX_MODELS, (namespace, name))
        if m is None or not needs_verification(m):
            return None
        ref = Ref(c.API_VERSION, c.PLURAL_MODEL, name, namespace)
        if m.status.get("observedGeneration") != m.generation or m.status.get("phase") not in (
                "Verifying", "Retrying"):
            await self.api.patch_status(ref, verifying_status(m, cond.now_iso()))
        check = await self.verifier.check(m)
        latest: ModelInfo | None = self._one(IDX_MODELS, (namespace, name))
        if latest is None:
            return None
        if latest.generation != m.generation:
            return Requeue(0.0)  # the spec changed while we were downloading: check the new one
        st = model_status(latest, check, cond.now_iso())
        patch = patches.merge_diff(latest.status, st, removable=frozenset())
        if patch:
            try:
                await self.api.patch_status(ref, patch)
            except ApiError as e:
                if not e.not_found:
                    raise
        involved = {"apiVersion": c.API_VERSION, "kind": c.KIND_MODEL, "name": name, "namespace": namespace,
                    "uid": m.uid}
        src = check.source
        was = cond.find(latest.status.get("conditions"), "Verified")
        if src.ok and (was is None or was.get("status") != "True"):
            self._post_event(involved, "Normal", "Verified", f"sha256 {src.sha256} verified ({src.size} bytes)")
        elif not src.ok and (was is None or was.get("reason") != src.reason):
            self._post_event(involved, "Warning", src.reason, src.message)
        log.info("model checked", extra={"model": f"{namespace}/{name}", "ok": src.ok, "reason": src.reason,
                                         "variants": {v.name: v.reason for v in check.variants}})
        if check.transient:
            return Requeue(None)  # exponential backoff until the source comes back
        return None

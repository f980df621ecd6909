"""InferenceDeployment: its workloads (a Pod per placed device, core/pod_workloads.py), its status and its Events.

A deployment's placement is cached until the device catalogue, its model or its spec changes, so a
pod or workload event costs O(devices it placed), not a placement over the fleet.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from edge_operator.controller.api import ControllerApi, EventRecorder
from edge_operator.controller.cache import Cache, Catalog
from edge_operator.controller.keys import DeploymentKey, ModelKey
from edge_operator.controller.status_writer import StatusPolicy, StatusWriter
from edge_operator.controller.workqueue import Requeue
from edge_operator.core import acceleration, patches, planner, site_cache
from edge_operator.core import conditions as cond
from edge_operator.core import pod_workloads as pw
from edge_operator.core.catalog import DeviceCatalog
from edge_operator.core.manifests import Owner, spec_hash
from edge_operator.core.placement import Placement
from edge_operator.core.plan_memo import PlanMemo
from edge_operator.core.runtime_images import RuntimeImages
from edge_operator.core.views import ChildInfo, IdepInfo, ModelInfo, PodInfo
from edge_operator.kube.errors import ApiError, RetryableError
from edge_operator.kube.kubeapi import Ref
from edge_operator.telemetry import metrics
from edgeai_api import constants as c
from edgeai_api.enums import ConditionStatus, ConditionType, DeploymentReason
from edgeai_api.inferencedeployment import RuntimeSpec

# One logger name for every reconciler: log queries and the documented log lines use it.
log = logging.getLogger("edge_operator.controller")

# Pod writes of one reconcile go out in batches that double from 1 (a slow start, as the ReplicaSet and
# DaemonSet controllers make theirs): a webhook or quota refusing every Pod costs one refused request per
# retry, not the whole wave's. A batch with a refusal ends the reconcile; the retry starts at 1 again. At
# most APPLY_CONCURRENCY writes are in flight: 64 made Pods no faster than 16 on a 2-core plane of 1,000
# devices (64 and 78 Pods/s in wave 3; the API server's CPU is the limit). A batch is at most
# APPLY_BATCH_MAX, so a change of the deployment's spec or its model (a pause, an undo, a new build) stops
# a wave of 7,000 creates within a few seconds, not minutes.
APPLY_CONCURRENCY = 16
APPLY_BATCH_MAX = 256
# A site cache ConfigMap unchanged is applied again at most this often (it is not watched: this puts
# back one deleted or edited by hand, at one no-op write per deployment per period).
CONFIG_MAP_REAPPLY_SECONDS = 300.0
# Status keys whose change is written at once, not coalesced with progress: a rollout's state
# changes only at transitions, and an operator restarted mid-rollout resumes from what was written.
URGENT_IDEP_KEYS = ("placed", "selected", "revision", "currentRevision", "rollout", "revisions")
# ...except the rollout's progress counters, which move at every device that gets Ready: held like the
# rows. Safe to lose to a restart: a restarted operator counts more healthy devices than the stale
# count says, so it takes that as progress now, and the progress deadline starts again, never early.
PROGRESS_IDEP_FIELDS = {"rollout": frozenset({"healthy", "progressAt"})}

# A deployment's coalesced (progress) events wait at least this many times its last plan took (CPU on
# the event loop, not the wait for the API server): a plan of 1,000 devices run back to back at every
# Pod event would take a core from the control plane the rollout waits on; this keeps each deployment's
# planning under about a quarter of the time. A spec change, a delete and a small deployment's events
# are not slowed (their delay is 0, or larger than this).
PACE_FACTOR = 3.0
# A deployment with fewer Pods than this plans without a memo: it plans in microseconds anyway, and a
# fleet of 10,000 one-device deployments should not hold 10,000 memos.
MEMO_MIN_PODS = 16

# Ready reasons of a normal rollout in progress: not worth an Event (one per object each time).
_QUIET_REASONS = frozenset({DeploymentReason.DEVICES_NOT_READY, DeploymentReason.MODEL_VERIFYING,
                            DeploymentReason.DEVICES_READY})


@dataclass
class _PlacementCache:
    key: tuple[Any, ...]
    placement: Placement


class DeploymentReconciler:
    metrics_label = "idep"

    def __init__(self, api: ControllerApi, cache: Cache, catalog: Catalog, writer: StatusWriter,
                 events: EventRecorder, images: RuntimeImages, status_interval: float) -> None:
        self.api = api
        self.cache = cache
        self.catalog = catalog
        self.writer = writer
        self.events = events
        self.images = images
        self.policy = StatusPolicy(patches.status_patch, URGENT_IDEP_KEYS, status_interval, PROGRESS_IDEP_FIELDS)
        self._placements: dict[tuple[str, ...], _PlacementCache] = {}
        # Pods created, deleted or annotated but not yet seen so through the watch: (namespace, name) ->
        # what was done (a create: the template hash; a delete: "-"; an annotation: "rev=N"). Never done twice.
        self._applied: dict[tuple[str, str], str] = {}
        # Pods this operator deleted, seen terminating and not yet gone: (namespace, name).
        self._deleting: set[tuple[str, str]] = set()
        # What each deployment's last plan derived per device (core/plan_memo.py).
        self._memos: dict[DeploymentKey, PlanMemo] = {}
        # How long each deployment's last plan took (see PACE_FACTOR).
        self._took: dict[DeploymentKey, float] = {}
        # (placed, ready, unplaced) per deployment, for the fleet gauges.
        self.counts: dict[DeploymentKey, tuple[int, int, int]] = {}
        # spec.siteCache: what was applied last (cache Deployments and ConfigMaps, by (namespace, name)),
        # and each site's gateway per (catalogue version, labels), so a converged reconcile writes nothing
        # and does not walk the nodes.
        self._site_applied: dict[tuple[str, str], str] = {}
        # The ConfigMaps are not watched: one deleted or edited by hand is put back within this long.
        self._config_maps: dict[tuple[str, str], tuple[str, float]] = {}
        self._gateways: tuple[tuple[Any, ...], dict[str, site_cache.GatewayNode]] | None = None

    def forget(self, key: DeploymentKey) -> None:
        """The deployment is gone: drop what was derived from it."""
        self._placements.pop((key.namespace, key.name), None)
        self._placements.pop((key.namespace, key.name, "other"), None)
        self.counts.pop(key, None)
        self._memos.pop(key, None)
        self._took.pop(key, None)

    def saw_pod(self, p: PodInfo, deleted: bool) -> bool:
        """A Pod event: once the cache caught up with what we did to it, the cache is the truth again.
        Whether the event is the end of a Pod this operator deleted (a surge's old Pod): nothing is
        missing then, and its deployment need not look at once."""
        akey = (p.namespace, p.name)
        done = self._applied.get(akey)
        if deleted and (akey in self._deleting or done == "-"):  # terminating seen first, or not at all
            self._deleting.discard(akey)
            self._applied.pop(akey, None)
            return True
        if done is None:
            return False
        if done == "-" and p.deleting and not deleted:
            self._deleting.add(akey)  # until the Pod is gone
        if deleted or done == p.spec_hash or (done == "-" and p.deleting) or done == f"rev={p.revision}":
            self._applied.pop(akey, None)
        return False

    def saw_site_cache(self, sc: site_cache.SiteCacheInfo, deleted: bool) -> None:
        """A site cache event: as `saw_pod`, the watch is the truth again once it caught up."""
        akey = (sc.namespace, sc.name)
        if deleted or self._site_applied.get(akey) == sc.spec_hash:
            self._site_applied.pop(akey, None)

    def _placement(self, idep: IdepInfo, model: ModelInfo, catalog: DeviceCatalog, cache: bool = True,
                   runtime: RuntimeSpec | None = None, families: frozenset[str] | None = None) -> Placement:
        """Placement of `model`'s builds, cached per deployment; another revision's builds (a rollback
        target, `cache=False`) are kept in a second slot so the two do not evict each other."""
        fams = self.images.available if families is None else families
        key = (self.catalog.version, model.placement_key(), idep.uid, idep.generation,
               acceleration.placement_key(runtime), tuple(sorted(fams)))
        slot = idep.key if cache else (*idep.key, "other")
        cached = self._placements.get(slot)
        if cached is not None and cached.key == key:
            return cached.placement
        placement = planner.compute_placement(idep, model, catalog, runtime, fams)
        self._placements[slot] = _PlacementCache(key, placement)
        return placement

    def pace(self, key: DeploymentKey) -> float:
        """The least delay for a coalesced event of `key`: PACE_FACTOR times its last plan."""
        return PACE_FACTOR * self._took.get(key, 0.0)

    async def reconcile(self, key: DeploymentKey) -> Requeue | None:
        namespace, name = key.namespace, key.name
        idep = self.cache.deployment(key)
        if idep is None or idep.deleting:
            self.writer.forget(key)
            return None  # the garbage collector removes the children through their ownerReferences
        idep = replace(idep, status=self.writer.effective(key, idep.resource_version, idep.status))
        model = self.cache.model(ModelKey(namespace, idep.model))
        catalog = self.catalog.get()
        now_ts = time.time()
        # Deployments of an operator of 0.1 (left by an earlier deployment of the same name: the GC takes them).
        legacy = [ch for ch in self.cache.children(key) if ch.owner_uid == idep.uid]
        # Its own Pods, and the 0.1 Deployments' (their ReplicaSet is their owner).
        own_pods = [p for p in self.cache.pods(key) if p.owner_uid in ("", idep.uid)]
        pods: dict[str, list[PodInfo]] = {}
        for p in own_pods:
            pods.setdefault(p.device, []).append(p)
        planning = time.monotonic()
        memo = self._memos.setdefault(key, PlanMemo()) if len(own_pods) >= MEMO_MIN_PODS else None
        if memo is None:
            self._memos.pop(key, None)
        children = pw.workloads(own_pods, legacy, idep.uid, now_ts, memo)
        placement = None
        if model is not None and model.verified and not model.deleting:
            placement = self._placement(idep, model, catalog)
        plan = planner.plan(idep, model, catalog, children, pods, images=self.images, now=cond.now_iso(),
                            now_ts=now_ts, placement=placement,
                            placement_for=lambda m, rt, fams: self._placement(idep, m, catalog, cache=False,
                                                                                 runtime=rt, families=fams),
                            legacy=pw.legacy_by_device(legacy), memo=memo)
        self._took[key] = time.monotonic() - planning
        if memo is not None:
            hits, misses = memo.done()
            metrics.PLAN_MEMO.labels("hit").inc(hits)
            metrics.PLAN_MEMO.labels("miss").inc(misses)

        errors: list[str] = []
        rows = await self._site_caches(key, idep, plan.placement, children, catalog, errors)
        if rows is not None:
            plan.status["siteCaches"] = rows

        ref = Ref(c.API_VERSION, c.PLURAL_IDEP, name, namespace)
        # The status goes out beside the Pod writes, not after them: at 10,000 devices a wave's 7,000 creates
        # take two minutes, and status.rollout must say the wave started while they run. Beside, not before:
        # a status write refused must not keep the devices from their workloads.
        converged, written = await asyncio.gather(
            self._converge(key, plan, _stance(idep, model)),
            self.writer.write(key, ref, idep.resource_version, idep.status, plan.status, self.policy),
            return_exceptions=True)
        if isinstance(written, BaseException):
            raise written
        if isinstance(converged, BaseException):
            raise converged
        write = written
        errors += converged.errors
        if write.patch is not None:
            self._announce_transition(idep, plan.status)
            involved = _involved(idep)
            for type_, reason, message in plan.events:
                metrics.ROLLOUT_EVENTS.labels(reason).inc()
                self.events.post(involved, type_, reason, message)
                log.info("rollout", extra={"deployment": f"{namespace}/{name}", "reason": reason, "detail": message})
        else:
            metrics.WRITES_SKIPPED.labels("InferenceDeployment").inc()
        st = plan.status
        self.counts[key] = (int(st.get("placed", 0)), int(st.get("ready", 0)), len(st.get("unplaced", [])))
        if errors:
            raise RetryableError(f"{len(errors)} workload writes failed; first: {errors[0]}")
        requeue = write.held  # progress only: written together with what follows
        if converged.cut:
            return Requeue(0.0)  # the spec or the model changed meanwhile: plan again now
        if plan.requeue_after is not None:
            # A gate timer (ready for N seconds, a pause, a deadline) fires with no event to wake us.
            timer = Requeue(max(0.5, plan.requeue_after))
            if requeue is None or (requeue.after is not None and timer.after is not None
                                   and timer.after < requeue.after):
                requeue = timer
        return requeue

    async def _converge(self, key: DeploymentKey, plan: planner.IdepPlan, stance: tuple[Any, ...]) -> _Converged:
        """Create, annotate and delete Pods (and 0.1 Deployments) in slow-start batches (APPLY_BATCH_MAX);
        the errors, for one retry of the whole. What was done and not yet seen through the watch is not
        done again. Between batches, a deployment or model that changed in the cache (`stance`) stops the
        rest: the plan they came from is out of date."""
        deployment = f"{key.namespace}/{key.name}"
        errors: list[str] = []
        sem = asyncio.Semaphore(APPLY_CONCURRENCY)
        jobs: list[Callable[[], Awaitable[None]]] = []

        def once(akey: tuple[str, str], done: str, call: Callable[[], Awaitable[object]], what: str,
                 fields: dict[str, Any]) -> None:
            if self._applied.get(akey) == done:
                return  # done a moment ago; the watch has not brought it back yet

            async def job() -> None:
                async with sem:
                    try:
                        result = await call()
                    except ApiError as e:
                        if not e.namespace_terminating:
                            errors.append(str(e))
                        return
                if result is None or result is False:
                    # A create refused as AlreadyExists (None) is a Pod of that name still terminating: its
                    # delete event brings the next try. A delete or patch of one already gone: nothing to wait for.
                    return
                self._applied[akey] = done
                log.info(what, extra={"deployment": deployment, "workload": akey[1], **fields})

            jobs.append(job)

        # Deletes first: each ends a surge whose new Pod is Ready, and frees what a quota counts, so a
        # refused create later in the list does not hold them back.
        for p in plan.delete_pods:
            once((p.namespace, p.name), "-",
                 functools.partial(self.api.delete, Ref("v1", "pods", p.name, p.namespace), uid=p.uid),
                 "deleted pod", {"device": p.device})
        for p, revision in plan.annotate:
            body = {"metadata": {"uid": p.uid, "annotations": {c.A_REVISION: str(revision)}}}
            once((p.namespace, p.name), f"rev={revision}",
                 functools.partial(self.api.patch, Ref("v1", "pods", p.name, p.namespace), body),
                 "pod serves a new revision", {"device": p.device, "revision": revision})
        for manifest in plan.apply:
            meta = manifest["metadata"]
            ann = meta["annotations"]
            once((meta["namespace"], meta["name"]), ann[c.A_SPEC_HASH],
                 functools.partial(self.api.create, manifest), "created pod",
                 {"device": ann[c.A_DEVICE], "variant": ann[c.A_VARIANT], "revision": ann.get(c.A_REVISION)})

        async def delete_legacy(ch: ChildInfo) -> None:
            async with sem:
                try:
                    await self.api.delete(Ref("apps/v1", "deployments", ch.name, ch.namespace), uid=ch.uid)
                except ApiError as e:
                    errors.append(str(e))
                    return
            log.info("deleted the device's old Deployment", extra={"deployment": deployment, "workload": ch.name,
                                                          "device": ch.device})

        jobs[:0] = [functools.partial(delete_legacy, ch) for ch in plan.delete]
        start, size = 0, 1
        while start < len(jobs):
            if start and self._stance_now(key) != stance:
                return _Converged(errors, cut=True)
            await asyncio.gather(*(j() for j in jobs[start:start + size]))
            start += size
            if errors:
                break  # refused: the retry (with backoff) starts small again
            size = min(2 * size, APPLY_BATCH_MAX)
        return _Converged(errors)

    def _stance_now(self, key: DeploymentKey) -> tuple[Any, ...]:
        idep = self.cache.deployment(key)
        return _stance(idep, None if idep is None else self.cache.model(ModelKey(key.namespace, idep.model)))

    async def _site_caches(self, key: DeploymentKey, idep: IdepInfo, placement: Placement | None,
                           children: Mapping[str, ChildInfo], catalog: DeviceCatalog,
                           errors: list[str]) -> list[dict[str, Any]] | None:
        """spec.siteCache: run a cache on each site's gateway and keep the ConfigMap the devices' fetches
        read; the status rows (None: the tier is off and nothing of it is left)."""
        spec = idep.spec.site_cache if idep.spec is not None else None
        running = [r for r in self.cache.site_caches(key) if r.owner_uid == idep.uid]
        cm_name = site_cache.config_map_name(idep.name)
        if spec is None and not running and "siteCaches" not in idep.status:
            return None
        try:
            s = site_cache.settings(spec) if spec is not None else None
        except ValueError:
            return None  # the planner reports it (InvalidSpec); what runs is left as it is
        devices = [a.device for a in placement.assignments] if placement is not None else list(children)
        labels = [v.labels for d in devices if (v := catalog.get(d)) is not None]
        sites = site_cache.sites_of(labels, s.site_label) if s is not None else set()
        gws = self._gateways_for(s) if s is not None else {}
        owner = Owner(c.API_VERSION, c.KIND_IDEP, idep.name, idep.uid)
        p = site_cache.plan(owner, key.namespace, s, sites, gws, running, self.images.cpu)
        deployment = f"{key.namespace}/{key.name}"
        for manifest in p.apply:
            meta = manifest["metadata"]
            akey = (key.namespace, meta["name"])
            want = meta["annotations"][c.A_SPEC_HASH]
            if self._site_applied.get(akey) == want:
                continue
            try:
                await self.api.apply(manifest)
            except ApiError as e:
                errors.append(str(e))
                continue
            self._site_applied[akey] = want
            log.info("applied site cache", extra={"deployment": deployment, "workload": meta["name"],
                                                  "site": meta["annotations"][c.A_SITE],
                                                  "node": meta["annotations"][c.A_NODE]})
        for r in p.delete:
            try:
                await self.api.delete(Ref("apps/v1", "deployments", r.name, r.namespace), uid=r.uid)
            except ApiError as e:
                errors.append(str(e))
                continue
            self._site_applied.pop((r.namespace, r.name), None)
            log.info("deleted site cache", extra={"deployment": deployment, "workload": r.name, "site": r.site})
        ckey = (key.namespace, cm_name)
        try:
            if p.config_map is not None:
                want = spec_hash(p.config_map)
                last = self._config_maps.get(ckey)
                now = time.monotonic()
                if last is None or last[0] != want or now - last[1] > CONFIG_MAP_REAPPLY_SECONDS:
                    await self.api.apply(p.config_map)
                    self._config_maps[ckey] = (want, now)
            elif not p.delete and not running:
                # Off, and its caches are gone: the map goes last, and with it the status rows.
                await self.api.delete(Ref("v1", "configmaps", cm_name, key.namespace))
                self._config_maps.pop(ckey, None)
                return None
        except ApiError as e:
            errors.append(str(e))
        return list(p.rows)

    def _gateways_for(self, s: site_cache.Settings) -> dict[str, site_cache.GatewayNode]:
        cache_key = (self.catalog.version, s.gateway_label, s.site_label)
        if self._gateways is not None and self._gateways[0] == cache_key:
            return self._gateways[1]
        nodes = (site_cache.GatewayNode(n.name, n.labels, n.address, n.health.online, n.deleting)
                 for n in self.cache.nodes())
        gws = site_cache.gateways(nodes, s)
        self._gateways = (cache_key, gws)
        return gws

    def _announce_transition(self, idep: IdepInfo, new_status: Mapping[str, Any]) -> None:
        """An Event when Ready changes to a reason a person must act on (the model failed, nothing
        suitable, all devices offline). Normal progress is in status only: one Event per object per
        rollout step is what floods clusters."""
        old = cond.find(idep.status.get("conditions"), ConditionType.READY)
        new = cond.find(new_status.get("conditions"), ConditionType.READY)
        if new is None or (old is not None and old.get("reason") == new.get("reason")):
            return
        if new.get("reason") in _QUIET_REASONS:
            return
        kind = "Normal" if new.get("status") == ConditionStatus.TRUE else "Warning"
        self.events.post(_involved(idep), kind, str(new.get("reason")), str(new.get("message", "")))


@dataclass(frozen=True)
class _Converged:
    errors: list[str]
    cut: bool = False  # stopped early: the deployment or its model changed meanwhile


def _stance(idep: IdepInfo | None, model: ModelInfo | None) -> tuple[Any, ...]:
    """What a plan of `idep` rests on besides its Pods: while it holds, the plan's writes stay right."""
    return (None if idep is None else (idep.uid, idep.generation, idep.deleting),
            None if model is None else (model.uid, model.generation, model.state, model.deleting))


def _involved(idep: IdepInfo) -> dict[str, Any]:
    return {"apiVersion": c.API_VERSION, "kind": c.KIND_IDEP, "name": idep.name, "namespace": idep.namespace,
            "uid": idep.uid}

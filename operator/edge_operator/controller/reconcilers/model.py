"""EdgeModel verification: stream and check the builds, write what was found, and say so once."""

from __future__ import annotations

import logging
from typing import Protocol

from edge_operator.controller.api import ControllerApi, EventRecorder
from edge_operator.controller.cache import Cache
from edge_operator.controller.keys import ModelKey
from edge_operator.controller.workqueue import Requeue
from edge_operator.core import conditions as cond
from edge_operator.core import patches
from edge_operator.core.status import ModelCheck, model_status, needs_verification, verifying_status
from edge_operator.core.views import ModelInfo
from edge_operator.kube.errors import ApiError
from edge_operator.kube.kubeapi import Ref
from edgeai_api import constants as c
from edgeai_api.enums import ConditionStatus, ConditionType, ModelPhase, ModelReason

log = logging.getLogger("edge_operator.controller")


class Checker(Protocol):
    async def check(self, m: ModelInfo) -> ModelCheck: ...


class ModelReconciler:
    metrics_label = "model"

    def __init__(self, api: ControllerApi, cache: Cache, checker: Checker, events: EventRecorder) -> None:
        self.api = api
        self.cache = cache
        self.checker = checker
        self.events = events

    async def reconcile(self, key: ModelKey) -> Requeue | None:
        namespace, name = key.namespace, key.name
        m = self.cache.model(key)
        if m is None or not needs_verification(m):
            return None
        ref = Ref(c.API_VERSION, c.PLURAL_MODEL, name, namespace)
        if m.status.get("observedGeneration") != m.generation or m.status.get("phase") not in (
                ModelPhase.VERIFYING, ModelPhase.RETRYING):
            await self.api.patch_status(ref, verifying_status(m, cond.now_iso()))
        check = await self.checker.check(m)
        latest = self.cache.model(key)
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
        was = cond.find(latest.status.get("conditions"), ConditionType.VERIFIED)
        if src.ok and (was is None or was.get("status") != ConditionStatus.TRUE):
            self.events.post(involved, "Normal", ModelReason.VERIFIED,
                             f"sha256 {src.sha256} verified ({src.size} bytes)")
        elif not src.ok and (was is None or was.get("reason") != src.reason):
            self.events.post(involved, "Warning", src.reason, src.message)
        log.info("model checked", extra={"model": f"{namespace}/{name}", "ok": src.ok, "reason": src.reason,
                                         "variants": {v.name: v.reason for v in check.variants}})
        if check.transient:
            return Requeue(None)  # exponential backoff until the source comes back
        return None

"""The API server and the devices, as far as a plan's Pods go: for the planner's tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from edge_operator.core import planner
from edge_operator.core import pod_workloads as pw
from edge_operator.core.views import ChildInfo, PodInfo, pod_info
from edgeai_api import constants as c

EARLIER = "2025-12-31T23:59:00Z"


def pod_of(manifest: Mapping[str, Any], ready: bool = False, created: str = EARLIER) -> PodInfo:
    """The Pod the API server makes of `manifest`, scheduled and running (Ready or not)."""
    meta = manifest["metadata"]
    body = {**manifest, "metadata": {**meta, "uid": f"uid-{meta['name']}", "creationTimestamp": created},
            "spec": {**manifest["spec"], "nodeName": meta["annotations"][c.A_DEVICE]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
    return pod_info(body)


def by_device(pods: Iterable[PodInfo]) -> dict[str, list[PodInfo]]:
    out: dict[str, list[PodInfo]] = {}
    for p in pods:
        out.setdefault(p.device, []).append(p)
    return out


def workloads(pods: Mapping[str, Iterable[PodInfo]], uid: str, now_ts: float) -> dict[str, ChildInfo]:
    return pw.workloads([p for ps in pods.values() for p in ps], [], uid, now_ts)


class Pods:
    """Carries out a plan's creates, deletes and annotations; `ready()` is the devices getting there."""

    def __init__(self) -> None:
        self.by_name: dict[str, PodInfo] = {}
        self.created: list[str] = []  # every Pod ever created, by name, in order
        self.deleted: list[str] = []

    def apply(self, plan: planner.IdepPlan, created: str = EARLIER) -> None:
        for m in plan.apply:
            name = m["metadata"]["name"]
            assert name not in self.by_name, f"{name} created twice"
            self.by_name[name] = pod_of(m, created=created)
            self.created.append(name)
        for p, rev in plan.annotate:
            self.by_name[p.name] = replace(self.by_name[p.name], revision=rev)
        for p in plan.delete_pods:
            assert p.name in self.by_name, f"{p.name} deleted but never created"
            del self.by_name[p.name]
            self.deleted.append(p.name)

    def ready(self, bad_sha: str | None = None) -> None:
        for name, p in list(self.by_name.items()):
            if not p.ready and p.sha256 != bad_sha:
                self.by_name[name] = replace(p, ready=True)

    def by_device(self) -> dict[str, list[PodInfo]]:
        return by_device(self.by_name.values())

    def children(self, uid: str, now_ts: float) -> dict[str, ChildInfo]:
        return workloads(self.by_device(), uid, now_ts)

"""Typed work-queue keys, one per reconciled kind.

Each renders, in logs, exactly as the tuple keys it replaced did (("idep", ns, name), ("device", name),
("node", name), (ns, name) for a model): the work queue's retry warning carries the key, and queries
over those logs keep working.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeploymentKey:
    namespace: str
    name: str

    def __repr__(self) -> str:
        return repr(("idep", self.namespace, self.name))


@dataclass(frozen=True)
class DeviceKey:
    name: str

    def __repr__(self) -> str:
        return repr(("device", self.name))


@dataclass(frozen=True)
class NodeKey:
    name: str

    def __repr__(self) -> str:
        return repr(("node", self.name))


@dataclass(frozen=True)
class ModelKey:
    namespace: str
    name: str

    def __repr__(self) -> str:
        return repr((self.namespace, self.name))


# What the reconcile queue carries; models have a queue of their own (verification downloads).
ReconcileKey = DeploymentKey | DeviceKey | NodeKey

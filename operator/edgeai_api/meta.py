"""Shapes every CRD shares: the standard condition and the part of ObjectMeta the operator reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from edgeai_api.enums import ConditionStatus


@dataclass(frozen=True, kw_only=True)
class Condition:
    """A Kubernetes-convention condition; `type` stays a string (the schema leaves it open), the
    operator's own types are `enums.ConditionType`."""

    type: str
    status: ConditionStatus
    reason: str | None = None
    message: str | None = None
    observed_generation: int | None = None
    last_transition_time: str | None = None


@dataclass(frozen=True, kw_only=True)
class ObjectMeta:
    """The ObjectMeta fields a CRD object is written with or identified by; the schema leaves
    metadata to the API server, so other fields are dropped on parse."""

    name: str
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    labels: Mapping[str, str] | None = None
    annotations: Mapping[str, str] | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None

"""Kubernetes-convention conditions: type, status, reason, message, observedGeneration,
lastTransitionTime. Pure; `now` is passed in so tests control time.

`lastTransitionTime` changes only when `status` changes, as the API
conventions require; that also makes a repeated reconcile produce an
identical status, so the operator can skip writing it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def now_iso(now: dt.datetime | None = None) -> str:
    t = now or dt.datetime.now(dt.UTC)
    return t.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> dt.datetime | None:
    """An RFC 3339 timestamp as written in status (naive ones taken as UTC); None for anything else,
    so a hand-edited status cannot break a reconcile or the plugin."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def make(
    type_: str, status: bool | str, reason: str, message: str, generation: int | None = None
) -> dict[str, Any]:
    s = status if isinstance(status, str) else ("True" if status else "False")
    cond: dict[str, Any] = {"type": type_, "status": s, "reason": reason, "message": message}
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def find(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    for cnd in conditions or ():
        if cnd.get("type") == type_:
            return cnd
    return None


def is_true(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> bool:
    cnd = find(conditions, type_)
    return cnd is not None and cnd.get("status") == "True"


def merge(
    old: Sequence[Mapping[str, Any]] | None, new: Sequence[Mapping[str, Any]], now: str
) -> list[dict[str, Any]]:
    """New conditions, each keeping the old lastTransitionTime if its status did not change."""
    out = []
    for cnd in new:
        prev = find(old, cnd["type"])
        item = dict(cnd)
        if prev is not None and prev.get("status") == cnd["status"] and prev.get("lastTransitionTime"):
            item["lastTransitionTime"] = prev["lastTransitionTime"]
        else:
            item["lastTransitionTime"] = now
        out.append(item)
    return out

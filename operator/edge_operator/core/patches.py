"""Status writes as JSON merge patches: what to send, what the server will hold, what cannot wait.

Pure. The controller's status writer asks these three questions of every status it computes:
`status_patch`/`merge_diff` (the patch, or nothing to write), `merge_apply` (what the object
will look like once the write lands, so an unechoed write is not repeated) and `urgent_change`
(write now, or hold and coalesce with the next progress change).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# Status keys this module owns and removes when they no longer apply. Keys other
# modules add to the same status (a rollout's revision history) are never nulled here.
_OWNED_KEYS = frozenset({"unplacedNotListed", "devicesNotListed", "modelSha256", "shortDigest", "siteCaches"})


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch of `status` turning `old` into `new`, or None when nothing changes."""
    patch = merge_diff(old, new, removable=_OWNED_KEYS)
    return patch or None


def merge_diff(old: Mapping[str, Any], new: Mapping[str, Any],
               removable: frozenset[str] | None = None) -> dict[str, Any]:
    """The RFC 7386 merge patch turning `old` into `new`.

    A merge patch merges objects key by key, so a key dropped from a nested object (a rollout's
    `waveReadyAt` when a new wave starts) must be sent as null, or the server keeps the stale
    value. At the top level only `removable` keys are nulled (None: all), because other writers
    own other keys of the same status; nested objects are ours entirely."""
    patch: dict[str, Any] = {}
    for k, v in new.items():
        o = old.get(k)
        if isinstance(v, Mapping) and isinstance(o, Mapping):
            sub = merge_diff(o, v)
            if sub:
                patch[k] = sub
        elif o != v or k not in old:
            patch[k] = v
    for k in old:
        if k not in new and (removable is None or k in removable):
            patch[k] = None
    return patch


def merge_apply(old: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """`old` with the merge patch applied, as the API server will store it."""
    out = dict(old)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge_apply(out[k], v)
        else:
            out[k] = v
    return out


def _condition_states(status: Mapping[str, Any]) -> set[tuple[str, str, str]]:
    return {(str(x.get("type")), str(x.get("status")), str(x.get("reason")))
            for x in status.get("conditions") or []}


_IN_PROGRESS = {("Ready", "False", "DevicesNotReady"), ("Progressing", "True", "RollingOut"),
                ("Degraded", "False", "Healthy")}


def urgent_change(old: Mapping[str, Any], new: Mapping[str, Any], keys: Iterable[str] = (),
                  progress_fields: Mapping[str, frozenset[str]] | None = None) -> bool:
    """Whether a status change must be written at once: a condition changed status or reason, a new
    generation is acknowledged, or one of `keys` changed. Other changes (per-device phases, counts,
    messages) may wait a moment and be written together, which at fleet scale turns a stream of
    progress writes into a few.

    One exception: the first status of a new object whose rollout has simply started may wait
    too; if its devices are ready within the wait, one write says both (at 1,000 objects created
    at once, that is 1,000 writes fewer while the API server is busiest). A spec change on an
    object that already has status is acknowledged at once.

    `progress_fields`: fields of one of `keys` that are progress, not a transition (a rollout's count
    of healthy devices and when it last grew): a change of those alone may wait too. A gated wave of
    700 devices changes them at every device that gets Ready; written at once, each such change is a
    write of the whole status (every device's row) while the API server is busiest."""
    if not old.get("conditions") and _condition_states(new) <= _IN_PROGRESS:
        return False
    if old.get("observedGeneration") != new.get("observedGeneration"):
        return True
    if _condition_states(old) != _condition_states(new):
        return True
    fields = progress_fields or {}
    return any(_without(old.get(k), fields.get(k)) != _without(new.get(k), fields.get(k)) for k in keys)


def _without(v: Any, fields: frozenset[str] | None) -> Any:
    if not fields or not isinstance(v, Mapping):
        return v
    return {k: x for k, x in v.items() if k not in fields}

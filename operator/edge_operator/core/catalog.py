"""Label indexes that keep placement and fan-out proportional to what matches, not to the fleet.

Pure. A selector is *anchored* by one of its required terms: every label set it
matches contains one of the anchor's (key, value) pairs (the first matchLabels
entry, or the values of its narrowest `In` expression). Devices are indexed by
their (key, value) labels, so the devices a selector may match are found by
lookup; deployments are indexed by their anchors, so the deployments a device
change may concern are found by lookup. Selectors without an anchor (only
NotIn/Exists/DoesNotExist, or empty) fall back to a scan, and are checked
exactly like the others.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from typing import Any

from edge_operator.core.placement import DeviceView
from edgeai_api.enums import SelectorOperator


def anchor_terms(selector: Mapping[str, Any] | None) -> list[tuple[str, str]] | None:
    """(key, value) pairs one of which every label set matching `selector` has; None if none."""
    if not selector:
        return None
    ml = selector.get("matchLabels") or {}
    if ml:
        k = min(ml)
        return [(k, str(ml[k]))]
    ins = [e for e in selector.get("matchExpressions") or []
           if e.get("operator") == SelectorOperator.IN and e.get("values")]
    if ins:
        best = min(ins, key=lambda e: len(e["values"]))
        return [(str(best["key"]), str(v)) for v in best["values"]]
    return None


class DeviceCatalog(Mapping[str, DeviceView]):
    """Devices by name, with an inverted label index, updated one device at a time."""

    def __init__(self, views: Mapping[str, DeviceView] | None = None) -> None:
        self._views: dict[str, DeviceView] = {}
        self._by_label: dict[tuple[str, str], set[str]] = {}
        for v in (views or {}).values():
            self.put(v)

    def put(self, view: DeviceView) -> None:
        self.remove(view.name)
        self._views[view.name] = view
        for kv in view.labels.items():
            self._by_label.setdefault(kv, set()).add(view.name)

    def remove(self, name: str) -> None:
        old = self._views.pop(name, None)
        if old is None:
            return
        for kv in old.labels.items():
            names = self._by_label.get(kv)
            if names is not None:
                names.discard(name)
                if not names:
                    del self._by_label[kv]

    def __getitem__(self, name: str) -> DeviceView:
        return self._views[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._views)

    def __len__(self) -> int:
        return len(self._views)

    def candidates(self, selector: Mapping[str, Any] | None) -> list[DeviceView]:
        """A superset of the devices `selector` matches (exact matching is still the caller's)."""
        anchors = anchor_terms(selector)
        if anchors is None:
            return list(self._views.values())
        names: set[str] = set()
        for kv in anchors:
            names.update(self._by_label.get(kv, ()))
        return [self._views[n] for n in sorted(names)]


class SelectorIndex:
    """Which selectors (by key) may match a label set."""

    def __init__(self) -> None:
        self._anchored: dict[tuple[str, str], set[Hashable]] = {}
        self._scan: set[Hashable] = set()
        self._terms: dict[Hashable, list[tuple[str, str]] | None] = {}

    def put(self, key: Hashable, selector: Mapping[str, Any] | None) -> None:
        self.remove(key)
        terms = anchor_terms(selector)
        self._terms[key] = terms
        if terms is None:
            self._scan.add(key)
        else:
            for kv in terms:
                self._anchored.setdefault(kv, set()).add(key)

    def remove(self, key: Hashable) -> None:
        if key not in self._terms:
            return
        terms = self._terms.pop(key)
        if terms is None:
            self._scan.discard(key)
            return
        for kv in terms:
            keys = self._anchored.get(kv)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._anchored[kv]

    def candidates(self, labels: Mapping[str, str]) -> set[Hashable]:
        out = set(self._scan)
        for kv in labels.items():
            out.update(self._anchored.get(kv, ()))
        return out

    def __len__(self) -> int:
        return len(self._terms)
